-- make bench: the figures of bench/README.md. Figures, not assertions.
package.path = "./lua/?.lua;./lua/?/init.lua;./tests/?.lua;" .. package.path
package.cpath = "./?.so;" .. package.cpath
local luagent = require("luagent")
local core = require("luagent.core")

local TASKS = tonumber(os.getenv("BENCH_TASKS")) or 10000
local CALLS = tonumber(os.getenv("BENCH_CALLS")) or 300

local function config(bt, extra)
  return string.format([[
local luagent = require "luagent"
return luagent.config{
  background_tasks = { enabled = true, global_concurrency = %d, per_agent_concurrency = %d,
                       max_workers = %d, max_depth = 0, max_queue = 1000000 },
  tools = {
    luagent.tool{ name = "noop", handler = function(args) return args.i end },
    luagent.tool{ name = "now", handler = function() return require("luagent.core").now() end },
    luagent.tool{ name = "hold", handler = function(_, ctx) ctx:sleep(0.3) end },
  },
  %s
}]], bt, bt, bt, extra or "")
end

local function percentile(sorted, p)
  local i = math.max(1, math.ceil(#sorted * p))
  return sorted[i]
end

local function rss_kb()
  for line in io.lines("/proc/self/status") do
    local v = line:match("^VmRSS:%s+(%d+)")
    if v then return tonumber(v) end
  end
end

print(string.format("luagent %s bench (%s)\n", luagent.version, os.date("!%Y-%m-%d %H:%M UTC")))

-- 1. dispatch throughput --------------------------------------------------
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

-- 2. enqueue -> start latency with an idle worker ---------------------------
do
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
do
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
do
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
do
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
do
  local N = math.min(TASKS, 5000)
  print(string.format("\nstore: enqueue %d tool tasks (each durable before enqueue returns)", N))
  local function run(label, store)
    local dir = os.tmpname()
    os.remove(dir)
    local extra = store and string.format("store = { path = %q, durability = %q },", dir .. ".db", store) or ""
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
end

-- 6. memory over a million short tasks with default settings ---------------
do
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
    print(string.format("  after %7d tasks  RSS %7.1f MiB  (%d tasks in memory, %.0f s)", mark,
      rss[#rss] / 1024, app:stats().in_memory, core.now() - t0))
  end
  print(string.format("  RSS change from %d to %d tasks: %+.1f%%", MARKS[1], MARKS[#MARKS],
    (rss[#rss] - rss[1]) / rss[1] * 100))
end
