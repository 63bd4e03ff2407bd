-- Background edge cases: delivery claims of a cancelled run, depth limits
-- that travel with tasks, and a failed attempt's children.
local closing = require "support.closing"
local H = require "support.dispatch_helpers"
local luagent = H.luagent

describe("bg: a run cancelled during the model call that carried a notice", function()
  it("gives its claim back, so the next run on that agent and thread is told", function()
    local app = closing(luagent.load_string([[
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
} ]], "=bg_edge"))
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
    local app = closing(luagent.load_string(CFG, "=bg_edge_depth"))
    local res = app:run("sup", "go")
    local tool_msg = luagent.json.decode(res.messages[4].content)
    assert.is_false(tool_msg.ok)
    assert.equal("limit", tool_msg.cause.kind)
    assert.matches("max_depth %(0%)", tool_msg.error)
    assert.equal(0, #app:list())
  end)

  it("a background task keeps the limit of the run that started it", function()
    local app = closing(luagent.load_string(CFG, "=bg_edge_depth"))
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
    local app = closing(H.app([[
local flaky = luagent.tool{ name = "flaky", handler = function(args, ctx)
  local kid = ctx:enqueue_tool("block", { tag = "kid" .. ctx.attempt })
  if ctx.attempt == 1 then
    ctx:emit("first", { kid = kid.task_id })
    error("first attempt fails")
  end
  return kid.task_id
end }
return luagent.config{ background_tasks = { enabled = true, retry_backoff_s = 0.01 },
  tools = { flaky, T.block } } ]]))
    local r = app:enqueue_tool("flaky", {}, { retries = 1 })
    local first = H.await_kind(app, "first", r.task_id)
    assert.is_truthy(first)
    local w = app:wait({ r.task_id }, { timeout_s = 10 })
    assert.equal("completed", w.tasks[1].status)
    assert.equal(2, w.tasks[1].attempts)
    -- the cancel was requested before the retry; the child stops on its own worker
    assert.is_true(app:get(first.payload.kid).cancel_requested)
    assert.equal("cancelled", app:wait({ first.payload.kid }, { timeout_s = 5 }).tasks[1].status)
    assert.equal("running", app:get(w.tasks[1].result).status)
  end)
end)

describe("host work pumped during a foreground run", function()
  it("is not struck by that run's timeout: the other task's host call is answered", function()
    local app = closing(luagent.load_string([[
local luagent = require "luagent"
local slow = luagent.host_tool{ name = "slow" }
local job = luagent.tool{ name = "job", handler = function(args, ctx) return ctx:call_tool("slow", {}) end }
return luagent.config{
  model = luagent.function_model(function(req, ctx) ctx:sleep(1.0); return { text = "done" } end),
  background_tasks = { enabled = true },
  tools = { slow, job },
  agents = { luagent.agent{ id = "a" } },
} ]], "=bg_edge_pump"))
    app:host_tool("slow", function()
      local t0 = os.clock()
      while os.clock() - t0 < 0.4 do end -- outlives the foreground run's deadline
      return "slow result"
    end)
    local rec = app:enqueue_tool("job", {}, { timeout_s = 10 })
    assert.is_truthy(H.await_kind(app, "host_call", rec.task_id))
    local r = app:run("a", "x", { timeout_s = 0.1 })
    assert.equal("timed_out", r.status)
    local t = app:wait({ rec.task_id }, { timeout_s = 10 }).tasks[1]
    assert.equal("completed", t.status)
    assert.same({ ok = true, value = "slow result" }, t.result)
  end)
end)

describe("a cancelled foreground run", function()
  it("cancels the background children it started, whatever on_parent_end says", function()
    local app = closing(luagent.load_string([[
local luagent = require "luagent"
local kid = luagent.delegate{ agent = "kid", background = { enabled = true } }
local stop = luagent.host_tool{ name = "stop" }
return luagent.config{
  background_tasks = { enabled = true },
  agents = {
    luagent.agent{ id = "kid", model = luagent.static_model{ responses = { { text = "k", delay_s = 30 } } } },
    luagent.agent{ id = "sup", tools = { kid, stop }, model = luagent.static_model{ responses = {
      { tool_calls = { { name = "kid", arguments = { prompt = "x" } } } },
      { tool_calls = { { name = "stop" } } }, "done" } } },
  },
} ]], "=bg_edge_cancel"))
    app:host_tool("stop", function(_, info) app:cancel(info.run_id) return "ok" end)
    local r = app:run("sup", "go")
    assert.equal("cancelled", r.status)
    local kids = app:list()
    assert.equal(1, #kids)
    assert.is_true(kids[1].cancel_requested)
    assert.equal("cancelled", app:wait({ kids[1].task_id }, { timeout_s = 5 }).tasks[1].status)
  end)
end)

describe("a before_step hook returning bad messages", function()
  it("ends the run failed with kind hook instead of raising from app:run", function()
    local app = closing(luagent.load_string([[
local luagent = require "luagent"
return luagent.config{
  agents = { luagent.agent{ id = "a", model = luagent.static_model{ responses = { "ok" } },
    hooks = { before_step = function() return { messages = "oops" } end } } },
} ]], "=bg_edge_hook"))
    local r = app:run("a", "x")
    assert.equal("failed", r.status)
    assert.equal("hook", r.error.kind)
  end)
end)

describe("finished tasks leaving memory (keep_finished_s)", function()
  -- wait until an eviction pass has run after `id` finished: `id` (a host
  -- task, which nothing needs to announce) has left memory (app:list) then
  local function in_memory(app, id)
    for _, r in ipairs(app:list()) do if r.task_id == id then return true end end
    return false
  end
  local function evicted(app, id)
    local t0 = H.now()
    while in_memory(app, id) and H.now() - t0 < 8 do app:wait({ app:enqueue_tool("noop", {}).task_id }) end
    return not in_memory(app, id)
  end

  -- by age (keep_finished_s) and by count (keep_finished.max)
  for _, keep in ipairs({ "keep_finished_s = 1", "keep_finished = { max = 3 }" }) do
  it("keeps a child no run has been told about until it is announced (R-33; " .. keep .. ")", function()
    local app = closing(luagent.load_string(([[
local luagent = require "luagent"
local function noticed(req)
  for _, m in ipairs(req.messages) do
    if m.role == "user" and m.content:find("[luagent] background results:", 1, true) then return true end
  end
end
return luagent.config{
  model = luagent.function_model(function(req)
    local turn2 = req.messages[#req.messages].content == "and?"
    if noticed(req) then return { text = "NOTICE SEEN" } end
    if turn2 or #req.messages > 2 then return { text = "no notice" } end
    return { tool_calls = { { name = "work", arguments = { latch = LATCH } } } }
  end),
  background_tasks = { enabled = true, KEEP },
  tools = { luagent.tool{ name = "work", background = { enabled = true }, handler = function(args, ctx)
              -- finishes only once the first chat is over, however fast a worker starts
              ctx:wait({ args.latch }, { timeout_s = 60 })
              return "r"
            end },
            luagent.tool{ name = "park", handler = function(_, ctx) ctx:sleep(3600) end },
            luagent.tool{ name = "noop", handler = function() end } },
  agents = { luagent.agent{ id = "sup", tools = { "work" } } },
} ]]):gsub("KEEP", keep), "=bg_edge_keep"))
    local latch = app:enqueue_tool("park", {}).task_id
    _G.LATCH = latch
    assert.equal("no notice", app:chat("sup", "go", { thread_id = "t" }).final)
    _G.LATCH = nil
    app:cancel(latch)
    local child = app:list({ agent_id = "sup" })[1]
    assert.equal("completed", app:wait({ child.task_id }).tasks[1].status)
    local marker = app:enqueue_tool("noop", {})
    app:wait({ marker.task_id })
    assert.is_true(evicted(app, marker.task_id))
    assert.is_truthy(app:get(child.task_id), "an unannounced child stays in memory")
    assert.equal("NOTICE SEEN", app:chat("sup", "and?", { thread_id = "t" }).final)
    -- announced: it may leave now
    assert.is_true(evicted(app, child.task_id))
  end)
  end

  it("with a file store, cancel and wait still know a task that left memory", function()
    local dir = H.tmpdir()
    local app = closing(H.app([[
local noop = luagent.tool{ name = "noop", handler = function() return "done" end }
return luagent.config{ background_tasks = { enabled = true, keep_finished_s = 1 }, tools = { noop } } ]],
      { store = { path = dir .. "/keep.db" } }))
    local first = app:enqueue_tool("noop", {})
    app:wait({ first.task_id })
    local marker = app:enqueue_tool("noop", {})
    app:wait({ marker.task_id })
    assert.is_true(evicted(app, first.task_id))
    assert.same({ ok = false, status = "completed", task_id = first.task_id }, app:cancel(first.task_id))
    local w = app:wait({ first.task_id })
    assert.is_true(w.done)
    assert.equal("completed", w.tasks[1].status)
    assert.equal("done", w.tasks[1].result)
    app:close()
    H.rmdir(dir)
  end)
end)
