-- Bundled plugins: luagent.plugin("shell"), luagent.plugin("fetch").
local closing = require "support.closing"
local luagent = require "luagent"

local function app_with(tool_src)
  return luagent.load_string(string.format([[
local luagent = require "luagent"
return luagent.config{
  background_tasks = { enabled = true },
  tools = { %s },
} ]], tool_src), "=plugins_cfg")
end

describe("plugin shell", function()
  it("runs a command in a worker and returns its exit code and output", function()
    local app = closing(app_with('luagent.plugin("shell", { timeout_s = 5 })'))
    local rec = app:enqueue_tool("shell", { command = "echo hello; exit 3" })
    local w = app:wait({ rec.task_id }, { timeout_s = 10 })
    assert.equal("completed", w.tasks[1].status)
    assert.same({ exit_code = 3, output = "hello\n" }, w.tasks[1].result)
  end)

  it("refuses commands outside its allow list and bounds a command by timeout_s", function()
    local app = closing(app_with('luagent.plugin("shell", { timeout_s = 0.3, allow = { "^sleep " } })'))
    local bad = app:enqueue_tool("shell", { command = "rm -rf /tmp/nothing" })
    local slow = app:enqueue_tool("shell", { command = "sleep 5" })
    local chained = app:enqueue_tool("shell", { command = "sleep 0; echo INJECTED" })
    local w = app:wait({ bad.task_id, slow.task_id, chained.task_id }, { timeout_s = 10 })
    assert.equal("failed", w.tasks[1].status)
    assert.matches("not allowed", w.tasks[1].error.message, 1, true)
    assert.equal("completed", w.tasks[2].status)
    assert.is_true(w.tasks[2].result.timed_out)
    assert.equal("failed", w.tasks[3].status)
    assert.matches("metacharacters", w.tasks[3].error.message, 1, true)
  end)

  it("rejects unknown options and unknown plugins at the call", function()
    assert.has_error(function() luagent.plugin("shell", { timeout = 1 }) end)
    local ok, err = pcall(luagent.plugin, "shel")
    assert.is_false(ok)
    assert.matches('did you mean "shell"', tostring(err), 1, true)
  end)
end)

describe("plugin fetch", function()
  local fake = require "support.fake_openai_client"
  it("GETs a URL through ctx:http and refuses hosts outside allow_hosts", function()
    local srv = fake.start()
    local app = closing(app_with('luagent.plugin("fetch", { allow_hosts = { "127.0.0.1" } })'))
    local ok = app:enqueue_tool("fetch", { url = srv.base .. "/_health" })
    local bad = app:enqueue_tool("fetch", { url = "http://example.invalid/" })
    local sneaky = app:enqueue_tool("fetch", { url = "http://127.0.0.1:x@example.invalid/" })
    local w = app:wait({ ok.task_id, bad.task_id, sneaky.task_id }, { timeout_s = 10 })
    srv:stop()
    assert.equal("completed", w.tasks[1].status)
    assert.equal(200, w.tasks[1].result.status)
    assert.equal("failed", w.tasks[2].status)
    assert.matches("host not allowed", w.tasks[2].error.message, 1, true)
    assert.equal("failed", w.tasks[3].status)
    assert.matches("user info", w.tasks[3].error.message, 1, true)
  end)

  it("cuts a body over max_bytes instead of failing", function()
    local srv = fake.start()
    local app = closing(app_with('luagent.plugin("fetch", { max_bytes = 1 })'))
    local r = app:enqueue_tool("fetch", { url = srv.base .. "/_health" })
    local w = app:wait({ r.task_id }, { timeout_s = 10 })
    srv:stop()
    assert.equal("completed", w.tasks[1].status)
    assert.equal("o", w.tasks[1].result.body)
    assert.is_true(w.tasks[1].result.truncated)
  end)
end)
