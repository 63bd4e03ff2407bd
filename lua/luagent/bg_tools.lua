-- The background half of a run (DESIGN §5): the LM-facing control tools
-- bg_list, bg_check, bg_cancel and bg_wait (R-30, R-32), background tool
-- calls answered with a synthetic ack (R-31), and the delivery of finished
-- children's results before model calls (R-33).
local json = require("luagent.json")
local tools = require("luagent.tools")
local defs = require("luagent.defs")
local options = require("luagent.options")

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

local function thread_of(run) return run.ctx.thread_id end

-- R-32: only tasks spawned in this (agent, thread) scope are visible. A run
-- that is a sub-agent (a task some run spawned, or a nested run inside one)
-- shares its thread with the whole tree, so its scope is narrowed to the
-- children of its own task: sibling runs of one agent never see, nor are
-- told about, each other's children.
local function in_scope(run, rec)
  return rec ~= nil and rec.parent_agent_id == run.agent.id and rec.thread_id == thread_of(run)
    and (run.bg_task_scope == nil or rec.parent_task_id == run.bg_task_scope)
end

-- The filter of core:list for the run's scope.
local function scope_filter(run, include_finished)
  return { parent_agent_id = run.agent.id, thread_id = thread_of(run),
    parent_task_id = run.bg_task_scope, include_finished = include_finished }
end

-- The record of a task id the model gave, or nil (ids that are not text,
-- e.g. with a NUL byte, name no task).
local function lookup(run, id)
  if not options.text_id(id) then return nil end
  return run.env.core:get(id)
end

local function not_found(id)
  return tools.fail("not_found", string.format("no background task %q in this conversation", tostring(id)))
end

local function cut(s, n)
  return tools.cut(s, n, function(c, all)
    return string.format("...[cut to %d of %d bytes]", #c, #all)
  end)
end

-- The full result of a finished task as text, the one every page is cut
-- from: an agent run's final text, a tool's value (a string as it is,
-- anything else as JSON). The record keeps it whole (memory, within
-- keep_finished, and the file store).
local function full_text(rec)
  local r = rec.result
  if rec.kind == "agent" and type(r) == "table" then r = r.final end
  if type(r) == "string" then return r end
  return json.encode(r == nil and json.null or r)
end

-- The page of text at byte `offset` (moved back to the start of a UTF-8
-- sequence), at most `limit` bytes, never ending inside a sequence; and
-- the offset just after it.
local function page(text, offset, limit)
  while offset > 0 and offset < #text and text:byte(offset + 1) >= 0x80
    and text:byte(offset + 1) < 0xC0 do
    offset = offset - 1
  end
  local s = tools.cut(text:sub(offset + 1), limit, function() return "" end)
  if #s == 0 and offset < #text then s = text:sub(offset + 1, offset + limit) end
  return s, offset, offset + #s
end

-- A result longer than max_result_bytes reaches the parent's context as
-- its first page and a note saying how much was cut and how to read on.
local function bounded(run, rec, value, max)
  local text = full_text(rec)
  max = math.min(max or math.huge, run.reg.max_result_bytes)
  if #text <= max then return value end
  local head, _, next_offset = page(text, 0, max)
  return head .. string.format("\n[luagent: result cut: showing bytes 0-%d of %d; " ..
    "call bg_check{task_id = %q, offset = %d} for the rest, a page at a time]",
    next_offset, #text, rec.task_id, next_offset)
end

-- What the model is shown of a finished task: for agent runs their final
-- text (not the message list), for tools the handler's value; bounded by
-- max_result_bytes.
local function shown_result(run, rec, max)
  local r = rec.result
  if rec.kind == "agent" and type(r) == "table" then
    local final = r.final
    if type(final) == "string" then final = bounded(run, rec, final, max) end
    return final, r.status
  end
  return bounded(run, rec, r, max)
end

local function entry(run, rec)
  local e = {
    task_id = rec.task_id, status = rec.status, tool = rec.tool, agent_id = rec.agent_id,
    enqueued_at = rec.enqueued_at, started_at = rec.started_at, finished_at = rec.finished_at,
    attempts = rec.attempts, usage = rec.usage,
  }
  if TERMINAL[rec.status] then
    if rec.status == "completed" then
      local value, run_status = shown_result(run, rec)
      e.result = value
      if run_status and run_status ~= "completed" then
        -- an agent run that ended budget_exceeded or stopped: say why
        e.run_status = run_status
        e.error = rec.error
      end
    else
      e.error = rec.error
    end
  end
  return e
end

-- bg_check{ task_id, offset, limit }: a page of the full result; next_offset
-- is where the next page starts (absent after the last one).
local function result_page(run, rec, args)
  if rec.status ~= "completed" then
    return tools.fail("not_found", string.format("task %s has no result to page: it is %s",
      rec.task_id, rec.status))
  end
  local text = full_text(rec)
  local limit = math.min(args.limit or run.reg.max_result_bytes, run.reg.max_result_bytes)
  local offset = args.offset or 0
  if offset > #text then
    return tools.fail("validation", string.format("offset %d is past the end of the result (%d bytes)",
      offset, #text))
  end
  local s, from, upto = page(text, offset, limit)
  run.env.core:set_delivered(rec.task_id)
  return tools.ok({ task_id = rec.task_id, status = rec.status, total_bytes = #text, offset = from,
    text = s, next_offset = upto < #text and upto or nil })
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
  run = function(run, args)
    local recs = run.env.core:list(scope_filter(run, true))
    local out = {}
    for _, rec in ipairs(recs) do
      if args.include_finished or not TERMINAL[rec.status] then
        out[#out + 1] = {
          task_id = rec.task_id, status = rec.status, tool = rec.tool, agent_id = rec.agent_id,
          enqueued_at = rec.enqueued_at, started_at = rec.started_at,
        }
      end
    end
    return tools.ok({ tasks = json.array(out) })
  end,
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
  run = function(run, args)
    local core_app = run.env.core
    local rec = lookup(run, args.task_id)
    if not in_scope(run, rec) then return not_found(args.task_id) end
    if args.offset or args.limit then return result_page(run, rec, args) end
    local value = entry(run, rec)
    if args.last_n_events and args.last_n_events > 0 then
      value.events = json.array(core_app:digests(rec.task_id, args.last_n_events) or {})
    end
    if TERMINAL[rec.status] then core_app:set_delivered(rec.task_id) end
    return tools.ok(value)
  end,
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
    local rec = lookup(run, args.task_id)
    if not in_scope(run, rec) then return not_found(args.task_id) end
    local r = core_app:cancel(rec.task_id)
    if r.ok and not TERMINAL[r.status] then
      -- report the status after up to a second, not a guess (R-25)
      run.ctx:wait({ rec.task_id }, { timeout_s = 1 })
      r.status = core_app:status(rec.task_id)
    end
    return tools.ok({ ok = r.ok, status = r.status, task_id = rec.task_id })
  end,
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
    local ids = args.task_ids
    if ids == nil and type(args.task_id) == "string" then ids = { args.task_id } end -- legacy form
    if type(ids) ~= "table" or #ids == 0 then
      return tools.fail("validation", "bg_wait needs task_ids, a non-empty list of task ids")
    end
    local core_app = run.env.core
    for _, id in ipairs(ids) do
      if not in_scope(run, lookup(run, id)) then return not_found(id) end
    end
    local w = run.ctx:wait(ids, {
      mode = args.mode or "all",
      timeout_s = args.timeout_s or settings(run).default_wait_timeout_s,
    })
    -- the results share one tool message (cut to max_tool_output_bytes):
    -- what does not fit is left out, stays undelivered, and the model is
    -- told to fetch it (R-33: a child is never marked seen unseen)
    local room = run.reg.max_tool_output_bytes - 256
    local out = {}
    for i, t in ipairs(w.tasks) do
      if TERMINAL[t.status] then
        local rec = core_app:get(t.task_id)
        local e = entry(run, rec)
        local ok, text = pcall(json.encode, e)
        local size = ok and #text or room + 1
        if size <= room or i == 1 then
          room = room - size
          out[i] = e
          core_app:set_delivered(t.task_id)
        else
          e.result, e.error = nil, nil
          e.omitted = "too large for this message: call bg_check with this task_id"
          out[i] = e
        end
      else
        out[i] = { task_id = t.task_id, status = t.status, tool = t.tool, agent_id = t.agent_id,
          progress = t.progress }
      end
    end
    return tools.ok({ done = w.done, timed_out = w.timed_out, tasks = json.array(out),
      pending = json.array(w.pending) })
  end,
}

local CONTROL_ORDER = { "bg_list", "bg_check", "bg_cancel", "bg_wait" }
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
  if run.task_id then
    local rec = run.env.core:get(run.task_id)
    if rec and rec.parent_run_id then run.bg_task_scope = run.task_id end
  end
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
  -- the same parent fields and depth limit as ctx:enqueue_* (R-28)
  local ok_fields, err = pcall(run.ctx._parent_fields, run.ctx, req)
  if not ok_fields then
    if type(err) == "table" and err.kind == "limit" then
      return tools.fail("limit", string.format("cannot start %s in the background: %s", tool.name,
        err.message))
    end
    error(err, 0)
  end
  local ok, rec = pcall(run.env.core.enqueue, run.env.core, req)
  if not ok then return refusal(rec) end
  return tools.ok({ task_id = rec.task_id, status = "queued", tool = tool.name }), nil, rec.task_id
end

local function describe(run, rec)
  local who = rec.tool or rec.agent_id
  local head = string.format("- task %s (%s) %s", rec.task_id, who, rec.status)
  local n = math.min(2000, run.reg.max_tool_output_bytes)
  if rec.status == "completed" then
    local value, run_status = shown_result(run, rec, n)
    local text = type(value) == "string" and value or json.encode(value == nil and json.null or value)
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
  local f = scope_filter(run, true)
  local recs = run.env.core:claim({ parent_agent_id = f.parent_agent_id, thread_id = f.thread_id,
    parent_task_id = f.parent_task_id })
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
  for _, id in ipairs(ids) do run.env.core:set_delivered(id) end
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
