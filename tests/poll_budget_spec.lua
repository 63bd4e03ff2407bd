-- app:poll{ budget_ms } bounds a frame (README "Embedding in a game or
-- app"): the first queued item always runs, another starts only while the
-- time left covers what an item is expected to cost, and what does not fit
-- waits for the next poll, in order, with nothing lost.
local H = require "support.dispatch_helpers"
local core = H.core

local CFG = [[
local ask = luagent.tool{ name = "ask", handler = function(args, ctx)
  return ctx:call_tool("slow", { i = args.i })
end }
return luagent.config{
  background_tasks = { enabled = true, global_concurrency = 4, per_agent_concurrency = 4 },
  tools = { ask, luagent.host_tool{ name = "slow", description = "takes a while",
    input_schema = { type = "object", properties = { i = { type = "integer" } } } } },
}
]]

describe("app:poll{ budget_ms }", function()
  local app
  before_each(function() app = H.app(CFG) end)
  after_each(function() app:close() end)

  -- waits (without pumping) until n host calls are queued
  local function await_calls(n)
    local deadline = core.now() + 20
    while app:stats().host_calls_pending < n do
      assert(core.now() < deadline, "host calls never queued")
      local gen = app._core:gen()
      if app:stats().host_calls_pending < n then app._core:block(gen, 0.05) end
    end
  end

  -- a budgeted poll that found the queue's lock busy runs nothing and
  -- leaves the work to the next one, which takes the lock waiting
  local function poll(opts)
    local n = app:poll(opts)
    if n == 0 then n = app:poll(opts) end
    return n
  end

  it("leaves the item whose expected cost would cross the budget for the next poll, in order", function()
    local order = {}
    -- each call takes 20 ms of the host's time
    app:host_tool("slow", function(args)
      local until_t = core.now() + 0.02
      while core.now() < until_t do end
      order[#order + 1] = args.i
      return args.i
    end)
    local ids = {}
    for i = 1, 3 do
      ids[i] = app:enqueue_tool("ask", { i = i }).task_id
      await_calls(i) -- queued in this order
    end
    -- 20 ms ran, 10 ms are left and the next call is expected to take 20:
    -- it waits for the next poll
    assert.equals(1, poll{ budget_ms = 30 })
    assert.same({ 1 }, order)
    assert.equals(1, poll{ budget_ms = 30 })
    assert.equals(1, poll{ budget_ms = 30 })
    assert.same({ 1, 2, 3 }, order)
    local v = app:wait(ids, { timeout_s = 20 })
    assert.is_true(v.done)
    for i, t in ipairs(v.tasks) do
      assert.equals("completed", t.status)
      assert.equals(i, t.result.value)
    end
  end)

  it("runs every queued item in one poll when they fit", function()
    app:host_tool("slow", function(args) return args.i end)
    local ids = {}
    for i = 1, 3 do
      ids[i] = app:enqueue_tool("ask", { i = i }).task_id
      await_calls(i)
    end
    assert.equals(3, poll{ budget_ms = 1000 })
    assert.is_true(app:wait(ids, { timeout_s = 20 }).done)
  end)

  it("sends a host tool's answer that a busy lock kept at the next poll", function()
    app:host_tool("slow", function(args) return args.i * 10 end)
    local id = app:enqueue_tool("ask", { i = 4 }).task_id
    await_calls(1)
    -- the handle answers as if the queue's lock stayed busy, once
    local real, refused = app._core, 0
    app._core = setmetatable({
      reply = function(_, call_id, text, nowait)
        if nowait and refused == 0 then
          refused = 1
          return false
        end
        return real:reply(call_id, text, nowait)
      end,
    }, { __index = function(_, k)
      local f = real[k]
      return function(_, ...) return f(real, ...) end
    end })
    assert.equals(1, poll{ budget_ms = 30 }) -- the call ran, its answer was kept
    assert.equals(1, refused)
    assert.equals(1, app:stats().host_calls_pending) -- taken, not answered
    assert.equals("running", app:get(id).status)
    poll{ budget_ms = 30 } -- sends it
    app._core = real
    local v = app:wait({ id }, { timeout_s = 20 })
    assert.equals("completed", v.tasks[1].status)
    assert.equals(40, v.tasks[1].result.value)
  end)
end)
