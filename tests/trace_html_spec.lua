-- `luagent trace --html` for a 1 + 3 + 9 task tree, checked in headless
-- Chromium: a screenshot is taken, the page's SVG has 13 task rows with the
-- statuses of the records, and the page makes no network request (its
-- Content-Security-Policy forbids every fetch, it holds no http(s) URL, and
-- Chromium's net log shows no request from the page; a control page that
-- does load an image proves that last check can fail).
local C = require "support.cli_helpers"
local luagent = require "luagent"

-- A supervisor asks three teams; each team runs `work` on three numbers in
-- the background. work 2 fails once and then succeeds (a retry), work 5
-- fails twice (failed), work 9 takes too long (timed_out).
local CONFIG = [[
local luagent = require "luagent"
local team = luagent.delegate{ agent = "team", name = "team", background = { enabled = true } }
local work = luagent.tool{ name = "work", background = { enabled = true, timeout_s = 1, retries = 1 },
  input_schema = { type = "object", properties = { n = { type = "integer" } }, required = { "n" } },
  handler = function(args, ctx)
    if args.n == 5 or (args.n == 2 and ctx.attempt == 1) then error("work " .. args.n .. " broke") end
    if args.n == 9 then ctx:sleep(30) end
    return args.n * 10
  end }
local function fan(tool, args_of)
  return require("support.fan_model")(luagent, function(prompt)
    local calls = {}
    for i = 1, 3 do calls[i] = { name = tool, arguments = args_of(i, prompt) } end
    return calls
  end, function(step)
    return ({ fan = { prompt_tokens = 120, completion_tokens = 30 }, wait = { prompt_tokens = 60,
      completion_tokens = 10 }, answer = { prompt_tokens = 200, completion_tokens = 20 } })[step]
  end, "all done")
end
return luagent.config{
  background_tasks = { enabled = true, retry_backoff_s = 0.05 },
  pricing = { planner = { input_per_mtok = 3, output_per_mtok = 15 } },
  agents = {
    luagent.agent{ id = "supervisor", tools = { team },
      model = luagent.function_model(fan("team", function(i) return { prompt = "group " .. i } end), "planner") },
    luagent.agent{ id = "team", tools = { work },
      model = luagent.function_model(fan("work", function(i, prompt)
        return { n = (tonumber(prompt:match("%d+")) - 1) * 3 + i } end), "planner") },
  },
}]]

local CHROMIUM_FLAGS = "--headless --no-sandbox --disable-gpu --disable-quic --no-first-run " ..
  "--disable-background-networking --disable-component-update --disable-sync"

-- Run headless Chromium on a file with a fresh profile; returns stdout.
local function chromium(dir, args, page)
  local profile = dir .. "/profile_" .. tostring(math.random(1e9))
  local p = io.popen(string.format("env -u LD_PRELOAD chromium %s --user-data-dir=%s %s file://%s " ..
    "2>/dev/null", CHROMIUM_FLAGS, C.quote(profile), args, C.quote(page)))
  local out = p:read("*a")
  p:close()
  os.execute("rm -rf " .. C.quote(profile))
  return out
end

-- Requests the page itself made, as Chromium's net log records them: the
-- browser's own background requests have no page origin, a file:// page's
-- requests carry its network isolation key.
local function page_requests(netlog)
  local n = 0
  for _ in netlog:gmatch('"network_isolation_key":"file://') do n = n + 1 end
  return n
end

describe("luagent trace --html in headless Chromium", function()
  local dir, db, root_id, app
  setup(function()
    dir = C.tmpdir()
    db = dir .. "/tree.db"
    app = luagent.load_string(CONFIG, "=trace_cfg", { store = db })
    root_id = app:enqueue_background("supervisor", "Plan the work.").task_id
    local w = app:wait({ root_id }, { timeout_s = 30 })
    assert(w.done, "the tree did not finish")
    assert(app:run_until_idle{ timeout_s = 30 }.idle)
  end)
  teardown(function()
    if app then app:close() end
    C.cleanup(dir)
  end)

  it("draws 13 task rows with the records' statuses, in a page that fetches nothing", function()
    -- the tree as the records have it
    local want, n = {}, 0
    for _, rec in ipairs(app:list()) do
      want[rec.task_id] = rec.status
      n = n + 1
    end
    assert.equal(13, n)
    local root = app:tree(root_id)
    assert.equal(3, #root.children)
    for _, c in ipairs(root.children) do assert.equal(3, #c.children) end
    local counts = {}
    for _, s in pairs(want) do counts[s] = (counts[s] or 0) + 1 end
    assert.same({ completed = 11, failed = 1, timed_out = 1 }, counts)

    local page = dir .. "/trace.html"
    local r = C.luagent("trace " .. db .. " --root " .. root_id .. " --html " .. page)
    assert.equal(0, r.code, r.err)
    local html = C.read_file(page)
    -- the host API returns the same page
    assert.equal(html, app:trace_html(root_id, { title = "luagent trace of " .. db }))
    assert.matches("Content-Security-Policy\" content=\"default-src 'none'", html, 1, true)
    assert.is_nil(html:find("https?://"), "the page holds a URL")

    -- what Chromium makes of it: the DOM after load, and the net log
    local netlog = dir .. "/net.json"
    local dom = chromium(dir, "--log-net-log=" .. C.quote(netlog) .. " --dump-dom", page)
    local rows = {}
    for attrs in dom:gmatch('<g class="task"([^>]*)>') do
      rows[#rows + 1] = { id = attrs:match('data%-task%-id="([^"]+)"'),
        status = attrs:match('data%-status="([^"]+)"'), depth = tonumber(attrs:match('data%-depth="(%d+)"')) }
    end
    assert.equal(13, #rows, dom:sub(1, 2000))
    local depths = {}
    for _, row in ipairs(rows) do
      assert.equal(want[row.id], row.status, row.id)
      depths[row.depth] = (depths[row.depth] or 0) + 1
    end
    assert.same({ [0] = 1, [1] = 3, [2] = 9 }, depths)
    assert.equal(root_id, rows[1].id) -- parents before their children
    -- hover text: agent, tool, tokens and cost
    assert.matches("<title>agent tsk_[%w_]+\nagent: supervisor\nstatus: completed", dom)
    assert.matches("tool: work\nstatus: failed after 2 attempts", dom, 1, true)
    assert.matches("cost: $", dom, 1, true)
    assert.matches('class="retry"', dom, 1, true)
    assert.matches('class="wait"', dom, 1, true)
    local log = C.read_file(netlog)
    assert.matches('"events"', log, 1, true)
    assert.equal(0, page_requests(log))

    -- the control: a page that loads an image is caught by the same check
    local control = C.write(dir .. "/control.html",
      '<html><body><img src="http://127.0.0.1:9/probe.png"></body></html>')
    local control_log = dir .. "/control.json"
    chromium(dir, "--log-net-log=" .. C.quote(control_log) .. " --dump-dom", control)
    assert.is_true(page_requests(C.read_file(control_log)) > 0)

    -- the picture itself
    local shot = dir .. "/trace.png"
    chromium(dir, "--window-size=1220,560 --screenshot=" .. C.quote(shot), page)
    local png = C.read_file(shot)
    assert.equal("\137PNG\r\n\26\n", png:sub(1, 8))
    assert.is_true(#png > 10000)
    if os.getenv("LUAGENT_KEEP_TRACE") then os.execute("cp " .. C.quote(shot) .. " " .. os.getenv("LUAGENT_KEEP_TRACE")) end
  end)

  it("--svg writes the SVG alone, with its namespace", function()
    local svg = dir .. "/trace.svg"
    assert.equal(0, C.luagent("trace " .. db .. " --svg " .. svg).code)
    local text = C.read_file(svg)
    assert.matches('^<svg xmlns="http://www.w3.org/2000/svg"', text)
    local n = 0
    for _ in text:gmatch('<g class="task"') do n = n + 1 end
    assert.equal(13, n)
  end)
end)
