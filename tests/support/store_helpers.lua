-- Helpers for the file store specs (tests/store_*_spec.lua): child
-- processes that are read line by line and killed, the sqlite3 CLI for
-- poking at a store from outside, file modes. Nothing here sleeps to
-- synchronise: the specs wait on child output, app:wait and events.
local LUA = require("support.lua_bin").lua
local H = require "support.dispatch_helpers"
local json = require "luagent.json"

local S = {}

local function sh_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
S.q = sh_quote

-- The prelude of every child script: the same module build and Lua files
-- as this process, the dispatch helpers, line-buffered stdout and `PID`.
local function child_prelude()
  return [[
package.path = "./lua/?.lua;./lua/?/init.lua;./tests/?.lua;" .. package.path
package.cpath = ]] .. string.format("%q", package.cpath:match("^[^;]*")) .. [[ .. ";./?.so;" .. package.cpath
local H = require "support.dispatch_helpers"
io.stdout:setvbuf("line")
local f = assert(io.open("/proc/self/stat"))
PID = tonumber(f:read("*l"):match("^(%d+)"))
f:close()
print(PID)
]]
end

local seq = 0

-- Start the Lua under test on a script (the prelude, then `body`) with stdout read
-- through a pipe. `env` is a table of environment variables. The child
-- prints its pid first; returns { pid, p, err_path }.
function S.spawn(dir, body, env)
  seq = seq + 1
  local script = string.format("%s/child%d.lua", dir, seq)
  local err = string.format("%s/child%d.err", dir, seq)
  H.write(script, child_prelude() .. body)
  local vars = {}
  for k, v in pairs(env or {}) do vars[#vars + 1] = k .. "=" .. sh_quote(v) end
  local p = assert(io.popen(string.format("%s exec %s %s 2>%s </dev/null",
    table.concat(vars, " "), LUA, sh_quote(script), sh_quote(err)), "r"))
  local first = p:read("*l")
  local child = { p = p, pid = tonumber(first), err_path = err }
  if not child.pid then
    p:close()
    error("the child did not start: " .. tostring(first) .. "\n" .. S.read(err))
  end
  return child
end

-- The next line the child printed (nil at its end).
function S.line(child)
  return child.p:read("*l")
end

-- SIGKILL the child, then read what it printed before it died.
function S.kill(child)
  assert(os.execute("kill -9 " .. child.pid))
  local rest = {}
  for l in child.p:lines() do rest[#rest + 1] = l end
  child.p:close()
  return rest
end

-- Read everything up to the child's exit; returns the lines.
function S.finish(child)
  local out = {}
  for l in child.p:lines() do out[#out + 1] = l end
  child.p:close()
  return out
end

function S.read(path)
  local f = io.open(path)
  if not f then return "" end
  local s = f:read("*a")
  f:close()
  return s
end

function S.exists(path)
  local f = io.open(path)
  if f then f:close() end
  return f ~= nil
end

-- Octal permission bits of a file ("600"), or nil when it does not exist.
function S.mode(path)
  local p = io.popen("stat -c %a " .. sh_quote(path) .. " 2>/dev/null")
  local m = p:read("*l")
  p:close()
  return m
end

-- Run SQL on a store with the sqlite3 CLI (only while no app has it open),
-- or on a PostgreSQL one with psql; returns the output lines.
function S.sql(db, sql)
  local P = require "support.pg"
  if P.is_url(db) then return P.psql(db, sql) end
  -- the exit status echoed: 5.1's and LuaJIT's close of a pipe do not give it
  local p = assert(io.popen(string.format("sqlite3 -batch %s %s 2>&1; echo \"exit=$?\"", sh_quote(db),
    sh_quote(sql))))
  local out = {}
  for l in p:lines() do out[#out + 1] = l end
  p:close()
  local code = table.remove(out)
  assert(code == "exit=0", "sqlite3 failed: " .. table.concat(out, "\n"))
  return out
end

function S.have_sqlite3()
  local r = os.execute("command -v sqlite3 >/dev/null 2>&1")
  return r == true or r == 0 -- 5.2 on: true; 5.1 and LuaJIT: the status
end

-- A canonical text of a value (sorted keys), for comparing records.
function S.canon(v)
  return json.encode(v)
end

return S
