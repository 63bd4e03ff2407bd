-- Provider rate budgets (README "Rate limits"), through luagent.openai
-- against the fake server with a server-side request limit: one budget
-- per provider shared by every worker and the host, a 429 pausing the
-- provider for everyone, waits that leave `rate_wait` events and end at
-- once on a cancel. Windows are 1 s (window_s), so the specs stay short.
local closing = require "support.closing"
local fake = require "support.fake_openai_client"
local H = require "support.fake_openai_app"

local function texts(n, extra)
  local out = {}
  for i = 1, n do
    local r = { text = "ok " .. i }
    for k, v in pairs(extra or {}) do r[k] = v end
    out[i] = r
  end
  return out
end

local function enqueue_many(app, n)
  local ids = {}
  for i = 1, n do ids[i] = app:enqueue_background("a", "question " .. i).task_id end
  return ids
end

local function all_completed(app, ids)
  local w = app:wait(ids, { timeout_s = 30 })
  assert.is_true(w.done, "not all runs finished")
  for _, id in ipairs(ids) do
    local rec = app:get(id)
    assert.equal("completed", rec.status, id .. ": " .. tostring(rec.error and rec.error.message))
    assert.equal("completed", rec.run_status, id .. ": " .. tostring(rec.error and rec.error.message))
  end
end

local function cfg(body_opts)
  return [[
    return luagent.config{
      model = MODEL,
      background_tasks = { enabled = true, global_concurrency = 10, per_agent_concurrency = 10,
        max_queue = 100 },
      agents = { luagent.agent{ id = "a", instructions = "Be brief." } },
    } ]] .. (body_opts or "")
end

describe("rate budgets", function()
  local srv
  setup(function() srv = fake.start() end)
  teardown(function() srv:stop() end)
  before_each(function() srv:reset() end)

  it("40 runs against a 20-per-window server all complete, with at most one 429 per pause", function()
    srv:limit{ requests = 20, window_s = 1, retry_after = "1" }
    srv:script(texts(40))
    local app = closing(H.app(srv, { max_retries = 5, limits = { max_concurrency = 1 } }, cfg()))
    local ids = enqueue_many(app, 40)
    all_completed(app, ids)
    local st = srv:limit_stats()
    assert.equal(40, st.accepted)
    assert.is_true(st.rejected >= 1, "the server's limit was never reached")
    assert.equal(1, st.max_per_pause)
    local rate = app:rate_stats()[srv.url]
    assert.is_true(rate.pauses >= 1)
    assert.equal(0, rate.in_flight)
    local waits = H.of_kind(H.events(app), "rate_wait")
    local paused = 0
    for _, ev in ipairs(waits) do
      assert.equal(srv.url, ev.payload.provider)
      assert.truthy(ev.task_id)
      if ev.payload.reason == "paused" then paused = paused + 1 end
    end
    assert.is_true(paused >= 1, "no run waited for the pause")
  end)

  it("with requests_per_minute just below the server's limit no 429 comes", function()
    srv:limit{ requests = 20, window_s = 1, retry_after = "1" }
    srv:script(texts(40))
    local app = closing(H.app(srv, { max_retries = 0,
      limits = { requests_per_minute = 19, window_s = 1 } }, cfg()))
    local ids = enqueue_many(app, 40)
    all_completed(app, ids)
    local st = srv:limit_stats()
    assert.equal(0, st.rejected)
    assert.equal(40, st.accepted)
    local reasons = {}
    for _, ev in ipairs(H.of_kind(H.events(app), "rate_wait")) do reasons[ev.payload.reason] = true end
    assert.is_true(reasons.requests_per_minute, "no run waited for the window")
  end)

  it("counts the tokens the provider reported, not only the estimate", function()
    -- the prompt's estimate is about 30 tokens: two calls would fit in 100
    -- by their estimates, not with the 90 the first one reported
    srv:script{ { text = "one", usage = { prompt_tokens = 80, completion_tokens = 10, total_tokens = 90 } },
      { text = "two" } }
    local app = closing(H.app(srv, { limits = { tokens_per_minute = 100, window_s = 1 } }, cfg()))
    assert.equal("completed", app:run("a", "x").status)
    local res = app:run("a", "y")
    assert.equal("completed", res.status)
    local waits = H.of_kind(H.events(app), "rate_wait")
    assert.equal(1, #waits)
    assert.equal("tokens_per_minute", waits[1].payload.reason)
    assert.equal(res.run_id, waits[1].run_id)
  end)

  it("a run waiting for budget is cancelled at once, in a task and in the foreground", function()
    srv:script(texts(3))
    local app = closing(H.app(srv, { limits = { requests_per_minute = 1, window_s = 60 } }, cfg()))
    local first = app:enqueue_background("a", "one").task_id
    all_completed(app, { first })
    local second = app:enqueue_background("a", "two").task_id
    local ev = H.wait_event(app, function(e) return e.kind == "rate_wait" and e.task_id == second end, 10,
      { second })
    assert.truthy(ev, "the second run never waited for budget")
    assert.equal("requests_per_minute", ev.payload.reason)
    assert.is_true(ev.payload.wait_s > 50)
    -- app:cancel waits at most a second for the task to stop; the window is a minute
    local r = app:cancel(second)
    assert.equal("cancelled", r.status)
    -- a foreground run waits on the host and ends at its timeout
    local res = app:run("a", "three", { timeout_s = 0.2 })
    assert.equal("timed_out", res.status)
    assert.equal(1, #srv:requests())
    local fg = H.of_kind(H.events(app), "rate_wait")
    assert.equal(res.run_id, fg[#fg].run_id)
  end)

  it("checks the limits", function()
    assert.has_error(function()
      H.app(srv, { limits = { requests_per_minut = 3 } }, cfg())
    end, nil)
    local ok, err = pcall(H.app, srv, { limits = { max_concurrency = 0 } }, cfg())
    assert.is_false(ok)
    assert.matches("max_concurrency", tostring(err))
  end)
end)
