-- Records decoded on first access (README "Embedding in a game or app"):
-- luagent.json.decode_record, and the records lifecycle callbacks receive,
-- whose nested members (result, usage, ...) stay JSON text until read.
local closing = require "support.closing"
local luagent = require "luagent"
local json = luagent.json
local fake = require "support.fake_openai_client"
local FA = require "support.fake_openai_app"
-- laziness itself needs pairs to honour __pairs: 5.1 and LuaJIT decode a
-- record whole when it is made (README, "Lua versions")
local it_lazy = _VERSION ~= "Lua 5.1" and it or pending

local TEXT = '{"a":1,"b":"x","n":null,"t":true,' ..
  '"r":{"final":"the player is at the gate","messages":[{"role":"user","content":"where?"}]},' ..
  '"u":{"t":1},"e":[],"big":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17]}'

describe("json.decode_record", function()
  it_lazy("decodes scalar members at once and nested ones on first read, once", function()
    local r = json.decode_record(TEXT)
    assert.same({ 1, "x", true }, { rawget(r, "a"), rawget(r, "b"), rawget(r, "t") })
    assert.is_nil(r.n)
    assert.is_nil(rawget(r, "r"))
    assert.is_nil(rawget(r, "big"))
    -- short ones are decoded with the scalars
    assert.same({ t = 1 }, rawget(r, "u"))
    assert.is_true(json.is_array(rawget(r, "e")))
    local res = r.r
    assert.equals("the player is at the gate", res.final)
    assert.equals("where?", res.messages[1].content)
    assert.is_true(json.is_array(res.messages))
    assert.equals(res, rawget(r, "r"))
    assert.equals(res, r.r)
    assert.is_nil(r.missing)
  end)

  it("gives the same value as decode through pairs, encode and materialize", function()
    local plain = json.decode(TEXT)
    local keys = {}
    for k, v in pairs(json.decode_record(TEXT)) do keys[#keys + 1] = k; assert.same(plain[k], v) end
    table.sort(keys)
    assert.same({ "a", "b", "big", "e", "r", "t", "u" }, keys)
    assert.equals(json.encode(plain), json.encode(json.decode_record(TEXT)))
    local r = json.decode_record(TEXT)
    assert.equals(r, json.materialize(r))
    assert.is_nil(getmetatable(r))
    assert.same(plain, r)
  end)

  it("keeps a field assigned before it was read", function()
    local r = json.decode_record(TEXT)
    r.r = "mine"
    assert.equals("mine", r.r)
    assert.matches('"r":"mine"', json.encode(r))
  end)

  it("refuses bad text when the record is made", function()
    assert.has_error(function() json.decode_record('{"a":1,"r":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,}') end,
      "luagent.json.decode_record: expected value at byte 49")
    assert.has_error(function() json.decode_record('{"a":1} x') end)
  end)

  it("decodes any other JSON value as decode does", function()
    assert.same({ 1, 2 }, json.decode_record("[1,2]"))
    assert.equals("s", json.decode_record('"s"'))
    assert.is_nil(getmetatable(json.decode_record('{"a":{"b":1}}')))
  end)
end)

-- The task_finished record of an agent run that asked a host tool once.
local function finished_record(app)
  local got
  app:host_tool("pos", function() return { x = 3 } end)
  app:on("task_finished", function(rec)
    got = { status = rec.status, raw_result = rawget(rec, "result"), rec = rec }
  end)
  local id = app:enqueue_background("a", "where?").task_id
  local v = app:wait({ id }, { timeout_s = 20 })
  assert.is_true(v.done)
  app:poll()
  assert.truthy(got, "no task_finished callback")
  return got
end

local function check(got)
  assert.equals("completed", got.status)
  -- untouched by the callback: still text
  assert.is_nil(got.raw_result)
  local rec = got.rec
  assert.matches("x", rec.result.final)
  assert.equals("tool", rec.result.messages[4].role)
  assert.matches('"result":{', json.encode(rec))
end

describe("task_finished callbacks get a record decoded on first access", function()
  it_lazy("with a scripted model", function()
    local app = closing(luagent.load_string([[
local luagent = require "luagent"
local pos = luagent.host_tool{ name = "pos", description = "where", input_schema = { type = "object" } }
return luagent.config{
  model = luagent.function_model(function(req)
    local last = req.messages[#req.messages]
    if last.role == "tool" then return { text = "at " .. last.content } end
    return { tool_calls = { { id = "c1", name = "pos", arguments = {} } } }
  end),
  background_tasks = { enabled = true },
  agents = { luagent.agent{ id = "a", tools = { pos } } },
}]]))
    check(finished_record(app))
  end)

  it_lazy("with luagent.openai against the fake server", function()
    local srv = fake.start()
    finally(function() srv:stop() end)
    srv:script({ { tool_calls = { { id = "c1", name = "pos", arguments = {} } } }, { text = "at x" } })
    local app = closing(FA.app(srv, nil, [[
local pos = luagent.host_tool{ name = "pos", description = "where", input_schema = { type = "object" } }
return luagent.config{
  model = MODEL,
  background_tasks = { enabled = true },
  agents = { luagent.agent{ id = "a", tools = { pos } } },
}]]))
    check(finished_record(app))
  end)
end)

describe("enqueue records", function()
  it_lazy("have task_id decoded and every other field decoded on first read", function()
    local app = closing(luagent.load_string([[
local luagent = require "luagent"
return luagent.config{
  background_tasks = { enabled = true },
  tools = { luagent.tool{ name = "echo", handler = function(args) return args end } },
}]]))
    local rec = app:enqueue_tool("echo", { text = "hello there, a long enough argument" }, { metadata = { k = 1 } })
    assert.matches("^tsk_", rawget(rec, "task_id"))
    assert.is_nil(rawget(rec, "status"))
    assert.is_nil(rawget(rec, "args"))
    assert.equals("echo", rec.tool)
    -- the first read decoded them all: a plain table from then on
    assert.is_nil(getmetatable(rec))
    assert.equals("hello there, a long enough argument", rawget(rec, "args").text)
    assert.equals(1, rec.metadata.k)
    local again = app:enqueue_tool("echo", { text = "x" })
    local plain = json.decode(json.encode(again))
    assert.same(plain, again)
    assert.equals(json.encode(app:get(again.task_id).args), json.encode(again.args))
    assert.is_true(app:wait({ rec.task_id, again.task_id }, { timeout_s = 20 }).done)
  end)
end)
