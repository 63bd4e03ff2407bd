/* The task table's layouts and functions (tasks.c): tasks, the table (a
 * hash by id with its lists by enqueue order and by scope), the per-agent
 * queues and the descendant counters. The table is data: it decides
 * nothing and knows no scheduler, which embeds it in lg_app and holds
 * app->mu around every call. */
#ifndef LUAGENT_TASKS_H
#define LUAGENT_TASKS_H

#include "task_types.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* Where a task is in its life; finer than the status users see. */
enum {
  PH_QUEUED,    /* in its agent's queue, waiting for admission */
  PH_RETRY,     /* failed attempt, waiting for retry_at */
  PH_ASSIGNED,  /* admitted (holds a slot), handed to a worker */
  PH_WAITING,   /* on a worker, waiting on tasks or the host; slot lent */
  PH_RESUMING,  /* wait over, queued to take a slot back */
  PH_UNWINDING, /* cancelled while it held no slot; its Lua is unwinding */
  PH_RECOVERING, /* restored from the store, not yet re-queued */
  PH_REMOTE,    /* in a shared store's queue: runs wherever it is claimed */
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

/* A message sent to a running agent task (README, "Steering"; inbox.c):
 * queued by bg_send/app:send/ctx:send, carried once into the run's
 * transcript before its next model call. */
typedef struct lg_msg {
  int64_t seq;              /* 1, 2, ... per task */
  char *text, *from;        /* from: who sent it, as the run is told */
  int64_t queued_at;        /* wall ms */
  int64_t delivered_at;     /* wall ms, 0 = not yet */
  int interrupt;            /* sent with interrupt = true */
  struct lg_msg *next;
} lg_msg;

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
  int64_t fence; /* shared store: the token of this process's claim, 0 = none */
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
  int stub;          /* a stand-in for a wait on another process's task (cluster_watch.c) */
  int remote_cancel; /* PH_REMOTE: 1 a cancel asked here waits for the store, 2 it was sent (cluster_watch.c) */
  int64_t stop_mono; /* when a cancel or close asked it to stop (mono ms, 0 = not) */
  int64_t stale_ms;              /* stale_after_s in ms, 0 = off (stall.c) */
  _Atomic int64_t progress_mono; /* last sign of life, 0 = waiting in the core (stall.c) */
  char *idem_key;                /* idempotency_key, NULL = none (idem.c) */
  lg_task *ihnext;               /* chain of the idempotency index (idem.c) */
  lg_task *parent;                 /* NULL when spawned by a host or foreground run */
  lg_task *first_child, *next_sibling;
  struct lg_worker *worker;             /* set while a worker runs it */
  struct lg_agentq *aq;
  int heap_idx;
  lg_task *lnext;                  /* retry / resume lists */
  /* wait state: the ids of the wait this task's worker blocks on (borrowed
   * from the lg_wait), and the waits registered with this task */
  char **wait_ids;
  int wait_n, wait_any;
  struct lg_wait **waits;
  int nwaits, waits_cap;
  struct lg_host_item *host_call;
  /* per-task ring of event digests, for bg_check and wait progress; it
   * grows up to LG_TASK_RING entries (most tasks see three or four
   * events) and wraps only once full, so ring_head is 0 until then */
  lg_digest *ring;
  int ring_n, ring_head, ring_cap;
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
  /* steering (inbox.c): its messages in order, and the soft interrupt of
   * one step: `interrupt` is set by a sender (under mu), `step_open` by
   * the task's own worker thread while a model call or tool may be cut */
  lg_msg *inbox, *inbox_tail;
  int64_t inbox_seq;
  atomic_int interrupt, step_open;
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
  int batch_taken; /* a batch enqueue's count of its tasks that would start now (0 outside one) */
  lg_task **heap;
  int n, cap;
  struct lg_agentq *hnext, *next;
} lg_agentq;

/* Tasks a run tree spawned, kept while a task of the tree is in
 * memory (tasks.c). */
typedef struct lg_counter {
  char *key;
  int n, refs;
  struct lg_counter *next; /* hash chain */
} lg_counter;

typedef struct lg_table {
  lg_task **tab;
  size_t tab_cap;
  atomic_size_t ntasks; /* stats reads it without mu */
  lg_task *all_head, *all_tail; /* enqueue order */
  lg_scopeq **sctab;
  size_t sc_cap;
  lg_agentq **aqtab;
  size_t aq_cap;
  lg_agentq *agents;
  lg_counter **ctab; /* descendant counters by root key */
  size_t ctab_cap, ncounters;
} lg_table;

/* ---- tasks.c: clocks, task table, agent queues, records, helpers ---- */
void lg_cond_init(pthread_cond_t *cv); /* a condition variable on CLOCK_MONOTONIC */
void lg_cond_wait_until(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t deadline); /* 0 = none */
int64_t lg_min_deadline(int64_t a, int64_t b); /* the earlier one; 0 = none */
int lg_status_from_name(const char *s);        /* TS_*, or -1 */

lg_task *lg_table_find(lg_table *tb, const char *id);
int lg_table_insert(lg_table *tb, lg_task *t); /* -1: out of memory */
void lg_table_remove(lg_table *tb, lg_task *t);
void lg_table_scopes_free(lg_table *tb);
lg_task **lg_table_select(lg_table *tb, const lg_filter *f, size_t *n); /* enqueue order; free() */
void lg_task_free(lg_task *t);

int lg_task_before(const lg_task *x, const lg_task *y);
lg_agentq *lg_table_aq_get(lg_table *tb, const char *name); /* found or created; NULL: oom */
void lg_heap_up(lg_agentq *q, int i);
int lg_aq_push(lg_agentq *q, lg_task *t);
void lg_aq_remove(lg_agentq *q, lg_task *t);

/* `,"k":...` appended to a JSON object; nothing when the value is absent. */
void lg_add_str_field(buf_t *b, const char *k, const char *v);
void lg_add_raw_field(buf_t *b, const char *k, const char *json);
void lg_add_error(buf_t *b, const lg_task *t);
void lg_record_json_x(const lg_task *t, buf_t *b, int internal);
void lg_record_json(const lg_task *t, buf_t *b);
/* What a worker needs to run the task, and no more: the fields of the
 * record worker.lua reads (kind, ids, depth, prompt, args, attempts,
 * metadata, root_key, max_depth), so a worker decodes a short object. */
void lg_task_brief_json(const lg_task *t, buf_t *b);
const char *lg_root_run_id(const lg_task *t); /* NULL: not started by a foreground run */

/* 1 when the task must stop: asked to, or past its attempt's deadline. */
int lg_task_should_stop(lg_task *t);

int lg_eq_opt(const char *want, const char *have); /* filter match; NULL wants any */
int lg_cmp_seq(const void *x, const void *y);      /* qsort of lg_task * by enqueue order */
void lg_err_set(lg_err *e, const char *kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- tasks.c: descendant counters (R-28) ---- */
lg_counter *lg_table_counter_get(lg_table *tb, const char *key); /* found or created; NULL: oom */
void lg_counter_attach(lg_counter *c, lg_task *t);      /* t counts toward c's life */
void lg_table_counter_detach(lg_table *tb, lg_task *t);          /* freed with its last task */
void lg_table_counter_drop_unused(lg_table *tb, lg_counter *c);  /* created, then nobody came */
void lg_table_counters_free(lg_table *tb);

/* ---- inbox.c: a task's messages (README, "Steering") ---- */
lg_msg *lg_inbox_add(lg_task *t, const char *text, const char *from, int interrupt, int64_t now);
int lg_inbox_pending(const lg_task *t); /* messages not yet delivered */
/* `,"messages":[...]` of the record (nothing when there are none). */
void lg_inbox_json(const lg_task *t, buf_t *b);
/* The messages of a stored record (its "messages" array as JSON text). */
int lg_inbox_restore(lg_task *t, const char *json, size_t len);
void lg_inbox_free(lg_task *t);
/* 1 when a step of the task is open and a sender asked to interrupt it. */
int lg_task_interrupted(lg_task *t);
void lg_task_step_open(lg_task *t, int open);

/* ---- stall.c: stall detection (README, "Stalls"); a task's own clock ---- */
void lg_stall_touch(lg_task *t);             /* a sign of life (not while paused) */
void lg_stall_resume(lg_task *t);            /* the clock starts (again) now */
void lg_stall_pause(lg_task *t);             /* waiting in the core: the clock stops */
int64_t lg_stall_at(lg_task *t);             /* when it stalls (mono ms), 0: never */
int lg_stall_check(lg_task *t, int64_t now); /* 1 and STOP_STALL once stalled */
void lg_stall_message(const lg_task *t, char *out, size_t n);

#endif
