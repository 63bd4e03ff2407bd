-- Steering (README, "Steering"): a supervisor's bg_send, the host's
-- app:send and a tool's ctx:send queue a message for a running agent task,
-- delivered once before its next model call as a marked user message;
-- interrupt = true cuts the current model call or tool short; a file store
-- keeps queued messages across a kill -9. Each behaviour runs through a
-- scripted model and through luagent.openai against the fake server.
--
-- The child's `step` tool holds the child inside its loop until the test
-- has seen the message queued (a file the test writes): the test moves on
-- from events, the child from that file.
local closing = require "support.closing"
local H = require "support.dispatch_helpers"
local S = require "support.store_helpers"
local fake = require "support.fake_openai_client"
local FA = require "support.fake_openai_app"
local luagent = require "luagent"
local core = require "luagent.core"
local json = luagent.json

local MSG = "STEER-7f3a: look at the 2019 data too"
local PREFIX = '[luagent] message from your parent agent "sup"'

-- Tools and agents shared by the configs: `step` (the child's tool: the
-- first call emits in_step and holds until DIR/sent exists), `await_go`
-- (the supervisor's: holds until DIR/go exists), the background delegate
-- `research` to agent "res". SUP_MODEL and RES_MODEL are Lua source.
local function config(dir, sup_model, res_model, store)
  return string.format([[
local luagent = require "luagent"
local json = luagent.json
local DIR, MSG = %q, %q
local function exists(p) local f = io.open(p); if f then f:close() end; return f ~= nil end
local function append(p, s) local f = assert(io.open(p, "a")); f:write(s); f:close() end
local function hold_until(p, ctx)
  for _ = 1, 3000 do
    if exists(p) then return end
    ctx:sleep(0.01)
  end
  error("timed out waiting for " .. p)
end
local function tool_results(req)
  local out = {}
  for _, m in ipairs(req.messages) do
    if m.role == "tool" then out[#out + 1] = json.decode(m.content) end
  end
  return out
end
local function count_msg(req)
  local n = 0
  for _, m in ipairs(req.messages) do
    if type(m.content) == "string" and m.content:find(MSG, 1, true) then
      n = n + 1
      append(DIR .. "/seen", m.role .. "\n" .. m.content .. "\n")
    end
  end
  append(DIR .. "/counts", n .. "\n")
  return n
end
return luagent.config{
  background_tasks = { enabled = true },
  store = %s,
  tools = {
    luagent.tool{ name = "step", input_schema = { type = "object" }, handler = function(_, ctx)
      if not exists(DIR .. "/sent") then
        ctx:emit("in_step", {})
        hold_until(DIR .. "/sent", ctx)
      end
      return "step done"
    end },
    luagent.tool{ name = "await_go", input_schema = { type = "object" }, handler = function(_, ctx)
      hold_until(DIR .. "/go", ctx)
      return "go"
    end },
    luagent.delegate{ agent = "res", name = "research", background = true },
  },
  agents = {
    luagent.agent{ id = "sup", instructions = "Supervise.", tools = { "research", "await_go" },
      model = %s },
    luagent.agent{ id = "res", instructions = "Research.", tools = { "step" }, model = %s },
  },
} ]], dir, MSG, store and string.format("{ path = %q }", store) or "nil", sup_model, res_model)
end

-- The scripted models: the supervisor starts the child, waits for the go,
-- sends it MSG, waits for it; the child calls step twice, then answers.
local SUP_FN = [[luagent.function_model(function(req)
  local r = tool_results(req)
  if #r == 0 then
    return { tool_calls = { { id = "r1", name = "research", arguments = { prompt = "dig" } } } }
  end
  local child = r[1].value.task_id
  if #r == 1 then return { tool_calls = { { id = "aw", name = "await_go", arguments = {} } } } end
  if #r == 2 then
    return { tool_calls = { { id = "s1", name = "bg_send", arguments = { task_id = child, message = MSG } } } }
  end
  if #r == 3 then
    append(DIR .. "/send_result", json.encode(r[3]) .. "\n")
    return { tool_calls = { { id = "bw", name = "bg_wait", arguments = { task_ids = { child } } } } }
  end
  return "done"
end)]]

local RES_FN = [[luagent.function_model(function(req)
  count_msg(req)
  local r = tool_results(req)
  if #r < 2 then return { tool_calls = { { id = "st" .. #r, name = "step", arguments = {} } } } end
  return "found"
end)]]

local function read(path)
  local f = io.open(path)
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

local function lines(path)
  local out = {}
  for l in (read(path) or ""):gmatch("[^\n]+") do out[#out + 1] = l end
  return out
end

-- How many of the request's messages hold MSG, and those messages.
local function holding(messages)
  local out = {}
  for _, m in ipairs(messages) do
    if type(m.content) == "string" and m.content:find(MSG, 1, true) then out[#out + 1] = m end
  end
  return out
end

-- The supervisor runs; once the child is inside its step the test lets the
-- supervisor send (on_child: the child's id, before the go), then lets the
-- child go on once the message is queued. Returns the child's id.
local function drive(app, dir, on_child)
  local sup = app:enqueue_background("sup", "go")
  local ev = H.await_kind(app, "in_step", nil, 30)
  assert.is_truthy(ev, "the child never reached its step")
  local child = ev.task_id
  if on_child then on_child(child) end
  H.write(dir .. "/go", "")
  local queued = H.await_kind(app, "message_queued", child, 30)
  assert.is_truthy(queued, "no message_queued event")
  H.write(dir .. "/sent", "")
  local w = app:wait({ sup.task_id }, { timeout_s = 30 })
  assert.equal("completed", w.tasks[1].status)
  app:wait({ child }, { timeout_s = 30 })
  return child, sup.task_id
end

-- Events of the child: exactly one queued and one delivered, in that order.
local function check_events(app, child)
  local evs = H.all_events(app)
  local q = H.of_kind(evs, "message_queued", child)
  local d = H.of_kind(evs, "message_delivered", child)
  assert.equal(1, #q)
  assert.equal(1, #d)
  assert.equal(1, q[1].payload.message_seq)
  assert.equal(1, d[1].payload.message_seq)
  assert.is_true(q[1].seq < d[1].seq)
  local rec = app:get(child)
  assert.equal(1, #rec.messages)
  assert.equal(MSG, rec.messages[1].text)
  assert.is_string(rec.messages[1].delivered_at)
end

describe("bg_send from a supervisor", function()
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(function() H.rmdir(dir) end)

  it("(a) reaches the child's next model request once, through a scripted model", function()
    local cfg = dir .. "/agents.lua"
    H.write(cfg, config(dir, SUP_FN, RES_FN))
    local app = closing(luagent.load(cfg))
    local child = drive(app, dir)
    assert.equal("found", app:get(child).result.final)
    -- the first request had no message, the next one (after the step) had
    -- it once, and it stayed once in the transcript after
    assert.same({ "0", "1", "1" }, lines(dir .. "/counts"))
    local seen = read(dir .. "/seen")
    assert.matches("^user\n", seen)
    assert.is_truthy(seen:find(PREFIX, 1, true))
    local sent = json.decode(lines(dir .. "/send_result")[1])
    assert.is_true(sent.ok)
    assert.equal(child, sent.value.task_id)
    assert.equal(1, sent.value.seq)
    check_events(app, child)
  end)
end)

describe("bg_send through luagent.openai", function()
  local srv, dir
  setup(function() srv = fake.start() end)
  teardown(function() srv:stop() end)
  before_each(function()
    srv:reset()
    dir = H.tmpdir()
  end)
  after_each(function() H.rmdir(dir) end)

  local function openai(model)
    return FA.model_src(srv, { model = model })
  end

  it("(a) reaches the child's next request to the provider once", function()
    local cfg = dir .. "/agents.lua"
    H.write(cfg, config(dir, openai("sup-m"), openai("res-m")))
    local app = closing(luagent.load(cfg))
    srv:script{
      { for_model = "sup-m", tool_calls = { { id = "r1", name = "research", arguments = { prompt = "dig" } } } },
      { for_model = "sup-m", tool_calls = { { id = "aw", name = "await_go", arguments = {} } } },
      { for_model = "res-m", tool_calls = { { id = "st0", name = "step", arguments = {} } } },
      { for_model = "res-m", tool_calls = { { id = "st1", name = "step", arguments = {} } } },
      { for_model = "res-m", text = "found" },
    }
    local child = drive(app, dir, function(child)
      srv:append({
        { for_model = "sup-m", tool_calls = { { id = "s1", name = "bg_send",
          arguments = { task_id = child, message = MSG } } } },
        { for_model = "sup-m", tool_calls = { { id = "bw", name = "bg_wait",
          arguments = { task_ids = { child } } } } },
        { for_model = "sup-m", text = "done" },
      })
    end)
    local crec = app:get(child)
    assert.equal("completed", crec.status, json.encode(crec))
    assert.equal("found", crec.result.final)
    local res = {}
    for _, r in ipairs(srv:requests()) do
      if r.json and r.json.model == "res-m" then res[#res + 1] = r.json end
    end
    assert.equal(3, #res)
    assert.equal(0, #holding(res[1].messages))
    local h2 = holding(res[2].messages)
    assert.equal(1, #h2)
    assert.equal("user", h2[1].role)
    assert.equal(1, h2[1].content:find(PREFIX, 1, true))
    -- it follows the step's tool result, the last message before the call
    assert.equal(h2[1].content, res[2].messages[#res[2].messages].content)
    assert.equal(1, #holding(res[3].messages))
    check_events(app, child)
  end)

  it("(b) the supervisor's bg_send{interrupt = true} reaches a child inside a 30 s model call within 1 s", function()
    local cfg = dir .. "/agents.lua"
    H.write(cfg, config(dir, openai("sup-m"), FA.model_src(srv, { model = "res-m", timeout_s = 60 })))
    local app = closing(luagent.load(cfg))
    srv:script{
      { for_model = "sup-m", tool_calls = { { id = "r1", name = "research", arguments = { prompt = "dig" } } } },
      { for_model = "sup-m", tool_calls = { { id = "aw", name = "await_go", arguments = {} } } },
      { for_model = "res-m", text = "too late", delay_ms = 30000 },
      { for_model = "res-m", text = "read it" },
    }
    local sup = app:enqueue_background("sup", "go")
    local function res_requests()
      local out = {}
      for _, r in ipairs(srv:requests()) do
        if r.json and r.json.model == "res-m" then out[#out + 1] = r.json end
      end
      return out
    end
    local deadline = core.now() + 10
    while #res_requests() < 1 and core.now() < deadline do app:wait({ sup.task_id }, { timeout_s = 0.02 }) end
    assert.equal(1, #res_requests(), "the child's model call never reached the server")
    local child = app:list{ parent_task_id = sup.task_id }[1].task_id
    srv:append{
      { for_model = "sup-m", tool_calls = { { id = "s1", name = "bg_send",
        arguments = { task_id = child, message = MSG, interrupt = true } } } },
      { for_model = "sup-m", tool_calls = { { id = "bw", name = "bg_wait",
        arguments = { task_ids = { child } } } } },
      { for_model = "sup-m", text = "done" },
    }
    H.write(dir .. "/go", "")
    local w = app:wait({ sup.task_id }, { timeout_s = 20 })
    assert.equal("completed", w.tasks[1].status)
    assert.equal("read it", app:get(child).result.final)
    local evs = H.all_events(app)
    local q = H.of_kind(evs, "message_queued", child)
    local d = H.of_kind(evs, "message_delivered", child)
    assert.equal(1, #q)
    assert.equal(1, #d)
    assert.is_true(q[1].payload.interrupt)
    assert.is_true(d[1].t - q[1].t < 1, "delivered " .. (d[1].t - q[1].t) .. " s after it was queued")
    local res = res_requests()
    assert.equal(2, #res)
    assert.equal(0, #holding(res[1].messages))
    assert.equal(1, #holding(res[2].messages))
  end)

  it("(b) interrupt = true delivers within 1 s while the child is inside a 30 s model call", function()
    local app = closing(FA.app(srv, { model = "res-m", timeout_s = 60 }, [[
      return luagent.config{
        model = MODEL,
        background_tasks = { enabled = true },
        agents = { luagent.agent{ id = "res", instructions = "Research." } },
      } ]]))
    srv:script{
      { text = "too late", delay_ms = 30000 },
      { text = "read it" },
    }
    local t = app:enqueue_background("res", "dig")
    local deadline = core.now() + 10
    while #srv:requests() < 1 and core.now() < deadline do app:wait({ t.task_id }, { timeout_s = 0.02 }) end
    assert.equal(1, #srv:requests(), "the child's model call never reached the server")
    local t0 = core.now()
    local r = app:send(t.task_id, MSG, { interrupt = true })
    assert.is_true(r.ok)
    assert.is_true(r.interrupt)
    local d = FA.wait_event(app, function(ev)
      return ev.kind == "message_delivered" and ev.task_id == t.task_id
    end, 5, { t.task_id })
    assert.is_truthy(d)
    assert.is_true(core.now() - t0 < 1, "delivered after " .. (core.now() - t0) .. " s")
    local w = app:wait({ t.task_id }, { timeout_s = 10 })
    assert.equal("completed", w.tasks[1].status)
    assert.equal("read it", app:get(t.task_id).result.final)
    assert.is_true(core.now() - t0 < 10)
    local reqs = srv:requests()
    assert.equal(2, #reqs)
    assert.equal(0, #holding(reqs[1].json.messages))
    local h = holding(reqs[2].json.messages)
    assert.equal(1, #h)
    assert.equal(1, h[1].content:find("[luagent] message from the host application", 1, true))
    local evs = H.all_events(app)
    assert.equal(1, #H.of_kind(evs, "step_interrupted", t.task_id))
    assert.equal(0, #H.of_kind(evs, "lm_call", t.task_id) - 1) -- only the second call returned
  end)
end)

describe("interrupt = true through a scripted model", function()
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(function() H.rmdir(dir) end)

  -- A child whose first model call (sleep) or first tool call (sleep or a
  -- Lua loop) takes 30 s unless interrupted; it reports what it saw.
  local function app_with(kind)
    local cfg = dir .. "/agents.lua"
    H.write(cfg, string.format([[
local luagent = require "luagent"
local json = luagent.json
local KIND, MSG, DIR = %q, %q, %q
local function append(p, s) local f = assert(io.open(p, "a")); f:write(s); f:close() end
return luagent.config{
  background_tasks = { enabled = true },
  tools = {
    luagent.tool{ name = "slow", input_schema = { type = "object" }, handler = function(_, ctx)
      ctx:emit("slow_started", {})
      if KIND == "tool_sleep" then ctx:sleep(30) end
      if KIND == "tool_spawn" then ctx:spawn{ cmd = "sleep 30 & sleep 30" } end
      if KIND == "tool_loop" then
        local t0 = os.time()
        local x = 0
        while os.time() - t0 < 30 do x = x + 1 end
      end
      return "slow done"
    end },
  },
  agents = { luagent.agent{ id = "res", instructions = "Research.", tools = { "slow" },
    model = luagent.function_model(function(req, ctx)
      local n, tool_msgs = 0, {}
      for _, m in ipairs(req.messages) do
        if type(m.content) == "string" and m.content:find(MSG, 1, true) then n = n + 1 end
        if m.role == "tool" then tool_msgs[#tool_msgs + 1] = m.content end
      end
      append(DIR .. "/counts", n .. "\n")
      if n == 0 and KIND == "model" then
        ctx:emit("slow_started", {})
        ctx:sleep(30)
        return "too late"
      end
      if n == 0 then return { tool_calls = { { id = "c1", name = "slow", arguments = {} },
        { id = "c2", name = "slow", arguments = {} } } } end
      append(DIR .. "/tools", json.encode(tool_msgs) .. "\n")
      return "read it"
    end) } },
} ]], kind, MSG, dir))
    return luagent.load(cfg)
  end

  for _, kind in ipairs({ "model", "tool_sleep", "tool_loop", "tool_spawn" }) do
    it("cuts short a " .. kind:gsub("_", " ") .. " and the run reads the message next", function()
      local app = closing(app_with(kind))
      local t = app:enqueue_background("res", "dig")
      assert.is_truthy(H.await_kind(app, "slow_started", t.task_id, 10))
      local t0 = core.now()
      assert.is_true(app:send(t.task_id, MSG, { interrupt = true }).ok)
      local w = app:wait({ t.task_id }, { timeout_s = 10 })
      assert.equal("completed", w.tasks[1].status)
      assert.equal("read it", app:get(t.task_id).result.final)
      assert.is_true(core.now() - t0 < 5)
      assert.same({ "0", "1" }, lines(dir .. "/counts"))
      if kind ~= "model" then
        -- the interrupted call and the one after it are answered, not run
        local answered = json.decode(lines(dir .. "/tools")[1])
        assert.equal(2, #answered)
        local first, second = json.decode(answered[1]), json.decode(answered[2])
        assert.is_false(first.ok)
        assert.equal("interrupted", first.cause.kind)
        assert.matches("interrupted by a message", first.error)
        assert.equal("interrupted", second.cause.kind)
        assert.matches("not run", second.error)
        assert.equal(1, #H.of_kind(H.all_events(app), "slow_started", t.task_id))
      end
      if kind == "tool_spawn" then
        -- the command's whole process group went with the step
        local killed = H.of_kind(H.all_events(app), "process_killed", t.task_id)
        assert.equal(1, #killed)
        assert.equal("a message interrupted the step", killed[1].payload.reason)
        assert.is_false(core.group_alive(killed[1].payload.pgid))
      end
    end)
  end
end)

describe("a message during what would be the last model call", function()
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(function() H.rmdir(dir) end)

  it("makes the run go on for one more call, which reads it", function()
    local app = closing(luagent.load_string(string.format([[
local luagent = require "luagent"
local DIR, MSG = %q, %q
local function exists(p) local f = io.open(p); if f then f:close() end; return f ~= nil end
return luagent.config{
  background_tasks = { enabled = true },
  agents = { luagent.agent{ id = "res", instructions = "r",
    model = luagent.function_model(function(req, ctx)
      for _, m in ipairs(req.messages) do
        if type(m.content) == "string" and m.content:find(MSG, 1, true) then return "second answer" end
      end
      ctx:emit("final_call", {})
      for _ = 1, 3000 do
        if exists(DIR .. "/sent") then break end
        ctx:sleep(0.01)
      end
      return "first answer"
    end) } },
} ]], dir, MSG)))
    local t = app:enqueue_background("res", "dig")
    assert.is_truthy(H.await_kind(app, "final_call", t.task_id, 10))
    assert.is_true(app:send(t.task_id, MSG).ok)
    H.write(dir .. "/sent", "")
    assert.equal("completed", app:wait({ t.task_id }, { timeout_s = 10 }).tasks[1].status)
    local res = app:get(t.task_id).result
    assert.equal("second answer", res.final)
    local contents = {}
    for _, m in ipairs(res.messages) do contents[#contents + 1] = m.content end
    assert.equal("first answer", contents[#contents - 2])
    assert.is_truthy(contents[#contents - 1]:find(MSG, 1, true))
  end)
end)

describe("sending to tasks that cannot read", function()
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(function() H.rmdir(dir) end)

  it("(d) a finished task: bg_send answers not_found saying so, app:send and ctx:send return ok = false", function()
    local app = closing(luagent.load_string(string.format([[
local luagent = require "luagent"
local json = luagent.json
local DIR = %q
local function append(p, s) local f = assert(io.open(p, "a")); f:write(s); f:close() end
return luagent.config{
  background_tasks = { enabled = true },
  tools = {
    luagent.delegate{ agent = "res", name = "research", background = true },
    luagent.tool{ name = "poke", input_schema = { type = "object", properties = { id = { type = "string" } } },
      handler = function(args, ctx)
        append(DIR .. "/poke", json.encode(ctx:send(args.id, "late news")) .. "\n")
        local ok, err = pcall(ctx.send, ctx, "tsk_nope", "x")
        append(DIR .. "/poke", tostring(ok) .. " " .. tostring(err) .. "\n")
        return "poked"
      end },
  },
  agents = {
    luagent.agent{ id = "res", instructions = "r", model = luagent.static_model{ responses = { "finding" } } },
    luagent.agent{ id = "sup", instructions = "s", tools = { "research", "poke" },
      model = luagent.function_model(function(req)
        local r = {}
        for _, m in ipairs(req.messages) do
          if m.role == "tool" then r[#r + 1] = json.decode(m.content) end
        end
        if #r == 0 then
          return { tool_calls = { { id = "r1", name = "research", arguments = { prompt = "x" } } } }
        end
        local child = r[1].value.task_id
        if #r == 1 then
          return { tool_calls = { { id = "w", name = "bg_wait", arguments = { task_ids = { child } } } } }
        end
        if #r == 2 then
          return { tool_calls = { { id = "s", name = "bg_send", arguments = { task_id = child, message = "hi" } },
            { id = "u", name = "bg_send", arguments = { task_id = "tsk_unknown", message = "hi" } },
            { id = "p", name = "poke", arguments = { id = child } } } }
        end
        append(DIR .. "/answers", json.encode(r[3]) .. "\n" .. json.encode(r[4]) .. "\n")
        return "done"
      end) },
  },
} ]], dir)))
    local sup = app:enqueue_background("sup", "go")
    assert.equal("completed", app:wait({ sup.task_id }, { timeout_s = 10 }).tasks[1].status)
    local answers = lines(dir .. "/answers")
    local finished, unknown = json.decode(answers[1]), json.decode(answers[2])
    assert.is_false(finished.ok)
    assert.equal("not_found", finished.cause.kind)
    assert.equal("completed", finished.cause.status)
    assert.matches("has finished %(completed%)", finished.error)
    assert.is_false(unknown.ok)
    assert.equal("not_found", unknown.cause.kind)
    assert.matches("no background task", unknown.error)
    local poke = lines(dir .. "/poke")
    local via_ctx = json.decode(poke[1])
    assert.is_false(via_ctx.ok)
    assert.equal("completed", via_ctx.status)
    assert.matches("^false .*ctx:send: unknown task id", poke[2])
    -- the host
    local child = app:list{ parent_task_id = sup.task_id }[1].task_id
    local r = app:send(child, "late")
    assert.same({ ok = false, status = "completed", task_id = child }, r)
    assert.matches('app:send: unknown task id "tsk_nope"', H.raises(app.send, app, "tsk_nope", "x"))
    assert.matches('argument "message"', H.raises(app.send, app, child, 42))
    assert.matches("must not be empty", H.raises(app.send, app, child, ""))
    assert.matches("did you mean \"interrupt\"", H.raises(app.send, app, child, "x", { interupt = true }))
    -- nothing was queued on the finished child
    assert.is_nil(app:get(child).messages)
    assert.equal(0, #H.of_kind(H.all_events(app), "message_queued"))
  end)

  it("(d) a tool task reads no messages: app:send raises", function()
    local app = closing(luagent.load_string([[
local luagent = require "luagent"
return luagent.config{
  background_tasks = { enabled = true },
  tools = { luagent.tool{ name = "wait", handler = function(_, ctx) ctx:sleep(30) end } },
} ]]))
    local t = app:enqueue_tool("wait", {})
    assert.matches("not an agent", H.raises(app.send, app, t.task_id, "x"))
    app:cancel(t.task_id)
  end)
end)

describe("a queued message and kill -9 with a file store", function()
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(function() H.rmdir(dir) end)

  -- The child's model appends how often MSG was in each call; `hold` is
  -- Lua source that holds the first attempt's call (until the kill).
  local function write_config(db, hold)
    local path = dir .. "/agents.lua"
    H.write(path, string.format([[
local luagent = require "luagent"
local DIR, MSG = %q, %q
local function exists(p) local f = io.open(p); if f then f:close() end; return f ~= nil end
local function append(p, s) local f = assert(io.open(p, "a")); f:write(s); f:close() end
return luagent.config{
  background_tasks = { enabled = true },
  store = { path = %q },
  agents = { luagent.agent{ id = "res", instructions = "Research.",
    model = luagent.function_model(function(req, ctx)
      local n = 0
      for _, m in ipairs(req.messages) do
        if type(m.content) == "string" and m.content:find(MSG, 1, true) then n = n + 1 end
      end
      append(DIR .. "/counts", n .. "\n")
      %s
      return "read " .. n
    end) } },
} ]], dir, MSG, db, hold))
    return path
  end

  it("(c) a message queued before the kill is delivered once after recovery", function()
    local cfg = write_config(dir .. "/s.db", [[
      if not exists(DIR .. "/marker") then
        append(DIR .. "/marker", "")
        ctx:emit("calling", {})
        ctx:sleep(60)
      end]])
    local child = S.spawn(dir, string.format([[
local luagent = require "luagent"
local app = luagent.load(%q)
local t = app:enqueue_background("res", "dig", { retries = 1 })
print(t.task_id)
for ev in app:run_stream_until_idle{ since = 0, timeout_s = 60 } do
  if ev.kind == "calling" then break end
end
-- app:send returns once the message is committed
local r = app:send(t.task_id, %q)
print(r.ok and "sent" or "not sent")
app:run_until_idle{ timeout_s = 120 }
]], cfg, MSG))
    local id = S.line(child)
    assert.matches("^tsk_", id)
    assert.equal("sent", S.line(child))
    S.kill(child)
    local app = closing(luagent.load(cfg))
    local w = app:wait({ id }, { timeout_s = 30 })
    assert.equal("completed", w.tasks[1].status)
    assert.equal("read 1", app:get(id).result.final)
    assert.equal(2, app:get(id).attempts)
    -- the killed attempt's call had no message; the recovered one had it once
    assert.same({ "0", "1" }, lines(dir .. "/counts"))
    local evs = H.all_events(app)
    assert.equal(1, #H.of_kind(evs, "message_queued", id))
    assert.equal(1, #H.of_kind(evs, "message_delivered", id))
    local rec = app:get(id)
    assert.equal(1, #rec.messages)
    assert.is_string(rec.messages[1].delivered_at)
  end)

  it("(c) a message delivered before the kill is not delivered again after recovery", function()
    -- the call that carries the message holds the first attempt: the mark
    -- was committed before that call, so the new attempt does not get it
    local cfg = write_config(dir .. "/d.db", [[
      if not exists(DIR .. "/marker") then
        if n == 1 then
          append(DIR .. "/marker", "")
          ctx:emit("calling", {})
        end
        ctx:sleep(60)
      end]])
    local child = S.spawn(dir, string.format([[
local luagent = require "luagent"
local app = luagent.load(%q)
local t = app:enqueue_background("res", "dig", { retries = 1 })
print(t.task_id)
app:send(t.task_id, %q, { interrupt = true })
for ev in app:run_stream_until_idle{ since = 0, timeout_s = 60 } do
  if ev.kind == "calling" then break end
end
print("delivered")
app:run_until_idle{ timeout_s = 120 }
]], cfg, MSG))
    local id = S.line(child)
    assert.matches("^tsk_", id)
    assert.equal("delivered", S.line(child))
    S.kill(child)
    local app = closing(luagent.load(cfg))
    local w = app:wait({ id }, { timeout_s = 30 })
    assert.equal("completed", w.tasks[1].status)
    assert.equal("read 0", app:get(id).result.final)
    local counts = lines(dir .. "/counts")
    assert.equal("1", counts[#counts - 1])
    assert.equal("0", counts[#counts])
    local evs = H.all_events(app)
    assert.equal(1, #H.of_kind(evs, "message_delivered", id))
    assert.is_string(app:get(id).messages[1].delivered_at)
  end)
end)
