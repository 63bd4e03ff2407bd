-- The rockspec installs into an empty tree, and `require "luagent"` works
-- from that tree with lua5.4 (workers included).
describe("rockspec", function()
  it("installs with luarocks make into an empty tree and runs a background task from it", function()
    local tree = os.tmpname()
    os.remove(tree)
    local log = tree .. ".log"
    -- build from a copy of the sources, so no build of this checkout (a
    -- sanitizer build, say) is picked up or overwritten
    local src = tree .. ".src"
    assert(os.execute(string.format("env -u LD_PRELOAD sh -c \"mkdir -p '%s' && " ..
      "cp -r Makefile core lua bin plugins rockspec '%s'/\"", src, src)))
    local cmd = string.format("cd '" .. src .. "' && env -u LD_PRELOAD -u CFLAGS luarocks --lua-version=5.4 --tree=%s make --deps-mode=none " ..
      "rockspec/luagent-scm-1.rockspec CURL_INCDIR=/usr/include/x86_64-linux-gnu >%s 2>&1", tree, log)
    local ok = os.execute(cmd)
    local f = io.open(log)
    local out = f and f:read("a") or ""
    if f then f:close() end
    assert.is_true(ok == true, out)
    local script = tree .. "/check.lua"
    f = assert(io.open(script, "w"))
    f:write([[
local luagent = require "luagent"
assert(package.searchpath("luagent.core", package.cpath):find(TREE, 1, true))
local app <close> = luagent.load_string([=[
  local luagent = require "luagent"
  return luagent.config{ background_tasks = { enabled = true },
    tools = { luagent.tool{ name = "t", handler = function() return luagent.in_worker() end } } } ]=])
local w = app:wait({ app:enqueue_tool("t", {}).task_id })
print(w.tasks[1].status, w.tasks[1].result)
]])
    f:close()
    local run = string.format("cd /tmp && env -u LD_PRELOAD LUA_PATH='%s/share/lua/5.4/?.lua;%s/share/lua/5.4/?/init.lua' " ..
      "LUA_CPATH='%s/lib/lua/5.4/?.so' lua5.4 -e 'TREE=%q' %s 2>&1", tree, tree, tree, tree, script)
    local p = io.popen(run)
    local res = p:read("a")
    p:close()
    os.execute("env -u LD_PRELOAD rm -rf '" .. tree .. "' '" .. log .. "' '" .. src .. "'")
    assert.equals("completed\ttrue\n", res)
  end)
end)
