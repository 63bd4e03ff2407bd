/* Bindings of the embedding API (README, "Embedding in a game or app"):
 * core.set_worker_init for a host that loads luagent with require and so
 * cannot call luagent_set_worker_init, core.log for lua/luagent/log.lua to
 * reach the C sink, core.embedded (the Lua half is built in) and
 * core.compiled_chunks (the chunk cache of embed.c). */
#include "bind.h"
#include "embed.h"
#include "luagent.h"

/* log(level, message): hands a message to the C sink (lua/luagent/log.lua
 * calls it on the host thread). Never raises. */
static int l_log(lua_State *L) {
  lg_log_sink(lua_tostring(L, 1), lua_tostring(L, 2));
  return 0;
}

/* set_worker_init(p): p is a light userdata pointing to a
 * luagent_worker_init, or nil to remove the initializer. */
static int l_set_worker_init(lua_State *L) {
  if (lua_isnoneornil(L, 1)) {
    luagent_set_worker_init(NULL, NULL);
    return 0;
  }
  luaL_argexpected(L, lua_islightuserdata(L, 1), 1,
                   "light userdata (a pointer to a luagent_worker_init)");
  const luagent_worker_init *wi = lua_touserdata(L, 1);
  if (!wi) return luaL_argerror(L, 1, "a NULL pointer (pass nil to remove the initializer)");
  luagent_set_worker_init(wi->fn, wi->ud);
  return 0;
}

/* compiled_chunks(): how many of luagent's modules this process has
 * compiled and keeps as bytecode for the next state that loads them. */
static int l_compiled_chunks(lua_State *L) {
  lua_pushinteger(L, lg_chunk_cache_count());
  return 1;
}

const luaL_Reg lg_bind_embed_funcs[] = {{"log", l_log},
                                        {"set_worker_init", l_set_worker_init},
                                        {"compiled_chunks", l_compiled_chunks},
                                        {NULL, NULL}};

void lg_bind_embed_open(lua_State *L) {
  lua_pushboolean(L, lg_embedded_modules[0].name != NULL);
  lua_setfield(L, -2, "embedded");
}
