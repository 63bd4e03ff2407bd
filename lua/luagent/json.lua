-- luagent.json: the C codec of luagent.core (core/json.c) plus a non-raising
-- decode. Integers stay integers, floats round-trip, arrays are explicit
-- (json.array / json.array_mt / json.empty_array), JSON null is json.null in
-- arrays and an absent key in objects, object keys are written sorted.
local core = require("luagent.core")

local json = {}
for name, value in pairs(core.json) do
  json[name] = value
end

local decode = json.decode

-- Decode without raising: returns the value, or nil and the error message.
function json.decode_safe(s)
  local ok, value = pcall(decode, s)
  if ok then
    return value
  end
  return nil, value
end

return json
