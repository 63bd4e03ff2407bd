-- File store, acceptance: a store that cannot be opened is a clear error at
-- luagent.load naming the path (R-14), never a silent fallback to memory;
-- foreign files and newer schemas are refused; the lock file keeps a second
-- app or process out (README).
local H = require "support.dispatch_helpers"
local S = require "support.store_helpers"
local luagent = require "luagent"

-- A startup script on disk using `db` as its store.
local function script(dir, db)
  local path = dir .. "/agents.lua"
  H.write(path, string.format([[
local luagent = require "luagent"
return luagent.config{
  background_tasks = { enabled = true },
  store = { path = %q },
  tools = { luagent.tool{ name = "echo", handler = function(args) return args end } },
} ]], db))
  return path
end

local function load_error(dir, db)
  local ok, err = pcall(luagent.load, script(dir, db))
  assert.is_false(ok, "luagent.load should have failed for " .. db)
  return tostring(err)
end

-- the message names the call and the path; `what` is a pattern
local function assert_names(msg, db, what)
  assert.is_truthy(msg:find("luagent.load", 1, true), msg)
  assert.is_truthy(msg:find(db, 1, true), msg)
  assert.matches(what, msg)
end

describe("store: bad paths and foreign files (R-14)", function()
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(function() H.rmdir(dir) end)

  it("a directory that does not exist", function()
    local db = dir .. "/no/such/dir/agents.db"
    assert_names(load_error(dir, db), db, "directory .*/no/such/dir does not exist")
    assert.is_false(S.exists(dir .. "/no"))
  end)

  it("a path that is a directory, leaving nothing beside it", function()
    local db = dir .. "/adir"
    assert(os.execute("mkdir " .. S.q(db)))
    assert_names(load_error(dir, db), db, "is a directory")
    assert.is_false(S.exists(db .. ".lock"))
  end)

  it("a path below a regular file", function()
    local db = dir .. "/afile/agents.db"
    H.write(dir .. "/afile", "x")
    assert_names(load_error(dir, db), db, "Not a directory")
  end)

  it("an unwritable location", function()
    -- root writes through permission bits, so use a place nobody can write
    local db = "/proc/luagent-store-test.db"
    assert_names(load_error(dir, db), db, "cannot")
    local ro = dir .. "/ro"
    assert(os.execute("mkdir " .. S.q(ro) .. " && chmod 500 " .. S.q(ro)))
    if io.open(ro .. "/probe", "w") == nil then -- not root
      local db2 = ro .. "/agents.db"
      assert_names(load_error(dir, db2), db2, "Permission denied")
    end
    os.remove(ro .. "/probe")
  end)

  it("a text file is refused and left as it was", function()
    local db = dir .. "/notes.txt"
    local text = string.rep("just some notes, not a database\n", 200)
    H.write(db, text)
    assert_names(load_error(dir, db), db, "not a luagent store")
    assert.equal(text, S.read(db))
    assert.is_false(S.exists(db .. ".lock"))
    assert.is_false(S.exists(db .. "-wal"))
  end)

  it("a SQLite database of another program is refused and left as it was", function()
    if not S.have_sqlite3() then pending("needs the sqlite3 command") return end
    local db = dir .. "/other.db"
    S.sql(db, "CREATE TABLE customers(id INTEGER PRIMARY KEY, name TEXT); INSERT INTO customers(name) VALUES('ana');")
    local f = io.open(db, "rb")
    local bytes = f:read("*a")
    f:close()
    assert_names(load_error(dir, db), db, "not a luagent store")
    f = io.open(db, "rb")
    assert.equal(bytes, f:read("*a"))
    f:close()
    assert.same({ "customers" }, S.sql(db, "SELECT name FROM sqlite_master;"))
  end)

  it("a store written by a newer schema version is refused", function()
    if not S.have_sqlite3() then pending("needs the sqlite3 command") return end
    local db = dir .. "/agents.db"
    local app = luagent.load(script(dir, db))
    local t = app:enqueue_tool("echo", { x = 1 })
    app:wait({ t.task_id })
    app:close()
    assert.same({ "1" }, S.sql(db, "SELECT value FROM luagent_meta WHERE key = 'schema_version';"))
    S.sql(db, "UPDATE luagent_meta SET value = '999' WHERE key = 'schema_version';")
    local msg = load_error(dir, db)
    assert_names(msg, db, "newer")
    assert.matches("999", msg)
    -- and it was not rewritten
    assert.same({ "999" }, S.sql(db, "SELECT value FROM luagent_meta WHERE key = 'schema_version';"))
    -- the lock was released: back at version 1 it opens again
    S.sql(db, "UPDATE luagent_meta SET value = '1' WHERE key = 'schema_version';")
    local again = luagent.load(script(dir, db))
    assert.equal("completed", again:get(t.task_id).status)
    again:close()
  end)
end)

describe("store: one app per store (lock file)", function()
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(function() H.rmdir(dir) end)

  it("a second app in the same process is refused until the first closes", function()
    local db = dir .. "/agents.db"
    local path = script(dir, db)
    local first = luagent.load(path)
    local msg = load_error(dir, db)
    assert_names(msg, db, "already open")
    -- the failed open changed nothing for the first app
    local t = first:enqueue_tool("echo", { n = 1 })
    assert.is_true(first:wait({ t.task_id }).done)
    first:close()
    local second = luagent.load(path)
    assert.equal("completed", second:get(t.task_id).status)
    second:close()
  end)

  it("a second process is refused while an app holds the store", function()
    local db = dir .. "/agents.db"
    local path = script(dir, db)
    local first = luagent.load(path)
    local child = S.spawn(dir, string.format([[
local luagent = require "luagent"
local ok, err = pcall(luagent.load, %q)
print(ok and "opened" or ("error: " .. tostring(err)))
]], path))
    local out = S.finish(child)
    assert.equal(1, #out, S.read(child.err_path))
    assert_names(out[1], db, "already open")
    first:close()
    -- once released, another process opens it
    local child2 = S.spawn(dir, string.format([[
local luagent = require "luagent"
local app = luagent.load(%q)
print("opened")
app:close()
]], path))
    assert.same({ "opened" }, S.finish(child2))
  end)

  it("an app that could not open its store raises instead of running on memory", function()
    local db = dir .. "/adir"
    assert(os.execute("mkdir " .. S.q(db)))
    local ok, err = pcall(H.app, string.format([[
      return luagent.config{ background_tasks = { enabled = true }, store = { path = %q } } ]], db))
    assert.is_false(ok)
    assert.matches("luagent.load_string", tostring(err))
    assert.is_truthy(tostring(err):find(db, 1, true))
  end)
end)
