-- luagent.openai retries (README, R-13): Retry-After is honoured,
-- retryable statuses are retried up to max_retries and then end the run
-- `failed` with error = {kind = "model", status, message}; 4xx auth and
-- request errors are never retried.
local closing = require "support.closing"
local fake = require "support.fake_openai_client"
local H = require "support.fake_openai_app"

describe("openai adapter: retries", function()
  local srv
  setup(function() srv = fake.start() end)
  teardown(function() srv:stop() end)
  before_each(function() srv:reset() end)

  it("waits for Retry-After on a 429, then completes with exactly one retry", function()
    local app = closing(H.simple(srv, { max_retries = 2 }))
    srv:script{
      { status = 429, headers = { ["Retry-After"] = "1" } },
      { text = "finally" },
    }
    -- a measurement around the run, not a synchronisation sleep
    local t0 = H.now()
    local res = app:run("a", "x")
    local elapsed = H.now() - t0
    assert.equal("completed", res.status)
    assert.equal("finally", res.final)
    assert.equal(2, #srv:requests())
    local retries = H.of_kind(H.events(app), "retry")
    assert.equal(1, #retries)
    assert.equal(1, retries[1].payload.attempt)
    assert.equal(429, retries[1].payload.status)
    assert.equal(1, retries[1].payload.wait_s)
    assert.matches("scripted HTTP 429", retries[1].payload.message)
    assert.is_true(elapsed >= 0.9, "waited only " .. elapsed .. " s")
    assert.is_true(elapsed < 5, "waited " .. elapsed .. " s")
  end)

  it("honours retry-after-ms", function()
    local app = closing(H.simple(srv, { max_retries = 1, retry_backoff_s = 5 }))
    srv:script{ { status = 503, headers = { ["retry-after-ms"] = "150" } }, { text = "ok" } }
    local t0 = H.now()
    local res = app:run("a", "x")
    local elapsed = H.now() - t0
    assert.equal("completed", res.status)
    assert.equal(0.15, H.of_kind(H.events(app), "retry")[1].payload.wait_s)
    assert.is_true(elapsed >= 0.14 and elapsed < 3, "elapsed " .. elapsed)
  end)

  it("gives up after max_retries with the provider's status and message", function()
    local app = closing(H.simple(srv, { max_retries = 2 }))
    local function overloaded()
      return { status = 503, body = { error = { message = "The engine is currently overloaded, please try again later",
        type = "server_error" } } }
    end
    srv:script{ overloaded(), overloaded(), overloaded(), { text = "never reached" } }
    local res = app:run("a", "x")
    assert.equal("failed", res.status)
    assert.equal("model", res.error.kind)
    assert.equal(503, res.error.status)
    assert.matches("The engine is currently overloaded, please try again later", res.error.message, 1, true)
    assert.equal(3, #srv:requests())
    local events = H.events(app)
    assert.equal(2, #H.of_kind(events, "retry"))
    local err = H.of_kind(events, "error")
    assert.equal(1, #err)
    assert.equal("model", err[1].payload.kind)
    assert.matches("overloaded", err[1].payload.message)
  end)

  for _, status in ipairs({ 400, 401, 403, 404 }) do
    it("does not retry a " .. status, function()
      local app = closing(H.simple(srv, { max_retries = 3 }))
      srv:script{ { status = status, body = { error = { message = "provider says no (" .. status .. ")",
        type = "invalid_request_error" } } }, { text = "never" } }
      local res = app:run("a", "x")
      assert.equal("failed", res.status)
      assert.equal("model", res.error.kind)
      assert.equal(status, res.error.status)
      assert.matches("provider says no %(" .. status .. "%)", res.error.message)
      assert.equal(1, #srv:requests())
      assert.equal(0, #H.of_kind(H.events(app), "retry"))
    end)
  end

  it("retries a retryable in-stream error and then completes", function()
    local app = closing(H.simple(srv, { stream = true, max_retries = 1 }))
    srv:script{
      { text = "partial", stream_error = { message = "Rate limit reached mid-stream", type = "rate_limit_error" },
        after_chunks = 1 },
      { text = "whole answer" },
    }
    local res = app:run("a", "x")
    assert.equal("completed", res.status)
    assert.equal("whole answer", res.final)
    local retries = H.of_kind(H.events(app), "retry")
    assert.equal(1, #retries)
    assert.matches("Rate limit reached mid%-stream", retries[1].payload.message)
  end)

  it("does not retry a non-retryable in-stream error", function()
    local app = closing(H.simple(srv, { stream = true, max_retries = 3 }))
    srv:script{ { text = "x", stream_error = { message = "This model's maximum context length is exceeded",
      type = "invalid_request_error", code = "context_length_exceeded" } }, { text = "never" } }
    local res = app:run("a", "x")
    assert.equal("failed", res.status)
    assert.equal("model", res.error.kind)
    assert.matches("maximum context length", res.error.message)
    assert.equal(1, #srv:requests())
  end)

  it("retries a refused connection and reports it", function()
    -- a port nothing listens on: the fake server's, after it stopped
    local dead = fake.start()
    local url = dead.url
    dead:stop()
    local app = closing(H.simple(srv, { base_url = url, max_retries = 1 }))
    local res = app:run("a", "x")
    assert.equal("failed", res.status)
    assert.equal("model", res.error.kind)
    assert.is_nil(res.error.status)
    assert.matches("connect", res.error.message:lower())
    assert.equal(1, #H.of_kind(H.events(app), "retry"))
  end)

  it("retries in a background task too", function()
    local app = closing(H.simple(srv, { max_retries = 1 }))
    srv:script{ { status = 502 }, { text = "bg done" } }
    local rec = app:enqueue_background("a", "x", { timeout_s = 10 })
    assert.is_true(app:wait({ rec.task_id }, { timeout_s = 10 }).done)
    local got = app:get(rec.task_id)
    assert.equal("completed", got.status)
    assert.equal("bg done", got.result.final)
    local retries = H.of_kind(H.events(app), "retry")
    assert.equal(1, #retries)
    assert.equal(rec.task_id, retries[1].task_id)
  end)
end)
