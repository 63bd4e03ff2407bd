-- luagent's Lua modules are compiled once per process (README "Worker
-- states"): the first state that loads one keeps its bytecode, later worker
-- states load that instead of compiling the source again; tracebacks still
-- name the files, and a file edited meanwhile is compiled anew.
local closing = require "support.closing"
local H = require "support.dispatch_helpers"
local core = H.core

local CFG = [[
return luagent.config{
  background_tasks = { enabled = true, global_concurrency = 1 },
  tools = {
    luagent.tool{ name = "probe", handler = function()
      return { value = require("luagent.zz_probe"),
               source = debug.getinfo(require("luagent.context").new, "S").source }
    end },
  },
}
]]

describe("the chunk cache", function()
  local dir, saved_path
  setup(function()
    dir = H.tmpdir()
    os.execute("mkdir -p " .. dir .. "/luagent")
    saved_path = package.path
    -- workers get the host's package.path: the probe module lives here
    package.path = dir .. "/?.lua;" .. package.path
  end)
  teardown(function()
    package.path = saved_path
    H.rmdir(dir)
  end)

  local function probe()
    local app = closing(H.app(CFG))
    local v = app:wait({ app:enqueue_tool("probe", {}).task_id }, { timeout_s = 20 })
    assert.is_true(v.done)
    assert.equals("completed", v.tasks[1].status, v.tasks[1].error and v.tasks[1].error.message)
    return v.tasks[1].result
  end

  it("compiles each module once for every worker state and keeps chunk names", function()
    H.write(dir .. "/luagent/zz_probe.lua", "return 'one'")
    local r = probe()
    assert.equals("one", r.value)
    assert.matches("^@.*luagent/context%.lua$", r.source)
    local n = core.compiled_chunks()
    assert.is_true(n > 10, "modules compiled: " .. n)
    -- a new app boots a new worker state: nothing is compiled again
    r = probe()
    assert.equals("one", r.value)
    assert.matches("^@.*luagent/context%.lua$", r.source)
    assert.equals(n, core.compiled_chunks())
  end)

  it("compiles a file edited since anew", function()
    H.write(dir .. "/luagent/zz_probe.lua", "return 'first'")
    assert.equals("first", probe().value)
    local n = core.compiled_chunks()
    H.write(dir .. "/luagent/zz_probe.lua", "return 'second, longer'")
    assert.equals("second, longer", probe().value)
    assert.equals(n + 1, core.compiled_chunks())
  end)
end)
