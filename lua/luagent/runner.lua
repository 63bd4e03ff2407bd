-- The agent loop: build the request, call the model, run the tool calls it
-- returns in order, append tool messages, repeat until the model answers
-- with text, a budget fires, or a hook stops the run. The same code runs in
-- the host state (foreground runs) and in worker states (agent-run tasks).
local compat = require("luagent.compat")
local core = require("luagent.core")
local json = require("luagent.json")
local options = require("luagent.options")
local context = require("luagent.context")
local tools = require("luagent.tools")
local bg = require("luagent.bg_tools")
local usage = require("luagent.usage")
local budget = require("luagent.budget")
local ratelimit = require("luagent.ratelimit")
local steer = require("luagent.steer")

local runner = {}

local MAX_ERROR_BYTES = 1024

local cut = tools.cut

local function new_id(prefix)
  return core.new_id(prefix)
end

-- The tools a run of `agent` may call, by name, in the agent's order.
local function agent_tools(reg, agent)
  local list, by_name = {}, {}
  for _, t in ipairs(agent.tools) do
    local tool = type(t) == "string" and reg.tools[t] or reg.tools[t.name]
    if tool and not by_name[tool.name] then
      list[#list + 1] = tool
      by_name[tool.name] = tool
    end
  end
  return list, by_name
end

local function emit(run, kind, payload)
  run.ctx:_emit(kind, payload)
end

-- The name a model's calls are priced and reported under.
local function model_name(model)
  return type(model.model) == "string" and model.model or model.name
end

-- Count one model call: the provider's usage, or an estimate when it sent
-- none (so max_tokens still fires), priced from the config. The run's
-- usage grows, and the core hears of it at once, so the task's usage and
-- every ancestor's tree_usage are current while the run goes on.
local function count_usage(run, request, reply)
  local u = reply.usage or usage.estimate(request, reply)
  u.cost = usage.cost(run.reg.pricing, model_name(run.model), u)
  usage.add(run.usage, u)
  run.env.report_usage(run.ctx, u) -- also to the tree's budget (README "Tree budgets")
  return u
end

-- One shape of tool call for every model: `arguments` is the decoded
-- table (a copy: nothing the run does changes a static model's own
-- table), `raw_arguments` the text the model sent; arguments that are not
-- a JSON object are nil with an `error`. Ids the model gave are kept
-- verbatim; one is made only when none is given.
local function normalize_calls(calls)
  if type(calls) ~= "table" then return nil end
  local out = {}
  for _, c in ipairs(calls) do
    if type(c) == "table" then
      local args, raw, err = tools.call_arguments(c.arguments)
      out[#out + 1] = {
        id = (type(c.id) == "string" and c.id ~= "") and c.id or new_id("call_"),
        name = c.name,
        arguments = args,
        raw_arguments = raw,
        error = err,
      }
    end
  end
  return #out > 0 and out or nil
end

local function step_view(run)
  return {
    iteration = run.iteration,
    messages = run.messages,
    usage = run.usage,
    last_reply = run.last_reply,
    agent_id = run.agent.id,
    run_id = run.run_id,
    ctx = run.ctx,
  }
end

-- Hooks run in order; a raising hook ends the run (kind "hook").
local function hook_error(name, err)
  error({ luagent_hook = true, kind = "hook", message = string.format("%s hook failed: %s", name,
    type(err) == "table" and tostring(err.message) or tostring(err)) }, 0)
end

local function call_hook(name, fn, ...)
  local ok, v = compat.xpcall(fn, tools.on_error, ...)
  if ok then return v end
  if tools.is_abort(v) then error(v, 0) end
  hook_error(name, v)
end

local function valid_messages(m)
  if type(m) ~= "table" then return false end
  for i = 1, #m do
    if type(m[i]) ~= "table" or type(m[i].role) ~= "string" then return false end
  end
  return next(m) == nil or #m > 0
end

local NO_HOOKS = {}

local function hooks_of(run, name)
  return run.agent.hooks[name] or NO_HOOKS
end

local function model_error(e)
  if type(e) == "table" then
    return {
      kind = e.kind or "model",
      status = e.status,
      message = cut(e.message or "model error", MAX_ERROR_BYTES),
    }
  end
  return { kind = "model", message = cut(e, MAX_ERROR_BYTES) }
end

-- Model errors keep their fields (kind, status, message); others get one.
local function keep_error(e)
  if tools.is_abort(e) or type(e) == "table" then return e end
  return { message = tostring(e) }
end

-- The model's reply, under the rate budget `grant` (nil: none), which is
-- given back with the tokens used.
local function complete_under(grant, run, request)
  local t0 = core.now()
  -- a step a message sent with interrupt = true cuts short (steer.lua)
  local ok, done, reply = compat.xpcall(steer.step, keep_error, run, run.model.complete, run.model, request,
    run.ctx)
  local latency = core.now() - t0
  if not ok then
    reply = done
  elseif not done then
    ok, reply = false, core.interrupt_error
  end
  if grant then
    local u = ok and type(reply) == "table" and usage.normalize(reply.usage)
    local limited = not ok and type(reply) == "table" and reply.status == 429
    grant:done(u and u.total_tokens, limited and (tonumber(reply.retry_after) or 1) or 0)
  end
  return ok, reply, latency
end

local function call_model(run)
  -- the request's own list: what a model keeps of it does not change as
  -- the run goes on, and a model cannot change the transcript
  local messages = {}
  for i, m in ipairs(run.messages) do messages[i] = m end
  local request = {
    messages = json.array(messages),
    tools = run.tool_specs,
    options = {},
  }
  emit(run, "lm_call_start", { iteration = run.iteration + 1, messages = #run.messages })
  -- a model with limits of its own waits for its provider's rate budget
  -- (README "Rate limits"); luagent.openai takes it per attempt itself
  -- (a grant an error leaves is given back by its __close)
  local grant = ratelimit.for_call(run.ctx, run.model, request)
  local ok, reply, latency = compat.with_close(grant, complete_under, grant, run, request)
  if not ok then
    if core.is_interrupt(reply) and run.steered then
      run.interrupted = true
      return nil, nil, request, latency, true
    end
    if tools.is_abort(reply) then error(reply, 0) end
    return nil, model_error(reply)
  end
  if type(reply) == "string" then reply = { text = reply } end -- as static_model replies
  if type(reply) ~= "table" then
    return nil, model_error("the model returned " .. type(reply) .. ", not a reply table")
  end
  return {
    text = type(reply.text) == "string" and reply.text or nil,
    tool_calls = normalize_calls(reply.tool_calls),
    usage = usage.normalize(reply.usage),
  }, nil, request, latency
end

local function tool_message(run, call, result)
  return {
    role = "tool",
    tool_call_id = call.id,
    content = tools.content(result, run.reg.max_tool_output_bytes),
  }
end

-- Arguments as events show them: JSON text cut short.
local function args_summary(call)
  return cut(call.raw_arguments or "(not JSON data)", 512)
end

-- The ToolResult of a tool call a message interrupted (README, "Steering").
local function interrupted_result(run, call)
  emit(run, "step_interrupted", { step = "tool", tool = call.name, tool_call_id = call.id })
  return tools.fail("interrupted", "interrupted by a message: the call was stopped so you can " ..
    "read the message that follows; call it again if you still need it")
end

-- The calls of a reply after one a message interrupted are not run.
local function skip_call(run, call)
  local why = "not run: a message interrupted this step; read it, then call the tool again if you still need it"
  run.messages[#run.messages + 1] = tool_message(run, call, tools.fail("interrupted", why))
  emit(run, "tool_end", { tool = call.name, tool_call_id = call.id, ok = false, error = why,
    kind = "interrupted" })
end

local function run_tool_call(run, call)
  emit(run, "tool_start", { tool = call.name, tool_call_id = call.id,
    arguments = args_summary(call) })
  -- the hooks' view of the run, made only for an agent that has tool hooks
  local before, after = hooks_of(run, "before_tool"), hooks_of(run, "after_tool")
  local step = (before[1] or after[1]) and step_view(run)
  local result, traceback, spawned
  for _, h in ipairs(before) do
    local d = call_hook("before_tool", h, call, step)
    if type(d) == "table" then
      if d.block then
        local why = type(d.block) == "string" and d.block or d.reason or "blocked by a hook"
        result = tools.fail("blocked", why)
        break
      end
      if d.result ~= nil then
        -- the hook answers the call itself (a cache, a dry run)
        result = tools.is_result(d.result) and d.result or tools.ok(d.result)
        break
      end
      if d.name ~= nil or d.arguments ~= nil then
        -- the rewritten call keeps the shape (and the model's raw text)
        local new = { id = call.id, name = d.name or call.name, raw_arguments = call.raw_arguments,
          arguments = call.arguments, error = call.error }
        if d.arguments ~= nil then
          local args, _, err = tools.call_arguments(d.arguments)
          new.arguments, new.error = args, err
        end
        call = new
      end
    end
  end
  if not result then
    local tool = run.tool_by_name[call.name]
    if not tool then
      local names = {}
      for _, t in ipairs(run.tool_list) do names[#names + 1] = t.name end
      result = tools.fail("validation", string.format("unknown tool %q; available tools: %s",
        tostring(call.name), #names > 0 and table.concat(names, ", ") or "none"))
    elseif call.error then
      result = tools.fail("validation", call.error)
    else
      local args, err = tools.check_args(tool, call.arguments)
      if not args then
        result = tools.fail("validation", err)
      elseif tool.control then
        -- bg_wait may block for long: a message may interrupt it (steer.lua)
        local done
        done, result, traceback = steer.step(run, bg.call, run, tool, call, args)
        if not done then result, traceback = interrupted_result(run, call) end
      else
        result, traceback, spawned = bg.call(run, tool, call, args)
        if result == nil then
          local done
          done, result, traceback = steer.step(run, context.invoke, run.ctx, tool, args)
          if not done then result, traceback = interrupted_result(run, call) end
        end
      end
    end
  end
  for _, h in ipairs(after) do
    local r = call_hook("after_tool", h, call, result, step)
    if r ~= nil and r ~= false then
      if not tools.is_result(r) then
        hook_error("after_tool", "it must return a ToolResult ({ok = true, value} or " ..
          "{ok = false, error}) or nil, got " .. (type(r) == "table" and "a table without ok" or type(r)))
      end
      result = r
    end
  end
  run.messages[#run.messages + 1] = tool_message(run, call, result)
  emit(run, "tool_end", {
    tool = call.name, tool_call_id = call.id, ok = result.ok == true,
    error = result.ok ~= true and result.error or nil,
    kind = result.cause and result.cause.kind or nil,
    traceback = traceback,
    task_id = spawned, -- the background task the call started
  })
end

local function budget_hit(run)
  local b = run.agent.budget
  if run.iteration >= b.max_iterations then return "max_iterations" end
  if b.max_tokens and run.usage.total_tokens >= b.max_tokens then return "max_tokens" end
  if b.max_wall_seconds and core.now() - run.started >= b.max_wall_seconds then
    return "max_wall_seconds"
  end
end

-- A run that ends while tool calls of its last reply are unanswered (a
-- budget, a cancel, a hook or an error in the middle of the calls) answers
-- them, so the transcript stays well-formed for the next model call.
local function answer_open_calls(run, status, err)
  local msgs = run.messages
  local last
  for i = #msgs, 1, -1 do
    local m = msgs[i]
    if m.role == "assistant" then last = i; break end
    if m.role ~= "tool" then return end
  end
  if not last or not msgs[last].tool_calls then return end
  local answered = {}
  for i = last + 1, #msgs do answered[msgs[i].tool_call_id] = true end
  local why = string.format("not completed: the run ended %s%s", status,
    err and err.message and (" (" .. tostring(err.message) .. ")") or "")
  local kind = status == "budget_exceeded" and "budget" or status == "failed" and "runtime" or status
  for _, call in ipairs(msgs[last].tool_calls) do
    if not answered[call.id] then
      local result = tools.fail(kind, why)
      msgs[#msgs + 1] = tool_message(run, call, result)
      emit(run, "tool_end", { tool = call.name, tool_call_id = call.id, ok = false, error = why,
        kind = kind })
    end
  end
end

local function finish(run, status, err)
  run.status = status
  run.error = err
  if status ~= "completed" then answer_open_calls(run, status, err) end
  if status == "completed" then
    emit(run, "final", { text = cut(run.final or "", 2000) })
  elseif err then
    emit(run, "error", { message = err.message, kind = err.kind, status = status, budget = err.budget })
  end
end

-- before_finalize may veto the end: a string or {continue = true, message}
local function vetoed(run)
  for _, h in ipairs(hooks_of(run, "before_finalize")) do
    local d = call_hook("before_finalize", h, step_view(run))
    local msg
    if type(d) == "string" then
      msg = d
    elseif type(d) == "table" and d.continue ~= false and (d.continue or d.message) then
      msg = d.message or "Continue."
    end
    if msg then
      run.messages[#run.messages + 1] = { role = "user", content = msg }
      return true
    end
  end
  return false
end

local function should_stop(run)
  for _, h in ipairs(hooks_of(run, "should_stop")) do
    local d = call_hook("should_stop", h, step_view(run))
    if d then
      return type(d) == "string" and d or (type(d) == "table" and d.reason) or "stopped by should_stop"
    end
  end
end

local function loop(run)
  while true do
    run.ctx:check_cancel()
    local spent = budget.stop(run)
    if spent then return finish(run, "budget_exceeded", spent) end
    local hit = budget_hit(run)
    if hit then
      return finish(run, "budget_exceeded", { kind = "budget", budget = hit,
        message = string.format("budget %s exceeded", hit) })
    end
    for _, h in ipairs(hooks_of(run, "before_step")) do
      local d = call_hook("before_step", h, step_view(run))
      if type(d) == "table" then
        if d.messages ~= nil then
          if not valid_messages(d.messages) then
            hook_error("before_step", "messages must be a list of message tables with a role")
          end
          run.messages = d.messages
        end
        if d.stop then
          return finish(run, "stopped", { kind = "stopped",
            message = d.reason or "stopped by before_step" })
        end
      end
    end
    steer.deliver(run) -- messages sent to the task, each once (README, "Steering")
    local notice = bg.notice(run)
    local reply, err, request, latency, interrupted = call_model(run)
    if interrupted then
      -- a message cut the call short: its notice is withdrawn, the message
      -- is delivered at the top of the loop and the model asked again
      bg.withdraw(run)
      emit(run, "step_interrupted", { step = "model", iteration = run.iteration + 1 })
    else
      if notice and reply then bg.delivered(run, notice) end
      if not reply then return finish(run, "failed", err) end
      run.iteration = run.iteration + 1
      run.last_reply = reply
      local counted = count_usage(run, request, reply)
      emit(run, "lm_call", {
        iteration = run.iteration, model = model_name(run.model), latency_s = latency,
        usage = reply.usage, usage_reported = reply.usage ~= nil,
        usage_estimated = reply.usage == nil or nil,
        estimated_usage = reply.usage == nil and counted or nil,
        cost = counted.cost,
        tool_calls = reply.tool_calls and #reply.tool_calls or 0,
        -- a foreground run's nested runs have run ids of their own
        root_run_id = not run.task_id and run.ctx.root_key or nil,
      })
      run.messages[#run.messages + 1] = {
        role = "assistant", content = reply.text, tool_calls = reply.tool_calls,
      }
      if reply.tool_calls then
        for _, call in ipairs(reply.tool_calls) do
          run.ctx:check_cancel() -- no new call once the run must stop
          if run.interrupted then skip_call(run, call) else run_tool_call(run, call) end
        end
      end
      emit(run, "step", { iteration = run.iteration, tool_calls = reply.tool_calls and #reply.tool_calls or 0 })
      for _, h in ipairs(hooks_of(run, "after_step")) do call_hook("after_step", h, step_view(run)) end
      local stop = should_stop(run)
      if stop then
        run.final = reply.text
        return finish(run, "stopped", { kind = "stopped", message = stop })
      end
      -- a message that came during the last call is read before the run ends
      if not reply.tool_calls and not steer.pending(run) and not vetoed(run) then
        run.final = reply.text or ""
        return finish(run, "completed")
      end
    end
  end
end

local function instructions(run)
  local ins = run.agent.instructions
  if type(ins) ~= "string" then
    ins = call_hook("instructions", ins, run.ctx)
    if type(ins) ~= "string" then
      hook_error("instructions", "instructions(ctx) must return a string, got " .. type(ins))
    end
  end
  return ins
end

-- Foreground runs have no worker, so a handler could swallow the cancel
-- error in a pcall and loop. A top-level foreground run therefore gets the
-- same C count hook as a worker for its duration (core/fg_watch.c): it
-- notices a timeout or an interrupt even in code that never calls ctx, and
-- from then on raises the cancel error at every instruction of code that is
-- not luagent's own, so the runner can still wind down. A hook the host had
-- set keeps firing (chained) and is put back when the run ends.

-- Host work pumped while a foreground run waits (host tools and callbacks
-- of other tasks) is not the run's code: the watch must not strike there.
function runner.unwatched(fn, ...)
  core.fg_suspend(1)
  local ok, err = pcall(fn, ...)
  core.fg_suspend(-1)
  if not ok then error(err, 0) end
end

local function watch_foreground(fg)
  local w = core.fg_watch(fg.deadline, fg.interrupt_base)
  fg.watch = w
  if fg.cancelled then w:cancel() end
  -- ctx:check_cancel arms it once luagent raised the cancel error
  fg.arm = function() w:arm() end
end

local function unwatch_foreground(fg)
  local why = fg.watch:close()
  fg.watch, fg.arm = nil, nil
  if why == "timeout" then
    fg.cancelled, fg.timed_out = true, true
  elseif why == "interrupt" then
    fg.cancelled, fg.interrupted = true, true
  end
end

-- Where this run's turn starts in its messages (app:chat saves from
-- there): found by identity, since before_step may have replaced the list.
local function history_end(run)
  if not run.prompt_message then return run.history_end end
  for i = #run.messages, 1, -1 do
    if run.messages[i] == run.prompt_message then return i - 1 end
  end
  return run.history_end
end

-- Run `agent_id` on `prompt`. o: run_id, task_id, thread_id, depth,
-- root_key, fg (foreground cancel state), history (earlier messages),
-- catch_cancel (top-level foreground runs turn the cancel error into a
-- status; everywhere else it propagates, R-23).
function runner.run(env, agent_id, prompt, o)
  local reg = env.reg
  local agent = reg.agents[agent_id]
  local run_id = o.run_id or new_id("run_")
  local ctx = context.new(env, {
    run_id = run_id,
    task_id = o.task_id,
    agent_id = agent_id,
    thread_id = o.thread_id or run_id,
    depth = o.depth or 0,
    root_key = o.root_key or run_id,
    max_depth = o.max_depth,
    _fg = o.fg,
  })
  local run = {
    env = env, reg = reg, agent = agent, run_id = run_id, ctx = ctx,
    model = agent.model or reg.model,
    messages = {},
    usage = usage.zero(),
    iteration = 0,
    started = core.now(),
    task_id = o.task_id,
  }
  ctx._run = run
  steer.prepare(run, o)
  -- the wall deadline that cuts this run's waits short: its own budget's
  -- or an enclosing run's, whichever comes first
  local deadline = agent.budget.max_wall_seconds and
    { at = run.started + agent.budget.max_wall_seconds, run_id = run_id, budget = "max_wall_seconds" }
  if o.deadline and (not deadline or o.deadline.at <= deadline.at) then deadline = o.deadline end
  ctx._deadline = deadline
  run.tool_list, run.tool_by_name = agent_tools(reg, agent)
  local function body()
    if not run.model then
      error({ luagent_hook = true, kind = "config",
        message = string.format("agent %q has no model (set model in luagent.agent or luagent.config)",
          agent_id) }, 0)
    end
    bg.prepare(run)
    budget.prepare(run)
    run.tool_specs = {}
    for _, t in ipairs(run.tool_list) do run.tool_specs[#run.tool_specs + 1] = tools.model_spec(t) end
    run.messages[1] = { role = "system", content = instructions(run) }
    for _, m in ipairs(o.history or {}) do run.messages[#run.messages + 1] = m end
    run.history_end = #run.messages
    run.prompt_message = { role = "user", content = prompt }
    run.messages[#run.messages + 1] = run.prompt_message
    return loop(run)
  end
  local watched = o.catch_cancel and o.fg
  if watched then watch_foreground(o.fg) end
  local ok, err = xpcall(body, tools.on_error)
  if watched then unwatch_foreground(o.fg) end
  if not ok then
    if core.is_interrupt(err) then
      -- a nested run inside an interrupted step: the step ends, not just
      -- this run (the steered run's own steps catch it, steer.lua)
      bg.finish(run)
      error(err, 0)
    elseif tools.is_budget(err) and err.run_id == run_id then
      finish(run, "budget_exceeded", { kind = "budget", budget = err.budget, message = err.message })
    elseif tools.is_budget(err) then
      -- an enclosing run's budget: it ends that run, not just this one
      bg.finish(run)
      error(err, 0)
    elseif core.is_cancel(err) then
      if not o.catch_cancel then
        bg.finish(run)
        error(err, 0)
      end
      local fg = o.fg or {}
      if fg.timed_out then
        finish(run, "timed_out", { kind = "timeout", message = "the run timed out" })
      else
        finish(run, "cancelled", { kind = "cancelled", message = "the run was cancelled" })
      end
    elseif type(err) == "table" and err.kind and err.kind ~= "runtime" then
      finish(run, "failed", { kind = err.kind, message = err.message })
    else
      local msg = type(err) == "table" and err.message or tostring(err)
      finish(run, "failed", { kind = "runtime", message = cut(msg, MAX_ERROR_BYTES),
        traceback = type(err) == "table" and err.traceback or nil })
    end
  end
  bg.finish(run)
  return {
    status = run.status,
    final = run.final,
    messages = run.messages,
    usage = run.usage,
    error = run.error,
    run_id = run_id,
    task_id = o.task_id,
    history_end = history_end(run),
  }
end

-- The depth limit for a child of ctx's run (R-28): the app's, tightened by
-- the agent's own max_depth.
runner.max_depth_for = context.max_depth_for

local run_agent_spec = { thread_id = options.text_id }

-- ctx:run_agent(id, prompt, opts): a nested run in this state, depth + 1.
-- Returns an AgentResult; raises only the cancel error and {kind="limit"}.
function context.Ctx:run_agent(agent_id, prompt, opts)
  context.check_agent(self._env.reg, "ctx:run_agent", agent_id)
  options.arg("ctx:run_agent", "prompt", prompt, "string", 3)
  options.check("ctx:run_agent", opts, run_agent_spec)
  local depth = self.depth + 1
  local max = runner.max_depth_for(self)
  if depth > max then
    error(context.limit_error(string.format("cannot run agent %q: depth %d would exceed max_depth (%d)",
      agent_id, depth, max)), 2)
  end
  self:check_cancel()
  return runner.run(self._env, agent_id, prompt, {
    task_id = self.task_id,
    thread_id = opts and opts.thread_id or self.thread_id,
    depth = depth,
    root_key = self.root_key,
    fg = self._fg,
    parent_run_id = self.run_id,
    max_depth = max,       -- an agent's max_depth also bounds its nested runs' children
    deadline = self._deadline,
  })
end

-- What the model is shown of an agent run's outcome.
function runner.tool_result(res)
  if res.status == "completed" then return tools.ok(res.final) end
  local msg = string.format("agent run ended %s", res.status)
  if res.error and res.error.message then msg = msg .. ": " .. res.error.message end
  local kind = res.error and res.error.kind
  local r = tools.fail((kind == "limit" or kind == "budget") and kind or "runtime", msg)
  if res.final then r.value = res.final end
  return r
end

-- An inline delegate: a nested run of the delegated agent.
function context.run_delegate(ctx, tool, args)
  local ok, res = pcall(ctx.run_agent, ctx, tool.delegate, args.prompt)
  if not ok then
    if tools.is_abort(res) then error(res, 0) end
    if type(res) == "table" and res.kind == "limit" then return tools.fail("limit", res.message) end
    return tools.fail("runtime", tostring(type(res) == "table" and res.message or res))
  end
  return runner.tool_result(res)
end

-- The task kind "agent" in worker states: an agent-run task. Returns the
-- AgentResult (as the record's result), usage and the status it maps to.
function runner.worker_kind(env, ctx, info)
  local res = runner.run(env, info.agent_id, info.prompt or "", {
    run_id = info.run_id,
    task_id = info.task_id,
    thread_id = ctx.thread_id,
    depth = info.depth or 0,
    root_key = info.root_key,
    max_depth = info.max_depth, -- the spawning run's limit (an agent's max_depth)
    steered = true, -- the task's own run reads its messages (steer.lua)
  })
  res.history_end = nil
  local err = res.error and { kind = res.error.kind, message = res.error.message,
    status = res.error.status } or nil
  return res, res.usage, res.status, err
end

-- Used by tests and tools that want the names a run can call.
function runner.tool_names(env, agent_id)
  local _, by_name = agent_tools(env.reg, env.reg.agents[agent_id])
  local names = {}
  for n in pairs(by_name) do names[#names + 1] = n end
  table.sort(names)
  return names
end

return runner
