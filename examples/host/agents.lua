-- The startup script of examples/host/host.c: a scout agent that asks the
-- game where the player is, through the host tool player_position (answered
-- by the C host from its own state, on its main thread, between frames).
--
-- With OPENAI_BASE_URL or OPENAI_API_KEY set the scout talks to that model
-- (luagent.openai reads OPENAI_BASE_URL, OPENAI_MODEL, OPENAI_API_KEY);
-- otherwise a scripted model asks once and then answers, with no network.
local luagent = require "luagent"

local player_position = luagent.host_tool{
  name = "player_position",
  description = "Where the player is right now: {x, y, frame}.",
  input_schema = { type = "object", properties = {} },
}

local model
if os.getenv("OPENAI_BASE_URL") or os.getenv("OPENAI_API_KEY") then
  model = luagent.openai{ max_retries = 0 }
else
  model = luagent.function_model(function(request)
    local last = request.messages[#request.messages]
    if last.role == "tool" then return { text = "The player is at " .. tostring(last.content) } end
    return { tool_calls = { { id = "call_pos", name = "player_position", arguments = {} } } }
  end)
end

return luagent.config{
  model = model,
  -- a game closes without waiting for stuck work (README, "A quit that
  -- never freezes"); host.c closes with grace_s = 0 itself as well
  close_grace_s = 0,
  background_tasks = { enabled = true, global_concurrency = 8, per_agent_concurrency = 8 },
  agents = {
    luagent.agent{
      id = "scout",
      instructions = "Call player_position once, then say in one sentence where the player is.",
      tools = { player_position },
    },
  },
}
