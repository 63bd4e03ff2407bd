-- Re-attaching (README, "Re-attaching"): a supervisor task that waited on
-- three background children and is retried after a failure, suspended and
-- resumed, or killed with SIGKILL and recovered, finds the children its
-- earlier attempt started instead of starting them again: exactly three
-- child tasks exist afterwards, and each child's tool ran once (it appends
-- a line to a file: a side effect no retry can hide).
local closing = require "support.closing"
local H = require "support.dispatch_helpers"
local S = require "support.store_helpers"
local fake = require "support.fake_openai_client"
local FA = require "support.fake_openai_app"
local luagent = require "luagent"
local json = luagent.json

-- The supervisor's scripted model: three background `work` calls, then
-- bg_wait on them, then the `after` tool, then "done". With how = "fail"
-- the model raises in the first attempt once bg_wait returned, which fails
-- the run and so the attempt; with how = "pause" `after` sleeps in the
-- first attempt until the host closes or kills the app. The marker file
-- says which attempt it is.
local function write_config(dir, how, db)
  local path = dir .. "/agents.lua"
  H.write(path, string.format([[
local luagent = require "luagent"
local json = luagent.json
local DIR, HOW = %q, %q
local function exists(p) local f = io.open(p); if f then f:close() end; return f ~= nil end
local function mark(p) local f = assert(io.open(p, "w")); f:close() end
local function results(req)
  local out = {}
  for _, m in ipairs(req.messages) do
    if m.role == "tool" then out[#out + 1] = json.decode(m.content) end
  end
  return out
end
return luagent.config{
  background_tasks = { enabled = true, retry_backoff_s = 0.01, retry_backoff_max_s = 0.01 },
  store = %s,
  tools = {
    luagent.tool{ name = "work", input_schema = { type = "object" },
      background = { enabled = true },
      handler = function(args, ctx)
        local f = assert(io.open(DIR .. "/runs", "a"))
        f:write(args.n, " ", ctx.task_id, "\n")
        f:close()
        return args.n
      end },
    luagent.tool{ name = "after", input_schema = { type = "object" },
      handler = function(_, ctx)
        if HOW == "fail" or exists(DIR .. "/marker") then return "second attempt" end
        mark(DIR .. "/marker")
        ctx:emit("paused", {})
        ctx:sleep(60)
      end },
  },
  agents = { luagent.agent{ id = "sup", instructions = "x", tools = { "work", "after" },
    budget = { max_iterations = 10 },
    model = luagent.function_model(function(req)
      local r = results(req)
      if #r == 0 then
        local calls = {}
        for n = 1, 3 do calls[n] = { id = "w" .. n, name = "work", arguments = { n = n } } end
        return { tool_calls = calls }
      end
      if #r == 3 then
        local ids = {}
        for i = 1, 3 do ids[i] = r[i].value.task_id end
        return { tool_calls = { { id = "bw", name = "bg_wait", arguments = { task_ids = ids } } } }
      end
      if #r == 4 and HOW == "fail" and not exists(DIR .. "/marker") then
        mark(DIR .. "/marker")
        error("the first attempt fails")
      end
      if #r == 4 then return { tool_calls = { { id = "af", name = "after", arguments = {} } } } end
      return "done"
    end) } },
} ]], dir, how, db and string.format("{ path = %q }", db) or "nil"))
  return path
end

-- The lines of the runs file: n -> how many times child n ran.
local function runs(dir)
  local count, lines = {}, 0
  local f = io.open(dir .. "/runs")
  if not f then return count, 0 end
  for l in f:lines() do
    local n = tonumber(l:match("^(%d+)"))
    count[n] = (count[n] or 0) + 1
    lines = lines + 1
  end
  f:close()
  return count, lines
end

local function check(app, sup_id, dir)
  local w = app:wait({ sup_id }, { timeout_s = 30 })
  assert.equal("completed", w.tasks[1].status)
  assert.equal("done", app:get(sup_id).result.final)
  local kids = app:list{ parent_task_id = sup_id }
  assert.equal(3, #kids)
  for _, k in ipairs(kids) do
    assert.equal("work", k.tool)
    assert.equal("completed", k.status)
    assert.equal(1, k.attempts)
    assert.matches("^spawn:sup:", k.idempotency_key)
  end
  local count, lines = runs(dir)
  assert.equal(3, lines)
  assert.same({ 1, 1, 1 }, count)
end

describe("re-attaching to the children of an earlier attempt", function()
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(function() H.rmdir(dir) end)

  it("(a) a supervisor retried after a failure re-attaches to its 3 children", function()
    local app = closing(luagent.load(write_config(dir, "fail")))
    local sup = app:enqueue_background("sup", "go", { retries = 1 })
    check(app, sup.task_id, dir)
    assert.equal(2, app:get(sup.task_id).attempts)
  end)

  it("(b) a supervisor suspended by close and resumed re-attaches to its 3 children", function()
    local db = dir .. "/s.db"
    local cfg = write_config(dir, "pause", db)
    local sup_id
    do
      local app = closing(luagent.load(cfg))
      sup_id = app:enqueue_background("sup", "go").task_id
      assert.is_truthy(H.await_kind(app, "paused", sup_id, 30))
      app:close{ mode = "suspend" }
    end
    local app = closing(luagent.load(cfg))
    check(app, sup_id, dir)
  end)

  it("(c) a supervisor killed with SIGKILL and recovered re-attaches to its 3 children", function()
    local db = dir .. "/k.db"
    local cfg = write_config(dir, "pause", db)
    local child = S.spawn(dir, string.format([[
local luagent = require "luagent"
local app = luagent.load(%q)
local sup = app:enqueue_background("sup", "go", { retries = 1 })
print(sup.task_id)
for ev in app:run_stream_until_idle{ since = 0, timeout_s = 60 } do
  if ev.kind == "paused" then break end
end
-- a durable enqueue commits every write queued before it
app:enqueue_tool("after", {})
print("paused")
app:run_until_idle{ timeout_s = 120 }
]], cfg))
    local sup_id = S.line(child)
    assert.matches("^tsk_", sup_id)
    assert.equal("paused", S.line(child))
    S.kill(child)
    local app = closing(luagent.load(cfg))
    check(app, sup_id, dir)
  end)
end)

describe("re-attaching through luagent.openai", function()
  local srv, dir
  setup(function() srv = fake.start() end)
  teardown(function() srv:stop() end)
  before_each(function()
    srv:reset()
    dir = H.tmpdir()
  end)
  after_each(function() H.rmdir(dir) end)

  it("a supervisor whose model call fails is retried and finds its 3 children", function()
    local app = closing(FA.app(srv, {}, string.format([[
      local DIR = %q
      return luagent.config{
        model = MODEL,
        background_tasks = { enabled = true, retry_backoff_s = 0.01, retry_backoff_max_s = 0.01 },
        tools = { luagent.tool{ name = "work", input_schema = { type = "object" },
          background = { enabled = true },
          handler = function(args)
            local f = assert(io.open(DIR .. "/runs", "a"))
            f:write(args.n, "\n")
            f:close()
            return args.n
          end } },
        agents = { luagent.agent{ id = "sup", instructions = "x", tools = { "work" } } },
      } ]], dir)))
    local calls = {}
    for n = 1, 3 do calls[n] = { id = "w" .. n, name = "work", arguments = { n = n } } end
    srv:script{
      { tool_calls = calls },
      { status = 500, body = { error = { message = "the first attempt fails" } } },
      { tool_calls = calls },
      { text = "done" },
    }
    local sup = app:enqueue_background("sup", "go", { retries = 1 })
    local w = app:wait({ sup.task_id }, { timeout_s = 30 })
    assert.equal("completed", w.tasks[1].status)
    assert.equal(2, app:get(sup.task_id).attempts)
    local kids = app:list{ parent_task_id = sup.task_id }
    assert.equal(3, #kids)
    local ids = {}
    for i, k in ipairs(kids) do ids[i] = k.task_id end
    app:wait(ids, { timeout_s = 30 })
    local count, lines = runs(dir)
    assert.equal(3, lines)
    assert.same({ 1, 1, 1 }, count)
    -- the second attempt's acks named the first attempt's children
    local reqs = srv:requests()
    assert.equal(4, #reqs)
    local acked = {}
    for _, m in ipairs(reqs[4].json.messages) do
      if m.role == "tool" then acked[#acked + 1] = json.decode(m.content).value.task_id end
    end
    table.sort(acked)
    table.sort(ids)
    assert.same(ids, acked)
  end)
end)
