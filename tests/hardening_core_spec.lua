-- Hardening of the core: event seq at its limits, the run status of
-- background agent runs in their records, fenced standard library calls in
-- worker states, workers retired when Lua code cannot be stopped, and
-- memory bounded by default.
local H = require "support.dispatch_helpers"
local S = require "support.store_helpers"

describe("event seq at its limits", function()
  local app
  before_each(function()
    app = H.app([[ return luagent.config{ background_tasks = { enabled = true }, tools = { T.echo } } ]])
    app:wait(app:enqueue_tool("echo", { n = 1 }).task_id)
  end)
  after_each(function() app:close() end)

  it("a cursor at math.maxinteger has nothing after it", function()
    assert.same({}, app:events{ since = math.maxinteger })
    assert.same({}, app:events{ since = math.maxinteger - 1 })
  end)

  it("a negative cursor reads from the start without a gap marker", function()
    local all = app:events{ since = 0 }
    assert.is_true(#all > 0)
    assert.same(all, app:events{ since = math.mininteger })
    assert.same(all, app:events{ since = -1 })
  end)

  it("a store whose highest seq is near the limit never hands out a negative or repeated seq", function()
    if not S.have_sqlite3() then pending("needs the sqlite3 command") return end
    local dir = H.tmpdir()
    local db = dir .. "/seq.db"
    local cfg = [[ return luagent.config{ background_tasks = { enabled = true }, tools = { T.echo } } ]]
    local first = H.app(cfg, { store = { path = db } })
    first:wait(first:enqueue_tool("echo", {}).task_id)
    first:close()
    S.sql(db, string.format("UPDATE events SET seq = %d WHERE seq = (SELECT max(seq) FROM events);",
      math.maxinteger - 2))
    local logs = {}
    H.luagent.set_log(function(level, msg) logs[#logs + 1] = level .. ": " .. msg end)
    local again = H.app(cfg, { store = { path = db } })
    local ids = {}
    for i = 1, 3 do ids[i] = again:enqueue_tool("echo", { i = i }).task_id end
    local w = again:wait(ids, { timeout_s = 10 })
    assert.is_true(w.done)
    for _, t in ipairs(w.tasks) do assert.equal("completed", t.status) end
    local last = -1
    for _, ev in ipairs(again:events{ since = math.maxinteger - 10, limit = 100 }) do
      assert.is_true(ev.seq > last, "seq went back: " .. tostring(ev.seq))
      last = ev.seq
    end
    assert.equal(math.maxinteger - 1, last) -- the last seq there is
    again:poll()
    again:close()
    H.luagent.set_log(nil)
    H.rmdir(dir)
    local told = false
    for _, l in ipairs(logs) do told = told or l:find("seq reached its limit", 1, true) ~= nil end
    assert.is_true(told, table.concat(logs, "\n"))
  end)
end)
