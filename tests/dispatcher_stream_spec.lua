-- Dispatcher acceptance: idle draining and streams (R-29), close (R-25a),
-- JSON crossing (R-3), ids and the event stream (README).
local closing = require "support.closing"
local LUA = require("support.lua_bin").lua
local H = require "support.dispatch_helpers"

local FANOUT = [[
local fanout = luagent.tool{ name = "fanout", handler = function(args, ctx)
  -- a host call first: only answered once the host pumps, so the parent
  -- cannot finish before the test's run_until_idle has started
  if args.gate then assert(ctx:call_tool("gate", {}).ok) end
  for i = 1, args.n do ctx:enqueue_tool("nap", { s = 0.005 }) end
  return args.n
end }
]]

describe("dispatcher: run_until_idle and streams (R-29)", function()
  local app
  before_each(function()
    app = H.app(FANOUT .. [[
      return luagent.config{ background_tasks = { enabled = true, global_concurrency = 2 },
                             tools = { fanout, T.nap, T.echo, luagent.host_tool{ name = "gate" } } } ]])
    app:host_tool("gate", function() return true end)
  end)
  after_each(function() app:close() end)

  it("run_until_idle counts tasks enqueued while it drains", function()
    app:enqueue_tool("fanout", { n = 3, gate = true })
    local r = app:run_until_idle{ timeout_s = 10 }
    assert.same({ idle = true, completed = 4, failed = 0, cancelled = 0, timed_out = 0 }, r)
    assert.equal(4, #app:list{ status = "completed" })
    local s = app:stats()
    assert.equal(0, s.queued)
    assert.equal(0, s.running)
    -- a second call finds nothing new
    assert.same({ idle = true, completed = 0, failed = 0, cancelled = 0, timed_out = 0 },
      app:run_until_idle{ timeout_s = 1 })
  end)

  it("run_stream_until_idle after the fact yields every event since load, then only new ones", function()
    local ids = {}
    for i = 1, 3 do ids[i] = app:enqueue_tool("echo", { i = i }).task_id end
    assert.is_true(app:wait(ids, { timeout_s = 5 }).done)
    app:run_until_idle{ timeout_s = 5 }
    local first, seqs = {}, {}
    for ev in app:run_stream_until_idle() do
      first[#first + 1] = ev
      seqs[#seqs + 1] = ev.seq
    end
    local all = H.all_events(app)
    assert.equal(#all, #first)
    assert.equal(9, #first) -- enqueued, started, finished for each
    for i, ev in ipairs(first) do
      assert.equal(i, ev.seq)
      assert.equal(all[i].kind, ev.kind)
    end
    -- nothing new: the second call yields nothing
    local n = 0
    for _ in app:run_stream_until_idle() do n = n + 1 end
    assert.equal(0, n)
    -- new work: only its events
    local r = app:enqueue_tool("fanout", { n = 2 })
    local second = {}
    for ev in app:run_stream_until_idle() do second[#second + 1] = ev end
    assert.equal(9, #second) -- 3 tasks x 3 events
    assert.equal(seqs[#seqs] + 1, second[1].seq)
    assert.equal(r.task_id, second[1].task_id)
    assert.equal("task_enqueued", second[1].kind)
    for i = 2, #second do assert.equal(second[i - 1].seq + 1, second[i].seq) end
  end)

  it("breaking out of the stream keeps the cursor where it stopped", function()
    for i = 1, 3 do app:enqueue_tool("echo", { i = i }) end
    app:run_until_idle{ timeout_s = 5 }
    local got = {}
    for ev in app:run_stream_until_idle() do
      got[#got + 1] = ev.seq
      if #got == 4 then break end
    end
    for ev in app:run_stream_until_idle() do got[#got + 1] = ev.seq end
    assert.same({ 1, 2, 3, 4, 5, 6, 7, 8, 9 }, got)
  end)
end)

-- Run a Lua script in a child Lua (same module build as this process);
-- returns the exit status line, the stderr text and the seconds it took.
local function run_child(dir, body, ...)
  local script = dir .. "/child.lua"
  H.write(script, [[
    package.path = "./lua/?.lua;./lua/?/init.lua;./tests/?.lua;" .. package.path
    package.cpath = "]] .. package.cpath:match("^[^;]*") .. [[;./?.so;" .. package.cpath
    local H = require "support.dispatch_helpers"
  ]] .. body)
  local t0 = H.now()
  local p = io.popen(string.format("%s %s %s >/dev/null 2>%s/err </dev/null; echo \"exit=$?\"",
    LUA, script, table.concat({ ... }, " "), dir))
  local status = p:read("*a")
  p:close()
  local took = H.now() - t0
  local ef = io.open(dir .. "/err")
  local err = ef and ef:read("*a") or ""
  if ef then ef:close() end
  return status, err, took
end

describe("dispatcher: close (R-25a)", function()
  it("close cancels running work and returns when workers stop", function()
    local app = H.app([[
      return luagent.config{ background_tasks = { enabled = true, global_concurrency = 2 },
                             tools = { T.block } } ]])
    local a = app:enqueue_tool("block", {})
    local b = app:enqueue_tool("block", {})
    local q = app:enqueue_tool("block", {})
    local t0 = H.now()
    assert.is_true(app:close{ grace_s = 5 })
    assert.is_true(H.now() - t0 < 2)
    assert.is_true(app:close()) -- again: a no-op
    for _, r in ipairs({ a, b, q }) do
      local rec = app:get(r.task_id)
      assert.equal("cancelled", rec.status)
      assert.matches("closed", rec.error.message, 1, true)
    end
  end)

  it('close{ mode = "suspend" } puts running tasks back to queued without spending an attempt', function()
    local app = H.app([[
      return luagent.config{ background_tasks = { enabled = true, global_concurrency = 1 },
                             tools = { T.block } } ]])
    local a = app:enqueue_tool("block", { tag = "a" })
    local b = app:enqueue_tool("block", {})
    assert.is_truthy(H.await_kind(app, "blocking", a.task_id))
    assert.is_true(app:close{ mode = "suspend", grace_s = 5 })
    for _, r in ipairs({ a, b }) do
      local rec = app:get(r.task_id)
      assert.equal("queued", rec.status)
      assert.equal(0, rec.attempts)
      assert.is_nil(rec.started_at)
      assert.is_nil(rec.error)
      assert.is_false(rec.cancel_requested)
    end
  end)

  it("close with a task stuck in a C call returns after the grace period and the process exits cleanly", function()
    local dir = H.tmpdir()
    local out = dir .. "/out"
    local status, err, took = run_child(dir, [[
      local app = H.app([=[
        local stuck = luagent.tool{ name = "stuck", handler = function(args, ctx)
          ctx:emit("stuck", {})
          os.execute("sleep 5")
          return "done"
        end }
        return luagent.config{ background_tasks = { enabled = true }, tools = { stuck } } ]=])
      local r = app:enqueue_tool("stuck", {})
      assert(H.await_kind(app, "stuck", r.task_id, 5), "the task never started")
      local t0 = H.now()
      local all = app:close{ grace_s = 0.5 }
      local f = assert(io.open(arg[1], "w"))
      f:write(string.format("all=%s took=%.3f status=%s\n", tostring(all), H.now() - t0,
        app:get(r.task_id).status))
      f:close()
    ]], out)
    local f = io.open(out)
    local report = f and f:read("*a") or ""
    if f then f:close() end
    H.rmdir(dir)
    assert.matches("exit=0", status, 1, true, err)
    assert.matches("all=false", report, 1, true, err)
    -- the task is still in its C call: it does not claim to have stopped (R-25)
    assert.matches("status=running", report, 1, true)
    local close_took = tonumber(report:match("took=([%d.]+)"))
    assert.is_true(close_took >= 0.45 and close_took < 2, report)
    assert.is_true(took < 4.5, "the process took " .. took .. " s to exit")
  end)
end)

describe("dispatcher: process exit", function()
  it("a process that never closes its apps still exits cleanly", function()
    local dir = H.tmpdir()
    local status, err = run_child(dir, [[
      for round = 1, 3 do
        local app = H.app([=[
          return luagent.config{ background_tasks = { enabled = true, global_concurrency = 4 },
                                 tools = { T.echo, T.nap } } ]=])
        local ids = {}
        for i = 1, 8 do ids[i] = app:enqueue_tool(i % 2 == 0 and "echo" or "nap", { s = 0.01 }).task_id end
        assert(app:wait(ids, { timeout_s = 10 }).done)
        app:enqueue_tool("nap", { s = 0.2 }) -- still running at exit
      end
      collectgarbage()
    ]])
    H.rmdir(dir)
    assert.matches("exit=0", status, 1, true, err)
  end)
end)

describe("dispatcher: JSON crossing (R-3)", function()
  local V = require "support.lua_bin"
  local it_int = V.integers and it or pending
  local it_noint = V.integers and pending or it

  it_int("integers stay integers and floats round-trip through a task", function()
    local app = closing(H.app([[
      return luagent.config{ background_tasks = { enabled = true }, tools = { T.echo } } ]]))
    local args = { big = math.maxinteger, small = math.mininteger, f = 0.1, third = 1 / 3,
                   two = 2.0, list = { 1, 2.5, "x" }, nested = { n = 2 ^ 53 } }
    local r = app:enqueue_tool("echo", args)
    assert.equal(math.maxinteger, r.args.big)
    local w = app:wait({ r.task_id }, { timeout_s = 5 })
    local res = w.tasks[1].result
    assert.equal(math.maxinteger, res.big)
    assert.equal("integer", math.type(res.big))
    assert.equal(math.mininteger, res.small)
    assert.equal("integer", math.type(res.small))
    assert.equal(0.1, res.f)
    assert.equal("float", math.type(res.f))
    assert.equal(1 / 3, res.third)
    assert.equal(2, res.two)
    assert.same({ 1, 2.5, "x" }, res.list)
    assert.equal("integer", math.type(res.list[1]))
    assert.equal(2 ^ 53, res.nested.n)
  end)

  -- without an integer subtype: exact below 2^53, floats as they were, and
  -- a number a double cannot say exactly never made up (README, "Lua versions")
  it_noint("numbers round-trip through a task; integers exact up to 2^53", function()
    local app = closing(H.app([[
      return luagent.config{ background_tasks = { enabled = true }, tools = { T.echo } } ]]))
    local args = { big = 2 ^ 53 - 1, small = -(2 ^ 53 - 1), f = 0.1, third = 1 / 3,
                   two = 2.0, list = { 1, 2.5, "x" }, nested = { n = 2 ^ 60 } }
    local r = app:enqueue_tool("echo", args)
    local w = app:wait({ r.task_id }, { timeout_s = 5 })
    assert.equal("completed", w.tasks[1].status)
    local res = w.tasks[1].result
    assert.equal(2 ^ 53 - 1, res.big)
    assert.equal(-(2 ^ 53 - 1), res.small)
    assert.equal(0.1, res.f)
    assert.equal(1 / 3, res.third)
    assert.equal(2, res.two)
    assert.same({ 1, 2.5, "x" }, res.list)
    assert.equal(2 ^ 60, res.nested.n)
  end)
end)

describe("dispatcher: ids and events", function()
  local app
  before_each(function()
    app = H.app([[
      local flaky = luagent.tool{ name = "flaky", handler = function(args, ctx)
        if ctx.attempt == 1 then error("first attempt fails") end
        return ctx.attempt
      end }
      return luagent.config{ background_tasks = { enabled = true, global_concurrency = 4, retry_backoff_s = 0.01 },
                             tools = { T.echo, T.block, flaky } } ]])
  end)
  after_each(function() app:close() end)

  it("task ids are unique and sort by creation time", function()
    local ids, seen = {}, {}
    for i = 1, 200 do
      local id = app:enqueue_tool("echo", { i = i }).task_id
      assert.matches("^[A-Za-z0-9_-]+$", id)
      assert.is_nil(seen[id])
      seen[id] = true
      ids[i] = id
    end
    local sorted = { (table.unpack or unpack)(ids) }
    table.sort(sorted)
    assert.same(ids, sorted)
    assert.is_true(app:run_until_idle{ timeout_s = 10 }.idle)
    assert.equal(200, #app:list{ status = "completed" })
    -- app:list returns them in creation order too
    assert.same(ids, H.ids(app:list{ limit = 200 }))
  end)

  it("a cursor older than the event ring yields a gap event first", function()
    local small = closing(H.app([[
      return luagent.config{ background_tasks = { enabled = true }, event_buffer = 16, tools = { T.echo } } ]]))
    local ids = {}
    for i = 1, 10 do ids[i] = small:enqueue_tool("echo", { i = i }).task_id end
    small:wait(ids, { timeout_s = 5 })
    small:run_until_idle{ timeout_s = 5 }
    local evs = small:events{ since = 0 }
    assert.equal("gap", evs[1].kind)
    assert.equal(14, evs[1].payload.missed) -- 30 events, the last 16 kept
    assert.equal(15, evs[1].payload.next_seq)
    assert.equal(15, evs[2].seq)
    assert.equal(30, evs[#evs].seq)
    local streamed = {}
    for ev in small:run_stream_until_idle() do streamed[#streamed + 1] = ev end
    assert.equal("gap", streamed[1].kind)
    assert.equal(17, #streamed)
    for i = 3, #streamed do assert.equal(streamed[i - 1].seq + 1, streamed[i].seq) end
    local again = 0
    for _ in small:run_stream_until_idle() do again = again + 1 end
    assert.equal(0, again)
  end)

  it("the merged stream has strictly increasing seq and each start precedes its finish", function()
    local ids = {}
    for i = 1, 10 do ids[#ids + 1] = app:enqueue_tool("echo", { i = i }).task_id end
    for i = 1, 3 do ids[#ids + 1] = app:enqueue_tool("flaky", {}, { retries = 1 }).task_id end
    local b = app:enqueue_tool("block", { tag = "b" })
    assert.is_truthy(H.await_kind(app, "blocking", b.task_id))
    local q = {}
    for i = 1, 3 do q[i] = app:enqueue_tool("block", {}, { agent_id = "other" }).task_id end
    app:cancel(b.task_id)
    for _, id in ipairs(q) do app:cancel(id) end
    assert.is_true(app:wait(ids, { timeout_s = 10 }).done)
    app:run_until_idle{ timeout_s = 5 }
    local events = {}
    -- since = 0: H.await_kind above already moved the app's stream cursor
    for ev in app:run_stream_until_idle{ since = 0 } do events[#events + 1] = ev end
    assert.is_true(#events > 40)
    local last = 0
    local open, finished, kinds = {}, {}, {}
    for _, ev in ipairs(events) do
      assert.is_true(ev.seq > last)
      last = ev.seq
      assert.is_string(ev.ts)
      kinds[ev.kind] = true
      if ev.kind == "task_started" then
        assert.is_nil(open[ev.task_id], "started twice without an end")
        assert.is_nil(finished[ev.task_id], "started after it finished")
        open[ev.task_id] = true
      elseif ev.kind == "task_retry" then
        assert.is_true(open[ev.task_id])
        open[ev.task_id] = nil
      elseif ev.kind == "task_finished" then
        finished[ev.task_id] = true
        open[ev.task_id] = nil
      end
    end
    assert.same({}, open)
    assert.is_true(kinds.task_retry)
    assert.is_true(kinds.cancel_requested)
    for _, id in ipairs(ids) do assert.is_true(finished[id]) end
    for _, r in ipairs(app:list{}) do
      local started = H.of_kind(events, "task_started", r.task_id)
      if r.started_at then
        assert.equal(r.attempts, #started)
      else
        assert.equal(0, #started)
      end
    end
  end)
end)

describe("dispatcher: finished tasks leave memory (keep_finished_s)", function()
  it("forgets a finished task once keep_finished_s has passed, and keeps running ones", function()
    local app = closing(H.app([[
return luagent.config{ background_tasks = { enabled = true, keep_finished_s = 1 }, tools = { T.echo, T.block } } ]]))
    local first = app:enqueue_tool("echo", { n = 1 })
    assert.equal("completed", app:wait({ first.task_id }).tasks[1].status)
    local held = app:enqueue_tool("block", {})
    -- a task leaves memory when tasks end or are enqueued after its ttl
    local t0 = H.now()
    while app:get(first.task_id) and H.now() - t0 < 8 do
      app:wait({ app:enqueue_tool("echo", {}).task_id })
    end
    assert.is_nil(app:get(first.task_id))
    assert.equal("running", app:get(held.task_id).status)
  end)

  it("rejects a bad keep_finished_s and accepts false (keep forever)", function()
    for _, bad in ipairs({ "-1", "0.5", "'day'" }) do
      local src = ([[
return luagent.config{ background_tasks = { enabled = true, keep_finished_s = BAD }, tools = { T.echo } } ]]):gsub("BAD", bad)
      local ok, err = pcall(H.app, src)
      assert.is_false(ok)
      assert.matches("keep_finished_s", tostring(err), 1, true)
    end
    local app = closing(H.app([[
return luagent.config{ background_tasks = { enabled = true, keep_finished_s = false }, tools = { T.echo } } ]]))
    local r = app:enqueue_tool("echo", {})
    app:wait({ r.task_id })
    assert.equal("completed", app:get(r.task_id).status)
  end)
end)
