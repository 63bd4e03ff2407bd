/* What a C host needs beyond luaopen_luagent_core (README, "Embedding in a
 * game or app"): luagent_open, the package searcher for the Lua half built
 * into libluagent.a, and the C log sink. Their Lua side (core.log,
 * core.set_worker_init, core.embedded) is bind_embed.c. */
#include "embed.h"
#include "lua_compat.h"
#include "luagent.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#ifndef LUAGENT_EMBED_LUA
/* luagent/core.so: the Lua half stays in files, found through package.path
 * (libluagent.a links the generated table instead) */
const lg_embedded_module lg_embedded_modules[] = {{0, 0, 0, 0}};
#endif

/* ------------------------------------------------------- chunk cache */

/* luagent's own modules compiled once per process: the first state that
 * loads one compiles it and keeps its bytecode (debug info included, so
 * tracebacks are unchanged); every later state, a new worker above all,
 * loads the bytecode instead of compiling the source again. A file is
 * known by its device, inode, size and modification time, so an edited
 * file is compiled anew. */
typedef struct cached_chunk {
  char *key;
  char *code;
  size_t len;
  struct cached_chunk *next;
} cached_chunk;

static pthread_mutex_t cache_mu = PTHREAD_MUTEX_INITIALIZER;
static cached_chunk *cache_head;

/* Pushes the loaded function for key, or returns 0 (nothing pushed). */
static int cache_load(lua_State *L, const char *key, const char *chunk) {
  pthread_mutex_lock(&cache_mu);
  cached_chunk *c = cache_head;
  while (c && strcmp(c->key, key) != 0) c = c->next;
  /* entries are never removed or changed, so the code outlives the lock */
  pthread_mutex_unlock(&cache_mu);
  if (!c) return 0;
  return luaL_loadbufferx(L, c->code, c->len, chunk, "b") == LUA_OK ? 1 : (lua_pop(L, 1), 0);
}

typedef struct {
  char *p;
  size_t len, cap;
  int oom;
} dump_buf;

static int dump_writer(lua_State *L, const void *p, size_t n, void *ud) {
  (void)L;
  dump_buf *b = ud;
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap * 2 : 4096;
    while (cap < b->len + n) cap *= 2;
    char *q = realloc(b->p, cap);
    if (!q) {
      b->oom = 1;
      return 1;
    }
    b->p = q;
    b->cap = cap;
  }
  memcpy(b->p + b->len, p, n);
  b->len += n;
  return 0;
}

/* Keeps the bytecode of the function at the stack top under key (nothing
 * is kept when memory runs out: the module is then compiled again). */
static void cache_store(lua_State *L, const char *key) {
  dump_buf b = {NULL, 0, 0, 0};
  cached_chunk *c = NULL;
  if (lua_dump(L, dump_writer, &b, 0) == 0 && !b.oom) c = calloc(1, sizeof *c);
  if (c) {
    c->key = strdup(key);
    c->code = b.p;
    c->len = b.len;
    b.p = NULL;
  }
  if (c && c->key) {
    pthread_mutex_lock(&cache_mu);
    cached_chunk *have = cache_head;
    while (have && strcmp(have->key, key) != 0) have = have->next;
    if (!have) {
      c->next = cache_head;
      cache_head = c;
      c = NULL;
    }
    pthread_mutex_unlock(&cache_mu);
  }
  if (c) {
    free(c->key);
    free(c->code);
    free(c);
  }
  free(b.p);
}

int lg_chunk_cache_count(void) {
  int n = 0;
  pthread_mutex_lock(&cache_mu);
  for (cached_chunk *c = cache_head; c; c = c->next) n++;
  pthread_mutex_unlock(&cache_mu);
  return n;
}

/* ------------------------------------------------------------ searcher */

static const lg_embedded_module *find_module(const char *name) {
  for (const lg_embedded_module *m = lg_embedded_modules; m->name; m++)
    if (strcmp(m->name, name) == 0) return m;
  return NULL;
}

static int is_ours(const char *name) {
  return strncmp(name, "luagent", 7) == 0 && (name[7] == '\0' || name[7] == '.');
}

/* A module built into libluagent.a. */
static int search_embedded(lua_State *L, const char *name) {
  const lg_embedded_module *m = find_module(name);
  if (!m) {
    lua_pushfstring(L, "no module '%s' built into luagent", name);
    return 1;
  }
  if (!cache_load(L, m->chunk, m->chunk)) {
    if (luaL_loadbufferx(L, m->src, m->len, m->chunk, "t") != LUA_OK)
      return luaL_error(L, "error loading module '%s' built into luagent:\n\t%s", name,
                        lua_tostring(L, -1));
    cache_store(L, m->chunk);
  }
  lua_pushstring(L, m->chunk + 1);
  return 2;
}

/* A luagent module on package.path, as Lua's file searcher finds it (which
 * still runs after this one for what is not found here). */
static int search_file(lua_State *L, const char *name) {
  lua_getglobal(L, "package");
  if (!lua_istable(L, -1)) return 0;
  lua_getfield(L, -1, "path");
  const char *path = lua_tostring(L, -1);
  if (!path) return 0;
  lua_getfield(L, -2, "searchpath");
  if (!lua_isfunction(L, -1)) return 0;
  lua_pushstring(L, name);
  lua_pushstring(L, path);
  lua_call(L, 2, 1);
  const char *found = lua_tostring(L, -1);
  if (!found) return 0;
  struct stat st;
  if (stat(found, &st) != 0) return 0;
  /* the file itself (device and inode) rather than its real path: one stat
   * instead of realpath's call per path component, same identity.
   * snprintf, not lua_pushfstring: 5.1 and LuaJIT have no %I */
  char kb[96];
  snprintf(kb, sizeof kb, "%llu:%llu\n%lld\n%lld", (unsigned long long)st.st_dev,
           (unsigned long long)st.st_ino, (long long)st.st_size,
           (long long)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec);
  lua_pushstring(L, kb);
  const char *key = lua_tostring(L, -1);
  const char *chunk = lua_pushfstring(L, "@%s", found);
  if (!cache_load(L, key, chunk)) {
    if (luaL_loadfilex(L, found, "t") != LUA_OK)
      return luaL_error(L, "error loading module '%s' from file '%s':\n\t%s", name, found,
                        lua_tostring(L, -1));
    cache_store(L, key);
  }
  lua_pushstring(L, found);
  return 2;
}

/* package.searchers entry for luagent's own modules: the loader and its
 * chunk name, as Lua's own file searcher returns them, compiled once per
 * process (the chunk cache above). */
static int luagent_searcher(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  if (!is_ours(name) || strcmp(name, "luagent.core") == 0) return 0;
  if (lg_embedded_modules[0].name) return search_embedded(L, name);
  int top = lua_gettop(L);
  int n = search_file(L, name);
  if (n == 0) {
    lua_settop(L, top);
    return 0;
  }
  return n;
}

/* Right after the preload searcher, so the built-in copy wins over files on
 * package.path (an older install, say) but a host can still replace one
 * module through package.preload. */
static void install_searcher(lua_State *L) {
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
    int ours = lua_tocfunction(L, -1) == luagent_searcher;
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
  lua_pushcfunction(L, luagent_searcher);
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
