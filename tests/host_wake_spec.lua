-- What wakes a host blocked in a wait (README, app:stats host_wakes): what
-- it waits for (host work, a task that ends, a wait that is over), not each
-- event a background task emits; events wake a host that watches them
-- (app:watch), and every event is in the stream either way.
local closing = require "support.closing"
local luagent = require "luagent"

local N = 2000

local function app_with_chatty_tool()
  return luagent.load_string(string.format([[
local luagent = require "luagent"
return luagent.config{
  background_tasks = { enabled = true, global_concurrency = 1, max_workers = 1, max_depth = 0 },
  event_buffer = %d,
  tools = { luagent.tool{ name = "chatty", handler = function(args, ctx)
    for i = 1, args.n do ctx:emit("progress", { i = i }) end
    return args.n
  end } },
}]], 4 * N))
end

local function progress(events)
  local out = {}
  for _, e in ipairs(events) do
    if e.kind == "progress" then out[#out + 1] = e.payload.i end
  end
  return out
end

local function one_to(n)
  local t = {}
  for i = 1, n do t[i] = i end
  return t
end

describe("a host blocked in app:wait", function()
  it("is not woken by each event of the task it waits for", function()
    local app = closing(app_with_chatty_tool())
    local wakes0 = app:stats().host_wakes
    local id = app:enqueue_tool("chatty", { n = N }).task_id
    local v = app:wait({ id }, { timeout_s = 30 })
    assert.is_true(v.done)
    assert.equal(N, v.tasks[1].result)
    local wakes = app:stats().host_wakes - wakes0
    assert.is_true(wakes <= 10, string.format("%d wakes for %d events", wakes, N))
    assert.same(one_to(N), progress(app:events({ since = 0, limit = 4 * N })))
  end)

  it("is woken for events while a watcher watches, and the watcher sees them all", function()
    local app = closing(app_with_chatty_tool())
    local seen = {}
    local stop = app:watch(function(events)
      for _, i in ipairs(progress(events)) do seen[#seen + 1] = i end
    end)
    local id = app:enqueue_tool("chatty", { n = N }).task_id
    assert.is_true(app:wait({ id }, { timeout_s = 30 }).done)
    app:poll() -- the watcher's last call
    stop()
    assert.same(one_to(N), seen)
  end)
end)
