-- luagent in a LÖVE game (LÖVE runs LuaJIT): NPCs' lines are written by
-- background agent runs on luagent's worker threads while the game keeps
-- its frame rate. The game calls app:poll() once a frame in love.update:
-- it never blocks, does at most budget_ms of luagent's work, and is where
-- host tools and callbacks run — on the main thread, between frames.
--
-- Build luagent for LuaJIT (`make LUA=luajit`), then `love examples/love`,
-- or without LÖVE: `luajit examples/love/run.lua` (a stand-in for LÖVE's
-- loop).
local here = (love.filesystem and love.filesystem.getSource and love.filesystem.getSource())
  or debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local root = os.getenv("LUAGENT_ROOT") or (here .. "/../..")
package.path = root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;" .. package.path
package.cpath = (os.getenv("LUAGENT_CPATH") or (root .. "/build/luajit")) .. "/?.so;" .. package.cpath
local luagent = require("luagent")

local TOPICS = { "the old mill", "the dragon in the hills", "tomorrow's harvest fair" }

local app
local player = { x = 0, y = 0 }
local npcs = {}        -- task_id -> { topic, line, frame }
local stats = { frames = 0, polls = 0, host_calls = 0, spoken = 0 }

function love.load()
  app = luagent.load(here .. "/agents.lua")
  -- answered on the main thread, during the frame's poll: the game's state
  -- needs no lock
  app:host_tool("where_is_player", function()
    stats.host_calls = stats.host_calls + 1
    return { x = math.floor(player.x), y = math.floor(player.y) }
  end)
  app:on("task_finished", function(rec)
    local npc = npcs[rec.task_id]
    if not npc then return end
    npc.line = rec.result and rec.result.final or ("(" .. rec.status .. ")")
    npc.frame = stats.frames
    stats.spoken = stats.spoken + 1
    if stats.spoken == #TOPICS then love.event.quit() end
  end)
  for i, topic in ipairs(TOPICS) do
    local rec = app:enqueue_background("npc", "Greet the player. Talk about " .. topic .. ".",
      { thread_id = "npc" .. i })
    npcs[rec.task_id] = { topic = topic, index = i }
  end
end

function love.update(dt)
  stats.frames = stats.frames + 1
  player.x, player.y = player.x + 30 * dt, player.y + 10 * dt -- the game goes on
  app:poll{ budget_ms = 2 }
  stats.polls = stats.polls + 1
end

function love.draw()
  local y = 10
  for _, npc in pairs(npcs) do
    love.graphics.print(string.format("NPC %d (%s): %s", npc.index, npc.topic,
      npc.line or "..."), 10, y + 20 * npc.index)
  end
end

function love.quit()
  app:close{ wait = false }
end

-- what the stand-in loop reports (run.lua)
return { stats = stats, npcs = npcs, app = function() return app end }
