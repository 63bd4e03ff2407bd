-- The API key (README, R-13): it reaches the provider as an
-- `Authorization: Bearer` header and nowhere else, and never appears in
-- events (any kind), task records, errors, run results or saved chat
-- threads -- also when the provider echoes it back in an error body, a
-- stream error, an HTML page or a retry message.
local closing = require "support.closing"
local fake = require "support.fake_openai_client"
local H = require "support.fake_openai_app"
local cjson = require "cjson"

local KEY = "sk-SENTINEL-4f9c2a7e1b3d8c6a5e0f7b9d2c4a6e8f"
local PREFIX = "sk-SENTINEL"

local function echo_body(status)
  return { status = status, body = { error = {
    message = "Incorrect API key provided: " .. KEY .. ". You can find your API key at https://example/keys.",
    type = "invalid_request_error", code = "invalid_api_key" } } }
end

-- Every way a provider can hand the key back to us.
local function echo_script()
  return {
    echo_body(503),                                             -- retried: a retry event message
    echo_body(401),                                             -- final error, not retried
  }
end

local function assert_clean(text, where)
  assert.is_nil(text:find(KEY, 1, true), "the key leaked into " .. where)
  assert.is_nil(text:find(PREFIX, 1, true), "part of the key leaked into " .. where)
end

describe("openai adapter: the API key", function()
  local srv
  setup(function() srv = fake.start() end)
  teardown(function() srv:stop() end)
  before_each(function() srv:reset() end)

  local function new_app(opts)
    opts = opts or {}
    opts.api_key = KEY
    opts.max_retries = opts.max_retries or 1
    return H.app(srv, opts, [[
      local echo = luagent.tool{ name = "echo", description = "Echo.",
        input_schema = { type = "object", properties = { text = { type = "string" } } },
        handler = function(args) return args.text end }
      return luagent.config{
        model = MODEL,
        background_tasks = { enabled = true },
        agents = { luagent.agent{ id = "a", instructions = "Be brief.", tools = { echo } } },
      } ]])
  end

  it("is sent as a Bearer token and in no other place", function()
    local app = closing(new_app())
    srv:script{ { tool_calls = { { id = "call_1", name = "echo", arguments = { text = "hi" } } } }, { text = "ok" } }
    assert.equal("completed", app:run("a", "x").status)
    local reqs = srv:requests()
    assert.equal(2, #reqs)
    for _, r in ipairs(reqs) do
      assert.equal("Bearer " .. KEY, r.headers.authorization)
      assert_clean(r.body, "the request body")
      assert_clean(r.path, "the request path")
      for name, value in pairs(r.headers) do
        if name ~= "authorization" then assert_clean(value, "header " .. name) end
      end
    end
  end)

  it("stays out of a foreground run's results, events and errors when echoed back", function()
    local app = closing(new_app())
    srv:script(echo_script())
    local res = app:run("a", "x")
    assert.equal("failed", res.status)
    assert.equal("model", res.error.kind)
    assert.equal(401, res.error.status)
    -- the provider's message is kept, with the key taken out
    assert.matches("Incorrect API key provided: %[redacted%]%. You can find your API key",
      res.error.message)
    local retries = H.of_kind(H.events(app), "retry")
    assert.equal(1, #retries)
    assert.matches("Incorrect API key provided", retries[1].payload.message)
    assert_clean(H.everything(app, { res }), "a foreground run")
  end)

  it("stays out of a background run's record, result and events", function()
    local app = closing(new_app({ stream = true }))
    srv:script(echo_script())
    local rec = app:enqueue_background("a", "x", { timeout_s = 10 })
    assert.is_true(app:wait({ rec.task_id }, { timeout_s = 10 }).done)
    local got = app:get(rec.task_id)
    assert.equal("failed", got.status)
    assert.equal("model", got.error.kind)
    assert.matches("%[redacted%]", got.error.message)
    assert_clean(H.everything(app, { got, app:list{} }), "a background run")
  end)

  it("stays out of a saved chat thread", function()
    local app = closing(new_app())
    srv:script{
      { tool_calls = { { id = "call_1", name = "echo", arguments = { text = "one" } } } },
      echo_body(401),
    }
    local res = app:chat("a", "hello", { thread_id = "t1" })
    assert.equal("failed", res.status)
    local thread = app:thread("a", "t1")
    assert.is_true(#thread >= 3)
    assert_clean(H.json.encode(thread), "the saved thread")
    assert_clean(H.everything(app, { res }), "a chat run")
  end)

  it("is redacted from in-stream errors, named error events and non-JSON bodies", function()
    local app = closing(new_app({ stream = true, max_retries = 0 }))
    local function ev(t) return "data: " .. t .. "\n\n" end
    local cases = {
      { text = "abc", after_chunks = 1,
        stream_error = { message = "key " .. KEY .. " was revoked", type = "invalid_request_error" } },
      { content_type = "text/event-stream", raw_chunks = {
        ev('{"choices":[{"index":0,"delta":{"content":"a"}}]}'),
        "event: error\ndata: " .. cjson.encode({ error = { message = "bad key " .. KEY } }) .. "\n\n" } },
      -- the key straddles any cut of the body that makes the message
      { raw = "<html>" .. string.rep("p", 180) .. " Authorization: Bearer " .. KEY .. " " ..
        string.rep("q", 2000) .. "</html>", content_type = "text/html" },
      { status = 400, body = string.rep("r", 1000) .. KEY .. string.rep("s", 100), content_type = "text/plain" },
      { content_type = "text/event-stream", raw_chunks = { ev("not json " .. string.rep("t", 180) .. KEY) } },
    }
    local results = {}
    for i, case in ipairs(cases) do
      srv:script{ case }
      local res = app:run("a", "case " .. i)
      assert.equal("failed", res.status, "case " .. i)
      results[#results + 1] = res
    end
    -- the provider's words are kept around the redacted key
    assert.matches("key %[redacted%] was revoked", results[1].error.message)
    assert.matches("bad key %[redacted%]", results[2].error.message)
    assert.matches("text/html", results[3].error.message)
    assert.matches("^HTTP 400: r+", results[4].error.message)
    assert.matches("not JSON", results[5].error.message)
    assert_clean(H.everything(app, results), "the error paths")
  end)

  it("never enters the config snapshot that workers receive", function()
    -- the model object's plain data is what crosses to workers
    local luagent = require "luagent"
    local m = luagent.openai{ model = "m", base_url = srv.url, api_key = KEY }
    local plain = {}
    for k, v in pairs(m) do
      if type(v) ~= "function" then plain[k] = v end
    end
    assert_clean(H.json.encode(plain), "the model's data")
    -- and a worker still uses the key
    local app = closing(new_app())
    srv:script{ { text = "bg ok" } }
    local rec = app:enqueue_background("a", "x", { timeout_s = 10 })
    assert.is_true(app:wait({ rec.task_id }, { timeout_s = 10 }).done)
    assert.equal("completed", app:get(rec.task_id).status)
    assert.equal("Bearer " .. KEY, srv:requests()[1].headers.authorization)
  end)
end)
