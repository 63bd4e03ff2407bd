-- Waits are values built once: app:wait registers its ids with the core,
-- is woken by what happens meanwhile (events, host work) without rebuilding
-- anything, and decodes its value once, when it is over.
local closing = require "support.closing"
local R = require "support.runtime_helpers"

local CONFIG = [[
local go = luagent.host_tool{ name = "go" }
local chatty = luagent.tool{ name = "chatty", handler = function(args, ctx)
  -- the host answers this while it is inside app:wait, so the events
  -- below are emitted during the wait
  ctx:call_tool("go", {})
  for i = 1, 50 do ctx:emit("progress", { summary = "step " .. i }) end
  return "done " .. args.n
end }
return luagent.config{ background_tasks = { enabled = true, global_concurrency = 20,
  per_agent_concurrency = 20 }, tools = { chatty, go } }
]]

describe("app:wait", function()
  it("decodes at most one wait value per ended task plus one over 20 chatty tasks", function()
    local app = closing(R.app(CONFIG))
    local calls = 0
    app:host_tool("go", function() calls = calls + 1 end)
    local ids = {}
    for i = 1, 20 do ids[i] = app:enqueue_tool("chatty", { n = i }).task_id end
    local before = R.core.debug_counters().wait_decodes
    local v = app:wait(ids, { timeout_s = 30 })
    local decodes = R.core.debug_counters().wait_decodes - before
    assert.is_true(v.done)
    assert.equal(20, #v.tasks)
    for i, t in ipairs(v.tasks) do
      assert.equal("completed", t.status)
      assert.equal("done " .. i, t.result)
    end
    assert.equal(20, calls)
    local progress = 0
    for _, ev in ipairs(app:events({ limit = 100000 })) do
      if ev.kind == "progress" then progress = progress + 1 end
    end
    assert.equal(1000, progress)
    assert.is_true(decodes <= 21, "decoded " .. decodes .. " wait values")
  end)
end)
