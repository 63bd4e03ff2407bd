-- Running bin/luagent from specs: stdout, stderr and the exit status apart,
-- config files in a scratch directory, tmux sessions for terminal checks.
local LUA = require("support.lua_bin").lua
local core = require "luagent.core"

local C = {}

local ENV = "export LUA_PATH='./lua/?.lua;./lua/?/init.lua;;' LUA_CPATH='./?.so;;'; "

local read_file = require("support.store_helpers").read -- "" when there is no file
C.read_file = read_file

function C.quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- A scratch directory, removed by C.cleanup(dir).
function C.tmpdir()
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir -p " .. C.quote(dir)))
  return dir
end

function C.cleanup(dir)
  os.execute("rm -rf " .. C.quote(dir))
end

function C.write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
  return path
end

-- Run `<the Lua under test> bin/luagent <args>` (args: shell words, already quoted where
-- needed); keeps LD_PRELOAD, so a sanitizer run checks the command too.
-- Returns { out, err, code }.
function C.luagent(args, stdin)
  local err = os.tmpname()
  local cmd = ENV .. (stdin and ("printf '%s' " .. C.quote(stdin) .. " | ") or "") ..
    LUA .. " bin/luagent " .. args .. " 2>" .. err .. " </dev/null; echo \"exit=$?\""
  if stdin then cmd = cmd:gsub(" </dev/null", "") end
  local p = io.popen(cmd)
  local out = p:read("*a")
  p:close()
  local code = tonumber(out:match("exit=(%d+)\n$"))
  out = out:gsub("exit=%d+\n$", "")
  local e = read_file(err)
  os.remove(err)
  return { out = out, err = e, code = code }
end

-- Lines of a text.
function C.lines(text)
  local out = {}
  for l in (text .. "\n"):gmatch("([^\n]*)\n") do out[#out + 1] = l end
  if out[#out] == "" then out[#out] = nil end
  return out
end

-- ------------------------------------------------------------- tmux

-- A tmux server of this process's own (other runs on the machine keep
-- theirs), stopped by C.tmux_shutdown. Sessions are not killed one by one:
-- the server exits with its last session, and a session started just then
-- would find it gone.
local TMUX = "env -u LD_PRELOAD tmux -L luagent_spec_" .. tostring(math.random(1e9)) .. " "

-- A detached tmux session of width x height running the shell command
-- `cmd` in the repo (tmux runs it with sh -c). End `cmd` with a `read` to
-- keep the pane (and its screen) until C.tmux_shutdown.
function C.tmux_start(name, cmd, width, height)
  -- tmux itself runs without a sanitizer runtime; the luagent command in
  -- it gets the one this run preloads (make sanitize / make tsan)
  local preload = os.getenv("LD_PRELOAD")
  if preload then cmd = cmd:gsub("^", "env LD_PRELOAD=" .. C.quote(preload):gsub("%%", "%%%%") .. " ", 1) end
  local shell = "cd " .. C.quote(os.getenv("PWD") or ".") .. " && " .. ENV .. cmd
  assert(os.execute(string.format(TMUX .. "new-session -d -s %s -x %d -y %d %s", name,
    width or 120, height or 40, C.quote(shell))))
end

function C.tmux_screen(name)
  local p = io.popen(TMUX .. "capture-pane -p -t " .. name .. " 2>/dev/null")
  local s = p:read("*a")
  p:close()
  return s
end

function C.tmux_keys(name, keys)
  os.execute(TMUX .. "send-keys -t " .. name .. " " .. keys)
end

function C.tmux_shutdown()
  os.execute(TMUX .. "kill-server >/dev/null 2>&1")
end

-- Poll the screen until pred(screen) holds (bounded by timeout_s); returns
-- the screen that matched, or nil and the last one.
function C.tmux_until(name, pred, timeout_s)
  local deadline = core.now() + (timeout_s or 10)
  local screen
  repeat
    screen = C.tmux_screen(name)
    if pred(screen) then return screen end
  until core.now() >= deadline
  return nil, screen
end

return C
