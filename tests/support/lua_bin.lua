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

return V
