-- luagent.openai reads replies as they are, not as they ought to be:
-- `"message": null` is a model error, not an empty answer; a streamed reply
-- whose body is SSE is read as a stream whatever its content type (as the
-- official SDKs do); an error body with both `error` and `message` shows
-- both.
local closing = require "support.closing"
local fake = require "support.fake_openai_client"
local H = require "support.fake_openai_app"

local function ev(t) return "data: " .. t .. "\n\n" end

local DELTA_A = '{"choices":[{"index":0,"delta":{"role":"assistant","content":"Hel"}}]}'
local DELTA_B = '{"choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":"stop"}]}'

describe("openai adapter: replies as they come", function()
  local srv
  setup(function() srv = fake.start() end)
  teardown(function() srv:stop() end)
  before_each(function() srv:reset() end)

  it("fails a run on a reply whose message is null or missing, instead of completing it empty", function()
    local app = closing(H.simple(srv))
    for _, raw in ipairs({
      '{"id":"x","object":"chat.completion","choices":[{"index":0,"message":null,"finish_reason":"stop"}]}',
      '{"id":"x","object":"chat.completion","choices":[{"index":0,"finish_reason":"stop"}]}',
    }) do
      srv:script{ { raw = raw, content_type = "application/json" } }
      local res = app:run("a", "x")
      assert.equal("failed", res.status)
      assert.equal("model", res.error.kind)
      assert.matches("no message in choices%[1%]", res.error.message)
      assert.is_nil(res.final)
    end
  end)

  it("reads a streamed reply as SSE when its body is SSE, whatever the content type says", function()
    local app = closing(H.simple(srv, { stream = true }))
    local bodies = {
      -- split so that the first bytes alone cannot tell
      { content_type = "application/json", raw_chunks = { "\n", "da", "ta: " .. DELTA_A .. "\n\n",
        ev(DELTA_B), ev("[DONE]") } },
      { content_type = "text/plain; charset=utf-8", raw_chunks = { ": keep-alive\n\n", ev(DELTA_A),
        ev(DELTA_B) } },
      { content_type = "application/octet-stream", raw_chunks = { "event: message\n" .. ev(DELTA_A),
        ev(DELTA_B), ev("[DONE]") } },
    }
    for i, body in ipairs(bodies) do
      srv:script{ body }
      local res = app:run("a", "case " .. i)
      assert.equal("completed", res.status, res.error and res.error.message)
      assert.equal("Hello", res.final)
    end
    local tokens = H.of_kind(H.events(app), "token")
    assert.equal(#bodies * 2, #tokens)
    -- a body that is not SSE is still reported for what it is
    srv:script{ { raw = "upstream says: not a stream", content_type = "text/plain" } }
    local res = app:run("a", "x")
    assert.equal("failed", res.status)
    assert.matches('content type "text/plain"', res.error.message)
  end)

  it("reads an SSE body with another content type in a worker too", function()
    local app = closing(H.simple(srv, { stream = true }))
    srv:script{ { content_type = "application/json", raw_chunks = { ev(DELTA_A), ev(DELTA_B) } } }
    local rec = app:enqueue_background("a", "x")
    assert.is_true(app:wait({ rec.task_id }, { timeout_s = 10 }).done)
    local got = app:get(rec.task_id)
    assert.equal("completed", got.status)
    assert.equal("Hello", got.result.final)
  end)

  it("shows both the error and the message of a provider error body", function()
    local app = closing(H.simple(srv))
    srv:script{ { status = 400, body = { timestamp = "2024-01-01T00:00:00Z", status = 400,
      error = "Bad Request", message = "model 'gpt-x' does not exist", path = "/v1/chat/completions" } } }
    local res = app:run("a", "x")
    assert.equal("failed", res.status)
    assert.equal(400, res.error.status)
    assert.matches("Bad Request", res.error.message, 1, true)
    assert.matches("model 'gpt-x' does not exist", res.error.message, 1, true)
    -- an error object and a top-level message, in a 200 body
    srv:script{ { raw = '{"error":{"message":"quota exhausted"},"message":"see https://example/billing"}',
      content_type = "application/json" } }
    res = app:run("a", "x")
    assert.equal("failed", res.status)
    assert.matches("quota exhausted", res.error.message, 1, true)
    assert.matches("see https://example/billing", res.error.message, 1, true)
  end)
end)
