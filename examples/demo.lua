-- make demo: run examples/research_team.lua and show the fan-out as it
-- happens, then the summary and a table of the tasks.
package.path = "./lua/?.lua;./lua/?/init.lua;" .. package.path
package.cpath = "./?.so;" .. package.cpath
local luagent = require("luagent")

local online = (os.getenv("OPENAI_API_KEY") or os.getenv("OPENAI_BASE_URL")) ~= nil
print(online and "Using the model at " .. (os.getenv("OPENAI_BASE_URL") or "https://api.openai.com/v1")
  or "No OPENAI_API_KEY or OPENAI_BASE_URL: using a scripted model (no network).")

local app <close> = luagent.load("examples/research_team.lua")
local question = arg[1] or "Compare Lua and Python for embedding in a game engine."
local rec = app:enqueue_background("supervisor", question, { thread_id = "demo" })
print(("Question: %s\n"):format(question))

local t0 = nil
local function clock(ts)
  local h, m, s = ts:match("T(%d+):(%d+):([%d%.]+)Z$")
  local v = tonumber(h) * 3600 + tonumber(m) * 60 + tonumber(s)
  t0 = t0 or v
  return v - t0
end

local SHOW = { task_enqueued = true, task_started = true, task_waiting = true, task_resumed = true,
  task_finished = true, tool_start = true, final = true, error = true, retry = true }
for ev in app:run_stream_until_idle() do
  if SHOW[ev.kind] then
    local what = ev.payload.tool or ev.payload.status or ev.payload.text or ev.payload.message or ""
    what = tostring(what):gsub("\n", " ")
    if #what > 60 then what = what:sub(1, 57) .. "..." end
    print(("%6.2fs  #%-3d %s%-14s %-10s %s"):format(clock(ev.ts), ev.seq, ("  "):rep(ev.depth),
      ev.kind, ev.agent_id or "", what))
  end
end

local done = app:get(rec.task_id)
print("\n" .. (done.result and done.result.final or ("supervisor " .. done.status)))

print(("\n%-28s %-11s %-9s %-10s %s"):format("task", "agent", "kind", "status", "time"))
for _, r in ipairs(app:list()) do
  local secs = r.started_at and r.finished_at and (clock(r.finished_at) - clock(r.started_at)) or 0
  print(("%-28s %-11s %-9s %-10s %.2fs"):format(r.task_id, r.agent_id, r.tool or r.kind, r.status, secs))
end
