-- PostgreSQL store, the shared queue's leases and fencing (docs/architecture.md,
-- "Leases and fencing"): processes claim queued tasks with FOR UPDATE SKIP
-- LOCKED, each task once, under a cluster-wide cap; a lease that is not
-- renewed runs out and the task is queued again for anyone; a write with a
-- stale fencing token is rejected. Real processes on one real database.
local H = require "support.dispatch_helpers"
local S = require "support.store_helpers"
local P = require "support.pg"

-- An app on `url` as one of several processes sharing it.
local function shared_app(url)
  local app = H.app([[ return luagent.config{ background_tasks = { enabled = true } } ]])
  app._core:store_open(url, false, 0, 0, true, true)
  return app
end

-- A child that claims until the queue is empty, printing "<node> <task_id>
-- <token>" for each claim and finishing each task with a fenced write.
local function drain_body(url, node, cap)
  return string.format([[
local app = H.app([==[ return luagent.config{ background_tasks = { enabled = true } } ]==])
local url, node = %q, %q
app._core:store_open(url, false, 0, 0, true, true)
local function queued()
  local f = io.popen("env -u LD_PRELOAD psql -X -tA -c \"SELECT count(*) FROM tasks WHERE status = 'queued'\" '" .. url .. "'")
  local n = tonumber(f:read("l"))
  f:close()
  return n
end
while true do
  local got = app._core:store_claim(node, 3, %d, 30)
  for _, c in ipairs(got) do
    print(node .. " " .. c.task_id .. " " .. c.token)
    assert(app._core:store_put_fenced(c.task_id, node, c.token, "completed", true,
      '{"task_id":"' .. c.task_id .. '","status":"completed"}'))
  end
  -- none claimed: the queue is empty, or the others hold the cap
  if #got == 0 and queued() == 0 then break end
end
print("done")
app:close()
]], url, node, cap)
end

-- Queue n bare records (the queue's view of a task) straight in the table.
local function queue_rows(url, n)
  P.psql(url, string.format(
    "INSERT INTO tasks(task_id, status, record) SELECT 'tsk_' || lpad(g::text, 5, '0'), 'queued'," ..
    " '{\"task_id\":\"tsk_' || lpad(g::text, 5, '0') || '\",\"status\":\"queued\"}'" ..
    " FROM generate_series(1, %d) g", n))
end

describe("store (postgresql): the shared queue", function()
  local dir, url
  H.each_store(function(d, u) dir, url = d, u end, "postgresql")

  it("three processes drain 1,000 tasks: each claimed once, the cap of 6 never exceeded, all three claim", function()
    local app = shared_app(url) -- creates the schema
    queue_rows(url, 1000)
    -- the database itself refuses any commit that leaves more than 6 leased
    P.psql(url, [[
CREATE FUNCTION cap_check() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF (SELECT count(*) FROM tasks WHERE owner IS NOT NULL) > 6 THEN
    RAISE EXCEPTION 'more than 6 tasks leased';
  END IF;
  RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER cap_check AFTER UPDATE ON tasks DEFERRABLE INITIALLY DEFERRED
  FOR EACH ROW EXECUTE FUNCTION cap_check();]])
    local kids = {}
    for i = 1, 3 do kids[i] = S.spawn(dir, drain_body(url, "node" .. i, 6)) end
    local seen, by_node = {}, {}
    for i, kid in ipairs(kids) do
      local out = S.finish(kid)
      assert.equal("done", out[#out], S.read(kid.err_path))
      for j = 1, #out - 1 do
        local node, id, token = out[j]:match("^(%S+) (%S+) (%d+)$")
        assert.is_truthy(node, out[j])
        assert.is_nil(seen[id], id .. " claimed twice")
        assert.equal("1", token)
        seen[id] = node
        by_node[node] = (by_node[node] or 0) + 1
      end
      assert.equal("", S.read(kid.err_path), "child " .. i)
    end
    local n = 0
    for _ in pairs(seen) do n = n + 1 end
    assert.equal(1000, n)
    for i = 1, 3 do assert.is_true((by_node["node" .. i] or 0) > 0, "node" .. i .. " claimed nothing") end
    assert.same({ "completed|1000" }, P.psql(url, "SELECT status, count(*) FROM tasks GROUP BY status"))
    assert.same({ "0" }, P.psql(url, "SELECT count(*) FROM tasks WHERE owner IS NOT NULL"))
    app:close()
  end)

  it("a killed holder's tasks are queued again once its lease runs out, and claimed elsewhere", function()
    local app = shared_app(url)
    queue_rows(url, 8)
    local kid = S.spawn(dir, string.format([[
local app = H.app([==[ return luagent.config{ background_tasks = { enabled = true } } ]==])
app._core:store_open(%q, false, 0, 0, true, true)
for _, c in ipairs(app._core:store_claim("doomed", 5, 0, 5)) do print(c.task_id) end
print("claimed")
while true do app:run_until_idle{ timeout_s = 60 } end
]], url))
    local held = {}
    for l in function() return S.line(kid) end do
      if l == "claimed" then break end
      held[#held + 1] = l
    end
    assert.equal(5, #held, S.read(kid.err_path))
    S.kill(kid)
    -- not before the lease ends: nothing is queued again yet, and the
    -- others take the three that were never claimed
    assert.same({}, app._core:store_requeue_expired())
    local first = app._core:store_claim("alive", 10, 0, 30)
    assert.equal(3, #first)
    -- after lease_s (5 s) any live process queues them again
    local back, t0 = {}, H.now()
    while #back == 0 and H.now() - t0 < 30 do back = app._core:store_requeue_expired() end
    table.sort(back)
    table.sort(held)
    assert.same(held, back)
    local again = app._core:store_claim("alive", 10, 0, 30)
    assert.equal(5, #again)
    for _, c in ipairs(again) do
      assert.equal(2, c.token) -- the fencing token of the second claim
      assert.is_true(app._core:store_put_fenced(c.task_id, "alive", c.token, "completed", true,
        '{"task_id":"' .. c.task_id .. '","status":"completed"}'))
    end
    app:close()
  end)

  it("a write with a stale fencing token is rejected and the record stays as the new owner left it", function()
    local app = shared_app(url)
    queue_rows(url, 1)
    local old = app._core:store_claim("old", 1, 0, -1)[1] -- a lease already over
    assert.equal(1, old.token)
    assert.same({ old.task_id }, app._core:store_requeue_expired())
    local new = app._core:store_claim("new", 1, 0, 30)[1]
    assert.equal(old.task_id, new.task_id)
    assert.equal(2, new.token)
    local mine = '{"task_id":"' .. new.task_id .. '","status":"completed","by":"new"}'
    assert.is_true(app._core:store_put_fenced(new.task_id, "new", 2, "completed", true, mine))
    -- the old owner wakes up and writes its result late
    local late = '{"task_id":"' .. old.task_id .. '","status":"completed","by":"old"}'
    assert.is_false(app._core:store_put_fenced(old.task_id, "old", 1, "completed", true, late))
    -- the current token from the wrong owner is no better
    assert.is_false(app._core:store_put_fenced(old.task_id, "old", 2, "failed", true, late))
    assert.same({ "completed|" .. mine }, P.psql(url,
      "SELECT status, record FROM tasks WHERE task_id = '" .. new.task_id .. "'"))
    assert.equal(2, app._core:store_info().stale_writes)
    app:close()
  end)

  it("a renewed lease is not taken over; an unrenewed one is", function()
    local app = shared_app(url)
    queue_rows(url, 2)
    local got = app._core:store_claim("me", 2, 0, -1) -- both over at once
    assert.equal(2, #got)
    -- renewing extends every lease the node holds
    assert.equal(2, app._core:store_renew("me", 30))
    assert.same({}, app._core:store_requeue_expired())
    assert.equal(0, app._core:store_renew("someone else", 30))
    -- finishing one ends its lease; the other lapses when renewed into the past
    assert.is_true(app._core:store_put_fenced(got[1].task_id, "me", got[1].token, "completed", true, "{}"))
    assert.equal(1, app._core:store_renew("me", -1))
    assert.same({ got[2].task_id }, app._core:store_requeue_expired())
    app:close()
  end)

  -- per_agent_concurrency under scope = "cluster": claims count each
  -- agent's leased tasks (a holder that waits with its slot lent excepted)
  it("a per-agent cap counts each agent's leased tasks in the whole database", function()
    local app = shared_app(url)
    P.psql(url, "INSERT INTO tasks(task_id, status, record, agent) VALUES" ..
      " ('tsk_a1', 'queued', '{}', 'a'), ('tsk_a2', 'queued', '{}', 'a'), ('tsk_a3', 'queued', '{}', 'a')," ..
      " ('tsk_b1', 'queued', '{}', 'b'), ('tsk_b2', 'queued', '{}', 'b'), ('tsk_b3', 'queued', '{}', 'b')")
    local function ids(got)
      local out = {}
      for i, c in ipairs(got) do out[i] = c.task_id end
      table.sort(out)
      return out
    end
    -- two of each agent, oldest first; a busy agent never holds back another
    local first = app._core:store_claim("n1", 10, 0, 30, 2)
    assert.same({ "tsk_a1", "tsk_a2", "tsk_b1", "tsk_b2" }, ids(first))
    assert.same({}, ids(app._core:store_claim("n2", 10, 0, 30, 2)))
    -- one of a's finishes: a's next is claimable, by any process
    local a1 = first[1].task_id == "tsk_a1" and first[1] or first[2]
    assert.is_true(app._core:store_put_fenced("tsk_a1", "n1", a1.token, "completed", true, "{}"))
    assert.same({ "tsk_a3" }, ids(app._core:store_claim("n2", 10, 0, 30, 2)))
    -- a holder of b's that waits lends its slot: b's last one may run
    P.psql(url, "UPDATE tasks SET lent = true WHERE task_id = 'tsk_b1'")
    assert.same({ "tsk_b3" }, ids(app._core:store_claim("n2", 10, 0, 30, 2)))
    app:close()
  end)

  it("a file store has no shared queue", function()
    local app = H.app([[ return luagent.config{ background_tasks = { enabled = true } } ]],
      { store = { path = dir .. "/agents.db" } })
    local ok, err = pcall(app._core.store_claim, app._core, "n", 1, 0, 30)
    assert.is_false(ok)
    assert.matches("needs a PostgreSQL store", tostring(err))
    app:close()
  end)
end)
