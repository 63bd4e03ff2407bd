-- Start, script and stop tests/support/fake_openai.lua from a spec.
--
--   local fake = require "support.fake_openai_client"
--   local srv = fake.start()
--   srv:script({ { text = "hello" }, { tool_calls = { { name = "research", arguments = { q = "x" } } } } })
--   -- point the client under test at srv.url ("http://127.0.0.1:PORT/v1")
--   local reqs = srv:requests()   -- { {method, path, headers, body, json}, ... }
--   srv:stop()
--
-- Lifetime: the server is spawned with io.popen(cmd, "w"), so this process
-- holds the write end of a pipe to the server's stdin, and the server exits
-- when that pipe reaches EOF: on stop(), when the handle is collected, when
-- this process exits. Children this process forks later (os.execute) inherit
-- that write end too, so the server also exits once its parent process is
-- gone (it watches its parent pid), and stop() first asks it to shut down
-- over HTTP. No server outlives the process that started it.
-- The server's stdout goes to a FIFO that start() reads the `LISTENING
-- <port>` line from: start() returns as soon as the server listens, without
-- sleeping or polling. The server's stderr is inherited.

local socket = require "socket"
local http = require "socket.http"
local ltn12 = require "ltn12"
local cjson = require "cjson"

local M = {}

local here = debug.getinfo(1, "S").source:match("^@(.*)[/\\]") or "."
M.server_path = here .. "/fake_openai.lua"

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local server_mt = {}
server_mt.__index = server_mt

-- One control request; returns the body, raises on transport errors and on
-- statuses other than 200.
function server_mt:call(method, path, body)
  local out = {}
  local ok, code = http.request({
    url = self.base .. path,
    method = method,
    source = body and ltn12.source.string(body) or nil,
    headers = body and { ["content-type"] = "application/json",
                         ["content-length"] = tostring(#body) } or nil,
    sink = ltn12.sink.table(out),
  })
  local text = table.concat(out)
  if not ok then error("fake_openai: " .. method .. " " .. path .. ": " .. tostring(code), 2) end
  if code ~= 200 then
    error(string.format("fake_openai: %s %s: HTTP %s %s", method, path, tostring(code), text), 2)
  end
  return text
end

local function set_script(self, replies, mode)
  assert(type(replies) == "table", "replies must be a list")
  -- replies are encoded by hand: cjson writes an empty list as {} (fine here)
  -- but a list of replies must stay a list even when it has one element
  local parts = {}
  for i, r in ipairs(replies) do parts[i] = cjson.encode(r) end
  local body = '{"mode":"' .. mode .. '","replies":[' .. table.concat(parts, ",") .. "]}"
  return cjson.decode(self:call("POST", "/_script", body)).queued
end

-- Replace the script; returns the number of queued replies.
function server_mt:script(replies) return set_script(self, replies, "replace") end
-- Append to the script; returns the number of queued replies.
function server_mt:append(replies) return set_script(self, replies, "append") end

-- The recorded completion requests, oldest first.
function server_mt:requests()
  return cjson.decode(self:call("GET", "/_requests"))
end

function server_mt:last_request()
  local reqs = self:requests()
  return reqs[#reqs]
end

function server_mt:reset()
  self:call("POST", "/_reset")
end

-- A server-side rate limit: { requests, window_s, retry_after } (nil: off).
function server_mt:limit(l)
  self:call("POST", "/_limit", cjson.encode(l or {}))
end

-- What the limit did: { rejected, accepted, max_per_pause }.
function server_mt:limit_stats()
  return cjson.decode(self:call("GET", "/_limit"))
end

-- Ask the server to exit, close its stdin and wait for it. Idempotent.
function server_mt:stop()
  if not self.proc then return end
  local c = socket.tcp()
  c:settimeout(1)
  if c:connect("127.0.0.1", self.port) then
    c:send("POST /_shutdown HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    c:receive("*a")
  end
  c:close()
  self.proc:close()
  self.proc = nil
end

-- Spawn a server and wait until it listens. opts.port (default 0: any free
-- one); opts.lua, the command that runs it (default FAKE_OPENAI_LUA or lua5.4).
function M.start(opts)
  opts = opts or {}
  local fifo = os.tmpname()
  os.remove(fifo)
  assert(os.execute("mkfifo -m 600 " .. shell_quote(fifo)), "fake_openai: mkfifo failed")
  local lua = opts.lua or os.getenv("FAKE_OPENAI_LUA") or "lua5.4"
  -- LD_PRELOAD is dropped: sanitizer runs preload their runtime for the
  -- library under test, the server needs none of it
  local cmd = string.format("exec env -u LD_PRELOAD %s %s --port %d > %s",
                            lua, shell_quote(M.server_path), opts.port or 0, shell_quote(fifo))
  local proc = assert(io.popen(cmd, "w"))
  -- opening a FIFO for reading waits until the shell has opened it for
  -- writing; if the server then dies before printing, read() sees EOF
  local out = io.open(fifo, "r")
  os.remove(fifo)
  local line = out and out:read("*l")
  if out then out:close() end
  local port = line and tonumber(line:match("^LISTENING (%d+)$"))
  if not port then
    proc:close()
    error("fake_openai: server did not start (got " .. tostring(line) .. ")", 2)
  end
  local base = "http://127.0.0.1:" .. port
  return setmetatable({ proc = proc, port = port, base = base, url = base .. "/v1" }, server_mt)
end

return M
