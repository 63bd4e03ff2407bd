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

#ifdef __cplusplus
}
#endif

#endif
