/* Bindings of the host's pump: the generation a host blocks on, the
 * host work it takes and answers, which callbacks it wants, SIGINT for
 * command-line hosts, and a task's call into the host. */
#include "bind.h"
#include "interrupt.h"

static int l_app_gen(lua_State *L) {
  app_ud *u = lg_check_app(L);
  lua_pushinteger(L, (lua_Integer)lg_gen(u->app));
  return 1;
}

static int l_app_block(lua_State *L) {
  app_ud *u = lg_check_app(L);
  if (u->worker_handle) return luaL_error(L, "luagent: block is for the host thread");
  uint64_t gen = (uint64_t)luaL_checkinteger(L, 2);
  double timeout = luaL_optnumber(L, 3, -1);
  /* news: new events wake it too (the default); false: only host work,
   * finished tasks, waits that are over and the like */
  int news = lua_isnoneornil(L, 4) ? 1 : lua_toboolean(L, 4);
  lg_block(u->app, gen, timeout, news);
  return 0;
}

static const char *const item_types[] = {"call", "callback", "log"};

/* take(max, nowait): up to max items; with nowait, nil when the queue's
 * lock stayed busy (a frame does not wait for it: the items stay queued). */
static int l_app_take(lua_State *L) {
  app_ud *u = lg_check_app(L);
  int max = (int)luaL_optinteger(L, 2, 64);
  if (max < 1) max = 1;
  if (max > 256) max = 256;
  lg_host_item *items[256];
  int n;
  if (lua_toboolean(L, 3)) {
    n = lg_take_host_work_try(u->app, max, items);
    if (n < 0) return 0;
  } else {
    n = lg_take_host_work(u->app, max, items);
  }
  /* Move everything into C locals first; then build Lua values, freeing
   * each item as we go. A Lua memory error here may leak the rest, which is
   * accepted (and only under memory exhaustion). */
  lua_createtable(L, n, 0);
  for (int i = 0; i < n; i++) {
    lg_host_work it;
    lg_host_item_read(items[i], &it);
    lua_createtable(L, 0, 7);
    lg_set_str(L, "type", item_types[it.type]);
    lg_set_int(L, "id", (lua_Integer)it.id);
    lg_set_str(L, "kind", it.kind);
    if (it.name) {
      lg_set_str(L, "name", it.name);
    }
    if (it.json) {
      lg_set_str(L, "json", it.json);
    }
    if (it.ctx_json) {
      lg_set_str(L, "ctx", it.ctx_json);
    }
    if (it.task_id[0]) {
      lg_set_str(L, "task_id", it.task_id);
    }
    lua_rawseti(L, -2, i + 1);
    lg_host_item_free(items[i]);
    items[i] = NULL;
  }
  return 1;
}

/* reply(id, json, nowait): true once delivered; with nowait, false when the
 * queue's lock stayed busy (nothing was delivered: reply again later). */
static int l_app_reply(lua_State *L) {
  app_ud *u = lg_check_app(L);
  lua_Integer id = luaL_checkinteger(L, 2);
  const char *json = lg_check_text(L, 3);
  if (lua_toboolean(L, 4)) {
    lua_pushboolean(L, lg_host_reply_try(u->app, (uint64_t)id, json) == 0);
    return 1;
  }
  lg_host_reply(u->app, (uint64_t)id, json);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_app_set_wants(lua_State *L) {
  app_ud *u = lg_check_app(L);
  lg_set_wants(u->app, (unsigned)luaL_checkinteger(L, 2));
  return 0;
}

/* catch_interrupt(): SIGINT from now on wakes this app's host and is
 * counted for interrupted() (interrupt.c). */
static int l_app_catch_interrupt(lua_State *L) {
  app_ud *u = lg_check_app(L);
  if (u->worker_handle) return luaL_error(L, "luagent: catch_interrupt is for the host thread");
  char err[128];
  if (lg_interrupt_catch(u->app, err, sizeof err) != 0) return luaL_error(L, "luagent: %s", err);
  return 0;
}

/* How many SIGINTs arrived since catch_interrupt (interrupt.c). */
static int l_interrupted(lua_State *L) {
  lua_pushinteger(L, lg_interrupts());
  return 1;
}

/* task_call_host(name, args_json, ctx_json) -> reply json string */
static int l_task_call_host(lua_State *L) {
  lg_worker *w = lg_check_worker(L);
  const char *name = lg_check_text(L, 1);
  const char *args = lg_check_text(L, 2);
  const char *ctx = lg_opt_text(L, 3, "{}");
  buf_t out;
  lg_buf_init(&out);
  int rc = lg_task_call_host(w, name, args, ctx, &out);
  if (rc != 0) {
    lg_buf_free(&out);
    if (rc < 0) return luaL_error(L, "luagent: out of memory");
    return rc == 2 ? lg_raise_interrupt(L) : lg_raise_cancel(L);
  }
  lua_pushlstring(L, out.p ? out.p : "null", out.p ? out.len : 4);
  lg_buf_free(&out);
  return 1;
}

const luaL_Reg lg_bind_host_methods[] = {
    {"gen", l_app_gen},           {"block", l_app_block},
    {"take", l_app_take},         {"reply", l_app_reply},
    {"set_wants", l_app_set_wants}, {"catch_interrupt", l_app_catch_interrupt},
    {NULL, NULL}};

const luaL_Reg lg_bind_host_funcs[] = {
    {"task_call_host", l_task_call_host}, {"interrupted", l_interrupted}, {NULL, NULL}};
