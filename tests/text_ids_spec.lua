-- Ids are text without NUL: thread ids, agent ids, task ids, tool names and
-- metadata keys that hold a NUL byte or are not valid UTF-8 are refused at
-- the public API with an error naming the function. The C core never cuts
-- a string at a NUL: it refuses one (so a task started in thread
-- "victim\0x" can never land in thread "victim").
local closing = require "support.closing"
local R = require "support.runtime_helpers"
local fake = require "support.fake_openai_client"
local H = require "support.fake_openai_app"

local CONFIG = [[
  local job = luagent.tool{ name = "job", description = "Waits to be cancelled.",
    background = { enabled = true },
    handler = function(args, ctx) ctx:sleep(30) end }
  local probe = luagent.tool{ name = "probe", description = "Tries ctx calls with bad ids.",
    handler = function(args, ctx)
      local out = {}
      local function try(name, f)
        local ok, err = pcall(f)
        out[name] = ok and "accepted" or tostring(type(err) == "table" and err.message or err)
      end
      try("enqueue_tool_thread", function() return ctx:enqueue_tool("job", {}, { thread_id = "victim\0x" }) end)
      try("enqueue_tool_name", function() return ctx:enqueue_tool("job\0x", {}) end)
      try("enqueue_background_thread", function()
        return ctx:enqueue_background("a", "p", { thread_id = "t\255" }) end)
      try("enqueue_background_prompt", function() return ctx:enqueue_background("a", "p\0q") end)
      try("enqueue_metadata", function()
        return ctx:enqueue_tool("job", {}, { metadata = { ["k\0"] = 1 } }) end)
      try("run_agent_thread", function() return ctx:run_agent("a", "p", { thread_id = "t\0" }) end)
      try("wait", function() return ctx:wait({ "tsk\0x" }, { timeout_s = 0 }) end)
      try("emit", function() return ctx:emit("kind\0x", {}) end)
      return out
    end }
  return luagent.config{
    model = luagent.static_model{ responses = {
      { tool_calls = { { id = "l", name = "bg_list", arguments = { include_finished = true } } } }, "ok" } },
    background_tasks = { enabled = true },
    agents = { luagent.agent{ id = "a", tools = { job, probe } } },
    tools = { luagent.host_tool{ name = "pos" } },
  } ]]

-- The error message of f(...), which must raise.
local function refused(f, ...)
  local ok, err = pcall(f, ...)
  assert.is_false(ok, "expected a refusal")
  return type(err) == "table" and tostring(err.message) or tostring(err)
end

local function assert_refused(where, what, f, ...)
  local msg = refused(f, ...)
  assert.matches(where, msg, 1, true)
  assert.matches(what, msg, 1, true)
  assert.truthy(msg:find("NUL", 1, true) or msg:find("UTF-8", 1, true), msg)
  assert.is_nil(msg:find("%.lua:%d+"), "the error names an internal file: " .. msg)
end

describe("ids are text without NUL", function()
  local app
  before_each(function() app = R.app(CONFIG) end)
  after_each(function() app:close{ mode = "cancel", grace_s = 1 } end)

  it("a task cannot be started in thread \"victim\\0x\", so thread \"victim\" never sees it", function()
    local tried = {
      tool = { pcall(app.enqueue_tool, app, "job", {}, { thread_id = "victim\0x" }) },
      agent = { pcall(app.enqueue_background, app, "a", "p", { thread_id = "victim\0x" }) },
    }
    -- whatever happened, thread "victim" sees nothing and can cancel nothing
    assert.same({}, app:list{ thread_id = "victim" })
    local res = app:run("a", "list", { thread_id = "victim" })
    local listed = R.tool_results(res.messages)[1]
    assert.is_true(listed.ok)
    assert.same({}, listed.value.tasks)
    -- because both were refused, naming the function and the option
    for what, where in pairs({ tool = "app:enqueue_tool", agent = "app:enqueue_background" }) do
      assert.is_false(tried[what][1], what .. " was accepted")
      local msg = tostring(tried[what][2])
      assert.matches(where .. ': option "thread_id" must not contain a NUL byte', msg, 1, true)
    end
    assert.same({}, app:list{})
  end)

  it("every public function that takes an id refuses a NUL or invalid UTF-8, naming itself", function()
    local rec = app:enqueue_tool("job", {}, { thread_id = "t1", agent_id = "A" })
    local id = rec.task_id
    assert_refused("app:enqueue_tool", "name", app.enqueue_tool, app, "job\0x", {})
    assert_refused("app:enqueue_tool", "agent_id", app.enqueue_tool, app, "job", {}, { agent_id = "A\0" })
    assert_refused("app:enqueue_tool", "metadata", app.enqueue_tool, app, "job", {},
      { metadata = { ["k\0"] = 1 } })
    assert_refused("app:enqueue_tool", "metadata", app.enqueue_tool, app, "job", {},
      { metadata = { deep = { ["\255"] = 1 } } })
    assert_refused("app:enqueue_background", "agent_id", app.enqueue_background, app, "a\0", "p")
    assert_refused("app:enqueue_background", "prompt", app.enqueue_background, app, "a", "p\0q")
    assert_refused("app:run", "thread_id", app.run, app, "a", "x", { thread_id = "t\0" })
    assert_refused("app:run", "agent_id", app.run, app, "a\0", "x")
    assert_refused("app:chat", "thread_id", app.chat, app, "a", "x", { thread_id = "t\255" })
    assert_refused("app:thread", "thread_id", app.thread, app, "a", "t1\0")
    assert_refused("app:thread", "agent_id", app.thread, app, "a\0", "t1")
    assert_refused("app:list", "thread_id", app.list, app, { thread_id = "t1\0" })
    assert_refused("app:list", "agent_id", app.list, app, { agent_id = "A\0" })
    assert_refused("app:list", "parent_task_id", app.list, app, { parent_task_id = id .. "\0" })
    assert_refused("app:get", "task_id", app.get, app, id .. "\0x")
    assert_refused("app:cancel", "id", app.cancel, app, id .. "\0x")
    assert_refused("app:wait", "task_ids[1]", app.wait, app, { id .. "\0x" }, { timeout_s = 0 })
    assert_refused("app:host_tool", "name", app.host_tool, app, "pos\0", function() end)
    -- the real task was not touched by any of it
    assert.truthy(({ queued = true, running = true })[app:get(id).status])
    assert.is_false(app:get(id).cancel_requested)
    assert.equal(1, #app:list{})
  end)

  it("ctx functions refuse them too, naming themselves", function()
    local rec = app:enqueue_tool("probe", {})
    local w = app:wait({ rec.task_id }, { timeout_s = 10 })
    assert.equal("completed", w.tasks[1].status)
    local out = w.tasks[1].result
    local function check(key, where, what)
      assert.matches(where, out[key], 1, true)
      assert.matches(what, out[key], 1, true)
    end
    check("enqueue_tool_thread", "ctx:enqueue_tool", "thread_id")
    check("enqueue_tool_name", "ctx:enqueue_tool", "name")
    check("enqueue_background_thread", "ctx:enqueue_background", "UTF-8")
    check("enqueue_background_prompt", "ctx:enqueue_background", "prompt")
    check("enqueue_metadata", "ctx:enqueue_tool", "metadata")
    check("run_agent_thread", "ctx:run_agent", "thread_id")
    check("wait", "ctx:wait", "task_ids[1]")
    check("emit", "ctx:emit", "kind")
    -- only the probe itself exists
    assert.equal(1, #app:list{})
  end)

  it("the C core refuses a NUL in a string rather than cutting it short", function()
    local rec = app:enqueue_tool("job", {}, { thread_id = "victim" })
    local core_app = app._core
    local function c_refused(f, ...)
      local msg = refused(f, ...)
      assert.matches("NUL", msg, 1, true)
    end
    c_refused(core_app.get, core_app, rec.task_id .. "\0x")
    c_refused(core_app.cancel, core_app, rec.task_id .. "\0x")
    c_refused(core_app.status, core_app, rec.task_id .. "\0x")
    c_refused(core_app.enqueue, core_app, { kind = "tool", tool = "job", agent_id = "host",
      thread_id = "victim\0x", args = "{}" })
    c_refused(core_app.list, core_app, { thread_id = "victim\0x", include_finished = true })
    c_refused(core_app.wait_begin, core_app, { rec.task_id .. "\0x" }, false)
    c_refused(R.core.realpath, "/tmp\0/etc")
    assert.equal(1, #app:list{})
    assert.is_false(app:get(rec.task_id).cancel_requested)
  end)

  it("a task id with a NUL from the model names no task (luagent.openai)", function()
    local srv = fake.start()
    local oapp = closing(H.simple(srv, {}, { tools = "{ luagent.tool{ name = 'job', background = { enabled = true }, " ..
      "handler = function(args, ctx) ctx:sleep(30) end } }" }))
    srv:script{
      { tool_calls = { { id = "j", name = "job", arguments = {} } } },
      { text = "started" },
    }
    local res = oapp:run("a", "start", { thread_id = "victim" })
    assert.equal("completed", res.status)
    local job_id = R.tool_results(res.messages)[1].value.task_id
    srv:script{
      { tool_calls = {
        { id = "c", name = "bg_check", arguments = '{"task_id":"' .. job_id .. '\\u0000x"}' },
        { id = "k", name = "bg_cancel", arguments = '{"task_id":"' .. job_id .. '\\u0000x"}' } } },
      { text = "done" },
    }
    res = oapp:run("a", "check", { thread_id = "victim" })
    local results = R.tool_results(res.messages)
    assert.equal("not_found", results[1].cause.kind)
    assert.equal("not_found", results[2].cause.kind)
    assert.is_false(oapp:get(job_id).cancel_requested)
    oapp:close{ mode = "cancel", grace_s = 1 }
    srv:stop()
  end)
end)
