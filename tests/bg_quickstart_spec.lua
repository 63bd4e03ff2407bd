-- Background tasks, acceptance: the seed's quick start (a supervisor with a
-- background research tool, acks, bg_list, bg_wait) and the injection gate
-- of the control tools (R-30, R-31).
local closing = require "support.closing"
local B = require "support.bg_helpers"

local QUICKSTART = [[
local research = luagent.tool{
  name = "research",
  description = "Run a research sub-agent in the background.",
  input_schema = { type = "object", properties = { prompt = { type = "string" } }, required = { "prompt" } },
  background = { enabled = true },
  handler = function(args) return "ack for: " .. args.prompt end,
}
local TOPICS = { "lua", "python", "ruby" }
local supervisor_model = luagent.function_model(function(req)
  M.record(req)
  local name, res = M.answered(req)
  if not name then
    local calls = {}
    for i, t in ipairs(TOPICS) do calls[i] = { "research", { prompt = t } } end
    return M.calls(calls)
  end
  if name == "research" then
    if #M.acks(req) < #TOPICS then return { text = "waiting for acks" } end
    return M.call("bg_list")
  end
  if name == "bg_list" then
    return M.call("bg_wait", { task_ids = M.acks(req), mode = "all", timeout_s = 10 })
  end
  if name == "bg_wait" then
    local parts = {}
    for _, t in ipairs(res.value.tasks) do parts[#parts + 1] = tostring(t.result) end
    return { text = "summary: " .. table.concat(parts, " | ") }
  end
  return { text = "unexpected " .. tostring(name) }
end)
return luagent.config{
  model = supervisor_model,
  background_tasks = { enabled = true, global_concurrency = 10, per_agent_concurrency = 5 },
  agents = {
    luagent.agent{ id = "supervisor",
      instructions = "Delegate research with the research tool; use bg_list and bg_wait to track children.",
      tools = { research } },
  },
}
]]

describe("bg quick start (seed)", function()
  it("three acks, bg_list, bg_wait all, and a final answer that uses the results", function()
    local S = { requests = {} }
    local app = closing(B.app(QUICKSTART, S))
    local res = app:run("supervisor", "Compare Lua, Python and Ruby.")
    assert.equal("completed", res.status, B.json.encode(res.error or {}))
    assert.truthy(B.well_formed(res.messages))

    -- three synthetic acks with distinct task ids (R-31)
    local acks = B.results_of(res.messages, "research")
    assert.equal(3, #acks)
    local ids, seen = {}, {}
    for i, a in ipairs(acks) do
      assert.is_true(a.ok)
      assert.same({ "status", "task_id", "tool" }, (function()
        local k = {}
        for key in pairs(a.value) do k[#k + 1] = key end
        table.sort(k)
        return k
      end)())
      assert.equal("queued", a.value.status)
      assert.equal("research", a.value.tool)
      assert.is_string(a.value.task_id)
      assert.is_nil(seen[a.value.task_id])
      seen[a.value.task_id] = true
      ids[i] = a.value.task_id
    end

    -- bg_list: the three tasks, not finished yet as far as the list knows
    local list = B.results_of(res.messages, "bg_list")[1]
    assert.is_true(list.ok)
    local listed = {}
    for _, t in ipairs(list.value.tasks) do
      listed[t.task_id] = t
      assert.equal("research", t.tool)
      assert.truthy(t.status == "queued" or t.status == "running", t.status)
      assert.truthy(t.enqueued_at:match(B.ISO), t.enqueued_at)
    end
    -- (a task can finish before bg_list runs; every listed one is ours)
    for id in pairs(listed) do assert.is_true(seen[id]) end

    -- bg_wait all returns the three results in input order
    local w = B.results_of(res.messages, "bg_wait")[1]
    assert.is_true(w.ok)
    assert.is_true(w.value.done)
    assert.is_false(w.value.timed_out)
    assert.same({}, w.value.pending)
    assert.equal(3, #w.value.tasks)
    for i, t in ipairs(w.value.tasks) do
      assert.equal(ids[i], t.task_id)
      assert.equal("completed", t.status)
    end
    assert.equal("ack for: lua", w.value.tasks[1].result)
    assert.equal("ack for: python", w.value.tasks[2].result)
    assert.equal("ack for: ruby", w.value.tasks[3].result)
    assert.equal("summary: ack for: lua | ack for: python | ack for: ruby", res.final)

    -- the records: tool tasks of the supervisor, children of its run
    for _, id in ipairs(ids) do
      local rec = app:get(id)
      assert.equal("tool", rec.kind)
      assert.equal("research", rec.tool)
      assert.equal("supervisor", rec.parent_agent_id)
      assert.equal(res.run_id, rec.parent_run_id)
      assert.equal(1, rec.depth)
      assert.truthy(rec.enqueued_at:match(B.ISO))
      assert.is_true(rec.delivered)
    end
  end)

  it("bg_list shows three non-terminal tasks while they run", function()
    -- the research handler holds until the host opens the gate
    local S = { requests = {}, open = false }
    local app = closing(B.app([[
      local gate = luagent.host_tool{ name = "gate" }
      local research = luagent.tool{ name = "research", background = { enabled = true },
        input_schema = { type = "object", properties = { prompt = { type = "string" } }, required = { "prompt" } },
        handler = function(args, ctx)
          while not ctx:call_tool("gate", {}).value do ctx:sleep(0.005) end
          return "done " .. args.prompt
        end }
      return luagent.config{
        model = luagent.function_model(function(req)
          M.record(req)
          local name = M.answered(req)
          if not name then return M.calls({ { "research", { prompt = "a" } }, { "research", { prompt = "b" } },
            { "research", { prompt = "c" } } }) end
          if name == "research" then return M.call("bg_list") end
          if name == "bg_list" then return M.call("bg_wait", { task_ids = M.acks(req), timeout_s = 10 }) end
          return { text = "ok" }
        end),
        background_tasks = { enabled = true },
        tools = { gate },
        agents = { luagent.agent{ id = "supervisor", tools = { research } } } } ]], S))
    app:host_tool("gate", function()
      -- open once the model has seen bg_list's answer
      local last = S.requests[#S.requests]
      return last ~= nil and #B.results_of(last.messages, "bg_list") > 0
    end)
    local res = app:run("supervisor", "go")
    assert.equal("completed", res.status)
    local list = B.results_of(res.messages, "bg_list")[1].value.tasks
    assert.equal(3, #list)
    local acks = B.results_of(res.messages, "research")
    for i, t in ipairs(list) do
      assert.equal(acks[i].value.task_id, t.task_id)
      assert.equal("research", t.tool)
      assert.equal("supervisor", t.agent_id)
      assert.truthy(t.status == "queued" or t.status == "running")
      assert.truthy(t.enqueued_at:match(B.ISO), t.enqueued_at)
    end
    local w = B.results_of(res.messages, "bg_wait")[1].value
    assert.is_true(w.done)
    assert.equal("done a", w.tasks[1].result)
    assert.equal("done c", w.tasks[3].result)
  end)
end)

describe("bg control tools injection gate (R-30)", function()
  local function tools_seen(bg_enabled, eligible)
    local S = { requests = {} }
    local app = closing(B.app(string.format([[
      local plain = luagent.tool{ name = "plain", handler = function() return 1 end }
      local research = luagent.tool{ name = "research", handler = function() return 2 end,
        background = %s }
      return luagent.config{
        model = luagent.function_model(function(req) M.record(req); return { text = "done" } end),
        background_tasks = { enabled = %s },
        agents = { luagent.agent{ id = "a", tools = { plain, research } } } } ]],
      eligible and "{ enabled = true }" or "{ enabled = false }", tostring(bg_enabled)), S))
    local res = app:run("a", "go")
    assert.equal("completed", res.status)
    assert.equal(1, #S.requests)
    return B.tool_names(S.requests[1])
  end

  it("no dispatcher: no control tools", function()
    assert.same({ "plain", "research" }, tools_seen(false, true))
  end)

  it("no background-eligible tool: no control tools", function()
    assert.same({ "plain", "research" }, tools_seen(true, false))
  end)

  it("dispatcher and an eligible tool: the five control tools", function()
    assert.same({ "plain", "research", "bg_list", "bg_check", "bg_cancel", "bg_send", "bg_wait" }, tools_seen(true, true))
  end)

  it("background = true is eligible, background = false is not", function()
    local S = { requests = {} }
    local app = closing(B.app([[
      local model = luagent.function_model(function(req) M.record(req); return { text = "done" } end)
      local on = luagent.tool{ name = "on", background = true, handler = function() end }
      local off = luagent.tool{ name = "off", background = false, handler = function() end }
      local off_delegate = luagent.delegate{ agent = "worker", name = "ask", background = false }
      return luagent.config{ model = model, background_tasks = { enabled = true },
        agents = { luagent.agent{ id = "worker" },
          luagent.agent{ id = "a", tools = { on } }, luagent.agent{ id = "b", tools = { off, off_delegate } } } } ]], S))
    app:run("a", "go")
    app:run("b", "go")
    assert.same({ "on", "bg_list", "bg_check", "bg_cancel", "bg_send", "bg_wait" }, B.tool_names(S.requests[1]))
    assert.same({ "off", "ask" }, B.tool_names(S.requests[2]))
  end)

  it("a background delegate counts as eligible; an inline delegate does not", function()
    local S = { requests = {} }
    local app = closing(B.app([[
      local model = luagent.function_model(function(req) M.record(req); return { text = "done" } end)
      return luagent.config{ model = model, background_tasks = { enabled = true },
        agents = {
          luagent.agent{ id = "worker" },
          luagent.agent{ id = "bgsup", tools = { luagent.delegate{ agent = "worker", name = "ask_bg",
            background = { enabled = true } } } },
          luagent.agent{ id = "insup", tools = { luagent.delegate{ agent = "worker", name = "ask_inline" } } },
        } } ]], S))
    app:run("bgsup", "go")
    app:run("insup", "go")
    assert.same({ "ask_bg", "bg_list", "bg_check", "bg_cancel", "bg_send", "bg_wait" }, B.tool_names(S.requests[1]))
    assert.same({ "ask_inline" }, B.tool_names(S.requests[2]))
  end)

  it("background = {} (no enabled field) is eligible; with no dispatcher the tool runs inline", function()
    local S = { requests = {} }
    local BODY = [[
      local research = luagent.tool{ name = "research", background = {}, handler = function() return "inline" end }
      return luagent.config{
        model = luagent.function_model(function(req)
          M.record(req)
          if not M.answered(req) then return M.call("research") end
          return { text = "done" }
        end),
        background_tasks = { enabled = S.enabled == true },
        agents = { luagent.agent{ id = "a", tools = { research } } } } ]]
    local app = closing(B.app(BODY, S))
    local res = app:run("a", "go")
    assert.same({ "research" }, B.tool_names(S.requests[1]))
    assert.same({ ok = true, value = "inline" }, B.results_of(res.messages, "research")[1])

    S.enabled, S.requests = true, {}
    local app2 = closing(B.app(BODY, S))
    res = app2:run("a", "go")
    assert.same({ "research", "bg_list", "bg_check", "bg_cancel", "bg_send", "bg_wait" }, B.tool_names(S.requests[1]))
    local ack = B.results_of(res.messages, "research")[1]
    assert.is_true(ack.ok)
    assert.equal("queued", ack.value.status)
  end)
end)
