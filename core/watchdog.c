/* The watchdog of one app: a thread that notices a task told to stop (its
 * deadline passed, or a cancel) whose Lua still runs background_tasks.
 * stop_grace_s later, without the worker's help, and retires that worker.
 *
 * The count hook stops ordinary Lua at its next instructions (worker.c),
 * but Lua 5.4 runs some code with hooks off: finalizers (__gc), the message
 * handler of an error raised by a hook, the __close of a coroutine such an
 * error ended, a debug hook. Code there that loops, like a blocking C call,
 * never comes back on its own. Retiring its worker finishes the task with a
 * truthful status (timed_out or cancelled, the message saying its worker
 * was retired), frees its slot and takes the worker off the app's list, so
 * a fresh one starts when work needs it. The retired thread keeps its Lua
 * state: nobody else touches it. If the code ever returns, the thread finds
 * itself retired, closes its state on its own thread and exits; what it
 * still calls into the core meanwhile is ignored (the task is finished).
 * A worker stuck between tasks (a finalizer in a GC step) is retired too.
 *
 * The thread wakes twice per grace period while the app has workers and
 * sleeps otherwise; it leaves when the app closes (close detaches stuck
 * workers after close_grace_s, as before). Runs under app->mu. */
#include "dispatch_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* When a running task was first told to stop (0: it was not). */
static int64_t stop_time(const lg_task *t, int64_t now) {
  int64_t at = t->stop_mono;
  if (t->deadline_mono > 0 && t->deadline_mono <= now) at = lg_min_deadline(at, t->deadline_mono);
  /* a stall is noticed here too: code stuck in C never reaches the hook */
  if (lg_stall_check((lg_task *)t, now)) at = lg_min_deadline(at, lg_stall_at((lg_task *)t));
  return at;
}

static void retire(lg_app *a, lg_worker *w) {
  lg_task *t = w->task;
  atomic_store(&w->retired, 1);
  lg_worker_unlink(a, w);
  char msg[256];
  if (!t) {
    snprintf(msg, sizeof msg, "luagent: a worker was retired: Lua between tasks (a finalizer) ran "
             "for more than %gs", a->cfg.stop_grace_s);
    lg_log(a, "warn", "%s", msg);
    lg_schedule(a);
    return;
  }
  /* the hook may not have seen the deadline: it never fired */
  int none = STOP_NONE;
  atomic_compare_exchange_strong(&t->stop, &none, STOP_TIMEOUT);
  int stop = atomic_load(&t->stop);
  /* t stays in memory while its worker lives (t->worker is kept): the
   * retired thread's hook still reads it */
  t->retired = 1;
  lg_give_slot(a, t);
  a->running_n--;
  lg_release_claims(a, t);
  if (stop == STOP_STALL) {
    /* not retried: the stuck attempt's code still runs on its retired
     * thread, and a second attempt beside it could repeat its effects */
    char why[160];
    lg_stall_message(t, why, sizeof why);
    snprintf(msg, sizeof msg, "%s; its worker was retired: the task's code did not stop within "
             "%gs", why, a->cfg.stop_grace_s);
    lg_set_error(t, "stalled", msg);
    lg_finish_task(a, t, TS_TIMED_OUT);
  } else if (stop == STOP_TIMEOUT) {
    snprintf(msg, sizeof msg, "timed out after %gs; its worker was retired: the task's code did not "
             "stop within %gs of its deadline", t->timeout_s, a->cfg.stop_grace_s);
    lg_set_error(t, "timeout", msg);
    lg_finish_task(a, t, TS_TIMED_OUT);
  } else {
    snprintf(msg, sizeof msg, "cancelled; its worker was retired: the task's code did not stop "
             "within %gs of the cancel", a->cfg.stop_grace_s);
    lg_set_error(t, "cancelled", msg);
    lg_finish_task(a, t, TS_CANCELLED);
  }
  char line[400];
  snprintf(line, sizeof line, "luagent: task %s: %s", t->id, msg);
  lg_log(a, "warn", "%s", line);
  lg_schedule(a);
}

/* Retire what is overdue; returns whether any worker is left to watch. */
static int watch(lg_app *a) {
  int64_t now = lg_mono_ms();
  int64_t grace = (int64_t)(a->cfg.stop_grace_s * 1000.0);
  for (lg_worker *w = a->workers, *nx; w; w = nx) {
    nx = w->next;
    /* a blocking core call returns by itself when its task must stop */
    if (w->in_core || w->idle) continue;
    int64_t since = w->task ? stop_time(w->task, now) : w->busy_since;
    if (since > 0 && now - since >= grace) retire(a, w);
  }
  lg_evict_finished(a);
  return a->workers != NULL;
}

static void *watchdog_main(void *arg) {
  lg_app *a = arg;
  pthread_setname_np(pthread_self(), "lg-watchdog"); /* what top -H and perf show */
  pthread_mutex_lock(&a->mu);
  int64_t tick = (int64_t)(a->cfg.stop_grace_s * 500.0);
  if (tick < 10) tick = 10;
  while (!a->closing) {
    int busy = watch(a);
    lg_cond_wait_until(&a->watch_cv, &a->mu, busy ? lg_mono_ms() + tick : 0);
  }
  a->watchdog_on = 0;
  pthread_mutex_unlock(&a->mu);
  lg_app_release(a);
  return NULL;
}

void lg_watchdog_start(lg_app *a) {
  if (a->watchdog_on) {
    pthread_cond_signal(&a->watch_cv); /* it may sleep with no worker to watch */
    return;
  }
  if (a->cfg.stop_grace_s < 0 || a->closing) return;
  if (lg_app_thread(a, watchdog_main) != 0) {
    lg_log(a, "warn", "%s", "luagent: could not start the watchdog thread; a task whose code cannot "
             "be stopped will hold its worker");
    return;
  }
  a->watchdog_on = 1;
}

void lg_watchdog_poke(lg_app *a) {
  if (a->watchdog_on) pthread_cond_signal(&a->watch_cv);
}
