-- File store, acceptance: what one app writes a new app on the same file
-- reads back identically (records, results, events, threads; R-26), file
-- modes, durability and retention (README). The same on a PostgreSQL store,
-- but for what only a file has (modes, SQLite's synchronous).
local closing = require "support.closing"
local H = require "support.dispatch_helpers"
local S = require "support.store_helpers"

-- A config on `db`; `store_extra` is Lua text added to the store table.
local function body(db, store_extra)
  return string.format([[
local boom = luagent.tool{ name = "boom", handler = function() error("kaput") end }
local nothing = luagent.tool{ name = "nothing", handler = function() end }
local shapes = luagent.tool{ name = "shapes", handler = function(args)
  return { list = luagent.json.array{ 1, 2.5, "x" }, empty_list = luagent.json.empty_array,
           empty_object = {}, big = math.maxinteger, nested = { deep = { yes = true } } }
end }
local noisy = luagent.tool{ name = "noisy", handler = function(args, ctx)
  ctx:emit("progress", { n = args.n, list = luagent.json.array{ 1, 2 } })
  return args.n
end }
return luagent.config{
  model = luagent.static_model{ responses = { { text = "summary done",
    usage = { prompt_tokens = 3, completion_tokens = 2, total_tokens = 5 } } } },
  background_tasks = { enabled = true, global_concurrency = 4 },
  store = { %s, %s },
  agents = {
    luagent.agent{ id = "helper", instructions = "Answer." },
    -- echoes the last user message, so each thread's history is its own
    luagent.agent{ id = "chatty", instructions = "Chat.",
      model = luagent.function_model(function(req)
        return { text = "re: " .. req.messages[#req.messages].content }
      end) },
  },
  tools = { T.echo, T.whoami, T.block, boom, nothing, shapes, noisy },
} ]], H.store_ref(db), store_extra or "")
end

local function open(db, store_extra)
  return H.app(body(db, store_extra))
end

for _, engine in ipairs(H.store_engines) do
describe("store (" .. engine .. "): round trip", function()
  local dir, db
  H.each_store(function(d, path) dir, db = d, path end, engine)
  -- what only a file has
  local it_file = engine == "sqlite" and it or function() end

  it("a new app reads back records, results, events and threads, and continues the seq", function()
    local app = open(db)
    local echo = app:enqueue_tool("echo", { s = "a", n = 1, f = 0.25, list = { 1, 2 } },
      { priority = 7, metadata = { owner = "ana", tags = { "x", "y" } }, thread_id = "th" })
    local shapes = app:enqueue_tool("shapes", {}, { agent_id = "assets" })
    local boom = app:enqueue_tool("boom", {}, { retries = 0 })
    local nothing = app:enqueue_tool("nothing", {})
    local noisy = app:enqueue_tool("noisy", { n = 42 })
    local agent = app:enqueue_background("helper", "Summarize Q3.",
      { thread_id = "t-bg", metadata = { m = 1 }, priority = -2, timeout_s = 30 })
    local blocked = app:enqueue_tool("block", { tag = "b" })
    local ids = { echo.task_id, shapes.task_id, boom.task_id, nothing.task_id, noisy.task_id,
                  agent.task_id }
    local w = app:wait(ids, { timeout_s = 20 })
    assert.is_true(w.done)
    assert.is_true(H.await_kind(app, "blocking", blocked.task_id) ~= nil)
    app:cancel(blocked.task_id)
    ids[#ids + 1] = blocked.task_id

    local r1 = app:chat("chatty", "first on t1", { thread_id = "t1" })
    local r2 = app:chat("chatty", "only on t2", { thread_id = "t2" })
    local r3 = app:chat("chatty", "second on t1", { thread_id = "t1" })
    assert.same({ "completed", "completed", "completed" }, { r1.status, r2.status, r3.status })

    local before = {}
    for _, id in ipairs(ids) do before[id] = app:get(id) end
    -- what the records say, so a lost field cannot compare equal by accident
    assert.equal("completed", before[echo.task_id].status)
    assert.equal(7, before[echo.task_id].priority)
    assert.same({ owner = "ana", tags = { "x", "y" } }, before[echo.task_id].metadata)
    assert.equal("failed", before[boom.task_id].status)
    assert.equal("runtime", before[boom.task_id].error.kind)
    assert.matches("kaput", before[boom.task_id].error.message)
    assert.equal("completed", before[agent.task_id].status)
    assert.equal("summary done", before[agent.task_id].result.final)
    assert.equal(5, before[agent.task_id].usage.total_tokens)
    assert.equal("cancelled", before[blocked.task_id].status)
    assert.equal(math.maxinteger, before[shapes.task_id].result.big)
    local list_before = app:list()
    local events_before = H.all_events(app)
    local t1_before, t2_before = app:thread("chatty", "t1"), app:thread("chatty", "t2")
    assert.equal(4, #t1_before)
    assert.equal(2, #t2_before)
    assert.equal("only on t2", t2_before[1].content)
    assert.is_true(app:close())

    local app2 = open(db)
    for _, id in ipairs(ids) do
      assert.equal(S.canon(before[id]), S.canon(app2:get(id)))
    end
    assert.same(list_before, app2:list())
    local events_after = H.all_events(app2)
    assert.equal(#events_before, #events_after)
    for i, ev in ipairs(events_before) do
      local ev2 = events_after[i]
      assert.equal(ev.seq, ev2.seq)
      assert.equal(ev.kind, ev2.kind)
      assert.equal(S.canon(ev.payload), S.canon(ev2.payload))
      assert.equal(S.canon(ev), S.canon(ev2))
    end
    assert.same(t1_before, app2:thread("chatty", "t1"))
    assert.same(t2_before, app2:thread("chatty", "t2"))

    -- new events go on after the highest stored seq, without a hole
    local last = events_before[#events_before].seq
    local more = app2:enqueue_tool("echo", { again = true })
    app2:wait({ more.task_id })
    local fresh = app2:events{ since = last }
    assert.is_true(#fresh >= 3)
    for i, ev in ipairs(fresh) do assert.equal(last + i, ev.seq) end
    assert.equal(more.task_id, fresh[1].task_id)
    -- and a chat continues the stored thread
    app2:chat("chatty", "third on t1", { thread_id = "t1" })
    assert.equal(6, #app2:thread("chatty", "t1"))
    assert.equal(2, #app2:thread("chatty", "t2"))
    local all2 = H.all_events(app2)
    app2:close()

    -- a third app sees the second one's work too
    local app3 = open(db)
    assert.equal("completed", app3:get(more.task_id).status)
    assert.equal(6, #app3:thread("chatty", "t1"))
    local all3 = H.all_events(app3)
    assert.equal(#all2, #all3)
    assert.equal(all2[#all2].seq, all3[#all3].seq)
    app3:close()
  end)

  it("a finished record never changes across restarts (R-26)", function()
    local app = open(db)
    local a = app:enqueue_tool("shapes", {}, { metadata = { k = "v" }, priority = 2 })
    local b = app:enqueue_tool("boom", {})
    app:wait({ a.task_id, b.task_id })
    local ra, rb = app:get(a.task_id), app:get(b.task_id)
    app:close()
    for _ = 1, 2 do
      local again = open(db)
      assert.same(ra, again:get(a.task_id))
      assert.same(rb, again:get(b.task_id))
      -- other work in between leaves them alone
      again:wait({ again:enqueue_tool("echo", {}).task_id })
      assert.same(ra, again:get(a.task_id))
      again:close()
    end
  end)

  it("close defaults to suspend with a file store, and the store is released", function()
    local app = open(db)
    local t = app:enqueue_tool("block", { tag = "x" })
    assert.is_true(H.await_kind(app, "blocking", t.task_id) ~= nil)
    assert.is_true(app:close())
    local app2 = open(db)
    local rec = app2:get(t.task_id)
    assert.is_true(rec.status == "queued" or rec.status == "running")
    app2:close{ mode = "cancel" }
    local app3 = open(db)
    assert.equal("cancelled", app3:get(t.task_id).status)
    app3:close()
  end)

  it_file("creates the database, its -wal and -shm files and the lock file mode 0600", function()
    local app = open(db)
    app:wait({ app:enqueue_tool("echo", {}).task_id })
    for _, f in ipairs({ db, db .. "-wal", db .. "-shm", db .. ".lock" }) do
      assert.equal("600", S.mode(f), f)
    end
    app:close()
    -- the last connection checkpoints the log away
    assert.is_false(S.exists(db .. "-wal"))
  end)

  it_file("durability = \"full\" sets synchronous=FULL on the write connection, normal NORMAL", function()
    local app = open(db, 'durability = "full"')
    local info = app._core:store_info()
    assert.equal(2, info.synchronous)
    assert.equal("wal", info.journal_mode)
    assert.equal(db, info.path)
    app:close()
    local app2 = open(db)
    assert.equal(1, app2._core:store_info().synchronous)
    app2:close()
    local mem = H.app([[ return luagent.config{ background_tasks = { enabled = true } } ]])
    assert.is_nil(mem._core:store_info())
    mem:close()
  end)

  it("retention prunes finished tasks older than completed_s / failed_s, and their events", function()
    if engine == "sqlite" and not S.have_sqlite3() then pending("needs the sqlite3 command") return end
    local app = open(db)
    local ok1 = app:enqueue_tool("noisy", { n = 1 })
    local bad = app:enqueue_tool("boom", {})
    local ok2 = app:enqueue_tool("echo", {})
    app:wait({ ok1.task_id, bad.task_id, ok2.task_id })
    local blocked = app:enqueue_tool("block", { tag = "r" })
    assert.is_true(H.await_kind(app, "blocking", blocked.task_id) ~= nil)
    app:close() -- suspend: `blocked` stays queued
    -- age ok1 and bad by two hours; ok2 stays fresh
    S.sql(db, string.format(
      "UPDATE tasks SET finished_ms = finished_ms - 7200000 WHERE task_id IN ('%s', '%s');",
      ok1.task_id, bad.task_id))

    -- completed older than an hour go; failed ones are kept for three hours
    local app2 = open(db, "retention = { completed_s = 3600, failed_s = 10800 }")
    assert.is_nil(app2:get(ok1.task_id))
    assert.equal("failed", app2:get(bad.task_id).status)
    assert.equal("completed", app2:get(ok2.task_id).status)
    assert.is_not_nil(app2:get(blocked.task_id))
    local evs = H.all_events(app2)
    assert.equal(0, #H.of_kind(evs, "progress", ok1.task_id))
    assert.is_true(#H.of_kind(evs, "task_enqueued", ok2.task_id) == 1)
    assert.is_true(#H.of_kind(evs, "task_finished", bad.task_id) == 1)
    app2:close{ mode = "cancel" }

    local app3 = open(db, "retention = { failed_s = 3600 }")
    assert.is_nil(app3:get(bad.task_id))
    assert.equal(0, #H.of_kind(H.all_events(app3), "task_finished", bad.task_id))
    assert.equal("completed", app3:get(ok2.task_id).status)
    -- cancelled counts as failed for retention, but this one is fresh
    assert.equal("cancelled", app3:get(blocked.task_id).status)
    app3:close()
  end)
end)
end

describe("store: a task that left memory", function()
  it("is still found by app:get, read back from the file", function()
    local dir = H.tmpdir()
    local app = closing(H.app([[
return luagent.config{ background_tasks = { enabled = true, keep_finished_s = 1 }, tools = { T.echo } } ]],
      { store = { path = dir .. "/evict.db" } }))
    local first = app:enqueue_tool("echo", { n = 1 })
    local before = app:wait({ first.task_id }).tasks[1]
    assert.equal("completed", before.status)
    local t0 = H.now()
    while #app:list() > 0 and app:list()[1].task_id == first.task_id and H.now() - t0 < 8 do
      app:wait({ app:enqueue_tool("echo", {}).task_id })
    end
    local found = false
    for _, r in ipairs(app:list()) do found = found or r.task_id == first.task_id end
    assert.is_false(found, "the task should have left memory")
    local rec = app:get(first.task_id)
    assert.equal("completed", rec.status)
    assert.same({ n = 1 }, rec.result)
    assert.is_nil(rec.root_key)
    app:close()
    H.rmdir(dir)
  end)
end)
