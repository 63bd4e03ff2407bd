-- Tree budgets and admission (README "Tree budgets", "Admission"), through
-- luagent.openai against the fake server: a supervisor's tree_budget
-- bounds its whole tree, the model sees budget_left in bg_list/bg_check,
-- refused spawns come back as `budget` ToolResults; hooks.admit decides on
-- the host whether each spawn starts.
local closing = require "support.closing"
local fake = require "support.fake_openai_client"
local H = require "support.fake_openai_app"
local json = H.json

local function call(name, args) return { name = name, arguments = args } end

local function usage(total)
  return { prompt_tokens = total - 5, completion_tokens = 5, total_tokens = total }
end

-- The tool results the model was sent, in the order sent (a request
-- carries the transcript so far: each result counts once).
local function tool_values(srv)
  local seen, out = {}, {}
  for _, req in ipairs(srv:requests()) do
    for _, m in ipairs(req.json.messages) do
      local key = tostring(m.tool_call_id) .. "\0" .. tostring(m.content)
      if m.role == "tool" and not seen[key] then
        seen[key] = true
        local r = json.decode_safe(m.content)
        out[#out + 1] = type(r) == "table" and r or { raw = m.content }
      end
    end
  end
  return out
end

describe("tree budgets", function()
  local srv
  setup(function() srv = fake.start() end)
  teardown(function() srv:stop() end)
  before_each(function() srv:reset() end)

  local N = 1000

  local function tree_app()
    return H.app(srv, {}, [[
      local KID = ]] .. H.model_src(srv, { model = "kid" }) .. [[
      local work = luagent.tool{ name = "work", description = "Work a bit.",
        handler = function() return "worked" end }
      local research = luagent.delegate{ agent = "kid", name = "research",
        background = { enabled = true } }
      return luagent.config{
        model = MODEL,
        background_tasks = { enabled = true, per_agent_concurrency = 1 },
        agents = {
          luagent.agent{ id = "sup", tools = { research } },
          luagent.agent{ id = "kid", model = KID, tools = { work }, budget = { max_iterations = 10 } },
        },
      } ]])
  end

  it("bounds the tree's tokens; the model sees budget_left shrink and refused spawns", function()
    local sup = {
      { tool_calls = { call("research", { prompt = "A" }) } },
      { tool_calls = { call("bg_wait", { task_ids = { "{{task_id:1}}" } }) } },
      { tool_calls = { call("bg_check", { task_id = "{{task_id:1}}" }) } },
      { tool_calls = { call("research", { prompt = "B" }), call("research", { prompt = "C" }),
        call("research", { prompt = "D" }), call("bg_list", {}) } },
      { tool_calls = { call("bg_wait", { task_ids = { "{{task_id:2}}", "{{task_id:3}}", "{{task_id:4}}" } }),
        call("research", { prompt = "E" }) } },
      { text = "summary" },
    }
    local script = {}
    for _, r in ipairs(sup) do
      r.for_model, r.usage = "m", usage(10)
      script[#script + 1] = r
    end
    -- A works once and answers; B, C and D would work ten times each:
    -- 200 + 3 * 1000 tokens, three times the budget
    local kid = { { tool_calls = { call("work", {}) } }, { text = "A done" } }
    for _ = 1, 30 do kid[#kid + 1] = { tool_calls = { call("work", {}) } } end
    for _, r in ipairs(kid) do
      r.for_model, r.usage = "kid", usage(100)
      script[#script + 1] = r
    end
    srv:script(script)
    local app = closing(tree_app())
    local res = app:run("sup", "go", { tree_budget = { max_tokens = N }, timeout_s = 30 })
    assert.equal("budget_exceeded", res.status)
    assert.equal("tree_budget.max_tokens", res.error.budget)
    local tree = app:tree(res.run_id)
    assert.is_true(tree.tree_usage.total_tokens >= N)
    assert.is_true(tree.tree_usage.total_tokens <= N + 100,
      "the tree spent " .. tree.tree_usage.total_tokens)
    -- the children: A completed, B stopped by the budget, C and D never called the model
    assert.equal(4, #tree.children)
    local statuses = {}
    for _, c in ipairs(tree.children) do statuses[#statuses + 1] = c.run_status end
    assert.same({ "completed", "budget_exceeded", "budget_exceeded", "budget_exceeded" }, statuses)
    assert.is_nil(tree.children[3].usage and tree.children[3].usage.total_tokens ~= 0 or nil)
    -- what the model saw: budget_left from bg_check, then a smaller one from bg_list
    local left = {}
    local refused
    for _, v in ipairs(tool_values(srv)) do
      if v.value and v.value.budget_left then left[#left + 1] = v.value.budget_left.tokens end
    end
    assert.is_true(#left >= 2, "budget_left was shown " .. #left .. " times: ")
    for i = 2, #left do assert.is_true(left[i] < left[i - 1], json.encode(left)) end
    -- the spawn after the budget was spent: a `budget` ToolResult
    for _, ev in ipairs(H.of_kind(H.events(app), "tool_end")) do
      if ev.payload.tool == "research" and not ev.payload.ok then refused = ev end
    end
    assert.truthy(refused, "no spawn was refused")
    assert.equal("budget", refused.payload.kind)
    assert.matches("tree_budget.max_tokens", refused.payload.error, 1, true)
    local last = res.messages[#res.messages]
    assert.equal("tool", last.role)
    assert.matches('"kind":"budget"', last.content, 1, true)
  end)

  it("refuse_spawns leaves running runs alone; max_tasks refuses the spawn past it", function()
    local sup = {
      { tool_calls = { call("research", { prompt = "A" }), call("research", { prompt = "B" }) } },
      { tool_calls = { call("bg_wait", { task_ids = { "{{task_id:1}}" } }) } },
      { text = "done" },
    }
    local script = {}
    for _, r in ipairs(sup) do
      r.for_model = "m"
      script[#script + 1] = r
    end
    script[#script + 1] = { for_model = "kid", text = "A done" }
    srv:script(script)
    local app = closing(tree_app())
    local res = app:run("sup", "go", { tree_budget = { max_tasks = 1, on_exhausted = "refuse_spawns" },
      timeout_s = 30 })
    assert.equal("completed", res.status)
    local results = tool_values(srv)
    assert.is_true(results[1].ok)
    assert.is_false(results[2].ok)
    assert.equal("budget", results[2].cause.kind)
    assert.matches("max_tasks", results[2].error)
    assert.equal(0, results[3].value.budget_left and results[3].value.budget_left.tasks or 0)
  end)

  it("checks tree_budget options", function()
    local app = closing(tree_app())
    local ok, err = pcall(app.run, app, "sup", "x", { tree_budget = { max_tokns = 3 } })
    assert.is_false(ok)
    assert.matches('did you mean "max_tokens"', tostring(err), 1, true)
    ok, err = pcall(app.run, app, "sup", "x", { tree_budget = { on_exhausted = "explode" } })
    assert.is_false(ok)
    assert.matches("on_exhausted", tostring(err))
  end)
end)

describe("admission", function()
  local srv
  setup(function() srv = fake.start() end)
  teardown(function() srv:stop() end)
  before_each(function() srv:reset() end)

  -- A supervisor `sup` that can browse in the background, and the hook
  -- (the source of a function(req), seeing the test's table S).
  local function admit_app(S, hook_src)
    return H.app(srv, {}, [[
      local BROWSER = ]] .. H.model_src(srv, { model = "browser" }) .. [[
      local browse = luagent.delegate{ agent = "browser", name = "browse", background = { enabled = true } }
      return luagent.config{
        model = MODEL,
        background_tasks = { enabled = true },
        hooks = { admit = ]] .. hook_src .. [[ },
        agents = {
          luagent.agent{ id = "sup", tools = { browse } },
          luagent.agent{ id = "browser", model = BROWSER },
        },
      } ]], S)
  end

  it("a hook rejecting a third concurrent browser agent refuses the third spawn with its reason", function()
    local script = {
      { for_model = "m", tool_calls = { call("browse", { prompt = "1" }), call("browse", { prompt = "2" }),
        call("browse", { prompt = "3" }) } },
      { for_model = "m", tool_calls = { call("bg_wait", { task_ids = { "{{task_id:1}}", "{{task_id:2}}" } }) } },
      { for_model = "m", text = "done" },
    }
    -- the browsers answer slowly, so the first two are live when the third is asked for
    for i = 1, 2 do script[#script + 1] = { for_model = "browser", text = "page " .. i, delay_ms = 300 } end
    srv:script(script)
    local S = {}
    local app = closing(admit_app(S, [[function(req)
      S.requests = S.requests or {}
      S.requests[#S.requests + 1] = req
      if req.agent_id == "browser" and (req.active.browser or 0) >= 2 then
        return "reject", "at most 2 browser agents at a time"
      end
      return "admit"
    end]]))
    -- the supervisor runs in a worker: the hook runs here, pumped by app:wait
    local rec = app:enqueue_background("sup", "browse three pages")
    local w = app:wait({ rec.task_id }, { timeout_s = 30 })
    assert.is_true(w.done)
    local sup = app:get(rec.task_id)
    assert.equal("completed", sup.run_status, tostring(sup.error and sup.error.message))
    local results = tool_values(srv)
    assert.is_true(results[1].ok)
    assert.is_true(results[2].ok)
    assert.is_false(results[3].ok)
    assert.equal("rejected", results[3].cause.kind)
    assert.matches("at most 2 browser agents at a time", results[3].error, 1, true)
    assert.equal(2, #app:tree(rec.task_id).children)
    -- what the hook was asked (README "Admission")
    assert.equal(3, #S.requests)
    local third = S.requests[3]
    assert.equal("agent", third.kind)
    assert.equal("browser", third.agent_id)
    assert.equal("browse", third.tool)
    assert.equal("3", third.prompt)
    assert.equal("sup", third.parent.agent_id)
    assert.equal(rec.task_id, third.parent.task_id)
    assert.equal(rec.task_id, third.tree.root)
    assert.equal(2, third.tree.tasks)
    assert.is_true(third.tree.usage.total_tokens > 0)
    assert.equal(2, third.active.browser)
    assert.is_number(third.stats.running)
    assert.is_table(third.rate)
  end)

  it('"queue" asks again after a pause until the hook admits', function()
    srv:script{
      { for_model = "m", tool_calls = { call("browse", { prompt = "1" }) } },
      { for_model = "m", text = "done" },
      { for_model = "browser", text = "page" },
    }
    local S = {}
    local app = closing(admit_app(S, [[function(req)
      S.asked = (S.asked or 0) + 1
      if S.asked < 3 then return "queue", "not yet" end
      return "admit"
    end]]))
    local res = app:run("sup", "browse", { timeout_s = 30 })
    assert.equal("completed", res.status)
    assert.equal(3, S.asked)
    assert.is_true(tool_values(srv)[1].ok)
    local queued = H.of_kind(H.events(app), "admit_queued")
    assert.equal(1, #queued)
    assert.equal("not yet", queued[1].payload.reason)
  end)
end)
