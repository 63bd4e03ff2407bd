-- The background half of a run (README): the LM-facing control tools
-- bg_list, bg_check, bg_cancel, bg_send and bg_wait (R-30, R-32; the core checks
-- scope and pages big results, control.c), background tool
-- calls answered with a synthetic ack (R-31), and the delivery of finished
-- children's results before model calls (R-33).
local compat = require("luagent.compat")
local json = require("luagent.json")
local tools = require("luagent.tools")
local defs = require("luagent.defs")
local options = require("luagent.options")
local budget = require("luagent.budget")

local bg = {}

local TERMINAL = { completed = true, failed = true, cancelled = true, timed_out = true }
local NOTICE_PREFIX = "[luagent] background results:"
bg.NOTICE_PREFIX = NOTICE_PREFIX

local function settings(run) return run.reg.settings end

-- Background-eligible (R-30): a background table with enabled ~= false.
local function eligible(tool)
  return type(tool.background) == "table" and tool.background.enabled ~= false
end
bg.eligible = eligible

-- R-32: the caller's scope, which the core checks for every control tool
-- and notice: tasks spawned by this agent on this thread; a run that is a
-- sub-agent (its task was spawned by a run) sees only its own task's
-- children, so sibling runs of one agent never see each other's.
local function scope(run)
  return { agent_id = run.agent.id, thread_id = run.ctx.thread_id, task_id = run.task_id,
    root_key = run.ctx.root_key } -- its tree budget's budget_left (README "Tree budgets")
end

local function cut(s, n)
  return tools.cut(s, n, function(c, all)
    return string.format("...[cut to %d of %d bytes]", #c, #all)
  end)
end

-- What a notice shows of a finished task, as text: for agent runs their
-- final text (not the message list), for tools the handler's value; longer
-- than max (or max_result_bytes) it is its first page and a note naming
-- bg_check{task_id, offset}, cut by the core as bg_check pages it.
local function shown_result(run, rec, max)
  local r, run_status = rec.result, nil
  if rec.kind == "agent" and type(r) == "table" then r, run_status = r.final, r.status end
  local text = type(r) == "string" and r or json.encode(r == nil and json.null or r)
  return run.env.core:bounded_result(text, max, rec.task_id), run_status
end

local control = {}

control.bg_list = {
  description = "List the background tasks you started in this conversation (by default only those still queued or running).",
  input_schema = {
    type = "object",
    properties = {
      include_finished = { type = "boolean", description = "Also list finished tasks." },
    },
  },
  run = function(run, args) return run.env.core:bg_list(scope(run), json.encode(args)) end,
}

control.bg_check = {
  description = "Check one background task: its status, its result or error, and optionally its latest events.",
  input_schema = {
    type = "object",
    properties = {
      task_id = { type = "string", description = "The task_id from a background tool's reply or bg_list." },
      last_n_events = { type = "integer", minimum = 0, maximum = 16,
        description = "How many recent events to include." },
      offset = { type = "integer", minimum = 0,
        description = "Read the task's full result from this byte on (a page at a time)." },
      limit = { type = "integer", minimum = 1, description = "At most this many bytes of the page." },
    },
    required = { "task_id" },
  },
  run = function(run, args) return run.env.core:bg_check(scope(run), json.encode(args)) end,
}

control.bg_cancel = {
  description = "Cancel a background task (and the tasks it started). Reports whether the cancel was delivered and the status after it.",
  input_schema = {
    type = "object",
    properties = { task_id = { type = "string", description = "The task to cancel." } },
    required = { "task_id" },
  },
  run = function(run, args)
    local core_app = run.env.core
    local r = core_app:bg_cancel(scope(run), json.encode(args))
    local v = r.value
    if r.ok and v.ok and not TERMINAL[v.status] then
      -- report the status after up to a second, not a guess (R-25)
      run.ctx:wait({ v.task_id }, { timeout_s = 1 })
      v.status = core_app:status(v.task_id)
    end
    return r
  end,
}

control.bg_send = {
  description = "Send a message to a background agent run you started: it reads it before its next model call. " ..
    "With interrupt = true its current model call or tool is stopped so it reads the message now " ..
    "(the task itself goes on).",
  input_schema = {
    type = "object",
    properties = {
      task_id = { type = "string", description = "The agent run to send to." },
      message = { type = "string", description = "What to tell it." },
      interrupt = { type = "boolean", description = "Stop its current step so it reads the message now." },
    },
    required = { "task_id", "message" },
  },
  run = function(run, args) return run.env.core:bg_send(scope(run), json.encode(args)) end,
}

control.bg_wait = {
  description = "Wait until background tasks finish. mode \"all\" waits for every task, \"any\" for the first. " ..
    "On timeout you get the tasks still pending with their progress; you can wait again.",
  input_schema = {
    type = "object",
    properties = {
      task_ids = { type = "array", items = { type = "string" }, description = "The tasks to wait for." },
      mode = { type = "string", enum = { "all", "any" }, description = "all (default) or any." },
      timeout_s = { type = "number", minimum = 0, description = "Give up after this many seconds." },
    },
  },
  run = function(run, args)
    local core_app = run.env.core
    local w, timeout = core_app:bg_wait_begin(scope(run), json.encode(args))
    if not w then return timeout end -- answered at once: bad ids, another scope
    return compat.with_close(w, function()
      run.ctx:_block(w, timeout)
      return core_app:bg_wait_finish(w)
    end)
  end,
}

local CONTROL_ORDER = { "bg_list", "bg_check", "bg_cancel", "bg_send", "bg_wait" }
for _, name in ipairs(CONTROL_ORDER) do
  local c = control[name]
  c.name = name
  c.control = true
  defs.mark(c, "tool")
end
bg.control = control

-- R-30: inject the control tools when the run has a dispatcher and at
-- least one background-eligible tool.
function bg.prepare(run)
  run.bg_enabled = settings(run).enabled
  if not run.bg_enabled then return end
  -- the runs of one foreground run (it and its nested runs), whose children
  -- on_parent_end = "cancel" stops when it returns
  local fg = run.ctx._fg
  if fg and not run.task_id then
    fg.bg_runs = fg.bg_runs or {}
    fg.bg_runs[#fg.bg_runs + 1] = run.run_id
  end
  local any = false
  for _, t in ipairs(run.tool_list) do
    if eligible(t) then
      any = true
      break
    end
  end
  if not any then return end
  for _, name in ipairs(CONTROL_ORDER) do
    if not run.tool_by_name[name] then
      run.tool_list[#run.tool_list + 1] = control[name]
      run.tool_by_name[name] = control[name]
    end
  end
end

local function refusal(err)
  if type(err) == "table" and err.kind then
    return tools.fail(err.kind, tostring(err.message))
  end
  return tools.fail("runtime", tostring(err))
end

-- FNV-1a of s, 32 bits, as 8 hex digits: a short, stable digest of a
-- request for the key below.
local function digest(s)
  return string.format("%08x", compat.fnv1a32(s))
end

-- The key a run's background call is enqueued with when the run belongs to
-- a task (README, "Re-attaching"): the agent and depth of the run, how many
-- background calls it made before this one, the tool and a digest of the
-- request. The task's id is the scope, so the same call of a later attempt
-- (a retry, a resume after suspend, recovery) finds the child the earlier
-- one started instead of starting it again.
local function spawn_key(run, req)
  run.bg_spawns = (run.bg_spawns or 0) + 1
  return string.format("spawn:%s:%d:%d:%s:%s", run.agent.id, run.ctx.depth or 0, run.bg_spawns,
    req.tool, digest(req.kind .. "\0" .. (req.prompt or req.args or "")))
end

-- A tool call the background half answers: control tools, and background
-- tools (enqueued; the model gets the synthetic ack, R-31, and the third
-- value is the new task's id). nil otherwise.
function bg.call(run, tool, call, args)
  if tool.control then
    local ok, res = pcall(tool.run, run, args)
    if ok then return res end
    if tools.is_abort(res) then error(res, 0) end -- cancel or the run's budget
    return refusal(res)
  end
  if not (run.bg_enabled and eligible(tool)) then return nil end
  local req = {
    tool = tool.name,
    tool_call_id = call.id,
    timeout_s = tool.background.timeout_s,
    retries = tool.background.retries,
    stale_after_s = tool.background.stale_after_s,
  }
  if tool.delegate then
    req.kind, req.agent_id, req.prompt = "agent", tool.delegate, args.prompt
  else
    req.kind, req.agent_id = "tool", run.agent.id
    local ok, text = pcall(json.encode, args)
    if not ok then return tools.fail("validation", "arguments are not JSON: " .. tostring(text)) end
    req.args = text
  end
  if run.task_id then req.idempotency_key = spawn_key(run, req) end
  -- the same parent fields and depth limit as ctx:enqueue_* (R-28)
  local ok_fields, err = pcall(run.ctx._parent_fields, run.ctx, req)
  if not ok_fields then
    if type(err) == "table" and err.kind == "limit" then
      return tools.fail("limit", string.format("cannot start %s in the background: %s", tool.name,
        err.message))
    end
    error(err, 0)
  end
  local ok, rec = pcall(budget.enqueue, run.ctx, req) -- through hooks.admit
  if not ok then
    if tools.is_abort(rec) then error(rec, 0) end
    return refusal(rec)
  end
  return tools.ok({ task_id = rec.task_id, status = rec.status, tool = tool.name }), nil, rec.task_id
end

local function describe(run, rec)
  local who = rec.tool or rec.agent_id
  local head = string.format("- task %s (%s) %s", rec.task_id, who, rec.status)
  local n = math.min(2000, run.reg.max_tool_output_bytes)
  if rec.status == "completed" then
    local text, run_status = shown_result(run, rec, n)
    if run_status and run_status ~= "completed" then
      head = head .. " (run " .. run_status .. ")"
      if rec.error and rec.error.message then text = rec.error.message .. "; final: " .. text end
    end
    return head .. ": " .. text
  end
  local msg = rec.error and rec.error.message or rec.status
  return head .. ": " .. cut(tostring(msg), math.min(500, n))
end

-- R-33: before a model call, one message listing this scope's finished
-- children not yet delivered. Returns their ids (marked delivered when the
-- model call returns) or nil.
function bg.notice(run)
  if not run.bg_enabled then return nil end
  -- claimed, so a concurrent run of the same scope does not announce them too
  -- (the scope is the run's for its whole length: made once)
  run.bg_scope = run.bg_scope or scope(run)
  local recs = run.env.core:claim(run.bg_scope)
  if recs[1] == nil then return nil end
  -- the whole message stays within max_tool_output_bytes; children that do
  -- not fit stay undelivered and come in a later notice
  local bound = run.reg.max_tool_output_bytes
  local lines, ids, size, left = { NOTICE_PREFIX }, {}, #NOTICE_PREFIX, 0
  for _, rec in ipairs(recs) do
    local line = describe(run, rec)
    if #ids > 0 and size + 1 + #line > bound then
      left = left + 1
      run.env.core:unclaim(rec.task_id)
    else
      lines[#lines + 1] = line
      ids[#ids + 1] = rec.task_id
      size = size + 1 + #line
    end
  end
  if #ids == 0 then return nil end
  if left > 0 then
    lines[#lines + 1] = string.format("- (%d more finished task%s in a later message; bg_check shows one now)",
      left, left == 1 and "" or "s")
  end
  local msg = { role = "user", content = table.concat(lines, "\n") }
  run.messages[#run.messages + 1] = msg
  run.bg_notice = msg
  run.bg_claimed = ids
  return ids
end

function bg.delivered(run, ids)
  run.env.core:set_delivered(ids) -- one store commit for the batch
  run.bg_notice = nil
  run.bg_claimed = nil
end

-- A notice whose model call never returned (a model error, a cancel, a
-- budget) leaves the transcript: its children stay undelivered and are
-- announced later, so a saved chat turn does not carry them twice.
local function withdraw(run)
  local msg = run.bg_notice
  if not msg then return end
  run.bg_notice = nil
  for _, id in ipairs(run.bg_claimed or {}) do run.env.core:unclaim(id) end
  run.bg_claimed = nil
  for i = #run.messages, 1, -1 do
    if run.messages[i] == msg then
      table.remove(run.messages, i)
      return
    end
  end
end

bg.withdraw = withdraw -- also when a message interrupts the model call (steer.lua)

-- The end of a run: withdraw an undelivered notice, and, with
-- on_parent_end = "cancel", a foreground run's live children stop with it,
-- those of its nested runs (inline delegates, ctx:run_agent) included; the
-- cancel cascades to their descendants (R-25).
function bg.finish(run)
  withdraw(run)
  if not run.bg_enabled or run.task_id or run.ctx.depth ~= 0 then return end
  -- a cancelled or timed-out run stops its children whatever on_parent_end
  -- says (R-25): nothing it started outlives a cancel as an orphan
  local stopped = run.status == "cancelled" or run.status == "timed_out"
  if settings(run).on_parent_end ~= "cancel" and not stopped then return end
  local fg = run.ctx._fg
  local runs = fg and fg.bg_runs or { run.run_id }
  for _, run_id in ipairs(runs) do
    local recs = run.env.core:list({ parent_run_id = run_id, include_finished = false })
    for _, rec in ipairs(recs) do run.env.core:cancel(rec.task_id) end
  end
end

return bg
