-- The directory holding a LuaJIT build of luagent/core.so, for the specs
-- that start a LuaJIT host of their own (Neovim, the LÖVE-style loop).
-- Under `make test LUA=luajit` it is the module the suite runs with
-- (./luagent/core.so); under another Lua it is built here with
-- `make LUA=luajit` into build/luajit/ (quick when it is up to date).
local M = {}

-- output and exit status of a shell command (the status is echoed: LuaJIT's
-- and 5.1's popen close does not give it). A sanitizer run's preload stays
-- out: these are tools (find, make, luac, nvim), not the library under test.
local function sh(cmd)
  local p = assert(io.popen("unset LD_PRELOAD; (" .. cmd .. ") 2>&1; echo \"rc=$?\""))
  local out = p:read("*a")
  p:close()
  local body, rc = out:match("^(.-)rc=(%d+)\n$")
  return body or out, tonumber(rc)
end
M.sh = sh

-- returns the directory, or nil and why not
function M.dir()
  if type(rawget(_G, "jit")) == "table" then return "." end
  local inc, code = sh("pkg-config --cflags-only-I luajit")
  inc = inc:match("%-I(%S+)")
  if code ~= 0 or not inc then return nil, "no LuaJIT headers (libluajit-5.1-dev)" end
  -- make's own variables stay out (the suite may run under make)
  local out, rc = sh("env -u MAKEFLAGS -u MAKELEVEL -u MFLAGS make --no-print-directory -s " ..
    "LUA=luajit OUT=build/luajit/luagent LUA_INCDIR=" .. inc .. " build/luajit/luagent/core.so")
  if rc ~= 0 then error("building the LuaJIT module failed:\n" .. out) end
  return "build/luajit"
end

return M
