/* Lua bindings of the rate and tree budgets (README "Rate limits", "Tree
 * budgets"). Values cross as C scalars and JSON text written by the core,
 * decoded after its mutex is released. */
#include "bind.h"
#include "budget.h"
#include "ratelimit.h"

#include <string.h>

static double field_num(lua_State *L, int t, const char *k, double d) {
  lua_getfield(L, t, k);
  double v = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : d;
  lua_pop(L, 1);
  return v;
}

/* ------------------------------------------------------------ rate budgets */

/* rate_define(key, {requests, tokens, max_concurrency, window_s}) */
static int l_rate_define(lua_State *L) {
  lg_app *a = lg_check_app(L)->app;
  const char *key = luaL_checkstring(L, 2);
  luaL_checktype(L, 3, LUA_TTABLE);
  lg_rate_limits l = {
      .requests = (long long)field_num(L, 3, "requests", 0),
      .tokens = (long long)field_num(L, 3, "tokens", 0),
      .max_concurrency = (int)field_num(L, 3, "max_concurrency", 0),
      .window_s = field_num(L, 3, "window_s", 60),
  };
  if (lg_rate_define(a, key, &l) != 0) return luaL_error(L, "luagent: out of memory");
  return 0;
}

/* rate_try(key, est) -> true, probe | false, reason, wait_s (0: until a call ends) */
static int l_rate_try(lua_State *L) {
  lg_app *a = lg_check_app(L)->app;
  const char *key = luaL_checkstring(L, 2);
  long long est = (long long)luaL_optinteger(L, 3, 0);
  lg_rate_grant g = {0, 0};
  double wait = 0;
  const char *reason = "unknown";
  int rc = lg_rate_try(a, key, est, &g, &wait, &reason);
  if (rc < 0) return luaL_error(L, "luagent: no rate budget named %s", key);
  lua_pushboolean(L, rc);
  if (rc) {
    lua_pushboolean(L, g.probe);
    return 2;
  }
  lua_pushstring(L, reason);
  lua_pushnumber(L, wait);
  return 3;
}

/* rate_done(key, est, probe, used (-1: unknown), pause_s) */
static int l_rate_done(lua_State *L) {
  lg_app *a = lg_check_app(L)->app;
  const char *key = luaL_checkstring(L, 2);
  lg_rate_grant g = {(long long)luaL_checkinteger(L, 3), lua_toboolean(L, 4)};
  lg_rate_done(a, key, &g, (long long)luaL_optinteger(L, 5, -1), luaL_optnumber(L, 6, 0));
  return 0;
}

static int l_rate_stats(lua_State *L) {
  lg_app *a = lg_check_app(L)->app;
  buf_t b;
  lg_buf_init(&b);
  lg_rate_stats(a, &b);
  lg_push_json_buf(L, &b);
  return 1;
}

/* core.rate_wait(key, est, timeout_s?) in a worker: true, probe | false
 * (timed out); raises the cancel error when its task must stop. */
static int l_rate_wait(lua_State *L) {
  lg_worker *w = lg_check_worker(L);
  const char *key = luaL_checkstring(L, 1);
  long long est = (long long)luaL_optinteger(L, 2, 0);
  double timeout = luaL_optnumber(L, 3, -1);
  lg_rate_grant g = {0, 0};
  int rc = lg_rate_wait(w, key, est, timeout, &g);
  if (rc < 0) return luaL_error(L, "luagent: no rate budget named %s", key);
  if (rc == 1) return lg_raise_cancel(L);
  lua_pushboolean(L, rc == 0);
  lua_pushboolean(L, g.probe);
  return 2;
}

/* ------------------------------------------------------------ tree budgets */

static void read_limits(lua_State *L, int t, lg_budget_limits *l) {
  l->max_tokens = (long long)field_num(L, t, "max_tokens", -1);
  l->max_tasks = (long long)field_num(L, t, "max_tasks", -1);
  l->max_cost = field_num(L, t, "max_cost", -1);
  l->max_wall_s = field_num(L, t, "max_wall_seconds", -1);
  lua_getfield(L, t, "on_exhausted");
  const char *s = lua_tostring(L, -1);
  l->stop_children = !s || strcmp(s, "refuse_spawns") != 0;
  lua_pop(L, 1);
}

void lg_bind_budget_fields(lua_State *L, int t, lg_enqueue_req *r, lg_budget_limits *l) {
  lua_getfield(L, t, "parent_task_id");
  r->parent_id = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL; /* anchored in t */
  lua_pop(L, 1);
  lua_getfield(L, t, "tree_budget");
  if (lua_istable(L, -1)) {
    read_limits(L, lua_gettop(L), l);
    r->tree_budget = l;
  }
  lua_pop(L, 1);
}

/* tree_budget_define(key, limits): a foreground root run's budget */
static int l_tree_budget_define(lua_State *L) {
  lg_app *a = lg_check_app(L)->app;
  const char *key = luaL_checkstring(L, 2);
  luaL_checktype(L, 3, LUA_TTABLE);
  lg_budget_limits l;
  read_limits(L, 3, &l);
  if (lg_budget_define(a, key, &l, 0) != 0) return luaL_error(L, "luagent: out of memory");
  return 0;
}

/* tree_spent(key) -> the spent limit's name or nil, stop_children */
static int l_tree_spent(lua_State *L) {
  lg_app *a = lg_check_app(L)->app;
  int stop = 0;
  const char *why = lg_budget_spent(a, luaL_checkstring(L, 2), &stop);
  if (!why) return 0;
  lua_pushstring(L, why);
  lua_pushboolean(L, stop);
  return 2;
}

/* tree_budget(key) -> {left, usage, tasks, elapsed_s, on_exhausted, spent?} or nil */
static int l_tree_budget(lua_State *L) {
  lg_app *a = lg_check_app(L)->app;
  buf_t b;
  lg_buf_init(&b);
  if (lg_budget_json(a, luaL_checkstring(L, 2), &b) != 0) {
    lg_buf_free(&b);
    return 0;
  }
  lg_push_json_buf(L, &b);
  return 1;
}

static int l_tree_budget_close(lua_State *L) {
  lg_budget_close(lg_check_app(L)->app, luaL_checkstring(L, 2));
  return 0;
}

const luaL_Reg lg_bind_budget_methods[] = {
    {"rate_define", l_rate_define},
    {"rate_try", l_rate_try},
    {"rate_done", l_rate_done},
    {"rate_stats", l_rate_stats},
    {"tree_budget_define", l_tree_budget_define},
    {"tree_spent", l_tree_spent},
    {"tree_budget", l_tree_budget},
    {"tree_budget_close", l_tree_budget_close},
    {NULL, NULL}};

const luaL_Reg lg_bind_budget_funcs[] = {{"rate_wait", l_rate_wait}, {NULL, NULL}};
