-- The `luagent` command: run or chat with an agent of a startup script.
local luagent = require("luagent")

local cli = {}

local USAGE = [[
usage: luagent run  <config.lua> <agent> <prompt...> [--events] [--json]
       luagent chat <config.lua> <agent> [--thread ID]
       luagent version

run    runs the agent once in the foreground and prints its final answer
       (--events also prints the merged event stream, --json the AgentResult)
chat   reads lines from stdin and continues one conversation thread]]

local function parse(args)
  local pos, flags = {}, {}
  local i = 1
  while i <= #args do
    local a = args[i]
    if a == "--thread" then
      flags.thread = args[i + 1]
      i = i + 1
    elseif a:sub(1, 2) == "--" then
      flags[a:sub(3)] = true
    else
      pos[#pos + 1] = a
    end
    i = i + 1
  end
  return pos, flags
end

local function print_event(ev)
  local p = ev.payload or {}
  local what = p.tool or p.status or p.text or p.message or ""
  io.stderr:write(string.format("#%d %s%s %s %s\n", ev.seq, string.rep("  ", ev.depth or 0), ev.kind,
    ev.agent_id or "", tostring(what):gsub("\n", " "):sub(1, 80)))
end

function cli.main(args)
  local pos, flags = parse(args)
  local cmd = pos[1]
  if cmd == "version" then
    print("luagent " .. luagent.version)
    return 0
  end
  if (cmd ~= "run" and cmd ~= "chat") or not pos[2] or not pos[3] then
    io.stderr:write(USAGE, "\n")
    return cmd == nil and 0 or 2
  end
  local ok, app = pcall(luagent.load, pos[2])
  if not ok then
    io.stderr:write(tostring(app), "\n")
    return 1
  end
  local agent = pos[3]
  local cursor = 0
  local function show_events()
    if not flags.events then return end
    for _, ev in ipairs(app:events{ since = cursor, limit = 100000 }) do
      cursor = ev.seq
      print_event(ev)
    end
  end
  if cmd == "run" then
    local prompt = table.concat(pos, " ", 4)
    local res_ok, res = pcall(app.run, app, agent, prompt)
    show_events()
    app:close()
    if not res_ok then
      io.stderr:write(tostring(res), "\n")
      return 2
    end
    if flags.json then
      print(luagent.json.encode(res))
    else
      print(res.final or ("(" .. res.status .. ": " .. tostring(res.error and res.error.message) .. ")"))
    end
    return res.status == "completed" and 0 or 1
  end
  local thread = flags.thread or "cli"
  for line in io.lines() do
    local ok_chat, res = pcall(app.chat, app, agent, line, { thread_id = thread })
    if not ok_chat then
      io.stderr:write(tostring(res), "\n")
      app:close()
      return 2
    end
    show_events()
    print(res.final or ("(" .. res.status .. ": " .. tostring(res.error and res.error.message) .. ")"))
  end
  app:close()
  return 0
end

return cli
