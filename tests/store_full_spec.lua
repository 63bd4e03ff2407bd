-- File store, write failures after load (a full disk, simulated with the
-- tests' page limit on the write connection, app._core:store_limit_pages):
-- every failed write reaches app:on("error") and luagent.set_log, not only
-- the first; an enqueue whose record is not written raises; a task whose
-- latest record did not reach the file is listed in app:store_info().unsaved
-- (its in-memory record does not pass for stored); once there is room the
-- store takes writes again and writes the unsaved records, so a restart
-- finds every task as it ended.
local H = require "support.dispatch_helpers"
local luagent = require "luagent"

local BIG = 64 * 1024

local function body(db)
  return string.format([[
return luagent.config{
  background_tasks = { enabled = true },
  store = { path = %q },
  tools = { T.echo,
    luagent.host_tool{ name = "gate" },
    -- asks the host first (which fills the disk), then returns a big result
    luagent.tool{ name = "fill", handler = function(args, ctx)
      local r = ctx:call_tool("gate", {})
      assert(r.ok, r.error)
      return string.rep("r", %d)
    end } },
} ]], db, BIG)
end

local function contains(list, x)
  for _, v in ipairs(list) do if v == x then return true end end
  return false
end

describe("store: writes that fail after load", function()
  local dir, db
  H.each_store(function(d, path) dir, db = d, path end)

  it("are reported every time, raise from enqueue, leave the task unsaved, and heal", function()
    local logs = {}
    luagent.set_log(function(level, msg)
      if level == "error" then logs[#logs + 1] = msg end
    end)
    local app = H.app(body(db))
    local errors = {}
    app:on("error", function(e) errors[#errors + 1] = e.message end)
    local limit
    app:host_tool("gate", function()
      limit = app._core:store_limit_pages(1) -- no page more than the file has now
      return {}
    end)

    -- a task accepted while there was room ends while there is none
    local t = app:enqueue_tool("fill", {})
    assert.is_true(app:wait({ t.task_id }, { timeout_s = 10 }).done)
    assert.is_truthy(limit and limit > 0)
    local rec = app:get(t.task_id)
    assert.equal("completed", rec.status)
    assert.equal(BIG, #rec.result)
    -- its last record goes to the writer as it ends: wait for the verdict
    local info = app:store_info()
    local deadline = H.now() + 10
    while #info.unsaved == 0 and H.now() < deadline do
      app:poll{ wait_ms = 10 }
      info = app:store_info()
    end
    assert.same({ t.task_id }, info.unsaved)
    assert.is_true(info.write_failures >= 1)
    assert.is_truthy(info.error:find(db, 1, true), info.error)
    assert.matches("full", info.error)

    -- while the disk is full every enqueue raises, naming the store
    for i = 1, 3 do
      local ok, err = pcall(app.enqueue_tool, app, "echo", { i = i, pad = string.rep("x", BIG) })
      assert.is_false(ok)
      local msg = H.errmsg(err)
      assert.is_truthy(msg:find(db, 1, true), msg)
      assert.matches("a write failed: database or disk is full", msg)
    end

    -- and every failure was told, to app:on("error") and to set_log alike
    -- (setting the limit again first waits for what is queued: the records
    -- of the refused tasks, cancelled in memory, fail too)
    -- (a record left unsaved is tried again with later batches, so the
    -- count may still grow: settle on the count the store reports last)
    app._core:store_limit_pages(1)
    local failures = app:store_info().write_failures
    assert.is_true(failures >= 4)
    deadline = H.now() + 10
    while H.now() < deadline do
      failures = app:store_info().write_failures
      if #errors >= failures then break end
      app:poll{ wait_ms = 20 }
    end
    assert.equal(app:store_info().write_failures, #errors)
    assert.same(errors, logs)
    for _, m in ipairs(errors) do
      assert.is_truthy(m:find(db, 1, true), m)
      assert.matches("database or disk is full", m)
    end
    assert.is_true(contains(app:store_info().unsaved, t.task_id))

    -- room again: writes succeed, and the unsaved records are written too
    assert.is_true(app._core:store_limit_pages(0) > limit)
    local after = app:enqueue_tool("echo", { after = true })
    assert.is_true(app:wait({ after.task_id }, { timeout_s = 10 }).done)
    deadline = H.now() + 10
    repeat
      app:poll{ wait_ms = 10 }
      info = app:store_info()
    until #info.unsaved == 0 or H.now() > deadline
    assert.same({}, info.unsaved)
    assert.equal(#errors, info.write_failures) -- nothing failed since
    app:close()

    -- a restart finds every task as it ended in memory
    local again = H.app(body(db))
    local back = again:get(t.task_id)
    assert.equal("completed", back.status)
    assert.equal(BIG, #back.result)
    assert.equal("completed", again:get(after.task_id).status)
    again:close()
  end)

  it("a failure is not sticky: the next write that fits succeeds", function()
    local app = H.app(body(db))
    app._core:store_limit_pages(1)
    assert.is_false(pcall(app.enqueue_tool, app, "echo", { pad = string.rep("x", BIG) }))
    app._core:store_limit_pages(0)
    local t = app:enqueue_tool("echo", { n = 1 })
    assert.is_true(app:wait({ t.task_id }, { timeout_s = 10 }).done)
    assert.equal("completed", app:get(t.task_id).status)
    app:close()
    local again = H.app(body(db))
    assert.equal("completed", again:get(t.task_id).status)
    again:close()
  end)
end)
