-- examples/host/host.c, a C host with its own 60 Hz frame loop, built from a
-- clean copy of the sources against what `make install DESTDIR=...` put
-- there and nothing else, with the exact lines of the README: statically
-- (libluagent.a, the Lua half built in, no package.path) and dynamically
-- (require "luagent" loads the installed module), each running N background
-- agent runs against the fake OpenAI server with every host-tool call
-- answered on the host's main thread.
local I = require "support.install_helpers"
local fake = require "support.fake_openai_client"

local RUNS = 6

describe("the example C host against an installed luagent", function()
  local dir, root, prefix, doc, srv
  setup(function()
    dir = I.tmpdir("host")
    local src = I.copy_sources(dir)
    root = dir .. "/root"
    prefix = root .. "/usr/local"
    -- the README's lines are for Lua 5.4, whichever Lua runs the suite (a
    -- C host on LuaJIT: tests/rockspec_spec.lua)
    I.ok("cd " .. I.q(src) .. " && env -u LUA -u OUT -u MAKEFLAGS -u MAKELEVEL make -s install DESTDIR=" .. I.q(root) .. " >/dev/null")
    doc = prefix .. "/share/doc/luagent/examples/host"
    srv = fake.start()
  end)
  teardown(function()
    if srv then srv:stop() end
    I.cleanup(dir)
  end)

  -- the env of a build line: pkg-config finds only the installed luagent.pc
  local function pc_env()
    return "export PKG_CONFIG_PATH=" .. I.q(prefix .. "/lib/pkgconfig") .. " && cd " .. I.q(dir) .. " && "
  end

  -- Runs a host binary against the fake server: every run asks the host
  -- once (a tool call), then answers.
  local function run_host(bin, env)
    srv:reset()
    local replies = {}
    for i = 1, RUNS do
      replies[i] = { tool_calls = { { id = "call_pos", name = "player_position", arguments = {} } } }
      replies[RUNS + i] = { text = "the player is near" }
    end
    srv:script(replies)
    local out = I.ok("cd / && env -u LUA_PATH -u LUA_CPATH -u OPENAI_API_KEY OPENAI_BASE_URL=" .. I.q(srv.url) ..
      " OPENAI_MODEL=m " .. (env or "") .. " " .. I.q(bin) .. " --runs " .. RUNS .. " --timeout-s 30 " ..
      I.q(doc .. "/agents.lua"))
    local s = I.summary(out)
    assert.equals(RUNS, s.completed, out)
    assert.equals(RUNS, s.host_calls, out)
    assert.equals(s.host_calls, s.main_thread_calls, out)
    assert.equals(0, s.other_tid, out)
    assert.is_true(s.worker_inits >= 1, out)
    -- every worker thread runs as batch work (worker_init), so a worker a
    -- host-tool answer wakes never preempts the frame loop
    assert.equals(s.worker_inits, s.batch_workers, out)
    assert.equals(2 * RUNS, #srv:requests())
    -- after close{ grace_s = 0 } the idle workers wound down within the
    -- host's 30 frames of grace
    assert.equals(0, s.left_draining, out)
    -- the per-frame task count
    assert.matches("frame +%d+: %d+ running, %d+ queued, %d+ finished", out)
    return s
  end

  local lua_env = function()
    local lua = prefix .. "/share/lua/5.4"
    return "LUA_PATH=" .. I.q(lua .. "/?.lua;" .. lua .. "/?/init.lua") ..
      " LUA_CPATH=" .. I.q(prefix .. "/lib/lua/5.4/?.so")
  end

  it("installs luagent.h, libluagent.a, luagent.pc, the module, the Lua files and the examples", function()
    for _, p in ipairs({ "/include/luagent.h", "/lib/libluagent.a", "/lib/pkgconfig/luagent.pc",
      "/lib/lua/5.4/luagent/core.so", "/share/lua/5.4/luagent/init.lua",
      "/share/lua/5.4/luagent/plugins/shell.lua", "/bin/luagent", "/share/doc/luagent/examples/host/host.c" }) do
      assert.truthy(io.open(prefix .. p), "missing " .. p)
    end
  end)

  it("links statically with cc host.c $(pkg-config --cflags --libs luagent) and needs no package.path", function()
    I.ok(pc_env() .. "cc " .. I.q(doc .. "/host.c") .. " $(pkg-config --cflags --libs luagent) -o host-static")
    -- only the public names are exported by the library: those the
    -- installed luagent.h declares
    local syms = I.ok("nm -g --defined-only " .. I.q(prefix .. "/lib/libluagent.a") .. " | awk 'NF==3 {print $3}' | LC_ALL=C sort")
    local declared = {}
    for line in io.lines(prefix .. "/include/luagent.h") do
      local name = line:match("^LUAGENT_API [^(]-%*?([%w_]+)%(")
      if name then declared[#declared + 1] = name end
    end
    table.sort(declared)
    assert.is_true(#declared >= 4, "no LUAGENT_API declaration found")
    assert.equals(table.concat(declared, "\n") .. "\n", syms)
    run_host(dir .. "/host-static")
  end)

  it("loads the installed module with require (dynamic Lua)", function()
    I.ok(pc_env() .. "cc -DHOST_REQUIRE " .. I.q(doc .. "/host.c") ..
      " $(pkg-config --cflags luagent) $(pkg-config --libs lua5.4) -o host-dynamic")
    run_host(dir .. "/host-dynamic", lua_env())
  end)

  it("loads the installed module from a host with static Lua linked with -Wl,-E", function()
    local lualib = I.ok("pkg-config --variable=libdir lua5.4"):gsub("\n$", "") .. "/liblua5.4.a"
    if not io.open(lualib) then return pending("no " .. lualib) end
    I.ok(pc_env() .. "cc -DHOST_REQUIRE " .. I.q(doc .. "/host.c") .. " $(pkg-config --cflags luagent) -Wl,-E " ..
      I.q(lualib) .. " -lm -ldl -o host-static-lua")
    run_host(dir .. "/host-static-lua", lua_env())
    -- without -Wl,-E the module cannot find the host's Lua
    I.ok(pc_env() .. "cc -DHOST_REQUIRE " .. I.q(doc .. "/host.c") .. " $(pkg-config --cflags luagent) " ..
      I.q(lualib) .. " -lm -ldl -o host-no-export")
    local out, code = I.sh("cd / && " .. lua_env() .. " " .. I.q(dir .. "/host-no-export") .. " --runs 1")
    assert.equals(1, code)
    assert.matches("undefined symbol: lua", out, 1, true)
  end)
end)
