/* Private to the files of the dispatcher (dispatcher.c, tasks.c, events.c,
 * recovery.c, usage.c, watchdog.c, evict.c): the helpers one of them defines and another calls. They were
 * statics of one file; they have external linkage now, but the module is
 * built with -fvisibility=hidden, so none of them is exported, and no file
 * outside the dispatcher includes this header (module.c, worker.c and http.c
 * use dispatcher.h). Functions taking an lg_app expect app->mu held. */
#ifndef LUAGENT_DISPATCH_INTERNAL_H
#define LUAGENT_DISPATCH_INTERNAL_H

#include "dispatcher.h"

#include <pthread.h>
#include <stdint.h>

/* ---- tasks.c: clocks, task table, agent queues, records, helpers ---- */
void cond_init(pthread_cond_t *cv); /* a condition variable on CLOCK_MONOTONIC */
void cond_wait_until(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t deadline); /* 0 = none */
int64_t min_deadline(int64_t a, int64_t b); /* the earlier one; 0 = none */
int status_from_name(const char *s);        /* TS_*, or -1 */

lg_task *task_find(lg_app *a, const char *id);
int task_insert(lg_app *a, lg_task *t); /* -1: out of memory */
void task_remove(lg_app *a, lg_task *t);
lg_task **select_tasks(lg_app *a, const lg_filter *f, size_t *n); /* enqueue order; free() */
void task_free(lg_task *t);

int task_before(const lg_task *x, const lg_task *y);
lg_agentq *aq_get(lg_app *a, const char *name); /* found or created; NULL: oom */
void heap_up(lg_agentq *q, int i);
int aq_push(lg_agentq *q, lg_task *t);
void aq_remove(lg_agentq *q, lg_task *t);

/* `,"k":...` appended to a JSON object; nothing when the value is absent. */
void add_str_field(buf_t *b, const char *k, const char *v);
void add_raw_field(buf_t *b, const char *k, const char *json);
void add_error(buf_t *b, const lg_task *t);
void record_json_x(const lg_task *t, buf_t *b, int internal);
void record_json(const lg_task *t, buf_t *b);
const char *root_run_id(const lg_task *t); /* NULL: not started by a foreground run */

int eq_opt(const char *want, const char *have); /* filter match; NULL wants any */
int cmp_seq(const void *x, const void *y);      /* qsort of lg_task * by enqueue order */
void err_set(lg_err *e, const char *kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- events.c: event ring, digests, host work queue ---- */
void bump(lg_app *a); /* something the host may be waiting for changed */
void hq_push(lg_app *a, lg_host_item *it);
void hq_unlink(lg_app *a, lg_host_item *it);
void queue_callback(lg_app *a, unsigned want, const char *kind, const lg_task *t);
void task_event(lg_app *a, lg_task *t, const char *kind, const char *payload,
                const char *summary);
void digest_json(buf_t *b, const lg_digest *d);

void host_log(lg_app *a, const char *level, const char *msg); /* a log line for the host */

/* ---- watchdog.c: workers whose Lua cannot be stopped ---- */
void watchdog_start(lg_app *a); /* once, when the first worker starts */
void watchdog_poke(lg_app *a);  /* something to watch changed (a cancel, close) */

/* ---- recovery.c: the store side ---- */
void persist(lg_app *a, lg_task *t); /* queue the record's store write */

/* ---- dispatcher.c: scheduling ---- */
void schedule(lg_app *a);
int64_t next_retry_mono(lg_app *a); /* earliest retry time, mono ms (0 = none) */
void finish_task(lg_app *a, lg_task *t, int status);
void requeue(lg_app *a, lg_task *t); /* back on its agent's queue (counted queued) */
void release_claims(lg_app *a, lg_task *claimer); /* recovery.c */
int stored_record(lg_app *a, const char *id, buf_t *out, char status[16]); /* recovery.c */
void set_error(lg_task *t, const char *kind, const char *msg);
void give_slot(lg_app *a, lg_task *t);
void worker_unlink(lg_app *a, lg_worker *w); /* off the list; no longer counted */

/* ---- tasks.c: descendant counters (R-28) ---- */
lg_counter *counter_get(lg_app *a, const char *key); /* found or created; NULL: oom */
void counter_attach(lg_counter *c, lg_task *t);      /* t counts toward c's life */
void counter_detach(lg_app *a, lg_task *t);          /* freed with its last task */
void counter_drop_unused(lg_app *a, lg_counter *c);  /* created, then nobody came */
void counters_free(lg_app *a);

/* ---- evict.c: finished tasks leaving memory ---- */
void evict_sync(lg_app *a, lg_task *t); /* after anything evictable depends on changed */
void evict_finished(lg_app *a);         /* only where no caller holds a finished task */

#endif
