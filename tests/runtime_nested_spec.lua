-- Agent runtime: nested runs (ctx:run_agent, inline delegates), their depth
-- and run ids in events, and max_depth limits (R-28) as ToolResults the
-- model can read.
local closing = require "support.closing"
local R = require "support.runtime_helpers"

-- boss -> (delegate "ask_helper") helper -> (delegate "ask_worker") worker;
-- boss also has a script tool that nests a run with ctx:run_agent.
local CHAIN = [[
local ask_helper = luagent.delegate{ agent = "helper", name = "ask_helper" }
local ask_worker = luagent.delegate{ agent = "worker", name = "ask_worker" }
local nest = luagent.tool{ name = "nest", input_schema = { type = "object",
  properties = { agent = { type = "string" } }, required = { "agent" } },
  handler = function(args, ctx)
    local res = ctx:run_agent(args.agent, "nested by a tool")
    return { final = res.final, status = res.status, depth = ctx.depth, run_id = res.run_id,
             parent_run_id = ctx.run_id }
  end }
local nest_pcall = luagent.tool{ name = "nest_pcall", handler = function(args, ctx)
  local ok, err = pcall(ctx.run_agent, ctx, "worker", "deep")
  if ok then return "ran" end
  return { kind = err.kind, message = err.message }
end }
local where = luagent.tool{ name = "where", handler = function(args, ctx)
  return { depth = ctx.depth, run_id = ctx.run_id, agent_id = ctx.agent_id, task_id = ctx.task_id or "none" }
end }
local function agents(boss_tools, boss_max, helper_max)
  return {
    luagent.agent{ id = "boss", tools = boss_tools, max_depth = boss_max,
      model = luagent.static_model{ responses = S.boss or {
        { tool_calls = { { id = "b1", name = "ask_helper", arguments = { prompt = "help" } } } },
        "boss done" } } },
    luagent.agent{ id = "helper", tools = { ask_worker, where }, max_depth = helper_max,
      model = luagent.static_model{ responses = {
        { tool_calls = { { id = "h1", name = "ask_worker", arguments = { prompt = "work" } } } },
        { tool_calls = { { id = "h2", name = "where" } } },
        "helper done" } } },
    luagent.agent{ id = "worker", tools = { where },
      model = luagent.static_model{ responses = {
        { tool_calls = { { id = "w1", name = "where" } } }, "worker done" } } },
  }
end
]]

local function by_run(events)
  local runs, order = {}, {}
  for _, ev in ipairs(events) do
    if ev.run_id and not runs[ev.run_id] then
      runs[ev.run_id] = { agent_id = ev.agent_id, depth = ev.depth, kinds = {} }
      order[#order + 1] = ev.run_id
    end
    if ev.run_id then
      local r = runs[ev.run_id]
      r.kinds[#r.kinds + 1] = ev.kind
      assert.equal(r.depth, ev.depth, "one depth per run")
      assert.equal(r.agent_id, ev.agent_id, "one agent per run")
    end
  end
  return runs, order
end

describe("runtime nested runs", function()
  it("inline delegates nest runs: depth and run ids are right in events", function()
    local app = closing(R.app(CHAIN .. [[
      return luagent.config{ agents = agents({ ask_helper }) } ]]))
    local res = app:run("boss", "go")
    assert.equal("completed", res.status)
    assert.equal("boss done", res.final)
    assert.same({ ok = true, value = "helper done" }, R.tool_results(res.messages)[1])
    local runs, order = by_run(R.events(app))
    assert.equal(3, #order)
    assert.equal(res.run_id, order[1])
    assert.same({ "boss", 0 }, { runs[order[1]].agent_id, runs[order[1]].depth })
    assert.same({ "helper", 1 }, { runs[order[2]].agent_id, runs[order[2]].depth })
    assert.same({ "worker", 2 }, { runs[order[3]].agent_id, runs[order[3]].depth })
    for _, id in ipairs(order) do
      local kinds = runs[id].kinds
      assert.equal("final", kinds[#kinds], id)
    end
    -- every event of the app belongs to a run here; none carries a task id
    for _, ev in ipairs(R.events(app)) do assert.is_nil(ev.task_id) end
  end)

  it("a tool's ctx shows its run's depth and run id", function()
    local app = closing(R.app(CHAIN .. [[
      return luagent.config{ agents = agents({ ask_helper }) } ]]))
    app:run("boss", "go")
    local runs, order = by_run(R.events(app))
    local ends = R.of_kind(R.events(app), "tool_end")
    assert.truthy(#ends >= 4)
    -- the worker's "where" ran at depth 2 in the worker's run
    local events = R.events(app)
    local found = false
    for _, ev in ipairs(events) do
      if ev.kind == "tool_end" and ev.payload.tool_call_id == "w1" then
        found = true
        assert.equal(order[3], ev.run_id)
        assert.equal(2, ev.depth)
      end
    end
    assert.is_true(found)
    assert.is_table(runs)
  end)

  it("ctx:run_agent in a tool handler runs a nested run with depth + 1 and its own run id", function()
    local app = closing(R.app(CHAIN .. [[
      S.boss = { { tool_calls = { { name = "nest", arguments = { agent = "worker" } } } }, "ok" }
      return luagent.config{ agents = agents({ nest }) } ]], {}))
    local res = app:run("boss", "go")
    assert.equal("completed", res.status)
    local v = R.tool_results(res.messages)[1].value
    assert.equal("worker done", v.final)
    assert.equal("completed", v.status)
    assert.equal(0, v.depth)
    assert.equal(res.run_id, v.parent_run_id)
    assert.is_string(v.run_id)
    assert.are_not.equal(res.run_id, v.run_id)
    local runs = by_run(R.events(app))
    assert.same({ "worker", 1 }, { runs[v.run_id].agent_id, runs[v.run_id].depth })
  end)

  it("nested usage stays in the nested run's result", function()
    local app = closing(R.app(CHAIN .. [[
      S.boss = { { tool_calls = { { name = "nest", arguments = { agent = "worker" } } },
                   usage = { prompt_tokens = 1, completion_tokens = 1 } },
                 { text = "ok", usage = { prompt_tokens = 0, completion_tokens = 0 } } }
      return luagent.config{ agents = agents({ nest }) } ]], {}))
    local res = app:run("boss", "go")
    assert.same({ prompt_tokens = 1, completion_tokens = 1, total_tokens = 2 }, res.usage)
  end)
end)

describe("runtime max_depth (R-28)", function()
  local function limit_result(res, id)
    for _, t in ipairs(R.tool_messages(res.messages)) do
      if t.id == id then return t.result end
    end
  end

  it("the app's max_depth refuses a deeper inline delegate with a limit ToolResult; the run goes on", function()
    local app = closing(R.app(CHAIN .. [[
      return luagent.config{ background_tasks = { max_depth = 1 }, agents = agents({ ask_helper }) } ]]))
    local res = app:run("boss", "go")
    assert.equal("completed", res.status)
    -- the helper (depth 1) could not reach the worker (depth 2)
    local runs, order = by_run(R.events(app))
    assert.equal(2, #order)
    local helper_tool_ends = {}
    for _, ev in ipairs(R.events(app)) do
      if ev.kind == "tool_end" and ev.run_id == order[2] then helper_tool_ends[#helper_tool_ends + 1] = ev end
    end
    assert.equal("h1", helper_tool_ends[1].payload.tool_call_id)
    assert.equal("limit", helper_tool_ends[1].payload.kind)
    assert.is_true(runs[order[2]].kinds[#runs[order[2]].kinds] == "final")
    -- and the helper's model got a readable ToolResult
    assert.same({ ok = true, value = "helper done" }, limit_result(res, "b1"))
  end)

  it("the model sees the limit: cause.kind = limit, a message naming the agent and max_depth", function()
    local requests = {}
    local app = closing(R.app([[
      local ask = luagent.delegate{ agent = "b", name = "ask_b" }
      return luagent.config{
        background_tasks = { max_depth = 0 },
        model = luagent.function_model(function(req)
          S.requests[#S.requests + 1] = req
          if #S.requests == 1 then return { tool_calls = { { id = "x", name = "ask_b", arguments = { prompt = "p" } } } } end
          return "gave up"
        end),
        agents = { luagent.agent{ id = "a", tools = { ask } }, luagent.agent{ id = "b" } },
      } ]], { requests = requests }))
    local res = app:run("a", "go")
    assert.equal("completed", res.status)
    assert.equal("gave up", res.final)
    local msgs = requests[2].messages
    local tool = msgs[#msgs]
    assert.equal("tool", tool.role)
    assert.equal("x", tool.tool_call_id)
    local r = R.json.decode(tool.content)
    assert.is_false(r.ok)
    assert.equal("limit", r.cause.kind)
    assert.truthy(r.error:find('"b"', 1, true), r.error)
    assert.truthy(r.error:find("max_depth", 1, true), r.error)
    assert.equal(1, #select(2, by_run(R.events(app)))) -- b never ran
  end)

  it("ctx:run_agent past max_depth: a limit ToolResult for an unprotected call, a {kind = limit} error for pcall", function()
    local app = closing(R.app(CHAIN .. [[
      S.boss = { { tool_calls = { { id = "n1", name = "nest", arguments = { agent = "worker" } },
                                  { id = "n2", name = "nest_pcall" } } }, "ok" }
      return luagent.config{ background_tasks = { max_depth = 0 }, agents = agents({ nest, nest_pcall }) } ]], {}))
    local res = app:run("boss", "go")
    assert.equal("completed", res.status)
    local r1, r2 = limit_result(res, "n1"), limit_result(res, "n2")
    assert.is_false(r1.ok)
    assert.equal("limit", r1.cause.kind)
    assert.truthy(r1.error:find("max_depth", 1, true), r1.error)
    assert.is_true(r2.ok)
    assert.equal("limit", r2.value.kind)
    assert.truthy(r2.value.message:find("max_depth", 1, true))
  end)

  it("an agent's max_depth is tighter than the app's and bounds its nested runs too", function()
    -- boss max_depth = 0: it cannot delegate at all
    local app = closing(R.app(CHAIN .. [[
      return luagent.config{ agents = agents({ ask_helper }, S.boss_max, S.helper_max) } ]],
      { boss_max = 0 }))
    local res = app:run("boss", "go")
    assert.equal("completed", res.status)
    local r = limit_result(res, "b1")
    assert.equal("limit", r.cause.kind)
    assert.equal(1, #select(2, by_run(R.events(app))))

    -- boss max_depth = 1: the helper runs, but cannot go to depth 2 under the boss
    local app2 = closing(R.app(CHAIN .. [[
      return luagent.config{ agents = agents({ ask_helper }, S.boss_max, S.helper_max) } ]],
      { boss_max = 1 }))
    res = app2:run("boss", "go")
    assert.equal("completed", res.status)
    assert.same({ ok = true, value = "helper done" }, limit_result(res, "b1"))
    local runs, order = by_run(R.events(app2))
    assert.equal(2, #order)
    local h1
    for _, ev in ipairs(R.events(app2)) do
      if ev.kind == "tool_end" and ev.payload.tool_call_id == "h1" then h1 = ev end
    end
    assert.equal("limit", h1.payload.kind)
    assert.is_table(runs)

    -- helper max_depth = 1 (its own): the same refusal, even though the app allows 2
    local app3 = closing(R.app(CHAIN .. [[
      return luagent.config{ agents = agents({ ask_helper }, S.boss_max, S.helper_max) } ]],
      { helper_max = 1 }))
    res = app3:run("boss", "go")
    assert.equal("completed", res.status)
    assert.equal(2, #select(2, by_run(R.events(app3))))
  end)

  it("an unknown agent in ctx:run_agent is API misuse: a runtime ToolResult naming it", function()
    local app = closing(R.app(CHAIN .. [[
      S.boss = { { tool_calls = { { id = "n", name = "nest", arguments = { agent = "workr" } } } }, "ok" }
      return luagent.config{ agents = agents({ nest }) } ]], {}))
    local res = app:run("boss", "go")
    local r = limit_result(res, "n")
    assert.equal("runtime", r.cause.kind)
    assert.truthy(r.error:find('unknown agent "workr"', 1, true), r.error)
    assert.truthy(r.error:find('did you mean "worker"', 1, true), r.error)
  end)

  it("a nested run that fails is a ToolResult for the parent, which goes on", function()
    local app = closing(R.app([[
      local ask = luagent.delegate{ agent = "b", name = "ask_b" }
      return luagent.config{
        agents = {
          luagent.agent{ id = "a", tools = { ask }, model = luagent.static_model{ responses = {
            { tool_calls = { { id = "x", name = "ask_b", arguments = { prompt = "p" } } } }, "parent ok" } } },
          luagent.agent{ id = "b", budget = { max_iterations = 1 }, model = luagent.static_model{ responses = {
            { tool_calls = { { name = "nothing" } } } } } },
        } } ]]))
    local res = app:run("a", "go")
    assert.equal("completed", res.status)
    local r = R.tool_results(res.messages)[1]
    assert.is_false(r.ok)
    assert.equal("budget", r.cause.kind)
    assert.truthy(r.error:find("budget_exceeded", 1, true), r.error)
  end)
end)
