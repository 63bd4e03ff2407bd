-- Background tasks, acceptance: the scope of the control tools (R-32). The
-- bg_* tools of a run see only tasks whose (parent_agent_id, thread_id) is
-- the run's (agent_id, thread_id); other ids are not_found, and notices
-- (R-33) never carry another scope's children. A sub-agent run (a task a
-- run spawned) shares its tree's thread, so its scope is narrowed to its own
-- task's children: siblings of one agent do not see each other's.
local closing = require "support.closing"
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
    local app = closing(B.app(CONFIG, { requests = {} }))
    local hold, q = spawn(app, { thread_id = "t1" })
    local r, res = probe(app, "B", { hold, q }, { thread_id = "t1" })
    blind(app, r, res, hold, q)
  end)

  it("agent A on another thread sees none of its tasks on the first thread", function()
    local app = closing(B.app(CONFIG, { requests = {} }))
    local hold, q = spawn(app, { thread_id = "t1" })
    local r, res = probe(app, "A", { hold, q }, { thread_id = "t2" })
    blind(app, r, res, hold, q)
  end)

  it("two runs without a thread_id do not see each other's children", function()
    local app = closing(B.app(CONFIG, { requests = {} }))
    local hold, q = spawn(app)
    local r, res = probe(app, "A", { hold, q })
    blind(app, r, res, hold, q)
  end)

  it("the same agent and thread sees them (the control case)", function()
    local app = closing(B.app(CONFIG, { requests = {} }))
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

  it("sibling sub-agent runs of one agent (one thread, one tree) do not see each other's children", function()
    -- top runs mid "two" (which leaves a child behind), then mid "one";
    -- both mids share the agent and the tree's thread
    local app = closing(B.app([[
      local latch = luagent.tool{ name = "latch", handler = function(args, ctx) ctx:sleep(60) end }
      local release = luagent.host_tool{ name = "release",
        input_schema = { type = "object", properties = { id = { type = "string" } } } }
      local job = luagent.tool{ name = "job", background = { enabled = true }, handler = function(args, ctx)
        ctx:wait({ args.latch }, { timeout_s = 30 })
        return "job of two"
      end }
      local mid = luagent.delegate{ agent = "mid", background = { enabled = true } }
      return luagent.config{
        model = luagent.function_model(function(req)
          local p, step = M.prompt(req), M.step(req)
          local l = p:match("tsk_[%w_%-]+")
          if p:find("^top") then
            if step == 0 then return M.call("mid", { prompt = "two " .. l }) end
            if step == 1 then return M.call("bg_wait", { task_ids = { M.acks(req)[1] }, timeout_s = 10 }) end
            if step == 2 then return M.calls({ { "release", { id = l } }, { "mid", { prompt = "one" } } }) end
            if step == 3 then return M.call("bg_wait", { task_ids = { M.acks(req)[2] }, timeout_s = 10 }) end
            return { text = "top done" }
          end
          if p:find("^two") then
            if step == 0 then return M.call("job", { latch = l }) end
            return { text = "two left a child" }
          end
          if step == 0 then return M.call("bg_list", { include_finished = true }) end
          if step == 1 then return M.call("tick") end
          return { text = "one done" }
        end),
        background_tasks = { enabled = true },
        tools = { latch, release, luagent.tool{ name = "tick", handler = function(a, ctx) ctx:sleep(0.05) end } },
        agents = { luagent.agent{ id = "top", tools = { mid, "release" } },
          luagent.agent{ id = "mid", tools = { job, "tick" } } } } ]]))
    app:host_tool("release", function(args) app:cancel(args.id); return true end)
    local l = app:enqueue_tool("latch", {}, { agent_id = "latches" }).task_id
    local res = app:run("top", "top " .. l)
    assert.equal("completed", res.status)
    local mids = {}
    for _, r in ipairs(app:list{ agent_id = "mid" }) do
      if r.kind == "agent" then mids[#mids + 1] = r end
    end
    assert.equal(2, #mids)
    assert.equal(mids[1].thread_id, mids[2].thread_id) -- one thread for the tree
    local job = app:list{ parent_task_id = mids[1].task_id }[1]
    assert.equal("job", job.tool)
    assert.equal("completed", app:wait({ job.task_id }, { timeout_s = 10 }).tasks[1].status)
    -- mid "one" saw nothing of it: not in bg_list, not in a notice
    local one = mids[2].result
    assert.equal("one done", one.final)
    assert.same({ ok = true, value = { tasks = {} } }, B.results_of(one.messages, "bg_list")[1])
    for _, m in ipairs(one.messages) do
      assert.is_nil((m.content or ""):find(job.task_id, 1, true))
    end
    assert.is_false(app:get(job.task_id).delivered)
  end)

  it("runs on worker threads keep to the same scopes", function()
    local app = closing(B.app(CONFIG, { requests = {} }))
    local hold, q = spawn(app, { thread_id = "t1" })
    local function bg_probe(agent, thread)
      local rec = app:enqueue_background(agent, "probe " .. hold .. " " .. q, { thread_id = thread })
      local w = app:wait({ rec.task_id }, { timeout_s = 10 })
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
