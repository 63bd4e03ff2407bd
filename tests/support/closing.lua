-- closing(x, ...) -> x, ...: x is closed when the running test ends, pass or
-- fail (x:close(), newest first): what a to-be-closed local gives on Lua
-- 5.4, for a suite that also runs on 5.1 and LuaJIT. A spec that needs x
-- closed earlier closes it itself (close is idempotent).
local busted = require "busted"

local open = {}

busted.subscribe({ "test", "end" }, function()
  for i = #open, 1, -1 do
    local x = open[i]
    open[i] = nil
    x:close()
  end
  return nil, true
end)

return function(x, ...)
  if x ~= nil then open[#open + 1] = x end
  return x, ...
end
