-- Steering a running agent task (README, "Steering"): the form in which a
-- message reaches the run, its delivery before each model call, the steps
-- (a model call, a tool) that a message sent with interrupt = true cuts
-- short, and ctx:send. The queue, the delivered marks and the interrupt
-- flag are the core's (core/steer.c, core/inbox.c).
local compat = require("luagent.compat")
local core = require("luagent.core")
local json = require("luagent.json")
local options = require("luagent.options")
local context = require("luagent.context")

local steer = {}

-- How a message is shown to the run: a user message, marked so the model
-- knows it did not come from the user of its first prompt.
steer.PREFIX = "[luagent] message from "
local function message_text(m)
  return string.format("%s%s (message %d, sent while you were working):\n%s", steer.PREFIX, m.from,
    m.seq, m.text)
end
steer.message_text = message_text

-- Runs whose messages are delivered: the run of an agent task itself, not
-- the runs nested in it (a delegate, ctx:run_agent), which are part of one
-- of its tool calls.
function steer.prepare(run, o)
  run.steered = o.steered == true and run.task_id ~= nil
end

-- Before a model call: the task's messages not yet delivered join the
-- transcript, each once; the core has committed their delivered marks when
-- this returns (docs/architecture.md, R-34).
function steer.deliver(run)
  if not run.steered then return 0 end
  run.interrupted = nil
  local msgs = run.env.core:take_messages()
  for _, m in ipairs(msgs) do
    run.messages[#run.messages + 1] = { role = "user", content = message_text(m) }
  end
  return #msgs
end

-- Whether messages wait: a run that would end now reads them first.
function steer.pending(run)
  return run.steered and run.env.core:pending_messages() > 0
end

-- fn(...) as a step a message may interrupt: true and fn's values, or
-- false when a message cut it short (the core raised its interrupt error:
-- in a Lua instruction, an HTTP poll, a sleep or a wait). Other errors go
-- on up. A run that is not steered just calls fn.
function steer.step(run, fn, ...)
  if not run.steered then return true, fn(...) end
  -- the core opens the step and closes it as the call returns
  local r = compat.pack(core.step_call(fn, ...))
  if r[1] then return true, compat.unpack(r, 2, r.n) end
  if core.is_interrupt(r[2]) then
    run.interrupted = true
    return false
  end
  error(r[2], 0)
end

local send_spec = { interrupt = "boolean" }

local function message_arg(where, message)
  options.arg(where, "message", message, options.no_nul, 4)
  if message == "" then error(where .. ": argument \"message\" must not be empty", 3) end
end

-- ctx:send(task_id, message, opts): from a tool, a message for a child of
-- its run (the scope of the control tools, R-32). Returns {ok = true, seq,
-- status, task_id, interrupt} when queued, {ok = false, status, task_id}
-- when the task has finished; raises for an id outside the scope, an
-- unknown one or a tool task. opts: interrupt (false).
function context.Ctx:send(task_id, message, opts)
  options.arg("ctx:send", "task_id", task_id, options.text_id, 3)
  message_arg("ctx:send", message)
  options.check("ctx:send", opts, send_spec)
  local scope = { agent_id = self.agent_id, thread_id = self.thread_id, task_id = self.task_id,
    root_key = self.root_key }
  local r = self._env.core:bg_send(scope, json.encode({ task_id = task_id, message = message,
    interrupt = opts and opts.interrupt or false }))
  if r.ok then return r.value end
  local cause = r.cause or {}
  if cause.kind == "not_found" and cause.status then
    return { ok = false, status = cause.status, task_id = task_id }
  end
  if cause.kind == "not_found" then
    error(string.format("ctx:send: unknown task id %q (or not a child of this run)", task_id), 2)
  end
  error(setmetatable({ kind = cause.kind or "runtime", message = "ctx:send: " .. tostring(r.error) },
    core.error_mt), 2)
end

return steer
