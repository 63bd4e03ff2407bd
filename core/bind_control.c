/* Bindings of the control tools (control.c, R-32, R-33): bg_list, bg_check,
 * bg_cancel, bg_send, bg_wait and notice claims, each with the caller's
 * scope; and the host's send and a run's delivery of its messages (steer.c). */
#include "bind.h"

#include <stdlib.h>

/* {agent_id, thread_id, task_id} -> scope (strings anchored in the table) */
static void check_scope(lua_State *L, int idx, luagent_scope *s) {
  luaL_checktype(L, idx, LUA_TTABLE);
  s->agent_id = lg_opt_field_str(L, idx, "agent_id");
  s->thread_id = lg_opt_field_str(L, idx, "thread_id");
  s->task_id = lg_opt_field_str(L, idx, "task_id");
  s->root_key = lg_opt_field_str(L, idx, "root_key");
}

/* Decode a ToolResult the core wrote (malloc'd; NULL: out of memory). */
static int push_tool_result(lua_State *L, char *json) {
  if (!json) return luaL_error(L, "luagent: out of memory");
  lua_pushstring(L, json);
  free(json);
  size_t n;
  const char *s = lua_tolstring(L, -1, &n);
  lg_json_push(L, s, n);
  lua_remove(L, -2);
  return 1;
}

typedef char *(*control_fn)(lg_app *, const luagent_scope *, const char *);

static int control_call(lua_State *L, control_fn fn) {
  app_ud *u = lg_check_app(L);
  luagent_scope s;
  check_scope(L, 2, &s);
  return push_tool_result(L, fn(u->app, &s, luaL_optstring(L, 3, "{}")));
}

static int l_app_bg_list(lua_State *L) { return control_call(L, luagent_bg_list); }

static int l_app_bg_check(lua_State *L) { return control_call(L, luagent_bg_check); }

static int l_app_bg_cancel(lua_State *L) { return control_call(L, luagent_bg_cancel); }

static int l_app_bg_send(lua_State *L) { return control_call(L, luagent_bg_send); }

/* send(task_id, text, from, interrupt) -> {ok = true, seq, status, task_id,
 * interrupt} or {ok = false, status, task_id} (finished); raises {kind,
 * message} for an unknown id, a tool task or a failed store write. The
 * host's app:send: no scope (steer.c). */
static int l_app_send(lua_State *L) {
  app_ud *u = lg_check_app(L);
  const char *id = lg_check_text(L, 2);
  const char *text = lg_check_text(L, 3);
  const char *from = lg_check_text(L, 4);
  int interrupt = lua_toboolean(L, 5);
  buf_t out;
  lg_buf_init(&out);
  lg_err err = {{0}, {0}};
  int rc = lg_send(u->app, id, text, from, interrupt, &out, &err);
  if (rc < 0) {
    lg_buf_free(&out);
    return lg_raise_err(L, &err);
  }
  lg_push_json_buf(L, &out);
  return 1;
}

/* take_messages() -> the calling task's undelivered messages {seq, from,
 * text}, now marked delivered (committed); {} outside a task. */
static int l_app_take_messages(lua_State *L) {
  app_ud *u = lg_check_app(L);
  buf_t out;
  lg_buf_init(&out);
  lg_take_messages(u->app, lg_calling_task(L), &out);
  lg_push_json_buf(L, &out);
  return 1;
}

/* bg_wait_begin(scope, args_json) -> wait, timeout_s | nil, ToolResult */
static int l_app_bg_wait_begin(lua_State *L) {
  app_ud *u = lg_check_app(L);
  luagent_scope s;
  check_scope(L, 2, &s);
  const char *args = luaL_optstring(L, 3, "{}");
  luaL_checkstack(L, 4, NULL);
  double timeout;
  char *answer = NULL;
  lg_wait *w = luagent_bg_wait_begin(u->app, &s, args, &timeout, &answer);
  if (!w) {
    lua_pushnil(L);
    push_tool_result(L, answer);
    return 2;
  }
  lg_push_wait(L, w);
  lua_pushnumber(L, timeout);
  return 2;
}

static int l_app_bg_wait_finish(lua_State *L) {
  app_ud *u = lg_check_app(L);
  wait_ud *w = lg_check_wait(L, 2);
  lg_count_wait_decode();
  return push_tool_result(L, luagent_bg_wait_finish(u->app, w->w));
}

/* bounded_result(text, max, task_id) -> text, or its first page and a note
 * when it is longer than max or max_result_bytes (what a notice shows of a
 * big result; the same cut as bg_check's). */
static int l_app_bounded_result(lua_State *L) {
  app_ud *u = lg_check_app(L);
  size_t n;
  const char *text = luaL_checklstring(L, 2, &n);
  lua_Integer max = luaL_checkinteger(L, 3);
  const char *id = lg_check_text(L, 4);
  luaL_argcheck(L, max >= 1, 3, "must be >= 1");
  if (max > lg_app_max_result(u->app)) max = lg_app_max_result(u->app);
  buf_t out;
  lg_buf_init(&out);
  lg_control_bounded(text, n, (size_t)max, id, &out);
  if (out.oom) {
    lg_buf_free(&out);
    return luaL_error(L, "luagent: out of memory");
  }
  lua_pushlstring(L, out.p ? out.p : "", out.len);
  lg_buf_free(&out);
  return 1;
}

/* claim(scope) -> records of the scope's finished, undelivered children */
static int l_app_claim(lua_State *L) {
  app_ud *u = lg_check_app(L);
  luagent_scope s;
  check_scope(L, 2, &s);
  buf_t out;
  lg_buf_init(&out);
  lg_control_claim(u->app, &s, lg_calling_task(L), &out);
  lg_push_json_buf(L, &out);
  return 1;
}

static int l_app_unclaim(lua_State *L) {
  app_ud *u = lg_check_app(L);
  lg_unclaim(u->app, lg_check_text(L, 2));
  return 0;
}

/* pending_messages() -> how many of the calling task's messages wait */
static int l_app_pending_messages(lua_State *L) {
  app_ud *u = lg_check_app(L);
  lua_pushinteger(L, lg_pending_messages(u->app, lg_calling_task(L)));
  return 1;
}

const luaL_Reg lg_bind_control_methods[] = {
    {"bg_list", l_app_bg_list},             {"bg_check", l_app_bg_check},
    {"bg_cancel", l_app_bg_cancel},         {"bg_wait_begin", l_app_bg_wait_begin},
    {"bg_send", l_app_bg_send},             {"send", l_app_send},
    {"take_messages", l_app_take_messages}, {"pending_messages", l_app_pending_messages},
    {"bg_wait_finish", l_app_bg_wait_finish}, {"claim", l_app_claim},
    {"unclaim", l_app_unclaim},             {"bounded_result", l_app_bounded_result},
    {NULL, NULL}};
