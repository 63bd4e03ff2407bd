-- Agent runtime: agent runs on workers (app:enqueue_background), the same
-- config in the host and in workers (R-1), and the cancel error passing
-- through the runner, nested runs and handlers' pcalls (R-23, R-6).
local closing = require "support.closing"
local R = require "support.runtime_helpers"

-- Self-contained (no S): every worker state runs it too.
local CONFIG = [[
local where = luagent.tool{ name = "where", handler = function(args, ctx)
  return { in_worker = luagent.in_worker(), depth = ctx.depth, task_id = ctx.task_id or "none",
           run_id = ctx.run_id, agent_id = ctx.agent_id }
end }
local stubborn = luagent.tool{ name = "stubborn", handler = function(args, ctx)
  ctx:emit("stubborn_started", {})
  local caught = 0
  while true do
    local ok = pcall(function() ctx:sleep(60) end)
    caught = caught + 1
    if args.give_up_after and caught >= args.give_up_after then return "swallowed " .. caught end
  end
end }
local nest = luagent.tool{ name = "nest", handler = function(args, ctx)
  local ok, res = pcall(ctx.run_agent, ctx, "sleeper", "nap")
  if ok then return res.status end
  return "caught: " .. tostring(res)
end }
local ask = luagent.delegate{ agent = "b", name = "ask_b" }
return luagent.config{
  background_tasks = { enabled = true, global_concurrency = 4 },
  agents = {
    luagent.agent{ id = "a", tools = { where, ask },
      hooks = { before_tool = function(call) if call.name == "ask_b" then return { arguments = { prompt = "rewritten" } } end end },
      model = luagent.static_model{ responses = {
        { tool_calls = { { id = "w", name = "where" } }, usage = { prompt_tokens = 3, completion_tokens = 2 } },
        { tool_calls = { { id = "d", name = "ask_b", arguments = { prompt = "p" } } },
          usage = { prompt_tokens = 0, completion_tokens = 0 } },
        { text = "a done", usage = { prompt_tokens = 5, completion_tokens = 1 } } } } },
    luagent.agent{ id = "b", tools = { where }, model = luagent.static_model{ responses = {
      { tool_calls = { { id = "bw", name = "where" } }, usage = { prompt_tokens = 2, completion_tokens = 1 } },
      { text = "b done", usage = { prompt_tokens = 1, completion_tokens = 1 } } } } },
    luagent.agent{ id = "stuck", tools = { stubborn }, model = luagent.static_model{ responses = {
      { tool_calls = { { id = "s1", name = "stubborn", arguments = {} } } }, "stuck done" } } },
    luagent.agent{ id = "giveup", tools = { stubborn }, model = luagent.static_model{ responses = {
      { tool_calls = { { id = "s1", name = "stubborn", arguments = { give_up_after = 3 } } } }, "went on" } } },
    luagent.agent{ id = "nester", tools = { nest }, model = luagent.static_model{ responses = {
      { tool_calls = { { id = "n1", name = "nest" } } }, "nester done" } } },
    luagent.agent{ id = "sleeper", tools = { stubborn }, model = luagent.static_model{ responses = {
      { tool_calls = { { id = "z", name = "stubborn", arguments = {} } } }, "slept" } } },
    luagent.agent{ id = "slowmodel", model = luagent.static_model{ responses = {
      { text = "late", delay_s = 60 } } } },
  },
}
]]

local function where_value(res, id)
  for _, t in ipairs(R.tool_messages(res.messages)) do
    if t.id == id then return t.result.value end
  end
end

describe("runtime background agent runs", function()
  it("enqueue_background runs an agent on a worker; the record's result is the AgentResult", function()
    local app = closing(R.app(CONFIG))
    local rec = app:enqueue_background("a", "go", { thread_id = "t1" })
    assert.equal("queued", rec.status)
    assert.equal("agent", rec.kind)
    local w = app:wait({ rec.task_id }, { timeout_s = 10 })
    assert.is_true(w.done)
    local task = w.tasks[1]
    assert.equal("completed", task.status)
    local res = task.result
    assert.equal("completed", res.status)
    assert.equal("a done", res.final)
    assert.equal(rec.task_id, res.task_id)
    assert.is_string(res.run_id)
    assert.is_nil(res.error)
    assert.same({ prompt_tokens = 8, completion_tokens = 3, total_tokens = 11 }, res.usage)
    assert.same({ "system", "user", "assistant", "tool", "assistant", "tool", "assistant" }, R.roles(res.messages))
    assert.truthy(R.well_formed(res.messages))
    local stored = app:get(rec.task_id)
    assert.equal("completed", stored.result.status)
    -- the task's usage counts every model call it made: its inline ask_b run's too
    assert.same({ prompt_tokens = 11, completion_tokens = 5, total_tokens = 16 }, stored.usage)
  end)

  it("the same config works in the host and in workers", function()
    local app = closing(R.app(CONFIG))
    local fg = app:run("a", "go")
    assert.equal("completed", fg.status)
    local v = where_value(fg, "w")
    assert.is_false(v.in_worker)
    assert.equal("none", v.task_id)
    assert.equal(0, v.depth)

    local rec = app:enqueue_background("a", "go")
    local bgres = app:wait({ rec.task_id }, { timeout_s = 10 }).tasks[1].result
    assert.equal("completed", bgres.status)
    v = where_value(bgres, "w")
    assert.is_true(v.in_worker)
    assert.equal(rec.task_id, v.task_id)
    assert.equal(0, v.depth)
    assert.equal(bgres.run_id, v.run_id)
    -- the agent's hook ran in the worker too: the delegate got the rewritten prompt
    assert.same(R.roles(fg.messages), R.roles(bgres.messages))
    assert.equal(fg.final, bgres.final)
  end)

  it("events of a background run carry its task id; a nested inline run is depth 1 in the same task", function()
    local app = closing(R.app(CONFIG))
    local rec = app:enqueue_background("a", "go")
    local res = app:wait({ rec.task_id }, { timeout_s = 10 }).tasks[1].result
    local runs = {}
    for _, ev in ipairs(R.events(app)) do
      if ev.kind == "lm_call" or ev.kind == "final" then
        assert.equal(rec.task_id, ev.task_id)
        runs[ev.run_id] = { agent = ev.agent_id, depth = ev.depth }
      end
    end
    assert.same({ agent = "a", depth = 0 }, runs[res.run_id])
    local n = 0
    for id, r in pairs(runs) do
      n = n + 1
      if id ~= res.run_id then assert.same({ agent = "b", depth = 1 }, r) end
    end
    assert.equal(2, n)
  end)

  it("max_tool_output_bytes applies in workers too", function()
    local app = closing(R.app([[
      local big = luagent.tool{ name = "big", handler = function() return string.rep("x", 5000) end }
      return luagent.config{ background_tasks = { enabled = true }, max_tool_output_bytes = 300,
        agents = { luagent.agent{ id = "x", tools = { big }, model = luagent.static_model{ responses = {
          { tool_calls = { { id = "b", name = "big" } } }, "ok" } } } } } ]]))
    local rec = app:enqueue_background("x", "go")
    local res = app:wait({ rec.task_id }, { timeout_s = 10 }).tasks[1].result
    assert.equal("completed", res.status)
    local content = R.tool_messages(res.messages)[1].content
    assert.truthy(#content < 400, tostring(#content))
    assert.truthy(content:find("[luagent: cut to", 1, true))
  end)

  it("a background run that fails is a failed task with the run's error", function()
    local app = closing(R.app([[
      return luagent.config{ background_tasks = { enabled = true },
        agents = { luagent.agent{ id = "x", model = luagent.static_model{ responses = {
          { error = { message = "provider down" } } } } } } } ]]))
    local rec = app:enqueue_background("x", "go")
    local task = app:wait({ rec.task_id }, { timeout_s = 10 }).tasks[1]
    assert.equal("failed", task.status)
    assert.equal("model", task.error.kind)
    assert.equal("provider down", task.error.message)
  end)
end)

describe("runtime cancel error (R-23)", function()
  it("a cancelled background run whose tool swallows the cancel in pcall ends cancelled", function()
    local app = closing(R.app(CONFIG))
    local rec = app:enqueue_background("stuck", "go")
    assert.truthy(R.await(app, function(ev) return ev.kind == "stubborn_started" and ev.task_id == rec.task_id end))
    local c = app:cancel(rec.task_id)
    assert.is_true(c.ok)
    local task = app:wait({ rec.task_id }, { timeout_s = 10 }).tasks[1]
    assert.equal("cancelled", task.status)
    -- the loop did not go on: no tool result and no further model call
    local events = R.events(app)
    local ends = {}
    for _, ev in ipairs(events) do
      if ev.task_id == rec.task_id and (ev.kind == "tool_end" or ev.kind == "final") then ends[#ends + 1] = ev end
    end
    assert.same({}, ends)
    assert.equal(1, #R.of_kind(events, "lm_call_start"))
  end)

  it("the cancel error passes through ctx:run_agent under pcall in a background run", function()
    local app = closing(R.app(CONFIG))
    local rec = app:enqueue_background("nester", "go")
    assert.truthy(R.await(app, function(ev) return ev.kind == "stubborn_started" and ev.task_id == rec.task_id end))
    app:cancel(rec.task_id)
    local task = app:wait({ rec.task_id }, { timeout_s = 10 }).tasks[1]
    assert.equal("cancelled", task.status)
    for _, ev in ipairs(R.events(app)) do
      assert.are_not.equal("final", ev.kind)
      assert.are_not.equal("tool_end", ev.kind)
    end
  end)

  it("a background run past its timeout ends timed_out, even in a slow model call", function()
    local app = closing(R.app(CONFIG))
    local a = app:enqueue_background("stuck", "go", { timeout_s = 0.2 })
    local b = app:enqueue_background("slowmodel", "go", { timeout_s = 0.2 })
    local w = app:wait({ a.task_id, b.task_id }, { timeout_s = 10 })
    assert.is_true(w.done)
    assert.equal("timed_out", w.tasks[1].status)
    assert.equal("timed_out", w.tasks[2].status)
  end)

  it("a foreground run with timeout_s ends timed_out and returns", function()
    local app = closing(R.app(CONFIG))
    for _, agent in ipairs({ "slowmodel", "giveup", "nester" }) do
      local t0 = R.now()
      local res = app:run(agent, "go", { timeout_s = 0.2 })
      assert.equal("timed_out", res.status, agent)
      assert.equal("timeout", res.error.kind)
      assert.truthy(R.now() - t0 < 5)
      local ok, why = R.well_formed(res.messages)
      assert.is_true(ok, why)
    end
  end)

  it("a foreground handler that swallows the cancel cannot make the loop go on", function()
    local app = closing(R.app(CONFIG))
    local res = app:run("giveup", "go", { timeout_s = 0.2 })
    assert.equal("timed_out", res.status)
    assert.is_nil(res.final)
    -- the model was not called again after the tool returned
    local starts = R.of_kind(R.events(app), "lm_call_start", res.run_id)
    assert.equal(1, #starts)
  end)

  it("a foreground handler that spins, or swallows the cancel forever, still ends at timeout_s", function()
    local app = closing(R.app([[
      local spin = luagent.tool{ name = "spin", handler = function() while true do end end }
      local spin_pcall = luagent.tool{ name = "spin_pcall", handler = function(args, ctx)
        while true do pcall(function() ctx:sleep(60) end) end
      end }
      local spin_xpcall = luagent.tool{ name = "spin_xpcall", handler = function(args, ctx)
        while true do xpcall(function() while true do end end, function(e) return e end) end
      end }
      local function agent(id, tool)
        return luagent.agent{ id = id, tools = { tool }, model = luagent.static_model{ responses = {
          { tool_calls = { { id = "s", name = tool.name } } }, "not reached" } } }
      end
      return luagent.config{ agents = { agent("spin", spin), agent("spin_pcall", spin_pcall),
        agent("spin_xpcall", spin_xpcall),
        luagent.agent{ id = "quick", model = luagent.static_model{ responses = { "hi" } } } } } ]]))
    for _, id in ipairs({ "spin", "spin_pcall", "spin_xpcall" }) do
      local t0 = R.now()
      local res = app:run(id, "go", { timeout_s = 0.1 })
      assert.equal("timed_out", res.status, id)
      assert.truthy(R.now() - t0 < 5, id)
      assert.truthy(R.well_formed(res.messages))
      assert.is_nil(debug.gethook(), "the watch hook is removed")
    end
    -- a normal run leaves the host's own hook alone
    local calls = 0
    local function my_hook() calls = calls + 1 end
    debug.sethook(my_hook, "", 100000)
    local res = app:run("quick", "go", { timeout_s = 10 })
    local h = debug.gethook()
    debug.sethook()
    assert.equal(my_hook, h)
    assert.equal("completed", res.status)
  end)

  it("app:cancel(run_id) from a host tool handler cancels the foreground run", function()
    local S = { }
    local app = closing(R.app([[
      local halt = luagent.host_tool{ name = "halt" }
      local work = luagent.tool{ name = "work", handler = function(args, ctx)
        local r = ctx:call_tool("halt", {})
        S.halt_result = r
        ctx:sleep(30) -- raises the cancel error at once
        return "not reached"
      end }
      local stubborn = luagent.tool{ name = "stubborn", handler = function(args, ctx)
        ctx:call_tool("halt", {})
        while true do pcall(function() ctx:sleep(30) end) end
      end }
      return luagent.config{
        agents = {
          luagent.agent{ id = "stubborn", tools = { stubborn }, model = luagent.static_model{ responses = {
            { tool_calls = { { id = "s", name = "stubborn" } } }, "not reached" } } },
          luagent.agent{ id = "direct", tools = { halt }, model = luagent.static_model{ responses = {
            { tool_calls = { { id = "h", name = "halt" } } }, "not reached" } } },
          luagent.agent{ id = "via_tool", tools = { work }, model = luagent.static_model{ responses = {
            { tool_calls = { { id = "w", name = "work" } } }, "not reached" } } },
        } } ]], S))
    local cancels = {}
    app:host_tool("halt", function(args, info)
      cancels[#cancels + 1] = app:cancel(info.run_id)
      return "cancel requested"
    end)
    for _, agent in ipairs({ "direct", "via_tool", "stubborn" }) do
      local t0 = R.now()
      local res = app:run(agent, "go")
      assert.equal("cancelled", res.status, agent)
      assert.equal("cancelled", res.error.kind)
      assert.truthy(R.now() - t0 < 5)
      assert.is_nil(res.final)
      assert.truthy(R.well_formed(res.messages))
      local c = cancels[#cancels]
      assert.is_true(c.ok)
      assert.equal(res.run_id, c.run_id)
    end
    assert.same({ ok = true, value = "cancel requested" }, S.halt_result)
    -- a finished run is not a foreground run any more
    assert.has_error(function() app:cancel(cancels[1].run_id) end)
  end)
end)
