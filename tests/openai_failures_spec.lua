-- luagent.openai when the provider misbehaves (README, R-13): cut
-- streams, in-stream errors with HTTP 200, bodies that are not JSON, the
-- wrong content type, bodies over max_response_bytes. Each ends the run
-- `failed` with error.kind "model" and a message that says what happened and
-- keeps the provider's own words where there are some; nothing crashes and
-- the app keeps working.
local closing = require "support.closing"
local fake = require "support.fake_openai_client"
local H = require "support.fake_openai_app"

local function ev(t) return "data: " .. t .. "\n\n" end

describe("openai adapter: provider failures", function()
  local srv
  setup(function() srv = fake.start() end)
  teardown(function() srv:stop() end)
  before_each(function() srv:reset() end)

  local function fails(app, pattern, status)
    local res = app:run("a", "x")
    assert.equal("failed", res.status)
    assert.equal("model", res.error.kind)
    assert.matches(pattern, res.error.message)
    assert.equal(status, res.error.status)
    assert.is_true(#res.error.message <= 1024 + 3)
    -- the run's transcript stays well-formed and the app keeps working
    assert.equal("user", res.messages[#res.messages].role)
    srv:script{ { text = "still alive" } }
    local again = app:run("a", "y")
    assert.equal("completed", again.status)
    assert.equal("still alive", again.final)
    local s = app:stats()
    assert.equal(0, s.running)
    return res
  end

  it("reports a stream cut off mid-way (connection dropped)", function()
    local app = closing(H.simple(srv, { stream = true }))
    srv:script{ { text = "this will be cut off", chunk_size = 2, truncate_after_chunks = 3 } }
    fails(app, "stream was cut off")
  end)

  it("reports a stream that ends cleanly without [DONE] or a finish_reason", function()
    local app = closing(H.simple(srv, { stream = true }))
    srv:script{ { text = "this will end early", chunk_size = 2, end_after_chunks = 3 } }
    fails(app, "stream ended before it was complete")
  end)

  it("accepts a stream that has a finish_reason but no [DONE]", function()
    local app = closing(H.simple(srv, { stream = true }))
    srv:script{ { content_type = "text/event-stream", raw_chunks = {
      ev('{"choices":[{"index":0,"delta":{"role":"assistant","content":"fine"}}]}'),
      ev('{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}'),
    } } }
    local res = app:run("a", "x")
    assert.equal("completed", res.status)
    assert.equal("fine", res.final)
  end)

  it("ends the call on an in-stream error event with HTTP 200, keeping the provider's message", function()
    local app = closing(H.simple(srv, { stream = true }))
    srv:script{ { text = "some text first", chunk_size = 3, after_chunks = 2,
      stream_error = { message = "The server had an error while processing your request. Sorry about that!",
        type = "invalid_request_error" } } }
    local res = fails(app, "The server had an error while processing your request%. Sorry about that!")
    -- the text streamed before the error went out as tokens
    assert.is_true(#H.of_kind(H.events(app), "token") >= 1)
    assert.is_nil(res.final)
  end)

  it("stops reading at the in-stream error even when the connection stays open", function()
    local app = closing(H.simple(srv, { stream = true, timeout_s = 30 }))
    srv:script{ { text = "abc", after_chunks = 1, hold_after_error = true,
      stream_error = { message = "context_length_exceeded: too long", type = "invalid_request_error" } } }
    local t0 = H.now()
    fails(app, "context_length_exceeded: too long")
    assert.is_true(H.now() - t0 < 5, "the call did not end at the error event")
  end)

  it("reports an `event: error` SSE event with the provider's message", function()
    local app = closing(H.simple(srv, { stream = true }))
    srv:script{ { content_type = "text/event-stream", raw_chunks = {
      ev('{"choices":[{"index":0,"delta":{"role":"assistant","content":"hi"}}]}'),
      'event: error\ndata: {"error":{"message":"Upstream model crashed","type":"invalid_request_error"}}\n\n',
    } } }
    fails(app, "Upstream model crashed")
  end)

  it("reports a stream event that is not JSON", function()
    local app = closing(H.simple(srv, { stream = true }))
    srv:script{ { content_type = "text/event-stream", raw_chunks = {
      ev('{"choices":[{"index":0,"delta":{"content":"a"}}]}'), ev("{not json at all"), ev("[DONE]"),
    } } }
    fails(app, "not JSON: {not json at all")
  end)

  it("reports a malformed JSON body", function()
    local app = closing(H.simple(srv))
    srv:script{ { raw = '{"id":"x","choices":[{"message":{"content":"cut', content_type = "application/json" } }
    fails(app, 'not valid JSON: {"id":"x","choices"')
  end)

  it("reports a reply without choices", function()
    local app = closing(H.simple(srv))
    srv:script{ { raw = '{"id":"x","object":"chat.completion","choices":[]}', content_type = "application/json" } }
    fails(app, "no choices")
  end)

  it("reports a provider error object inside a 200 body", function()
    local app = closing(H.simple(srv))
    srv:script{ { raw = '{"error":{"message":"model m is not loaded","type":"not_found"}}',
      content_type = "application/json" } }
    fails(app, "model m is not loaded")
  end)

  it("reports the wrong content type (an HTML page with 200)", function()
    local app = closing(H.simple(srv))
    srv:script{ { raw = "<html><body><h1>Welcome to nginx!</h1></body></html>", content_type = "text/html" } }
    fails(app, 'content type "text/html".*Welcome to nginx!')
  end)

  it("reports the wrong content type on a stream request", function()
    local app = closing(H.simple(srv, { stream = true }))
    srv:script{ { raw = "<html>captive portal</html>", content_type = "text/html; charset=utf-8" } }
    fails(app, 'content type "text/html; charset=utf%-8".*captive portal')
  end)

  it("reports an HTML error page with its status", function()
    local app = closing(H.simple(srv))
    srv:script{ { status = 502, body = "<html><body>502 Bad Gateway</body></html>", content_type = "text/html" } }
    fails(app, "HTTP 502: .*502 Bad Gateway", 502)
  end)

  it("cuts a long provider message to 1 KiB", function()
    local app = closing(H.simple(srv))
    srv:script{ { status = 400, body = { error = { message = "begin " .. string.rep("blah ", 2000) } } } }
    local res = fails(app, "^HTTP 400: begin blah", 400)
    assert.is_true(#res.error.message <= 1027)
  end)

  it("stops a body over max_response_bytes", function()
    local app = closing(H.simple(srv, { max_response_bytes = 4096 }))
    srv:script{ { text = "big", oversize_bytes = 200000 } }
    fails(app, "larger than 4096 bytes")
  end)

  it("stops a stream over max_response_bytes", function()
    local app = closing(H.simple(srv, { stream = true, max_response_bytes = 4096 }))
    srv:script{ { text = "big", oversize_bytes = 200000 } }
    fails(app, "larger than 4096 bytes")
  end)

  it("stops a long stream of small events over max_response_bytes", function()
    local app = closing(H.simple(srv, { stream = true, max_response_bytes = 4096 }))
    srv:script{ { text = string.rep("word ", 2000), chunk_size = 5 } }
    fails(app, "larger than 4096 bytes")
  end)

  it("keeps the status and message of an error body over max_response_bytes", function()
    local app = closing(H.simple(srv, { max_response_bytes = 4096 }))
    srv:script{ { status = 500, body = '{"error":{"message":"huge failure ' .. string.rep("z", 100000) .. '"}}' } }
    fails(app, "^HTTP 500: .*huge failure", 500)
  end)

  it("fails a background task with the model error and keeps the status in its result", function()
    local app = closing(H.simple(srv))
    srv:script{ { status = 503, body = { error = { message = "backend unavailable" } } } }
    local rec = app:enqueue_background("a", "x", { timeout_s = 10 })
    assert.is_true(app:wait({ rec.task_id }, { timeout_s = 10 }).done)
    local got = app:get(rec.task_id)
    assert.equal("failed", got.status)
    assert.equal("model", got.error.kind)
    assert.matches("HTTP 503: backend unavailable", got.error.message)
    assert.equal(503, got.result.error.status)
  end)
end)
