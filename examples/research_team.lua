-- A supervisor that fans a question out to three researcher runs in the
-- background, waits for them, and writes a summary.
--
-- With OPENAI_API_KEY or OPENAI_BASE_URL set it uses that model (OpenAI,
-- Ollama, llama.cpp, vLLM, LM Studio...); otherwise a scripted model plays
-- both roles so the demo runs offline.
local luagent = require("luagent")

local online = (os.getenv("OPENAI_API_KEY") or os.getenv("OPENAI_BASE_URL")) ~= nil

local ASPECTS = { "embedding API", "performance", "ecosystem" }

-- The scripted supervisor: ask three researchers, wait, summarize.
local function supervisor_script(request)
  local msgs = request.messages
  -- the last message, past any "[luagent] background results:" notice
  local n = #msgs
  while n > 2 and msgs[n].role == "user" do n = n - 1 end
  local last = msgs[n]
  local question = msgs[2].content
  if #msgs == 2 then
    local calls = {}
    for i, aspect in ipairs(ASPECTS) do
      calls[i] = { name = "research", arguments = { prompt = question .. " Focus on: " .. aspect .. "." } }
    end
    return { text = "I will ask three researchers in parallel.", tool_calls = calls,
      usage = { prompt_tokens = 120, completion_tokens = 40 } }
  end
  if last.role == "tool" and last.content:find('"status":"queued"', 1, true) then
    local ids = {}
    for _, m in ipairs(msgs) do
      if m.role == "tool" then
        local v = luagent.json.decode(m.content)
        if v.value and v.value.task_id then ids[#ids + 1] = v.value.task_id end
      end
    end
    return { tool_calls = { { name = "bg_wait", arguments = { task_ids = ids, mode = "all" } } },
      usage = { prompt_tokens = 200, completion_tokens = 30 } }
  end
  local results = luagent.json.decode(last.content).value.tasks
  local lines = { "Summary of " .. #results .. " research notes:" }
  for _, t in ipairs(results) do
    lines[#lines + 1] = "- " .. tostring(t.result)
  end
  return { text = table.concat(lines, "\n"), usage = { prompt_tokens = 400, completion_tokens = 90 } }
end

-- The scripted researcher: a short answer after "thinking" a little.
local function researcher_script(request, ctx)
  local prompt = request.messages[#request.messages].content
  local aspect = prompt:match("Focus on: (.-)%.$") or "the question"
  ctx:sleep(0.2 + #aspect / 100)
  local notes = {
    ["embedding API"] = "Lua's C API is small and stable; Python's is larger and tied to the GIL.",
    performance = "Lua starts in microseconds and stays small; CPython is heavier to embed.",
    ecosystem = "Python has far more libraries; Lua's fit games and config, via LuaRocks.",
  }
  return { text = notes[aspect] or ("Notes on " .. aspect),
    usage = { prompt_tokens = 60, completion_tokens = 25 } }
end

local model, researcher_model
if online then
  model = luagent.openai{ model = os.getenv("OPENAI_MODEL") or "gpt-4o-mini", stream = true }
  -- OPENAI_RESEARCH_MODEL: another (say, a cheaper) model for the researchers
  local research_name = os.getenv("OPENAI_RESEARCH_MODEL")
  researcher_model = research_name and luagent.openai{ model = research_name, stream = true } or model
else
  model = luagent.function_model(supervisor_script, "scripted-supervisor")
  researcher_model = luagent.function_model(researcher_script, "scripted-researcher")
end

local research = luagent.delegate{
  agent = "researcher",
  name = "research",
  description = "Ask a researcher to look into one aspect of the question. Runs in the background; returns a task_id.",
  background = { enabled = true, timeout_s = 120 },
}

return luagent.config{
  model = model,
  background_tasks = { enabled = true, global_concurrency = 4, per_agent_concurrency = 3 },
  -- US dollars per million tokens; the scripted models are priced alike
  pricing = {
    ["gpt-4o-mini"] = { input_per_mtok = 0.15, output_per_mtok = 0.60, cached_input_per_mtok = 0.075 },
    ["scripted-supervisor"] = { input_per_mtok = 0.15, output_per_mtok = 0.60 },
    ["scripted-researcher"] = { input_per_mtok = 0.15, output_per_mtok = 0.60 },
  },
  agents = {
    luagent.agent{
      id = "supervisor",
      instructions = "You lead a research team. Split the user's question into three aspects and " ..
        "call research once per aspect (they run in parallel). Then call bg_wait with all three " ..
        "task_ids and write a short summary that uses every result.",
      tools = { research },
      budget = { max_iterations = 8 },
    },
    luagent.agent{
      id = "researcher",
      model = researcher_model,
      instructions = "Answer the question in two sentences.",
      budget = { max_iterations = 4 },
    },
  },
}
