-- A task's event digests (what bg_check shows and wait progress reports):
-- the ring keeps the last 16, oldest first, whether a task said little or
-- a lot, and it grows as a task's events come.
local luagent = require("luagent")

local CONFIG = [[
local luagent = require "luagent"
return luagent.config{
  background_tasks = { enabled = true, global_concurrency = 1, max_workers = 1, max_depth = 0 },
  tools = {
    luagent.tool{ name = "talk", handler = function(args, ctx)
      for i = 1, args.n do ctx:emit("step", { summary = "step " .. i }) end
      return args.n
    end },
  },
}]]

local function digests(app, id, n)
  return app._core:digests(id, n)
end

describe("task digests", function()
  local app
  before_each(function() app = luagent.load_string(CONFIG) end)
  after_each(function() app:close() end)

  local function run(n)
    local id = app:enqueue_tool("talk", { n = n }).task_id
    app:wait({ id })
    return id
  end

  it("keeps every digest of a task with few events, in order", function()
    local id = run(2)
    local d = digests(app, id, 16)
    local kinds = {}
    for i, e in ipairs(d) do kinds[i] = e.kind end
    assert.same({ "task_enqueued", "task_started", "step", "step", "task_finished" }, kinds)
    assert.equal("step 2", d[4].summary)
    assert.equal(2, #digests(app, id, 2))
    assert.equal("task_finished", digests(app, id, 1)[1].kind)
  end)

  it("keeps the last 16 of a task with many, oldest first", function()
    local id = run(40)
    local d = digests(app, id, 100)
    assert.equal(16, #d)
    assert.equal("task_finished", d[16].kind)
    -- 40 steps, then the finish: the ring starts at step 26
    assert.equal("step 26", d[1].summary)
    assert.equal("step 40", d[15].summary)
    for i = 2, 16 do assert.is_true(d[i].seq > d[i - 1].seq) end
  end)

  it("fills across its growth steps without losing one", function()
    for _, n in ipairs({ 1, 3, 6, 11, 13, 14 }) do
      local id = run(n)
      local d = digests(app, id, 100)
      assert.equal(math.min(n + 3, 16), #d)
      assert.equal("task_finished", d[#d].kind)
      assert.equal("step " .. n, d[#d - 1].summary)
    end
  end)
end)
