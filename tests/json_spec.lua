local json = require("luagent.json")
local V = require "support.lua_bin"
-- specs of the integer subtype (Lua 5.3, 5.4) and of its absence (5.1,
-- 5.2, LuaJIT): pending under the other
local it_int = V.integers and it or pending
local it_noint = V.integers and pending or it

local function roundtrip(v)
  return json.decode(json.encode(v))
end

local function encode_error(v)
  local ok, err = pcall(json.encode, v)
  assert.is_false(ok, "expected an encode error")
  assert.matches("^luagent%.json%.encode: ", err)
  return err
end

local function decode_error(s)
  local ok, err = pcall(json.decode, s)
  assert.is_false(ok, "expected a decode error for " .. s)
  assert.matches("^luagent%.json%.decode: ", err)
  return err
end

local function nested(depth, open, close)
  return string.rep(open, depth) .. string.rep(close, depth)
end

describe("luagent.json", function()
  describe("integers", function()
    it_int("encode with every digit and decode as integers", function()
      for _, n in ipairs({ 0, 1, -1, 42, math.maxinteger, math.mininteger }) do
        assert.equals(string.format("%d", n), json.encode(n))
        local back = roundtrip(n)
        assert.equals("integer", math.type(back))
        assert.equals(n, back)
      end
      assert.equals("9223372036854775807", json.encode(math.maxinteger))
      assert.equals("-9223372036854775808", json.encode(math.mininteger))
    end)

    it_int("keeps 2^53+1 exact", function()
      local n = 9007199254740993
      assert.equals("9007199254740993", json.encode(n))
      local back = json.decode("9007199254740993")
      assert.equals("integer", math.type(back))
      assert.equals(n, back)
    end)

    it_int("decodes integral fractions and exponents as integers", function()
      assert.equals("integer", math.type(json.decode("2.0")))
      assert.equals(2, json.decode("2.0"))
      assert.equals("integer", math.type(json.decode("1e3")))
      assert.equals(1000, json.decode("1e3"))
      assert.equals("integer", math.type(json.decode("-0")))
    end)

    it_int("decodes real fractions and out-of-int64 values as floats", function()
      assert.equals("float", math.type(json.decode("2.5")))
      assert.equals(2.5, json.decode("2.5"))
      local big = json.decode("9223372036854775808")
      assert.equals("float", math.type(big))
      assert.equals(2.0 ^ 63, big)
      assert.equals("float", math.type(json.decode("-9223372036854775809")))
      assert.equals("float", math.type(json.decode("1e20")))
    end)
  end)

  -- Without an integer subtype a number is a double: integers below 2^53
  -- are written with every digit, JSON integers are read exactly up to
  -- 2^53, and a larger one is an error rather than a number it does not say
  -- (README, "Lua versions").
  describe("integers without an integer subtype", function()
    it_noint("encode with every digit and decode exactly up to 2^53", function()
      for _, n in ipairs({ 0, 1, -1, 42, 2 ^ 53 - 1, -(2 ^ 53 - 1), 1e15 }) do
        assert.equals(string.format("%.0f", n), json.encode(n))
        assert.equals(n, roundtrip(n))
      end
      assert.equals(2 ^ 53, json.decode("9007199254740992"))
      assert.equals(-2 ^ 53, json.decode("-9007199254740992"))
      assert.equals(2, json.decode("2.0"))
      assert.equals(1000, json.decode("1e3"))
      assert.equals(0, json.decode("-0"))
    end)

    it_noint("refuse a JSON integer beyond 2^53", function()
      for _, s in ipairs({ "9007199254740993", "-9007199254740993", "9223372036854775808",
                           "123456789012345678901234567890" }) do
        assert.matches("integer out of range (exact up to 2^53 on this Lua) at byte 1",
          decode_error(s), 1, true)
      end
      assert.matches("at byte 6", decode_error('{"a":9007199254740993}'))
      -- written as floats, large values still read back
      assert.equals(2 ^ 60, json.decode("1.152921504606847e+18"))
      assert.equals(1e20, json.decode("1e20"))
    end)

    it_noint("write integral numbers from 2^53 on as floats, which read back", function()
      assert.equals("9007199254740992.0", json.encode(2 ^ 53))
      assert.equals("-9007199254740992.0", json.encode(-2 ^ 53))
      for _, x in ipairs({ 2 ^ 53, 2 ^ 60, -2 ^ 56, 1e20 }) do
        assert.equals(x, roundtrip(x))
      end
    end)
  end)

  describe("floats", function()
    it("use the shortest text that reads back", function()
      assert.equals("0.1", json.encode(0.1))
      assert.equals("0.7", json.encode(0.7))
      assert.equals("2.5", json.encode(2.5))
    end)

    it("print integral floats like the equal integer", function()
      assert.equals("2", json.encode(2.0))
      assert.equals(json.encode({ a = 28 }), json.encode({ a = 28.0 }))
      assert.equals("-0", json.encode(-0.0))
      assert.equals("1e+20", json.encode(1e20))
    end)

    it("keep integral floats from 2^53 on floats, with a .0 where digits alone would read as an integer", function()
      assert.equals("9007199254740992.0", json.encode(2.0 ^ 53))
      assert.equals("-11111111111111112.0", json.encode(-11111111111111111.0))
      for _, x in ipairs({ 2.0 ^ 53, 11111111111111112.0, -2.0 ^ 56, 2.0 ^ 60 }) do
        local back = json.decode(json.encode(x))
        if V.integers then assert.equals("float", math.type(back)) end
        assert.equals(x, back)
      end
    end)

    it_int("write the integer 2^53 as an integer", function()
      assert.equals("9007199254740992", json.encode(9007199254740992))
    end)

    it("round-trip bit-exactly", function()
      for _, x in ipairs({ 0.1, 0.7, 1 / 3, 2 / 3, 1e300, -1e300, 5e-324, 2.2250738585072014e-308,
                           1.7976931348623157e308, math.pi, -123.456e-7, 2.0 ^ 60, 2.0 ^ 53 }) do
        local back = roundtrip(x)
        assert.equals(string.format("%a", x), string.format("%a", back))
      end
    end)

    it_int("keep floats printed with an exponent as floats", function()
      for _, x in ipairs({ 2.0 ^ 60, 1e20, -1e300 }) do
        assert.equals("float", math.type(roundtrip(x)))
      end
    end)

    it("round-trip -0.0 by value", function()
      assert.equals(0, roundtrip(-0.0))
    end)

    it("refuse NaN and infinities", function()
      assert.matches("cannot encode NaN at %$", encode_error(0 / 0))
      assert.matches("cannot encode inf at %$", encode_error(math.huge))
      assert.matches("cannot encode %-inf at %$", encode_error(-math.huge))
      assert.matches("cannot encode NaN at %$%.x", encode_error({ x = 0 / 0 }))
    end)

    it("reject numbers out of double range", function()
      assert.matches("byte 2", decode_error("[1e400]"))
    end)

    it("ignore the host locale", function()
      local saved = os.setlocale(nil, "numeric")
      local switched
      for _, name in ipairs({ "de_DE.UTF-8", "de_DE.utf8", "de_DE", "fr_FR.UTF-8", "fr_FR.utf8" }) do
        if os.setlocale(name, "numeric") then
          switched = name
          break
        end
      end
      local ok, err = pcall(function()
        if switched then
          -- the locale really uses ',' (LuaJIT's string.format ignores it)
          if not V.luajit then assert.equals("0,5", string.format("%.1f", 0.5)) end
        end
        assert.equals("0.5", json.encode(0.5))
        assert.equals("[1.25,-3.5e-07]", json.encode({ 1.25, -3.5e-7 }))
        assert.equals(1.25, json.decode("1.25"))
        if V.integers then assert.equals("float", math.type(json.decode("1.25"))) end
      end)
      os.setlocale(saved, "numeric")
      assert.equals(saved, os.setlocale(nil, "numeric"))
      assert(ok, err)
    end)
  end)

  describe("arrays and objects", function()
    it("encode empty tables as objects unless marked", function()
      assert.equals("{}", json.encode({}))
      assert.equals("[]", json.encode(json.array()))
      assert.equals("[]", json.encode(json.array({})))
      assert.equals("[]", json.encode(json.empty_array))
      assert.equals("[]", json.encode(json.decode("[]")))
      assert.equals("{}", json.encode(json.decode("{}")))
    end)

    it("mark decoded arrays and only those", function()
      local t = json.decode('{"a":[1,2],"b":{}}')
      assert.is_true(json.is_array(t.a))
      assert.equals(json.array_mt, getmetatable(t.a))
      assert.is_false(json.is_array(t))
      assert.is_false(json.is_array(t.b))
      assert.is_nil(getmetatable(t.b))
      assert.is_false(json.is_array({ 1, 2, 3 }))
      assert.is_false(json.is_array("x"))
      assert.is_true(json.is_array(json.empty_array))
      assert.equals(json.array_mt, getmetatable(json.empty_array))
    end)

    it("array() marks a table and refuses foreign metatables", function()
      local t = { 1, 2 }
      assert.equals(t, json.array(t))
      assert.equals(json.array_mt, getmetatable(t))
      assert.equals(t, json.array(t))
      assert.equals("luagent.json.array", json.array_mt.__name)
      assert.equals("array", json.array_mt.__jsontype)
      local ok, err = pcall(json.array, setmetatable({}, {}))
      assert.is_false(ok)
      assert.matches("metatable", err)
    end)

    it("keeps empty_array read-only", function()
      local ok, err = pcall(function() json.empty_array[1] = 1 end)
      assert.is_false(ok)
      assert.matches("luagent.json.empty_array is read-only", err, 1, true)
      assert.is_nil(rawget(json.empty_array, 1))
      assert.equals("[]", json.encode(json.empty_array))
    end)

    it("shares metatables across loads", function()
      local core = require("luagent.core")
      assert.equals(json.array_mt, core.json.array_mt)
      assert.equals(json.empty_array, core.json.empty_array)
      package.loaded["luagent.json"] = nil
      local again = require("luagent.json")
      package.loaded["luagent.json"] = json
      assert.equals(json.array_mt, again.array_mt)
      assert.is_true(json.is_array(again.decode("[1]")))
    end)

    it("encodes sequences as arrays and sorts object keys", function()
      assert.equals("[1,2,3]", json.encode({ 1, 2, 3 }))
      assert.equals('{"a":1,"b":[2]}', json.encode({ b = { 2 }, a = 1 }))
      assert.equals('{"":0,"A":1,"B":2,"a":3,"aa":4,"b":5}',
        json.encode({ b = 5, aa = 4, a = 3, B = 2, A = 1, [""] = 0 }))
      assert.equals('{"a":1,"a\\u0000":2}', json.encode({ ["a\0"] = 2, a = 1 }))
    end)

    it("gives identical bytes for the same value", function()
      local t = {}
      for i = 1, 200 do
        t["key" .. (i * 7919 % 1000)] = { i, tostring(i), i / 7 }
      end
      local first = json.encode(t)
      for _ = 1, 20 do
        local copy = {}
        for k, v in pairs(t) do copy[k] = v end
        assert.equals(first, json.encode(copy))
        assert.equals(first, json.encode(t))
      end
      assert.equals(first, json.encode(json.decode(first)))
    end)

    it("refuses sparse arrays", function()
      assert.matches("sparse array %(key 3%) at %$", encode_error({ 1, nil, 3 }))
      assert.matches("sparse", encode_error(json.array({ 1, nil, 3 })))
      assert.matches("sparse", encode_error({ [0] = 1 }))
      assert.matches("sparse", encode_error({ [2] = 1 }))
      assert.matches("sparse array %(key %-1%)", encode_error({ 1, [-1] = 2 }))
    end)

    it("refuses mixed and odd keys", function()
      assert.matches("table mixes array and object keys at %$", encode_error({ 1, x = 2 }))
      assert.matches("array with non%-integer key", encode_error(json.array({ 1, x = 2 })))
      assert.matches("cannot encode table with float key", encode_error({ [1.5] = 1 }))
      assert.matches("cannot encode table with boolean key", encode_error({ [true] = 1 }))
      assert.matches("cannot encode table with table key", encode_error({ [{}] = 1 }))
    end)
  end)

  describe("null", function()
    it("is kept in arrays and omitted from objects", function()
      local t = json.decode('[1,null,3,null]')
      assert.equals(4, #t)
      assert.equals(json.null, t[2])
      assert.equals(json.null, t[4])
      assert.equals("[1,null,3,null]", json.encode(t))
      local o = json.decode('{"a":null,"b":1,"c":[null]}')
      assert.is_nil(o.a)
      assert.equals(1, o.b)
      assert.equals(json.null, o.c[1])
      assert.equals('{"b":1,"c":[null]}', json.encode(o))
      assert.is_nil(json.decode('{"a":1,"a":null}').a)
    end)

    it("works at top level", function()
      assert.equals(json.null, json.decode("null"))
      assert.equals(json.null, json.decode(" null "))
      assert.equals("null", json.encode(json.null))
      assert.equals("null", json.encode(nil))
      assert.equals("userdata", type(json.null))
    end)
  end)

  describe("errors", function()
    it("detect cycles with the path", function()
      local t = { a = { b = {} } }
      t.a.b.c = t
      assert.matches("cycle in table at %$%.a%.b%.c", encode_error(t))
      local self_ref = json.array({})
      self_ref[1] = self_ref
      assert.matches("cycle in table at %$%[1%]", encode_error(self_ref))
    end)

    it("allow the same table in different branches", function()
      local shared = { x = 1 }
      assert.equals('{"a":{"x":1},"b":[{"x":1},{"x":1}]}',
        json.encode({ a = shared, b = { shared, shared } }))
    end)

    it("limit nesting to 1000", function()
      local function deep(n)
        local t = {}
        for _ = 2, n do t = { t } end
        return t
      end
      assert.equals(string.rep("[", 999) .. "{}" .. string.rep("]", 999), json.encode(deep(1000)))
      assert.matches("nesting too deep", encode_error(deep(1001)))
      assert.equals("table", type(json.decode(nested(999, "[", "]"))))
      assert.equals("table", type(json.decode(nested(1000, "[", "]"))))
      assert.matches("nesting too deep at byte 1001", decode_error(nested(1001, "[", "]")))
      assert.matches("nesting too deep", decode_error(string.rep('{"a":', 1001) .. "1" .. string.rep("}", 1001)))
      assert.matches("nesting too deep", decode_error(string.rep("[", 100000)))
    end)

    it("name the type and path of values that cannot be encoded", function()
      assert.matches("cannot encode function at %$$", encode_error(print))
      assert.matches("cannot encode function at %$%.handler", encode_error({ handler = print }))
      assert.matches("cannot encode function at %$%.list%[2%]", encode_error({ list = { 1, print } }))
      assert.matches('cannot encode function at %$%["a b"%]', encode_error({ ["a b"] = print }))
      assert.matches("cannot encode thread at %$%[1%]", encode_error({ coroutine.create(print) }))
      assert.matches("cannot encode userdata at %$%.f", encode_error({ f = io.stdout }))
    end)

    it("leave no partial result behind", function()
      assert.is_false(pcall(json.encode, { a = { 1, 2, print } }))
      assert.equals('{"a":[1,2]}', json.encode({ a = { 1, 2 } }))
    end)

    it("reject malformed input naming the byte", function()
      assert.matches("expected value at byte 6", decode_error('{"a":}'))
      assert.matches("expected value at byte 4", decode_error("[1,]"))
      assert.matches("unterminated string at byte 1", decode_error('"abc'))
      assert.matches("unterminated string at byte 3", decode_error('[ "abc\\"'))
      assert.matches("expected ':' at byte 6", decode_error('{"a" 1}'))
      assert.matches("expected ',' or '}' at byte 8", decode_error('{"a":1 "b":2}'))
      assert.matches("expected ',' or ']' at byte 4", decode_error("[1 2]"))
      assert.matches("expected string key at byte 2", decode_error("{1:2}"))
      assert.matches("invalid number %(leading zero%) at byte 1", decode_error("01"))
      assert.matches("invalid number", decode_error("-"))
      assert.matches("invalid number", decode_error("1."))
      assert.matches("invalid number", decode_error("1e+"))
      assert.matches("expected value at byte 1", decode_error(".5"))
      assert.matches("expected value at byte 1", decode_error("+1"))
      assert.matches("trailing garbage at byte 3", decode_error("1 2"))
      assert.matches("trailing garbage at byte 4", decode_error("[] x"))
      assert.matches("invalid literal at byte 1", decode_error("tru"))
      assert.matches("invalid escape at byte 2", decode_error('"\\x"'))
      assert.matches("invalid escape at byte 2", decode_error('"\\u12"'))
      assert.matches("invalid escape", decode_error('"\\u12G4"'))
      assert.matches("control character in string at byte 3", decode_error('"a\nb"'))
      assert.matches("expected value at byte 1", decode_error(""))
      assert.matches("expected value at byte 3", decode_error("  "))
      assert.matches("byte", decode_error("[NaN]"))
      assert.matches("byte", decode_error("[Infinity]"))
      assert.matches("byte", decode_error("{'a':1}"))
    end)

    it("require a string argument", function()
      assert.is_false(pcall(json.decode, {}))
      assert.is_false(pcall(json.decode))
    end)

    it("decode_safe returns nil and the message", function()
      local v, err = json.decode_safe("[1,")
      assert.is_nil(v)
      assert.matches("luagent.json.decode: expected value at byte 4", err, 1, true)
      assert.same({ 1 }, json.decode_safe("[1]"))
      assert.equals(false, json.decode_safe("false"))
    end)
  end)

  describe("strings", function()
    it("escape what JSON needs and not '/'", function()
      assert.equals('"a/b"', json.encode("a/b"))
      assert.equals('"q\\"b\\\\n\\nt\\t\\u0001"', json.encode('q"b\\n\nt\t\1'))
      assert.equals("a/b", json.decode('"a\\/b"'))
      assert.equals('"\\/\b\f\n\r\t', json.decode('"\\"\\\\\\/\\b\\f\\n\\r\\t"'))
    end)

    it("round-trip NUL bytes", function()
      local s = "a\0b\0"
      assert.equals('"a\\u0000b\\u0000"', json.encode(s))
      assert.equals(s, roundtrip(s))
      assert.equals("\0", json.decode('"\\u0000"'))
    end)

    it("decode unicode escapes to UTF-8", function()
      assert.equals("A", json.decode('"\\u0041"'))
      assert.equals("\u{e9}", json.decode('"\\u00e9"'))
      assert.equals("\u{20ac}", json.decode('"\\u20AC"'))
      assert.equals("\u{1f600}", json.decode('"\\ud83d\\ude00"'))
      assert.equals("x\u{10ffff}y", json.decode('"x\\udbff\\udfffy"'))
      assert.equals("\u{fffd}", json.decode('"\\ud83d"'))
      assert.equals("\u{fffd}", json.decode('"\\ude00"'))
      assert.equals("\u{fffd}A", json.decode('"\\ud83d\\u0041"'))
      assert.equals("\u{fffd}x", json.decode('"\\ud83dx"'))
    end)

    it("pass valid UTF-8 through and turn each invalid byte into U+FFFD", function()
      local s = "h\u{e9}llo \u{1f600} "
      assert.equals('"' .. s .. '"', json.encode(s))
      assert.equals(s, json.decode('"' .. s .. '"'))
      assert.equals('"' .. s .. '\u{fffd}\u{fffd}"', json.encode(s .. "\xff\xfe"))
      assert.equals(s .. "\u{fffd}\u{fffd}", json.decode('"' .. s .. '\xff\xfe"'))
    end)

    it("decode long strings with and without escapes", function()
      local long = string.rep("abc", 10000)
      assert.equals(long, roundtrip(long))
      assert.equals(long .. "\n", roundtrip(long .. "\n"))
      local keyed = { [long] = 1, [long .. "\t"] = { long } }
      assert.same(keyed, roundtrip(keyed))
    end)
  end)

  describe("scalars and whitespace", function()
    it("encode and decode top-level values", function()
      assert.equals("true", json.encode(true))
      assert.equals("false", json.encode(false))
      assert.equals('"x"', json.encode("x"))
      assert.equals(true, json.decode("true"))
      assert.equals(false, json.decode("false"))
      assert.equals("x", json.decode('"x"'))
      assert.equals(-12, json.decode("-12"))
      assert.equals(0.5, json.decode("5e-1"))
      assert.equals(150, json.decode("1.5E+2"))
    end)

    it("accept RFC 8259 whitespace", function()
      local t = json.decode(' \t\r\n{ "a" : [ 1 , 2 ] , "b" : { } }\n ')
      assert.same({ a = { 1, 2 }, b = {} }, t)
      assert.equals('{"a":[1,2],"b":{}}', json.encode(t))
    end)

    it("round-trip a mixed document", function()
      local doc = '{"f":0.25,"id":"x1","list":[{"k":[]},"s",-1.5e-10],"n":3,"o":{"z":false},"ok":true}'
      assert.equals(doc, json.encode(json.decode(doc)))
    end)
  end)
end)
