-- Commands in their own process group (README, "Commands and process
-- groups"): the shell plugin and ctx:spawn kill the whole group — TERM, then
-- KILL after a grace period — when the task is cancelled, times out or the
-- command's own timeout passes, and the task's events say so. Process state
-- is read from /proc; waits are bounded polls of a condition.
local closing = require "support.closing"
local luagent = require "luagent"
local core = require "luagent.core"
local fake = require "support.fake_openai_client"
local H = require "support.fake_openai_app"

-- The non-zombie processes whose process group is g.
local function members(g)
  local out = {}
  local p = io.popen("ls /proc")
  for name in p:lines() do
    if name:match("^%d+$") then
      local f = io.open("/proc/" .. name .. "/stat")
      local line = f and f:read("*a")
      if f then f:close() end
      local state, _, pgrp = (line or ""):match("%) (%S) (%d+) (%d+)")
      if pgrp and tonumber(pgrp) == g and state ~= "Z" then out[#out + 1] = tonumber(name) end
    end
  end
  p:close()
  return out
end

local function tmpfile()
  local path = os.tmpname()
  os.remove(path)
  return path
end

-- Wait (pumping the app) until the file holds a pid and its group has n members.
local function started(app, path, n, ids)
  local deadline = core.now() + 10
  while core.now() < deadline do
    local f = io.open(path)
    local g = f and tonumber(f:read("*a"))
    if f then f:close() end
    if g and #members(g) >= n then return g end
    app:wait(ids, { timeout_s = 0.02 })
  end
  error("the command did not start")
end

local function killed_events(app, task_id)
  local out = {}
  for _, ev in ipairs(app:events{ since = 0, limit = 100000 }) do
    if ev.kind == "process_killed" and ev.task_id == task_id then out[#out + 1] = ev end
  end
  return out
end

local function shell_app(extra)
  return luagent.load_string(string.format([[
local luagent = require "luagent"
return luagent.config{
  background_tasks = { enabled = true, stop_grace_s = 5 },
  tools = { luagent.plugin("shell", { timeout_s = 60 %s }) },
} ]], extra or ""), "=procgroup_cfg")
end

local JOB = "echo $$ > %s; sleep 300 & sleep 300"

describe("process groups", function()
  it("a cancelled shell tool that started `sleep 300 & sleep 300` leaves no process behind", function()
    local app = closing(shell_app())
    local path = tmpfile()
    local rec = app:enqueue_tool("shell", { command = JOB:format(path) })
    local g = started(app, path, 3, { rec.task_id }) -- sh and two sleeps
    local r = app:cancel(rec.task_id)
    assert.equal("cancelled", r.status)
    local w = app:wait({ rec.task_id }, { timeout_s = 10 })
    assert.equal("cancelled", w.tasks[1].status)
    assert.same({}, members(g))
    local ev = killed_events(app, rec.task_id)
    assert.equal(1, #ev)
    assert.equal(g, ev[1].payload.pgid)
    assert.equal("TERM", ev[1].payload.signal)
    assert.equal("the run was stopped", ev[1].payload.reason)
    os.remove(path)
  end)

  it("kills the group at the task's deadline, and with KILL what ignores TERM", function()
    local app = closing(shell_app(", grace_s = 0.2"))
    local path = tmpfile()
    local rec = app:enqueue_tool("shell", {
      command = "echo $$ > " .. path .. "; sh -c 'trap \"\" TERM; sleep 300' & sleep 300" },
      { timeout_s = 1 })
    local g = started(app, path, 3, { rec.task_id })
    local w = app:wait({ rec.task_id }, { timeout_s = 10 })
    assert.equal("timed_out", w.tasks[1].status)
    assert.same({}, members(g))
    local ev = killed_events(app, rec.task_id)
    assert.equal(1, #ev)
    assert.equal("KILL", ev[1].payload.signal)
    os.remove(path)
  end)

  it("the command's own timeout kills its group and says so in the result", function()
    local app = closing(shell_app())
    local path = tmpfile()
    local tool_app = closing(luagent.load_string([[
local luagent = require "luagent"
return luagent.config{ background_tasks = { enabled = true },
  tools = { luagent.plugin("shell", { timeout_s = 0.3 }) } } ]], "=procgroup_t"))
    local rec = tool_app:enqueue_tool("shell", { command = JOB:format(path) })
    local w = tool_app:wait({ rec.task_id }, { timeout_s = 10 })
    assert.equal("completed", w.tasks[1].status)
    local res = w.tasks[1].result
    assert.equal(124, res.exit_code)
    assert.is_true(res.timed_out)
    assert.matches("killed %(TERM%): the command timed out", res.killed)
    local f = assert(io.open(path))
    local g = tonumber(f:read("*a"))
    f:close()
    assert.same({}, members(g))
    os.remove(path)
    app:close()
  end)

  it("what a finished command left running in its group is killed", function()
    local app = closing(shell_app())
    local path = tmpfile()
    local rec = app:enqueue_tool("shell", { command = "echo $$ > " .. path ..
      "; sleep 300 >/dev/null 2>&1 & echo done" })
    local w = app:wait({ rec.task_id }, { timeout_s = 10 })
    assert.equal("completed", w.tasks[1].status)
    assert.equal(0, w.tasks[1].result.exit_code)
    assert.equal("done\n", w.tasks[1].result.output)
    local f = assert(io.open(path))
    local g = tonumber(f:read("*a"))
    f:close()
    assert.same({}, members(g))
    assert.equal(1, #killed_events(app, rec.task_id))
    os.remove(path)
  end)

  it("ctx:spawn in a foreground run returns output and exit code; bad options raise", function()
    local app = closing(luagent.load_string([[
local luagent = require "luagent"
return luagent.config{
  model = luagent.function_model(function(req)
    if #req.messages < 3 then return { tool_calls = { { id = "c1", name = "run", arguments = {} } } } end
    return req.messages[#req.messages].content
  end),
  agents = { luagent.agent{ id = "a", instructions = "x", tools = {
    luagent.tool{ name = "run", input_schema = { type = "object" }, handler = function(_, ctx)
      local r = ctx:spawn{ cmd = "printf 'a\\nb'; exit 7", max_output_bytes = 2 }
      local ok, err = pcall(ctx.spawn, ctx, { cmd = "true", timout_s = 1 })
      return { code = r.exit_code, out = r.output, cut = r.truncated, err = tostring(err), ok = ok }
    end } } } },
} ]], "=procgroup_fg"))
    local res = app:run("a", "go")
    local v = luagent.json.decode(res.final)
    v = v.value
    assert.equal(7, v.code)
    assert.equal("a\n", v.out)
    assert.is_true(v.cut)
    assert.is_false(v.ok)
    assert.matches('did you mean "timeout_s"', v.err, 1, true)
  end)
end)

describe("process groups through luagent.openai", function()
  local srv
  setup(function() srv = fake.start() end)
  teardown(function() srv:stop() end)
  before_each(function() srv:reset() end)

  it("bg_cancel of a background shell call the model made leaves no process behind", function()
    local path = tmpfile()
    local app = closing(H.app(srv, {}, [[
      return luagent.config{
        model = MODEL,
        background_tasks = { enabled = true },
        agents = { luagent.agent{ id = "a", instructions = "x", tools = {
          luagent.plugin("shell", { timeout_s = 60, background = { enabled = true } }) } } },
      } ]]))
    srv:script{
      { tool_calls = { { id = "c1", name = "shell", arguments = { command = JOB:format(path) } } } },
      { text = "started", delay_ms = 0 },
    }
    local res = app:run("a", "go")
    assert.equal("completed", res.status)
    local task = app:list{}[1]
    assert.equal("shell", task.tool)
    local g = started(app, path, 3, { task.task_id })
    app:cancel(task.task_id)
    app:wait({ task.task_id }, { timeout_s = 10 })
    assert.same({}, members(g))
    assert.equal(1, #killed_events(app, task.task_id))
    os.remove(path)
  end)
end)
