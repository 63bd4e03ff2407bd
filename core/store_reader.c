/* A read-only view of a store file for tools that inspect it (the luagent
 * command's tasks, show, events and trace): `core.store_reader(path)`.
 * It opens its own read-only SQLite connection and takes no lock, so it
 * reads a store while the app that owns it runs (WAL readers never block
 * the writer) as well as after it has stopped. Rows are the JSON the store
 * keeps; they are decoded into Lua values here, on the calling thread. */
#include "bind.h"
#include "store.h"

#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#define READER_MT "luagent.store_reader"

typedef struct {
  sqlite3 *db;
} reader_ud;

static sqlite3 *check_reader(lua_State *L) {
  reader_ud *u = luaL_checkudata(L, 1, READER_MT);
  if (!u->db) luaL_error(L, "luagent: the store reader is closed");
  return u->db;
}

/* Decode each row's first column into an array at the top of the stack. */
static int push_rows(lua_State *L, sqlite3_stmt *s) {
  lua_newtable(L);
  int n = 0, rc;
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
    lg_json_push(L, (const char *)sqlite3_column_text(s, 0), (size_t)sqlite3_column_bytes(s, 0));
    lua_rawseti(L, -2, ++n);
  }
  return rc == SQLITE_DONE ? 0 : -1;
}

static int query(lua_State *L, sqlite3 *db, sqlite3_stmt *s) {
  int rc = push_rows(L, s);
  sqlite3_finalize(s);
  if (rc != 0) return luaL_error(L, "luagent: reading the store failed: %s", sqlite3_errmsg(db));
  return 1;
}

static sqlite3_stmt *prepare(lua_State *L, sqlite3 *db, const char *sql) {
  sqlite3_stmt *s = NULL;
  if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) != SQLITE_OK)
    luaL_error(L, "luagent: reading the store failed: %s", sqlite3_errmsg(db));
  return s;
}

/* records() -> every task record, in the order they were first written */
static int l_records(lua_State *L) {
  sqlite3 *db = check_reader(L);
  return query(L, db, prepare(L, db, "SELECT record FROM tasks ORDER BY rowid"));
}

/* record(task_id) -> the record, or nil */
static int l_record(lua_State *L) {
  sqlite3 *db = check_reader(L);
  const char *id = luaL_checkstring(L, 2);
  sqlite3_stmt *s = prepare(L, db, "SELECT record FROM tasks WHERE task_id = ?");
  sqlite3_bind_text(s, 1, id, -1, SQLITE_TRANSIENT);
  query(L, db, s);
  lua_rawgeti(L, -1, 1);
  return 1;
}

/* events(since, limit, task_id?) -> events with seq > since, oldest first */
static int l_events(lua_State *L) {
  sqlite3 *db = check_reader(L);
  lua_Integer since = luaL_optinteger(L, 2, 0);
  lua_Integer limit = luaL_optinteger(L, 3, 1000);
  const char *task = luaL_optstring(L, 4, NULL);
  sqlite3_stmt *s = prepare(L, db, task ?
    "SELECT event FROM events WHERE seq > ? AND task_id = ? ORDER BY seq LIMIT ?" :
    "SELECT event FROM events WHERE seq > ? ORDER BY seq LIMIT ?");
  int i = 1;
  sqlite3_bind_int64(s, i++, since);
  if (task) sqlite3_bind_text(s, i++, task, -1, SQLITE_TRANSIENT);
  sqlite3_bind_int64(s, i, limit);
  return query(L, db, s);
}

/* sleep(seconds): the pause between two reads of a store being followed
 * (a signal ends it early). */
static int l_sleep(lua_State *L) {
  check_reader(L);
  double s = luaL_checknumber(L, 2);
  sqlite3_sleep(s > 0 ? (int)(s * 1000.0) : 0);
  return 0;
}

static int l_close(lua_State *L) {
  reader_ud *u = luaL_checkudata(L, 1, READER_MT);
  sqlite3_close(u->db);
  u->db = NULL;
  return 0;
}

static int has_meta(sqlite3 *db) {
  sqlite3_stmt *s;
  int yes = 0;
  if (sqlite3_prepare_v2(db, "SELECT value FROM luagent_meta WHERE key='schema_version'", -1, &s,
                         NULL) == SQLITE_OK) {
    yes = sqlite3_step(s) == SQLITE_ROW;
    sqlite3_finalize(s);
  }
  return yes;
}

/* store_reader(path) -> reader, or nil and a message */
static int l_open(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  struct stat sb;
  const char *why = NULL;
  if (stat(path, &sb) != 0)
    why = "no such file";
  else if (S_ISDIR(sb.st_mode))
    why = "the path is a directory";
  if (why) {
    luaL_pushfail(L);
    lua_pushfstring(L, "cannot open store %s: %s", path, why);
    return 2;
  }
  reader_ud *u = lua_newuserdatauv(L, sizeof *u, 0);
  u->db = NULL;
  luaL_setmetatable(L, READER_MT);
  sqlite3 *db = NULL;
  if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK || !has_meta(db)) {
    luaL_pushfail(L);
    lua_pushfstring(L, "cannot open store %s: %s", path,
                    db && sqlite3_errcode(db) != SQLITE_OK && sqlite3_errcode(db) != SQLITE_ERROR
                        ? sqlite3_errmsg(db) : "not a luagent store");
    sqlite3_close(db);
    return 2;
  }
  sqlite3_busy_timeout(db, 5000);
  u->db = db;
  return 1;
}

static const luaL_Reg reader_methods[] = {{"records", l_records}, {"record", l_record},
                                          {"events", l_events},   {"sleep", l_sleep},
                                          {"close", l_close},
                                          {NULL, NULL}};

void lg_store_reader_open(lua_State *L) {
  if (luaL_newmetatable(L, READER_MT)) {
    luaL_newlib(L, reader_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, l_close);
    lua_setfield(L, -2, "__close");
  }
  lua_pop(L, 1);
  lua_pushcfunction(L, l_open);
  lua_setfield(L, -2, "store_reader");
}
