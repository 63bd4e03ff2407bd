-- The control tools' entries in the core (bg_list, bg_check, bg_cancel,
-- bg_wait), called directly through the core bindings with a scope, as a C
-- host would call them: every task of another scope is not_found, and a
-- sub-agent run's scope is narrowed to its own task's children (R-32).
local closing = require "support.closing"
local B = require "support.bg_helpers"
local json = B.json

local CONFIG = [[
local hold = luagent.tool{ name = "hold", background = { enabled = true }, handler = function(args, ctx)
  ctx:sleep(60)
end }
local quick = luagent.tool{ name = "quick", background = { enabled = true }, handler = function() return "quick done" end }
local model = luagent.function_model(function(req)
  local step = M.step(req)
  if step == 0 then return M.calls({ { "hold" }, { "quick" } }) end
  if step == 1 then
    local a = M.acks(req)
    return M.call("bg_wait", { task_ids = { a[#a] }, timeout_s = 10 })
  end
  return { text = "spawned" }
end)
return luagent.config{ model = model, background_tasks = { enabled = true },
  agents = { luagent.agent{ id = "A", tools = { hold, quick } }, luagent.agent{ id = "B", tools = { hold, quick } } } }
]]

-- Every entry, on every id, from scope `sc`: nothing is seen or changed.
local function assert_blind(core, sc, ids)
  local r = core:bg_list(sc, json.encode({ include_finished = true }))
  assert.is_true(r.ok)
  assert.same({}, r.value.tasks)
  for _, id in ipairs(ids) do
    local calls = {
      core:bg_check(sc, json.encode({ task_id = id, last_n_events = 4 })),
      core:bg_cancel(sc, json.encode({ task_id = id })),
    }
    local w, answer = core:bg_wait_begin(sc, json.encode({ task_ids = { id }, timeout_s = 0 }))
    assert.is_nil(w)
    calls[3] = answer
    -- one foreign id among the caller's own still makes the wait not_found
    for i, res in ipairs(calls) do
      assert.is_false(res.ok, "call " .. i .. " saw " .. id)
      assert.equal("not_found", res.cause.kind)
      assert.equal(string.format("no background task %q in this conversation", id), res.error)
    end
  end
end

describe("control tool entries (C)", function()
  it("answer not_found for every task of another agent, thread or run", function()
    local app = closing(B.app(CONFIG))
    local res = app:run("A", "spawn", { thread_id = "t1" })
    assert.equal("completed", res.status)
    local hold = B.results_of(res.messages, "hold")[1].value.task_id
    local q = B.results_of(res.messages, "quick")[1].value.task_id
    local core = app._core
    local before = app:get(q).delivered
    assert_blind(core, { agent_id = "B", thread_id = "t1" }, { hold, q })
    assert_blind(core, { agent_id = "A", thread_id = "t2" }, { hold, q })
    assert_blind(core, { agent_id = "A", thread_id = "t1", task_id = "tsk_not_a_task" }, {})
    assert.equal("running", app:get(hold).status)
    assert.equal(before, app:get(q).delivered)
    -- the owner's scope sees both (the control case)
    local own = { agent_id = "A", thread_id = "t1" }
    local listed = {}
    for _, t in ipairs(core:bg_list(own, json.encode({ include_finished = true })).value.tasks) do
      listed[#listed + 1] = t.task_id
    end
    assert.same({ hold, q }, listed)
    assert.equal("quick done", core:bg_check(own, json.encode({ task_id = q })).value.result)
    local w, timeout = core:bg_wait_begin(own, json.encode({ task_ids = { q } }))
    assert.is_truthy(w)
    assert.equal(app._reg.settings.default_wait_timeout_s, timeout)
    assert.is_true(w:over())
    local v = core:bg_wait_finish(w)
    w:close()
    assert.is_true(v.value.done)
    assert.equal("quick done", v.value.tasks[1].result)
    local c = core:bg_cancel(own, json.encode({ task_id = hold }))
    assert.is_true(c.ok and c.value.ok)
    assert.equal(hold, c.value.task_id)
  end)

  it("narrow a sub-agent run's scope to its own task's children", function()
    local app = closing(B.app([[
      local job = luagent.tool{ name = "job", background = { enabled = true }, handler = function(args, ctx)
        ctx:sleep(60)
      end }
      local mid = luagent.delegate{ agent = "mid", background = { enabled = true } }
      return luagent.config{
        model = luagent.function_model(function(req)
          local p, step = M.prompt(req), M.step(req)
          if p:find("^top") then
            if step == 0 then return M.calls({ { "mid", { prompt = "spawner" } }, { "mid", { prompt = "idle" } } }) end
            if step == 1 then return M.call("bg_wait", { task_ids = M.acks(req), timeout_s = 10 }) end
            return { text = "top done" }
          end
          if p:find("^spawner") and step == 0 then return M.call("job") end
          return { text = p .. " done" }
        end),
        background_tasks = { enabled = true },
        agents = { luagent.agent{ id = "top", tools = { mid } }, luagent.agent{ id = "mid", tools = { job } } } } ]]))
    local res = app:run("top", "top")
    assert.equal("completed", res.status)
    local spawner, idle
    for _, r in ipairs(app:list{ agent_id = "mid" }) do
      if r.kind == "agent" and r.prompt == "spawner" then spawner = r end
      if r.kind == "agent" and r.prompt == "idle" then idle = r end
    end
    assert.equal(spawner.thread_id, idle.thread_id) -- one thread for the tree
    local job = app:list{ parent_task_id = spawner.task_id }[1]
    assert.equal("job", job.tool)
    local core = app._core
    -- the sibling run of the same agent, on the same thread, is blind
    assert_blind(core, { agent_id = "mid", thread_id = idle.thread_id, task_id = idle.task_id },
      { job.task_id })
    -- the spawner's own run sees it
    local mine = { agent_id = "mid", thread_id = spawner.thread_id, task_id = spawner.task_id }
    local r = core:bg_check(mine, json.encode({ task_id = job.task_id }))
    assert.is_true(r.ok)
    assert.equal(job.task_id, r.value.task_id)
    assert.is_true(core:bg_cancel(mine, json.encode({ task_id = job.task_id })).value.ok)
  end)
end)
