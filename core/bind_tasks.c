/* Bindings of tasks and waits: enqueue, look-ups, cancel, delivery, wait
 * values, and the blocking calls a background task makes (sleep, wait,
 * block, should_stop). */
#include "bind.h"
#include "budget.h"

#include <limits.h>
#include <string.h>

/* One enqueue request from the Lua table at `t` (strings stay anchored
 * there); l: where its tree budget, if any, is read into. */
static void read_request(lua_State *L, int t, lg_enqueue_req *r, lg_budget_limits *l) {
  memset(r, 0, sizeof *r);
  lg_read_task_fields(L, t, r);
  r->args_json = lg_opt_field_str(L, t, "args");
  r->metadata_json = lg_opt_field_str(L, t, "metadata");
  r->timeout_s = lg_opt_field_num(L, t, "timeout_s", -1);
  r->retries = (int)lg_opt_field_int(L, t, "retries", -1);
  r->priority = lg_opt_field_int(L, t, "priority", LLONG_MIN);
  lg_bind_budget_fields(L, t, r, l); /* rate and tree budgets (bind_budgets.c) */
}

/* The record of the JSON object text p[0..n), decoded when a field other
 * than task_id is first read: an enqueue whose record is ignored decodes
 * nothing else. */
static void push_record(lua_State *L, const char *p, size_t n) {
  lua_pushlstring(L, p ? p : "null", p ? n : 4);
  lg_json_push_handle(L, "task_id");
}

static int l_app_enqueue(lua_State *L) {
  app_ud *u = lg_check_app(L);
  luaL_checktype(L, 2, LUA_TTABLE);
  lg_enqueue_req r;
  lg_budget_limits tree_budget;
  read_request(L, 2, &r, &tree_budget);
  lg_err err = {{0}, {0}};
  buf_t out;
  lg_buf_init(&out);
  if (lg_enqueue(u->app, lg_calling_task(L), &r, &out, &err) != 0) {
    lg_buf_free(&out);
    return lg_raise_err(L, &err);
  }
  if (out.oom) {
    lg_buf_free(&out);
    return luaL_error(L, "luagent: out of memory");
  }
  push_record(L, out.p, out.len);
  lg_buf_free(&out);
  return 1;
}

/* enqueue_many({req, ...}) -> {record, ...}: one lock, one commit, all or
 * nothing. A refusal of one request raises {kind, message, index} (index
 * 1-based, the message naming it). */
static int l_app_enqueue_many(lua_State *L) {
  app_ud *u = lg_check_app(L);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_Integer len = luaL_len(L, 2);
  if (len < 0 || len > INT_MAX / 2) return luaL_error(L, "luagent: too many requests");
  int n = (int)len;
  lua_createtable(L, n, 0); /* the records */
  if (n == 0) return 1;
  size_t one = sizeof(lg_enqueue_req) + sizeof(lg_budget_limits) + sizeof(size_t);
  char *mem = lua_newuserdatauv(L, (size_t)n * one, 0); /* freed with the call */
  lg_enqueue_req *rs = (lg_enqueue_req *)mem;
  lg_budget_limits *ls = (lg_budget_limits *)(mem + (size_t)n * sizeof *rs);
  size_t *ends = (size_t *)(mem + (size_t)n * (sizeof *rs + sizeof *ls));
  for (int i = 0; i < n; i++) {
    if (lua_rawgeti(L, 2, i + 1) != LUA_TTABLE)
      return luaL_error(L, "luagent: request %d is not a table", i + 1);
    read_request(L, lua_gettop(L), &rs[i], &ls[i]);
    lua_pop(L, 1); /* its strings stay anchored in the list */
  }
  lg_err err = {{0}, {0}};
  buf_t out;
  lg_buf_init(&out);
  int bad = -1;
  if (lg_enqueue_many(u->app, lg_calling_task(L), rs, n, &out, ends, &bad, &err) != 0) {
    lg_buf_free(&out);
    if (bad < 0) return lg_raise_err(L, &err);
    lua_createtable(L, 0, 3);
    lua_pushstring(L, err.kind[0] ? err.kind : "runtime");
    lua_setfield(L, -2, "kind");
    lua_pushfstring(L, "entry %d: %s", bad + 1, err.message);
    lua_setfield(L, -2, "message");
    lua_pushinteger(L, bad + 1);
    lua_setfield(L, -2, "index");
    luaL_setmetatable(L, ERR_MT);
    return lua_error(L);
  }
  if (out.oom) {
    lg_buf_free(&out);
    return luaL_error(L, "luagent: out of memory");
  }
  int list = lua_gettop(L) - 1;
  size_t from = 0;
  for (int i = 0; i < n; i++) {
    push_record(L, out.p + from, ends[i] - from);
    lua_rawseti(L, list, i + 1);
    from = ends[i];
  }
  lg_buf_free(&out);
  lua_settop(L, list);
  return 1;
}

static int l_app_get(lua_State *L) {
  app_ud *u = lg_check_app(L);
  const char *id = lg_check_text(L, 2);
  buf_t out;
  lg_buf_init(&out);
  return lg_push_found(L, lg_get(u->app, id, &out), &out);
}

static int l_app_status(lua_State *L) {
  app_ud *u = lg_check_app(L);
  char st[16];
  if (lg_status(u->app, lg_check_text(L, 2), st) != 0) return 0;
  lua_pushstring(L, st);
  return 1;
}

static int l_app_list(lua_State *L) {
  app_ud *u = lg_check_app(L);
  lg_filter f;
  memset(&f, 0, sizeof f);
  if (lua_istable(L, 2)) {
    f.status = lg_opt_field_str(L, 2, "status");
    f.agent_id = lg_opt_field_str(L, 2, "agent_id");
    f.parent_agent_id = lg_opt_field_str(L, 2, "parent_agent_id");
    f.thread_id = lg_opt_field_str(L, 2, "thread_id");
    f.parent_run_id = lg_opt_field_str(L, 2, "parent_run_id");
    f.parent_task_id = lg_opt_field_str(L, 2, "parent_task_id");
    f.limit = (int)lg_opt_field_int(L, 2, "limit", 0);
    lua_getfield(L, 2, "include_finished");
    f.include_finished = lua_toboolean(L, -1);
    lua_pop(L, 1);
  }
  buf_t out;
  lg_buf_init(&out);
  lg_list(u->app, &f, &out);
  lg_push_json_buf(L, &out);
  return 1;
}

static int l_app_cancel(lua_State *L) {
  app_ud *u = lg_check_app(L);
  const char *id = lg_check_text(L, 2);
  buf_t out;
  lg_buf_init(&out);
  return lg_push_found(L, lg_cancel(u->app, id, &out), &out);
}

static int l_app_digests(lua_State *L) {
  app_ud *u = lg_check_app(L);
  const char *id = lg_check_text(L, 2);
  int n = (int)luaL_optinteger(L, 3, 16);
  buf_t out;
  lg_buf_init(&out);
  return lg_push_found(L, lg_task_digests(u->app, id, n, &out), &out);
}

/* wait_begin(ids, any) -> wait; unknown ids raise {kind = "not_found"}. */
/* set_delivered(id) -> found; set_delivered({ids}): one store commit */
static int l_app_set_delivered(lua_State *L) {
  app_ud *u = lg_check_app(L);
  if (lua_istable(L, 2)) {
    int n;
    char **ids = lg_check_ids(L, 2, &n);
    lg_set_delivered_many(u->app, (const char *const *)ids, n);
    return 0;
  }
  lua_pushboolean(L, lg_set_delivered(u->app, lg_check_text(L, 2)) == 0);
  return 1;
}

static int l_app_wait_begin(lua_State *L) {
  app_ud *u = lg_check_app(L);
  int n;
  char **ids = lg_check_ids(L, 2, &n);
  int any = lua_toboolean(L, 3);
  luaL_checkstack(L, 4, NULL);
  lg_err err = {{0}, {0}};
  lg_wait *w = lg_wait_begin(u->app, lg_calling_task(L), ids, n, any, &err);
  if (!w) return lg_raise_err(L, &err);
  lg_push_wait(L, w);
  return 1;
}

static int l_wait_over(lua_State *L) {
  lua_pushboolean(L, lg_wait_over(lg_check_wait(L, 1)->w));
  return 1;
}

/* value(timed_out) -> {done, timed_out, tasks, pending} */
static int l_wait_value(lua_State *L) {
  wait_ud *u = lg_check_wait(L, 1);
  buf_t out;
  lg_buf_init(&out);
  lg_wait_value(u->w, lua_toboolean(L, 2), &out);
  lg_count_wait_decode();
  lg_push_json_buf(L, &out);
  return 1;
}

static int l_wait_close(lua_State *L) {
  wait_ud *u = luaL_checkudata(L, 1, WAIT_MT);
  lg_wait *w = u->w;
  u->w = NULL;
  lg_wait_free(w);
  return 0;
}

static const luaL_Reg wait_methods[] = {
    {"over", l_wait_over}, {"value", l_wait_value}, {"close", l_wait_close}, {NULL, NULL}};

static int l_task_sleep(lua_State *L) {
  lg_worker *w = lg_check_worker(L);
  double s = luaL_checknumber(L, 1);
  int rc = lg_task_sleep(w, s > 0 ? s : 0);
  if (rc == 2) return lg_raise_interrupt(L);
  if (rc) return lg_raise_cancel(L);
  return 0;
}

/* task_wait(ids, any, timeout_s) -> value */
static int l_task_wait(lua_State *L) {
  lg_worker *w = lg_check_worker(L);
  int n;
  char **ids = lg_check_ids(L, 1, &n);
  int any = lua_toboolean(L, 2);
  double timeout = luaL_optnumber(L, 3, -1);
  lg_err err = {{0}, {0}};
  buf_t out;
  lg_buf_init(&out);
  int rc = lg_task_wait(w, ids, n, any, timeout, &out, &err);
  if (rc < 0) {
    lg_buf_free(&out);
    return lg_raise_err(L, &err);
  }
  if (rc > 0) {
    lg_buf_free(&out);
    return rc == 2 ? lg_raise_interrupt(L) : lg_raise_cancel(L);
  }
  lg_push_json_buf(L, &out);
  return 1;
}

/* task_block(wait, timeout_s): the calling task waits on it, lending its
 * slot; raises the cancel error when the task must stop. */
static int l_task_block(lua_State *L) {
  lg_worker *w = lg_check_worker(L);
  wait_ud *u = lg_check_wait(L, 1);
  double timeout = luaL_optnumber(L, 2, -1);
  int rc = lg_task_block(w, u->w, timeout);
  if (rc == 2) return lg_raise_interrupt(L);
  if (rc) return lg_raise_cancel(L);
  return 0;
}

static int l_task_should_stop(lua_State *L) {
  lg_worker *w = lg_current_worker(L);
  lg_task *t = lg_worker_current(w);
  lua_pushboolean(L, t && lg_task_should_stop(t));
  return 1;
}

/* task_heartbeat(): the calling task is alive (a no-op outside a task). */
static int l_task_heartbeat(lua_State *L) {
  lg_task_heartbeat(lg_calling_task(L));
  return 0;
}

const luaL_Reg lg_bind_tasks_methods[] = {
    {"enqueue", l_app_enqueue},     {"enqueue_many", l_app_enqueue_many},
    {"get", l_app_get},
    {"status", l_app_status},       {"list", l_app_list},
    {"cancel", l_app_cancel},       {"set_delivered", l_app_set_delivered},
    {"digests", l_app_digests},     {"wait_begin", l_app_wait_begin},
    {NULL, NULL}};

const luaL_Reg lg_bind_tasks_funcs[] = {
    {"task_sleep", l_task_sleep},   {"task_wait", l_task_wait},
    {"task_block", l_task_block},   {"task_should_stop", l_task_should_stop},
    {"task_heartbeat", l_task_heartbeat}, {NULL, NULL}};

void lg_bind_tasks_open(lua_State *L) { lg_open_handle_mt(L, WAIT_MT, wait_methods, l_wait_close); }
