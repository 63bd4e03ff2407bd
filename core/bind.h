/* What the binding files (bind_*.c, module.c) share: the handle types of
 * `luagent.core`, argument readers, and the one way JSON the core wrote
 * becomes a Lua value. Bindings see the core only through its functions
 * and handles (dispatcher.h, worker.h, http.h, store.h): values cross
 * between states as JSON text and C scalars, and the JSON is decoded
 * after every core lock is released. Arguments are checked before any
 * core call. */
#ifndef LUAGENT_BIND_H
#define LUAGENT_BIND_H

#include "dispatcher.h"
#include "worker.h"

#include "lua_compat.h"

#define APP_MT "luagent.app"
#define ERR_MT "luagent.error"
#define WAIT_MT "luagent.wait"

typedef struct {
  lg_app *app;
  int worker_handle; /* a worker state's view of its app: never closes it */
  int close_mode;    /* what __gc signals */
} app_ud;

typedef struct {
  lg_wait *w;
} wait_ud;

/* ---- bind.c: shared readers and writers ---- */
app_ud *lg_check_app(lua_State *L); /* the app at 1; raises when closed */
void lg_push_json_buf(lua_State *L, buf_t *b); /* decodes and frees b */
int lg_push_found(lua_State *L, int rc, buf_t *b); /* the JSON, or nothing when rc != 0 */
int lg_raise_err(lua_State *L, const lg_err *e);   /* raises {kind, message} */
const char *lg_check_text(lua_State *L, int idx);  /* a string without NUL bytes */
const char *lg_opt_text(lua_State *L, int idx, const char *d);
/* Set field k of the table on top of the stack (the values as the
 * matching lua_push* would push them). */
void lg_set_str(lua_State *L, const char *k, const char *v);
void lg_set_lstr(lua_State *L, const char *k, const char *v, size_t n);
void lg_set_int(lua_State *L, const char *k, lua_Integer v);
void lg_set_num(lua_State *L, const char *k, lua_Number v);
void lg_set_bool(lua_State *L, const char *k, int v);
const char *lg_opt_field_str(lua_State *L, int t, const char *k);
double lg_opt_field_num(lua_State *L, int t, const char *k, double d);
lua_Integer lg_opt_field_int(lua_State *L, int t, const char *k, lua_Integer d);
void lg_read_usage(lua_State *L, int t, const char *k, lg_usage *u);
void lg_read_task_fields(lua_State *L, int t, lg_enqueue_req *r);
char **lg_check_ids(lua_State *L, int idx, int *n); /* leaves a userdata on the stack */
lg_task *lg_calling_task(lua_State *L);  /* the worker's running task, or NULL */
lg_worker *lg_check_worker(lua_State *L); /* raises outside a background task */
wait_ud *lg_check_wait(lua_State *L, int idx);
void lg_push_wait(lua_State *L, lg_wait *w); /* takes ownership of w */
void lg_open_handle_mt(lua_State *L, const char *name, const luaL_Reg *methods,
                       lua_CFunction close);
/* How many wait values were decoded into Lua (for tests: a wait builds its
 * value once, not on every wakeup). */
void lg_count_wait_decode(void);
long lg_wait_decodes(void);

/* ---- one file per area; module.c puts them together ----
 * *_app_methods go into the app handle's methods, *_funcs into the module. */
extern const luaL_Reg lg_bind_app_methods[], lg_bind_app_funcs[];         /* bind_app.c */
extern const luaL_Reg lg_bind_tasks_methods[], lg_bind_tasks_funcs[];     /* bind_tasks.c */
extern const luaL_Reg lg_bind_host_methods[], lg_bind_host_funcs[];       /* bind_host.c */
extern const luaL_Reg lg_bind_events_methods[];                           /* bind_events.c */
extern const luaL_Reg lg_bind_store_methods[];                            /* bind_store.c */
extern const luaL_Reg lg_bind_control_methods[];                          /* bind_control.c */
extern const luaL_Reg lg_bind_http_funcs[];                               /* bind_http.c */
extern const luaL_Reg lg_bind_fg_funcs[];                                 /* fg_watch.c */
extern const luaL_Reg lg_bind_spawn_funcs[];                              /* bind_spawn.c */
extern const luaL_Reg lg_bind_embed_funcs[];                              /* bind_embed.c */
extern const luaL_Reg lg_bind_budget_methods[], lg_bind_budget_funcs[];   /* bind_budgets.c */
/* parent_task_id (an enqueue the host makes for a waiting task) and
 * tree_budget of the request table at t; *l holds the limits r points at
 * (bind_budgets.c). */
struct lg_budget_limits;
void lg_bind_budget_fields(lua_State *L, int t, lg_enqueue_req *r, struct lg_budget_limits *l);
int lg_bind_app_gc(lua_State *L);       /* the app handle's __gc (R-25a: only signals) */
void lg_bind_tasks_open(lua_State *L);  /* the wait handle's metatable */
void lg_bind_http_open(lua_State *L);   /* the transfer handle's metatable */
void lg_bind_fg_open(lua_State *L);     /* the foreground watch's metatable */
void lg_bind_spawn_open(lua_State *L);  /* the process group handle's metatable */
void lg_bind_embed_open(lua_State *L);  /* core.embedded, in the module table on top */
/* Sets core.store_reader, a read-only view of a store file that takes no
 * lock (store_reader.c), in the module table at the top of the stack. */
void lg_store_reader_open(lua_State *L);

#endif
