-- A stand-in for LÖVE's main loop on plain LuaJIT, for trying
-- examples/love/main.lua (and testing it) without LÖVE: the `love` table
-- the game uses — timer, graphics.print, event.quit — and love.run's
-- shape: love.load(), then once a frame love.update(dt) and love.draw(),
-- at about 60 frames a second, until love.event.quit().
--
--   luajit examples/love/run.lua     (after `make LUA=luajit`)
local ffi = require("ffi")
ffi.cdef [[
  struct luagent_timespec { long tv_sec; long tv_nsec; };
  int clock_gettime(int clock, struct luagent_timespec *ts);
  int poll(void *fds, unsigned long nfds, int timeout);
]]
local CLOCK_MONOTONIC = 1
local ts = ffi.new("struct luagent_timespec")
local function now()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) / 1e9
end
local function sleep(s)
  if s > 0 then ffi.C.poll(nil, 0, math.floor(s * 1000 + 0.5)) end
end

local FRAME_S = 1 / 60
local quit = false
local screen = {}

local love = {
  timer = { getTime = now, sleep = sleep },
  graphics = { print = function(text, _, y) screen[#screen + 1] = { y = y or 0, text = text } end },
  event = { quit = function() quit = true end },
}
_G.love = love -- LÖVE's own global, which the game expects

local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local game = dofile(here .. "/main.lua")

love.load()
local last = now()
local frames_max = 60 * 120 -- two minutes at most
while not quit and game.stats.frames < frames_max do
  local frame_start = now()
  love.update(frame_start - last)
  last = frame_start
  screen = {}
  love.draw()
  sleep(FRAME_S - (now() - frame_start)) -- a game would wait for vsync here
end
if love.quit then love.quit() end

table.sort(screen, function(a, b) return a.y < b.y end)
for _, line in ipairs(screen) do print(line.text) end
local s = game.stats
print(string.format("frames %d, polls %d, host tool calls %d, NPC lines %d", s.frames, s.polls,
  s.host_calls, s.spoken))
local first
for _, npc in pairs(game.npcs) do
  if npc.frame and (not first or npc.frame < first) then first = npc.frame end
end
print(string.format("first line on frame %s", tostring(first)))
os.exit(quit and 0 or 1)
