-- Background tasks, acceptance: bg_check (status, result or error, event
-- digests) and bg_cancel (a running child and its own children; a finished
-- task keeps its terminal status), README, R-25.
--
-- Two chat turns on one thread: the first spawns the children, the test
-- waits (on events) until the grandchildren run, the second inspects and
-- cancels.
local closing = require "support.closing"
local B = require "support.bg_helpers"

local CONFIG = [[
-- a plain tool that runs until cancelled
local sleeper = luagent.tool{ name = "sleeper", handler = function(args, ctx)
  ctx:emit("sleeper_up", { summary = "sleeper up" })
  ctx:sleep(60)
  return "woke"
end }
-- a background tool that starts a child of its own (ctx:enqueue_tool)
local holder = luagent.tool{ name = "holder", background = { enabled = true }, handler = function(args, ctx)
  local c = ctx:enqueue_tool("sleeper", {})
  ctx:emit("holder_ready", { summary = "spawned " .. c.task_id })
  ctx:sleep(60)
  return "not reached"
end }
local good = luagent.tool{ name = "good", background = { enabled = true }, handler = function() return { n = 42 } end }
local bad = luagent.tool{ name = "bad", background = { enabled = true }, handler = function() error("boom") end }
local nap_bg = luagent.tool{ name = "nap_bg", background = { enabled = true }, handler = function(args, ctx)
  ctx:emit("sleeper_up", { summary = "nap_bg up" })
  ctx:sleep(60)
end }
-- an agent that makes a nested background call and waits on it
local deep_model = luagent.function_model(function(req)
  local name, res = M.answered(req)
  if not name then return M.call("nap_bg") end
  if name == "nap_bg" then return M.call("bg_wait", { task_ids = { res.value.task_id }, timeout_s = 60 }) end
  return { text = "deep done" }
end)
local ask_deep = luagent.delegate{ agent = "deep", name = "ask_deep", background = { enabled = true } }

local INSPECT = {
  function(ids) return M.call("bg_wait", { task_ids = { ids.good, ids.bad }, timeout_s = 10 }) end,
  function(ids) return M.call("bg_check", { task_id = ids.good, last_n_events = 5 }) end,
  function(ids) return M.call("bg_check", { task_id = ids.bad }) end,
  function(ids) return M.call("bg_check", { task_id = ids.holder, last_n_events = 16 }) end,
  function(ids) return M.call("bg_cancel", { task_id = ids.holder }) end,
  function(ids) return M.call("bg_cancel", { task_id = ids.deep }) end,
  function(ids) return M.call("bg_cancel", { task_id = ids.good }) end,
  function(ids) return M.call("bg_cancel", { task_id = ids.holder }) end,
  function(ids) return M.call("bg_check", { task_id = ids.holder }) end,
}
local sup_model = luagent.function_model(function(req)
  M.record(req)
  local step = M.step(req)
  if M.turn_prompt(req) == "spawn" then
    if step == 0 then
      return M.calls({ { "holder" }, { "ask_deep", { prompt = "go deep" } }, { "good" }, { "bad" } })
    end
    return { text = "spawned" }
  end
  local a = M.acks(req)
  local ids = { holder = a[1], deep = a[2], good = a[3], bad = a[4] }
  local f = INSPECT[step + 1]
  if f then return f(ids) end
  return { text = "inspected" }
end)
return luagent.config{
  model = sup_model,
  background_tasks = { enabled = true },
  tools = { sleeper },
  agents = {
    luagent.agent{ id = "sup", tools = { holder, ask_deep, good, bad }, budget = { max_iterations = 20 } },
    luagent.agent{ id = "deep", model = deep_model, tools = { nap_bg } },
  },
}
]]

local function keys(t)
  local k = {}
  for key in pairs(t) do k[#k + 1] = key end
  table.sort(k)
  return k
end

describe("bg_check and bg_cancel", function()
  it("check: status, result or error, digests; cancel: a running child and its children, not a finished one", function()
    local S = { requests = {} }
    local app = closing(B.app(CONFIG, S))
    local t1 = app:chat("sup", "spawn", { thread_id = "t" })
    assert.equal("completed", t1.status, B.json.encode(t1.error or {}))
    local acks = B.results_of(t1.messages, "holder")
    local holder = acks[1].value.task_id
    local deep = B.results_of(t1.messages, "ask_deep")[1].value.task_id
    local good = B.results_of(t1.messages, "good")[1].value.task_id
    local bad = B.results_of(t1.messages, "bad")[1].value.task_id
    assert.equal("agent", app:get(deep).kind)
    assert.equal("deep", app:get(deep).agent_id)
    assert.equal("ask_deep", app:get(deep).tool)

    -- wait (on events, not sleeps) until both grandchildren run and the
    -- holder said so
    local up, ready = {}, false
    assert.truthy(B.await(app, function(ev)
      if ev.kind == "sleeper_up" then up[#up + 1] = ev.task_id end
      if ev.kind == "holder_ready" then ready = true end
      return #up == 2 and ready
    end, 10), "the grandchildren did not start")
    local holder_kids = app:list{ parent_task_id = holder }
    local deep_kids = app:list{ parent_task_id = deep }
    assert.equal(1, #holder_kids)
    assert.equal(1, #deep_kids)
    assert.equal("running", holder_kids[1].status)
    assert.equal("running", deep_kids[1].status)
    assert.equal("nap_bg", deep_kids[1].tool)

    local t2 = app:chat("sup", "inspect", { thread_id = "t" })
    assert.equal("completed", t2.status, B.json.encode(t2.error or {}))
    assert.equal("inspected", t2.final)
    local checks = B.results_of(t2.messages, "bg_check")
    local cancels = B.results_of(t2.messages, "bg_cancel")
    assert.equal(4, #checks)
    assert.equal(4, #cancels)

    -- bg_check of a completed task: status, result, digests
    local c = checks[1]
    assert.is_true(c.ok)
    assert.equal(good, c.value.task_id)
    assert.equal("completed", c.value.status)
    assert.same({ n = 42 }, c.value.result)
    assert.is_nil(c.value.error)
    assert.equal(1, c.value.attempts)
    assert.truthy(c.value.enqueued_at:match(B.ISO))
    assert.truthy(c.value.finished_at:match(B.ISO))
    local evs = c.value.events
    assert.truthy(#evs >= 2 and #evs <= 5, tostring(#evs))
    local last_seq = 0
    for _, d in ipairs(evs) do
      assert.same({ "kind", "seq", "summary", "ts" }, keys(d))
      assert.truthy(d.seq > last_seq)
      last_seq = d.seq
      assert.truthy(d.ts:match(B.ISO))
      assert.is_string(d.summary)
    end
    assert.equal("task_finished", evs[#evs].kind)

    -- bg_check of a failed task: the error, no events unless asked
    c = checks[2]
    assert.is_true(c.ok)
    assert.equal("failed", c.value.status)
    assert.equal("runtime", c.value.error.kind)
    assert.truthy(c.value.error.message:find("boom", 1, true))
    assert.is_nil(c.value.result)
    assert.is_nil(c.value.events)

    -- bg_check of a running task: its own events are there
    c = checks[3]
    assert.equal("running", c.value.status)
    local ready
    for _, d in ipairs(c.value.events) do
      if d.kind == "holder_ready" then ready = d end
    end
    assert.truthy(ready, "no holder_ready digest")
    assert.equal("spawned " .. holder_kids[1].task_id, ready.summary)

    -- bg_cancel on running children: ok, cancelled, and their children too
    assert.same({ ok = true, value = { ok = true, status = "cancelled", task_id = holder } }, cancels[1])
    assert.same({ ok = true, value = { ok = true, status = "cancelled", task_id = deep } }, cancels[2])
    local w = app:wait({ holder_kids[1].task_id, deep_kids[1].task_id }, { timeout_s = 10 })
    assert.is_true(w.done)
    assert.equal("cancelled", w.tasks[1].status)
    assert.equal("cancelled", w.tasks[2].status)

    -- bg_cancel on finished tasks: ok = false and the terminal status, unchanged
    assert.same({ ok = true, value = { ok = false, status = "completed", task_id = good } }, cancels[3])
    assert.same({ ok = true, value = { ok = false, status = "cancelled", task_id = holder } }, cancels[4])
    assert.equal("completed", app:get(good).status)
    assert.same({ n = 42 }, app:get(good).result)
    assert.equal("cancelled", checks[4].value.status)
    assert.equal("cancelled", app:get(holder).status)
    assert.equal("cancelled", app:get(deep).status)
  end)

  it("bg_check and bg_cancel on unknown ids answer not_found; missing task_id is a validation error", function()
    local S = { requests = {} }
    local app = closing(B.app([[
      local t = luagent.tool{ name = "t", background = { enabled = true }, handler = function() return 1 end }
      local STEPS = {
        M.call("bg_check", { task_id = "tsk_unknown" }),
        M.call("bg_cancel", { task_id = "tsk_unknown" }),
        M.call("bg_check", {}),
      }
      return luagent.config{
        model = luagent.function_model(function(req) return STEPS[M.step(req) + 1] or { text = "ok" } end),
        background_tasks = { enabled = true },
        agents = { luagent.agent{ id = "a", tools = { t } } } } ]], S))
    local res = app:run("a", "go")
    local r = B.tool_results(res.messages)
    assert.is_false(r[1].ok)
    assert.equal("not_found", r[1].cause.kind)
    assert.is_false(r[2].ok)
    assert.equal("not_found", r[2].cause.kind)
    assert.is_false(r[3].ok)
    assert.equal("validation", r[3].cause.kind)
  end)
end)
