-- A quit that never freezes: app:close{ grace_s = 0 } (or wait = false)
-- returns at once even with a worker stuck in a C call; the stuck worker
-- stays accounted for (app:closing(), app:stats()) and drains when its call
-- returns; the process exits cleanly without waiting for it.
local LUA = require("support.lua_bin").lua
local luagent = require "luagent"
local core = require "luagent.core"
local fake = require "support.fake_openai_client"
local H = require "support.fake_openai_app"

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- A startup script whose tool `stuck` creates `marker` and then sits in
-- os.execute for `seconds` (a C call no hook can interrupt).
local STUCK_SRC = [[
local luagent = require "luagent"
return luagent.config{ background_tasks = { enabled = true },
  tools = { luagent.tool{ name = "stuck", handler = function(args)
    os.execute("touch '" .. args.marker .. "'; sleep " .. args.seconds)
    return "woke"
  end } } } ]]

-- Waits (bounded) until the worker is inside the shell: the marker exists.
local function wait_marker(app, marker)
  local deadline = core.now() + 10
  while core.now() < deadline do
    local f = io.open(marker)
    if f then
      f:close()
      return true
    end
    app:poll{ wait_ms = 5 }
  end
  return false
end

describe("app:close never freezes", function()
  for _, how in ipairs({ "grace_s = 0", "wait = false" }) do
    it("close{ " .. how .. " } returns in < 100 ms with a worker inside os.execute('sleep 5'); the process exits before the sleep ends",
      function()
        local marker = os.tmpname()
        os.remove(marker)
        local script = os.tmpname()
        local out_path = os.tmpname()
        local f = assert(io.open(script, "w"))
        f:write(string.format([[
package.path = "./lua/?.lua;./lua/?/init.lua;" .. package.path
package.cpath = "./?.so;" .. package.cpath
local luagent = require "luagent"
local core = require "luagent.core"
local app = luagent.load_string(%q)
local rec = app:enqueue_tool("stuck", { marker = %q, seconds = 5 })
local deadline = core.now() + 10
while not io.open(%q) and core.now() < deadline do app:poll{ wait_ms = 5 } end
assert(app:closing() == nil)
local t0 = core.now()
local all = app:close{ %s }
local took = core.now() - t0
local c = app:closing()
local s = app:stats()
print(string.format("took=%%.6f all=%%s draining=%%d tasks=%%d task_is=%%s status=%%s closing=%%s stats_draining=%%d",
  took, tostring(all), c.draining, #c.tasks, tostring(c.tasks[1] == rec.task_id),
  app:get(rec.task_id).status, tostring(s.closing), s.draining))
]], STUCK_SRC, marker, marker, how))
        f:close()
        -- the child's output goes to a file: the orphaned `sleep` keeps a
        -- copy of it, and a pipe would stay open until the sleep ends
        local t0 = core.now()
        local p = io.popen(LUA .. " " .. q(script) .. " > " .. q(out_path) .. " 2>&1; echo \"exit=$?\"")
        local status = p:read("*a")
        p:close()
        local elapsed = core.now() - t0
        local rf = io.open(out_path)
        local out = rf and rf:read("*a") or ""
        if rf then rf:close() end
        os.remove(script)
        os.remove(out_path)
        os.remove(marker)
        assert.equals("exit=0\n", status, out)
        local took = tonumber(out:match("took=([%d%.]+)"))
        assert.truthy(took, out)
        assert.is_true(took < 0.1, "app:close took " .. tostring(took) .. " s")
        assert.matches("all=false draining=1 tasks=1 task_is=true status=running closing=true stats_draining=1",
          out, 1, true)
        assert.is_true(elapsed < 4.5, "the process took " .. elapsed .. " s to exit")
      end)
  end

  it("a detached worker drains when its C call returns: its task ends cancelled", function()
    local marker = os.tmpname()
    os.remove(marker)
    local app = luagent.load_string(STUCK_SRC)
    local rec = app:enqueue_tool("stuck", { marker = marker, seconds = 0.3 })
    assert.is_true(wait_marker(app, marker))
    os.remove(marker)
    assert.is_false(app:close{ grace_s = 0 })
    assert.equals(1, app:closing().draining)
    local deadline = core.now() + 10
    while app:closing().draining > 0 and core.now() < deadline do app:poll{ wait_ms = 10 } end
    assert.same({ draining = 0, tasks = {} }, app:closing())
    local got = app:get(rec.task_id)
    assert.equals("cancelled", got.status)
    assert.equals("cancelled: the app was closed", got.error.message)
    assert.is_true(app:close())
    assert.equals(0, app:stats().draining)
  end)

  it("a worker the watchdog retired before the close still counts as draining", function()
    local marker = os.tmpname()
    os.remove(marker)
    local app = luagent.load_string((STUCK_SRC:gsub("background_tasks = { enabled = true }",
      "background_tasks = { enabled = true, stop_grace_s = 0.1 }")))
    local rec = app:enqueue_tool("stuck", { marker = marker, seconds = 1 }, { timeout_s = 0.1 })
    assert.is_true(wait_marker(app, marker))
    os.remove(marker)
    local deadline = core.now() + 10
    while app:get(rec.task_id).status == "running" and core.now() < deadline do app:poll{ wait_ms = 10 } end
    assert.equals("timed_out", app:get(rec.task_id).status)
    assert.matches("its worker was retired", app:get(rec.task_id).error.message, 1, true)
    assert.is_false(app:close{ grace_s = 0 })
    assert.same({ draining = 1, tasks = {} }, app:closing())
    assert.equals(1, app:stats().draining)
    while app:closing().draining > 0 and core.now() < deadline do app:poll{ wait_ms = 10 } end
    assert.equals(0, app:closing().draining)
  end)

  it("rejects wait = false with a grace period, and a wait that is not a boolean", function()
    local app = luagent.load_string(STUCK_SRC)
    assert.has_error(function() app:close{ wait = false, grace_s = 1 } end,
      "app:close: wait = false and grace_s > 0 contradict each other")
    assert.error_matches(function() app:close{ wait = 0 } end, "wait")
    app:close{ grace_s = 0 }
  end)

  describe("through luagent.openai", function()
    local srv
    setup(function() srv = fake.start() end)
    teardown(function() srv:stop() end)

    it("close{ grace_s = 0 } with a worker waiting on a slow model returns at once; the worker drains", function()
      srv:script({ { text = "late", delay_ms = 5000 } })
      local app = H.simple(srv, {})
      local rec = app:enqueue_background("a", "hi")
      local deadline = core.now() + 10
      while #srv:requests() == 0 and core.now() < deadline do app:poll{ wait_ms = 5 } end
      assert.equals(1, #srv:requests())
      local t0 = core.now()
      app:close{ grace_s = 0 }
      local took = core.now() - t0
      assert.is_true(took < 0.1, "app:close took " .. took .. " s")
      -- a worker in HTTP is woken: it drains long before the reply is due
      while app:closing().draining > 0 and core.now() < deadline do app:poll{ wait_ms = 10 } end
      assert.equals(0, app:closing().draining)
      assert.is_true(core.now() - t0 < 4)
      assert.equals("cancelled", app:get(rec.task_id).status)
    end)
  end)
end)
