-- A game-style host: the main loop calls app:poll() once a frame, so host
-- tools and callbacks run on the main thread between frames, never on a
-- worker. Run: lua5.4 examples/game_loop.lua (or luajit examples/game_loop.lua
-- after make LUA=luajit; lua5.1 ... the same)
package.path = "./lua/?.lua;./lua/?/init.lua;" .. package.path
-- the core built for this Lua: ./luagent/core.so for 5.4, else the one
-- `make LUA=luajit` (lua5.1, ...) writes to build/<lua>/luagent/
local build = rawget(_G, "jit") and "luajit" or _VERSION:gsub("Lua ", "lua")
package.cpath = (build ~= "lua5.4" and "./build/" .. build .. "/?.so;" or "") .. "./?.so;" .. package.cpath
local luagent = require("luagent")

local app = luagent.load_string([[
local luagent = require "luagent"
-- a background job that asks the host (the game) where the player is
local scout = luagent.tool{
  name = "scout", description = "Look around the player.",
  handler = function(args, ctx)
    local pos = ctx:call_tool("player_position", {})        -- answered by the host
    ctx:sleep(0.05)                                          -- "work"
    return string.format("nothing dangerous near (%d, %d)", pos.value.x, pos.value.y)
  end,
}
return luagent.config{
  background_tasks = { enabled = true },
  tools = { scout, luagent.host_tool{ name = "player_position", description = "Where the player is.",
                                      input_schema = { type = "object" } } },
}]])

local player = { x = 3, y = 4 }
app:host_tool("player_position", function() return player end)
app:on("task_finished", function(rec) print("frame callback: " .. tostring(rec.result)) end)

local job = app:enqueue_tool("scout", {})
local frame = 0
while app:get(job.task_id).status ~= "completed" and frame < 1000 do
  frame = frame + 1
  player.x = player.x + 1                    -- the game goes on
  -- at most 2 ms of luagent work per frame; here the rest of the 16 ms
  -- frame is spent waiting for luagent news (a game would render instead)
  app:poll{ budget_ms = 2, wait_ms = 16 }
end
app:poll()
print(string.format("done after %d frames", frame))
app:close()
