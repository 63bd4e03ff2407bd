-- Agent runtime: budgets (README, "Agent hooks" and AgentResult). Each budget ends the run
-- budget_exceeded with error = {kind = "budget", budget = <name>} and keeps
-- the transcript so far.
local closing = require "support.closing"
local R = require "support.runtime_helpers"

local LOOPER = [[
local t = luagent.tool{ name = "t", handler = function(args, ctx)
  if args.s then ctx:sleep(args.s) end
  return "again"
end }
]]

describe("runtime budgets", function()
  it("max_iterations = 1 with a model that always calls tools stops after one step", function()
    local calls = 0
    local app = closing(R.app(LOOPER .. [[
      return luagent.config{
        model = luagent.function_model(function(req)
          S.count()
          return { tool_calls = { { name = "t" } }, usage = { prompt_tokens = 1, completion_tokens = 1 } }
        end),
        agents = { luagent.agent{ id = "a", tools = { t }, budget = { max_iterations = 1 } } },
      } ]], { count = function() calls = calls + 1 end }))
    local res = app:run("a", "go")
    assert.equal("budget_exceeded", res.status)
    assert.same({ kind = "budget", budget = "max_iterations" },
      { kind = res.error.kind, budget = res.error.budget })
    assert.is_string(res.error.message)
    assert.equal(1, calls)
    assert.same({ "system", "user", "assistant", "tool" }, R.roles(res.messages))
    assert.truthy(R.well_formed(res.messages))
    assert.same({ prompt_tokens = 1, completion_tokens = 1, total_tokens = 2 }, res.usage)
    assert.is_nil(res.final)
    local steps = R.of_kind(R.events(app), "step", res.run_id)
    assert.equal(1, #steps)
    local errs = R.of_kind(R.events(app), "error", res.run_id)
    assert.equal(1, #errs)
    assert.equal("budget_exceeded", errs[1].payload.status)
  end)

  it("max_iterations counts model calls: a final answer on the last allowed call completes", function()
    local app = closing(R.app(LOOPER .. [[
      return luagent.config{
        model = luagent.static_model{ responses = {
          { tool_calls = { { name = "t" } } }, { tool_calls = { { name = "t" } } }, "done" } },
        agents = { luagent.agent{ id = "a", tools = { t }, budget = { max_iterations = 3 } },
                   luagent.agent{ id = "b", tools = { t }, budget = { max_iterations = 2 } } },
      } ]]))
    local res = app:run("a", "go")
    assert.equal("completed", res.status)
    assert.equal("done", res.final)
    res = app:run("b", "go")
    assert.equal("budget_exceeded", res.status)
    assert.equal("max_iterations", res.error.budget)
    assert.equal(6, #res.messages)
  end)

  it("the default max_iterations is 32", function()
    local calls = 0
    local app = closing(R.app(LOOPER .. [[
      return luagent.config{
        model = luagent.function_model(function() S.count(); return { tool_calls = { { name = "t" } } } end),
        agents = { luagent.agent{ id = "a", tools = { t } } },
      } ]], { count = function() calls = calls + 1 end }))
    local res = app:run("a", "go")
    assert.equal("budget_exceeded", res.status)
    assert.equal("max_iterations", res.error.budget)
    assert.equal(32, calls)
  end)

  it("max_tokens ends the run once the summed usage reaches it", function()
    local calls = 0
    local app = closing(R.app(LOOPER .. [[
      return luagent.config{
        model = luagent.function_model(function()
          S.count()
          return { tool_calls = { { name = "t" } }, usage = { prompt_tokens = 30, completion_tokens = 10 } }
        end),
        agents = { luagent.agent{ id = "a", tools = { t }, budget = { max_tokens = 100 } } },
      } ]], { count = function() calls = calls + 1 end }))
    local res = app:run("a", "go")
    assert.equal("budget_exceeded", res.status)
    assert.equal("budget", res.error.kind)
    assert.equal("max_tokens", res.error.budget)
    assert.equal(3, calls) -- 40, 80, 120 >= 100
    assert.equal(120, res.usage.total_tokens)
    assert.same({ "system", "user", "assistant", "tool", "assistant", "tool", "assistant", "tool" },
      R.roles(res.messages))
  end)

  it("max_tokens does not turn a final answer into a budget failure", function()
    local app = closing(R.app([[
      return luagent.config{
        model = luagent.static_model{ responses = { { text = "big answer", usage = { prompt_tokens = 500, completion_tokens = 500 } } } },
        agents = { luagent.agent{ id = "a", budget = { max_tokens = 100 } } },
      } ]]))
    local res = app:run("a", "go")
    assert.equal("completed", res.status)
    assert.equal("big answer", res.final)
  end)

  it("max_wall_seconds ends a run whose model is slow (delay_s), during the call", function()
    local app = closing(R.app(LOOPER .. [[
      return luagent.config{
        model = luagent.static_model{ responses = {
          { tool_calls = { { name = "t" } } },
          { text = "too late", delay_s = 30 } } },
        agents = { luagent.agent{ id = "a", tools = { t }, budget = { max_wall_seconds = 0.2 } } },
      } ]]))
    local t0 = R.now()
    local res = app:run("a", "go")
    local took = R.now() - t0
    assert.equal("budget_exceeded", res.status)
    assert.equal("max_wall_seconds", res.error.budget)
    assert.equal("budget", res.error.kind)
    assert.truthy(took >= 0.19 and took < 5, tostring(took))
    assert.same({ "system", "user", "assistant", "tool" }, R.roles(res.messages))
  end)

  it("max_wall_seconds ends a run whose tool is slow, answering the interrupted call", function()
    local app = closing(R.app(LOOPER .. [[
      return luagent.config{
        model = luagent.static_model{ responses = {
          { tool_calls = { { id = "slow", name = "t", arguments = { s = 30 } } } }, "never" } },
        agents = { luagent.agent{ id = "a", tools = { t }, budget = { max_wall_seconds = 0.2 } } },
      } ]]))
    local t0 = R.now()
    local res = app:run("a", "go")
    local took = R.now() - t0
    assert.equal("budget_exceeded", res.status)
    assert.equal("max_wall_seconds", res.error.budget)
    assert.truthy(took >= 0.19 and took < 5, tostring(took))
    assert.truthy(R.well_formed(res.messages))
    local t = R.tool_messages(res.messages)
    assert.equal("slow", t[1].id)
    assert.is_false(t[1].result.ok)
    assert.equal("budget", t[1].result.cause.kind)
    -- every tool_start has its tool_end
    local ends = R.of_kind(R.events(app), "tool_end", res.run_id)
    assert.equal(1, #ends)
    assert.equal("slow", ends[1].payload.tool_call_id)
    assert.equal("budget", ends[1].payload.kind)
  end)

  it("max_wall_seconds works in a background run too", function()
    local app = closing(R.app(LOOPER .. [[
      return luagent.config{
        background_tasks = { enabled = true },
        model = luagent.static_model{ responses = {
          { tool_calls = { { name = "t" } } }, { text = "late", delay_s = 30 } } },
        agents = { luagent.agent{ id = "a", tools = { t }, budget = { max_wall_seconds = 0.2 } } },
      } ]]))
    local rec = app:enqueue_background("a", "go")
    local w = app:wait({ rec.task_id }, { timeout_s = 10 })
    assert.is_true(w.done)
    local task = w.tasks[1]
    assert.equal("completed", task.status)
    assert.equal("budget_exceeded", task.result.status)
    assert.equal("max_wall_seconds", task.result.error.budget)
    assert.same({ "system", "user", "assistant", "tool" }, R.roles(task.result.messages))
  end)
end)
