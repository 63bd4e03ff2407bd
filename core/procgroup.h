/* Commands in their own process group (procgroup.c). */
#ifndef LUAGENT_PROCGROUP_H
#define LUAGENT_PROCGROUP_H

#include "dispatcher.h"

#include <lua.h>

void lg_pg_open(lua_State *L);            /* adds spawn_run, group_alive to the table on top */
lg_app *lg_app_at(lua_State *L, int idx); /* module.c: the app handle at idx */

#endif
