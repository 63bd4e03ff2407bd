-- make demo: run examples/research_team.lua and show the fan-out as it
-- happens (a line per task event), then the summary, the task tree as a
-- table, and a timeline page (the same views `luagent run` and
-- `luagent trace` give).
package.path = "./lua/?.lua;./lua/?/init.lua;" .. package.path
-- the core built for this Lua: ./luagent/core.so for 5.4, else the one
-- `make LUA=luajit` (lua5.1, ...) writes to build/<lua>/luagent/
local build = rawget(_G, "jit") and "luajit" or _VERSION:gsub("Lua ", "lua")
package.cpath = (build ~= "lua5.4" and "./build/" .. build .. "/?.so;" or "") .. "./?.so;" .. package.cpath
local luagent = require("luagent")
local live = require("luagent.live")

local online = (os.getenv("OPENAI_API_KEY") or os.getenv("OPENAI_BASE_URL")) ~= nil
print(online and "Using the model at " .. (os.getenv("OPENAI_BASE_URL") or "https://api.openai.com/v1")
  or "No OPENAI_API_KEY or OPENAI_BASE_URL: using a scripted model (no network).")

local app = luagent.load("examples/research_team.lua")
local question = arg[1] or "Compare Lua and Python for embedding in a game engine."
local rec = app:enqueue_background("supervisor", question, { thread_id = "demo" })
print(("Question: %s\n"):format(question))

local view = live.plain(io.stdout, io.stdout)
for ev in app:run_stream_until_idle() do view.event(ev) end

local done = app:get(rec.task_id)
print("\n" .. (done.result and done.result.final or ("supervisor " .. done.status)) .. "\n")

for _, line in ipairs(live.table_lines(app:tree(rec.task_id))) do print(line) end

os.execute("mkdir -p build")
local page = "build/demo_trace.html"
local f = assert(io.open(page, "w"))
f:write(app:trace_html(rec.task_id, { title = "luagent demo: " .. question }))
f:close()
print("\nTimeline: " .. page)
app:close()
