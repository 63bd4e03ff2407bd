-- Helpers for the agent-runtime specs (tests/runtime_*_spec.lua): apps from
-- inline startup scripts, decoding tool messages, reading events, checking
-- transcripts. Nothing here sleeps to synchronise.
local luagent = require "luagent"
local core = require "luagent.core"

local R = { luagent = luagent, json = luagent.json, core = core }

-- An app from a script body. The body sees `luagent` and `S`: a table of
-- test-side values (recorders, functions) that exists in the host state
-- only; in worker states `S` is an empty table. `body` must
-- `return luagent.config{...}`.
function R.app(body, S, overrides)
  _G.__luagent_runtime_S = S or {}
  local src = "local luagent = require 'luagent'\nlocal S = _G.__luagent_runtime_S or {}\n" .. body
  local ok, app = pcall(luagent.load_string, src, "=runtime_cfg", overrides)
  _G.__luagent_runtime_S = nil
  if not ok then error(app, 2) end
  return app
end

-- The load error of a script body (which must fail to load).
function R.load_error(body)
  local ok, err = pcall(luagent.load_string, "local luagent = require 'luagent'\n" .. body,
    "=runtime_cfg")
  assert(not ok, "expected the config to be rejected")
  return type(err) == "table" and tostring(err.message) or tostring(err)
end

-- The tool messages of a transcript, decoded: { {id, result, content}, ... }
-- (result is nil for a content cut to max_tool_output_bytes: not JSON).
function R.tool_messages(messages)
  local out = {}
  for _, m in ipairs(messages) do
    if m.role == "tool" then
      out[#out + 1] = { id = m.tool_call_id, result = R.json.decode_safe(m.content), content = m.content }
    end
  end
  return out
end

-- Just the decoded ToolResults, in order.
function R.tool_results(messages)
  local out = {}
  for i, t in ipairs(R.tool_messages(messages)) do out[i] = t.result end
  return out
end

function R.roles(messages)
  local out = {}
  for i, m in ipairs(messages) do out[i] = m.role end
  return out
end

-- Every assistant tool call is answered by a tool message with its id,
-- directly after it, and every tool message answers a call.
function R.well_formed(messages)
  local pending = nil
  for i, m in ipairs(messages) do
    if m.role == "tool" then
      if not pending or not pending[m.tool_call_id] then
        return false, string.format("message %d answers no open tool call (%s)", i,
          tostring(m.tool_call_id))
      end
      pending[m.tool_call_id] = nil
    else
      if pending and next(pending) then
        return false, string.format("message %d (%s) comes before tool call %s was answered", i,
          m.role, tostring(next(pending)))
      end
      pending = nil
      if m.role == "assistant" and m.tool_calls then
        pending = {}
        for _, c in ipairs(m.tool_calls) do pending[c.id] = true end
      end
    end
  end
  if pending and next(pending) then
    return false, "tool call " .. tostring(next(pending)) .. " was never answered"
  end
  return true
end

local E = require "support.events"

-- Every event of the app so far, and those of a kind (and run).
R.events = E.all

function R.of_kind(events, kind, run_id)
  return E.of_kind(events, kind, "run_id", run_id)
end

-- Block on the app's event stream until pred(ev) holds for an event (from
-- seq 0). Returns the event, or nil when the app went idle or `timeout_s`
-- passed first.
function R.await(app, pred, timeout_s)
  for ev in app:run_stream_until_idle{ since = 0, timeout_s = timeout_s or 10 } do
    if pred(ev) then return ev end
  end
  return nil
end

-- A reply that calls one tool.
function R.call(name, arguments, id)
  return { tool_calls = { { id = id, name = name, arguments = arguments or {} } } }
end

function R.now() return core.now() end

return R
