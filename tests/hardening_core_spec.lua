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

-- Agents whose runs end budget_exceeded (one iteration, the model keeps
-- calling a tool), stopped (a should_stop hook) and completed. MODEL_OVER /
-- MODEL_TEXT are the models they use.
local RUN_STATUS_AGENTS = [[
  agents = {
    luagent.agent{ id = "over", instructions = "Call echo.", tools = { T.echo },
      model = MODEL_OVER, budget = { max_iterations = 1 } },
    luagent.agent{ id = "halted", instructions = "Say hi.", model = MODEL_TEXT,
      hooks = { should_stop = function() return "enough" end } },
    luagent.agent{ id = "fine", instructions = "Say hi.", model = MODEL_TEXT },
  },
]]

-- Runs one agent in the background and checks its record everywhere it is
-- read: app:get, app:list, app:wait's entries.
local function check_run_status(app, agent_id, want)
  local rec = app:enqueue_background(agent_id, "go", { timeout_s = 20 })
  assert.is_nil(rec.run_status) -- queued: no run has returned yet
  local w = app:wait(rec.task_id, { timeout_s = 20 })
  assert.is_true(w.done)
  assert.equal("completed", w.tasks[1].status) -- the run returned
  assert.equal(want, w.tasks[1].run_status)
  local got = app:get(rec.task_id)
  assert.equal("completed", got.status)
  assert.equal(want, got.run_status)
  assert.equal(want, got.result.status)
  for _, r in ipairs(app:list{ agent_id = agent_id }) do
    if r.task_id == rec.task_id then assert.equal(want, r.run_status) end
  end
  return rec.task_id
end

describe("the run status of a background agent run (run_status)", function()
  it("is in the record of runs that ended budget_exceeded, stopped or completed (scripted models)", function()
    local dir = H.tmpdir()
    local body = [[
      local MODEL_OVER = luagent.static_model{ responses = {
        { tool_calls = { { id = "c1", name = "echo", arguments = { n = 1 } } } },
        { tool_calls = { { id = "c2", name = "echo", arguments = { n = 2 } } } } } }
      local MODEL_TEXT = luagent.static_model{ responses = { "hi" } }
      return luagent.config{ background_tasks = { enabled = true }, ]] .. RUN_STATUS_AGENTS .. [[ } ]]
    local app = H.app(body, { store = { path = dir .. "/runs.db" } })
    local ids = {
      budget_exceeded = check_run_status(app, "over", "budget_exceeded"),
      stopped = check_run_status(app, "halted", "stopped"),
      completed = check_run_status(app, "fine", "completed"),
    }
    local job = app:enqueue_tool("echo", { n = 1 })
    app:wait(job.task_id)
    assert.is_nil(app:get(job.task_id).run_status) -- tool tasks have no run
    app:close()
    -- and it is stored: a new app on the file reads it back
    local again = H.app(body, { store = { path = dir .. "/runs.db" } })
    for want, id in pairs(ids) do
      assert.equal(want, again:get(id).run_status)
      assert.equal("completed", again:get(id).status)
    end
    again:close()
    H.rmdir(dir)
  end)

  describe("through luagent.openai against the fake server", function()
    local fake = require "support.fake_openai_client"
    local F = require "support.fake_openai_app"
    local srv
    setup(function() srv = fake.start() end)
    teardown(function() srv:stop() end)
    before_each(function() srv:reset() end)

    it("is budget_exceeded, stopped and completed", function()
      local app <close> = F.app(srv, {}, H.prelude .. [[
        local MODEL_OVER, MODEL_TEXT = MODEL, MODEL
        return luagent.config{ background_tasks = { enabled = true }, ]] .. RUN_STATUS_AGENTS .. [[ } ]])
      srv:script{ { tool_calls = { { name = "echo", arguments = { n = 1 } } } } }
      check_run_status(app, "over", "budget_exceeded")
      srv:script{ { text = "hi" } }
      check_run_status(app, "halted", "stopped")
      srv:script{ { text = "hi" } }
      check_run_status(app, "fine", "completed")
    end)
  end)
end)

-- Run `body` in a child lua5.4 (this module build, the dispatch helpers as
-- H) with `stdin_text` as its standard input. Returns what it printed, its
-- stderr and its exit code.
local function run_child(body, stdin_text)
  local dir = H.tmpdir()
  H.write(dir .. "/child.lua", [[
    package.path = "./lua/?.lua;./lua/?/init.lua;./tests/?.lua;" .. package.path
    package.cpath = ]] .. string.format("%q", package.cpath:match("^[^;]*")) .. [[ .. ";./?.so;" .. package.cpath
    local H = require "support.dispatch_helpers"
    io.stdout:setvbuf("line")
  ]] .. body)
  H.write(dir .. "/stdin", stdin_text or "")
  local p = io.popen(string.format("lua5.4 %s/child.lua <%s/stdin 2>%s/err; echo \"exit=$?\"", dir, dir, dir))
  local out = p:read("a")
  p:close()
  local err = S.read(dir .. "/err")
  H.rmdir(dir)
  return out, err, tonumber(out:match("exit=(%d+)%s*$"))
end

describe("worker states: what would end or stall the process is fenced", function()
  it("os.exit, os.setlocale, debug.debug and the host's stdin fail the task; the host goes on", function()
    local out, err, code = run_child([[
      local app = H.app([=[
        local function t(name, fn) return luagent.tool{ name = name, handler = fn } end
        return luagent.config{ background_tasks = { enabled = true, global_concurrency = 1 }, tools = {
          t("exit", function() os.exit(3) end),
          t("exit_true", function() os.exit(true, true) end),
          t("setlocale", function() os.setlocale("C") end),
          t("getlocale", function() return os.setlocale() end),
          t("debug", function() debug.debug() end),
          t("read", function() return io.read("l") end),
          t("lines", function() for l in io.lines() do return l end end),
          t("stdin", function() return io.stdin:read("l") end),
          t("input", function() return io.input():read("l") end),
          t("file", function()
            local path = os.tmpname()
            local f = assert(io.open(path, "w")) f:write("from a file\n") f:close()
            io.input(path)
            local l = io.read("l")
            io.input():close()
            os.remove(path)
            return l
          end),
          T.whoami } } ]=])
      local names = { "exit", "exit_true", "setlocale", "getlocale", "debug", "read", "lines", "stdin",
                      "input", "file", "whoami" }
      local ids = {}
      for i, n in ipairs(names) do ids[i] = app:enqueue_tool(n, {}, { timeout_s = 5 }).task_id end
      local w = app:wait(ids, { timeout_s = 20 })
      print("done", w.done)
      for i, t in ipairs(w.tasks) do
        print(names[i], t.status, t.error and t.error.kind or "-", t.error and t.error.message or
          tostring(t.result and (t.result.sid or t.result)))
      end
      app:close()
      print("host read", io.read("l"))
    ]], "host line\n")
    assert.equal(0, code, out .. err)
    assert.matches("done\ttrue", out, 1, true)
    local function line(name) return out:match("\n" .. name .. "\t([^\n]*)") or "" end
    for name, what in pairs({ exit = "os.exit", exit_true = "os.exit", setlocale = "os.setlocale",
                              debug = "debug.debug", read = "io.read on standard input",
                              lines = "io.lines() on standard input", stdin = "io.stdin",
                              input = "io.stdin" }) do
      assert.matches("^failed\truntime\t" .. what:gsub("%p", "%%%0") .. " is not allowed in a task",
        line(name), nil, name .. ": " .. line(name))
    end
    assert.matches("^completed", line("getlocale"))
    assert.matches("^completed\t%-\tfrom a file", line("file"))
    assert.matches("^completed", line("whoami"))
    -- nothing in a worker read the host's standard input
    assert.matches("host read\thost line", out, 1, true)
  end)
end)
