-- File store, acceptance: a store that cannot be opened is a clear error at
-- luagent.load naming the path (R-14), never a silent fallback to memory;
-- foreign files and newer schemas are refused; the lock file keeps a second
-- app or process out (README). A PostgreSQL store likewise: an unreachable
-- server, wrong credentials, a foreign schema or a newer one are refused by
-- name, and its advisory lock keeps a second app or process out.
local H = require "support.dispatch_helpers"
local S = require "support.store_helpers"
local luagent = require "luagent"
local P = require "support.pg"

-- A startup script on disk using `db` as its store.
local function script(dir, db)
  local path = dir .. "/agents.lua"
  H.write(path, string.format([[
local luagent = require "luagent"
return luagent.config{
  background_tasks = { enabled = true },
  store = { %s },
  tools = { luagent.tool{ name = "echo", handler = function(args) return args end } },
} ]], H.store_ref(db)))
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

end)

for _, engine in ipairs(H.store_engines) do
describe("store (" .. engine .. "): one app per store, one schema", function()
  local dir, db
  H.each_store(function(d, path) dir, db = d, path end, engine)

  it("a store written by a newer schema version is refused", function()
    if engine == "sqlite" and not S.have_sqlite3() then pending("needs the sqlite3 command") return end
    local app = luagent.load(script(dir, db))
    local t = app:enqueue_tool("echo", { x = 1 })
    app:wait({ t.task_id })
    local version = tostring(app._core:store_info().schema_version)
    app:close()
    assert.same({ version }, S.sql(db, "SELECT value FROM luagent_meta WHERE key = 'schema_version';"))
    S.sql(db, "UPDATE luagent_meta SET value = '999' WHERE key = 'schema_version';")
    local msg = load_error(dir, db)
    assert_names(msg, db, "newer")
    assert.matches("999", msg)
    -- and it was not rewritten
    assert.same({ "999" }, S.sql(db, "SELECT value FROM luagent_meta WHERE key = 'schema_version';"))
    -- the lock was released: back at its version it opens again
    S.sql(db, "UPDATE luagent_meta SET value = '" .. version .. "' WHERE key = 'schema_version';")
    local again = luagent.load(script(dir, db))
    assert.equal("completed", again:get(t.task_id).status)
    again:close()
  end)


  it("a second app in the same process is refused until the first closes", function()
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

  local it_file = engine == "sqlite" and it or function() end
  it_file("an app that could not open its store raises instead of running on memory", function()
    db = dir .. "/adir"
    assert(os.execute("mkdir " .. S.q(db)))
    local ok, err = pcall(H.app, string.format([[
      return luagent.config{ background_tasks = { enabled = true }, store = { path = %q } } ]], db))
    assert.is_false(ok)
    assert.matches("luagent.load_string", tostring(err))
    assert.is_truthy(tostring(err):find(db, 1, true))
  end)
end)
end

describe("store (postgresql): servers, credentials and schemas (R-14)", function()
  local dir, db, name
  before_each(function()
    dir = H.tmpdir()
    db, name = P.fresh()
  end)
  after_each(function()
    luagent.set_log(nil)
    H.rmdir(dir)
  end)

  it("an unreachable server is named as such", function()
    local url = "postgresql://postgres@/" .. name .. "?host=" .. dir -- no server there
    local msg = load_error(dir, url)
    assert_names(msg, url, "cannot connect to the server")
  end)

  it("wrong credentials are named as such, and the password is never shown", function()
    local url = P.url(name, "luagent_pw", "wrong-secret")
    local msg = load_error(dir, url)
    assert.matches("cannot log in to the server", msg)
    assert.matches("password authentication failed", msg)
    assert.is_nil(msg:find("wrong-secret", 1, true), msg)
    assert.is_truthy(msg:find(P.url(name, "luagent_pw"), 1, true), msg)
    -- the right password opens it (the role may create tables there)
    P.psql(db, "GRANT ALL ON SCHEMA public TO luagent_pw")
    local app = luagent.load(script(dir, P.url(name, "luagent_pw", "right")))
    assert.equal("postgresql", app._core:store_info().engine)
    app:close()
  end)

  it("a database that does not exist is named as such", function()
    local url = P.url(name .. "_missing")
    assert_names(load_error(dir, url), url, "database does not exist")
  end)

  it("a schema with another program's tables is refused and left as it was", function()
    P.psql(db, "CREATE TABLE customers(id serial PRIMARY KEY, name text); INSERT INTO customers(name) VALUES('ana')")
    assert_names(load_error(dir, db), db, "not a luagent store")
    assert.same({ "customers" }, P.psql(db,
      "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"))
    assert.same({ "ana" }, P.psql(db, "SELECT name FROM customers"))
  end)

  it("a schema of its own in a shared database is found through search_path", function()
    P.psql(db, "CREATE TABLE customers(id int); CREATE SCHEMA agents")
    local url = db .. "&options=-csearch_path%3Dagents"
    local app = luagent.load(script(dir, url))
    local t = app:enqueue_tool("echo", { x = 2 })
    assert.is_true(app:wait({ t.task_id }).done)
    app:close()
    assert.same({ "1" }, P.psql(db, "SELECT count(*) FROM agents.tasks"))
  end)

  it("postgres = { conninfo } selects the same store as url", function()
    local app = luagent.load(script(dir, db))
    local t = app:enqueue_tool("echo", { x = 3 })
    app:wait({ t.task_id })
    app:close()
    local conninfo = string.format("host=%s user=postgres dbname=%s", P.dir(), name)
    local again = H.app(string.format([[
return luagent.config{ background_tasks = { enabled = true },
  store = { postgres = { conninfo = %q } }, tools = { T.echo } } ]], conninfo))
    assert.same({ x = 3 }, again:get(t.task_id).result)
    again:close()
  end)

  it("a store of an older schema is migrated in place, its records kept", function()
    local app = luagent.load(script(dir, db))
    local t = app:enqueue_tool("echo", { x = 4 })
    app:wait({ t.task_id })
    local version = app._core:store_info().schema_version
    assert.is_true(version >= 2)
    app:close()
    -- back to what schema 1 was: no lease columns
    P.psql(db, "ALTER TABLE tasks DROP COLUMN owner, DROP COLUMN token, DROP COLUMN lease_until_ms;" ..
      " UPDATE luagent_meta SET value = '1' WHERE key = 'schema_version'")
    local again = luagent.load(script(dir, db))
    assert.same({ x = 4 }, again:get(t.task_id).result)
    again:close()
    assert.same({ tostring(version) }, P.psql(db, "SELECT value FROM luagent_meta WHERE key = 'schema_version'"))
    assert.same({ "lease_until_ms", "owner", "token" }, P.psql(db,
      "SELECT column_name FROM information_schema.columns WHERE table_name = 'tasks'" ..
      " AND column_name IN ('owner', 'token', 'lease_until_ms') ORDER BY 1"))
  end)

  it("the store table takes one of path, url and postgres", function()
    local ok, err = pcall(H.app, string.format([[
return luagent.config{ background_tasks = { enabled = true },
  store = { path = "/tmp/x.db", url = %q } } ]], db))
    assert.is_false(ok)
    assert.matches("one of path, url and postgres", tostring(err))
    ok, err = pcall(H.app, [[
return luagent.config{ background_tasks = { enabled = true }, store = { url = "mysql://x" } } ]])
    assert.is_false(ok)
    assert.matches("postgresql://", tostring(err))
  end)
end)
