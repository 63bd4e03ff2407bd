-- Agent runtime: app:chat keeps a conversation per (agent, thread_id), and
-- a failed turn leaves a well-formed history.
local closing = require "support.closing"
local R = require "support.runtime_helpers"

local MODEL = [[
local note = luagent.tool{ name = "note", handler = function(args) return "noted" end }
local halt = luagent.host_tool{ name = "halt" }
local model = luagent.function_model(function(req, ctx)
  S.requests[#S.requests + 1] = req
  return S.reply(req, #S.requests, ctx)
end)
]]

local function last_user(req)
  for i = #req.messages, 1, -1 do
    if req.messages[i].role == "user" then return req.messages[i].content end
  end
end

local function shape(messages)
  local out = {}
  for i, m in ipairs(messages) do
    out[i] = m.role .. ":" .. tostring(m.content or (m.tool_calls and "calls"))
  end
  return out
end

describe("runtime chat", function()
  it("keeps history across calls on one thread and keeps threads apart", function()
    local S = { requests = {} }
    S.reply = function(req) return "re: " .. last_user(req) end
    local app = closing(R.app(MODEL .. [[
      return luagent.config{ model = model,
        agents = { luagent.agent{ id = "a", instructions = "sys" }, luagent.agent{ id = "b", instructions = "sysb" } } } ]], S))
    local r1 = app:chat("a", "hello", { thread_id = "t1" })
    assert.equal("completed", r1.status)
    assert.equal("re: hello", r1.final)
    local r2 = app:chat("a", "again", { thread_id = "t1" })
    assert.equal("re: again", r2.final)
    assert.same({ "system:sys", "user:hello", "assistant:re: hello", "user:again" }, shape(S.requests[2].messages))
    assert.same({ "system:sys", "user:hello", "assistant:re: hello", "user:again", "assistant:re: again" },
      shape(r2.messages))
    -- another thread of the same agent starts empty
    app:chat("a", "other", { thread_id = "t2" })
    assert.same({ "system:sys", "user:other" }, shape(S.requests[3].messages))
    -- another agent on the same thread id is another conversation
    app:chat("b", "hi b", { thread_id = "t1" })
    assert.same({ "system:sysb", "user:hi b" }, shape(S.requests[4].messages))
    -- the first thread goes on where it was
    app:chat("a", "third", { thread_id = "t1" })
    assert.same({ "system:sys", "user:hello", "assistant:re: hello", "user:again", "assistant:re: again",
      "user:third" }, shape(S.requests[5].messages))
    -- the saved thread has no system message (instructions are built per turn)
    assert.same({ "user:hello", "assistant:re: hello", "user:again", "assistant:re: again",
      "user:third", "assistant:re: third" }, shape(app:thread("a", "t1")))
    assert.same({}, app:thread("a", "nope"))
    -- app:run does not touch threads
    app:run("a", "one-off", { thread_id = "t1" })
    assert.equal(6, #app:thread("a", "t1"))
  end)

  it("keeps tool calls and tool messages in the history", function()
    local S = { requests = {} }
    S.reply = function(req, n)
      if n == 1 then return { tool_calls = { { id = "c1", name = "note", arguments = { x = 1 } } } } end
      return "ok " .. n
    end
    local app = closing(R.app(MODEL .. [[
      return luagent.config{ model = model, agents = { luagent.agent{ id = "a", tools = { note } } } } ]], S))
    app:chat("a", "one", { thread_id = "t" })
    app:chat("a", "two", { thread_id = "t" })
    local msgs = S.requests[3].messages
    assert.same({ "system:", "user:one", "assistant:calls", "tool:" .. msgs[4].content, "assistant:ok 2", "user:two" },
      shape(msgs))
    assert.equal("c1", msgs[3].tool_calls[1].id)
    assert.equal("c1", msgs[4].tool_call_id)
    assert.same({ ok = true, value = "noted" }, R.json.decode(msgs[4].content))
    assert.truthy(R.well_formed(app:thread("a", "t")))
  end)

  it("saves the whole turn when before_step trims what the model sees", function()
    local S = { requests = {} }
    S.reply = function(req) return "re: " .. last_user(req) end
    S.trim = function(step) -- the system message and the last message only
      if #step.messages > 2 then
        return { messages = { step.messages[1], step.messages[#step.messages] } }
      end
    end
    local app = closing(R.app(MODEL .. [[
      return luagent.config{ model = model,
        agents = { luagent.agent{ id = "a", instructions = "sys", hooks = { before_step = S.trim } } } } ]], S))
    app:chat("a", "one", { thread_id = "t" })
    app:chat("a", "two", { thread_id = "t" })
    app:chat("a", "three", { thread_id = "t" })
    assert.same({ "system:sys", "user:three" }, shape(S.requests[3].messages))
    assert.same({ "user:one", "assistant:re: one", "user:two", "assistant:re: two", "user:three",
      "assistant:re: three" }, shape(app:thread("a", "t")))
  end)

  it("requires a thread_id", function()
    local app = closing(R.app(MODEL .. [[
      return luagent.config{ model = model, agents = { luagent.agent{ id = "a" } } } ]], { requests = {} }))
    assert.has_error(function() app:chat("a", "x") end)
    assert.has_error(function() app:chat("a", "x", {}) end)
  end)
end)

describe("runtime chat: failed turns leave a well-formed history", function()
  local function check_next_turn(app, S, thread)
    local before = #S.requests
    local res = app:chat("a", "next", { thread_id = thread })
    assert.equal("completed", res.status, res.error and res.error.message)
    local req = S.requests[before + 1]
    local ok, why = R.well_formed(req.messages)
    assert.is_true(ok, why)
    assert.equal("next", req.messages[#req.messages].content)
    local ok2, why2 = R.well_formed(app:thread("a", thread))
    assert.is_true(ok2, why2)
  end

  it("the model errors after a tool call was made", function()
    local S = { requests = {}, fail = true }
    S.reply = function(req, n)
      if S.fail and n == 1 then return { tool_calls = { { id = "c1", name = "note" }, { id = "c2", name = "note" } } } end
      if S.fail and n == 2 then error({ kind = "model", message = "provider down" }) end
      return "fine"
    end
    local app = closing(R.app(MODEL .. [[
      return luagent.config{ model = model, agents = { luagent.agent{ id = "a", tools = { note } } } } ]], S))
    local res = app:chat("a", "go", { thread_id = "t" })
    assert.equal("failed", res.status)
    assert.equal("provider down", res.error.message)
    assert.truthy(R.well_formed(res.messages))
    local saved = app:thread("a", "t")
    assert.same({ "user:go", "assistant:calls" }, { shape(saved)[1], shape(saved)[2] })
    assert.truthy(R.well_formed(saved))
    S.fail = false
    check_next_turn(app, S, "t")
  end)

  it("a hook fails the run between the tool calls of one reply", function()
    local S = { requests = {} }
    S.reply = function(req, n)
      if n == 1 then return { tool_calls = { { id = "c1", name = "note" }, { id = "c2", name = "note" },
        { id = "c3", name = "note" } } } end
      return "fine"
    end
    S.before_tool = function(call) if call.id == "c2" and not S.healed then error("policy engine down") end end
    local app = closing(R.app(MODEL .. [[
      return luagent.config{ model = model,
        agents = { luagent.agent{ id = "a", tools = { note }, hooks = { before_tool = S.before_tool } } } } ]], S))
    local res = app:chat("a", "go", { thread_id = "t" })
    assert.equal("failed", res.status)
    assert.equal("hook", res.error.kind)
    local ok, why = R.well_formed(res.messages)
    assert.is_true(ok, why)
    local t = R.tool_messages(res.messages)
    assert.equal(3, #t)
    assert.same({ ok = true, value = "noted" }, t[1].result)
    assert.is_false(t[2].result.ok)
    assert.is_false(t[3].result.ok)
    S.healed = true
    check_next_turn(app, S, "t")
  end)

  it("a hook stops the run mid-turn", function()
    local S = { requests = {} }
    S.reply = function(req, n)
      if n == 1 then return { text = "working", tool_calls = { { id = "c1", name = "note" } } } end
      return "fine"
    end
    S.should_stop = function(step) if not S.healed then return "user pressed stop" end end
    local app = closing(R.app(MODEL .. [[
      return luagent.config{ model = model,
        agents = { luagent.agent{ id = "a", tools = { note }, hooks = { should_stop = S.should_stop } } } } ]], S))
    local res = app:chat("a", "go", { thread_id = "t" })
    assert.equal("stopped", res.status)
    assert.equal("user pressed stop", res.error.message)
    assert.truthy(R.well_formed(app:thread("a", "t")))
    S.healed = true
    check_next_turn(app, S, "t")
  end)

  it("a run cancelled during a tool call", function()
    local S = { requests = {} }
    S.reply = function(req, n, ctx)
      S.run_id = ctx.run_id
      if n == 1 then return { tool_calls = { { id = "c1", name = "halt" }, { id = "c2", name = "note" } } } end
      return "fine"
    end
    local app = closing(R.app(MODEL .. [[
      return luagent.config{ model = model, agents = { luagent.agent{ id = "a", tools = { note, halt } } } } ]], S))
    app:host_tool("halt", function(args, info)
      app:cancel(info.run_id)
      return "cancel requested"
    end)
    local res = app:chat("a", "go", { thread_id = "t" })
    assert.equal("cancelled", res.status)
    local ok, why = R.well_formed(res.messages)
    assert.is_true(ok, why)
    -- the call after the cancel did not run
    local t = R.tool_messages(res.messages)
    assert.same({ ok = true, value = "cancel requested" }, t[1].result)
    assert.equal("cancelled", t[2].result.cause.kind)
    assert.truthy(R.well_formed(app:thread("a", "t")))
    check_next_turn(app, S, "t")
  end)

  it("a budget ends the turn with its tool calls answered", function()
    local S = { requests = {} }
    S.reply = function(req, n)
      if #S.requests <= 2 then return { tool_calls = { { name = "note" } } } end
      return "fine"
    end
    local app = closing(R.app(MODEL .. [[
      return luagent.config{ model = model,
        agents = { luagent.agent{ id = "a", tools = { note }, budget = { max_iterations = 2 } } } } ]], S))
    local res = app:chat("a", "go", { thread_id = "t" })
    assert.equal("budget_exceeded", res.status)
    check_next_turn(app, S, "t")
  end)
end)
