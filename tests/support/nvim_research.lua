-- Run inside `nvim --headless` by tests/neovim_spec.lua: examples/neovim's
-- research team on one question while a 10 ms vim.loop timer counts ticks.
-- Writes a JSON report to $LUAGENT_NVIM_OUT and quits the editor:
--   { ok, status, final, finished = { [status] = n }, events = n,
--     ticks_during, max_gap_ms, elapsed_ms, ticks_at = { per event },
--     polls, max_poll_ms (the longest app:poll, to tell a poll that blocked
--     from a machine too busy to run the editor) }
-- $LUAGENT_NVIM_CPATH: the directory holding the LuaJIT build's
-- luagent/core.so.
local uv = vim.loop
local root = uv.cwd()
local out_path = assert(os.getenv("LUAGENT_NVIM_OUT"), "LUAGENT_NVIM_OUT is not set")

local report = { finished = {}, events = 0, ticks_at = {}, polls = 0, max_poll_ms = 0 }
local done = false

local function finish(extra)
  if done then return end
  done = true
  for k, v in pairs(extra or {}) do report[k] = v end
  local f = assert(io.open(out_path, "w"))
  f:write(vim.fn.json_encode(report))
  f:close()
  vim.cmd("qa!")
end

-- The editor's heartbeat: a repeating 10 ms timer. Its callback is a fast
-- event (the loop runs it straight away), so a gap between two ticks is
-- time the main thread spent elsewhere.
local ticks, last_tick, max_gap = 0, nil, 0
local measuring = false
local tick = uv.new_timer()
tick:start(10, 10, function()
  local now = uv.hrtime()
  if measuring and last_tick then max_gap = math.max(max_gap, (now - last_tick) / 1e6) end
  last_tick = now
  ticks = ticks + 1
end)

-- whatever happens, the editor quits
local deadline = uv.new_timer()
deadline:start(60000, 0, vim.schedule_wrap(function() finish({ ok = false, error = "no answer in 60 s" }) end))

local ok, err = pcall(function()
  local research = dofile(root .. "/examples/neovim/research.lua")
  research.setup{ root = root, cpath = os.getenv("LUAGENT_NVIM_CPATH") }
  report.luajit = jit and jit.version
  report.core = package.searchpath and package.searchpath("luagent.core", package.cpath)
  local started_at, ticks_at_start
  -- measure from the first tick after the start on
  local run = research.start{
    question = "Compare Lua and Python for embedding in a game engine.",
    on_event = function(ev)
      report.events = report.events + 1
      report.ticks_at[#report.ticks_at + 1] = { kind = ev.kind, agent = ev.agent_id, ticks = ticks }
      if ev.kind == "task_finished" then
        local st = ev.payload and ev.payload.status or "?"
        report.finished[st] = (report.finished[st] or 0) + 1
      end
    end,
    on_done = function(r)
      measuring = false
      tick:stop()
      finish({
        ok = true,
        status = r.status,
        final = r.result and r.result.final,
        ticks_during = ticks - ticks_at_start,
        max_gap_ms = max_gap,
        elapsed_ms = (uv.hrtime() - started_at) / 1e6,
      })
    end,
  }
  report.task_id = run.task_id
  -- time every poll the example makes from its timer
  local app, poll = run.app, run.app.poll
  app.poll = function(self, opts)
    local t0 = uv.hrtime()
    local a, b = poll(self, opts)
    report.polls = report.polls + 1
    report.max_poll_ms = math.max(report.max_poll_ms, (uv.hrtime() - t0) / 1e6)
    return a, b
  end
  started_at, ticks_at_start = uv.hrtime(), ticks
  last_tick, measuring = uv.hrtime(), true
end)
if not ok then finish({ ok = false, error = tostring(err) }) end
