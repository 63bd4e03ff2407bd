-- One shape of tool call on every model: hooks, AgentResult.messages and
-- saved threads see `arguments` as the decoded table and `raw_arguments` as
-- the text the model sent, whether the model is static_model,
-- function_model or luagent.openai (plain or streamed) against the fake
-- server. A guard on `call.arguments.city` therefore blocks the same call
-- everywhere; arguments that are not JSON reach before_tool as nil with an
-- error and are answered with a validation ToolResult.
local closing = require "support.closing"
local fake = require "support.fake_openai_client"
local H = require "support.fake_openai_app"
local json = H.json

-- What the model asks for: Paris (to be blocked), Rome, and broken JSON.
local PARIS = '{"city": "Paris"}'      -- the space shows the text is the model's own
local ROME = '{"city":"Rome"}'
local BROKEN = '{"city": "Par'
local CALLS = {
  { id = "c1", name = "weather", arguments = PARIS },
  { id = "c2", name = "weather", arguments = ROME },
  { id = "c3", name = "weather", arguments = BROKEN },
}

local CONFIG = [[
  local seen = S.seen or {}
  local weather = luagent.tool{ name = "weather", description = "Weather in a city.",
    input_schema = { type = "object", properties = { city = { type = "string" } }, required = { "city" } },
    handler = function(args) return "sunny in " .. args.city end }
  local function shape(call)
    return { id = call.id, kind = type(call.arguments), city = type(call.arguments) == "table" and
      call.arguments.city or nil, raw = call.raw_arguments, error = call.error }
  end
  local guard = function(call)
    seen[#seen + 1] = shape(call)
    if call.arguments and call.arguments.city == "Paris" then return { block = "no Paris" } end
  end
  local after = function(call, result)
    seen[#seen + 1] = { after = call.id, ok = result.ok }
  end
  return luagent.config{
    model = model,
    background_tasks = { enabled = true },
    agents = { luagent.agent{ id = "a", instructions = "Be brief.", tools = { weather },
      hooks = { before_tool = guard, after_tool = after } } },
  } ]]

local SCRIPTED = {
  static_model = [[
    local model = luagent.static_model{ responses = {
      { tool_calls = { { id = "c1", name = "weather", arguments = { city = "Paris" } },
                       { id = "c2", name = "weather", arguments = { city = "Rome" } },
                       { id = "c3", name = "weather", arguments = '{"city": "Par' } } },
      "done" } } ]],
  function_model = [[
    local model = luagent.function_model(function(request)
      for _, m in ipairs(request.messages) do
        if m.role == "tool" then return { text = "done" } end
      end
      return { tool_calls = {
        { id = "c1", name = "weather", arguments = '{"city": "Paris"}' },
        { id = "c2", name = "weather", arguments = '{"city":"Rome"}' },
        { id = "c3", name = "weather", arguments = '{"city": "Par' } } }
    end) ]],
}

-- The outcome every model must give: results per call id and what the
-- hooks saw (raw_arguments are checked per model: a model that returns a
-- table has its JSON there).
local function check_outcome(res, seen, raw)
  assert.equal("completed", res.status, res.error and res.error.message)
  assert.equal("done", res.final)
  local results = {}
  for _, m in ipairs(res.messages) do
    if m.role == "tool" then results[m.tool_call_id] = json.decode(m.content) end
  end
  assert.is_false(results.c1.ok)
  assert.equal("blocked", results.c1.cause.kind)
  assert.equal("no Paris", results.c1.error)
  assert.same({ ok = true, value = "sunny in Rome" }, results.c2)
  assert.is_false(results.c3.ok)
  assert.equal("validation", results.c3.cause.kind)
  assert.matches("not valid JSON", results.c3.error)
  if seen then
    assert.same({ id = "c1", kind = "table", city = "Paris", raw = raw.c1 }, seen[1])
    assert.same({ after = "c1", ok = false }, seen[2])
    assert.same({ id = "c2", kind = "table", city = "Rome", raw = raw.c2 }, seen[3])
    assert.same({ after = "c2", ok = true }, seen[4])
    assert.equal("c3", seen[5].id)
    assert.equal("nil", seen[5].kind)
    assert.equal(BROKEN, seen[5].raw)
    assert.matches("not valid JSON", seen[5].error)
    assert.same({ after = "c3", ok = false }, seen[6])
  end
  -- the transcript shows the same shape
  local calls = res.messages[3].tool_calls
  assert.same({ city = "Paris" }, calls[1].arguments)
  assert.equal(raw.c1, calls[1].raw_arguments)
  assert.same({ city = "Rome" }, calls[2].arguments)
  assert.equal(raw.c2, calls[2].raw_arguments)
  assert.is_nil(calls[3].arguments)
  assert.equal(BROKEN, calls[3].raw_arguments)
  assert.matches("not valid JSON", calls[3].error)
end

local function check_thread(app, thread_id, raw)
  local thread = app:thread("a", thread_id)
  local calls = thread[2].tool_calls
  assert.same({ city = "Paris" }, calls[1].arguments)
  assert.equal(raw.c1, calls[1].raw_arguments)
  assert.same({ city = "Rome" }, calls[2].arguments)
  assert.is_nil(calls[3].arguments)
  assert.equal(BROKEN, calls[3].raw_arguments)
end

describe("tool calls have one shape on every model", function()
  local srv
  setup(function() srv = fake.start() end)
  teardown(function() srv:stop() end)
  before_each(function() srv:reset() end)

  for name, model_src in pairs(SCRIPTED) do
    it("a before_tool guard on call.arguments blocks through " .. name, function()
      local S = { seen = {} }
      local app = closing(H.app(srv, {}, model_src .. CONFIG, S))
      local raw = name == "static_model" and { c1 = '{"city":"Paris"}', c2 = '{"city":"Rome"}' }
        or { c1 = PARIS, c2 = ROME }
      check_outcome(app:chat("a", "weather?", { thread_id = "t-" .. name }), S.seen, raw)
      check_thread(app, "t-" .. name, raw)
      -- a background run gives the same outcome in a worker state
      local rec = app:enqueue_background("a", "weather?")
      assert.is_true(app:wait({ rec.task_id }, { timeout_s = 10 }).done)
      check_outcome(app:get(rec.task_id).result, nil, raw)
    end)
  end

  for _, stream in ipairs({ false, true }) do
    local how = stream and "streamed" or "plain"
    it("a before_tool guard on call.arguments blocks through luagent.openai (" .. how .. ")", function()
      local S = { seen = {} }
      local app = closing(H.app(srv, { stream = stream }, "local model = MODEL\n" .. CONFIG, S))
      local raw = { c1 = PARIS, c2 = ROME }
      srv:script{ { tool_calls = CALLS, chunk_size = 3 }, { text = "done" } }
      check_outcome(app:chat("a", "weather?", { thread_id = "t-" .. how }), S.seen, raw)
      check_thread(app, "t-" .. how, raw)
      -- the provider gets its own text back, byte for byte
      local sent = srv:requests()[2].json.messages[3].tool_calls
      assert.equal(PARIS, sent[1]["function"].arguments)
      assert.equal(ROME, sent[2]["function"].arguments)
      assert.equal(BROKEN, sent[3]["function"].arguments)
      -- and a background run gives the same outcome in a worker state
      srv:script{ { tool_calls = CALLS, chunk_size = 3 }, { text = "done" } }
      local rec = app:enqueue_background("a", "weather?")
      assert.is_true(app:wait({ rec.task_id }, { timeout_s = 10 }).done)
      check_outcome(app:get(rec.task_id).result, nil, raw)
    end)
  end

  it("a hook that rewrites arguments keeps the shape and the model's raw text", function()
    local S = { seen = {} }
    local app = closing(H.app(srv, {}, [[
      local model = MODEL
      local weather = luagent.tool{ name = "weather",
        input_schema = { type = "object", properties = { city = { type = "string" } }, required = { "city" } },
        handler = function(args) return "sunny in " .. args.city end }
      return luagent.config{ model = model, agents = { luagent.agent{ id = "a", tools = { weather },
        hooks = {
          before_tool = {
            function() return { arguments = '{"city": "Oslo"}' } end,
            function(call) S.seen[#S.seen + 1] = { call.arguments.city, call.raw_arguments } end,
          },
          after_tool = function(call) S.seen[#S.seen + 1] = { call.arguments.city, call.raw_arguments } end,
        } } } } ]], S))
    srv:script{ { tool_calls = { CALLS[3] } }, { text = "done" } }
    local res = app:run("a", "x")
    assert.equal("completed", res.status)
    assert.same({ { "Oslo", BROKEN }, { "Oslo", BROKEN } }, S.seen)
    assert.same({ ok = true, value = "sunny in Oslo" }, json.decode(res.messages[4].content))
  end)
end)
