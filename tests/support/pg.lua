-- A PostgreSQL cluster for the store specs: the one `make test` started
-- (LUAGENT_TEST_PG_DIR, the directory of its socket), else one started
-- here on first use (tests/support/pg_server.sh) and stopped once this
-- process is gone. Each spec gets a database of its own.
local P = {}

local dir

local function pid()
  local f = assert(io.open("/proc/self/stat"))
  local id = f:read("l"):match("^(%d+)")
  f:close()
  return id
end

local function sh(cmd)
  local p = assert(io.popen(cmd .. " 2>&1"))
  local out = p:read("a")
  local ok = p:close()
  return ok, out
end

-- The socket directory of the running cluster.
function P.dir()
  if dir then return dir end
  -- busted loads this module afresh for each spec file: one cluster per
  -- process, remembered where the reload does not reach
  local reg = debug.getregistry()
  dir = os.getenv("LUAGENT_TEST_PG_DIR") or reg["luagent.spec_pg_dir"]
  if not dir or dir == "" then
    local ok, out = sh("tests/support/pg_server.sh start " .. pid())
    assert(ok, "cannot start PostgreSQL for the specs: " .. out)
    dir = out:match("(/tmp/luagent%-pg%.[%w]+)")
    assert(dir, "pg_server.sh printed no directory: " .. out)
    reg["luagent.spec_pg_dir"] = dir
  end
  return dir
end

-- A URL naming database `db` on the cluster as `user` (default postgres).
function P.url(db, user, password)
  return string.format("postgresql://%s%s@/%s?host=%s", user or "postgres",
    password and (":" .. password) or "", db, P.dir())
end

-- A new empty database; returns its URL.
function P.fresh()
  -- busted loads this module afresh for each spec file: a counter alone repeats
  local f = assert(io.open("/proc/sys/kernel/random/uuid"))
  local name = "spec_" .. f:read("l"):gsub("%-", "")
  f:close()
  P.psql(P.url("postgres"), "CREATE DATABASE " .. name)
  return P.url(name), name
end

-- Run SQL with psql; returns the output rows ("a|b" per row, as sqlite3).
function P.psql(url, sql)
  local q = function(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end
  local ok, out = sh(string.format("env -u LD_PRELOAD psql -X -q -tA -F '|' -v ON_ERROR_STOP=1 %s -c %s", q(url), q(sql)))
  assert(ok, "psql failed: " .. out)
  local rows = {}
  for l in out:gmatch("[^\n]+") do rows[#rows + 1] = l end
  return rows
end

function P.is_url(db)
  return type(db) == "string" and db:match("^postgres") ~= nil
end

return P
