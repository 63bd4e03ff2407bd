-- luagent.openai with stream = true against the fake server (README):
-- text deltas become token events in order, tool-call deltas split
-- anywhere (inside strings, inside UTF-8 characters' neighbours) assemble by
-- index, usage comes from the final chunk, in the host and in workers.
local utf8_len = require "support.utf8_len"
local closing = require "support.closing"
local fake = require "support.fake_openai_client"
local H = require "support.fake_openai_app"
local cjson = require "cjson"

local TOOLS = [[
local note = luagent.tool{
  name = "note", description = "Take a note.",
  input_schema = { type = "object", properties = { text = { type = "string" }, n = { type = "integer" } },
    required = { "text" } },
  handler = function(args) return { got = args.text, n = args.n } end,
}
local add = luagent.tool{
  name = "add", description = "Add.",
  input_schema = { type = "object", properties = { a = { type = "integer" }, b = { type = "integer" } } },
  handler = function(args) return args.a + args.b end,
}
]]

local function tokens_of(events, run_or_task)
  local out = {}
  for _, ev in ipairs(events) do
    if ev.kind == "token" and (run_or_task == nil or ev.run_id == run_or_task or ev.task_id == run_or_task) then
      out[#out + 1] = ev.payload.text
    end
  end
  return out
end

describe("openai adapter: streaming", function()
  local srv
  setup(function() srv = fake.start() end)
  teardown(function() srv:stop() end)
  before_each(function() srv:reset() end)

  it("emits text deltas as token events in order; they add up to the final text", function()
    local app = closing(H.simple(srv, { stream = true }))
    local text = "Streaming in small pieces: ünïcödé, \"quotes\", and emoji \u{1F600} too."
    srv:script{ { text = text, chunk_size = 3,
      usage = { prompt_tokens = 21, completion_tokens = 34, total_tokens = 55 } } }
    local res = app:run("a", "stream please")
    assert.equal("completed", res.status)
    assert.equal(text, res.final)
    local events = H.events(app)
    local toks = tokens_of(events, res.run_id)
    assert.is_true(#toks >= 20)
    assert.equal(text, table.concat(toks))
    for _, t in ipairs(toks) do assert.is_true(utf8_len(t) ~= nil and utf8_len(t) <= 3) end
    -- tokens come between the model call's start and its end
    local start_seq, call_seq
    for _, ev in ipairs(events) do
      if ev.kind == "lm_call_start" then start_seq = ev.seq end
      if ev.kind == "lm_call" then call_seq = ev.seq end
    end
    for _, ev in ipairs(H.of_kind(events, "token")) do
      assert.is_true(ev.seq > start_seq and ev.seq < call_seq)
    end
    -- usage from the final chunk
    assert.same({ prompt_tokens = 21, completion_tokens = 34, total_tokens = 55 }, res.usage)
    assert.same({ prompt_tokens = 21, completion_tokens = 34, total_tokens = 55 },
      H.of_kind(events, "lm_call")[1].payload.usage)
    local body = srv:requests()[1].json
    assert.is_true(body.stream)
    assert.same({ include_usage = true }, body.stream_options)
    assert.matches("text/event%-stream", srv:requests()[1].headers.accept)
  end)

  it("assembles tool calls split across many chunks", function()
    local app = closing(H.simple(srv, { stream = true }, { pre = TOOLS, tools = "{ note, add }" }))
    local args1 = '{"text": "a \\"quoted\\" string, with \\\\ and ünïcode \\u00e9", "n": 12345}'
    local args2 = '{"a":1,"b":2}'
    srv:script{
      { text = "Let me note that.", chunk_size = 3, tool_calls = {
        { id = "call_AbC-123_xyz", name = "note", arguments = args1 },
        { id = "call_second", name = "add", arguments = args2 },
      } },
      { text = "Noted.", chunk_size = 3 },
    }
    local res = app:run("a", "note it")
    assert.equal("completed", res.status)
    assert.equal("Noted.", res.final)
    local assistant = res.messages[3]
    assert.equal("Let me note that.", assistant.content)
    assert.equal(2, #assistant.tool_calls)
    assert.equal("call_AbC-123_xyz", assistant.tool_calls[1].id)
    assert.equal("note", assistant.tool_calls[1].name)
    -- the text the model sent, and the table it decodes to
    assert.equal(args1, assistant.tool_calls[1].raw_arguments)
    assert.same(cjson.decode(args1), assistant.tool_calls[1].arguments)
    assert.equal("call_second", assistant.tool_calls[2].id)
    assert.equal(args2, assistant.tool_calls[2].raw_arguments)
    -- the tools ran with the assembled arguments
    local r1 = cjson.decode(res.messages[4].content)
    assert.same({ ok = true, value = { got = 'a "quoted" string, with \\ and ünïcode é', n = 12345 } }, r1)
    assert.equal("call_AbC-123_xyz", res.messages[4].tool_call_id)
    assert.same({ ok = true, value = 3 }, cjson.decode(res.messages[5].content))
    assert.equal("call_second", res.messages[5].tool_call_id)
    -- and went back to the provider verbatim
    local sent = srv:requests()[2].json.messages[3]
    assert.equal(args1, sent.tool_calls[1]["function"].arguments)
    assert.equal("call_AbC-123_xyz", sent.tool_calls[1].id)
    assert.equal("call_second", sent.tool_calls[2].id)
    assert.equal("Let me note that.Noted.", table.concat(tokens_of(H.events(app), res.run_id)))
  end)

  it("handles CRLF framing and a stream without usage", function()
    local app = closing(H.simple(srv, { stream = true }))
    srv:script{ { text = "line one\nline two", eol = "\r\n", chunk_size = 2, usage = false } }
    local res = app:run("a", "x")
    assert.equal("completed", res.status)
    assert.equal("line one\nline two", res.final)
    -- no usage from the provider: an estimate, never a silent 0 (README "Usage and cost")
    assert.is_true(res.usage.estimated)
    assert.is_true(res.usage.completion_tokens >= 4 and res.usage.prompt_tokens > 0)
    local call = H.of_kind(H.events(app), "lm_call")[1].payload
    assert.is_false(call.usage_reported)
    assert.is_nil(call.usage)
    assert.is_true(call.usage_estimated)
  end)

  it("accepts a hand-written stream: tool call in one delta, several choices fields, comments", function()
    local app = closing(H.simple(srv, { stream = true }, { pre = TOOLS, tools = "{ add }" }))
    local function ev(t) return "data: " .. t .. "\n\n" end
    srv:script{
      { content_type = "text/event-stream", raw_chunks = {
        ": keep-alive comment\n\n",
        ev('{"choices":[{"index":0,"delta":{"role":"assistant","tool_calls":[{"index":0,"id":"call_one",' ..
          '"type":"function","function":{"name":"add","arguments":"{\\"a\\":2,"}}]}}]}'),
        -- later deltas without id/type/name, one without index (Ollama and
        -- llama.cpp send such)
        ev('{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\\"b\\":"}}]}}]}'),
        ev('{"choices":[{"index":0,"delta":{"tool_calls":[{"function":{"arguments":"5}"}}]}}]}'),
        ev('{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}'),
        ev('{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}'),
        ev("[DONE]"),
      } },
      { text = "7" },
    }
    local res = app:run("a", "x")
    assert.equal("completed", res.status)
    assert.equal("7", res.final)
    assert.equal('{"a":2,"b":5}', res.messages[3].tool_calls[1].raw_arguments)
    assert.same({ a = 2, b = 5 }, res.messages[3].tool_calls[1].arguments)
    assert.equal("call_one", res.messages[3].tool_calls[1].id)
    assert.same({ ok = true, value = 7 }, cjson.decode(res.messages[4].content))
    assert.equal(7 + 15, res.usage.total_tokens)
  end)

  it("accepts a plain JSON reply to a stream request", function()
    local app = closing(H.simple(srv, { stream = true }))
    srv:script{ { raw = cjson.encode({ id = "c", object = "chat.completion", model = "m",
      choices = { { index = 0, finish_reason = "stop", message = { role = "assistant", content = "not streamed" } } },
      usage = { prompt_tokens = 1, completion_tokens = 1, total_tokens = 2 } }),
      content_type = "application/json" } }
    local res = app:run("a", "x")
    assert.equal("completed", res.status)
    assert.equal("not streamed", res.final)
  end)

  it("streams in a background task: tokens carry the task id", function()
    local app = closing(H.simple(srv, { stream = true }, { pre = TOOLS, tools = "{ add }" }))
    srv:script{
      { tool_calls = { { id = "call_bg", name = "add", arguments = { a = 20, b = 22 } } }, chunk_size = 3 },
      { text = "The answer is 42.", chunk_size = 3,
        usage = { prompt_tokens = 5, completion_tokens = 6, total_tokens = 11 } },
    }
    local rec = app:enqueue_background("a", "compute", { timeout_s = 10 })
    local w = app:wait({ rec.task_id }, { timeout_s = 10 })
    assert.is_true(w.done)
    local got = app:get(rec.task_id)
    assert.equal("completed", got.status)
    assert.equal("The answer is 42.", got.result.final)
    assert.equal("call_bg", got.result.messages[3].tool_calls[1].id)
    assert.same({ ok = true, value = 42 }, cjson.decode(got.result.messages[4].content))
    assert.equal(11 + 15, got.result.usage.total_tokens)
    local toks = tokens_of(H.events(app), rec.task_id)
    assert.equal("The answer is 42.", table.concat(toks))
  end)
end)
