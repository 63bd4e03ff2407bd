-- make bench-peers: Vercel `ai` and `@openai/agents` (Node) on the model
-- path of bench/targets.lua (N runs of model -> tool -> model, C = 10)
-- against the same fake server, next to raw libcurl in the same run.
package.path = "./lua/?.lua;./lua/?/init.lua;./tests/?.lua;" .. package.path
local fake = require("support.fake_openai_client")
local RUNS = tonumber(os.getenv("BENCH_RUNS")) or 1000
local C = 10

local function script(srv, n)
  local replies = {}
  for i = 1, 2 * n do
    replies[i] = { tool_calls = { { name = "lookup", arguments = { key = "k" } } }, after_tool = { text = "done" } }
  end
  srv:reset()
  srv:script(replies)
end

local srv = fake.start()
script(srv, 2)
-- the floor: one run's two requests as luagent sends them, posted by raw libcurl
local luagent = require("luagent")
package.cpath = "./?.so;" .. package.cpath
local app = luagent.load_string(string.format([[
local luagent = require "luagent"
return luagent.config{
  model = luagent.openai{ model = "bench", base_url = %q, api_key = "k", max_retries = 0 },
  tools = { luagent.tool{ name = "lookup", description = "Look a key up.",
    input_schema = { type = "object", properties = { key = { type = "string" } }, required = { "key" } },
    handler = function(args) return "value of " .. args.key end } },
  agents = { luagent.agent{ id = "a", instructions = "Answer.", tools = { "lookup" } } },
}]], srv.url))
assert(app:run("a", "run 0").status == "completed")
app:close()
local reqs = srv:requests()
local files = {}
for i = 1, 2 do
  files[i] = "build/bench_peer_body" .. i .. ".json"
  local f = assert(io.open(files[i], "wb"))
  f:write(reqs[i].body)
  f:close()
end
script(srv, RUNS)
local p = io.popen(string.format("./build/raw_curl %s/chat/completions %s %d %s", srv.url, files[1], RUNS, files[2]))
local raw = tonumber(p:read("a"):match("^([%d%.]+)")) or 0
p:close()
print(string.format("peers: %d runs of model -> tool -> model, C=%d, same fake server (CPU per run, process)", RUNS, C))
print(string.format("  raw libcurl, same two POSTs %9.1f us            1.0x", raw))
for _, peer in ipairs({ { "ai", "Vercel ai" }, { "agents", "@openai/agents" } }) do
  script(srv, RUNS + 2 * C)
  local h = io.popen(string.format("node bench/peers/peer.mjs %s %s %d %d 2>&1", peer[1], srv.url, RUNS, C))
  local out = h:read("a")
  h:close()
  local cpu, rss = out:match("^([%d%.]+) (%d+)")
  if cpu then
    print(string.format("  %-27s %9.1f us  %7.1fx raw   peak RSS %d MiB", peer[2], tonumber(cpu),
      tonumber(cpu) / raw, tonumber(rss) // 1024))
  else
    print(string.format("  %-27s failed: %s", peer[2], out:sub(1, 200)))
  end
end
srv:stop()
