/* Bindings of the store and of threads: opening a file store,
 * reading its records back, restoring them, how it runs, thread messages. */
#include "bind.h"
#include "store.h"

#include <string.h>

static int l_app_store_open(lua_State *L) {
  app_ud *u = lg_check_app(L);
  const char *path = lg_check_text(L, 2);
  lg_store_opts o;
  memset(&o, 0, sizeof o);
  o.durability_full = lua_toboolean(L, 3);
  o.completed_s = luaL_optnumber(L, 4, 0);
  o.failed_s = luaL_optnumber(L, 5, 0);
  o.postgres = lua_toboolean(L, 6);
  o.shared = lua_toboolean(L, 7);
  o.lease_s = luaL_optnumber(L, 8, 0);
  lg_err err = {{0}, {0}};
  if (lg_app_open_store(u->app, path, &o, &err) != 0) return luaL_error(L, "%s", err.message);
  return 0;
}

/* Every stored record, or an error: a read that fails is never half-read. */
static int l_app_store_records(lua_State *L) {
  app_ud *u = lg_check_app(L);
  buf_t out;
  lg_buf_init(&out);
  char err[320];
  if (lg_store_read_records(lg_app_store(u->app), &out, err, sizeof err) != 0) {
    lg_buf_free(&out);
    return luaL_error(L, "%s", err);
  }
  lg_push_json_buf(L, &out);
  return 1;
}

static int64_t field_time(lua_State *L, int t, const char *k) {
  return lg_parse_iso8601(lg_opt_field_str(L, t, k));
}

/* restore(record): a record as the store kept it. */
static int l_app_restore(lua_State *L) {
  app_ud *u = lg_check_app(L);
  luaL_checktype(L, 2, LUA_TTABLE);
  lg_restore_req r;
  memset(&r, 0, sizeof r);
  lg_enqueue_req *e = &r.base;
  lg_read_task_fields(L, 2, e);
  e->timeout_s = lg_opt_field_num(L, 2, "timeout_s", 300);
  e->retries = (int)lg_opt_field_int(L, 2, "max_retries", 0);
  e->priority = lg_opt_field_int(L, 2, "priority", 0);
  r.task_id = lg_opt_field_str(L, 2, "task_id");
  r.run_id = lg_opt_field_str(L, 2, "run_id");
  r.parent_task_id = lg_opt_field_str(L, 2, "parent_task_id");
  r.root_task_id = lg_opt_field_str(L, 2, "root_task_id");
  r.status = lg_opt_field_str(L, 2, "status");
  r.run_status = lg_opt_field_str(L, 2, "run_status");
  r.attempts = (int)lg_opt_field_int(L, 2, "attempts", 0);
  lua_getfield(L, 2, "delivered");
  r.delivered = lua_toboolean(L, -1);
  lua_getfield(L, 2, "cancel_requested");
  r.cancel_requested = lua_toboolean(L, -1);
  lua_pop(L, 2);
  r.enqueued_at = field_time(L, 2, "enqueued_at");
  r.started_at = field_time(L, 2, "started_at");
  r.finished_at = field_time(L, 2, "finished_at");
  r.retry_at = field_time(L, 2, "retry_at");
  lg_read_usage(L, 2, "usage", &r.usage);
  lg_read_usage(L, 2, "tree_usage", &r.tree_usage);
  lua_getfield(L, 2, "error");
  if (lua_istable(L, -1)) {
    r.error_kind = lg_opt_field_str(L, -1, "kind");
    r.error_message = lg_opt_field_str(L, -1, "message");
    r.error_status = (int)lg_opt_field_int(L, -1, "status", 0);
  }
  /* JSON parts are re-encoded; the strings stay on the stack until the call */
  const char *json_keys[] = {"args", "metadata", "result", "usage", "messages"};
  const char **json_out[] = {&e->args_json, &e->metadata_json, &r.result_json, &r.usage_json,
                             &r.messages_json};
  for (int i = 0; i < 5; i++) {
    lua_getfield(L, 2, json_keys[i]);
    if (!lua_isnil(L, -1)) {
      buf_t b;
      lg_buf_init(&b);
      char msg[256];
      if (lg_json_encode(L, -1, &b, msg, sizeof msg) == 0) {
        lua_pushlstring(L, b.p ? b.p : "null", b.p ? b.len : 4);
        *json_out[i] = lua_tostring(L, -1);
      }
      lg_buf_free(&b);
    }
  }
  if (!r.task_id) return luaL_error(L, "luagent: a stored record has no task_id");
  lg_err err = {{0}, {0}};
  if (lg_restore(u->app, &r, &err) != 0) return luaL_error(L, "%s", err.message);
  return 0;
}

/* Applies R-40; returns the highest event seq the file held before. */
static int l_app_restore_done(lua_State *L) {
  app_ud *u = lg_check_app(L);
  lua_pushinteger(L, (lua_Integer)lg_restore_done(u->app));
  return 1;
}

/* How the file store runs, or nil for memory only. */
static int l_app_store_info(lua_State *L) {
  app_ud *u = lg_check_app(L);
  lg_store_info_t i;
  buf_t ids;
  lg_buf_init(&ids);
  lg_store_info(lg_app_store(u->app), &i, &ids);
  if (!i.path) {
    lg_buf_free(&ids);
    return 0;
  }
  lua_createtable(L, 0, 5);
  lg_set_str(L, "path", i.path);
  lg_set_str(L, "engine", i.engine);
  lg_set_int(L, "synchronous", i.synchronous);
  lg_set_str(L, "journal_mode", i.journal_mode);
  lg_set_int(L, "schema_version", i.schema_version);
  if (i.error[0]) {
    lg_set_str(L, "error", i.error);
  }
  lg_set_int(L, "write_failures", (lua_Integer)i.write_failures);
  lg_set_int(L, "read_failures", (lua_Integer)i.read_failures);
  lg_set_int(L, "stale_writes", (lua_Integer)i.stale_writes);
  lg_set_int(L, "commits", (lua_Integer)i.commits);
  lg_set_int(L, "wakeups", (lua_Integer)i.wakeups);
  lg_push_json_buf(L, &ids);
  lua_setfield(L, -2, "unsaved");
  return 1;
}

/* Tests only: make the file store's writes fail as on a full disk. */
static int l_app_store_limit_pages(lua_State *L) {
  app_ud *u = lg_check_app(L);
  lua_Integer pages = luaL_checkinteger(L, 2);
  lua_pushinteger(L, (lua_Integer)lg_store_limit_pages(lg_app_store(u->app), (int64_t)pages));
  return 1;
}

/* The shared queue (store.h): claim(node, max, cap, lease_s) -> records
 * [{task_id, token, record}], renew(node, lease_s) -> n, requeue_expired()
 * -> ids, put_fenced(task_id, node, token, status, finished, json) ->
 * true written, false stale. A failure raises. */
static int l_app_store_claim(lua_State *L) {
  app_ud *u = lg_check_app(L);
  lg_store_claim_req r = {lg_check_text(L, 2), (int)luaL_checkinteger(L, 3),
                          (int)luaL_optinteger(L, 4, 0), luaL_checknumber(L, 5),
                          (int)luaL_optinteger(L, 6, 0)};
  buf_t out;
  lg_buf_init(&out);
  char err[320];
  if (lg_store_claim(lg_app_store(u->app), &r, &out, err, sizeof err) < 0) {
    lg_buf_free(&out);
    return luaL_error(L, "%s", err);
  }
  lg_push_json_buf(L, &out);
  return 1;
}

static int l_app_store_renew(lua_State *L) {
  app_ud *u = lg_check_app(L);
  char err[320];
  int n = lg_store_renew(lg_app_store(u->app), lg_check_text(L, 2), luaL_checknumber(L, 3), err,
                         sizeof err);
  if (n < 0) return luaL_error(L, "%s", err);
  lua_pushinteger(L, n);
  return 1;
}

static int l_app_store_requeue_expired(lua_State *L) {
  app_ud *u = lg_check_app(L);
  buf_t out;
  lg_buf_init(&out);
  char err[320];
  if (lg_store_requeue_expired(lg_app_store(u->app), &out, err, sizeof err) < 0) {
    lg_buf_free(&out);
    return luaL_error(L, "%s", err);
  }
  lg_push_json_buf(L, &out);
  return 1;
}

static int l_app_store_put_fenced(lua_State *L) {
  app_ud *u = lg_check_app(L);
  char err[320];
  int rc = lg_store_task_fenced(lg_app_store(u->app), lg_check_text(L, 2), lg_check_text(L, 3),
                                (int64_t)luaL_checkinteger(L, 4), lg_check_text(L, 5),
                                lua_toboolean(L, 6), lg_check_text(L, 7), err, sizeof err);
  if (rc < 0) return luaL_error(L, "%s", err);
  lua_pushboolean(L, rc == 0);
  return 1;
}

/* cluster_room() -> slots this process would fill now; cluster_admit(id,
 * token) -> 1 admitted, 0 not in memory, -1 finished or already running
 * here; cluster_node() -> this process's name; store_count_open() -> n. */
static int l_app_cluster_room(lua_State *L) {
  lua_pushinteger(L, lg_cluster_room(lg_check_app(L)->app));
  return 1;
}

static int l_app_cluster_admit(lua_State *L) {
  app_ud *u = lg_check_app(L);
  lua_pushinteger(L, lg_cluster_admit(u->app, lg_check_text(L, 2), (int64_t)luaL_checkinteger(L, 3),
                                      lua_toboolean(L, 4)));
  return 1;
}

static int l_app_cluster_serving(lua_State *L) {
  lg_cluster_serving(lg_check_app(L)->app, lua_toboolean(L, 2));
  return 0;
}

static int l_app_cluster_listening(lua_State *L) {
  lua_pushboolean(L, lg_cluster_listening(lg_check_app(L)->app));
  return 1;
}

static int l_app_cluster_node(lua_State *L) {
  lua_pushstring(L, lg_cluster_node(lg_check_app(L)->app));
  return 1;
}

/* cluster_events(since, limit) -> every process's events after gseq since */
static int l_app_cluster_events(lua_State *L) {
  app_ud *u = lg_check_app(L);
  lua_Integer since = luaL_optinteger(L, 2, 0);
  lua_Integer limit = luaL_optinteger(L, 3, 1000);
  buf_t out;
  lg_buf_init(&out);
  char err[320];
  if (lg_store_read_cluster_events(lg_app_store(u->app), (int64_t)since, (int)limit, &out, err,
                                   sizeof err) < 0) {
    lg_buf_free(&out);
    return luaL_error(L, "%s", err);
  }
  if (!out.p) lg_buf_add(&out, "[]", 2);
  lg_push_json_buf(L, &out);
  return 1;
}

static int l_app_store_count_open(lua_State *L) {
  app_ud *u = lg_check_app(L);
  int64_t n = lg_store_count_open(lg_app_store(u->app));
  if (n < 0) {
    lg_store_info_t i;
    lg_store_info(lg_app_store(u->app), &i, NULL);
    return luaL_error(L, "%s", i.error);
  }
  lua_pushinteger(L, (lua_Integer)n);
  return 1;
}

static int l_app_thread_get(lua_State *L) {
  app_ud *u = lg_check_app(L);
  const char *key = lg_check_text(L, 2);
  buf_t out;
  lg_buf_init(&out);
  int rc = lg_thread_get(u->app, key, &out);
  if (rc != 0) {
    lg_buf_free(&out);
    if (rc == -1) return 0;
    /* a conversation that cannot be read is not an empty one */
    lg_store_info_t i;
    lg_store_info(lg_app_store(u->app), &i, NULL);
    return luaL_error(L, "%s", i.error);
  }
  lua_pushlstring(L, out.p ? out.p : "", out.len);
  lg_buf_free(&out);
  return 1;
}

static int l_app_thread_put(lua_State *L) {
  app_ud *u = lg_check_app(L);
  const char *key = lg_check_text(L, 2);
  const char *json = lg_check_text(L, 3);
  lg_err err = {{0}, {0}};
  if (lg_thread_put(u->app, key, json, &err) != 0) return lg_raise_err(L, &err);
  return 0;
}

const luaL_Reg lg_bind_store_methods[] = {
    {"store_open", l_app_store_open},   {"store_records", l_app_store_records},
    {"restore", l_app_restore},         {"restore_done", l_app_restore_done},
    {"store_info", l_app_store_info},   {"store_limit_pages", l_app_store_limit_pages},
    {"thread_get", l_app_thread_get},   {"store_claim", l_app_store_claim},
    {"store_renew", l_app_store_renew}, {"store_requeue_expired", l_app_store_requeue_expired},
    {"store_put_fenced", l_app_store_put_fenced}, {"cluster_room", l_app_cluster_room},
    {"cluster_admit", l_app_cluster_admit}, {"cluster_node", l_app_cluster_node},
    {"cluster_serving", l_app_cluster_serving}, {"cluster_listening", l_app_cluster_listening},
    {"store_count_open", l_app_store_count_open}, {"cluster_events", l_app_cluster_events},
    {"thread_put", l_app_thread_put},   {NULL, NULL}};
