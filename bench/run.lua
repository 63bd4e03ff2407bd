-- make bench: the figures of bench/README.md. Figures, not assertions.
package.path = "./lua/?.lua;./lua/?/init.lua;./tests/?.lua;" .. package.path
package.cpath = "./?.so;" .. package.cpath
local luagent = require("luagent")
local core = require("luagent.core")

local TASKS = tonumber(os.getenv("BENCH_TASKS")) or 10000

-- BENCH_ONLY=host,poll runs only the sections named (bench/README.md)
local SECTIONS = { "targets", "model_path", "streaming", "dispatch", "latency", "memory", "model", "rate", "store", "scale", "poll",
  "churn", "host" }
local ONLY = os.getenv("BENCH_ONLY") or ""
local function want(name)
  return ONLY == "" or ("," .. ONLY .. ","):find("," .. name .. ",", 1, true) ~= nil
end
for name in ONLY:gmatch("[^,]+") do
  local known = false
  for _, s in ipairs(SECTIONS) do known = known or s == name end
  if not known then
    io.stderr:write(string.format("BENCH_ONLY: no section %q (sections: %s)\n", name, table.concat(SECTIONS, ", ")))
    os.exit(2)
  end
end

local CALLS = tonumber(os.getenv("BENCH_CALLS")) or 300
local common = dofile("bench/common.lua")
local config, percentile, rss_kb = common.tool_config, common.percentile, common.rss_kb

print(string.format("luagent %s bench (%s)\n", luagent.version, os.date("!%Y-%m-%d %H:%M UTC")))

if want("targets") or want("model_path") or want("streaming") then dofile("bench/targets.lua") end

-- 1. dispatch throughput --------------------------------------------------
if want("dispatch") then
  print(string.format("dispatch: %d trivial tool tasks (enqueue all, then wait)", TASKS))
  for _, n in ipairs({ 1, 2, 4 }) do
    local app <close> = luagent.load_string(config(n))
    -- warm the workers up so state creation is not counted
    local warm = {}
    for i = 1, n do warm[i] = app:enqueue_tool("noop", { i = i }).task_id end
    app:wait(warm)
    local t0 = core.now()
    for i = 1, TASKS do app:enqueue_tool("noop", { i = i }) end
    local t1 = core.now()
    app:run_until_idle()
    local t2 = core.now()
    print(string.format("  %d worker%s  %8.0f tasks/s   (enqueue %6.1f us/task)", n, n == 1 and " " or "s",
      TASKS / (t2 - t0), (t1 - t0) / TASKS * 1e6))
  end
end

-- 2. enqueue -> start latency with an idle worker ---------------------------
if want("latency") then
  local app <close> = luagent.load_string(config(1))
  app:wait({ app:enqueue_tool("now", {}).task_id })
  local lat = {}
  for i = 1, 2000 do
    local t0 = core.now()
    local rec = app:enqueue_tool("now", {})
    local w = app:wait({ rec.task_id })
    lat[i] = (w.tasks[1].result - t0) * 1e6
  end
  table.sort(lat)
  print(string.format("\nlatency enqueue->handler start, idle worker: p50 %.0f us, p99 %.0f us",
    percentile(lat, 0.5), percentile(lat, 0.99)))
end

-- 3. memory per idle worker state -------------------------------------------
if want("memory") then
  local N = 16
  collectgarbage()
  local before = rss_kb()
  local app <close> = luagent.load_string(config(N))
  local ids = {}
  for i = 1, N do
    -- each task holds its worker a moment, so N states exist at once
    ids[i] = app:enqueue_tool("hold", {}).task_id
  end
  app:wait(ids)
  local st = app:stats()
  collectgarbage()
  local after = rss_kb()
  print(string.format("memory: %d worker states, RSS +%.0f KiB per worker", st.workers,
    (after - before) / math.max(st.workers, 1)))
end

-- 4. model path: luagent.openai vs raw libcurl -------------------------------
if want("model") then
  local fake = require("support.fake_openai_client")
  local srv = fake.start()
  local replies = {}
  for i = 1, CALLS do replies[i] = { text = "ok", usage = { prompt_tokens = 10, completion_tokens = 2 } } end
  srv:script(replies)
  local app <close> = luagent.load_string(string.format([[
local luagent = require "luagent"
return luagent.config{
  model = luagent.openai{ model = "bench", base_url = %q, api_key = "k", max_retries = 0 },
  agents = { luagent.agent{ id = "a", instructions = "Answer." } },
}]], srv.url))
  local c0, w0 = os.clock(), core.now()
  for _ = 1, CALLS do
    local r = app:run("a", "hello")
    assert(r.status == "completed", r.error and r.error.message)
  end
  local cpu, wall = (os.clock() - c0) / CALLS * 1e6, (core.now() - w0) / CALLS * 1e6
  -- the same request body, posted by plain libcurl
  local body = srv:requests()[1].body
  local f = assert(io.open("build/bench_body.json", "wb"))
  f:write(body)
  f:close()
  srv:script(replies)
  local p = io.popen(string.format("./build/raw_curl %s/chat/completions build/bench_body.json %d",
    srv.url, CALLS))
  local raw = p:read("a")
  p:close()
  srv:stop()
  local rc, rw = raw:match("([%d%.]+) ([%d%.]+)")
  print(string.format("\nmodel path, %d calls to a local fake server (one app:run = one call):", CALLS))
  print(string.format("  luagent app:run + openai   CPU %7.0f us/call   wall %7.0f us/call", cpu, wall))
  print(string.format("  raw libcurl, same request  CPU %7.0f us/call   wall %7.0f us/call",
    tonumber(rc) or 0, tonumber(rw) or 0))
end

-- 4b. rate budget: the cost of an uncontended budget per model call --------
if want("rate") then
  local ratelimit = require("luagent.ratelimit")
  local context = require("luagent.context")
  local app <close> = luagent.load_string([[
local luagent = require "luagent"
return luagent.config{ agents = { luagent.agent{ id = "a" } } }]])
  local ctx = context.new(app._env, { run_id = "run_bench", agent_id = "a", depth = 0 })
  local limits = { requests_per_minute = 1000000000, tokens_per_minute = 1000000000000,
    max_concurrency = 1000 }
  local N = 200000
  ratelimit.acquire(ctx, "bench", limits, 100):done(120) -- defined once, as in a run
  local c0 = os.clock()
  for _ = 1, N do ratelimit.acquire(ctx, "bench", limits, 100):done(120) end
  local lua_us = (os.clock() - c0) / N * 1e6
  local h = app._core
  c0 = os.clock()
  for _ = 1, N do
    local _, probe = h:rate_try("bench", 100)
    h:rate_done("bench", 100, probe, 120, 0)
  end
  local c_us = (os.clock() - c0) / N * 1e6
  print(string.format("\nrate budget, uncontended (take + give back, %d calls): %.2f us/call " ..
    "(core only %.2f us)", N, lua_us, c_us))
end

-- 5. store: enqueue throughput ---------------------------------------------
if want("store") then
  local N = math.min(TASKS, 5000)
  print(string.format("\nstore: enqueue %d tool tasks (each durable before enqueue returns)", N))
  local function run(label, store, url)
    local dir = os.tmpname()
    os.remove(dir)
    local extra = store and string.format("store = { %s = %q, durability = %q },",
      url and "url" or "path", url or (dir .. ".db"), store) or ""
    local ok, app = pcall(luagent.load_string, config(4, extra))
    if not ok then
      print(string.format("  %-16s (unavailable: %s)", label, tostring(app):sub(1, 60)))
      return
    end
    local t0 = core.now()
    for i = 1, N do app:enqueue_tool("noop", { i = i }) end
    local t1 = core.now()
    app:run_until_idle()
    app:close()
    os.remove(dir .. ".db")
    os.remove(dir .. ".db-wal")
    os.remove(dir .. ".db-shm")
    os.remove(dir .. ".db.lock")
    print(string.format("  %-16s %8.0f enqueues/s", label, N / (t1 - t0)))
  end
  run("memory")
  run("file, normal", "normal")
  run("file, full", "full")
  -- the same on PostgreSQL: a throw-away cluster on a Unix socket, with the
  -- server's durable defaults (fsync on)
  local p = io.popen("LUAGENT_PG_DURABLE=1 tests/support/pg_server.sh start 2>&1")
  local out = p:read("a")
  p:close()
  local pgdir = out:match("(/tmp/luagent%-pg%.%w+)")
  if not pgdir then
    print(string.format("  %-16s (unavailable: %s)", "postgresql", out:gsub("\n", " "):sub(1, 60)))
  else
    local function fresh(name)
      os.execute(string.format("psql -X -q -h %s -U postgres -d postgres -c 'CREATE DATABASE %s'", pgdir, name))
      return string.format("postgresql://postgres@/%s?host=%s", name, pgdir)
    end
    run("postgres, normal", "normal", fresh("bench_normal"))
    run("postgres, full", "full", fresh("bench_full"))
    -- one shared queue drained by 1, 2 and 4 processes (4 workers each)
    local M = 2000
    print(string.format("\nstore: %d tool tasks on one shared PostgreSQL queue, drained by n processes", M))
    for _, procs in ipairs({ 1, 2, 4 }) do
      local db = fresh("bench_shared_" .. procs)
      local cfgpath = os.tmpname()
      local f = assert(io.open(cfgpath, "w"))
      f:write(common.tool_config(4, string.format("store = { url = %q, shared = true },", db)))
      f:close()
      local app = luagent.load(cfgpath)
      for i = 1, M do app:enqueue_tool("noop", { i = i }) end
      local t0 = core.now()
      local kids = {}
      for k = 1, procs do
        kids[k] = io.popen(string.format(
          "%s -e 'package.path = \"./lua/?.lua;./lua/?/init.lua;\" .. package.path;" ..
          " package.cpath = \"./?.so;\" .. package.cpath;" ..
          " require(\"luagent\").load(%q):serve{ until_idle = true, timeout_s = 300 }'", "lua5.4", cfgpath))
      end
      for _, kid in ipairs(kids) do kid:read("a"); kid:close() end
      local t1 = core.now()
      app:close()
      os.remove(cfgpath)
      print(string.format("  %d process%s  %8.0f tasks/s", procs, procs == 1 and "  " or "es", M / (t1 - t0)))
    end
    os.execute("tests/support/pg_server.sh stop " .. pgdir)
  end
end

-- 6. scale: costs that must not grow with unrelated work ------------------
local function fake_model_config(srv, bt, extra)
  return string.format([[
local luagent = require "luagent"
return luagent.config{
  model = luagent.openai{ model = "bench", base_url = %q, api_key = "k", max_retries = 0 },
  background_tasks = { enabled = true, global_concurrency = %d, per_agent_concurrency = %d,
                       max_workers = %d, max_depth = 0, max_queue = 1000000 },
  tools = {
    luagent.tool{ name = "noop", handler = function(args) return args.i end },
    luagent.tool{ name = "park", handler = function(_, ctx) ctx:sleep(3600) end },
    luagent.tool{ name = "waiter", handler = function(args, ctx) ctx:wait(args.latch, { timeout_s = 3600 }) end },
    luagent.tool{ name = "tick", handler = function() return "tick" end },
    luagent.tool{ name = "side", background = { enabled = true }, handler = function() return 1 end },
  },
  agents = { luagent.agent{ id = "a", instructions = "Answer.", tools = { "side", "tick" },
    budget = { max_iterations = 100000 } } },
  %s
}]], srv.url, bt, bt, bt, extra or "")
end

local function ratio(x, y) return y > 0 and x / y or 0 end

if want("scale") then
  local fake = require("support.fake_openai_client")
  local srv = fake.start()
  local PARKED = tonumber(os.getenv("BENCH_PARKED")) or 50000
  local RUNS = math.min(CALLS, 200)
  local function model_cpu(app)
    local replies = {}
    for i = 1, RUNS + 10 do replies[i] = { text = "ok" } end
    srv:script(replies)
    for _ = 1, 10 do app:run("a", "warm") end
    local c0 = os.clock()
    for _ = 1, RUNS do
      local r = app:run("a", "hello")
      assert(r.status == "completed", r.error and r.error.message)
    end
    return (os.clock() - c0) / RUNS * 1e6
  end
  print(string.format("\nscale (targets: ratios <= 1.2, list <= 0.1 ms):"))
  -- (a) model path CPU per run, with 0 and with PARKED queued tasks of
  -- another agent (its per-agent slots are all taken, so they stay queued)
  local app = luagent.load_string(fake_model_config(srv, 8))
  local base = model_cpu(app)
  for _ = 1, 8 do app:enqueue_tool("park", {}, { agent_id = "parked" }) end
  for i = 1, PARKED do app:enqueue_tool("noop", { i = i }, { agent_id = "parked" }) end
  local loaded = model_cpu(app)
  print(string.format("  model path CPU/run      %7.0f us idle  %7.0f us with %d queued   ratio %.2f",
    base, loaded, PARKED, ratio(loaded, base)))
  -- (c) list{limit = 10} with the table that large
  local L = 1000
  local t0 = core.now()
  for _ = 1, L do app:list({ limit = 10 }) end
  print(string.format("  list{limit=10}          %7.3f ms with %d tasks", (core.now() - t0) / L * 1000,
    PARKED + 8))
  app:close({ mode = "cancel", grace_s = 5 })
  -- (b) finishing a task with 400 tasks waiting on something else vs none
  local W, N = 400, math.min(TASKS, 4000)
  local function finish_cost(waiters)
    local cfg = fake_model_config(srv, 8):gsub("max_workers = 8", "max_workers = 420")
    local wapp = luagent.load_string(cfg)
    local latch = wapp:enqueue_tool("park", {}, { agent_id = "latch" }).task_id
    for _ = 1, waiters do wapp:enqueue_tool("waiter", { latch = latch }, { agent_id = "w" }) end
    local deadline = core.now() + 60
    while wapp:stats().waiting < waiters and core.now() < deadline do wapp:poll({ wait_ms = 10 }) end
    local warm = {}
    for i = 1, 64 do warm[i] = wapp:enqueue_tool("noop", { i = i }).task_id end
    wapp:wait(warm, { timeout_s = 60 })
    local ids = {}
    local c0 = os.clock()
    for i = 1, N do ids[i] = wapp:enqueue_tool("noop", { i = i }).task_id end
    local v = wapp:wait(ids, { timeout_s = 120 })
    local cpu = (os.clock() - c0) / N * 1e6
    assert(v.done)
    wapp:close({ mode = "cancel", grace_s = 10 })
    return cpu
  end
  local f0 = finish_cost(0)
  local f1 = finish_cost(W)
  print(string.format("  task CPU (enqueue+finish) %5.1f us, %5.1f us with %d waiting   ratio %.2f",
    f0, f1, W, ratio(f1, f0)))
  srv:stop()
end

-- 7. poll: the host's frame cost while 100 agent runs are in flight -------
if want("poll") then
  local fake = require("support.fake_openai_client")
  local srv = fake.start()
  local RUNS_IN_FLIGHT, POLLS = 100, 600
  local replies = {}
  for i = 1, RUNS_IN_FLIGHT * 120 do
    replies[i] = { tool_calls = { { name = "tick", arguments = {} } }, delay_ms = 40 }
  end
  srv:script(replies)
  local pcfg = fake_model_config(srv, RUNS_IN_FLIGHT)
    :gsub("max_workers = %d+", "max_workers = " .. (RUNS_IN_FLIGHT + 8))
  local papp = luagent.load_string(pcfg)
  for i = 1, RUNS_IN_FLIGHT do papp:enqueue_background("a", "run " .. i) end
  local deadline = core.now() + 60
  while papp:stats().running + papp:stats().waiting < RUNS_IN_FLIGHT and core.now() < deadline do
    papp:poll({ wait_ms = 10 })
  end
  local socket = require("socket")
  local walls, cpus = {}, {}
  local blocked, preempted = 0, 0 -- polls that slept in the kernel / were descheduled
  for i = 1, POLLS do
    local v0, n0 = core.thread_switches()
    local w0, c0 = core.now(), core.thread_cpu()
    papp:poll()
    walls[i], cpus[i] = (core.now() - w0) * 1000, (core.thread_cpu() - c0) * 1000
    local v1, n1 = core.thread_switches()
    if v1 > v0 then blocked = blocked + 1 end
    if n1 > n0 then preempted = preempted + 1 end
    socket.sleep(0.004) -- the rest of the frame
  end
  local in_flight = papp:stats().running + papp:stats().waiting
  table.sort(walls)
  table.sort(cpus)
  print(string.format("\npoll: %d polls, %d agent runs in flight against the fake server (targets: p99 <= 0.5 ms, worst <= 2 ms)",
    POLLS, in_flight))
  print(string.format("  wall  p50 %.3f ms  p99 %.3f ms  worst %.3f ms", percentile(walls, 0.5),
    percentile(walls, 0.99), walls[#walls]))
  print(string.format("  CPU   p50 %.3f ms  p99 %.3f ms  worst %.3f ms", percentile(cpus, 0.5),
    percentile(cpus, 0.99), cpus[#cpus]))
  -- a poll that blocked slept in the kernel (a lock, a wait); one that was
  -- preempted lost the CPU to another thread of this 2-core machine
  print(string.format("  polls that blocked %d, polls preempted %d (of %d)", blocked, preempted, POLLS))
  papp:close({ mode = "cancel", grace_s = 10 })
  srv:stop()
end

-- 8. memory over a million short tasks with default settings ---------------
if want("churn") then
  local MARKS = { 200000, tonumber(os.getenv("BENCH_MEM_TASKS")) or 1000000 }
  local app <close> = luagent.load_string([[
local luagent = require "luagent"
return luagent.config{
  background_tasks = { enabled = true },
  tools = { luagent.tool{ name = "noop", handler = function(args) return args.i end } },
}]])
  print(string.format("\nmemory: %d short tasks through one app, default settings", MARKS[#MARKS]))
  local done, rss, t0 = 0, {}, core.now()
  for _, mark in ipairs(MARKS) do
    -- in batches below the default max_queue
    while done < mark do
      for _ = 1, 1000 do
        done = done + 1
        app:enqueue_tool("noop", { i = done })
      end
      app:run_until_idle()
    end
    collectgarbage()
    rss[#rss + 1] = rss_kb()
    -- worker threads start lazily (up to max_workers): each new one adds
    -- its Lua state and a malloc arena, so the count explains a step in RSS
    print(string.format("  after %7d tasks  RSS %7.1f MiB  (%d tasks in memory, %d workers, %.0f s)",
      mark, rss[#rss] / 1024, app:stats().in_memory, app:stats().workers, core.now() - t0))
  end
  print(string.format("  RSS change from %d to %d tasks: %+.1f%%", MARKS[1], MARKS[#MARKS],
    (rss[#rss] - rss[1]) / rss[1] * 100))
end

-- 9. the frame of a C host: app:poll with runs in flight --------------------
if want("host") then
  local RUNS = tonumber(os.getenv("BENCH_HOST_RUNS")) or 100
  local fake = require("support.fake_openai_client")
  -- the fake server stands for a remote model: batch work here (as the
  -- host's workers are), so its wake-ups do not preempt the frame loop
  local batch = os.execute("command -v chrt >/dev/null 2>&1 && chrt -b 0 true 2>/dev/null")
  local srv = fake.start({ lua = batch and "chrt -b 0 lua5.4" or nil })
  -- every run asks the host once, then answers; the model takes 1 s per
  -- reply, so all runs are in flight together for a few hundred frames
  local replies = {}
  for i = 1, RUNS do
    replies[i] = { tool_calls = { { id = "call_pos", name = "player_position", arguments = {} } },
                   delay_ms = 1000 }
    replies[RUNS + i] = { text = "the player is near", delay_ms = 1000 }
  end
  srv:script(replies)
  local p = io.popen(string.format("OPENAI_BASE_URL=%s OPENAI_MODEL=bench ./build/host --quiet --runs %d " ..
    "--concurrency %d --timeout-s 60 examples/host/agents.lua 2>&1", srv.url, RUNS, RUNS))
  local out = p:read("a")
  p:close()
  srv:stop()
  local s = {}
  for k, v in out:gmatch("([%w_]+)=([%d%.]+)") do s[k] = tonumber(v) end
  print(string.format("\nC host frame (examples/host/host.c, 60 Hz, poll budget 2 ms), %d runs in flight%s:", RUNS,
    batch and "" or " (fake server not batch: no chrt)"))
  if s.completed ~= RUNS then
    print("  failed: " .. out:gsub("\n", "\n  "))
  else
    print(string.format("  app:poll per frame  p50 %.3f ms  p99 %.3f ms  worst %.3f ms  (%d frames, %d host calls)",
      s.p50, s.p99, s.worst, s.frames, s.host_calls))
    print(string.format("  poll thread CPU     p50 %.3f ms  p99 %.3f ms  worst %.3f ms  total %.1f ms  (polls that " ..
      "blocked %d, preempted %d)", s.cpu_p50 or 0, s.cpu_p99 or 0, s.cpu_worst or 0, s.cpu_total or 0,
      s.polls_blocked or 0, s.polls_preempted or 0))
    -- the host's own heap, collected after each frame's work (not in poll)
    print(string.format("  host GC, spare time             p99 %.3f ms  worst %.3f ms  (budget 1 ms a frame)",
      s.gc_ms_p99 or 0, s.gc_ms_worst or 0))
  end
end
