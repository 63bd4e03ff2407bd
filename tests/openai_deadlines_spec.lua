-- A stalled model cannot hold a run: luagent.openai{ idle_timeout_s } ends
-- an attempt when no byte came for that long (plain and streamed, host and
-- worker), and call_timeout_s bounds one model call across all its attempts
-- and the waits between them. Small values against the fake server.
local closing = require "support.closing"
local fake = require "support.fake_openai_client"
local H = require "support.fake_openai_app"

describe("openai adapter: idle and call deadlines", function()
  local srv
  setup(function() srv = fake.start() end)
  teardown(function() srv:stop() end)
  before_each(function() srv:reset() end)

  it("ends a streamed attempt that stalls for idle_timeout_s, long before timeout_s", function()
    local app = closing(H.simple(srv, { stream = true, timeout_s = 60, idle_timeout_s = 0.3 }))
    srv:script{ { text = "stalls after this", chunk_size = 2, stall_after_chunks = 2 } }
    local res = app:run("a", "x")
    assert.equal("failed", res.status)
    assert.equal("model", res.error.kind)
    assert.matches("sent nothing for 0%.3 ?s %(idle_timeout_s%): the stream stalled", res.error.message)
    assert.equal(2, #H.of_kind(H.events(app), "token"))
  end)

  it("ends a plain attempt whose reply does not come within idle_timeout_s", function()
    local app = closing(H.simple(srv, { timeout_s = 60, idle_timeout_s = 0.3 }))
    srv:script{ { text = "too late", delay_ms = 5000 } }
    local res = app:run("a", "x")
    assert.equal("failed", res.status)
    assert.matches("sent nothing for 0%.3 ?s %(idle_timeout_s%)", res.error.message)
  end)

  it("retries an idle attempt while retries and call_timeout_s allow, in a worker too", function()
    local app = closing(H.simple(srv, { stream = true, timeout_s = 60, idle_timeout_s = 0.3,
      max_retries = 1 }))
    srv:script{ { text = "stalls", stall_after_chunks = 1 }, { text = "second try" } }
    local res = app:run("a", "x")
    assert.equal("completed", res.status)
    assert.equal("second try", res.final)
    local retries = H.of_kind(H.events(app), "retry")
    assert.equal(1, #retries)
    assert.matches("idle_timeout_s", retries[1].payload.message, 1, true)
    srv:script{ { text = "stalls", stall_after_chunks = 1 }, { text = "bg second try" } }
    local rec = app:enqueue_background("a", "x", { timeout_s = 30 })
    assert.is_true(app:wait({ rec.task_id }, { timeout_s = 30 }).done)
    local got = app:get(rec.task_id)
    assert.equal("completed", got.status)
    assert.equal("bg second try", got.result.final)
  end)

  it("gives up once call_timeout_s has passed, whatever max_retries says", function()
    local app = closing(H.simple(srv, { timeout_s = 0.4, call_timeout_s = 1, max_retries = 10,
      retry_backoff_s = 0.05, idle_timeout_s = 30 }))
    local replies = {}
    for i = 1, 11 do replies[i] = { text = "late " .. i, delay_ms = 5000 } end
    srv:script(replies)
    local res = app:run("a", "x")
    assert.equal("failed", res.status)
    assert.equal("model", res.error.kind)
    assert.matches("call_timeout_s = 1 ?s", res.error.message)
    local n = #srv:requests()
    assert.is_true(n >= 2 and n < 11, n .. " attempts")
    assert.equal(n - 1, #H.of_kind(H.events(app), "retry"))
  end)

  it("does not wait out a Retry-After that ends past call_timeout_s", function()
    local app = closing(H.simple(srv, { timeout_s = 10, call_timeout_s = 1, max_retries = 3 }))
    srv:script{ { status = 429, headers = { ["Retry-After"] = "30" } }, { text = "never asked" } }
    local res = app:run("a", "x")
    assert.equal("failed", res.status)
    assert.equal(429, res.error.status)
    assert.matches("no retry: the next attempt would start after call_timeout_s = 1 ?s", res.error.message)
    assert.equal(1, #srv:requests())
    assert.equal(0, #H.of_kind(H.events(app), "retry"))
  end)

  it("defaults: idle_timeout_s = 60, call_timeout_s = timeout_s", function()
    local luagent = require "luagent"
    local m = luagent.openai{ model = "m", base_url = srv.url }
    assert.equal(60, m.idle_timeout_s)
    assert.equal(600, m.timeout_s)
    assert.equal(600, m.call_timeout_s)
    assert.equal(30, luagent.openai{ base_url = srv.url, timeout_s = 30 }.call_timeout_s)
    assert.equal(90, luagent.openai{ base_url = srv.url, timeout_s = 30, call_timeout_s = 90 }.call_timeout_s)
  end)
end)
