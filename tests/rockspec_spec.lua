-- The rockspec installs into an empty tree from a clean copy of the sources,
-- for Lua 5.4 and for 5.1 built against LuaJIT's headers: `require
-- "luagent"` works from each tree (workers included, under lua5.4 and
-- LuaJIT), the installed `luagent` command runs with no `luarocks path`, and
-- the C surface (luagent.h, libluagent.a, luagent.pc) builds the example
-- host. Both trees are checked whichever Lua runs the suite.
local I = require "support.install_helpers"
local fake = require "support.fake_openai_client"

local TARGETS = {
  { version = "5.4", lua = "lua5.4", args = "" },
  -- LuaJIT: LuaRocks' 5.1 tree, LuaJIT's headers and interpreter (README,
  -- "Lua versions")
  { version = "5.1", lua = "luajit", args = " LUA=/usr/bin/luajit LUA_INCDIR=/usr/include/luajit-2.1" },
}

for _, T in ipairs(TARGETS) do
describe("rockspec, Lua " .. T.version .. " (" .. T.lua .. ")", function()
  local dir, tree, log_text
  setup(function()
    dir = I.tmpdir("rock")
    tree = dir .. "/tree"
    local src = I.copy_sources(dir)
    -- stale builds with other flags, newer than the sources: `luarocks make`
    -- must build afresh in a directory of its own and install neither
    I.ok("cd " .. I.q(src) .. " && mkdir -p luagent build/rock/luagent && " ..
      "echo stale > luagent/core.so && echo stale > build/rock/luagent/core.so")
    local out, code = I.sh("cd " .. I.q(src) .. " && env -u CFLAGS -u CURL_INCDIR -u LUA -u OUT -u MAKEFLAGS -u MAKELEVEL " ..
      "luarocks --lua-version=" .. T.version .. " --tree=" .. I.q(tree) ..
      " make --deps-mode=none rockspec/luagent-scm-1.rockspec" .. T.args)
    log_text = out
    assert(code == 0, "luarocks make failed:\n" .. out)
  end)
  teardown(function() I.cleanup(dir) end)

  local function lua_env()
    return string.format("LUA_PATH='%s/share/lua/%s/?.lua;%s/share/lua/%s/?/init.lua' LUA_CPATH='%s/lib/lua/%s/?.so'",
      tree, T.version, tree, T.version, tree, T.version)
  end

  it("builds with the rockspec's flags in its own directory, finding curl without CURL_INCDIR", function()
    assert.matches("-o build/rock/luagent/core.so", log_text, 1, true)
    -- LuaRocks' CFLAGS (-O2 -fPIC), not the Makefile's default (-O2 -g)
    assert.matches("-Wmissing-prototypes -O2 -fPIC -I", log_text, 1, true)
    assert.matches("-I/usr/include/x86_64-linux-gnu", log_text, 1, true)
  end)

  it("runs a background task from the tree with " .. T.lua, function()
    local script = dir .. "/check.lua"
    local f = assert(io.open(script, "w"))
    f:write([[
local luagent = require "luagent"
assert(package.searchpath("luagent.core", package.cpath):find(TREE, 1, true))
local app = luagent.load_string([=[
  local luagent = require "luagent"
  return luagent.config{ background_tasks = { enabled = true },
    tools = { luagent.tool{ name = "t", handler = function() return luagent.in_worker() end } } } ]=])
local w = app:wait({ app:enqueue_tool("t", {}).task_id })
app:close()
print(w.tasks[1].status, w.tasks[1].result)
]])
    f:close()
    local out = I.ok(string.format("cd /tmp && %s %s -e 'TREE=%q' %s", lua_env(), T.lua, tree, I.q(script)))
    assert.equals("completed\ttrue\n", out)
  end)

  it("installs a luagent command that finds its tree with no luarocks path", function()
    local srv = fake.start()
    finally(function() srv:stop() end)
    srv:script({ { text = "hello from the fake model" } })
    local cfg = dir .. "/agents.lua"
    local f = assert(io.open(cfg, "w"))
    f:write(string.format([[
local luagent = require "luagent"
return luagent.config{ model = luagent.openai{ base_url = %q, model = "m", max_retries = 0 },
  agents = { luagent.agent{ id = "a", instructions = "Say hello." } } } ]], srv.url))
    f:close()
    local out = I.ok("cd / && env -u LUA_PATH -u LUA_PATH_5_4 -u LUA_PATH_5_1 -u LUA_CPATH -u LUA_CPATH_5_4 -u LUA_CPATH_5_1 " ..
      I.q(tree .. "/bin/luagent") .. " run " .. I.q(cfg) .. " a hi")
    assert.equals("hello from the fake model\n", out)
    assert.equals(1, #srv:requests())
  end)

  it("installs luagent.h, libluagent.a and luagent.pc next to the module; the example host builds against them", function()
    local lib = tree .. "/lib/lua/" .. T.version
    for _, p in ipairs({ "/luagent/core.so", "/libluagent.a", "/include/luagent.h", "/pkgconfig/luagent.pc" }) do
      assert.truthy(io.open(lib .. p), "missing " .. lib .. p)
    end
    local doc = I.ok("luarocks --lua-version=" .. T.version .. " --tree=" .. I.q(tree) .. " show --rock-dir luagent"):gsub("\n$", "") ..
      "/doc/examples/host"
    local host = dir .. "/host"
    I.ok("cd /tmp && export PKG_CONFIG_PATH=" .. I.q(lib .. "/pkgconfig") .. " && cc " .. I.q(doc .. "/host.c") ..
      " $(pkg-config --cflags --libs luagent) -o " .. I.q(host))
    -- the scripted model of agents.lua (no OPENAI_* set): no package.path
    local out = I.ok("cd / && env -u OPENAI_BASE_URL -u OPENAI_API_KEY -u LUA_PATH -u LUA_CPATH " ..
      I.q(host) .. " --quiet --runs 3 " .. I.q(doc .. "/agents.lua"))
    local s = I.summary(out)
    assert.equals(3, s.completed, out)
    assert.equals(3, s.host_calls, out)
    assert.equals(3, s.main_thread_calls, out)
  end)
end)
end
