-- A tool's own `background = { timeout_s, retries }` applies however a task
-- of it is started: a model call, app:enqueue_tool and ctx:enqueue_tool;
-- explicit options still win.
local closing = require "support.closing"
local R = require "support.runtime_helpers"

local CONFIG = [[
  local slow = luagent.tool{ name = "slow", description = "Sleeps.",
    background = { enabled = true, timeout_s = 0.3, retries = 1 },
    handler = function(args, ctx) ctx:sleep(30) end }
  local flaky = luagent.tool{ name = "flaky", description = "Fails.",
    background = { retries = 2 },
    handler = function() error("flaky failed") end }
  local starter = luagent.tool{ name = "starter", description = "Starts slow.",
    input_schema = { type = "object", properties = { explicit = { type = "boolean" } } },
    handler = function(args, ctx)
      local opts = args.explicit and { timeout_s = 20, retries = 0 } or nil
      return ctx:enqueue_tool("slow", {}, opts).task_id
    end }
  return luagent.config{
    model = luagent.static_model{ responses = { { tool_calls = { { id = "k", name = "slow", arguments = {} } } }, "ok" } },
    background_tasks = { enabled = true, default_timeout_s = 300, default_retries = 0,
      retry_backoff_s = 0, retry_backoff_max_s = 0 },
    agents = { luagent.agent{ id = "a", tools = { slow, flaky, starter } } },
  } ]]

describe("a tool's own background settings", function()
  it("apply to app:enqueue_tool: the tool's timeout_s ends the task, its retries retry it", function()
    local app = closing(R.app(CONFIG))
    local rec = app:enqueue_tool("slow", {})
    assert.equal(0.3, rec.timeout_s)
    assert.equal(1, rec.max_retries)
    local flaky = app:enqueue_tool("flaky", {})
    assert.equal(300, flaky.timeout_s) -- the app's default: the tool sets none
    assert.equal(2, flaky.max_retries)
    local w = app:wait({ rec.task_id, flaky.task_id }, { timeout_s = 20 })
    assert.is_true(w.done)
    assert.equal("timed_out", app:get(rec.task_id).status)
    local got = app:get(flaky.task_id)
    assert.equal("failed", got.status)
    assert.equal(3, got.attempts)
  end)

  it("apply to ctx:enqueue_tool", function()
    local app = closing(R.app(CONFIG))
    local starter = app:enqueue_tool("starter", {})
    local w = app:wait({ starter.task_id }, { timeout_s = 10 })
    local child = app:get(w.tasks[1].result)
    assert.equal(0.3, child.timeout_s)
    assert.equal(1, child.max_retries)
  end)

  it("are what a model's call of the tool gets too", function()
    local app = closing(R.app(CONFIG))
    local res = app:run("a", "go")
    assert.equal("completed", res.status)
    local rec = app:list{ agent_id = "a" }[1]
    assert.equal("slow", rec.tool)
    assert.equal(0.3, rec.timeout_s)
    assert.equal(1, rec.max_retries)
  end)

  it("give way to explicit options", function()
    local app = closing(R.app(CONFIG))
    local rec = app:enqueue_tool("slow", {}, { timeout_s = 20, retries = 0 })
    assert.equal(20, rec.timeout_s)
    assert.equal(0, rec.max_retries)
    local ms = app:enqueue_tool("slow", {}, { timeout_ms = 5000 })
    assert.equal(5, ms.timeout_s)
    assert.equal(1, ms.max_retries)
    local starter = app:enqueue_tool("starter", { explicit = true })
    local child = app:get(app:wait({ starter.task_id }, { timeout_s = 10 }).tasks[1].result)
    assert.equal(20, child.timeout_s)
    assert.equal(0, child.max_retries)
    app:close{ mode = "cancel", grace_s = 1 }
  end)
end)
