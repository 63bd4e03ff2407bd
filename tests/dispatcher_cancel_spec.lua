-- Dispatcher acceptance: timeouts and the cancel error (R-23), cancellation
-- and its cascade (R-25), terminal records (R-26) and retries (R-24).
local closing = require "support.closing"
local H = require "support.dispatch_helpers"

local LOOPS = [[
local loops = {
  luagent.tool{ name = "spin", handler = function() while true do end end },
  luagent.tool{ name = "spin_pcall", handler = function()
    pcall(function() while true do end end)
    return "escaped the pcall"
  end },
  luagent.tool{ name = "spin_repcall", handler = function()
    while true do pcall(function() while true do end end) end
  end },
  luagent.tool{ name = "spin_xpcall", handler = function()
    local n = 0
    while true do
      xpcall(function() while true do end end, function(e) n = n + 1; return e end)
      if n > 3 then return "escaped the xpcall" end
    end
  end },
  luagent.tool{ name = "spin_coroutine", handler = function()
    local co = coroutine.wrap(function() while true do end end)
    pcall(co)
    return "escaped the coroutine"
  end },
}
]]

describe("dispatcher: timeouts (R-23)", function()
  local app
  before_each(function()
    -- one worker thread only, so every task below runs in the same state
    app = H.app(LOOPS .. [[
      return luagent.config{ background_tasks = { enabled = true, global_concurrency = 1,
                                                  max_depth = 0, max_workers = 1 },
                             tools = { T.whoami, (table.unpack or unpack)(loops) } } ]])
  end)
  after_each(function() app:close() end)

  for _, tool in ipairs({ "spin", "spin_pcall", "spin_repcall", "spin_xpcall", "spin_coroutine" }) do
    it(tool .. " ends timed_out near its deadline and the same state runs the next task", function()
      local before = app:enqueue_tool("whoami", {})
      local spin = app:enqueue_tool(tool, {}, { timeout_s = 0.2 })
      local after = app:enqueue_tool("whoami", {})
      local w = app:wait({ before.task_id, spin.task_id, after.task_id }, { timeout_s = 10 })
      assert.is_true(w.done)
      local b, s, a = w.tasks[1], w.tasks[2], w.tasks[3]
      assert.equal("completed", b.status)
      assert.equal("timed_out", s.status)
      assert.equal("timeout", s.error.kind)
      assert.equal("completed", a.status)
      -- the same Lua state (not a rebooted one) ran the task after the loop
      assert.equal(b.result.sid, a.result.sid)
      assert.equal(b.result.runs + 1, a.result.runs)
      local rec = app:get(spin.task_id)
      assert.equal(1, rec.attempts)
      local events = H.all_events(app)
      local started = H.of_kind(events, "task_started", spin.task_id)[1]
      local finished = H.of_kind(events, "task_finished", spin.task_id)[1]
      assert.is_nil(finished.payload.late_result) -- nothing escaped the loop
      -- near its deadline: between 0.2 s and a generous bound
      local function ms(iso)
        local y, mo, d, h, mi, sec, milli = iso:match("(%d+)-(%d+)-(%d+)T(%d+):(%d+):(%d+)%.(%d+)Z")
        return os.time{ year = y, month = mo, day = d, hour = h, min = mi, sec = sec } * 1000 + tonumber(milli)
      end
      local took = ms(rec.finished_at) - ms(rec.started_at)
      assert.is_true(took >= 190, "took " .. took .. " ms")
      assert.is_true(took < 1500, "took " .. took .. " ms")
      assert.is_true(started.seq < finished.seq)
    end)
  end

  it("a timeout is not retried", function()
    local spin = app:enqueue_tool("spin", {}, { timeout_s = 0.1, retries = 2 })
    local w = app:wait({ spin.task_id }, { timeout_s = 10 })
    assert.equal("timed_out", w.tasks[1].status)
    assert.equal(1, app:get(spin.task_id).attempts)
    assert.same({}, H.of_kind(H.all_events(app), "task_retry", spin.task_id))
  end)
end)

describe("dispatcher: cancellation (R-25)", function()
  local app
  before_each(function()
    app = H.app([[
      local parent = luagent.tool{ name = "parent", handler = function(args, ctx)
        local c1 = ctx:enqueue_tool("block", { tag = "child" })
        local c2 = ctx:enqueue_tool("block", {})
        ctx:emit("spawned", { c1 = c1.task_id, c2 = c2.task_id })
        ctx:sleep(60)
      end }
      return luagent.config{ background_tasks = { enabled = true, global_concurrency = 2, retry_backoff_s = 0.05 },
                             tools = { T.block, T.echo, T.whoami, parent } } ]])
  end)
  after_each(function() app:close() end)

  it("cancelling a queued task gives cancelled at once", function()
    local b1 = app:enqueue_tool("block", {})
    local b2 = app:enqueue_tool("block", {})
    local q = app:enqueue_tool("echo", { x = 1 })
    assert.equal("queued", app:get(q.task_id).status)
    local t0 = H.now()
    local r = app:cancel(q.task_id)
    assert.is_true(H.now() - t0 < 0.5)
    assert.same({ ok = true, status = "cancelled", task_id = q.task_id }, r)
    local rec = app:get(q.task_id)
    assert.equal("cancelled", rec.status)
    assert.is_nil(rec.started_at)
    assert.equal(0, rec.attempts)
    assert.is_string(rec.finished_at)
    app:cancel(b1.task_id)
    app:cancel(b2.task_id)
  end)

  it("cancelling a running ctx:sleep(60) task gives cancelled within a second", function()
    local b = app:enqueue_tool("block", { tag = "b" }, { retries = 3 })
    assert.is_truthy(H.await_kind(app, "blocking", b.task_id))
    local t0 = H.now()
    local r = app:cancel(b.task_id)
    assert.is_true(H.now() - t0 < 1.0)
    assert.is_true(r.ok)
    assert.equal("cancelled", r.status)
    local rec = app:get(b.task_id)
    assert.equal("cancelled", rec.status)
    assert.is_true(rec.cancel_requested)
    assert.equal("cancelled", rec.error.kind)
    -- cancelled tasks are not retried (R-24)
    assert.equal(1, rec.attempts)
    assert.same({}, H.of_kind(H.all_events(app), "task_retry", b.task_id))
    -- and cancelling again says it is over
    assert.same({ ok = false, status = "cancelled", task_id = b.task_id }, app:cancel(b.task_id))
  end)

  it("cascades to the children a task enqueued, running and queued", function()
    local p = app:enqueue_tool("parent", {})
    local spawned = H.await_kind(app, "spawned", p.task_id)
    assert.is_truthy(spawned)
    local c1, c2 = spawned.payload.c1, spawned.payload.c2
    assert.is_truthy(H.await_kind(app, "blocking", c1)) -- c1 runs, c2 waits for a slot
    assert.equal("running", app:get(c1).status)
    assert.equal("queued", app:get(c2).status)
    assert.equal(p.task_id, app:get(c1).parent_task_id)
    assert.equal("cancelled", app:cancel(p.task_id).status)
    local w = app:wait({ c1, c2 }, { timeout_s = 2 })
    assert.is_true(w.done)
    assert.equal("cancelled", w.tasks[1].status)
    assert.equal("cancelled", w.tasks[2].status)
    assert.is_nil(app:get(c2).started_at)
  end)

  it("a task stuck in a C call stays running until it returns; its late value is kept in events only", function()
    local dir = H.tmpdir()
    local fifo = dir .. "/fifo"
    assert(os.execute("mkfifo '" .. fifo .. "'"))
    local stuck = closing(H.app([[
      local stuck = luagent.tool{ name = "stuck", handler = function(args, ctx)
        ctx:emit("stuck", {})
        os.execute("cat '" .. args.fifo .. "' >/dev/null") -- blocks until the test writes
        return "late value"
      end }
      -- no retiring (stop_grace_s) while the test holds the call: this is
      -- about what a task in a C call looks like until it returns
      return luagent.config{ background_tasks = { enabled = true, stop_grace_s = 60 },
                             tools = { stuck } } ]]))
    local r = stuck:enqueue_tool("stuck", { fifo = fifo })
    assert.is_truthy(H.await_kind(stuck, "stuck", r.task_id))
    local c = stuck:cancel(r.task_id) -- waits a second for the task to stop: it cannot
    assert.is_true(c.ok)
    assert.equal("running", c.status)
    local rec = stuck:get(r.task_id)
    assert.equal("running", rec.status)
    assert.is_true(rec.cancel_requested)
    local f = assert(io.open(fifo, "w")) -- lets the C call return
    f:close()
    local w = stuck:wait({ r.task_id }, { timeout_s = 5 })
    H.rmdir(dir)
    assert.equal("cancelled", w.tasks[1].status)
    rec = stuck:get(r.task_id)
    assert.is_nil(rec.result)
    assert.equal("cancelled", rec.error.kind)
    -- the value came back after the cancel: never the record's result, at
    -- most the event's late_result (unless the hook stopped the task first
    -- on its way out of the handler)
    local fin = H.of_kind(H.all_events(stuck), "task_finished", r.task_id)[1]
    assert.equal("cancelled", fin.payload.status)
    if fin.payload.late_result ~= nil then assert.equal("late value", fin.payload.late_result) end
  end)

  it("terminal records never change afterwards (R-26)", function()
    local done = app:enqueue_tool("echo", { v = 1 })
    local failed = app:enqueue_tool("echo", { v = 2 }) -- cancelled below, while queued or running
    app:wait({ done.task_id }, { timeout_s = 5 })
    app:cancel(failed.task_id)
    local b = app:enqueue_tool("block", { tag = "t" })
    assert.is_truthy(H.await_kind(app, "blocking", b.task_id))
    app:cancel(b.task_id)
    local snap = {}
    for _, id in ipairs({ done.task_id, failed.task_id, b.task_id }) do
      snap[id] = H.copy(app:get(id))
      assert.is_truthy(({ completed = 1, cancelled = 1 })[snap[id].status], snap[id].status)
    end
    -- more activity: new tasks, cancels of finished ones, a wait
    local more = {}
    for i = 1, 4 do more[i] = app:enqueue_tool("echo", { i = i }).task_id end
    for id in pairs(snap) do
      local r = app:cancel(id)
      assert.is_false(r.ok)
      assert.equal(snap[id].status, r.status)
    end
    app:wait(more, { timeout_s = 5 })
    app:run_until_idle{ timeout_s = 5 }
    for id, rec in pairs(snap) do assert.same(rec, app:get(id)) end
  end)
end)

describe("dispatcher: retries (R-24)", function()
  local app
  before_each(function()
    app = H.app([[
      local flaky = luagent.tool{ name = "flaky", handler = function(args, ctx)
        if ctx.attempt <= args.fail_times then error("flaky failure " .. ctx.attempt) end
        return { attempt = ctx.attempt }
      end }
      return luagent.config{ background_tasks = { enabled = true, global_concurrency = 2,
                                                  retry_backoff_s = 0.05 },
                             tools = { flaky } } ]])
  end)
  after_each(function() app:close() end)

  it("a handler that fails twice then succeeds completes with attempts = 3", function()
    local r = app:enqueue_tool("flaky", { fail_times = 2 }, { retries = 2 })
    assert.equal(2, r.max_retries)
    local seen = {}
    app:on("task_finished", function(rec) seen[#seen + 1] = rec.status end)
    local w = app:wait({ r.task_id }, { timeout_s = 10 })
    -- wait did not return between attempts
    assert.is_true(w.done)
    assert.equal("completed", w.tasks[1].status)
    assert.same({ attempt = 3 }, w.tasks[1].result)
    local rec = app:get(r.task_id)
    assert.equal(3, rec.attempts)
    assert.equal("completed", rec.status)
    assert.is_nil(rec.error)
    local events = H.all_events(app)
    local retries = H.of_kind(events, "task_retry", r.task_id)
    assert.equal(2, #retries)
    assert.equal(3, #H.of_kind(events, "task_started", r.task_id))
    assert.equal(1, #H.of_kind(events, "task_finished", r.task_id))
    assert.matches("flaky failure 1", retries[1].payload.error.message, 1, true)
    app:poll()
    assert.same({ "completed" }, seen)
  end)

  it("a task that always fails ends failed with attempts = retries + 1", function()
    local r = app:enqueue_tool("flaky", { fail_times = 99 }, { retries = 2 })
    local w = app:wait({ r.task_id }, { timeout_s = 10 })
    assert.equal("failed", w.tasks[1].status)
    local rec = app:get(r.task_id)
    assert.equal(3, rec.attempts)
    assert.equal("runtime", rec.error.kind)
    assert.matches("flaky failure 3", rec.error.message, 1, true)
    assert.equal(2, #H.of_kind(H.all_events(app), "task_retry", r.task_id))
  end)

  it("a task waiting for its retry is queued with retry_at, and a cancel ends it at once", function()
    local slow = closing(H.app([[
      local flaky = luagent.tool{ name = "flaky", handler = function() error("always") end }
      return luagent.config{ background_tasks = { enabled = true, retry_backoff_s = 30 },
                             tools = { flaky } } ]]))
    local r = slow:enqueue_tool("flaky", {}, { retries = 3 })
    local ev = H.await_kind(slow, "task_retry", r.task_id)
    assert.is_truthy(ev)
    assert.equal(1, ev.payload.attempt)
    local rec = slow:get(r.task_id)
    assert.equal("queued", rec.status)
    assert.is_string(rec.retry_at)
    assert.equal("always", rec.error.message:match("always"))
    assert.equal(1, slow:stats().queued)
    local t0 = H.now()
    assert.equal("cancelled", slow:cancel(r.task_id).status)
    assert.is_true(H.now() - t0 < 0.5)
    rec = slow:get(r.task_id)
    assert.equal(1, rec.attempts)
    assert.is_nil(rec.retry_at)
    assert.is_true(slow:run_until_idle{ timeout_s = 1 }.idle)
  end)

  it("with no retries a failure is final at once", function()
    local r = app:enqueue_tool("flaky", { fail_times = 1 })
    local w = app:wait({ r.task_id }, { timeout_s = 10 })
    assert.equal("failed", w.tasks[1].status)
    assert.equal(1, app:get(r.task_id).attempts)
  end)
end)
