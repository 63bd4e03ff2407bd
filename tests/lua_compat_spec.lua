-- Lua versions: luagent.compat (lua/luagent/compat.lua), the one module
-- where the Lua half's version-specific pieces live, gives the same
-- answers on Lua 5.1, 5.2, 5.3, 5.4 and LuaJIT as 5.4's own operators and
-- utf8 library give on 5.4: the background-call digest (so a key made on
-- one Lua finds its task on another), integer division, bit masks, integer
-- tests, strict UTF-8, to-be-closed values, xpcall with arguments, load
-- with an env, os.execute's status. tests/support/compat_probe.lua prints them, a line each.
local luajit_module = require "support.luajit_module"
local sh = luajit_module.sh

local LUAS = { "lua5.1", "lua5.2", "lua5.3", "luajit" }

describe("luagent.compat", function()
  local reference, rc = sh("lua5.4 tests/support/compat_probe.lua")

  it("answers on 5.4 as the language does", function()
    assert.equals(0, rc, reference)
    -- the digest of the FNV-1a reference values, 5.4's floor division and
    -- utf8.len: overlong forms, surrogates and code points past U+10FFFF
    -- are invalid at their first byte
    for _, line in ipairs({
      "fnv 811c9dc5 a4e6901a d5f6d625",
      "idiv 3 -4 0 250000",
      "bits 8 8 7 8",
      "int 12 nil 2147483648 true false false false",
      "utf8_len <237><160><128> nil 1",
      "utf8_len <244><144><128><128> nil 1",
      "utf8_len <192><128> nil 1",
      "utf8_len a<226><130> nil 2",
      "utf8_len <240><159><152><128><33> 2",
      "utf8_offset 1 4 7 nil",
      "with_close 3 x nil",
      "with_close raise false true",
      "with_close string false boom nil,table,boom",
      "xpcall true 42",
      "xpcall handler false handled m",
      "load 42 nil",
      "execute true false",
    }) do
      assert.truthy(reference:find(line .. "\n", 1, true), line .. "\n---\n" .. reference)
    end
  end)

  for _, lua in ipairs(LUAS) do
    it("answers the same on " .. lua, function()
      if sh("command -v " .. lua) == "" then
        if lua == "luajit" then error("luajit is not installed") end
        return pending("no " .. lua .. " here")
      end
      local out, code = sh(lua .. " tests/support/compat_probe.lua")
      assert.equals(0, code, out)
      assert.equals(reference, out)
    end)
  end
end)
