-- luagent.openai{...}: Chat Completions over libcurl (README). Works with
-- OpenAI and the OpenAI-compatible servers people run locally (Ollama,
-- llama.cpp server, vLLM, LM Studio). Streaming turns text deltas into
-- `token` events and assembles tool-call deltas by index. Provider errors
-- that survive retries end the run with error.kind "model" (R-13); the API
-- key and secret header values never appear in any event, error or message.
local compat = require("luagent.compat")
local core = require("luagent.core")
local json = require("luagent.json")
local options = require("luagent.options")
local defs = require("luagent.defs")
local http = require("luagent.http")
local tools = require("luagent.tools")
local ratelimit = require("luagent.ratelimit")

local openai = {}

local DEFAULT_BASE = "https://api.openai.com/v1"
local MAX_MESSAGE = 1024
local RETRY_STATUS = { [408] = true, [409] = true, [429] = true, [500] = true, [502] = true,
  [503] = true, [504] = true }
local MAX_RETRY_AFTER_S = 60
-- Headers whose values are credentials (lower-case names); secret_headers adds more.
local SECRET_HEADERS = { authorization = true, ["api-key"] = true, ["x-api-key"] = true,
  ["proxy-authorization"] = true }

local function positive(v) return options.positive(v) end

local openai_spec = {
  model = "string",
  base_url = options.no_nul,
  api_key = "string",
  api_key_env = "string",
  stream = "boolean",
  timeout_s = positive,
  connect_timeout_s = positive,
  idle_timeout_s = positive,
  call_timeout_s = positive,
  max_retries = options.at_least(0),
  headers = "table",
  secret_headers = function(v)
    if type(v) == "table" then
      local n = 0
      for _ in pairs(v) do n = n + 1 end
      local ok = n == #v
      for _, name in ipairs(v) do ok = ok and type(name) == "string" end
      if ok then return true end
    end
    return nil, 'must be a list of header names, e.g. { "X-Org-Token" }'
  end,
  params = "table",
  max_response_bytes = options.at_least(1),
  retry_backoff_s = function(v) return options.non_negative(v) end,
  limits = "table", -- checked by ratelimit.check
}

-- Contents and arguments reach the provider through luagent.json, which
-- writes every byte that does not start valid UTF-8 as U+FFFD (providers
-- reject invalid UTF-8 outright): no cleaning is needed here.

local LIST_KEYWORDS = { required = true, enum = true, anyOf = true, oneOf = true, allOf = true,
  examples = true, prefixItems = true }

-- Schemas as providers want them: list keywords are JSON arrays (even when
-- empty or one element), an empty `required` is dropped.
local function normalize_schema(s)
  if type(s) ~= "table" then return s end
  local out = {}
  local is_list = json.is_array(s) or (#s > 0)
  for k, v in pairs(s) do
    if type(v) == "table" then
      if LIST_KEYWORDS[k] or (k == "type") then
        local arr = {}
        for i, x in ipairs(v) do arr[i] = normalize_schema(x) end
        out[k] = json.array(arr)
      elseif k == "properties" or k == "$defs" or k == "definitions" or k == "patternProperties" then
        local props = {}
        for pk, pv in pairs(v) do props[pk] = normalize_schema(pv) end
        out[k] = props
      else
        out[k] = normalize_schema(v)
      end
    else
      out[k] = v
    end
  end
  if type(out.required) == "table" and #out.required == 0 then out.required = nil end
  if is_list then json.array(out) end
  return out
end
openai.normalize_schema = normalize_schema

-- A tool call's arguments as the provider gets them back: the model's own
-- text when there is one (raw_arguments), else the table encoded.
local function encode_args(c)
  local a = type(c.raw_arguments) == "string" and c.raw_arguments or c.arguments
  if type(a) == "string" then return a end
  local ok, text = pcall(json.encode, a == nil and {} or a)
  return ok and text or "{}"
end

local function to_wire(messages)
  local out = {}
  for i, m in ipairs(messages) do
    local w = { role = m.role }
    if m.role == "assistant" then
      if m.tool_calls and #m.tool_calls > 0 then
        local calls = {}
        for j, c in ipairs(m.tool_calls) do
          calls[j] = { id = c.id, type = "function",
            ["function"] = { name = c.name, arguments = encode_args(c) } }
        end
        w.tool_calls = json.array(calls)
        w.content = m.content == nil and json.null or m.content
      else
        w.content = m.content or ""
      end
    elseif m.role == "tool" then
      w.tool_call_id = m.tool_call_id
      w.content = m.content or ""
    else
      w.content = m.content or ""
      w.name = m.name
    end
    out[i] = w
  end
  return json.array(out)
end
openai.to_wire = to_wire

-- A tool's parameters: an object schema whose `properties` is always an
-- object (some servers reject an object schema without it).
local function parameters_of(schema)
  local p = normalize_schema(type(schema) == "table" and schema or { type = "object" })
  if p.type == "object" and type(p.properties) ~= "table" then p.properties = {} end
  return p
end

local function wire_tool(t)
  return { type = "function", ["function"] = {
    name = t.name,
    description = t.description ~= "" and t.description or nil,
    parameters = parameters_of(t.input_schema),
  } }
end

-- A tool's entry as JSON text, encoded once: runs call the model with the
-- same tools again and again. Keyed by the schema table (schema tables do not
-- change while in use), then by name and description.
local tool_text_cache = setmetatable({}, { __mode = "k" })
local NO_SCHEMA = {}

local function tool_text(t)
  local by_schema = type(t.input_schema) == "table" and t.input_schema or NO_SCHEMA
  local texts = tool_text_cache[by_schema]
  if not texts then
    texts = {}
    tool_text_cache[by_schema] = texts
  end
  local key = tostring(t.name) .. "\0" .. tostring(t.description)
  local text = texts[key]
  if not text then
    text = json.encode(wire_tool(t))
    texts[key] = text
  end
  return text
end

local function wire_tools_text(tools)
  if not tools or #tools == 0 then return nil end
  local parts = {}
  for i, t in ipairs(tools) do parts[i] = tool_text(t) end
  return "[" .. table.concat(parts, ",") .. "]"
end

-- a < b as the encoder orders object keys (bytes, not the locale)
local function key_after(a, b)
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = a:byte(i), b:byte(i)
    if x ~= y then return x > y end
  end
  return #a > #b
end

-- Without params the body's keys are messages, model, stream,
-- stream_options and tools, in that (sorted) order: all but the messages
-- are the same from call to call, so what follows the messages is made
-- once per model and tool texts (the last one is kept).
local suffix_cache = setmetatable({}, { __mode = "k" })

local function body_suffix(self, tools)
  local n = tools and #tools or 0
  local c = suffix_cache[self]
  local same = c and c.model == self.model and c.stream == self.stream and #c.tools == n
  for i = 1, same and n or 0 do
    -- what tool_text reads of a tool: the same three, the same text
    local t, was = tools[i], c.tools[i]
    if t.name ~= was[1] or t.description ~= was[2] or t.input_schema ~= was[3] then
      same = false
      break
    end
  end
  if same then return c.suffix end
  local parts, seen = {}, {}
  for i = 1, n do
    local t = tools[i]
    parts[i] = tool_text(t)
    seen[i] = { t.name, t.description, t.input_schema }
  end
  local rest = { model = self.model }
  if self.stream then
    rest.stream = true
    rest.stream_options = { include_usage = true }
  end
  local suffix = "," .. json.encode(rest):sub(2, -2) ..
    (n > 0 and ',"tools":[' .. table.concat(parts, ",") .. "]" or "") .. "}"
  suffix_cache[self] = { model = self.model, stream = self.stream, tools = seen, suffix = suffix }
  return suffix
end

-- The request body. The encoder writes keys sorted, so the cached tools
-- text is spliced in where "tools" sorts: the same bytes as encoding the
-- whole table.
function openai.body(self, request)
  if self.params == nil and type(self.model) == "string" then
    return '{"messages":' .. json.encode(to_wire(request.messages)) ..
      body_suffix(self, request.tools)
  end
  local body = {}
  if self.params then
    for k, v in pairs(self.params) do body[k] = v end
  end
  body.model = self.model
  body.messages = to_wire(request.messages)
  body.tools = nil
  if self.stream then
    body.stream = true
    body.stream_options = { include_usage = true }
  else
    -- the reply is read as one JSON body: params cannot turn streaming on
    body.stream, body.stream_options = nil, nil
  end
  local tools_text = wire_tools_text(request.tools)
  if not tools_text then return json.encode(body) end
  local after
  for k, v in pairs(body) do
    if type(k) == "string" and key_after(k, "tools") then
      after = after or {}
      after[k] = v
    end
  end
  for k in pairs(after or {}) do body[k] = nil end
  local head = json.encode(body)
  local tail = after and "," .. json.encode(after):sub(2) or "}"
  return head:sub(1, -2) .. ',"tools":' .. tools_text .. tail
end

-- API keys and secret header values live here, not in the model table:
-- the table's plain data is snapshotted as JSON for workers (R-1), and a
-- secret must never be in it. Each state (host, workers) fills this when
-- its script builds the model: { api_key, headers = { Name = value } }.
local secrets = setmetatable({}, { __mode = "k" })

-- The key of a model: luagent.openai{api_key}, an `api_key` set later on
-- the table (an override), else the environment variable.
local function key_of(self)
  local s = secrets[self] or {}
  local key = self.api_key or s.api_key
  if key == nil and self.api_key_env then key = os.getenv(self.api_key_env) end
  -- (a key read from a file often ends in a newline)
  if type(key) == "string" then key = key:match("^%s*(.-)%s*$") end
  if key == "" then key = nil end
  return key
end

-- Every text a message must not show: the key, each secret header value
-- and its credentials without the scheme ("Bearer x" and "x"), also as
-- JSON writes them (a server may echo them inside a JSON string). Longest
-- first, so a whole value goes before a part of it.
local function hidden_texts(self, key)
  local list, seen = {}, {}
  local function add(v)
    v = tostring(v)
    if #v < 4 or seen[v] then return end
    seen[v] = true
    list[#list + 1] = v
    local ok, quoted = pcall(json.encode, v)
    if ok and quoted:sub(2, -2) ~= v then add(quoted:sub(2, -2)) end
  end
  if key then add(key) end
  for _, v in pairs((secrets[self] or {}).headers or {}) do
    v = tostring(v)
    add(v)
    local credentials = v:match("^%S+%s+(.+)$")
    if credentials then add(credentials) end
  end
  table.sort(list, function(a, b) return #a > #b end)
  return list
end

-- The list of a model for its current key, made again only when the key
-- changes (the secret headers are the model's own, fixed when it is made).
local hidden_cache = setmetatable({}, { __mode = "k" })

local function hidden_of(self, key)
  local c = hidden_cache[self]
  if not c or c.key ~= (key or false) then
    c = { key = key or false, list = hidden_texts(self, key) }
    hidden_cache[self] = c
  end
  return c.list
end

-- Take the secrets out of a text. Always before cutting it: a cut could
-- split a secret and leave a prefix no search finds.
local function redact(hidden, s)
  s = tostring(s)
  for _, secret in ipairs(hidden) do
    local out, i = {}, 1
    while true do
      local a, b = s:find(secret, i, true)
      if not a then break end
      out[#out + 1] = s:sub(i, a - 1)
      out[#out + 1] = "[redacted]"
      i = b + 1
    end
    if #out > 0 then
      out[#out + 1] = s:sub(i)
      s = table.concat(out)
    end
  end
  return s
end

-- At most n bytes of s, not splitting a UTF-8 sequence.
local cut = tools.cut

-- A message for errors and events: the secrets taken out, then cut.
local function message(hidden, s, n)
  return cut(redact(hidden, s), n or MAX_MESSAGE)
end

-- The provider's own message from an error body, else the body itself.
-- Shapes: OpenAI {"error":{"message"}}, Ollama {"error":"..."}, vLLM
-- {"object":"error","message"}, FastAPI {"detail":"..."}, and servers that
-- send both {"error":"Bad Request","message":"..."} (both are shown).
local function provider_message(body)
  local v = json.decode_safe(body or "")
  if type(v) == "table" then
    local parts = {}
    local e = v.error
    if type(e) == "table" and e.message ~= nil then
      parts[1] = tostring(e.message)
    elseif type(e) == "string" then
      parts[1] = e
    end
    if type(v.message) == "string" and v.message ~= parts[1] then parts[#parts + 1] = v.message end
    if #parts == 0 and type(v.detail) == "string" then parts[1] = v.detail end
    if #parts > 0 then return table.concat(parts, ": ") end
  end
  if body == nil or body == "" then return "(empty body)" end
  return body
end

local NO_DETAILS = {}

local function usage_of(u)
  if type(u) ~= "table" then return nil end
  local details = type(u.prompt_tokens_details) == "table" and u.prompt_tokens_details or NO_DETAILS
  return { prompt_tokens = u.prompt_tokens, completion_tokens = u.completion_tokens,
    total_tokens = u.total_tokens, cached_tokens = details.cached_tokens } -- priced apart
end

local function reply_from_message(msg, usage)
  local reply = { usage = usage_of(usage) }
  if type(msg) ~= "table" then return reply end
  if type(msg.content) == "string" then reply.text = msg.content end
  if type(msg.tool_calls) == "table" then
    local calls = {}
    for _, c in ipairs(msg.tool_calls) do
      if type(c) == "table" then
        local f = type(c["function"]) == "table" and c["function"] or {}
        calls[#calls + 1] = { id = c.id, name = f.name, arguments = f.arguments }
      end
    end
    if #calls > 0 then reply.tool_calls = calls end
  end
  return reply
end

-- An error the retry loop understands. status is the HTTP status of a
-- non-2xx reply (nil when the transfer or the body failed).
local function failure(status, msg, retryable, retry_after)
  return { status = status, message = msg, retryable = retryable, retry_after = retry_after }
end

local MONTHS = { Jan = 1, Feb = 2, Mar = 3, Apr = 4, May = 5, Jun = 6, Jul = 7, Aug = 8, Sep = 9,
  Oct = 10, Nov = 11, Dec = 12 }

-- Seconds until an HTTP-date ("Wed, 21 Oct 2015 07:28:00 GMT").
local function http_date_delay(v)
  local d, mon, y, hh, mm, ss = v:match("^%a+,%s+(%d+)%s+(%a+)%s+(%d+)%s+(%d+):(%d+):(%d+)%s+GMT$")
  if not d or not MONTHS[mon] then return nil end
  local now = os.time()
  -- os.time reads the table as local time: correct by the zone's offset
  local offset = now - os.time(os.date("!*t", now))
  local at = os.time({ year = tonumber(y), month = MONTHS[mon], day = tonumber(d),
    hour = tonumber(hh), min = tonumber(mm), sec = tonumber(ss), isdst = false })
  return at + offset - now
end

-- Retry-After (seconds or an HTTP-date) or retry-after-ms, capped.
local function retry_after_s(h)
  if type(h) ~= "table" then return nil end
  local s
  local ms = tonumber(h["retry-after-ms"])
  if ms then
    s = ms / 1000
  elseif type(h["retry-after"]) == "string" then
    s = tonumber(h["retry-after"]) or http_date_delay(h["retry-after"])
  end
  if s and s == s then return math.min(math.max(s, 0), MAX_RETRY_AFTER_S) end
  return nil
end

local function stream_error_retryable(e)
  local t = tostring(e.type or "") .. " " .. tostring(e.code or "")
  return t:find("server") ~= nil or t:find("rate") ~= nil or t:find("overload") ~= nil
    or t:find("timeout") ~= nil or (tonumber(e.code) and RETRY_STATUS[tonumber(e.code)]) or false
end

-- An error the provider sent inside a 200 stream (a data: event with an
-- `error` member, or an `event: error`).
local function stream_failure(hidden, e)
  local code = compat.tointeger(tonumber(e.code))
  local status = code and code >= 400 and code <= 599 and code or nil
  return failure(status, message(hidden, e.message ~= nil and tostring(e.message) or "stream error"),
    stream_error_retryable(e))
end

-- Tool-call deltas, assembled by index (OpenAI), by id, or -- for servers
-- that leave the index out of later fragments -- onto the last call.
local function add_tool_delta(acc, tc)
  if type(tc) ~= "table" then return end
  local id = type(tc.id) == "string" and tc.id ~= "" and tc.id or nil
  local idx = compat.tointeger(tc.index)
  local function new_slot()
    local s = { args = {} }
    acc.calls[#acc.calls + 1] = s
    return s
  end
  local slot
  if idx then
    slot = acc.by_index[idx]
  elseif id then
    slot = acc.by_id[id]
  else
    slot = acc.last
  end
  -- a different id where a call already is: a new call (some servers send
  -- every call with index 0)
  if not slot or (id and slot.id and slot.id ~= id) then
    slot = new_slot()
  end
  if idx then acc.by_index[idx] = slot end
  if id then
    slot.id = id
    acc.by_id[id] = slot
  end
  local f = type(tc["function"]) == "table" and tc["function"] or {}
  if type(f.name) == "string" and f.name ~= "" and f.name ~= slot.name then
    -- a name split across fragments is joined; a repeated one kept once
    slot.name = (slot.name or "") .. f.name
  end
  if type(f.arguments) == "string" then
    slot.args[#slot.args + 1] = f.arguments
  elseif type(f.arguments) == "table" then
    slot.args_table = f.arguments
  end
  acc.last = slot
end

local function stream_reply(acc)
  local reply = { usage = usage_of(acc.usage) }
  local text = table.concat(acc.text)
  if text ~= "" then reply.text = text end
  local calls = {}
  for _, slot in ipairs(acc.calls) do
    calls[#calls + 1] = { id = slot.id, name = slot.name,
      arguments = slot.args_table or table.concat(slot.args) }
  end
  if #calls > 0 then reply.tool_calls = calls end
  return reply
end

local function request_headers(self, key)
  local headers = { ["Content-Type"] = "application/json", ["Accept"] = self.stream and
    "text/event-stream" or "application/json" }
  local has_auth = false
  for _, list in ipairs({ self.headers or {}, (secrets[self] or {}).headers or {} }) do
    for k, v in pairs(list) do
      headers[k] = v
      if k:lower() == "authorization" then has_auth = true end
    end
  end
  if key and not has_auth then headers["Authorization"] = "Bearer " .. key end
  return headers
end

-- The request's header lines (http.header_lines). Without public headers
-- they depend only on the key and `stream` (the secret headers are fixed
-- when the model is made), so they are made once per key.
local lines_cache = setmetatable({}, { __mode = "k" })

local function request_lines(self, key)
  if self.headers ~= nil then return http.header_lines(request_headers(self, key)) end
  local c = lines_cache[self]
  if not c or c.key ~= (key or false) or c.stream ~= self.stream then
    c = { key = key or false, stream = self.stream, lines = http.header_lines(request_headers(self, key)) }
    lines_cache[self] = c
  end
  return c.lines
end

-- The callbacks of a streamed call: they fill `acc`, and acc.err says
-- why the stream failed.
local function stream_handlers(acc, hidden, ctx)
  -- returns true to stop reading: the call has ended (README)
  local function on_event(data)
    if acc.err then return true end
    if type(data) == "table" then -- an `event: error`
      local v = json.decode_safe(data.error)
      local e = type(v) == "table" and (type(v.error) == "table" and v.error or v) or nil
      if type(v) == "table" and type(v.error) == "string" then e = { message = v.error } end
      acc.err = stream_failure(hidden, e or { message = data.error })
      return true
    end
    if data == "[DONE]" then
      acc.done = true
      return false
    end
    local chunk = json.decode_safe(data)
    if type(chunk) ~= "table" then
      acc.err = failure(nil, "the provider sent a stream event that is not JSON: " ..
        message(hidden, data, 200), false)
      return true
    end
    if chunk.error ~= nil then
      local e = type(chunk.error) == "table" and chunk.error or { message = tostring(chunk.error) }
      acc.err = stream_failure(hidden, e)
      return true
    end
    if type(chunk.usage) == "table" then acc.usage = chunk.usage end
    local choice = type(chunk.choices) == "table" and chunk.choices[1]
    if type(choice) ~= "table" then return false end
    local delta = type(choice.delta) == "table" and choice.delta or {}
    if type(delta.content) == "string" and delta.content ~= "" then
      acc.text[#acc.text + 1] = delta.content
      ctx:emit("token", { text = delta.content })
    end
    if type(delta.tool_calls) == "table" then
      for _, tc in ipairs(delta.tool_calls) do add_tool_delta(acc, tc) end
    end
    if choice.finish_reason ~= nil and choice.finish_reason ~= json.null then acc.finished = true end
    return false
  end
  -- chunks of text only are the core's: it emits their token events and
  -- hands their text here, in order with the rest (http.request)
  local function on_text(text)
    if not acc.err then acc.text[#acc.text + 1] = text end
  end
  return on_event, on_text
end

-- One attempt, ended after `timeout` seconds: timeout_s, or less when the
-- call's own deadline (call_timeout_s) comes first (`by_call`).
local function one_call(self, key, hidden, body, ctx, timeout, by_call)
  local acc = self.stream and { text = {}, calls = {}, by_index = {}, by_id = {}, done = false,
    finished = false }
  local on_event, on_text -- (a streamed call's only)
  if acc then on_event, on_text = stream_handlers(acc, hidden, ctx) end
  local res = http.request(ctx, {
    method = "POST", url = self.base_url .. "/chat/completions",
    header_lines = request_lines(self, key), body = body, stream = self.stream,
    timeout_s = timeout, connect_timeout_s = math.min(self.connect_timeout_s, timeout),
    idle_timeout_s = self.idle_timeout_s, max_bytes = self.max_response_bytes,
    token_event = acc and { run_id = ctx.run_id, task_id = ctx.task_id, agent_id = ctx.agent_id,
      depth = ctx.depth } or nil,
  }, on_event, on_text)
  if acc and acc.err then return nil, acc.err end
  local status = res.status
  local http_error = status >= 300 or (status > 0 and status < 200)
  if res.error then
    -- only an HTTP error status is the error's status
    local err_status = http_error and status or nil
    if res.error_kind == "too_big" then
      return nil, failure(err_status, string.format("the response is larger than %d bytes " ..
        "(max_response_bytes)", self.max_response_bytes), false)
    end
    local msg
    if res.error_kind == "timeout" and by_call then
      -- the call's deadline, not the attempt's: no time is left to retry
      return nil, failure(err_status, string.format("the model call ran out of time " ..
        "(call_timeout_s = %gs): %s", self.call_timeout_s, res.error), false)
    elseif res.error_kind == "timeout" then
      msg = string.format("the request timed out after %gs (timeout_s): %s", timeout, res.error)
    elseif res.error_kind == "idle" then
      msg = string.format("the provider sent nothing for %gs (idle_timeout_s)%s",
        self.idle_timeout_s, res.sse and ": the stream stalled" or "")
    elseif res.sse then
      msg = "the stream was cut off: " .. res.error
    else
      msg = res.error
    end
    return nil, failure(err_status, msg, true)
  end
  if http_error then
    return nil, failure(status, string.format("HTTP %d: %s", status,
      message(hidden, provider_message(res.body))), RETRY_STATUS[status] or false,
      retry_after_s(res.headers))
  end
  if res.sse then
    if not acc.done and not acc.finished then
      return nil, failure(nil, "the stream ended before it was complete (no finish_reason and " ..
        "no [DONE]: truncated)", true)
    end
    return stream_reply(acc)
  end
  local ct = res.content_type or ""
  local v = json.decode_safe(res.body)
  if type(v) ~= "table" then
    local what = (ct:find("json") or ct == "") and "a body that is not valid JSON" or
      string.format("content type %q, not JSON", ct)
    local shown = res.body ~= "" and message(hidden, res.body, 200) or "(empty body)"
    return nil, failure(nil, string.format("the provider sent %s: %s", what, shown), false)
  end
  if v.error ~= nil then
    return nil, failure(nil, message(hidden, provider_message(res.body)), false)
  end
  local choice = type(v.choices) == "table" and v.choices[1]
  if type(choice) ~= "table" then
    return nil, failure(nil, "the provider's reply has no choices", false)
  end
  if type(choice.message) ~= "table" then
    -- {"message": null} is no answer, not an empty one
    return nil, failure(nil, "the provider's reply has no message in choices[1]", false)
  end
  return reply_from_message(choice.message, v.usage)
end

local function backoff(self, attempt, retry_after)
  if retry_after then return retry_after end
  local d = self.retry_backoff_s * 2 ^ (attempt - 1)
  if d > 8 then d = 8 end
  return d * (0.75 + math.random() * 0.5)
end

-- One attempt under its grant (nil: no budget in time), which is given
-- back when the attempt ends, also when it raises (with_close). Returns
-- the call's deadline too: it is set by the first attempt.
local function attempt_with(grant, self, key, hidden, body, ctx, attempt, deadline)
  if not grant then
    error({ kind = "model", message = string.format("the model call ran out of time " ..
      "(call_timeout_s = %gs) waiting for the provider's rate budget", self.call_timeout_s) }, 0)
  end
  -- the call's clock starts with its first request, not with its wait for budget
  deadline = deadline or core.now() + self.call_timeout_s
  local left = attempt == 0 and self.call_timeout_s or deadline - core.now()
  local by_call = left < self.timeout_s
  local timeout = by_call and math.max(0.001, left) or self.timeout_s
  local reply, err = one_call(self, key, hidden, body, ctx, timeout, by_call)
  local limited = err and err.status == 429
  local wait = err and backoff(self, attempt + 1, err.retry_after)
  grant:done(reply and reply.usage and reply.usage.total_tokens, limited and wait or 0)
  return reply, err, limited, wait, deadline
end

-- One model call: attempts, and the waits between them, all end by the
-- call's deadline (call_timeout_s after it starts).
local function complete(self, request, ctx)
  if not ctx then error({ kind = "model", message = "luagent.openai: complete needs a run context" }, 0) end
  local key = key_of(self)
  if not key and self.base_url == DEFAULT_BASE then
    error({ kind = "model", message = string.format(
      "no API key: set %s or pass api_key to luagent.openai", self.api_key_env or "OPENAI_API_KEY") }, 0)
  end
  if key and key:find("[%c]") then
    error({ kind = "model", message = "the API key contains a control character (a line break?)" }, 0)
  end
  local hidden = hidden_of(self, key)
  local body = openai.body(self, request)
  -- the provider's rate budget (README "Rate limits"): every attempt takes
  -- its share first; a 429 pauses the provider for every caller
  local rate_key = ratelimit.key_of(self)
  local est = compat.idiv(#body, 4)
  local deadline
  local attempt = 0
  while true do
    local grant = ratelimit.acquire(ctx, rate_key, self.limits, est,
      deadline and math.max(0, deadline - core.now()))
    local reply, err, limited, wait
    reply, err, limited, wait, deadline = compat.with_close(grant, attempt_with, grant, self, key,
      hidden, body, ctx, attempt, deadline)
    if reply then return reply end
    local msg = message(hidden, err.message)
    if not err.retryable or attempt >= self.max_retries then
      error({ kind = "model", status = err.status, message = msg }, 0)
    end
    attempt = attempt + 1
    if core.now() + wait >= deadline then
      error({ kind = "model", status = err.status, message = message(hidden, string.format(
        "%s (no retry: the next attempt would start after call_timeout_s = %gs)", err.message,
        self.call_timeout_s)) }, 0)
    end
    ctx:emit("retry", { attempt = attempt, status = err.status, message = msg, wait_s = wait })
    -- after a 429 the next attempt waits in the rate budget, with everyone's
    if not limited then ctx:sleep(wait) end
  end
end

-- Split headers into those the model table may show and the secret ones
-- (by name, any case): SECRET_HEADERS and the user's secret_headers.
local function split_headers(headers, secret_names)
  local secret = {}
  for name in pairs(SECRET_HEADERS) do secret[name] = true end
  for _, name in ipairs(secret_names or {}) do secret[name:lower()] = true end
  local public, hidden = {}, {}
  for k, v in pairs(headers or {}) do
    if secret[k:lower()] then hidden[k] = v else public[k] = v end
  end
  return next(public) and public or nil, hidden
end

function openai.new(def)
  def = def or {}
  options.check("luagent.openai", def, openai_spec)
  http.check_headers("luagent.openai", def.headers, 2)
  for i, v in ipairs(def.headers or {}) do
    error(string.format("luagent.openai: headers must map names to values, got %q at [%d]", v, i), 2)
  end
  local base = def.base_url or os.getenv("OPENAI_BASE_URL") or DEFAULT_BASE
  base = base:gsub("/+$", "")
  local public, secret = split_headers(def.headers, def.secret_headers)
  local timeout = def.timeout_s or 600
  local model = defs.mark({
    name = "openai",
    model = def.model or os.getenv("OPENAI_MODEL") or "gpt-4o-mini",
    base_url = base,
    api_key_env = def.api_key_env or "OPENAI_API_KEY",
    stream = def.stream == true,
    timeout_s = timeout,
    connect_timeout_s = def.connect_timeout_s or 10,
    idle_timeout_s = def.idle_timeout_s or 60,
    call_timeout_s = def.call_timeout_s or timeout,
    max_retries = def.max_retries or 2,
    headers = public,
    params = def.params,
    max_response_bytes = def.max_response_bytes or 32 * 1024 * 1024,
    retry_backoff_s = def.retry_backoff_s or 0.5,
    limits = ratelimit.check("luagent.openai", def.limits, 2),
    own_limits = true, -- complete takes budget per attempt (ratelimit.lua)
    complete = complete,
  }, "model")
  secrets[model] = { api_key = def.api_key, headers = secret }
  return model
end

return openai
