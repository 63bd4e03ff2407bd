-- luagent.openai against the fake OpenAI-compatible server, real HTTP:
-- what goes on the wire (README, docs/architecture.md). Plain answers, tool-call round
-- trips with ids kept verbatim, several calls in one reply, bodies that
-- OpenAI accepts (no empty tools/tool_calls, list keywords as arrays, empty
-- required dropped, properties always an object), base_url forms, the
-- Authorization header and keyless (Ollama-style) use.
local closing = require "support.closing"
local LUA = require("support.lua_bin").lua
local fake = require "support.fake_openai_client"
local H = require "support.fake_openai_app"
local cjson = require "cjson"
local null = cjson.null

local ADD = [[
local add = luagent.tool{
  name = "add", description = "Add two integers.",
  input_schema = { type = "object",
    properties = { a = { type = "integer" }, b = { type = "integer" } },
    required = { "a", "b" } },
  handler = function(args) return args.a + args.b end,
}
local echo = luagent.tool{
  name = "echo", description = "Echo a text.",
  input_schema = { type = "object", properties = { text = { type = "string" } },
    required = { "text" } },
  handler = function(args) return { echoed = args.text } end,
}
]]

describe("openai adapter: requests", function()
  local srv
  setup(function() srv = fake.start() end)
  teardown(function() srv:stop() end)
  before_each(function() srv:reset() end)

  it("gets a plain answer and sends the minimal body", function()
    local app = closing(H.simple(srv, { params = { temperature = 0.25, seed = 7 } }))
    srv:script{ { text = "Hello there.", usage = { prompt_tokens = 12, completion_tokens = 3,
      total_tokens = 15 } } }
    local res = app:run("a", "Say hello.")
    assert.equal("completed", res.status)
    assert.equal("Hello there.", res.final)
    assert.same({ prompt_tokens = 12, completion_tokens = 3, total_tokens = 15 }, res.usage)
    local reqs = srv:requests()
    assert.equal(1, #reqs)
    assert.equal("POST", reqs[1].method)
    assert.equal("/v1/chat/completions", reqs[1].path)
    assert.matches("application/json", reqs[1].headers["content-type"])
    local body = reqs[1].json
    assert.equal("m", body.model)
    assert.equal(0.25, body.temperature)
    assert.equal(7, body.seed)
    assert.same({ { role = "system", content = "Be brief." }, { role = "user", content = "Say hello." } },
      body.messages)
    -- no tools, no streaming fields
    assert.is_nil(body.tools)
    assert.is_nil(body.stream)
    assert.is_nil(body.stream_options)
    assert.is_nil(reqs[1].body:find('"tools"', 1, true))
    assert.is_nil(reqs[1].body:find('"tool_calls"', 1, true))
  end)

  it("round-trips a tool call and sends the exact transcript", function()
    local app = closing(H.simple(srv, {}, { pre = ADD, tools = "{ add }" }))
    srv:script{
      -- a raw arguments string: it must come back byte for byte
      { tool_calls = { { id = "call_Zq9-xY_01", name = "add", arguments = '{"a": 2, "b":3}' } },
        usage = { prompt_tokens = 20, completion_tokens = 5, total_tokens = 25 } },
      { text = "2 + 3 = 5", usage = { prompt_tokens = 30, completion_tokens = 6, total_tokens = 36 } },
    }
    local res = app:run("a", "What is 2 + 3?")
    assert.equal("completed", res.status)
    assert.equal("2 + 3 = 5", res.final)
    assert.same({ prompt_tokens = 50, completion_tokens = 11, total_tokens = 61 }, res.usage)
    local reqs = srv:requests()
    assert.equal(2, #reqs)
    local tools_wire = { {
      type = "function",
      ["function"] = {
        name = "add", description = "Add two integers.",
        parameters = { type = "object",
          properties = { a = { type = "integer" }, b = { type = "integer" } },
          required = { "a", "b" } },
      },
    } }
    assert.same(tools_wire, reqs[1].json.tools)
    assert.same(tools_wire, reqs[2].json.tools)
    local m = reqs[2].json.messages
    assert.equal(4, #m)
    assert.same({ role = "system", content = "Be brief." }, m[1])
    assert.same({ role = "user", content = "What is 2 + 3?" }, m[2])
    assert.same({
      role = "assistant", content = null,
      tool_calls = { { id = "call_Zq9-xY_01", type = "function",
        ["function"] = { name = "add", arguments = '{"a": 2, "b":3}' } } },
    }, m[3])
    assert.equal("tool", m[4].role)
    assert.equal("call_Zq9-xY_01", m[4].tool_call_id)
    assert.same({ ok = true, value = 5 }, cjson.decode(m[4].content))
    local keys = {}
    for k in pairs(m[4]) do keys[#keys + 1] = k end
    table.sort(keys)
    assert.same({ "content", "role", "tool_call_id" }, keys)
    -- the transcript the run returns matches what was sent
    assert.equal("call_Zq9-xY_01", res.messages[3].tool_calls[1].id)
    assert.equal("call_Zq9-xY_01", res.messages[4].tool_call_id)
  end)

  -- the tools part of a body is encoded once per tool and spliced in
  it("sends bodies byte for byte as one encoding of the whole request, params after tools included", function()
    local app = closing(H.simple(srv, { params = { temperature = 0.5, top_p = 1, user = "u-1", n = 1 } },
      { pre = ADD, tools = "{ add, echo }" }))
    local function script()
      srv:script{ { tool_calls = { { name = "add", arguments = { a = 1, b = 2 } } } }, { text = "3" } }
    end
    script()
    assert.equal("completed", app:run("a", "one").status)
    script()
    local rec = app:enqueue_background("a", "two")
    assert.is_true(app:wait({ rec.task_id }, { timeout_s = 10 }).done)
    script()
    assert.equal("completed", app:run("a", "three").status)
    local reqs = srv:requests()
    assert.equal(6, #reqs)
    for _, r in ipairs(reqs) do
      -- (decoding drops an object's null members: the assistant's content)
      assert.equal(H.json.encode(H.json.decode(r.body)), (r.body:gsub('"content":null,', "")))
      assert.truthy(r.body:find('"tools":[{"function":{"description":"Add two integers.","name":"add"', 1, true), r.body)
      assert.truthy(r.body:find('"type":"function"}],"top_p":1,"user":"u-1"}', 1, true), r.body)
      assert.equal(0.5, r.json.temperature)
    end
  end)

  it("runs two tool calls of one reply in order and answers each by id", function()
    local app = closing(H.simple(srv, {}, { pre = ADD, tools = "{ add, echo }" }))
    srv:script{
      { text = "Working on it.", tool_calls = {
        { id = "call_first", name = "echo", arguments = { text = "héllo \"world\"" } },
        { id = "call_second", name = "add", arguments = '{"a":40,"b":2}' },
      } },
      { text = "done" },
    }
    local res = app:run("a", "go")
    assert.equal("completed", res.status)
    local m = srv:requests()[2].json.messages
    assert.equal(5, #m)
    assert.equal("assistant", m[3].role)
    assert.equal("Working on it.", m[3].content)
    assert.equal(2, #m[3].tool_calls)
    assert.equal("call_first", m[3].tool_calls[1].id)
    assert.equal("echo", m[3].tool_calls[1]["function"].name)
    assert.same({ text = "héllo \"world\"" }, cjson.decode(m[3].tool_calls[1]["function"].arguments))
    assert.equal("call_second", m[3].tool_calls[2].id)
    assert.equal('{"a":40,"b":2}', m[3].tool_calls[2]["function"].arguments)
    assert.same({ role = "tool", tool_call_id = "call_first",
      content = m[4].content }, m[4])
    assert.same({ ok = true, value = { echoed = "héllo \"world\"" } }, cjson.decode(m[4].content))
    assert.equal("call_second", m[5].tool_call_id)
    assert.same({ ok = true, value = 42 }, cjson.decode(m[5].content))
    local starts = H.of_kind(H.events(app), "tool_start")
    assert.equal(2, #starts)
    assert.equal("call_first", starts[1].payload.tool_call_id)
    assert.equal("call_second", starts[2].payload.tool_call_id)
  end)

  it("sends a tool error back to the model as a tool message", function()
    local app = closing(H.simple(srv, {}, { pre = ADD, tools = "{ add }" }))
    srv:script{
      { tool_calls = { { id = "call_bad", name = "add", arguments = '{"a": "two"}' } } },
      { tool_calls = { { id = "call_nope", name = "nope", arguments = "not json" } } },
      { text = "sorry" },
    }
    local res = app:run("a", "go")
    assert.equal("completed", res.status)
    local m = srv:requests()[3].json.messages
    assert.equal("call_bad", m[4].tool_call_id)
    local r1 = cjson.decode(m[4].content)
    assert.is_false(r1.ok)
    assert.equal("validation", r1.cause.kind)
    assert.equal("call_nope", m[6].tool_call_id)
    assert.is_false(cjson.decode(m[6].content).ok)
    -- the unparsable arguments went back as the model sent them
    assert.equal("not json", m[5].tool_calls[1]["function"].arguments)
  end)

  it("replaces invalid UTF-8 in contents with U+FFFD", function()
    local app = closing(H.simple(srv))
    srv:script{ { text = "ok" } }
    assert.equal("completed", app:run("a", "bad \255 byte and good \u{e9}").status)
    local req = srv:requests()[1]
    assert.equal("bad \u{FFFD} byte and good \u{e9}", req.json.messages[2].content)
  end)

  describe("bodies providers accept", function()
    local SCHEMAS = [[
local t_empty = luagent.tool{ name = "t_empty", description = "",
  input_schema = { type = "object", properties = {}, required = {} },
  handler = function() return 1 end }
local t_none = luagent.tool{ name = "t_none", handler = function() return 2 end }
local t_lists = luagent.tool{ name = "t_lists", description = "Lists.",
  input_schema = { type = "object",
    properties = {
      color = { type = "string", enum = { "red" } },
      maybe = { type = { "string", "null" } },
      required = { type = "boolean" },
      tags = { type = "array", items = { type = "string", enum = { "a", "b" } } },
      inner = { type = "object", properties = {}, required = {} },
      pick = { anyOf = { { type = "integer" } } },
    },
    required = { "color" } },
  handler = function() return 3 end }
]]
    local SRC = SCHEMAS .. [[
return luagent.config{
  model = MODEL,
  background_tasks = { enabled = true },
  agents = {
    luagent.agent{ id = "bare", instructions = "No tools." },
    luagent.agent{ id = "schemas", instructions = "Tools.", tools = { t_empty, t_none, t_lists } },
  },
} ]]

    local function tool_params(req)
      local out = {}
      for _, t in ipairs(req.json.tools) do out[t["function"].name] = t end
      return out
    end

    local function check_schema_bytes(body)
      -- properties is an object even when empty; empty required dropped
      assert.truthy(body:find('"name":"t_empty","parameters":{"properties":{},"type":"object"}}', 1, true),
        body)
      assert.truthy(body:find('"name":"t_none","parameters":{"properties":{},"type":"object"}}', 1, true),
        body)
      -- list keywords are arrays even with one element
      assert.truthy(body:find('"enum":["red"]', 1, true), body)
      assert.truthy(body:find('"type":["string","null"]', 1, true), body)
      assert.truthy(body:find('"required":["color"]', 1, true), body)
      assert.truthy(body:find('"anyOf":[{"type":"integer"}]', 1, true), body)
      assert.truthy(body:find('"items":{"enum":["a","b"],"type":"string"}', 1, true), body)
      -- a property named "required" stays a property
      assert.truthy(body:find('"required":{"type":"boolean"}', 1, true), body)
      assert.truthy(body:find('"inner":{"properties":{},"type":"object"}', 1, true), body)
      assert.is_nil(body:find('"required":[]', 1, true))
      assert.is_nil(body:find('"required":{}', 1, true))
      assert.is_nil(body:find('"properties":[]', 1, true))
      assert.is_nil(body:find('"description":""', 1, true))
    end

    it("omits tools for an agent without tools and empty tool_calls everywhere", function()
      local app = closing(H.app(srv, {}, SRC))
      srv:script{ { text = "one" }, { text = "two" } }
      assert.equal("completed", app:chat("bare", "first", { thread_id = "t" }).status)
      assert.equal("completed", app:chat("bare", "second", { thread_id = "t" }).status)
      local reqs = srv:requests()
      assert.equal(2, #reqs)
      for _, r in ipairs(reqs) do
        assert.is_nil(r.body:find('"tools"', 1, true), r.body)
        assert.is_nil(r.body:find('"tool_calls"', 1, true), r.body)
        assert.is_nil(r.body:find('"tool_choice"', 1, true), r.body)
      end
      -- the history went out as plain messages
      assert.same({ { role = "system", content = "No tools." }, { role = "user", content = "first" },
        { role = "assistant", content = "one" }, { role = "user", content = "second" } },
        reqs[2].json.messages)
    end)

    it("normalises tool schemas in a foreground run", function()
      local app = closing(H.app(srv, {}, SRC))
      srv:script{ { text = "ok" } }
      assert.equal("completed", app:run("schemas", "go").status)
      local req = srv:requests()[1]
      check_schema_bytes(req.body)
      local p = tool_params(req)
      assert.is_nil(p.t_empty["function"].description)
      assert.equal("Lists.", p.t_lists["function"].description)
    end)

    it("sends the same schema bytes from a worker (after the snapshot)", function()
      local app = closing(H.app(srv, {}, SRC))
      srv:script{ { text = "fg" }, { text = "bg" } }
      assert.equal("completed", app:run("schemas", "go").status)
      local rec = app:enqueue_background("schemas", "go")
      local w = app:wait({ rec.task_id }, { timeout_s = 10 })
      assert.is_true(w.done)
      assert.equal("completed", app:get(rec.task_id).status)
      local reqs = srv:requests()
      assert.equal(2, #reqs)
      check_schema_bytes(reqs[2].body)
      local function tools_part(body) return body:match('"tools":(%b[])') end
      assert.equal(tools_part(reqs[1].body), tools_part(reqs[2].body))
    end)

    it("never sends an empty tool_calls list when a reply has none", function()
      local app = closing(H.app(srv, {}, SRC))
      -- a model reply with an explicit empty list
      srv:script{ { raw = '{"id":"x","object":"chat.completion","model":"m","choices":[{"index":0,' ..
        '"finish_reason":"stop","message":{"role":"assistant","content":"plain","tool_calls":[]}}]}',
        content_type = "application/json" }, { text = "second" } }
      assert.equal("plain", app:chat("schemas", "a", { thread_id = "x" }).final)
      assert.equal("second", app:chat("schemas", "b", { thread_id = "x" }).final)
      local body = srv:requests()[2].body
      assert.is_nil(body:find('"tool_calls"', 1, true), body)
    end)
  end)

  describe("base_url, headers and keys", function()
    it("tolerates a trailing slash on base_url", function()
      local app = closing(H.simple(srv, { base_url = srv.url .. "/" }))
      srv:script{ { text = "ok" } }
      assert.equal("completed", app:run("a", "x").status)
      assert.equal("/v1/chat/completions", srv:requests()[1].path)
    end)

    it("reads OPENAI_BASE_URL (trailing slash tolerated) and sends requests there", function()
      -- the environment is read when the model is built: a child process
      -- with the variable set builds one, runs it against the server and
      -- prints what it got
      local child = string.format([[
        package.path = %q; package.cpath = %q
        local luagent = require "luagent"
        local app = luagent.load_string('local luagent = require "luagent"\n' ..
          'return luagent.config{ model = luagent.openai{ api_key = "k", max_retries = 0 }, ' ..
          'agents = { luagent.agent{ id = "a", instructions = "x" } } }')
        local res = app:run("a", "hi")
        io.write(res.status, " ", tostring(res.final))
        app:close()
      ]], package.path, package.cpath)
      local path = os.tmpname()
      local f = assert(io.open(path, "w"))
      f:write(child)
      f:close()
      srv:script{ { text = "from env" } }
      local p = assert(io.popen(string.format("env OPENAI_BASE_URL=%s/ %s %s 2>&1", srv.url, LUA, path)))
      local out = p:read("*a")
      p:close()
      os.remove(path)
      assert.equal("completed from env", out)
      assert.equal("/v1/chat/completions", srv:requests()[1].path)
    end)

    it("sends the key as a Bearer token, and user headers", function()
      local app = closing(H.simple(srv, { api_key = "sk-live-abc123",
        headers = { ["X-Team"] = "core", ["OpenAI-Organization"] = "org-1" } }))
      srv:script{ { text = "ok" } }
      assert.equal("completed", app:run("a", "x").status)
      local h = srv:requests()[1].headers
      assert.equal("Bearer sk-live-abc123", h.authorization)
      assert.equal("core", h["x-team"])
      assert.equal("org-1", h["openai-organization"])
    end)

    it("works without a key against a non-default base_url (Ollama style)", function()
      local app = closing(H.simple(srv, { api_key = false,
        api_key_env = "LUAGENT_SPEC_CERTAINLY_UNSET_KEY" }))
      srv:script{ { text = "local model says hi" } }
      local res = app:run("a", "x")
      assert.equal("completed", res.status)
      assert.equal("local model says hi", res.final)
      assert.is_nil(srv:requests()[1].headers.authorization)
    end)

    it("takes the key from api_key_env", function()
      -- PATH is set in any test environment; it stands in for a key variable
      local path = os.getenv("PATH")
      local app = closing(H.simple(srv, { api_key = false, api_key_env = "PATH" }))
      srv:script{ { text = "ok" } }
      assert.equal("completed", app:run("a", "x").status)
      assert.equal("Bearer " .. path, srv:requests()[1].headers.authorization)
    end)

    it("an empty api_key sends no Authorization header", function()
      local app = closing(H.simple(srv, { api_key = "" }))
      srv:script{ { text = "ok" } }
      assert.equal("completed", app:run("a", "x").status)
      assert.is_nil(srv:requests()[1].headers.authorization)
    end)
  end)
end)

-- Without params the body is the messages' JSON and a tail made once per
-- model and tools: the same bytes as encoding the whole request table.
describe("openai adapter: request bodies without params", function()
  local luagent = require "luagent"
  local openai = require "luagent.models.openai"
  local json = require "luagent.json"
  local tools = require "luagent.tools"

  local function tool(name, description)
    return luagent.tool{ name = name, description = description,
      input_schema = { type = "object", properties = { key = { type = "string" } }, required = { "key" } },
      handler = function() return "v" end }
  end

  local function whole(m, request)
    local body = { model = m.model, messages = openai.to_wire(request.messages) }
    if m.stream then body.stream, body.stream_options = true, { include_usage = true } end
    local list = {}
    for i, t in ipairs(request.tools or {}) do
      list[i] = { type = "function", ["function"] = { name = t.name,
        description = t.description ~= "" and t.description or nil,
        parameters = openai.normalize_schema(t.input_schema) } }
    end
    if #list > 0 then body.tools = json.array(list) end
    return json.encode(body)
  end

  it("writes the bytes of one encoding, also as the tools and the model change", function()
    local messages = json.array({ { role = "system", content = "Answer." }, { role = "user", content = "q\0\"é" },
      { role = "assistant", tool_calls = { { id = "call_1", name = "a", raw_arguments = '{"key":"k"}' } } },
      { role = "tool", tool_call_id = "call_1", content = "{}" } })
    local a, b = tools.model_spec(tool("a", "First.")), tools.model_spec(tool("b", ""))
    local a2 = tools.model_spec(tool("a", "Second, a description longer than forty bytes."))
    for _, stream in ipairs({ false, true }) do
      local m = luagent.openai{ model = "m1", base_url = "http://127.0.0.1:1", api_key = "k", stream = stream }
      for _, list in ipairs({ { a }, { a, b }, { b }, {}, { a }, { a2 }, { a2, b }, { a, b } }) do
        local request = { messages = messages, tools = list }
        assert.equal(whole(m, request), openai.body(m, request))
        assert.equal(whole(m, request), openai.body(m, request))
      end
      local bare = { messages = messages } -- no tools at all
      assert.equal(whole(m, bare), openai.body(m, bare))
      m.model = "m2"
      local request = { messages = messages, tools = { a } }
      assert.equal(whole(m, request), openai.body(m, request))
      assert.truthy(openai.body(m, request):find('"model":"m2"', 1, true))
    end
  end)
end)
