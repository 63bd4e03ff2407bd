/* The dispatcher: tasks, admission (caps, slot lending), waits, cancellation,
 * retries, events and the host work queue of one app. Everything here is
 * guarded by app->mu; no function declared here calls into Lua. */
#ifndef LUAGENT_DISPATCHER_H
#define LUAGENT_DISPATCHER_H

#include "internal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

typedef struct lg_app lg_app;
typedef struct lg_task lg_task;
typedef struct lg_worker lg_worker;
typedef struct lg_host_item lg_host_item;
typedef struct lg_store lg_store;

enum { TK_TOOL, TK_AGENT };

enum { TS_QUEUED, TS_RUNNING, TS_COMPLETED, TS_FAILED, TS_CANCELLED, TS_TIMED_OUT };
#define TS_TERMINAL(s) ((s) >= TS_COMPLETED)

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

enum { CLOSE_CANCEL, CLOSE_SUSPEND };

typedef struct {
  char kind[16];
  char message[512];
} lg_err;

typedef struct {
  int64_t seq, ts;
  char kind[24];
  char summary[128];
} lg_digest;

#define LG_TASK_RING 16

/* Token usage and its cost (usage.c). `set`: something was reported;
 * `has_cost`: some call had a price; `estimated`: some call's usage was an
 * estimate (the provider reported none). */
typedef struct {
  long long prompt, completion, total, cached;
  double cost;
  int set, has_cost, estimated;
} lg_usage;

struct lg_task {
  char id[40];
  int kind;
  char *agent_id, *parent_agent_id, *thread_id, *tool, *tool_call_id;
  char *run_id, *parent_run_id, *parent_task_id, *root_task_id, *root_key;
  char *prompt, *args_json, *metadata_json, *result_json, *usage_json, *late_result_json;
  char *error_kind, *error_message;
  int depth;
  int status, phase;
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
  int64_t stale_ms;                  /* stale_after_s in ms, 0 = off (stall.c) */
  char *idem_key;                    /* idempotency_key, NULL = none (idem.c) */
  _Atomic int64_t progress_mono;     /* last sign of life, 0 = waiting in the core */
  lg_task *parent;                 /* NULL when spawned by a host or foreground run */
  lg_task *first_child, *next_sibling;
  lg_worker *worker;               /* set while a worker runs it */
  struct lg_agentq *aq;
  int heap_idx;
  lg_task *lnext;                  /* retry / resume lists */
  /* wait state */
  char **wait_ids;
  int wait_n, wait_any;
  lg_host_item *host_call;
  /* per-task ring of event digests, for bg_check and wait progress */
  lg_digest ring[LG_TASK_RING];
  int ring_n, ring_head;
  lg_task *hnext; /* hash chain */
  /* leaving memory (evict.c) */
  lg_task *enext, *eprev; /* the list of finished tasks free to leave, oldest first */
  int in_elist, restored;
  int64_t evictable_at;   /* wall ms it became free to leave */
  struct lg_counter *rootc; /* its run tree's descendant counter, or NULL */
};

/* An agent's queue: a heap of its queued tasks, best first. */
typedef struct lg_agentq {
  char *name;
  int holders; /* slot holders of this agent */
  lg_task **heap;
  int n, cap;
  struct lg_agentq *hnext, *next;
} lg_agentq;

enum { HI_HOST_CALL, HI_CALLBACK, HI_LOG };

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
  lg_host_item *next;
};

typedef struct {
  int global_concurrency, per_agent_concurrency;
  double default_timeout_s, default_wait_timeout_s, worker_idle_s;
  int default_retries, reject, max_queue, max_depth, max_descendants, max_workers;
  double retry_backoff_s, retry_backoff_max_s;
  double keep_finished_s; /* finished tasks leave memory after this; < 0 = never */
  long keep_finished_max; /* at most this many finished tasks in memory; < 0 = no bound */
  double stop_grace_s;    /* a task told to stop that runs on this long retires its worker; < 0 = never */
  int event_buffer;
  char *boot_json;            /* what a worker's Lua entry needs to boot (worker.lua) */
  char *lua_path, *lua_cpath; /* package.path/cpath for worker states */
} lg_settings;

struct lg_worker {
  lg_app *app;
  pthread_t thread;
  pthread_cond_t cv;
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
typedef struct lg_counter {
  char *key;
  int n, refs;
  struct lg_counter *next; /* hash chain */
} lg_counter;

struct lg_app {
  pthread_mutex_t mu;
  pthread_cond_t host_cv, workers_cv;
  atomic_int refs;
  lg_settings cfg;
  char id[40];
  /* tasks */
  lg_task **tab;
  size_t tab_cap, ntasks;
  lg_agentq **aqtab;
  size_t aq_cap;
  lg_agentq *agents;
  uint64_t next_seq;
  int queued, holders, waiting, resuming_n, running_n;
  lg_task *retry_head, *resume_head, *resume_tail;
  lg_counter **ctab; /* descendant counters by root key (tasks.c) */
  size_t ctab_cap, ncounters;
  lg_task *ehead, *etail; /* finished tasks free to leave memory, oldest first (evict.c) */
  size_t nfinished;       /* finished tasks in memory */
  /* workers */
  lg_worker *workers;
  int nworkers, nidle, live_threads;
  /* host side */
  uint64_t gen;
  int host_blocked;
  void *host_multi; /* CURLM* the host is polling, woken with the host */
  lg_host_item *hq_head, *hq_tail;
  int hq_n, host_calls_pending;
  uint64_t next_item_id;
  unsigned wants; /* bit per lifecycle callback kind */
  /* events */
  lg_event *ring;
  int ring_cap, ring_n, ring_head;
  int64_t next_event_seq; /* never past INT64_MAX (events.c) */
  int seq_exhausted;
  /* counters of finished tasks, by status */
  long long finished[6];
  lg_usage usage; /* every model call of the app, foreground runs included */
  double t0;      /* lg_mono_s() at creation: events' `t` counts from here */
  int closing, closed;
  pthread_cond_t watch_cv; /* the watchdog's (watchdog.c) */
  int watchdog_on;
  lg_store *store;
};

/* lifecycle callbacks the host wants queued */
enum { W_ENQUEUED = 1, W_STARTED = 2, W_RETRY = 4, W_FINISHED = 8, W_ERROR = 16 };

/* ---- app ---- */
lg_app *lg_app_new(const lg_settings *s, lg_err *err);
void lg_app_retain(lg_app *a);
void lg_app_release(lg_app *a);

typedef struct {
  int kind;
  const char *tool, *agent_id, *thread_id, *prompt, *args_json, *metadata_json, *tool_call_id;
  const char *parent_run_id, *parent_agent_id, *root_key;
  int depth; /* the task's own depth */
  int max_depth; /* depth limit its runs inherit (-1: none beyond the app's) */
  int scoped;    /* started by an agent run, whose scope it is announced to */
  double timeout_s; /* < 0: default */
  int retries;      /* < 0: default */
  long long priority;
  double stale_after_s; /* 0: no stall detection (stall.c) */
  const char *idempotency_key; /* NULL: none (idem.c) */
} lg_enqueue_req;

/* parent: the calling worker's task, or NULL. Writes the record JSON. */
int lg_enqueue(lg_app *a, lg_task *parent, const lg_enqueue_req *r, buf_t *out, lg_err *err);
int lg_get(lg_app *a, const char *id, buf_t *out);
typedef struct {
  const char *status, *agent_id, *parent_agent_id, *thread_id, *parent_run_id, *parent_task_id;
  int limit, include_finished;
  int claimable; /* finished, not delivered, not claimed (R-33 notices) */
} lg_filter;
void lg_list(lg_app *a, const lg_filter *f, buf_t *out);
/* Request cancellation. Writes {"ok":..,"status":..,"task_id":..}; -1 unknown. */
int lg_cancel(lg_app *a, const char *id, buf_t *out);
/* Status string of a task; -1 unknown. */
int lg_status(lg_app *a, const char *id, char out[16]);
int lg_set_delivered(lg_app *a, const char *id);
int lg_task_digests(lg_app *a, const char *id, int n, buf_t *out);

/* Wait helpers. caller: the waiting task (for the self/ancestor check) or NULL.
 * lg_wait_check writes the bg_wait value; returns 1 when the wait is over,
 * 0 when not, -1 on bad ids (err set). */
int lg_wait_check(lg_app *a, lg_task *caller, char **ids, int n, int any, int timed_out,
                  buf_t *out, lg_err *err);
/* A host wait on ids begins (delta 1) or ends (-1): while it lasts, those
 * tasks stay in memory, as for a worker's wait. */
void lg_hold(lg_app *a, char **ids, int n, int delta);

/* host side */
uint64_t lg_gen(lg_app *a);
void lg_block(lg_app *a, uint64_t gen, double timeout_s);
int lg_take_host_work(lg_app *a, int max, lg_host_item **out);
void lg_host_item_free(lg_host_item *it);
void lg_host_reply(lg_app *a, uint64_t id, const char *json);
void lg_set_wants(lg_app *a, unsigned wants);
void lg_set_host_multi(lg_app *a, void *multi);

typedef struct {
  const char *kind, *run_id, *task_id, *agent_id, *payload_json;
  int depth;
} lg_event_in;
void lg_emit(lg_app *a, const lg_event_in *e, const char *summary);
/* Events with seq > since, at most limit. Writes a JSON array; returns the
 * number written. A cursor older than the ring gives a first {"kind":"gap"}. */
int lg_events(lg_app *a, int64_t since, int limit, buf_t *out);
void lg_log(lg_app *a, const char *level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Wake a host blocked in lg_block or an HTTP poll (interrupt.c). */
void lg_wake(lg_app *a);

/* ---- usage (usage.c) ---- */
/* Add one model call's usage to a task (NULL: a foreground run's, the app
 * total only), to the tree_usage of the task and every ancestor, and to the
 * app total. -1: unknown task (the app total still counts it). */
int lg_add_usage(lg_app *a, const char *task_id, const lg_usage *d);
/* `,"usage":{...},"tree_usage":{...}` of a record (nothing when none). */
void lg_usage_fields(buf_t *b, const lg_task *t, int with_tree);
void lg_usage_json(buf_t *b, const lg_usage *u);

typedef struct {
  int queued, running, waiting, workers, lent_slots, host_calls_pending, idle;
  long long in_memory; /* task records in memory, finished ones included */
  long long finished[6];
  lg_usage usage;
  int64_t last_seq; /* of the newest event */
} lg_stats;
void lg_get_stats(lg_app *a, lg_stats *s);

/* Returns 1 when every worker stopped within the grace period. */
int lg_close(lg_app *a, int mode, double grace_s, int wait);

/* ---- store and recovery (R-14, R-40) ---- */
struct lg_store_opts_s;
int lg_app_open_store(lg_app *a, const char *path, const struct lg_store_opts_s *o, lg_err *err);
struct lg_store *lg_app_store(lg_app *a); /* NULL for memory only */
void lg_store_records(lg_app *a, buf_t *out);
typedef struct {
  lg_enqueue_req base; /* retries = max_retries */
  const char *task_id, *run_id, *parent_task_id, *root_task_id, *status;
  const char *result_json, *usage_json, *error_kind, *error_message, *run_status;
  lg_usage usage, tree_usage;
  int attempts, delivered, cancel_requested, error_status;
  int64_t enqueued_at, started_at, finished_at, retry_at;
} lg_restore_req;
int lg_restore(lg_app *a, const lg_restore_req *r, lg_err *err);
/* Applies R-40; returns the highest seq the file held before it. */
int64_t lg_restore_done(lg_app *a);
int lg_thread_get(lg_app *a, const char *key, buf_t *out);
int lg_thread_put(lg_app *a, const char *key, const char *json, lg_err *err);
void lg_claim(lg_app *a, lg_task *claimer, const lg_filter *f, buf_t *out);
void lg_unclaim(lg_app *a, const char *id);

/* ---- worker side (called on the worker's own thread) ---- */
lg_task *lg_worker_next(lg_worker *w);            /* blocks; NULL: exit */
typedef struct {
  int ok;                /* handler returned */
  const char *result_json;
  const char *usage_json;
  int agent_status;      /* for agent runs: TS_* the result maps to, or -1 */
  const char *run_status; /* for agent runs: the AgentResult's status */
  const char *error_kind, *error_message;
  int error_status;      /* HTTP status of a model error, or 0 */
  int raised_stop;       /* the cancel sentinel unwound the task */
} lg_outcome;
void lg_worker_done(lg_worker *w, lg_task *t, const lg_outcome *o);
void lg_worker_exit(lg_worker *w);
/* Blocking calls of a running task. Return 0, or 1 when the task must stop
 * (the caller raises the cancel sentinel). */
int lg_task_sleep(lg_worker *w, double seconds);
int lg_task_wait(lg_worker *w, char **ids, int n, int any, double timeout_s,
                 buf_t *out, lg_err *err);
int lg_task_call_host(lg_worker *w, const char *name, const char *args_json, const char *ctx_json,
                      buf_t *out);
int lg_task_should_stop(lg_task *t);
/* The task info JSON handed to the worker's Lua entry. */
void lg_task_info(lg_app *a, lg_task *t, buf_t *out);


/* worker.c */
int lg_worker_spawn(lg_app *a, lg_task *first); /* under a->mu; 0 ok */
void lg_worker_wake(lg_worker *w);               /* under a->mu */

#endif
