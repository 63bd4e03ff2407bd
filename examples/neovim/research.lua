-- luagent in Neovim: a supervisor and its background researchers run on
-- luagent's worker threads while the editor stays responsive. The main
-- thread only ever calls app:poll() (which never blocks) from a vim.loop
-- timer; every line below it writes runs between two of the editor's
-- events, like any other scheduled callback.
--
-- Neovim embeds LuaJIT, so luagent is built for it: `make LUA=luajit`
-- (build/luajit/luagent/core.so). Then, from the checkout:
--
--   nvim -c 'luafile examples/neovim/research.lua'
--   :LuagentResearch Compare Lua and Python for embedding in a game engine.
--
-- The answer and one line per task event go to a scratch buffer. With
-- OPENAI_API_KEY or OPENAI_BASE_URL set the team talks to that model;
-- otherwise its scripted models answer (examples/research_team.lua).
-- As a module: `local research = dofile(".../research.lua")`, then
-- research.setup{...} and research.start{...} (below).
local M = {}

local uv = vim.loop

-- The checkout this file is in (examples/neovim/ -> ../..).
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
M.root = vim.fn.fnamemodify(here .. "/../..", ":p"):gsub("/$", "")

-- Put the checkout's Lua files and its LuaJIT build of the core on the
-- paths (an installed rock needs none of this). opts: root (the
-- checkout), cpath (the directory holding luagent/core.so; default
-- <root>/build/luajit).
function M.setup(opts)
  opts = opts or {}
  local root = opts.root or M.root
  M.root = root
  if uv.fs_stat(root .. "/lua/luagent/init.lua") then
    package.path = root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;" .. package.path
  end
  package.cpath = (opts.cpath or root .. "/build/luajit") .. "/?.so;" .. package.cpath
  M.ready = true
  return M
end

local function event_line(ev)
  local p = ev.payload or {}
  local what = ev.kind:gsub("^task_", "")
  return string.format("[%6.2fs] %-8s %s%s %s%s", ev.t or 0, what, string.rep("  ", ev.depth or 0),
    tostring(ev.agent_id or ""), tostring(ev.task_id or ""), p.status and (" " .. p.status) or "")
end

local LIFECYCLE = { task_enqueued = true, task_started = true, task_waiting = true, task_resumed = true,
  task_finished = true }

-- Start the team on `question` in the background and return at once.
-- opts: question, config (a startup script; default the research team),
-- poll_ms (16: how often the editor polls), budget_ms (2: the most work a
-- poll does), on_event(ev) for each task event and on_done(record) with
-- the supervisor's finished record — both run on the main thread, outside
-- any fast event, so they may call vim.api. Returns { app, task_id, stop }.
function M.start(opts)
  if not M.ready then M.setup() end
  local luagent = require("luagent")
  local app = luagent.load(opts.config or (M.root .. "/examples/research_team.lua"), {
    close_grace_s = 0, -- quitting the editor never waits for a worker
  })
  local run = { app = app }
  local timer = uv.new_timer()
  local stop_watch

  function run.stop()
    if timer then
      timer:stop()
      timer:close()
      timer = nil
    end
    if stop_watch then stop_watch() end
    app:close{ wait = false }
  end

  if opts.on_event then
    stop_watch = app:watch(function(events)
      for _, ev in ipairs(events) do
        if LIFECYCLE[ev.kind] then opts.on_event(ev) end
      end
    end)
  end
  app:on("task_finished", function(r)
    if r.task_id ~= run.task_id then return end
    -- after this poll returns: the watch gets the last events first
    vim.schedule(function()
      run.stop()
      if opts.on_done then opts.on_done(r) end
    end)
  end)
  run.task_id = app:enqueue_background("supervisor", opts.question, { thread_id = "nvim" }).task_id

  local poll = { budget_ms = opts.budget_ms or 2 }
  -- schedule_wrap: the poll (and the callbacks it runs) happens in the
  -- main loop, not in the timer's fast event, so callbacks may use vim.api
  timer:start(0, opts.poll_ms or 16, vim.schedule_wrap(function()
    if not timer then return end
    local ok, err = pcall(app.poll, app, poll)
    if not ok then
      run.stop()
      vim.notify("luagent: " .. tostring(err), vim.log.levels.ERROR)
    end
  end))
  return run
end

-- :LuagentResearch {question}: a scratch buffer that fills as the team works.
function M.command(question)
  vim.cmd("botright new")
  local buf = vim.api.nvim_get_current_buf()
  vim.bo[buf].buftype, vim.bo[buf].bufhidden, vim.bo[buf].swapfile = "nofile", "wipe", false
  local function add(lines)
    if vim.api.nvim_buf_is_valid(buf) then vim.api.nvim_buf_set_lines(buf, -1, -1, false, lines) end
  end
  vim.api.nvim_buf_set_lines(buf, 0, -1, false, { "Question: " .. question, "" })
  local run = M.start{
    question = question,
    on_event = function(ev) add({ event_line(ev) }) end,
    on_done = function(r)
      add({ "" })
      add(vim.split(r.result and r.result.final or ("supervisor " .. r.status), "\n"))
    end,
  }
  vim.api.nvim_create_autocmd("VimLeavePre", { once = true, callback = run.stop })
  return run
end

M.event_line = event_line

-- Loading the file adds the command (M.start sets the paths up with the
-- defaults unless M.setup ran first).
if vim.api.nvim_create_user_command then
  vim.api.nvim_create_user_command("LuagentResearch", function(c) M.command(c.args) end,
    { nargs = "+", desc = "Ask luagent's research team in the background" })
end

return M
