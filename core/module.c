/* Lua bindings of the C core (`luagent.core`). Values cross between states
 * only as JSON text and C scalars: the dispatcher writes JSON under its
 * mutex, and this file decodes it into Lua values after the mutex is
 * released. Arguments are checked before any core call. */
#include "dispatcher.h"
#include "http.h"
#include "interrupt.h"
#include "procgroup.h"
#include "stall.h"
#include "luagent.h"
#include "store.h"
#include "worker.h"

#include <lauxlib.h>
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define APP_MT "luagent.app"
#define ERR_MT "luagent.error"

typedef struct {
  lg_app *app;
  int worker_handle; /* a worker state's view of its app: never closes it */
  int close_mode;    /* what __gc signals */
} app_ud;

static app_ud *check_app(lua_State *L) {
  app_ud *u = luaL_checkudata(L, 1, APP_MT);
  if (!u->app) luaL_error(L, "luagent: the app is closed");
  /* code of a task whose worker was retired runs on: its calls are refused */
  if (u->worker_handle && lg_worker_retired(L)) lg_raise_cancel(L);
  return u;
}

/* ---- for procgroup.c ---- */
lg_app *lg_app_at(lua_State *L, int idx) {
  app_ud *u = luaL_checkudata(L, idx, APP_MT);
  return u->app;
}

/* Decode JSON written by the core; the buffer is freed first so a Lua error
 * in decoding cannot leak it. */
static void push_json_buf(lua_State *L, buf_t *b) {
  if (b->oom) {
    buf_free(b);
    luaL_error(L, "luagent: out of memory");
  }
  lua_pushlstring(L, b->p ? b->p : "null", b->p ? b->len : 4);
  buf_free(b);
  size_t n;
  const char *s = lua_tolstring(L, -1, &n);
  lg_json_push(L, s, n);
  lua_remove(L, -2);
}

/* The JSON a lookup wrote, or no value when it found nothing (rc != 0). */
static int push_found(lua_State *L, int rc, buf_t *b) {
  if (rc != 0) {
    buf_free(b);
    return 0;
  }
  push_json_buf(L, b);
  return 1;
}

/* Raise {kind=, message=} (an error table with __tostring). */
static int raise_err(lua_State *L, const lg_err *e) {
  lua_createtable(L, 0, 2);
  lua_pushstring(L, e->kind[0] ? e->kind : "runtime");
  lua_setfield(L, -2, "kind");
  lua_pushstring(L, e->message);
  lua_setfield(L, -2, "message");
  luaL_setmetatable(L, ERR_MT);
  return lua_error(L);
}

static int err_tostring(lua_State *L) {
  lua_getfield(L, 1, "message");
  if (!lua_isstring(L, -1)) lua_pushliteral(L, "luagent error");
  return 1;
}

/* Strings cross into the core as C strings, where an embedded NUL would
 * silently cut them (a thread "victim\0x" would be read as "victim"): they
 * are read with their length and refused when they hold a NUL. */
static const char *check_text(lua_State *L, int idx) {
  size_t n;
  const char *s = luaL_checklstring(L, idx, &n);
  if (strlen(s) != n) luaL_argerror(L, idx, "must not contain a NUL byte");
  return s;
}

static const char *opt_text(lua_State *L, int idx, const char *d) {
  return lua_isnoneornil(L, idx) ? d : check_text(L, idx);
}

/* A string field of the table at t, or NULL when it is not a string. */
static const char *opt_field_str(lua_State *L, int t, const char *k) {
  lua_getfield(L, t, k);
  size_t n = 0;
  const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &n) : NULL;
  if (s && strlen(s) != n) luaL_error(L, "luagent: field \"%s\" must not contain a NUL byte", k);
  lua_pop(L, 1); /* a string stays anchored in the table */
  return s;
}

static double opt_field_num(lua_State *L, int t, const char *k, double d) {
  lua_getfield(L, t, k);
  double v = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : d;
  lua_pop(L, 1);
  return v;
}

static lua_Integer opt_field_int(lua_State *L, int t, const char *k, lua_Integer d) {
  lua_getfield(L, t, k);
  lua_Integer v = lua_isnumber(L, -1) ? lua_tointeger(L, -1) : d;
  lua_pop(L, 1);
  return v;
}

/* A usage table ({prompt_tokens, completion_tokens, total_tokens,
 * cached_tokens?, cost?, estimated?}) at t, or nothing (u->set = 0). */
static void read_usage(lua_State *L, int t, const char *k, lg_usage *u) {
  memset(u, 0, sizeof *u);
  lua_getfield(L, t, k);
  if (lua_istable(L, -1)) {
    int i = lua_gettop(L);
    u->set = 1;
    u->prompt = opt_field_int(L, i, "prompt_tokens", 0);
    u->completion = opt_field_int(L, i, "completion_tokens", 0);
    u->total = opt_field_int(L, i, "total_tokens", u->prompt + u->completion);
    u->cached = opt_field_int(L, i, "cached_tokens", 0);
    lua_getfield(L, i, "cost");
    u->has_cost = lua_isnumber(L, -1);
    u->cost = u->has_cost ? lua_tonumber(L, -1) : 0;
    lua_getfield(L, i, "estimated");
    u->estimated = lua_toboolean(L, -1);
    lua_pop(L, 2);
  }
  lua_pop(L, 1);
}

static lg_task *calling_task(lua_State *L) {
  lg_worker *w = lg_current_worker(L);
  return w ? w->current : NULL;
}

/* ------------------------------------------------------------- app */

static int l_app_new(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lg_settings s = {0};
  s.global_concurrency = (int)opt_field_int(L, 1, "global_concurrency", 10);
  s.per_agent_concurrency = (int)opt_field_int(L, 1, "per_agent_concurrency", 5);
  s.default_timeout_s = opt_field_num(L, 1, "default_timeout_s", 300);
  s.default_wait_timeout_s = opt_field_num(L, 1, "default_wait_timeout_s", 300);
  s.default_retries = (int)opt_field_int(L, 1, "default_retries", 0);
  s.retry_backoff_s = opt_field_num(L, 1, "retry_backoff_s", 1);
  s.retry_backoff_max_s = opt_field_num(L, 1, "retry_backoff_max_s", 30);
  const char *bp = opt_field_str(L, 1, "backpressure");
  s.reject = bp && strcmp(bp, "reject") == 0;
  s.max_queue = (int)opt_field_int(L, 1, "max_queue", 10000);
  s.max_depth = (int)opt_field_int(L, 1, "max_depth", 2);
  s.max_descendants = (int)opt_field_int(L, 1, "max_descendants", 50);
  s.max_workers = (int)opt_field_int(L, 1, "max_workers", s.global_concurrency * (s.max_depth + 1) + 2);
  s.worker_idle_s = opt_field_num(L, 1, "worker_idle_s", 30);
  s.event_buffer = (int)opt_field_int(L, 1, "event_buffer", 10000);
  s.keep_finished_s = opt_field_num(L, 1, "keep_finished_s", -1);
  s.keep_finished_max = (long)opt_field_int(L, 1, "keep_finished_max", -1);
  s.stop_grace_s = opt_field_num(L, 1, "stop_grace_s", 1);
  s.boot_json = (char *)opt_field_str(L, 1, "boot_json");
  s.lua_path = (char *)opt_field_str(L, 1, "lua_path");
  s.lua_cpath = (char *)opt_field_str(L, 1, "lua_cpath");
  const char *cm = opt_field_str(L, 1, "close_mode");
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
  lg_app_retain(w->app);
  u->app = w->app;
  u->worker_handle = 1;
  return 1;
}

static int l_app_gc(lua_State *L) {
  app_ud *u = luaL_checkudata(L, 1, APP_MT);
  if (!u->app) return 0;
  /* __gc only signals (R-25a): never blocks, never joins */
  if (!u->worker_handle) {
    lg_close(u->app, u->close_mode, 0, 0);
    void *m = u->app->host_multi;
    lg_set_host_multi(u->app, NULL);
    lg_http_multi_free(m);
  }
  lg_app_release(u->app);
  u->app = NULL;
  return 0;
}

/* The fields an enqueue request and a stored record share (strings stay
 * anchored in the table at `t`). */
static void read_task_fields(lua_State *L, int t, lg_enqueue_req *r) {
  const char *kind = opt_field_str(L, t, "kind");
  r->kind = kind && strcmp(kind, "agent") == 0 ? TK_AGENT : TK_TOOL;
  r->tool = opt_field_str(L, t, "tool");
  r->agent_id = opt_field_str(L, t, "agent_id");
  r->thread_id = opt_field_str(L, t, "thread_id");
  r->prompt = opt_field_str(L, t, "prompt");
  r->tool_call_id = opt_field_str(L, t, "tool_call_id");
  r->parent_run_id = opt_field_str(L, t, "parent_run_id");
  r->parent_agent_id = opt_field_str(L, t, "parent_agent_id");
  r->root_key = opt_field_str(L, t, "root_key");
  r->stale_after_s = opt_field_num(L, t, "stale_after_s", 0);
  r->idempotency_key = opt_field_str(L, t, "idempotency_key");
  r->depth = (int)opt_field_int(L, t, "depth", 0);
  r->max_depth = (int)opt_field_int(L, t, "max_depth", -1);
  lua_getfield(L, t, "scoped");
  r->scoped = lua_toboolean(L, -1);
  lua_pop(L, 1);
}

static int l_app_enqueue(lua_State *L) {
  app_ud *u = check_app(L);
  luaL_checktype(L, 2, LUA_TTABLE);
  lg_enqueue_req r;
  memset(&r, 0, sizeof r);
  read_task_fields(L, 2, &r);
  r.args_json = opt_field_str(L, 2, "args");
  r.metadata_json = opt_field_str(L, 2, "metadata");
  r.timeout_s = opt_field_num(L, 2, "timeout_s", -1);
  r.retries = (int)opt_field_int(L, 2, "retries", -1);
  r.priority = opt_field_int(L, 2, "priority", LLONG_MIN);
  lg_err err = {{0}, {0}};
  buf_t out;
  buf_init(&out);
  if (lg_enqueue(u->app, calling_task(L), &r, &out, &err) != 0) {
    buf_free(&out);
    return raise_err(L, &err);
  }
  push_json_buf(L, &out);
  return 1;
}

static int l_app_get(lua_State *L) {
  app_ud *u = check_app(L);
  const char *id = check_text(L, 2);
  buf_t out;
  buf_init(&out);
  return push_found(L, lg_get(u->app, id, &out), &out);
}

static int l_app_status(lua_State *L) {
  app_ud *u = check_app(L);
  char st[16];
  if (lg_status(u->app, check_text(L, 2), st) != 0) return 0;
  lua_pushstring(L, st);
  return 1;
}

static int l_app_list(lua_State *L) {
  app_ud *u = check_app(L);
  lg_filter f;
  memset(&f, 0, sizeof f);
  if (lua_istable(L, 2)) {
    f.status = opt_field_str(L, 2, "status");
    f.agent_id = opt_field_str(L, 2, "agent_id");
    f.parent_agent_id = opt_field_str(L, 2, "parent_agent_id");
    f.thread_id = opt_field_str(L, 2, "thread_id");
    f.parent_run_id = opt_field_str(L, 2, "parent_run_id");
    f.parent_task_id = opt_field_str(L, 2, "parent_task_id");
    f.limit = (int)opt_field_int(L, 2, "limit", 0);
    lua_getfield(L, 2, "include_finished");
    f.include_finished = lua_toboolean(L, -1);
    lua_pop(L, 1);
  }
  buf_t out;
  buf_init(&out);
  lg_list(u->app, &f, &out);
  push_json_buf(L, &out);
  return 1;
}

static int l_app_cancel(lua_State *L) {
  app_ud *u = check_app(L);
  const char *id = check_text(L, 2);
  buf_t out;
  buf_init(&out);
  return push_found(L, lg_cancel(u->app, id, &out), &out);
}

static int l_app_digests(lua_State *L) {
  app_ud *u = check_app(L);
  const char *id = check_text(L, 2);
  int n = (int)luaL_optinteger(L, 3, 16);
  buf_t out;
  buf_init(&out);
  return push_found(L, lg_task_digests(u->app, id, n, &out), &out);
}

static int l_app_set_delivered(lua_State *L) {
  app_ud *u = check_app(L);
  lua_pushboolean(L, lg_set_delivered(u->app, check_text(L, 2)) == 0);
  return 1;
}

/* ids: a Lua array of strings -> C array (pointers anchored in the table) */
static char **check_ids(lua_State *L, int idx, int *n) {
  luaL_checktype(L, idx, LUA_TTABLE);
  int len = (int)luaL_len(L, idx);
  char **ids = lua_newuserdatauv(L, (size_t)(len ? len : 1) * sizeof *ids, 0);
  for (int i = 0; i < len; i++) {
    lua_rawgeti(L, idx, i + 1);
    size_t len_i;
    if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "task ids must be strings (item %d)", i + 1);
    ids[i] = (char *)lua_tolstring(L, -1, &len_i);
    if (strlen(ids[i]) != len_i) luaL_error(L, "task ids must not contain a NUL byte (item %d)", i + 1);
    lua_pop(L, 1);
  }
  *n = len;
  return ids; /* the userdata stays on the stack, the strings in the table */
}

static int l_app_wait_check(lua_State *L) {
  app_ud *u = check_app(L);
  int n;
  char **ids = check_ids(L, 2, &n);
  int any = lua_toboolean(L, 3), timed_out = lua_toboolean(L, 4);
  lg_err err = {{0}, {0}};
  buf_t out;
  buf_init(&out);
  int rc = lg_wait_check(u->app, calling_task(L), ids, n, any, timed_out, &out, &err);
  if (rc < 0) {
    buf_free(&out);
    return raise_err(L, &err);
  }
  lua_pushboolean(L, rc);
  push_json_buf(L, &out);
  return 2;
}

/* hold(ids, delta): a host wait on ids begins (1) or ends (-1) */
static int l_app_hold(lua_State *L) {
  app_ud *u = check_app(L);
  int n;
  char **ids = check_ids(L, 2, &n);
  lg_hold(u->app, ids, n, luaL_checkinteger(L, 3) < 0 ? -1 : 1);
  return 0;
}

static int l_app_gen(lua_State *L) {
  app_ud *u = check_app(L);
  lua_pushinteger(L, (lua_Integer)lg_gen(u->app));
  return 1;
}

static int l_app_block(lua_State *L) {
  app_ud *u = check_app(L);
  if (u->worker_handle) return luaL_error(L, "luagent: block is for the host thread");
  uint64_t gen = (uint64_t)luaL_checkinteger(L, 2);
  double timeout = luaL_optnumber(L, 3, -1);
  lg_block(u->app, gen, timeout);
  return 0;
}

static const char *const item_types[] = {"call", "callback", "log"};

static int l_app_take(lua_State *L) {
  app_ud *u = check_app(L);
  int max = (int)luaL_optinteger(L, 2, 64);
  if (max < 1) max = 1;
  if (max > 256) max = 256;
  lg_host_item *items[256];
  int n = lg_take_host_work(u->app, max, items);
  /* Move everything into C locals first; then build Lua values, freeing
   * each item as we go. A Lua memory error here may leak the rest, which is
   * accepted (and only under memory exhaustion). */
  lua_createtable(L, n, 0);
  for (int i = 0; i < n; i++) {
    lg_host_item *it = items[i];
    lua_createtable(L, 0, 7);
    lua_pushstring(L, item_types[it->type]);
    lua_setfield(L, -2, "type");
    lua_pushinteger(L, (lua_Integer)it->id);
    lua_setfield(L, -2, "id");
    lua_pushstring(L, it->kind);
    lua_setfield(L, -2, "kind");
    if (it->name) {
      lua_pushstring(L, it->name);
      lua_setfield(L, -2, "name");
    }
    if (it->json) {
      lua_pushstring(L, it->json);
      lua_setfield(L, -2, "json");
    }
    if (it->ctx_json) {
      lua_pushstring(L, it->ctx_json);
      lua_setfield(L, -2, "ctx");
    }
    if (it->task_id[0]) {
      lua_pushstring(L, it->task_id);
      lua_setfield(L, -2, "task_id");
    }
    lua_rawseti(L, -2, i + 1);
    lg_host_item_free(it);
    items[i] = NULL;
  }
  return 1;
}

static int l_app_reply(lua_State *L) {
  app_ud *u = check_app(L);
  lua_Integer id = luaL_checkinteger(L, 2);
  const char *json = check_text(L, 3);
  lg_host_reply(u->app, (uint64_t)id, json);
  return 0;
}

static int l_app_set_wants(lua_State *L) {
  app_ud *u = check_app(L);
  lg_set_wants(u->app, (unsigned)luaL_checkinteger(L, 2));
  return 0;
}

/* emit(kind, payload_json, run_id, task_id, agent_id, depth, summary) */
static int l_app_emit(lua_State *L) {
  app_ud *u = check_app(L);
  lg_event_in e;
  e.kind = check_text(L, 2);
  e.payload_json = opt_text(L, 3, "{}");
  e.run_id = opt_text(L, 4, NULL);
  e.task_id = opt_text(L, 5, NULL);
  e.agent_id = opt_text(L, 6, NULL);
  e.depth = (int)luaL_optinteger(L, 7, 0);
  const char *summary = opt_text(L, 8, NULL);
  lg_emit(u->app, &e, summary);
  return 0;
}

static int l_app_events(lua_State *L) {
  app_ud *u = check_app(L);
  lua_Integer since = luaL_optinteger(L, 2, 0);
  lua_Integer limit = luaL_optinteger(L, 3, 1000);
  if (limit < 1) limit = 1;
  buf_t out;
  buf_init(&out);
  lg_events(u->app, since, limit > INT_MAX ? INT_MAX : (int)limit, &out);
  push_json_buf(L, &out);
  return 1;
}

static int l_app_stats(lua_State *L) {
  app_ud *u = check_app(L);
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
#undef SETI
  lua_pushboolean(L, s.idle);
  lua_setfield(L, -2, "idle");
  lua_pushinteger(L, (lua_Integer)s.in_memory);
  lua_setfield(L, -2, "in_memory");
  lua_createtable(L, 0, 4);
  for (int i = TS_COMPLETED; i <= TS_TIMED_OUT; i++) {
    lua_pushinteger(L, s.finished[i]);
    lua_setfield(L, -2, lg_status_name(i));
  }
  lua_setfield(L, -2, "finished");
  buf_t b;
  buf_init(&b);
  lg_usage_json(&b, &s.usage);
  push_json_buf(L, &b);
  lua_setfield(L, -2, "usage");
  return 1;
}

/* add_usage(task_id or nil, usage): one model call's usage (usage.c). */
static int l_app_add_usage(lua_State *L) {
  app_ud *u = check_app(L);
  const char *id = luaL_optstring(L, 2, NULL);
  luaL_checktype(L, 3, LUA_TTABLE);
  lua_createtable(L, 0, 1);
  lua_pushvalue(L, 3);
  lua_setfield(L, -2, "u");
  lg_usage d;
  read_usage(L, lua_gettop(L), "u", &d);
  lua_pushboolean(L, lg_add_usage(u->app, id, &d) == 0);
  return 1;
}

/* catch_interrupt(): SIGINT from now on wakes this app's host and is
 * counted for interrupted() (interrupt.c). */
static int l_app_catch_interrupt(lua_State *L) {
  app_ud *u = check_app(L);
  if (u->worker_handle) return luaL_error(L, "luagent: catch_interrupt is for the host thread");
  char err[128];
  if (lg_interrupt_catch(u->app, err, sizeof err) != 0) return luaL_error(L, "luagent: %s", err);
  return 0;
}

static int l_app_close(lua_State *L) {
  app_ud *u = check_app(L);
  if (u->worker_handle) return luaL_error(L, "luagent: close is for the host thread");
  const char *mode = luaL_optstring(L, 2, u->close_mode == CLOSE_SUSPEND ? "suspend" : "cancel");
  double grace = luaL_optnumber(L, 3, 5);
  int m = strcmp(mode, "suspend") == 0 ? CLOSE_SUSPEND : CLOSE_CANCEL;
  lua_pushboolean(L, lg_close(u->app, m, grace, 1));
  return 1;
}

/* ---------------------------------------------------- calling task */

static lg_worker *check_worker(lua_State *L) {
  lg_worker *w = lg_current_worker(L);
  if (!w || !w->current) luaL_error(L, "luagent: not inside a background task");
  if (atomic_load(&w->retired)) lg_raise_cancel(L); /* its task is finished */
  return w;
}

static int l_task_sleep(lua_State *L) {
  lg_worker *w = check_worker(L);
  double s = luaL_checknumber(L, 1);
  if (lg_task_sleep(w, s > 0 ? s : 0)) return lg_raise_cancel(L);
  return 0;
}

/* task_wait(ids, any, timeout_s) -> value */
static int l_task_wait(lua_State *L) {
  lg_worker *w = check_worker(L);
  int n;
  char **ids = check_ids(L, 1, &n);
  int any = lua_toboolean(L, 2);
  double timeout = luaL_optnumber(L, 3, -1);
  lg_err err = {{0}, {0}};
  buf_t out;
  buf_init(&out);
  int rc = lg_task_wait(w, ids, n, any, timeout, &out, &err);
  if (rc < 0) {
    buf_free(&out);
    return raise_err(L, &err);
  }
  if (rc > 0) {
    buf_free(&out);
    return lg_raise_cancel(L);
  }
  push_json_buf(L, &out);
  return 1;
}

/* task_call_host(name, args_json, ctx_json) -> reply json string */
static int l_task_call_host(lua_State *L) {
  lg_worker *w = check_worker(L);
  const char *name = check_text(L, 1);
  const char *args = check_text(L, 2);
  const char *ctx = opt_text(L, 3, "{}");
  buf_t out;
  buf_init(&out);
  int rc = lg_task_call_host(w, name, args, ctx, &out);
  if (rc != 0) {
    buf_free(&out);
    if (rc < 0) return luaL_error(L, "luagent: out of memory");
    return lg_raise_cancel(L);
  }
  lua_pushlstring(L, out.p ? out.p : "null", out.p ? out.len : 4);
  buf_free(&out);
  return 1;
}

static int l_task_should_stop(lua_State *L) {
  lg_worker *w = lg_current_worker(L);
  lua_pushboolean(L, w && w->current && lg_task_should_stop(w->current));
  return 1;
}

/* --------------------------------------------------------- helpers */

/* How many SIGINTs arrived since catch_interrupt (interrupt.c). */
static int l_interrupted(lua_State *L) {
  lua_pushinteger(L, lg_interrupts());
  return 1;
}

static int l_in_worker(lua_State *L) {
  lua_pushboolean(L, lg_current_worker(L) != NULL);
  return 1;
}

static int l_is_cancel(lua_State *L) {
  lua_pushboolean(L, lg_is_cancel(L, 1));
  return 1;
}

static int l_now(lua_State *L) {
  lua_pushnumber(L, lg_mono_s());
  return 1;
}

static int l_wall_ms(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)lg_wall_ms());
  return 1;
}

static int l_new_id(lua_State *L) {
  char out[40];
  lg_make_id(opt_text(L, 1, "id_"), out);
  lua_pushstring(L, out);
  return 1;
}

static int l_realpath(lua_State *L) {
  const char *p = check_text(L, 1);
  char *r = realpath(p, NULL);
  if (!r) {
    luaL_pushfail(L);
    lua_pushstring(L, strerror(errno));
    return 2;
  }
  lua_pushstring(L, r);
  free(r);
  return 1;
}

/* ------------------------------------------------------------- http */

#define HTTP_MT "luagent.http"

typedef struct {
  lg_http *h;
} http_ud;

static lg_http *check_http(lua_State *L) {
  http_ud *u = luaL_checkudata(L, 1, HTTP_MT);
  if (!u->h) luaL_error(L, "luagent: the HTTP transfer is closed");
  return u->h;
}

/* The multi handle of the calling thread: the worker's own, or the host's
 * (registered with the app so that news for the host wakes its poll). */
static void *calling_multi(lua_State *L, int app_idx) {
  lg_worker *w = lg_current_worker(L);
  if (w) return lg_http_worker_multi(w);
  app_ud *u = luaL_checkudata(L, app_idx, APP_MT);
  if (!u->app) luaL_error(L, "luagent: the app is closed");
  if (!u->app->host_multi) lg_set_host_multi(u->app, lg_http_multi_new());
  return u->app->host_multi;
}

/* http_start(app, { method, url, headers = {"Name: value"...}, body,
 * timeout_s, connect_timeout_s, idle_timeout_s, max_bytes, stream }) -> transfer */
static int l_http_start(lua_State *L) {
  luaL_checktype(L, 2, LUA_TTABLE);
  void *multi = calling_multi(L, 1);
  lg_http_req r;
  memset(&r, 0, sizeof r);
  r.method = opt_field_str(L, 2, "method");
  r.url = opt_field_str(L, 2, "url");
  if (!r.url) return luaL_error(L, "luagent: http request needs a url");
  lua_getfield(L, 2, "body");
  r.body = lua_tolstring(L, -1, &r.body_len);
  lua_pop(L, 1); /* anchored in the table */
  r.timeout_s = opt_field_num(L, 2, "timeout_s", 0);
  r.connect_timeout_s = opt_field_num(L, 2, "connect_timeout_s", 0);
  r.idle_timeout_s = opt_field_num(L, 2, "idle_timeout_s", 0);
  r.max_bytes = (size_t)opt_field_int(L, 2, "max_bytes", 0);
  lua_getfield(L, 2, "stream");
  r.stream = lua_toboolean(L, -1);
  lua_getfield(L, 2, "truncate");
  r.truncate = lua_toboolean(L, -1);
  lua_pop(L, 2);
  lua_getfield(L, 2, "headers");
  int hidx = lua_gettop(L);
  const char **hv = NULL;
  if (lua_istable(L, hidx)) {
    int n = (int)luaL_len(L, hidx);
    hv = lua_newuserdatauv(L, (size_t)(n ? n : 1) * sizeof *hv, 0);
    for (int i = 0; i < n; i++) {
      lua_rawgeti(L, hidx, i + 1);
      size_t len_i = 0;
      hv[i] = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len_i) : NULL;
      lua_pop(L, 1);
      if (!hv[i]) return luaL_error(L, "luagent: http headers must be strings");
      if (strlen(hv[i]) != len_i) return luaL_error(L, "luagent: http headers must not contain a NUL byte");
    }
    r.headers = hv;
    r.nheaders = n;
  }
  http_ud *u = lua_newuserdatauv(L, sizeof *u, 1);
  u->h = NULL;
  luaL_setmetatable(L, HTTP_MT);
  lua_pushvalue(L, 1); /* keep the app (and its multi) alive while we live */
  lua_setiuservalue(L, -2, 1);
  char err[256];
  u->h = lg_http_start(multi, &r, err, sizeof err);
  if (!u->h) return luaL_error(L, "luagent: %s", err);
  return 1;
}

/* poll(timeout_s) -> done, events, stop. In a worker, `stop` means the task
 * must stop (cancel or deadline): the caller raises the cancel error. */
static int l_http_poll(lua_State *L) {
  lg_http *h = check_http(L);
  double t = luaL_optnumber(L, 2, 0.1);
  int ms = t > 0 ? (int)(t * 1000.0) : 0;
  lg_worker *w = lg_current_worker(L);
  lg_task *task = w ? w->current : NULL;
  int done, stop = 0;
  if (task) {
    /* publish "in HTTP" before checking the flag, so a canceller either
     * sees it and wakes us or we see its flag */
    atomic_store(&w->in_http, 1);
    if (lg_task_should_stop(task)) {
      stop = 1;
    } else if (task->deadline_mono > 0) {
      int64_t left = task->deadline_mono - lg_mono_ms();
      if (left < ms) ms = left > 0 ? (int)left : 0;
    }
  }
  done = stop ? 0 : lg_http_poll(h, ms);
  if (task) {
    atomic_store(&w->in_http, 0);
    if (!done && lg_task_should_stop(task)) stop = 1;
  }
  lua_pushboolean(L, done);
  lg_http_event *ev = lg_http_take_events(h);
  lua_newtable(L);
  int i = 0;
  while (ev) {
    lg_http_event *nx = ev->next;
    if (ev->is_error) {
      lua_createtable(L, 0, 1);
      lua_pushlstring(L, ev->data, ev->len);
      lua_setfield(L, -2, "error");
    } else {
      lua_pushlstring(L, ev->data, ev->len);
    }
    free(ev);
    lua_rawseti(L, -2, ++i);
    ev = nx;
  }
  lua_pushboolean(L, stop);
  return 3;
}

static int l_http_result(lua_State *L) {
  lg_http *h = check_http(L);
  lg_http_result r;
  lg_http_info(h, &r);
  lua_createtable(L, 0, 10);
  lua_pushinteger(L, r.status);
  lua_setfield(L, -2, "status");
  if (r.content_type) {
    lua_pushstring(L, r.content_type);
    lua_setfield(L, -2, "content_type");
  }
  lua_pushlstring(L, r.headers, r.headers_len);
  lua_setfield(L, -2, "headers_raw");
  lua_pushlstring(L, r.body, r.body_len);
  lua_setfield(L, -2, "body");
  lua_pushboolean(L, r.done);
  lua_setfield(L, -2, "done");
  lua_pushboolean(L, r.sse);
  lua_setfield(L, -2, "sse");
  lua_pushboolean(L, r.sse_pending);
  lua_setfield(L, -2, "sse_pending");
  lua_pushboolean(L, r.body_cut);
  lua_setfield(L, -2, "body_cut");
  if (r.error) {
    lua_pushstring(L, r.error);
    lua_setfield(L, -2, "error");
    lua_pushstring(L, r.error_kind);
    lua_setfield(L, -2, "error_kind");
  }
  return 1;
}

static int l_http_close(lua_State *L) {
  http_ud *u = luaL_checkudata(L, 1, HTTP_MT);
  lg_http_free(u->h);
  u->h = NULL;
  return 0;
}

static const luaL_Reg http_methods[] = {
    {"poll", l_http_poll}, {"result", l_http_result}, {"close", l_http_close}, {NULL, NULL}};

static void open_http(lua_State *L) {
  if (luaL_newmetatable(L, HTTP_MT)) {
    luaL_newlib(L, http_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_http_close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, l_http_close);
    lua_setfield(L, -2, "__close");
  }
  lua_pop(L, 1);
}

/* ------------------------------------------------------------ store */

static int l_app_store_open(lua_State *L) {
  app_ud *u = check_app(L);
  const char *path = check_text(L, 2);
  lg_store_opts o;
  memset(&o, 0, sizeof o);
  o.durability_full = lua_toboolean(L, 3);
  o.completed_s = luaL_optnumber(L, 4, 0);
  o.failed_s = luaL_optnumber(L, 5, 0);
  lg_err err = {{0}, {0}};
  if (lg_app_open_store(u->app, path, &o, &err) != 0) return luaL_error(L, "%s", err.message);
  return 0;
}

/* Every stored record, or an error: a read that fails is never half-read. */
static int l_app_store_records(lua_State *L) {
  app_ud *u = check_app(L);
  buf_t out;
  buf_init(&out);
  char err[320];
  if (lg_store_read_records(lg_app_store(u->app), &out, err, sizeof err) != 0) {
    buf_free(&out);
    return luaL_error(L, "%s", err);
  }
  push_json_buf(L, &out);
  return 1;
}

static int64_t field_time(lua_State *L, int t, const char *k) {
  return lg_parse_iso8601(opt_field_str(L, t, k));
}

/* restore(record): a record as the store kept it. */
static int l_app_restore(lua_State *L) {
  app_ud *u = check_app(L);
  luaL_checktype(L, 2, LUA_TTABLE);
  lg_restore_req r;
  memset(&r, 0, sizeof r);
  lg_enqueue_req *e = &r.base;
  read_task_fields(L, 2, e);
  e->timeout_s = opt_field_num(L, 2, "timeout_s", 300);
  e->retries = (int)opt_field_int(L, 2, "max_retries", 0);
  e->priority = opt_field_int(L, 2, "priority", 0);
  r.task_id = opt_field_str(L, 2, "task_id");
  r.run_id = opt_field_str(L, 2, "run_id");
  r.parent_task_id = opt_field_str(L, 2, "parent_task_id");
  r.root_task_id = opt_field_str(L, 2, "root_task_id");
  r.status = opt_field_str(L, 2, "status");
  r.run_status = opt_field_str(L, 2, "run_status");
  r.attempts = (int)opt_field_int(L, 2, "attempts", 0);
  lua_getfield(L, 2, "delivered");
  r.delivered = lua_toboolean(L, -1);
  lua_getfield(L, 2, "cancel_requested");
  r.cancel_requested = lua_toboolean(L, -1);
  lua_pop(L, 2);
  r.enqueued_at = field_time(L, 2, "enqueued_at");
  r.started_at = field_time(L, 2, "started_at");
  r.finished_at = field_time(L, 2, "finished_at");
  r.retry_at = field_time(L, 2, "retry_at");
  read_usage(L, 2, "usage", &r.usage);
  read_usage(L, 2, "tree_usage", &r.tree_usage);
  lua_getfield(L, 2, "error");
  if (lua_istable(L, -1)) {
    r.error_kind = opt_field_str(L, -1, "kind");
    r.error_message = opt_field_str(L, -1, "message");
    r.error_status = (int)opt_field_int(L, -1, "status", 0);
  }
  /* JSON parts are re-encoded; the strings stay on the stack until the call */
  const char *json_keys[] = {"args", "metadata", "result", "usage"};
  const char **json_out[] = {&e->args_json, &e->metadata_json, &r.result_json, &r.usage_json};
  for (int i = 0; i < 4; i++) {
    lua_getfield(L, 2, json_keys[i]);
    if (!lua_isnil(L, -1)) {
      buf_t b;
      buf_init(&b);
      char msg[256];
      if (lg_json_encode(L, -1, &b, msg, sizeof msg) == 0) {
        lua_pushlstring(L, b.p ? b.p : "null", b.p ? b.len : 4);
        *json_out[i] = lua_tostring(L, -1);
      }
      buf_free(&b);
    }
  }
  if (!r.task_id) return luaL_error(L, "luagent: a stored record has no task_id");
  lg_err err = {{0}, {0}};
  if (lg_restore(u->app, &r, &err) != 0) return luaL_error(L, "%s", err.message);
  return 0;
}

/* Applies R-40; returns the highest event seq the file held before. */
static int l_app_restore_done(lua_State *L) {
  app_ud *u = check_app(L);
  lua_pushinteger(L, (lua_Integer)lg_restore_done(u->app));
  return 1;
}

/* How the file store runs, or nil for memory only. */
static int l_app_store_info(lua_State *L) {
  app_ud *u = check_app(L);
  lg_store_info_t i;
  lg_store_info(lg_app_store(u->app), &i);
  if (!i.path) return 0;
  lua_createtable(L, 0, 5);
  lua_pushstring(L, i.path);
  lua_setfield(L, -2, "path");
  lua_pushinteger(L, i.synchronous);
  lua_setfield(L, -2, "synchronous");
  lua_pushstring(L, i.journal_mode);
  lua_setfield(L, -2, "journal_mode");
  lua_pushinteger(L, i.schema_version);
  lua_setfield(L, -2, "schema_version");
  if (i.error[0]) {
    lua_pushstring(L, i.error);
    lua_setfield(L, -2, "error");
  }
  lua_pushinteger(L, (lua_Integer)i.write_failures);
  lua_setfield(L, -2, "write_failures");
  lua_pushinteger(L, (lua_Integer)i.read_failures);
  lua_setfield(L, -2, "read_failures");
  buf_t ids;
  buf_init(&ids);
  lg_store_unsaved(lg_app_store(u->app), &ids);
  push_json_buf(L, &ids);
  lua_setfield(L, -2, "unsaved");
  return 1;
}

/* Tests only: make the file store's writes fail as on a full disk. */
static int l_app_store_limit_pages(lua_State *L) {
  app_ud *u = check_app(L);
  lua_Integer pages = luaL_checkinteger(L, 2);
  lua_pushinteger(L, (lua_Integer)lg_store_limit_pages(lg_app_store(u->app), (int64_t)pages));
  return 1;
}

static int l_app_thread_get(lua_State *L) {
  app_ud *u = check_app(L);
  const char *key = check_text(L, 2);
  buf_t out;
  buf_init(&out);
  int rc = lg_thread_get(u->app, key, &out);
  if (rc != 0) {
    buf_free(&out);
    if (rc == -1) return 0;
    /* a conversation that cannot be read is not an empty one */
    lg_store_info_t i;
    lg_store_info(lg_app_store(u->app), &i);
    return luaL_error(L, "%s", i.error);
  }
  lua_pushlstring(L, out.p ? out.p : "", out.len);
  buf_free(&out);
  return 1;
}

static int l_app_thread_put(lua_State *L) {
  app_ud *u = check_app(L);
  const char *key = check_text(L, 2);
  const char *json = check_text(L, 3);
  lg_err err = {{0}, {0}};
  if (lg_thread_put(u->app, key, json, &err) != 0) return raise_err(L, &err);
  return 0;
}

static int l_app_claim(lua_State *L) {
  app_ud *u = check_app(L);
  luaL_checktype(L, 2, LUA_TTABLE);
  lg_filter f;
  memset(&f, 0, sizeof f);
  f.parent_agent_id = opt_field_str(L, 2, "parent_agent_id");
  f.thread_id = opt_field_str(L, 2, "thread_id");
  f.parent_task_id = opt_field_str(L, 2, "parent_task_id");
  f.limit = (int)opt_field_int(L, 2, "limit", 0);
  buf_t out;
  buf_init(&out);
  lg_claim(u->app, calling_task(L), &f, &out);
  push_json_buf(L, &out);
  return 1;
}

static int l_app_unclaim(lua_State *L) {
  app_ud *u = check_app(L);
  lg_unclaim(u->app, check_text(L, 2));
  return 0;
}

static const luaL_Reg app_methods[] = {
    {"enqueue", l_app_enqueue},       {"get", l_app_get},
    {"status", l_app_status},         {"list", l_app_list},
    {"cancel", l_app_cancel},         {"set_delivered", l_app_set_delivered},
    {"digests", l_app_digests},
    {"store_open", l_app_store_open},
    {"store_records", l_app_store_records},
    {"restore", l_app_restore},
    {"restore_done", l_app_restore_done},
    {"store_info", l_app_store_info},
    {"store_limit_pages", l_app_store_limit_pages},
    {"thread_get", l_app_thread_get},
    {"thread_put", l_app_thread_put},
    {"claim", l_app_claim},
    {"unclaim", l_app_unclaim},
    {"wait_check", l_app_wait_check}, {"hold", l_app_hold},
    {"gen", l_app_gen},
    {"block", l_app_block},           {"take", l_app_take},
    {"reply", l_app_reply},           {"set_wants", l_app_set_wants},
    {"emit", l_app_emit},             {"events", l_app_events},
    {"stats", l_app_stats},           {"close", l_app_close},
    {"add_usage", l_app_add_usage},   {"catch_interrupt", l_app_catch_interrupt},
    {NULL, NULL}};

static const luaL_Reg core_funcs[] = {
    {"app_new", l_app_new},
    {"worker_app", l_worker_app},
    {"in_worker", l_in_worker},
    {"is_cancel", l_is_cancel},
    {"now", l_now},
    {"wall_ms", l_wall_ms},
    {"new_id", l_new_id},
    {"realpath", l_realpath},
    {"http_start", l_http_start},
    {"task_sleep", l_task_sleep},
    {"task_wait", l_task_wait},
    {"task_call_host", l_task_call_host},
    {"task_should_stop", l_task_should_stop},
    {"interrupted", l_interrupted},
    {NULL, NULL}};

/* R-25a: detached or idle worker threads may still run our code after the
 * host state closes and dlcloses us (an app that was only garbage
 * collected, a worker stuck in a C call at close). Pin the module so its
 * code and statics stay mapped for the life of the process. */
static pthread_once_t pin_once = PTHREAD_ONCE_INIT;

static void pin_module(void) {
  Dl_info info;
  if (dladdr((void *)&luaopen_luagent_core, &info) && info.dli_fname) {
    /* the handle is never closed; RTLD_NODELETE keeps us past the loader's
     * own dlclose as well */
    void *h = dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
    (void)h;
  }
}

LUAGENT_API int luaopen_luagent_core(lua_State *L) {
  pthread_once(&pin_once, pin_module);
  /* metatables live in the registry: reused when busted reloads us */
  if (luaL_newmetatable(L, APP_MT)) {
    luaL_newlib(L, app_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_app_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, ERR_MT)) {
    lua_pushcfunction(L, err_tostring);
    lua_setfield(L, -2, "__tostring");
  }
  lua_pop(L, 1);
  open_http(L);
  luaL_newlib(L, core_funcs);
  lg_store_reader_open(L);
  lg_pg_open(L);
  lg_stall_open(L);
  lg_json_open(L);
  lua_setfield(L, -2, "json");
  lg_push_cancel(L);
  lua_setfield(L, -2, "cancel_error");
  luaL_getmetatable(L, ERR_MT);
  lua_setfield(L, -2, "error_mt");
  lua_pushinteger(L, W_ENQUEUED);
  lua_setfield(L, -2, "W_ENQUEUED");
  lua_pushinteger(L, W_STARTED);
  lua_setfield(L, -2, "W_STARTED");
  lua_pushinteger(L, W_RETRY);
  lua_setfield(L, -2, "W_RETRY");
  lua_pushinteger(L, W_FINISHED);
  lua_setfield(L, -2, "W_FINISHED");
  lua_pushinteger(L, W_ERROR);
  lua_setfield(L, -2, "W_ERROR");
  return 1;
}
