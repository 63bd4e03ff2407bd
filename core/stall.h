/* Stall detection (stall.c). */
#ifndef LUAGENT_STALL_H
#define LUAGENT_STALL_H

#include "dispatcher.h"

#include <lua.h>
#include <stddef.h>
#include <stdint.h>

void lg_stall_touch(lg_task *t);               /* a sign of life (not while paused) */
void lg_stall_resume(lg_task *t);              /* the clock starts (again) now */
void lg_stall_pause(lg_task *t);               /* waiting in the core: the clock stops */
int64_t lg_stall_at(lg_task *t);               /* when it stalls (mono ms), 0: never */
int lg_stall_check(lg_task *t, int64_t now);   /* 1 and STOP_STALL once stalled */
void lg_stall_message(const lg_task *t, char *out, size_t n);
void lg_stall_open(lua_State *L);              /* adds task_heartbeat to the table on top */

#endif
