-- From a config to the registry an app runs: agents by id, tools by name,
-- effective settings with defaults, and (R-1) the snapshot of every
-- non-function setting that workers apply over their own copy, plus the
-- fingerprint of names that workers must reproduce.
local compat = require("luagent.compat")
local defs = require("luagent.defs")
local json = require("luagent.json")
local options = require("luagent.options")
local usage = require("luagent.usage")

local spec = {}

local function non_negative(v) return options.non_negative(v) end
-- at least a second, so a task cannot leave memory before the code that
-- enqueued it had a chance to wait on it
local function ttl_ok(v) return type(v) == "number" and v >= 1 and v < math.huge end
local function positive(v) return options.positive(v) end

local function one_of(...)
  local allowed = { ... }
  return function(v)
    for _, a in ipairs(allowed) do
      if v == a then return true end
    end
    return nil, "must be one of " .. table.concat(allowed, ", ")
  end
end

local bg_spec = {
  enabled = "boolean",
  global_concurrency = options.at_least(1),
  per_agent_concurrency = options.at_least(1),
  default_timeout_s = positive,
  default_retries = options.at_least(0),
  default_wait_timeout_s = non_negative,
  backpressure = one_of("queue", "reject"),
  max_queue = options.at_least(1),
  max_depth = options.at_least(0),
  max_descendants = options.at_least(0),
  max_workers = options.at_least(1),
  worker_idle_s = non_negative,
  on_parent_end = one_of("leave", "cancel"),
  retry_backoff_s = non_negative,
  retry_backoff_max_s = non_negative,
  -- "cluster": global_concurrency holds across every process of a shared store
  scope = one_of("process", "cluster"),
  -- how long a task told to stop may run on before its worker is retired
  stop_grace_s = function(v)
    if v == false or (type(v) == "number" and v > 0 and v < math.huge) then return true end
    return nil, "must be a number of seconds > 0, or false (never retire a worker)"
  end,
  keep_finished = function(v)
    if v == false or type(v) == "table" then return true end
    return nil, "must be a table { max, ttl_s } or false (keep every finished task)"
  end,
  keep_finished_s = function(v) -- the older name of keep_finished.ttl_s
    if v == false or ttl_ok(v) then return true end
    return nil, "must be a number of seconds >= 1, or false (keep every finished task)"
  end,
}

local keep_finished_spec = {
  max = function(v)
    if v == false or (compat.is_integer(v) and v >= 1) then return true end
    return nil, "must be an integer >= 1, or false (no bound on the count)"
  end,
  ttl_s = function(v)
    if v == false or ttl_ok(v) then return true end
    return nil, "must be a number of seconds >= 1, or false (no bound on the age)"
  end,
}

-- Finished tasks in memory: at most `max`, none older than `ttl_s` (false:
-- no bound of that kind); keep_finished = false (or the older
-- keep_finished_s = false) keeps them all. Returns {max, ttl_s} or false.
local function keep_finished_settings(bt)
  local kf, alias = bt.keep_finished, bt.keep_finished_s
  if kf ~= nil and alias ~= nil then
    error("luagent.config background_tasks: keep_finished_s is the older name of " ..
      "keep_finished.ttl_s; give one of them", 0)
  end
  if kf == false or alias == false then return false end
  kf = options.check("luagent.config background_tasks.keep_finished", kf, keep_finished_spec, 5)
  local max, ttl = kf.max, kf.ttl_s
  if max == nil then max = 10000 end
  if ttl == nil then ttl = alias or 3600 end
  return { max = max or nil, ttl_s = ttl or nil }
end

-- background_tasks with its defaults (README) filled in.
function spec.background_settings(bt)
  options.check("luagent.config background_tasks", bt, bg_spec, 4)
  local s = {
    enabled = bt.enabled == true,
    global_concurrency = bt.global_concurrency or 10,
    per_agent_concurrency = bt.per_agent_concurrency or 5,
    default_timeout_s = bt.default_timeout_s or 300,
    default_retries = bt.default_retries or 0,
    default_wait_timeout_s = bt.default_wait_timeout_s or 300,
    backpressure = bt.backpressure or "queue",
    max_queue = bt.max_queue or 10000,
    max_depth = bt.max_depth or 2,
    max_descendants = bt.max_descendants or 50,
    worker_idle_s = bt.worker_idle_s or 30,
    on_parent_end = bt.on_parent_end or "leave",
    retry_backoff_s = bt.retry_backoff_s or 1,
    retry_backoff_max_s = bt.retry_backoff_max_s or 30,
    stop_grace_s = bt.stop_grace_s == nil and 1 or bt.stop_grace_s,
    scope = bt.scope or "process",
  }
  s.keep_finished = keep_finished_settings(bt)
  s.max_workers = bt.max_workers or s.global_concurrency * (s.max_depth + 1) + 2
  -- a chain of waits max_depth deep needs that many threads (R-27)
  if s.max_workers < s.max_depth + 1 then
    error(string.format("luagent.config background_tasks: max_workers (%d) must be at least " ..
      "max_depth + 1 (%d) so that nested waits can always be served", s.max_workers,
      s.max_depth + 1), 0)
  end
  return s
end

local function postgres_url(v)
  local ok, why = options.no_nul(v)
  if not ok then return ok, why end
  if type(v) ~= "string" or not (v:match("^postgresql://") or v:match("^postgres://")) then
    return nil, "must be a postgresql:// URL (a file store takes path)"
  end
  return true
end

local store_spec = {
  path = options.no_nul,
  url = postgres_url,
  shared = "boolean",
  lease_s = function(v)
    if type(v) == "number" and v > 0 and v < math.huge then return true end
    return nil, "must be a number of seconds > 0"
  end,
  postgres = function(v)
    if type(v) == "table" then return true end
    return nil, "must be a table { conninfo = \"host=... dbname=...\" }"
  end,
  durability = one_of("normal", "full"),
  retention = function(v)
    if v == false or type(v) == "table" then return true end
    return nil, "must be a table { completed_s, failed_s } or false (keep every record)"
  end,
}

local function seconds_or_false(v)
  if v == false or (type(v) == "number" and v > 0 and v < math.huge) then return true end
  return nil, "must be a number of seconds > 0, or false (keep them)"
end

-- How long a file store keeps finished tasks and their events, by default
-- (README "The store"): completed ones a week, failed, cancelled and timed
-- out ones (kept for post-mortems) 30 days.
local RETENTION = { completed_s = 7 * 86400, failed_s = 30 * 86400 }

local function store_settings(st)
  if st == nil then return nil end
  if type(st) == "string" then st = { path = st } end
  options.check("luagent.config store", st, store_spec, 4)
  -- one place: a file (path) or a PostgreSQL database (url, or postgres.conninfo)
  local conninfo = st.url
  if st.postgres then
    local pg = options.check("luagent.config store postgres", st.postgres,
      { conninfo = options.no_nul }, 4)
    if type(pg.conninfo) ~= "string" or pg.conninfo == "" then
      error("luagent.config store postgres: conninfo is required", 0)
    end
    conninfo = pg.conninfo
  end
  local given = (st.path and 1 or 0) + (st.url and 1 or 0) + (st.postgres and 1 or 0)
  if given > 1 then
    error("luagent.config store: give one of path, url and postgres", 0)
  end
  if given == 0 then
    error("luagent.config store: path is required (omit store for memory only)", 0)
  end
  local kept = {}
  if st.retention ~= false then
    local r = options.check("luagent.config store retention", st.retention, {
      completed_s = seconds_or_false, failed_s = seconds_or_false }, 4)
    for k, default in pairs(RETENTION) do
      if r[k] == nil then kept[k] = default elseif r[k] ~= false then kept[k] = r[k] end
    end
  end
  if st.shared and not conninfo then
    error("luagent.config store: shared needs a PostgreSQL store (url or postgres)", 0)
  end
  return { path = st.path or conninfo, postgres = conninfo ~= nil, shared = st.shared == true,
           lease_s = st.lease_s or 10, durability = st.durability or "normal", retention = kept }
end

local function add_tool(reg, t, where)
  local have = reg.tools[t.name]
  if have and have ~= t then
    error(string.format("luagent.load: two different tools are named %q (%s)", t.name, where), 0)
  end
  if not have then
    reg.tools[t.name] = t
    reg.tool_order[#reg.tool_order + 1] = t.name
  end
end

-- Build the registry of a config. Raises with the definition's name.
function spec.compile(cfg)
  local reg = {
    config = cfg,
    agents = {}, agent_order = {},
    tools = {}, tool_order = {},
    app_tools = {},       -- name -> true for config.tools
    hooks = cfg.hooks or {},
    model = cfg.model,
  }
  reg.settings = spec.background_settings(cfg.background_tasks or {})
  reg.store = store_settings(cfg.store)
  reg.max_tool_output_bytes = cfg.max_tool_output_bytes or 16384
  reg.max_result_bytes = cfg.max_result_bytes or 8192
  reg.event_buffer = cfg.event_buffer or 10000
  reg.close_grace_s = cfg.close_grace_s or 5
  reg.pricing = usage.check_pricing(cfg.pricing)
  for _, t in ipairs(cfg.tools or {}) do
    add_tool(reg, t, "config.tools")
    reg.app_tools[t.name] = true
  end
  for _, a in ipairs(cfg.agents or {}) do
    if reg.agents[a.id] then
      error(string.format("luagent.load: two agents have the id %q", a.id), 0)
    end
    reg.agents[a.id] = a
    reg.agent_order[#reg.agent_order + 1] = a.id
  end
  for _, id in ipairs(reg.agent_order) do
    local a = reg.agents[id]
    for i, t in ipairs(a.tools) do
      if type(t) == "string" then
        if not reg.app_tools[t] then
          error(string.format("luagent.load: agent %q lists tool %q, which is not an app-level tool%s",
            id, t, options.did_you_mean(t, reg.app_tools)), 0)
        end
      else
        add_tool(reg, t, string.format("agent %q tools[%d]", id, i))
      end
    end
  end
  for _, name in ipairs(reg.tool_order) do
    local t = reg.tools[name]
    if t.delegate and not reg.agents[t.delegate] then
      error(string.format("luagent.load: delegate %q names unknown agent %q%s", name, t.delegate,
        options.did_you_mean(t.delegate, reg.agents)), 0)
    end
  end
  reg.fingerprint = spec.fingerprint(reg)
  return reg
end

-- A tool by name for Lua callers (ctx:call_tool, ctx:enqueue_tool, tool
-- tasks, app:enqueue_tool): names are unique in an app, so any registered
-- tool resolves. The model is limited to its agent's tools (runner.lua).
function spec.resolve_tool(reg, name)
  return reg.tools[name]
end

local function sorted_keys(t)
  local ks = {}
  for k in pairs(t) do ks[#ks + 1] = tostring(k) end
  table.sort(ks)
  return ks
end

-- The names a worker must define the same way (R-1).
function spec.fingerprint(reg)
  local agent_hooks = {}
  for _, id in ipairs(reg.agent_order) do
    local hs = sorted_keys(reg.agents[id].hooks)
    if #hs > 0 then agent_hooks[#agent_hooks + 1] = id .. ":" .. table.concat(hs, ",") end
  end
  table.sort(agent_hooks)
  local agents = sorted_keys(reg.agents)
  local tools = sorted_keys(reg.tools)
  local hooks = sorted_keys(reg.hooks)
  return table.concat({
    "agents=" .. table.concat(agents, ","),
    "tools=" .. table.concat(tools, ","),
    "hooks=" .. table.concat(hooks, ","),
    "agent_hooks=" .. table.concat(agent_hooks, ";"),
  }, "\n")
end

-- Explain a fingerprint mismatch by listing what differs.
function spec.fingerprint_diff(host, worker)
  local function parse(fp)
    local t = {}
    for line in fp:gmatch("[^\n]+") do
      local k, v = line:match("^([%w_]+)=(.*)$")
      t[k] = v
    end
    return t
  end
  local h, w = parse(host), parse(worker)
  local out = {}
  for _, k in ipairs({ "agents", "tools", "hooks", "agent_hooks" }) do
    if h[k] ~= w[k] then
      out[#out + 1] = string.format("%s: host {%s}, worker {%s}", k, h[k] or "", w[k] or "")
    end
  end
  return table.concat(out, "; ")
end

local FN = "\0function"

-- Data of a value: functions become a marker (so arrays keep their shape),
-- cycles are an error, shared tables are copied.
local function data(v, path, seen)
  local tv = type(v)
  if tv == "function" then return FN end
  if tv == "userdata" or tv == "thread" then
    if v == json.null then return v end
    return nil
  end
  if tv ~= "table" then return v end
  if seen[v] then
    error(string.format("luagent.load: the config has a cycle at %s", path), 0)
  end
  seen[v] = true
  local out = {}
  local n = #v
  local is_arr = n > 0 or json.is_array(v)
  for k, x in next, v do
    if type(k) == "string" or (type(k) == "number" and compat.is_integer(k)) then
      out[k] = data(x, path .. "." .. tostring(k), seen)
    end
  end
  seen[v] = nil
  if is_arr then json.array(out) end
  return out
end

-- JSON of every non-function setting the workers must share (R-1).
function spec.snapshot(reg)
  local agents, tools = {}, {}
  for id, a in pairs(reg.agents) do agents[id] = data(a, "agents." .. id, {}) end
  for name, t in pairs(reg.tools) do tools[name] = data(t, "tools." .. name, {}) end
  return json.encode({
    settings = reg.settings,
    store = reg.store,
    model = reg.model and data(reg.model, "model", {}) or nil,
    agents = agents,
    tools = tools,
    max_tool_output_bytes = reg.max_tool_output_bytes,
    max_result_bytes = reg.max_result_bytes,
    event_buffer = reg.event_buffer,
    close_grace_s = reg.close_grace_s,
    pricing = reg.pricing,
  })
end

-- A decoded JSON array, or a plain Lua sequence (which `data` sends as one).
local function arrayish(t)
  return json.is_array(t) or compat.rawlen(t) > 0
end

-- Put the host's data over a worker's object; keep the worker's functions
-- (also inside lists, e.g. an agent's hooks given as a list).
local function overlay(dst, src)
  for k, v in pairs(src) do
    local d = dst[k]
    if v == FN then
      -- the host had a function here: keep the worker's own
    elseif type(v) == "table" and type(d) == "table" and arrayish(v) == arrayish(d) then
      overlay(d, v)
    else
      dst[k] = v
    end
  end
  for k, d in pairs(dst) do
    if src[k] == nil and type(d) ~= "function" then dst[k] = nil end
  end
end

function spec.apply_snapshot(reg, snap_json)
  local snap = json.decode(snap_json)
  reg.settings = snap.settings
  reg.store = snap.store
  reg.max_tool_output_bytes = snap.max_tool_output_bytes
  reg.max_result_bytes = snap.max_result_bytes
  reg.event_buffer = snap.event_buffer
  reg.close_grace_s = snap.close_grace_s
  reg.pricing = snap.pricing
  if reg.model and snap.model then overlay(reg.model, snap.model) end
  for id, a in pairs(reg.agents) do
    if snap.agents[id] then overlay(a, snap.agents[id]) end
  end
  for name, t in pairs(reg.tools) do
    if snap.tools[name] then overlay(t, snap.tools[name]) end
  end
end

-- Overrides are plain data merged key by key into the config (R-1).
local function check_plain(v, path)
  local tv = type(v)
  if tv == "function" or tv == "thread" or (tv == "userdata" and v ~= json.null) then
    error(string.format("luagent.load: overrides must be plain data (%s is a %s)", path, tv), 0)
  end
  if tv == "table" then
    for k, x in pairs(v) do check_plain(x, path .. "." .. tostring(k)) end
  end
end

local function merge(dst, src)
  for k, v in pairs(src) do
    if type(v) == "table" and type(dst[k]) == "table" and not json.is_array(v) and #v == 0 then
      merge(dst[k], v)
    else
      dst[k] = v
    end
  end
end

function spec.apply_overrides(cfg, overrides)
  if overrides == nil then return cfg end
  check_plain(overrides, "overrides")
  -- validate keys as if they were written in the config
  local probe = {}
  for k, v in pairs(overrides) do probe[k] = v end
  probe.agents, probe.tools, probe.model, probe.hooks = nil, nil, nil, nil
  local ok, err = pcall(defs.config, probe)
  if not ok then
    error((tostring(err):gsub("^[^:]*:%d+: ", "")):gsub("^luagent%.config", "luagent.load overrides"), 0)
  end
  merge(cfg, overrides)
  return cfg
end

return spec
