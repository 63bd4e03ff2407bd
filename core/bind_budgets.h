/* Lua bindings of the rate and tree budgets (core/ratelimit.c,
 * core/budget.c): methods of the app handle and module functions, and the
 * budget fields of an enqueue request. */
#ifndef LUAGENT_BIND_BUDGETS_H
#define LUAGENT_BIND_BUDGETS_H

#include "budget.h"

#include <lauxlib.h>

extern const luaL_Reg lg_bind_budget_methods[], lg_bind_budget_funcs[];
/* From module.c: the app of the handle at index 1 (raises when closed);
 * push the JSON the core wrote into b (freed); read a usage table field. */
lg_app *lg_bind_check_app(lua_State *L);
void lg_bind_push_json(lua_State *L, buf_t *b);
void lg_bind_read_usage(lua_State *L, int t, const char *k, lg_usage *u);
/* parent_task_id (an enqueue the host makes for a waiting task) and
 * tree_budget of the request table at t; *l holds the limits r points at. */
void lg_bind_budget_fields(lua_State *L, int t, lg_enqueue_req *r, lg_budget_limits *l);

#endif
