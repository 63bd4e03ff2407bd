/* Bindings of an app's life: its creation from the settings, the worker
 * states' view of it, stats, usage, close and __gc. */
#include "bind.h"
#include "budget.h"
#include "http.h"

#include <limits.h>
#include <string.h>

/* A setting app_new needs. The defaults live in one place, the Lua side's
 * background_settings (spec.lua), which always passes every field. */
static double need_num(lua_State *L, int t, const char *k) {
  lua_getfield(L, t, k);
  if (!lua_isnumber(L, -1)) luaL_error(L, "luagent: app_new needs a number for %s", k);
  double v = lua_tonumber(L, -1);
  lua_pop(L, 1);
  return v;
}

static int need_int(lua_State *L, int t, const char *k) {
  lua_getfield(L, t, k);
  if (!lua_isinteger(L, -1)) luaL_error(L, "luagent: app_new needs an integer for %s", k);
  lua_Integer v = lua_tointeger(L, -1);
  lua_pop(L, 1);
  if (v < INT_MIN || v > INT_MAX) luaL_error(L, "luagent: app_new: %s is out of range", k);
  return (int)v;
}

static int l_app_new(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lg_settings s = {0};
  s.global_concurrency = need_int(L, 1, "global_concurrency");
  s.per_agent_concurrency = need_int(L, 1, "per_agent_concurrency");
  s.default_timeout_s = need_num(L, 1, "default_timeout_s");
  s.default_wait_timeout_s = need_num(L, 1, "default_wait_timeout_s");
  s.default_retries = need_int(L, 1, "default_retries");
  s.retry_backoff_s = need_num(L, 1, "retry_backoff_s");
  s.retry_backoff_max_s = need_num(L, 1, "retry_backoff_max_s");
  const char *bp = lg_opt_field_str(L, 1, "backpressure");
  s.reject = bp && strcmp(bp, "reject") == 0;
  s.max_queue = need_int(L, 1, "max_queue");
  s.max_depth = need_int(L, 1, "max_depth");
  s.max_descendants = need_int(L, 1, "max_descendants");
  s.max_workers = need_int(L, 1, "max_workers");
  s.worker_idle_s = need_num(L, 1, "worker_idle_s");
  s.event_buffer = need_int(L, 1, "event_buffer");
  s.keep_finished_s = need_num(L, 1, "keep_finished_s");            /* < 0: no bound on age */
  s.keep_finished_max = (long)need_num(L, 1, "keep_finished_max");  /* < 0: no bound on count */
  s.stop_grace_s = need_num(L, 1, "stop_grace_s");                  /* < 0: never retire */
  s.max_output_bytes = need_int(L, 1, "max_tool_output_bytes");
  s.max_result_bytes = need_int(L, 1, "max_result_bytes");
  s.boot_json = (char *)lg_opt_field_str(L, 1, "boot_json");
  s.lua_path = (char *)lg_opt_field_str(L, 1, "lua_path");
  s.lua_cpath = (char *)lg_opt_field_str(L, 1, "lua_cpath");
  const char *cm = lg_opt_field_str(L, 1, "close_mode");
  app_ud *u = lua_newuserdatauv(L, sizeof *u, 0);
  memset(u, 0, sizeof *u);
  luaL_setmetatable(L, APP_MT);
  lg_err err = {{0}, {0}};
  u->app = lg_app_new(&s, &err);
  if (!u->app) return luaL_error(L, "luagent: %s", err.message);
  u->close_mode = cm && strcmp(cm, "suspend") == 0 ? CLOSE_SUSPEND : CLOSE_CANCEL;
  lg_http_global_init();
  return 1;
}

static int l_worker_app(lua_State *L) {
  lg_worker *w = lg_current_worker(L);
  if (!w) return 0;
  app_ud *u = lua_newuserdatauv(L, sizeof *u, 0);
  memset(u, 0, sizeof *u);
  luaL_setmetatable(L, APP_MT);
  lg_app_retain(lg_worker_app(w));
  u->app = lg_worker_app(w);
  u->worker_handle = 1;
  return 1;
}

int lg_bind_app_gc(lua_State *L) {
  app_ud *u = luaL_checkudata(L, 1, APP_MT);
  if (!u->app) return 0;
  /* __gc only signals (R-25a): never blocks, never joins */
  if (!u->worker_handle) {
    lg_close(u->app, u->close_mode, 0, 0);
    void *m = lg_host_multi(u->app);
    lg_set_host_multi(u->app, NULL);
    lg_http_multi_free(m);
  }
  lg_app_release(u->app);
  u->app = NULL;
  return 0;
}

static int l_app_stats(lua_State *L) {
  app_ud *u = lg_check_app(L);
  lg_stats s;
  lg_get_stats(u->app, &s);
  lua_createtable(L, 0, 8);
#define SETI(name)              \
  lua_pushinteger(L, s.name);   \
  lua_setfield(L, -2, #name)
  SETI(queued);
  SETI(running);
  SETI(waiting);
  SETI(workers);
  SETI(lent_slots);
  SETI(host_calls_pending);
  SETI(last_seq);
  SETI(threads);
#undef SETI
  lg_set_bool(L, "idle", s.idle);
  lg_set_int(L, "in_memory", (lua_Integer)s.in_memory);
  lg_set_int(L, "host_wakes", (lua_Integer)s.host_wakes);
  lua_createtable(L, 0, 4);
  for (int i = TS_COMPLETED; i <= TS_TIMED_OUT; i++) {
    lua_pushinteger(L, s.finished[i]);
    lua_setfield(L, -2, lg_status_name(i));
  }
  lua_setfield(L, -2, "finished");
  buf_t b;
  lg_buf_init(&b);
  lg_usage_json(&b, &s.usage);
  lg_push_json_buf(L, &b);
  lua_setfield(L, -2, "usage");
  return 1;
}

/* add_usage(task_id or nil, usage, root_key?): one model call's usage
 * (usage.c), and its tree budget's when the tree has one (budget.c). */
static int l_app_add_usage(lua_State *L) {
  app_ud *u = lg_check_app(L);
  const char *id = luaL_optstring(L, 2, NULL);
  luaL_checktype(L, 3, LUA_TTABLE);
  lua_createtable(L, 0, 1);
  lua_pushvalue(L, 3);
  lua_setfield(L, -2, "u");
  lg_usage d;
  lg_read_usage(L, lua_gettop(L), "u", &d);
  const char *root = luaL_optstring(L, 4, NULL);
  if (root) lg_budget_add_usage(u->app, root, &d);
  lua_pushboolean(L, lg_add_usage(u->app, id, &d) == 0);
  return 1;
}

static int l_app_close(lua_State *L) {
  app_ud *u = lg_check_app(L);
  if (u->worker_handle) return luaL_error(L, "luagent: close is for the host thread");
  const char *mode = luaL_optstring(L, 2, u->close_mode == CLOSE_SUSPEND ? "suspend" : "cancel");
  double grace = luaL_optnumber(L, 3, 5);
  int m = strcmp(mode, "suspend") == 0 ? CLOSE_SUSPEND : CLOSE_CANCEL;
  lua_pushboolean(L, lg_close(u->app, m, grace, 1));
  return 1;
}

LUAGENT_API lg_app *luagent_app_of(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  if (lua_istable(L, idx)) {
    lua_getfield(L, idx, "_core"); /* a luagent app: its core handle */
    app_ud *u = luaL_testudata(L, -1, APP_MT);
    lua_pop(L, 1);
    return u ? u->app : NULL;
  }
  app_ud *u = luaL_testudata(L, idx, APP_MT);
  return u ? u->app : NULL;
}

const luaL_Reg lg_bind_app_methods[] = {
    {"stats", l_app_stats}, {"add_usage", l_app_add_usage}, {"close", l_app_close}, {NULL, NULL}};

const luaL_Reg lg_bind_app_funcs[] = {
    {"app_new", l_app_new}, {"worker_app", l_worker_app}, {NULL, NULL}};
