-- Dispatcher acceptance: slot lending (R-27) and depth limits (R-28).
local closing = require "support.closing"
local H = require "support.dispatch_helpers"

local TREE = [[
-- level < 2 enqueues two children one level down and waits for both.
local tree = luagent.tool{ name = "tree", handler = function(args, ctx)
  if args.level >= 2 then return { leaves = 1, depth = ctx.depth } end
  local ids = {}
  for i = 1, 2 do ids[i] = ctx:enqueue_tool("tree", { level = args.level + 1 }).task_id end
  local w = ctx:wait(ids, { timeout_s = 20 })
  if not w.done then error("children did not finish") end
  local n = 0
  for _, t in ipairs(w.tasks) do
    if t.status ~= "completed" then error("child " .. t.task_id .. " " .. t.status) end
    n = n + t.result.leaves
  end
  return { leaves = n, depth = ctx.depth }
end }
]]

local function run_tree(gc)
  local app = closing(H.app(TREE .. string.format([[
    return luagent.config{ background_tasks = { enabled = true, global_concurrency = %d, max_depth = 2 },
                           tools = { tree } } ]], gc)))
  local root = app:enqueue_tool("tree", { level = 0 })
  local peak = 0
  app:on("task_started", function()
    local s = app:stats()
    if s.running > peak then peak = s.running end
  end)
  local w = app:wait({ root.task_id }, { timeout_s = 20 })
  assert.is_true(w.done, "the tree did not finish (deadlock?)")
  assert.equal("completed", w.tasks[1].status, H.errmsg(w.tasks[1].error))
  assert.same({ leaves = 4, depth = 0 }, w.tasks[1].result)
  local all = app:list{}
  assert.equal(7, #all)
  local depths = {}
  for _, r in ipairs(all) do
    assert.equal("completed", r.status)
    depths[r.depth] = (depths[r.depth] or 0) + 1
    assert.equal(root.task_id, r.root_task_id)
  end
  assert.same({ [0] = 1, [1] = 2, [2] = 4 }, depths)
  local events = H.all_events(app)
  local waiting = H.of_kind(events, "task_waiting")
  local resumed = H.of_kind(events, "task_resumed")
  -- with one slot every parent must wait (and lend it); with two, a parent
  -- whose children finished before it called ctx:wait need not
  if gc == 1 then assert.equal(3, #waiting) else assert.is_true(#waiting >= 1 and #waiting <= 3) end
  assert.equal(#waiting, #resumed)
  for _, ev in ipairs(waiting) do
    local res = H.of_kind(events, "task_resumed", ev.task_id)[1]
    assert.is_truthy(res)
    assert.is_true(ev.seq < res.seq)
  end
  -- slot holders never passed the cap (waiting tasks lent theirs)
  local holding, max_holding = 0, 0
  for _, ev in ipairs(events) do
    if ev.kind == "task_started" or ev.kind == "task_resumed" then holding = holding + 1
    elseif ev.kind == "task_finished" or ev.kind == "task_waiting" then holding = holding - 1 end
    if holding > max_holding then max_holding = holding end
  end
  assert.equal(gc, max_holding)
  assert.is_true(peak <= gc) -- stats.running counts slot holders
  assert.equal(0, app:stats().lent_slots)
end

describe("dispatcher: slot lending (R-27)", function()
  it("a three-level tree of waits finishes with global_concurrency = 2", function() run_tree(2) end)
  it("a three-level tree of waits finishes with global_concurrency = 1", function() run_tree(1) end)

  it("a waiting task shows as waiting and lends its slot", function()
    local app = closing(H.app([[
      local waiter = luagent.tool{ name = "waiter", handler = function(args, ctx)
        local c = ctx:enqueue_tool("block", { tag = "child" })
        return ctx:wait({ c.task_id }, { timeout_s = 20 }).tasks[1].status
      end }
      return luagent.config{ background_tasks = { enabled = true, global_concurrency = 1 },
                             tools = { waiter, T.block } } ]]))
    local p = app:enqueue_tool("waiter", {})
    local ev = H.await_kind(app, "blocking")
    assert.is_truthy(ev, "the child never ran: the parent kept its slot")
    local s = app:stats()
    assert.equal(1, s.waiting)
    assert.equal(1, s.lent_slots)
    assert.equal(1, s.running)
    local rec = app:get(p.task_id)
    assert.equal("running", rec.status)
    assert.same({ ev.task_id }, rec.waiting_on)
    app:cancel(ev.task_id)
    local w = app:wait({ p.task_id }, { timeout_s = 5 })
    assert.equal("completed", w.tasks[1].status)
    assert.equal("cancelled", w.tasks[1].result)
    assert.is_nil(app:get(p.task_id).waiting_on)
  end)

  it("a lent slot goes to the task waited on before older unrelated work", function()
    local app = closing(H.app([[
      local parent = luagent.tool{ name = "parent", handler = function(args, ctx)
        -- holding its slot (ctx:sleep does not lend it) until the test has
        -- queued the unrelated task and written the flag file
        local deadline = os.time() + 5
        while not io.open(args.flag) and os.time() <= deadline do ctx:sleep(0.005) end
        local c = ctx:enqueue_tool("echo", { child = true })
        return ctx:wait({ c.task_id }, { timeout_s = 10 }).tasks[1].status
      end }
      return luagent.config{ background_tasks = { enabled = true, global_concurrency = 1 },
                             tools = { parent, T.echo } } ]]))
    local dir = H.tmpdir()
    local p = app:enqueue_tool("parent", { flag = dir .. "/go" })
    local u = app:enqueue_tool("echo", { unrelated = true }) -- queued: the parent holds the slot
    H.write(dir .. "/go", "")
    local w = app:wait({ p.task_id, u.task_id }, { timeout_s = 10 })
    H.rmdir(dir)
    assert.equal("completed", w.tasks[1].result)
    local order = {}
    for _, ev in ipairs(H.of_kind(H.all_events(app), "task_started")) do order[#order + 1] = ev.task_id end
    local child = app:list{ parent_task_id = p.task_id }[1].task_id
    assert.same({ p.task_id, child, u.task_id }, order)
  end)

  it("waiting on itself or an ancestor is refused", function()
    local app = closing(H.app([[
      local selfish = luagent.tool{ name = "selfish", handler = function(args, ctx)
        local ok, err = pcall(ctx.wait, ctx, { ctx.task_id }, { timeout_s = 1 })
        return { ok = ok, err = type(err) == "table" and err.message or tostring(err) }
      end }
      return luagent.config{ background_tasks = { enabled = true }, tools = { selfish } } ]]))
    local r = app:enqueue_tool("selfish", {})
    local w = app:wait({ r.task_id }, { timeout_s = 5 })
    assert.equal("completed", w.tasks[1].status)
    assert.is_false(w.tasks[1].result.ok)
    assert.matches("would wait on itself", w.tasks[1].result.err, 1, true)
  end)

  it("a spawn past max_depth raises {kind = \"limit\"}", function()
    local app = closing(H.app([[
      local deep = luagent.tool{ name = "deep", handler = function(args, ctx)
        local ok, err = pcall(ctx.enqueue_tool, ctx, "deep", {})
        if ok then return ctx:wait({ err.task_id }, { timeout_s = 10 }).tasks[1].result end
        return { depth = ctx.depth, kind = err.kind, message = err.message }
      end }
      return luagent.config{ background_tasks = { enabled = true, max_depth = 1 }, tools = { deep } } ]]))
    local r = app:enqueue_tool("deep", {})
    local w = app:wait({ r.task_id }, { timeout_s = 10 })
    assert.equal("completed", w.tasks[1].status, H.errmsg(w.tasks[1].error))
    assert.equal(1, w.tasks[1].result.depth)
    assert.equal("limit", w.tasks[1].result.kind)
    assert.matches("max_depth", w.tasks[1].result.message, 1, true)
  end)
end)

-- A parent of agent "A" (per_agent_concurrency = 1) waits on a child; an
-- unrelated task of agent A is queued meanwhile. When the child ends, that
-- task takes A's slot before the parent wakes, so the parent's wait is over
-- but it is queued for a slot back. (Had a descendant of the parent taken
-- the slot, the parent would resume at once: a lender gets its slot back.)
local RESUME = [[
local parent = luagent.tool{ name = "parent", handler = function(args, ctx)
  local child = ctx:enqueue_tool("block", { tag = "child" })
  ctx:emit("children", { child = child.task_id })
  ctx:wait({ child.task_id }, { timeout_s = 30 })
  ctx:emit("after_wait", {})
  return "resumed"
end }
return luagent.config{ background_tasks = { enabled = true, global_concurrency = 2, per_agent_concurrency = 1 },
                       tools = { parent, T.nap, T.block, T.echo } }
]]

-- Start the parent, let its child block, queue an unrelated task of agent
-- A, then end the child: the unrelated task holds A's slot.
local function parent_queued_for_its_slot(app, opts)
  local p = app:enqueue_tool("parent", {}, { agent_id = "A", timeout_s = opts and opts.timeout_s })
  local ch = H.await_kind(app, "children", p.task_id)
  assert.is_truthy(ch)
  assert.is_truthy(H.await_kind(app, "blocking", ch.payload.child))
  local other = app:enqueue_tool("block", { tag = "other" }, { agent_id = "A" })
  assert.equal("queued", app:get(other.task_id).status)
  assert.equal("cancelled", app:cancel(ch.payload.child).status)
  assert.is_truthy(H.await_kind(app, "blocking", other.task_id))
  return p, other
end

describe("dispatcher: stopping a task queued to take its slot back (R-27, R-25)", function()
  it("a timeout there does not leak the slot it was queued for", function()
    local app = closing(H.app(RESUME))
    local p, other = parent_queued_for_its_slot(app, { timeout_s = 0.5 })
    local w = app:wait({ p.task_id }, { timeout_s = 10 })
    assert.equal("timed_out", w.tasks[1].status)
    assert.same({}, H.of_kind(H.all_events(app), "after_wait", p.task_id))
    assert.same({}, H.of_kind(H.all_events(app), "task_resumed", p.task_id))
    app:cancel(other.task_id)
    local r = app:enqueue_tool("echo", { ok = true }, { agent_id = "A" })
    local w2 = app:wait({ r.task_id }, { timeout_s = 3 })
    assert.equal("completed", w2.tasks[1].status, "agent A's slot leaked")
    assert.is_true(app:run_until_idle{ timeout_s = 3 }.idle)
    local s = app:stats()
    assert.equal(0, s.running)
    assert.equal(0, s.waiting)
  end)

  it("a cancel there stops the task instead of resuming it", function()
    local app = closing(H.app(RESUME))
    local p, other = parent_queued_for_its_slot(app)
    local t0 = H.now()
    while app:get(p.task_id).waiting_on ~= nil and H.now() - t0 < 5 do end
    assert.is_nil(app:get(p.task_id).waiting_on)
    assert.equal("running", app:get(p.task_id).status)
    assert.equal("cancelled", app:cancel(p.task_id).status)
    local events = H.all_events(app)
    assert.same({}, H.of_kind(events, "after_wait", p.task_id))
    assert.same({}, H.of_kind(events, "task_resumed", p.task_id))
    app:cancel(other.task_id)
    assert.is_true(app:run_until_idle{ timeout_s = 3 }.idle)
    local r = app:enqueue_tool("echo", {}, { agent_id = "A" })
    assert.equal("completed", app:wait({ r.task_id }, { timeout_s = 3 }).tasks[1].status)
  end)

  it("a lender whose descendant holds the slot it needs resumes at once (wait timeouts hold)", function()
    local app = closing(H.app([[
local parent = luagent.tool{ name = "parent", handler = function(args, ctx)
  local child = ctx:enqueue_tool("block", { tag = "child" })
  local w = ctx:wait({ child.task_id }, { timeout_s = 0.2 })
  return { timed_out = w.timed_out, pending = #w.pending }
end }
return luagent.config{ background_tasks = { enabled = true, global_concurrency = 1 },
                       tools = { parent, T.block } } ]]))
    local p = app:enqueue_tool("parent", {})
    local w = app:wait({ p.task_id }, { timeout_s = 5 })
    assert.equal("completed", w.tasks[1].status)
    assert.same({ timed_out = true, pending = 1 }, w.tasks[1].result)
  end)
end)

describe("dispatcher: wait timeouts and fan-out limits", function()
  it("ctx:wait with a timeout returns timed_out with the pending ids and their progress", function()
    local app = closing(H.app([[
      local w = luagent.tool{ name = "w", handler = function(args, ctx)
        local c = ctx:enqueue_tool("block", { tag = "child" })
        return ctx:wait({ c.task_id }, { timeout_s = 0.05 })
      end }
      return luagent.config{ background_tasks = { enabled = true, global_concurrency = 2 },
                             tools = { w, T.block } } ]]))
    local r = app:enqueue_tool("w", {})
    local w = app:wait({ r.task_id }, { timeout_s = 5 })
    assert.equal("completed", w.tasks[1].status, H.errmsg(w.tasks[1].error))
    local v = w.tasks[1].result
    assert.is_false(v.done)
    assert.is_true(v.timed_out)
    local child = v.tasks[1]
    assert.same({ child.task_id }, v.pending)
    assert.equal("running", child.status)
    assert.is_number(child.progress.elapsed_s)
    assert.is_string(child.progress.last_event.kind)
    -- the parent ended: its running child was left running (only failures cascade)
    assert.equal("running", app:get(child.task_id).status)
    -- app:wait times out the same way, without raising
    local hw = app:wait({ child.task_id }, { timeout_s = 0.05 })
    assert.is_false(hw.done)
    assert.is_true(hw.timed_out)
    assert.same({ child.task_id }, hw.pending)
  end)

  it("max_descendants bounds what one tree may spawn", function()
    local app = closing(H.app([[
      local spawn = luagent.tool{ name = "spawn", handler = function(args, ctx)
        local n, err = 0, nil
        for i = 1, 5 do
          local ok, e = pcall(ctx.enqueue_tool, ctx, "echo", { i = i })
          if not ok then err = e; break end
          n = n + 1
        end
        return { n = n, kind = err and err.kind, message = err and err.message }
      end }
      return luagent.config{ background_tasks = { enabled = true, max_descendants = 3 },
                             tools = { spawn, T.echo } } ]]))
    local r = app:enqueue_tool("spawn", {})
    local w = app:wait({ r.task_id }, { timeout_s = 5 })
    assert.same(3, w.tasks[1].result.n)
    assert.equal("limit", w.tasks[1].result.kind)
    assert.matches("max_descendants", w.tasks[1].result.message, 1, true)
    -- another root has its own budget
    local r2 = app:enqueue_tool("spawn", {})
    assert.same(3, app:wait({ r2.task_id }, { timeout_s = 5 }).tasks[1].result.n)
  end)
end)

-- Wide trees of one agent: tasks of several depths share the agent's queue,
-- and a shallow task at its head must not hold back the deeper ones a
-- waiting task needs when threads are scarce.
describe("dispatcher: wide nested fan-out of one agent (R-27)", function()
  local WIDE = [[
local lvl
lvl = luagent.tool{ name = "lvl", input_schema = { type = "object", properties = {
  n = { type = "integer" }, w = { type = "integer" } } },
  handler = function(args, ctx)
    if args.n == 0 then return 0 end
    local ids = {}
    for i = 1, args.w do ids[i] = ctx:enqueue_tool("lvl", { n = args.n - 1, w = args.w }).task_id end
    local w = ctx:wait(ids, { timeout_s = 20 })
    local s = 1
    for _, t in ipairs(w.tasks) do s = s + (t.result or 1000000) end
    return s
  end }
return luagent.config{
  background_tasks = { enabled = true, global_concurrency = GC, max_descendants = 1000 },
  tools = { lvl } } ]]

  for _, c in ipairs({ { gc = 2, w = 8, want = 9 }, { gc = 1, w = 4, want = 5 } }) do
    it(string.format("three levels, fan-out %d, global_concurrency = %d, all finish", c.w, c.gc), function()
      local app = closing(H.app((WIDE:gsub("GC", tostring(c.gc)))))
      local r = app:enqueue_tool("lvl", { n = 2, w = c.w })
      local w = app:wait({ r.task_id }, { timeout_s = 15 })
      assert.equal("completed", w.tasks[1].status)
      assert.equal(c.want, w.tasks[1].result)
      local tasks = app:list()
      assert.equal(1 + c.w + c.w * c.w, #tasks)
      for _, t in ipairs(tasks) do assert.equal("completed", t.status) end
    end)
  end
end)
