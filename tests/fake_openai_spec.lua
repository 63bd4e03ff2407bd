-- Specs of the fake OpenAI server itself (tests/support/fake_openai.lua),
-- driven with LuaSocket only.
local socket = require "socket"
local http = require "socket.http"
local ltn12 = require "ltn12"
local cjson = require "cjson"
local fake = require "support.fake_openai_client"

-- POST a JSON body with socket.http; returns status, headers, body text.
local function post(url, body)
  local text = type(body) == "string" and body or cjson.encode(body)
  local out = {}
  local ok, code, headers = http.request({
    url = url, method = "POST",
    source = ltn12.source.string(text),
    headers = { ["content-type"] = "application/json", ["content-length"] = tostring(#text) },
    sink = ltn12.sink.table(out),
  })
  assert(ok, code)
  return code, headers, table.concat(out)
end

-- The data: payloads of an SSE body, in order.
local function sse_data(body)
  local out = {}
  for payload in body:gmatch("data: ([^\r\n]*)\r?\n\r?\n") do out[#out + 1] = payload end
  return out
end

-- A raw keep-alive connection: send a request, read one response.
local function raw_connect(port, timeout)
  local c = assert(socket.connect("127.0.0.1", port))
  c:settimeout(timeout or 2)
  return c
end

local function raw_request(c, method, path, body, extra)
  body = body or ""
  c:send(string.format("%s %s HTTP/1.1\r\nHost: x\r\n%sContent-Length: %d\r\n\r\n%s",
                       method, path, extra or "", #body, body))
end

-- Reads one response (Content-Length or chunked); returns status, headers, body.
local function raw_response(c)
  local line = assert(c:receive("*l"))
  local status = tonumber(line:match("^HTTP/1%.1 (%d+)"))
  local headers = {}
  while true do
    local h = assert(c:receive("*l"))
    if h == "" then break end
    local k, v = h:match("^([^:]+):%s*(.*)$")
    headers[k:lower()] = v
  end
  if status == 100 then return raw_response(c) end
  local body
  if headers["content-length"] then
    body = assert(c:receive(tonumber(headers["content-length"])))
  else
    local parts = {}
    while true do
      local n = tonumber(assert(c:receive("*l")), 16)
      if n == 0 then assert(c:receive("*l")) break end
      parts[#parts + 1] = assert(c:receive(n))
      assert(c:receive("*l"))
    end
    body = table.concat(parts)
  end
  return status, headers, body
end

describe("fake_openai", function()
  local srv

  setup(function() srv = fake.start() end)
  teardown(function() srv:stop() end)
  before_each(function() srv:reset() end)

  it("answers health checks and exposes a /v1 url", function()
    assert.matches("^http://127%.0%.0%.1:%d+/v1$", srv.url)
    local out = {}
    local ok, code = http.request({ url = srv.base .. "/_health", sink = ltn12.sink.table(out) })
    assert.truthy(ok)
    assert.equal(200, code)
    assert.equal("ok", table.concat(out))
  end)

  it("sends a plain chat.completion", function()
    srv:script({ { text = "hello" } })
    local code, headers, body = post(srv.url .. "/chat/completions", { model = "m-1", messages = {} })
    assert.equal(200, code)
    assert.matches("application/json", headers["content-type"])
    local r = cjson.decode(body)
    assert.equal("chat.completion", r.object)
    assert.equal("m-1", r.model)
    assert.is_string(r.id)
    assert.is_number(r.created)
    assert.same({ role = "assistant", content = "hello" }, r.choices[1].message)
    assert.equal("stop", r.choices[1].finish_reason)
    assert.same({ prompt_tokens = 10, completion_tokens = 5, total_tokens = 15 }, r.usage)
  end)

  it("sends tool calls in the OpenAI shape", function()
    srv:script({ { tool_calls = {
      { id = "call_1", name = "research", arguments = { topic = "lua" } },
      { id = "call_2", name = "raw", arguments = '{"a": 1}' },
    }, usage = { prompt_tokens = 1, completion_tokens = 2, total_tokens = 3 } } })
    local _, _, body = post(srv.url .. "/chat/completions", { model = "m" })
    local r = cjson.decode(body)
    local msg = r.choices[1].message
    assert.equal(cjson.null, msg.content)
    assert.equal("tool_calls", r.choices[1].finish_reason)
    assert.equal(2, #msg.tool_calls)
    local tc = msg.tool_calls[1]
    assert.equal("call_1", tc.id)
    assert.equal("function", tc.type)
    assert.equal("research", tc["function"].name)
    assert.is_string(tc["function"].arguments)
    assert.same({ topic = "lua" }, cjson.decode(tc["function"].arguments))
    assert.equal('{"a": 1}', msg.tool_calls[2]["function"].arguments)
    assert.same({ prompt_tokens = 1, completion_tokens = 2, total_tokens = 3 }, r.usage)
  end)

  it("streams text and tool calls as chunks ending with [DONE]", function()
    srv:script({ { text = "hello world", chunk_size = 4,
                   tool_calls = { { id = "call_9", name = "calc", arguments = { x = 12345 } } } } })
    local code, headers, body = post(srv.url .. "/chat/completions",
      { model = "s", stream = true, stream_options = { include_usage = true } })
    assert.equal(200, code)
    assert.equal("text/event-stream", headers["content-type"])
    local events = sse_data(body)
    assert.equal("[DONE]", events[#events])
    local chunks = {}
    for i = 1, #events - 1 do chunks[i] = cjson.decode(events[i]) end
    -- text: "hell" "o wo" "rld", the first with the role
    assert.same({ role = "assistant", content = "hell" }, chunks[1].choices[1].delta)
    assert.same({ content = "o wo" }, chunks[2].choices[1].delta)
    assert.same({ content = "rld" }, chunks[3].choices[1].delta)
    -- tool call header, then argument fragments with index only
    assert.same({ index = 0, id = "call_9", type = "function",
                  ["function"] = { name = "calc", arguments = "" } },
                chunks[4].choices[1].delta.tool_calls[1])
    local args, i = {}, 5
    while chunks[i].choices[1].delta.tool_calls do
      local frag = chunks[i].choices[1].delta.tool_calls[1]
      assert.same({ "function", "index" }, (function()
        local ks = {}
        for k in pairs(frag) do ks[#ks + 1] = k end
        table.sort(ks)
        return ks
      end)())
      assert.is_true(#frag["function"].arguments <= 4)
      args[#args + 1] = frag["function"].arguments
      i = i + 1
    end
    assert.is_true(#args > 1)
    assert.same({ x = 12345 }, cjson.decode(table.concat(args)))
    assert.equal("tool_calls", chunks[i].choices[1].finish_reason)
    assert.same({}, chunks[i].choices[1].delta)
    local usage = chunks[i + 1]
    assert.equal(0, #usage.choices)
    assert.equal(15, usage.usage.total_tokens)
    assert.equal(#events - 1, i + 1)
    for _, ch in ipairs(chunks) do
      assert.equal("chat.completion.chunk", ch.object)
      assert.equal("s", ch.model)
      assert.equal(chunks[1].id, ch.id)
    end
  end)

  it("omits the usage chunk without stream_options.include_usage", function()
    srv:script({ { text = "hi" } })
    local _, _, body = post(srv.url .. "/chat/completions", { stream = true })
    local events = sse_data(body)
    assert.same({ "[DONE]" }, { events[#events] })
    assert.equal(3, #events) -- "hi", finish, [DONE]
    assert.equal("stop", cjson.decode(events[2]).choices[1].finish_reason)
  end)

  it("sends a scripted status with headers and an error body", function()
    srv:script({ { status = 429, headers = { ["Retry-After"] = "1" } },
                 { status = 400, body = { error = { message = "bad" } } } })
    local code, headers, body = post(srv.url .. "/chat/completions", { model = "m" })
    assert.equal(429, code)
    assert.equal("1", headers["retry-after"])
    local e = cjson.decode(body).error
    assert.matches("429", e.message)
    assert.is_string(e.type)
    code, headers, body = post(srv.url .. "/chat/completions", { model = "m" })
    assert.equal(400, code)
    assert.equal("bad", cjson.decode(body).error.message)
  end)

  it("records requests with lower-case headers and the parsed body", function()
    srv:script({ { text = "a" }, { text = "b" } })
    post(srv.url .. "/chat/completions", { model = "m1", messages = { { role = "user", content = "hi" } } })
    post(srv.base .. "/other/prefix/chat/completions", '{"model":"m2"}')
    local reqs = srv:requests()
    assert.equal(2, #reqs)
    assert.equal("POST", reqs[1].method)
    assert.equal("/v1/chat/completions", reqs[1].path)
    assert.equal("application/json", reqs[1].headers["content-type"])
    assert.equal("m1", reqs[1].json.model)
    assert.equal("hi", reqs[1].json.messages[1].content)
    assert.equal('{"model":"m2"}', reqs[2].body)
    assert.equal("/other/prefix/chat/completions", srv:last_request().path)
    srv:reset()
    assert.same({}, srv:requests())
  end)

  it("appends to or replaces the script", function()
    assert.equal(1, srv:script({ { text = "one" } }))
    assert.equal(2, srv:append({ { text = "two" } }))
    local _, _, b1 = post(srv.url .. "/chat/completions", {})
    local _, _, b2 = post(srv.url .. "/chat/completions", {})
    assert.equal("one", cjson.decode(b1).choices[1].message.content)
    assert.equal("two", cjson.decode(b2).choices[1].message.content)
    assert.equal(1, srv:script({ { text = "x" } }))
    assert.equal(1, srv:script({ { text = "y" } }))
  end)

  it("answers 500 when the script is exhausted", function()
    local code, _, body = post(srv.url .. "/chat/completions", { model = "m" })
    assert.equal(500, code)
    assert.same({ message = "fake_openai: no scripted reply left", type = "server_error",
                  param = cjson.null, code = cjson.null }, cjson.decode(body).error)
  end)

  it("serves another connection while one stream is stalled", function()
    srv:script({ { text = "abcdefgh", stall_after_chunks = 1 }, { text = "fast" } })
    local stalled = raw_connect(srv.port, 0.3)
    raw_request(stalled, "POST", "/v1/chat/completions", '{"stream":true}')
    -- headers and the first event arrive, then nothing
    assert.matches("^HTTP/1%.1 200", stalled:receive("*l"))
    local got = {}
    while true do
      local l, err = stalled:receive("*l")
      if not l then
        assert.equal("timeout", err)
        break
      end
      got[#got + 1] = l
    end
    local events = table.concat(got, "\n")
    assert.matches('"content":"abcd"', events)
    assert.not_matches("DONE", events)
    local t0 = socket.gettime()
    local code, _, body = post(srv.url .. "/chat/completions", {})
    assert.equal(200, code)
    assert.equal("fast", cjson.decode(body).choices[1].message.content)
    assert.is_true(socket.gettime() - t0 < 0.5)
    stalled:close()
  end)

  it("delays a reply without blocking other connections", function()
    srv:script({ { text = "late", delay_ms = 400 }, { text = "early" } })
    local slow = raw_connect(srv.port)
    raw_request(slow, "POST", "/v1/chat/completions", "{}")
    socket.sleep(0.05) -- let the slow request take the first reply
    local t0 = socket.gettime()
    local _, _, body = post(srv.url .. "/chat/completions", {})
    assert.equal("early", cjson.decode(body).choices[1].message.content)
    assert.is_true(socket.gettime() - t0 < 0.3)
    local status, _, slow_body = raw_response(slow)
    assert.equal(200, status)
    assert.equal("late", cjson.decode(slow_body).choices[1].message.content)
    slow:close()
  end)

  it("keeps connections alive and accepts chunked bodies and Expect: 100-continue", function()
    srv:script({ { text = "1" }, { text = "2" }, { text = "3" } })
    local c = raw_connect(srv.port)
    raw_request(c, "POST", "/v1/chat/completions", '{"model":"a"}')
    local s1, _, b1 = raw_response(c)
    raw_request(c, "POST", "/v1/chat/completions", '{"model":"b"}', "Expect: 100-continue\r\n")
    local s2, _, b2 = raw_response(c)
    c:send("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
           .. "5\r\n{\"mod\r\n8\r\nel\":\"c\"}\r\n0\r\n\r\n")
    local s3, _, b3 = raw_response(c)
    c:close()
    assert.same({ 200, 200, 200 }, { s1, s2, s3 })
    assert.same({ "a", "b", "c" }, { cjson.decode(b1).model, cjson.decode(b2).model,
                                     cjson.decode(b3).model })
  end)

  it("survives malformed HTTP", function()
    local c = raw_connect(srv.port)
    c:send("GARBAGE\r\n\r\n")
    local status = raw_response(c)
    assert.equal(400, status)
    c:close()
    c = raw_connect(srv.port)
    c:send("POST /v1/chat/completions HTTP/1.1\r\nContent-Length: nope\r\n\r\n")
    assert.equal(400, (raw_response(c)))
    c:close()
    c = raw_connect(srv.port)
    c:send("POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")
    c:close() -- vanishes mid-body
    local out = {}
    local _, code = http.request({ url = srv.base .. "/_health", sink = ltn12.sink.table(out) })
    assert.equal(200, code)
  end)

  it("truncates, fails or ends streams on request", function()
    srv:script({
      { text = "abcdefgh", truncate_after_chunks = 1 },
      { text = "abcdefgh", stream_error = { message = "overloaded", code = "x1" }, after_chunks = 1 },
      { text = "abcdefgh", end_after_chunks = 2 },
    })
    -- abrupt close: the chunked body never terminates
    local c = raw_connect(srv.port)
    raw_request(c, "POST", "/v1/chat/completions", '{"stream":true}')
    local ok = pcall(raw_response, c)
    assert.is_false(ok)
    c:close()
    local _, _, body = post(srv.url .. "/chat/completions", { stream = true })
    local events = sse_data(body)
    assert.equal(2, #events)
    assert.same({ message = "overloaded", type = "server_error", code = "x1", param = cjson.null },
                cjson.decode(events[2]).error)
    body = select(3, post(srv.url .. "/chat/completions", { stream = true }))
    events = sse_data(body)
    assert.equal(2, #events)
    assert.not_matches("DONE", body)
  end)

  it("sends raw bodies, raw chunks and oversize replies", function()
    srv:script({
      { raw = "not json", content_type = "text/plain" },
      { raw_chunks = { "data: {\"a\"", ":1}\r\n\r\ndata: [DONE]\r\n\r\n" },
        content_type = "text/event-stream" },
      { oversize_bytes = 3000000 },
    })
    local code, headers, body = post(srv.url .. "/chat/completions", {})
    assert.equal(200, code)
    assert.matches("text/plain", headers["content-type"])
    assert.equal("not json", body)
    body = select(3, post(srv.url .. "/chat/completions", { stream = true }))
    assert.same({ '{"a":1}', "[DONE]" }, sse_data(body))
    body = select(3, post(srv.url .. "/chat/completions", {}))
    assert.is_true(#body >= 3000000)
    assert.equal("chat.completion", cjson.decode(body).object)
  end)

  it("exits on stop", function()
    local other = fake.start()
    local port = other.port
    other:stop()
    local c = socket.tcp()
    c:settimeout(1)
    assert.is_nil((c:connect("127.0.0.1", port)))
    c:close()
  end)
end)
