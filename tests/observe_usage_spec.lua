-- Usage and cost rolled up (README "Usage and cost"): a record's usage is
-- its own model calls, tree_usage adds every descendant's and is kept
-- current while they run; a price table adds cost to usage, tree_usage and
-- app:stats(); a provider that reports no usage gets an estimate, flagged,
-- so max_tokens still fires. Scripted models and luagent.openai against
-- the fake server.
local closing = require "support.closing"
local R = require "support.runtime_helpers"
local fake = require "support.fake_openai_client"
local H = require "support.fake_openai_app"
local E = require "support.events"
local core = require "luagent.core"

-- Three researchers in the background; the supervisor does not wait for
-- them, so its record is finished while they still run. Each researcher
-- makes two model calls with a pause (its `hold` tool) in between.
local TEAM = [[
local research = luagent.delegate{ agent = "researcher", name = "research", background = { enabled = true } }
local hold = luagent.tool{ name = "hold", handler = function(_, ctx) ctx:sleep(S_HOLD) return "ok" end }
local researcher = luagent.static_model{ name = "cheap", responses = {
  { tool_calls = { { name = "hold" } }, usage = { prompt_tokens = 10, completion_tokens = 2 } },
  { text = "note", usage = { prompt_tokens = 13, completion_tokens = 3,
    prompt_tokens_details = { cached_tokens = 8 } } } } }
]]

local PRICING = [[
pricing = {
  m = { input_per_mtok = 2, output_per_mtok = 10 },
  planner = { input_per_mtok = 2, output_per_mtok = 10 },
  cheap = { input_per_mtok = 1, output_per_mtok = 4, cached_input_per_mtok = 0.5 },
},]]

local function cost(p, c, cached, price)
  return ((p - cached) * price.i + cached * price.c + c * price.o) / 1e6
end
local CHEAP = { i = 1, o = 4, c = 0.5 }
local BIG = { i = 2, o = 10, c = 2 }

local function near(a, b) return math.abs(a - b) < 1e-12 end

-- The roll-up checks of a supervisor with three children (sup_usage: the
-- supervisor's own usage, as its model reported it).
local function check_rollup(app, root_id, sup_p, sup_c)
  local root = app:get(root_id)
  local kids = app:list{ parent_task_id = root_id }
  assert.equal(3, #kids)
  local sum = { prompt_tokens = root.usage.prompt_tokens, completion_tokens = root.usage.completion_tokens,
    total_tokens = root.usage.total_tokens, cached_tokens = 0, cost = root.usage.cost }
  for _, k in ipairs(kids) do
    assert.equal("completed", k.status)
    assert.same({ prompt_tokens = 23, completion_tokens = 5, total_tokens = 28, cached_tokens = 8,
      cost = k.usage.cost }, k.usage)
    assert.is_true(near(cost(10, 2, 0, CHEAP) + cost(13, 3, 8, CHEAP), k.usage.cost))
    assert.same(k.usage, k.tree_usage) -- no children of its own
    for _, f in ipairs({ "prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens" }) do
      sum[f] = sum[f] + k.usage[f]
    end
    sum.cost = sum.cost + k.usage.cost
  end
  assert.same({ prompt_tokens = sup_p, completion_tokens = sup_c, total_tokens = sup_p + sup_c,
    cost = root.usage.cost }, root.usage)
  assert.is_true(near(cost(sup_p, sup_c, 0, BIG), root.usage.cost))
  -- the supervisor's tree_usage is the sum over the tree
  assert.equal(sum.total_tokens, root.tree_usage.total_tokens)
  assert.equal(sum.prompt_tokens, root.tree_usage.prompt_tokens)
  assert.equal(sum.completion_tokens, root.tree_usage.completion_tokens)
  assert.equal(sum.cached_tokens, root.tree_usage.cached_tokens)
  assert.is_true(near(sum.cost, root.tree_usage.cost))
  -- app:stats() has every model call of the app, and its cost
  local st = app:stats()
  assert.equal(sum.total_tokens, st.usage.total_tokens)
  assert.is_true(near(sum.cost, st.cost))
  -- app:tree has the same numbers
  assert.same(root.tree_usage, app:tree(root_id).tree_usage)
end

-- While a child still runs, its parent's tree_usage already has the
-- child's first model call. Returns true once seen.
local function current_while_running(app, root_id, sup_total)
  local deadline = core.now() + 10
  while core.now() < deadline do
    local kids = app:list{ parent_task_id = root_id }
    local running = 0
    for _, k in ipairs(kids) do
      if k.status == "running" and k.usage and k.usage.total_tokens == 12 then running = running + 1 end
    end
    local root = app:get(root_id)
    if running > 0 and #kids == 3 and root.status == "completed" then
      local kid_total = 0
      for _, k in ipairs(kids) do kid_total = kid_total + (k.usage and k.usage.total_tokens or 0) end
      if root.tree_usage.total_tokens == sup_total + kid_total then return true end
    end
    app:wait({ root_id }, { timeout_s = 0.01 })
  end
  return false
end

-- The supervisor (90 prompt and 10 completion tokens of its own) and its
-- three researchers: tree_usage current while they run, and the sum at the end.
local function check_team(app)
  local root_id = app:enqueue_background("supervisor", "go").task_id
  assert.is_true(current_while_running(app, root_id, 100))
  assert.is_true(app:run_until_idle{ timeout_s = 10 }.idle)
  check_rollup(app, root_id, 90, 10)
end

describe("usage and cost, scripted models", function()
  it("a supervisor's tree_usage is the sum of its own and its 3 children's, current while they run", function()
    local app = closing(R.app(TEAM:gsub("S_HOLD", "0.4") .. [[
      return luagent.config{ ]] .. PRICING .. [[
        background_tasks = { enabled = true },
        agents = {
          luagent.agent{ id = "supervisor", tools = { research }, model = luagent.static_model{ name = "planner",
            responses = {
              { tool_calls = { { name = "research", arguments = { prompt = "a" } },
                { name = "research", arguments = { prompt = "b" } },
                { name = "research", arguments = { prompt = "c" } } }, usage = { prompt_tokens = 40, completion_tokens = 9 } },
              { text = "started", usage = { prompt_tokens = 50, completion_tokens = 1 } } } } },
          luagent.agent{ id = "researcher", tools = { hold }, model = researcher },
        },
      } ]]))
    check_team(app)
  end)

  it("a foreground run's own usage and cost are in its result and in app:tree(run_id)", function()
    local app = closing(R.app(TEAM:gsub("S_HOLD", "0") .. [[
      return luagent.config{ ]] .. PRICING .. [[
        background_tasks = { enabled = true },
        agents = {
          luagent.agent{ id = "supervisor", tools = { research }, model = luagent.static_model{ name = "planner",
            responses = { { tool_calls = { { name = "research", arguments = { prompt = "a" } } },
              usage = { prompt_tokens = 40, completion_tokens = 9 } }, { text = "ok", usage = { prompt_tokens = 1, completion_tokens = 1 } } } } },
          luagent.agent{ id = "researcher", tools = { hold }, model = researcher },
        },
      } ]]))
    local res = app:run("supervisor", "go")
    assert.is_true(app:run_until_idle{ timeout_s = 10 }.idle)
    assert.equal(51, res.usage.total_tokens)
    assert.is_true(near(cost(41, 10, 0, BIG), res.usage.cost))
    local t = app:tree(res.run_id)
    assert.equal(51 + 28, t.tree_usage.total_tokens)
    assert.is_true(near(res.usage.cost + t.children[1].usage.cost, t.tree_usage.cost))
    assert.is_true(near(t.tree_usage.cost, app:stats().cost))
  end)

  it("a model that reports no usage gets an estimate, flagged, and max_tokens fires", function()
    local app = closing(R.app([[
      local talk = luagent.tool{ name = "talk", handler = function() return string.rep("blah ", 40) end }
      return luagent.config{
        agents = { luagent.agent{ id = "a", tools = { talk }, budget = { max_tokens = 150 },
          model = luagent.static_model{ responses = {
            { tool_calls = { { name = "talk" } } }, { tool_calls = { { name = "talk" } } },
            { tool_calls = { { name = "talk" } } }, { tool_calls = { { name = "talk" } } }, "done" } } } },
      } ]]))
    local res = app:run("a", "Talk a lot.")
    assert.equal("budget_exceeded", res.status)
    assert.equal("max_tokens", res.error.budget)
    assert.is_true(res.usage.estimated)
    assert.is_true(res.usage.total_tokens >= 150)
    local calls = E.of_kind(E.all(app), "lm_call")
    assert.is_true(#calls >= 2 and #calls < 5)
    for _, c in ipairs(calls) do
      assert.is_false(c.payload.usage_reported)
      assert.is_nil(c.payload.usage)
      assert.is_true(c.payload.usage_estimated)
      assert.is_true(c.payload.estimated_usage.estimated)
    end
    -- the estimate is a token per 4 bytes: the second call sent more
    assert.is_true(calls[2].payload.estimated_usage.prompt_tokens > calls[1].payload.estimated_usage.prompt_tokens + 40)
    assert.is_true(app:stats().usage.estimated)
  end)

  it("a bad price table is refused at load, naming the model", function()
    local err = R.load_error([[
      return luagent.config{ pricing = { m = { input_per_mtok = 1 } } } ]])
    assert.matches('pricing["m"]: input_per_mtok and output_per_mtok are required', err, 1, true)
    err = R.load_error([[
      return luagent.config{ pricing = { m = { input_per_mtok = 1, output_per_mtok = -2 } } } ]])
    assert.matches('output_per_mtok', err, 1, true)
    err = R.load_error([[
      return luagent.config{ pricing = { m = { input_per_mtok = 1, output_per_mtok = 2, cached = 1 } } } ]])
    assert.matches('unknown option "cached"', err, 1, true)
  end)
end)

describe("usage and cost, luagent.openai against the fake server", function()
  local srv
  setup(function() srv = fake.start() end)
  teardown(function() srv:stop() end)
  before_each(function() srv:reset() end)

  it("rolls the supervisor's reported usage and its children's up into its tree_usage, with cost", function()
    local app = closing(H.app(srv, {}, TEAM:gsub("S_HOLD", "0.4") .. [[
      return luagent.config{ ]] .. PRICING .. [[
        model = MODEL,
        background_tasks = { enabled = true },
        agents = {
          luagent.agent{ id = "supervisor", tools = { research } },
          luagent.agent{ id = "researcher", tools = { hold }, model = researcher },
        },
      } ]]))
    srv:script{
      { tool_calls = { { id = "1", name = "research", arguments = { prompt = "a" } },
        { id = "2", name = "research", arguments = { prompt = "b" } },
        { id = "3", name = "research", arguments = { prompt = "c" } } },
        usage = { prompt_tokens = 40, completion_tokens = 9, total_tokens = 49 } },
      { text = "started", usage = { prompt_tokens = 50, completion_tokens = 1, total_tokens = 51 } },
    }
    check_team(app)
  end)

  it("prices cached prompt tokens at the cached price", function()
    local app = closing(H.app(srv, {}, [[
      return luagent.config{ model = MODEL, agents = { luagent.agent{ id = "a" } },
        pricing = { m = { input_per_mtok = 2, output_per_mtok = 10, cached_input_per_mtok = 1 } } } ]]))
    srv:script{ { text = "hi", usage = { prompt_tokens = 100, completion_tokens = 10, total_tokens = 110,
      prompt_tokens_details = { cached_tokens = 60 } } } }
    local res = app:run("a", "x")
    assert.equal(60, res.usage.cached_tokens)
    assert.is_true(near((40 * 2 + 60 * 1 + 10 * 10) / 1e6, res.usage.cost))
  end)

  it("a server that sends no usage gets an estimate, flagged in lm_call, and max_tokens fires", function()
    for _, stream in ipairs({ false, true }) do
      srv:reset()
      local app = closing(H.app(srv, { stream = stream }, [[
        local talk = luagent.tool{ name = "talk", handler = function() return string.rep("blah ", 40) end }
        return luagent.config{ model = MODEL,
          agents = { luagent.agent{ id = "a", tools = { talk }, budget = { max_tokens = 150 } } } } ]]))
      local replies = {}
      for i = 1, 4 do replies[i] = { tool_calls = { { id = "t" .. i, name = "talk", arguments = {} } }, usage = false } end
      replies[5] = { text = "done", usage = false }
      srv:script(replies)
      local res = app:run("a", "Talk a lot.")
      assert.equal("budget_exceeded", res.status)
      assert.equal("max_tokens", res.error.budget)
      assert.is_true(res.usage.estimated)
      local calls = E.of_kind(E.all(app), "lm_call")
      assert.is_true(#calls >= 2 and #calls < 5, "calls: " .. #calls)
      for _, c in ipairs(calls) do
        assert.is_false(c.payload.usage_reported)
        assert.is_true(c.payload.usage_estimated)
        assert.equal("m", c.payload.model)
      end
    end
  end)
end)
