-- Background tasks, acceptance: completion delivery (R-33) and what a
-- foreground run's children do when it returns (on_parent_end).
--
-- Children that must not finish too early wait on a latch: a host-enqueued
-- task that sleeps until the test (or a host tool) cancels it. The latch ids
-- travel in the prompt, so the scripted models stay pure.
local closing = require "support.closing"
local B = require "support.bg_helpers"

local TOOLS = [[
local latch = luagent.tool{ name = "latch", handler = function(args, ctx) ctx:sleep(60) end }
local release = luagent.host_tool{ name = "release",
  input_schema = { type = "object", properties = { ids = { type = "array", items = { type = "string" } } } } }
-- a background job: waits on its latch (if any), then answers
local job = luagent.tool{ name = "job", background = { enabled = true },
  input_schema = { type = "object", properties = { key = { type = "string" }, latch = { type = "string" },
    s = { type = "number" } }, required = { "key" } },
  handler = function(args, ctx)
    if args.latch then ctx:wait({ args.latch }, { timeout_s = 30 }) end
    if args.s then ctx:sleep(args.s) end
    return "result " .. args.key
  end }
local tick = luagent.tool{ name = "tick", handler = function(args, ctx) ctx:sleep(0.01); return "tick" end }
local function latches(req)
  local out = {}
  for id in (M.turn_prompt(req) or ""):gmatch("tsk_[%w_%-]+") do out[#out + 1] = id end
  return out
end
-- every task id mentioned in a notice so far
local function noticed(req)
  local out = {}
  for _, m in ipairs(req.messages) do
    if M.is_notice(m) then
      for id in m.content:gmatch("task (tsk_[%w_%-]+)") do out[id] = (out[id] or 0) + 1 end
    end
  end
  return out
end
]]

local function latch(app)
  return app:enqueue_tool("latch", {}, { agent_id = "latches" }).task_id
end

-- occurrences of `id` in the notice messages of `messages`
local function in_notices(messages, id)
  local n = 0
  for _, text in ipairs(B.notices(messages)) do
    for _ in text:gmatch(id:gsub("%-", "%%-")) do n = n + 1 end
  end
  return n
end

local function bind_release(app)
  app:host_tool("release", function(args)
    for _, id in ipairs(args.ids) do app:cancel(id) end
    return "released"
  end)
end

describe("bg delivery (R-33)", function()
  it("a supervisor that never waits sees each result exactly once, in a notice before a model call", function()
    local S = { requests = {} }
    local app = closing(B.app(TOOLS .. [[
      return luagent.config{
        model = luagent.function_model(function(req)
          M.record(req)
          if M.step(req) == 0 then
            return M.calls({ { "job", { key = "a", s = 0.01 } }, { "job", { key = "b", s = 0.05 } },
              { "job", { key = "c", s = 0.1 } } })
          end
          -- go on working until every child was announced
          local seen, n = noticed(req), 0
          for _ in pairs(seen) do n = n + 1 end
          if n < 3 then return M.call("tick") end
          return { text = "all announced" }
        end),
        background_tasks = { enabled = true },
        agents = { luagent.agent{ id = "sup", tools = { job, tick }, budget = { max_iterations = 500 } } } } ]], S))
    local res = app:run("sup", "go")
    assert.equal("completed", res.status, B.json.encode(res.error or {}))
    assert.equal("all announced", res.final)
    assert.truthy(B.well_formed(res.messages))
    local acks = B.results_of(res.messages, "job")
    local last = S.requests[#S.requests]
    -- across every request the model received: each id is in one notice
    -- message (requests repeat the history, so count each message once)
    local unique, seen = {}, {}
    for _, req in ipairs(S.requests) do
      for _, m in ipairs(req.messages) do
        if not seen[m] and B.notices({ m })[1] then
          seen[m] = true
          unique[#unique + 1] = m
        end
      end
    end
    for _, a in ipairs(acks) do
      assert.equal(1, in_notices(unique, a.value.task_id))
    end
    for i, key in ipairs({ "a", "b", "c" }) do
      local id = acks[i].value.task_id
      -- exactly once in the transcript and in what the model last saw
      assert.equal(1, in_notices(res.messages, id), id)
      assert.equal(1, in_notices(last.messages, id), id)
      assert.is_true(app:get(id).delivered)
      -- the notice carries the result
      for _, text in ipairs(B.notices(res.messages)) do
        if text:find(id, 1, true) then
          assert.truthy(text:find("- task " .. id .. " (job) completed: result " .. key, 1, true), text)
        end
      end
    end
    -- each notice was the newest message of the request that carried it
    -- and is never added again: the number of notices grows by at most one
    -- per request
    local prev = 0
    for _, req in ipairs(S.requests) do
      local n = #B.notices(req.messages)
      assert.truthy(n == prev or n == prev + 1)
      if n == prev + 1 then
        assert.equal("[luagent] background results:", req.messages[#req.messages].content:match("^[^\n]*"))
      end
      prev = n
    end
    -- notices only come after the tool messages of the previous reply
    assert.truthy(prev >= 1)
  end)

  it("a supervisor whose bg_wait returned the results gets no notice for them", function()
    local S = { requests = {} }
    local app = closing(B.app(TOOLS .. [[
      return luagent.config{
        model = luagent.function_model(function(req)
          M.record(req)
          local step, l = M.step(req), latches(req)
          if step == 0 then return M.calls({ { "job", { key = "a", latch = l[1] } }, { "job", { key = "b", latch = l[1] } } }) end
          -- release and wait in one reply: no model call in between
          if step == 1 then return M.calls({ { "release", { ids = l } }, { "bg_wait", { task_ids = M.acks(req), timeout_s = 10 } } }) end
          if step < 5 then return M.call("tick") end
          return { text = "done" }
        end),
        background_tasks = { enabled = true },
        tools = { latch, release },
        agents = { luagent.agent{ id = "sup", tools = { job, tick, "release" } } } } ]], S))
    bind_release(app)
    local res = app:run("sup", "latch " .. latch(app), { thread_id = "w" })
    assert.equal("completed", res.status, B.json.encode(res.error or {}))
    local w = B.results_of(res.messages, "bg_wait")[1].value
    assert.is_true(w.done)
    assert.equal("result a", w.tasks[1].result)
    assert.equal("result b", w.tasks[2].result)
    assert.same({}, B.notices(res.messages))
    for _, t in ipairs(w.tasks) do assert.is_true(app:get(t.task_id).delivered) end
    -- and a later run on the scope does not announce them either
    S.requests = {}
    app:run("sup", "again", { thread_id = "w" }) -- (its own new jobs may be announced, not the old ones)
    for _, t in ipairs(w.tasks) do
      assert.equal(0, B.count_in_requests(S.requests, t.task_id))
    end
  end)

  it("a chat turn that ended before its child finished gets the result at the start of the next turn, once", function()
    local S = { requests = {} }
    local app = closing(B.app(TOOLS .. [[
      return luagent.config{
        model = luagent.function_model(function(req)
          M.record(req)
          local l = latches(req)
          if #l > 0 and M.step(req) == 0 then return M.call("job", { key = "late", latch = l[1] }) end
          return { text = "turn over" }
        end),
        background_tasks = { enabled = true },
        tools = { latch },
        agents = { luagent.agent{ id = "sup", tools = { job } } } } ]], S))
    local l = latch(app)
    local t1 = app:chat("sup", "start " .. l, { thread_id = "th" })
    assert.equal("completed", t1.status)
    local id = B.results_of(t1.messages, "job")[1].value.task_id
    assert.equal("running", app:get(id).status)
    assert.same({}, B.notices(t1.messages))
    -- the child finishes between turns
    app:cancel(l)
    assert.equal("completed", app:wait({ id }, { timeout_s = 10 }).tasks[1].status)
    assert.is_false(app:get(id).delivered)

    S.requests = {}
    local t2 = app:chat("sup", "next", { thread_id = "th" })
    assert.equal("completed", t2.status)
    local first = S.requests[1].messages
    local n = #first
    assert.equal("user", first[n - 1].role)
    assert.equal("next", first[n - 1].content)
    assert.equal("user", first[n].role)
    assert.truthy(first[n].content:find("^%[luagent%] background results:\n"))
    assert.truthy(first[n].content:find("- task " .. id .. " (job) completed: result late", 1, true))
    assert.is_true(app:get(id).delivered)

    S.requests = {}
    local t3 = app:chat("sup", "again", { thread_id = "th" })
    assert.equal("completed", t3.status)
    -- the third turn's request has the second turn's notice in its history, and no new one
    assert.equal(1, in_notices(S.requests[1].messages, id))
    assert.equal("again", S.requests[1].messages[#S.requests[1].messages].content)
    -- another thread of the same agent is told nothing
    S.requests = {}
    app:chat("sup", "elsewhere", { thread_id = "other" })
    assert.equal(0, B.count_in_requests(S.requests, id))
  end)
end)

describe("bg delivery edges (R-33)", function()
  it("a turn whose model call failed does not keep the notice: the next turn announces the child once", function()
    local S = { requests = {} }
    local app = closing(B.app(TOOLS .. [[
      return luagent.config{
        model = luagent.function_model(function(req)
          M.record(req)
          local p = M.turn_prompt(req)
          if p == "fail" then error({ kind = "model", message = "provider down" }) end
          local l = latches(req)
          if #l > 0 and M.step(req) == 0 then return M.call("job", { key = "late", latch = l[1] }) end
          return { text = "ok" }
        end),
        background_tasks = { enabled = true }, tools = { latch },
        agents = { luagent.agent{ id = "sup", tools = { job } } } } ]], S))
    local l = latch(app)
    local t1 = app:chat("sup", "start " .. l, { thread_id = "th" })
    local id = B.results_of(t1.messages, "job")[1].value.task_id
    app:cancel(l)
    assert.equal("completed", app:wait({ id }, { timeout_s = 10 }).tasks[1].status)
    S.requests = {}
    local t2 = app:chat("sup", "fail", { thread_id = "th" })
    assert.equal("failed", t2.status)
    -- the failed call carried the notice, but it did not return: withdrawn
    assert.equal(1, in_notices(S.requests[1].messages, id))
    assert.same({}, B.notices(t2.messages))
    assert.is_false(app:get(id).delivered)
    S.requests = {}
    local t3 = app:chat("sup", "again", { thread_id = "th" })
    assert.equal("completed", t3.status)
    assert.equal(1, in_notices(S.requests[1].messages, id))
    assert.is_true(app:get(id).delivered)
    assert.equal(1, in_notices(app:thread("sup", "th"), id))
  end)

  it("a notice stays within max_tool_output_bytes; the rest comes in the next ones", function()
    local S = { requests = {} }
    local app = closing(B.app(TOOLS .. [[
      local big = luagent.tool{ name = "big", background = { enabled = true },
        handler = function(args, ctx)
          ctx:wait({ args.latch }, { timeout_s = 30 })
          return args.k .. string.rep("x", 600)
        end }
      -- waits for tasks without taking their results (ctx:wait marks nothing delivered)
      local settle = luagent.tool{ name = "settle", handler = function(args, ctx)
        return ctx:wait(args.ids, { timeout_s = 10 }).done
      end }
      return luagent.config{
        max_tool_output_bytes = 1000,
        model = luagent.function_model(function(req)
          M.record(req)
          local step, l = M.step(req), latches(req)
          if step == 0 then
            local calls = {}
            for i = 1, 5 do calls[i] = { "big", { k = "k" .. i, latch = l[1] } } end
            return M.calls(calls)
          end
          -- nothing finished before this call (the latch holds them)
          if step == 1 then return M.calls({ { "release", { ids = l } }, { "settle", { ids = M.acks(req) } } }) end
          if step < 8 then return M.call("bg_list") end
          return { text = "done" }
        end),
        background_tasks = { enabled = true },
        tools = { latch, release },
        agents = { luagent.agent{ id = "sup", tools = { big, settle, "release" } } } } ]], S))
    bind_release(app)
    local res = app:run("sup", "go " .. latch(app))
    assert.equal("completed", res.status)
    assert.same({ ok = true, value = true }, B.results_of(res.messages, "settle")[1])
    -- one ~650-byte entry fits in 1000 bytes, two do not: five notices
    local notices = B.notices(res.messages)
    assert.equal(5, #notices)
    for i, text in ipairs(notices) do
      assert.truthy(#text <= 1000, #text)
      local left = 5 - i
      if left > 0 then
        assert.truthy(text:find(string.format("(%d more finished task", left), 1, true), text)
      else
        assert.is_nil(text:find("more finished", 1, true))
      end
    end
    for i = 1, 5 do
      local n = 0
      for _, text in ipairs(notices) do
        for _ in text:gmatch("%(big%) completed: k" .. i .. "x") do n = n + 1 end
      end
      assert.equal(1, n, "k" .. i)
    end
  end)

  it("a background supervisor on a worker that never waits gets each result once", function()
    local app = closing(B.app(TOOLS .. [[
      return luagent.config{
        model = luagent.function_model(function(req)
          if M.step(req) == 0 then
            return M.calls({ { "job", { key = "a" } }, { "job", { key = "b", s = 0.02 } } })
          end
          local n = 0
          for _ in pairs(noticed(req)) do n = n + 1 end
          if n < 2 then return M.call("tick") end
          return { text = "all announced" }
        end),
        background_tasks = { enabled = true },
        agents = { luagent.agent{ id = "sup", tools = { job, tick }, budget = { max_iterations = 500 } } } } ]]))
    local rec = app:enqueue_background("sup", "go", { thread_id = "w" })
    local w = app:wait({ rec.task_id }, { timeout_s = 10 })
    local res = w.tasks[1].result
    assert.equal("completed", res.status)
    assert.equal("all announced", res.final)
    for i, ack in ipairs(B.results_of(res.messages, "job")) do
      assert.equal(1, in_notices(res.messages, ack.value.task_id))
      assert.is_true(app:get(ack.value.task_id).delivered)
    end
  end)

  it("an agent child that ran out of budget shows its run status and why", function()
    local app = closing(B.app([[
      local worker = luagent.delegate{ agent = "worker", background = { enabled = true } }
      local spin = luagent.tool{ name = "spin", handler = function() return "again" end }
      return luagent.config{
        model = luagent.function_model(function(req)
          local step = M.step(req)
          if M.prompt(req) == "spin" then return M.call("spin") end
          if step == 0 then return M.call("worker", { prompt = "spin" }) end
          if step == 1 then return M.call("bg_wait", { task_ids = M.acks(req), timeout_s = 10 }) end
          return { text = "done" }
        end),
        background_tasks = { enabled = true },
        agents = { luagent.agent{ id = "sup", tools = { worker } },
          luagent.agent{ id = "worker", tools = { spin }, budget = { max_iterations = 2 } } } } ]]))
    local res = app:run("sup", "go")
    local t = B.results_of(res.messages, "bg_wait")[1].value.tasks[1]
    assert.equal("completed", t.status)
    assert.equal("budget_exceeded", t.run_status)
    assert.equal("budget", t.error.kind)
    assert.truthy(t.error.message:find("max_iterations", 1, true))
  end)
end)

describe("bg on_parent_end", function()
  local function body(mode)
    return TOOLS .. string.format([[
      return luagent.config{
        model = luagent.function_model(function(req)
          M.record(req)
          local l = latches(req)
          if #l > 0 and M.step(req) == 0 then return M.call("job", { key = "child", latch = l[1] }) end
          return { text = "parent done" }
        end),
        background_tasks = { enabled = true%s },
        tools = { latch },
        agents = { luagent.agent{ id = "sup", tools = { job } } } } ]], mode and
      string.format(", on_parent_end = %q", mode) or "")
  end

  it("cancel: the run's still-running children are cancelled when app:run returns", function()
    local S = { requests = {} }
    local app = closing(B.app(body("cancel"), S))
    local l = latch(app)
    local res = app:run("sup", "start " .. l, { thread_id = "th" })
    assert.equal("completed", res.status)
    local id = B.results_of(res.messages, "job")[1].value.task_id
    local rec = app:get(id)
    assert.truthy(rec.status == "cancelled" or rec.cancel_requested, rec.status)
    local w = app:wait({ id }, { timeout_s = 10 })
    assert.equal("cancelled", w.tasks[1].status)
    -- unrelated tasks (the latch, not a child of the run) are left alone
    assert.equal("running", app:get(l).status)
  end)

  it("cancel: children of the run's nested runs and of its handlers are cancelled too", function()
    local app = closing(B.app([[
      local job = luagent.tool{ name = "job", background = { enabled = true },
        handler = function(args, ctx) ctx:sleep(60) end }
      local spawner = luagent.tool{ name = "spawner", handler = function(args, ctx)
        return ctx:enqueue_tool("job", {}).task_id
      end }
      local mid = luagent.delegate{ agent = "mid" } -- inline: a nested run
      return luagent.config{
        model = luagent.function_model(function(req)
          local step = M.step(req)
          if M.turn_prompt(req) == "top" then
            if step == 0 then return M.calls({ { "mid", { prompt = "nested" } }, { "spawner" } }) end
            return { text = "top done" }
          end
          if step == 0 then return M.calls({ { "job" }, { "spawner" } }) end
          return { text = "nested done" }
        end),
        background_tasks = { enabled = true, on_parent_end = "cancel" },
        agents = { luagent.agent{ id = "top", tools = { mid, spawner } },
          luagent.agent{ id = "mid", tools = { job, spawner } } } } ]]))
    local res = app:run("top", "top")
    assert.equal("completed", res.status)
    local all = app:list()
    assert.equal(3, #all)
    for _, r in ipairs(all) do
      assert.truthy(r.status == "cancelled" or r.cancel_requested, r.task_id .. " " .. r.status)
    end
    local ids = {}
    for i, r in ipairs(all) do ids[i] = r.task_id end
    local w = app:wait(ids, { timeout_s = 10 })
    for _, t in ipairs(w.tasks) do assert.equal("cancelled", t.status) end
  end)

  it("leave (the default): children go on and are announced on the next run of that agent and thread", function()
    local S = { requests = {} }
    local app = closing(B.app(body(nil), S))
    local l = latch(app)
    local res = app:run("sup", "start " .. l, { thread_id = "th" })
    assert.equal("completed", res.status)
    local id = B.results_of(res.messages, "job")[1].value.task_id
    assert.equal("running", app:get(id).status)
    assert.is_false(app:get(id).cancel_requested)
    app:cancel(l)
    assert.equal("completed", app:wait({ id }, { timeout_s = 10 }).tasks[1].status)
    -- another agent-thread pair is not told; the next run on "th" is, once
    S.requests = {}
    app:run("sup", "other", { thread_id = "elsewhere" })
    assert.equal(0, B.count_in_requests(S.requests, id))
    S.requests = {}
    local r2 = app:run("sup", "next", { thread_id = "th" })
    assert.equal(1, in_notices(r2.messages, id))
    assert.truthy(B.notices(S.requests[1].messages)[1]:find("result child", 1, true))
    S.requests = {}
    app:run("sup", "again", { thread_id = "th" })
    assert.equal(0, B.count_in_requests(S.requests, id))
  end)
end)
