-- The LM-facing control tools and the background half of a run (R-30..R-33).
local bg = {}

function bg.prepare(run) end
function bg.notice(run) return nil end
function bg.delivered(run, notice) end
function bg.call(run, tool, call, args) return nil end
function bg.finish(run) end

return bg
