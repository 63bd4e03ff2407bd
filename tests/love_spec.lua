-- Lua hosts: a LÖVE-style game loop on plain LuaJIT. examples/love/run.lua
-- stands in for LÖVE's love.run and runs examples/love/main.lua, which
-- polls luagent once a frame in love.update(dt): three NPCs' lines come
-- from background agent runs, each asking the game where the player is
-- (a host tool answered on the main thread during a frame's poll).
local fake = require "support.fake_openai_client"
local luajit_module = require "support.luajit_module"

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function run_game(cpath, env)
  return luajit_module.sh(string.format("env -u LD_PRELOAD -u OPENAI_API_KEY -u OPENAI_BASE_URL %s " ..
    "LUAGENT_CPATH=%s timeout 120 luajit examples/love/run.lua </dev/null", env or "", q(cpath)))
end

local function check_frames(out)
  local frames, polls, host_calls, lines = out:match(
    "frames (%d+), polls (%d+), host tool calls (%d+), NPC lines (%d+)")
  assert.truthy(frames, out)
  -- one poll a frame, every host call answered in one, every NPC spoke
  assert.equals(frames, polls, out)
  assert.equals("3", host_calls, out)
  assert.equals("3", lines, out)
  -- the game kept drawing frames while the NPCs' runs went on
  local first = tonumber(out:match("first line on frame (%d+)"))
  assert.truthy(first and first > 1, out)
end

describe("LÖVE-style loop (LuaJIT)", function()
  local cpath
  setup(function()
    if luajit_module.sh("command -v luajit") ~= "" then cpath = assert(luajit_module.dir()) end
  end)

  it("polls once a frame in love.update; the NPCs' lines arrive while frames go on (scripted model)", function()
    if not cpath then return pending("no luajit here") end
    local out, rc = run_game(cpath)
    assert.equals(0, rc, out)
    check_frames(out)
    assert.truthy(out:find("NPC 2 (the dragon in the hills): Welcome, traveller at (", 1, true), out)
  end)

  it("the same through luagent.openai against the fake server", function()
    if not cpath then return pending("no luajit here") end
    local srv = fake.start()
    finally(function() srv:stop() end)
    local script = {}
    for i = 1, 6 do
      script[i] = { tool_calls = { { name = "where_is_player", arguments = {} } },
        after_tool = { text = "Mind the dragon, friend.", delay_ms = 100 } }
    end
    srv:script(script)
    local out, rc = run_game(cpath, "OPENAI_BASE_URL=" .. q(srv.url) .. " OPENAI_MODEL=npc-model")
    assert.equals(0, rc, out)
    check_frames(out)
    assert.truthy(out:find("NPC 1 (the old mill): Mind the dragon, friend.", 1, true), out)
    local reqs = srv:requests()
    assert.equals(6, #reqs)
    for _, r in ipairs(reqs) do assert.equals("npc-model", r.json.model) end
    -- the second call of each run carries the game's answer to its host tool
    local answered = 0
    for _, r in ipairs(reqs) do
      local last = r.json.messages[#r.json.messages]
      if last.role == "tool" and last.content:find('"x":', 1, true) then answered = answered + 1 end
    end
    assert.equals(3, answered)
  end)
end)
