-- A worker state boots with what a task needs (README "Worker states"):
-- the host's app module is never loaded in it, and the agent loop only at
-- the first agent task or tool call that needs it, which then works as if
-- it had been there from the start.
local closing = require "support.closing"
local H = require "support.dispatch_helpers"

local CFG = [[
local kid = luagent.agent{ id = "kid", model = luagent.static_model{ responses = { "kid done" } } }
return luagent.config{
  background_tasks = { enabled = true, global_concurrency = 1 },
  agents = { kid },
  tools = {
    luagent.tool{ name = "loaded", handler = function(_, ctx)
      return { app = package.loaded["luagent.app"] ~= nil,
               runner = package.loaded["luagent.runner"] ~= nil,
               http = type(ctx.http) == "function" }
    end },
    luagent.tool{ name = "nest", handler = function(_, ctx)
      local before = package.loaded["luagent.runner"] ~= nil
      local res = ctx:run_agent("kid", "x")
      return { final = res.final, status = res.status, before = before,
               after = package.loaded["luagent.runner"] ~= nil }
    end },
    luagent.delegate{ agent = "kid", name = "ask_kid" },
    luagent.tool{ name = "send", handler = function(_, ctx)
      local ok, err = pcall(ctx.send, ctx, "no-such-task", "hi")
      return { ok = ok, message = type(err) == "table" and err.message or tostring(err) }
    end },
  },
}
]]

local function first_task(tool, args)
  local app = closing(H.app(CFG))
  local v = app:wait({ app:enqueue_tool(tool, args or {}).task_id }, { timeout_s = 20 })
  assert.is_true(v.done)
  local t = v.tasks[1]
  assert.equals("completed", t.status, t.error and t.error.message)
  return t.result
end

describe("a worker state's boot", function()
  it("loads neither the host's app nor the agent loop for a tool task, and has ctx:http", function()
    local r = first_task("loaded")
    assert.same({ app = false, runner = false, http = true }, r)
  end)

  it("runs ctx:run_agent in a worker that has not loaded the agent loop", function()
    local r = first_task("nest")
    assert.same({ final = "kid done", status = "completed", before = false, after = true }, r)
  end)

  it("runs a delegate as a worker's first task", function()
    local r = first_task("ask_kid", { prompt = "x" })
    assert.equals("kid done", r)
  end)

  it("reaches ctx:send's own checks in a worker that has not loaded the agent loop", function()
    local r = first_task("send")
    assert.is_false(r.ok)
    assert.not_matches("attempt to call", r.message)
    assert.not_matches("did not define", r.message)
  end)

  it("loads the OpenAI client at luagent.openai's first call, with the same errors", function()
    local luagent = require "luagent"
    local src = "local luagent = ...\nreturn luagent.openai{ modle = 'x' }"
    local chunk = assert(require("luagent.compat").load(src, "=cfg"))
    local ok, err = pcall(chunk, luagent)
    assert.is_false(ok)
    assert.equals('luagent.openai: unknown option "modle" (did you mean "model"?)', err)
    assert.is_table(luagent.openai{ model = "m" })
  end)

  it("runs an agent task as a worker's first task", function()
    local app = closing(H.app(CFG))
    local id = app:enqueue_background("kid", "x").task_id
    local v = app:wait({ id }, { timeout_s = 20 })
    assert.equals("completed", v.tasks[1].status, v.tasks[1].error and v.tasks[1].error.message)
    assert.equals("kid done", v.tasks[1].result.final)
  end)
end)
