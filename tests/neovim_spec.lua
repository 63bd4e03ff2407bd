-- Lua hosts: Neovim. `nvim --headless` loads luagent (its LuaJIT build)
-- from this tree and runs examples/neovim's research team — a supervisor
-- and three background researchers on luagent.openai, against the fake
-- server — polling from a vim.loop timer, while a 10 ms vim.loop timer
-- counts ticks (tests/support/nvim_research.lua). Acceptance: every run
-- completes, the tick count grows while they run, and no gap between two
-- ticks is over 50 ms: the main thread never blocks on the agents.
local fake = require "support.fake_openai_client"
local luajit_module = require "support.luajit_module"
local cjson = require "cjson"

local function call(name, args) return { name = name, arguments = args } end

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

describe("Neovim host", function()
  local srv, cpath
  setup(function()
    if luajit_module.sh("command -v nvim") ~= "" then
      cpath = assert(luajit_module.dir())
      srv = fake.start()
    end
  end)
  teardown(function() if srv then srv:stop() end end)

  it("runs a supervisor and three background researchers from a vim.loop timer; a 10 ms timer keeps " ..
    "ticking (no gap over 50 ms)", function()
    if not srv then return pending("no nvim here (Debian: neovim)") end
    -- researchers answer slowly and stream, so the runs span many ticks
    local script = { { for_model = "sup", text = "Asking three researchers.", tool_calls = {
      call("research", { prompt = "The embedding API." }), call("research", { prompt = "Performance." }),
      call("research", { prompt = "The ecosystem." }) } } }
    for i = 1, 3 do
      script[#script + 1] = { for_model = "res", text = "Research note number " .. i .. ".",
        delay_ms = 200 + 50 * i, delay_between_chunks_ms = 10 }
    end
    script[#script + 1] = { for_model = "sup", tool_calls = {
      call("bg_wait", { task_ids = { "{{task_id:1}}", "{{task_id:2}}", "{{task_id:3}}" } }) } }
    script[#script + 1] = { for_model = "sup", text = "Summary of three research notes." }
    srv:script(script)

    local out = os.tmpname()
    local log, rc = luajit_module.sh(string.format(
      "env -u LD_PRELOAD -u OPENAI_API_KEY OPENAI_BASE_URL=%s OPENAI_MODEL=sup OPENAI_RESEARCH_MODEL=res " ..
      "LUAGENT_NVIM_OUT=%s LUAGENT_NVIM_CPATH=%s timeout 90 nvim --headless -u NONE -i NONE -n " ..
      "-c 'luafile tests/support/nvim_research.lua' </dev/null", q(srv.url), q(out), q(cpath)))
    local f = io.open(out)
    local text = f and f:read("*a") or ""
    if f then f:close() end
    os.remove(out)
    assert.equals(0, rc, log)
    local r = cjson.decode(text ~= "" and text or "{}")
    assert.is_true(r.ok, text .. log)
    assert.truthy(tostring(r.luajit):find("^LuaJIT"), text)

    -- every background run completed: the supervisor and its researchers
    assert.equals("completed", r.status, text)
    assert.equals("Summary of three research notes.", r.final)
    assert.same({ completed = 4 }, r.finished)
    local reqs = srv:requests()
    local by_model = {}
    for _, req in ipairs(reqs) do by_model[req.json.model] = (by_model[req.json.model] or 0) + 1 end
    assert.same({ sup = 3, res = 3 }, by_model)

    -- the editor's loop kept ticking while they ran
    assert.truthy(r.ticks_during > 0, text)
    local first_start, last_finish
    for _, e in ipairs(r.ticks_at) do
      if e.agent == "researcher" and e.kind == "task_started" and not first_start then first_start = e.ticks end
      if e.agent == "researcher" and e.kind == "task_finished" then last_finish = e.ticks end
    end
    assert.truthy(first_start and last_finish and last_finish > first_start, text)
    -- the researchers' replies alone take 250 ms and more: that is 25 ticks
    -- of 10 ms; at least half of them came
    assert.truthy(r.elapsed_ms >= 250, text)
    assert.truthy(r.ticks_during >= math.floor(r.elapsed_ms / 20), text)
    -- the example polled from its own timer, and no poll held the loop up
    assert.truthy(r.polls > 0, text)
    assert.truthy(r.max_gap_ms <= 50, string.format("a gap of %.1f ms between ticks (the longest poll took " ..
      "%.1f ms): %s", r.max_gap_ms, r.max_poll_ms, text))
  end)
end)
