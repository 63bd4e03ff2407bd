-- luagent.compat: every difference between Lua 5.1, 5.2, 5.3, 5.4 and
-- LuaJIT 2.1 the Lua half relies on, in one place. Other modules use only
-- syntax and library functions every one of them has, and ask here for the
-- rest. On 5.3 and 5.4 the pieces are the language's own operators and
-- functions (compiled from text below, so this file parses everywhere):
-- on 5.4 nothing behaves differently from plain 5.4 code.
--
-- Numbers: 5.1, 5.2 and LuaJIT have only floats, so "an integer" there is a
-- finite integral number (2 and 2.0 are one value); on 5.3 and 5.4 it is
-- the integer subtype, as the language says.
local compat = {}

local V = _VERSION
local jit = rawget(_G, "jit")

compat.version = V
compat.luajit = type(jit) == "table" and jit.version or nil
compat.has_integers = math.type ~= nil
-- Lua 5.4's to-be-closed variables (`local x <close>`)
compat.has_close = V ~= "Lua 5.1" and V ~= "Lua 5.2" and V ~= "Lua 5.3"

compat.unpack = table.unpack or rawget(_G, "unpack")
compat.pack = table.pack or function(...) return { n = select("#", ...), ... } end

-- load(text, chunkname, mode, env) with 5.2's signature everywhere. 5.1's
-- load takes a reader function, and LuaJIT's knows no env.
local native_load = load
if V == "Lua 5.1" then
  local loadstring, setfenv = rawget(_G, "loadstring"), rawget(_G, "setfenv")
  function compat.load(text, chunkname, mode, env)
    if type(text) == "string" and mode == "t" and text:byte(1) == 27 then
      return nil, string.format("attempt to load a binary chunk (mode is '%s')", mode)
    end
    local chunk, err
    if compat.luajit or type(text) ~= "string" then
      chunk, err = native_load(text, chunkname, mode)
    else
      chunk, err = loadstring(text, chunkname)
    end
    if chunk and env ~= nil then setfenv(chunk, env) end
    return chunk, err
  end
else
  function compat.load(text, chunkname, mode, env)
    if env ~= nil then return native_load(text, chunkname, mode, env) end
    return native_load(text, chunkname, mode)
  end
end

-- xpcall(f, handler, ...): the global one (a worker state guards it, see
-- worker.lua), looked up at each call; plain 5.1's passes no arguments.
if V == "Lua 5.1" and not compat.luajit then
  function compat.xpcall(f, handler, ...)
    local n, args = select("#", ...), { ... }
    return xpcall(function() return f(compat.unpack(args, 1, n)) end, handler)
  end
else
  function compat.xpcall(f, handler, ...)
    return xpcall(f, handler, ...)
  end
end

-- Was the function at `level` (1: the caller), known to its callers as
-- `name`, entered through a tail call? 5.2 and later say so. LuaJIT drops
-- the frame of a function that made a tail call without a trace, but names
-- the function after the call its caller made: a name other than `name`
-- is another function's call. Plain 5.1 keeps a "(tail call)" level in the
-- frame's place, so levels need no adjusting there.
if compat.luajit then
  function compat.is_tail_call(level, name)
    local seen = debug.getinfo(level + 1, "n").name
    return seen ~= nil and seen ~= name
  end
elseif V == "Lua 5.1" then
  function compat.is_tail_call() return false end
else
  function compat.is_tail_call(level) return debug.getinfo(level + 1, "t").istailcall end
end

compat.rawlen = rawget(_G, "rawlen") or function(t) return #t end -- 5.1's # ignores __len on tables

compat.log10 = math.log10 or function(x) return math.log(x, 10) end

local function finite_integral(v)
  return type(v) == "number" and v == v and v ~= math.huge and v ~= -math.huge and v == math.floor(v)
end

-- Integers, bit operations and the 32-bit digest.
if compat.has_integers then
  local ops = assert(native_load([[
    return {
      idiv = function(a, b) return a // b end,
      bor = function(a, b) return a | b end,
      band = function(a, b) return a & b end,
      fnv1a32 = function(s)
        local h = 0x811C9DC5
        for i = 1, #s do h = ((h ~ s:byte(i)) * 0x01000193) & 0xFFFFFFFF end
        return h
      end,
    }]], "=luagent.compat", "t"))()
  compat.idiv, compat.bor, compat.band, compat.fnv1a32 = ops.idiv, ops.bor, ops.band, ops.fnv1a32
  compat.tointeger = math.tointeger
  function compat.is_integer(v) return math.type(v) == "integer" end
  compat.maxinteger = math.maxinteger
else
  function compat.idiv(a, b) return math.floor(a / b) end
  -- for the non-negative integers below 2^53 luagent uses as bit masks
  local function bitop(a, b, keep)
    local r, bit = 0, 1
    while a > 0 or b > 0 do
      local x, y = a % 2, b % 2
      if keep(x, y) then r = r + bit end
      a, b, bit = (a - x) / 2, (b - y) / 2, bit * 2
    end
    return r
  end
  function compat.bor(a, b) return bitop(a, b, function(x, y) return x == 1 or y == 1 end) end
  function compat.band(a, b) return bitop(a, b, function(x, y) return x == 1 and y == 1 end) end
  -- FNV-1a with floats: the xor touches the low byte only, and the product
  -- by 2^24 + 0x193 is taken modulo 2^32 in pieces that stay below 2^53
  local function xor8(a, b)
    local r, bit = 0, 1
    for _ = 1, 8 do
      local x, y = a % 2, b % 2
      if x ~= y then r = r + bit end
      a, b, bit = (a - x) / 2, (b - y) / 2, bit * 2
    end
    return r
  end
  function compat.fnv1a32(s)
    local h = 0x811C9DC5
    for i = 1, #s do
      local low = h % 256
      h = h - low + xor8(low, s:byte(i))
      h = (h * 0x193 + (h % 256) * 0x1000000) % 0x100000000
    end
    return h
  end
  function compat.tointeger(v)
    if type(v) == "string" then v = tonumber(v) end
    if finite_integral(v) then return v end
    return nil
  end
  compat.is_integer = finite_integral
  -- the largest integer every number up to which is exact in a double
  compat.maxinteger = 2 ^ 53
end

-- UTF-8 as 5.4's utf8.len and utf8.offset see it (strict: no overlong
-- forms, no surrogates, nothing above U+10FFFF).
local utf8lib = rawget(_G, "utf8")
if V == "Lua 5.4" then
  compat.utf8_len, compat.utf8_offset = utf8lib.len, utf8lib.offset
else
  -- the length of the character at byte i, or nil when it is not valid
  local function char_len(s, i)
    local c = s:byte(i)
    if c < 0x80 then return 1 end
    local n, min, cp
    if c >= 0xF0 and c <= 0xF4 then n, min, cp = 4, 0x10000, c - 0xF0
    elseif c >= 0xE0 and c <= 0xEF then n, min, cp = 3, 0x800, c - 0xE0
    elseif c >= 0xC2 and c <= 0xDF then n, min, cp = 2, 0x80, c - 0xC0
    else return nil end
    for k = 1, n - 1 do
      local b = s:byte(i + k)
      if not b or b < 0x80 or b > 0xBF then return nil end
      cp = cp * 64 + (b - 0x80)
    end
    if cp < min or cp > 0x10FFFF or (cp >= 0xD800 and cp <= 0xDFFF) then return nil end
    return n
  end
  -- utf8.len(s): the number of characters, or nil and the position of the
  -- first invalid byte
  function compat.utf8_len(s)
    local i, n, len = 1, 0, #s
    while i <= len do
      local w = char_len(s, i)
      if not w then return nil, i end
      i, n = i + w, n + 1
    end
    return n
  end
  -- utf8.offset(s, n) for n >= 1: where the n-th character starts
  -- (#s + 1 for the one after the last), nil past that
  function compat.utf8_offset(s, n)
    local pos, len = 0, #s -- 0-based, as in lutf8lib.c
    n = n - 1
    while n > 0 and pos < len do
      repeat
        pos = pos + 1
        local b = s:byte(pos + 1)
      until not (b and b >= 0x80 and b <= 0xBF)
      n = n - 1
    end
    if n == 0 then return pos + 1 end
    return nil
  end
end

-- fn(...) with `res` closed when it returns or raises: what `local r <close>
-- = res` does on 5.4 (which runs here), for every version. res may be nil
-- or false (nothing to close); otherwise its metatable has __close.
if compat.has_close then
  compat.with_close = assert(native_load([[
    return function(res, fn, ...)
      local r <close> = res
      return fn(...)
    end]], "=luagent.compat", "t"))()
else
  local function close_after(res, close, ok, ...)
    if close then close(res, (not ok) and (...) or nil) end
    if not ok then error((...), 0) end
    return ...
  end
  function compat.with_close(res, fn, ...)
    local close
    if res ~= nil and res ~= false then
      local mt = debug.getmetatable(res)
      close = mt and mt.__close
      if not close then error("with_close: the value has no __close metamethod", 2) end
    end
    return close_after(res, close, pcall(fn, ...))
  end
end

-- Lua 5.4 seeds math.random at random in every new state; the others start
-- each state on the same sequence (5.1 and 5.3 share C's rand()). A worker
-- state, luagent's own, gets a seed of its own here (`entropy`: a number
-- that differs between states, such as a clock).
if V == "Lua 5.4" then
  function compat.seed_random() end
else
  function compat.seed_random(entropy)
    local addr = tonumber(tostring({}):match("0x(%x+)") or "0", 16) or 0
    math.randomseed((os.time() + addr + math.floor((entropy or 0) * 1e6)) % 2147483647)
  end
end

-- os.execute(cmd): did the command exit with status 0? 5.2 and later
-- return true or nil; 5.1 and LuaJIT the status number.
function compat.execute(cmd)
  local r = os.execute(cmd)
  return r == true or r == 0
end

return compat
