/* luagent — public C API for hosts that embed Lua 5.4 (README, "Embedding
 * in a game or app").
 *
 * A host linked with libluagent.a (`cc host.c $(pkg-config --cflags --libs
 * luagent)`) calls luagent_open(L) after luaL_openlibs(L); `require
 * "luagent"` then works with no package.path, in L and in every worker
 * state, because the Lua half is built into the library.
 *
 * A host that loads the module instead (`require "luagent"` finds
 * luagent/core.so and the Lua files through package.path/cpath) needs
 * nothing from this header but the types below, to hand a worker-state
 * initializer to luagent.core.set_worker_init.
 *
 * Every function here may be called from any thread unless it says
 * otherwise. */
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

/* Makes luagent loadable in L: `luagent.core` goes into package.preload and,
 * in libluagent.a, a package searcher (after the preload one) serves the
 * embedded Lua modules (`luagent`, `luagent.*`, `luagent.plugins.*`). Worker
 * states get the same. Call it after luaL_openlibs; pushes nothing. Like
 * luaL_openlibs it raises only when Lua runs out of memory. */
LUAGENT_API void luagent_open(lua_State *L);

/* Called in every new worker state after the standard libraries and
 * luagent_open, before the startup script runs: the place to add the host's
 * own C modules (e.g. into package.preload). It runs on the worker's thread,
 * and in no other state. Process-wide; pass NULL to remove. */
typedef void (*luagent_worker_init_fn)(lua_State *L, void *ud);
LUAGENT_API void luagent_set_worker_init(luagent_worker_init_fn fn, void *ud);

/* The same for a host that loads luagent with require and so cannot call
 * luagent_set_worker_init: it pushes a pointer to this struct as a light
 * userdata and calls luagent.core.set_worker_init(p) (nil removes it). The
 * struct is copied during the call. */
typedef struct luagent_worker_init {
  luagent_worker_init_fn fn;
  void *ud;
} luagent_worker_init;

/* Where luagent's warnings and errors go (level "error" or "warn"), as
 * luagent.set_log does for Lua: called on the host thread, inside app:poll
 * and the other app calls that pump, never from a worker. The message is
 * valid during the call only. Process-wide; pass NULL to remove. Both sinks
 * hear every message when both are set. */
typedef void (*luagent_log_fn)(const char *level, const char *message, void *ud);
LUAGENT_API void luagent_set_log(luagent_log_fn fn, void *ud);

/* ---- control tools for C hosts -------------------------------------------
 * The entries behind the model's bg_list, bg_check, bg_cancel, bg_send and bg_wait,
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
/* bg_send{task_id, message, interrupt?}: queues the message for the task (an
 * agent run in scope), delivered once before its next model call; with
 * interrupt = true its current model call or tool is cut short so it reads
 * the message now. A finished task answers "not_found" saying so. */
LUAGENT_API char *luagent_bg_send(lg_app *app, const luagent_scope *scope, const char *args_json);
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
