/* Helpers every binding file uses (bind.h): reading arguments, raising
 * luagent's error tables, decoding the JSON the core wrote. */
#include "bind.h"

#include <limits.h>
#include <stdatomic.h>
#include <string.h>

static atomic_long wait_decodes;

void lg_count_wait_decode(void) { atomic_fetch_add(&wait_decodes, 1); }
long lg_wait_decodes(void) { return atomic_load(&wait_decodes); }

app_ud *lg_check_app(lua_State *L) {
  app_ud *u = luaL_checkudata(L, 1, APP_MT);
  if (!u->app) luaL_error(L, "luagent: the app is closed");
  /* code of a task whose worker was retired runs on: its calls are refused */
  if (u->worker_handle && lg_worker_retired(L)) lg_raise_cancel(L);
  return u;
}

/* Decode JSON written by the core; the buffer is freed first so a Lua error
 * in decoding cannot leak it. */
void lg_push_json_buf(lua_State *L, buf_t *b) {
  if (b->oom) {
    lg_buf_free(b);
    luaL_error(L, "luagent: out of memory");
  }
  lua_pushlstring(L, b->p ? b->p : "null", b->p ? b->len : 4);
  lg_buf_free(b);
  size_t n;
  const char *s = lua_tolstring(L, -1, &n);
  lg_json_push(L, s, n);
  lua_remove(L, -2);
}

/* The JSON a lookup wrote, or no value when it found nothing (rc != 0). */
int lg_push_found(lua_State *L, int rc, buf_t *b) {
  if (rc != 0) {
    lg_buf_free(b);
    return 0;
  }
  lg_push_json_buf(L, b);
  return 1;
}

/* Raise {kind=, message=} (an error table with __tostring). */
int lg_raise_err(lua_State *L, const lg_err *e) {
  lua_createtable(L, 0, 2);
  lua_pushstring(L, e->kind[0] ? e->kind : "runtime");
  lua_setfield(L, -2, "kind");
  lua_pushstring(L, e->message);
  lua_setfield(L, -2, "message");
  luaL_setmetatable(L, ERR_MT);
  return lua_error(L);
}

/* Strings cross into the core as C strings, where an embedded NUL would
 * silently cut them (a thread "victim\0x" would be read as "victim"): they
 * are read with their length and refused when they hold a NUL. */
const char *lg_check_text(lua_State *L, int idx) {
  size_t n;
  const char *s = luaL_checklstring(L, idx, &n);
  if (strlen(s) != n) luaL_argerror(L, idx, "must not contain a NUL byte");
  return s;
}

const char *lg_opt_text(lua_State *L, int idx, const char *d) {
  return lua_isnoneornil(L, idx) ? d : lg_check_text(L, idx);
}

/* A string field of the table at t, or NULL when it is not a string. */
const char *lg_opt_field_str(lua_State *L, int t, const char *k) {
  lua_getfield(L, t, k);
  size_t n = 0;
  const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &n) : NULL;
  if (s && strlen(s) != n) luaL_error(L, "luagent: field \"%s\" must not contain a NUL byte", k);
  lua_pop(L, 1); /* a string stays anchored in the table */
  return s;
}

double lg_opt_field_num(lua_State *L, int t, const char *k, double d) {
  lua_getfield(L, t, k);
  double v = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : d;
  lua_pop(L, 1);
  return v;
}

lua_Integer lg_opt_field_int(lua_State *L, int t, const char *k, lua_Integer d) {
  lua_getfield(L, t, k);
  lua_Integer v = lua_isnumber(L, -1) ? lua_tointeger(L, -1) : d;
  lua_pop(L, 1);
  return v;
}

/* A usage table ({prompt_tokens, completion_tokens, total_tokens,
 * cached_tokens?, cost?, estimated?}) at t, or nothing (u->set = 0). */
void lg_read_usage(lua_State *L, int t, const char *k, lg_usage *u) {
  memset(u, 0, sizeof *u);
  lua_getfield(L, t, k);
  if (lua_istable(L, -1)) {
    int i = lua_gettop(L);
    u->set = 1;
    u->prompt = lg_opt_field_int(L, i, "prompt_tokens", 0);
    u->completion = lg_opt_field_int(L, i, "completion_tokens", 0);
    u->total = lg_opt_field_int(L, i, "total_tokens", u->prompt + u->completion);
    u->cached = lg_opt_field_int(L, i, "cached_tokens", 0);
    lua_getfield(L, i, "cost");
    u->has_cost = lua_isnumber(L, -1);
    u->cost = u->has_cost ? lua_tonumber(L, -1) : 0;
    lua_getfield(L, i, "estimated");
    u->estimated = lua_toboolean(L, -1);
    lua_pop(L, 2);
  }
  lua_pop(L, 1);
}

lg_task *lg_calling_task(lua_State *L) {
  return lg_worker_current(lg_current_worker(L));
}

lg_worker *lg_check_worker(lua_State *L) {
  lg_worker *w = lg_current_worker(L);
  if (!lg_worker_current(w)) luaL_error(L, "luagent: not inside a background task");
  if (lg_worker_retired(L)) lg_raise_cancel(L); /* its task is finished */
  return w;
}

/* The fields an enqueue request and a stored record share (strings stay
 * anchored in the table at `t`). */
void lg_read_task_fields(lua_State *L, int t, lg_enqueue_req *r) {
  const char *kind = lg_opt_field_str(L, t, "kind");
  r->kind = kind && strcmp(kind, "agent") == 0 ? TK_AGENT : TK_TOOL;
  r->tool = lg_opt_field_str(L, t, "tool");
  r->agent_id = lg_opt_field_str(L, t, "agent_id");
  r->thread_id = lg_opt_field_str(L, t, "thread_id");
  r->prompt = lg_opt_field_str(L, t, "prompt");
  r->tool_call_id = lg_opt_field_str(L, t, "tool_call_id");
  r->parent_run_id = lg_opt_field_str(L, t, "parent_run_id");
  r->parent_agent_id = lg_opt_field_str(L, t, "parent_agent_id");
  r->root_key = lg_opt_field_str(L, t, "root_key");
  r->stale_after_s = lg_opt_field_num(L, t, "stale_after_s", 0);
  r->idempotency_key = lg_opt_field_str(L, t, "idempotency_key");
  r->depth = (int)lg_opt_field_int(L, t, "depth", 0);
  r->max_depth = (int)lg_opt_field_int(L, t, "max_depth", -1);
  lua_getfield(L, t, "scoped");
  r->scoped = lua_toboolean(L, -1);
  lua_pop(L, 1);
}

/* ids: a Lua array of strings -> C array (pointers anchored in the table) */
char **lg_check_ids(lua_State *L, int idx, int *n) {
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

wait_ud *lg_check_wait(lua_State *L, int idx) {
  wait_ud *u = luaL_checkudata(L, idx, WAIT_MT);
  if (!u->w) luaL_error(L, "luagent: the wait is closed");
  return u;
}

/* A wait as a Lua value; takes ownership of w. */
void lg_push_wait(lua_State *L, lg_wait *w) {
  wait_ud *u = lua_newuserdatauv(L, sizeof *u, 0);
  u->w = NULL;
  luaL_setmetatable(L, WAIT_MT);
  u->w = w;
}

/* The metatable of a handle: methods, and `close` for __gc and __close. */
void lg_open_handle_mt(lua_State *L, const char *name, const luaL_Reg *methods,
                           lua_CFunction close) {
  if (luaL_newmetatable(L, name)) {
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, close);
    lua_setfield(L, -2, "__close");
  }
  lua_pop(L, 1);
}

void lg_set_str(lua_State *L, const char *k, const char *v) {
  lua_pushstring(L, v);
  lua_setfield(L, -2, k);
}

void lg_set_lstr(lua_State *L, const char *k, const char *v, size_t n) {
  lua_pushlstring(L, v, n);
  lua_setfield(L, -2, k);
}

void lg_set_int(lua_State *L, const char *k, lua_Integer v) {
  lua_pushinteger(L, v);
  lua_setfield(L, -2, k);
}

void lg_set_num(lua_State *L, const char *k, lua_Number v) {
  lua_pushnumber(L, v);
  lua_setfield(L, -2, k);
}

void lg_set_bool(lua_State *L, const char *k, int v) {
  lua_pushboolean(L, v);
  lua_setfield(L, -2, k);
}
