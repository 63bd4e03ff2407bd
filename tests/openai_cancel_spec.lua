-- Cancellation and timeouts of model calls in flight (R-23, R-6, README):
-- a stalled stream is aborted at once by app:cancel, by a task's deadline,
-- by a foreground run's timeout or cancel, and by the model's own timeout_s.
local closing = require "support.closing"
local fake = require "support.fake_openai_client"
local H = require "support.fake_openai_app"

describe("openai adapter: cancel and timeouts", function()
  local srv
  setup(function() srv = fake.start() end)
  teardown(function() srv:stop() end)
  before_each(function() srv:reset() end)

  local function first_token(app, task_id)
    return H.wait_event(app, function(ev) return ev.kind == "token" and ev.task_id == task_id end,
      10, { task_id })
  end

  it("cancels a background run whose stream stalled, within a second", function()
    local app = closing(H.simple(srv, { stream = true, timeout_s = 60, max_retries = 2 }))
    srv:script{ { text = "partial answer that never ends", chunk_size = 3, stall_after_chunks = 2 } }
    local rec = app:enqueue_background("a", "x", { timeout_s = 60 })
    assert.truthy(first_token(app, rec.task_id), "the stream never started")
    local t0 = H.now()
    local r = app:cancel(rec.task_id)
    local elapsed = H.now() - t0
    assert.is_true(r.ok)
    assert.equal("cancelled", r.status)
    assert.is_true(elapsed < 1, "cancel took " .. elapsed .. " s")
    local got = app:get(rec.task_id)
    assert.equal("cancelled", got.status)
    -- a cancel is not retried, not even by the model's own retries
    assert.equal(0, #H.of_kind(H.events(app), "retry"))
    assert.equal(1, #srv:requests())
  end)

  it("cancels a background run waiting for a delayed reply", function()
    local app = closing(H.simple(srv, { stream = false, timeout_s = 60 }))
    srv:script{ { text = "late", delay_ms = 30000 } }
    local rec = app:enqueue_background("a", "x", { timeout_s = 60 })
    assert.truthy(H.wait_event(app, function(ev)
      return ev.kind == "lm_call_start" and ev.task_id == rec.task_id
    end, 10, { rec.task_id }))
    -- the request is on the wire once the server logged it
    local deadline = H.now() + 10
    while #srv:requests() == 0 and H.now() < deadline do app:wait({ rec.task_id }, { timeout_s = 0.02 }) end
    local t0 = H.now()
    local r = app:cancel(rec.task_id)
    assert.equal("cancelled", r.status)
    assert.is_true(H.now() - t0 < 1)
  end)

  it("ends a stalled background run timed_out at the task's deadline", function()
    local app = closing(H.simple(srv, { stream = true, timeout_s = 60, max_retries = 2 }))
    srv:script{ { text = "stalls", chunk_size = 2, stall_after_chunks = 1 } }
    local t0 = H.now()
    local rec = app:enqueue_background("a", "x", { timeout_s = 0.5 })
    local w = app:wait({ rec.task_id }, { timeout_s = 10 })
    local elapsed = H.now() - t0
    assert.is_true(w.done)
    local got = app:get(rec.task_id)
    assert.equal("timed_out", got.status)
    assert.is_true(elapsed >= 0.45 and elapsed < 3, "took " .. elapsed .. " s")
    assert.equal(1, #srv:requests())
  end)

  it("fails a foreground run whose stream stalls past the model's timeout_s", function()
    local app = closing(H.simple(srv, { stream = true, timeout_s = 0.5, max_retries = 0 }))
    srv:script{ { text = "stalls", chunk_size = 2, stall_after_chunks = 2 } }
    local t0 = H.now()
    local res = app:run("a", "x")
    local elapsed = H.now() - t0
    assert.equal("failed", res.status)
    assert.equal("model", res.error.kind)
    assert.matches("timed out after 0%.5 ?s", res.error.message)
    assert.is_true(elapsed >= 0.45 and elapsed < 3, "took " .. elapsed .. " s")
  end)

  it("retries a model timeout when retries and call_timeout_s are left", function()
    local app = closing(H.simple(srv, { stream = true, timeout_s = 0.3, max_retries = 1,
      call_timeout_s = 10 }))
    srv:script{ { text = "stalls", stall_after_chunks = 1 }, { text = "second try" } }
    local res = app:run("a", "x")
    assert.equal("completed", res.status)
    assert.equal("second try", res.final)
    assert.equal(1, #H.of_kind(H.events(app), "retry"))
  end)

  it("ends a foreground run timed_out at the run's timeout_s during a stalled stream", function()
    local app = closing(H.simple(srv, { stream = true, timeout_s = 60 }))
    srv:script{ { text = "stalls", stall_after_chunks = 1 } }
    local t0 = H.now()
    local res = app:run("a", "x", { timeout_s = 0.4 })
    local elapsed = H.now() - t0
    assert.equal("timed_out", res.status)
    assert.is_true(elapsed >= 0.35 and elapsed < 2, "took " .. elapsed .. " s")
  end)

  it("cancels a foreground run from a host callback while it waits on HTTP", function()
    local S = { app = nil, cancelled = nil }
    local app = closing(H.app(srv, { stream = true, timeout_s = 60 }, [[
      local ping = luagent.host_tool{ name = "ping", description = "Ping the host." }
      return luagent.config{
        model = MODEL,
        background_tasks = { enabled = true },
        agents = {
          luagent.agent{ id = "fg", instructions = "x" },
          luagent.agent{ id = "pinger", instructions = "x", tools = { ping },
            model = luagent.static_model{ responses = {
              { tool_calls = { { id = "c1", name = "ping", arguments = {} } } },
              { text = "pinged" } } } },
        },
      } ]], S))
    app:host_tool("ping", function()
      -- the foreground run is the only one with a model call in flight
      for _, ev in ipairs(app:events{ since = 0, limit = 100000 }) do
        if ev.kind == "lm_call_start" and ev.task_id == nil then
          S.cancelled = app:cancel(ev.run_id)
        end
      end
      return "pong"
    end)
    srv:script{ { text = "stalls", stall_after_chunks = 1 } }
    local rec = app:enqueue_background("pinger", "go", { timeout_s = 30 })
    -- nobody pumps until app:run: the ping waits for the foreground run's HTTP wait
    local t0 = H.now()
    local res = app:run("fg", "x")
    assert.equal("cancelled", res.status)
    assert.is_true(H.now() - t0 < 5)
    assert.truthy(S.cancelled)
    assert.is_true(S.cancelled.ok)
    assert.is_true(app:wait({ rec.task_id }, { timeout_s = 10 }).done)
  end)
end)
