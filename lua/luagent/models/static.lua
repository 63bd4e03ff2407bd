-- luagent.static_model{ responses = {...} }: replays scripted replies in
-- order, from the first reply in every run (so every worker state gives the
-- same answers). A reply is a string (text) or a table
-- { text?, tool_calls?, usage?, delay_s?, error? }; delay_s is cancellable.
local options = require("luagent.options")
local defs = require("luagent.defs")

local static = {}

-- position of each run (keyed by its ctx, so nested runs start over)
local positions = setmetatable({}, { __mode = "k" })

local reply_spec = {
  text = "string",
  tool_calls = "table",
  usage = "table",
  delay_s = function(v) return options.non_negative(v) end,
  error = { "string", "table" },
}

local call_spec = {
  id = "string",
  name = "string",
  arguments = { "table", "string" },
}

local function complete(self, request, ctx)
  local key = ctx or request
  local i = (positions[key] or 0) + 1
  positions[key] = i
  local r = self.responses[i]
  if r == nil then
    error({ kind = "model", message = string.format(
      "static_model: no reply left (run asked for reply %d of %d)", i, #self.responses) }, 0)
  end
  if type(r) == "string" then return { text = r } end
  if r.delay_s and r.delay_s > 0 then
    if ctx then ctx:sleep(r.delay_s) end
  end
  if r.error then
    local e = type(r.error) == "table" and r.error or { message = r.error }
    error({ kind = e.kind or "model", status = e.status, message = e.message or "scripted error" }, 0)
  end
  return { text = r.text, tool_calls = r.tool_calls, usage = r.usage }
end

function static.new(def)
  options.arg("luagent.static_model", "definition", def, "table", 3)
  options.check("luagent.static_model", def, { responses = "table", name = "string" })
  local responses = def.responses or {}
  for i, r in ipairs(responses) do
    if type(r) ~= "string" then
      if type(r) ~= "table" then
        error(string.format("luagent.static_model: responses[%d] must be a string or a table", i), 2)
      end
      local where = string.format("luagent.static_model responses[%d]", i)
      options.check(where, r, reply_spec, 3)
      local calls = r.tool_calls
      if calls ~= nil and (#calls == 0) ~= (next(calls) == nil) then
        error(where .. ": tool_calls must be a list of calls, e.g. { { name = \"t\", arguments = {} } }", 2)
      end
      for j, c in ipairs(calls or {}) do
        local cw = string.format("%s tool_calls[%d]", where, j)
        if type(c) ~= "table" then error(cw .. " must be a table", 2) end
        options.check(cw, c, call_spec, 3)
        if type(c.name) ~= "string" then error(cw .. ": name must be a string", 2) end
      end
    end
  end
  return defs.mark({ name = def.name or "static", responses = responses, complete = complete },
    "model")
end

return static
