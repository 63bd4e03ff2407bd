-- luagent.function_model(fn): replies computed by fn(request, ctx). Works in
-- every state, since each state runs the same startup script.
local options = require("luagent.options")
local defs = require("luagent.defs")

local fmodel = {}

function fmodel.new(fn, name)
  options.arg("luagent.function_model", "fn", fn, "callable", 3)
  return defs.mark({
    name = name or "function",
    complete = function(_, request, ctx) return fn(request, ctx) end,
  }, "model")
end

return fmodel
