-- Background tasks, acceptance: `make demo` offline. examples/demo.lua with
-- no OPENAI_API_KEY and no OPENAI_BASE_URL uses the scripted model, shows
-- the fan-out as it happens, then the summary and a table of the tasks.
-- The demo loads ./luagent/core.so; under `make sanitize` / `make tsan` the
-- specs load an instrumented build instead, and the demo must use that one.
local function preload()
  local path = package.searchpath("luagent.core", package.cpath)
  if not path or path:gsub("^%./", "") == "luagent/core.so" then return "" end
  local dir = path:match("^(.*)/luagent/core%.so$")
  if not dir then return "" end
  return string.format("-e \"package.cpath = '%s/?.so;' .. package.cpath; require 'luagent.core'\" ", dir)
end

local function run_demo()
  local cmd = "env -u OPENAI_API_KEY -u OPENAI_BASE_URL -u OPENAI_MODEL lua5.4 " .. preload() ..
    "examples/demo.lua 2>/tmp/bg_demo_stderr.$$; " ..
    "echo \"rc=$?\"; cat /tmp/bg_demo_stderr.$$ | sed 's/^/stderr: /'; rm -f /tmp/bg_demo_stderr.$$"
  local p = assert(io.popen(cmd, "r"))
  local out = p:read("a")
  p:close()
  return out
end

local function lines(text)
  local out = {}
  for l in text:gmatch("([^\n]*)\n") do out[#out + 1] = l end
  return out
end

describe("bg demo (make demo)", function()
  it("runs offline: scripted-model notice, three researchers started, the summary, a table of completed tasks", function()
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
      if l:find("^%s*[%d%.]+s%s+#%d+%s+task_started%s+researcher") then
        started = started + 1
        last_researcher_start = i
        assert.truthy(l:find("#%d+%s%s%s*task_started"), l)
      end
      if l:find("task_finished%s+researcher%s+completed") then finished = finished + 1 end
      if l:find("task_started%s+supervisor") then sup_started = sup_started + 1 end
      if l:find("task_waiting%s+supervisor") then
        waiting = waiting + 1
        sup_waiting = i
      end
      if l:find("task_resumed%s+supervisor") then sup_resumed = i end
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

    -- the task table: a header and one completed row per task
    local header
    for i, l in ipairs(ls) do
      if l:find("^task%s+agent%s+kind%s+status%s+time$") then header = i end
    end
    assert.truthy(header, out)
    local rows, researchers, supervisors = 0, 0, 0
    for i = header + 1, #ls do
      local id, agent, kind, status, secs = ls[i]:match("^(tsk_[%w_%-]+)%s+(%S+)%s+(%S+)%s+(%S+)%s+([%d%.]+)s$")
      if id then
        rows = rows + 1
        assert.equal("completed", status, ls[i])
        assert.truthy(tonumber(secs) >= 0)
        if agent == "researcher" then
          researchers = researchers + 1
          assert.equal("research", kind)
        elseif agent == "supervisor" then
          supervisors = supervisors + 1
        end
      end
    end
    assert.equal(4, rows, out)
    assert.equal(3, researchers)
    assert.equal(1, supervisors)
  end)
end)
