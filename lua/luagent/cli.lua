-- The `luagent` command (README "The luagent command"): run or chat with an
-- agent of a startup script, and look into a store: its tasks, one task,
-- its events, a timeline picture. Arguments are parsed by lua-argparse.
-- Exit status: 0 completed, 1 failed (or the run ended otherwise), 2 bad
-- usage, 130 interrupted (Ctrl-C). Answers go to stdout, everything else
-- (errors, progress) to stderr.
local compat = require("luagent.compat")
local argparse = require("argparse")
local luagent = require("luagent")
local core = require("luagent.core")
local json = require("luagent.json")
local live = require("luagent.live")
local tree = require("luagent.tree")
local trace = require("luagent.trace")
local usage = require("luagent.usage")

local cli = {}

local EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
local TERMINAL = { completed = true, failed = true, cancelled = true, timed_out = true }
local STATUSES = { "queued", "running", "completed", "failed", "cancelled", "timed_out" }

-- A command-line failure: a message for stderr and an exit status.
local function fail(code, fmt, ...)
  error({ cli_exit = code, message = string.format(fmt, ...) }, 0)
end

local function say(fmt, ...)
  io.stderr:write(string.format(fmt, ...), "\n")
end

local function parser()
  local help_of -- the command whose -h was given
  local function with_help(p)
    p:add_help(false)
    p:flag("-h --help", "Show this help message and exit."):action(function() help_of = p end)
    return p
  end
  local p = with_help(argparse("luagent", "Run LLM agents from a Lua startup script, and look " ..
    "into the store their tasks are kept in.")
    :command_target("command")
    :epilog("Exit status: 0 completed, 1 failed, 2 usage error, 130 interrupted (Ctrl-C).\n" ..
      "Run `luagent COMMAND --help` for a command's options."))
  p:flag("--version", "Print the version and exit.")
  p:require_command(false)

  local function app_options(c)
    c:option("--store", "Keep tasks, events and threads in this SQLite file.")
    c:option("--model", "Model name for the config's luagent.openai model.")
    c:option("--base-url", "Endpoint (with /v1) for the config's luagent.openai model.")
    c:option("--timeout", "Stop the run after this many seconds."):convert(tonumber)
  end

  local run = with_help(p:command("run", "Run an agent once in the foreground: its answer " ..
    "streams to stdout; on a terminal a live table of its task tree is drawn below it."))
  run:argument("config", "The startup script (returns luagent.config{...}).")
  run:argument("agent", "The agent to run.")
  run:argument("prompt", "The prompt (words are joined by spaces)."):args("+")
  run:flag("--events", "Print every event as a JSON line on stdout, as it happens.")
  run:flag("--json", "Print the AgentResult as JSON at the end.")
  run:option("--thread", "Thread id of the run.")
  app_options(run)

  local chat = with_help(p:command("chat", "Chat with an agent: each line of stdin is a turn " ..
    "of one conversation thread."))
  chat:argument("config", "The startup script.")
  chat:argument("agent", "The agent to chat with.")
  chat:option("--thread", "The conversation thread.", "cli")
  app_options(chat)

  local tasks = with_help(p:command("tasks", "List the tasks in a store."))
  tasks:argument("store", "The store file.")
  tasks:option("--status", "Only tasks with this status."):choices(STATUSES)
  tasks:flag("--json", "One JSON record per line.")

  local show = with_help(p:command("show", "Show one task: its record, result, tree and " ..
    "recent events."))
  show:argument("store", "The store file.")
  show:argument("task", "The task id.")
  show:flag("--json", "Print {record, tree, events} as JSON.")

  local events = with_help(p:command("events", "Print the events in a store."))
  events:argument("store", "The store file.")
  events:option("--task", "Only the events of this task.")
  events:option("--since", "Only events after this seq.", "0"):convert(compat.tointeger)
  events:flag("--follow -f", "Keep printing new events as they are written (Ctrl-C ends).")
  events:flag("--json", "One JSON event per line.")

  local tr = with_help(p:command("trace", "Draw the task trees of a store as a timeline " ..
    "(a Gantt chart)."))
  tr:argument("store", "The store file.")
  tr:option("--root", "Only the tree of this task (or foreground run id).")
  tr:option("--html", "Write a self-contained HTML page here.")
  tr:option("--svg", "Write the SVG alone here.")

  with_help(p:command("version", "Print the version."))
  return p, function() return help_of end
end

-- ------------------------------------------------------------------ apps

local function load_app(a)
  local overrides = {}
  if a.store then overrides.store = a.store end
  if a.model or a.base_url then overrides.model = { model = a.model, base_url = a.base_url } end
  local ok, app = pcall(luagent.load, a.config, next(overrides) and overrides or nil)
  if not ok then fail(EXIT_FAILED, "%s", tostring(type(app) == "table" and app.message or app)) end
  return app
end

local function check_agent(app, agent)
  if not app._reg.agents[agent] then
    local near = {}
    for id in pairs(app._reg.agents) do near[#near + 1] = id end
    table.sort(near)
    app:close()
    fail(EXIT_USAGE, 'unknown agent "%s" (agents: %s)', agent, table.concat(near, ", "))
  end
end

local function is_tty(fd)
  return compat.execute("[ -t " .. fd .. " ]")
end

local function term_width()
  local p = io.popen("stty size 2>/dev/null </dev/tty")
  local out = p and p:read("*a") or ""
  if p then p:close() end
  return tonumber(out:match("%d+%s+(%d+)")) or tonumber(os.getenv("COLUMNS") or "") or 80
end

local function result_text(res)
  return string.format("run %s%s", res.status, res.error and res.error.message and
    (": " .. tostring(res.error.message)) or "")
end

-- Tasks of run_id's tree that a cancel stopped after event `after`: the
-- children that ended because the foreground run did.
local function cancelled_after(app, run_id, after)
  local ids = {}
  for _, r in ipairs(app:list()) do
    if r.root_run_id == run_id then ids[r.task_id] = true end
  end
  local n = 0
  for _, ev in ipairs(app:events{ since = after, kinds = { "task_finished" }, limit = 100000 }) do
    if ids[ev.task_id] and ev.payload.status == "cancelled" then n = n + 1 end
  end
  return n
end

-- Follow one foreground run through app:watch: its own answer tokens, its
-- task tree, and (with --events) every event as a JSON line.
local function follow_run(app, a)
  local view
  if a.events or a.json then
    view = nil
  elseif is_tty(1) then
    view = live.tty(io.stdout, term_width())
  else
    view = live.plain(io.stdout, io.stderr)
  end
  local st = { run_id = nil, streamed = false, end_seq = nil }
  local function redraw()
    if view and view.wants_table and st.run_id then
      local ok, root = pcall(app.tree, app, st.run_id)
      if ok then view.set_table(live.table_lines(root, core.wall_ms())) end
    end
    if view then view.draw() end
  end
  local unwatch = app:watch(function(evs)
    for _, ev in ipairs(evs) do
      if a.events then
        io.stdout:write(json.encode(ev), "\n")
      end
      if not ev.task_id and ev.depth == 0 and ev.run_id then
        st.run_id = st.run_id or ev.run_id
        if ev.run_id == st.run_id then
          if ev.kind == "token" and view then
            view.text(ev.payload.text or "")
            st.streamed = true
          elseif ev.kind == "final" or ev.kind == "error" then
            st.end_seq = ev.seq
          end
        end
      end
      if view and view.event then view.event(ev) end
    end
    if a.events then io.stdout:flush() end
    redraw()
  end, { since = app:stats().last_seq, interval_s = 0.2 })
  return view, st, unwatch, redraw
end

local function cmd_run(a)
  local app = load_app(a)
  check_agent(app, a.agent)
  app:cancel_on_interrupt()
  local view, st, unwatch, redraw = follow_run(app, a)
  local prompt = table.concat(a.prompt, " ")
  local ok, res = pcall(app.run, app, a.agent, prompt, { timeout_s = a.timeout, thread_id = a.thread })
  app:poll() -- the last events reach the view
  if not ok then
    unwatch()
    app:close{ mode = "cancel", grace_s = 1 }
    fail(EXIT_USAGE, "%s", tostring(type(res) == "table" and res.message or res))
  end
  st.run_id = res.run_id
  if view and not st.streamed and res.final then view.text(res.final) end
  redraw()
  -- children the run left behind stop with it: the command ends here
  local after = st.end_seq or app:stats().last_seq
  app:close{ mode = "cancel", grace_s = 1 }
  if view then
    redraw()
    view.finish()
  end
  unwatch()
  if a.json then io.stdout:write(json.encode(res), "\n") end
  local n = cancelled_after(app, res.run_id, after)
  if n > 0 then say("%d background task%s cancelled", n, n == 1 and "" or "s") end
  if res.interrupted or app:interrupted() then
    say("interrupted: %s", result_text(res))
    return EXIT_INTERRUPTED
  end
  if res.status ~= "completed" then
    say("%s", result_text(res))
    return EXIT_FAILED
  end
  return EXIT_OK
end

local function cmd_chat(a)
  local app = load_app(a)
  check_agent(app, a.agent)
  app:cancel_on_interrupt()
  local code = EXIT_OK
  while true do
    local ok, line = pcall(io.read, "l")
    if app:interrupted() then code = EXIT_INTERRUPTED break end
    if not ok or line == nil then break end
    local streamed = false
    local unwatch = app:watch(function(evs)
      for _, ev in ipairs(evs) do
        if ev.kind == "token" and not ev.task_id and ev.depth == 0 then
          io.stdout:write(ev.payload.text or "")
          io.stdout:flush()
          streamed = true
        end
      end
    end)
    local ok_chat, res = pcall(app.chat, app, a.agent, line, { thread_id = a.thread,
      timeout_s = a.timeout })
    app:poll()
    unwatch()
    if not ok_chat then
      app:close{ mode = "cancel", grace_s = 1 }
      fail(EXIT_USAGE, "%s", tostring(type(res) == "table" and res.message or res))
    end
    if streamed then io.stdout:write("\n") elseif res.final then print(res.final) end
    io.stdout:flush()
    if res.interrupted then code = EXIT_INTERRUPTED break end
    if res.status ~= "completed" then say("%s", result_text(res)) end
  end
  app:close{ mode = "cancel", grace_s = 1 }
  return code
end

-- ---------------------------------------------------------------- stores

local function open_store(path)
  local reader, err = core.store_reader(path)
  if not reader then fail(EXIT_FAILED, "%s", err) end
  return reader
end

local function all_events(reader, task_id)
  local out, since = {}, 0
  while true do
    local batch = reader:events(since, 5000, task_id)
    if #batch == 0 then return out end
    for _, ev in ipairs(batch) do out[#out + 1] = ev end
    since = batch[#batch].seq
  end
end

local function duration(r)
  local from, to = tree.iso_ms(r.started_at), tree.iso_ms(r.finished_at)
  if not from then return "-" end
  return string.format("%.2fs", ((to or core.wall_ms()) - from) / 1000)
end

local function task_line(r, depth)
  local u = r.tree_usage or r.usage
  return string.format("%-28s %-10s %s%-14s %-12s %3d %8s %8s %9s", r.task_id, r.status,
    string.rep("  ", depth or 0), tostring(r.agent_id), tostring(r.tool or r.kind), r.attempts or 0,
    duration(r), u and usage.format_tokens(u.total_tokens) or "-", u and usage.format_cost(u.cost) or "-")
end

local function cmd_tasks(a)
  local reader = open_store(a.store)
  local recs = reader:records()
  reader:close()
  if a.json then
    for _, r in ipairs(recs) do
      if not a.status or r.status == a.status then io.stdout:write(json.encode(r), "\n") end
    end
    return EXIT_OK
  end
  print(string.format("%-28s %-10s %-14s %-12s %3s %8s %8s %9s", "task", "status", "agent", "tool/kind",
    "try", "time", "tokens", "cost"))
  for _, r in ipairs(recs) do
    if not a.status or r.status == a.status then print(task_line(r, r.depth)) end
  end
  return EXIT_OK
end

local function event_line(ev)
  local p = ev.payload or {}
  local what = p.tool or p.status or p.text or p.message or p.summary or ""
  what = tostring(what):gsub("%s+", " ")
  if #what > 80 then what = what:sub(1, 77) .. "..." end
  return string.format("#%-6d %s %s%-14s %-12s %s %s", ev.seq or 0, tostring(ev.ts or ""),
    string.rep("  ", ev.depth or 0), ev.kind, tostring(ev.agent_id or ""), ev.task_id or ev.run_id or "",
    what)
end

local function cmd_show(a)
  local reader = open_store(a.store)
  local rec = reader:record(a.task)
  if not rec then
    reader:close()
    fail(EXIT_FAILED, "no task %s in %s", a.task, a.store)
  end
  local recs = reader:records()
  local evs = all_events(reader, a.task)
  reader:close()
  local root = tree.build(recs, a.task)
  local recent = {}
  for i = math.max(1, #evs - 19), #evs do recent[#recent + 1] = evs[i] end
  if a.json then
    io.stdout:write(json.encode({ record = rec, tree = root, events = json.array(recent) }), "\n")
    return EXIT_OK
  end
  local keys = {}
  for k in pairs(rec) do
    if k ~= "result" and k ~= "root_key" and k ~= "scoped" and k ~= "max_depth" then keys[#keys + 1] = k end
  end
  table.sort(keys)
  for _, k in ipairs(keys) do
    local v = rec[k]
    print(string.format("%-17s %s", k, type(v) == "table" and json.encode(v) or tostring(v)))
  end
  print("\nresult:")
  local r = rec.result
  if type(r) == "table" and rec.kind == "agent" then r = r.final or json.encode(r) end
  print(r == nil and "(none)" or type(r) == "table" and json.encode(r) or tostring(r))
  print("\ntree:")
  tree.walk(root, function(n, depth) print(task_line(n, depth)) end)
  print(string.format("\nlast %d events:", #recent))
  for _, ev in ipairs(recent) do print(event_line(ev)) end
  return EXIT_OK
end

local function cmd_events(a)
  local reader = open_store(a.store)
  local since = a.since or 0
  local function print_new()
    local batch = reader:events(since, 1000, a.task)
    for _, ev in ipairs(batch) do
      io.stdout:write(a.json and json.encode(ev) or event_line(ev), "\n")
      since = ev.seq
    end
    io.stdout:flush()
    return #batch
  end
  while print_new() > 0 do end
  if not a.follow then
    reader:close()
    return EXIT_OK
  end
  -- followed until Ctrl-C: Lua's own SIGINT handling ends the loop
  local ok = pcall(function()
    while true do
      if print_new() == 0 then reader:sleep(0.25) end
    end
  end)
  reader:close()
  return ok and EXIT_OK or EXIT_INTERRUPTED
end

local function cmd_trace(a)
  if not a.html and not a.svg then fail(EXIT_USAGE, "trace: give --html FILE or --svg FILE") end
  local reader = open_store(a.store)
  local recs = reader:records()
  local evs = all_events(reader)
  reader:close()
  local roots = a.root and { a.root } or tree.roots(recs)
  local rows = {}
  for _, id in ipairs(roots) do
    local is_task = false
    for _, r in ipairs(recs) do is_task = is_task or r.task_id == id end
    local root = tree.build(recs, id, not is_task and tree.run_from_events(id, evs) or nil)
    if not root then fail(EXIT_FAILED, "no task or foreground run %s in %s", id, a.store) end
    for _, row in ipairs(tree.rows(root, evs, core.wall_ms())) do rows[#rows + 1] = row end
  end
  if #rows == 0 then fail(EXIT_FAILED, "no tasks in %s", a.store) end
  local function write(path, text)
    local f, err = io.open(path, "w")
    if not f then fail(EXIT_FAILED, "cannot write %s", err) end
    f:write(text)
    f:close()
  end
  local title = "luagent trace of " .. a.store
  if a.html then write(a.html, trace.html(rows, { title = title })) end
  if a.svg then write(a.svg, trace.svg(rows, { standalone = true })) end
  return EXIT_OK
end

local commands = { run = cmd_run, chat = cmd_chat, tasks = cmd_tasks, show = cmd_show,
  events = cmd_events, trace = cmd_trace }

function cli.main(args)
  local p, help_of = parser()
  local ok, a = p:pparse(args)
  local h = help_of()
  if h then
    io.stdout:write(h:get_help(), "\n")
    return EXIT_OK
  end
  if not ok then
    io.stderr:write(p:get_usage(), "\n\nluagent: ", tostring(a), "\n")
    return EXIT_USAGE
  end
  if a.version or a.command == "version" then
    io.stdout:write("luagent " .. luagent.version, "\n")
    return EXIT_OK
  end
  if not a.command then
    io.stderr:write(p:get_usage(), "\n\nluagent: give a command (luagent --help lists them)\n")
    return EXIT_USAGE
  end
  local okc, code = pcall(commands[a.command], a)
  if okc then return code end
  if type(code) == "table" and code.cli_exit then
    say("luagent %s: %s", a.command, code.message)
    return code.cli_exit
  end
  say("luagent %s: %s", a.command, tostring(code))
  return EXIT_FAILED
end

return cli
