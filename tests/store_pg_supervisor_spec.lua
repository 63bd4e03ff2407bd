-- A supervisor and its children in different processes of one shared
-- PostgreSQL store (README, "Several processes, one queue"): the
-- supervisor runs in this process (A) and fans out four background
-- children; processes B and C serve the queue and run them. bg_wait in A
-- returns once they finished there (the watcher of other processes' tasks,
-- docs/architecture.md "Leases and fencing"), with their results, and A's
-- merged event stream shows every child enqueued here, started and
-- finished there, in that order. Scripted, and through luagent.openai
-- against the fake server.
local H = require "support.dispatch_helpers"
local S = require "support.store_helpers"
local fake = require "support.fake_openai_client"
local FA = require "support.fake_openai_app"
local luagent = require "luagent"
local json = require "luagent.json"

local CHILDREN = 4

-- The config of all three processes. A child's tool `where` appends
-- "<task_id> <pid>" to `started`, then holds until all four children have
-- started: with two slots a process, no process can run them all, so B and
-- C both work (and A runs none: it never serves).
-- What the scripted models of every config read their requests with.
local MODEL_HELPERS = [[
local luagent = require "luagent"
local json = require "luagent.json"
local function step(req)
  local n = 0
  for _, m in ipairs(req.messages) do if m.role == "assistant" then n = n + 1 end end
  return n
end
local function acks(req)
  local out = {}
  for _, m in ipairs(req.messages) do
    if m.role == "tool" then
      local r = json.decode(m.content)
      if r.ok and type(r.value) == "table" and r.value.status == "queued" then out[#out + 1] = r.value.task_id end
    end
  end
  return out
end
]]

local function write_config(dir, url, sup_model, wrk_model)
  local path = dir .. "/cluster.lua"
  H.write(path, MODEL_HELPERS .. string.format([[
local started = %q
local f = assert(io.open("/proc/self/stat"))
local pid = f:read("*l"):match("^(%%d+)")
f:close()
local function count()
  local n, fh = 0, io.open(started)
  if fh then
    for _ in fh:lines() do n = n + 1 end
    fh:close()
  end
  return n
end
local scripted_sup = luagent.function_model(function(req)
  local s = step(req)
  if s == 0 then
    local calls = {}
    for i = 1, %d do calls[i] = { name = "ask_worker", arguments = { prompt = "part " .. i } } end
    return { tool_calls = calls }
  end
  if s == 1 then return { tool_calls = { { name = "start_servers", arguments = {} } } } end
  if s == 2 then
    return { tool_calls = { { name = "bg_wait", arguments = { task_ids = acks(req), timeout_s = 60 } } } }
  end
  local last = json.decode(req.messages[#req.messages].content)
  local parts = {}
  for _, t in ipairs(last.value.tasks) do
    local final = type(t.result) == "table" and t.result.final or t.result
    parts[#parts + 1] = t.status .. ":" .. tostring(final)
  end
  return { text = table.concat(parts, ",") }
end)
local scripted_worker = luagent.function_model(function(req)
  if step(req) == 0 then return { tool_calls = { { name = "where", arguments = {} } } } end
  return { text = "ran in " .. json.decode(req.messages[#req.messages].content).value }
end)
return luagent.config{
  background_tasks = { enabled = true, global_concurrency = 2, per_agent_concurrency = 4, max_depth = 2 },
  store = { url = %q, shared = true, lease_s = 10 },
  tools = { luagent.host_tool{ name = "start_servers" } },
  agents = {
    luagent.agent{ id = "sup", model = %s,
      tools = { luagent.delegate{ agent = "worker", name = "ask_worker", background = { enabled = true } },
                "start_servers" } },
    luagent.agent{ id = "worker", model = %s,
      tools = { luagent.tool{ name = "where", handler = function(_, ctx)
        local out = assert(io.open(started, "a"))
        out:write(ctx.task_id, " ", pid, "\n")
        out:close()
        local deadline = os.time() + 30
        while count() < %d and os.time() < deadline do ctx:sleep(0.01) end
        return pid
      end } } },
  },
} ]], dir .. "/started", CHILDREN, url, sup_model or "scripted_sup", wrk_model or "scripted_worker",
    CHILDREN))
  return path
end

local function server_body(cfg)
  return string.format([[
local luagent = require "luagent"
local app = luagent.load(%q)
local idle = app:serve{ until_idle = true, timeout_s = 60 }
print("idle " .. tostring(idle) .. " " .. app._core:stats().finished.completed)
app:close()
]], cfg)
end

-- Run the supervisor in this process; B and C start when it asks (its
-- children are queued by then, so serving until idle waits for them).
local function supervise(dir, cfg)
  local app = luagent.load(cfg)
  local kids = {}
  app:host_tool("start_servers", function()
    for i = 1, 2 do kids[i] = S.spawn(dir, server_body(cfg)) end
    return "started"
  end)
  local res = app:run("sup", "split the work", { timeout_s = 90 })
  local served = 0
  for i, kid in ipairs(kids) do
    local out = S.finish(kid)
    local idle, n = (out[1] or ""):match("^idle (%S+) (%d+)$")
    assert.equal("true", idle, table.concat(out, "\n") .. S.read(kid.err_path))
    assert.is_true(tonumber(n) > 0, "process " .. i .. " ran nothing")
    served = served + tonumber(n)
  end
  assert.equal(CHILDREN, served)
  return app, res, kids
end

-- Where each child ran, by the pids the tool wrote: B and C, never A.
local function check_placement(dir, kids)
  local by_pid, ids = {}, {}
  for l in S.read(dir .. "/started"):gmatch("[^\n]+") do
    local id, pid = l:match("^(%S+) (%d+)$")
    ids[#ids + 1] = id
    by_pid[pid] = (by_pid[pid] or 0) + 1
  end
  assert.equal(CHILDREN, #ids)
  assert.equal(2, by_pid[tostring(kids[1].pid)])
  assert.equal(2, by_pid[tostring(kids[2].pid)])
  return ids
end

-- A's merged stream: each child enqueued by A, started and finished by
-- another node, in that order; the supervisor's wait ends after all of them.
local function check_stream(app, ids)
  local stream, since = {}, 0
  repeat
    local batch = app:events{ since = since, limit = 500 }
    for _, ev in ipairs(batch) do
      assert.is_true(ev.seq > since)
      since = ev.seq
      stream[#stream + 1] = ev
    end
  until #batch == 0
  -- run_stream_until_idle in A follows the same merged stream, and ends
  local followed = {}
  for ev in app:run_stream_until_idle{ since = 0, timeout_s = 30 } do followed[#followed + 1] = ev.seq end
  assert.equal(#stream, #followed)
  for k, ev in ipairs(stream) do assert.equal(ev.seq, followed[k]) end
  local step, here, last_finish, wait_done = {}, nil, 0, nil
  for i, ev in ipairs(stream) do
    if ev.kind == "task_enqueued" then
      here = here or ev.node
      assert.equal(here, ev.node)
      step[ev.task_id] = 1
    elseif ev.kind == "task_started" and step[ev.task_id] then
      assert.equal(1, step[ev.task_id])
      assert.are_not.equal(here, ev.node)
      step[ev.task_id] = 2
    elseif ev.kind == "task_finished" and step[ev.task_id] then
      assert.equal(2, step[ev.task_id])
      step[ev.task_id] = 3
      last_finish = i
    elseif ev.kind == "tool_end" and ev.node == here and ev.payload and ev.payload.tool == "bg_wait" then
      wait_done = i
    end
  end
  for _, id in ipairs(ids) do assert.equal(3, step[id], id) end
  assert.is_truthy(wait_done, "no end of the supervisor's bg_wait in the stream")
  assert.is_true(wait_done > last_finish)
end

describe("store (postgresql): a supervisor whose children run in other processes", function()
  local dir, url
  H.each_store(function(d, u) dir, url = d, u end, "postgresql")

  it("collects them with bg_wait and sees them in its merged stream (scripted)", function()
    local cfg = write_config(dir, url)
    local app, res, kids = supervise(dir, cfg)
    assert.equal("completed", res.status, json.encode(res.error or {}))
    local ids = check_placement(dir, kids)
    -- every child's answer, with the pid of the process that ran it
    local parts = {}
    for part in res.final:gmatch("[^,]+") do parts[#parts + 1] = part end
    assert.equal(CHILDREN, #parts)
    for _, p in ipairs(parts) do
      local pid = p:match("^completed:ran in (%d+)$")
      assert.is_truthy(pid, res.final)
      assert.is_true(pid == tostring(kids[1].pid) or pid == tostring(kids[2].pid), p)
    end
    -- the records in A agree with the store
    for _, id in ipairs(ids) do
      local rec = app:get(id)
      assert.equal("completed", rec.status)
      assert.matches("^ran in %d+$", rec.result.final)
    end
    check_stream(app, ids)
    app:close()
  end)

  describe("through luagent.openai", function()
    local srv
    setup(function() srv = fake.start() end)
    teardown(function() srv:stop() end)
    before_each(function() srv:reset() end)

    it("collects them with bg_wait and sees them in its merged stream", function()
      local cfg = write_config(dir, url, FA.model_src(srv, { model = "sup-m" }),
        FA.model_src(srv, { model = "wrk-m" }))
      local fan = {}
      for i = 1, CHILDREN do
        fan[i] = { id = "a" .. i, name = "ask_worker", arguments = { prompt = "part " .. i } }
      end
      local wait_ids = {}
      for i = 1, CHILDREN do wait_ids[i] = "{{task_id:" .. i .. "}}" end
      local script = {
        { for_model = "sup-m", tool_calls = fan },
        { for_model = "sup-m", tool_calls = { { id = "go", name = "start_servers", arguments = {} } } },
        { for_model = "sup-m", tool_calls = { { id = "bw", name = "bg_wait",
          arguments = { task_ids = wait_ids, timeout_s = 60 } } } },
        { for_model = "sup-m", text = "collected" },
      }
      for i = 1, 2 * CHILDREN do -- each child asks twice: the tool call, then its answer
        script[#script + 1] = { for_model = "wrk-m", tool_calls = { { id = "w" .. i, name = "where", arguments = {} } },
          after_tool = { text = "worked" } }
      end
      srv:script(script)
      local app, res, kids = supervise(dir, cfg)
      assert.equal("completed", res.status, tostring(res.error and res.error.message))
      assert.equal("collected", res.final)
      local ids = check_placement(dir, kids)
      -- the bg_wait the provider was answered with: every child done
      local answered
      for _, r in ipairs(srv:requests()) do
        local msgs = r.json and r.json.model == "sup-m" and r.json.messages or {}
        local m = msgs[#msgs]
        if m and m.role == "tool" and m.tool_call_id == "bw" then answered = json.decode(m.content) end
      end
      assert.is_truthy(answered, "the provider never saw the bg_wait result")
      assert.is_true(answered.ok)
      assert.is_true(answered.value.done)
      assert.equal(CHILDREN, #answered.value.tasks)
      for _, t in ipairs(answered.value.tasks) do
        assert.equal("completed", t.status)
        assert.equal("worked", type(t.result) == "table" and t.result.final or t.result)
      end
      check_stream(app, ids)
      app:close()
    end)
  end)

  -- Three levels under a cluster-wide cap of 2: the root asks two children,
  -- each asks two grandchildren, and each waits for its own. Without
  -- lending, the root and one child would hold both leases while they wait
  -- and nothing below them could ever be claimed.
  it("nested fan-out across processes under a cluster cap finishes: a waiting holder lends its slot", function()
    local cfg = dir .. "/tree.lua"
    H.write(cfg, MODEL_HELPERS .. string.format([[
local function level_model(n)
  return luagent.function_model(function(req)
    if n == 2 then return { text = "1" } end
    local s = step(req)
    local ask = "ask_lvl" .. (n + 1)
    if s == 0 then
      return { tool_calls = { { name = ask, arguments = { prompt = "left" } },
                              { name = ask, arguments = { prompt = "right" } } } }
    end
    if s == 1 then
      return { tool_calls = { { name = "bg_wait", arguments = { task_ids = acks(req), timeout_s = 60 } } } }
    end
    local res = json.decode(req.messages[#req.messages].content)
    local sum = 0
    for _, t in ipairs(res.value.tasks) do
      sum = sum + (tonumber(type(t.result) == "table" and t.result.final or t.result) or 0)
    end
    return { text = tostring(sum) }
  end)
end
local agents = {}
for n = 0, 2 do
  local tools = {}
  if n < 2 then
    tools[1] = luagent.delegate{ agent = "lvl" .. (n + 1), name = "ask_lvl" .. (n + 1),
      background = { enabled = true } }
  end
  agents[#agents + 1] = luagent.agent{ id = "lvl" .. n, model = level_model(n), tools = tools }
end
return luagent.config{
  agents = agents,
  background_tasks = { enabled = true, global_concurrency = 2, scope = "cluster", max_depth = 2 },
  store = { url = %q, shared = true, lease_s = 10 },
} ]], url))
    local app = luagent.load(cfg)
    local root = app:enqueue_background("lvl0", "sum the tree").task_id
    local kids = {}
    for i = 1, 2 do kids[i] = S.spawn(dir, server_body(cfg)) end
    local w = app:wait({ root }, { timeout_s = 90 })
    assert.is_true(w.done, "the tree did not finish: " .. json.encode(w))
    local rec = app:get(root)
    assert.equal("completed", rec.status, json.encode(rec.error or {}))
    assert.equal("4", rec.result.final)
    for _, kid in ipairs(kids) do
      local out = S.finish(kid)
      assert.matches("^idle true %d+$", out[1] or "", table.concat(out, "\n") .. S.read(kid.err_path))
    end
    -- seven tasks, each completed once
    local P = require "support.pg"
    assert.same({ "completed|7" }, P.psql(url, "SELECT status, count(*) FROM tasks GROUP BY status"))
    app:close()
  end)
end)
