-- File store, acceptance: close{ mode = "suspend" } (R-25a) keeps queued
-- tasks queued and puts running ones back to queued without spending an
-- attempt; a new app on the file finishes them all, each in one attempt.
-- Handlers block until a flag file exists, so the first app only suspends.
local H = require "support.dispatch_helpers"
local S = require "support.store_helpers"

local function body(db, flag, slots)
  return string.format([[
local function fast() local f = io.open(%q) if f then f:close() return true end end
local work = luagent.tool{ name = "work", handler = function(args, ctx)
  if not fast() then ctx:emit("parked", { i = args.i }); ctx:sleep(60) end
  return { i = args.i, attempt = ctx.attempt }
end }
-- waits on a child of its own (suspended while it waits)
local fan = luagent.tool{ name = "fan", handler = function(args, ctx)
  local c = ctx:enqueue_tool("work", { i = 100 + args.i })
  local w = ctx:wait({ c.task_id }, { timeout_s = 60 })
  return { i = args.i, child = w.tasks[1].result.i }
end }
return luagent.config{
  background_tasks = { enabled = true, global_concurrency = %d, per_agent_concurrency = 3 },
  store = { %s },
  tools = { work, fan },
} ]], flag, slots or 3, H.store_ref(db))
end

for _, engine in ipairs(H.store_engines) do
describe("store (" .. engine .. "): close{ mode = \"suspend\" } (R-25a)", function()
  local dir, db, flag
  H.each_store(function(d, path)
    dir, db = d, path
    flag = dir .. "/fast"
  end, engine)

  it("a new app finishes queued and running tasks without spending extra attempts", function()
    local app = H.app(body(db, flag))
    local ids = {}
    -- the waiting parent first, so it and its child are among the running
    local parent = app:enqueue_tool("fan", { i = 1 }, { retries = 0 })
    ids[#ids + 1] = parent.task_id
    for i = 1, 7 do
      ids[#ids + 1] = app:enqueue_tool("work", { i = i }, { retries = i % 2 == 0 and 1 or 0 }).task_id
    end
    -- three slots: the parent lends its slot while it waits, so its child
    -- and two (then three) `work` tasks run; wait until three are parked
    local parked = 0
    for ev in app:run_stream_until_idle{ timeout_s = 10 } do
      if ev.kind == "parked" then parked = parked + 1 end
      if parked == 3 then break end
    end
    assert.equal(3, parked)
    local running = app:list{ status = "running" }
    assert.is_true(#running >= 3)
    assert.is_true(app:close{ mode = "suspend" })

    local evs = H.all_events(app)
    local suspended = {}
    for _, ev in ipairs(H.of_kind(evs, "task_suspended")) do suspended[ev.task_id] = true end
    for _, r in ipairs(running) do assert.is_true(suspended[r.task_id], r.task_id) end

    if engine == "postgresql" then
      -- in the database: everything queued, no attempt spent, no start time
      assert.same({ "queued" }, S.sql(db, "SELECT DISTINCT status FROM tasks;"))
      assert.same({ "0" }, S.sql(db,
        "SELECT count(*) FROM tasks WHERE (record::json->>'attempts')::int != 0" ..
        " OR record::json->>'started_at' IS NOT NULL;"))
    elseif S.have_sqlite3() then
      -- in the file: everything queued, no attempt spent, no start time
      assert.same({ "queued" }, S.sql(db, "SELECT DISTINCT status FROM tasks;"))
      assert.same({ "0" }, S.sql(db,
        "SELECT count(*) FROM tasks WHERE json_extract(record, '$.attempts') != 0" ..
        " OR json_extract(record, '$.started_at') IS NOT NULL;"))
    end

    H.write(flag, "go")
    local app2 = H.app(body(db, flag))
    local r = app2:run_until_idle{ timeout_s = 20 }
    assert.is_true(r.idle)
    assert.equal(0, r.failed)
    for _, id in ipairs(ids) do
      local rec = app2:get(id)
      assert.equal("completed", rec.status)
      assert.equal(1, rec.attempts, id)
      assert.is_nil(rec.error)
    end
    for _, rec in ipairs(app2:list()) do
      assert.equal("completed", rec.status)
      assert.equal(1, rec.attempts)
      if rec.tool == "work" then assert.equal(1, rec.result.attempt) end
    end
    assert.equal(101, app2:get(parent.task_id).result.child)
    -- recovery saw nothing running: nothing re-queued, nothing lost
    local evs2 = H.all_events(app2)
    assert.equal(0, #H.of_kind(evs2, "task_recovered"))
    for _, ev in ipairs(H.of_kind(evs2, "task_started")) do
      if ev.seq > evs[#evs].seq then assert.equal(1, ev.payload.attempt) end
    end
    app2:close()
  end)

  it("queued tasks come back in order: priority, then first in first out (R-40)", function()
    local app = H.app(body(db, flag, 1))
    local first = app:enqueue_tool("work", { i = 0 }, { priority = 10 })
    assert.is_true(H.await_kind(app, "parked", first.task_id) ~= nil)
    for _, spec in ipairs({ { 1, 1 }, { 2, 5 }, { 3, 1 }, { 4, 5 }, { 5, 0 }, { 6, 5 } }) do
      app:enqueue_tool("work", { i = spec[1] }, { priority = spec[2] })
    end
    app:close{ mode = "suspend" }
    H.write(flag, "go")
    local app2 = H.app(body(db, flag, 1))
    local order = {}
    for ev in app2:run_stream_until_idle{ timeout_s = 10 } do
      if ev.kind == "task_started" then order[#order + 1] = app2:get(ev.task_id).args.i end
    end
    assert.same({ 0, 2, 4, 6, 1, 3, 5 }, order)
    app2:close()
  end)

  it("suspending again and again spends no attempt", function()
    local app = H.app(body(db, flag))
    local t = app:enqueue_tool("work", { i = 1 }, { retries = 0 })
    assert.is_true(H.await_kind(app, "parked", t.task_id) ~= nil)
    app:close()
    for _ = 1, 2 do
      local again = H.app(body(db, flag))
      -- the stream starts at load (R-29): earlier apps' events are not in it
      local kinds = {}
      for ev in again:run_stream_until_idle{ timeout_s = 10 } do
        kinds[#kinds + 1] = ev.kind
        if ev.kind == "parked" then break end
      end
      assert.same({ "task_started", "parked" }, kinds)
      again:close{ mode = "suspend" }
    end
    H.write(flag, "go")
    local last = H.app(body(db, flag))
    assert.is_true(last:wait({ t.task_id }, { timeout_s = 10 }).done)
    local rec = last:get(t.task_id)
    assert.equal("completed", rec.status)
    assert.equal(1, rec.attempts)
    last:close()
  end)
end)
end
