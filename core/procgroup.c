/* Commands in their own process group: what ctx:spawn and the shell plugin
 * run commands with (README, "Commands and process groups"). This file is
 * the operating system's side; `core.spawn_run` (bind_spawn.c) drives it.
 *
 * A command runs as `/bin/sh -c CMD` through posix_spawn with
 * POSIX_SPAWN_SETPGROUP, so it and everything it starts (`sleep 300 &`) share
 * one process group whose id is the shell's pid; stdin is /dev/null, stdout
 * and stderr go to one pipe, and no other descriptor of the host is
 * inherited. The whole wait happens in C, reading the pipe in short polls
 * and asking between them whether the run must stop:
 * once a task is told to stop its Lua no longer runs reliably (worker.c's
 * hook raises at every instruction), so the kill cannot be left to Lua.
 *
 * Teardown (a stop, the command's own timeout, or the command ending while
 * something it started still runs) sends SIGTERM to the group, waits up to
 * the grace period for every member to leave, then sends SIGKILL. A member
 * has left when it is gone or a zombie: an orphan's zombie belongs to
 * whoever reaps orphans, not to us. What happened is emitted as a
 * `process_killed` event of the run and returned to the caller. */
#include "procgroup.h"
#include "internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* Whether any member of group g is still alive (not a zombie). */
int lg_pg_alive(pid_t g) {
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

static const char *kill_group(pid_t g, pid_t pid, int *status, int grace_ms) {
  const char *sent = NULL;
  if (lg_pg_alive(g)) {
    kill(-g, SIGTERM);
    sent = "TERM";
    int64_t end = lg_mono_ms() + grace_ms;
    while (lg_mono_ms() < end) {
      if (pid > 0 && waitpid(pid, status, WNOHANG) == pid) pid = 0;
      if (!lg_pg_alive(g)) break;
      nap_ms(10);
    }
    if (lg_pg_alive(g)) {
      kill(-g, SIGKILL);
      sent = "KILL";
      for (int i = 0; i < 200 && lg_pg_alive(g); i++) nap_ms(5);
    }
  }
  if (pid > 0) waitpid(pid, status, 0);
  return sent;
}

int lg_pg_start(lg_pg *u, const char *cmd, const char *cwd, char *err, size_t errlen) {
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
  u->status = 0;
  return 0;
}


long lg_pg_step(lg_pg *p, char *buf, size_t n) {
  if (p->fd < 0) {
    /* output closed: wait for the shell itself */
    if (waitpid(p->pid, &p->status, WNOHANG) == p->pid) return -1;
    nap_ms(20);
    return 0;
  }
  struct pollfd pf = {p->fd, POLLIN, 0};
  if (poll(&pf, 1, 50) <= 0) return 0;
  ssize_t got = read(p->fd, buf, n);
  if (got > 0) return (long)got;
  if (got == 0 || errno != EINTR) {
    close(p->fd);
    p->fd = -1;
  }
  return 0;
}

const char *lg_pg_kill(lg_pg *p, int reaped, int grace_ms) {
  if (p->fd >= 0) close(p->fd);
  p->fd = -1;
  if (p->pid <= 0) return NULL;
  const char *sig = kill_group(p->pid, reaped ? 0 : p->pid, &p->status, grace_ms);
  p->pid = 0;
  return sig;
}
