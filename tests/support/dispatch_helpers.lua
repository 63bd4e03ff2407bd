-- Helpers for the dispatcher specs (tests/dispatcher_*_spec.lua): building
-- apps from inline startup scripts, temp dirs, and reading the event stream.
-- Nothing here sleeps to synchronise: waits go through app:wait, the event
-- stream (which blocks until something happens) and app:stats().
local luagent = require "luagent"
local core = require "luagent.core"

local H = { luagent = luagent, core = core }

-- The tools most specs use, defined in every state (host and workers). `SID`
-- is a random id kept per Lua state, so a result tells which state ran it.
H.prelude = [[
local luagent = require "luagent"
_G.SID = _G.SID or string.format("%08x%08x", math.random(0, 0x7fffffff), math.random(0, 0x7fffffff))
_G.RUNS = _G.RUNS or 0
local T = {}
T.whoami = luagent.tool{ name = "whoami", handler = function(args, ctx)
  _G.RUNS = _G.RUNS + 1
  return { sid = SID, runs = RUNS, in_worker = luagent.in_worker(), attempt = ctx.attempt }
end }
T.echo = luagent.tool{ name = "echo", handler = function(args) return args end }
T.nap = luagent.tool{ name = "nap", handler = function(args, ctx)
  ctx:sleep(args.s or 0.01)
  return { sid = SID }
end }
T.block = luagent.tool{ name = "block", handler = function(args, ctx)
  if args.tag then ctx:emit("blocking", { tag = args.tag }) end
  ctx:sleep(args.s or 60)
  return "woke"
end }
]]

-- An app from a script body that sees the prelude's `luagent` and `T`.
-- `body` must `return luagent.config{...}`.
function H.app(body, overrides)
  return luagent.load_string(H.prelude .. body, "=dispatch_cfg", overrides)
end

-- A fresh directory under /tmp (removed by H.rmdir).
function H.tmpdir()
  local p = os.tmpname()
  os.remove(p)
  assert(os.execute("mkdir -p '" .. p .. "'"))
  return p
end

function H.rmdir(p)
  if p and p:match("^/tmp/") then os.execute("rm -rf '" .. p .. "'") end
end

-- The store engines the store specs run against.
H.store_engines = { "sqlite", "postgresql" }

-- For the store specs: before each spec a fresh directory and a store in
-- it, handed to set(dir, db): for "sqlite" (the default) the path of a
-- file, for "postgresql" the URL of a new database (support/pg.lua);
-- after it the directory goes and luagent.set_log is reset.
function H.each_store(set, engine)
  local busted = require "busted" -- the spec's hooks: not globals of this module
  local dir
  busted.before_each(function()
    dir = H.tmpdir()
    if engine == "postgresql" then
      set(dir, (require "support.pg").fresh())
    else
      set(dir, dir .. "/agents.db")
    end
  end)
  busted.after_each(function()
    luagent.set_log(nil)
    H.rmdir(dir)
  end)
end

-- The store table's key for `db` as Lua text: `path = "..."` for a file,
-- `url = "..."` for a PostgreSQL URL.
function H.store_ref(db)
  return string.format("%s = %q", db:match("^postgres") and "url" or "path", db)
end

function H.write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

local E = require "support.events"

-- Every event of the app so far, and those of a kind (and task).
H.all_events = E.all

function H.of_kind(events, kind, task_id)
  return E.of_kind(events, kind, "task_id", task_id)
end

-- Block on the app's event stream until pred(ev) is true for an event
-- (looking at every event since `since`, default 0). Returns the event, or
-- nil when the app went idle or `timeout_s` passed first.
function H.await_event(app, pred, timeout_s, since)
  for ev in app:run_stream_until_idle{ since = since or 0, timeout_s = timeout_s or 5 } do
    if pred(ev) then return ev end
  end
  return nil
end

function H.await_kind(app, kind, task_id, timeout_s)
  return H.await_event(app, function(ev)
    return ev.kind == kind and (task_id == nil or ev.task_id == task_id)
  end, timeout_s)
end

-- The error value of f(...) (which must raise).
function H.raises(f, ...)
  local ok, err = pcall(f, ...)
  assert(not ok, "expected an error")
  return err
end

function H.errmsg(err)
  if type(err) == "table" then return tostring(err.message) end
  return tostring(err)
end

function H.ids(records)
  local out = {}
  for i, r in ipairs(records) do out[i] = r.task_id end
  return out
end

-- A deep copy that compares equal with assert.same.
function H.copy(v)
  if type(v) ~= "table" then return v end
  local out = {}
  for k, x in pairs(v) do out[k] = H.copy(x) end
  return out
end

function H.now() return core.now() end

return H
