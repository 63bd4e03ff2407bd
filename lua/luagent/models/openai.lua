-- luagent.openai{...}: Chat Completions over libcurl (DESIGN §8). Works with
-- OpenAI and the OpenAI-compatible servers people run locally (Ollama,
-- llama.cpp server, vLLM, LM Studio). Streaming turns text deltas into
-- `token` events and assembles tool-call deltas by index. Provider errors
-- that survive retries end the run with error.kind "model" (R-13); the API
-- key never appears in any event, error or message.
local core = require("luagent.core")
local json = require("luagent.json")
local options = require("luagent.options")
local defs = require("luagent.defs")
local http = require("luagent.http")

local openai = {}

local DEFAULT_BASE = "https://api.openai.com/v1"
local MAX_MESSAGE = 1024
local RETRY_STATUS = { [408] = true, [409] = true, [429] = true, [500] = true, [502] = true,
  [503] = true, [504] = true }
local MAX_RETRY_AFTER_S = 60

local openai_spec = {
  model = "string",
  base_url = "string",
  api_key = "string",
  api_key_env = "string",
  stream = "boolean",
  timeout_s = function(v) return options.positive(v) end,
  connect_timeout_s = function(v) return options.positive(v) end,
  max_retries = "integer",
  headers = "table",
  params = "table",
  max_response_bytes = "integer",
  retry_backoff_s = function(v) return options.non_negative(v) end,
}

-- Replace invalid UTF-8 with U+FFFD: providers reject it outright.
local function clean_utf8(s)
  if type(s) ~= "string" or utf8.len(s) then return s end
  local out, i, n = {}, 1, #s
  while i <= n do
    local ok, cp = pcall(utf8.codepoint, s, i)
    if ok and cp then
      local ch = utf8.char(cp)
      out[#out + 1] = ch
      i = i + #ch
    else
      out[#out + 1] = "\239\191\189"
      i = i + 1
    end
  end
  return table.concat(out)
end
openai.clean_utf8 = clean_utf8

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

local function encode_args(a)
  if type(a) == "string" then return clean_utf8(a) end
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
            ["function"] = { name = c.name, arguments = encode_args(c.arguments) } }
        end
        w.tool_calls = json.array(calls)
        w.content = m.content ~= nil and clean_utf8(m.content) or json.null
      else
        w.content = clean_utf8(m.content or "")
      end
    elseif m.role == "tool" then
      w.tool_call_id = m.tool_call_id
      w.content = clean_utf8(m.content or "")
    else
      w.content = clean_utf8(m.content or "")
      w.name = m.name
    end
    out[i] = w
  end
  return json.array(out)
end
openai.to_wire = to_wire

local function wire_tools(tools)
  if not tools or #tools == 0 then return nil end
  local out = {}
  for i, t in ipairs(tools) do
    out[i] = { type = "function", ["function"] = {
      name = t.name,
      description = t.description ~= "" and t.description or nil,
      parameters = normalize_schema(t.input_schema or { type = "object", properties = {} }),
    } }
  end
  return json.array(out)
end

function openai.body(self, request)
  local body = {}
  for k, v in pairs(self.params or {}) do body[k] = v end
  body.model = self.model
  body.messages = to_wire(request.messages)
  body.tools = wire_tools(request.tools)
  if self.stream then
    body.stream = true
    body.stream_options = { include_usage = true }
  end
  return json.encode(body)
end

local function redact(self, s)
  s = tostring(s)
  local key = self._key
  if key and #key >= 4 then
    local i = 1
    while true do
      local a, b = s:find(key, i, true)
      if not a then break end
      s = s:sub(1, a - 1) .. "[redacted]" .. s:sub(b + 1)
      i = a + 10
    end
  end
  if #s > MAX_MESSAGE then s = s:sub(1, MAX_MESSAGE) .. "..." end
  return s
end

-- The provider's own message from an error body, else the body itself.
local function provider_message(body)
  local v = json.decode_safe(body or "")
  if type(v) == "table" and type(v.error) == "table" and v.error.message then
    return tostring(v.error.message)
  elseif type(v) == "table" and type(v.error) == "string" then
    return v.error
  end
  return body ~= "" and body or "(empty body)"
end

local function usage_of(u)
  if type(u) ~= "table" then return nil end
  return { prompt_tokens = u.prompt_tokens, completion_tokens = u.completion_tokens,
    total_tokens = u.total_tokens }
end

local function reply_from_message(msg, usage)
  local reply = { usage = usage_of(usage) }
  if type(msg) ~= "table" then return reply end
  if type(msg.content) == "string" then reply.text = msg.content end
  if type(msg.tool_calls) == "table" then
    local calls = {}
    for _, c in ipairs(msg.tool_calls) do
      local f = c["function"] or {}
      calls[#calls + 1] = { id = c.id, name = f.name, arguments = f.arguments }
    end
    if #calls > 0 then reply.tool_calls = calls end
  end
  return reply
end

-- An error the retry loop understands.
local function failure(status, message, retryable, retry_after)
  return { status = status, message = message, retryable = retryable, retry_after = retry_after }
end

local function retry_after_s(h)
  local v = h and h["retry-after"]
  local n = tonumber(v)
  if n then return math.min(math.max(n, 0), MAX_RETRY_AFTER_S) end
  return nil
end

local function stream_error_retryable(e)
  local t = tostring(e.type or e.code or "")
  return t:find("server") or t:find("rate") or t:find("overload") or t:find("timeout")
    or tonumber(e.code) and RETRY_STATUS[tonumber(e.code)] or false
end

local function one_call(self, body, ctx)
  local url = self.base_url .. "/chat/completions"
  local headers = { ["Content-Type"] = "application/json", ["Accept"] = self.stream and
    "text/event-stream" or "application/json" }
  for k, v in pairs(self.headers or {}) do headers[k] = v end
  local key = self._key
  if key and key ~= "" then headers["Authorization"] = "Bearer " .. key end
  local acc = self.stream and { text = {}, calls = {}, done = false, finished = false }
  local stream_err
  local function on_event(data)
    if stream_err then return end
    if type(data) == "table" then
      stream_err = failure(200, provider_message(data.error), true)
      return
    end
    if data == "[DONE]" then
      acc.done = true
      return
    end
    local chunk = json.decode_safe(data)
    if type(chunk) ~= "table" then
      stream_err = failure(200, "the provider sent a stream event that is not JSON: " ..
        data:sub(1, 200), false)
      return
    end
    if chunk.error ~= nil then
      local e = type(chunk.error) == "table" and chunk.error or { message = tostring(chunk.error) }
      stream_err = failure(200, tostring(e.message or "stream error"), stream_error_retryable(e))
      return
    end
    if type(chunk.usage) == "table" then acc.usage = chunk.usage end
    local choice = type(chunk.choices) == "table" and chunk.choices[1]
    if type(choice) ~= "table" then return end
    local delta = type(choice.delta) == "table" and choice.delta or {}
    if type(delta.content) == "string" and delta.content ~= "" then
      acc.text[#acc.text + 1] = delta.content
      ctx:emit("token", { text = delta.content })
    end
    if type(delta.tool_calls) == "table" then
      for _, tc in ipairs(delta.tool_calls) do
        local idx = math.tointeger(tc.index) or #acc.calls
        local slot = acc.calls[idx + 1]
        if not slot then
          slot = { args = {} }
          acc.calls[idx + 1] = slot
        end
        if type(tc.id) == "string" and tc.id ~= "" then slot.id = tc.id end
        local f = type(tc["function"]) == "table" and tc["function"] or {}
        if type(f.name) == "string" then slot.name = (slot.name or "") .. f.name end
        if type(f.arguments) == "string" then slot.args[#slot.args + 1] = f.arguments end
      end
    end
    if choice.finish_reason ~= nil and choice.finish_reason ~= json.null then acc.finished = true end
  end
  local res = http.request(ctx, {
    method = "POST", url = url, headers = headers, body = body, stream = self.stream,
    timeout_s = self.timeout_s, connect_timeout_s = self.connect_timeout_s,
    max_bytes = self.max_response_bytes,
  }, acc and on_event or nil)
  if stream_err then return nil, stream_err end
  if res.error then
    if res.error_kind == "too_big" then
      return nil, failure(res.status, string.format("the response is larger than %d bytes",
        self.max_response_bytes), false)
    end
    local msg = res.error_kind == "timeout" and
      string.format("the request timed out after %gs (%s)", self.timeout_s, res.error) or res.error
    return nil, failure(res.status ~= 0 and res.status or nil, msg, true)
  end
  if res.status < 200 or res.status >= 300 then
    return nil, failure(res.status, string.format("HTTP %d: %s", res.status,
      provider_message(res.body)), RETRY_STATUS[res.status] or false, retry_after_s(res.headers))
  end
  if res.sse then
    if not acc.done and not acc.finished then
      return nil, failure(res.status, "the stream ended before [DONE] (truncated)", true)
    end
    local reply = { usage = usage_of(acc.usage) }
    local text = table.concat(acc.text)
    if text ~= "" then reply.text = text end
    local ordered = {}
    for i = 1, #acc.calls do
      local slot = acc.calls[i]
      if slot then
        ordered[#ordered + 1] = { id = slot.id, name = slot.name, arguments = table.concat(slot.args) }
      end
    end
    if #ordered > 0 then reply.tool_calls = ordered end
    return reply
  end
  local ct = res.content_type or ""
  local v = json.decode_safe(res.body)
  if type(v) ~= "table" then
    local what = ct:find("json") and "a body that is not valid JSON" or
      string.format("content type %q, not JSON", ct)
    return nil, failure(res.status, string.format("the provider sent %s: %s", what,
      res.body:sub(1, 200)), false)
  end
  if v.error ~= nil then
    return nil, failure(res.status, provider_message(res.body), false)
  end
  local choice = type(v.choices) == "table" and v.choices[1]
  if type(choice) ~= "table" then
    return nil, failure(res.status, "the provider's reply has no choices", false)
  end
  return reply_from_message(choice.message, v.usage)
end

local function backoff(self, attempt, retry_after)
  if retry_after then return retry_after end
  local d = self.retry_backoff_s * 2 ^ (attempt - 1)
  if d > 8 then d = 8 end
  return d * (0.75 + math.random() * 0.5)
end

local function complete(self, request, ctx)
  if not ctx then error({ kind = "model", message = "luagent.openai: complete needs a run context" }, 0) end
  self._key = self.api_key or (self.api_key_env and os.getenv(self.api_key_env))
  if (not self._key or self._key == "") and self.base_url == DEFAULT_BASE then
    error({ kind = "model", message = string.format(
      "no API key: set %s or pass api_key to luagent.openai", self.api_key_env or "OPENAI_API_KEY") }, 0)
  end
  local body = openai.body(self, request)
  local attempt = 0
  while true do
    local reply, err = one_call(self, body, ctx)
    if reply then return reply end
    if not err.retryable or attempt >= self.max_retries then
      error({ kind = "model", status = err.status, message = redact(self, err.message) }, 0)
    end
    attempt = attempt + 1
    local wait = backoff(self, attempt, err.retry_after)
    ctx:emit("retry", { attempt = attempt, status = err.status, message = redact(self, err.message),
      wait_s = wait })
    ctx:sleep(wait)
  end
end

function openai.new(def)
  def = def or {}
  options.check("luagent.openai", def, openai_spec)
  local base = def.base_url or os.getenv("OPENAI_BASE_URL") or DEFAULT_BASE
  base = base:gsub("/+$", "")
  return defs.mark({
    name = "openai",
    model = def.model or os.getenv("OPENAI_MODEL") or "gpt-4o-mini",
    base_url = base,
    api_key = def.api_key,
    api_key_env = def.api_key_env or "OPENAI_API_KEY",
    stream = def.stream == true,
    timeout_s = def.timeout_s or 600,
    connect_timeout_s = def.connect_timeout_s or 10,
    max_retries = def.max_retries or 2,
    headers = def.headers,
    params = def.params,
    max_response_bytes = def.max_response_bytes or 32 * 1024 * 1024,
    retry_backoff_s = def.retry_backoff_s or 0.5,
    complete = complete,
  }, "model")
end

return openai
