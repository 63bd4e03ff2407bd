-- Batch enqueue (README, "Batches"): app:enqueue_tools{ {name, args, opts}, ... }
-- enqueues like that many app:enqueue_tool calls, under one lock and one
-- store commit, all or nothing.
local H = require "support.dispatch_helpers"
local S = require "support.store_helpers"
local closing = require "support.closing"
local luagent = require "luagent"

-- record fields that differ between any two tasks
local VOLATILE = { task_id = true, run_id = true, root_task_id = true, enqueued_at = true }

local function stable(rec)
  local out = {}
  for k, v in pairs(rec) do
    if not VOLATILE[k] then out[k] = H.copy(v) end
  end
  return out
end

local function enqueued_events(app)
  return H.of_kind(H.all_events(app), "task_enqueued")
end

local function gate_app(extra)
  -- one slot, held by a `block` task, so what a test enqueues stays queued
  return closing(H.app(string.format([[
    return luagent.config{ background_tasks = { enabled = true, global_concurrency = 1,
                                                max_workers = 1, max_depth = 0 %s },
                           tools = { T.echo, T.block } } ]], extra or "")))
end

local function hold_slot(app)
  local b = app:enqueue_tool("block", { tag = "gate" })
  assert.is_not_nil(H.await_kind(app, "blocking", b.task_id))
  return b
end

describe("app:enqueue_tools", function()
  it("gives the records single enqueues give, in the list's order", function()
    local app = gate_app()
    hold_slot(app)
    local entries = {
      { "echo", { v = 1 } },
      { "echo", { v = 2 }, { priority = 5, metadata = { tag = "x" }, timeout_s = 7 } },
      { "echo", { v = 3 }, { thread_id = "th", retries = 2, agent_id = "ops" } },
    }
    local singles = {}
    for i, e in ipairs(entries) do singles[i] = app:enqueue_tool(e[1], e[2], e[3]) end
    local recs = app:enqueue_tools(entries)
    assert.equal(#entries, #recs)
    for i = 1, #entries do
      assert.same(stable(app:get(singles[i].task_id)), stable(recs[i]))
      assert.same(stable(singles[i]), stable(app:get(recs[i].task_id)))
      assert.equal("queued", recs[i].status)
    end
    -- enqueue order: the batch's tasks follow the singles, in the list's order
    local listed = H.ids(app:list{ status = "queued" })
    local want = {}
    for i = 1, #entries do want[#want + 1] = singles[i].task_id end
    for i = 1, #entries do want[#want + 1] = recs[i].task_id end
    -- (queued tasks list by enqueue order)
    assert.same(want, listed)
  end)

  it("applies the call's options to every entry; an entry's own win", function()
    local app = gate_app()
    hold_slot(app)
    local recs = app:enqueue_tools({
      { "echo", { v = 1 } },
      { "echo", { v = 2 }, { priority = 9 } },
    }, { priority = 3, thread_id = "shared" })
    assert.equal(3, recs[1].priority)
    assert.equal(9, recs[2].priority)
    assert.equal("shared", app:get(recs[1].task_id).thread_id)
    assert.equal("shared", app:get(recs[2].task_id).thread_id)
  end)

  it("runs the tasks in the list's order, one task_enqueued event each, in order", function()
    local app = closing(H.app([[
      return luagent.config{ background_tasks = { enabled = true, global_concurrency = 1,
                                                  max_workers = 1, max_depth = 0 },
                             tools = { T.echo } } ]]))
    local since = app:stats().last_seq
    local entries = {}
    for i = 1, 20 do entries[i] = { "echo", { v = i } } end
    local recs = app:enqueue_tools(entries)
    local ids = H.ids(recs)
    local w = app:wait(ids, { timeout_s = 20 })
    assert.is_true(w.done)
    for i = 1, 20 do assert.equal(i, app:get(ids[i]).result.v) end
    local evs = app:events{ since = since, limit = 1000 }
    local queued, started = {}, {}
    for _, ev in ipairs(evs) do
      if ev.kind == "task_enqueued" then queued[#queued + 1] = ev.task_id end
      if ev.kind == "task_started" then started[#started + 1] = ev.task_id end
    end
    assert.same(ids, queued)
    assert.same(ids, started)
    -- every task_enqueued comes before the first task_started
    local first_start
    for i, ev in ipairs(evs) do
      if ev.kind == "task_started" and not first_start then first_start = i end
      if ev.kind == "task_enqueued" then assert.is_true(first_start == nil) end
    end
  end)

  it("an empty list enqueues nothing", function()
    local app = gate_app()
    assert.same({}, app:enqueue_tools({}))
    assert.equal(0, #app:list{})
  end)

  describe("all or nothing", function()
    local function nothing_enqueued(app, before_events)
      assert.equal(0, #app:list())
      assert.equal(before_events, #enqueued_events(app))
    end

    it("an unknown tool, bad arguments or a bad option name the entry", function()
      local app = gate_app()
      local cases = {
        { { { "echo", { v = 1 } }, { "nope", {} } }, "entry 2: unknown tool \"nope\"" },
        { { { "echo", { v = 1 } }, { "echo", { v = 2 } }, { "echo", 42 } }, "entry 3: " },
        { { { "echo", {} , { bogus = 1 } } }, "entry 1: unknown option \"bogus\"" },
        { { { "echo", {} }, { "echo", {}, { metadata = { [1] = function() end } } } }, "entry 2: " },
        { { { "echo", {} }, "echo" }, "entry 2: must be a table" },
      }
      for _, c in ipairs(cases) do
        local err = H.raises(app.enqueue_tools, app, c[1])
        assert.matches("app:enqueue_tools: " .. c[2], H.errmsg(err), 1, true)
        nothing_enqueued(app, 0)
      end
    end)

    it("a cap refuses the whole batch, naming the entry the singles would stop at", function()
      -- one task running, max_queue 3: singles would queue 3 and refuse the 4th
      local app = gate_app(", max_queue = 3")
      hold_slot(app)
      local n_events = #enqueued_events(app)
      local entries = {}
      for i = 1, 4 do entries[i] = { "echo", { v = i } } end
      local err = H.raises(app.enqueue_tools, app, entries)
      assert.equal("rejected", err.kind)
      assert.equal(4, err.index)
      assert.matches("entry 4: max_queue (3) reached", err.message, 1, true)
      assert.equal(1, #app:list())
      assert.equal(n_events, #enqueued_events(app))
      assert.equal(0, app:stats().queued)
      -- three fit
      entries[4] = nil
      assert.equal(3, #app:enqueue_tools(entries))
      assert.equal(3, app:stats().queued)
      local err2 = H.raises(app.enqueue_tool, app, "echo", {})
      assert.matches("max_queue", H.errmsg(err2), 1, true)
    end)

    it("counts the tasks single enqueues would have started before the cap", function()
      -- two free slots, max_queue 1: singles would start 2, queue 1, refuse the 4th
      local app = closing(H.app([[
        return luagent.config{ background_tasks = { enabled = true, global_concurrency = 2,
                                                    max_workers = 2, max_depth = 0, max_queue = 1 },
                               tools = { T.block } } ]]))
      local err = H.raises(app.enqueue_tools, app, { { "block", {} }, { "block", {} }, { "block", {} },
                                                     { "block", {} } })
      assert.equal(4, err.index)
      assert.equal(0, #app:list())
      local recs = app:enqueue_tools({ { "block", {} }, { "block", {} }, { "block", {} } })
      assert.equal(3, #recs)
      assert.equal(1, app:stats().queued)
      assert.equal(2, app:stats().running)
      -- as single enqueues: the next one is refused
      local err2 = H.raises(app.enqueue_tool, app, "block", {})
      assert.matches("max_queue", H.errmsg(err2), 1, true)
    end)

    it("per-agent backpressure counts the batch's earlier entries", function()
      local app = closing(H.app([[
        return luagent.config{ background_tasks = { enabled = true, global_concurrency = 4,
                                                    per_agent_concurrency = 2, backpressure = "reject" },
                               tools = { T.block } } ]]))
      local err = H.raises(app.enqueue_tools, app, {
        { "block", {}, { agent_id = "A" } }, { "block", {}, { agent_id = "B" } },
        { "block", {}, { agent_id = "A" } }, { "block", {}, { agent_id = "A" } },
      })
      assert.equal("rejected", err.kind)
      assert.equal(4, err.index)
      assert.matches("per_agent_concurrency", err.message, 1, true)
      assert.equal(0, #app:list())
      assert.equal(0, app:stats().running)
    end)
  end)

  describe("idempotency keys", function()
    it("a key repeated inside the batch names one task, enqueued once", function()
      local app = gate_app()
      hold_slot(app)
      local before = #enqueued_events(app)
      local recs = app:enqueue_tools({
        { "echo", { v = 1 }, { idempotency_key = "k" } },
        { "echo", { v = 2 } },
        { "echo", { v = 1 }, { idempotency_key = "k" } },
      })
      assert.equal(recs[1].task_id, recs[3].task_id)
      assert.are_not.equal(recs[1].task_id, recs[2].task_id)
      assert.equal(before + 2, #enqueued_events(app))
      -- and a key an earlier single enqueue used names that task
      local again = app:enqueue_tools({ { "echo", { v = 1 }, { idempotency_key = "k" } } })
      assert.equal(recs[1].task_id, again[1].task_id)
      local single = app:enqueue_tool("echo", { v = 1 }, { idempotency_key = "k" })
      assert.equal(recs[1].task_id, single.task_id)
    end)

    it("a key reused for another request refuses the batch (conflict, with its index)", function()
      local app = gate_app()
      hold_slot(app)
      local first = app:enqueue_tool("echo", { v = 1 }, { idempotency_key = "k1" })
      local n = #app:list()
      local err = H.raises(app.enqueue_tools, app, {
        { "echo", { v = 1 }, { idempotency_key = "k2" } },
        { "echo", { v = 9 }, { idempotency_key = "k1" } },
      })
      assert.equal("conflict", err.kind)
      assert.equal(2, err.index)
      assert.matches(first.task_id, err.message, 1, true)
      assert.equal(n, #app:list())
      -- k2 was not kept: a new request under it is a new task
      local rec = app:enqueue_tool("echo", { v = 5 }, { idempotency_key = "k2" })
      assert.equal(5, app:get(rec.task_id).args.v)
      -- a conflict between two entries of one batch
      local err2 = H.raises(app.enqueue_tools, app, {
        { "echo", { v = 1 }, { idempotency_key = "k3" } },
        { "echo", { v = 2 }, { idempotency_key = "k3" } },
      })
      assert.equal("conflict", err2.kind)
      assert.equal(2, err2.index)
    end)
  end)
end)

describe("app:enqueue_tools with a file store", function()
  local dir, db
  H.each_store(function(d, path) dir, db = d, path end)

  -- handlers are slow only in a child started with LG_SLOW=1
  local function write_config()
    local path = dir .. "/agents.lua"
    H.write(path, string.format([[
local luagent = require "luagent"
local slow = os.getenv("LG_SLOW") == "1"
return luagent.config{
  background_tasks = { enabled = true, global_concurrency = 1, max_workers = 1, max_depth = 0 },
  store = { %s, durability = "normal" },
  tools = {
    luagent.tool{ name = "work", handler = function(args, ctx)
      if slow then ctx:sleep(60) end
      return { b = args.b, i = args.i }
    end },
    luagent.tool{ name = "block", handler = function(_, ctx) ctx:sleep(60) end },
  },
} ]], H.store_ref(db)))
    return path
  end

  it("returns once the whole batch is committed, in one transaction", function()
    local cfg = write_config()
    local app = closing(luagent.load(cfg))
    local b = app:enqueue_tool("block", {})
    H.await_kind(app, "task_started", b.task_id)
    -- a durable enqueue: everything queued before it is committed too
    app:enqueue_tool("work", { b = 0, i = 0 })
    local c0 = app:store_info().commits
    local entries = {}
    for i = 1, 50 do entries[i] = { "work", { b = 1, i = i } } end
    local recs = app:enqueue_tools(entries)
    assert.equal(c0 + 1, app:store_info().commits)
    app:close{ mode = "suspend" }
    local app2 = closing(luagent.load(cfg))
    for i = 1, 50 do
      local r = app2:get(recs[i].task_id)
      assert.equal(i, r.args.i)
    end
  end)

  it("kill -9: every acknowledged batch is stored whole, no batch in part", function()
    local cfg = write_config()
    local B, K = 25, 3
    local child = S.spawn(dir, string.format([[
local luagent = require "luagent"
local app = luagent.load(%q)
for b = 1, 1000 do
  local entries = {}
  for i = 1, %d do entries[i] = { "work", { b = b, i = i } } end
  local recs = app:enqueue_tools(entries)
  print("batch " .. b .. " " .. recs[1].task_id)
end
]], cfg, B), { LG_SLOW = "1" })
    local acked = 0
    while acked < K do
      local l = S.line(child)
      assert.is_truthy(l and l:match("^batch "), tostring(l) .. "\n" .. S.read(child.err_path))
      acked = acked + 1
    end
    for _, l in ipairs(S.kill(child)) do
      if l:match("^batch ") then acked = acked + 1 end
    end
    local app = closing(luagent.load(cfg))
    local per = {}
    for _, r in ipairs(app:list()) do
      per[r.args.b] = (per[r.args.b] or 0) + 1
    end
    for b = 1, acked do assert.equal(B, per[b], "batch " .. b) end
    for b, n in pairs(per) do
      assert.is_true(b <= acked + 1, "batch " .. b .. " was never started")
      assert.equal(B, n, "batch " .. b .. " stored in part")
    end
    app:close{ mode = "cancel" }
  end)
end)
