-- The host side of an app: enqueue, query, wait, cancel, close, and the pump
-- that runs host tools and lifecycle callbacks on the host thread (R-5).
-- Every blocking call here keeps pumping while it waits.
local compat = require("luagent.compat")
local core = require("luagent.core")
local json = require("luagent.json")
local options = require("luagent.options")
local context = require("luagent.context")
local tools = require("luagent.tools")
local log = require("luagent.log")
local runner = require("luagent.runner")
local usage = require("luagent.usage")
local tree = require("luagent.tree")
local trace = require("luagent.trace")
local budget = require("luagent.budget")

local text_id = options.text_id

local app = {}

local App = {}
App.__index = App

local LIFECYCLE = {
  task_enqueued = core.W_ENQUEUED,
  task_started = core.W_STARTED,
  task_retry = core.W_RETRY,
  task_finished = core.W_FINISHED,
  error = core.W_ERROR,
}

local function update_wants(self)
  local mask = 0
  for name, bit in pairs(LIFECYCLE) do
    local wanted = self._reg.hooks["on_" .. name] ~= nil or next(self._listeners[name]) ~= nil
    if wanted then mask = compat.bor(mask, bit) end
  end
  self._core:set_wants(mask)
end

local function check_not_in_callback(self, where)
  if self._in_cb > 0 then
    error(where .. ": blocking call inside a host callback", 3)
  end
end

-- Report a failure of a host callback as an `error` event (it never
-- escapes the pump).
local function callback_error(self, where, err)
  local msg = type(err) == "table" and tostring(err.message) or tostring(err)
  local payload = { where = where, message = msg, traceback = type(err) == "table" and err.traceback or nil }
  -- (the core keeps the digest as a C string: no NUL)
  self._core:emit("error", json.encode(payload), nil, nil, nil, 0,
    (string.gsub(where .. ": " .. msg, "%z", "\\0")))
end

local function error_text(v)
  if type(v) == "table" then return tostring(v.message) end
  if core.is_cancel(v) then return "cancelled" end
  return tostring(v)
end

-- The ToolResult of host tool `name`, run as a host callback (R-5): while it
-- runs, blocking app calls raise and close waits; a raising handler becomes
-- a runtime failure and an `error` event (its traceback is returned second).
local function host_tool_result(self, name, args, info)
  local fn = self._host_tools[name]
  if not fn then
    return tools.fail("runtime", string.format("no host handler bound for %q", name))
  end
  self._in_cb = self._in_cb + 1
  local ok, v = compat.xpcall(fn, tools.on_error, args, info)
  self._in_cb = self._in_cb - 1
  if ok then return tools.ok(v) end
  if tools.is_abort(v) then error(v, 0) end
  callback_error(self, "host tool " .. name, v)
  return tools.fail("runtime", string.format("host tool %s failed: %s", name, error_text(v))),
    v.traceback
end

-- A call a worker queued for the host.
local function host_result(self, it)
  local args = json.decode(it.json)
  local info = it.ctx and json.decode(it.ctx) or {}
  return (host_tool_result(self, it.name, args, info))
end

local function run_call(self, it)
  -- whatever happens, the waiting task gets an answer
  local ok, result = pcall(host_result, self, it)
  if not ok then
    result = tools.fail("runtime", string.format("host tool %s failed: %s", tostring(it.name),
      error_text(result)))
  end
  local ok2, text = pcall(json.encode, result)
  if not ok2 then
    text = json.encode(tools.fail("runtime", "host tool result is not JSON: " .. tostring(text)))
  end
  -- a frame does not wait for the queue's lock: a reply it kept from a busy
  -- lock goes out at the start of the next pump (App:_pump)
  if not self._core:reply(it.id, text, self._frame_nowait) then
    self._replies[#self._replies + 1] = { it.id, text }
  end
end

-- Replies a frame kept from a busy lock, oldest first: a frame tries them
-- without waiting (keeping what still does not go) unless the last frame's
-- try found the lock busy; anything else waits. So every reply goes out by
-- the second pump after it was made.
local function flush_replies(self, frame)
  local kept = self._replies
  if not kept[1] then return end
  self._replies = {}
  local nowait = frame and not self._reply_was_busy
  self._reply_was_busy = false
  for i, r in ipairs(kept) do
    if not self._core:reply(r[1], r[2], nowait) then
      for j = i, #kept do self._replies[#self._replies + 1] = kept[j] end
      self._reply_was_busy = true
      return
    end
  end
end

local function run_callback(self, it)
  -- a record's nested members (result, usage, ...) decode when first read
  local payload = json.decode_record(it.json)
  local fns = {}
  local hook = self._reg.hooks["on_" .. it.kind]
  if hook then fns[#fns + 1] = hook end
  for _, fn in ipairs(self._listener_list[it.kind] or {}) do fns[#fns + 1] = fn end
  for _, fn in ipairs(fns) do
    local ok, err = compat.xpcall(fn, tools.on_error, payload)
    if not ok then
      if it.kind == "error" then
        log.emit("error", "error callback failed: " .. error_text(err))
      else
        callback_error(self, it.kind .. " callback", err)
      end
    end
  end
end

local function run_log(self, it)
  log.emit(it.kind, it.json)
  if it.kind == "error" or it.kind == "warn" then
    local fns = { self._reg.hooks.on_error }
    for _, fn in ipairs(self._listener_list.error or {}) do fns[#fns + 1] = fn end
    for _, fn in pairs(fns) do pcall(fn, { level = it.kind, message = it.json }) end
  end
end

local runners = { call = run_call, callback = run_callback, log = run_log }

-- What the next host item will likely cost under a budget: the larger of
-- the last item's cost and a running average (docs/architecture.md, R-5).
local function item_cost(self, cost)
  local avg = self._item_avg
  avg = avg and avg + (cost - avg) * 0.25 or cost
  self._item_avg = avg
  self._item_est = math.max(cost, avg)
end

-- Run host work queued by workers. Returns how many items ran. Under a
-- budget (poll's frame) the first item always runs; another starts only
-- while the time left covers what an item is expected to cost, so the one
-- that would cross the budget waits, queued and in order, for the next call.
-- A frame (poll under a budget) also never waits for the queue's lock: a
-- worker holding it may be off its core; the next frame then takes it
-- waiting, so work always moves on.
function App:_pump(max_items, budget_s, frame)
  if self._in_cb > 0 then return 0 end
  max_items = max_items or math.huge
  frame = frame and budget_s ~= nil
  flush_replies(self, frame)
  self._frame_nowait = frame
  local n, t0 = 0, core.now()
  while n < max_items do
    if budget_s and n > 0 and core.now() - t0 + (self._item_est or 0) > budget_s then break end
    -- one item at a time under a budget, so nothing taken is left unrun
    local nowait = frame and not self._take_was_busy
    local batch = self._core:take(budget_s and 1 or math.min(64, max_items - n), nowait)
    self._take_was_busy = batch == nil
    if not batch or #batch == 0 then break end
    for _, it in ipairs(batch) do
      local s0 = budget_s and core.now()
      self._in_cb = self._in_cb + 1
      local ok, err = pcall(runner.unwatched, runners[it.type], self, it)
      self._in_cb = self._in_cb - 1
      if not ok then log.emit("error", "luagent: host work failed: " .. tostring(err)) end
      if s0 then item_cost(self, core.now() - s0) end
      n = n + 1
    end
  end
  self._frame_nowait = false
  if self._watchers[1] then self:_notify_watchers() end
  if self._close_pending and self._in_cb == 0 then
    local opts = self._close_pending
    self._close_pending = nil
    self:close(opts)
  end
  return n
end

-- Pump and block until check() returns a value or the deadline passes.
-- stop(): raise-or-not hook for foreground runs (cancel/timeout).
function App:_wait_until(check, deadline, stop)
  while true do
    local gen = self._core:gen()
    self:_pump()
    local v = check()
    if v ~= nil then return v end
    if stop then stop() end
    local now = core.now()
    if deadline and now >= deadline then return nil end
    local wait = deadline and deadline - now or -1
    if self._tick and (wait < 0 or self._tick < wait) then wait = self._tick end -- app:watch
    -- what check() looks at changes with host work, finished tasks and
    -- waits that are over, never with an event alone: new events wake
    -- this wait only for the watchers (app:watch), which the pump tells
    self._core:block(gen, wait, self._watchers[1] ~= nil)
  end
end

local poll_spec = {
  budget_ms = function(v) return options.non_negative(v) end,
  max_callbacks = options.at_least(1),
  wait_ms = function(v) return options.non_negative(v) end,
}

-- The pump for game loops (R-5): runs what is queued for the host, within
-- budget_ms / max_callbacks, and returns how much ran. It never blocks
-- unless wait_ms is given: then, when nothing was queued, it waits up to
-- wait_ms for something to arrive (a frame's idle time, say).
function App:poll(opts)
  options.check("app:poll", opts, poll_spec)
  if self._in_cb > 0 then return 0 end
  opts = opts or {}
  local gen = opts.wait_ms and self._core:gen()
  local n = self:_pump(opts.max_callbacks, opts.budget_ms and opts.budget_ms / 1000, true)
  if n == 0 and opts.wait_ms and opts.wait_ms > 0 then
    -- (work that a busy lock kept from this frame is queued: no waiting)
    if not self._take_was_busy then self._core:block(gen, opts.wait_ms / 1000) end
    n = self:_pump(opts.max_callbacks, opts.budget_ms and opts.budget_ms / 1000, true)
  end
  return n
end

function App:_check_open(where)
  if self._closed then error(where .. ": the app is closed", 3) end
end

function App:enqueue_tool(name, args, opts)
  self:_check_open("app:enqueue_tool")
  if not self._reg.settings.enabled then
    error("app:enqueue_tool: background tasks are disabled (set background_tasks.enabled = true)", 2)
  end
  options.check("app:enqueue_tool", opts, context.enqueue_spec)
  opts = opts or {}
  local agent_id = opts.agent_id or "host"
  local req, tool = context.tool_request(self._reg, "app:enqueue_tool", name, args, 2)
  req.agent_id = agent_id
  req.depth = 0
  context.request_options(req, opts, "app:enqueue_tool", 2)
  context.tool_defaults(req, tool)
  req.tree_budget = budget.check("app:enqueue_tool", opts.tree_budget, 2)
  local ok, rec = pcall(self._core.enqueue, self._core, req)
  if not ok then error(rec, 2) end
  return rec
end

-- One request of app:enqueue_tools: entry e = {name, args, opts?}, whose
-- options go over the call's (`shared`, checked already). Raises as
-- app:enqueue_tool does, `where` naming the entry, at the level of
-- enqueue_tools' caller.
local function tool_entry(self, where, e, shared)
  if type(e) ~= "table" then
    error(string.format("%s: must be a table {name, args, opts}, got %s", where, type(e)), 3)
  end
  local opts = e[3]
  if opts == nil then
    opts = shared
  else
    options.check(where, opts, context.enqueue_spec, 4)
    if next(shared) ~= nil then
      local m = {}
      for k, v in pairs(shared) do m[k] = v end
      for k, v in pairs(opts) do m[k] = v end
      opts = m
    end
  end
  local req, tool = context.tool_request(self._reg, where, e[1], e[2], 3)
  req.agent_id = opts.agent_id or "host"
  req.depth = 0
  context.request_options(req, opts, where, 3)
  context.tool_defaults(req, tool)
  req.tree_budget = budget.check(where, opts.tree_budget, 3)
  return req
end

local function tool_entries(self, list, shared, reqs)
  for i = 1, #list do reqs[i] = tool_entry(self, "app:enqueue_tools", list[i], shared) end
end

-- Many tool tasks at once (README "Batches"): list = { {name, args, opts?}, ... },
-- opts for every entry (an entry's own opts win). All or nothing: a bad
-- entry raises naming its index and nothing is enqueued. One core call,
-- one lock, one store commit; returns the records in order.
function App:enqueue_tools(list, opts)
  self:_check_open("app:enqueue_tools")
  if not self._reg.settings.enabled then
    error("app:enqueue_tools: background tasks are disabled (set background_tasks.enabled = true)", 2)
  end
  options.arg("app:enqueue_tools", "list", list, "table", 3)
  options.check("app:enqueue_tools", opts, context.enqueue_spec)
  opts = opts or {}
  local reqs = {}
  local ok, err = pcall(tool_entries, self, list, opts, reqs)
  if not ok then
    -- the entry that failed, again with its index in the messages
    local i = #reqs + 1
    tool_entry(self, string.format("app:enqueue_tools: entry %d", i), list[i], opts)
    error(err, 2)
  end
  local rok, recs = pcall(self._core.enqueue_many, self._core, reqs)
  if not rok then error(recs, 2) end
  return recs
end

function App:enqueue_background(agent_id, prompt, opts)
  self:_check_open("app:enqueue_background")
  if not self._reg.settings.enabled then
    error("app:enqueue_background: background tasks are disabled (set background_tasks.enabled = true)", 2)
  end
  context.check_agent(self._reg, "app:enqueue_background", agent_id)
  options.arg("app:enqueue_background", "prompt", prompt, options.no_nul, 3)
  options.check("app:enqueue_background", opts, context.enqueue_spec)
  opts = opts or {}
  if opts.agent_id then
    error("app:enqueue_background: the agent is the first argument, not an option", 2)
  end
  local req = { kind = "agent", agent_id = agent_id, prompt = prompt, depth = 0 }
  context.request_options(req, opts, "app:enqueue_background", 2)
  req.tree_budget = budget.check("app:enqueue_background", budget.for_root(self._reg, agent_id, opts), 2)
  local ok, rec = pcall(self._core.enqueue, self._core, req)
  if not ok then error(rec, 2) end
  return rec
end

function App:get(id)
  options.arg("app:get", "task_id", id, text_id, 3)
  local rec = self._core:get(id)
  -- read back from a file store: drop what only recovery needs
  if rec then rec.root_key, rec.max_depth, rec.scoped = nil, nil, nil end
  return rec
end

local list_spec = {
  status = function(v)
    for _, s in ipairs({ "queued", "running", "completed", "failed", "cancelled", "timed_out" }) do
      if v == s then return true end
    end
    return nil, "must be a task status (queued, running, completed, failed, cancelled, timed_out)"
  end,
  limit = options.at_least(1),
  agent_id = text_id,
  thread_id = text_id,
  parent_task_id = text_id,
}

function App:list(filter)
  options.check("app:list", filter, list_spec)
  local f = {}
  for k, v in pairs(filter or {}) do f[k] = v end
  f.include_finished = true
  return self._core:list(f)
end

-- Cancel a task (R-25) or a foreground run (R-6). Outside host callbacks it
-- waits up to a second for a running task to stop, pumping; inside one it
-- only requests the cancel and reports the status as it is now.
function App:cancel(id)
  options.arg("app:cancel", "id", id, text_id, 3)
  local fg = self._fg_runs[id]
  if fg then
    local was = not fg.cancelled
    fg.cancelled = true
    if fg.watch then fg.watch:cancel() end
    return { ok = was, status = "running", run_id = id }
  end
  local r = self._core:cancel(id)
  if not r then error(string.format("app:cancel: unknown task id %q", id), 2) end
  if r.ok and self._in_cb == 0 and (r.status == "queued" or r.status == "running") then
    local deadline = core.now() + 1
    r.status = self:_wait_until(function()
      local st = self._core:status(id)
      if st ~= "queued" and st ~= "running" then return st end
    end, deadline) or self._core:status(id)
  end
  return r
end

local send_spec = { interrupt = "boolean", from = options.text_id }

-- Send a message to a running agent task (README, "Steering"): delivered
-- once, before its next model call; interrupt = true also cuts its current
-- model call or tool short. Returns once the message is stored: {ok = true,
-- seq, status, task_id, interrupt}; a finished task gives {ok = false,
-- status, task_id} (as app:cancel does). An unknown id, a foreground run or
-- a tool task raise. opts: interrupt (false), from (who the run is told
-- sent it, "the host application").
function App:send(id, message, opts)
  options.arg("app:send", "id", id, text_id, 3)
  options.arg("app:send", "message", message, options.no_nul, 3)
  if message == "" then error('app:send: argument "message" must not be empty', 2) end
  opts = options.check("app:send", opts, send_spec)
  if self._fg_runs[id] then
    error(string.format("app:send: %q is a foreground run; only tasks take messages", id), 2)
  end
  local ok, r = pcall(self._core.send, self._core, id, message, opts.from or "the host application",
    opts.interrupt or false)
  if ok then return r end
  if type(r) == "table" and r.kind == "not_found" then
    error(string.format("app:send: unknown task id %q", id), 2)
  elseif type(r) == "table" and r.kind == "validation" then
    error("app:send: " .. tostring(r.message), 2)
  end
  error(r, 2) -- {kind = "store", message}: the message was not stored
end

-- The wait value once the tasks are done or `deadline` passes; unknown ids
-- raise at once. The core registers the ids once and builds the value once:
-- a wakeup only asks whether the wait is over. stop: as for _wait_until.
function App:_wait_tasks(ids, any, deadline, stop)
  local w = self._core:wait_begin(ids, any)
  return compat.with_close(w, self._block_on, self, w, deadline, stop)
end

-- Pump until the core's wait `w` is over or `deadline` passes.
function App:_block_on(w, deadline, stop)
  self:_wait_until(function() if w:over() then return true end end, deadline, stop)
  return w:value(true)
end

function App:wait(ids, opts)
  check_not_in_callback(self, "app:wait")
  local list, any, timeout = context.wait_args("app:wait", ids, opts,
    self._reg.settings.default_wait_timeout_s, 2)
  return self:_wait_tasks(list, any, core.now() + timeout)
end

local idle_spec = {
  timeout_s = function(v) return options.non_negative(v) end,
  timeout_ms = function(v) return options.non_negative(v) end,
}

local function finished_delta(after, before)
  return {
    completed = after.completed - before.completed,
    failed = after.failed - before.failed,
    cancelled = after.cancelled - before.cancelled,
    timed_out = after.timed_out - before.timed_out,
  }
end

local serve_spec = {
  timeout_s = function(v) return options.non_negative(v) end,
  until_idle = "boolean",
}

-- Work for a shared store's queue (README, "Several processes, one queue"):
-- claim queued tasks while this process has free slots (under the cluster's
-- cap with background_tasks.scope = "cluster"), run them, and pump host
-- work, until timeout_s, or with until_idle until nothing is queued or
-- running anywhere. Leases are renewed by the store's writer thread, not
-- here. Returns true when it stopped idle.
local function serve(self, opts, st)
  local c = self._core
  local node = c:cluster_node()
  local cluster = self._reg.settings.scope == "cluster"
  local cap = cluster and self._reg.settings.global_concurrency or 0
  local agent_cap = cluster and self._reg.settings.per_agent_concurrency or 0
  local deadline = opts.timeout_s and core.now() + opts.timeout_s
  while true do
    local room = c:cluster_room()
    local got = room > 0 and c:store_claim(node, room, cap, st.lease_s, agent_cap) or {}
    for _, claim in ipairs(got) do
      if c:cluster_admit(claim.task_id, claim.token, claim.cancel) == 0 then
        c:restore(claim.record)
        c:cluster_admit(claim.task_id, claim.token, claim.cancel)
      end
    end
    local gen = c:gen()
    self:_pump()
    if #got == 0 then
      if opts.until_idle and c:stats().idle and c:store_count_open() == 0 then return true end
      if deadline and core.now() >= deadline then return false end
      -- nothing to claim: wait for a local finish (it frees a slot), a
      -- wake-up from another process (NOTIFY), or a short while without them
      local wait = c:cluster_listening() and 0.5 or 0.02
      if deadline then wait = math.max(0, math.min(wait, deadline - core.now())) end
      c:block(gen, wait)
    elseif deadline and core.now() >= deadline then
      return false
    end
  end
end

function App:serve(opts)
  check_not_in_callback(self, "app:serve")
  options.check("app:serve", opts, serve_spec)
  opts = opts or {}
  local st = self._reg.store
  if not (st and st.shared) then
    error("app:serve: needs a shared store (store = { url = ..., shared = true })", 2)
  end
  self._core:cluster_serving(true)
  local ok, idle = pcall(serve, self, opts, st)
  self._core:cluster_serving(false)
  if not ok then error(idle, 0) end
  return idle
end

-- Drain until nothing is queued, running or pending on the host (R-29).
function App:run_until_idle(opts)
  check_not_in_callback(self, "app:run_until_idle")
  options.check("app:run_until_idle", opts, idle_spec)
  opts = opts or {}
  local timeout = opts.timeout_s or (opts.timeout_ms and opts.timeout_ms / 1000)
  local before = self._core:stats().finished
  local idle = self:_wait_until(function()
    if self._core:stats().idle then return true end
  end, timeout and core.now() + timeout) or false
  self:_pump()
  local r = finished_delta(self._core:stats().finished, before)
  r.idle = idle
  return r
end

local stream_spec = {
  since = options.at_least(0),
  timeout_s = function(v) return options.non_negative(v) end,
}

-- Merged events from the app's stream cursor until idle (R-29). `break`
-- ends the subscription through the closing value.
function App:run_stream_until_idle(opts)
  check_not_in_callback(self, "app:run_stream_until_idle")
  options.check("app:run_stream_until_idle", opts, stream_spec)
  opts = opts or {}
  -- a shared store: every process's events (app:events), until nothing is
  -- queued or running anywhere; other processes' events wake no one here,
  -- so the wait for them is a short one
  local st = self._reg.store
  local shared = st and st.shared
  local c = self._core
  local key = shared and "_cluster_cursor" or "_cursor"
  local read = shared and function(s) return c:cluster_events(s, 256) end
    or function(s) return c:events(s, 256) end
  local function idle()
    return c:stats().idle and (not shared or c:store_count_open() == 0)
  end
  local cursor = opts.since or self[key] or 0
  local deadline = opts.timeout_s and core.now() + opts.timeout_s
  local buffer, i, done = {}, 0, false
  local function advance(ev)
    local seq = ev.kind == "gap" and ev.payload.next_seq - 1 or ev.seq
    if seq > cursor then cursor = seq end
    if cursor > (self[key] or 0) then self[key] = cursor end
  end
  local function next_event()
    while not done do
      if i < #buffer then
        i = i + 1
        local ev = buffer[i]
        advance(ev)
        return ev
      end
      check_not_in_callback(self, "app:run_stream_until_idle")
      local gen = c:gen()
      self:_pump()
      buffer, i = read(cursor), 0
      if #buffer == 0 then
        -- only stop once idle *and* nothing was appended in between
        if idle() then
          buffer = read(cursor)
          if #buffer == 0 then done = true end
        elseif deadline and core.now() >= deadline then
          done = true
        else
          local wait = deadline and deadline - core.now() or -1
          if shared and (wait < 0 or wait > 0.02) then wait = 0.02 end
          c:block(gen, wait)
        end
      end
    end
    return nil
  end
  local closer = setmetatable({}, { __close = function() done = true end })
  return next_event, nil, nil, closer
end

local events_spec = {
  since = options.at_least(0),
  limit = options.at_least(1),
  task_id = "string",
  root_task_id = "string",
  run_id = "string",
  kinds = "table",
}

local function event_filter(opts)
  local kinds
  if opts.kinds then
    kinds = {}
    for i, k in ipairs(opts.kinds) do
      if type(k) ~= "string" then
        error(string.format("app:events: kinds[%d] must be a string, got %s", i, type(k)), 4)
      end
      kinds[k] = true
    end
  end
  if not (kinds or opts.task_id or opts.root_task_id or opts.run_id) then return nil end
  return function(ev)
    if ev.kind == "gap" then return true end -- events were lost: say so to every reader
    return (not kinds or kinds[ev.kind]) and (not opts.task_id or ev.task_id == opts.task_id)
      and (not opts.root_task_id or ev.root_task_id == opts.root_task_id)
      and (not opts.run_id or ev.run_id == opts.run_id)
  end
end

-- Events after `since`, oldest first, at most `limit`; with task_id,
-- root_task_id, run_id or kinds only those that match (the stream is read
-- in batches and filtered here).
function App:events(opts)
  options.check("app:events", opts, events_spec)
  opts = opts or {}
  local since, limit = opts.since or 0, opts.limit or 1000
  local keep = event_filter(opts)
  -- a shared store: every process's events, in the order they were stored
  local st = self._reg.store
  local read = st and st.shared and function(s, n) return self._core:cluster_events(s, n) end
    or function(s, n) return self._core:events(s, n) end
  if not keep then return read(since, limit) end
  local out = {}
  while #out < limit do
    local batch = read(since, 1000)
    if #batch == 0 then break end
    for _, ev in ipairs(batch) do
      since = ev.kind == "gap" and ev.payload.next_seq - 1 or ev.seq
      if keep(ev) then
        out[#out + 1] = ev
        if #out >= limit then break end
      end
    end
  end
  return out
end

local function refresh_tick(self)
  local tick
  for _, w in ipairs(self._watchers) do
    if w.interval and (not tick or w.interval < tick) then tick = w.interval end
  end
  self._tick = tick
end

-- fn(events) is called on the host thread, inside the pump (poll, and
-- every blocking call: app:run, app:wait...), with the events appended
-- since its last call (after `since`, by default from now). With
-- interval_s it is also called (maybe with no events) at least that often
-- while the host blocks, for clocks and progress. Returns a function that
-- removes it.
function App:watch(fn, opts)
  options.arg("app:watch", "fn", fn, "callable", 3)
  options.check("app:watch", opts, { since = "integer",
    interval_s = function(v) return options.positive(v) end })
  opts = opts or {}
  local w = { fn = fn, since = opts.since or self._core:stats().last_seq, interval = opts.interval_s,
    last = core.now() }
  self._watchers[#self._watchers + 1] = w
  refresh_tick(self)
  return function()
    for i, x in ipairs(self._watchers) do
      if x == w then table.remove(self._watchers, i) break end
    end
    refresh_tick(self)
  end
end

function App:_notify_watchers()
  if self._notifying then return end
  self._notifying = true
  local now = core.now()
  for _, w in ipairs(self._watchers) do
    local evs = self._core:events(w.since, 100000)
    if #evs > 0 or (w.interval and now - w.last >= w.interval) then
      w.last = now
      local last = evs[#evs]
      if last then w.since = last.kind == "gap" and last.payload.next_seq - 1 or last.seq end
      self._in_cb = self._in_cb + 1
      local ok, err = compat.xpcall(w.fn, tools.on_error, evs)
      self._in_cb = self._in_cb - 1
      if not ok then callback_error(self, "watch callback", err) end
    end
  end
  self._notifying = false
end

function App:on(name, fn)
  options.arg("app:on", "name", name, "string", 3)
  if not LIFECYCLE[name] then
    error(string.format("app:on: unknown event %q%s (one of task_enqueued, task_started, " ..
      "task_retry, task_finished, error)", name, options.did_you_mean(name, LIFECYCLE)), 2)
  end
  options.arg("app:on", "fn", fn, "callable", 3)
  local token = {}
  self._listeners[name][token] = fn
  self:_rebuild_listeners()
  return function()
    self._listeners[name][token] = nil
    self:_rebuild_listeners()
  end
end

function App:_rebuild_listeners()
  for name in pairs(LIFECYCLE) do
    local l = {}
    for _, fn in pairs(self._listeners[name]) do l[#l + 1] = fn end
    self._listener_list[name] = l
  end
  update_wants(self)
end

function App:host_tool(name, fn)
  options.arg("app:host_tool", "name", name, text_id, 3)
  local t = self._reg.tools[name]
  if not t or not t.host then
    local hosts = {}
    for n, x in pairs(self._reg.tools) do if x.host then hosts[n] = true end end
    local near = options.suggest(name, hosts)
    error(string.format("app:host_tool: %q is not a host tool of this app%s", name,
      near and string.format(" (did you mean %q?)", near) or
      " (declare it with luagent.host_tool in the config)"), 2)
  end
  if fn ~= nil then options.arg("app:host_tool", "fn", fn, "callable", 3) end
  self._host_tools[name] = fn
  return self
end

-- How the file store is doing, or nil with memory only: { path,
-- journal_mode, synchronous, schema_version, write_failures, read_failures,
-- error (the latest failure), unsaved (ids of tasks whose latest record is
-- only in memory because its write failed) }.
function App:store_info()
  return self._core:store_info()
end

-- After close, `draining` counts the worker threads still alive: ones
-- stuck in a C call, detached from the app (README, "A quit that never
-- freezes"); retired ones count too.
function App:stats()
  local s = self._core:stats()
  s.finished = nil
  s.idle = nil
  s.cost = s.usage.cost -- with a price table (README "Usage and cost")
  s.closing = self._closed
  s.draining = self._closed and s.threads or 0
  s.threads = nil
  return s
end

-- nil while the app is open; after close, what is still draining:
-- { draining = worker threads still alive, tasks = ids of unfinished tasks }.
function App:closing()
  if not self._closed then return nil end
  local ids = {}
  for _, rec in ipairs(self._core:list{ status = "running" }) do ids[#ids + 1] = rec.task_id end
  return { draining = self._core:stats().threads, tasks = ids }
end

-- { [provider] = { in_flight, waiting, pauses, paused_s } } (README "Rate
-- limits"). Unlike app:stats it takes the scheduler's lock.
function App:rate_stats()
  return self._core:rate_stats()
end

-- The tree of a task (or of a foreground run, by its run_id): the record
-- of each task with `children`, in enqueue order (tree.lua).
function App:tree(root_id)
  options.arg("app:tree", "root_id", root_id, "string", 3)
  local root = tree.build(self:list(), root_id, self._runs[root_id])
  if not root and self._reg.store then
    local rec = self:get(root_id) -- left memory: the file still has it
    if rec then root = tree.build({ rec }, root_id) end
  end
  if not root then error(string.format("app:tree: unknown task or run id %q", root_id), 2) end
  return root
end

-- The events a picture of root's tree needs (tree.lua).
function App:_tree_events(root)
  local evs, since = {}, 0
  local ids = tree.ids(root)
  while true do
    local batch = self._core:events(since, 5000)
    if #batch == 0 then break end
    for _, ev in ipairs(batch) do
      since = ev.kind == "gap" and ev.payload.next_seq - 1 or ev.seq
      if (ev.task_id and ids[ev.task_id]) or (ev.run_id and ids[ev.run_id]) or
        (ev.payload and ev.payload.root_run_id and ids[ev.payload.root_run_id]) then
        evs[#evs + 1] = ev
      end
    end
  end
  return evs
end

-- One self-contained HTML page (inline SVG, no network): a Gantt chart of
-- root's task tree (trace.lua). opts.format = "svg" gives the SVG alone.
function App:trace_html(root_id, opts)
  options.check("app:trace_html", opts, { format = function(v)
    if v == "html" or v == "svg" then return true end
    return nil, 'must be "html" or "svg"'
  end, title = "string" })
  local root = self:tree(root_id)
  local rows = tree.rows(root, self:_tree_events(root), core.wall_ms())
  opts = opts or {}
  if opts.format == "svg" then return trace.svg(rows, opts) end
  return trace.html(rows, opts)
end

-- From now on a SIGINT (Ctrl-C) cancels this app's foreground runs, which
-- cancel their trees as they end, instead of Lua's "interrupted!" error
-- (core/interrupt.c); a second SIGINT ends the process with status 130.
-- For command-line hosts; app:interrupted() tells whether one came.
function App:cancel_on_interrupt()
  self._core:catch_interrupt()
  self._interrupts = self._interrupts or core.interrupted()
  return self
end

function App:interrupted()
  return self._interrupts ~= nil and core.interrupted() > self._interrupts
end

local close_spec = {
  mode = function(v)
    if v == "cancel" or v == "suspend" then return true end
    return nil, 'must be "cancel" or "suspend"'
  end,
  grace_s = function(v) return options.non_negative(v) end,
  wait = "boolean",
}

-- R-25a. Inside a host callback it takes effect when the outermost pump
-- returns. Returns true when every worker stopped within the grace period;
-- `wait = false` is `grace_s = 0`: signal everything, wait for nothing.
function App:close(opts)
  options.check("app:close", opts, close_spec)
  if self._closed then return self._core:stats().threads == 0 end
  if self._in_cb > 0 then
    self._close_pending = opts or {}
    return nil
  end
  opts = opts or {}
  if opts.wait == false and opts.grace_s ~= nil and opts.grace_s > 0 then
    error("app:close: wait = false and grace_s > 0 contradict each other", 2)
  end
  self._closed = true
  local grace = opts.wait == false and 0 or opts.grace_s or self._reg.close_grace_s
  local all = self._core:close(opts.mode, grace)
  self:_pump()
  return all
end

App.__close = function(self) self:close() end

local run_spec = {
  timeout_s = function(v) return options.positive(v) end,
  timeout_ms = function(v) return options.positive(v) end,
  thread_id = text_id,
  tree_budget = "table",
}

-- What app:tree shows of recent foreground runs (they have no record).
local KEEP_RUNS = 64

function App:_run_started(run_id, agent_id, fg)
  local info = { kind = "run", run_id = run_id, agent_id = agent_id, status = "running",
    started_ms = core.wall_ms(), usage = fg.usage }
  self._runs[run_id] = info
  self._run_order[#self._run_order + 1] = run_id
  if #self._run_order > KEEP_RUNS then self._runs[table.remove(self._run_order, 1)] = nil end
  return info
end

function App:_run(agent_id, prompt, opts, history)
  local run_id = core.new_id("run_")
  local timeout = opts.timeout_s or (opts.timeout_ms and opts.timeout_ms / 1000)
  local fg = { deadline = timeout and core.now() + timeout, usage = usage.zero() }
  if self._interrupts then fg.interrupt_base = self._interrupts end
  self._fg_runs[run_id] = fg
  local info = self:_run_started(run_id, agent_id, fg)
  local tree_budget = budget.for_root(self._reg, agent_id, opts)
  if tree_budget then self._core:tree_budget_define(run_id, tree_budget) end
  local ok, res = pcall(runner.run, self._env, agent_id, prompt, {
    run_id = run_id, thread_id = opts.thread_id, depth = 0, fg = fg, history = history,
    catch_cancel = true,
  })
  if tree_budget then self._core:tree_budget_close(run_id) end
  self._fg_runs[run_id] = nil
  info.finished_ms = core.wall_ms()
  info.status = ok and res.status or "failed"
  if ok and fg.interrupted then res.interrupted = true end
  if not ok then error(res, 0) end
  -- app:close() called from an inline host tool takes effect now (R-5)
  if self._close_pending and self._in_cb == 0 then
    local close_opts = self._close_pending
    self._close_pending = nil
    self:close(close_opts)
  end
  return res
end

-- R-6: run an agent in the host state; returns an AgentResult and never
-- raises for run-time failures.
function App:run(agent_id, prompt, opts)
  check_not_in_callback(self, "app:run")
  self:_check_open("app:run")
  context.check_agent(self._reg, "app:run", agent_id)
  options.arg("app:run", "prompt", prompt, "string", 3)
  options.check("app:run", opts, run_spec)
  budget.check("app:run", opts and opts.tree_budget, 2)
  local res = self:_run(agent_id, prompt, opts or {}, nil)
  res.history_end = nil
  return res
end

-- A turn must leave a well-formed history: every tool call answered.
local function close_turn(turn, status)
  local out, pending = {}, nil
  local function flush()
    if not pending then return end
    for _, call in ipairs(pending.calls) do
      if not pending.answered[call.id] then
        out[#out + 1] = {
          role = "tool", tool_call_id = call.id,
          content = json.encode(tools.fail("runtime",
            string.format("not run: the turn ended (%s) before this call", status))),
        }
      end
    end
    pending = nil
  end
  for _, m in ipairs(turn) do
    if m.role == "assistant" then
      flush()
      if m.tool_calls then pending = { calls = m.tool_calls, answered = {} } end
    elseif m.role == "tool" and pending then
      pending.answered[m.tool_call_id] = true
    elseif pending then
      flush()
    end
    out[#out + 1] = m
  end
  flush()
  return out
end

-- A key with no NUL byte (the store keeps keys as C strings) that no two
-- (agent, thread) pairs share.
function App:_thread_key(agent_id, thread_id)
  return json.encode(json.array({ agent_id, thread_id }))
end

-- Conversations live in the store when there is a file store (so they
-- survive restarts), else in this table.
function App:_thread_load(agent_id, thread_id)
  local key = self:_thread_key(agent_id, thread_id)
  local text
  if self._reg.store then
    text = self._core:thread_get(key)
  else
    text = self._threads[key]
  end
  local messages = text and json.decode(text) or {}
  -- threads saved before calls had one shape hold only the model's text
  for _, m in ipairs(messages) do
    for _, c in ipairs(type(m.tool_calls) == "table" and m.tool_calls or {}) do
      if type(c) == "table" and type(c.arguments) == "string" and c.raw_arguments == nil then
        c.arguments, c.raw_arguments, c.error = tools.call_arguments(c.arguments)
      end
    end
  end
  return messages
end

function App:_thread_save(agent_id, thread_id, messages)
  local key = self:_thread_key(agent_id, thread_id)
  local text = json.encode(json.array(messages))
  if self._reg.store then
    self._core:thread_put(key, text)
  else
    self._threads[key] = text
  end
end

local chat_spec = {
  thread_id = text_id,
  timeout_s = function(v) return options.positive(v) end,
  timeout_ms = function(v) return options.positive(v) end,
}

-- app:chat(agent_id, prompt, { thread_id }): a run that continues the
-- thread's conversation and saves the new turn.
function App:chat(agent_id, prompt, opts)
  check_not_in_callback(self, "app:chat")
  self:_check_open("app:chat")
  context.check_agent(self._reg, "app:chat", agent_id)
  options.arg("app:chat", "prompt", prompt, "string", 3)
  options.check("app:chat", opts, chat_spec)
  if not (opts and opts.thread_id) then
    error("app:chat: option thread_id is required (use app:run for a one-off run)", 2)
  end
  local history = self:_thread_load(agent_id, opts.thread_id)
  local res = self:_run(agent_id, prompt, opts, history)
  local turn = {}
  local from = (res.history_end or (#history + 1)) + 1
  if not res.history_end then turn[1] = { role = "user", content = prompt } end
  for i = from, #res.messages do turn[#turn + 1] = res.messages[i] end
  for _, m in ipairs(close_turn(turn, res.status)) do history[#history + 1] = m end
  self:_thread_save(agent_id, opts.thread_id, history)
  res.history_end = nil
  return res
end

-- The saved conversation of a thread (a copy).
function App:thread(agent_id, thread_id)
  options.arg("app:thread", "agent_id", agent_id, text_id, 3)
  options.arg("app:thread", "thread_id", thread_id, text_id, 3)
  return self:_thread_load(agent_id, thread_id)
end


-- The env of runs in the host state (foreground runs and their tools).
local function host_env(self)
  local env = { core = self._core, reg = self._reg, app = self, is_worker = false }
  function env.should_stop(ctx)
    local fg = ctx._fg
    if not fg then return false end
    if fg.cancelled then return true end
    if self:interrupted() then
      fg.cancelled, fg.interrupted = true, true
      return true
    end
    if fg.deadline and core.now() >= fg.deadline then
      fg.cancelled, fg.timed_out = true, true
      return true
    end
    return false
  end
  local function stopper(ctx)
    return function()
      if env.should_stop(ctx) then error(core.cancel_error, 0) end
    end
  end
  -- wake no later than the foreground run's timeout
  local function wake_at(ctx, deadline)
    local fg = ctx._fg
    if fg and fg.deadline and fg.deadline < deadline then return fg.deadline end
    return deadline
  end
  function env.sleep(ctx, seconds)
    local deadline = core.now() + seconds
    ctx:check_cancel()
    self:_wait_until(function() if core.now() >= deadline then return true end end,
      wake_at(ctx, deadline), stopper(ctx))
    ctx:check_cancel()
  end
  function env.wait(ctx, ids, any, timeout)
    if self._in_cb > 0 then error("ctx:wait: blocking call inside a host callback", 0) end
    ctx:check_cancel()
    local v = self:_wait_tasks(ids, any, wake_at(ctx, core.now() + timeout), stopper(ctx))
    if not v.done then ctx:check_cancel() end -- the run's own deadline or budget
    return v
  end
  -- block on a wait the core made (bg_wait), pumping
  function env.block(ctx, w, timeout)
    if self._in_cb > 0 then error("ctx:wait: blocking call inside a host callback", 0) end
    ctx:check_cancel()
    self:_block_on(w, wake_at(ctx, core.now() + timeout), stopper(ctx))
    if not w:over() then ctx:check_cancel() end
  end
  function env.call_host(ctx, name, args)
    return host_tool_result(self, name, args, ctx:info())
  end
  -- a provider's rate budget (ratelimit.lua), pumping host work while it
  -- waits: a call ending elsewhere wakes the block, a window by its time
  function env.rate_wait(ctx, key, est, timeout)
    local deadline = timeout and core.now() + timeout
    local stop = stopper(ctx)
    while true do
      local gen = self._core:gen()
      self:_pump()
      local ok, a, b = self._core:rate_try(key, est)
      if ok then return true, a end
      stop()
      local now = core.now()
      if deadline and now >= deadline then return false end
      local wait = b > 0 and b or 1
      if deadline then wait = math.min(wait, deadline - now) end
      wait = math.max(0, math.min(wait, wake_at(ctx, now + wait) - now))
      if self._tick then wait = math.min(wait, self._tick) end
      self._core:block(gen, wait)
    end
  end
  function env.report_usage(ctx, u)
    self._core:add_usage(ctx.task_id, u, ctx.root_key) -- and its tree budget's
    if ctx._fg then usage.add(ctx._fg.usage, u) end
  end
  return env
end

function app.new(reg, boot)
  local s = reg.settings
  local core_app = core.app_new({
    global_concurrency = s.global_concurrency,
    per_agent_concurrency = s.per_agent_concurrency,
    default_timeout_s = s.default_timeout_s,
    default_wait_timeout_s = s.default_wait_timeout_s,
    default_retries = s.default_retries,
    retry_backoff_s = s.retry_backoff_s,
    retry_backoff_max_s = s.retry_backoff_max_s,
    backpressure = s.backpressure,
    max_queue = s.max_queue,
    max_depth = s.max_depth,
    max_descendants = s.max_descendants,
    max_workers = s.max_workers,
    worker_idle_s = s.worker_idle_s,
    event_buffer = reg.event_buffer,
    max_tool_output_bytes = reg.max_tool_output_bytes,
    max_result_bytes = reg.max_result_bytes,
    keep_finished_s = s.keep_finished and s.keep_finished.ttl_s or -1,
    keep_finished_max = s.keep_finished and s.keep_finished.max or -1,
    stop_grace_s = s.stop_grace_s == false and -1 or s.stop_grace_s,
    boot_json = json.encode(boot),
    lua_path = package.path,
    lua_cpath = package.cpath,
    close_mode = reg.store and "suspend" or "cancel",
  })
  local self = setmetatable({
    _core = core_app,
    _reg = reg,
    _host_tools = {},
    _listeners = {},
    _listener_list = {},
    _in_cb = 0,
    _replies = {}, -- host-tool replies a frame kept from a busy lock (App:_pump)
    _cursor = 0,
    _cluster_cursor = 0, -- a shared store's: of the merged stream (gseq)
    _closed = false,
    _fg_runs = {},
    _threads = {},
    _watchers = {},
    _runs = {},
    _run_order = {},
  }, App)
  for name in pairs(LIFECYCLE) do self._listeners[name] = {} end
  -- before recovery, so config hooks hear of tasks it ends (R-40 "lost")
  self:_rebuild_listeners()
  if reg.store then
    -- R-14: a store that cannot be opened is an error here, never a silent
    -- fallback to memory; R-40: recover what the file holds
    local st = reg.store
    core_app:store_open(st.path, st.durability == "full", st.retention.completed_s or 0,
      st.retention.failed_s or 0, st.postgres, st.shared, st.lease_s)
    local ok, err = pcall(function()
      -- a shared store's tasks are claimed one by one (app:serve), never
      -- all restored here: other processes run them
      if st.shared then return end
      for _, rec in ipairs(core_app:store_records()) do core_app:restore(rec) end
      -- the stream cursor starts after what earlier apps wrote (R-29)
      self._cursor = core_app:restore_done()
    end)
    if not ok then
      core_app:close("cancel", 0) -- releases the store's lock at once
      error(err, 0)
    end
  end
  self._env = host_env(self)
  budget.install(self) -- hooks.admit answers on this thread
  return self
end

return app
