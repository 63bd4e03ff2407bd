-- PostgreSQL store shared by several processes (README, "Several processes,
-- one queue"): tasks enqueued in one process run wherever they are claimed,
-- each once, under a cluster-wide global_concurrency; a process killed
-- mid-run loses its tasks to the others once its leases lapse, and what it
-- writes late is rejected by its stale fencing token. Real processes, a real
-- server; the side effect of each run is a line appended to a file.
local H = require "support.dispatch_helpers"
local S = require "support.store_helpers"
local P = require "support.pg"
local json = require "luagent.json"

-- The config every process loads: `work` appends "<task_id> <pid>
-- <attempt>" to `effects`, after `nap` seconds (LG_NAP overrides it).
local function write_config(dir, url, lease_s)
  local path = dir .. "/cluster.lua"
  H.write(path, string.format([[
local luagent = require "luagent"
local effects = %q
local f = assert(io.open("/proc/self/stat"))
local pid = f:read("l"):match("^(%%d+)")
f:close()
return luagent.config{
  background_tasks = { enabled = true, global_concurrency = 6, per_agent_concurrency = 6, scope = "cluster",
                       retry_backoff_s = 0, retry_backoff_max_s = 0 },
  store = { url = %q, shared = true, lease_s = %s },
  tools = { luagent.tool{ name = "work", handler = function(args, ctx)
    ctx:sleep(tonumber(os.getenv("LG_NAP") or "") or args.nap or 0)
    local out = assert(io.open(effects, "a"))
    out:write(ctx.task_id, " ", pid, " ", ctx.attempt, "\n")
    out:close()
    return { i = args.i, pid = pid }
  end } },
} ]], dir .. "/effects", url, tostring(lease_s or 10)))
  return path
end

-- A process serving the queue until nothing is left anywhere.
local function server_body(cfg)
  return string.format([[
local luagent = require "luagent"
local app = luagent.load(%q)
print("serving")
local idle = app:serve{ until_idle = true, timeout_s = 120 }
print("idle " .. tostring(idle) .. " " .. app._core:stats().finished.completed)
app:close()
]], cfg)
end

-- An event's ts (ISO 8601, UTC, ms) as ms since the epoch: one clock for
-- every process of the host.
local function wall_ms(ts)
  local y, mo, d, h, mi, sec, ms = ts:match("^(%d+)-(%d+)-(%d+)T(%d+):(%d+):(%d+)%.?(%d*)")
  assert(y, "not an ISO time: " .. tostring(ts))
  local days = math.floor(os.time{ year = tonumber(y), month = tonumber(mo), day = tonumber(d), hour = 12 } / 86400)
  return ((days * 24 + tonumber(h)) * 60 + tonumber(mi)) * 60000 + tonumber(sec) * 1000 +
    (ms ~= "" and tonumber((ms .. "00"):sub(1, 3)) or 0)
end

local function effect_lines(dir)
  local out = {}
  for l in S.read(dir .. "/effects"):gmatch("[^\n]+") do
    local id, pid, attempt = l:match("^(%S+) (%d+) (%d+)$")
    out[#out + 1] = { id = id, pid = pid, attempt = tonumber(attempt) }
  end
  return out
end

describe("store (postgresql): several processes, one queue", function()
  local dir, url
  H.each_store(function(d, u) dir, url = d, u end, "postgresql")

  it("three processes run 1,000 tasks exactly once, never more than 6 at a time, all three working", function()
    local cfg = write_config(dir, url)
    local luagent = require "luagent"
    local app = luagent.load(cfg)
    local ids = {}
    for i = 1, 1000 do ids[i] = app:enqueue_tool("work", { i = i, nap = 0.002 }).task_id end
    -- nothing runs in the enqueuer unless it serves
    assert.equal(0, app._core:stats().running)
    local kids = {}
    for i = 1, 3 do
      kids[i] = S.spawn(dir, server_body(cfg))
      assert.equal("serving", S.line(kids[i]), S.read(kids[i].err_path))
    end
    local pids, served = {}, 0
    for i, kid in ipairs(kids) do
      local out = S.finish(kid)
      local idle, n = (out[1] or ""):match("^idle (%S+) (%d+)$")
      assert.equal("true", idle, table.concat(out, "\n") .. S.read(kid.err_path))
      pids[i] = tostring(kid.pid)
      served = served + tonumber(n)
      assert.is_true(tonumber(n) > 0, "process " .. i .. " ran nothing")
    end
    assert.equal(1000, served)
    -- the side effects: each task once, by one of the three
    local seen, by_pid = {}, {}
    for _, e in ipairs(effect_lines(dir)) do
      assert.is_nil(seen[e.id], e.id .. " ran twice")
      seen[e.id] = true
      by_pid[e.pid] = (by_pid[e.pid] or 0) + 1
    end
    for _, id in ipairs(ids) do assert.is_true(seen[id], id .. " never ran") end
    for _, pid in ipairs(pids) do assert.is_true((by_pid[pid] or 0) > 0) end
    -- every record completed, read from any process
    assert.equal("completed", app:get(ids[1]).status)
    assert.equal("completed", app:get(ids[1000]).status)
    assert.same({ "completed|1000" }, P.psql(url, "SELECT status, count(*) FROM tasks GROUP BY status"))
    -- the stored start and finish events, by time: never more than 6 running
    local marks = {}
    for _, row in ipairs(P.psql(url,
        "SELECT event FROM events WHERE event LIKE '%\"kind\":\"task_started\"%'" ..
        " OR event LIKE '%\"kind\":\"task_finished\"%'")) do
      local ev = json.decode(row)
      marks[#marks + 1] = { t = wall_ms(ev.ts), d = ev.kind == "task_started" and 1 or -1 }
    end
    assert.equal(2000, #marks)
    table.sort(marks, function(a, b)
      if a.t ~= b.t then return a.t < b.t end
      return a.d < b.d -- a finish at the same instant frees its slot first
    end)
    local running, most = 0, 0
    for _, m in ipairs(marks) do
      running = running + m.d
      if running > most then most = running end
    end
    assert.is_true(most <= 6, "at most 6 running, saw " .. most)
    assert.is_true(most >= 2, "the processes should have overlapped, saw " .. most)
    -- one stream from the enqueuer: every process's events in one order,
    -- each task enqueued (here), started and finished (there) in that order
    local stream, since = {}, 0
    repeat
      local batch = app:events{ since = since, limit = 1000 }
      for _, ev in ipairs(batch) do
        assert.is_true(ev.seq > since)
        since = ev.seq
        stream[#stream + 1] = ev
      end
    until #batch == 0
    local step, nodes, here = {}, {}, nil
    for _, ev in ipairs(stream) do
      nodes[ev.node] = true
      if ev.kind == "task_enqueued" then
        assert.is_nil(step[ev.task_id])
        step[ev.task_id] = 1
        here = here or ev.node
        assert.equal(here, ev.node)
      elseif ev.kind == "task_started" then
        assert.equal(1, step[ev.task_id])
        step[ev.task_id] = 2
        assert.are_not.equal(here, ev.node)
      elseif ev.kind == "task_finished" then
        assert.equal(2, step[ev.task_id])
        step[ev.task_id] = 3
      end
    end
    for _, id in ipairs(ids) do assert.equal(3, step[id], id) end
    local n_nodes = 0
    for _ in pairs(nodes) do n_nodes = n_nodes + 1 end
    assert.equal(4, n_nodes) -- the enqueuer and the three that ran them
    app:close()
  end)

  it("a process killed mid-run: its running tasks are queued again after lease_s and finish elsewhere", function()
    local cfg = write_config(dir, url, 2)
    local luagent = require "luagent"
    local app = luagent.load(cfg)
    local ids = {}
    for i = 1, 6 do ids[i] = app:enqueue_tool("work", { i = i }, { retries = 1 }).task_id end
    -- A takes all six (the cluster's cap) and blocks in them
    local a = S.spawn(dir, string.format([[
local luagent = require "luagent"
local app = luagent.load(%q)
while app._core:stats().running < 6 do app:serve{ timeout_s = 0.05 } end
print("holding " .. app._core:stats().running)
app:serve{ timeout_s = 120 }
]], cfg), { LG_NAP = "60" })
    assert.equal("holding 6", S.line(a), S.read(a.err_path))
    assert.same({ "6" }, P.psql(url, "SELECT count(*) FROM tasks WHERE owner IS NOT NULL"))
    S.kill(a)
    -- B runs them once the lease lapsed: attempt 2 each
    local b = S.spawn(dir, server_body(cfg))
    assert.equal("serving", S.line(b))
    local out = S.finish(b)
    assert.equal("idle true 6", out[1], S.read(b.err_path))
    local effects = effect_lines(dir)
    assert.equal(6, #effects)
    for _, e in ipairs(effects) do
      assert.equal(tostring(b.pid), e.pid)
      assert.equal(2, e.attempt)
    end
    for _, id in ipairs(ids) do
      local rec = app:get(id)
      assert.equal("completed", rec.status)
      assert.equal(2, rec.attempts)
    end
    app:close()
  end)

  it("a process stopped past its lease finishes late: its write is rejected by the stale fencing token", function()
    local cfg = write_config(dir, url, 2)
    local luagent = require "luagent"
    local app = luagent.load(cfg)
    local id = app:enqueue_tool("work", { i = 1, nap = 3 }, { retries = 1 }).task_id
    local c = S.spawn(dir, string.format([[
local luagent = require "luagent"
local app = luagent.load(%q)
while app._core:stats().running < 1 do app:serve{ timeout_s = 0.05 } end
print("holding")
app:run_until_idle{ timeout_s = 60 }
-- a durable write: everything queued before it is committed, the record too
app._core:thread_put("sync", "[]")
local info = app._core:store_info()
print("stale " .. info.stale_writes .. " " .. app._core:stats().finished.completed)
app:close()
]], cfg))
    assert.equal("holding", S.line(c), S.read(c.err_path))
    assert(os.execute("kill -STOP " .. c.pid))
    -- B takes the task over once C's lease lapsed, and finishes it
    local b = S.spawn(dir, server_body(cfg), { LG_NAP = "0" })
    assert.equal("serving", S.line(b))
    local out = S.finish(b)
    assert.equal("idle true 1", out[1], S.read(b.err_path))
    local by_b = app:get(id)
    assert.equal("completed", by_b.status)
    assert.equal(tostring(b.pid), by_b.result.pid)
    -- C wakes up, finishes its attempt and writes: rejected
    assert(os.execute("kill -CONT " .. c.pid))
    local rest = S.finish(c)
    assert.equal("stale 1 1", rest[1], S.read(c.err_path))
    assert.same(by_b, app:get(id))
    app:close()
  end)

  -- LISTEN/NOTIFY: an idle serve is woken by another process's enqueue (a
  -- wake-up only: without it the serve would still find the task, later)
  it("an idle serve is woken by the NOTIFY of another process's enqueue", function()
    local cfg = write_config(dir, url)
    local luagent = require "luagent"
    local app = luagent.load(cfg)
    local b = S.spawn(dir, string.format([[
local luagent = require "luagent"
local app = luagent.load(%q)
while not app._core:cluster_listening() do app:serve{ timeout_s = 0.01 } end
print("listening " .. app:store_info().wakeups)
while app._core:stats().finished.completed < 1 do app:serve{ timeout_s = 5 } end
print("woken " .. app:store_info().wakeups)
app:close()
]], cfg), { LG_NAP = "0" })
    assert.equal("listening 0", S.line(b), S.read(b.err_path))
    local id = app:enqueue_tool("work", { i = 1 }).task_id
    local out = S.finish(b)
    local n = tonumber((out[1] or ""):match("^woken (%d+)$"))
    assert.is_truthy(n, table.concat(out, "\n") .. S.read(b.err_path))
    assert.is_true(n >= 1)
    assert.equal("completed", app:get(id).status)
    app:close()
  end)
end)
