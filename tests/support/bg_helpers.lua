-- Helpers for the background-task acceptance specs (tests/bg_*_spec.lua):
-- apps from inline startup scripts with a prelude of helpers that scripted
-- models use to read their request (the same in the host and in workers),
-- and host-side readers of transcripts and events. Nothing here sleeps to
-- synchronise.
local R = require "support.runtime_helpers"

local B = setmetatable({}, { __index = R })

-- Seen by every config script (host and workers): `luagent`, `json`, `S`
-- (test-side values; an empty table in workers) and `M`, helpers that read
-- a model request:
--   M.last(req)        the last message
--   M.answered(req)    name, decoded ToolResult and arguments of the call
--                      the last message answers (nil unless it is a tool
--                      message; background notices after it are skipped)
--   M.is_notice(m)     is m a "[luagent] background results:" message
--   M.results(req, n)  decoded ToolResults of every call of tool n, in order
--   M.acks(req)        task ids of the background acks so far, in order
--   M.prompt(req)      the run's prompt (the first user message)
--   M.step(req)        replies so far in this turn (0 on its first model call)
--   M.turn_prompt(req) this turn's prompt
--   M.call(name, args) a reply calling one tool; M.calls(list) several
--   M.record(req)      append req to S.requests (host only)
B.prelude = [[
local json = luagent.json
local M = {}
function M.last(req) return req.messages[#req.messages] end
local function calls(req)
  local by_id = {}
  for _, m in ipairs(req.messages) do
    if m.role == "assistant" and m.tool_calls then
      for _, c in ipairs(m.tool_calls) do by_id[c.id] = c end
    end
  end
  return by_id
end
local function args_of(c)
  if type(c.arguments) == "string" then return json.decode(c.arguments) end
  return c.arguments
end
local NOTICE = "[luagent] background results:"
function M.is_notice(m)
  return m.role == "user" and type(m.content) == "string" and m.content:sub(1, #NOTICE) == NOTICE
end
function M.answered(req)
  local i = #req.messages
  while i > 1 and M.is_notice(req.messages[i]) do i = i - 1 end
  local m = req.messages[i]
  if m.role ~= "tool" then return nil end
  local c = calls(req)[m.tool_call_id]
  return c and c.name, json.decode(m.content), c and args_of(c)
end
function M.results(req, name)
  local by_id, out = calls(req), {}
  for _, m in ipairs(req.messages) do
    if m.role == "tool" then
      local c = by_id[m.tool_call_id]
      if c and c.name == name then out[#out + 1] = json.decode(m.content) end
    end
  end
  return out
end
function M.acks(req)
  local out = {}
  for _, m in ipairs(req.messages) do
    if m.role == "tool" then
      local r = json.decode(m.content)
      if r.ok and type(r.value) == "table" and r.value.status == "queued" and r.value.task_id then
        out[#out + 1] = r.value.task_id
      end
    end
  end
  return out
end
function M.prompt(req)
  for _, m in ipairs(req.messages) do
    if m.role == "user" then return m.content end
  end
end
-- How many model replies this turn has had so far (assistant messages
-- after the last prompt, background notices aside): 0 on the first call.
function M.step(req)
  local n = 0
  for i = #req.messages, 1, -1 do
    local m = req.messages[i]
    if m.role == "user" and not M.is_notice(m) then break end
    if m.role == "assistant" then n = n + 1 end
  end
  return n
end
-- The current turn's prompt (the last user message that is not a notice).
function M.turn_prompt(req)
  for i = #req.messages, 1, -1 do
    local m = req.messages[i]
    if m.role == "user" and not M.is_notice(m) then return m.content end
  end
end
function M.call(name, args) return { tool_calls = { { name = name, arguments = args or {} } } } end
function M.calls(list)
  local out = {}
  for i, c in ipairs(list) do out[i] = { name = c[1], arguments = c[2] or {} } end
  return { tool_calls = out }
end
function M.tool_names(req)
  local out = {}
  for i, t in ipairs(req.tools or {}) do out[i] = t.name end
  return out
end
function M.record(req)
  if S.requests then S.requests[#S.requests + 1] = req end
end
]]

-- An app from a config body that sees the prelude (see R.app for S).
function B.app(body, S, overrides)
  return R.app(B.prelude .. body, S, overrides)
end

-- The decoded ToolResults of the calls of tool `name` in a transcript.
function B.results_of(messages, name)
  local by_id, out = {}, {}
  for _, m in ipairs(messages) do
    if m.role == "assistant" and m.tool_calls then
      for _, c in ipairs(m.tool_calls) do by_id[c.id] = c end
    elseif m.role == "tool" then
      local c = by_id[m.tool_call_id]
      if c and c.name == name then out[#out + 1] = R.json.decode(m.content) end
    end
  end
  return out
end

-- Tool names of a request.
function B.tool_names(req)
  local out = {}
  for i, t in ipairs(req.tools or {}) do out[i] = t.name end
  return out
end

-- How many times `needle` occurs in the contents of every message of every
-- request (plain find).
function B.count_in_requests(requests, needle)
  local n = 0
  for _, req in ipairs(requests) do
    for _, m in ipairs(req.messages) do
      local s = type(m.content) == "string" and m.content or ""
      local from = 1
      while true do
        local i, j = s:find(needle, from, true)
        if not i then break end
        n = n + 1
        from = j + 1
      end
    end
  end
  return n
end

-- The notice messages ("[luagent] background results:") of a message list.
function B.notices(messages)
  local out = {}
  for _, m in ipairs(messages) do
    if m.role == "user" and type(m.content) == "string" and
        m.content:sub(1, #"[luagent] background results:") == "[luagent] background results:" then
      out[#out + 1] = m.content
    end
  end
  return out
end

B.ISO = "^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$"

return B
