-- Results the parent can page (README, "Big results"): a child's full
-- result is kept; what reaches the parent's context is bounded by
-- max_result_bytes with a note saying how much was cut and how to read on,
-- and bg_check{ task_id, offset, limit } returns the whole text exactly.
local closing = require "support.closing"
local luagent = require "luagent"
local json = luagent.json
local fake = require "support.fake_openai_client"
local H = require "support.fake_openai_app"

-- 1 MB of text with multi-byte characters, so pages must not split one;
-- the same source makes it in the host and in the config script
local BIG_SRC = [[
  local parts, i, size = {}, 0, 0
  while size < 1024 * 1024 do
    i = i + 1
    local line = string.format("line %06d: façade – ünïcödé ✓\n", i)
    parts[#parts + 1] = line
    size = size + #line
  end
  return table.concat(parts)]]
local big_text = assert(load(BIG_SRC, "=big_text"))

local MAX = 4096

describe("paging a big child result", function()
  it("the parent sees <= max_result_bytes and a note; bg_check pages return the whole text", function()
    local seen = {}
    _G.__paging_seen = seen
    local app = closing(luagent.load_string(string.format([[
local luagent = require "luagent"
local json = luagent.json
local seen = _G.__paging_seen or {}
local function big_text() %s end
local function last_result(req)
  local m = req.messages[#req.messages]
  if m.role == "tool" then return json.decode(m.content) end
end
return luagent.config{
  max_result_bytes = %d,
  max_tool_output_bytes = 65536,
  background_tasks = { enabled = true },
  model = luagent.function_model(function(req)
    local r = last_result(req)
    if not seen.id then
      if not r then return { tool_calls = { { id = "c1", name = "big", arguments = {} } } } end
      seen.id = r.value.task_id
      return { tool_calls = { { id = "c2", name = "bg_wait", arguments = { task_ids = { seen.id } } } } }
    end
    if not seen.first then
      seen.first = r.value.tasks[1].result
      seen.pages = {}
      return { tool_calls = { { id = "p0", name = "bg_check",
        arguments = { task_id = seen.id, offset = 0 } } } }
    end
    seen.pages[#seen.pages + 1] = r.value
    if r.value.next_offset then
      return { tool_calls = { { id = "p" .. #seen.pages, name = "bg_check",
        arguments = { task_id = seen.id, offset = r.value.next_offset } } } }
    end
    return "read it all"
  end),
  agents = { luagent.agent{ id = "sup", instructions = "x", tools = { "big" },
    budget = { max_iterations = 1000 } } },
  tools = { luagent.tool{ name = "big", input_schema = { type = "object" },
    background = { enabled = true }, handler = function() return big_text() end } },
} ]], BIG_SRC, MAX), "=paging_cfg"))
    _G.__paging_seen = nil
    local res = app:run("sup", "go")
    assert.equal("completed", res.status)
    local full = big_text()
    -- what reached the parent's context: one page and the note
    local first = seen.first
    local head, note = first:match("^(.-)\n(%[luagent: result cut:.*%])$")
    assert.truthy(head, first:sub(-300))
    assert.is_true(#head <= MAX)
    assert.equal(full:sub(1, #head), head)
    assert.matches(string.format("of %d;", #full), note, 1, true)
    assert.matches("bg_check", note, 1, true)
    -- the pages, joined, are the whole text, byte for byte
    local texts = {}
    for i, p in ipairs(seen.pages) do
      assert.is_true(#p.text <= MAX)
      assert.equal(#full, p.total_bytes)
      if i < #seen.pages then assert.equal(p.offset + #p.text, p.next_offset) end
      texts[i] = p.text
    end
    assert.is_nil(seen.pages[#seen.pages].next_offset)
    assert.equal(#full, #table.concat(texts))
    assert.is_true(table.concat(texts) == full)
    -- no model request carried more of it than one page
    for _, m in ipairs(res.messages) do
      assert.is_true(#(m.content or "") <= MAX + 1024)
    end
  end)
end)

describe("paging through luagent.openai", function()
  local srv
  setup(function() srv = fake.start() end)
  teardown(function() srv:stop() end)
  before_each(function() srv:reset() end)

  it("a child run's 1 MB answer reaches the parent cut to max_result_bytes with a note", function()
    local S = { full = big_text() }
    local app = closing(H.app(srv, {}, string.format([[
      return luagent.config{
        model = MODEL,
        max_result_bytes = %d,
        background_tasks = { enabled = true },
        agents = {
          luagent.agent{ id = "sup", instructions = "x", tools = {
            luagent.delegate{ agent = "child", name = "research", background = { enabled = true } },
            -- waits (in the core) for the children, so the next model call
            -- is sure to carry the notice
            luagent.tool{ name = "settle", input_schema = { type = "object" },
              handler = function(_, ctx)
                local ids = {}
                for _, r in ipairs(S.app:list{}) do ids[#ids + 1] = r.task_id end
                ctx:wait(ids, { timeout_s = 20 })
                return "settled"
              end } } },
          luagent.agent{ id = "child", instructions = "y",
            model = luagent.static_model{ responses = { S.full or "" } } },
        },
      } ]], MAX), S))
    S.app = app
    srv:script{
      { tool_calls = { { id = "c1", name = "research", arguments = { prompt = "go" } },
        { id = "c2", name = "settle", arguments = {} } } },
      { text = "noted" },
    }
    local res = app:run("sup", "go")
    assert.equal("completed", res.status)
    local child = app:list{ agent_id = "child" }[1]
    assert.is_true(app:get(child.task_id).result.final == S.full) -- kept whole
    local reqs = srv:requests()
    assert.equal(2, #reqs)
    local notice
    for _, m in ipairs(reqs[2].json.messages) do
      if type(m.content) == "string" and m.content:find("[luagent] background results:", 1, true) then
        notice = m.content
      end
    end
    assert.truthy(notice, "no notice in the second request")
    assert.is_true(#notice <= MAX + 512, "notice of " .. #notice .. " bytes")
    assert.matches("result cut: showing bytes 0%-%d+ of " .. #S.full, notice)
    assert.matches("bg_check{task_id = \"" .. child.task_id .. "\", offset = %d+}", notice)
  end)
end)
