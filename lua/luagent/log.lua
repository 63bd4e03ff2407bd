-- Where luagent's warnings and errors go (R-7): a function the host sets with
-- luagent.set_log, and the C sink of luagent_set_log (core/luagent.h), both
-- called on the host thread; never stderr.
local core = require("luagent.core")

local log = {}

local sink = nil

function log.set(fn)
  sink = fn
end

function log.emit(level, message)
  if sink then pcall(sink, level, message) end
  core.log(level, tostring(message))
end

return log
