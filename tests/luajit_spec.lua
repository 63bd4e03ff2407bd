-- LuaJIT's compiler and luagent's count hook (README, "Lua versions"): the
-- hook never fires inside compiled code, so worker states run with the
-- compiler off, and a foreground run turns the host's off for its duration
-- only. Pending under every other Lua.
local closing = require "support.closing"
local V = require "support.lua_bin"
local R = require "support.runtime_helpers"

local it_jit = V.luajit and it or pending

describe("LuaJIT's compiler", function()
  local TOOLS = [[
    local jit_on = luagent.tool{ name = "jit_on", handler = function()
      return { on = (jit.status()), in_worker = luagent.in_worker() }
    end }
  ]]

  it_jit("is off in worker states, from the first task on", function()
    local app = closing(R.app(TOOLS .. [[
      return luagent.config{ background_tasks = { enabled = true }, tools = { jit_on } } ]]))
    local w = app:wait({ app:enqueue_tool("jit_on", {}).task_id, app:enqueue_tool("jit_on", {}).task_id },
      { timeout_s = 10 })
    for _, t in ipairs(w.tasks) do
      assert.equal("completed", t.status)
      assert.same({ on = false, in_worker = true }, t.result)
    end
    assert.is_true((jit.status())) -- the host's is left alone
  end)

  it_jit("is off in the host during a foreground run and on again after it", function()
    local app = closing(R.app(TOOLS .. [[
      return luagent.config{
        model = luagent.static_model{ responses = { { tool_calls = { { name = "jit_on" } } }, "done" } },
        agents = { luagent.agent{ id = "a", tools = { jit_on } } } } ]]))
    assert.is_true((jit.status()))
    local res = app:run("a", "go")
    assert.equal("completed", res.status)
    assert.same({ on = false, in_worker = false }, R.tool_results(res.messages)[1].value)
    assert.is_true((jit.status()))
  end)

  it_jit("stays off after a foreground run if the host had turned it off", function()
    local app = closing(R.app(TOOLS .. [[
      return luagent.config{
        model = luagent.static_model{ responses = { "done" } },
        agents = { luagent.agent{ id = "a" } } } ]]))
    jit.off()
    local ok, err = pcall(function()
      assert.equal("completed", app:run("a", "go").status)
      assert.is_false((jit.status()))
    end)
    jit.on()
    assert(ok, err)
  end)
end)
