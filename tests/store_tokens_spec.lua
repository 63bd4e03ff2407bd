-- Token events in a file store (README): consecutive tokens of one run are
-- stored coalesced; their joined text is exactly what was streamed.
local closing = require "support.closing"
local H = require "support.dispatch_helpers"
local luagent = H.luagent

for _, engine in ipairs(H.store_engines) do
describe("store (" .. engine .. "): token events", function()
  local db
  H.each_store(function(_, path) db = path end, engine)
  local function store() return engine == "postgresql" and { url = db } or { path = db } end

  it("are read back from the file as the same text, in seq order, never more events", function()
    local cfg = [[
local stream = luagent.tool{ name = "stream", handler = function(args, ctx)
  for i = 1, args.n do ctx:emit("token", { text = "t" .. i .. (i % 7 == 0 and "\"\\\n" or " ") }) end
  return "ok"
end }
return luagent.config{ background_tasks = { enabled = true }, event_buffer = 16, tools = { stream } } ]]
    local want, emitted
    do
      local app = closing(H.app(cfg, { store = store() }))
      local r = app:enqueue_tool("stream", { n = 300 })
      app:wait({ r.task_id }, { timeout_s = 10 })
      emitted = 300
      local parts = {}
      for i = 1, 300 do parts[i] = "t" .. i .. (i % 7 == 0 and "\"\\\n" or " ") end
      want = table.concat(parts)
      app:close()
    end
    local app = closing(H.app(cfg, { store = store() }))
    local tokens, last = {}, 0
    for _, ev in ipairs(H.all_events(app)) do
      assert.is_true(ev.seq > last)
      last = ev.seq
      if ev.kind == "token" then tokens[#tokens + 1] = ev.payload.text end
    end
    assert.is_true(#tokens >= 1 and #tokens <= emitted)
    assert.equal(want, table.concat(tokens))
  end)
end)
end
