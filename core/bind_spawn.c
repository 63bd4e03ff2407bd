/* Binding of commands in their own process group: core.spawn_run, what
 * ctx:spawn and the shell plugin run commands with (README, "Commands and
 * process groups"). The wait happens here, in C, over procgroup.c's short
 * polls, asking the run's should_stop function between them: once a task is
 * told to stop its Lua no longer runs reliably (worker.c's hook raises at
 * every instruction), so the kill cannot be left to Lua. A kill is emitted
 * as a `process_killed` event of the run (lg_emit: C, so it is recorded
 * even while the task's Lua is being stopped). A handle the Lua side lost
 * (an error unwinding past the wait) still kills its group at __gc. */
#include "bind.h"
#include "procgroup.h"

#include <stdio.h>
#include <sys/wait.h>

#define PG_MT "luagent.procgroup"

static int pg_gc(lua_State *L) {
  lg_pg *p = luaL_checkudata(L, 1, PG_MT);
  lg_pg_kill(p, 0, 200);
  return 0;
}

/* Calls the should_stop function at idx: 1 stop (also when it raised), 2 a
 * message interrupted the run's step (steer.c: raised in the function, or
 * asked for since). */
static int must_stop(lua_State *L, int idx) {
  lg_task *task = lg_calling_task(L);
  if (task && lg_task_interrupted(task)) {
    lg_task_step_open(task, 0); /* raised once (ctx:spawn), as lg_raise_interrupt does */
    return 2;
  }
  if (lua_isnoneornil(L, idx)) return 0;
  lua_pushvalue(L, idx);
  if (lua_pcall(L, 0, 1, 0) != LUA_OK) {
    int interrupted = lg_is_interrupt(L, -1);
    lua_pop(L, 1);
    return interrupted ? 2 : 1;
  }
  int stop = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return stop;
}

static void emit_kill(lua_State *L, lg_app *app, int opts, pid_t g, const char *sig,
                      const char *reason) {
  if (!app) return;
  char payload[256];
  snprintf(payload, sizeof payload, "{\"pgid\":%d,\"reason\":\"%s\",\"signal\":\"%s\"}", (int)g,
           reason, sig);
  char summary[128];
  snprintf(summary, sizeof summary, "process group %d killed (%s): %s", (int)g, sig, reason);
  lg_event_in e;
  e.kind = "process_killed";
  e.payload_json = payload;
  e.run_id = lg_opt_field_str(L, opts, "run_id");
  e.task_id = lg_opt_field_str(L, opts, "task_id");
  e.agent_id = lg_opt_field_str(L, opts, "agent_id");
  e.depth = (int)lg_opt_field_num(L, opts, "depth", 0);
  lg_emit(app, &e, summary);
}

static void set_flag(lua_State *L, const char *k, int on) {
  if (!on) return;
  lua_pushboolean(L, 1);
  lua_setfield(L, -2, k);
}

/* core.spawn_run(app|nil, opts, should_stop) -> { exit_code, output,
 * truncated?, timed_out?, stopped?, interrupted?, killed?, pgid }.
 * opts: cmd, cwd?, timeout_s? (0: none), max_output_bytes (16384), grace_s
 * (2), and the run's run_id, task_id, agent_id, depth for the event. */
static int l_spawn_run(lua_State *L) {
  lg_app *app = lua_isnoneornil(L, 1) ? NULL : ((app_ud *)luaL_checkudata(L, 1, APP_MT))->app;
  luaL_checktype(L, 2, LUA_TTABLE);
  const char *cmd = lg_opt_field_str(L, 2, "cmd");
  if (!cmd) return luaL_error(L, "spawn: cmd must be a string");
  const char *cwd = lg_opt_field_str(L, 2, "cwd");
  double timeout_s = lg_opt_field_num(L, 2, "timeout_s", 0);
  size_t max = (size_t)lg_opt_field_num(L, 2, "max_output_bytes", 16384);
  int grace_ms = (int)(lg_opt_field_num(L, 2, "grace_s", 2) * 1000.0);
  lg_pg *p = lua_newuserdatauv(L, sizeof *p, 0);
  p->pid = 0;
  p->fd = -1;
  p->status = 0;
  luaL_setmetatable(L, PG_MT);
  char err[200];
  if (lg_pg_start(p, cmd, cwd, err, sizeof err) != 0) return luaL_error(L, "spawn: %s", err);
  pid_t g = p->pid;
  luaL_Buffer out;
  luaL_buffinit(L, &out);
  size_t kept = 0;
  int cut = 0, timed_out = 0, stopped = 0, exited = 0, interrupted = 0;
  int64_t deadline = timeout_s > 0 ? lg_mono_ms() + (int64_t)(timeout_s * 1000.0) : 0;
  char chunk[4096];
  for (;;) {
    int stop = must_stop(L, 3);
    if (stop) {
      stopped = stop == 1;
      interrupted = stop == 2;
      break;
    }
    if (deadline && lg_mono_ms() >= deadline) {
      timed_out = 1;
      break;
    }
    long n = lg_pg_step(p, chunk, sizeof chunk);
    if (n < 0) {
      exited = 1;
      break;
    }
    if (n > 0) {
      size_t take = (size_t)n;
      if (kept + take > max) {
        take = max - kept;
        cut = 1;
      }
      luaL_addlstring(&out, chunk, take);
      kept += take;
    }
  }
  /* the shell ended, but what it started may still run in its group */
  const char *reason = stopped       ? "the run was stopped"
                       : interrupted ? "a message interrupted the step"
                       : timed_out   ? "the command timed out"
                                     : "the command ended";
  const char *sig = lg_pg_kill(p, exited, grace_ms);
  if (sig) emit_kill(L, app, 2, g, sig, reason);
  luaL_pushresult(&out);
  int body = lua_gettop(L);
  lua_createtable(L, 0, 8);
  int code = -1;
  if (WIFEXITED(p->status)) code = WEXITSTATUS(p->status);
  else if (WIFSIGNALED(p->status)) code = 128 + WTERMSIG(p->status);
  if (timed_out) code = 124;
  lg_set_int(L, "exit_code", code);
  lua_pushvalue(L, body);
  lua_setfield(L, -2, "output");
  lg_set_int(L, "pgid", g);
  set_flag(L, "truncated", cut);
  set_flag(L, "timed_out", timed_out);
  set_flag(L, "stopped", stopped);
  set_flag(L, "interrupted", interrupted);
  if (sig) {
    lua_pushfstring(L, "process group %d killed (%s): %s", (int)g, sig, reason);
    lua_setfield(L, -2, "killed");
  }
  return 1;
}

/* core.group_alive(pgid): whether a member of the group still runs (specs). */
static int l_group_alive(lua_State *L) {
  lua_pushboolean(L, lg_pg_alive((pid_t)luaL_checkinteger(L, 1)));
  return 1;
}

const luaL_Reg lg_bind_spawn_funcs[] = {
    {"spawn_run", l_spawn_run}, {"group_alive", l_group_alive}, {NULL, NULL}};

void lg_bind_spawn_open(lua_State *L) {
  if (luaL_newmetatable(L, PG_MT)) {
    lua_pushcfunction(L, pg_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
}
