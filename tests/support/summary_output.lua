-- busted output handler: the gtest listing, then one line `N passed, N failed`
-- (errors count as failures) that CI reads.
return function(options)
  local busted = require "busted"
  local handler = require "busted.outputHandlers.gtest"(options)
  busted.subscribe({ "suite", "end" }, function()
    local failed = handler.failuresCount + handler.errorsCount
    io.write(string.format("%d passed, %d failed\n", handler.successesCount, failed))
    io.flush()
    return nil, true
  end)
  return handler
end
