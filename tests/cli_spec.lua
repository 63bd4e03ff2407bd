-- The `luagent` command and the game-loop example.
local function sh(cmd)
  -- keeps LD_PRELOAD: under make sanitize/tsan ./luagent/core.so is the instrumented build
  local p = io.popen("export LUA_PATH='./lua/?.lua;./lua/?/init.lua;;' LUA_CPATH='./?.so;;'; " ..
    cmd .. " 2>&1; echo \"exit=$?\"")
  local out = p:read("a")
  p:close()
  return out
end

local CONFIG = [[
local luagent = require "luagent"
local add = luagent.tool{ name = "add", input_schema = { type = "object",
  properties = { a = { type = "integer" }, b = { type = "integer" } }, required = { "a", "b" } },
  handler = function(args) return args.a + args.b end }
return luagent.config{
  model = luagent.function_model(function(req)
    local last = req.messages[#req.messages]
    if last.role == "user" and last.content:find("^add") then
      return { tool_calls = { { name = "add", arguments = { a = 2, b = 3 } } } }
    elseif last.role == "tool" then
      return { text = "sum: " .. luagent.json.decode(last.content).value }
    end
    return { text = "you said: " .. last.content .. " (" .. #req.messages .. " messages)" }
  end),
  agents = { luagent.agent{ id = "calc", tools = { add } } },
}]]

describe("luagent command", function()
  local dir, cfg
  setup(function()
    dir = os.tmpname()
    os.remove(dir)
    os.execute("mkdir -p " .. dir)
    cfg = dir .. "/calc.lua"
    local f = assert(io.open(cfg, "w"))
    f:write(CONFIG)
    f:close()
  end)
  teardown(function() os.execute("rm -rf " .. dir) end)

  it("run prints the final answer and exits 0", function()
    assert.equal("sum: 5\nexit=0\n", sh("lua5.4 bin/luagent run " .. cfg .. " calc add two numbers"))
  end)

  it("run --events prints the event stream on stderr and --json the AgentResult", function()
    local out = sh("lua5.4 bin/luagent run " .. cfg .. " calc add --events --json")
    assert.matches("tool_start calc add", out, 1, true)
    assert.matches('"status":"completed"', out, 1, true)
  end)

  it("chat keeps one thread across lines of stdin", function()
    local out = sh("printf 'hello\\nagain\\n' | lua5.4 bin/luagent chat " .. cfg .. " calc")
    assert.matches("you said: hello (2 messages)", out, 1, true)
    assert.matches("you said: again (4 messages)", out, 1, true)
    assert.matches("exit=0", out, 1, true)
  end)

  it("reports a bad config or agent with a non-zero exit", function()
    assert.matches("exit=1", sh("lua5.4 bin/luagent run /nonexistent.lua calc hi"), 1, true)
    local out = sh("lua5.4 bin/luagent run " .. cfg .. " calx hi")
    assert.matches('unknown agent "calx"', out, 1, true)
    assert.matches("exit=2", out, 1, true)
    assert.matches("usage: luagent", sh("lua5.4 bin/luagent"), 1, true)
    local chat = sh("echo hi | lua5.4 bin/luagent chat " .. cfg .. " calx")
    assert.matches('unknown agent "calx"', chat, 1, true)
    assert.is_nil(chat:find("stack traceback", 1, true))
    assert.matches("exit=2", chat, 1, true)
  end)
end)

describe("examples/game_loop.lua", function()
  it("answers the host tool between frames and finishes the job", function()
    local out = sh("lua5.4 examples/game_loop.lua")
    assert.matches("frame callback: nothing dangerous near", out, 1, true)
    assert.matches("exit=0", out, 1, true)
  end)
end)
