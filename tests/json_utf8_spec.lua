-- JSON is UTF-8 both ways (README, JSON): a byte that starts no well-formed
-- UTF-8 sequence is written, and read, as U+FFFD, one per byte, keys
-- included. The rule holds everywhere luagent writes JSON: json.encode,
-- tool arguments from a script or a model (scripted and luagent.openai
-- against the fake server), task records, events and the store file.
local utf8_len = require "support.utf8_len"
local closing = require "support.closing"
local json = require "luagent.json"
local R = require "support.runtime_helpers"
local H = require "support.dispatch_helpers"
local S = require "support.store_helpers"
local fake = require "support.fake_openai_client"
local F = require "support.fake_openai_app"

local FFFD = "\u{FFFD}"

-- Every case: the bytes and what the string reads as once cleaned.
local CASES = {
  { "plain ascii", "plain ascii" },
  { "é€😀 valid", "é€😀 valid" },
  { "a\xffb", "a" .. FFFD .. "b" },
  { "\xc3", FFFD },                                     -- cut two-byte sequence
  { "\xe2\x82", FFFD .. FFFD },                         -- cut three-byte sequence
  { "\xc0\xaf", FFFD .. FFFD },                         -- overlong '/'
  { "\xe0\x80\xaf", FFFD .. FFFD .. FFFD },             -- overlong, three bytes
  { "\xed\xa0\x80", FFFD .. FFFD .. FFFD },             -- UTF-16 surrogate
  { "\xf4\x90\x80\x80", FFFD .. FFFD .. FFFD .. FFFD }, -- above U+10FFFF
  { "\xf8\x88\x80\x80\x80", string.rep(FFFD, 5) },      -- five-byte form
  { "\x80x\xbf", FFFD .. "x" .. FFFD },                 -- stray continuations
  { "ok\xe2\x82\xac\xe2", "ok€" .. FFFD },              -- valid, then cut
}

describe("json: invalid UTF-8", function()
  it("json.encode writes each invalid byte as U+FFFD, in values and keys", function()
    for _, c in ipairs(CASES) do
      local text = json.encode({ [c[1]] = c[1] })
      assert.is_truthy(utf8_len(text), "not UTF-8: " .. text)
      assert.equal(json.encode({ [c[2]] = c[2] }), text)
      assert.same({ [c[2]] = c[2] }, json.decode(text))
    end
  end)

  it("json.decode reads raw invalid bytes as U+FFFD, so decode and encode agree", function()
    for _, c in ipairs(CASES) do
      local v = json.decode('["' .. c[1] .. '", "\\n' .. c[1] .. '"]')
      assert.same({ c[2], "\n" .. c[2] }, { v[1], v[2] })
      assert.equal(json.encode(v), json.encode(json.decode(json.encode(v))))
    end
  end)

  it("any bytes at all encode to valid UTF-8 that decodes back to the same text", function()
    math.randomseed(7)
    for _ = 1, 2000 do
      local b = {}
      for i = 1, math.random(1, 12) do b[i] = string.char(math.random(0, 255)) end
      local s = table.concat(b)
      local text = json.encode(s)
      assert.is_truthy(utf8_len(text), "not UTF-8 for " .. string.format("%q", s))
      local back = json.decode(text)
      assert.equal(text, json.encode(back))
      if utf8_len(s) then assert.equal(s, back) end -- valid text is never touched
    end
  end)
end)

-- A tool that reports what it was given, and a script that calls it.
local ECHO = [[
local seen = luagent.tool{ name = "seen", description = "Report the text.",
  input_schema = { type = "object", properties = { text = { type = "string" } },
    required = { "text" } },
  handler = function(args, ctx)
    if S.got then S.got[#S.got + 1] = args.text end
    ctx:emit("saw", { text = args.text })
    return { echoed = args.text, raw = "r\xffr" }
  end }
]]

describe("json: invalid UTF-8 in tool arguments", function()
  it("arguments a scripted model sends (a table or JSON text) reach the handler cleaned", function()
    local got = {}
    local app = closing(R.app(ECHO .. [[
return luagent.config{
  model = luagent.static_model{ responses = {
    { tool_calls = { { id = "c1", name = "seen", arguments = { text = "t\xffa" } } } },
    { tool_calls = { { id = "c2", name = "seen", arguments = '{"text":"t\xe2\x82s"}' } } },
    "done" } },
  agents = { luagent.agent{ id = "a", tools = { seen } } },
} ]], { got = got }))
    local res = app:run("a", "go \xff")
    assert.equal("completed", res.status)
    assert.same({ "t" .. FFFD .. "a", "t" .. FFFD .. FFFD .. "s" }, got)
    for _, ev in ipairs(app:events{ since = 0, limit = 1000 }) do
      assert.is_truthy(utf8_len(json.encode(ev)), ev.kind)
    end
  end)

  it("arguments a script enqueues for a background tool, its record, events and store file", function()
    local dir = H.tmpdir()
    local db = dir .. "/agents.db"
    local app = R.app(ECHO .. string.format([[
return luagent.config{
  background_tasks = { enabled = true },
  store = { path = %q },
  tools = { seen,
    luagent.tool{ name = "boom", handler = function() error("bad \xff byte", 0) end } },
} ]], db))
    local t = app:enqueue_tool("seen", { text = "bg\xc0" })
    local b = app:enqueue_tool("boom", {})
    assert.is_true(app:wait({ t.task_id, b.task_id }, { timeout_s = 10 }).done)
    local rec = app:get(t.task_id)
    assert.equal("bg" .. FFFD, rec.args.text)
    assert.equal("bg" .. FFFD, rec.result.echoed)
    assert.equal("r" .. FFFD .. "r", rec.result.raw)
    assert.matches("bad " .. FFFD .. " byte", app:get(b.task_id).error.message, 1, true)
    local saw = H.of_kind(app:events{ since = 0, limit = 1000 }, "saw")
    assert.equal("bg" .. FFFD, saw[1].payload.text)
    app:close()
    if S.have_sqlite3() then
      for _, line in ipairs(S.sql(db, "SELECT record FROM tasks; SELECT event FROM events;")) do
        assert.is_truthy(utf8_len(line), "stored text is not UTF-8: " .. line)
      end
    end
    H.rmdir(dir)
  end)
end)

describe("json: invalid UTF-8 through luagent.openai", function()
  local srv
  setup(function() srv = fake.start() end)
  teardown(function() srv:stop() end)
  before_each(function() srv:reset() end)

  for _, stream in ipairs({ false, true }) do
    it("arguments the server sends reach the handler cleaned, and every request is UTF-8"
      .. (stream and " (streamed)" or ""), function()
      local got = {}
      local app = closing(F.simple(srv, { stream = stream },
        { pre = ECHO, tools = "{ seen }", S = { got = got } }))
      srv:script{
        { tool_calls = { { id = "call_1", name = "seen", arguments = '{"text":"w\xffx\xed\xa0\x80"}' } } },
        { text = "done" },
      }
      local res = app:run("a", "go \xfe")
      assert.equal("completed", res.status, res.error and res.error.message)
      assert.same({ "w" .. FFFD .. "x" .. FFFD .. FFFD .. FFFD }, got)
      local reqs = srv:requests()
      assert.equal(2, #reqs)
      for _, r in ipairs(reqs) do assert.is_truthy(utf8_len(r.body), r.body) end
      -- the tool's answer went back to the model cleaned
      assert.matches('\\"raw\\":\\"r' .. FFFD .. 'r\\"', reqs[2].body, 1, true)
    end)
  end
end)
