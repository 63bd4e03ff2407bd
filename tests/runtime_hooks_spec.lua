-- Agent runtime: agent hooks (README, "Agent hooks"). What each hook can do,
-- and that hooks given as a list run in order and compose.
local closing = require "support.closing"
local R = require "support.runtime_helpers"
local json = R.json

-- A model that records every request and answers from S.replies (a list
-- of replies, or a function(request, n) -> reply).
local MODEL = [[
local echo = luagent.tool{ name = "echo", input_schema = { type = "object",
  properties = { text = { type = "string" } } },
  handler = function(args) S.log[#S.log + 1] = "echo:" .. tostring(args.text); return args.text end }
local shout = luagent.tool{ name = "shout", input_schema = { type = "object",
  properties = { text = { type = "string" } }, required = { "text" } },
  handler = function(args) S.log[#S.log + 1] = "shout:" .. args.text; return args.text:upper() end }
local model = luagent.function_model(function(req, ctx)
  S.requests[#S.requests + 1] = req
  local n = #S.requests
  if type(S.replies) == "function" then return S.replies(req, n) end
  return S.replies[n] or { text = "out of replies" }
end)
]]

local function new_S(replies)
  return { requests = {}, log = {}, replies = replies }
end

-- Messages of a request as "role:content" strings.
local function shape(req)
  local out = {}
  for i, m in ipairs(req.messages) do out[i] = m.role .. ":" .. tostring(m.content) end
  return out
end

describe("runtime hooks: before_step", function()
  it("can rewrite the messages the model sees", function()
    local S = new_S({ "ok" })
    S.before_step = function(step)
      local msgs = {}
      for i, m in ipairs(step.messages) do msgs[i] = m end
      msgs[#msgs + 1] = { role = "user", content = "(step " .. (step.iteration + 1) .. ")" }
      return { messages = msgs }
    end
    local app = closing(R.app(MODEL .. [[
      return luagent.config{ model = model,
        agents = { luagent.agent{ id = "a", instructions = "sys", hooks = { before_step = S.before_step } } } } ]], S))
    local res = app:run("a", "hi")
    assert.equal("completed", res.status)
    assert.same({ "system:sys", "user:hi", "user:(step 1)" }, shape(S.requests[1]))
  end)

  it("can stop the run before the model is called", function()
    local S = new_S({ R.call("echo", { text = "x" }), "never" })
    S.before_step = function(step)
      if step.iteration == 1 then return { stop = true, reason = "enough after one step" } end
    end
    local app = closing(R.app(MODEL .. [[
      return luagent.config{ model = model,
        agents = { luagent.agent{ id = "a", tools = { echo }, hooks = { before_step = S.before_step } } } } ]], S))
    local res = app:run("a", "hi")
    assert.equal("stopped", res.status)
    assert.equal("stopped", res.error.kind)
    assert.equal("enough after one step", res.error.message)
    assert.equal(1, #S.requests)
    assert.truthy(R.well_formed(res.messages))
  end)

  it("several run in order: each sees the previous one's messages; a stop ends the chain", function()
    local S = new_S({ "ok" })
    local order = {}
    S.hooks = {
      function(step)
        order[#order + 1] = "first"
        local msgs = { (table.unpack or unpack)(step.messages) }
        msgs[#msgs + 1] = { role = "user", content = "A" }
        return { messages = msgs }
      end,
      function(step)
        order[#order + 1] = "second:" .. step.messages[#step.messages].content
        local msgs = { (table.unpack or unpack)(step.messages) }
        msgs[#msgs + 1] = { role = "user", content = "B" }
        return { messages = msgs }
      end,
      function(step)
        order[#order + 1] = "third"
        if step.messages[#step.messages].content == "B" and S.stop then return { stop = true } end
      end,
      function() order[#order + 1] = "fourth" end,
    }
    local app = closing(R.app(MODEL .. [[
      return luagent.config{ model = model,
        agents = { luagent.agent{ id = "a", instructions = "s", hooks = { before_step = S.hooks } } } } ]], S))
    local res = app:run("a", "hi")
    assert.equal("completed", res.status)
    assert.same({ "first", "second:A", "third", "fourth" }, order)
    assert.same({ "system:s", "user:hi", "user:A", "user:B" }, shape(S.requests[1]))
    order = {}
    S.stop = true
    res = app:run("a", "hi")
    assert.equal("stopped", res.status)
    assert.same({ "first", "second:A", "third" }, order)
  end)
end)

describe("runtime hooks: after_step and should_stop", function()
  it("after_step sees every step (iteration, last reply, usage, ids)", function()
    local S = new_S({ { tool_calls = { { name = "echo", arguments = { text = "a" } } }, usage = { prompt_tokens = 2 } },
      { text = "done", usage = { prompt_tokens = 3 } } })
    local seen = {}
    S.after = function(step)
      seen[#seen + 1] = { iteration = step.iteration, text = step.last_reply.text,
        calls = step.last_reply.tool_calls and #step.last_reply.tool_calls or 0,
        tokens = step.usage.prompt_tokens, agent = step.agent_id, run = step.run_id,
        ctx_run = step.ctx.run_id, n = #step.messages }
      return { stop = true } -- observational: ignored
    end
    local app = closing(R.app(MODEL .. [[
      return luagent.config{ model = model,
        agents = { luagent.agent{ id = "a", tools = { echo }, hooks = { after_step = S.after } } } } ]], S))
    local res = app:run("a", "hi")
    assert.equal("completed", res.status)
    assert.same({
      { iteration = 1, calls = 1, tokens = 2, agent = "a", run = res.run_id, ctx_run = res.run_id, n = 4 },
      { iteration = 2, text = "done", calls = 0, tokens = 5, agent = "a", run = res.run_id, ctx_run = res.run_id, n = 5 },
    }, seen)
  end)

  it("should_stop ends the run stopped with its reason, after the step's tool calls ran", function()
    local S = new_S(function(_, n) return { text = "thinking " .. n, tool_calls = { { name = "echo", arguments = { text = tostring(n) } } } } end)
    S.should_stop = function(step)
      if step.iteration == 2 then return "two steps are enough" end
    end
    local app = closing(R.app(MODEL .. [[
      return luagent.config{ model = model,
        agents = { luagent.agent{ id = "a", tools = { echo }, hooks = { should_stop = S.should_stop } } } } ]], S))
    local res = app:run("a", "hi")
    assert.equal("stopped", res.status)
    assert.equal("two steps are enough", res.error.message)
    assert.equal("thinking 2", res.final)
    assert.equal(2, #S.requests)
    assert.same({ "echo:1", "echo:2" }, S.log)
    assert.truthy(R.well_formed(res.messages))
  end)

  it("several should_stop run in order and the first truthy one wins", function()
    local S = new_S({ R.call("echo", { text = "x" }), "never" })
    local order = {}
    S.hooks = {
      function() order[#order + 1] = 1; return nil end,
      function() order[#order + 1] = 2; return true end,
      function() order[#order + 1] = 3; return "not me" end,
    }
    local app = closing(R.app(MODEL .. [[
      return luagent.config{ model = model,
        agents = { luagent.agent{ id = "a", tools = { echo }, hooks = { should_stop = S.hooks } } } } ]], S))
    local res = app:run("a", "hi")
    assert.equal("stopped", res.status)
    assert.same({ 1, 2 }, order)
    assert.is_string(res.error.message)
    local errs = R.of_kind(R.events(app), "error", res.run_id)
    assert.equal("stopped", errs[1].payload.status)
  end)
end)

describe("runtime hooks: before_finalize", function()
  it("a string vetoes the end: it goes to the model as a user message and the loop goes on", function()
    local S = new_S({ "draft", "final answer" })
    local vetoes = 0
    S.hook = function(step)
      if step.last_reply.text == "draft" then vetoes = vetoes + 1; return "Check your work." end
    end
    local app = closing(R.app(MODEL .. [[
      return luagent.config{ model = model,
        agents = { luagent.agent{ id = "a", instructions = "s", hooks = { before_finalize = S.hook } } } } ]], S))
    local res = app:run("a", "hi")
    assert.equal("completed", res.status)
    assert.equal("final answer", res.final)
    assert.equal(1, vetoes)
    assert.same({ "system:s", "user:hi", "assistant:draft", "user:Check your work." }, shape(S.requests[2]))
  end)

  it("{continue = true, message} vetoes too; several run in order, the first veto wins", function()
    local S = new_S({ "one", "two", "three" })
    local order = {}
    S.hooks = {
      function(step) order[#order + 1] = "a" .. step.iteration; return { continue = false, message = "ignored" } end,
      function(step)
        order[#order + 1] = "b" .. step.iteration
        if step.iteration == 1 then return { continue = true, message = "More." } end
        if step.iteration == 2 then return { continue = true } end
      end,
      function(step) order[#order + 1] = "c" .. step.iteration end,
    }
    local app = closing(R.app(MODEL .. [[
      return luagent.config{ model = model,
        agents = { luagent.agent{ id = "a", hooks = { before_finalize = S.hooks } } } } ]], S))
    local res = app:run("a", "hi")
    assert.equal("completed", res.status)
    assert.equal("three", res.final)
    assert.same({ "a1", "b1", "a2", "b2", "a3", "b3", "c3" }, order)
    local last = S.requests[3].messages
    assert.equal("More.", last[4].content)
    assert.equal("user", last[6].role) -- {continue = true} without a message adds a default one
    assert.is_string(last[6].content)
  end)

  it("is not consulted for replies with tool calls, and a veto loop ends at max_iterations", function()
    local S = new_S(function(_, n)
      if n == 1 then return R.call("echo", { text = "x" }) end
      return { text = "answer " .. n }
    end)
    local calls = 0
    S.hook = function() calls = calls + 1; return "no" end
    local app = closing(R.app(MODEL .. [[
      return luagent.config{ model = model,
        agents = { luagent.agent{ id = "a", tools = { echo }, budget = { max_iterations = 4 },
          hooks = { before_finalize = S.hook } } } } ]], S))
    local res = app:run("a", "hi")
    assert.equal("budget_exceeded", res.status)
    assert.equal("max_iterations", res.error.budget)
    assert.equal(3, calls)
  end)
end)

describe("runtime hooks: before_tool and after_tool", function()
  it("before_tool can block a call (true or a reason); the handler does not run", function()
    local S = new_S({ { tool_calls = { { id = "1", name = "echo", arguments = { text = "a" } },
      { id = "2", name = "shout", arguments = { text = "b" } } } }, "ok" })
    S.hook = function(call)
      if call.name == "echo" then return { block = true } end
      return { block = "shouting is not allowed" }
    end
    local app = closing(R.app(MODEL .. [[
      return luagent.config{ model = model,
        agents = { luagent.agent{ id = "a", tools = { echo, shout }, hooks = { before_tool = S.hook } } } } ]], S))
    local res = app:run("a", "hi")
    assert.equal("completed", res.status)
    assert.same({}, S.log)
    local r = R.tool_results(res.messages)
    assert.is_false(r[1].ok)
    assert.equal("blocked", r[1].cause.kind)
    assert.is_false(r[2].ok)
    assert.equal("blocked", r[2].cause.kind)
    assert.equal("shouting is not allowed", r[2].error)
    local ends = R.of_kind(R.events(app), "tool_end", res.run_id)
    assert.equal("blocked", ends[1].payload.kind)
  end)

  it("before_tool {block = true, reason} uses the reason", function()
    local S = new_S({ R.call("echo", { text = "a" }), "ok" })
    S.hook = function() return { block = true, reason = "read-only mode" } end
    local app = closing(R.app(MODEL .. [[
      return luagent.config{ model = model,
        agents = { luagent.agent{ id = "a", tools = { echo }, hooks = { before_tool = S.hook } } } } ]], S))
    local r = R.tool_results(app:run("a", "hi").messages)[1]
    assert.equal("read-only mode", r.error)
  end)

  it("before_tool can rewrite name and arguments; several compose in order; rewritten calls are validated", function()
    local S = new_S({ { tool_calls = { { id = "k", name = "echo", arguments = '{"text":"hello"}' } } }, "ok" })
    local seen = {}
    S.hooks = {
      function(call, step)
        seen[#seen + 1] = { call.id, call.name, call.arguments.text, call.raw_arguments,
          step.run_id ~= nil }
        return { arguments = { text = "rewritten" } }
      end,
      function(call)
        seen[#seen + 1] = { call.id, call.name, call.arguments.text }
        return { name = "shout" }
      end,
      function(call)
        seen[#seen + 1] = { call.id, call.name, call.arguments.text }
      end,
    }
    local app = closing(R.app(MODEL .. [[
      return luagent.config{ model = model,
        agents = { luagent.agent{ id = "a", tools = { echo, shout }, hooks = { before_tool = S.hooks } } } } ]], S))
    local res = app:run("a", "hi")
    assert.equal("completed", res.status)
    assert.same({ { "k", "echo", "hello", '{"text":"hello"}', true }, { "k", "echo", "rewritten" },
      { "k", "shout", "rewritten" } }, seen)
    assert.same({ "shout:rewritten" }, S.log)
    local t = R.tool_messages(res.messages)[1]
    assert.equal("k", t.id)
    assert.same({ ok = true, value = "REWRITTEN" }, t.result)
    -- the transcript keeps what the model asked for
    assert.equal("echo", res.messages[3].tool_calls[1].name)
    -- a rewrite that breaks the schema is a validation problem
    S.requests = {}
    S.hooks[1] = function() return { arguments = {} } end
    res = app:run("a", "hi")
    local r = R.tool_results(res.messages)[1]
    assert.equal("validation", r.cause.kind)
    assert.same({ "shout:rewritten" }, S.log)
  end)

  it("a block ends the before_tool chain", function()
    local S = new_S({ R.call("echo", { text = "a" }), "ok" })
    local order = {}
    S.hooks = {
      function() order[#order + 1] = 1 end,
      function() order[#order + 1] = 2; return { block = "no" } end,
      function() order[#order + 1] = 3 end,
    }
    local app = closing(R.app(MODEL .. [[
      return luagent.config{ model = model,
        agents = { luagent.agent{ id = "a", tools = { echo }, hooks = { before_tool = S.hooks } } } } ]], S))
    app:run("a", "hi")
    assert.same({ 1, 2 }, order)
  end)

  it("before_tool can answer a call itself with {result = ...}", function()
    local S = new_S({ { tool_calls = { { name = "echo", arguments = { text = "a" } },
      { name = "echo", arguments = { text = "b" } } } }, "ok" })
    S.hook = function(call)
      if call.arguments.text == "a" then return { result = { ok = true, value = "cached" } } end
      return { result = "plain value" }
    end
    local app = closing(R.app(MODEL .. [[
      return luagent.config{ model = model,
        agents = { luagent.agent{ id = "a", tools = { echo }, hooks = { before_tool = S.hook } } } } ]], S))
    local res = app:run("a", "hi")
    assert.same({}, S.log)
    assert.same({ { ok = true, value = "cached" }, { ok = true, value = "plain value" } },
      R.tool_results(res.messages))
  end)

  it("after_tool can replace the result; several compose in order", function()
    local S = new_S({ R.call("shout", { text = "secret" }), "ok" })
    local order = {}
    S.hooks = {
      function(call, result, step)
        order[#order + 1] = "1:" .. call.name .. ":" .. tostring(result.value)
        return { ok = true, value = "[redacted]" }
      end,
      function(call, result)
        order[#order + 1] = "2:" .. tostring(result.value)
        return nil -- keep
      end,
      function(call, result)
        order[#order + 1] = "3:" .. tostring(result.value)
        return { ok = true, value = result.value .. "!" }
      end,
    }
    local app = closing(R.app(MODEL .. [[
      return luagent.config{ model = model,
        agents = { luagent.agent{ id = "a", tools = { shout }, hooks = { after_tool = S.hooks } } } } ]], S))
    local res = app:run("a", "hi")
    assert.same({ "1:shout:SECRET", "2:[redacted]", "3:[redacted]" }, order)
    assert.same({ ok = true, value = "[redacted]!" }, R.tool_results(res.messages)[1])
    local ends = R.of_kind(R.events(app), "tool_end", res.run_id)
    assert.is_true(ends[1].payload.ok)
  end)

  it("after_tool sees validation failures and blocked calls too", function()
    local S = new_S({ { tool_calls = { { name = "nope" }, { name = "echo", arguments = { text = "x" } } } }, "ok" })
    local seen = {}
    S.before = function(call) if call.name == "echo" then return { block = true } end end
    S.after = function(call, result) seen[#seen + 1] = result.cause.kind end
    local app = closing(R.app(MODEL .. [[
      return luagent.config{ model = model,
        agents = { luagent.agent{ id = "a", tools = { echo },
          hooks = { before_tool = S.before, after_tool = S.after } } } } ]], S))
    app:run("a", "hi")
    assert.same({ "validation", "blocked" }, seen)
  end)

  it("after_tool returning something that is not a ToolResult fails the run, naming the hook", function()
    local S = new_S({ R.call("echo", { text = "x" }), "ok" })
    S.after = function() return "oops" end
    local app = closing(R.app(MODEL .. [[
      return luagent.config{ model = model,
        agents = { luagent.agent{ id = "a", tools = { echo }, hooks = { after_tool = S.after } } } } ]], S))
    local res = app:run("a", "hi")
    assert.equal("failed", res.status)
    assert.equal("hook", res.error.kind)
    assert.truthy(res.error.message:find("after_tool", 1, true))
    assert.truthy(R.well_formed(res.messages))
  end)
end)

describe("runtime hooks: errors", function()
  for _, name in ipairs({ "before_step", "after_step", "should_stop", "before_finalize", "before_tool", "after_tool" }) do
    it("a raising " .. name .. " hook fails the run with error.kind = hook, naming it", function()
      local S = new_S({ R.call("echo", { text = "x" }), "done" })
      S.hook = function() error("broken hook") end
      S.name = name
      local app = closing(R.app(MODEL .. [[
        return luagent.config{ model = model,
          agents = { luagent.agent{ id = "a", tools = { echo }, hooks = { [S.name] = S.hook } } } } ]], S))
      local res = app:run("a", "hi")
      assert.equal("failed", res.status)
      assert.equal("hook", res.error.kind)
      assert.truthy(res.error.message:find(name, 1, true), res.error.message)
      assert.truthy(res.error.message:find("broken hook", 1, true), res.error.message)
      assert.truthy(R.well_formed(res.messages))
    end)
  end
end)
