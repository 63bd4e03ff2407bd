/* A C host calling the control tools' entries directly (luagent.h): the app
 * is made in Lua (a scripted model spawns two background tasks on thread
 * t1), then only C asks about them, from the owner's scope and from others,
 * and sends to the finished one. */
#include "luagent.h"

#include "lua_compat.h" /* the API on every Lua luagent builds against */

#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;

static void expect(int ok, const char *what, const char *got) {
  if (!ok) {
    failures++;
    fprintf(stderr, "FAIL %s: %s\n", what, got ? got : "(null)");
  }
}

static const char *SCRIPT =
    "package.path = './lua/?.lua;./lua/?/init.lua;' .. package.path\n"
    "local luagent = require 'luagent'\n"
    "local app = luagent.load_string([[\n"
    "local luagent = require 'luagent'\n"
    "local quick = luagent.tool{ name = 'quick', background = { enabled = true },\n"
    "  handler = function() return 'quick done' end }\n"
    "local step = 0\n"
    "return luagent.config{ background_tasks = { enabled = true },\n"
    "  model = luagent.function_model(function(req)\n"
    "    for _, m in ipairs(req.messages) do if m.role == 'tool' then return { text = 'ok' } end end\n"
    "    return { tool_calls = { { name = 'quick', arguments = {} } } }\n"
    "  end),\n"
    "  agents = { luagent.agent{ id = 'A', tools = { quick } } } }\n"
    "]], '=c_host')\n"
    "local res = app:run('A', 'go', { thread_id = 't1' })\n"
    "assert(res.status == 'completed', res.error and res.error.message)\n"
    "local id = app:list({ agent_id = 'A' })[1].task_id\n"
    "app:wait({ id }, { timeout_s = 10 })\n"
    "return app, id\n";

int main(void) {
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  luaL_requiref(L, "luagent.core", luaopen_luagent_core, 0);
  lua_pop(L, 1);
  if (luaL_dostring(L, SCRIPT) != LUA_OK) {
    fprintf(stderr, "script: %s\n", lua_tostring(L, -1));
    return 2;
  }
  const char *id = lua_tostring(L, -1);
  lg_app *app = luagent_app_of(L, -2);
  expect(app != NULL, "luagent_app_of", NULL);
  if (!app) return 1;
  char args[256];
  snprintf(args, sizeof args, "{\"task_id\":\"%s\"}", id);
  luagent_scope own = {"A", "t1", NULL, NULL}, other_agent = {"B", "t1", NULL, NULL},
                other_thread = {"A", "t2", NULL, NULL};

  char *r = luagent_bg_list(app, &own, "{\"include_finished\":true}");
  expect(r && strstr(r, id) && strstr(r, "\"ok\":true"), "bg_list own scope", r);
  luagent_free(r);
  r = luagent_bg_check(app, &own, args);
  expect(r && strstr(r, "quick done"), "bg_check own scope", r);
  luagent_free(r);

  luagent_scope *others[] = {&other_agent, &other_thread};
  for (int i = 0; i < 2; i++) {
    r = luagent_bg_list(app, others[i], "{\"include_finished\":true}");
    expect(r && !strstr(r, id) && strstr(r, "\"tasks\":[]"), "bg_list other scope", r);
    luagent_free(r);
    r = luagent_bg_check(app, others[i], args);
    expect(r && strstr(r, "\"kind\":\"not_found\""), "bg_check other scope", r);
    luagent_free(r);
    r = luagent_bg_cancel(app, others[i], args);
    expect(r && strstr(r, "\"kind\":\"not_found\""), "bg_cancel other scope", r);
    luagent_free(r);
    char sargs[256];
    snprintf(sargs, sizeof sargs, "{\"task_id\":\"%s\",\"message\":\"hi\"}", id);
    r = luagent_bg_send(app, others[i], sargs);
    expect(r && strstr(r, "\"kind\":\"not_found\"") && strstr(r, "no background task"),
           "bg_send other scope", r);
    luagent_free(r);
    char wargs[256];
    snprintf(wargs, sizeof wargs, "{\"task_ids\":[\"%s\"],\"timeout_s\":1}", id);
    r = luagent_bg_wait(app, others[i], wargs);
    expect(r && strstr(r, "\"kind\":\"not_found\""), "bg_wait other scope", r);
    luagent_free(r);
  }
  /* bg_send: the task has finished; a message is required */
  char sargs[256];
  snprintf(sargs, sizeof sargs, "{\"task_id\":\"%s\",\"message\":\"hi\"}", id);
  r = luagent_bg_send(app, &own, sargs);
  expect(r && strstr(r, "\"kind\":\"not_found\"") && strstr(r, "has finished (completed)") &&
             strstr(r, "\"status\":\"completed\""),
         "bg_send to a finished task", r);
  luagent_free(r);
  r = luagent_bg_send(app, &own, args);
  expect(r && strstr(r, "\"kind\":\"validation\""), "bg_send without a message", r);
  luagent_free(r);
  char wargs[256];
  snprintf(wargs, sizeof wargs, "{\"task_ids\":[\"%s\"],\"timeout_s\":5}", id);
  r = luagent_bg_wait(app, &own, wargs);
  expect(r && strstr(r, "\"done\":true") && strstr(r, "quick done"), "bg_wait own scope", r);
  luagent_free(r);
  lua_close(L);
  if (failures) return 1;
  printf("control entries: ok\n");
  return 0;
}
