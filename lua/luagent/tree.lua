-- Task trees from records (app:tree, the luagent command) and the rows of
-- their timeline picture (trace.lua): one row per task, depth first, with
-- its attempts, waits and retries read from the events.
local compat = require("luagent.compat")
local json = require("luagent.json")
local usage = require("luagent.usage")

local tree = {}

local TERMINAL = { completed = true, failed = true, cancelled = true, timed_out = true }

-- Milliseconds since the epoch of an ISO-8601 UTC time as the core writes
-- it (2026-06-08T12:00:00.000Z), or nil. Whole dates count, so spans
-- across midnight come out right.
function tree.iso_ms(s)
  if type(s) ~= "string" then return nil end
  local y, mo, d, h, mi, sec, frac = s:match("^(%d+)-(%d+)-(%d+)T(%d+):(%d+):(%d+)%.?(%d*)Z$")
  if not y then return nil end
  y, mo, d = tonumber(y), tonumber(mo), tonumber(d)
  -- days from the civil date (proleptic Gregorian), 1970-01-01 = 0
  y = mo <= 2 and y - 1 or y
  local era = compat.idiv(y >= 0 and y or y - 399, 400)
  local yoe = y - era * 400
  local doy = compat.idiv(153 * (mo + (mo > 2 and -3 or 9)) + 2, 5) + d - 1
  local doe = yoe * 365 + compat.idiv(yoe, 4) - compat.idiv(yoe, 100) + doy
  local days = era * 146097 + doe - 719468
  local ms = frac ~= "" and tonumber((frac .. "00"):sub(1, 3)) or 0
  return ((days * 24 + tonumber(h)) * 60 + tonumber(mi)) * 60000 + tonumber(sec) * 1000 + ms
end

local function copy(rec)
  local c = {}
  for k, v in pairs(rec) do c[k] = v end
  c.children = {}
  return c
end

-- The tree under root_id: a task id, or the run id of a foreground run
-- (then the root is { kind = "run", run_id, agent_id, status, usage,
-- tree_usage } with the tasks the run started as children; `run` is what
-- the app knows of it). Each node is a record with `children`, in
-- enqueue order. nil when nothing in `records` belongs to root_id.
function tree.build(records, root_id, run)
  local nodes, order = {}, {}
  for _, rec in ipairs(records) do
    local n = copy(rec)
    nodes[rec.task_id] = n
    order[#order + 1] = n
  end
  local root = nodes[root_id]
  if not root then
    local any = run ~= nil
    for _, n in ipairs(order) do any = any or n.root_run_id == root_id end
    if not any then return nil end
    root = { kind = "run", run_id = root_id, task_id = nil, children = {}, depth = -1 }
    for k, v in pairs(run or {}) do root[k] = v end
    root.status = root.status or "running"
  end
  for _, n in ipairs(order) do
    local parent = n.parent_task_id and nodes[n.parent_task_id]
    if not parent and root.kind == "run" and n.root_run_id == root_id then
      parent = root -- started by the run itself (or its task left memory)
    elseif not parent and root.task_id and n.root_task_id == root.task_id and n ~= root then
      parent = root
    end
    if parent and n ~= root then parent.children[#parent.children + 1] = n end
  end
  for _, n in pairs(nodes) do json.array(n.children) end
  json.array(root.children)
  if root.kind == "run" then
    local total = usage.add(usage.zero(), root.usage or usage.zero())
    for _, c in ipairs(root.children) do
      local u = c.tree_usage or c.usage
      if u then usage.add(total, u) end
    end
    root.tree_usage = total
  end
  return root
end

-- What the events tell of a foreground run (it has no record): agent,
-- status, start and end, and the usage of its model calls (its nested
-- runs' too, which name it as root_run_id).
function tree.run_from_events(run_id, events)
  local run = { agent_id = nil, status = "running", usage = usage.zero() }
  for _, ev in ipairs(events) do
    local p = ev.payload or {}
    if ev.run_id == run_id and not ev.task_id then
      run.agent_id = run.agent_id or ev.agent_id
      local at = tree.iso_ms(ev.ts)
      run.started_ms = run.started_ms or at
      if ev.kind == "final" and ev.depth == 0 then
        run.status, run.finished_ms = "completed", at
      elseif ev.kind == "error" and ev.depth == 0 and p.status then
        run.status, run.finished_ms = p.status, at
      end
    end
    if ev.kind == "lm_call" and not ev.task_id and (ev.run_id == run_id or p.root_run_id == run_id) then
      local u = p.usage or p.estimated_usage
      if type(u) == "table" then usage.add(run.usage, usage.normalize(u)) end
      if type(u) == "table" and u.cost then run.usage.cost = (run.usage.cost or 0) + u.cost end
      if p.usage_estimated then run.usage.estimated = true end
    end
  end
  return run
end

-- The roots of every tree in `records`: tasks no task started (by id) and
-- the foreground runs that started tasks (by run id), in order.
function tree.roots(records)
  local out, seen = {}, {}
  for _, rec in ipairs(records) do
    local id = rec.root_run_id or (not rec.parent_task_id and rec.task_id) or nil
    if id and not seen[id] then
      seen[id] = true
      out[#out + 1] = id
    end
  end
  return out
end

-- The set of task and run ids in a tree.
function tree.ids(root)
  local ids = {}
  local function walk(n)
    ids[n.task_id or n.run_id] = true
    for _, c in ipairs(n.children or {}) do walk(c) end
  end
  walk(root)
  return ids
end

-- Depth first, parents before children: fn(node, depth).
function tree.walk(root, fn)
  local function go(n, depth)
    fn(n, depth)
    for _, c in ipairs(n.children or {}) do go(c, depth + 1) end
  end
  go(root, 0)
end

local ENDS_ATTEMPT = { task_retry = "retry", task_finished = "finished", task_suspended = "suspended" }

-- A task's attempts, waits and retries from its events (ts order), or
-- from its record alone when its events are gone.
local function spans(node, evs, now_ms)
  local row = { attempts = {}, waits = {}, retries = {} }
  local attempt, wait
  for _, ev in ipairs(evs or {}) do
    local at = tree.iso_ms(ev.ts)
    if at then
      if ev.kind == "task_started" then
        attempt = { from = at }
        row.attempts[#row.attempts + 1] = attempt
      elseif ev.kind == "task_waiting" then
        wait = { from = at, what = ev.payload and ev.payload.summary }
        row.waits[#row.waits + 1] = wait
      elseif ev.kind == "task_resumed" and wait then
        wait.to, wait = at, nil
      elseif ENDS_ATTEMPT[ev.kind] then
        if wait and not wait.to then wait.to, wait = at, nil end
        if attempt and not attempt.to then
          attempt.to, attempt.outcome = at, ENDS_ATTEMPT[ev.kind]
        end
        if ev.kind == "task_retry" then row.retries[#row.retries + 1] = { at = at } end
      end
    end
  end
  local start_ms = tree.iso_ms(node.started_at) or node.started_ms
  local end_ms = tree.iso_ms(node.finished_at) or node.finished_ms
  if #row.attempts == 0 and start_ms then
    row.attempts[1] = { from = start_ms, to = end_ms }
  end
  for _, a in ipairs(row.attempts) do a.to = a.to or end_ms or now_ms end
  for _, w in ipairs(row.waits) do w.to = w.to or end_ms or now_ms end
  row.enqueued_ms = tree.iso_ms(node.enqueued_at) or start_ms or (row.attempts[1] and row.attempts[1].from)
  row.start_ms = row.attempts[1] and row.attempts[1].from or start_ms
  row.end_ms = end_ms or (not TERMINAL[node.status] and now_ms) or
    (row.attempts[#row.attempts] and row.attempts[#row.attempts].to)
  return row
end

-- The rows of root's timeline: one per node, depth first, each with
-- depth, attempts {from, to, outcome}, waits {from, to}, retries {at},
-- enqueued_ms, start_ms, end_ms (ms since the epoch) and the node.
-- `events` are the app's events for the tree (task_* kinds are used; a
-- run node's own span comes from its run's events).
function tree.rows(root, events, now_ms)
  local by_id = {}
  for _, ev in ipairs(events or {}) do
    local id = ev.task_id or ev.run_id
    if id then
      by_id[id] = by_id[id] or {}
      table.insert(by_id[id], ev)
    end
  end
  local rows = {}
  tree.walk(root, function(n, depth)
    local id = n.task_id or n.run_id
    local row
    if n.kind == "run" then
      local evs = by_id[id] or {}
      local first, last = evs[1], evs[#evs]
      local from = n.started_ms or (first and tree.iso_ms(first.ts))
      local to = n.finished_ms or (TERMINAL[n.status] and last and tree.iso_ms(last.ts))
      row = { attempts = { { from = from, to = to or now_ms } }, waits = {}, retries = {},
        enqueued_ms = from, start_ms = from, end_ms = to or now_ms }
    else
      row = spans(n, by_id[id], now_ms)
    end
    row.node, row.depth, row.id = n, depth, id
    rows[#rows + 1] = row
  end)
  return rows
end

return tree
