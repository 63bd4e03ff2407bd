/* The scheduler's API: tasks, admission (caps, slot lending), waits,
 * cancellation, retries, events and the host work queue of one app, as
 * handles (lg_app, lg_task, lg_worker, lg_wait) and functions that take and
 * give JSON text. The layouts are private (dispatch_internal.h); nothing
 * declared here calls into Lua. Locks: docs/architecture.md, "Locks". */
#ifndef LUAGENT_DISPATCHER_H
#define LUAGENT_DISPATCHER_H

#include "internal.h"
#include "luagent.h"
#include "event_types.h"
#include "task_types.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

typedef struct lg_task lg_task;
typedef struct lg_worker lg_worker;
typedef struct lg_store lg_store;

enum { CLOSE_CANCEL, CLOSE_SUSPEND };

typedef struct {
  int global_concurrency, per_agent_concurrency;
  double default_timeout_s, default_wait_timeout_s, worker_idle_s;
  int default_retries, reject, max_queue, max_depth, max_descendants, max_workers;
  double retry_backoff_s, retry_backoff_max_s;
  double keep_finished_s; /* finished tasks leave memory after this; < 0 = never */
  int max_output_bytes;   /* max_tool_output_bytes: the bound of a tool message */
  int max_result_bytes;   /* how much of a child's result reaches its parent (control.c) */
  long keep_finished_max; /* at most this many finished tasks in memory; < 0 = no bound */
  double stop_grace_s;    /* a task told to stop that runs on this long retires its worker; < 0 = never */
  int event_buffer;
  char *boot_json;            /* what a worker's Lua entry needs to boot (worker.lua) */
  char *lua_path, *lua_cpath; /* package.path/cpath for worker states */
} lg_settings;

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
  double stale_after_s;        /* 0: no stall detection (stall.c) */
  const char *idempotency_key; /* NULL: none (idem.c) */
  /* rate and tree budgets (core/ratelimit.c, core/budget.c) */
  const char *parent_id; /* a host-side enqueue on behalf of this waiting task (admission) */
  const struct lg_budget_limits *tree_budget; /* a root's budget for its tree */
} lg_enqueue_req;

/* parent: the calling worker's task, or NULL. Writes the record JSON. */
int lg_enqueue(lg_app *a, lg_task *parent, const lg_enqueue_req *r, buf_t *out, lg_err *err);
/* n requests under one lock, one wake-up round and one store commit, all or
 * nothing: each is checked as lg_enqueue checks it, the ones before it of
 * the same call counted in (caps, idempotency keys); if one is refused,
 * none is enqueued and *bad is its index (0-based; -1 when the refusal is
 * not one request's: the app is closed, the store failed, out of memory).
 * The records are appended to out one after the other, record i ending at
 * ends[i]. */
int lg_enqueue_many(lg_app *a, lg_task *parent, const lg_enqueue_req *rs, int n, buf_t *out,
                    size_t *ends, int *bad, lg_err *err);
int lg_get(lg_app *a, const char *id, buf_t *out);
void lg_list(lg_app *a, const lg_filter *f, buf_t *out);
/* Request cancellation. Writes {"ok":..,"status":..,"task_id":..}; -1 unknown. */
int lg_cancel(lg_app *a, const char *id, buf_t *out);
/* Status string of a task; -1 unknown. */
int lg_status(lg_app *a, const char *id, char out[16]);
int lg_set_delivered(lg_app *a, const char *id);
/* Several at once: one store commit for all of them. */
void lg_set_delivered_many(lg_app *a, const char *const *ids, int n);
/* Settings the control tools apply (fixed for the app's life). */
int lg_app_max_output(const lg_app *a);
int lg_app_max_result(const lg_app *a);
double lg_app_default_wait_s(const lg_app *a);
int lg_task_digests(lg_app *a, const char *id, int n, buf_t *out);
/* The task is alive: restarts its stale_after_s clock (stall.c). NULL: no-op. */
void lg_task_heartbeat(lg_task *t);

/* Waits (waits.c). caller: the waiting task (for the self/ancestor check)
 * or NULL. lg_wait_begin registers the ids once (NULL with err on an unknown
 * id); lg_wait_over is a lock-free check; lg_wait_value writes the wait
 * value ({done, timed_out, tasks, pending}); lg_wait_free unregisters. */
lg_wait *lg_wait_begin(lg_app *a, lg_task *caller, char **ids, int n, int any, lg_err *err);
int lg_wait_over(lg_wait *w);
void lg_wait_value(lg_wait *w, int timed_out, buf_t *out);
void lg_wait_free(lg_wait *w);
int lg_wait_ids(lg_wait *w, char ***ids);
int lg_wait_any(lg_wait *w);
void lg_wait_set_worker(lg_wait *w, lg_worker *wk);
/* caller_id: the waiting task's id (NULL: a host run) */
lg_wait *lg_wait_begin_by_id(lg_app *a, const char *caller_id, char **ids, int n, int any,
                             lg_err *err);

/* host side */
uint64_t lg_gen(lg_app *a);
/* Block until the generation moves on from gen or timeout_s passes (< 0:
 * none). news: wake for new events too (events.h, lg_ev_bump_news), not only
 * for host work, finished tasks and waits that are over. */
void lg_block(lg_app *a, uint64_t gen, double timeout_s, int news);
int lg_take_host_work(lg_app *a, int max, lg_host_item **out);
/* The same, but -1 instead of waiting when the queue's lock stays busy
 * (poll under a budget, bind_host.c). */
int lg_take_host_work_try(lg_app *a, int max, lg_host_item **out);
void lg_host_reply(lg_app *a, uint64_t id, const char *json);
/* -1 instead of waiting when the queue's lock stays busy (nothing delivered) */
int lg_host_reply_try(lg_app *a, uint64_t id, const char *json);
void lg_set_wants(lg_app *a, unsigned wants);
void lg_set_host_multi(lg_app *a, void *multi);
void *lg_host_multi(lg_app *a);
/* Whether new events wake the host's HTTP poll (its watchers want them). */
void lg_host_poll_news(lg_app *a, int on);
int lg_host_work_pending(lg_app *a);

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

typedef struct {
  int queued, running, waiting, workers, lent_slots, host_calls_pending, idle;
  long long in_memory; /* task records in memory, finished ones included */
  long long finished[6];
  lg_usage usage;
  int64_t last_seq; /* of the newest event */
  int threads;      /* worker threads alive, retired or detached ones too */
  long long host_wakes; /* a blocked host woken by news (events.c) */
} lg_stats;
void lg_get_stats(lg_app *a, lg_stats *s);

/* Returns 1 when every worker stopped within the grace period. */
int lg_close(lg_app *a, int mode, double grace_s, int wait);

/* ---- store and recovery (R-14, R-40) ---- */
struct lg_store_opts_s;
int lg_app_open_store(lg_app *a, const char *path, const struct lg_store_opts_s *o, lg_err *err);
struct lg_store *lg_app_store(lg_app *a); /* NULL for memory only */
typedef struct {
  lg_enqueue_req base; /* retries = max_retries */
  const char *task_id, *run_id, *parent_task_id, *root_task_id, *status;
  const char *result_json, *usage_json, *error_kind, *error_message, *run_status;
  const char *messages_json; /* its inbox (inbox.c), or NULL */
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
/* The shared queue of a PostgreSQL store (recovery.c). */
int lg_cluster_room(lg_app *a);
const char *lg_cluster_node(lg_app *a);
int lg_cluster_admit(lg_app *a, const char *id, int64_t token, int cancel);
/* app:serve starts (on = 1) or ends (0): other processes' wake-ups bump
 * the host meanwhile (cluster_watch.c). */
void lg_cluster_serving(lg_app *a, int on);
/* 1 while those wake-ups arrive, so a serve may look for work less often. */
int lg_cluster_listening(lg_app *a);
void lg_unclaim(lg_app *a, const char *id);

/* ---- steer.c: messages to a running agent task (README, "Steering") ---- */
/* Queue `text` for task id, as sent by `from`; interrupt also asks its open
 * step to end. Returns once committed: 0 queued (out: {"ok":true,
 * "interrupt","seq","status","task_id"}), 1 the task has finished (out:
 * {"ok":false,"status","task_id"}), -1 unknown (err not_found), -2 refused
 * (err validation: a tool task; or out of memory), -3 the store write failed. */
int lg_send(lg_app *a, const char *id, const char *text, const char *from, int interrupt,
            buf_t *out, lg_err *err);
/* The task's messages not yet delivered, as a JSON array of {seq, from,
 * text}, marked delivered (committed before it returns); clears the
 * interrupt request. Returns how many. */
int lg_take_messages(lg_app *a, lg_task *t, buf_t *out);
/* How many of the task's messages are not yet delivered. */
int lg_pending_messages(lg_app *a, lg_task *t);

/* ---- control.c ---- */
void lg_control_claim(lg_app *a, const luagent_scope *s, lg_task *claimer, buf_t *out);
/* A result text as the parent is shown it: whole when it fits in max, else
 * its first page and a note naming bg_check{task_id = id, offset} (README,
 * "Big results"). Appended to out. */
void lg_control_bounded(const char *text, size_t len, size_t max, const char *id, buf_t *out);

/* ---- a running task's calls (on its worker's own thread) ---- */
/* Blocking calls of a running task. Return 0, 1 when the task must stop
 * (the caller raises the cancel sentinel), or 2 when a message interrupted
 * the open step (the caller raises the interrupt sentinel; steer.c). */
int lg_task_sleep(lg_worker *w, double seconds);
int lg_task_wait(lg_worker *w, char **ids, int n, int any, double timeout_s,
                 buf_t *out, lg_err *err);
int lg_task_block(lg_worker *w, lg_wait *wt, double timeout_s);
int lg_task_call_host(lg_worker *w, const char *name, const char *args_json, const char *ctx_json,
                      buf_t *out);
int lg_task_should_stop(lg_task *t);
int64_t lg_task_deadline(const lg_task *t); /* mono ms of the attempt's deadline, 0 = none */
/* Steering (inbox.c): the task's own worker opens and closes the step a
 * message sent with interrupt = true may cut short, and asks whether one did. */
void lg_task_step_open(lg_task *t, int open);
int lg_task_interrupted(lg_task *t);

#endif
