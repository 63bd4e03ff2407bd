-- Background tasks, acceptance: `make demo` offline. examples/demo.lua with
-- no OPENAI_API_KEY and no OPENAI_BASE_URL uses the scripted model, shows
-- the fan-out as it happens, then the summary, the task tree as a table
-- and a timeline page, all drawn by the library (luagent.live, luagent.trace).
-- The demo loads ./luagent/core.so; under `make sanitize` / `make tsan` the
-- specs load an instrumented build instead, and the demo must use that one.
local LUA = require("support.lua_bin").lua
local function preload()
  local path = package.searchpath("luagent.core", package.cpath)
  if not path or path:gsub("^%./", "") == "luagent/core.so" then return "" end
  local dir = path:match("^(.*)/luagent/core%.so$")
  if not dir then return "" end
  return string.format("-e \"package.cpath = '%s/?.so;' .. package.cpath; require 'luagent.core'\" ", dir)
end

local function run_demo()
  local cmd = "env -u OPENAI_API_KEY -u OPENAI_BASE_URL -u OPENAI_MODEL " .. LUA .. " " .. preload() ..
    "examples/demo.lua 2>/tmp/bg_demo_stderr.$$; " ..
    "echo \"rc=$?\"; cat /tmp/bg_demo_stderr.$$ | sed 's/^/stderr: /'; rm -f /tmp/bg_demo_stderr.$$"
  local p = assert(io.popen(cmd, "r"))
  local out = p:read("*a")
  p:close()
  return out
end

local function lines(text)
  local out = {}
  for l in text:gmatch("([^\n]*)\n") do out[#out + 1] = l end
  return out
end

describe("bg demo (make demo)", function()
  it("runs offline: scripted-model notice, three researchers started, the summary, the task tree and its timeline", function()
    local out = run_demo()
    local ls = lines(out)
    assert.truthy(out:find("\nrc=0\n", 1, true), out)
    assert.is_nil(out:find("stderr: ", 1, true), out)
    assert.equal("No OPENAI_API_KEY or OPENAI_BASE_URL: using a scripted model (no network).", ls[1])
    assert.truthy(out:find("Question: Compare Lua and Python for embedding in a game engine.", 1, true))

    -- the fan-out: three researcher runs start, one level below the supervisor
    local started, finished, sup_started, waiting = 0, 0, 0, 0
    local last_researcher_start, sup_waiting, sup_resumed
    for i, l in ipairs(ls) do
      if l:find("^%[%s*[%d%.]+s%] started%s+researcher tsk_") then
        started = started + 1
        last_researcher_start = i
        assert.truthy(l:find("started    researcher", 1, true), l) -- indented: depth 1
      end
      if l:find("finished%s+researcher tsk_%S+ completed$") then finished = finished + 1 end
      if l:find("started  supervisor tsk_", 1, true) then sup_started = sup_started + 1 end
      if l:find("waiting  supervisor tsk_", 1, true) then
        waiting = waiting + 1
        sup_waiting = i
      end
      if l:find("resumed  supervisor tsk_", 1, true) then sup_resumed = i end
    end
    assert.equal(3, started, out)
    assert.equal(3, finished, out)
    assert.equal(1, sup_started, out)
    assert.equal(1, waiting, out)
    -- the supervisor waited (bg_wait) for all three and then went on
    assert.truthy(sup_resumed and sup_waiting < sup_resumed, out)
    assert.truthy(last_researcher_start < sup_resumed, out)

    -- the summary uses every researcher's note
    assert.truthy(out:find("\nSummary of 3 research notes:\n", 1, true), out)
    assert.truthy(out:find("- Lua's C API is small and stable", 1, true), out)
    assert.truthy(out:find("- Lua starts in microseconds", 1, true), out)
    assert.truthy(out:find("- Python has far more libraries", 1, true), out)

    -- the task tree as the library draws it: a header and one completed
    -- row per task, the researchers under the supervisor
    local header
    for i, l in ipairs(ls) do
      if l:find("^task%s+status%s+agent%s+elapsed%s+tokens%s+cost$") then header = i end
    end
    assert.truthy(header, out)
    local rows, researchers, supervisors = 0, 0, 0
    for i = header + 1, #ls do
      local indent, name, status, agent, secs, tokens, cost =
        ls[i]:match("^(%s*)(%S+) %w+%s+(%S+)%s+(%S+)%s+([%d%.]+)s%s+(%d+)%s+(%S+)$")
      if name then
        rows = rows + 1
        assert.equal("completed", status, ls[i])
        assert.truthy(tonumber(secs) >= 0)
        assert.truthy(cost:find("%$"), ls[i])
        if agent == "researcher" then
          researchers = researchers + 1
          assert.equal("research", name)
          assert.equal("  ", indent)
        elseif agent == "supervisor" then
          supervisors = supervisors + 1
          assert.equal("", indent)
          assert.equal(880 + 3 * 85, tonumber(tokens)) -- its own calls and its researchers'
        end
      end
    end
    assert.equal(4, rows, out)
    assert.equal(3, researchers)
    assert.equal(1, supervisors)

    -- and the timeline page
    assert.truthy(out:find("\nTimeline: build/demo_trace.html\n", 1, true), out)
    local f = assert(io.open("build/demo_trace.html"))
    local html = f:read("*a")
    f:close()
    local n = 0
    for _ in html:gmatch('<g class="task"') do n = n + 1 end
    assert.equal(4, n)
  end)
end)
