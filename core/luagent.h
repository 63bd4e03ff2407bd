/* luagent — public C API for hosts that embed Lua 5.4.
 *
 * A host that loads luagent with `require "luagent"` needs nothing from this
 * header. A host that links the core statically calls
 *     luaL_requiref(L, "luagent.core", luaopen_luagent_core, 0);
 * and makes the Lua modules (lua/luagent/) reachable through package.path.
 * Worker states always get luagent.core through package.preload, so they
 * never dlopen anything. */
#ifndef LUAGENT_H
#define LUAGENT_H

#include <lua.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define LUAGENT_API __declspec(dllexport)
#else
#define LUAGENT_API __attribute__((visibility("default")))
#endif

/* Opens the C core (`luagent.core`). Safe to call again in the same state and
 * from several states at once. */
LUAGENT_API int luaopen_luagent_core(lua_State *L);

/* Called in every new worker state after the standard libraries are open and
 * before the startup script runs: the place to add the host's own C modules
 * (e.g. into package.preload). Process-wide; pass NULL to remove. */
typedef void (*lg_worker_init_fn)(lua_State *L, void *ud);
LUAGENT_API void luagent_set_worker_init(lg_worker_init_fn fn, void *ud);

/* ---- control tools for C hosts -------------------------------------------
 * The entries behind the model's bg_list, bg_check, bg_cancel and bg_wait,
 * callable without Lua (an in-game task list, say). An app handle comes from
 * a Lua app (luagent_app_of). Each takes the caller's scope and the tool's
 * arguments as JSON text and returns the ToolResult the model would see, as
 * a JSON string the caller frees with luagent_free (NULL: out of memory):
 *   {"ok":true,"value":...}  or  {"ok":false,"error":"...","cause":{"kind":..}}
 * A task outside the scope is "not_found", like an unknown one. */
typedef struct lg_app lg_app;
typedef struct lg_wait lg_wait;

typedef struct {
  const char *agent_id;  /* the calling run's agent: its children are in scope */
  const char *thread_id; /* the calling run's thread */
  const char *task_id;   /* the task the calling run belongs to, or NULL (a host run);
                          * a sub-agent run sees only its own task's children */
  const char *root_key;  /* the calling run's tree (its root task or foreground run id), or
                          * NULL: bg_list and bg_check show its tree budget's budget_left */
} luagent_scope;

/* The app behind the Lua value at idx (an app of luagent.load/new, or its
 * core handle), or NULL. Valid while that value lives. */
LUAGENT_API lg_app *luagent_app_of(lua_State *L, int idx);
LUAGENT_API char *luagent_bg_list(lg_app *app, const luagent_scope *scope, const char *args_json);
LUAGENT_API char *luagent_bg_check(lg_app *app, const luagent_scope *scope, const char *args_json);
/* Requests the cancel and reports the status right after it. */
LUAGENT_API char *luagent_bg_cancel(lg_app *app, const luagent_scope *scope, const char *args_json);
/* Blocks the calling thread until the wait is over or its timeout passes
 * (without pumping host work: see the begin/finish form for that). */
LUAGENT_API char *luagent_bg_wait(lg_app *app, const luagent_scope *scope, const char *args_json);
/* bg_wait for a thread that must keep working while it waits: begin checks
 * the arguments and the scope; NULL with *answer set (the ToolResult) when
 * the call is answered at once. Poll luagent_wait_over, then finish writes
 * the reply (marking what it shows delivered); free the wait after. */
LUAGENT_API lg_wait *luagent_bg_wait_begin(lg_app *app, const luagent_scope *scope,
                                           const char *args_json, double *timeout_s,
                                           char **answer);
LUAGENT_API int luagent_wait_over(lg_wait *w);
LUAGENT_API char *luagent_bg_wait_finish(lg_app *app, lg_wait *w);
LUAGENT_API void luagent_wait_free(lg_wait *w);
LUAGENT_API void luagent_free(void *p);

#ifdef __cplusplus
}
#endif

#endif
