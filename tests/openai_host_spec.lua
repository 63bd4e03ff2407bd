-- R-6: while a foreground run waits on its model's HTTP, the host keeps
-- pumping: host tools called by background tasks are answered during the
-- wait, not after it, and news for the host wakes the HTTP wait at once.
local closing = require "support.closing"
local fake = require "support.fake_openai_client"
local H = require "support.fake_openai_app"

local SRC = [[
local where = luagent.host_tool{ name = "where", description = "Where the player is." }
return luagent.config{
  model = MODEL,
  background_tasks = { enabled = true },
  agents = {
    luagent.agent{ id = "fg", instructions = "Foreground." },
    luagent.agent{ id = "bg", instructions = "Background.", tools = { where },
      model = luagent.static_model{ responses = {
        { tool_calls = { { id = "call_w", name = "where", arguments = {} } } },
        { text = "the player is at 1,2" } } } },
  },
} ]]

describe("openai adapter: the host pumps during a foreground HTTP wait", function()
  local srv
  setup(function() srv = fake.start() end)
  teardown(function() srv:stop() end)
  before_each(function() srv:reset() end)

  for _, stream in ipairs({ false, true }) do
    it("answers a background task's host tool while app:run waits (stream = " .. tostring(stream) .. ")",
      function()
        local S = { in_run = false, calls = {} }
        local app = closing(H.app(srv, { stream = stream }, SRC, S))
        app:host_tool("where", function(_, info)
          S.calls[#S.calls + 1] = { in_run = S.in_run, at = H.now(), task_id = info.task_id }
          return { x = 1, y = 2 }
        end)
        srv:script{ { text = "foreground answer", delay_ms = 300 } }
        local rec = app:enqueue_background("bg", "where?", { timeout_s = 30 })
        -- the task is blocked on its host call: nobody has pumped yet
        assert.truthy(H.wait_stats(app, function(s) return s.host_calls_pending >= 1 end, 10),
          "the background task never called the host")
        S.in_run = true
        local t0 = H.now()
        local res = app:run("fg", "hello")
        S.in_run = false
        assert.equal("completed", res.status)
        assert.equal("foreground answer", res.final)
        assert.equal(1, #S.calls)
        assert.is_true(S.calls[1].in_run)
        assert.equal(rec.task_id, S.calls[1].task_id)
        -- answered at the start of the wait, not at the end of a poll period
        assert.is_true(S.calls[1].at - t0 < 0.2, "answered after " .. (S.calls[1].at - t0) .. " s")
        -- and the task finished before the foreground run returned
        local got = app:get(rec.task_id)
        assert.equal("completed", got.status)
        assert.equal("the player is at 1,2", got.result.final)
      end)
  end

  it("wakes the HTTP wait at once when host work arrives in the middle of it", function()
    local S = { calls = {} }
    local app = closing(H.app(srv, { stream = false }, [[
      local core = require "luagent.core"
      local where = luagent.host_tool{ name = "where", description = "Where." }
      local spawn = luagent.tool{ name = "spawn", description = "Start the background agent.",
        handler = function(_, ctx) return ctx:enqueue_background("bg", "where?").task_id end }
      return luagent.config{
        model = MODEL,
        background_tasks = { enabled = true },
        agents = {
          luagent.agent{ id = "fg", instructions = "Foreground.", tools = { spawn } },
          luagent.agent{ id = "bg", instructions = "Background.", tools = { where },
            model = luagent.function_model(function(request, ctx)
              if request.messages[#request.messages].role == "tool" then return { text = "done" } end
              -- when the host call is about to be queued (monotonic clock)
              ctx:emit("calling_host", { at = core.now() })
              return { tool_calls = { { id = "call_w", name = "where", arguments = {} } } }
            end) },
        },
      } ]], S))
    app:host_tool("where", function()
      S.calls[#S.calls + 1] = H.now()
      return "here"
    end)
    -- the first reply spawns the background task, the second is slow: the
    -- host call arrives while the foreground run is inside that wait
    srv:script{
      { tool_calls = { { id = "call_s", name = "spawn", arguments = {} } } },
      { text = "foreground done", delay_ms = 1000 },
    }
    local t0 = H.now()
    local res = app:run("fg", "go")
    local total = H.now() - t0
    assert.equal("completed", res.status)
    assert.equal(1, #S.calls)
    local mark = H.of_kind(H.events(app), "calling_host")[1]
    assert.truthy(mark)
    -- answered long before the slow reply came back, and right after the
    -- worker queued the call: the wait was woken, not polled
    assert.is_true(S.calls[1] - t0 < total - 0.5, string.format("answered at %.3f of %.3f s",
      S.calls[1] - t0, total))
    local latency = S.calls[1] - mark.payload.at
    assert.is_true(latency >= 0 and latency < 0.25, string.format("answered %.3f s after the call", latency))
    local id = H.json.decode(res.messages[4].content).value
    assert.equal("completed", app:get(id).status)
  end)
end)
