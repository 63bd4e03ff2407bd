/* Bindings of the event stream: emitting an event, reading the
 * stream from a cursor. */
#include "bind.h"

#include <limits.h>

/* emit(kind, payload_json, run_id, task_id, agent_id, depth, summary) */
static int l_app_emit(lua_State *L) {
  app_ud *u = lg_check_app(L);
  lg_event_in e;
  e.kind = lg_check_text(L, 2);
  e.payload_json = lg_opt_text(L, 3, "{}");
  e.run_id = lg_opt_text(L, 4, NULL);
  e.task_id = lg_opt_text(L, 5, NULL);
  e.agent_id = lg_opt_text(L, 6, NULL);
  e.depth = (int)luaL_optinteger(L, 7, 0);
  const char *summary = lg_opt_text(L, 8, NULL);
  lg_emit(u->app, &e, summary);
  return 0;
}

static int l_app_events(lua_State *L) {
  app_ud *u = lg_check_app(L);
  lua_Integer since = luaL_optinteger(L, 2, 0);
  lua_Integer limit = luaL_optinteger(L, 3, 1000);
  if (limit < 1) limit = 1;
  buf_t out;
  lg_buf_init(&out);
  lg_events(u->app, since, limit > INT_MAX ? INT_MAX : (int)limit, &out);
  lg_push_json_buf(L, &out);
  return 1;
}

const luaL_Reg lg_bind_events_methods[] = {
    {"emit", l_app_emit}, {"events", l_app_events}, {NULL, NULL}};
