-- HTTP for runs: drives a libcurl transfer from Lua (core/http.c), checking
-- for cancellation between polls and, in the host, pumping host work while
-- it waits (R-5, R-6). Also ctx:http(req) for tools and plugins.
local compat = require("luagent.compat")
local core = require("luagent.core")
local options = require("luagent.options")
local context = require("luagent.context")

local http = {}

local function header_lines(headers)
  local lines = {}
  if headers == nil then return lines end
  for k, v in pairs(headers) do
    if type(k) == "number" then
      lines[#lines + 1] = tostring(v)
    else
      lines[#lines + 1] = tostring(k) .. ": " .. tostring(v)
    end
  end
  table.sort(lines)
  return lines
end
http.header_lines = header_lines

local TOKEN = "^[%w!#$%%&'*+.^_`|~-]+$" -- an HTTP token (RFC 9110)

-- Header names are tokens and values one line of text: a CR or LF would
-- smuggle another header into the request, a NUL cut it short in C.
-- headers: { Name = value } or a list of "Name: value" lines.
function http.check_headers(where, headers, level)
  for k, v in pairs(headers or {}) do
    local name = k
    if compat.is_integer(k) then name = type(v) == "string" and v:match("^([^:]*):") end
    if type(name) ~= "string" or not name:find(TOKEN) then
      error(string.format("%s: header %s has no valid HTTP header name", where,
        string.format("%q", tostring(compat.is_integer(k) and v or k))), level + 1)
    end
    if type(v) ~= "string" and type(v) ~= "number" then
      error(string.format("%s: header %q must be a string, got %s", where, name, type(v)), level + 1)
    end
    if tostring(v):find("[%z\r\n]") then
      error(string.format("%s: header %q must not contain CR, LF or NUL bytes", where, name),
        level + 1)
    end
  end
end

-- "Name: value" lines of the last response -> { lowercased name = value }
function http.parse_headers(raw)
  local out = {}
  for line in (raw or ""):gmatch("[^\r\n]+") do
    local k, v = line:match("^([^:]+):%s*(.-)%s*$")
    if k then out[k:lower()] = v end
  end
  return out
end

-- A result's `headers` are parsed when first read (a model call reads them
-- only after an error status).
local lazy_headers = {
  __index = function(res, k)
    if k ~= "headers" then return nil end
    local v = http.parse_headers(rawget(res, "headers_raw"))
    rawset(res, "headers", v)
    return v
  end,
}

-- Poll the transfer h until it is done, on_event says stop or the run must
-- stop; its result.
local function drive(ctx, env, h, on_event, on_text)
  local host = not env.is_worker and env.app
  local fg = host and ctx._fg
  local stopped = false
  while true do
    -- the host serves its queue before each wait: work queued before the
    -- transfer started woke no one (R-6); later news wakes the poll
    if host then host:_pump() end
    -- news for the host and cancellers wake the poll (curl_multi_wakeup):
    -- the period only bounds how late a missed wakeup could be seen
    local wait = host and host._tick and math.min(1, host._tick) or 1 -- app:watch intervals
    if fg and fg.deadline then
      wait = math.max(0, math.min(wait, fg.deadline - core.now()))
    end
    -- (new events of other threads end the wait only for the host's
    -- watchers; its own events are told to them by the pump above)
    local done, events, stop, interrupted, text = h:poll(wait, host and host._watchers[1] ~= nil)
    -- text deltas the core made token events of come before the rest
    if text then on_text(text) end
    if on_event and events then
      for _, ev in ipairs(events) do
        if on_event(ev) then
          stopped = true
          break
        end
      end
    end
    if stopped or done then break end
    if stop then error(core.cancel_error, 0) end
    if interrupted then error(core.interrupt_error, 0) end -- a message ends the step (steer.lua)
    ctx:check_cancel()
  end
  local res = setmetatable(h:result(), lazy_headers)
  res.stopped = stopped or nil
  return res
end

-- core.http_start reads its table and keeps nothing of it: one table
-- serves every request of this state (refilled field by field each time)
local creq = {}

-- Run one request. req: method, url, headers, body, timeout_s,
-- connect_timeout_s, idle_timeout_s (no byte for that long ends it),
-- max_bytes, stream; header_lines instead of headers: the lines, made
-- already (header_lines). on_event(data) gets each SSE event
-- (a string, or {error = data} for an `event: error`) as it arrives; when
-- it returns true the transfer ends there (the result then has
-- `stopped = true`); it may raise to abort. With req.token_event = {run_id,
-- task_id, agent_id, depth} a Chat Completions chunk that only carries text
-- is not handed to on_event: the core emits its `token` event (the same
-- event ctx:emit("token", {text = ...}) makes) and on_text(text) gets the
-- text of such chunks, joined, before the events that came after them.
-- Returns the result table of core/http.c plus `headers`. Raises the
-- cancel error when the run must stop (R-23).
function http.request(ctx, req, on_event, on_text)
  local env = ctx._env
  ctx:check_cancel()
  creq.method = req.method or "GET"
  creq.url = req.url
  creq.headers = req.header_lines or header_lines(req.headers)
  creq.body = req.body
  creq.timeout_s = req.timeout_s
  creq.connect_timeout_s = req.connect_timeout_s
  creq.idle_timeout_s = req.idle_timeout_s
  creq.max_bytes = req.max_bytes
  creq.stream = req.stream and true or false
  creq.truncate = req.truncate and true or false
  creq.token_event = on_text and req.token_event or nil
  local ok, h = pcall(core.http_start, env.core, creq)
  creq.headers, creq.body, creq.token_event = nil, nil, nil -- (not kept alive here)
  if not ok then error(h, 0) end
  -- the transfer ends with the call, also when it raises
  return compat.with_close(h, drive, ctx, env, h, on_event, on_text)
end

local http_spec = {
  method = function(v)
    if type(v) == "string" and v:find(TOKEN) then return true end
    return nil, "must be an HTTP method (GET, POST, ...)"
  end,
  url = options.no_nul,
  headers = "table",
  body = "string",
  timeout_s = function(v) return options.positive(v) end,
  connect_timeout_s = function(v) return options.positive(v) end,
  max_bytes = options.at_least(1),
}

-- ctx:http{ method?, url, headers?, body?, timeout_s?, connect_timeout_s?,
-- max_bytes? (64 MiB) } -> { status, headers, body, truncated? } or nil,
-- message; a body over max_bytes is cut (truncated = true). Raises only the
-- cancel error (or the run's budget).
function context.Ctx:http(req)
  options.arg("ctx:http", "request", req, "table", 3)
  options.check("ctx:http", req, http_spec)
  if not req.url then error("ctx:http: url is required", 2) end
  http.check_headers("ctx:http", req.headers, 2)
  local res = http.request(self, {
    method = req.method, url = req.url, headers = req.headers, body = req.body,
    timeout_s = req.timeout_s or 60, connect_timeout_s = req.connect_timeout_s or 10,
    max_bytes = req.max_bytes or 64 * 1024 * 1024, truncate = true,
  })
  if res.error then return nil, res.error end
  return { status = res.status, headers = res.headers, body = res.body,
    truncated = res.body_cut or nil }
end

return http
