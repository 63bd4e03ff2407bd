-- A host process for tests/foreground_hook_spec.lua: one foreground run
-- whose tool spins in `while true do end` inside a pcall, with
-- timeout_s = 0.3. Arguments: how luagent is loaded ("strings": every
-- luagent module from a string chunk, so no chunk names a file; "files"),
-- whether the host sets its own debug hook first ("hook" or "nohook"), and
-- the model ("static", or the fake server's base URL for luagent.openai).
-- Prints one line: status=<status> hook_calls=<n> hook_back=<bool>.
package.path = "./lua/?.lua;./lua/?/init.lua;./tests/?.lua;" .. package.path
package.cpath = "./?.so;" .. package.cpath
local how, hook, model = arg[1], arg[2], arg[3]

if how == "strings" then
  table.insert(package.searchers or package.loaders, 2, function(name)
    if name ~= "luagent" and not name:match("^luagent%.") then return nil end
    local rel = name:gsub("%.", "/")
    for _, path in ipairs({ "./lua/" .. rel .. ".lua", "./lua/" .. rel .. "/init.lua" }) do
      local f = io.open(path, "r")
      if f then
        local src = f:read("*a")
        f:close()
        return assert(load(src, "=" .. name)), name
      end
    end
    return nil
  end)
end

local luagent = require "luagent"
local model_src
if model == "static" then
  model_src = [[luagent.static_model{ responses = {
    { tool_calls = { { id = "s", name = "spin" } } }, "not reached" } }]]
else
  model_src = string.format([[luagent.openai{ model = "m", base_url = %q, api_key = "sk-test",
    stream = false, max_retries = 0, timeout_s = 10 }]], model)
end
local app = luagent.load_string([[
  local luagent = require "luagent"
  local spin = luagent.tool{ name = "spin", handler = function()
    while true do pcall(function() while true do end end) end
  end }
  return luagent.config{ agents = { luagent.agent{ id = "a", tools = { spin }, model = ]] ..
  model_src .. [[ } } }]], "=fg_hook_cfg")

local calls = 0
local function host_hook() calls = calls + 1 end
if hook == "hook" then debug.sethook(host_hook, "", 1000) end
local res = app:run("a", "go", { timeout_s = 0.3 })
local back = debug.gethook()
debug.sethook()
io.write(string.format("status=%s hook_calls=%d hook_back=%s\n", res.status, calls,
  tostring(hook == "hook" and back == host_hook or hook ~= "hook" and back == nil)))
app:close()
