-- Lua versions: every Lua file of the Lua half — lua/, plugins/, bin/ and
-- examples/ — parses as Lua 5.1 (luac5.1) and LuaJIT 2.1, as well as
-- 5.2, 5.3 and 5.4, so syntax newer than 5.1 (<close>, <const>, goto, //,
-- bit operators) cannot slip back in: what differs between versions lives
-- in lua/luagent/compat.lua, which compiles the newer operators from text.
local luajit_module = require "support.luajit_module"
local sh = luajit_module.sh

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function lua_files()
  local out = sh("find -L lua plugins examples bin -type f \\( -name '*.lua' -o -path 'bin/*' \\) | sort")
  local files = {}
  for line in out:gmatch("[^\n]+") do files[#files + 1] = line end
  return files
end

-- the parse-only commands: { name, command prefix }
local PARSERS = {
  { "luac5.1", "luac5.1 -p" },
  { "luajit", "luajit -b" }, -- to /dev/null
  { "luac5.2", "luac5.2 -p" },
  { "luac5.3", "luac5.3 -p" },
  { "luac5.4", "luac5.4 -p" },
}

describe("the Lua half's syntax", function()
  local files = lua_files()

  it("covers the library, the plugins, the command and the examples", function()
    local seen = {}
    for _, f in ipairs(files) do seen[f] = true end
    for _, f in ipairs({ "lua/luagent/init.lua", "lua/luagent/compat.lua", "lua/luagent/models/openai.lua",
      "plugins/shell.lua", "bin/luagent", "examples/neovim/research.lua", "examples/love/main.lua" }) do
      assert.is_true(seen[f], f)
    end
  end)

  for _, p in ipairs(PARSERS) do
    local name, cmd = p[1], p[2]
    it("parses with " .. name, function()
      if sh("command -v " .. name) == "" then
        if name == "luac5.1" or name == "luajit" then error(name .. " is not installed") end
        return pending("no " .. name .. " here")
      end
      local bad = {}
      for _, f in ipairs(files) do
        local c = cmd .. " " .. q(f) .. (name == "luajit" and " /dev/null" or "")
        local out, rc = sh(c)
        if rc ~= 0 then bad[#bad + 1] = out end
      end
      assert.equals("", table.concat(bad, "\n"))
    end)
  end

  -- 5.1 reads these escapes as plain letters, without an error
  it("uses no string escape 5.1 lacks (\\x, \\u{}, \\z)", function()
    local bad = {}
    for _, f in ipairs(files) do
      local n = 0
      for line in io.lines(f) do
        n = n + 1
        local code = line:gsub("%-%-.*$", "")
        if code:find("\\x%x%x") or code:find("\\u{", 1, true) or code:find("\\z") then
          bad[#bad + 1] = f .. ":" .. n .. ": " .. line
        end
      end
    end
    assert.equals("", table.concat(bad, "\n"))
  end)
end)
