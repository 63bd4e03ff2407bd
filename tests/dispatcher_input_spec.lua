-- Dispatcher acceptance: bad input (R-10, docs/architecture.md) and scripts that fail in
-- workers (R-1, R-11).
local closing = require "support.closing"
local H = require "support.dispatch_helpers"
local luagent = H.luagent

describe("dispatcher: API misuse (R-10)", function()
  local app
  before_each(function()
    app = H.app([[
      return luagent.config{ background_tasks = { enabled = true }, tools = { T.echo, T.whoami } } ]])
  end)
  after_each(function() app:close() end)

  it("unknown option keys raise with a suggestion", function()
    local r = app:enqueue_tool("echo", {})
    local cases = {
      { function() app:wait({ r.task_id }, { timout_s = 1 }) end, "app:wait", '"timeout_s"' },
      { function() app:wait({ r.task_id }, { mdoe = "any" }) end, "app:wait", '"mode"' },
      { function() app:enqueue_tool("echo", {}, { agnet_id = "a" }) end, "app:enqueue_tool", '"agent_id"' },
      { function() app:enqueue_tool("echo", {}, { retires = 1 }) end, "app:enqueue_tool", '"retries"' },
      { function() app:list{ stauts = "queued" } end, "app:list", '"status"' },
      { function() app:run_until_idle{ timeout = 1 } end, "app:run_until_idle", '"timeout_s"' },
      { function() app:poll{ max_callback = 1 } end, "app:poll", '"max_callbacks"' },
      { function() app:events{ sinc = 1 } end, "app:events", '"since"' },
      { function() app:close{ grace = 1 } end, "app:close", '"grace_s"' },
      { function() app:on("task_finshed", print) end, "app:on", '"task_finished"' },
    }
    for i, c in ipairs(cases) do
      local msg = H.errmsg(H.raises(c[1]))
      assert.matches(c[2], msg, 1, true, "case " .. i)
      assert.matches("did you mean " .. c[3], msg, 1, true, "case " .. i)
    end
  end)

  it("misuse errors point at the caller's line, not inside luagent", function()
    local r = app:enqueue_tool("echo", {})
    local msgs = {
      H.errmsg(H.raises(function() app:enqueue_tool("echo", {}, { agnet_id = "a" }) end)),
      H.errmsg(H.raises(function() app:enqueue_tool("ecoh", {}) end)),
      H.errmsg(H.raises(function() app:wait(42) end)),
      H.errmsg(H.raises(function() app:get(42) end)),
      H.errmsg(H.raises(function() app:wait({ r.task_id }, { timout_s = 1 }) end)),
      H.errmsg(H.raises(function() app:enqueue_tool(42, {}) end)),
    }
    for i = 1, 6 do assert.matches("^[^:]*dispatcher_input_spec%.lua:%d+:", msgs[i]) end
  end)

  it("wrong argument types raise naming the function", function()
    local cases = {
      { function() app:enqueue_tool(42, {}) end, "app:enqueue_tool" },
      { function() app:enqueue_tool("echo", {}, "opts") end, "app:enqueue_tool" },
      { function() app:enqueue_tool("echo", {}, { timeout_s = "soon" }) end, "app:enqueue_tool" },
      { function() app:enqueue_tool("echo", {}, { timeout_s = -1 }) end, "app:enqueue_tool" },
      { function() app:enqueue_tool("echo", {}, { retries = 1.5 }) end, "app:enqueue_tool" },
      { function() app:get(42) end, "app:get" },
      { function() app:cancel({}) end, "app:cancel" },
      { function() app:wait(42) end, "app:wait" },
      { function() app:wait({ 1, 2 }) end, "app:wait" },
      { function() app:wait("x", { mode = "some" }) end, "app:wait" },
      { function() app:list{ status = "sleeping" } end, "app:list" },
      { function() app:on("task_finished", 42) end, "app:on" },
      { function() app:host_tool("echo", print) end, "app:host_tool" },
    }
    for i, c in ipairs(cases) do
      local err = H.raises(c[1])
      assert.is_string(err, "case " .. i)
      assert.matches(c[2], err, 1, true, "case " .. i)
    end
  end)

  it("an unknown tool name raises, with a suggestion", function()
    local msg = H.errmsg(H.raises(app.enqueue_tool, app, "ecoh", {}))
    assert.matches("unknown tool", msg, 1, true)
    assert.matches('"echo"', msg, 1, true)
  end)

  it("unknown and foreign task ids", function()
    assert.is_nil(app:get("tsk_nope"))
    assert.matches("unknown task id", H.errmsg(H.raises(app.wait, app, { "tsk_nope" }, { timeout_s = 1 })), 1, true)
    assert.matches("unknown task id", H.errmsg(H.raises(app.cancel, app, "tsk_nope")), 1, true)
    -- a task of another app is unknown here
    local other = closing(H.app([[ return luagent.config{ background_tasks = { enabled = true }, tools = { T.echo } } ]]))
    local r = other:enqueue_tool("echo", {})
    assert.is_nil(app:get(r.task_id))
  end)

  it("a closed app refuses work", function()
    local r = app:enqueue_tool("echo", {})
    app:wait({ r.task_id }, { timeout_s = 5 })
    assert.is_true(app:close())
    assert.matches("closed", H.errmsg(H.raises(app.enqueue_tool, app, "echo", {})), 1, true)
  end)
end)

describe("dispatcher: startup scripts (R-1, R-11)", function()
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(function() H.rmdir(dir) end)

  it("a syntax error shows file:line", function()
    local path = dir .. "/broken.lua"
    H.write(path, 'local luagent = require "luagent"\n\nreturn luagent.config{ tools = { ,, } }\n')
    local msg = H.errmsg(H.raises(luagent.load, path))
    assert.matches("broken.lua:3:", msg, 1, true)
  end)

  it("a runtime error in the script shows file:line", function()
    local path = dir .. "/raises.lua"
    H.write(path, 'local luagent = require "luagent"\nlocal x = nil\nreturn x.y\n')
    local msg = H.errmsg(H.raises(luagent.load, path))
    assert.matches("raises.lua:3:", msg, 1, true)
  end)

  it("a script that errors only in workers fails the task with that message (no hang)", function()
    local path = dir .. "/worker_boom.lua"
    H.write(path, H.prelude .. [[
      if luagent.in_worker() then error("boom in worker") end
      return luagent.config{ background_tasks = { enabled = true }, tools = { T.echo } } ]])
    local app = closing(luagent.load(path))
    local ids = {}
    for i = 1, 3 do ids[i] = app:enqueue_tool("echo", { i = i }).task_id end
    local w = app:wait(ids, { timeout_s = 10 })
    assert.is_true(w.done)
    for _, t in ipairs(w.tasks) do
      assert.equal("failed", t.status)
      assert.matches("boom in worker", t.error.message, 1, true)
      assert.matches("worker_boom.lua:", t.error.message, 1, true)
    end
    assert.is_true(app:run_until_idle{ timeout_s = 5 }.idle)
  end)

  it("retries of a task whose worker cannot boot progress with a host that only polls", function()
    local app = closing(H.app([[
      if luagent.in_worker() then error("boom in worker") end
      return luagent.config{ background_tasks = { enabled = true, retry_backoff_s = 0.01 },
                             tools = { T.echo } } ]]))
    local r = app:enqueue_tool("echo", {}, { retries = 2 })
    local t0 = H.now()
    -- a game loop: app:poll() every frame, never a blocking call
    while true do
      local st = app:get(r.task_id).status
      if (st ~= "queued" and st ~= "running") or H.now() - t0 > 5 then break end
      app:poll()
    end
    local rec = app:get(r.task_id)
    assert.equal("failed", rec.status)
    assert.equal(3, rec.attempts)
    assert.matches("boom in worker", rec.error.message, 1, true)
  end)

  it("a worker whose registry differs from the host's fails the task with a clear message", function()
    local app = closing(H.app([[
      local tools = { T.echo }
      if luagent.in_worker() then
        tools[2] = luagent.tool{ name = "extra", handler = function() end }
      end
      return luagent.config{ background_tasks = { enabled = true }, tools = tools } ]]))
    local r = app:enqueue_tool("echo", {})
    local w = app:wait({ r.task_id }, { timeout_s = 10 })
    assert.equal("failed", w.tasks[1].status)
    local msg = w.tasks[1].error.message
    assert.matches("different names", msg, 1, true)
    assert.matches("extra", msg, 1, true)
  end)

  it("load_string reports the chunk name of a syntax error", function()
    local msg = H.errmsg(H.raises(luagent.load_string, "return luagent.config{", "=mycfg"))
    assert.matches("mycfg:1:", msg, 1, true)
  end)
end)
