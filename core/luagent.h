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

#ifdef __cplusplus
}
#endif

#endif
