-- Calling tools: argument parsing and validation, running a handler, and the
-- ToolResult shape every tool returns (docs/architecture.md, R-12).
local compat = require("luagent.compat")
local core = require("luagent.core")
local json = require("luagent.json")
local schema = require("luagent.schema")

local tools = {}

function tools.ok(value)
  return { ok = true, value = value }
end

function tools.fail(kind, message)
  return { ok = false, error = message, cause = { kind = kind, message = message } }
end

-- Is v shaped like a ToolResult?
function tools.is_result(v)
  return type(v) == "table" and type(v.ok) == "boolean"
end

-- A fresh copy of JSON data through the codec: the handler never shares a
-- table with the transcript, and a Lua table reads exactly as the same
-- arguments sent as JSON text would (2.0 becomes the integer 2).
function tools.copy_json(v)
  local ok, text = pcall(json.encode, v)
  if not ok then
    return nil, tostring(text):gsub("^luagent%.json%.encode: ", "")
  end
  return json.decode(text)
end

-- Arguments arrive as a table or as JSON text from the model.
function tools.parse_args(raw)
  if raw == nil then return {} end
  if type(raw) == "table" then
    local v, err = tools.copy_json(raw)
    if v == nil then return nil, "arguments are not JSON data: " .. err end
    if json.is_array(v) then return nil, "arguments must be a JSON object" end
    return v
  end
  if type(raw) ~= "string" then
    return nil, "arguments must be a JSON object, got " .. type(raw)
  end
  if raw:match("^%s*$") then return {} end
  local v, err = json.decode_safe(raw)
  if v == nil then
    return nil, "arguments are not valid JSON: " .. tostring(err):gsub("^luagent%.json%.decode: ", "")
  end
  if type(v) ~= "table" or json.is_array(v) then
    return nil, "arguments must be a JSON object"
  end
  return v
end

-- A model's tool-call arguments as user code sees them (hooks, results,
-- threads): the decoded table and the text, which is the model's own or,
-- from a model that returned a table, its JSON. Arguments that are not a
-- JSON object give nil, the text and the error.
function tools.call_arguments(raw)
  if raw == nil or raw == json.null then return {}, "{}" end
  if type(raw) == "table" then
    local ok, text = pcall(json.encode, raw)
    if not ok then
      return nil, nil, "arguments are not JSON data: " .. tostring(text):gsub("^luagent%.json%.encode: ", "")
    end
    local v = json.decode(text)
    if json.is_array(v) then return nil, text, "arguments must be a JSON object" end
    return v, text
  end
  if type(raw) ~= "string" then
    return nil, nil, "arguments must be a JSON object, got " .. type(raw)
  end
  local args, err = tools.parse_args(raw)
  return args, raw, err
end

-- Parse and check arguments against the tool's input_schema.
function tools.check_args(tool, raw)
  local args, err = tools.parse_args(raw)
  if not args then return nil, err end
  local ok, msg = schema.validate(tool.input_schema, args)
  if not ok then
    return nil, string.format("invalid arguments for %s: %s", tool.name, msg)
  end
  return args
end

-- A run's wall budget (max_wall_seconds) expiring while the run waits
-- (ctx:sleep, ctx:wait, model calls that wait): like the cancel error it
-- passes through handlers, hooks and nested runs up to the run it belongs
-- to (`run_id`), which ends budget_exceeded.
local budget_mt = { __tostring = function(e) return e.message end }

-- d = { at, run_id, budget } (a run's deadline, see runner.run)
function tools.budget_error(d)
  return setmetatable({ kind = "budget", budget = d.budget or "max_wall_seconds", run_id = d.run_id,
    message = string.format("budget %s exceeded", d.budget or "max_wall_seconds") }, budget_mt)
end

function tools.is_budget(e)
  return type(e) == "table" and getmetatable(e) == budget_mt
end

-- Errors that end a run rather than a tool call: cancel and budget; and
-- the interrupt of a step by a message, which ends the step (README,
-- "Steering") and must pass through the code inside it the same way.
function tools.is_abort(e)
  return core.is_cancel(e) or tools.is_budget(e) or core.is_interrupt(e)
end

-- Error values from handlers: keep the cancel sentinel and budget errors
-- as they are (R-23), give everything else a message and a traceback.
local function on_error(e)
  if tools.is_abort(e) then return e end
  local msg
  if type(e) == "table" and e.message ~= nil then
    msg = tostring(e.message)
  else
    msg = tostring(e)
  end
  local kind = type(e) == "table" and e.kind or nil
  return {
    message = msg,
    traceback = debug.traceback(msg, 2),
    kind = kind,
    luagent_kind = type(e) == "table" and getmetatable(e) == core.error_mt and kind or nil,
  }
end
tools.on_error = on_error

-- Run a script tool's handler. Returns a ToolResult and, on a handler error,
-- the traceback (which belongs in events, not in front of the model).
function tools.run_handler(tool, args, ctx)
  local ok, v = compat.xpcall(tool.handler, on_error, args, ctx)
  if ok then return tools.ok(v) end
  if tools.is_abort(v) then error(v, 0) end
  -- luagent's own errors (e.g. {kind = "limit"}) keep their kind for the model
  local kind = v.luagent_kind or "runtime"
  local res = tools.fail(kind, string.format("tool %s failed: %s", tool.name, v.message))
  return res, v.traceback
end

-- What the model is shown of a tool.
function tools.model_spec(tool)
  return { name = tool.name, description = tool.description, input_schema = tool.input_schema }
end

-- The JSON of a ToolResult, cut to max bytes with a marker saying so (docs/architecture.md).
-- s cut to at most n bytes, never inside a UTF-8 sequence; `mark(cut, s)`
-- (default: "...") says so after a cut.
function tools.cut(s, n, mark)
  s = tostring(s)
  if #s <= n then return s end
  local c = s:sub(1, n):gsub("[\192-\255][\128-\191]*$", "")
  return c .. (mark and mark(c, s) or "...")
end

function tools.content(result, max)
  local ok, text = pcall(json.encode, result)
  if not ok then
    text = json.encode(tools.fail("runtime", "tool result is not JSON-encodable: " .. tostring(text)))
  end
  if max then
    text = tools.cut(text, max, function(c, s)
      return string.format("...[luagent: cut to %d of %d bytes]", #c, #s)
    end)
  end
  return text
end

return tools
