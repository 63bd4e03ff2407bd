-- Background tasks, acceptance: nested fan-out through background
-- delegates does not deadlock (R-27), and the depth, fan-out, cap and
-- backpressure limits reach the model as ToolResults it can read (R-28,
-- R-21, R-22) for agent tasks as for tool tasks.
local closing = require "support.closing"
local B = require "support.bg_helpers"

-- Agents lvl0..lvl3: lvl0..lvl2 call their background delegate twice, wait
-- for both, and answer the sum of the answers; lvl3 answers "1".
local TREE = [[
local function level_model(n)
  return luagent.function_model(function(req)
    M.record(req)
    if n == 3 then return { text = "1" } end
    local step = M.step(req)
    local ask = "ask_lvl" .. (n + 1)
    if step == 0 then return M.calls({ { ask, { prompt = "left" } }, { ask, { prompt = "right" } } }) end
    if step == 1 then return M.call("bg_wait", { task_ids = M.acks(req), mode = "all", timeout_s = 30 }) end
    local name, res = M.answered(req)
    if name ~= "bg_wait" or not res.ok or not res.value.done then
      return { text = "failed: " .. json.encode(res) }
    end
    local sum = 0
    for _, t in ipairs(res.value.tasks) do sum = sum + (tonumber(t.result) or 0) end
    return { text = tostring(sum) }
  end)
end
local agents = {}
for n = 0, 3 do
  local tools = {}
  if n < 3 then
    tools[1] = luagent.delegate{ agent = "lvl" .. (n + 1), name = "ask_lvl" .. (n + 1),
      background = { enabled = true } }
  end
  agents[#agents + 1] = luagent.agent{ id = "lvl" .. n, model = level_model(n), tools = tools }
end
]]

describe("bg nested fan-out (R-27)", function()
  it("three levels of background delegates finish with global_concurrency = 2", function()
    local S = { requests = {} }
    local app = closing(B.app(TREE .. [[
      return luagent.config{ agents = agents,
        background_tasks = { enabled = true, global_concurrency = 2, max_depth = 3 } } ]], S))
    local t0 = B.now()
    local res = app:run("lvl0", "go", { timeout_s = 30 })
    assert.equal("completed", res.status, B.json.encode(res.error or {}))
    assert.equal("8", res.final)
    assert.truthy(B.now() - t0 < 10)

    local all = app:list()
    assert.equal(14, #all)
    local by_depth = {}
    for _, r in ipairs(all) do
      assert.equal("completed", r.status, r.task_id .. " " .. r.status)
      assert.equal("agent", r.kind)
      assert.equal("lvl" .. r.depth, r.agent_id)
      assert.equal("ask_lvl" .. r.depth, r.tool)
      assert.equal("lvl" .. (r.depth - 1), r.parent_agent_id)
      by_depth[r.depth] = (by_depth[r.depth] or 0) + 1
    end
    assert.same({ 2, 4, 8 }, by_depth)
    -- every deepest-level task exists and completed with its answer
    local deepest = app:list{ agent_id = "lvl3" }
    assert.equal(8, #deepest)
    for _, r in ipairs(deepest) do
      assert.equal("completed", r.status)
      assert.equal("1", r.result.final)
      assert.equal(3, r.depth)
    end
    -- the cap held: slot holders never passed 2
    local holding, max_holding = 0, 0
    for _, ev in ipairs(B.events(app)) do
      if ev.kind == "task_started" or ev.kind == "task_resumed" then holding = holding + 1
      elseif ev.kind == "task_finished" or ev.kind == "task_waiting" then holding = holding - 1 end
      if holding > max_holding then max_holding = holding end
    end
    assert.truthy(max_holding <= 2, tostring(max_holding))
    assert.same({ queued = 0, running = 0, waiting = 0, lent_slots = 0, host_calls_pending = 0 }, (function()
      local s = app:stats()
      return { queued = s.queued, running = s.running, waiting = s.waiting, lent_slots = s.lent_slots,
        host_calls_pending = s.host_calls_pending }
    end)())
  end)

  it("the same tree as a background run of the top agent (every level on workers)", function()
    local app = closing(B.app(TREE .. [[
      return luagent.config{ agents = agents,
        background_tasks = { enabled = true, global_concurrency = 2, max_depth = 3 } } ]]))
    local rec = app:enqueue_background("lvl0", "go")
    local w = app:wait({ rec.task_id }, { timeout_s = 30 })
    assert.is_true(w.done, "the tree did not finish (deadlock?)")
    assert.equal("completed", w.tasks[1].status)
    assert.equal("8", w.tasks[1].result.final)
    -- the top task is depth 0, so the leaves are depth 3 = max_depth
    local leaves = app:list{ agent_id = "lvl3" }
    assert.equal(8, #leaves)
    for _, r in ipairs(leaves) do assert.equal("completed", r.status) end
    assert.equal(15, #app:list())
  end)
end)

describe("bg limits (R-28, R-22)", function()
  it("past max_depth the model gets a limit ToolResult naming max_depth", function()
    local app = closing(B.app(TREE .. [[
      return luagent.config{ agents = agents, background_tasks = { enabled = true, max_depth = 1 } } ]]))
    local res = app:run("lvl0", "go", { timeout_s = 20 })
    assert.equal("completed", res.status)
    -- lvl1 runs at depth 1; its own delegate calls would be depth 2
    local lvl1 = app:list{ agent_id = "lvl1" }
    assert.equal(2, #lvl1)
    assert.same({}, app:list{ agent_id = "lvl2" })
    for _, r in ipairs(lvl1) do
      assert.equal("completed", r.status)
      local refusals = B.results_of(r.result.messages, "ask_lvl2")
      assert.equal(2, #refusals)
      for _, x in ipairs(refusals) do
        assert.is_false(x.ok)
        assert.equal("limit", x.cause.kind)
        assert.truthy(x.error:find("max_depth", 1, true), x.error)
        assert.equal(x.error, x.cause.message)
      end
    end
  end)

  it("past max_descendants the model gets a limit ToolResult naming max_descendants", function()
    local app = closing(B.app([[
      local job = luagent.tool{ name = "job", background = { enabled = true }, handler = function() return "ok" end }
      local worker = luagent.delegate{ agent = "worker", background = { enabled = true } }
      return luagent.config{
        model = luagent.function_model(function(req)
          if M.step(req) == 0 then
            return M.calls({ { "job" }, { "worker", { prompt = "p" } }, { "job" }, { "worker", { prompt = "q" } } })
          end
          return { text = "done" }
        end),
        background_tasks = { enabled = true, max_descendants = 2 },
        agents = { luagent.agent{ id = "sup", tools = { job, worker } }, luagent.agent{ id = "worker" } } } ]]))
    local res = app:run("sup", "go")
    local r = B.tool_results(res.messages)
    assert.is_true(r[1].ok)
    assert.is_true(r[2].ok)
    for i = 3, 4 do
      assert.is_false(r[i].ok)
      assert.equal("limit", r[i].cause.kind)
      assert.truthy(r[i].error:find("max_descendants", 1, true), r[i].error)
    end
    assert.equal(2, #app:list())
  end)

  it("backpressure reject: a tool task or an agent task past the caps is a rejected ToolResult", function()
    -- children hold their slot (ctx:sleep does not lend it, R-27) until cancelled
    local app = closing(B.app([[
      local hold = luagent.tool{ name = "hold", handler = function(args, ctx) ctx:sleep(60) end }
      local job = luagent.tool{ name = "job", background = { enabled = true },
        handler = function(args, ctx) ctx:sleep(60) end }
      local worker = luagent.delegate{ agent = "worker", background = { enabled = true } }
      return luagent.config{
        model = luagent.function_model(function(req)
          local step, what = M.step(req), M.turn_prompt(req)
          if step == 0 then
            local t = what == "tools" and "job" or "worker"
            return M.calls({ { t, { prompt = "1" } }, { t, { prompt = "2" } } })
          end
          if step == 1 then return M.call("bg_cancel", { task_id = M.acks(req)[1] }) end
          return { text = "done" }
        end),
        background_tasks = { enabled = true, backpressure = "reject", global_concurrency = 3,
          per_agent_concurrency = 1 },
        tools = { hold },
        agents = {
          luagent.agent{ id = "sup", tools = { job, worker } },
          luagent.agent{ id = "worker", model = luagent.function_model(function(req, ctx)
            ctx:sleep(60)
          end) },
        } } ]]))
    -- another agent's task holds one of the three global slots
    local h = app:enqueue_tool("hold", {}, { agent_id = "other" })
    local cases = {
      tools = "per_agent_concurrency (1) reached for agent 'sup'",
      agents = "per_agent_concurrency (1) reached for agent 'worker'",
    }
    for _, what in ipairs({ "tools", "agents" }) do
      local res = app:run("sup", what, { timeout_s = 20 })
      assert.equal("completed", res.status, what)
      local r = B.tool_results(res.messages)
      assert.is_true(r[1].ok, what)
      assert.equal("queued", r[1].value.status)
      assert.is_false(r[2].ok, what)
      assert.equal("rejected", r[2].cause.kind, what)
      assert.truthy(r[2].error:find(cases[what], 1, true), what .. ": " .. r[2].error)
      assert.same({ ok = true, status = "cancelled", task_id = r[1].value.task_id }, r[3].value)
    end
    assert.equal("running", app:get(h.task_id).status)
  end)

  it("caps hold for agent tasks: per_agent_concurrency = 1 runs one worker agent at a time", function()
    local app = closing(B.app([[
      local worker = luagent.delegate{ agent = "worker", background = { enabled = true } }
      return luagent.config{
        model = luagent.function_model(function(req)
          local step = M.step(req)
          if step == 0 then
            return M.calls({ { "worker", { prompt = "1" } }, { "worker", { prompt = "2" } }, { "worker", { prompt = "3" } } })
          end
          if step == 1 then return M.call("bg_wait", { task_ids = M.acks(req), timeout_s = 20 }) end
          return { text = "done" }
        end),
        background_tasks = { enabled = true, global_concurrency = 4, per_agent_concurrency = 1 },
        agents = { luagent.agent{ id = "sup", tools = { worker } },
          luagent.agent{ id = "worker", model = luagent.function_model(function(req, ctx)
            ctx:sleep(0.02)
            return { text = "w" .. M.prompt(req) }
          end) } } } ]]))
    local res = app:run("sup", "go")
    assert.equal("completed", res.status)
    local w = B.results_of(res.messages, "bg_wait")[1].value
    assert.is_true(w.done)
    for i, t in ipairs(w.tasks) do assert.equal("w" .. i, t.result) end
    local running, peak = 0, 0
    for _, ev in ipairs(B.events(app)) do
      if ev.agent_id == "worker" and (ev.kind == "task_started" or ev.kind == "task_resumed") then running = running + 1 end
      if ev.agent_id == "worker" and (ev.kind == "task_finished" or ev.kind == "task_waiting") then running = running - 1 end
      if running > peak then peak = running end
    end
    assert.equal(1, peak)
  end)
end)
