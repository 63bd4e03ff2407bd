-- The speed targets of bench/README.md, each next to its floor measured in
-- the same run: raw libcurl (build/raw_curl), luv's thread pool (lua-luv,
-- when installed), a plain SQLite insert loop (build/raw_sqlite). Figures,
-- not assertions. Run by bench/run.lua first; alone: lua5.4 bench/targets.lua
package.path = "./lua/?.lua;./lua/?/init.lua;./tests/?.lua;" .. package.path
package.cpath = "./?.so;" .. package.cpath
local luagent = require("luagent")
local core = require("luagent.core")
local fake = require("support.fake_openai_client")

local RUNS = tonumber(os.getenv("BENCH_RUNS")) or 1000
local DISPATCH = tonumber(os.getenv("BENCH_DISPATCH")) or 20000
local BATCH = tonumber(os.getenv("BENCH_BATCH")) or 100
local DELTAS = 50
local common = dofile("bench/common.lua")
local tool_config, percentile, rss_kb = common.tool_config, common.percentile, common.rss_kb

-- BENCH_ONLY=model_path or streaming runs that figure alone (bench/run.lua)
local ONLY = os.getenv("BENCH_ONLY") or ""
local function want(name)
  return ONLY == "" or ("," .. ONLY .. ","):find("," .. name .. ",", 1, true) ~= nil
    or ("," .. ONLY .. ","):find(",targets,", 1, true) ~= nil
end

local function ratio(x, y) return (y and y > 0) and x / y or 0 end

local function write_file(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

-- CPU per round of raw libcurl posting the given bodies, in order.
local function raw_curl(url, bodies, n)
  local files = {}
  for i, b in ipairs(bodies) do
    files[i] = "build/bench_body" .. i .. ".json"
    write_file(files[i], b)
  end
  local p = io.popen(string.format("./build/raw_curl %s/chat/completions %s %d %s", url, files[1], n,
    table.concat(files, " ", 2)))
  local out = p:read("a")
  p:close()
  return tonumber(out:match("^([%d%.]+)")) or 0
end

local function model_config(url, c, extra)
  return string.format([[
local luagent = require "luagent"
return luagent.config{
  model = luagent.openai{ model = "bench", base_url = %q, api_key = "k", max_retries = 0 %s },
  background_tasks = { enabled = true, global_concurrency = %d, per_agent_concurrency = %d,
                       max_workers = %d, max_depth = 1, max_queue = 1000000 },
  tools = { luagent.tool{ name = "lookup", description = "Look a key up.",
    input_schema = { type = "object", properties = { key = { type = "string" } }, required = { "key" } },
    handler = function(args) return "value of " .. args.key end } },
  agents = { luagent.agent{ id = "a", instructions = "Answer.", tools = { "lookup" } } },
}]], url, extra or "", c, c, c)
end

-- one model -> tool -> model run per two replies, whatever the interleaving
local function tool_then_text(n, text, chunk)
  local replies = {}
  for i = 1, 2 * n do
    replies[i] = { tool_calls = { { name = "lookup", arguments = { key = "k" } } }, chunk_size = chunk,
      after_tool = { text = text, chunk_size = chunk } }
  end
  return replies
end

print(string.format("targets (same run; floors: raw libcurl, luv, plain SQLite)"))

-- 1. model path: N runs of model -> tool -> model, C = 10 ---------------------
local srv = fake.start()
local rounds = {}
if want("model_path") then
  local C = 10
  local app <close> = luagent.load_string(model_config(srv.url, C))
  -- warm: workers booted, connections open; start-up is not counted
  srv:script(tool_then_text(C * 2, "done"))
  local warm = {}
  for i = 1, C * 2 do warm[i] = app:enqueue_background("a", "warm " .. i).task_id end
  assert(app:wait(warm, { timeout_s = 60 }).done)
  local reqs = srv:requests()
  local bodies = { reqs[#reqs - 1].body, reqs[#reqs].body }
  for _, r in ipairs(reqs) do -- one run's two requests, in order
    if r.json and r.json.messages[#r.json.messages].role == "user" then bodies[1] = r.body end
    if r.json and r.json.messages[#r.json.messages].role == "tool" then bodies[2] = r.body end
  end
  srv:reset()
  srv:script(tool_then_text(RUNS, "done"))
  local c0, w0 = os.clock(), core.now()
  local ids = {}
  for i = 1, RUNS do ids[i] = app:enqueue_background("a", "run " .. i).task_id end
  local v = app:wait(ids, { timeout_s = 600 })
  assert(v.done)
  for _, t in ipairs(v.tasks) do assert(t.status == "completed", t.error and t.error.message) end
  local bg_cpu, bg_wall = (os.clock() - c0) / RUNS * 1e6, (core.now() - w0) / RUNS * 1e6
  srv:reset()
  srv:script(tool_then_text(RUNS, "done"))
  c0 = os.clock()
  for i = 1, RUNS do
    local r = app:run("a", "run " .. i)
    assert(r.status == "completed", r.error and r.error.message)
  end
  local fg_cpu = (os.clock() - c0) / RUNS * 1e6
  srv:reset()
  srv:script(tool_then_text(RUNS, "done"))
  local raw = raw_curl(srv.url, bodies, RUNS)
  srv:reset()
  rounds.raw = raw
  print(string.format("\nmodel path: %d runs of model -> tool -> model, C=%d (CPU per run, process)", RUNS, C))
  print(string.format("  raw libcurl, same two POSTs %7.1f us              1.0x", raw))
  print(string.format("  luagent, background runs    %7.1f us  %6.2fx raw  (target <= 4x; wall %.0f us/run)",
    bg_cpu, ratio(bg_cpu, raw), bg_wall))
  print(string.format("  luagent, foreground app:run %7.1f us  %6.2fx raw  (target <= 3x)", fg_cpu,
    ratio(fg_cpu, raw)))
end

-- 2. streaming: 50 text deltas per reply ---------------------------------------
if want("streaming") then
  local text = string.rep("abcd", DELTAS) -- chunk_size 4: DELTAS deltas
  local N = math.max(50, RUNS // 4)
  local app <close> = luagent.load_string(model_config(srv.url, 2, ", stream = true"))
  local function one_call_replies(n)
    local r = {}
    for i = 1, n do r[i] = { text = text, chunk_size = 4 } end
    return r
  end
  srv:script(one_call_replies(5))
  for _ = 1, 5 do assert(app:run("a", "warm").status == "completed") end
  local body = srv:last_request().body
  srv:reset()
  srv:script(one_call_replies(N))
  local c0 = os.clock()
  for _ = 1, N do assert(app:run("a", "hello").status == "completed") end
  local fg = (os.clock() - c0) / N / DELTAS * 1e6
  srv:reset()
  srv:script(one_call_replies(N))
  c0 = os.clock()
  local ids = {}
  for i = 1, N do ids[i] = app:enqueue_background("a", "s " .. i).task_id end
  assert(app:wait(ids, { timeout_s = 600 }).done)
  local bg = (os.clock() - c0) / N / DELTAS * 1e6
  srv:reset()
  srv:script(one_call_replies(N))
  local raw = raw_curl(srv.url, { body }, N) / DELTAS
  srv:reset()
  print(string.format("\nstreaming: %d replies of %d text deltas (CPU per token)", N, DELTAS))
  print(string.format("  raw libcurl                 %7.2f us              1.0x", raw))
  print(string.format("  luagent, foreground         %7.2f us  %6.2fx raw  (target <= 3 us)", fg, ratio(fg, raw)))
  print(string.format("  luagent, background         %7.2f us  %6.2fx raw  (target <= 3 us)", bg, ratio(bg, raw)))
end
srv:stop()

-- 3. dispatch: trivial tool tasks, 2 workers, next to luv's thread pool --------
if want("targets") then
  local app <close> = luagent.load_string(tool_config(2))
  local warm = {}
  for i = 1, 2 do warm[i] = app:enqueue_tool("noop", { i = i }).task_id end
  app:wait(warm)
  local t0, c0 = core.now(), os.clock()
  local ids = {}
  for i = 1, DISPATCH do ids[i] = app:enqueue_tool("noop", { i = i }).task_id end
  local t1 = core.now()
  app:run_until_idle()
  local t2, c2 = core.now(), os.clock()
  local rate = DISPATCH / (t2 - t0)
  local cpu = (c2 - c0) / DISPATCH * 1e6
  local enq = (t1 - t0) / DISPATCH * 1e6
  -- luv: the same count of trivial jobs through its thread pool
  -- (UV_THREADPOOL_SIZE=2 from make bench: two threads, like two workers)
  local luv_rate, luv_cpu
  local okl, uv = pcall(require, "luv")
  if okl then
    local done = 0
    local work = uv.new_work(function(i) return i end, function() done = done + 1 end)
    local l0, lc0 = core.now(), os.clock()
    for i = 1, DISPATCH do work:queue(i) end
    while done < DISPATCH do uv.run("once") end
    luv_rate, luv_cpu = DISPATCH / (core.now() - l0), (os.clock() - lc0) / DISPATCH * 1e6
  end
  -- the same tasks through app:enqueue_tools, BATCH entries a call (the
  -- lists are built inside the timed loop, as the single enqueues' args are)
  local b0, bc0 = core.now(), os.clock()
  for from = 1, DISPATCH, BATCH do
    local list = {}
    for i = from, math.min(from + BATCH - 1, DISPATCH) do list[#list + 1] = { "noop", { i = i } } end
    app:enqueue_tools(list)
  end
  local b1 = core.now()
  app:run_until_idle()
  local b2, bc2 = core.now(), os.clock()
  local brate = DISPATCH / (b2 - b0)
  local bcpu = (bc2 - bc0) / DISPATCH * 1e6
  local benq = (b1 - b0) / DISPATCH * 1e6
  -- enqueue -> handler start with an idle worker
  local lat = {}
  for i = 1, 2000 do
    local s0 = core.now()
    local rec = app:enqueue_tool("now", {})
    lat[i] = (app:wait({ rec.task_id }).tasks[1].result - s0) * 1e6
  end
  table.sort(lat)
  print(string.format("\ndispatch: %d trivial tool tasks, 2 workers", DISPATCH))
  if luv_rate then
    print(string.format("  luv thread pool (2 threads) %9.0f tasks/s  %6.2f us CPU/task  1.0x", luv_rate, luv_cpu))
  else
    print("  luv thread pool             (lua-luv not installed)")
  end
  print(string.format("  luagent                     %9.0f tasks/s  %6.2f us CPU/task  %5.3fx luv  (target >= 200k/s, >= 0.3x)",
    rate, cpu, luv_rate and ratio(rate, luv_rate) or 0))
  print(string.format("  host enqueue_tool           %9.2f us                           (target <= 2 us)", enq))
  print(string.format("  luagent, enqueue_tools x%-4d %8.0f tasks/s  %6.2f us CPU/task  %5.3fx luv",
    BATCH, brate, bcpu, luv_rate and ratio(brate, luv_rate) or 0))
  print(string.format("  host enqueue_tools, per task %8.2f us", benq))
  print(string.format("  enqueue -> start, idle      p50 %.0f us  p99 %.0f us              (target p50 <= 15 us)",
    percentile(lat, 0.5), percentile(lat, 0.99)))
end

-- 4. worker states: boot time and RSS per idle state ----------------------------
if want("targets") then
  -- boot: the first task of a fresh app (its worker boots first) minus the
  -- same task on the booted worker; median of 7 apps
  local boots = {}
  for k = 1, 7 do
    local app <close> = luagent.load_string(tool_config(1))
    local s0 = core.now()
    local first = app:wait({ app:enqueue_tool("now", {}).task_id }).tasks[1].result - s0
    s0 = core.now()
    local again = app:wait({ app:enqueue_tool("now", {}).task_id }).tasks[1].result - s0
    boots[k] = (first - again) * 1000
  end
  table.sort(boots)
  local N = 16
  collectgarbage()
  local before = rss_kb()
  local app <close> = luagent.load_string(tool_config(N))
  local ids = {}
  for i = 1, N do ids[i] = app:enqueue_tool("hold", {}).task_id end
  app:wait(ids)
  local st = app:stats()
  collectgarbage()
  local per = (rss_kb() - before) / math.max(st.workers, 1)
  print(string.format("\nworker states: boot %.2f ms median (target <= 1 ms); RSS +%.0f KiB per idle state, %d states (target <= 400 KiB)",
    percentile(boots, 0.5), per, st.workers))
end

-- 5. durable enqueue: file store, normal, next to a plain SQLite loop -----------
if want("targets") then
  local N = math.min(DISPATCH, 5000)
  local path = os.tmpname()
  os.remove(path)
  local function clean()
    for _, s in ipairs({ "", "-wal", "-shm", ".lock" }) do os.remove(path .. s) end
  end
  local app = luagent.load_string(tool_config(2, string.format("store = { path = %q, durability = \"normal\" },",
    path)))
  local t0 = core.now()
  local last
  for i = 1, N do last = app:enqueue_tool("noop", { i = i }) end
  local rate = N / (core.now() - t0)
  local rec_len = #require("luagent.json").encode(last)
  app:run_until_idle()
  app:close()
  clean()
  -- the same count through app:enqueue_tools, BATCH a call: one commit each
  app = luagent.load_string(tool_config(2, string.format("store = { path = %q, durability = \"normal\" },",
    path)))
  t0 = core.now()
  for from = 1, N, BATCH do
    local list = {}
    for i = from, math.min(from + BATCH - 1, N) do list[#list + 1] = { "noop", { i = i } } end
    app:enqueue_tools(list)
  end
  local brate = N / (core.now() - t0)
  app:run_until_idle()
  app:close()
  clean()
  -- like for like: the same enqueues while their agent's slots are held,
  -- so no task starts or finishes meanwhile and each commit is one record
  -- and its event, as in the plain loop
  app = luagent.load_string(tool_config(2, string.format("store = { path = %q, durability = \"normal\" },",
    path)))
  for _ = 1, 2 do app:enqueue_tool("park", {}, { agent_id = "parked" }) end
  t0 = core.now()
  for i = 1, N do app:enqueue_tool("noop", { i = i }, { agent_id = "parked" }) end
  local qrate = N / (core.now() - t0)
  t0 = core.now()
  for from = 1, N, BATCH do
    local list = {}
    for i = from, math.min(from + BATCH - 1, N) do list[#list + 1] = { "noop", { i = i }, { agent_id = "parked" } } end
    app:enqueue_tools(list)
  end
  local bqrate = N / (core.now() - t0)
  app:close()
  clean()
  local function raw_rate(per_commit)
    local p = io.popen(string.format("./build/raw_sqlite %s %d %d %d", path, N, rec_len, per_commit))
    local r = tonumber(p:read("a"):match("([%d%.]+)")) or 0
    p:close()
    clean()
    return r
  end
  local raw, braw = raw_rate(1), raw_rate(BATCH)
  print(string.format("\ndurable enqueue, file store, normal: %d enqueues", N))
  print(string.format("  plain SQLite loop (same tables, one commit each) %8.0f /s  1.0x", raw))
  print(string.format("  luagent enqueue_tool                             %8.0f /s  %5.2fx  (target >= 0.8x)", rate,
    ratio(rate, raw)))
  print(string.format("  luagent enqueue_tool, tasks stay queued          %8.0f /s  %5.2fx  (no start or finish writes)",
    qrate, ratio(qrate, raw)))
  print(string.format("  plain SQLite loop, %4d rows a commit            %8.0f /s  1.0x", BATCH, braw))
  print(string.format("  luagent enqueue_tools x%-4d (one commit each)    %8.0f /s  %5.2fx  (target >= 0.8x)", BATCH,
    brate, ratio(brate, braw)))
  print(string.format("  luagent enqueue_tools x%-3d, tasks stay queued   %8.0f /s  %5.2fx  (no start or finish writes)",
    BATCH, bqrate, ratio(bqrate, braw)))
end
print("")
