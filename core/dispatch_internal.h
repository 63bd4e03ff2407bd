/* Private to the scheduler (dispatcher.c, sched.c, task_queries.c, app_log.c,
 * waits.c, recovery.c, usage.c, watchdog.c, evict.c, ratelimit.c,
 * budget.c, idem.c): the app's layout, which embeds the task table (tasks.h) and
 * the event log (events.h), and the helpers one of these files defines and
 * another calls. The table, the log and the workers (worker_link.h) sit
 * below and do not include this header. They have external linkage
 * (prefixed lg_) but the module is built with -fvisibility=hidden, so none
 * is exported. The bindings and the control tools do not include this
 * header either: they see handles and the functions of dispatcher.h only.
 * Functions taking an lg_app expect app->mu held unless they say otherwise. */
#ifndef LUAGENT_DISPATCH_INTERNAL_H
#define LUAGENT_DISPATCH_INTERNAL_H

#include "dispatcher.h"
#include "events.h"
#include "worker_link.h"
#include "tasks.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

/* ---- the app's layout: private to the scheduler ----
 * Bindings (module.c) and the control tools (control.c) see only handles
 * and the functions of dispatcher.h. */

/* What the task-state core (sched.c) needs of the files above it, set once
 * by lg_app_new (dispatcher.c): sched.c calls them through here, so no call
 * runs back up (docs/architecture.md, "Layers"). */
typedef struct {
  const lg_worker_ops *ops;                   /* handed to each worker it starts */
  void (*on_worker_start)(lg_app *a);         /* before a worker starts: lg_watchdog_start */
  void (*on_task_end)(lg_app *a, lg_task *t); /* t ended: lg_waits_task_done */
  void (*on_remote_cancel)(lg_app *a);        /* a PH_REMOTE task was marked: lg_cluster_poke */
} lg_sched_up;

struct lg_app {
  pthread_mutex_t mu;    /* the scheduler's lock: tasks, queues, workers */
  pthread_cond_t workers_cv;
  lg_eventlog log; /* the event ring and the host work queue, with their locks (events.c) */
  atomic_int refs;
  lg_settings cfg;
  char id[40];
  lg_table tasks; /* the task table (tasks.c) */
  lg_task **itab; /* tasks with an idempotency key, by (scope, key) (idem.c) */
  size_t itab_cap, nidem;
  uint64_t next_seq;
  /* counters stats() reads without app->mu (written under it) */
  atomic_int queued, holders, running_n, busy;
  int busy_deferred; /* >= 0 inside lg_worker_done: finishes not yet counted out of busy */
  int waiting, resuming_n;
  _Atomic int64_t retry_due; /* mono ms the next retry is due (0: none), for the host */
  lg_task *retry_head, *resume_head, *resume_tail;
  lg_task *ehead, *etail; /* finished tasks free to leave memory, oldest first (evict.c) */
  size_t nfinished;       /* finished tasks in memory */
  /* workers */
  lg_worker *workers;
  atomic_int nworkers;
  int nidle;
  struct lg_worker *spinner; /* the idle worker looking for work before it sleeps, or NULL (under mu) */
  atomic_int live_threads; /* threads not yet ended, retired ones too; stats reads it without mu */
  /* host side */
  atomic_int host_calls_pending;
  /* counters of finished tasks, by status */
  atomic_llong finished[6];
  lg_usage usage; /* every model call of the app, foreground runs included (under log.ev_mu) */
  int closing, closed;
  pthread_cond_t watch_cv; /* the watchdog's, with mu (watchdog.c) */
  int watchdog_on;
  lg_store *store;
  int shared;   /* the store's queue is shared with other processes (recovery.c) */
  char node[40]; /* shared: this process's name in leases and events */
  pthread_cond_t cluster_cv; /* the watcher of tasks other processes run (cluster_watch.c) */
  int cluster_on;
  int serving;          /* app:serve calls in progress */
  int cancels_sending;  /* cancels of other processes' tasks on their way to the store */
  atomic_int listening; /* the watcher gets the store's wake-ups */
  /* rate and tree budgets (core/ratelimit.c, core/budget.c), under mu */
  struct lg_rate *rates;
  struct lg_budget *budgets;
  lg_sched_up up; /* sched.c's calls up (above) */
};


/* ---- waits.c ---- */
lg_wait *lg_wait_begin_locked(lg_app *a, lg_task *caller, char **ids, int n, int any, lg_err *err);
void lg_wait_value_locked(lg_app *a, lg_wait *w, int timed_out, buf_t *out);
void lg_waits_task_done(lg_app *a, lg_task *t); /* t ended: count it into its waits */

/* ---- sched.c: a task's state, below the other scheduler files ---- */
void lg_schedule(lg_app *a);
/* For a batch enqueue's caps (lg_enqueue_many): would the lg_schedule that
 * follows a single enqueue of t, just placed, start it, with `taken` slots
 * and threads (and t->aq->batch_taken of its agent's slots) already given
 * to tasks of the batch before it? After an lg_schedule nothing queued is
 * startable, so a new task starts itself or nothing. */
int lg_would_admit(const lg_app *a, const lg_task *t, int taken);
int64_t lg_next_retry_mono(lg_app *a); /* earliest retry time, mono ms (0 = none) */
void lg_finish_task(lg_app *a, lg_task *t, int status);
void lg_requeue(lg_app *a, lg_task *t); /* back on its agent's queue (counted queued) */
void lg_set_error(lg_task *t, const char *kind, const char *msg);
void lg_give_slot(lg_app *a, lg_task *t);
void lg_worker_unlink(lg_app *a, lg_worker *w); /* off the list; no longer counted */
/* Stop one task: queued ones end at once, running ones are told; 0: already ended. */
int lg_stop_task(lg_app *a, lg_task *t, int reason);
void lg_cascade(lg_app *a, lg_task *t); /* stop t's live descendants */
void lg_resume_unlink(lg_app *a, lg_task *t); /* off the list of tasks taking a slot back */
void lg_persist(lg_app *a, lg_task *t); /* queue the record's store write */

/* A detached thread of the app running main(a), holding a reference to it
 * (main releases it when it leaves), with every signal blocked; 0, or -1. */
int lg_app_thread(lg_app *a, void *(*main)(void *));

/* ---- recovery.c: the store side ---- */
void lg_release_claims(lg_app *a, lg_task *claimer);
int lg_stored_record(lg_app *a, const char *id, buf_t *out, char status[16]);

/* ---- dispatcher.c: the worker side (lg_worker_ops), on the worker's own thread ---- */
lg_task *lg_worker_next(lg_worker *w); /* blocks; NULL: exit */
void lg_worker_done(lg_worker *w, lg_task *t, const lg_outcome *o);
void lg_worker_exit(lg_worker *w);
void lg_task_info(lg_app *a, lg_task *t, buf_t *out); /* the JSON handed to the worker's Lua entry */


/* ---- idem.c: the idempotency index (README, "Idempotent enqueues") ---- */
int lg_idem_add(lg_app *a, lg_task *t);  /* t with idem_key; -1: out of memory */
void lg_idem_drop(lg_app *a, lg_task *t); /* off the index (a no-op without a key) */
void lg_idem_free(lg_app *a);
/* The task enqueued with key in scope (a parent task id, NULL: the app). */
lg_task *lg_idem_find(lg_app *a, const char *scope, const char *key);
/* Whether t was made by the same request as r. */
int lg_idem_matches(const lg_task *t, const lg_enqueue_req *r);

/* ---- evict.c: finished tasks leaving memory ---- */
void lg_evict_sync(lg_app *a, lg_task *t); /* after anything evictable depends on changed */
void lg_evict_finished(lg_app *a);         /* only where no caller holds a finished task */

/* ---- the event log of an app (events.h) ---- */
static inline void lg_bump(lg_app *a) { lg_ev_bump(&a->log); } /* something the host may be waiting for changed */
static inline void lg_bump_news(lg_app *a) { lg_ev_bump_news(&a->log); } /* only news (events.h) */
static inline void lg_hq_push(lg_app *a, lg_host_item *it) { lg_ev_push(&a->log, it); }
static inline void lg_hq_unlink(lg_app *a, lg_host_item *it) { lg_ev_unlink(&a->log, it); }
static inline void lg_queue_callback(lg_app *a, unsigned want, const char *kind, const lg_task *t) {
  lg_ev_callback(&a->log, want, kind, t);
}
static inline void lg_task_event(lg_app *a, lg_task *t, const char *kind, const char *payload,
                                 const char *summary) {
  lg_ev_task_event(&a->log, t, kind, payload, summary);
}
/* app_log.c: a worker waits for the host's reply; 1 when its task must stop first */
int lg_hq_await_reply(lg_app *a, lg_worker *w, lg_host_item *it, lg_task *t);

/* ---- cluster_watch.c: tasks of a shared store that other processes run ---- */
/* Something may now wait on a task in phase PH_REMOTE, or the app closes:
 * the watcher (started on the first call) looks again. */
void lg_cluster_poke(lg_app *a);
/* Send the cancels asked here of other processes' tasks now (at close). */
void lg_cluster_flush_cancels(lg_app *a);
/* A stand-in in memory for a task of the shared queue that another process
 * enqueued and that has not finished (its stored record rec), or NULL. */
lg_task *lg_cluster_stub(lg_app *a, const char *id, const char *rec, size_t n);

/* ---- usage.c ---- */
/* Add a tree's usage to `from` and each of its ancestors this process runs
 * (each record's write queued). */
void lg_usage_roll_up(lg_app *a, lg_task *from, const lg_usage *d);

/* ---- watchdog.c: workers whose Lua cannot be stopped ---- */
void lg_watchdog_start(lg_app *a); /* once, when the first worker starts */
void lg_watchdog_poke(lg_app *a);  /* something to watch changed (a cancel, close) */

/* ---- the task table of an app (tasks.h), under app->mu ---- */
static inline lg_task *lg_task_find(lg_app *a, const char *id) { return lg_table_find(&a->tasks, id); }
/* The table and the idempotency index (idem.c) together. */
static inline int lg_task_insert(lg_app *a, lg_task *t) {
  if (lg_idem_add(a, t) != 0) return -1;
  if (lg_table_insert(&a->tasks, t) == 0) return 0;
  lg_idem_drop(a, t);
  return -1;
}
static inline void lg_task_remove(lg_app *a, lg_task *t) {
  lg_idem_drop(a, t);
  lg_table_remove(&a->tasks, t);
}
static inline void lg_scopes_free(lg_app *a) { lg_table_scopes_free(&a->tasks); }
static inline lg_task **lg_select_tasks(lg_app *a, const lg_filter *f, size_t *n) {
  return lg_table_select(&a->tasks, f, n);
}
static inline lg_agentq *lg_aq_get(lg_app *a, const char *name) { return lg_table_aq_get(&a->tasks, name); }
static inline lg_counter *lg_counter_get(lg_app *a, const char *key) {
  return lg_table_counter_get(&a->tasks, key);
}
static inline void lg_counter_detach(lg_app *a, lg_task *t) { lg_table_counter_detach(&a->tasks, t); }
static inline void lg_counter_drop_unused(lg_app *a, lg_counter *c) {
  lg_table_counter_drop_unused(&a->tasks, c);
}
static inline void lg_counters_free(lg_app *a) { lg_table_counters_free(&a->tasks); }

#endif
