-- The Lua the suite runs under, for the child processes the specs start:
-- `make test` runs it under lua5.4, `make test LUA=luajit` (and the other
-- Lua versions) under that one (Makefile, LUAGENT_TEST_LUA).
local V = {}

V.lua = os.getenv("LUAGENT_TEST_LUA") or "lua5.4"

-- true under Lua 5.4 (and 5.3), where numbers have an integer subtype
V.integers = math.type ~= nil

-- LuaRocks' name for the version: "5.4", "5.1" (LuaJIT), ...
V.version = _VERSION:match("%d+%.%d+")

V.luajit = type(rawget(_G, "jit")) == "table"

-- to-be-closed variables (`local x <close>`, 5.4)
V.has_close = _VERSION == "Lua 5.4"

-- Lua source defining on_gc(fn): an object whose finalizer is fn, for code
-- run in worker states (tables have __gc from 5.2 on; 5.1 and LuaJIT
-- finalize only userdata, made with newproxy)
V.ON_GC = [[
local function on_gc(fn)
  if rawget(_G, "newproxy") then
    local p = newproxy(true)
    getmetatable(p).__gc = fn
    return p
  end
  return setmetatable({}, { __gc = fn })
end
]]

return V
