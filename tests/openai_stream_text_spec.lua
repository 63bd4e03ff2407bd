-- Streamed chunks that carry only text are read by the core (README,
-- luagent.openai): it emits their token events itself and hands their text
-- to the adapter, in order with the chunks Lua reads. Whatever a chunk
-- looks like, the token events and the answer are those of decoding every
-- chunk with luagent.json, in the host and in workers.
local closing = require "support.closing"
local fake = require "support.fake_openai_client"
local H = require "support.fake_openai_app"
local json = require "luagent.json"

local function ev(t) return "data: " .. t .. "\n\n" end

-- Chunks of every shape a provider may send (and some it should not).
local CHUNKS = {
  '{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}',
  '{"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}]}',
  '{"choices":[{"delta":{"content":"lo\\n\\"w\\u00f6rld\\"\\t\\/"}}]}',
  '{"choices":[{"delta":{"content":" \\ud83d\\ude00 lone \\ud800 low \\udc00."}}]}',
  '{"choices":[{"delta":{"content":"bad \255 byte"}}]}',
  '{"choices":[{"delta":{"content":null}}]}',
  '{"choices":[{"delta":{}}]}',
  '{"choices":[{"delta":{"content":"first"}}],"choices":[{"delta":{"content":" second"}}]}',
  '{"\\u0063hoices":[{"delta":{"content":" escaped key"}}]}',
  '{"error":null,"usage":null,"choices":[{"delta":{"content":" nulls","tool_calls":null}}]}',
  ' { "choices" : [ { "delta" : { "content" : " spaced" } } ] } ',
  '{"choices":[{"delta":{"content":" two"}},{"delta":{"content":" ignored"}}]}',
  '{"choices":[{"delta":{"content":42}}]}',
  '{"choices":[{"delta":{"content":" end"},"finish_reason":"stop"}]}',
  '{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}',
  "[DONE]",
}

-- What openai.lua makes of each chunk when Lua decodes it.
local function expected_texts()
  local out = {}
  for _, c in ipairs(CHUNKS) do
    local v = json.decode_safe(c)
    local choice = type(v) == "table" and type(v.choices) == "table" and v.choices[1]
    local delta = type(choice) == "table" and type(choice.delta) == "table" and choice.delta or {}
    if type(delta.content) == "string" and delta.content ~= "" then out[#out + 1] = delta.content end
  end
  return out
end

local function script(srv)
  local chunks = {}
  for i, c in ipairs(CHUNKS) do chunks[i] = ev(c) end
  srv:script{ { content_type = "text/event-stream", raw_chunks = chunks } }
end

local function tokens(events, id)
  local out, start, call = {}, nil, nil
  for _, e in ipairs(events) do
    if e.run_id == id or e.task_id == id then
      if e.kind == "lm_call_start" then start = e.seq end
      if e.kind == "lm_call" then call = e.seq end
      if e.kind == "token" then
        assert.is_true(start ~= nil and call == nil, "a token outside its model call")
        out[#out + 1] = e.payload.text
      end
    end
  end
  return out
end

describe("openai adapter: text chunks read by the core", function()
  local srv
  setup(function() srv = fake.start() end)
  teardown(function() srv:stop() end)
  before_each(function() srv:reset() end)

  it("gives the token events and the answer of a Lua decode of every chunk (foreground)", function()
    local want = expected_texts()
    assert.equal(" second", want[5]) -- the last of a repeated key, as the decoder keeps it
    local app = closing(H.simple(srv, { stream = true }))
    script(srv)
    local res = app:run("a", "x")
    assert.equal("completed", res.status)
    assert.same(want, tokens(H.events(app), res.run_id))
    assert.equal(table.concat(want), res.final)
    assert.equal(7, res.usage.total_tokens)
  end)

  it("gives the same in a background task, with the task's ids on each token", function()
    local want = expected_texts()
    local app = closing(H.simple(srv, { stream = true }))
    script(srv)
    local rec = app:enqueue_background("a", "x")
    assert.is_true(app:wait({ rec.task_id }, { timeout_s = 10 }).done)
    local got = app:get(rec.task_id)
    assert.equal("completed", got.status)
    assert.equal(table.concat(want), got.result.final)
    local evs = H.events(app)
    assert.same(want, tokens(evs, rec.task_id))
    for _, e in ipairs(evs) do
      if e.kind == "token" then
        assert.equal(rec.task_id, e.task_id)
        assert.equal("a", e.agent_id)
      end
    end
  end)

  it("hands text-only chunks to on_text, in order with the rest, which go to on_event", function()
    local S = { url = srv.url }
    local app = closing(H.app(srv, { stream = true }, [[
local http = require "luagent.http"
local seen = {}
S.seen = seen
local model = luagent.function_model(function(request, ctx)
  http.request(ctx, { method = "POST", url = S.url .. "/chat/completions", body = "{}", stream = true,
    timeout_s = 10, token_event = { run_id = ctx.run_id, agent_id = ctx.agent_id, depth = ctx.depth } },
    function(data) seen[#seen + 1] = { event = data } end,
    function(t) seen[#seen + 1] = { text = t } end)
  return { text = "done" }
end)
return luagent.config{ model = model, agents = { luagent.agent{ id = "a", instructions = "x" } } }
]], S))
    local chunks = {}
    for i, c in ipairs({ "a", "b", "c", "d", "e", "f" }) do
      chunks[i] = ev('{"choices":[{"delta":{"content":"' .. c .. '"}' ..
        (c == "d" and ',"finish_reason":"stop"' or "") .. '}]}')
    end
    chunks[#chunks + 1] = ev("[DONE]")
    srv:script{ { content_type = "text/event-stream", raw_chunks = chunks } }
    local res = app:run("a", "x")
    assert.equal("completed", res.status)
    -- every chunk once, in order: text from on_text, or a chunk on_event got
    local all, texts, events = {}, {}, 0
    for _, s in ipairs(S.seen) do
      if s.text then
        all[#all + 1] = s.text
        texts[#texts + 1] = s.text
      elseif s.event ~= "[DONE]" then
        events = events + 1
        all[#all + 1] = json.decode(s.event).choices[1].delta.content
      end
    end
    assert.equal("abcdef", table.concat(all))
    assert.is_true(#texts > 0, "no chunk was read by the core")
    assert.is_true(events >= 1) -- "d" carries its finish: Lua reads it
    assert.is_false(table.concat(texts):find("d", 1, true) ~= nil)
    -- the core's token events are exactly the text it handed on
    local toks = {}
    for _, e in ipairs(H.events(app)) do
      if e.kind == "token" then toks[#toks + 1] = e.payload.text end
    end
    assert.equal(table.concat(texts), table.concat(toks))
  end)
end)
