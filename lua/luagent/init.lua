-- luagent: LLM agents for Lua (5.4 first; 5.1, 5.2, 5.3 and LuaJIT too)
-- with background agent runs on worker threads (a C core: dispatcher,
-- workers, store, HTTP).
local compat = require("luagent.compat")

-- The C core is built for one Lua. Loaded into another it fails on a
-- missing symbol (or, between ABI-compatible ones, would misbehave): say
-- which Lua it needs, as the directory it was found in or its own build
-- tells, instead of the loader's message.
local function load_core()
  local ok, mod = pcall(require, "luagent.core")
  local built = ok and type(mod) == "table" and mod.lua_version
  if ok and (built == nil or built == _VERSION) then return mod end
  local msg = tostring(mod)
  if not ok and not msg:find("undefined symbol", 1, true) then error(mod, 0) end
  local dir = msg:match("/lib/lua/(5%.%d)/")
  built = built or (dir and "Lua " .. dir)
  if not built then
    error(string.format("luagent: its C module was built for another Lua than this %s " ..
      "(build it for this one: make LUA=...)", _VERSION), 3)
  end
  local run = built == "Lua 5.1" and "luajit or lua5.1" or "lua" .. built:sub(5)
  error(string.format("luagent needs %s, but this is %s (run it with %s)", built, _VERSION, run), 3)
end

local core = load_core()
local json = require("luagent.json")
local options = require("luagent.options")
local defs = require("luagent.defs")
local spec = require("luagent.spec")
local log = require("luagent.log")
local static_model = require("luagent.models.static")
local function_model = require("luagent.models.function")
require("luagent.http") -- adds ctx:http to every context

local luagent = {
  version = "0.1.0",
  json = json,
  tool = defs.tool,
  host_tool = defs.host_tool,
  agent = defs.agent,
  delegate = defs.delegate,
  config = defs.config,
  cancel_error = core.cancel_error,
  static_model = static_model.new,
  function_model = function_model.new,
  -- loaded at first use: a worker state runs the startup script, and an app
  -- without OpenAI models need not load the client (a tail call: error
  -- levels as before)
  openai = function(...) return require("luagent.models.openai").new(...) end,
}

-- Is this the cancel error (R-23)? Handlers that pcall must re-raise it.
function luagent.is_cancel(err)
  return core.is_cancel(err)
end

-- True inside a worker state: lets a startup script skip host-only work.
function luagent.in_worker()
  return core.in_worker()
end

function luagent.set_log(fn)
  if fn ~= nil then options.arg("luagent.set_log", "fn", fn, "callable", 3) end
  log.set(fn)
end

local function start(chunk, boot, overrides, where)
  local ok, cfg = pcall(chunk)
  if not ok then
    -- the script's own message (it names file:line); no luagent traceback
    error(string.format("%s: the startup script failed: %s", where, tostring(cfg)), 3)
  end
  if defs.kind_of(cfg) ~= "config" then
    error(string.format("%s: the startup script must return luagent.config{...}, got %s", where,
      type(cfg)), 3)
  end
  local ok2, reg = pcall(function()
    spec.apply_overrides(cfg, overrides)
    return spec.compile(cfg)
  end)
  if not ok2 then
    local msg = tostring(reg):gsub("^luagent%.load: ", "")
    error(string.format("%s: %s", where, msg), 3)
  end
  boot.fingerprint = reg.fingerprint
  boot.snapshot = spec.snapshot(reg)
  -- required here, not above: a worker state runs the startup script too,
  -- and has no use for the host's app (docs/architecture.md, R-1)
  local app = require("luagent.app")
  local ok3, a = pcall(app.new, reg, boot)
  if not ok3 then
    -- a store that cannot be opened or written (R-14)
    error(string.format("%s: %s", where, (tostring(a):gsub("^[^:]*:%d+: ", ""))), 3)
  end
  return a
end

-- Bundled plugins live in luagent/plugins/ when installed, or in the
-- checkout's plugins/ next to lua/.
local function plugin_module(name)
  local ok, mod = pcall(require, "luagent.plugins." .. name)
  if ok then return mod end
  local here = debug.getinfo(1, "S").source:match("^@(.*)/luagent/init%.lua$")
  local path = here and here .. "/../plugins/" .. name .. ".lua"
  local f = path and io.open(path)
  if not f then return nil, mod end
  f:close()
  return dofile(path)
end

-- luagent.plugin(name, opts): a bundled plugin's tool(s), e.g.
-- luagent.plugin("shell", { allow = { "^ls" } }).
function luagent.plugin(name, opts)
  options.arg("luagent.plugin", "name", name, "string", 3)
  if not name:match("^[%w_]+$") then error("luagent.plugin: bad plugin name " .. name, 2) end
  local mod, err = plugin_module(name)
  if not mod then
    err = err and not tostring(err):find("module 'luagent.plugins." .. name .. "' not found", 1, true)
      and err or nil
    error(string.format("luagent.plugin: no bundled plugin %q%s", name,
      options.did_you_mean(name, { "shell", "fetch" })) .. (err and ("\n" .. tostring(err)) or ""), 2)
  end
  return mod.new(opts)
end

-- luagent.load(path, overrides): run a startup script that returns
-- luagent.config{...} and start its app (R-1).
function luagent.load(path, overrides)
  options.arg("luagent.load", "path", path, options.no_nul, 3)
  if overrides ~= nil then options.arg("luagent.load", "overrides", overrides, "table", 3) end
  local abs, err = core.realpath(path)
  if not abs then error(string.format("luagent.load: cannot open %s: %s", path, err), 2) end
  local chunk, lerr = loadfile(abs)
  if not chunk then error("luagent.load: " .. lerr, 2) end
  return start(chunk, { path = abs }, overrides, "luagent.load")
end

-- luagent.load_string(source, chunkname, overrides): the same from text.
function luagent.load_string(source, chunkname, overrides)
  options.arg("luagent.load_string", "source", source, "string", 3)
  if chunkname ~= nil then options.arg("luagent.load_string", "chunkname", chunkname, "string", 3) end
  if overrides ~= nil then options.arg("luagent.load_string", "overrides", overrides, "table", 3) end
  chunkname = chunkname or "=(luagent config)"
  local chunk, lerr = compat.load(source, chunkname, "t")
  if not chunk then error("luagent.load_string: " .. lerr, 2) end
  return start(chunk, { source = source, chunkname = chunkname }, overrides, "luagent.load_string")
end

return luagent
