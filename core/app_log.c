/* The app's entries to its event log and host work queue (events.c): the
 * functions of dispatcher.h that take an lg_app, and what of the host's
 * path decides — which task an event is about and whether it still may
 * emit, running retry timers that are due, a worker's wait for the host's
 * reply that a stop ends. The log itself knows no scheduler. Locks:
 * docs/architecture.md, "Locks". */
#include "dispatch_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Wake a host blocked in lg_block or an HTTP poll (a signal's watcher). */
void lg_wake(lg_app *a) { lg_bump(a); }

void lg_log(lg_app *a, const char *level, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  lg_ev_line(&a->log, level, msg);
}

/* A worker waits for the host's reply to its call (HQ lock only). Returns 1
 * when the task must stop first, 2 when a message interrupted the step. Stop requests wake it (lg_worker_wake). */
int lg_hq_await_reply(lg_app *a, lg_worker *w, lg_host_item *it, lg_task *t) {
  pthread_mutex_lock(&a->log.hq_mu);
  int stop = 0;
  while (!it->replied && !(stop = lg_task_should_stop(t))) {
    if (lg_task_interrupted(t)) {
      stop = 2; /* a message cut the step short (steer.c) */
      break;
    }
    lg_cond_wait_until(&w->hcv, &a->log.hq_mu, t->deadline_mono);
  }
  lg_ev_unlink_locked(&a->log, it); /* still queued if the host never took it: drop it */
  pthread_mutex_unlock(&a->log.hq_mu);
  return stop;
}

void lg_emit(lg_app *a, const lg_event_in *e, const char *summary) {
  pthread_mutex_lock(&a->mu);
  lg_task *t = e->task_id ? lg_task_find(a, e->task_id) : NULL;
  if (t && t->retired) {
    /* code of a task the watchdog finished, running on regardless */
    pthread_mutex_unlock(&a->mu);
    return;
  }
  lg_ev_emit(&a->log, e, t, summary);
  if (t) lg_stall_touch(t); /* the run said something: it is alive */
  lg_ev_error_callback(&a->log, e);
  pthread_mutex_unlock(&a->mu);
}

int lg_events(lg_app *a, int64_t since, int limit, buf_t *out) {
  return lg_ev_read(&a->log, since, limit, out);
}

/* --------------------------------------------------------------- host */

uint64_t lg_gen(lg_app *a) { return lg_ev_gen(&a->log); }

/* Retry timers run on idle workers; a host that waits or polls alone must
 * run them too, since no worker may be left (one that cannot boot its
 * state exits). The scheduler publishes when the next one is due, so the
 * host takes the scheduler's lock only when one is. */
static void run_due_retries(lg_app *a) {
  int64_t due = atomic_load(&a->retry_due);
  if (!due || lg_mono_ms() < due) return;
  pthread_mutex_lock(&a->mu);
  lg_schedule(a);
  pthread_mutex_unlock(&a->mu);
}

void lg_block(lg_app *a, uint64_t gen, double timeout_s, int news) {
  int64_t deadline = timeout_s >= 0 ? lg_mono_ms() + (int64_t)(timeout_s * 1000.0) : 0;
  if (timeout_s >= 0 && deadline <= lg_mono_ms()) deadline = lg_mono_ms() + 1;
  lg_eventlog *l = &a->log;
  pthread_mutex_lock(&l->hq_mu);
  while (l->gen == gen) {
    int64_t d = lg_min_deadline(deadline, atomic_load(&a->retry_due));
    /* a streamed token's deferred wake (events.c, lg_ev_bump_token) */
    d = lg_min_deadline(d, l->wake_due);
    l->host_blocked++;
    l->host_blocked_news += news;
    lg_cond_wait_until(&l->host_cv, &l->hq_mu, d);
    l->host_blocked--;
    l->host_blocked_news -= news;
    if (l->wake_due && lg_mono_ms() >= l->wake_due) {
      l->wake_due = 0;
      l->host_wakes++;
      l->last_wake_ms = lg_mono_ms();
    }
    pthread_mutex_unlock(&l->hq_mu);
    run_due_retries(a);
    pthread_mutex_lock(&l->hq_mu);
    if (deadline && lg_mono_ms() >= deadline) break;
  }
  pthread_mutex_unlock(&l->hq_mu);
}

int lg_take_host_work(lg_app *a, int max, lg_host_item **out) {
  run_due_retries(a);
  return lg_ev_take(&a->log, max, out);
}

int lg_take_host_work_try(lg_app *a, int max, lg_host_item **out) {
  run_due_retries(a);
  return lg_ev_take_try(&a->log, max, out);
}

void lg_host_reply(lg_app *a, uint64_t id, const char *json) { lg_ev_reply(&a->log, id, json); }

int lg_host_reply_try(lg_app *a, uint64_t id, const char *json) {
  return lg_ev_reply_try(&a->log, id, json);
}

/* Host work that is not a log line (stats' idle). */
int lg_host_work_pending(lg_app *a) { return lg_ev_pending(&a->log); }

void lg_set_wants(lg_app *a, unsigned wants) {
  pthread_mutex_lock(&a->mu);
  a->log.wants = wants;
  pthread_mutex_unlock(&a->mu);
}

void lg_set_host_multi(lg_app *a, void *multi) { lg_ev_set_host_multi(&a->log, multi); }

void *lg_host_multi(lg_app *a) { return lg_ev_host_multi(&a->log); }

void lg_host_poll_news(lg_app *a, int on) { lg_ev_set_poll_news(&a->log, on); }
