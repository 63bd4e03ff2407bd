-- File store, acceptance: under load (4 workers, 1,000 short tasks, each
-- emitting an event) no write fails (no SQLITE_BUSY or other error escapes),
-- no task fails, and a new app reads back every event as one contiguous seq
-- range. The ring is small, so the stream reads old events back from the
-- file while the writer is busy.
local H = require "support.dispatch_helpers"

local TASKS = 1000

local function body(db)
  return string.format([[
local step = luagent.tool{ name = "step", handler = function(args, ctx)
  ctx:emit("progress", { i = args.i })
  return args.i * 2
end }
return luagent.config{
  background_tasks = { enabled = true, global_concurrency = 4, per_agent_concurrency = 4,
                       max_workers = 4, max_depth = 0, max_queue = 100000 },
  event_buffer = 64,
  store = { %s },
  tools = { step },
} ]], H.store_ref(db))
end

for _, engine in ipairs(H.store_engines) do
describe("store (" .. engine .. "): under load", function()
  local dir, db
  H.each_store(function(d, path) dir, db = d, path end, engine)

  it("1,000 tasks on 4 workers: nothing fails, every event is stored once, in order", function()
    local app = H.app(body(db))
    local ids = {}
    local streamed, last = 0, 0
    local function drain()
      -- reads what the small ring dropped back from the file, while workers write
      local page = app:events{ since = last, limit = 500 }
      for _, ev in ipairs(page) do
        assert.are_not.equal("gap", ev.kind)
        assert.equal(last + 1, ev.seq)
        last = ev.seq
        streamed = streamed + 1
      end
    end
    for i = 1, TASKS do
      ids[i] = app:enqueue_tool("step", { i = i }).task_id
      if i % 50 == 0 then drain() end
    end
    for ev in app:run_stream_until_idle{ since = last, timeout_s = 60 } do
      assert.are_not.equal("gap", ev.kind)
      assert.equal(last + 1, ev.seq)
      last = ev.seq
      streamed = streamed + 1
    end
    local r = app:run_until_idle{ timeout_s = 60 }
    assert.is_true(r.idle)
    local w = app:wait(ids, { timeout_s = 60 })
    assert.is_true(w.done)
    for i, t in ipairs(w.tasks) do
      assert.equal("completed", t.status)
      assert.equal(2 * i, t.result)
    end
    assert.is_nil(app._core:store_info().error)
    local total = #H.all_events(app)
    assert.equal(total, streamed)
    assert.is_true(total >= 4 * TASKS)
    assert.is_true(app:close())

    local app2 = H.app(body(db))
    local evs = H.all_events(app2)
    assert.equal(total, #evs)
    local progress = {}
    for i, ev in ipairs(evs) do
      assert.equal(i, ev.seq)
      if ev.kind == "progress" then progress[ev.payload.i] = (progress[ev.payload.i] or 0) + 1 end
    end
    for i = 1, TASKS do assert.equal(1, progress[i]) end
    local recs = app2:list()
    assert.equal(TASKS, #recs)
    for _, rec in ipairs(recs) do assert.equal("completed", rec.status) end
    assert.is_nil(app2._core:store_info().error)
    app2:close()
  end)
end)
end
