-- Stall detection (README, "Stalls"): a task with stale_after_s that emits
-- no event, makes no model or tool progress and sends no heartbeat for that
-- long ends timed_out with error.kind = "stalled" (retried while attempts
-- remain); ctx:heartbeat() keeps a long tool alive; waiting inside the core
-- is not a stall. Waits go through app:wait; nothing sleeps to synchronise
-- (the tools' own sleeps are the behaviour under test).
local closing = require "support.closing"
local luagent = require "luagent"
local fake = require "support.fake_openai_client"
local H = require "support.fake_openai_app"

local function app_with(tools_src, bg)
  return luagent.load_string(string.format([[
local luagent = require "luagent"
return luagent.config{
  background_tasks = { enabled = true, stop_grace_s = 0.2 %s },
  tools = { %s },
} ]], bg or "", tools_src), "=stall_cfg")
end

-- sleeps in C (os.execute blocks the worker: no hook, no event)
local SLEEPER = [[luagent.tool{ name = "nap", input_schema = { type = "object" },
  handler = function(args) os.execute("sleep " .. args.s) return "woke" end }]]
-- the same wait cut in pieces, with a heartbeat between them
local BEATER = [[luagent.tool{ name = "beat", input_schema = { type = "object" },
  handler = function(args, ctx)
    for _ = 1, args.n do os.execute("sleep 0.1") ctx:heartbeat() end
    return "done"
  end }]]

describe("stall detection", function()
  it("a tool sleeping in C without heartbeats ends timed_out / stalled", function()
    local app = closing(app_with(SLEEPER))
    local rec = app:enqueue_tool("nap", { s = 1.5 }, { stale_after_s = 0.3, timeout_s = 60 })
    local w = app:wait({ rec.task_id }, { timeout_s = 10 })
    local t = w.tasks[1]
    assert.equal("timed_out", t.status)
    assert.equal("stalled", t.error.kind)
    assert.matches("stale_after_s", t.error.message, 1, true)
    assert.equal(0.3, app:get(rec.task_id).stale_after_s)
  end)

  it("one that calls ctx:heartbeat() runs on past stale_after_s", function()
    local app = closing(app_with(BEATER))
    -- 12 steps of a 0.1 s C sleep outlast the limit; a step (a shell and
    -- a sleep, slower under a sanitizer's preload) stays well within it
    local rec = app:enqueue_tool("beat", { n = 12 }, { stale_after_s = 1 })
    local w = app:wait({ rec.task_id }, { timeout_s = 10 })
    assert.equal("completed", w.tasks[1].status)
    assert.equal("done", w.tasks[1].result)
  end)

  it("stale_after_s is off by default, and a task waiting in the core is not stalled", function()
    local app = closing(app_with(SLEEPER .. [[, luagent.tool{ name = "waiter",
      input_schema = { type = "object" }, handler = function(_, ctx)
        local c = ctx:enqueue_tool("nap", { s = 0.6 })
        ctx:sleep(0.4)
        return ctx:wait({ c.task_id }, { timeout_s = 10 }).tasks[1].status
      end }]]))
    local plain = app:enqueue_tool("nap", { s = 0.4 })
    local waiter = app:enqueue_tool("waiter", {}, { stale_after_s = 0.25 })
    local w = app:wait({ plain.task_id, waiter.task_id }, { timeout_s = 10 })
    assert.equal("completed", w.tasks[1].status)
    assert.equal("completed", w.tasks[2].status)
    assert.equal("completed", w.tasks[2].result)
  end)

  it("a stalled attempt whose code notices is retried while retries remain", function()
    -- a Lua busy loop: the hook sees the stall, so the attempt ends on its own
    local app = closing(app_with([[luagent.tool{ name = "spin", input_schema = { type = "object" },
      handler = function(_, ctx)
        if ctx.attempt == 1 then while true do end end
        return "second"
      end }]], ", retry_backoff_s = 0.01"))
    local rec = app:enqueue_tool("spin", {}, { stale_after_s = 0.2, retries = 1 })
    local w = app:wait({ rec.task_id }, { timeout_s = 10 })
    assert.equal("completed", w.tasks[1].status)
    assert.equal("second", w.tasks[1].result)
    assert.equal(2, w.tasks[1].attempts)
    local retry
    for _, ev in ipairs(app:events{ since = 0, limit = 1000 }) do
      if ev.kind == "task_retry" then retry = ev end
    end
    assert.equal("stalled", retry.payload.error.kind)
  end)

  it("rejects a bad stale_after_s", function()
    local app = closing(app_with(SLEEPER))
    assert.has_error(function() app:enqueue_tool("nap", { s = 0 }, { stale_after_s = 0 }) end)
    assert.has_error(function() app:enqueue_tool("nap", { s = 0 }, { stale_after_s = "1" }) end)
  end)
end)

describe("stall detection through luagent.openai", function()
  local srv
  setup(function() srv = fake.start() end)
  teardown(function() srv:stop() end)
  before_each(function() srv:reset() end)

  it("a silent stream ends the run stalled; a streaming one runs on", function()
    local app = closing(H.simple(srv, { stream = true, timeout_s = 60 }))
    srv:script{
      { text = "stalls here", chunk_size = 2, stall_after_chunks = 1 },
      { text = "a slow but steady answer", chunk_size = 2, delay_between_chunks_ms = 60 },
    }
    local stuck = app:enqueue_background("a", "x", { stale_after_s = 0.3, timeout_s = 60 })
    local w = app:wait({ stuck.task_id }, { timeout_s = 10 })
    assert.equal("timed_out", w.tasks[1].status)
    assert.equal("stalled", w.tasks[1].error.kind)
    local steady = app:enqueue_background("a", "y", { stale_after_s = 0.3, timeout_s = 60 })
    w = app:wait({ steady.task_id }, { timeout_s = 10 })
    assert.equal("completed", w.tasks[1].status)
    assert.equal("a slow but steady answer", w.tasks[1].result.final)
  end)
end)
