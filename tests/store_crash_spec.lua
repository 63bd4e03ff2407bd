-- File store, acceptance: kill -9 (R-20, R-40, R-33). A child process
-- enqueues tasks with slow handlers, printing each task id as enqueue
-- returns, and is killed with SIGKILL at several moments; a new app on the
-- file must find every acknowledged task, queued, re-queued or failed
-- "lost", and finish them all. The test synchronises on the child's output
-- only; the child's handlers are slow only in the child (LG_SLOW=1).
local H = require "support.dispatch_helpers"
local S = require "support.store_helpers"
local luagent = require "luagent"

local N = 30

local function write_config(dir, db, durability)
  local path = dir .. "/agents.lua"
  H.write(path, string.format([[
local luagent = require "luagent"
local slow = os.getenv("LG_SLOW") == "1"
return luagent.config{
  background_tasks = { enabled = true, global_concurrency = 4, per_agent_concurrency = 4,
                       retry_backoff_s = 0, retry_backoff_max_s = 0 },
  store = { %s, durability = %q },
  tools = { luagent.tool{ name = "work", handler = function(args, ctx)
    if slow then ctx:sleep(60) end
    return { i = args.i }
  end } },
} ]], H.store_ref(db), durability or "normal"))
  return path
end

-- The child: enqueue N tasks (odd ones without retries), printing each id
-- when enqueue returned; `pace` seconds between enqueues (pumping), then
-- "all"; with `hold`, wait until 4 tasks run, make that durable with one
-- more enqueue, print "running"; then block until killed.
local function child_body(cfg, pace, hold)
  return string.format([[
local luagent = require "luagent"
local app = luagent.load(%q)
for i = 1, %d do
  local t = app:enqueue_tool("work", { i = i }, { retries = i %% 2 == 1 and 0 or 1 })
  print(t.task_id)
  if %s > 0 then app:run_until_idle{ timeout_s = %s } end
end
print("all")
if %s then
  local started = 0
  for ev in app:run_stream_until_idle{ since = 0, timeout_s = 30 } do
    if ev.kind == "task_started" then started = started + 1 end
    if started == 4 then break end
  end
  -- a durable enqueue commits every write queued before it
  print(app:enqueue_tool("work", { i = %d }, { retries = 0 }).task_id)
  print("running")
end
app:run_until_idle{ timeout_s = 120 }
print("idle?")
]], cfg, N, pace, pace, tostring(hold), N + 1)
end

local function is_id(l) return l and l:match("^tsk_") ~= nil end

-- Recovery checks common to every kill: returns the new app's records by id.
local function check_recovery(app, acked)
  local all = app:list()
  local seen, by_i = {}, {}
  for _, r in ipairs(all) do
    assert.is_nil(seen[r.task_id], "duplicate record " .. r.task_id)
    seen[r.task_id] = r
    local i = r.args.i
    assert.is_nil(by_i[i], "task " .. i .. " stored twice")
    by_i[i] = r
  end
  for _, id in ipairs(acked) do
    local r = seen[id]
    assert.is_not_nil(r, "acknowledged task " .. id .. " is missing")
    if r.status == "failed" then
      assert.equal("lost", r.error.kind)
      assert.equal(0, r.max_retries)
      assert.equal(1, r.attempts)
    else
      -- re-queued or queued; recovery admits at once and handlers are fast
      -- here, so some may already have run
      assert.is_true(r.status == "queued" or r.status == "running" or r.status == "completed",
        r.status)
    end
  end
  -- what was not acknowledged may be there (enqueue committed, the print
  -- did not happen), but nothing beyond the next task the child enqueued
  assert.is_true(#all <= #acked + 1, string.format("%d records for %d acks", #all, #acked))
  return seen
end

-- Recovery events of this app: task_recovered per re-queued task.
local function recovered(app)
  local out = {}
  for _, ev in ipairs(H.of_kind(H.all_events(app), "task_recovered")) do out[ev.task_id] = true end
  return out
end

local function finish_all(app, acked)
  local r = app:run_until_idle{ timeout_s = 20 }
  assert.is_true(r.idle)
  local requeued = recovered(app)
  local lost = 0
  for _, id in ipairs(acked) do
    local rec = app:get(id)
    if rec.status == "failed" then
      assert.equal("lost", rec.error.kind)
      lost = lost + 1
    else
      assert.equal("completed", rec.status)
      assert.equal(rec.args.i, rec.result.i)
      if requeued[id] then
        -- the lost attempt counts (R-40): it ran once more, as attempt 2
        assert.equal(1, rec.max_retries)
        assert.equal(2, rec.attempts)
      else
        assert.equal(1, rec.attempts)
      end
    end
  end
  return lost, requeued
end

for _, engine in ipairs(H.store_engines) do
describe("store (" .. engine .. "): kill -9 (R-20, R-40)", function()
  local dir, db
  H.each_store(function(d, path) dir, db = d, path end, engine)

  -- kill after k acknowledgements, the child pacing its enqueues
  for _, sc in ipairs({ { k = 1, pace = 0 }, { k = 5, pace = 0.003 }, { k = 13, pace = 0.001 },
                        { k = 22, pace = 0 } }) do
    it(string.format("no acknowledged task is missing after a kill after %d acks", sc.k), function()
      local cfg = write_config(dir, db)
      local child = S.spawn(dir, child_body(cfg, sc.pace, false), { LG_SLOW = "1" })
      local acked = {}
      while #acked < sc.k do
        local l = S.line(child)
        assert.is_true(is_id(l), tostring(l) .. "\n" .. S.read(child.err_path))
        acked[#acked + 1] = l
      end
      for _, l in ipairs(S.kill(child)) do
        if is_id(l) then acked[#acked + 1] = l end
      end
      local app = luagent.load(cfg)
      check_recovery(app, acked)
      finish_all(app, acked)
      app:close()
    end)
  end

  for _, durability in ipairs({ "normal", "full" }) do
    it("running tasks at the kill: re-queued with attempts left, else failed \"lost\" (" ..
       durability .. ")", function()
      local cfg = write_config(dir, db, durability)
      local child = S.spawn(dir, child_body(cfg, 0, true), { LG_SLOW = "1" })
      local acked, l = {}, nil
      repeat
        l = S.line(child)
        if is_id(l) then acked[#acked + 1] = l end
      until l == nil or l == "running"
      assert.equal("running", l, S.read(child.err_path))
      S.kill(child)
      assert.equal(N + 1, #acked)

      local app = luagent.load(cfg)
      local recs = check_recovery(app, acked)
      -- tasks 1..4 were running: 1 and 3 had no retries, 2 and 4 had one
      local first = {}
      for _, r in pairs(recs) do first[r.args.i] = r end
      for i = 1, 4 do
        if i % 2 == 1 then
          assert.equal("failed", first[i].status)
          assert.equal("lost", first[i].error.kind)
        else
          assert.are_not.equal("failed", first[i].status)
        end
      end
      for i = 5, N + 1 do assert.are_not.equal("failed", first[i].status) end
      local lost, requeued = finish_all(app, acked)
      assert.equal(2, lost)
      assert.is_true(requeued[first[2].task_id])
      assert.is_true(requeued[first[4].task_id])
      for i = 5, N + 1 do assert.is_nil(requeued[first[i].task_id]) end
      -- the lost ones finished with a task_finished event in this app
      local fin = H.of_kind(H.all_events(app), "task_finished", first[1].task_id)
      assert.equal(1, #fin)
      assert.equal("failed", fin[1].payload.status)
      app:close()
    end)
  end
end)

describe("store (" .. engine .. "): kill -9 after delivery (R-26, R-33)", function()
  local dir, db
  H.each_store(function(d, path) dir, db = d, path end, engine)

  it("a completed record and its delivered flag are the same after the crash", function()
    local cfg = dir .. "/agents.lua"
    H.write(cfg, string.format([[
local luagent = require "luagent"
local NOTICE = "[luagent] background results:"
local job = luagent.tool{ name = "job", background = { enabled = true },
  input_schema = { type = "object", properties = { key = { type = "string" } } },
  handler = function(args) return { key = args.key, n = 7 } end }
local park = luagent.tool{ name = "park", handler = function(_, ctx) ctx:sleep(60) end }
return luagent.config{
  background_tasks = { enabled = true },
  store = { %s },
  model = luagent.function_model(function(req)
    for _, m in ipairs(req.messages) do
      if m.role == "user" and type(m.content) == "string" and m.content:sub(1, #NOTICE) == NOTICE then
        return { text = "saw the results" }
      end
    end
    local last = req.messages[#req.messages]
    if last.role == "user" and last.content == "start" then
      return { tool_calls = { { id = "call_1", name = "job", arguments = { key = "k1" } } } }
    end
    return { text = "nothing yet" }
  end),
  agents = { luagent.agent{ id = "boss", instructions = "Delegate.", tools = { job } } },
  tools = { park },
} ]], H.store_ref(db)))
    local child = S.spawn(dir, string.format([[
local luagent = require "luagent"
local json = require "luagent.json"
local app = luagent.load(%q)
local r1 = app:run("boss", "start", { thread_id = "t" })
assert(r1.status == "completed", r1.status)
local id = app:list{ agent_id = "boss" }[1].task_id
app:wait({ id })
-- delivered by the run's next model call when the job was quick enough,
-- else by the next run of that agent and thread
if not app:get(id).delivered then
  local r2 = app:run("boss", "again", { thread_id = "t" })
  assert(r2.final == "saw the results", tostring(r2.final))
end
assert(app:get(id).delivered == true)
print(json.encode(app:get(id)))
-- something running at the kill, too
local p = app:enqueue_tool("park", {})
for ev in app:run_stream_until_idle{ timeout_s = 30 } do
  if ev.kind == "task_started" and ev.task_id == p.task_id then break end
end
print("ready")
app:run_until_idle{ timeout_s = 120 }
]], cfg))
    local rec_line = S.line(child)
    assert.is_truthy(rec_line and rec_line:match("^{"), tostring(rec_line) .. S.read(child.err_path))
    assert.equal("ready", S.line(child))
    S.kill(child)
    local before = luagent.json.decode(rec_line)
    assert.is_true(before.delivered)
    assert.equal("completed", before.status)

    local app = luagent.load(cfg)
    assert.same(before, app:get(before.task_id))
    -- not announced again on the next run of that agent and thread
    local r3 = app:run("boss", "later", { thread_id = "t" })
    assert.equal("nothing yet", r3.final)
    app:close{ mode = "cancel" }
    local app2 = luagent.load(cfg)
    assert.same(before, app2:get(before.task_id))
    app2:close()
  end)
end)
end
