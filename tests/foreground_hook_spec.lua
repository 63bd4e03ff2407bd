-- The cancel hook of foreground runs (R-23, R-6): a tool that spins in
-- `while true do end` inside a pcall still ends the run timed_out at its
-- timeout_s however luagent was loaded (here from string chunks, which name
-- no file) and when the host set its own debug hook, which keeps firing
-- during the run and is put back after it. Each case runs in a process of
-- its own, bounded by `timeout`, so a run that never ends fails the spec
-- instead of hanging the suite.
local LUA = require("support.lua_bin").lua
local fake = require "support.fake_openai_client"

local function run_child(how, hook, model)
  local cmd = string.format("timeout 20 %s tests/support/fg_hook_child.lua %s %s '%s' 2>&1; echo \"rc=$?\"",
    LUA, how, hook, model)
  local p = assert(io.popen(cmd, "r"))
  local out = p:read("*a")
  p:close()
  return out
end

local function check(out, hook)
  assert.truthy(out:match("rc=0\n$"), out)
  assert.equal("timed_out", out:match("status=(%S+)"), out)
  assert.equal("true", out:match("hook_back=(%S+)"), out)
  if hook == "hook" then
    assert.is_true(tonumber(out:match("hook_calls=(%d+)")) > 0, "the host's hook did not fire: " .. out)
  end
end

describe("foreground cancel hook", function()
  local srv
  setup(function() srv = fake.start() end)
  teardown(function() srv:stop() end)
  before_each(function() srv:reset() end)

  for _, case in ipairs({ { "strings", "nohook" }, { "files", "hook" }, { "strings", "hook" } }) do
    local how, hook = case[1], case[2]
    it(string.format("ends a spinning tool's run timed_out (luagent from %s, %s, scripted model)", how, hook), function()
      check(run_child(how, hook, "static"), hook)
    end)

    it(string.format("ends a spinning tool's run timed_out (luagent from %s, %s, luagent.openai)", how, hook), function()
      srv:script{ { tool_calls = { { id = "s", name = "spin", arguments = "{}" } } } }
      check(run_child(how, hook, srv.url), hook)
    end)
  end
end)
