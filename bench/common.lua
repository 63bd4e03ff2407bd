-- Helpers shared by bench/run.lua and bench/targets.lua.
local M = {}

-- An app with trivial tools and n workers (global_concurrency = max_workers = n).
function M.tool_config(n, extra)
  return string.format([[
local luagent = require "luagent"
return luagent.config{
  background_tasks = { enabled = true, global_concurrency = %d, per_agent_concurrency = %d,
                       max_workers = %d, max_depth = 0, max_queue = 10000000 },
  tools = {
    luagent.tool{ name = "noop", input_schema = { type = "object", properties = { i = { type = "integer" } } },
      handler = function(args) return args.i end },
    luagent.tool{ name = "now", handler = function() return require("luagent.core").now() end },
    luagent.tool{ name = "hold", handler = function(_, ctx) ctx:sleep(0.3) end },
    -- holds its agent's slot until cancelled (the app's close): what is
    -- enqueued for that agent meanwhile stays queued
    luagent.tool{ name = "park", handler = function(_, ctx) ctx:sleep(3600) end },
  },
  %s
}]], n, n, n, extra or "")
end

function M.percentile(sorted, p)
  local i = math.max(1, math.ceil(#sorted * p))
  return sorted[i]
end

function M.rss_kb()
  for line in io.lines("/proc/self/status") do
    local v = line:match("^VmRSS:%s+(%d+)")
    if v then return tonumber(v) end
  end
end

return M
