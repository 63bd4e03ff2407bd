-- Where luagent's warnings and errors go (R-7): a function the host sets with
-- luagent.set_log, called on the host thread; never stderr.
local log = {}

local sink = nil

function log.set(fn)
  sink = fn
end

function log.emit(level, message)
  if sink then pcall(sink, level, message) end
end

return log
