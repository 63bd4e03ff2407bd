-- The Lua half of tests/fuzz/fuzz_tool_args.c: tool arguments as a model
-- sends them (JSON text) go through tools.check_args, the function the
-- runner calls, against a fixed set of tools whose schemas use every
-- keyword schema.lua knows. Returns check(input); it raises (and the C
-- harness traps) when an invariant breaks:
--  - check_args never raises, and either returns a table or a message;
--  - accepted arguments encode, and that text is accepted again as the
--    same arguments;
--  - the decoded value passed as a Lua table (as scripts pass arguments)
--    gets the same verdict and message as the text.
local luagent = require "luagent"
local json = require "luagent.json"
local tools = require "luagent.tools"

local function tool(name, input_schema)
  return luagent.tool{ name = name, input_schema = input_schema, handler = function() end }
end

local TOOLS = {
  tool("plain", nil),
  tool("point", {
    type = "object",
    properties = {
      x = { type = "integer", minimum = -100, maximum = 100 },
      y = { type = "number", exclusiveMinimum = 0, multipleOf = 0.5 },
      label = { type = "string", minLength = 1, maxLength = 8, pattern = "^[a-z]+$" },
      tags = { type = "array", items = { type = "string", enum = { "a", "b", "c" } },
        uniqueItems = true, maxItems = 3 },
    },
    required = { "x" },
    additionalProperties = false,
  }),
  tool("shapes", {
    type = "object",
    ["$defs"] = {
      node = { type = "object", properties = {
        value = { type = { "integer", "null" } },
        next = { ["$ref"] = "#/$defs/node" },
      }, additionalProperties = false },
    },
    properties = {
      list = { ["$ref"] = "#/$defs/node" },
      kind = { oneOf = { { const = "circle" }, { const = "square" }, { type = "integer" } } },
      any = { anyOf = { { type = "string", format = "date" }, { type = "array", minItems = 2 } } },
      all = { allOf = { { type = "number" }, { ["not"] = { const = 0 } } } },
      pair = { type = "array", items = { { type = "string" }, { type = "boolean" } } },
      maybe = { type = "string", nullable = true },
      obj = { type = "object", minProperties = 1, maxProperties = 2,
        additionalProperties = { type = "boolean" } },
    },
  }),
  tool("loose", { type = "object", properties = { deep = true, never = false } }),
}

local function same(a_args, a_err, b_args, b_err)
  if a_args == nil or b_args == nil then return a_args == b_args and a_err == b_err end
  return json.encode(a_args) == json.encode(b_args)
end

local function check_one(t, input, decoded)
  local ok, args, err = pcall(tools.check_args, t, input)
  assert(ok, "check_args raised: " .. tostring(args))
  if args == nil then
    assert(type(err) == "string" and #err > 0, "a refusal without a message")
  else
    assert(type(args) == "table", "arguments that are not a table")
    local text = json.encode(args)
    local again, err2 = tools.check_args(t, text)
    assert(again, "accepted arguments refused once encoded: " .. tostring(err2))
    assert(json.encode(again) == text, "arguments changed through the codec")
  end
  if type(decoded) == "table" then
    local ok2, targs, terr = pcall(tools.check_args, t, decoded)
    assert(ok2, "check_args raised on a table: " .. tostring(targs))
    assert(same(args, err, targs, terr),
      string.format("text and table verdicts differ: %s / %s", tostring(err), tostring(terr)))
  end
end

return function(input)
  local decoded = json.decode_safe(input)
  for _, t in ipairs(TOOLS) do check_one(t, input, decoded) end
end
