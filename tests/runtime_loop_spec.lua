-- Agent runtime: the loop (docs/architecture.md), tool problems going back to the
-- model (R-12), integer arguments, tool message content and tool-call ids.
local utf8_len = require "support.utf8_len"
local closing = require "support.closing"
local R = require "support.runtime_helpers"
local json = R.json

local TOOLS = [[
local add = luagent.tool{
  name = "add", description = "Add two integers.",
  input_schema = { type = "object",
    properties = { a = { type = "integer" }, b = { type = "integer" } },
    required = { "a", "b" } },
  handler = function(args) return args.a + args.b end,
}
local pick = luagent.tool{
  name = "pick",
  input_schema = { type = "object",
    properties = { color = { type = "string", enum = { "red", "green" } },
                   n = { type = "integer" } },
    required = { "color" }, additionalProperties = false },
  handler = function(args) return args.color end,
}
local boom = luagent.tool{ name = "boom", handler = function() error("kaboom") end }
local seen = luagent.tool{
  name = "seen",
  input_schema = { type = "object", properties = { n = { type = "integer" } } },
  handler = function(args)
    if S.seen then S.seen[#S.seen + 1] = args end
    -- math.type where Lua has integers; 5.1's integers are integral numbers
    local t = math.type and math.type(args.n) or
      (type(args.n) == "number" and (args.n == math.floor(args.n) and "integer" or "float") or nil)
    return { n = args.n, type = t }
  end,
}
]]

describe("runtime loop", function()
  it("runs a tool and answers: status, final, full transcript, summed usage", function()
    local app = closing(R.app(TOOLS .. [[
      return luagent.config{
        model = luagent.static_model{ responses = {
          { tool_calls = { { id = "call_add_1", name = "add", arguments = { a = 2, b = 3 } } },
            usage = { prompt_tokens = 10, completion_tokens = 4, total_tokens = 14 } },
          { text = "2 + 3 = 5", usage = { prompt_tokens = 25, completion_tokens = 6 } },
        } },
        agents = { luagent.agent{ id = "calc", instructions = "You add.", tools = { add } } },
      } ]]))
    local res = app:run("calc", "What is 2 + 3?")
    assert.equal("completed", res.status)
    assert.equal("2 + 3 = 5", res.final)
    assert.is_nil(res.error)
    assert.is_string(res.run_id)
    assert.same({ "system", "user", "assistant", "tool", "assistant" }, R.roles(res.messages))
    assert.equal("You add.", res.messages[1].content)
    assert.equal("What is 2 + 3?", res.messages[2].content)
    local call = res.messages[3].tool_calls[1]
    assert.equal("call_add_1", call.id)
    assert.equal("add", call.name)
    assert.equal("call_add_1", res.messages[4].tool_call_id)
    assert.same({ ok = true, value = 5 }, json.decode(res.messages[4].content))
    assert.equal("2 + 3 = 5", res.messages[5].content)
    -- total_tokens is prompt + completion when the reply leaves it out
    assert.same({ prompt_tokens = 35, completion_tokens = 10, total_tokens = 45 }, res.usage)
  end)

  it("sums usage given with and without total_tokens", function()
    local app = closing(R.app([[
      return luagent.config{
        model = luagent.static_model{ responses = {
          { tool_calls = { { name = "nothing" } }, usage = { prompt_tokens = 1, completion_tokens = 2 } },
          { text = "ok", usage = { prompt_tokens = 3, completion_tokens = 4, total_tokens = 7 } },
        } },
        agents = { luagent.agent{ id = "a" } },
      } ]]))
    local res = app:run("a", "go")
    assert.equal("completed", res.status)
    assert.same({ prompt_tokens = 4, completion_tokens = 6, total_tokens = 10 }, res.usage)
  end)

  it("passes instructions given as a function of ctx", function()
    local app = closing(R.app([[
      return luagent.config{
        model = luagent.static_model{ responses = { "done" } },
        agents = { luagent.agent{ id = "a", instructions = function(ctx)
          return "agent " .. ctx.agent_id .. " at depth " .. ctx.depth
        end } },
      } ]]))
    local res = app:run("a", "go")
    assert.equal("agent a at depth 0", res.messages[1].content)
  end)

  it("shows the model each tool's name, description and input_schema", function()
    local requests = {}
    local app = closing(R.app(TOOLS .. [[
      return luagent.config{
        model = luagent.function_model(function(req) S.requests[#S.requests + 1] = req; return { text = "ok" } end),
        agents = { luagent.agent{ id = "a", tools = { add, boom } } },
      } ]], { requests = requests }))
    assert.equal("completed", app:run("a", "go").status)
    local specs = requests[1].tools
    assert.equal(2, #specs)
    assert.equal("add", specs[1].name)
    assert.equal("Add two integers.", specs[1].description)
    assert.same({ "a", "b" }, specs[1].input_schema.required)
    assert.equal("boom", specs[2].name)
    assert.is_nil(specs[1].handler)
  end)
end)

describe("runtime tool problems go back to the model (R-12)", function()
  local function run_calls(calls)
    local app = R.app(TOOLS .. [[
      return luagent.config{
        model = luagent.static_model{ responses = { { tool_calls = S.calls }, "recovered" } },
        agents = { luagent.agent{ id = "a", tools = { add, pick, boom } } },
      } ]], { calls = calls })
    local res = app:run("a", "go")
    return res, app
  end

  local cases = {
    { "an unknown tool", { name = "nope", arguments = {} }, "unknown tool \"nope\"" },
    { "arguments that are not JSON", { name = "add", arguments = "{a: 1" }, "not valid JSON" },
    { "arguments that are JSON but not an object", { name = "add", arguments = "[1, 2]" }, "object" },
    { "a missing required field", { name = "add", arguments = { a = 1 } }, "b" },
    { "a wrong type", { name = "add", arguments = { a = 1, b = "two" } }, "integer" },
    { "an enum miss", { name = "pick", arguments = { color = "blue" } }, "blue" },
    { "an extra property with additionalProperties = false",
      { name = "pick", arguments = { color = "red", shade = "dark" } }, "shade" },
  }
  for _, case in ipairs(cases) do
    it(case[1] .. " is a validation ToolResult and the run completes", function()
      local res, app = run_calls({ case[2] })
      assert.equal("completed", res.status)
      assert.equal("recovered", res.final)
      local results = R.tool_results(res.messages)
      assert.equal(1, #results)
      local r = results[1]
      assert.is_false(r.ok)
      assert.equal("validation", r.cause.kind)
      assert.is_string(r.error)
      assert.truthy(r.error:find(case[3], 1, true), r.error)
      assert.equal(r.error, r.cause.message)
      local ends = R.of_kind(R.events(app), "tool_end", res.run_id)
      assert.equal("validation", ends[1].payload.kind)
      assert.is_false(ends[1].payload.ok)
      app:close()
    end)
  end

  it("a handler error is a runtime ToolResult; the traceback is in tool_end only", function()
    local res, app = run_calls({ { id = "c9", name = "boom", arguments = {} } })
    assert.equal("completed", res.status)
    local t = R.tool_messages(res.messages)[1]
    assert.equal("c9", t.id)
    assert.is_false(t.result.ok)
    assert.equal("runtime", t.result.cause.kind)
    assert.truthy(t.result.error:find("kaboom", 1, true))
    assert.is_nil(t.content:find("stack traceback", 1, true))
    assert.is_nil(t.result.traceback)
    local ends = R.of_kind(R.events(app), "tool_end", res.run_id)
    assert.equal(1, #ends)
    assert.equal("c9", ends[1].payload.tool_call_id)
    assert.equal("runtime", ends[1].payload.kind)
    assert.truthy(ends[1].payload.traceback:find("stack traceback", 1, true))
    assert.truthy(ends[1].payload.traceback:find("kaboom", 1, true))
    app:close()
  end)

  it("a handler raising a table with a message reads well", function()
    local app = closing(R.app([[
      local t = luagent.tool{ name = "t", handler = function() error({ message = "disk full" }) end }
      return luagent.config{
        model = luagent.static_model{ responses = { { tool_calls = { { name = "t" } } }, "ok" } },
        agents = { luagent.agent{ id = "a", tools = { t } } },
      } ]]))
    local res = app:run("a", "go")
    local r = R.tool_results(res.messages)[1]
    assert.equal("runtime", r.cause.kind)
    assert.truthy(r.error:find("disk full", 1, true))
  end)

  it("several problems in one reply each get their answer, in order", function()
    local res, app = run_calls({
      { id = "1", name = "nope" }, { id = "2", name = "add", arguments = { a = 1, b = 1 } },
      { id = "3", name = "boom" },
    })
    assert.equal("completed", res.status)
    local t = R.tool_messages(res.messages)
    assert.same({ "1", "2", "3" }, { t[1].id, t[2].id, t[3].id })
    assert.equal("validation", t[1].result.cause.kind)
    assert.same({ ok = true, value = 2 }, t[2].result)
    assert.equal("runtime", t[3].result.cause.kind)
    app:close()
  end)
end)

describe("runtime integer arguments and argument forms", function()
  local function one(arguments)
    local seen = {}
    local app = closing(R.app(TOOLS .. [[
      return luagent.config{
        model = luagent.static_model{ responses = {
          { tool_calls = { { id = "x", name = "seen", arguments = S.arguments } } }, "ok" } },
        agents = { luagent.agent{ id = "a", tools = { seen } } },
      } ]], { seen = seen, arguments = arguments }))
    local res = app:run("a", "go")
    assert.equal("completed", res.status)
    return R.tool_results(res.messages)[1], seen[1]
  end

  it("accepts 2 as JSON text and as a Lua integer", function()
    local r, args = one('{"n": 2}')
    assert.same({ ok = true, value = { n = 2, type = "integer" } }, r)
    assert.equal(2, args.n)
    r = one({ n = 2 })
    assert.same({ ok = true, value = { n = 2, type = "integer" } }, r)
  end)

  it("accepts 2.0 as JSON text and as a Lua float, and hands the handler an integer", function()
    local r = one('{"n": 2.0}')
    assert.same({ ok = true, value = { n = 2, type = "integer" } }, r)
    r = one({ n = 2.0 })
    assert.same({ ok = true, value = { n = 2, type = "integer" } }, r)
  end)

  it("rejects 2.5 as JSON text and as a Lua float", function()
    for _, a in ipairs({ '{"n": 2.5}', { n = 2.5 } }) do
      local r, args = one(a)
      assert.is_false(r.ok)
      assert.equal("validation", r.cause.kind)
      assert.truthy(r.error:find("2.5", 1, true))
      assert.is_nil(args)
    end
  end)

  it("treats empty or missing arguments as {}", function()
    local r = one("")
    assert.same({ ok = true, value = { } }, r)
    r = one(nil)
    assert.same({ ok = true, value = { } }, r)
  end)

  it("gives the handler its own copy of table arguments (the transcript keeps what the model sent)", function()
    local app = closing(R.app([[
      local m = luagent.tool{ name = "m", handler = function(args) args.x = "changed"; return true end }
      return luagent.config{
        model = luagent.static_model{ responses = {
          { tool_calls = { { id = "c", name = "m", arguments = { x = "orig" } } } }, "ok" } },
        agents = { luagent.agent{ id = "a", tools = { m } } },
      } ]]))
    local res = app:run("a", "go")
    assert.equal("orig", res.messages[3].tool_calls[1].arguments.x)
  end)

  it("a table argument that is not JSON data is a validation problem", function()
    local r = one({ n = 1, f = function() end })
    assert.is_false(r.ok)
    assert.equal("validation", r.cause.kind)
  end)
end)

describe("runtime tool messages and ids", function()
  it("a tool message's content is the JSON of the whole ToolResult", function()
    local app = closing(R.app([[
      local t = luagent.tool{ name = "t", handler = function()
        return { list = luagent.json.array({ 1, 2 }), text = "a/b", nested = { ok = true } }
      end }
      return luagent.config{
        model = luagent.static_model{ responses = { { tool_calls = { { name = "t" } } }, "ok" } },
        agents = { luagent.agent{ id = "a", tools = { t } } },
      } ]]))
    local res = app:run("a", "go")
    local content = res.messages[4].content
    assert.same({ ok = true, value = { list = { 1, 2 }, text = "a/b", nested = { ok = true } } },
      json.decode(content))
    assert.truthy(content:find('"ok":true', 1, true))
  end)

  it("cuts the content to max_tool_output_bytes with a marker (default 16384)", function()
    local src = [[
      local big = luagent.tool{ name = "big", handler = function() return string.rep("x", 40000) end }
      local small = luagent.tool{ name = "small", handler = function() return string.rep("y", 100) end }
      return luagent.config{
        max_tool_output_bytes = S.max,
        model = luagent.static_model{ responses = { { tool_calls = { { name = "big" }, { name = "small" } } }, "ok" } },
        agents = { luagent.agent{ id = "a", tools = { big, small } } },
      } ]]
    for _, max in ipairs({ false, 1000 }) do
      local app = closing(R.app(src, { max = max or nil }))
      local res = app:run("a", "go")
      assert.equal("completed", res.status)
      local limit = max or 16384
      local big, small = res.messages[4].content, res.messages[5].content
      assert.truthy(#big > limit - 8 and #big < limit + 100, tostring(#big))
      assert.truthy(big:find("[luagent: cut to", 1, true), big:sub(-80))
      assert.equal(string.rep("x", 50), big:sub(22, 71)) -- {"ok":true,"value":"xxx...
      assert.same({ ok = true, value = string.rep("y", 100) }, json.decode(small))
    end
  end)

  it("does not split a UTF-8 sequence when cutting", function()
    local app = closing(R.app([[
      local t = luagent.tool{ name = "t", handler = function() return string.rep("é", 100) end }
      return luagent.config{
        max_tool_output_bytes = 51,
        model = luagent.static_model{ responses = { { tool_calls = { { name = "t" } } }, "ok" } },
        agents = { luagent.agent{ id = "a", tools = { t } } },
      } ]]))
    local res = app:run("a", "go")
    local content = res.messages[4].content
    assert.truthy(utf8_len(content), "valid UTF-8")
    assert.truthy(content:find("[luagent: cut to", 1, true))
  end)

  it("keeps tool-call ids from the model verbatim and makes unique ones when missing", function()
    local app = closing(R.app([[
      local t = luagent.tool{ name = "t", handler = function() return 1 end }
      return luagent.config{
        model = luagent.static_model{ responses = {
          { tool_calls = { { id = "call_Z9/weird id:1", name = "t" }, { name = "t" }, { name = "t", id = "" } } },
          { tool_calls = { { name = "t" } } },
          "ok" } },
        agents = { luagent.agent{ id = "a", tools = { t } } },
      } ]]))
    local res = app:run("a", "go")
    assert.equal("completed", res.status)
    assert.truthy(R.well_formed(res.messages))
    local calls = res.messages[3].tool_calls
    assert.equal("call_Z9/weird id:1", calls[1].id)
    local ids = { [calls[1].id] = true }
    for _, c in ipairs({ calls[2], calls[3], res.messages[7].tool_calls[1] }) do
      assert.is_string(c.id)
      assert.truthy(#c.id > 0)
      assert.is_nil(ids[c.id], "ids are unique")
      ids[c.id] = true
    end
    local t = R.tool_messages(res.messages)
    assert.equal("call_Z9/weird id:1", t[1].id)
    assert.equal(calls[2].id, t[2].id)
    assert.equal(calls[3].id, t[3].id)
  end)

  it("a model error ends the run failed with error.kind = model", function()
    local app = closing(R.app([[
      return luagent.config{
        model = luagent.static_model{ responses = { { error = { message = "rate limited", status = 429 } } } },
        agents = { luagent.agent{ id = "a" } },
      } ]]))
    local res = app:run("a", "go")
    assert.equal("failed", res.status)
    assert.equal("model", res.error.kind)
    assert.equal(429, res.error.status)
    assert.equal("rate limited", res.error.message)
    assert.same({ "system", "user" }, R.roles(res.messages))
  end)

  it("a model that raises a plain string fails the run with its message", function()
    local app = closing(R.app([[
      return luagent.config{
        model = luagent.function_model(function() error("no network") end),
        agents = { luagent.agent{ id = "a" } },
      } ]]))
    local res = app:run("a", "go")
    assert.equal("failed", res.status)
    assert.equal("model", res.error.kind)
    assert.truthy(res.error.message:find("no network", 1, true))
  end)

  it("running out of static replies fails the run and says so", function()
    local app = closing(R.app([[
      return luagent.config{
        model = luagent.static_model{ responses = { { tool_calls = { { name = "x" } } } } },
        agents = { luagent.agent{ id = "a" } },
      } ]]))
    local res = app:run("a", "go")
    assert.equal("failed", res.status)
    assert.truthy(res.error.message:find("no reply left", 1, true))
    -- the static model starts over for every run
    local again = app:run("a", "go")
    assert.equal("failed", again.status)
    assert.same(R.roles(res.messages), R.roles(again.messages))
    assert.equal(1, #R.tool_results(again.messages))
  end)
end)
