/* Private to the scheduler (dispatcher.c, tasks.c, events.c, waits.c,
 * recovery.c, usage.c, watchdog.c, evict.c, idem.c, stall.c) and the worker threads (worker.c): the struct layouts and the
 * helpers one of these files defines and another calls. They have external
 * linkage (prefixed lg_) but the module is built with -fvisibility=hidden,
 * so none is exported. The bindings and the control tools do not include
 * this header: they see handles and the functions of dispatcher.h only.
 * Functions taking an lg_app expect app->mu held unless they say otherwise. */
#ifndef LUAGENT_DISPATCH_INTERNAL_H
#define LUAGENT_DISPATCH_INTERNAL_H

#include "dispatcher.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

/* ---- the layouts: private to the scheduler and the worker threads ----
 * Bindings (module.c) and the control tools (control.c) see only handles
 * and the functions of dispatcher.h. */
enum { HQ_NONE, HQ_QUEUED, HQ_INFLIGHT }; /* where a host item is linked */

struct lg_host_item {
  int type;
  uint64_t id;
  char kind[24];        /* callback name, or log level */
  char *name;           /* host tool name */
  char *json;           /* args (host call), record/payload (callback), message (log) */
  char *ctx_json;       /* host call: the calling run's context */
  char task_id[40];
  /* host call reply */
  int replied;
  char *reply_json;
  lg_worker *waiter;
  lg_task *task;        /* host call: the calling task (its stop flag is atomic) */
  int where;            /* HQ_* */
  lg_host_item *next;
};

/* Where a task is in its life; finer than the status users see. */
enum {
  PH_QUEUED,    /* in its agent's queue, waiting for admission */
  PH_RETRY,     /* failed attempt, waiting for retry_at */
  PH_ASSIGNED,  /* admitted (holds a slot), handed to a worker */
  PH_WAITING,   /* on a worker, waiting on tasks or the host; slot lent */
  PH_RESUMING,  /* wait over, queued to take a slot back */
  PH_UNWINDING, /* cancelled while it held no slot; its Lua is unwinding */
  PH_RECOVERING, /* restored from the store, not yet re-queued */
  PH_DONE
};

/* Why a running task is being stopped; the first reason wins. */
enum { STOP_NONE, STOP_CANCEL, STOP_TIMEOUT, STOP_CLOSE_CANCEL, STOP_CLOSE_SUSPEND,
       STOP_STALL /* stall.c */ };

typedef struct {
  int64_t seq, ts;
  char kind[24];
  char summary[128];
} lg_digest;

#define LG_TASK_RING 16

struct lg_task {
  char id[40];
  int kind;
  char *agent_id, *parent_agent_id, *thread_id, *tool, *tool_call_id;
  char *run_id, *parent_run_id, *parent_task_id, *root_task_id, *root_key;
  char *prompt, *args_json, *metadata_json, *result_json, *usage_json, *late_result_json;
  char *error_kind, *error_message;
  int depth;
  int status, phase;
  int live; /* counted in app->busy (queued or running, not yet finished) */
  int64_t enqueued_at, started_at, finished_at, retry_at; /* wall ms, 0 = unset */
  int64_t started_mono, deadline_mono;                    /* current attempt */
  int attempts, max_retries;
  double timeout_s;
  long long priority;
  uint64_t seq; /* enqueue order, FIFO tie-break */
  atomic_int stop; /* STOP_* */
  int cancel_requested, delivered, boost;
  int claimed;      /* carried by a notice whose model call has not returned */
  lg_task *claimed_by; /* the task whose run claimed it (NULL: a host run) */
  int claims_held;     /* how many tasks this task's runs have claimed */
  int waited;          /* worker waits on this task in progress (kept in memory) */
  int scoped;          /* started by an agent run: announced to it */
  int error_status; /* HTTP status of a model error, 0 if none */
  lg_usage usage, tree_usage; /* its own model calls; itself plus descendants */
  char run_status[16]; /* agent tasks: the status of the AgentResult in result */
  int max_depth;    /* the spawning run's depth limit, -1 = the app's */
  int holds_slot;
  int retired;      /* finished by the watchdog while its worker ran on (watchdog.c) */
  int64_t stop_mono; /* when a cancel or close asked it to stop (mono ms, 0 = not) */
  int64_t stale_ms;              /* stale_after_s in ms, 0 = off (stall.c) */
  _Atomic int64_t progress_mono; /* last sign of life, 0 = waiting in the core (stall.c) */
  char *idem_key;                /* idempotency_key, NULL = none (idem.c) */
  lg_task *ihnext;               /* chain of the idempotency index (idem.c) */
  lg_task *parent;                 /* NULL when spawned by a host or foreground run */
  lg_task *first_child, *next_sibling;
  lg_worker *worker;               /* set while a worker runs it */
  struct lg_agentq *aq;
  int heap_idx;
  lg_task *lnext;                  /* retry / resume lists */
  /* wait state: the ids of the wait this task's worker blocks on (borrowed
   * from the lg_wait), and the waits registered with this task */
  char **wait_ids;
  int wait_n, wait_any;
  struct lg_wait **waits;
  int nwaits, waits_cap;
  lg_host_item *host_call;
  /* per-task ring of event digests, for bg_check and wait progress */
  lg_digest ring[LG_TASK_RING];
  int ring_n, ring_head;
  lg_task *hnext; /* hash chain */
  lg_task *all_prev, *all_next;  /* every task, in enqueue order */
  struct lg_scopeq *scq;         /* its (parent_agent_id, thread_id) scope, or NULL */
  lg_task *sc_prev, *sc_next;    /* the scope's tasks, in enqueue order */
  lg_task *claims_head;          /* the tasks this task's runs claimed */
  lg_task *cl_prev, *cl_next;    /* in its claimer's list */
  /* leaving memory (evict.c) */
  lg_task *enext, *eprev; /* the list of finished tasks free to leave, oldest first */
  int in_elist, restored;
  int64_t evictable_at;   /* wall ms it became free to leave */
  struct lg_counter *rootc; /* its run tree's descendant counter, or NULL */
};

/* The tasks one (agent, thread) spawned: what its control tools and notices
 * look at, so they cost the size of the scope, not of the table. */
typedef struct lg_scopeq {
  char *agent_id, *thread_id;
  lg_task *head, *tail;
  int n;
  struct lg_scopeq *hnext;
} lg_scopeq;

/* An agent's queue: a heap of its queued tasks, best first. */
typedef struct lg_agentq {
  char *name;
  int holders; /* slot holders of this agent */
  lg_task **heap;
  int n, cap;
  struct lg_agentq *hnext, *next;
} lg_agentq;

struct lg_worker {
  lg_app *app;
  pthread_t thread;
  pthread_cond_t cv;  /* with app->mu */
  pthread_cond_t hcv; /* with app->hq_mu: waiting for the host's reply */
  lg_task *task;     /* assigned or running task */
  int idle, exiting;
  int64_t idle_since;
  int unlinked;      /* off the app's list: leaving, or retired */
  int in_core;       /* inside a blocking core call (sleep, wait, host call) */
  int64_t busy_since; /* running Lua between tasks (a GC step) since, mono ms */
  atomic_int retired; /* given up by the watchdog (watchdog.c); read by its own thread */
  void *lua;         /* lua_State*, touched only by this thread */
  void *multi;       /* CURLM* of this worker, or NULL */
  atomic_int in_http;
  lg_worker *next, *prev;
  /* worker thread only */
  pthread_t owner;   /* the thread that owns `lua` (debug checks) */
  lg_task *current;  /* the task whose Lua is running (read by the hook) */
  int hook_fired, hook_count;
  int user_mask, user_count, user_acc; /* a chained debug.sethook */
};

typedef struct {
  int64_t seq;
  char *json;
} lg_event;

/* Tasks a run tree spawned, kept while a task of the tree is in
 * memory (tasks.c). */
/* The file store as the event log sees it: where new events go and where
 * the events the ring dropped are read back. The scheduler sets it when a
 * store opens (recovery.c); the log knows no store. */
typedef struct {
  void (*write)(void *ud, int64_t seq, const char *task_id, const char *json); /* queued */
  uint64_t (*ticket)(void *ud); /* what is queued so far (taken under ev_mu) */
  /* after that ticket is committed: events since < seq < before, at most
   * limit, appended to out as JSON objects with commas; returns how many */
  int (*read)(void *ud, uint64_t ticket, int64_t since, int64_t before, int limit, buf_t *out);
} lg_log_file;

typedef struct lg_counter {
  char *key;
  int n, refs;
  struct lg_counter *next; /* hash chain */
} lg_counter;

struct lg_app {
  pthread_mutex_t mu;    /* the scheduler's lock: tasks, queues, workers */
  pthread_mutex_t hq_mu; /* host work queue, gen, host_cv (taken after mu, never before) */
  pthread_mutex_t ev_mu; /* the event ring (taken after mu, never before) */
  pthread_cond_t host_cv, workers_cv;
  atomic_int refs;
  lg_settings cfg;
  char id[40];
  /* tasks */
  lg_task **tab;
  size_t tab_cap;
  atomic_size_t ntasks; /* stats reads it without mu */
  lg_task *all_head, *all_tail; /* enqueue order */
  lg_scopeq **sctab;
  size_t sc_cap;
  lg_task **itab; /* tasks with an idempotency key, by (scope, key) (idem.c) */
  size_t itab_cap, nidem;
  lg_agentq **aqtab;
  size_t aq_cap;
  lg_agentq *agents;
  uint64_t next_seq;
  /* counters stats() reads without app->mu (written under it) */
  atomic_int queued, holders, running_n, busy;
  int busy_deferred; /* >= 0 inside lg_worker_done: finishes not yet counted out of busy */
  int waiting, resuming_n;
  _Atomic int64_t retry_due; /* mono ms the next retry is due (0: none), for the host */
  lg_task *retry_head, *resume_head, *resume_tail;
  lg_counter **ctab; /* descendant counters by root key (tasks.c) */
  size_t ctab_cap, ncounters;
  lg_task *ehead, *etail; /* finished tasks free to leave memory, oldest first (evict.c) */
  size_t nfinished;       /* finished tasks in memory */
  /* workers */
  lg_worker *workers;
  atomic_int nworkers;
  int nidle, live_threads;
  /* host side */
  uint64_t gen;
  int host_blocked;
  void *host_multi; /* CURLM* the host is polling, woken with the host */
  lg_host_item *hq_head, *hq_tail;
  lg_host_item *inflight; /* host calls the host has taken and not answered */
  int hq_n, hq_work;      /* queued items; those that are not log lines */
  atomic_int host_calls_pending;
  uint64_t next_item_id;
  unsigned wants; /* bit per lifecycle callback kind */
  /* events */
  lg_event *ring;
  int ring_cap, ring_n, ring_head;
  int64_t next_event_seq; /* never past INT64_MAX (events.c) */
  int seq_exhausted;
  /* counters of finished tasks, by status */
  atomic_llong finished[6];
  lg_usage usage; /* every model call of the app, foreground runs included (under ev_mu) */
  double t0;      /* lg_mono_s() at creation: events' `t` counts from here */
  int closing, closed;
  pthread_cond_t watch_cv; /* the watchdog's, with mu (watchdog.c) */
  int watchdog_on;
  lg_store *store;
  const lg_log_file *log_file; /* NULL for memory only */
  void *log_file_ud;
  /* rate and tree budgets (core/ratelimit.c, core/budget.c), under mu */
  struct lg_rate *rates;
  struct lg_budget *budgets;
};


/* ---- tasks.c: clocks, task table, agent queues, records, helpers ---- */
void lg_cond_init(pthread_cond_t *cv); /* a condition variable on CLOCK_MONOTONIC */
void lg_cond_wait_until(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t deadline); /* 0 = none */
int64_t lg_min_deadline(int64_t a, int64_t b); /* the earlier one; 0 = none */
int lg_status_from_name(const char *s);        /* TS_*, or -1 */

lg_task *lg_task_find(lg_app *a, const char *id);
int lg_task_insert(lg_app *a, lg_task *t); /* -1: out of memory */
void lg_task_remove(lg_app *a, lg_task *t);
void lg_scopes_free(lg_app *a);
lg_task **lg_select_tasks(lg_app *a, const lg_filter *f, size_t *n); /* enqueue order; free() */
void lg_task_free(lg_task *t);

int lg_task_before(const lg_task *x, const lg_task *y);
lg_agentq *lg_aq_get(lg_app *a, const char *name); /* found or created; NULL: oom */
void lg_heap_up(lg_agentq *q, int i);
int lg_aq_push(lg_agentq *q, lg_task *t);
void lg_aq_remove(lg_agentq *q, lg_task *t);

/* `,"k":...` appended to a JSON object; nothing when the value is absent. */
void lg_add_str_field(buf_t *b, const char *k, const char *v);
void lg_add_raw_field(buf_t *b, const char *k, const char *json);
void lg_add_error(buf_t *b, const lg_task *t);
void lg_record_json_x(const lg_task *t, buf_t *b, int internal);
void lg_record_json(const lg_task *t, buf_t *b);
const char *lg_root_run_id(const lg_task *t); /* NULL: not started by a foreground run */

int lg_eq_opt(const char *want, const char *have); /* filter match; NULL wants any */
int lg_cmp_seq(const void *x, const void *y);      /* qsort of lg_task * by enqueue order */
void lg_err_set(lg_err *e, const char *kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- events.c: event ring, digests, host work queue ---- */
void lg_bump(lg_app *a); /* something the host may be waiting for changed */
void lg_hq_push(lg_app *a, lg_host_item *it);
void lg_hq_unlink(lg_app *a, lg_host_item *it);
int lg_hq_await_reply(lg_app *a, lg_worker *w, lg_host_item *it, lg_task *t);
void lg_queue_callback(lg_app *a, unsigned want, const char *kind, const lg_task *t);
void lg_task_event(lg_app *a, lg_task *t, const char *kind, const char *payload,
                const char *summary);
void lg_digest_json(buf_t *b, const lg_digest *d);

void host_log(lg_app *a, const char *level, const char *msg); /* a log line for the host */

/* ---- watchdog.c: workers whose Lua cannot be stopped ---- */
void watchdog_start(lg_app *a); /* once, when the first worker starts */
void watchdog_poke(lg_app *a);  /* something to watch changed (a cancel, close) */

/* ---- recovery.c: the store side ---- */
void lg_persist(lg_app *a, lg_task *t); /* queue the record's store write */

/* ---- waits.c ---- */
lg_wait *lg_wait_begin_locked(lg_app *a, lg_task *caller, char **ids, int n, int any, lg_err *err);
void lg_wait_value_locked(lg_app *a, lg_wait *w, int timed_out, buf_t *out);
void lg_waits_task_done(lg_app *a, lg_task *t); /* t ended: count it into its waits */

/* ---- dispatcher.c: scheduling ---- */
void lg_schedule(lg_app *a);
int64_t lg_next_retry_mono(lg_app *a); /* earliest retry time, mono ms (0 = none) */
void lg_finish_task(lg_app *a, lg_task *t, int status);
void lg_requeue(lg_app *a, lg_task *t); /* back on its agent's queue (counted queued) */
void lg_release_claims(lg_app *a, lg_task *claimer); /* recovery.c */
int lg_stored_record(lg_app *a, const char *id, buf_t *out, char status[16]); /* recovery.c */
void lg_set_error(lg_task *t, const char *kind, const char *msg);
void lg_give_slot(lg_app *a, lg_task *t);
void lg_worker_unlink(lg_app *a, lg_worker *w); /* off the list; no longer counted */

/* ---- tasks.c: descendant counters (R-28) ---- */
lg_counter *lg_counter_get(lg_app *a, const char *key); /* found or created; NULL: oom */
void lg_counter_attach(lg_counter *c, lg_task *t);      /* t counts toward c's life */
void lg_counter_detach(lg_app *a, lg_task *t);          /* freed with its last task */
void lg_counter_drop_unused(lg_app *a, lg_counter *c);  /* created, then nobody came */
void lg_counters_free(lg_app *a);

/* ---- stall.c: stall detection (README, "Stalls") ---- */
void lg_stall_touch(lg_task *t);             /* a sign of life (not while paused) */
void lg_stall_resume(lg_task *t);            /* the clock starts (again) now */
void lg_stall_pause(lg_task *t);             /* waiting in the core: the clock stops */
int64_t lg_stall_at(lg_task *t);             /* when it stalls (mono ms), 0: never */
int lg_stall_check(lg_task *t, int64_t now); /* 1 and STOP_STALL once stalled */
void lg_stall_message(const lg_task *t, char *out, size_t n);

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

/* ---- watchdog.c: workers whose Lua cannot be stopped ---- */
void lg_watchdog_start(lg_app *a); /* once, when the first worker starts */
void lg_watchdog_poke(lg_app *a);  /* something to watch changed (a cancel, close) */

#endif
