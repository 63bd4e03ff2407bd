/* The Lua C API as the core uses it, on Lua 5.1, 5.2, 5.3, 5.4 and LuaJIT
 * 2.1 (docs/architecture.md, "Lua versions"). The core is written against
 * 5.4; this header fills in, for older versions, what it calls and they lack.
 * On 5.4 it adds nothing but LG_LUA_INTEGERS and the helpers at its end
 * (lg_jit_off, lg_jit_on: no-ops there; lg_push_preload), so the 5.4
 * build is the code as written. LuaJIT 2.1 gets the 5.1 fill-ins too, even
 * where it has its own (luaL_setfuncs, luaL_traceback, ...): a module built
 * against either set of 5.1 headers calls only the 5.1 API, so it loads
 * into lua5.1 and into LuaJIT alike (a LuaRocks 5.1 tree serves both).
 *
 * Two rules follow from the versions, not from this header:
 *   - numbers (json.c): without an integer subtype (5.1, 5.2, LuaJIT) an
 *     integer is a number with an integral value below 2^53 in magnitude;
 *     JSON integers are decoded exactly up to 2^53, larger ones are an
 *     error;
 *   - the count hook (worker.c, fg_watch.c): LuaJIT runs no hook inside
 *     compiled traces, so the code luagent must be able to stop runs with
 *     the JIT compiler off. */
#ifndef LUAGENT_LUA_COMPAT_H
#define LUAGENT_LUA_COMPAT_H

#include <lauxlib.h>
#include <lua.h>
#include <stdint.h>

#if LUA_VERSION_NUM < 501 || LUA_VERSION_NUM > 504
#error "luagent builds against Lua 5.1 to 5.4 or LuaJIT 2.1"
#endif

/* Whether lua_Integer is a subtype of numbers (5.3 and later). */
#define LG_LUA_INTEGERS (LUA_VERSION_NUM >= 503)

#define LG_TWO53 9007199254740992.0 /* 2^53: doubles are exact up to here */

/* ------------------------------------------------ missing before 5.4 */

#if LUA_VERSION_NUM < 504
/* At most one user value is used (index 1); 5.1 and 5.2 keep it in a table
 * (a userdata's environment, or its 5.2 user value, must be one). */
#define lua_newuserdatauv(L, sz, nuv) lua_newuserdata((L), (sz))
static inline int lg_compat_setiuservalue(lua_State *L, int idx, int n) {
  (void)n;
#if LUA_VERSION_NUM >= 503
  lua_setuservalue(L, idx);
#else
  idx = idx < 0 && idx > LUA_REGISTRYINDEX ? lua_gettop(L) + idx + 1 : idx;
  lua_createtable(L, 1, 0);
  lua_insert(L, -2);
  lua_rawseti(L, -2, 1);
#if LUA_VERSION_NUM == 502
  lua_setuservalue(L, idx);
#else
  lua_setfenv(L, idx);
#endif
#endif
  return 1;
}
#define lua_setiuservalue(L, idx, n) lg_compat_setiuservalue((L), (idx), (n))
#define luaL_pushfail(L) lua_pushnil(L)
#endif

#if LUA_VERSION_NUM < 504 && !defined(luaL_argexpected)
static inline int lg_compat_typeerror(lua_State *L, int arg, const char *tname) {
  const char *msg = lua_pushfstring(L, "%s expected, got %s", tname, luaL_typename(L, arg));
  return luaL_argerror(L, arg, msg);
}
#define luaL_argexpected(L, cond, arg, tname) \
  ((void)((cond) || lg_compat_typeerror((L), (arg), (tname))))
#endif

/* ------------------------------------------------ missing before 5.3 */

#if LUA_VERSION_NUM < 503
/* An integral number below 2^53 in magnitude, -0 aside (the rule of the
 * header's comment): what 5.4 would hold as an integer. From 2^53 on a
 * double no longer holds every integer, and such numbers are written as
 * floats, as 5.4 writes its floats there (json.c). */
static inline int lg_compat_isinteger(lua_State *L, int idx) {
  if (lua_type(L, idx) != LUA_TNUMBER) return 0;
  lua_Number x = lua_tonumber(L, idx);
  if (!(x > -LG_TWO53 && x < LG_TWO53) || x != (lua_Number)(lua_Integer)x) return 0;
  return x != 0 || 1 / x > 0; /* -0 is a float */
}
#define lua_isinteger(L, idx) lg_compat_isinteger((L), (idx))

/* a continuation's context (5.3's type; 5.2's continuations take an int) */
typedef intptr_t lua_KContext;
#endif

#ifndef LUA_LOADED_TABLE
#define LUA_LOADED_TABLE "_LOADED"
#endif

/* ------------------------------------------------ missing before 5.2 */

#if LUA_VERSION_NUM < 502
#define LUA_OK 0
#define lua_rawlen(L, idx) lua_objlen((L), (idx))
#define luaL_len(L, idx) ((lua_Integer)lua_objlen((L), (idx)))

static inline int lg_compat_absindex(lua_State *L, int idx) {
  return idx > 0 || idx <= LUA_REGISTRYINDEX ? idx : lua_gettop(L) + idx + 1;
}
#define lua_absindex(L, idx) lg_compat_absindex((L), (idx))

static inline void lg_compat_rawsetp(lua_State *L, int idx, const void *p) {
  idx = lua_absindex(L, idx);
  lua_pushlightuserdata(L, (void *)p);
  lua_insert(L, -2);
  lua_rawset(L, idx);
}
#define lua_rawsetp(L, idx, p) lg_compat_rawsetp((L), (idx), (p))

static inline int lg_compat_getsubtable(lua_State *L, int idx, const char *name) {
  idx = lua_absindex(L, idx);
  lua_getfield(L, idx, name);
  if (lua_istable(L, -1)) return 1;
  lua_pop(L, 1);
  lua_newtable(L);
  lua_pushvalue(L, -1);
  lua_setfield(L, idx, name);
  return 0;
}
#define luaL_getsubtable(L, idx, name) lg_compat_getsubtable((L), (idx), (name))

static inline const char *lg_compat_tolstring(lua_State *L, int idx, size_t *len) {
  if (!luaL_callmeta(L, idx, "__tostring")) {
    switch (lua_type(L, idx)) {
      case LUA_TNUMBER:
      case LUA_TSTRING: lua_pushvalue(L, idx); break;
      case LUA_TBOOLEAN: lua_pushstring(L, lua_toboolean(L, idx) ? "true" : "false"); break;
      case LUA_TNIL: lua_pushliteral(L, "nil"); break;
      default:
        lua_pushfstring(L, "%s: %p", luaL_typename(L, idx), lua_topointer(L, idx));
        break;
    }
  }
  return lua_tolstring(L, -1, len);
}
#define luaL_tolstring(L, idx, len) lg_compat_tolstring((L), (idx), (len))

static inline void lg_compat_requiref(lua_State *L, const char *name, lua_CFunction f, int glb) {
  lua_pushcfunction(L, f);
  lua_pushstring(L, name);
  lua_call(L, 1, 1);
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_pushvalue(L, -2);
  lua_setfield(L, -2, name);
  lua_pop(L, 1);
  if (glb) {
    lua_pushvalue(L, -1);
    lua_setglobal(L, name);
  }
}
#define luaL_requiref(L, name, f, glb) lg_compat_requiref((L), (name), (f), (glb))

#ifndef luaL_newlib /* LuaJIT 2.1 has it, on our luaL_setfuncs */
#define luaL_newlibtable(L, l) lua_createtable((L), 0, (int)(sizeof(l) / sizeof((l)[0]) - 1))
#define luaL_newlib(L, l) (luaL_newlibtable((L), (l)), luaL_setfuncs((L), (l), 0))
#endif

#undef luaL_setfuncs
#undef luaL_setmetatable
#undef luaL_testudata
#undef luaL_traceback
#undef luaL_loadbufferx
static inline void lg_compat_setfuncs(lua_State *L, const luaL_Reg *l, int nup) {
  luaL_checkstack(L, nup, "too many upvalues");
  for (; l->name; l++) {
    for (int i = 0; i < nup; i++) lua_pushvalue(L, -nup);
    lua_pushcclosure(L, l->func, nup);
    lua_setfield(L, -(nup + 2), l->name);
  }
  lua_pop(L, nup);
}
#define luaL_setfuncs(L, l, nup) lg_compat_setfuncs((L), (l), (nup))

static inline void lg_compat_setmetatable(lua_State *L, const char *tname) {
  luaL_getmetatable(L, tname);
  lua_setmetatable(L, -2);
}
#define luaL_setmetatable(L, tname) lg_compat_setmetatable((L), (tname))

static inline void *lg_compat_testudata(lua_State *L, int idx, const char *tname) {
  void *p = lua_touserdata(L, idx);
  if (!p || !lua_getmetatable(L, idx)) return NULL;
  luaL_getmetatable(L, tname);
  int same = lua_rawequal(L, -1, -2);
  lua_pop(L, 2);
  return same ? p : NULL;
}
#define luaL_testudata(L, idx, tname) lg_compat_testudata((L), (idx), (tname))

/* debug.traceback does the walk; L1 is always L in the core */
static inline void lg_compat_traceback(lua_State *L, lua_State *L1, const char *msg, int level) {
  (void)L1;
  lua_getglobal(L, "debug");
  if (lua_istable(L, -1)) lua_getfield(L, -1, "traceback");
  else lua_pushnil(L);
  lua_remove(L, -2);
  if (!lua_isfunction(L, -1)) { /* the debug library is not open */
    lua_pop(L, 1);
    lua_pushstring(L, msg ? msg : "");
    return;
  }
  lua_pushstring(L, msg);
  lua_pushinteger(L, level + 1);
  lua_call(L, 2, 1);
}
#define luaL_traceback(L, L1, msg, level) lg_compat_traceback((L), (L1), (msg), (level))

#define luaL_loadbufferx(L, s, n, chunk, mode) luaL_loadbuffer((L), (s), (n), (chunk))
#undef luaL_loadfilex
#define luaL_loadfilex(L, path, mode) luaL_loadfile((L), (path))
#endif /* < 502 */

/* lua_rawget, lua_rawgeti and lua_rawgetp return the value's type from 5.3
 * on; the core reads it. lua_dump takes a strip flag from 5.3 on (5.1, 5.2
 * and LuaJIT keep the debug information, as strip = 0 does). */
#if LUA_VERSION_NUM < 503
static inline int lg_compat_rawget(lua_State *L, int idx) {
  lua_rawget(L, idx);
  return lua_type(L, -1);
}
static inline int lg_compat_rawgeti(lua_State *L, int idx, lua_Integer n) {
  lua_rawgeti(L, idx, (int)n);
  return lua_type(L, -1);
}
static inline int lg_compat_rawgetp(lua_State *L, int idx, const void *p) {
  idx = lua_absindex(L, idx);
  lua_pushlightuserdata(L, (void *)p);
  lua_rawget(L, idx);
  return lua_type(L, -1);
}
#undef lua_rawgetp
#define lua_rawget(L, idx) lg_compat_rawget((L), (idx))
#define lua_rawgeti(L, idx, n) lg_compat_rawgeti((L), (idx), (n))
#define lua_rawgetp(L, idx, p) lg_compat_rawgetp((L), (idx), (p))
#define lua_dump(L, writer, data, strip) lua_dump((L), (writer), (data))
#endif

/* LuaJIT runs no hook inside a compiled trace, so a loop it compiled could
 * never be cancelled: the code of worker states and of foreground runs runs
 * with the compiler off (docs/architecture.md, "Lua versions"). Through the
 * jit library, so a module built against the 5.1 headers and loaded into
 * LuaJIT does it too. lg_jit_off flushes the compiled code and turns the
 * compiler off; it returns 1 if it was on. Nothing on other Luas. */
static inline int lg_jit_call(lua_State *L, const char *fn, int nres) {
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_getfield(L, -1, "jit");
  lua_remove(L, -2);
  if (!lua_istable(L, -1)) {
    lua_pop(L, 1);
    return 0;
  }
  lua_getfield(L, -1, fn);
  lua_remove(L, -2);
  if (!lua_isfunction(L, -1)) {
    lua_pop(L, 1);
    return 0;
  }
  lua_call(L, 0, nres);
  return 1;
}

static inline int lg_jit_off(lua_State *L) {
  if (LUA_VERSION_NUM != 501 || !lg_jit_call(L, "status", 1)) return 0;
  int was_on = lua_toboolean(L, -1);
  lua_pop(L, 1);
  if (was_on) {
    lg_jit_call(L, "flush", 0);
    lg_jit_call(L, "off", 0);
  }
  return was_on;
}

static inline void lg_jit_on(lua_State *L) {
  if (LUA_VERSION_NUM == 501) lg_jit_call(L, "on", 0);
}

/* The table of package.preload: in the registry from 5.2 on (and in LuaJIT
 * 2.1); in 5.1 only a field of the package library. Pushes it. */
static inline void lg_push_preload(lua_State *L) {
#if LUA_VERSION_NUM == 501
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_getfield(L, -1, "package");
  if (lua_istable(L, -1)) {
    luaL_getsubtable(L, -1, "preload");
    lua_replace(L, -3);
    lua_pop(L, 1);
    return;
  }
  lua_pop(L, 2);
#endif
  luaL_getsubtable(L, LUA_REGISTRYINDEX, "_PRELOAD");
}

#endif
