-- Background tasks, acceptance: the scope of the control tools (R-32). The
-- bg_* tools of a run see only tasks whose (parent_agent_id, thread_id) is
-- the run's (agent_id, thread_id); other ids are not_found, and notices
-- (R-33) never carry another scope's children.
local B = require "support.bg_helpers"

local CONFIG = [[
local hold = luagent.tool{ name = "hold", background = { enabled = true }, handler = function(args, ctx)
  ctx:sleep(60)
end }
local quick = luagent.tool{ name = "quick", background = { enabled = true }, handler = function() return "quick done" end }
-- prompt "spawn": start one holding and one quick child, then wait for the quick one
-- prompt "probe ID ID": try every control tool on those ids
local model = luagent.function_model(function(req)
  M.record(req)
  local prompt, step = M.turn_prompt(req), M.step(req)
  if prompt == "spawn" then
    if step == 0 then return M.calls({ { "hold" }, { "quick" } }) end
    if step == 1 then
      local a = M.acks(req)
      return M.call("bg_wait", { task_ids = { a[#a] }, timeout_s = 10 })
    end
    return { text = "spawned" }
  end
  local ids = {}
  for id in prompt:gmatch("tsk_[%w_%-]+") do ids[#ids + 1] = id end
  local steps = {
    M.call("bg_list", { include_finished = true }),
    M.call("bg_check", { task_id = ids[1] }),
    M.call("bg_check", { task_id = ids[2] }),
    M.call("bg_cancel", { task_id = ids[1] }),
    M.call("bg_wait", { task_ids = ids, timeout_s = 5 }),
    M.call("bg_wait", { task_ids = { ids[2] }, timeout_s = 5 }),
  }
  return steps[step + 1] or { text = "probed" }
end)
return luagent.config{ model = model, background_tasks = { enabled = true },
  agents = { luagent.agent{ id = "A", tools = { hold, quick } }, luagent.agent{ id = "B", tools = { hold, quick } } } }
]]

local function spawn(app, opts)
  local res = app:run("A", "spawn", opts)
  assert.equal("completed", res.status, B.json.encode(res.error or {}))
  local a = B.results_of(res.messages, "hold")[1].value.task_id
  local q = B.results_of(res.messages, "quick")[1].value.task_id
  return a, q, res
end

local function probe(app, agent, ids, opts)
  local res = app:run(agent, "probe " .. table.concat(ids, " "), opts)
  assert.equal("completed", res.status, B.json.encode(res.error or {}))
  return B.tool_results(res.messages), res
end

describe("bg scope (R-32)", function()
  local function blind(app, results, res, hold, q)
    assert.is_true(results[1].ok)
    assert.same({}, results[1].value.tasks)
    for i = 2, 6 do
      local r = results[i]
      assert.is_false(r.ok, "call " .. i .. " saw another scope's task")
      assert.equal("not_found", r.cause.kind)
      assert.is_nil(r.value)
    end
    assert.same({}, B.notices(res.messages))
    -- the cancel did nothing; the quick one is not marked delivered by others
    assert.equal("running", app:get(hold).status)
    assert.equal("completed", app:get(q).status)
  end

  it("agent B on the same thread sees none of A's tasks", function()
    local app <close> = B.app(CONFIG, { requests = {} })
    local hold, q = spawn(app, { thread_id = "t1" })
    local r, res = probe(app, "B", { hold, q }, { thread_id = "t1" })
    blind(app, r, res, hold, q)
  end)

  it("agent A on another thread sees none of its tasks on the first thread", function()
    local app <close> = B.app(CONFIG, { requests = {} })
    local hold, q = spawn(app, { thread_id = "t1" })
    local r, res = probe(app, "A", { hold, q }, { thread_id = "t2" })
    blind(app, r, res, hold, q)
  end)

  it("two runs without a thread_id do not see each other's children", function()
    local app <close> = B.app(CONFIG, { requests = {} })
    local hold, q = spawn(app)
    local r, res = probe(app, "A", { hold, q })
    blind(app, r, res, hold, q)
  end)

  it("the same agent and thread sees them (the control case)", function()
    local app <close> = B.app(CONFIG, { requests = {} })
    local hold, q = spawn(app, { thread_id = "t1" })
    local r = probe(app, "A", { hold, q }, { thread_id = "t1" })
    assert.is_true(r[1].ok)
    local listed = {}
    for _, t in ipairs(r[1].value.tasks) do listed[#listed + 1] = t.task_id end
    assert.same({ hold, q }, listed)
    assert.equal("running", r[2].value.status)
    assert.equal("quick done", r[3].value.result)
    assert.same({ ok = true, status = "cancelled", task_id = hold }, r[4].value)
    assert.is_true(r[5].value.done)
    assert.equal("quick done", r[6].value.tasks[1].result)
  end)

  it("runs on worker threads keep to the same scopes", function()
    local app <close> = B.app(CONFIG, { requests = {} })
    local hold, q = spawn(app, { thread_id = "t1" })
    local function bg_probe(agent, thread)
      local rec = app:enqueue_background(agent, "probe " .. hold .. " " .. q, { thread_id = thread })
      local w = app:wait(rec.task_id, { timeout_s = 10 })
      assert.equal("completed", w.tasks[1].status)
      return w.tasks[1].result
    end
    -- agent B on t1, agent A on t2: blind
    local res = bg_probe("B", "t1")
    blind(app, B.tool_results(res.messages), res, hold, q)
    res = bg_probe("A", "t2")
    blind(app, B.tool_results(res.messages), res, hold, q)
    -- agent A on t1 in a worker: the same conversation, so it sees them
    res = bg_probe("A", "t1")
    local r = B.tool_results(res.messages)
    assert.equal(2, #r[1].value.tasks)
    assert.equal("quick done", r[3].value.result)
  end)
end)
