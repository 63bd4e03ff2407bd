/* Between the scheduler and its worker threads (worker.c): a worker's
 * layout, and what a worker thread asks of the scheduler that started it
 * (its next task, its outcome, its exit, a task's info), as the functions
 * of the lg_worker_ops the scheduler hands every worker it starts
 * (defined in dispatcher.c, handed on by sched.c). So a worker calls the scheduler without importing it,
 * and the scheduler starts and wakes workers through the two functions at
 * the end. Nothing here knows the scheduler's layouts. */
#ifndef LUAGENT_WORKER_LINK_H
#define LUAGENT_WORKER_LINK_H

#include "luagent.h"
#include "tasks.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

typedef struct lg_worker lg_worker;

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

typedef struct lg_worker_ops {
  lg_task *(*next)(lg_worker *w); /* blocks; NULL: exit */
  void (*done)(lg_worker *w, lg_task *t, const lg_outcome *o);
  void (*exit)(lg_worker *w); /* the thread's last call; frees w */
  void (*task_info)(lg_app *a, lg_task *t, buf_t *out); /* the JSON the worker's Lua entry takes */
} lg_worker_ops;

/* What a worker is started with; the strings and locks outlive it. */
typedef struct {
  lg_app *app;
  const lg_worker_ops *ops;
  pthread_mutex_t *app_mu, *hq_mu;
  const char *lua_path, *lua_cpath, *boot_json;
} lg_worker_link;

struct lg_worker {
  lg_app *app;
  /* set from the lg_worker_link it was started with */
  const lg_worker_ops *ops;
  pthread_mutex_t *app_mu; /* the scheduler's lock (guards `multi` for cancellers) */
  pthread_mutex_t *hq_mu;  /* the host queue's lock, under which it waits for a reply */
  const char *lua_path, *lua_cpath, *boot_json; /* the app's, alive while it runs */
  pthread_t thread;
  pthread_cond_t cv;  /* with app->mu */
  pthread_cond_t hcv; /* with app->hq_mu: waiting for the host's reply */
  lg_task *task;     /* assigned or running task */
  int idle, exiting;
  atomic_int nudged; /* something changed for it while it spins: task, close, retire */
  unsigned spin_skip; /* idle periods left without looking, after a look found nothing */
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

/* Start a worker thread for its first task; NULL when no thread could be
 * made. The caller links it into its list (under app_mu). */
lg_worker *lg_worker_start(const lg_worker_link *link, lg_task *first);
void lg_worker_wake(lg_worker *w); /* under app_mu */

#endif
