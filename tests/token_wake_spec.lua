-- Streamed tokens of background runs wake a blocked host at most once per
-- 5 ms (README, luagent.openai): the host still gets every token event, in order,
-- but a reply of a thousand deltas costs it a handful of wake-ups, not
-- one per delta.
local closing = require "support.closing"
local fake = require "support.fake_openai_client"
local H = require "support.fake_openai_app"
local core = require "luagent.core"

local TOKEN_WAKE_MS = 5

describe("token events of a background run", function()
  local srv
  setup(function() srv = fake.start() end)
  teardown(function() srv:stop() end)

  it("wake a blocked host at most once per 5 ms, and it sees every one in order", function()
    local pieces = {}
    for i = 1, 1500 do pieces[i] = string.format("%04d", i) end
    srv:script({ { text = table.concat(pieces), chunk_size = 4 } })
    local app = closing(H.simple(srv, { stream = true }))
    -- a watcher runs in the pump each time the blocked host wakes with news
    local calls, tokens, others = 0, {}, 0
    local stop = app:watch(function(events)
      calls = calls + 1
      for _, ev in ipairs(events) do
        if ev.kind == "token" then tokens[#tokens + 1] = ev.payload.text else others = others + 1 end
      end
    end)
    local wakes0 = app:stats().host_wakes
    local t0 = core.now()
    local id = app:enqueue_background("a", "count").task_id
    local v = app:wait({ id }, { timeout_s = 30 })
    local elapsed_ms = (core.now() - t0) * 1000
    local wakes = app:stats().host_wakes - wakes0
    assert.is_true(v.done)
    app:poll() -- the watcher's last call
    stop()
    assert.equals("completed", v.tasks[1].status)
    assert.same(pieces, tokens)
    -- every other event (and a task's change of state) may wake the blocked
    -- host at once; tokens only every 5 ms. (A pump that did not block sees
    -- tokens at once through the generation, without a wake: the watcher may
    -- run more often than the host is woken.)
    local bound = 4 + 2 * others + elapsed_ms / TOKEN_WAKE_MS
    assert.is_true(wakes <= bound, string.format("%d wakes (%d watcher calls) for %d tokens in %.1f ms (%d other events)",
      wakes, calls, #tokens, elapsed_ms, others))
  end)
end)
