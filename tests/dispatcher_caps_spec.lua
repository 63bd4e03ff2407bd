-- Dispatcher acceptance: real parallelism, caps (R-21) and backpressure (R-22).
local closing = require "support.closing"
local H = require "support.dispatch_helpers"

local RENDEZVOUS = [[
-- Writes its marker, then waits (bounded) until the other task's marker
-- exists: it can only succeed if both run at the same time.
local rendezvous = luagent.tool{ name = "rendezvous", handler = function(args, ctx)
  local f = assert(io.open(args.dir .. "/" .. args.me, "w")); f:close()
  local deadline = os.time() + 5
  while true do
    local g = io.open(args.dir .. "/" .. args.other, "r")
    if g then g:close(); return { sid = SID, task_id = ctx.task_id } end
    if os.time() > deadline then error("the other task never started") end
    ctx:sleep(0.005)
  end
end }
]]

describe("dispatcher: parallelism", function()
  it("two tasks that can only finish together both complete, in different worker states", function()
    local dir = H.tmpdir()
    local app = closing(H.app(RENDEZVOUS .. [[
      return luagent.config{ background_tasks = { enabled = true, global_concurrency = 2 },
                             tools = { rendezvous } } ]]))
    local a = app:enqueue_tool("rendezvous", { dir = dir, me = "a", other = "b" })
    local b = app:enqueue_tool("rendezvous", { dir = dir, me = "b", other = "a" })
    local w = app:wait({ a.task_id, b.task_id }, { timeout_s = 10 })
    H.rmdir(dir)
    assert.is_true(w.done)
    assert.equal("completed", w.tasks[1].status, H.errmsg(w.tasks[1].error))
    assert.equal("completed", w.tasks[2].status, H.errmsg(w.tasks[2].error))
    assert.is_string(w.tasks[1].result.sid)
    assert.are_not.equal(w.tasks[1].result.sid, w.tasks[2].result.sid)
  end)
end)

-- Running counts over time, from the task_started/task_finished events.
local function replay(events, agent_of)
  local running, per, max_running, max_per, started = 0, {}, 0, 0, {}
  for _, ev in ipairs(events) do
    local ag = agent_of[ev.task_id]
    if ag and ev.kind == "task_started" then
      started[ev.task_id] = true
      running = running + 1
      per[ag] = (per[ag] or 0) + 1
      if running > max_running then max_running = running end
      if per[ag] > max_per then max_per = per[ag] end
    elseif ag and (ev.kind == "task_finished" or ev.kind == "task_retry") and started[ev.task_id] then
      started[ev.task_id] = nil
      running = running - 1
      per[ag] = per[ag] - 1
    end
  end
  return max_running, max_per
end

describe("dispatcher: caps (R-21)", function()
  it("never runs more than global_concurrency, nor more than per_agent_concurrency per agent", function()
    local app = closing(H.app([[
      return luagent.config{ background_tasks = { enabled = true, global_concurrency = 3,
                                                  per_agent_concurrency = 1 },
                             tools = { T.nap } } ]]))
    local agent_of, ids = {}, {}
    for i = 1, 16 do
      local ag = "agent" .. (i % 5)
      local r = app:enqueue_tool("nap", { s = 0.01 }, { agent_id = ag })
      assert.equal(ag, r.agent_id)
      agent_of[r.task_id] = ag
      ids[#ids + 1] = r.task_id
    end
    local w = app:wait(ids, { timeout_s = 20 })
    assert.is_true(w.done)
    for _, t in ipairs(w.tasks) do assert.equal("completed", t.status) end
    local events = H.all_events(app)
    for i = 2, #events do assert.is_true(events[i].seq > events[i - 1].seq) end
    local max_running, max_per = replay(events, agent_of)
    assert.equal(3, max_running) -- reached, never passed
    assert.equal(1, max_per)
  end)

  it("a saturated agent does not hold back other agents' tasks", function()
    local app = closing(H.app([[
      return luagent.config{ background_tasks = { enabled = true, global_concurrency = 3,
                                                  per_agent_concurrency = 1 },
                             tools = { T.nap } } ]]))
    local a = {}
    for i = 1, 5 do a[i] = app:enqueue_tool("nap", { s = 0.05 }, { agent_id = "A" }).task_id end
    local b = app:enqueue_tool("nap", { s = 0.001 }, { agent_id = "B" }).task_id
    local w = app:wait(a, { timeout_s = 20 })
    assert.is_true(w.done)
    local events = H.all_events(app)
    local b_started = H.of_kind(events, "task_started", b)[1]
    local a2_finished = H.of_kind(events, "task_finished", a[2])[1]
    assert.is_truthy(b_started)
    assert.is_true(b_started.seq < a2_finished.seq)
    -- A's tasks ran one at a time, in FIFO order
    local prev = 0
    for i = 1, 5 do
      local s = H.of_kind(events, "task_started", a[i])[1]
      assert.is_true(s.seq > prev)
      prev = H.of_kind(events, "task_finished", a[i])[1].seq
      assert.is_true(prev > s.seq)
    end
  end)

  it("orders admission by priority, then FIFO", function()
    local app = closing(H.app([[
      return luagent.config{ background_tasks = { enabled = true, global_concurrency = 1 },
                             tools = { T.block, T.echo } } ]]))
    local blocker = app:enqueue_tool("block", {})
    local function e(n, prio) return app:enqueue_tool("echo", { n = n }, { priority = prio }).task_id end
    local l1, l2, h1, l3, m1, l4, h2 = e(1), e(2), e(3, 5), e(4), e(5, 1), e(6), e(7, 5)
    app:cancel(blocker.task_id)
    assert.is_true(app:wait({ l1, l2, h1, l3, m1, l4, h2 }, { timeout_s = 10 }).done)
    local order = {}
    for _, ev in ipairs(H.all_events(app)) do
      if ev.kind == "task_started" and ev.task_id ~= blocker.task_id then order[#order + 1] = ev.task_id end
    end
    assert.same({ h1, h2, m1, l1, l2, l3, l4 }, order)
  end)
end)

describe("dispatcher: backpressure (R-22)", function()
  it('"reject" refuses with a {kind="rejected"} error naming the global cap', function()
    local app = closing(H.app([[
      return luagent.config{ background_tasks = { enabled = true, global_concurrency = 1,
                                                  backpressure = "reject" },
                             tools = { T.block } } ]]))
    local first = app:enqueue_tool("block", {})
    assert.equal("queued", first.status)
    local err = H.raises(app.enqueue_tool, app, "block", {})
    assert.is_table(err)
    assert.equal("rejected", err.kind)
    assert.matches("global_concurrency", err.message, 1, true)
    assert.matches("rejected", tostring(err.kind))
  end)

  it('"reject" refuses with a message naming the per-agent cap', function()
    local app = closing(H.app([[
      return luagent.config{ background_tasks = { enabled = true, global_concurrency = 3,
                                                  per_agent_concurrency = 1, backpressure = "reject" },
                             tools = { T.block } } ]]))
    app:enqueue_tool("block", {}, { agent_id = "A" })
    local err = H.raises(app.enqueue_tool, app, "block", {}, { agent_id = "A" })
    assert.equal("rejected", err.kind)
    assert.matches("per_agent_concurrency", err.message, 1, true)
    -- another agent still fits
    local ok = app:enqueue_tool("block", {}, { agent_id = "B" })
    assert.equal("queued", ok.status)
  end)

  it("queue mode refuses past max_queue", function()
    local app = closing(H.app([[
      return luagent.config{ background_tasks = { enabled = true, global_concurrency = 1, max_queue = 2 },
                             tools = { T.block } } ]]))
    local ids = {}
    for i = 1, 3 do ids[i] = app:enqueue_tool("block", {}).task_id end -- 1 admitted + 2 queued
    assert.equal(2, app:stats().queued)
    local err = H.raises(app.enqueue_tool, app, "block", {})
    assert.equal("rejected", err.kind)
    assert.matches("max_queue", err.message, 1, true)
    -- cancelling a queued task makes room again
    assert.equal("cancelled", app:cancel(ids[3]).status)
    assert.equal("queued", app:enqueue_tool("block", {}).status)
  end)
end)
