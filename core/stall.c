/* Stall detection (README, "Stalls"): a task with stale_after_s whose run
 * emits no event, makes no model or tool progress and does not call
 * ctx:heartbeat() for that long is told to stop with STOP_STALL; it ends
 * timed_out with error.kind "stalled", or is retried while attempts remain.
 *
 * The clock is one atomic per task: the monotonic ms of the last sign of
 * life, or 0 while the task waits inside the core (ctx:sleep, ctx:wait,
 * bg_wait, a host call), where being quiet is what it asked for. Workers
 * write it without a lock; the hook, the HTTP progress callback and the
 * watchdog read it; ctx:heartbeat reaches lg_task_heartbeat through the
 * bindings (bind_tasks.c). Code the hook cannot reach (a C call that blocks) is
 * noticed by the watchdog (watchdog.c), which retires its worker. */
#include "tasks.h"
#include "internal.h"

#include <stdio.h>

void lg_stall_touch(lg_task *t) {
  if (t->stale_ms <= 0) return;
  int64_t p = atomic_load(&t->progress_mono);
  /* never restarts a paused clock: an event about a waiting task is no
   * sign that its code is stuck */
  while (p != 0 && !atomic_compare_exchange_weak(&t->progress_mono, &p, lg_mono_ms())) {
  }
}

void lg_stall_resume(lg_task *t) {
  if (t->stale_ms > 0) atomic_store(&t->progress_mono, lg_mono_ms());
}

void lg_stall_pause(lg_task *t) {
  if (t->stale_ms > 0) atomic_store(&t->progress_mono, 0);
}

int64_t lg_stall_at(lg_task *t) {
  if (t->stale_ms <= 0) return 0;
  int64_t p = atomic_load(&t->progress_mono);
  return p > 0 ? p + t->stale_ms : 0;
}

int lg_stall_check(lg_task *t, int64_t now) {
  int64_t at = lg_stall_at(t);
  if (at <= 0 || now < at) return 0;
  int none = STOP_NONE;
  atomic_compare_exchange_strong(&t->stop, &none, STOP_STALL);
  return 1;
}

void lg_stall_message(const lg_task *t, char *out, size_t n) {
  snprintf(out, n, "stalled: no event, model or tool progress and no heartbeat for %gs "
           "(stale_after_s)", (double)t->stale_ms / 1000.0);
}
