-- Background edge cases: delivery claims of a cancelled run, depth limits
-- that travel with tasks, and a failed attempt's children.
local H = require "support.dispatch_helpers"
local luagent = H.luagent

describe("bg: a run cancelled during the model call that carried a notice", function()
  it("gives its claim back, so the next run on that agent and thread is told", function()
    local app <close> = luagent.load_string([[
local luagent = require "luagent"
local kid = luagent.delegate{ agent = "kid", background = { enabled = true } }
local function saw_notice(req)
  for _, m in ipairs(req.messages) do
    if m.role == "user" and m.content:find("[luagent] background results:", 1, true) then return true end
  end
end
return luagent.config{
  background_tasks = { enabled = true },
  agents = {
    luagent.agent{ id = "kid", model = luagent.static_model{ responses = { "kid answer" } } },
    luagent.agent{ id = "sup", tools = { kid }, model = luagent.function_model(function(req, ctx)
      if not ctx.task_id then return { text = saw_notice(req) and "SAW NOTICE" or "no notice" } end
      local calls = 0
      for _, m in ipairs(req.messages) do calls = calls + (m.role == "assistant" and 1 or 0) end
      if calls == 0 then return { tool_calls = { { name = "kid", arguments = { prompt = "p" } } } } end
      if not saw_notice(req) then
        -- wait for the child, then a step so the next call carries the notice
        ctx:wait({ luagent.json.decode(req.messages[#req.messages].content).value.task_id })
        return { tool_calls = { { name = "kid", arguments = { prompt = "again" } } } }
      end
      ctx:emit("spinning", {})
      while true do end -- the call carrying the notice never returns
    end) },
  },
} ]], "=bg_edge")
    local rec = app:enqueue_background("sup", "go", { thread_id = "t1" })
    assert.is_truthy(H.await_kind(app, "spinning", rec.task_id))
    assert.equal("cancelled", app:cancel(rec.task_id).status)
    local res = app:chat("sup", "again", { thread_id = "t1" })
    assert.equal("SAW NOTICE", res.final)
  end)
end)

describe("bg: depth limits travel with tasks (R-28)", function()
  local CFG = [[
local luagent = require "luagent"
local spawn = luagent.tool{ name = "spawn", handler = function(args, ctx)
  return ctx:enqueue_background("kid", "p").task_id end }
local deep = luagent.tool{ name = "deep", background = { enabled = true }, handler = function(args, ctx)
  return ctx:run_agent("kid", "x").status end }
return luagent.config{
  background_tasks = { enabled = true, max_depth = 3 },
  agents = {
    luagent.agent{ id = "kid", model = luagent.static_model{ responses = { "k" } } },
    luagent.agent{ id = "sup", max_depth = 0, tools = { spawn },
      model = luagent.static_model{ responses = { { tool_calls = { { name = "spawn" } } }, "done" } } },
    luagent.agent{ id = "mid", max_depth = 1, tools = { deep },
      model = luagent.static_model{ responses = { { tool_calls = { { name = "deep" } } }, "done" } } },
  },
} ]]

  it("an agent's max_depth refuses ctx:enqueue_background from its tools", function()
    local app <close> = luagent.load_string(CFG, "=bg_edge_depth")
    local res = app:run("sup", "go")
    local tool_msg = luagent.json.decode(res.messages[4].content)
    assert.is_false(tool_msg.ok)
    assert.equal("limit", tool_msg.cause.kind)
    assert.matches("max_depth %(0%)", tool_msg.error)
    assert.equal(0, #app:list())
  end)

  it("a background task keeps the limit of the run that started it", function()
    local app <close> = luagent.load_string(CFG, "=bg_edge_depth")
    app:run("mid", "go")
    app:run_until_idle{ timeout_s = 10 }
    local recs = app:list()
    assert.equal(1, #recs)
    assert.equal("deep", recs[1].tool)
    assert.equal("failed", recs[1].status)
    assert.equal("limit", recs[1].error.kind)
  end)
end)

describe("dispatcher: a failed attempt's children (R-24, R-25)", function()
  it("are cancelled before the retry, so the next attempt does not find them", function()
    local app <close> = H.app([[
local flaky = luagent.tool{ name = "flaky", handler = function(args, ctx)
  local kid = ctx:enqueue_tool("block", { tag = "kid" .. ctx.attempt })
  if ctx.attempt == 1 then
    ctx:emit("first", { kid = kid.task_id })
    error("first attempt fails")
  end
  return kid.task_id
end }
return luagent.config{ background_tasks = { enabled = true, retry_backoff_s = 0.01 },
  tools = { flaky, T.block } } ]])
    local r = app:enqueue_tool("flaky", {}, { retries = 1 })
    local first = H.await_kind(app, "first", r.task_id)
    assert.is_truthy(first)
    local w = app:wait(r.task_id, { timeout_s = 10 })
    assert.equal("completed", w.tasks[1].status)
    assert.equal(2, w.tasks[1].attempts)
    assert.equal("cancelled", app:get(first.payload.kid).status)
    assert.equal("running", app:get(w.tasks[1].result).status)
  end)
end)
