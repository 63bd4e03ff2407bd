-- Run by tests/lua_compat_spec.lua under each Lua: what luagent.compat
-- answers, one line per check, in a form that is the same text on every
-- version when the answers agree.
package.path = "./lua/?.lua;" .. package.path
local compat = require("luagent.compat")

local function show(...)
  local out = {}
  for i = 1, select("#", ...) do
    local v = select(i, ...)
    if type(v) == "number" and v == math.floor(v) and v > -2 ^ 53 and v < 2 ^ 53 then
      v = string.format("%d", v)
    elseif type(v) == "table" then
      v = "table"
    end
    out[#out + 1] = tostring(v)
  end
  print(table.concat(out, " "))
end

show("fnv", string.format("%08x", compat.fnv1a32("")), string.format("%08x", compat.fnv1a32("agent\0hello")),
  string.format("%08x", compat.fnv1a32(string.rep("\255xyz", 100))))
show("idiv", compat.idiv(7, 2), compat.idiv(-7, 2), compat.idiv(0, 5), compat.idiv(1000003, 4))
show("bits", compat.bor(0, 8), compat.bor(8, 8), compat.bor(5, 2), compat.band(12, 10))
show("int", compat.tointeger("12"), compat.tointeger(2.5), compat.tointeger(2 ^ 31), compat.is_integer(3),
  compat.is_integer(3.5), compat.is_integer("3"), compat.is_integer(1 / 0))
for _, s in ipairs({ "h\195\169llo", "\237\160\128", "\244\144\128\128", "\192\128", "ab\255", "",
  "\240\159\152\128!", "a\226\130", "\0x" }) do
  show("utf8_len", (s:gsub("[^%w]", function(c) return string.format("<%d>", c:byte()) end)), compat.utf8_len(s))
end
show("utf8_offset", compat.utf8_offset("h\195\169llo", 1), compat.utf8_offset("h\195\169llo", 3),
  compat.utf8_offset("h\195\169llo", 6), compat.utf8_offset("h\195\169llo", 7))

local closed = {}
local mt = { __close = function(_, e) closed[#closed + 1] = type(e) == "table" and "table" or tostring(e) end }
show("with_close", compat.with_close(setmetatable({}, mt), function(a, b) return a + b, "x", nil end, 1, 2))
local err = { kind = "x" }
local ok, e = pcall(compat.with_close, setmetatable({}, mt), function() error(err) end)
show("with_close raise", ok, e == err)
ok, e = pcall(compat.with_close, setmetatable({}, mt), function() error("boom", 0) end)
show("with_close string", ok, e, table.concat(closed, ","))
show("with_close nil", compat.with_close(nil, function() return "fine" end),
  (pcall(compat.with_close, {}, print)))

show("xpcall", compat.xpcall(function(a, b) return a * b end, tostring, 6, 7))
show("xpcall handler", compat.xpcall(function(a) error(a, 0) end, function(m) return "handled " .. m end, "m"))
show("load", compat.load("return x", "=t", "t", { x = 42 })(), (compat.load(string.dump(function() end), "=b", "t")))
show("rawlen", compat.rawlen(setmetatable({ 1, 2, 3 }, { __len = function() return 9 end })),
  compat.log10(1000))
show("execute", compat.execute("true"), compat.execute("exit 3"))
show("unpack", compat.unpack({ 1, 2, 3 }, 2, 3))
local packed = compat.pack(1, nil, 3, nil)
show("pack", packed.n, packed[1], packed[2], packed[3])
