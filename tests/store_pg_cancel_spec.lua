-- Cancels across the processes of one shared PostgreSQL store (README,
-- "Several processes, one queue"): a task still queued is cancelled at
-- once from any process; one another process runs is stopped by that
-- process, and its descendants with it, wherever they run; a claim of a
-- task whose cancel was asked for never runs it. Real processes, a real
-- server.
local H = require "support.dispatch_helpers"
local S = require "support.store_helpers"
local P = require "support.pg"
local json = require "luagent.json"
local luagent = require "luagent"

-- `work` notes "<task_id> <pid>" in `started`, then sleeps `nap` seconds
-- (a cancel ends the sleep); `boss` is an agent that asks `worker` (an
-- agent calling `work`) in the background and waits for it.
local function write_config(dir, url)
  local path = dir .. "/cancel.lua"
  H.write(path, string.format([[
local luagent = require "luagent"
local started = %q
local f = assert(io.open("/proc/self/stat"))
local pid = f:read("*l"):match("^(%%d+)")
f:close()
local function step(req)
  local n = 0
  for _, m in ipairs(req.messages) do if m.role == "assistant" then n = n + 1 end end
  return n
end
local boss = luagent.function_model(function(req)
  local s = step(req)
  if s == 0 then return { tool_calls = { { name = "ask_worker", arguments = { prompt = "go" } } } } end
  if s == 1 then
    local ack = require("luagent.json").decode(req.messages[#req.messages].content)
    return { tool_calls = { { name = "bg_wait", arguments = { task_ids = { ack.value.task_id }, timeout_s = 60 } } } }
  end
  return { text = "done" }
end)
local worker = luagent.function_model(function(req)
  if step(req) == 0 then return { tool_calls = { { name = "work", arguments = { nap = 60 } } } } end
  return { text = "worked" }
end)
return luagent.config{
  background_tasks = { enabled = true, global_concurrency = 2, max_depth = 2 },
  store = { url = %q, shared = true, lease_s = 10 },
  tools = { luagent.tool{ name = "work", handler = function(args, ctx)
    local out = assert(io.open(started, "a"))
    out:write(ctx.task_id, " ", pid, "\n")
    out:close()
    ctx:sleep(args.nap or 0)
    return pid
  end } },
  agents = {
    luagent.agent{ id = "boss", model = boss,
      tools = { luagent.delegate{ agent = "worker", name = "ask_worker", background = { enabled = true } } } },
    luagent.agent{ id = "worker", model = worker, tools = { "work" } },
  },
} ]], dir .. "/started", url))
  return path
end

-- Serves until `lines` tasks have started here ("holding"), then until
-- nothing is queued or running anywhere.
local function server_body(cfg, lines)
  return string.format([[
local luagent = require "luagent"
local app = luagent.load(%q)
local function started()
  local n, fh = 0, io.open(%q)
  if fh then
    for _ in fh:lines() do n = n + 1 end
    fh:close()
  end
  return n
end
while started() < %d do app:serve{ timeout_s = 0.05 } end
print("holding")
local idle = app:serve{ until_idle = true, timeout_s = 60 }
local f = app._core:stats().finished
print("idle " .. tostring(idle) .. " " .. f.completed .. " " .. f.cancelled)
app:close()
]], cfg, cfg:match("^(.*)/") .. "/started", lines)
end

-- Claims exactly one task (the oldest queued), runs it, says "holding" once
-- a task started anywhere, then runs until nothing is left here.
local function one_claim_body(cfg)
  return string.format([[
local luagent = require "luagent"
local app = luagent.load(%q)
local c = app._core
local got
repeat got = c:store_claim(c:cluster_node(), 1, 0, 10) until #got == 1
local claim = got[1]
if c:cluster_admit(claim.task_id, claim.token, claim.cancel) == 0 then
  c:restore(claim.record)
  c:cluster_admit(claim.task_id, claim.token, claim.cancel)
end
local function started()
  local fh = io.open(%q)
  if not fh then return false end
  fh:close()
  return true
end
while not started() do app:run_until_idle{ timeout_s = 0.05 } end
print("holding")
app:run_until_idle{ timeout_s = 60 }
local f = c:stats().finished
print("done " .. f.completed .. " " .. f.cancelled)
app:close()
]], cfg, cfg:match("^(.*)/") .. "/started")
end

describe("store (postgresql): cancel across processes", function()
  local dir, url
  H.each_store(function(d, u) dir, url = d, u end, "postgresql")

  it("a task still queued is cancelled at once, and no process runs it", function()
    local cfg = write_config(dir, url)
    local app = luagent.load(cfg)
    local id = app:enqueue_tool("work", { nap = 0 }).task_id
    local r = app:cancel(id)
    assert.is_true(r.ok)
    local w = app:wait({ id }, { timeout_s = 10 })
    assert.is_true(w.done)
    local rec = app:get(id)
    assert.equal("cancelled", rec.status)
    assert.equal("cancelled", rec.error.kind)
    assert.same({ "cancelled" }, P.psql(url, "SELECT status FROM tasks WHERE task_id = '" .. id .. "'"))
    -- a process serving afterwards finds nothing to run
    local b = S.spawn(dir, string.format([[
local luagent = require "luagent"
local app = luagent.load(%q)
print("idle " .. tostring(app:serve{ until_idle = true, timeout_s = 10 }) .. " " .. app._core:stats().finished.completed)
app:close()
]], cfg))
    assert.same({ "idle true 0" }, S.finish(b))
    assert.is_false(S.exists(dir .. "/started"))
    app:close()
  end)

  it("a task another process runs is stopped there, and ends cancelled", function()
    local cfg = write_config(dir, url)
    local app = luagent.load(cfg)
    local id = app:enqueue_tool("work", { nap = 60 }).task_id
    local b = S.spawn(dir, server_body(cfg, 1))
    assert.equal("holding", S.line(b), S.read(b.err_path))
    local r = app:cancel(id)
    assert.is_true(r.ok)
    local w = app:wait({ id }, { timeout_s = 20 })
    assert.is_true(w.done, json.encode(w))
    local rec = app:get(id)
    assert.equal("cancelled", rec.status, json.encode(rec))
    assert.is_true(rec.cancel_requested)
    assert.same({ "idle true 0 1" }, S.finish(b))
    app:close()
  end)

  it("cancelling a supervisor in one process stops its child in another", function()
    local cfg = write_config(dir, url)
    local app = luagent.load(cfg)
    local boss = app:enqueue_background("boss", "delegate").task_id
    -- B claims the boss and nothing else; C serves, so it runs the child
    local b = S.spawn(dir, one_claim_body(cfg))
    local c = S.spawn(dir, server_body(cfg, 1))
    assert.equal("holding", S.line(b), S.read(b.err_path))
    assert.equal("holding", S.line(c), S.read(c.err_path))
    local child
    for l in S.read(dir .. "/started"):gmatch("[^\n]+") do child = l:match("^(%S+)") end
    assert.is_truthy(child)
    assert.is_true(app:cancel(boss).ok)
    local w = app:wait({ boss }, { timeout_s = 20 })
    assert.is_true(w.done, json.encode(w))
    assert.equal("cancelled", app:get(boss).status)
    -- the child (`work` ran in a worker agent task) ended cancelled too: a
    -- wait here on it (B enqueued it, C ran it) ends when it does
    local cw = app:wait({ child }, { timeout_s = 20 })
    assert.is_true(cw.done, json.encode(cw))
    assert.equal("cancelled", cw.tasks[1].status)
    local rows = P.psql(url, "SELECT status FROM tasks WHERE task_id <> '" .. boss .. "' ORDER BY status")
    assert.same({ "cancelled" }, rows)
    assert.same({ "done 0 1" }, S.finish(b))
    assert.same({ "idle true 0 1" }, S.finish(c))
    app:close()
  end)

  it("a message to a task of the shared queue this process does not run is refused", function()
    local cfg = write_config(dir, url)
    local app = luagent.load(cfg)
    local id = app:enqueue_background("worker", "go").task_id
    local ok, r = pcall(app.send, app, id, "hello")
    local msg = ok and type(r) == "table" and r.error and r.error.message or tostring(r)
    assert.matches("shared queue", msg)
    -- nothing was written over the queued record
    assert.same({ "queued" }, P.psql(url, "SELECT status FROM tasks WHERE task_id = '" .. id .. "'"))
    assert.is_nil(app:get(id).messages)
    app:close()
  end)
end)
