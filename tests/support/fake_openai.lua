-- fake_openai: a scriptable OpenAI-compatible HTTP/1.1 server for tests.
--
--   lua5.4 tests/support/fake_openai.lua [--port N] [--detached]
--
-- Listens on 127.0.0.1 (port 0, the default, picks a free one) and prints one
-- line `LISTENING <port>` to stdout. It exits on `POST /_shutdown`, when its
-- stdin reaches EOF, or (Linux) when its parent process dies, checked once a
-- second through /proc/self/stat. The stdin watch alone is not enough: the
-- parent's other children (os.execute, io.popen) inherit the pipe's write end.
-- `--detached` turns both watches off (to run it by hand in the background).
--
-- One select() loop, one coroutine per connection, non-blocking sockets: a
-- stalled or delayed reply never holds up another connection. Keep-alive,
-- pipelining, chunked request bodies and `Expect: 100-continue` work.
--
-- Endpoints
--   POST <any prefix>/chat/completions  answered from the reply script (FIFO);
--                      every request is logged: method, path, headers (lower-
--                      case names), body (text) and json (parsed body or nil)
--   POST /_script      body {"replies": [...], "mode": "replace"|"append"}
--                      (default replace) -> {"queued": n}
--   GET  /_requests    the JSON array of logged requests
--   POST /_reset       clears script, log and the rate limit
--   POST /_limit       body {"requests": n, "window_s": s, "retry_after": "1"}:
--                      a completion above n per window (fixed windows from the
--                      first completion after this call) gets 429 with that
--                      Retry-After and is not logged nor answered from the
--                      script; {} turns the limit off
--   GET  /_limit       {"rejected": n (429s sent), "accepted": n,
--                      "max_per_pause": the most 429s sent within one pause
--                      (retry_after seconds from a 429 that began one)}
--   GET  /_health      200 "ok"
--   POST /_shutdown    200, then the server exits
-- With the script empty a completion gets 500 and
-- {"error":{"message":"fake_openai: no scripted reply left","type":"server_error"}}.
--
-- Reply fields (all optional; `{}` is an empty assistant message)
--   for_model        only a request for this model takes the reply (the
--                    first matching entry of the script is used)
--   text             assistant content
--   tool_calls       [{id, name, arguments}], arguments a table (encoded to
--                    JSON) or a raw string sent as-is; content is then null
--                    and finish_reason "tool_calls"
--   finish_reason    override ("stop" / "tool_calls" by default)
--   usage            usage object (default {prompt_tokens=10,
--                    completion_tokens=5, total_tokens=15}); false omits it
--   model, id        override the echoed request model / the generated id
--   status           HTTP status; non-200 sends an error reply: body (a string
--                    sent as-is, or a table sent as JSON), by default an
--                    OpenAI-style error JSON naming the status
--   headers          extra response headers, e.g. {"Retry-After": "1"}
--   body             see status
--   after_tool       a reply served instead of this one when the request's
--                    last message is a tool result (so concurrent runs that
--                    each go model -> tool -> model can share one script)
--   echo_headers     with a non-200 status (and no body) or a stream_error:
--                    the error message lists the request's headers, values
--                    and all ("request headers: name: value; ..."), as some
--                    proxies and debug servers do
--   raw              exact body text (with status, default 200, and
--                    content_type, default text/plain); with content_type
--                    text/event-stream it doubles as a hand-written SSE body
--   raw_chunks       list of strings sent as separate HTTP chunks (paced by
--                    delay_between_chunks_ms), content_type as for raw
--   content_type     see raw / raw_chunks
--   delay_ms         wait this long before answering
--   oversize_bytes   200 reply padded to at least this many bytes, written in
--                    pieces; for a stream request it is one huge SSE event
-- Streaming (request has "stream": true; the same reply becomes SSE)
--   chunk_size       characters per text delta / tool-argument fragment (4)
--   delay_between_chunks_ms  pause between SSE events (0)
--   eol              line ending of the SSE framing ("\n"; try "\r\n")
--   stall_after_chunks     send N events, then hold the connection silently
--                          until the client goes away
--   truncate_after_chunks  send N events, then close the connection abruptly
--                          (no terminating HTTP chunk: a transport error)
--   end_after_chunks       send N events, then end the HTTP body cleanly
--                          without [DONE]
--   stream_error     {message, type, code}: after `after_chunks` (0) events
--                    send data: {"error":{...}}, end the body and close
--   hold_after_error with stream_error: send the error event, then hold the
--                    connection silently (no end of body) until the client
--                    goes away
-- Event sequence: text deltas (the first carries role "assistant"), tool-call
-- deltas (first with index/id/type/name/arguments "", then argument fragments
-- with index and arguments only), a chunk with finish_reason, a usage chunk
-- with empty choices when stream_options.include_usage, then data: [DONE].
-- "N events" above counts data: lines in that order.
-- In tool_calls arguments (a table), a string "{{task_id:N}}" becomes the Nth
-- distinct task id ("tsk_...") found in the request's tool messages.

local socket = require "socket"
local cjson = require "cjson"

local null = cjson.null
local now = socket.gettime

local MAX_HEAD = 64 * 1024
local MAX_BODY = 64 * 1024 * 1024

local function log_err(fmt, ...)
  io.stderr:write("fake_openai: ", string.format(fmt, ...), "\n")
end

----------------------------------------------------------------------------
-- scheduler: coroutines yield ("read"|"write"|"sleep", sock, deadline)

local waits = {}        -- co -> {kind, sock, deadline}
local conns = {}        -- co -> client socket (to close a crashed handler's)
local running = true

local function wait(kind, sock, deadline)
  coroutine.yield(kind, sock, deadline)
end

local function sleep_ms(ms)
  if ms and ms > 0 then wait("sleep", nil, now() + ms / 1000) end
end

local function resume(co, ...)
  local ok, kind, sock, deadline = coroutine.resume(co, ...)
  if not ok then
    log_err("handler error: %s", tostring(kind))
    if conns[co] then conns[co]:close() end
  end
  if coroutine.status(co) == "dead" then
    waits[co], conns[co] = nil, nil
  else
    waits[co] = { kind = kind, sock = sock, deadline = deadline }
  end
end

----------------------------------------------------------------------------
-- connection I/O (buffered reads, full writes); errors end the coroutine

local conn_mt = {}
conn_mt.__index = conn_mt

local function new_conn(sock)
  return setmetatable({ sock = sock, buf = "", closed = false }, conn_mt)
end

-- Next bytes from the socket, waiting for them; nil once the peer is gone.
function conn_mt:recv()
  while true do
    local data, err, partial = self.sock:receive(65536)
    local got = data or partial
    if got and #got > 0 then return got end
    if err ~= "timeout" then
      self.closed = true
      return nil
    end
    wait("read", self.sock)
  end
end

function conn_mt:fill()
  local got = self:recv()
  if got then self.buf = self.buf .. got end
  return got ~= nil
end

function conn_mt:line(limit)
  while true do
    local i = self.buf:find("\n", 1, true)
    if i then
      local l = self.buf:sub(1, i - 1):gsub("\r$", "")
      self.buf = self.buf:sub(i + 1)
      return l
    end
    if #self.buf > limit or not self:fill() then return nil end
  end
end

-- Exactly n bytes (parts collected in a table: bodies can be large).
function conn_mt:bytes(n)
  local parts, have = { self.buf }, #self.buf
  while have < n do
    local got = self:recv()
    if not got then return nil end
    parts[#parts + 1] = got
    have = have + #got
  end
  local all = #parts == 1 and parts[1] or table.concat(parts)
  self.buf = all:sub(n + 1)
  return all:sub(1, n)
end

function conn_mt:send(data)
  local i = 1
  while i <= #data do
    local last, err, partial = self.sock:send(data, i)
    if last then
      i = last + 1
    elseif err == "timeout" then
      i = partial + 1
      if i <= #data then wait("write", self.sock) end
    else
      error({ closed = true })
    end
  end
end

function conn_mt:close()
  self.closed = true
  self.sock:close()
end

-- Block (cooperatively) until the peer goes away, discarding what it sends.
function conn_mt:hold()
  self.buf = ""
  while self:recv() do end
end

----------------------------------------------------------------------------
-- HTTP

local reasons = {
  [100] = "Continue", [200] = "OK", [400] = "Bad Request", [401] = "Unauthorized",
  [403] = "Forbidden", [404] = "Not Found", [405] = "Method Not Allowed",
  [408] = "Request Timeout", [413] = "Payload Too Large", [429] = "Too Many Requests",
  [500] = "Internal Server Error", [502] = "Bad Gateway", [503] = "Service Unavailable",
  [504] = "Gateway Timeout",
}

-- Reads one request; nil when the connection ended, or false + status for
-- a malformed one.
local function read_request(c)
  local l = c:line(MAX_HEAD)
  while l == "" do l = c:line(MAX_HEAD) end -- tolerate stray CRLFs between requests
  if not l then return nil end
  local method, target, version = l:match("^(%u+) (%S+) HTTP/(%d%.%d)$")
  if not method then return false, 400 end
  local headers, size = {}, 0
  while true do
    local h = c:line(MAX_HEAD)
    if not h then return nil end
    if h == "" then break end
    size = size + #h
    if size > MAX_HEAD then return false, 400 end
    local name, value = h:match("^([^:%s]+):%s*(.-)%s*$")
    if not name then return false, 400 end
    name = name:lower()
    headers[name] = headers[name] and (headers[name] .. ", " .. value) or value
  end
  local req = { method = method, path = target, version = version, headers = headers }
  local te = (headers["transfer-encoding"] or ""):lower()
  local cl = headers["content-length"]
  if (headers.expect or ""):lower() == "100-continue" and (te ~= "" or (cl and cl ~= "0")) then
    c:send("HTTP/1.1 100 Continue\r\n\r\n")
  end
  if te:find("chunked", 1, true) then
    local parts, total = {}, 0
    while true do
      local sl = c:line(MAX_HEAD)
      if not sl then return nil end
      local n = tonumber(sl:match("^%s*(%x+)"), 16)
      if not n then return false, 400 end
      if n == 0 then break end
      total = total + n
      if total > MAX_BODY then return false, 413 end
      local d = c:bytes(n)
      if not d or c:line(MAX_HEAD) == nil then return nil end
      parts[#parts + 1] = d
    end
    repeat -- trailers up to the empty line
      local t = c:line(MAX_HEAD)
      if not t then return nil end
    until t == ""
    req.body = table.concat(parts)
  elseif cl then
    local n = tonumber(cl:match("^%d+$"))
    if not n then return false, 400 end
    if n > MAX_BODY then return false, 413 end
    req.body = c:bytes(n)
    if not req.body then return nil end
  else
    req.body = ""
  end
  local conn_h = (headers.connection or ""):lower()
  if version == "1.0" then
    req.keep_alive = conn_h:find("keep-alive", 1, true) ~= nil
  else
    req.keep_alive = not conn_h:find("close", 1, true)
  end
  return req
end

local function head(req, status, hdrs)
  local out = { string.format("HTTP/1.1 %d %s\r\n", status, reasons[status] or "Status") }
  for _, h in ipairs(hdrs) do out[#out + 1] = h[1] .. ": " .. h[2] .. "\r\n" end
  out[#out + 1] = "Connection: " .. (req.keep_alive and "keep-alive" or "close") .. "\r\n\r\n"
  return table.concat(out)
end

local function extra_headers(hdrs, reply)
  if type(reply) == "table" and type(reply.headers) == "table" then
    local names = {}
    for k in pairs(reply.headers) do names[#names + 1] = k end
    table.sort(names)
    for _, k in ipairs(names) do hdrs[#hdrs + 1] = { k, tostring(reply.headers[k]) } end
  end
  return hdrs
end

local function respond(c, req, status, ctype, body, reply)
  local hdrs = extra_headers({ { "Content-Type", ctype }, { "Content-Length", #body } }, reply)
  c:send(head(req, status, hdrs) .. (req.method == "HEAD" and "" or body))
end

local function error_json(message, etype, code)
  return cjson.encode({ error = { message = message, type = etype, param = null,
                                  code = code == nil and null or code } })
end

----------------------------------------------------------------------------
-- state

local script, log = {}, {}
local id_seq = 0
-- the server-side rate limit (POST /_limit) and what it did
local limit, limit_state = nil, nil

local function new_limit_state()
  return { window_start = nil, in_window = 0, rejected = 0, accepted = 0, max_per_pause = 0,
           pause_end = nil, in_pause = 0 }
end

-- true when this completion is over the limit (and counts it)
local function over_limit()
  if not limit then return false end
  local st, t = limit_state, now()
  if not st.window_start or t >= st.window_start + limit.window_s then
    -- the fixed window that holds t
    local base = st.window_start or t
    st.window_start = base + math.floor((t - base) / limit.window_s) * limit.window_s
    st.in_window = 0
  end
  if st.in_window < limit.requests then
    st.in_window = st.in_window + 1
    st.accepted = st.accepted + 1
    return false
  end
  st.rejected = st.rejected + 1
  if st.pause_end and t < st.pause_end then
    st.in_pause = st.in_pause + 1
  else
    st.pause_end, st.in_pause = t + (tonumber(limit.retry_after) or 1), 1
  end
  if st.in_pause > st.max_per_pause then st.max_per_pause = st.in_pause end
  return true
end

-- "{{task_id:N}}" strings in a reply's tool-call arguments -> the Nth task
-- id the request's tool messages carry
local function task_ids_of(req)
  local ids, seen = {}, {}
  for _, m in ipairs(req.json and type(req.json.messages) == "table" and req.json.messages or {}) do
    if type(m) == "table" and m.role == "tool" and type(m.content) == "string" then
      for id in m.content:gmatch('"task_id":"(tsk_[%w_%-]+)"') do
        if not seen[id] then
          seen[id] = true
          ids[#ids + 1] = id
        end
      end
    end
  end
  return ids
end

local function substitute(v, ids)
  if type(v) == "string" then
    local n = v:match("^{{task_id:(%d+)}}$")
    if n then return ids[tonumber(n)] or v end
    return v
  end
  if type(v) ~= "table" then return v end
  local out = {}
  for k, x in pairs(v) do out[k] = substitute(x, ids) end
  return setmetatable(out, getmetatable(v))
end

-- The first scripted reply this request may take (for_model), removed.
local function take_reply(req)
  local model = req.json and req.json.model
  for i, r in ipairs(script) do
    if type(r) ~= "table" or r.for_model == nil or r.for_model == model then
      table.remove(script, i)
      if type(r) == "table" and type(r.tool_calls) == "table" then
        r = substitute(r, task_ids_of(req))
      end
      return r
    end
  end
  return nil
end

local function next_id()
  id_seq = id_seq + 1
  return string.format("chatcmpl-fake%06d", id_seq)
end

----------------------------------------------------------------------------
-- completion bodies

-- Split s into pieces of n UTF-8 characters (bytes if s is not valid UTF-8).
local function split(s, n)
  n = math.max(1, math.floor(tonumber(n) or 4))
  local out, valid = {}, utf8.len(s) ~= nil
  local i = 1
  while i <= #s do
    local j
    if valid then
      j = utf8.offset(s, n + 1, i)
      j = j and j - 1 or #s
    else
      j = i + n - 1
    end
    out[#out + 1] = s:sub(i, j)
    i = j + 1
  end
  return out
end

local function args_string(a)
  if a == nil or a == null then return "{}" end
  if type(a) == "string" then return a end
  return cjson.encode(a)
end

local function usage_of(reply)
  if reply.usage == false then return nil end
  if type(reply.usage) == "table" then return reply.usage end
  return { prompt_tokens = 10, completion_tokens = 5, total_tokens = 15 }
end

local function has_tools(reply)
  return type(reply.tool_calls) == "table" and #reply.tool_calls > 0
end

local function finish_of(reply)
  if type(reply.finish_reason) == "string" then return reply.finish_reason end
  return has_tools(reply) and "tool_calls" or "stop"
end

local function model_of(req, reply)
  if type(reply.model) == "string" then return reply.model end
  local m = req.json and req.json.model
  return type(m) == "string" and m or "fake-model"
end

local function completion_table(req, reply)
  local text = type(reply.text) == "string" and reply.text or nil
  local msg = { role = "assistant", content = text or null }
  if has_tools(reply) then
    local calls = {}
    for i, tc in ipairs(reply.tool_calls) do
      calls[i] = { id = tc.id or ("call_" .. i), type = "function",
                   ["function"] = { name = tc.name or "tool", arguments = args_string(tc.arguments) } }
    end
    msg.tool_calls = calls
  elseif not text then
    msg.content = ""
  end
  return { id = reply.id or next_id(), object = "chat.completion", created = os.time(),
           model = model_of(req, reply), system_fingerprint = "fp_fake",
           choices = { { index = 0, message = msg, logprobs = null, finish_reason = finish_of(reply) } },
           usage = usage_of(reply) }
end

-- The data: payloads of a streamed reply, [DONE] included.
local function stream_events(req, reply)
  local id, created, model = reply.id or next_id(), os.time(), model_of(req, reply)
  local so = req.json and req.json.stream_options
  local include_usage = type(so) == "table" and so.include_usage == true
  local pre = '{"id":' .. cjson.encode(id) .. ',"object":"chat.completion.chunk","created":'
      .. created .. ',"model":' .. cjson.encode(model) .. ',"system_fingerprint":"fp_fake","choices":'
  local post = include_usage and ',"usage":null}' or '}'
  local events, role_sent = {}, false
  local function delta(d, finish)
    if not role_sent then d.role, role_sent = "assistant", true end
    events[#events + 1] = pre .. cjson.encode({ { index = 0, delta = d, logprobs = null,
                                                 finish_reason = finish or null } }) .. post
  end
  if type(reply.text) == "string" then
    for _, piece in ipairs(split(reply.text, reply.chunk_size)) do delta({ content = piece }) end
  end
  if has_tools(reply) then
    for i, tc in ipairs(reply.tool_calls) do
      local idx = i - 1
      delta({ tool_calls = { { index = idx, id = tc.id or ("call_" .. i), type = "function",
                               ["function"] = { name = tc.name or "tool", arguments = "" } } } })
      for _, frag in ipairs(split(args_string(tc.arguments), reply.chunk_size)) do
        delta({ tool_calls = { { index = idx, ["function"] = { arguments = frag } } } })
      end
    end
  end
  if not role_sent then delta({ content = "" }) end
  events[#events + 1] = pre .. cjson.encode({ { index = 0, delta = {}, logprobs = null,
                                               finish_reason = finish_of(reply) } }) .. post
  local usage = usage_of(reply)
  if include_usage and usage then
    events[#events + 1] = pre .. '[],"usage":' .. cjson.encode(usage) .. '}'
  end
  events[#events + 1] = "[DONE]"
  return events
end

----------------------------------------------------------------------------
-- reply writers

-- Body writer for a streamed response: chunked for HTTP/1.1, else close-delimited.
local function body_writer(c, req)
  local chunked = req.version ~= "1.0"
  if not chunked then req.keep_alive = false end
  local w = {}
  function w.head(status, ctype, reply)
    local hdrs = { { "Content-Type", ctype }, { "Cache-Control", "no-cache" } }
    if chunked then hdrs[#hdrs + 1] = { "Transfer-Encoding", "chunked" } end
    c:send(head(req, status, extra_headers(hdrs, reply)))
  end
  function w.chunk(s)
    if #s == 0 then return end
    c:send(chunked and string.format("%x\r\n%s\r\n", #s, s) or s)
  end
  function w.finish()
    if chunked then c:send("0\r\n\r\n") end
  end
  return w
end

local function send_oversize(c, req, reply, stream)
  local want = math.floor(tonumber(reply.oversize_bytes) or 0)
  local piece = string.rep("x", 65536)
  local function pad(emit, n)
    while n > 0 do
      local k = math.min(n, #piece)
      emit(k == #piece and piece or piece:sub(1, k))
      n = n - k
    end
  end
  if stream then
    local w = body_writer(c, req)
    w.head(200, "text/event-stream", reply)
    local pre = 'data: {"id":"' .. next_id() .. '","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":"'
    local post = '"},"finish_reason":null}]}\n\n'
    w.chunk(pre)
    pad(w.chunk, math.max(0, want - #pre - #post))
    w.chunk(post)
    w.chunk("data: [DONE]\n\n")
    w.finish()
    return
  end
  local t = completion_table(req, reply)
  local tail = cjson.encode(t):sub(2) -- `"id":...}` : padding goes first
  local pre = '{"padding":"'
  local mid = '",'
  local n = math.max(0, want - #pre - #mid - #tail)
  local hdrs = extra_headers({ { "Content-Type", "application/json" },
                               { "Content-Length", #pre + n + #mid + #tail } }, reply)
  c:send(head(req, 200, hdrs) .. pre)
  pad(function(s) c:send(s) end, n)
  c:send(mid .. tail)
end

-- "request headers: name: value; ..." (sorted), for echo_headers.
local function echoed_headers(req)
  local names = {}
  for k in pairs(req.headers) do names[#names + 1] = k end
  table.sort(names)
  local parts = {}
  for i, k in ipairs(names) do parts[i] = k .. ": " .. req.headers[k] end
  return "request headers: " .. table.concat(parts, "; ")
end

local function send_stream(c, req, reply)
  local events = stream_events(req, reply)
  local eol = type(reply.eol) == "string" and reply.eol or "\n"
  local gap = tonumber(reply.delay_between_chunks_ms) or 0
  local stall = tonumber(reply.stall_after_chunks)
  local trunc = tonumber(reply.truncate_after_chunks)
  local stop = tonumber(reply.end_after_chunks)
  local err = type(reply.stream_error) == "table" and reply.stream_error or nil
  local err_at = err and (tonumber(reply.after_chunks) or 0)
  if err then req.keep_alive = false end
  local w = body_writer(c, req)
  w.head(200, "text/event-stream", reply)
  for i = 0, #events do
    if stall and i == stall then c:hold() return end
    if trunc and i == trunc then c:close() return end
    if stop and i == stop then w.finish() return end
    if err and i == err_at then
      local msg = err.message or "stream error"
      if reply.echo_headers then msg = msg .. " (" .. echoed_headers(req) .. ")" end
      w.chunk("data: " .. cjson.encode({ error = { message = msg,
        type = err.type or "server_error", param = null, code = err.code or null } }) .. eol .. eol)
      if reply.hold_after_error then c:hold() return end
      w.finish()
      c:close()
      return
    end
    if i == #events then break end
    if i > 0 then sleep_ms(gap) end
    w.chunk("data: " .. events[i + 1] .. eol .. eol)
  end
  w.finish()
end

local function send_completion(c, req)
  local reply = take_reply(req)
  if not reply then
    respond(c, req, 500, "application/json",
            error_json("fake_openai: no scripted reply left", "server_error"))
    return
  end
  if type(reply) ~= "table" then reply = { text = tostring(reply) } end
  local msgs = req.json and req.json.messages
  local last = type(msgs) == "table" and msgs[#msgs]
  if type(reply.after_tool) == "table" and type(last) == "table" and last.role == "tool" then
    reply = reply.after_tool
  end
  sleep_ms(tonumber(reply.delay_ms))
  local stream = req.json and req.json.stream == true
  local status = math.floor(tonumber(reply.status) or 200)
  if reply.raw_chunks then
    local w = body_writer(c, req)
    w.head(status, reply.content_type or "text/plain", reply)
    for i, s in ipairs(reply.raw_chunks) do
      if i > 1 then sleep_ms(tonumber(reply.delay_between_chunks_ms)) end
      w.chunk(tostring(s))
    end
    w.finish()
  elseif reply.raw then
    respond(c, req, status, reply.content_type or "text/plain", tostring(reply.raw), reply)
  elseif status ~= 200 then
    local body = reply.body
    local ctype = reply.content_type or "application/json"
    if type(body) == "table" then
      body = cjson.encode(body)
    elseif body == nil and reply.echo_headers then
      body = error_json("fake_openai: scripted HTTP " .. status .. "; " .. echoed_headers(req),
                        status >= 500 and "server_error" or "invalid_request_error")
    elseif body == nil then
      local etype = status == 429 and "rate_limit_error"
          or status >= 500 and "server_error" or "invalid_request_error"
      body = error_json("fake_openai: scripted HTTP " .. status, etype,
                        status == 429 and "rate_limit_exceeded" or nil)
    else
      body = tostring(body)
    end
    respond(c, req, status, ctype, body, reply)
  elseif reply.oversize_bytes then
    send_oversize(c, req, reply, stream)
  elseif stream then
    send_stream(c, req, reply)
  else
    respond(c, req, 200, "application/json", cjson.encode(completion_table(req, reply)), reply)
  end
end

----------------------------------------------------------------------------
-- routing

local function handle(c, req)
  local path = req.path:gsub("%?.*$", "")
  local m = req.method
  if m == "POST" and path:match("/chat/completions/?$") then
    local ok, decoded = pcall(cjson.decode, req.body)
    req.json = ok and type(decoded) == "table" and decoded or nil
    if over_limit() then
      return respond(c, req, 429, "application/json",
        error_json("fake_openai: rate limit reached", "rate_limit_error", "rate_limit_exceeded"),
        { headers = { ["Retry-After"] = tostring(limit.retry_after or "1") } })
    end
    log[#log + 1] = { method = m, path = req.path, headers = req.headers, body = req.body,
                      json = req.json }
    return send_completion(c, req)
  elseif path == "/_health" then
    return respond(c, req, 200, "text/plain", "ok")
  elseif m == "POST" and path == "/_script" then
    local ok, t = pcall(cjson.decode, req.body)
    if not ok or type(t) ~= "table" then
      return respond(c, req, 400, "application/json", error_json("bad script: " .. tostring(t), "invalid_request_error"))
    end
    if t.mode ~= "append" then script = {} end
    for _, r in ipairs(type(t.replies) == "table" and t.replies or {}) do script[#script + 1] = r end
    return respond(c, req, 200, "application/json", cjson.encode({ queued = #script }))
  elseif m == "GET" and path == "/_requests" then
    return respond(c, req, 200, "application/json", #log == 0 and "[]" or cjson.encode(log))
  elseif m == "POST" and path == "/_limit" then
    local ok, t = pcall(cjson.decode, req.body)
    if not ok or type(t) ~= "table" then
      return respond(c, req, 400, "application/json", error_json("bad limit", "invalid_request_error"))
    end
    limit = tonumber(t.requests) and { requests = tonumber(t.requests),
      window_s = tonumber(t.window_s) or 60, retry_after = t.retry_after or "1" } or nil
    limit_state = new_limit_state()
    return respond(c, req, 200, "application/json", '{"ok":true}')
  elseif m == "GET" and path == "/_limit" then
    local st = limit_state or new_limit_state()
    return respond(c, req, 200, "application/json", cjson.encode({ rejected = st.rejected,
      accepted = st.accepted, max_per_pause = st.max_per_pause }))
  elseif m == "POST" and path == "/_reset" then
    script, log = {}, {}
    limit, limit_state = nil, nil
    return respond(c, req, 200, "application/json", '{"ok":true}')
  elseif m == "POST" and path == "/_shutdown" then
    req.keep_alive = false
    respond(c, req, 200, "text/plain", "bye")
    running = false
    return
  end
  respond(c, req, 404, "application/json",
          error_json("fake_openai: no route for " .. m .. " " .. path, "invalid_request_error"))
end

local function serve(sock)
  local c = new_conn(sock)
  local ok, err = pcall(function()
    while not c.closed do
      local req, status = read_request(c)
      if req == nil then break end
      if req == false then
        respond(c, { keep_alive = false, method = "GET" }, status, "application/json",
                error_json("fake_openai: malformed request", "invalid_request_error"))
        break
      end
      handle(c, req)
      if not req.keep_alive then break end
    end
  end)
  if not ok and not (type(err) == "table" and err.closed) then
    log_err("connection error: %s", tostring(err))
  end
  if not c.closed then c:close() end
end

----------------------------------------------------------------------------
-- main

-- Parent pid from /proc/self/stat (nil where there is no /proc).
local function parent_pid()
  local f = io.open("/proc/self/stat", "r")
  if not f then return nil end
  local stat = f:read("*a")
  f:close()
  return tonumber(stat:match("%)%s+%S+%s+(%d+)"))
end

local function main(argv)
  local port, watch_parent = 0, true
  local i = 1
  while i <= #argv do
    if argv[i] == "--port" then
      port = tonumber(argv[i + 1]) or error("--port needs a number")
      i = i + 1
    elseif argv[i] == "--detached" then
      watch_parent = false
    else
      io.stderr:write("usage: fake_openai.lua [--port N] [--detached]\n")
      os.exit(2)
    end
    i = i + 1
  end
  local listener = assert(socket.bind("127.0.0.1", port))
  listener:settimeout(0)
  local _, bound = listener:getsockname()
  io.stdout:write("LISTENING ", bound, "\n")
  io.stdout:flush()

  -- select() only needs getfd/dirty, so a plain table stands for stdin
  local stdin = { getfd = function() return 0 end, dirty = function() return false end }
  -- a closed stdin would have given fd 0 to the listener
  local watch_stdin = watch_parent and listener:getfd() ~= 0
  local ppid = watch_parent and parent_pid()
  local next_ppid_check = now() + 1
  local owner = {}   -- socket -> coroutine waiting on it
  while running do
    local rset, wset = { listener }, {}
    if watch_stdin then rset[2] = stdin end
    local t, timeout = now(), 1
    if ppid and t >= next_ppid_check then
      if parent_pid() ~= ppid then break end
      next_ppid_check = t + 1
    end
    owner = {}
    for co, w in pairs(waits) do
      if w.kind == "read" then rset[#rset + 1] = w.sock
      elseif w.kind == "write" then wset[#wset + 1] = w.sock end
      if w.sock then owner[w.sock] = co end
      if w.deadline then timeout = math.min(timeout, math.max(0, w.deadline - t)) end
    end
    local r, w, e = socket.select(rset, wset, timeout)
    if not r then -- only a bad descriptor (a closed stdin) gets here
      log_err("%s", tostring(e))
      break
    end
    local ready = {}
    for _, s in ipairs(r) do
      if s == listener then
        while true do
          local cs = listener:accept()
          if not cs then break end
          cs:settimeout(0)
          cs:setoption("tcp-nodelay", true)
          local co = coroutine.create(serve)
          conns[co] = cs
          ready[#ready + 1] = { co, cs }
        end
      elseif s == stdin then
        if io.stdin:read(1) == nil then running = false end
      elseif owner[s] then
        ready[#ready + 1] = { owner[s] }
      end
    end
    for _, s in ipairs(w) do
      if owner[s] then ready[#ready + 1] = { owner[s] } end
    end
    t = now()
    for co, wt in pairs(waits) do
      if wt.deadline and wt.deadline <= t then ready[#ready + 1] = { co } end
    end
    local done = {}
    for _, item in ipairs(ready) do
      local co = item[1]
      if not done[co] and running and coroutine.status(co) == "suspended" then
        done[co] = true
        resume(co, item[2])
      end
    end
  end
  listener:close()
end

main(arg)
