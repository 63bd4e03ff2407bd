-- The run context `ctx` handed to tool handlers and hooks (README).
-- The same object works in the host state (foreground runs) and in worker
-- states (tasks); what differs (how to sleep, wait, reach the host) comes
-- from its env, built by app.lua or worker.lua.
local core = require("luagent.core")
local json = require("luagent.json")
local options = require("luagent.options")
local spec = require("luagent.spec")
local tools = require("luagent.tools")
local budget = require("luagent.budget")

local context = {}

local Ctx = {}
Ctx.__index = Ctx
context.Ctx = Ctx

-- fields: run_id, task_id, agent_id, thread_id, depth, root_key, max_depth,
-- and in a task attempt and metadata
function context.new(env, fields)
  fields._env = env
  return setmetatable(fields, Ctx)
end

local function positive(v) return options.positive(v) end
local function non_negative(v) return options.non_negative(v) end
local text_id = options.text_id

local enqueue_spec = {
  agent_id = text_id,
  thread_id = text_id,
  timeout_s = positive,
  timeout_ms = positive,
  retries = options.at_least(0),
  priority = "integer",
  metadata = "table",
  stale_after_s = positive,
  idempotency_key = text_id,
  tree_budget = "table", -- a root's (README "Tree budgets"): not for ctx:enqueue_*
}
context.enqueue_spec = enqueue_spec

-- The first metadata key (at any depth) that is not text, with the reason.
local function bad_key(t, path, seen)
  if seen[t] then return nil end
  seen[t] = true
  for k, v in pairs(t) do
    if type(k) == "string" then
      local ok, why = text_id(k)
      if not ok then return string.format("%s key %q", path, k), why end
    end
    if type(v) == "table" then
      local where, why = bad_key(v, path .. "." .. tostring(k), seen)
      if where then return where, why end
    end
  end
end

-- Common part of an enqueue request from options (checked by the caller,
-- the public function `where`, whose caller `level` counts from here).
function context.request_options(req, opts, where, level)
  req.thread_id = opts.thread_id or req.thread_id
  if opts.timeout_s then
    req.timeout_s = opts.timeout_s
  elseif opts.timeout_ms then
    req.timeout_s = opts.timeout_ms / 1000
  end
  req.retries = opts.retries
  req.priority = opts.priority
  req.stale_after_s = opts.stale_after_s
  req.idempotency_key = opts.idempotency_key
  if opts.metadata ~= nil then
    local at, why = bad_key(opts.metadata, "metadata", {})
    if at then error(string.format("%s: option \"metadata\": %s %s", where, at, why), level + 1) end
    local ok, text = pcall(json.encode, opts.metadata)
    if not ok then
      error(string.format("%s: option \"metadata\" is not JSON data: %s", where,
        tostring(text):gsub("^luagent%.json%.encode: ", "")), level + 1)
    end
    req.metadata = text
  end
  return req
end

-- A tool's own background settings (timeout_s, retries) for a task of it
-- that the options leave unset: they apply however the task is started.
function context.tool_defaults(req, tool)
  local b = tool.background
  if type(b) ~= "table" then return req end
  if req.timeout_s == nil then req.timeout_s = b.timeout_s end
  if req.retries == nil then req.retries = b.retries end
  if req.stale_after_s == nil then req.stale_after_s = b.stale_after_s end
  return req
end

-- The tool-task request for `name` with `args`, or raise (API misuse).
-- Also returns the tool.
function context.tool_request(reg, where, name, args, level)
  options.arg(where, "name", name, text_id, level + 2)
  local tool = spec.resolve_tool(reg, name)
  if not tool then
    error(string.format("%s: unknown tool %q%s", where, name,
      options.did_you_mean(name, reg.tools)), level + 1)
  end
  local checked, err = tools.check_args(tool, args)
  if not checked then
    error(string.format("%s: %s", where, err), level + 1)
  end
  local ok, encoded = pcall(json.encode, checked)
  if not ok then
    error(string.format("%s: arguments for %s are not JSON: %s", where, name, encoded), level + 1)
  end
  return { kind = "tool", tool = name, args = encoded }, tool
end

local function raise_api(err, level)
  -- core errors arrive as {kind, message} tables; keep them as they are
  error(err, level + 1)
end

function Ctx:cancelled()
  return self._env.should_stop(self)
end

function Ctx:check_cancel()
  if self._env.should_stop(self) then
    -- a foreground run: make sure a handler's pcall cannot keep it going
    if self._fg and self._fg.arm then self._fg.arm() end
    error(core.cancel_error, 0)
  end
  -- past the run's wall budget the run must stop too (see Ctx:sleep)
  local d = self._deadline
  if d and core.now() >= d.at then error(tools.budget_error(d), 0) end
end

-- The run's wall deadline (max_wall_seconds, its own or an enclosing
-- run's) cuts waits short and then raises the budget error.
local function budget_left(ctx, seconds)
  local d = ctx._deadline
  if d and core.now() + seconds >= d.at then return d, math.max(0, d.at - core.now()) end
end

function Ctx:sleep(seconds)
  options.arg("ctx:sleep", "seconds", seconds, non_negative, 3)
  local d, left = budget_left(self, seconds)
  if d then
    self._env.sleep(self, left)
    error(tools.budget_error(d), 0)
  end
  self._env.sleep(self, seconds)
end

-- The run is alive: resets its task's stale_after_s clock (a no-op in a
-- foreground run, which has no stall detection).
function Ctx:heartbeat()
  core.task_heartbeat()
end

-- Summaries feed bg_check digests; keep them short and readable.
local function summarize(kind, payload)
  if type(payload) ~= "table" then return kind end
  local s = payload.summary or payload.text or payload.message or payload.tool or payload.status
  if s == nil then return kind end
  s = tools.cut(tostring(s), 100)
  return (s:gsub("%z", "\\0")) -- the core keeps digests as C strings
end
context.summarize = summarize

-- (a summary only feeds a task's digests: a foreground run's events need none)
local function emit(ctx, kind, payload, level)
  local ok, text = pcall(json.encode, payload == nil and {} or payload)
  if not ok then error("ctx:emit: payload is not JSON: " .. tostring(text), level + 1) end
  ctx._env.core:emit(kind, text, ctx.run_id, ctx.task_id, ctx.agent_id, ctx.depth,
    ctx.task_id and summarize(kind, payload) or nil)
end

function Ctx:emit(kind, payload)
  options.arg("ctx:emit", "kind", kind, text_id, 3)
  emit(self, kind, payload, 2)
end

-- luagent's own events, of kinds it names itself (no check of the kind)
function Ctx:_emit(kind, payload)
  emit(self, kind, payload, 2)
end

-- The depth limit for a child of ctx's run (R-28): the app's, tightened by
-- the agent's own max_depth and by any limit the run inherited (a task
-- spawned by a run of such an agent keeps it).
function context.max_depth_for(ctx)
  local m = ctx._env.reg.settings.max_depth
  local run = ctx._run
  local own = run and run.agent.max_depth
  if own and own < m then m = own end
  if ctx.max_depth and ctx.max_depth < m then m = ctx.max_depth end
  return m
end

-- The error a spawn or nested run past a limit raises (R-28, docs/architecture.md).
function context.limit_error(message)
  return setmetatable({ kind = "limit", message = message }, core.error_mt)
end

-- What identifies this run to a child it spawns; refuses a child past the
-- depth limit with {kind = "limit"} (R-28).
function Ctx:_parent_fields(req)
  req.parent_run_id = self.run_id
  req.parent_agent_id = self.agent_id
  req.thread_id = req.thread_id or self.thread_id
  req.depth = self.depth + 1
  req.root_key = self.root_key
  req.scoped = self._run ~= nil -- an agent run's child is announced to it (R-33)
  req.max_depth = context.max_depth_for(self)
  if req.depth > req.max_depth then
    error(context.limit_error(string.format("depth %d would exceed max_depth (%d)", req.depth,
      req.max_depth)), 3)
  end
  return req
end

local ctx_enqueue_spec = {}
for k, kind in pairs(enqueue_spec) do ctx_enqueue_spec[k] = kind end
ctx_enqueue_spec.agent_id = nil -- a task's children belong to its agent
ctx_enqueue_spec.tree_budget = nil -- they are in their root's tree

function Ctx:enqueue_tool(name, args, opts)
  options.check("ctx:enqueue_tool", opts, ctx_enqueue_spec)
  local req, tool = context.tool_request(self._env.reg, "ctx:enqueue_tool", name, args, 2)
  req.agent_id = self.agent_id
  context.request_options(req, opts or {}, "ctx:enqueue_tool", 2)
  context.tool_defaults(req, tool)
  self:_parent_fields(req)
  local ok, rec = pcall(budget.enqueue, self, req) -- through hooks.admit
  if not ok then raise_api(rec, 2) end
  return rec
end

-- An agent_id argument that must name an agent of the app. Called
-- directly by a public function, so errors point at that function's caller.
function context.check_agent(reg, where, agent_id)
  options.arg(where, "agent_id", agent_id, text_id, 4)
  if not reg.agents[agent_id] then
    error(string.format("%s: unknown agent %q%s", where, agent_id,
      options.did_you_mean(agent_id, reg.agents)), 3)
  end
end

function Ctx:enqueue_background(agent_id, prompt, opts)
  context.check_agent(self._env.reg, "ctx:enqueue_background", agent_id)
  options.arg("ctx:enqueue_background", "prompt", prompt, options.no_nul, 3)
  options.check("ctx:enqueue_background", opts, ctx_enqueue_spec)
  local req = { kind = "agent", agent_id = agent_id, prompt = prompt }
  context.request_options(req, opts or {}, "ctx:enqueue_background", 2)
  self:_parent_fields(req)
  local ok, rec = pcall(budget.enqueue, self, req) -- through hooks.admit
  if not ok then raise_api(rec, 2) end
  return rec
end

local wait_spec = {
  mode = function(v)
    if v == "all" or v == "any" then return true end
    return nil, 'must be "all" or "any"'
  end,
  timeout_s = non_negative,
  timeout_ms = non_negative,
}
context.wait_spec = wait_spec

-- ids: a list of task ids; returns it, "any" and the wait timeout.
function context.wait_args(where, ids, opts, default_timeout, level)
  if type(ids) ~= "table" then
    error(string.format("%s: argument \"task_ids\" must be a list of task ids, got %s%s",
      where, type(ids), type(ids) == "string" and " (wrap one id in a list: { id })" or ""),
      level + 1)
  end
  for i, id in ipairs(ids) do
    local ok, why = text_id(id)
    if not ok then
      error(string.format("%s: task_ids[%d] %s", where, i, why), level + 1)
    end
  end
  opts = options.check(where, opts, wait_spec, level + 2)
  local timeout = opts.timeout_s or (opts.timeout_ms and opts.timeout_ms / 1000) or default_timeout
  return ids, opts.mode == "any", timeout
end

function Ctx:wait(ids, opts)
  local list, any, timeout = context.wait_args("ctx:wait", ids, opts,
    self._env.reg.settings.default_wait_timeout_s, 2)
  local d, left = budget_left(self, timeout)
  if d then
    local v = self._env.wait(self, list, any, left)
    if type(v) == "table" and v.done then return v end
    error(tools.budget_error(d), 0)
  end
  return self._env.wait(self, list, any, timeout)
end

-- Block on a wait the core made (bg_wait) for up to `timeout` seconds; the
-- run's wall budget and cancel apply as in ctx:wait.
function Ctx:_block(w, timeout)
  local d, left = budget_left(self, timeout)
  self._env.block(self, w, d and left or timeout)
  if d and not w:over() then error(tools.budget_error(d), 0) end
end

-- ctx:call_tool(name, args) -> ToolResult; never raises except the cancel
-- error. Script tools run here, host tools go to the host (R-5).
function Ctx:call_tool(name, args)
  self:check_cancel()
  local reg = self._env.reg
  local tool = type(name) == "string" and spec.resolve_tool(reg, name)
  if not tool then
    return tools.fail("validation", string.format("unknown tool %q", tostring(name)))
  end
  local checked, err = tools.check_args(tool, args)
  if not checked then return tools.fail("validation", err) end
  return context.invoke(self, tool, checked)
end

-- Run a tool whose arguments are valid. Returns a ToolResult and maybe a
-- traceback for events.
function context.invoke(ctx, tool, args)
  if tool.host then
    return ctx._env.call_host(ctx, tool.name, args)
  elseif tool.delegate then
    return context.run_delegate(ctx, tool, args) -- set by runner.lua
  end
  return tools.run_handler(tool, args, ctx)
end

local spawn_spec = {
  cmd = "string",
  cwd = "string",
  timeout_s = positive,
  max_output_bytes = options.at_least(0),
  grace_s = non_negative,
}

-- ctx:spawn{ cmd, cwd?, timeout_s?, max_output_bytes? (16384), grace_s? (2) }
-- runs `sh -c cmd` in a process group of its own and waits for it (C,
-- core/procgroup.c). A cancel, the task's deadline, the run's wall budget
-- or timeout_s kills the whole group: TERM, then KILL after grace_s.
-- Returns { exit_code, output, pgid, truncated?, timed_out?, killed? };
-- raises the cancel error when the run was stopped, and the interrupt error
-- when a message interrupted the run's step (README, "Steering").
function Ctx:spawn(opts)
  if type(opts) ~= "table" or type(opts.cmd) ~= "string" then
    error("ctx:spawn: argument must be a table with a string cmd", 2)
  end
  options.check("ctx:spawn", opts, spawn_spec)
  local env, d = self._env, self._deadline
  local function should_stop()
    return env.should_stop(self) or (d ~= nil and core.now() >= d.at)
  end
  local r = core.spawn_run(env.core, {
    cmd = opts.cmd, cwd = opts.cwd, timeout_s = opts.timeout_s,
    max_output_bytes = opts.max_output_bytes, grace_s = opts.grace_s,
    run_id = self.run_id, task_id = self.task_id, agent_id = self.agent_id, depth = self.depth,
  }, should_stop)
  if r.stopped then self:check_cancel() end
  -- a message cut the step short: the group is gone, the step ends (steer.lua)
  if r.interrupted then error(core.interrupt_error, 0) end
  r.stopped = nil
  return r
end

-- What a host callback learns about the run that called it.
function Ctx:info()
  return {
    run_id = self.run_id, task_id = self.task_id, agent_id = self.agent_id,
    thread_id = self.thread_id, depth = self.depth,
  }
end

return context
