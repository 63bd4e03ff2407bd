/* Lua bindings of the C core: the only file that builds Lua values for the
 * host and worker states. */
#include "luagent.h"
#include "internal.h"

#include <lauxlib.h>

LUAGENT_API int luaopen_luagent_core(lua_State *L) {
  lua_newtable(L);
  lg_json_open(L);
  lua_setfield(L, -2, "json");
  return 1;
}
