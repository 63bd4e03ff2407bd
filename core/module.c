/* The Lua module `luagent.core`: its one entry, luaopen_luagent_core, puts
 * together the binding files of each area (bind.h) and the few functions
 * that belong to none (clocks, ids, paths, the cancel sentinel). */
#include "bind.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static int err_tostring(lua_State *L) {
  lua_getfield(L, 1, "message");
  if (!lua_isstring(L, -1)) lua_pushliteral(L, "luagent error");
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

static int l_is_interrupt(lua_State *L) {
  lua_pushboolean(L, lg_is_interrupt(L, 1));
  return 1;
}

/* The end of a step: closed before any Lua instruction runs again, so no
 * interrupt can be raised after the step's pcall returned. */
static int step_done(lua_State *L, int status, lua_KContext ctx) {
  lg_task *t = (lg_task *)ctx;
  if (t) lg_task_step_open(t, 0);
  lua_pushboolean(L, status == LUA_OK || status == LUA_YIELD);
  lua_insert(L, 1);
  return lua_gettop(L);
}

/* step_call(fn, ...) -> true, ... | false, err: fn as a step of the calling
 * task that a message sent with interrupt = true may cut short (steer.c),
 * like pcall; outside a task just pcall. */
static int l_step_call(lua_State *L) {
  luaL_checkany(L, 1);
  lg_task *t = lg_calling_task(L);
  if (t) lg_task_step_open(t, 1);
#if LUA_VERSION_NUM >= 503
  int status = lua_pcallk(L, lua_gettop(L) - 1, LUA_MULTRET, 0, (lua_KContext)t, step_done);
#else /* no continuations: fn cannot yield across the step (docs/architecture.md, "Lua versions") */
  int status = lua_pcall(L, lua_gettop(L) - 1, LUA_MULTRET, 0);
#endif
  return step_done(L, status, (lua_KContext)t);
}

static int l_now(lua_State *L) {
  lua_pushnumber(L, lg_mono_s());
  return 1;
}

/* CPU time of the calling thread, seconds (bench: poll's own cost). */
static int l_thread_cpu(lua_State *L) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  lua_pushnumber(L, (double)ts.tv_sec + (double)ts.tv_nsec / 1e9);
  return 1;
}

/* Context switches of the calling thread so far: voluntary (it blocked:
 * a lock, a wait, I/O) and involuntary (the kernel preempted it). The poll
 * bench uses them to tell a poll that waited from one that was descheduled. */
static int l_thread_switches(lua_State *L) {
  struct rusage ru;
  if (getrusage(RUSAGE_THREAD, &ru) != 0) return 0;
  lua_pushinteger(L, (lua_Integer)ru.ru_nvcsw);
  lua_pushinteger(L, (lua_Integer)ru.ru_nivcsw);
  return 2;
}

static int l_wall_ms(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)lg_wall_ms());
  return 1;
}

static int l_new_id(lua_State *L) {
  char out[40];
  lg_make_id(lg_opt_text(L, 1, "id_"), out);
  lua_pushstring(L, out);
  return 1;
}

static int l_realpath(lua_State *L) {
  const char *p = lg_check_text(L, 1);
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

static int l_debug_counters(lua_State *L) {
  lua_createtable(L, 0, 1);
  lg_set_int(L, "wait_decodes", (lua_Integer)lg_wait_decodes());
  return 1;
}

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

static const luaL_Reg core_funcs[] = {
    {"in_worker", l_in_worker},   {"is_cancel", l_is_cancel},
    {"is_interrupt", l_is_interrupt}, {"step_call", l_step_call},
    {"now", l_now},               {"thread_cpu", l_thread_cpu},
    {"thread_switches", l_thread_switches},
    {"wall_ms", l_wall_ms},       {"new_id", l_new_id},
    {"realpath", l_realpath},     {"debug_counters", l_debug_counters},
    {NULL, NULL}};

static const luaL_Reg *const app_parts[] = {
    lg_bind_app_methods,   lg_bind_tasks_methods, lg_bind_host_methods, lg_bind_events_methods,
    lg_bind_store_methods, lg_bind_control_methods, lg_bind_budget_methods, NULL};

static const luaL_Reg *const func_parts[] = {
    core_funcs, lg_bind_app_funcs, lg_bind_tasks_funcs, lg_bind_host_funcs, lg_bind_http_funcs,
    lg_bind_fg_funcs, lg_bind_spawn_funcs, lg_bind_budget_funcs, lg_bind_embed_funcs, NULL};

LUAGENT_API int luaopen_luagent_core(lua_State *L) {
  pthread_once(&pin_once, pin_module);
  /* metatables live in the registry: reused when busted reloads us */
  if (luaL_newmetatable(L, APP_MT)) {
    lua_newtable(L);
    for (int i = 0; app_parts[i]; i++) luaL_setfuncs(L, app_parts[i], 0);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, lg_bind_app_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, ERR_MT)) {
    lua_pushcfunction(L, err_tostring);
    lua_setfield(L, -2, "__tostring");
  }
  lua_pop(L, 1);
  lg_bind_http_open(L);
  lg_bind_tasks_open(L);
  lg_bind_fg_open(L);
  lg_bind_spawn_open(L);
  lua_newtable(L);
  for (int i = 0; func_parts[i]; i++) luaL_setfuncs(L, func_parts[i], 0);
  lg_store_reader_open(L);
  lg_bind_embed_open(L);
  lg_json_open(L);
  lua_setfield(L, -2, "json");
  lg_push_cancel(L);
  lua_setfield(L, -2, "cancel_error");
  lg_push_interrupt(L);
  lua_setfield(L, -2, "interrupt_error");
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
  /* the Lua this build is for ("Lua 5.4"; "Lua 5.1" serves LuaJIT too):
   * luagent checks it against _VERSION when it loads us */
  lua_pushliteral(L, LUA_VERSION);
  lua_setfield(L, -2, "lua_version");
  return 1;
}
