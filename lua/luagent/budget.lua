-- Tree-wide budgets and the admission hook (README "Tree budgets",
-- "Admission"): the Lua side of core/budget.c. A root run or task bounds
-- the tokens, cost, wall time and tasks of its whole tree; hooks.admit in
-- the config decides, on the host thread, whether each spawn may start.
local compat = require("luagent.compat")
local json = require("luagent.json")
local options = require("luagent.options")
local tools = require("luagent.tools")

local budget = {}

local function positive(v) return options.positive(v) end

budget.spec = {
  max_tokens = options.at_least(1),
  max_cost = positive,
  max_wall_seconds = positive,
  max_tasks = options.at_least(0),
  on_exhausted = function(v)
    if v == "stop_children" or v == "refuse_spawns" then return true end
    return nil, 'must be "stop_children" or "refuse_spawns"'
  end,
}

-- Check a tree_budget option of `where`; returns it.
function budget.check(where, tb, level)
  if tb == nil then return nil end
  options.check(where .. ": tree_budget", tb, budget.spec, (level or 2) + 1)
  return tb
end

-- The tree budget a root run or task of `agent_id` gets: the option, else
-- the agent's own.
function budget.for_root(reg, agent_id, opts)
  local agent = agent_id and reg.agents[agent_id]
  return (opts and opts.tree_budget) or (agent and agent.tree_budget) or nil
end

-- ---------------------------------------------------------------- runs

-- At a run's start: does its tree have a budget?
function budget.prepare(run)
  run.tree_budgeted = run.env.core:tree_budget(run.ctx.root_key) ~= nil
end

-- Before a model call: the error that ends the run when its tree's budget
-- is spent and runs must stop (on_exhausted = "stop_children"), else nil.
function budget.stop(run)
  if not run.tree_budgeted then return nil end
  local why, stop = run.env.core:tree_spent(run.ctx.root_key)
  if not why or not stop then return nil end
  return { kind = "budget", budget = "tree_budget." .. why,
    message = string.format("the tree's budget is spent (tree_budget.%s)", why) }
end

-- ---------------------------------------------------------------- admission

local ADMIT_TOOL = "luagent.admit" -- the host tool name (tool names cannot hold a dot)
budget.ADMIT_TOOL = ADMIT_TOOL

local QUEUE_FIRST_S, QUEUE_MAX_S = 0.05, 1

local function tree_view(app, root_key)
  local b = app._core:tree_budget(root_key)
  if b then return { root = root_key, usage = b.usage, tasks = b.tasks, budget_left = b.left } end
  local ok, root = pcall(app.tree, app, root_key)
  if not ok then return { root = root_key } end
  local n = -1 -- the root itself is not a spawn
  local function count(node)
    n = n + 1
    for _, c in ipairs(node.children or {}) do count(c) end
  end
  count(root)
  return { root = root_key, usage = root.tree_usage or root.usage, tasks = math.max(n, 0) }
end

-- The request the hook gets (README "Admission").
local function admit_request(app, req, info)
  local active = {}
  for _, rec in ipairs(app._core:list({ include_finished = false })) do
    active[rec.agent_id] = (active[rec.agent_id] or 0) + 1
  end
  return {
    kind = req.kind, agent_id = req.agent_id, tool = req.tool, prompt = req.prompt,
    args = req.args and json.decode_safe(req.args) or nil,
    parent = { agent_id = info.agent_id, run_id = info.run_id, task_id = info.task_id,
      depth = info.depth, thread_id = info.thread_id },
    tree = tree_view(app, req.root_key),
    active = active,
    stats = app:stats(),
    rate = app:rate_stats(),
  }
end

-- On the host: ask hooks.admit about one spawn and, when admitted, enqueue
-- it at once, so the next spawn's request already counts it. Returns
-- { decision, reason?, record? } ({ error } when the enqueue was refused).
local function admit_on_host(app, req, info)
  local hook = app._reg.hooks.admit
  local ok, decision, reason = compat.xpcall(hook, tools.on_error, admit_request(app, req, info))
  if not ok then
    local msg = type(decision) == "table" and tostring(decision.message) or tostring(decision)
    return { decision = "reject", reason = "the admit hook failed: " .. msg }
  end
  if decision ~= "admit" and decision ~= "queue" and decision ~= "reject" then
    return { decision = "reject", reason = string.format(
      'the admit hook must return "admit", "queue" or "reject", got %s', tostring(decision)) }
  end
  if decision ~= "admit" then return { decision = decision, reason = reason ~= nil and tostring(reason) or nil } end
  local enq_ok, rec = pcall(app._core.enqueue, app._core, req)
  if not enq_ok then
    return { decision = "admit", error = type(rec) == "table" and { kind = rec.kind, message = rec.message }
      or { kind = "runtime", message = tostring(rec) } }
  end
  return { decision = "admit", record = rec }
end

-- Make the host answer admission for this app (when the config has the hook).
function budget.install(app)
  if not app._reg.hooks.admit then return end
  app._host_tools[ADMIT_TOOL] = function(args, info)
    return admit_on_host(app, args, info)
  end
end

local function refused(kind, message)
  error({ kind = kind, message = message }, 0)
end

-- Enqueue a spawn of the run behind ctx (req has its parent fields), through
-- hooks.admit when the config has one: "queue" asks again after a pause
-- (0.05 s, doubling to 1 s), "reject" refuses with kind "rejected". Returns
-- the record; raises {kind, message} when refused, and the cancel error.
function budget.enqueue(ctx, req)
  local env = ctx._env
  if not env.reg.hooks.admit then return env.core:enqueue(req) end
  local pause = QUEUE_FIRST_S
  local queued = false
  while true do
    ctx:check_cancel()
    local answer
    if env.is_worker then
      req.parent_task_id = ctx.task_id -- the host enqueues it as this task's child
      local r = env.call_host(ctx, ADMIT_TOOL, req)
      if not r.ok then refused("rejected", "admission failed: " .. tostring(r.error)) end
      answer = r.value
    else
      answer = admit_on_host(env.app, req, ctx:info())
    end
    if answer.decision == "reject" then
      refused("rejected", "rejected by the admit hook: " .. (answer.reason or "no reason given"))
    end
    if answer.decision == "admit" then
      if answer.error then refused(answer.error.kind or "runtime", answer.error.message) end
      return answer.record
    end
    if not queued then
      queued = true
      ctx:emit("admit_queued", { agent_id = req.agent_id, tool = req.tool, reason = answer.reason })
    end
    ctx:sleep(pause)
    pause = math.min(pause * 2, QUEUE_MAX_S)
  end
end

return budget
