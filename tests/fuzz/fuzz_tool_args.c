/* libFuzzer target for the tool-argument path: an embedded Lua 5.4 state
 * with the whole core (luagent.core in package.preload) loads the repo's
 * Lua modules and runs tests/fuzz/fuzz_tool_args.lua, which feeds each
 * input as the JSON arguments of a tool call through tools.check_args (the
 * runner's own check: decode, then schema.lua) and checks its invariants.
 *   make run-fuzz-tool_args FUZZ_SECONDS=60      (tests/c/README.md)
 * libFuzzer sees the C coverage of json.c; Lua's own coverage (which line
 * of which chunk ran after which) is fed to it through extra counters from
 * a line hook, so inputs that reach new Lua paths are kept too. */
#include "luagent.h"

#include <lauxlib.h>
#include <lualib.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#ifndef LUAGENT_ROOT
#define LUAGENT_ROOT "."
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c) do { if (!(c)) __builtin_trap(); } while (0)

/* libFuzzer reads this section as coverage counters. */
#define LUA_EDGES (1u << 16)
__attribute__((section("__libfuzzer_extra_counters"), used)) static uint8_t lua_edges[LUA_EDGES];
static uintptr_t last_line;

static void line_hook(lua_State *L, lua_Debug *ar) {
  if (!lua_getinfo(L, "S", ar)) return;
  uintptr_t here = ((uintptr_t)ar->source * 31u) ^ (uintptr_t)ar->currentline * 2654435761u;
  uint8_t *c = &lua_edges[(here ^ (last_line >> 1)) % LUA_EDGES];
  if (*c < 255) (*c)++;
  last_line = here;
}

static lua_State *state;
static int check_ref = LUA_NOREF;

static void fail_with(lua_State *L, const char *what) {
  fprintf(stderr, "fuzz_tool_args: %s: %s\n", what, lua_tostring(L, -1));
  __builtin_trap();
}

static void setup(void) {
  lua_State *L = luaL_newstate();
  CHECK(L != NULL);
  luaL_openlibs(L);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, luaopen_luagent_core);
  lua_setfield(L, -2, "luagent.core");
  lua_pop(L, 1);
  lua_getglobal(L, "package");
  lua_pushstring(L, LUAGENT_ROOT "/lua/?.lua;" LUAGENT_ROOT "/lua/?/init.lua");
  lua_setfield(L, -2, "path");
  lua_pop(L, 1);
  if (luaL_dofile(L, LUAGENT_ROOT "/tests/fuzz/fuzz_tool_args.lua") != LUA_OK)
    fail_with(L, "loading the driver");
  CHECK(lua_isfunction(L, -1));
  check_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_sethook(L, line_hook, LUA_MASKLINE, 0);
  state = L;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!state) setup();
  lua_State *L = state;
  last_line = 0;
  lua_rawgeti(L, LUA_REGISTRYINDEX, check_ref);
  lua_pushlstring(L, (const char *)data, size);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) fail_with(L, "an invariant broke");
  lua_settop(L, 0);
  return 0;
}
