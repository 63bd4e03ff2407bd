-- Background tasks, acceptance: the merged event stream of a two-level
-- fan-out (R-29, README): one totally ordered stream, lifecycle order per
-- task, ids on every event, and resuming from a cursor.
local closing = require "support.closing"
local B = require "support.bg_helpers"

-- sup (a background run) -> two mid agents (background delegate) -> each
-- two leaf tool tasks (background tool); every level waits for its children.
local CONFIG = [[
local leaf = luagent.tool{ name = "leaf", background = { enabled = true },
  input_schema = { type = "object", properties = { n = { type = "integer" } } },
  handler = function(args, ctx)
    ctx:emit("leaf_work", { summary = "leaf " .. args.n })
    return args.n
  end }
local function fan(tool, make_args)
  return luagent.function_model(function(req)
    local step = M.step(req)
    if step == 0 then return M.calls({ { tool, make_args(1) }, { tool, make_args(2) } }) end
    if step == 1 then return M.call("bg_wait", { task_ids = M.acks(req), timeout_s = 20 }) end
    local _, res = M.answered(req)
    local parts = {}
    for _, t in ipairs(res.value.tasks) do parts[#parts + 1] = tostring(t.result) end
    return { text = table.concat(parts, "+") }
  end)
end
return luagent.config{
  background_tasks = { enabled = true, global_concurrency = 3 },
  agents = {
    luagent.agent{ id = "sup", tools = { luagent.delegate{ agent = "mid", background = { enabled = true } } },
      model = fan("mid", function(i) return { prompt = "part " .. i } end) },
    luagent.agent{ id = "mid", tools = { leaf },
      model = fan("leaf", function(i) return { n = i } end) },
  },
}
]]

local TASK_KINDS = { task_enqueued = true, task_started = true, task_waiting = true, task_resumed = true,
  task_finished = true }

describe("bg merged stream", function()
  it("a two-level fan-out: ordered, lifecycle per task, ids on events, resumable", function()
    local app = closing(B.app(CONFIG))
    local rec = app:enqueue_background("sup", "go")
    -- read part of the stream, stop, then read the rest from the app's cursor
    local first, rest = {}, {}
    for ev in app:run_stream_until_idle() do
      first[#first + 1] = ev
      if #first == 10 then break end
    end
    for ev in app:run_stream_until_idle() do rest[#rest + 1] = ev end
    local all = {}
    for _, ev in ipairs(first) do all[#all + 1] = ev end
    for _, ev in ipairs(rest) do all[#all + 1] = ev end
    -- nothing is left once idle
    local again = 0
    for _ in app:run_stream_until_idle() do again = again + 1 end
    assert.equal(0, again)

    local top = app:get(rec.task_id)
    assert.equal("completed", top.status)
    assert.equal("1+2+1+2", top.result.final)
    local tasks = app:list()
    assert.equal(7, #tasks)

    -- strictly increasing seq with no hole (the stream has everything since load)
    for i, ev in ipairs(all) do assert.equal(i, ev.seq) end
    assert.same(all, B.events(app))

    -- lifecycle per task, ids and depth on every task event
    local started, finished, depth_of = {}, {}, {}
    for _, t in ipairs(tasks) do depth_of[t.task_id] = t.depth end
    for _, ev in ipairs(all) do
      assert.is_string(ev.kind)
      assert.truthy(ev.ts:match(B.ISO))
      assert.is_table(ev.payload)
      if TASK_KINDS[ev.kind] or ev.task_id then
        assert.is_string(ev.task_id, ev.kind)
        assert.is_string(ev.agent_id, ev.kind)
        assert.is_string(ev.run_id, ev.kind)
        assert.is_number(ev.depth, ev.kind)
        assert.is_not_nil(depth_of[ev.task_id], ev.kind)
      end
      if ev.kind == "task_started" then
        assert.is_nil(started[ev.task_id])
        started[ev.task_id] = ev.seq
      elseif ev.kind == "task_finished" then
        assert.is_nil(finished[ev.task_id])
        assert.truthy(started[ev.task_id], "finished before started: " .. ev.task_id)
        assert.truthy(started[ev.task_id] < ev.seq)
        finished[ev.task_id] = ev.seq
      end
    end
    for _, t in ipairs(tasks) do
      assert.truthy(started[t.task_id], t.task_id)
      assert.truthy(finished[t.task_id], t.task_id)
    end
    -- task events carry the task's own depth and agent; runs inside a task
    -- carry the task id and the run's depth
    local run_of = {}
    for _, t in ipairs(tasks) do run_of[t.task_id] = t end
    for _, ev in ipairs(all) do
      local t = ev.task_id and run_of[ev.task_id]
      if TASK_KINDS[ev.kind] then
        assert.equal(t.depth, ev.depth, ev.kind)
        assert.equal(t.agent_id, ev.agent_id, ev.kind)
        assert.equal(t.run_id, ev.run_id, ev.kind)
      elseif ev.kind == "lm_call" or ev.kind == "final" then
        assert.equal(t.agent_id, ev.agent_id)
        assert.equal(t.depth, ev.depth)
      elseif ev.kind == "leaf_work" then
        assert.equal("mid", ev.agent_id)
        assert.equal(2, ev.depth)
        assert.equal("leaf", t.tool)
      end
    end
    local depths = {}
    for _, t in ipairs(tasks) do depths[t.depth] = (depths[t.depth] or 0) + 1 end
    assert.same({ [0] = 1, [1] = 2, [2] = 4 }, depths)

    -- a parent's task_started comes before its children's enqueue
    for _, t in ipairs(tasks) do
      if t.parent_task_id then
        local enq
        for _, ev in ipairs(all) do
          if ev.kind == "task_enqueued" and ev.task_id == t.task_id then enq = ev.seq end
        end
        assert.truthy(started[t.parent_task_id] < enq)
        assert.truthy(finished[t.task_id] < finished[t.parent_task_id])
      end
    end

    -- app:events{since = k} returns exactly the events after k
    for _, k in ipairs({ 0, 1, 10, #all - 1, #all }) do
      local page = app:events{ since = k, limit = 10000 }
      assert.equal(#all - k, #page, "since " .. k)
      for i, ev in ipairs(page) do assert.same(all[k + i], ev) end
    end
    local few = app:events{ since = 5, limit = 3 }
    assert.same({ all[6], all[7], all[8] }, few)
    -- run_stream_until_idle{since = k} resumes there too
    local from = {}
    for ev in app:run_stream_until_idle{ since = 20 } do from[#from + 1] = ev end
    assert.equal(#all - 20, #from)
    assert.same(all[21], from[1])
    assert.same(all[#all], from[#from])
  end)
end)
