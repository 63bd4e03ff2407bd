/* What the worker threads share with the Lua bindings. */
#ifndef LUAGENT_WORKER_H
#define LUAGENT_WORKER_H

#include "luagent.h"
#include "task_types.h"

#include <lua.h>

typedef struct lg_worker lg_worker;

/* The cancel sentinel: a light userdata, the same in every state. */
void lg_push_cancel(lua_State *L);
int lg_is_cancel(lua_State *L, int idx);
int lg_raise_cancel(lua_State *L);
/* The interrupt sentinel (README, "Steering"): raised inside a run's open
 * step (a model call or tool) when a message asked to interrupt it; the
 * runner ends the step there and goes on. A light userdata like the cancel
 * sentinel, and a different one. */
void lg_push_interrupt(lua_State *L);
int lg_is_interrupt(lua_State *L, int idx);
int lg_raise_interrupt(lua_State *L);
/* The worker owning L, or NULL in a host state. */
lg_worker *lg_current_worker(lua_State *L);
/* The worker's multi handle (made on first use), freed at its exit. */
void *lg_http_worker_multi(lg_worker *w);
/* Is L a worker state whose worker the watchdog retired (its task is
 * finished without it)? What it still asks of the core is refused. */
int lg_worker_retired(lua_State *L);
void lg_http_worker_cleanup(lg_worker *w);
/* What the bindings may know of the calling worker. */
lg_task *lg_worker_current(lg_worker *w); /* the task whose Lua runs, or NULL */
lg_app *lg_worker_app(lg_worker *w);
void lg_worker_set_in_http(lg_worker *w, int on);

#endif
