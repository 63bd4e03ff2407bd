/* What a C host needs beyond luaopen_luagent_core (README, "Embedding in a
 * game or app"): luagent_open, the package searcher for the Lua half built
 * into libluagent.a, and the C log sink. Their Lua side (core.log,
 * core.set_worker_init, core.embedded) is bind_embed.c. */
#include "embed.h"
#include "lua_compat.h"
#include "luagent.h"

#include <pthread.h>
#include <string.h>

#ifndef LUAGENT_EMBED_LUA
/* luagent/core.so: the Lua half stays in files, found through package.path
 * (libluagent.a links the generated table instead) */
const lg_embedded_module lg_embedded_modules[] = {{0, 0, 0, 0}};
#endif

/* ------------------------------------------------------------ searcher */

static const lg_embedded_module *find_module(const char *name) {
  for (const lg_embedded_module *m = lg_embedded_modules; m->name; m++)
    if (strcmp(m->name, name) == 0) return m;
  return NULL;
}

/* package.searchers entry: the loader and its chunk name, as Lua's own file
 * searcher returns them; for other luagent names, why it found nothing. */
static int embedded_searcher(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  const lg_embedded_module *m = find_module(name);
  if (!m) {
    if (strncmp(name, "luagent", 7) != 0) return 0;
    lua_pushfstring(L, "no module '%s' built into luagent", name);
    return 1;
  }
  if (luaL_loadbufferx(L, m->src, m->len, m->chunk, "t") != LUA_OK)
    return luaL_error(L, "error loading module '%s' built into luagent:\n\t%s", name,
                      lua_tostring(L, -1));
  lua_pushstring(L, m->chunk + 1);
  return 2;
}

/* Right after the preload searcher, so the built-in copy wins over files on
 * package.path (an older install, say) but a host can still replace one
 * module through package.preload. */
static void install_searcher(lua_State *L) {
  if (!lg_embedded_modules[0].name) return;
  lua_getglobal(L, "package");
  if (!lua_istable(L, -1)) {
    lua_pop(L, 1);
    return;
  }
  lua_getfield(L, -1, "searchers");
  if (!lua_istable(L, -1)) { /* 5.1 and LuaJIT: package.loaders */
    lua_pop(L, 1);
    lua_getfield(L, -1, "loaders");
  }
  if (!lua_istable(L, -1)) {
    lua_pop(L, 2);
    return;
  }
  int n = (int)lua_rawlen(L, -1);
  for (int i = 1; i <= n; i++) {
    lua_rawgeti(L, -1, i);
    int ours = lua_tocfunction(L, -1) == embedded_searcher;
    lua_pop(L, 1);
    if (ours) {
      lua_pop(L, 2);
      return;
    }
  }
  int at = n >= 1 ? 2 : 1;
  for (int i = n; i >= at; i--) {
    lua_rawgeti(L, -1, i);
    lua_rawseti(L, -2, i + 1);
  }
  lua_pushcfunction(L, embedded_searcher);
  lua_rawseti(L, -2, at);
  lua_pop(L, 2);
}

LUAGENT_API void luagent_open(lua_State *L) {
  lg_push_preload(L);
  lua_pushcfunction(L, luaopen_luagent_core);
  lua_setfield(L, -2, "luagent.core");
  lua_pop(L, 1);
  install_searcher(L);
}

/* ----------------------------------------------------------------- log */

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static luagent_log_fn log_fn;
static void *log_ud;

LUAGENT_API void luagent_set_log(luagent_log_fn fn, void *ud) {
  pthread_mutex_lock(&log_mu);
  log_fn = fn;
  log_ud = ud;
  pthread_mutex_unlock(&log_mu);
}

void lg_log_sink(const char *level, const char *message) {
  pthread_mutex_lock(&log_mu);
  luagent_log_fn fn = log_fn;
  void *ud = log_ud;
  pthread_mutex_unlock(&log_mu);
  if (fn) fn(level ? level : "error", message ? message : "", ud);
}
