-- The `luagent` command: conventions (help, version, exit codes, stderr),
-- run and chat, the plain output without a terminal, and the store
-- commands (tasks, show, events, trace). The terminal view and Ctrl-C are
-- in cli_live_spec.lua, the trace picture in trace_html_spec.lua.
local LUA = require("support.lua_bin").lua
local C = require "support.cli_helpers"
local json = require "luagent.json"

local CONFIG = [[
local luagent = require "luagent"
local add = luagent.tool{ name = "add", input_schema = { type = "object",
  properties = { a = { type = "integer" }, b = { type = "integer" } }, required = { "a", "b" } },
  handler = function(args) return args.a + args.b end }
local slow = luagent.tool{ name = "slow", background = { enabled = true },
  handler = function(_, ctx) ctx:sleep(30) return "late" end }
return luagent.config{
  background_tasks = { enabled = true },
  pricing = { ["function"] = { input_per_mtok = 1, output_per_mtok = 1 } },
  model = luagent.function_model(function(req)
    local last = req.messages[#req.messages]
    if last.role == "user" and last.content:find("^add") then
      return { tool_calls = { { name = "add", arguments = { a = 2, b = 3 } } } }
    elseif last.role == "user" and last.content:find("^leave") then
      return { tool_calls = { { name = "slow", arguments = {} }, { name = "slow", arguments = {} } } }
    elseif last.role == "user" and last.content:find("^break") then
      error({ kind = "model", message = "the model is broken" })
    elseif last.role == "tool" then
      return { text = "sum: " .. tostring(luagent.json.decode(last.content).value) }
    end
    return { text = "you said: " .. last.content .. " (" .. #req.messages .. " messages)" }
  end),
  agents = { luagent.agent{ id = "calc", tools = { add, slow } } },
}]]

describe("luagent command", function()
  local dir, cfg
  setup(function()
    dir = C.tmpdir()
    cfg = C.write(dir .. "/calc.lua", CONFIG)
  end)
  teardown(function() C.cleanup(dir) end)

  it("--help and -h print the help on stdout and exit 0, for commands too", function()
    for _, args in ipairs({ "--help", "-h", "run --help", "trace -h" }) do
      local r = C.luagent(args)
      assert.equal(0, r.code, args)
      assert.equal("", r.err, args)
      assert.matches("Usage: luagent", r.out, 1, true)
    end
    local top = C.luagent("--help").out
    for _, cmd in ipairs({ "run", "chat", "tasks", "show", "events", "trace" }) do
      assert.matches("\n   " .. cmd .. " ", top, 1, true)
    end
    assert.matches("--base-url", C.luagent("run --help").out, 1, true)
  end)

  it("--version and version print the version on stdout", function()
    for _, args in ipairs({ "--version", "version" }) do
      local r = C.luagent(args)
      assert.equal(0, r.code)
      assert.equal("luagent " .. require("luagent").version .. "\n", r.out)
      assert.equal("", r.err)
    end
  end)

  it("an unknown command, a missing argument or no command is a usage error (2) on stderr", function()
    local r = C.luagent("frobnicate x")
    assert.equal(2, r.code)
    assert.equal("", r.out)
    assert.matches("unknown command 'frobnicate'", r.err, 1, true)
    r = C.luagent("run " .. cfg)
    assert.equal(2, r.code)
    assert.matches("missing argument", r.err, 1, true)
    assert.equal(2, C.luagent("").code)
    r = C.luagent("tasks x.db --status bogus")
    assert.equal(2, r.code)
    assert.matches("--status", r.err, 1, true)
  end)

  it("run prints the final answer on stdout and exits 0", function()
    local r = C.luagent("run " .. cfg .. " calc add two numbers")
    assert.equal(0, r.code, r.err)
    assert.equal("sum: 5\n", r.out)
  end)

  it("failures go to stderr with a non-zero exit: a failed run (1), a bad config (1), a bad agent (2)", function()
    local r = C.luagent("run " .. cfg .. " calc break it")
    assert.equal(1, r.code)
    assert.equal("", r.out)
    assert.matches("run failed: the model is broken", r.err, 1, true)
    r = C.luagent("run /nonexistent.lua calc hi")
    assert.equal(1, r.code)
    assert.equal("", r.out)
    assert.matches("cannot open /nonexistent.lua", r.err, 1, true)
    r = C.luagent("run " .. cfg .. " calx hi")
    assert.equal(2, r.code)
    assert.matches('unknown agent "calx"', r.err, 1, true)
    assert.is_nil(r.err:find("stack traceback", 1, true))
  end)

  it("without a terminal the output is plain lines: the answer on stdout, task events on stderr", function()
    local r = C.luagent("run " .. cfg .. " calc leave two tasks")
    assert.equal(0, r.code, r.err)
    assert.is_nil(r.out:find("\27", 1, true))
    assert.is_nil(r.err:find("\27", 1, true))
    local queued, started = 0, 0
    for _, l in ipairs(C.lines(r.err)) do
      if l:find("^%[%s*[%d.]+s%] queued%s+calc tsk_") then queued = queued + 1 end
      if l:find("^%[%s*[%d.]+s%] started%s+calc tsk_") then started = started + 1 end
    end
    assert.equal(2, queued, r.err)
    assert.equal(2, started, r.err)
    -- the children end with the run, and the command says so
    assert.matches("2 background tasks cancelled\n", r.err, 1, true)
  end)

  it("--events prints every event as a JSON line on stdout; --json the AgentResult", function()
    local r = C.luagent("run " .. cfg .. " calc add --events --json")
    assert.equal(0, r.code, r.err)
    local lines = C.lines(r.out)
    local kinds = {}
    for i = 1, #lines - 1 do
      local ev = json.decode(lines[i])
      kinds[#kinds + 1] = ev.kind
      assert.is_number(ev.t)
    end
    assert.same({ "lm_call_start", "lm_call", "tool_start", "tool_end", "step", "lm_call_start",
      "lm_call", "step", "final" }, kinds)
    local res = json.decode(lines[#lines])
    assert.equal("completed", res.status)
    assert.equal("sum: 5", res.final)
  end)

  it("chat keeps one thread across lines of stdin", function()
    local r = C.luagent("chat " .. cfg .. " calc", "hello\nagain\n")
    assert.equal(0, r.code, r.err)
    assert.matches("you said: hello (2 messages)", r.out, 1, true)
    assert.matches("you said: again (4 messages)", r.out, 1, true)
    r = C.luagent("chat " .. cfg .. " calx", "hi\n")
    assert.equal(2, r.code)
    assert.matches('unknown agent "calx"', r.err, 1, true)
  end)

  it("tasks, show, events and trace read a store the run left", function()
    local db = dir .. "/run.db"
    local r = C.luagent("run " .. cfg .. " calc leave two tasks --store " .. db)
    assert.equal(0, r.code, r.err)
    r = C.luagent("tasks " .. db)
    assert.equal(0, r.code, r.err)
    local ids = {}
    for id in r.out:gmatch("(tsk_%S+)%s+cancelled") do ids[#ids + 1] = id end
    assert.equal(2, #ids, r.out)
    assert.equal("", C.luagent("tasks " .. db .. " --status completed").out:gsub("^[^\n]*\n", ""))
    local recs = C.lines(C.luagent("tasks " .. db .. " --json").out)
    assert.equal(2, #recs)
    assert.equal("slow", json.decode(recs[1]).tool)

    r = C.luagent("show " .. db .. " " .. ids[1])
    assert.equal(0, r.code, r.err)
    assert.matches("status%s+cancelled", r.out)
    assert.matches("\ntree:\n" .. ids[1], r.out, 1, true)
    assert.matches("task_finished", r.out, 1, true)
    local shown = json.decode(C.luagent("show " .. db .. " " .. ids[1] .. " --json").out)
    assert.equal(ids[1], shown.record.task_id)
    assert.equal(ids[1], shown.tree.task_id)
    r = C.luagent("show " .. db .. " tsk_nope")
    assert.equal(1, r.code)
    assert.matches("no task tsk_nope", r.err, 1, true)

    r = C.luagent("events " .. db .. " --task " .. ids[1] .. " --json")
    local kinds = {}
    for _, l in ipairs(C.lines(r.out)) do
      local ev = json.decode(l)
      assert.equal(ids[1], ev.task_id)
      kinds[#kinds + 1] = ev.kind
    end
    assert.same({ "task_enqueued", "task_started", "cancel_requested", "task_finished" }, kinds)
    assert.matches("final", C.luagent("events " .. db).out, 1, true)

    r = C.luagent("trace " .. db .. " --svg " .. dir .. "/t.svg")
    assert.equal(0, r.code, r.err)
    local svg = C.read_file(dir .. "/t.svg")
    assert.matches('^<svg xmlns="http://www.w3.org/2000/svg"', svg)
    local rows = 0
    for _ in svg:gmatch('<g class="task"') do rows = rows + 1 end
    assert.equal(3, rows) -- the foreground run and its two tasks
    assert.equal(2, C.luagent("trace " .. db).code)
    r = C.luagent("tasks " .. dir .. "/missing.db")
    assert.equal(1, r.code)
    assert.matches("no such file", r.err, 1, true)
  end)

  it("events --follow prints events as another process writes them, until interrupted (130)", function()
    local db = dir .. "/follow.db"
    assert.equal(0, C.luagent("run " .. cfg .. " calc add --store " .. db).code)
    -- the follower reads without a lock, so a second run can write meanwhile
    -- (--foreground: timeout hands our one SIGINT to the command alone;
    -- without it timeout also signals its process group, so the command
    -- gets a second SIGINT while its first is being handled and dies of it)
    local follow = "echo $$; exec timeout --foreground -s INT 30 " .. LUA .. " bin/luagent events " .. db ..
      " --follow --json"
    -- its exit status echoed (5.1's and LuaJIT's close of a pipe do not give it)
    local p = io.popen("export LUA_PATH='./lua/?.lua;./lua/?/init.lua;;' LUA_CPATH='./?.so;;'; " ..
      "sh -c " .. C.quote(follow) .. "; echo \"exit=$?\"")
    local pid = p:read("*l")
    local finals, second = 0, false
    for line in p:lines() do
      local ev = json.decode(line)
      if ev.kind == "final" then
        finals = finals + 1
        if finals == 1 then
          second = C.luagent("run " .. cfg .. " calc again --store " .. db).code == 0
        else
          assert.equal("you said: again (2 messages)", ev.payload.text)
          break
        end
      end
    end
    assert.is_true(second)
    assert.equal(2, finals)
    os.execute("kill -INT " .. pid)
    local rest = p:read("*a")
    p:close()
    assert.equal(130, tonumber(rest:match("exit=(%d+)")))
  end)
end)

describe("luagent run flags for the model", function()
  local fake = require "support.fake_openai_client"
  local srv, dir, cfg
  setup(function()
    srv = fake.start()
    dir = C.tmpdir()
    -- a model pointed nowhere: the flags point it at the fake server
    cfg = C.write(dir .. "/remote.lua", [[
      local luagent = require "luagent"
      return luagent.config{
        model = luagent.openai{ model = "configured", base_url = "http://127.0.0.1:9/v1",
          api_key = "sk-test", max_retries = 0 },
        agents = { luagent.agent{ id = "a" } } } ]])
  end)
  teardown(function()
    srv:stop()
    C.cleanup(dir)
  end)

  it("--base-url and --model set the endpoint and name of the config's openai model", function()
    srv:script{ { text = "hello from the server" } }
    local r = C.luagent("run " .. cfg .. " a hi --base-url " .. srv.url .. " --model picked")
    assert.equal(0, r.code, r.err)
    assert.equal("hello from the server\n", r.out)
    assert.equal("picked", srv:last_request().json.model)
  end)

  it("--timeout stops the run: exit 1, the reason on stderr", function()
    srv:script{ { text = "too late", delay_ms = 5000 } }
    local r = C.luagent("run " .. cfg .. " a hi --base-url " .. srv.url .. " --timeout 0.3")
    assert.equal(1, r.code)
    assert.equal("", r.out)
    assert.matches("run timed_out", r.err, 1, true)
  end)
end)

describe("examples/game_loop.lua", function()
  it("answers the host tool between frames and finishes the job", function()
    local p = io.popen("export LUA_PATH='./lua/?.lua;./lua/?/init.lua;;' LUA_CPATH='./?.so;;'; " ..
      LUA .. " examples/game_loop.lua 2>&1; echo \"exit=$?\"")
    local out = p:read("*a")
    p:close()
    assert.matches("frame callback: nothing dangerous near", out, 1, true)
    assert.matches("exit=0", out, 1, true)
  end)
end)
