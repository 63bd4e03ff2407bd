/* Private to the files of the dispatcher (dispatcher.c, tasks.c, events.c,
 * recovery.c): the helpers one of them defines and another calls. They were
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
int *lg_descendant_counter(lg_app *a, const char *key); /* spawned per root */

#endif
