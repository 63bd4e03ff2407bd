-- Definitions a startup script builds: tools, host tools, agents, delegates,
-- the config. Each constructor checks its fields at once (R-10) so a typo is
-- reported at the line that made it, and marks the object with its kind.
local options = require("luagent.options")
local schema = require("luagent.schema")

local defs = {}

local kinds = setmetatable({}, { __mode = "k" })

function defs.kind_of(v)
  return type(v) == "table" and kinds[v] or nil
end

local function mark(obj, kind)
  kinds[obj] = kind
  return obj
end
defs.mark = mark

-- Names the model sees must be what OpenAI accepts for function names.
local NAME_PATTERN = "^[%w_%-]+$"
local CONTROL_TOOLS = { bg_list = true, bg_check = true, bg_cancel = true, bg_wait = true }
defs.CONTROL_TOOLS = CONTROL_TOOLS

local function check_name(where, what, name, level)
  if type(name) ~= "string" or name == "" then
    error(string.format("%s: %s must be a non-empty string, got %s", where, what,
      type(name)), level + 1)
  end
  if #name > 64 or not name:find(NAME_PATTERN) then
    error(string.format("%s: %s %q must be 1-64 characters of letters, digits, '_' or '-'",
      where, what, name), level + 1)
  end
end

local function check_schema(where, input_schema, level)
  if input_schema == nil then
    return { type = "object", properties = {} }
  end
  local ok, msg = schema.check(input_schema)
  if not ok then
    error(string.format("%s: %s", where, msg), level + 1)
  end
  return input_schema
end

local function positive(v)
  return options.positive(v)
end

local background_spec = {
  enabled = "boolean",
  timeout_s = positive,
  timeout_ms = positive,
  retries = options.at_least(0),
  stale_after_s = positive,
}

local function check_background(where, bg, level)
  if bg == nil or bg == false then
    return nil
  end
  if bg == true then
    return { enabled = true }
  end
  options.check(where .. " background", bg, background_spec, level + 2)
  local out = { enabled = bg.enabled ~= false, retries = bg.retries,
    stale_after_s = bg.stale_after_s }
  out.timeout_s = bg.timeout_s or (bg.timeout_ms and bg.timeout_ms / 1000)
  return out
end

local tool_spec = {
  name = "string",
  description = "string",
  input_schema = "table",
  handler = "callable",
  background = { "table", "boolean" },
}

local host_tool_spec = {
  name = "string",
  description = "string",
  input_schema = "table",
  background = { "table", "boolean" },
}

-- "luagent.tool \"name\"" when the definition has a name, so a bad field
-- names the definition it is in.
local function label(what, name)
  if type(name) == "string" then return string.format("%s %q", what, name) end
  return what
end

-- The checks both kinds of tool share; raises at the script's line (the
-- caller of luagent.tool / luagent.host_tool).
local function tool_common(what, def, spec_table)
  options.arg(what, "definition", def, "table", 4)
  options.check(label(what, def.name), def, spec_table, 4)
  check_name(what, "name", def.name, 3)
  local where = string.format("%s %q", what, def.name)
  if CONTROL_TOOLS[def.name] then
    error(where .. ": the name is reserved for luagent's control tools", 3)
  end
  return where, {
    name = def.name,
    description = def.description or "",
    input_schema = check_schema(where, def.input_schema, 3),
    background = check_background(where, def.background, 3),
  }
end

-- luagent.tool{ name, description, input_schema, handler, background }
function defs.tool(def)
  local where, tool = tool_common("luagent.tool", def, tool_spec)
  if def.handler == nil then
    error(where .. ": handler must be a function (use luagent.host_tool for tools the host answers)", 2)
  end
  tool.handler = def.handler
  return mark(tool, "tool")
end

-- luagent.host_tool{ name, description, input_schema }: answered on the host
-- thread by the handler bound with app:host_tool (R-5).
function defs.host_tool(def)
  local _, tool = tool_common("luagent.host_tool", def, host_tool_spec)
  tool.host = true
  return mark(tool, "tool")
end

local HOOK_NAMES = { "before_step", "after_step", "should_stop", "before_finalize", "before_tool",
  "after_tool" }
local hook_spec = {}
for _, n in ipairs(HOOK_NAMES) do
  hook_spec[n] = { "callable", "table" }
end

local budget_spec = {
  max_iterations = options.at_least(1),
  max_tokens = options.at_least(1),
  max_wall_seconds = positive,
}

local agent_spec = {
  id = "string",
  description = "string",
  instructions = { "string", "callable" },
  model = "table",
  tools = "table",
  budget = "table",
  hooks = "table",
  max_depth = options.at_least(0),
  tree_budget = "table", -- for the trees it is the root of (README "Tree budgets")
}

local function is_model(m)
  return type(m) == "table" and type(m.complete) == "function"
end
defs.is_model = is_model

-- Hooks are one function or a list of them; always keep a list.
local function hook_list(where, name, v, level)
  if type(v) ~= "table" or getmetatable(v) and getmetatable(v).__call then
    return { v }
  end
  for i, f in ipairs(v) do
    if not options.check_kind(f, "callable") then
      error(string.format("%s: hooks.%s[%d] must be a function", where, name, i), level + 1)
    end
  end
  return v
end

-- luagent.agent{ id, instructions, model, tools, budget, hooks, max_depth }
function defs.agent(def)
  options.arg("luagent.agent", "definition", def, "table", 3)
  options.check(label("luagent.agent", def.id), def, agent_spec)
  check_name("luagent.agent", "id", def.id, 2)
  local where = string.format("luagent.agent %q", def.id)
  if def.model ~= nil and not is_model(def.model) then
    error(where .. ": model must be a model (a table with a complete function)", 2)
  end
  local budget = options.check(where .. " budget", def.budget, budget_spec, 3)
  local hooks = {}
  options.check(where .. " hooks", def.hooks, hook_spec, 3)
  for name, v in pairs(def.hooks or {}) do
    hooks[name] = hook_list(where, name, v, 2)
  end
  local tools = {}
  for i, t in ipairs(def.tools or {}) do
    if type(t) ~= "string" and defs.kind_of(t) ~= "tool" then
      error(string.format("%s: tools[%d] must be a tool (luagent.tool, luagent.delegate) or a tool name",
        where, i), 2)
    end
    tools[i] = t
  end
  return mark({
    id = def.id,
    description = def.description,
    instructions = def.instructions or "",
    model = def.model,
    tools = tools,
    budget = {
      max_iterations = budget.max_iterations or 32,
      max_tokens = budget.max_tokens,
      max_wall_seconds = budget.max_wall_seconds,
    },
    hooks = hooks,
    max_depth = def.max_depth,
    tree_budget = require("luagent.budget").check(where, def.tree_budget, 2),
  }, "agent")
end

local delegate_spec = {
  agent = "string",
  name = "string",
  description = "string",
  background = { "table", "boolean" },
}

-- luagent.delegate{ agent, name?, description?, background? }: a tool with
-- input {prompt} that runs that agent, inline or as an agent-run task.
function defs.delegate(def)
  options.arg("luagent.delegate", "definition", def, "table", 3)
  options.check(label("luagent.delegate", def.name or def.agent), def, delegate_spec)
  check_name("luagent.delegate", "agent", def.agent, 2)
  local name = def.name or def.agent
  check_name("luagent.delegate", "name", name, 2)
  local where = string.format("luagent.delegate %q", name)
  return mark({
    name = name,
    description = def.description or ("Ask the " .. def.agent .. " agent. Input: a prompt."),
    input_schema = {
      type = "object",
      properties = { prompt = { type = "string", description = "What the agent should do." } },
      required = { "prompt" },
    },
    delegate = def.agent,
    background = check_background(where, def.background, 2),
  }, "tool")
end

local config_spec = {
  model = "table",
  background_tasks = "table",
  store = { "table", "string" },
  agents = "table",
  tools = "table",
  hooks = "table",
  max_tool_output_bytes = options.at_least(1),
  max_result_bytes = options.at_least(64),
  event_buffer = options.at_least(1),
  close_grace_s = function(v) return options.non_negative(v) end,
  pricing = "table",
}

local CONFIG_HOOKS = { "on_task_enqueued", "on_task_started", "on_task_retry", "on_task_finished",
  "on_error" }
defs.CONFIG_HOOKS = CONFIG_HOOKS
local config_hook_spec = {}
for _, n in ipairs(CONFIG_HOOKS) do
  config_hook_spec[n] = "callable"
end
config_hook_spec.admit = "callable" -- spawns' admission (README "Admission"), not a lifecycle callback

-- luagent.config{...}: what a startup script returns (R-1).
function defs.config(def)
  options.arg("luagent.config", "definition", def, "table", 3)
  options.check("luagent.config", def, config_spec)
  if def.model ~= nil and not is_model(def.model) then
    error("luagent.config: model must be a model (a table with a complete function)", 2)
  end
  options.check("luagent.config hooks", def.hooks, config_hook_spec, 3)
  for i, a in ipairs(def.agents or {}) do
    if defs.kind_of(a) ~= "agent" then
      error(string.format("luagent.config: agents[%d] must be made with luagent.agent", i), 2)
    end
  end
  for i, t in ipairs(def.tools or {}) do
    if defs.kind_of(t) ~= "tool" then
      error(string.format("luagent.config: tools[%d] must be made with luagent.tool, " ..
        "luagent.host_tool or luagent.delegate", i), 2)
    end
  end
  local cfg = {}
  for k, v in pairs(def) do
    cfg[k] = v
  end
  cfg.agents = cfg.agents or {}
  cfg.tools = cfg.tools or {}
  cfg.hooks = cfg.hooks or {}
  cfg.background_tasks = cfg.background_tasks or {}
  return mark(cfg, "config")
end

return defs
