-- Agent runtime: bad definitions are rejected at load with a message that
-- names the definition (docs/architecture.md, R-10); shared tool objects are fine.
local closing = require "support.closing"
local R = require "support.runtime_helpers"

local function rejected(body, ...)
  local msg = R.load_error(body)
  for _, want in ipairs({ ... }) do
    assert.truthy(msg:find(want, 1, true), string.format("%q not in: %s", want, msg))
  end
  return msg
end

describe("runtime definitions rejected at load", function()
  it("an agent without an id", function()
    rejected([[
      return luagent.config{ agents = { luagent.agent{ instructions = "x" } } } ]],
      "luagent.agent", "id", "runtime_cfg:2:")
  end)

  it("a tool without a name", function()
    rejected([[
      local t = luagent.tool{ handler = function() end }
      return luagent.config{ tools = { t } } ]], "luagent.tool", "name", "runtime_cfg:2:")
  end)

  it("a tool whose handler is not a function", function()
    rejected([[
      local t = luagent.tool{ name = "fetch", handler = "http://example.com" }
      return luagent.config{ tools = { t } } ]], "luagent.tool", "fetch", "handler", "runtime_cfg:2:")
    rejected([[
      local t = luagent.tool{ name = "fetch" }
      return luagent.config{ tools = { t } } ]], 'luagent.tool "fetch"', "handler")
  end)

  it("a tool with an invalid input_schema", function()
    rejected([[
      local t = luagent.tool{ name = "lookup", handler = function() end,
        input_schema = { type = "object", properties = { q = { type = "strnig" } } } }
      return luagent.config{ tools = { t } } ]], 'luagent.tool "lookup"', "strnig", "runtime_cfg:2:")
    rejected([[
      local t = luagent.host_tool{ name = "pos", input_schema = { type = "object", required = "x" } }
      return luagent.config{ tools = { t } } ]], 'luagent.host_tool "pos"', "required")
  end)

  it("two different tools sharing a name (in one agent, across agents, or app-level)", function()
    rejected([[
      local a = luagent.tool{ name = "dup", handler = function() return 1 end }
      local b = luagent.tool{ name = "dup", handler = function() return 2 end }
      return luagent.config{ agents = { luagent.agent{ id = "x", tools = { a, b } } } } ]],
      '"dup"', 'agent "x"', "two different tools")
    rejected([[
      local a = luagent.tool{ name = "dup", handler = function() return 1 end }
      local b = luagent.tool{ name = "dup", handler = function() return 2 end }
      return luagent.config{ tools = { a }, agents = { luagent.agent{ id = "y", tools = { b } } } } ]],
      '"dup"', 'agent "y"')
    rejected([[
      local a = luagent.tool{ name = "dup", handler = function() return 1 end }
      local d = luagent.delegate{ agent = "y", name = "dup" }
      return luagent.config{ agents = { luagent.agent{ id = "x", tools = { a } },
        luagent.agent{ id = "y", tools = { d } } } } ]], '"dup"')
  end)

  it("an agent listing an unknown app-level tool name", function()
    rejected([[
      local search = luagent.tool{ name = "search", handler = function() end }
      return luagent.config{ tools = { search },
        agents = { luagent.agent{ id = "x", tools = { "serach" } } } } ]],
      'agent "x"', '"serach"', 'did you mean "search"')
    -- a tool of another agent is not app-level
    rejected([[
      local search = luagent.tool{ name = "search", handler = function() end }
      return luagent.config{ agents = { luagent.agent{ id = "x", tools = { search } },
        luagent.agent{ id = "y", tools = { "search" } } } } ]], 'agent "y"', '"search"')
  end)

  it("two agents with one id, a delegate to an unknown agent, a tools entry that is not a tool", function()
    rejected([[
      return luagent.config{ agents = { luagent.agent{ id = "x" }, luagent.agent{ id = "x" } } } ]], '"x"')
    rejected([[
      local d = luagent.delegate{ agent = "resercher" }
      return luagent.config{ agents = { luagent.agent{ id = "researcher" }, luagent.agent{ id = "boss", tools = { d } } } } ]],
      '"resercher"', 'did you mean "researcher"')
    rejected([[
      return luagent.config{ agents = { luagent.agent{ id = "x", tools = { { name = "t" } } } } } ]],
      'luagent.agent "x"', "tools[1]")
  end)

  it("unknown keys in definitions suggest the nearest valid one", function()
    rejected([[
      local t = luagent.tool{ name = "t", handler = function() end, input_shema = {} }
      return luagent.config{ tools = { t } } ]], "input_shema", "input_schema")
    rejected([[
      return luagent.config{ agents = { luagent.agent{ id = "x", budget = { max_iteration = 3 } } } } ]],
      "max_iteration", "max_iterations")
    rejected([[
      return luagent.config{ agents = { luagent.agent{ id = "x", hooks = { before_stepp = function() end } } } } ]],
      "before_stepp", "before_step")
  end)

  it("static_model replies with a malformed tool_calls list", function()
    rejected([[
      return luagent.config{ model = luagent.static_model{ responses = { { tool_calls = { name = "t" } } } } } ]],
      "responses[1]", "tool_calls must be a list")
    rejected([[
      return luagent.config{ model = luagent.static_model{ responses = { "x", { tool_calls = { { name = "t", args = {} } } } } } } ]],
      "responses[2] tool_calls[1]", '"args"')
    rejected([[
      return luagent.config{ model = luagent.static_model{ responses = { { txt = "hi" } } } } ]],
      "responses[1]", '"txt"', "text")
  end)

  it("the same tool object listed in several places is fine", function()
    local app = closing(R.app([[
      local t = luagent.tool{ name = "shared", handler = function() return "s" end }
      return luagent.config{
        tools = { t },
        model = luagent.static_model{ responses = { { tool_calls = { { name = "shared" } } }, "ok" } },
        agents = { luagent.agent{ id = "x", tools = { t, "shared" } }, luagent.agent{ id = "y", tools = { t } } },
      } ]]))
    local res = app:run("x", "go")
    assert.equal("completed", res.status)
    assert.same({ ok = true, value = "s" }, R.tool_results(res.messages)[1])
    -- listed twice, shown once
    local seen = {}
    local app2 = closing(R.app([[
      local t = luagent.tool{ name = "shared", handler = function() return "s" end }
      return luagent.config{ tools = { t },
        model = luagent.function_model(function(req) S.tools = req.tools; return "ok" end),
        agents = { luagent.agent{ id = "x", tools = { t, "shared", t } } } } ]], seen))
    app2:run("x", "go")
    assert.equal(1, #seen.tools)
  end)

  it("an agent without a model fails its run with a readable error", function()
    local app = closing(R.app([[
      return luagent.config{ agents = { luagent.agent{ id = "x" } } } ]]))
    local res = app:run("x", "go")
    assert.equal("failed", res.status)
    assert.equal("config", res.error.kind)
    assert.truthy(res.error.message:find('"x"', 1, true))
  end)
end)
