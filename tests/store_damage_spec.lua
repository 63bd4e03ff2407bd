-- File store, damage: a damaged store is refused at luagent.load, never
-- half-read. The load checks the whole file (PRAGMA quick_check, then every
-- record, event and conversation must be JSON of its kind) and names the
-- path and the task id, event seq or conversation; the refused file is left
-- as it was. A read that fails after the load is reported through
-- app:on("error") and luagent.set_log, and never passes for "nothing there".
local H = require "support.dispatch_helpers"
local S = require "support.store_helpers"
local luagent = require "luagent"

local TASKS = 320

local function body(db, ring)
  return string.format([[
return luagent.config{
  background_tasks = { enabled = true, max_queue = 100000 },
  event_buffer = %d,
  store = { path = %q },
  tools = { T.echo },
  agents = { luagent.agent{ id = "a", model = luagent.static_model{ responses = { "hello" } } } },
} ]], ring or 10000, db)
end

local function read_all(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

local function write_at(path, offset, bytes)
  local f = assert(io.open(path, "r+b"))
  f:seek("set", offset)
  f:write(bytes)
  f:close()
end

-- A closed store holding TASKS finished tasks (and their events); their ids.
local function build(db)
  local app = H.app(body(db))
  local ids = {}
  for i = 1, TASKS do
    ids[i] = app:enqueue_tool("echo", { i = i, pad = string.rep("p", 200) }).task_id
  end
  assert.is_true(app:wait(ids, { timeout_s = 60 }).done)
  app:close()
  assert.is_false(S.exists(db .. "-wal"), "the close should have checkpointed the WAL")
  return ids
end

-- luagent.load's error for the store; asserts it names the path.
local function refused(db)
  local ok, err = pcall(H.app, body(db))
  if ok then err:close() end
  assert.is_false(ok, "the damaged store was loaded")
  local msg = H.errmsg(err)
  assert.is_truthy(msg:find(db, 1, true), msg)
  return msg
end

describe("store: a damaged file is refused at load", function()
  local dir, db
  H.each_store(function(d, path) dir, db = d, path end)

  it("4 KB of garbage in the middle of a store with 320 tasks", function()
    local ids = build(db)
    local good = read_all(db)
    local middle = math.floor(#good / 2) - 2048
    write_at(db, middle, string.rep("\x5a", 4096))
    local damaged = read_all(db)
    assert.matches("damaged", refused(db))
    -- the refused load wrote nothing and let go of the lock: refused again
    assert.equal(damaged, read_all(db))
    assert.matches("damaged", refused(db))
    -- with the bytes put back, every task is there
    write_at(db, middle, good:sub(middle + 1, middle + 4096))
    local app = H.app(body(db))
    assert.equal(TASKS, #app:list{ limit = 100000 })
    for _, id in ipairs(ids) do assert.equal("completed", app:get(id).status) end
    app:close()
  end)

  it("garbage anywhere past the header: refused, or every task loads intact", function()
    build(db)
    local good = read_all(db)
    for _, at in ipairs({ 0.2, 0.4, 0.6, 0.8, 0.95 }) do
      local offset = math.floor(math.floor(#good * at) / 4096) * 4096
      write_at(db, offset, string.rep("\xa5", 4096))
      local ok, app = pcall(H.app, body(db))
      if ok then
        local n = #app:list{ limit = 100000 }
        app:close()
        assert.equal(TASKS, n, "loaded a half-read store (garbage at " .. offset .. ")")
      else
        assert.is_truthy(H.errmsg(app):find(db, 1, true), H.errmsg(app))
      end
      write_at(db, offset, good:sub(offset + 1, offset + 4096))
    end
  end)

  it("a record that is not JSON names the task", function()
    if not S.have_sqlite3() then pending("needs the sqlite3 command") return end
    local ids = build(db)
    S.sql(db, string.format("UPDATE tasks SET record = '{\"task_id\": broken' WHERE task_id = '%s';",
      ids[100]))
    local msg = refused(db)
    assert.is_truthy(msg:find("task " .. ids[100], 1, true), msg)
    assert.matches("not JSON", msg)
  end)

  it("a record that is JSON but not an object names the task", function()
    if not S.have_sqlite3() then pending("needs the sqlite3 command") return end
    local ids = build(db)
    S.sql(db, string.format("UPDATE tasks SET record = '[1, 2]' WHERE task_id = '%s';", ids[7]))
    local msg = refused(db)
    assert.is_truthy(msg:find("task " .. ids[7], 1, true), msg)
    assert.matches("not a JSON object", msg)
  end)

  it("an event that is not JSON names its seq", function()
    if not S.have_sqlite3() then pending("needs the sqlite3 command") return end
    build(db)
    local seq = S.sql(db, "SELECT seq FROM events ORDER BY seq LIMIT 1 OFFSET 50;")[1]
    S.sql(db, "UPDATE events SET event = 'garbage' WHERE seq = " .. seq .. ";")
    local msg = refused(db)
    assert.is_truthy(msg:find("event " .. seq .. " is damaged", 1, true), msg)
  end)

  it("a conversation that is not JSON names it", function()
    if not S.have_sqlite3() then pending("needs the sqlite3 command") return end
    local app = H.app(body(db))
    assert.equal("completed", app:chat("a", "hi", { thread_id = "t1" }).status)
    app:close()
    S.sql(db, "UPDATE threads SET messages = substr(messages, 1, 20);")
    local msg = refused(db)
    assert.matches('conversation %["a","t1"%] is damaged', msg)
  end)
end)

describe("store: a read that fails after load", function()
  local dir, db
  H.each_store(function(d, path) dir, db = d, path end)

  it("reaches app:on('error') and set_log, and old events come back as a gap", function()
    build(db)
    local logs = {}
    luagent.set_log(function(level, msg) logs[#logs + 1] = level .. ": " .. msg end)
    local app = H.app(body(db, 16)) -- a small ring: old events come from the file
    local errors = {}
    app:on("error", function(e) errors[#errors + 1] = e.message end)
    -- new events in the ring, so what is older comes from the file
    local t = app:enqueue_tool("echo", { after = true })
    assert.is_true(app:wait({ t.task_id }).done)
    -- damage the file under the open app: the event pages it has not read
    local size = #read_all(db)
    local from = math.floor(size / 4 / 4096) * 4096
    write_at(db, from, string.rep("\x5a", math.floor(size / 2 / 4096) * 4096))
    local page = app:events{ since = 0, limit = 100000 }
    assert.equal("gap", page[1].kind, "a half-read page of old events was returned")
    local deadline = H.now() + 10
    while #errors == 0 and H.now() < deadline do app:poll{ wait_ms = 20 } end
    assert.equal(1, #errors)
    assert.is_truthy(errors[1]:find(db, 1, true), errors[1])
    assert.matches("a read failed %(old events%)", errors[1])
    assert.same({ "error: " .. errors[1] }, logs)
    local info = app:store_info()
    assert.equal(1, info.read_failures)
    assert.equal(errors[1], info.error)
    app:close()
  end)
end)
