-- Counts and seconds are checked wherever they are taken: negative retries,
-- a zero or negative limit, event_buffer = 0, max_tool_output_bytes = 0, and
-- NaN, negative or infinite timeouts are refused with an error that names
-- the function (or config field) and the option. app:wait takes a list of
-- ids, and bad metadata is reported by the function that was called.
local R = require "support.runtime_helpers"
local luagent = R.luagent

local NAN, INF = 0 / 0, math.huge

local function refused(f, ...)
  local ok, err = pcall(f, ...)
  assert.is_false(ok, "expected a refusal")
  return type(err) == "table" and tostring(err.message) or tostring(err)
end

-- Each case: { function, text the error must contain, more text... }
local function check_cases(cases)
  for i, c in ipairs(cases) do
    local msg = refused(c[1])
    for j = 2, #c do
      assert.matches(c[j], msg, 1, true, string.format("case %d: %s", i, msg))
    end
  end
end

local function load_cfg(body)
  return luagent.load_string("local luagent = require 'luagent'\n" .. body, "=limits_cfg")
end

local function cfg_with(field_src)
  return function()
    return load_cfg("return luagent.config{ " .. field_src .. " }")
  end
end

describe("counts and seconds are checked", function()
  it("in the config, the tools, the agents and the models", function()
    check_cases({
      { cfg_with("event_buffer = 0"), "event_buffer", ">= 1" },
      { cfg_with("event_buffer = -5"), "event_buffer" },
      { cfg_with("max_tool_output_bytes = 0"), "max_tool_output_bytes", ">= 1" },
      { cfg_with("max_tool_output_bytes = -1"), "max_tool_output_bytes" },
      { cfg_with("close_grace_s = 0/0"), "close_grace_s" },
      { cfg_with("background_tasks = { default_retries = -1 }"), "default_retries" },
      { cfg_with("background_tasks = { default_timeout_s = 0/0 }"), "default_timeout_s" },
      { cfg_with("background_tasks = { default_timeout_s = math.huge }"), "default_timeout_s" },
      { cfg_with("background_tasks = { default_timeout_s = -1 }"), "default_timeout_s" },
      { cfg_with("background_tasks = { default_wait_timeout_s = math.huge }"), "default_wait_timeout_s" },
      { cfg_with("background_tasks = { worker_idle_s = 0/0 }"), "worker_idle_s" },
      { cfg_with("background_tasks = { retry_backoff_s = 0/0 }"), "retry_backoff_s" },
      { cfg_with("background_tasks = { keep_finished_s = math.huge }"), "keep_finished_s" },
      { cfg_with("background_tasks = { max_queue = 0 }"), "max_queue" },
      { cfg_with("background_tasks = { max_workers = -1 }"), "max_workers" },
      { cfg_with("store = { path = '/tmp/x.db', retention = { completed_s = math.huge } }"), "completed_s" },
      { function() luagent.tool{ name = "t", handler = print, background = { retries = -1 } } end,
        "luagent.tool", "retries" },
      { function() luagent.tool{ name = "t", handler = print, background = { timeout_s = NAN } } end,
        "luagent.tool", "timeout_s" },
      { function() luagent.agent{ id = "a", budget = { max_iterations = 0 } } end,
        "luagent.agent", "max_iterations" },
      { function() luagent.agent{ id = "a", budget = { max_tokens = -1 } } end, "max_tokens" },
      { function() luagent.agent{ id = "a", budget = { max_wall_seconds = INF } } end, "max_wall_seconds" },
      { function() luagent.agent{ id = "a", max_depth = -1 } end, "max_depth" },
      { function() luagent.openai{ max_retries = -1 } end, "luagent.openai", "max_retries" },
      { function() luagent.openai{ timeout_s = NAN } end, "luagent.openai", "timeout_s" },
      { function() luagent.openai{ timeout_s = INF } end, "luagent.openai", "timeout_s" },
      { function() luagent.openai{ timeout_s = -1 } end, "luagent.openai", "timeout_s" },
      { function() luagent.openai{ connect_timeout_s = INF } end, "connect_timeout_s" },
      { function() luagent.openai{ retry_backoff_s = NAN } end, "retry_backoff_s" },
      { function() luagent.openai{ max_response_bytes = 0 } end, "max_response_bytes" },
      { function() luagent.openai{ idle_timeout_s = 0 } end, "idle_timeout_s" },
      { function() luagent.openai{ call_timeout_s = -1 } end, "call_timeout_s" },
      { function() luagent.static_model{ responses = { { text = "x", delay_s = NAN } } } end, "delay_s" },
    })
  end)

  describe("at the app and in ctx", function()
    local app
    before_each(function()
      app = R.app([[
        local echo = luagent.tool{ name = "echo", handler = function(args) return args end }
        local probe = luagent.tool{ name = "probe", handler = function(args, ctx)
          local out = {}
          local function try(name, f)
            local ok, err = pcall(f)
            out[name] = ok and "accepted" or tostring(type(err) == "table" and err.message or err)
          end
          try("sleep_nan", function() ctx:sleep(0 / 0) end)
          try("sleep_negative", function() ctx:sleep(-1) end)
          try("sleep_inf", function() ctx:sleep(math.huge) end)
          try("wait_string", function() ctx:wait(ctx.task_id) end)
          try("enqueue_retries", function() ctx:enqueue_tool("echo", {}, { retries = -1 }) end)
          try("enqueue_metadata", function() ctx:enqueue_tool("echo", {}, { metadata = { f = print } }) end)
          try("http_timeout", function() ctx:http{ url = "http://127.0.0.1:9/", timeout_s = 0 / 0 } end)
          try("http_max_bytes", function() ctx:http{ url = "http://127.0.0.1:9/", max_bytes = 0 } end)
          return out
        end }
        return luagent.config{
          model = luagent.static_model{ responses = { "ok" } },
          background_tasks = { enabled = true },
          agents = { luagent.agent{ id = "a" } },
          tools = { echo, probe },
        } ]])
    end)
    after_each(function() app:close() end)

    it("refuse bad counts and seconds, naming the function", function()
      local r = app:enqueue_tool("echo", {})
      check_cases({
        { function() app:enqueue_tool("echo", {}, { retries = -1 }) end, "app:enqueue_tool", "retries" },
        { function() app:enqueue_tool("echo", {}, { timeout_s = NAN }) end, "app:enqueue_tool", "timeout_s" },
        { function() app:enqueue_tool("echo", {}, { timeout_s = INF }) end, "app:enqueue_tool", "timeout_s" },
        { function() app:enqueue_tool("echo", {}, { timeout_ms = INF }) end, "app:enqueue_tool", "timeout_ms" },
        { function() app:enqueue_background("a", "p", { retries = -2 }) end, "app:enqueue_background", "retries" },
        { function() app:list{ limit = 0 } end, "app:list", "limit" },
        { function() app:list{ limit = -1 } end, "app:list", "limit" },
        { function() app:events{ limit = 0 } end, "app:events", "limit" },
        { function() app:events{ since = -1 } end, "app:events", "since" },
        { function() app:wait({ r.task_id }, { timeout_s = NAN }) end, "app:wait", "timeout_s" },
        { function() app:wait({ r.task_id }, { timeout_s = -1 }) end, "app:wait", "timeout_s" },
        { function() app:wait({ r.task_id }, { timeout_s = INF }) end, "app:wait", "timeout_s" },
        { function() app:run("a", "x", { timeout_s = NAN }) end, "app:run", "timeout_s" },
        { function() app:run("a", "x", { timeout_s = INF }) end, "app:run", "timeout_s" },
        { function() app:chat("a", "x", { thread_id = "t", timeout_ms = NAN }) end, "app:chat", "timeout_ms" },
        { function() app:run_until_idle{ timeout_s = NAN } end, "app:run_until_idle", "timeout_s" },
        { function() app:poll{ budget_ms = NAN } end, "app:poll", "budget_ms" },
        { function() app:poll{ max_callbacks = 0 } end, "app:poll", "max_callbacks" },
        { function() app:close{ grace_s = NAN } end, "app:close", "grace_s" },
      })
      assert.is_true(app:wait({ r.task_id }, { timeout_s = 10 }).done)
    end)

    it("app:wait with a string instead of a list is an argument-type error", function()
      local r = app:enqueue_tool("echo", {})
      local msg = refused(function() app:wait(r.task_id, { timeout_s = 5 }) end)
      assert.matches('app:wait: argument "task_ids" must be a list of task ids, got string', msg, 1, true)
      assert.matches("^[^:]*input_limits_spec%.lua:%d+:", msg)
      msg = refused(function() app:wait("str") end)
      assert.matches("must be a list of task ids", msg, 1, true)
    end)

    it("bad metadata is reported by the function that was called", function()
      local cyclic = {}
      cyclic.self = cyclic
      for _, md in ipairs({ { f = print }, cyclic, { n = NAN } }) do
        local msg = refused(function() app:enqueue_tool("echo", {}, { metadata = md }) end)
        assert.matches('^[^:]*input_limits_spec%.lua:%d+: app:enqueue_tool: option "metadata" is not JSON data', msg)
        msg = refused(function() app:enqueue_background("a", "p", { metadata = md }) end)
        assert.matches('^[^:]*input_limits_spec%.lua:%d+: app:enqueue_background: option "metadata"', msg)
      end
    end)

    it("ctx functions refuse them too", function()
      local rec = app:enqueue_tool("probe", {})
      local w = app:wait({ rec.task_id }, { timeout_s = 10 })
      local out = w.tasks[1].result
      assert.matches('ctx:sleep: argument "seconds" must be a non-negative number', out.sleep_nan, 1, true)
      assert.matches("ctx:sleep", out.sleep_negative, 1, true)
      assert.matches("ctx:sleep", out.sleep_inf, 1, true)
      assert.matches('ctx:wait: argument "task_ids" must be a list', out.wait_string, 1, true)
      assert.matches('ctx:enqueue_tool: option "retries"', out.enqueue_retries, 1, true)
      assert.matches('ctx:enqueue_tool: option "metadata" is not JSON data', out.enqueue_metadata, 1, true)
      assert.matches('ctx:http: option "timeout_s"', out.http_timeout, 1, true)
      assert.matches('ctx:http: option "max_bytes"', out.http_max_bytes, 1, true)
      -- nothing was enqueued by the refused calls
      assert.equal(1, #app:list{})
    end)
  end)
end)
