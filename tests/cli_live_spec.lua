-- `luagent run` on a terminal (tmux): the answer's tokens appear as they
-- stream, the task-tree table below them is redrawn in place, and Ctrl-C
-- ends a streamed run with status 130 within a second, its tree cancelled.
-- The supervisor talks to the fake OpenAI server with stream = true; its
-- researchers are scripted and take their time.
local LUA = require("support.lua_bin").lua
local C = require "support.cli_helpers"
local fake = require "support.fake_openai_client"

local ANSWER = "The answer streams in small pieces, one after another, until it is whole."

local function config(srv, sleep_s)
  return ([[
local luagent = require "luagent"
local research = luagent.delegate{ agent = "researcher", name = "research", background = { enabled = true } }
return luagent.config{
  model = luagent.openai{ model = "m", base_url = %q, api_key = "sk-test", stream = true, max_retries = 0 },
  pricing = { m = { input_per_mtok = 2, output_per_mtok = 8 } },
  background_tasks = { enabled = true },
  agents = {
    luagent.agent{ id = "supervisor", tools = { research } },
    luagent.agent{ id = "researcher", model = luagent.function_model(function(req, ctx)
      ctx:sleep(%s)
      return { text = "note", usage = { prompt_tokens = 7, completion_tokens = 3 } }
    end) },
  },
}]]):format(srv.url, tostring(sleep_s))
end

local function script(srv, delay_ms)
  srv:script{
    { tool_calls = { { id = "c1", name = "research", arguments = { prompt = "one" } },
      { id = "c2", name = "research", arguments = { prompt = "two" } } } },
    { text = ANSWER, chunk_size = 3, delay_between_chunks_ms = delay_ms },
  }
end

-- The table part of a screen: the lines from the header on.
local function table_of(screen)
  local at = screen:find("\ntask%s+status%s+agent%s+elapsed%s+tokens%s+cost")
  return at and screen:sub(at + 1):gsub("\nEXIT=.*$", "") or nil
end

local function count(s, pat)
  local n = 0
  for _ in s:gmatch(pat) do n = n + 1 end
  return n
end

local function wall()
  local p = io.popen("date +%s.%N")
  local t = tonumber(p:read("*l"))
  p:close()
  return t
end

-- The sanitizers slow every process down several times over.
local SLOW = os.getenv("LD_PRELOAD") and 3 or 1

describe("luagent run on a terminal", function()
  local srv, dir
  setup(function()
    srv = fake.start()
    dir = C.tmpdir()
  end)
  teardown(function()
    C.tmux_shutdown()
    srv:stop()
    C.cleanup(dir)
  end)
  before_each(function() srv:reset() end)

  it("shows the tokens before the run ends and redraws the task table in place", function()
    local session = "live"
    local cfg = C.write(dir .. "/live.lua", config(srv, 0.8))
    script(srv, 120)
    C.tmux_start(session, LUA .. " bin/luagent run " .. C.quote(cfg) ..
      " supervisor 'Compare two things'; echo EXIT=$?; read keep_the_pane", 110, 30)
    local tables, streaming_seen = {}, false
    local final = C.tmux_until(session, function(screen)
      local t = table_of(screen)
      if t and not screen:find("EXIT=", 1, true) then
        -- one table on the screen, whatever was drawn before: in place
        assert.equal(1, count(screen, "task%s+status%s+agent"), screen)
        if tables[#tables] ~= t then tables[#tables + 1] = t end
        local shown = screen:match("^(.-)\n")
        if shown and #shown > 0 and #shown < #ANSWER and ANSWER:sub(1, #shown) == shown then
          streaming_seen = true -- part of the answer, while the run goes on
        end
      end
      return screen:find("EXIT=%d") ~= nil
    end, 30 * SLOW)
    assert.truthy(final, "the run did not end")
    assert.is_true(streaming_seen, "no partial answer was on screen before the run ended")
    assert.is_true(#tables >= 2, "the table was drawn " .. #tables .. " time(s)")
    assert.matches("EXIT=0", final, 1, true)
    assert.equal(1, count(final, (ANSWER:gsub("%p", "%%%0"))), final)
    local t = table_of(final)
    assert.matches("\nrun %w+%s+completed%s+supervisor", t)
    assert.equal(2, count(t, "\n  research %w+%s+completed%s+researcher"))
    assert.is_nil(final:find("background tasks cancelled", 1, true))
  end)

  it("Ctrl-C during a streamed run ends it with 130 within a second, its tree cancelled", function()
    local session = "interrupt"
    local cfg = C.write(dir .. "/slow.lua", config(srv, 60))
    local db = dir .. "/slow.db"
    script(srv, 400)
    C.tmux_start(session, LUA .. " bin/luagent run " .. C.quote(cfg) .. " supervisor go --store " ..
      C.quote(db) .. "; echo EXIT=$? AT=$(date +%s.%N); read keep_the_pane", 110, 30)
    assert.truthy(C.tmux_until(session, function(screen)
      return screen:find("^The") ~= nil and count(screen, "running") >= 3
    end, 20 * SLOW), "the run did not start streaming")
    local sent = wall()
    C.tmux_keys(session, "C-c")
    local screen = C.tmux_until(session, function(s) return s:find("AT=[%d.]+") ~= nil end, 10 * SLOW)
    assert.truthy(screen, "the command did not end")
    assert.matches("EXIT=130", screen, 1, true)
    local took = tonumber(screen:match("AT=([%d.]+)")) - sent
    assert.is_true(took < 1 * SLOW, string.format("took %.2fs", took))
    assert.matches("2 background tasks cancelled", screen, 1, true)
    assert.matches("interrupted: run cancelled", screen, 1, true)
    assert.is_nil(screen:find("interrupted!", 1, true)) -- not Lua's own SIGINT error
    -- the store has the tree as it ended
    local r = C.luagent("tasks " .. db .. " --json")
    local recs = C.lines(r.out)
    assert.equal(2, #recs, r.err)
    for _, line in ipairs(recs) do
      assert.equal("cancelled", require("luagent.json").decode(line).status)
    end
  end)
end)
