-- Idempotent enqueues (README, "Idempotent enqueues"): the same
-- idempotency_key in the same scope returns the existing task; a different
-- request under that key is refused with kind "conflict".
local closing = require "support.closing"
local luagent = require "luagent"

local CFG = [[
local luagent = require "luagent"
return luagent.config{
  background_tasks = { enabled = true },
  tools = { luagent.tool{ name = "echo", input_schema = { type = "object" },
    handler = function(args) return args.v end } },
  agents = { luagent.agent{ id = "a", instructions = "x",
    model = luagent.static_model{ responses = { "ok" } } } },
} ]]

local function tmp_db()
  local p = os.tmpname()
  os.remove(p)
  return p .. ".db"
end

describe("idempotency_key", function()
  it("two host enqueues with the same key return one task id", function()
    local app = closing(luagent.load_string(CFG, "=idem"))
    local a = app:enqueue_tool("echo", { v = 1 }, { idempotency_key = "job-1" })
    local b = app:enqueue_tool("echo", { v = 1 }, { idempotency_key = "job-1" })
    assert.equal(a.task_id, b.task_id)
    assert.equal("job-1", app:get(a.task_id).idempotency_key)
    local c = app:enqueue_tool("echo", { v = 1 }, { idempotency_key = "job-2" })
    assert.are_not.equal(a.task_id, c.task_id)
    local d = app:enqueue_background("a", "hi", { idempotency_key = "run-1" })
    local e = app:enqueue_background("a", "hi", { idempotency_key = "run-1" })
    assert.equal(d.task_id, e.task_id)
    app:wait({ a.task_id, c.task_id, d.task_id }, { timeout_s = 10 })
    -- also after it finished: the key names the finished task
    local f = app:enqueue_tool("echo", { v = 1 }, { idempotency_key = "job-1" })
    assert.equal(a.task_id, f.task_id)
    assert.equal("completed", f.status)
    assert.equal(3, #app:list{})
  end)

  it("a different request under a used key is refused with kind = conflict", function()
    local app = closing(luagent.load_string(CFG, "=idem"))
    local a = app:enqueue_tool("echo", { v = 1 }, { idempotency_key = "k" })
    local ok, err = pcall(app.enqueue_tool, app, "echo", { v = 2 }, { idempotency_key = "k" })
    assert.is_false(ok)
    assert.equal("conflict", err.kind)
    assert.matches(a.task_id, err.message, 1, true)
    ok, err = pcall(app.enqueue_background, app, "a", "hi", { idempotency_key = "k" })
    assert.is_false(ok)
    assert.equal("conflict", err.kind)
    -- options that do not make the request (timeout, priority, metadata) may differ
    local b = app:enqueue_tool("echo", { v = 1 }, { idempotency_key = "k", timeout_s = 9, priority = 3 })
    assert.equal(a.task_id, b.task_id)
    assert.has_error(function() app:enqueue_tool("echo", {}, { idempotency_key = 5 }) end)
  end)

  it("the key holds across a restart on the same file store", function()
    local path = tmp_db()
    local first
    do
      local app = closing(luagent.load_string(CFG, "=idem", { store = { path = path } }))
      first = app:enqueue_tool("echo", { v = 1 }, { idempotency_key = "durable" }).task_id
      app:wait({ first }, { timeout_s = 10 })
      app:close()
    end
    local app = closing(luagent.load_string(CFG, "=idem", { store = { path = path } }))
    assert.equal(first, app:enqueue_tool("echo", { v = 1 }, { idempotency_key = "durable" }).task_id)
    app:close()
    os.remove(path)
    os.remove(path .. "-wal")
    os.remove(path .. "-shm")
    os.remove(path .. ".lock")
  end)
end)
