/* Commands in their own process group: `core.spawn_run`, what ctx:spawn and
 * the shell plugin run commands with (README, "Commands and process
 * groups").
 *
 * A command runs as `/bin/sh -c CMD` through posix_spawn with
 * POSIX_SPAWN_SETPGROUP, so it and everything it starts (`sleep 300 &`) share
 * one process group whose id is the shell's pid; stdin is /dev/null, stdout
 * and stderr go to one pipe, and no other descriptor of the host is
 * inherited. The whole wait happens here, in C, reading the pipe in short
 * polls and asking a Lua function between them whether the run must stop:
 * once a task is told to stop its Lua no longer runs reliably (worker.c's
 * hook raises at every instruction), so the kill cannot be left to Lua.
 *
 * Teardown (a stop, the command's own timeout, or the command ending while
 * something it started still runs) sends SIGTERM to the group, waits up to
 * the grace period for every member to leave, then sends SIGKILL. A member
 * has left when it is gone or a zombie: an orphan's zombie belongs to
 * whoever reaps orphans, not to us. What happened is emitted as a
 * `process_killed` event of the run (lg_emit: C, so it is recorded even
 * while the task's Lua is being stopped) and returned to the caller.
 *
 * A handle the Lua side lost (an error unwinding past the wait) still kills
 * its group at __gc. */
#include "procgroup.h"
#include "internal.h"

#include <lauxlib.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* Whether any member of group g is still alive (not a zombie). */
static int group_alive(pid_t g) {
  if (kill(-g, 0) != 0) return 0;
  DIR *d = opendir("/proc");
  if (!d) return 1;
  int alive = 0;
  struct dirent *de;
  while (!alive && (de = readdir(d))) {
    if (de->d_name[0] < '0' || de->d_name[0] > '9') continue;
    char path[300], line[512];
    snprintf(path, sizeof path, "/proc/%s/stat", de->d_name);
    FILE *f = fopen(path, "re");
    if (!f) continue;
    size_t n = fread(line, 1, sizeof line - 1, f);
    fclose(f);
    line[n] = 0;
    /* pid (comm) state ppid pgrp ...; comm may hold spaces and parens */
    char *rp = strrchr(line, ')');
    char state;
    int ppid, pgrp;
    if (rp && sscanf(rp + 1, " %c %d %d", &state, &ppid, &pgrp) == 3 && pgrp == g && state != 'Z' &&
        state != 'X')
      alive = 1;
  }
  closedir(d);
  return alive;
}

static void nap_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* TERM, then KILL after grace_ms; reaps `pid` (our child) when it is given.
 * Returns the last signal sent ("TERM", "KILL") or NULL if none was needed. */
static const char *kill_group(pid_t g, pid_t pid, int *status, int grace_ms) {
  const char *sent = NULL;
  if (group_alive(g)) {
    kill(-g, SIGTERM);
    sent = "TERM";
    int64_t end = lg_mono_ms() + grace_ms;
    while (lg_mono_ms() < end) {
      if (pid > 0 && waitpid(pid, status, WNOHANG) == pid) pid = 0;
      if (!group_alive(g)) break;
      nap_ms(10);
    }
    if (group_alive(g)) {
      kill(-g, SIGKILL);
      sent = "KILL";
      for (int i = 0; i < 200 && group_alive(g); i++) nap_ms(5);
    }
  }
  if (pid > 0) waitpid(pid, status, 0);
  return sent;
}

/* ---- the run ---- */
typedef struct {
  pid_t pid; /* also the group id; 0 once reaped and the group is gone */
  int fd;
  int status;
} pg_ud;

#define PG_MT "luagent.procgroup"

static int pg_gc(lua_State *L) {
  pg_ud *u = luaL_checkudata(L, 1, PG_MT);
  if (u->fd >= 0) close(u->fd);
  u->fd = -1;
  if (u->pid > 0) kill_group(u->pid, u->pid, &u->status, 200);
  u->pid = 0;
  return 0;
}

static const char *field_str(lua_State *L, int t, const char *k) {
  lua_getfield(L, t, k);
  const char *s = lua_isstring(L, -1) ? lua_tostring(L, -1) : NULL;
  lua_pop(L, 1);
  return s; /* stays alive: the table holds it */
}

static double field_num(lua_State *L, int t, const char *k, double d) {
  lua_getfield(L, t, k);
  double v = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : d;
  lua_pop(L, 1);
  return v;
}

static int start(pg_ud *u, const char *cmd, const char *cwd, char *err, size_t errlen) {
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) {
    snprintf(err, errlen, "pipe: %s", strerror(errno));
    return -1;
  }
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t at;
  posix_spawn_file_actions_init(&fa);
  posix_spawnattr_init(&at);
  posix_spawnattr_setpgroup(&at, 0);
  sigset_t none, dfl;
  sigemptyset(&none);
  sigfillset(&dfl);
  posix_spawnattr_setsigmask(&at, &none); /* workers block signals; the command must not */
  posix_spawnattr_setsigdefault(&at, &dfl);
  posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                    POSIX_SPAWN_SETSIGDEF);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, p[1], 1);
  posix_spawn_file_actions_adddup2(&fa, p[1], 2);
  posix_spawn_file_actions_addclosefrom_np(&fa, 3);
  if (cwd) posix_spawn_file_actions_addchdir_np(&fa, cwd);
  char *argv[] = {"sh", "-c", (char *)cmd, NULL};
  int rc = posix_spawn(&u->pid, "/bin/sh", &fa, &at, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&at);
  close(p[1]);
  if (rc != 0) {
    close(p[0]);
    u->pid = 0;
    snprintf(err, errlen, "could not start /bin/sh: %s", strerror(rc));
    return -1;
  }
  u->fd = p[0];
  return 0;
}

/* Calls the should_stop function at idx: 1 stop (also when it raised). */
static int must_stop(lua_State *L, int idx) {
  if (lua_isnoneornil(L, idx)) return 0;
  lua_pushvalue(L, idx);
  if (lua_pcall(L, 0, 1, 0) != LUA_OK) {
    lua_pop(L, 1);
    return 1;
  }
  int stop = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return stop;
}

static void emit_kill(lua_State *L, lg_app *app, int opts, pid_t g, const char *sig,
                      const char *reason) {
  if (!app) return;
  char payload[256];
  snprintf(payload, sizeof payload,
           "{\"pgid\":%d,\"reason\":\"%s\",\"signal\":\"%s\"}", (int)g, reason, sig);
  char summary[128];
  snprintf(summary, sizeof summary, "process group %d killed (%s): %s", (int)g, sig, reason);
  lg_event_in e;
  e.kind = "process_killed";
  e.payload_json = payload;
  e.run_id = field_str(L, opts, "run_id");
  e.task_id = field_str(L, opts, "task_id");
  e.agent_id = field_str(L, opts, "agent_id");
  e.depth = (int)field_num(L, opts, "depth", 0);
  lg_emit(app, &e, summary);
}

/* core.spawn_run(app|nil, opts, should_stop) -> { exit_code, output,
 * truncated?, timed_out?, stopped?, killed?, pgid }.
 * opts: cmd, cwd?, timeout_s? (0: none), max_output_bytes (16384), grace_s
 * (2), and the run's run_id, task_id, agent_id, depth for the event. */
static int l_spawn_run(lua_State *L) {
  lg_app *app = lua_isnoneornil(L, 1) ? NULL : lg_app_at(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  const char *cmd = field_str(L, 2, "cmd");
  if (!cmd) return luaL_error(L, "spawn: cmd must be a string");
  const char *cwd = field_str(L, 2, "cwd");
  double timeout_s = field_num(L, 2, "timeout_s", 0);
  size_t max = (size_t)field_num(L, 2, "max_output_bytes", 16384);
  int grace_ms = (int)(field_num(L, 2, "grace_s", 2) * 1000.0);
  pg_ud *u = lua_newuserdatauv(L, sizeof *u, 0);
  u->pid = 0;
  u->fd = -1;
  u->status = 0;
  luaL_setmetatable(L, PG_MT);
  int ud = lua_gettop(L);
  char err[200];
  if (start(u, cmd, cwd, err, sizeof err) != 0) return luaL_error(L, "spawn: %s", err);
  pid_t g = u->pid;
  luaL_Buffer out;
  luaL_buffinit(L, &out);
  size_t kept = 0;
  int cut = 0, timed_out = 0, stopped = 0, exited = 0;
  int64_t deadline = timeout_s > 0 ? lg_mono_ms() + (int64_t)(timeout_s * 1000.0) : 0;
  char chunk[4096];
  for (;;) {
    if (must_stop(L, 3)) {
      stopped = 1;
      break;
    }
    if (deadline && lg_mono_ms() >= deadline) {
      timed_out = 1;
      break;
    }
    if (u->fd < 0) {
      /* output closed: wait for the shell itself */
      pid_t r = waitpid(u->pid, &u->status, WNOHANG);
      if (r == u->pid) {
        exited = 1;
        break;
      }
      nap_ms(20);
      continue;
    }
    struct pollfd pf = {u->fd, POLLIN, 0};
    int pr = poll(&pf, 1, 50);
    if (pr <= 0) continue;
    ssize_t n = read(u->fd, chunk, sizeof chunk);
    if (n > 0) {
      size_t take = (size_t)n;
      if (kept + take > max) {
        take = max - kept;
        cut = 1;
      }
      luaL_addlstring(&out, chunk, take);
      kept += take;
    } else if (n == 0 || errno != EINTR) {
      close(u->fd);
      u->fd = -1;
    }
  }
  if (u->fd >= 0) close(u->fd);
  u->fd = -1;
  /* the shell ended, but what it started may still run in its group */
  const char *reason = stopped ? "the run was stopped" : timed_out ? "the command timed out"
                                                                  : "the command ended";
  const char *sig = kill_group(g, exited ? 0 : g, &u->status, grace_ms);
  u->pid = 0;
  if (sig) emit_kill(L, app, 2, g, sig, reason);
  luaL_pushresult(&out);
  int body = lua_gettop(L);
  lua_createtable(L, 0, 8);
  int code = -1;
  if (WIFEXITED(u->status)) code = WEXITSTATUS(u->status);
  else if (WIFSIGNALED(u->status)) code = 128 + WTERMSIG(u->status);
  if (timed_out) code = 124;
  lua_pushinteger(L, code);
  lua_setfield(L, -2, "exit_code");
  lua_pushvalue(L, body);
  lua_setfield(L, -2, "output");
  lua_pushinteger(L, g);
  lua_setfield(L, -2, "pgid");
  if (cut) {
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, "truncated");
  }
  if (timed_out) {
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, "timed_out");
  }
  if (stopped) {
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, "stopped");
  }
  if (sig) {
    lua_pushfstring(L, "process group %d killed (%s): %s", (int)g, sig, reason);
    lua_setfield(L, -2, "killed");
  }
  (void)ud;
  return 1;
}

/* core.group_alive(pgid): whether a member of the group still runs (specs). */
static int l_group_alive(lua_State *L) {
  lua_pushboolean(L, group_alive((pid_t)luaL_checkinteger(L, 1)));
  return 1;
}

/* Adds spawn_run and group_alive to the module table at the top. */
void lg_pg_open(lua_State *L) {
  if (luaL_newmetatable(L, PG_MT)) {
    lua_pushcfunction(L, pg_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  lua_pushcfunction(L, l_spawn_run);
  lua_setfield(L, -2, "spawn_run");
  lua_pushcfunction(L, l_group_alive);
  lua_setfield(L, -2, "group_alive");
}
