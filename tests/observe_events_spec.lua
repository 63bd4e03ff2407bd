-- Events a UI can use (README "Events"): every event has a numeric,
-- monotonic `t` beside `ts` and the task ids that exist for it;
-- task_enqueued carries the record's summary; a background call's tool_end
-- names the task it started; lm_call has the model, latency and usage (or
-- says there was none). app:events filters, app:tree and app:watch.
local closing = require "support.closing"
local R = require "support.runtime_helpers"
local fake = require "support.fake_openai_client"
local H = require "support.fake_openai_app"
local E = require "support.events"

-- The supervisor starts `research` twice in the background, waits, answers.
local FAN = [[
local research = luagent.delegate{ agent = "researcher", name = "research", background = { enabled = true } }
local fan = require("support.fan_model")(luagent, function()
  return { { id = "r1", name = "research", arguments = { prompt = "first " .. string.rep("x", 300) } },
    { id = "r2", name = "research", arguments = { prompt = "second" } } }
end, function(step)
  if step == "fan" then return { prompt_tokens = 20, completion_tokens = 4 } end
  if step == "answer" then return { prompt_tokens = 30, completion_tokens = 6 } end
end, "summary")
]]

local SCRIPTED = FAN .. [[
return luagent.config{
  background_tasks = { enabled = true },
  agents = {
    luagent.agent{ id = "supervisor", tools = { research }, model = luagent.function_model(fan, "planner") },
    luagent.agent{ id = "researcher", model = luagent.static_model{ name = "notes", responses = {
      { text = "note", usage = { prompt_tokens = 5, completion_tokens = 2 } } } } },
  },
}]]

local function by_task(events)
  local out = {}
  for _, ev in ipairs(events) do
    if ev.task_id then
      out[ev.task_id] = out[ev.task_id] or {}
      table.insert(out[ev.task_id], ev)
    end
  end
  return out
end

-- The checks shared by the scripted and the openai-backed tree.
local function check_tree_events(app, root_id, research_model)
  local events = E.all(app)
  local last_t = -1
  for _, ev in ipairs(events) do
    assert.is_number(ev.t)
    assert.is_true(ev.t >= last_t, "t goes back at seq " .. ev.seq)
    last_t = ev.t
    assert.matches("^%d+%-%d+%-%d+T%d+:%d+:[%d.]+Z$", ev.ts)
  end
  local kids = app:list{ parent_task_id = root_id }
  assert.equal(2, #kids)
  for _, ev in ipairs(events) do
    if ev.task_id == root_id then
      assert.equal(root_id, ev.root_task_id)
      assert.is_nil(ev.parent_task_id)
    elseif ev.task_id then
      assert.equal(root_id, ev.parent_task_id, ev.kind)
      assert.equal(root_id, ev.root_task_id)
    end
  end
  -- task_enqueued: the record's summary, the prompt's head
  local tasks = by_task(events)
  for _, k in ipairs(kids) do
    local enq = tasks[k.task_id][1]
    assert.equal("task_enqueued", enq.kind)
    assert.equal("agent", enq.payload.kind)
    assert.equal("researcher", enq.payload.agent_id)
    assert.equal("research", enq.payload.tool)
    assert.equal(k.tool_call_id, enq.payload.tool_call_id)
    assert.equal(k.prompt:sub(1, 200), enq.payload.prompt)
    assert.equal(#k.prompt > 200 or nil, enq.payload.prompt_cut)
  end
  assert.equal("Plan.", tasks[root_id][1].payload.prompt)
  -- the supervisor's tool_end of each background call names the task
  local spawned = {}
  for _, ev in ipairs(tasks[root_id]) do
    if ev.kind == "tool_end" and ev.payload.tool == "research" then
      spawned[ev.payload.tool_call_id] = ev.payload.task_id
    end
  end
  for _, k in ipairs(kids) do assert.equal(k.task_id, spawned[k.tool_call_id]) end
  -- lm_call: model, latency, usage
  local calls = E.of_kind(tasks[root_id], "lm_call")
  assert.equal(3, #calls)
  for _, c in ipairs(calls) do
    assert.is_number(c.payload.latency_s)
    assert.is_true(c.payload.latency_s >= 0)
  end
  assert.is_true(calls[1].payload.usage_reported)
  assert.same({ prompt_tokens = 20, completion_tokens = 4, total_tokens = 24 }, calls[1].payload.usage)
  -- the bg_wait reply came with no usage: said so, and estimated
  assert.is_false(calls[2].payload.usage_reported)
  assert.is_nil(calls[2].payload.usage)
  assert.is_true(calls[2].payload.usage_estimated)
  assert.is_true(calls[2].payload.estimated_usage.prompt_tokens > 0)
  local kid_call = E.of_kind(tasks[kids[1].task_id], "lm_call")[1]
  assert.equal(research_model, kid_call.payload.model)
end

-- The scripted app with the supervisor's tree run to its end.
local function finished_tree()
  local app = R.app(SCRIPTED)
  local root_id = app:enqueue_background("supervisor", "Plan.").task_id
  assert.is_true(app:wait({ root_id }, { timeout_s = 10 }).done)
  assert.is_true(app:run_until_idle{ timeout_s = 10 }.idle)
  return app, root_id
end

describe("events for a UI, scripted models", function()
  it("carry t, task ids, the enqueue summary, the spawned task and the model call's facts", function()
    local app, root_id = closing(finished_tree())
    check_tree_events(app, root_id, "notes")
    local calls = E.of_kind(E.all(app), "lm_call", "task_id", root_id)
    assert.equal("planner", calls[1].payload.model)
  end)

  it("a foreground run's events have its run id and no task ids; its children point at no parent task", function()
    local app = closing(R.app(SCRIPTED))
    local res = app:run("supervisor", "Plan.")
    assert.equal("completed", res.status)
    app:run_until_idle{ timeout_s = 10 }
    for _, ev in ipairs(E.all(app)) do
      if ev.run_id == res.run_id then
        assert.is_nil(ev.task_id)
        assert.is_nil(ev.root_task_id)
      elseif ev.task_id then
        assert.is_nil(ev.parent_task_id)
        assert.equal(ev.task_id, ev.root_task_id)
        assert.equal(res.run_id, ev.root_run_id)
      end
    end
  end)

  it("app:events filters by task_id, root_task_id, run_id and kinds, with since and limit", function()
    local app, root_id = closing(finished_tree())
    local all = E.all(app)
    local kid = app:list{ parent_task_id = root_id }[1]
    local function want(pred)
      local out = {}
      for _, ev in ipairs(all) do if pred(ev) then out[#out + 1] = ev.seq end end
      return out
    end
    local function seqs(evs)
      local out = {}
      for i, ev in ipairs(evs) do out[i] = ev.seq end
      return out
    end
    assert.same(want(function(ev) return ev.task_id == kid.task_id end),
      seqs(app:events{ task_id = kid.task_id }))
    assert.same(want(function(ev) return ev.root_task_id == root_id end),
      seqs(app:events{ root_task_id = root_id, limit = 100000 }))
    assert.same(want(function(ev) return ev.run_id == kid.run_id end), seqs(app:events{ run_id = kid.run_id }))
    local finished = want(function(ev) return ev.kind == "task_finished" or ev.kind == "task_started" end)
    assert.equal(6, #finished)
    assert.same(finished, seqs(app:events{ kinds = { "task_started", "task_finished" } }))
    assert.same({ finished[2], finished[3] },
      seqs(app:events{ kinds = { "task_started", "task_finished" }, since = finished[1], limit = 2 }))
    assert.same({}, app:events{ task_id = kid.task_id, kinds = { "token" } })
    assert.has_error(function() app:events{ kinds = { 1 } } end, "app:events: kinds[1] must be a string, got number")
    assert.has_error(function() app:events{ kind = "x" } end)
  end)

  it("app:tree returns a task's tree, or a foreground run's; unknown ids raise", function()
    local app, root_id = closing(finished_tree())
    local t = app:tree(root_id)
    assert.equal(root_id, t.task_id)
    assert.equal("completed", t.status)
    assert.equal(2, #t.children)
    for _, c in ipairs(t.children) do
      assert.equal(root_id, c.parent_task_id)
      assert.same({}, c.children)
    end
    assert.equal(0, #app:tree(t.children[1].task_id).children)
    local res = app:run("supervisor", "Plan.")
    app:run_until_idle{ timeout_s = 10 }
    local ft = app:tree(res.run_id)
    assert.equal("run", ft.kind)
    assert.equal("supervisor", ft.agent_id)
    assert.equal("completed", ft.status)
    assert.equal(2, #ft.children)
    assert.has_error(function() app:tree("tsk_nope") end, 'app:tree: unknown task or run id "tsk_nope"')
  end)

  it("app:watch hears events as the run goes, on the host thread, and stops when removed", function()
    local app = closing(R.app(SCRIPTED))
    local seen, calls = {}, 0
    local stop = app:watch(function(evs)
      calls = calls + 1
      for _, ev in ipairs(evs) do seen[#seen + 1] = ev.kind end
    end)
    app:run("supervisor", "Plan.")
    app:run_until_idle{ timeout_s = 10 }
    assert.is_true(calls >= 2) -- during the run's waits, not only at its end
    local kinds = {}
    for _, k in ipairs(seen) do kinds[k] = true end
    assert.is_true(kinds.task_enqueued and kinds.task_finished and kinds.final)
    stop()
    local n = #seen
    app:run("supervisor", "Plan.")
    app:run_until_idle{ timeout_s = 10 }
    assert.equal(n, #seen)
  end)
end)

describe("events for a UI, luagent.openai against the fake server", function()
  local srv
  setup(function() srv = fake.start() end)
  teardown(function() srv:stop() end)

  it("carry the same fields when the supervisor's model is a real HTTP model", function()
    local app = closing(H.app(srv, {}, FAN .. [[
      return luagent.config{
        model = MODEL,
        background_tasks = { enabled = true },
        agents = {
          luagent.agent{ id = "supervisor", tools = { research } },
          luagent.agent{ id = "researcher", model = luagent.static_model{ name = "notes", responses = {
            { text = "note", usage = { prompt_tokens = 5, completion_tokens = 2 } } } } },
        },
      } ]]))
    -- the same replies as `fan`, from the server; bg_wait is answered for
    -- whatever ids it names, so the script lists none
    srv:script{
      { tool_calls = { { id = "r1", name = "research", arguments = { prompt = "first " .. string.rep("x", 300) } },
        { id = "r2", name = "research", arguments = { prompt = "second" } } },
        usage = { prompt_tokens = 20, completion_tokens = 4, total_tokens = 24 } },
      { tool_calls = { { id = "w", name = "bg_list", arguments = {} } }, usage = false },
      { text = "summary", usage = { prompt_tokens = 30, completion_tokens = 6, total_tokens = 36 } },
    }
    local root_id = app:enqueue_background("supervisor", "Plan.").task_id
    assert.is_true(app:wait({ root_id }, { timeout_s = 10 }).done)
    app:run_until_idle{ timeout_s = 10 }
    assert.equal("completed", app:get(root_id).status)
    check_tree_events(app, root_id, "notes")
    local calls = E.of_kind(E.all(app), "lm_call", "task_id", root_id)
    assert.equal("m", calls[1].payload.model)
  end)
end)
