/* Lua bindings of the rate and tree budgets (core/ratelimit.c,
 * core/budget.c): methods of the app handle and module functions, and the
 * budget fields of an enqueue request. */
#ifndef LUAGENT_BIND_BUDGETS_H
#define LUAGENT_BIND_BUDGETS_H

#include "budget.h"

#include <lauxlib.h>

extern const luaL_Reg lg_bind_budget_methods[], lg_bind_budget_funcs[];
/* The app of the handle at index 1 (module.c; raises when closed). */
lg_app *lg_bind_check_app(lua_State *L);
/* parent_task_id (an enqueue the host makes for a waiting task) and
 * tree_budget of the request table at t; *l holds the limits r points at. */
void lg_bind_budget_fields(lua_State *L, int t, lg_enqueue_req *r, lg_budget_limits *l);

#endif
