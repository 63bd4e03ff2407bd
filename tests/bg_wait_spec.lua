-- Background tasks, acceptance: bg_wait (README): mode "any" returns at
-- the first finished task, a timeout returns the pending ids with progress
-- digests, a later wait collects the rest; the legacy task_id form.
--
-- Jobs are held by "latches": host-enqueued tool tasks that sleep until the
-- test cancels them; a job waits on its latch (ctx:wait returns when the
-- latch is terminal). Nothing sleeps to synchronise.
local closing = require "support.closing"
local B = require "support.bg_helpers"

local CONFIG = [[
local latch = luagent.tool{ name = "latch", handler = function(args, ctx) ctx:sleep(60) end }
local arrive = luagent.host_tool{ name = "arrive" }
local release = luagent.host_tool{ name = "release" }
local job = luagent.tool{ name = "job", background = { enabled = true },
  input_schema = { type = "object", properties = { key = { type = "string" }, latch = { type = "string" } },
    required = { "key", "latch" } },
  handler = function(args, ctx)
    ctx:emit("job_step", { summary = "job " .. args.key .. " holding" })
    ctx:call_tool("arrive", { key = args.key })
    ctx:wait({ args.latch }, { timeout_s = 30 })
    return "result " .. args.key
  end }
-- the prompt names the three latches: "A B C"
local function latches(req)
  local out = {}
  for id in M.prompt(req):gmatch("%S+") do out[#out + 1] = id end
  return out
end
local sup = luagent.function_model(function(req)
  M.record(req)
  local name, res = M.answered(req)
  local l = latches(req)
  if not name then
    return M.calls({ { "job", { key = "a", latch = l[1] } }, { "job", { key = "b", latch = l[2] } },
      { "job", { key = "c", latch = l[3] } } })
  end
  local waits = M.results(req, "bg_wait")
  if name == "job" then
    if #M.acks(req) < 3 then return { text = "missing acks" } end
    return M.call("bg_wait", { task_ids = M.acks(req), mode = "any", timeout_s = 20 })
  end
  if name == "bg_wait" and #waits == 1 then
    return M.call("bg_wait", { task_ids = res.value.pending, mode = "all", timeout_s = 0.05 })
  end
  if name == "bg_wait" and #waits == 2 then
    -- one reply, so no model call (and no notice) comes between
    return M.calls({ { "release", { keys = { "b", "c" } } },
      { "bg_wait", { task_ids = res.value.pending, timeout_s = 20 } } })
  end
  return { text = "collected" }
end)
return luagent.config{
  model = sup,
  background_tasks = { enabled = true },
  tools = { latch, arrive, release },
  agents = { luagent.agent{ id = "sup", tools = { job, "release" } } },
}
]]

describe("bg_wait", function()
  it("any returns at the first finished task; a timeout gives pending ids and progress; a later wait collects", function()
    local S = { requests = {} }
    local app = closing(B.app(CONFIG, S))
    local L = {}
    for i, key in ipairs({ "a", "b", "c" }) do
      L[key] = app:enqueue_tool("latch", {}, { agent_id = "latches" }).task_id
    end
    local arrived = {}
    app:host_tool("arrive", function(args)
      arrived[args.key] = true
      -- job a may finish only once b and c are holding
      if arrived.a and arrived.b and arrived.c then app:cancel(L.a) end
      return true
    end)
    app:host_tool("release", function(args)
      for _, k in ipairs(args.keys) do app:cancel(L[k]) end
      return "released"
    end)
    local res = app:run("sup", L.a .. " " .. L.b .. " " .. L.c)
    assert.equal("completed", res.status, B.json.encode(res.error or {}))
    assert.equal("collected", res.final)
    assert.truthy(B.well_formed(res.messages))
    local ids = {}
    for i, a in ipairs(B.results_of(res.messages, "job")) do ids[i] = a.value.task_id end
    assert.equal(3, #ids)
    local waits = B.results_of(res.messages, "bg_wait")
    assert.equal(3, #waits)

    -- 1. mode = "any": a is done, b and c still pending
    local any = waits[1].value
    assert.is_true(waits[1].ok)
    assert.is_true(any.done)
    assert.is_false(any.timed_out)
    assert.same({ ids[2], ids[3] }, any.pending)
    assert.equal(3, #any.tasks)
    assert.equal(ids[1], any.tasks[1].task_id)
    assert.equal("completed", any.tasks[1].status)
    assert.equal("result a", any.tasks[1].result)
    for i = 2, 3 do
      local t = any.tasks[i]
      assert.equal(ids[i], t.task_id)
      assert.equal("running", t.status)
      assert.is_nil(t.result)
      assert.is_table(t.progress)
    end

    -- 2. a timeout: timed_out, the pending ids, their progress digests
    local late = waits[2].value
    assert.is_true(waits[2].ok)
    assert.is_false(late.done)
    assert.is_true(late.timed_out)
    assert.same({ ids[2], ids[3] }, late.pending)
    for i, t in ipairs(late.tasks) do
      assert.equal(ids[i + 1], t.task_id)
      assert.equal("running", t.status)
      local p = t.progress
      assert.is_number(p.elapsed_s)
      assert.truthy(p.elapsed_s > 0)
      local ev = p.last_event
      assert.is_table(ev)
      assert.is_number(ev.seq)
      assert.is_string(ev.ts)
      assert.truthy(ev.ts:match(B.ISO))
      -- the job is waiting on its latch (or just back from the host call
      -- before it)
      assert.truthy(ev.kind == "task_waiting" or ev.kind == "task_resumed", ev.kind)
      assert.is_string(ev.summary)
    end

    -- 3. a later wait collects them
    local all = waits[3].value
    assert.is_true(all.done)
    assert.is_false(all.timed_out)
    assert.same({}, all.pending)
    assert.equal("result b", all.tasks[1].result)
    assert.equal("result c", all.tasks[2].result)

    -- the waits returned every result: no notice repeated them (R-33)
    assert.same({}, B.notices(res.messages))
    for _, id in ipairs(ids) do assert.is_true(app:get(id).delivered) end
  end)

  it("accepts the legacy task_id form; wants task ids; unknown ids are not_found", function()
    local S = { requests = {} }
    local app = closing(B.app([[
      local quick = luagent.tool{ name = "quick", background = { enabled = true }, handler = function() return 7 end }
      return luagent.config{
        model = luagent.function_model(function(req)
          local name, res = M.answered(req)
          if not name then return M.call("quick") end
          if name == "quick" then return M.call("bg_wait", { task_id = res.value.task_id }) end
          local n = #M.results(req, "bg_wait")
          if n == 1 then return M.call("bg_wait", {}) end
          if n == 2 then return M.call("bg_wait", { task_ids = { "tsk_nope" } }) end
          return { text = "done" }
        end),
        background_tasks = { enabled = true },
        agents = { luagent.agent{ id = "a", tools = { quick } } } } ]], S))
    local res = app:run("a", "go")
    local w = B.results_of(res.messages, "bg_wait")
    assert.is_true(w[1].ok)
    assert.is_true(w[1].value.done)
    assert.equal(7, w[1].value.tasks[1].result)
    assert.is_false(w[2].ok)
    assert.equal("validation", w[2].cause.kind)
    assert.is_false(w[3].ok)
    assert.equal("not_found", w[3].cause.kind)
  end)
end)
