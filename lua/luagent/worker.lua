-- The entry of a worker state (R-1, R-2, R-11): run the app's startup
-- script again, check that it defines the same names as in the host, apply
-- the host's snapshot of every non-function setting, and return the
-- function that runs one task.
local compat = require("luagent.compat")
local core = require("luagent.core")
local json = require("luagent.json")
local defs = require("luagent.defs")
local spec = require("luagent.spec")
local context = require("luagent.context")
local tools = require("luagent.tools")

local worker = {}

local function worker_env(reg, handle)
  local env = { core = handle, reg = reg, is_worker = true }
  function env.should_stop() return core.task_should_stop() end
  function env.sleep(_, seconds) core.task_sleep(seconds) end
  function env.wait(_, ids, any, timeout) return core.task_wait(ids, any, timeout) end
  function env.block(_, w, timeout) core.task_block(w, timeout) end
  function env.report_usage(ctx, u) handle:add_usage(ctx.task_id, u, ctx.root_key) end
  -- a provider's rate budget (ratelimit.lua): true, probe | false (timed out)
  function env.rate_wait(_, key, est, timeout) return core.rate_wait(key, est, timeout) end
  function env.call_host(ctx, name, args)
    local text = core.task_call_host(name, json.encode(args), json.encode(ctx:info()))
    return json.decode(text)
  end
  return env
end

-- A failure the task's record keeps as error = {kind, message}.
local function fail(kind, message)
  error({ kind = kind, message = message }, 0)
end

local function run_tool_task(env, ctx, info)
  local tool = spec.resolve_tool(env.reg, info.tool)
  if not tool then fail("validation", string.format("unknown tool %q", tostring(info.tool))) end
  local args = info.args or {}
  if tool.handler == nil then
    local r = context.invoke(ctx, tool, args)
    if not r.ok then fail(r.cause and r.cause.kind or "runtime", r.error) end
    return r.value
  end
  local ok, v = compat.xpcall(tool.handler, tools.on_error, args, ctx)
  if ok then return v end
  if core.is_cancel(v) then error(v, 0) end
  ctx:emit("error", { message = v.message, traceback = v.traceback, tool = tool.name })
  fail(v.kind or "runtime", v.message)
end

-- The agent loop (runner.lua, with bg_tools.lua and steer.lua) loads at a
-- worker's first agent task or first call that needs it: a worker that only
-- runs tools never pays for it. Until then, what it adds to context is a
-- stub that loads it and calls the real one.
local function load_runner()
  return require("luagent.runner")
end

local function until_loaded(t, name)
  if t[name] ~= nil then return end
  local stub
  stub = function(...)
    load_runner()
    if t[name] == stub then error("luagent.runner did not define " .. name, 2) end
    return t[name](...)
  end
  t[name] = stub
end

local kinds = {
  tool = run_tool_task,
  agent = function(env, ctx, info) return load_runner().worker_kind(env, ctx, info) end,
}

-- A worker state shares its process with the host and every other worker,
-- so what would end or stall the process for all of them is refused with a
-- task error (README "Worker states"): os.exit, os.setlocale (the C locale
-- is process-wide: it would change how every thread formats numbers),
-- debug.debug and reading the host's standard input (io.read, io.lines()
-- and io.stdin while the default input is standard input). It is a fence
-- against accidents, not a sandbox.
local STDIN = "standard input belongs to the host"

local function refuse(what, why)
  error(setmetatable({ kind = "runtime",
    message = string.format("%s is not allowed in a task: %s", what, why) }, core.error_mt), 3)
end

local function fence_stdlib()
  os.exit = function() refuse("os.exit", "it would end the host process") end
  debug.debug = function() refuse("debug.debug", "it reads the host's standard input") end
  local setlocale = os.setlocale
  os.setlocale = function(locale, ...)
    -- asking for the current locale changes nothing
    if locale ~= nil then refuse("os.setlocale", "the locale is shared by every thread of the host") end
    return setlocale(locale, ...)
  end
  local stdin, input, read, lines = io.stdin, io.input, io.read, io.lines
  local fenced_stdin = setmetatable({}, {
    __index = function() refuse("io.stdin", STDIN) end,
    __name = "luagent fenced stdin",
  })
  local function on_stdin() return input() == stdin end
  io.stdin = fenced_stdin
  io.input = function(file, ...)
    if file == nil then
      local cur = input()
      return cur == stdin and fenced_stdin or cur
    end
    if file == fenced_stdin then refuse("io.input(io.stdin)", STDIN) end
    return input(file, ...)
  end
  io.read = function(...)
    if on_stdin() then refuse("io.read on standard input", STDIN) end
    return read(...)
  end
  io.lines = function(name, ...)
    if name == nil and on_stdin() then refuse("io.lines() on standard input", STDIN) end
    return lines(name, ...)
  end
end

-- An xpcall's message handler does not run for luagent's cancel error. Lua
-- runs the handler of an error raised by a hook with hooks off, so a
-- handler that loops (or sorts with a comparator that does, or calls a
-- __tostring that does) could never be stopped; the cancel error needs no
-- handling anyway, since it is raised again at the next instruction.
local function guard_xpcall()
  local raw, is_cancel = xpcall, core.is_cancel
  _G.xpcall = function(f, handler, ...)
    if type(handler) ~= "function" then return raw(f, handler, ...) end -- raw's own error
    return raw(f, function(e)
      if is_cancel(e) then return e end
      return handler(e)
    end, ...)
  end
end

local function run_task(env, info_json)
  local info = json.decode(info_json)
  local ctx = context.new(env, {
    run_id = info.run_id,
    task_id = info.task_id,
    agent_id = info.agent_id,
    thread_id = info.thread_id or info.run_id,
    depth = info.depth or 0,
    root_key = info.root_key,
    max_depth = info.max_depth,
    attempt = info.attempts,
    metadata = info.metadata,
  })
  local run = kinds[info.kind]
  if not run then fail("runtime", "unknown task kind " .. tostring(info.kind)) end
  local value, usage, status, err = run(env, ctx, info)
  local ok, text = pcall(json.encode, value)
  if not ok then fail("runtime", "the task's result is not JSON: " .. tostring(text)) end
  return text, usage and json.encode(usage) or nil, status, err
end

function worker.boot(boot_json)
  fence_stdlib() -- before the startup script, which may keep references
  guard_xpcall()
  compat.seed_random(core.now())
  local boot = json.decode(boot_json)
  local chunk, err
  if boot.path then
    chunk, err = loadfile(boot.path)
  else
    chunk, err = compat.load(boot.source, boot.chunkname or "=(luagent config)")
  end
  if not chunk then error(err, 0) end
  local cfg = chunk()
  if defs.kind_of(cfg) ~= "config" then
    error("the startup script must return luagent.config{...}, got " .. type(cfg), 0)
  end
  local reg = spec.compile(cfg)
  if reg.fingerprint ~= boot.fingerprint then
    error("the startup script defined different names in a worker than in the host (" ..
      spec.fingerprint_diff(boot.fingerprint, reg.fingerprint) .. ")", 0)
  end
  spec.apply_snapshot(reg, boot.snapshot)
  local env = worker_env(reg, core.worker_app())
  until_loaded(context, "run_delegate")
  until_loaded(context.Ctx, "run_agent")
  until_loaded(context.Ctx, "send")
  return function(info_json) return run_task(env, info_json) end
end

return worker
