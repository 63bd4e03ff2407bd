/* The task-state core of the scheduler: admission with global and
 * per-agent caps and the reservation of threads for waits,
 * starting a worker for an admitted task, requeueing, finishing a task and
 * stopping it with its descendants, each change's store write, and
 * the app's references. The scheduler's other files (app_log.c, waits.c,
 * recovery.c, watchdog.c, dispatcher.c) call down into this one; what it
 * needs of them (the worker ops, starting the watchdog, counting a finished
 * task into its waits) it calls through the hooks lg_app_new sets in
 * app->up (dispatch_internal.h), so every call runs one way. Callers hold
 * app->mu; nothing here calls into Lua. */
#include "budget.h"
#include "dispatch_internal.h"
#include "ratelimit.h"
#include "store.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------- admission */

static int free_threads(const lg_app *a) {
  int spawnable = a->cfg.max_workers - a->nworkers;
  return a->nidle + (spawnable > 0 ? spawnable : 0);
}

/* Deadlock freedom: a task at depth d starts only if max_depth - d
 * threads stay free for the chain of waits it may open below itself. The
 * last task to start is then always one that cannot wait on children. */
static int thread_ok(const lg_app *a, const lg_task *t) {
  int need = a->cfg.max_depth - t->depth;
  if (need < 0) need = 0;
  return free_threads(a) - 1 >= need;
}

static int slot_free(const lg_app *a, const lg_agentq *q) {
  return a->holders < a->cfg.global_concurrency && q->holders < a->cfg.per_agent_concurrency;
}

int lg_would_admit(const lg_app *a, const lg_task *t, int taken) {
  if (a->closing || a->shared) return 0;
  if (a->holders + taken >= a->cfg.global_concurrency) return 0;
  if (t->aq->holders + t->aq->batch_taken >= a->cfg.per_agent_concurrency) return 0;
  int need = a->cfg.max_depth - t->depth;
  if (need < 0) need = 0;
  return free_threads(a) - taken - 1 >= need;
}

static void take_slot(lg_app *a, lg_task *t) {
  t->holds_slot = 1;
  a->holders++;
  t->aq->holders++;
}

void lg_give_slot(lg_app *a, lg_task *t) {
  if (!t->holds_slot) return;
  t->holds_slot = 0;
  a->holders--;
  t->aq->holders--;
}

/* Start a worker for t and count it in (under a->mu); 0 ok. The worker
 * holds a reference to the app until lg_worker_exit. */
static int lg_worker_spawn(lg_app *a, lg_task *first) {
  lg_worker_link link = {a, a->up.ops, &a->mu, &a->log.hq_mu,
                         a->cfg.lua_path, a->cfg.lua_cpath, a->cfg.boot_json};
  lg_app_retain(a);
  lg_worker *w = lg_worker_start(&link, first);
  if (!w) {
    lg_app_release(a);
    return -1;
  }
  first->worker = w;
  w->next = a->workers;
  if (a->workers) a->workers->prev = w;
  a->workers = w;
  a->nworkers++;
  a->live_threads++;
  return 0;
}

/* {"attempt":N} and "attempt N started", without printf (every task). */
static void started_texts(int attempt, char payload[48], char summary[48]) {
  char p[24];
  size_t n = lg_int_text(attempt, p);
  memcpy(payload, "{\"attempt\":", 11);
  memcpy(payload + 11, p, n);
  memcpy(payload + 11 + n, "}", 2);
  memcpy(summary, "attempt ", 8);
  memcpy(summary + 8, p, n);
  memcpy(summary + 8 + n, " started", 9);
}

static void admit(lg_app *a, lg_task *t) {
  int64_t now = lg_wall_ms();
  a->queued--;
  take_slot(a, t);
  t->status = TS_RUNNING;
  t->phase = PH_ASSIGNED;
  t->attempts++;
  t->started_at = now; /* after the slot is acquired */
  t->started_mono = lg_mono_ms();
  t->deadline_mono = t->timeout_s > 0 ? t->started_mono + (int64_t)(t->timeout_s * 1000.0) : 0;
  t->stop_mono = 0;
  lg_stall_resume(t);
  a->running_n++;
  char payload[48], summary[48];
  started_texts(t->attempts, payload, summary);
  lg_task_event(a, t, "task_started", payload, summary);
  lg_queue_callback(a, W_STARTED, "task_started", t);
  lg_persist(a, t);
  /* hand it to an idle worker (the one awake and looking first), or start one */
  lg_worker *pick = a->spinner && a->spinner->idle && !a->spinner->task ? a->spinner : NULL;
  for (lg_worker *w = a->workers; w && !pick; w = w->next)
    if (w->idle && !w->task && !w->exiting) pick = w;
  if (pick) {
    pick->task = t;
    t->worker = pick;
    pick->idle = 0;
    a->nidle--;
    atomic_store(&pick->nudged, 1);
    pthread_cond_signal(&pick->cv);
    return;
  }
  a->up.on_worker_start(a);
  if (lg_worker_spawn(a, t) != 0) {
    /* No thread: fail this attempt rather than hang. */
    lg_give_slot(a, t);
    a->running_n--;
    free(t->error_kind);
    free(t->error_message);
    t->error_kind = strdup("worker");
    t->error_message = strdup("could not start a worker thread");
    lg_finish_task(a, t, TS_FAILED);
  }
}

/* Put a task counted in a->queued back on its agent's queue. The heap only
 * grows here; if it cannot, the task fails rather than sit in no queue. */
void lg_requeue(lg_app *a, lg_task *t) {
  t->phase = PH_QUEUED;
  if (lg_aq_push(t->aq, t) == 0) return;
  a->queued--;
  lg_set_error(t, "runtime", "out of memory while queueing the task");
  lg_finish_task(a, t, TS_FAILED);
}

/* An agent's best task that may start now. Usually the head of its queue;
 * when threads are scarce the head may be too shallow to start (thread_ok)
 * while a deeper task behind it — one a waiting task needs — can: skipping
 * the whole agent then would deadlock nested fan-out, so look further. */
static lg_task *agent_candidate(const lg_app *a, const lg_agentq *q) {
  if (thread_ok(a, q->heap[0])) return q->heap[0];
  lg_task *best = NULL;
  for (int i = 1; i < q->n; i++) {
    lg_task *t = q->heap[i];
    if (thread_ok(a, t) && (!best || lg_task_before(t, best))) best = t;
  }
  return best;
}

static void retry_due(lg_app *a, int64_t now) {
  lg_task **pp = &a->retry_head;
  while (*pp) {
    lg_task *t = *pp;
    if (t->retry_at <= now) {
      *pp = t->lnext;
      t->lnext = NULL;
      lg_requeue(a, t);
    } else {
      pp = &t->lnext;
    }
  }
}

static int subtree_holds_slot(const lg_task *c) {
  for (; c; c = c->next_sibling)
    if (c->holds_slot || subtree_holds_slot(c->first_child)) return 1;
  return 0;
}

/* Tell the host when the next retry is due (it runs timers when no worker
 * does, without taking app->mu before then). */
static void publish_retry_due(lg_app *a) { atomic_store(&a->retry_due, lg_next_retry_mono(a)); }

void lg_schedule(lg_app *a) {
  if (a->closing) {
    atomic_store(&a->retry_due, 0);
    return;
  }
  retry_due(a, lg_wall_ms());
  /* Tasks coming back from a wait take a slot ahead of queued tasks.
   * A lender whose own descendants hold the slots it needs takes its slot
   * back anyway: lending is borrowing, and a wait's timeout must not depend
   * on a child finishing. New work is only admitted below the caps. */
  for (lg_task **pp = &a->resume_head, *prev = NULL; *pp;) {
    lg_task *t = *pp;
    int lender = subtree_holds_slot(t->first_child);
    if (lender || (a->holders < a->cfg.global_concurrency &&
                   t->aq->holders < a->cfg.per_agent_concurrency)) {
      *pp = t->lnext;
      if (a->resume_tail == t) a->resume_tail = prev;
      t->lnext = NULL;
      a->resuming_n--;
      take_slot(a, t);
      t->phase = PH_ASSIGNED;
      if (a->shared) lg_persist(a, t); /* it counts against a cluster cap again */
      if (t->worker) {
        atomic_store(&t->worker->nudged, 1);
        pthread_cond_signal(&t->worker->cv);
      }
    } else {
      prev = t;
      pp = &t->lnext;
    }
  }
  /* New work: the best startable task among agents below their cap. */
  while (a->holders < a->cfg.global_concurrency && free_threads(a) > 0) {
    lg_task *best = NULL;
    for (lg_agentq *q = a->tasks.agents; q; q = q->next) {
      if (q->n == 0 || !slot_free(a, q)) continue;
      lg_task *h = agent_candidate(a, q);
      if (h && (!best || lg_task_before(h, best))) best = h;
    }
    if (!best) break;
    lg_aq_remove(best->aq, best);
    admit(a, best);
  }
  publish_retry_due(a);
}

/* Earliest retry time, for the workers' timed waits (0 = none). */
int64_t lg_next_retry_mono(lg_app *a) {
  int64_t best = 0;
  for (lg_task *t = a->retry_head; t; t = t->lnext)
    if (!best || t->retry_at < best) best = t->retry_at;
  if (!best) return 0;
  int64_t delta = best - lg_wall_ms();
  return lg_mono_ms() + (delta > 0 ? delta : 0) + 1;
}

/* ------------------------------------------------------- finish, stop */

void lg_finish_task(lg_app *a, lg_task *t, int status) {
  t->status = status;
  t->phase = PH_DONE;
  t->finished_at = lg_wall_ms(); /* before the slot is released */
  a->finished[status]++;
  buf_t p;
  lg_buf_init(&p);
  lg_buf_adds(&p, "{\"status\":\"");
  lg_buf_adds(&p, lg_status_name(status));
  lg_buf_adds(&p, "\",\"attempts\":");
  lg_buf_add_int(&p, t->attempts);
  lg_add_error(&p, t);
  lg_add_raw_field(&p, "late_result", t->late_result_json);
  lg_buf_addc(&p, '}');
  char summary[128];
  if (t->error_message)
    snprintf(summary, sizeof summary, "%s: %s", lg_status_name(status), t->error_message);
  else
    lg_copy_str(summary, sizeof summary, lg_status_name(status));
  lg_task_event(a, t, "task_finished", p.p ? p.p : "{}", summary);
  lg_buf_free(&p);
  lg_queue_callback(a, W_FINISHED, "task_finished", t);
  lg_persist(a, t);
  if (status == TS_FAILED || status == TS_TIMED_OUT || status == TS_CANCELLED) lg_cascade(a, t);
  a->up.on_task_end(a, t);
  /* after its callback is queued: stats never see idle with it pending */
  if (t->live) {
    t->live = 0;
    /* a worker's finish counts out after its eviction pass, so a host that
     * sees idle also sees the bound on finished tasks kept */
    if (a->busy_deferred >= 0)
      a->busy_deferred++;
    else
      a->busy--;
  }
  lg_bump(a);
  a->nfinished++;
  lg_evict_sync(a, t);
}

void lg_set_error(lg_task *t, const char *kind, const char *msg) {
  t->error_status = 0;
  free(t->error_kind);
  free(t->error_message);
  t->error_kind = lg_strdup(kind);
  t->error_message = lg_strdup(msg);
}

/* Drop a task from the list of tasks queued to take a slot back. */
void lg_resume_unlink(lg_app *a, lg_task *t) {
  lg_task **pp = &a->resume_head, *prev = NULL;
  for (; *pp; prev = *pp, pp = &(*pp)->lnext)
    if (*pp == t) {
      *pp = t->lnext;
      if (a->resume_tail == t) a->resume_tail = prev;
      a->resuming_n--;
      break;
    }
  t->lnext = NULL;
}

/* Stop one task: queued ones end at once, running ones are told. */
int lg_stop_task(lg_app *a, lg_task *t, int reason) {
  if (TS_TERMINAL(t->status)) return 0;
  if (t->phase == PH_REMOTE) { /* in the shared queue: its holder stops it (cluster_watch.c) */
    if (reason != STOP_CANCEL) return 0;
    if (!t->remote_cancel) {
      t->remote_cancel = 1;
      a->up.on_remote_cancel(a);
    }
    return 1;
  }
  if (t->phase == PH_RECOVERING) { /* restored, in no queue yet */
    t->cancel_requested = 1;
    lg_set_error(t, "cancelled", "cancelled with its parent");
    lg_finish_task(a, t, TS_CANCELLED);
    return 1;
  }
  if (t->phase == PH_QUEUED || t->phase == PH_RETRY) {
    if (t->phase == PH_QUEUED) {
      lg_aq_remove(t->aq, t);
    } else {
      for (lg_task **pp = &a->retry_head; *pp; pp = &(*pp)->lnext)
        if (*pp == t) {
          *pp = t->lnext;
          break;
        }
      t->lnext = NULL;
    }
    a->queued--;
    t->cancel_requested = 1;
    lg_set_error(t, "cancelled", reason == STOP_CLOSE_CANCEL ? "cancelled: the app was closed"
                                                          : "cancelled before it started");
    lg_finish_task(a, t, TS_CANCELLED);
    return 1;
  }
  int expected = STOP_NONE;
  int first = atomic_compare_exchange_strong(&t->stop, &expected, reason);
  if (first) t->stop_mono = lg_mono_ms(); /* the watchdog counts from here */
  if (first && (reason == STOP_CANCEL || reason == STOP_CLOSE_CANCEL)) {
    t->cancel_requested = 1;
    lg_task_event(a, t, "cancel_requested", "{}", "cancel requested");
    lg_persist(a, t);
  }
  if (t->phase == PH_RESUMING) {
    /* it no longer needs the slot it was queued for (even when it was
     * already stopping: a stale entry would later be handed a slot) */
    lg_resume_unlink(a, t);
    t->phase = PH_UNWINDING;
  }
  if (!first) return 1; /* already stopping */
  if (t->worker) lg_worker_wake(t->worker);
  lg_bump(a);
  return 1;
}

void lg_cascade(lg_app *a, lg_task *t) {
  for (lg_task *c = t->first_child; c; c = c->next_sibling) {
    if (!TS_TERMINAL(c->status)) lg_stop_task(a, c, STOP_CANCEL);
    lg_cascade(a, c);
  }
}

/* ------------------------------------------------------------ workers */

/* Take a worker off the app's list: it no longer counts against
 * max_workers, takes no task and is not woken. Its thread may still be
 * closing its state (or, retired, running code that never returns); close
 * waits for it through live_threads. */
void lg_worker_unlink(lg_app *a, lg_worker *w) {
  if (w->unlinked) return;
  w->unlinked = 1;
  if (w->prev)
    w->prev->next = w->next;
  else
    a->workers = w->next;
  if (w->next) w->next->prev = w->prev;
  w->next = w->prev = NULL;
  if (w->idle) {
    w->idle = 0;
    a->nidle--;
  }
  a->nworkers--;
}

/* --------------------------------------------------------- store writes */

void lg_persist(lg_app *a, lg_task *t) {
  if (!a->store) return;
  buf_t b;
  lg_buf_init(&b);
  lg_buf_reserve(&b, 1024);
  lg_record_json_x(t, &b, 1);
  /* waiting without its slot, or queued to take one back: lent */
  int lent = !t->holds_slot && (t->phase == PH_WAITING || t->phase == PH_RESUMING);
  lg_store_task(a->store, t->id, t->agent_id, lg_status_name(t->status), TS_TERMINAL(t->status),
                t->fence, lent, b.p, b.len);
  lg_buf_free(&b);
}

/* ------------------------------------------------------ the app's refs */

void lg_app_retain(lg_app *a) { atomic_fetch_add(&a->refs, 1); }

int lg_app_thread(lg_app *a, void *(*main)(void *)) {
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old); /* it never takes the host's signals */
  pthread_attr_t pa;
  pthread_attr_init(&pa);
  pthread_attr_setdetachstate(&pa, PTHREAD_CREATE_DETACHED);
  lg_app_retain(a);
  pthread_t th;
  int rc = pthread_create(&th, &pa, main, a);
  pthread_attr_destroy(&pa);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc != 0) lg_app_release(a); /* not the last reference: the caller holds the app */
  return rc == 0 ? 0 : -1;
}

static void app_free(lg_app *a) {
  lg_store_free(a->store);
  for (size_t i = 0; i < a->tasks.tab_cap; i++) {
    for (lg_task *t = a->tasks.tab[i], *nx; t; t = nx) {
      nx = t->hnext;
      lg_task_free(t);
    }
  }
  free(a->tasks.tab);
  lg_idem_free(a);
  lg_scopes_free(a);
  for (lg_agentq *q = a->tasks.agents, *nx; q; q = nx) {
    nx = q->next;
    free(q->heap);
    free(q->name);
    free(q);
  }
  free(a->tasks.aqtab);
  for (lg_host_item *it = a->log.hq_head, *nx; it; it = nx) {
    nx = it->next;
    lg_host_item_free(it);
  }
  lg_counters_free(a);
  lg_rate_free_all(a);
  lg_budget_free_all(a);
  for (int i = 0; i < a->log.ring_n; i++) free(a->log.ring[(a->log.ring_head + i) % a->log.ring_cap].json);
  free(a->log.ring);
  free(a->cfg.boot_json);
  free(a->cfg.lua_path);
  free(a->cfg.lua_cpath);
  pthread_mutex_destroy(&a->mu);
  pthread_mutex_destroy(&a->log.hq_mu);
  pthread_mutex_destroy(&a->log.ev_mu);
  pthread_cond_destroy(&a->log.host_cv);
  pthread_cond_destroy(&a->workers_cv);
  pthread_cond_destroy(&a->watch_cv);
  pthread_cond_destroy(&a->cluster_cv);
  free(a);
}

void lg_app_release(lg_app *a) {
  if (a && atomic_fetch_sub(&a->refs, 1) == 1) app_free(a);
}
