/* Commands in their own process group (procgroup.c). No Lua: the binding
 * (bind_spawn.c) drives a run through these calls. */
#ifndef LUAGENT_PROCGROUP_H
#define LUAGENT_PROCGROUP_H

#include <stddef.h>
#include <sys/types.h>

typedef struct {
  pid_t pid;  /* the shell, also the group id; 0 once reaped and the group is gone */
  int fd;     /* the read end of its stdout+stderr, -1 once closed */
  int status; /* waitpid status of the shell */
} lg_pg;

/* Starts `/bin/sh -c cmd` (in cwd when given) in a new group. -1 with err. */
int lg_pg_start(lg_pg *p, const char *cmd, const char *cwd, char *err, size_t errlen);
/* One short wait for output (at most ~50 ms): > 0 bytes read into buf, 0
 * nothing yet, -1 the shell has exited and been reaped (its output closed). */
long lg_pg_step(lg_pg *p, char *buf, size_t n);
/* Tears the group down: TERM, then KILL after grace_ms; reaps the shell
 * unless it was reaped already. Returns the last signal sent ("TERM",
 * "KILL"), or NULL when nothing of the group was left. */
const char *lg_pg_kill(lg_pg *p, int reaped, int grace_ms);
/* Whether any member of group g is still alive (not a zombie). */
int lg_pg_alive(pid_t g);

#endif
