-- Dispatcher acceptance: host tools and host callbacks (R-5).
local closing = require "support.closing"
local H = require "support.dispatch_helpers"
local luagent = H.luagent

local CFG = [[
local ask = luagent.tool{ name = "ask", handler = function(args, ctx)
  return ctx:call_tool(args.tool, args.args or {})
end }
HOOK_CALLS = HOOK_CALLS or {}
return luagent.config{
  background_tasks = { enabled = true, global_concurrency = 2 },
  tools = { ask, T.echo,
            luagent.host_tool{ name = "pos", description = "where", input_schema = { type = "object" } },
            luagent.host_tool{ name = "unbound", description = "nobody answers" } },
  hooks = { on_task_finished = function(rec)
    HOOK_CALLS[#HOOK_CALLS + 1] = { task_id = rec.task_id, status = rec.status,
                                    in_worker = luagent.in_worker(), inside = HOST_PUMPING }
  end },
}
]]

describe("dispatcher: host tools and callbacks (R-5)", function()
  local app
  local main_co = coroutine.running()
  before_each(function()
    _G.HOOK_CALLS = {}
    _G.HOST_PUMPING = false
    app = H.app(CFG)
  end)
  after_each(function()
    app:close()
    _G.HOOK_CALLS, _G.HOST_PUMPING = nil, nil
  end)

  -- the test's own pumping calls, flagged so handlers can tell where they ran
  local function pumping(f, ...)
    _G.HOST_PUMPING = true
    local r = table.pack(pcall(f, ...))
    _G.HOST_PUMPING = false
    assert(r[1], r[2])
    return (table.unpack or unpack)(r, 2, r.n)
  end

  it("a worker's ctx:call_tool of a host tool runs the bound handler on the host", function()
    local calls = {}
    app:host_tool("pos", function(args, info)
      calls[#calls + 1] = { args = args, info = info, inside = HOST_PUMPING,
                            in_worker = luagent.in_worker(), co = coroutine.running() }
      return { x = 1, y = args.k }
    end)
    local r = app:enqueue_tool("ask", { tool = "pos", args = { k = 7 } })
    assert.same({}, calls) -- nothing runs on the host until it pumps
    local w = pumping(app.wait, app, { r.task_id }, { timeout_s = 5 })
    assert.equal("completed", w.tasks[1].status, H.errmsg(w.tasks[1].error))
    assert.same({ ok = true, value = { x = 1, y = 7 } }, w.tasks[1].result)
    assert.equal(1, #calls)
    assert.is_true(calls[1].inside)
    assert.is_false(calls[1].in_worker)
    assert.equal(main_co, calls[1].co)
    assert.same({ k = 7 }, calls[1].args)
    assert.equal(r.task_id, calls[1].info.task_id)
    local ev = H.of_kind(H.all_events(app), "host_call", r.task_id)
    assert.equal(1, #ev)
    assert.equal("pos", ev[1].payload.tool)
  end)

  it("a host call is served by app:poll too", function()
    app:host_tool("pos", function() return HOST_PUMPING and "polled" or "elsewhere" end)
    local r = app:enqueue_tool("ask", { tool = "pos" })
    -- wait (without pumping) until the call is queued to the host
    while app:stats().host_calls_pending == 0 do
      assert.equal("running", app:get(r.task_id).status)
      app:events{} -- no sleeping: spin on the non-blocking API
    end
    pumping(app.poll, app)
    local w = app:wait({ r.task_id }, { timeout_s = 5 })
    assert.same({ ok = true, value = "polled" }, w.tasks[1].result)
  end)

  it("an unbound host tool answers a runtime ToolResult", function()
    local r = app:enqueue_tool("ask", { tool = "unbound" })
    local w = app:wait({ r.task_id }, { timeout_s = 5 })
    assert.equal("completed", w.tasks[1].status)
    local res = w.tasks[1].result
    assert.is_false(res.ok)
    assert.equal("runtime", res.cause.kind)
    assert.matches("no host handler bound", res.error, 1, true)
  end)

  it("blocking app calls inside a host callback raise; app:poll there does nothing", function()
    local seen, calls = {}, 0
    app:host_tool("pos", function()
      calls = calls + 1
      if calls > 1 then return "fine" end
      local ok, err = pcall(app.wait, app, "whatever", { timeout_s = 1 })
      seen.wait_ok, seen.wait_err = ok, tostring(err)
      ok, err = pcall(app.run_until_idle, app)
      seen.idle_ok, seen.idle_err = ok, tostring(err)
      -- the second call is queued to the host now; poll must not run it here
      local t0 = H.now()
      while app:stats().host_calls_pending < 2 and H.now() - t0 < 5 do end
      seen.pending = app:stats().host_calls_pending
      seen.poll = app:poll()
      seen.calls_after_poll = calls
      return "fine"
    end)
    local r1 = app:enqueue_tool("ask", { tool = "pos" })
    local r2 = app:enqueue_tool("ask", { tool = "pos" })
    local w = app:wait({ r1.task_id, r2.task_id }, { timeout_s = 5 })
    assert.equal("fine", w.tasks[1].result.value)
    assert.is_false(seen.wait_ok)
    assert.matches("blocking call inside a host callback", seen.wait_err, 1, true)
    assert.is_false(seen.idle_ok)
    assert.matches("blocking call inside a host callback", seen.idle_err, 1, true)
    assert.equal(2, seen.pending)
    assert.equal(0, seen.poll) -- the second queued call was not run from inside the first
    assert.equal(1, seen.calls_after_poll)
    assert.equal("fine", w.tasks[2].result.value)
  end)

  it("a host callback that raises becomes an error event and never escapes poll", function()
    app:host_tool("pos", function() error("host tool boom") end)
    local errors = {}
    app:on("error", function(e) errors[#errors + 1] = e end)
    app:on("task_finished", function() error("listener boom") end)
    local r = app:enqueue_tool("ask", { tool = "pos" })
    local w = app:wait({ r.task_id }, { timeout_s = 5 }) -- must not raise
    local res = w.tasks[1].result
    assert.is_false(res.ok)
    assert.equal("runtime", res.cause.kind)
    assert.matches("host tool boom", res.error, 1, true)
    app:run_until_idle{ timeout_s = 5 }
    assert.has_no.errors(function() app:poll() end)
    local msgs = {}
    for _, ev in ipairs(H.of_kind(H.all_events(app), "error")) do msgs[#msgs + 1] = ev.payload.message end
    local all = table.concat(msgs, "\n")
    assert.matches("host tool boom", all, 1, true)
    assert.matches("listener boom", all, 1, true)
    assert.is_true(#errors >= 1)
  end)

  it("lifecycle callbacks (config hooks and app:on) run on the host", function()
    local on_calls = {}
    app:on("task_finished", function(rec)
      on_calls[#on_calls + 1] = { task_id = rec.task_id, inside = HOST_PUMPING, in_worker = luagent.in_worker(),
                                  co = coroutine.running() }
    end)
    local starts = 0
    local unsubscribe = app:on("task_started", function() starts = starts + 1 end)
    local r = app:enqueue_tool("echo", { a = 1 })
    pumping(app.wait, app, { r.task_id }, { timeout_s = 5 })
    pumping(app.poll, app)
    assert.equal(1, #on_calls)
    assert.equal(r.task_id, on_calls[1].task_id)
    assert.is_true(on_calls[1].inside)
    assert.is_false(on_calls[1].in_worker)
    assert.equal(main_co, on_calls[1].co)
    assert.equal(1, #HOOK_CALLS)
    assert.same({ task_id = r.task_id, status = "completed", in_worker = false, inside = true }, HOOK_CALLS[1])
    assert.equal(1, starts)
    unsubscribe()
    local r2 = app:enqueue_tool("echo", { a = 2 })
    pumping(app.wait, app, { r2.task_id }, { timeout_s = 5 })
    pumping(app.poll, app)
    assert.equal(1, starts)
    assert.equal(2, #on_calls)
  end)
end)

describe("dispatcher: host calls of stopped tasks (R-5)", function()
  it("a host call whose task was cancelled before the host pumped is dropped", function()
    _G.HOOK_CALLS = {}
    local app = closing(H.app(CFG))
    local calls = 0
    app:host_tool("pos", function() calls = calls + 1; return "ran" end)
    local r = app:enqueue_tool("ask", { tool = "pos" })
    local t0 = H.now()
    while app:stats().host_calls_pending == 0 and H.now() - t0 < 5 do end
    assert.equal(1, app:stats().host_calls_pending)
    local c = app:cancel(r.task_id) -- pumps while it waits for the task to stop
    assert.equal("cancelled", c.status)
    app:poll()
    assert.equal(0, calls)
    assert.equal(0, app:stats().host_calls_pending)
    _G.HOOK_CALLS = nil
  end)

  it("a host call answers a task that timed out meanwhile with nothing", function()
    _G.HOOK_CALLS = {}
    local app = closing(H.app(CFG))
    local calls = 0
    app:host_tool("pos", function() calls = calls + 1; return "late" end)
    local r = app:enqueue_tool("ask", { tool = "pos" }, { timeout_s = 0.1 })
    -- never pump until the deadline has passed: the record tells
    local t0 = H.now()
    while app:get(r.task_id).status == "running" and H.now() - t0 < 5 do end
    assert.equal("timed_out", app:get(r.task_id).status)
    app:poll()
    assert.equal(0, calls)
    assert.equal(0, app:stats().host_calls_pending)
    _G.HOOK_CALLS = nil
  end)
end)
