-- The game's agents: an NPC that says one line to the player, after
-- asking the game where the player is (a host tool: the game answers it
-- on its main thread, in the frame's app:poll()).
--
-- With OPENAI_API_KEY or OPENAI_BASE_URL set the NPCs talk to that model;
-- otherwise a scripted model plays them so the example runs offline.
local luagent = require("luagent")

local online = (os.getenv("OPENAI_API_KEY") or os.getenv("OPENAI_BASE_URL")) ~= nil

-- The scripted NPC: ask where the player is, then "think" a little.
local function npc_script(request, ctx)
  local last = request.messages[#request.messages]
  if last.role ~= "tool" then
    return { tool_calls = { { name = "where_is_player", arguments = {} } } }
  end
  local where = luagent.json.decode(last.content).value
  local prompt = request.messages[2].content
  ctx:sleep(0.1 + #prompt % 7 / 100)
  return { text = string.format("Welcome, traveller at (%d, %d): %s", where.x, where.y,
    prompt:match("about (.-)%.$") or "safe travels") }
end

local model = online and luagent.openai{ model = os.getenv("OPENAI_MODEL") or "gpt-4o-mini" }
  or luagent.function_model(npc_script, "scripted-npc")

return luagent.config{
  model = model,
  background_tasks = { enabled = true, global_concurrency = 4 },
  close_grace_s = 0, -- quitting the game never waits for a worker
  tools = {
    luagent.host_tool{ name = "where_is_player", description = "The player's position on the map.",
      input_schema = { type = "object" } },
  },
  agents = {
    luagent.agent{
      id = "npc",
      instructions = "You are a villager in a small fantasy game. Call where_is_player, then greet " ..
        "the player in one short sentence about the topic you are given.",
      tools = { "where_is_player" },
      budget = { max_iterations = 4 },
    },
  },
}
