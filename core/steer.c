/* Steering a running agent task (README, "Steering"; docs/architecture.md,
 * "Steering"): a message queued for it (bg_send, app:send, ctx:send) and
 * the delivery of its queued messages before the run's next model call.
 * Both write the task's record, which carries its messages (inbox.c), and
 * wait for the commit with the lock released: a send returns once the
 * message is in the file, and a delivery's mark is in the file before the
 * model call that carries the message is made. `interrupt` also asks the
 * task's open step (a model call or tool) to end now: the flag is read by
 * the worker's count hook, its HTTP poll and its blocking calls, all woken
 * here. */
#include "dispatch_internal.h"
#include "jtext.h"
#include "store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The answer for a task that is not (or no longer) in memory: finished,
 * read back from the store, or unknown. */
static int absent_task(lg_app *a, const char *id, buf_t *out, lg_err *err) {
  buf_t rec;
  lg_buf_init(&rec);
  int found = lg_get(a, id, &rec) == 0 && !rec.oom;
  if (found) {
    lg_buf_adds(out, "{\"ok\":false");
    lg_jspan_put(out, "status", lg_jtext_field(rec.p, rec.len, "status"));
    lg_buf_adds(out, ",\"task_id\":");
    lg_buf_add_jstr(out, id, strlen(id));
    lg_buf_addc(out, '}');
  } else {
    lg_err_set(err, "not_found", "unknown task id \"%s\"", id);
  }
  lg_buf_free(&rec);
  return found ? 1 : -1;
}

static void finished_answer(const lg_task *t, buf_t *out) {
  lg_buf_addf(out, "{\"ok\":false,\"status\":\"%s\",\"task_id\":", lg_status_name(t->status));
  lg_buf_add_jstr(out, t->id, strlen(t->id));
  lg_buf_addc(out, '}');
}

int lg_send(lg_app *a, const char *id, const char *text, const char *from, int interrupt,
            buf_t *out, lg_err *err) {
  pthread_mutex_lock(&a->mu);
  lg_task *t = lg_task_find(a, id);
  if (!t) {
    pthread_mutex_unlock(&a->mu);
    return absent_task(a, id, out, err);
  }
  if (TS_TERMINAL(t->status)) {
    finished_answer(t, out);
    pthread_mutex_unlock(&a->mu);
    return 1;
  }
  if (t->kind != TK_AGENT) {
    lg_err_set(err, "validation", "task %s runs the tool %s, not an agent: it reads no messages", id,
               t->tool ? t->tool : "?");
    pthread_mutex_unlock(&a->mu);
    return -2;
  }
  if (t->phase == PH_REMOTE) { /* its record is its holder's to write */
    lg_err_set(err, "validation",
               "task %s is in the shared queue and runs wherever it is claimed: messages reach only "
               "a task this process runs", id);
    pthread_mutex_unlock(&a->mu);
    return -2;
  }
  lg_msg *m = lg_inbox_add(t, text, from, interrupt, lg_wall_ms());
  if (!m) {
    pthread_mutex_unlock(&a->mu);
    lg_err_set(err, "runtime", "out of memory");
    return -2;
  }
  int64_t seq = m->seq;
  {
    buf_t p;
    lg_buf_init(&p);
    lg_buf_addf(&p, "{\"bytes\":%zu,\"from\":", strlen(text));
    lg_buf_add_jstr(&p, from, strlen(from));
    lg_buf_addf(&p, ",\"interrupt\":%s,\"message_seq\":%lld}", interrupt ? "true" : "false",
                (long long)seq);
    char summary[96];
    snprintf(summary, sizeof summary, "message %lld queued%s", (long long)seq,
             interrupt ? " (interrupt)" : "");
    lg_task_event(a, t, "message_queued", p.oom ? "{}" : p.p, summary);
    lg_buf_free(&p);
  }
  lg_persist(a, t);
  if (interrupt) {
    atomic_store(&t->interrupt, 1);
    if (t->worker) lg_worker_wake(t->worker);
  }
  lg_buf_adds(out, "{\"ok\":true");
  lg_buf_addf(out, ",\"interrupt\":%s,\"seq\":%lld,\"status\":\"%s\",\"task_id\":",
              interrupt ? "true" : "false", (long long)seq, lg_status_name(t->status));
  lg_buf_add_jstr(out, t->id, strlen(t->id));
  lg_buf_addc(out, '}');
  lg_store *st = a->store;
  uint64_t ticket = lg_store_ticket(st);
  lg_bump(a);
  pthread_mutex_unlock(&a->mu);
  /* like an enqueue: in the file before the sender is told */
  char msg[300];
  if (lg_store_sync(st, ticket, msg, sizeof msg) != 0) {
    lg_buf_reset(out);
    lg_err_set(err, "store", "%s", msg);
    return -3;
  }
  return 0;
}

int lg_take_messages(lg_app *a, lg_task *t, buf_t *out) {
  lg_buf_addc(out, '[');
  if (!t) {
    lg_buf_addc(out, ']');
    return 0;
  }
  pthread_mutex_lock(&a->mu);
  int n = 0;
  if (!t->retired) {
    int64_t now = lg_wall_ms();
    for (lg_msg *m = t->inbox; m; m = m->next) {
      if (m->delivered_at) continue;
      m->delivered_at = now;
      if (n++) lg_buf_addc(out, ',');
      lg_buf_addf(out, "{\"seq\":%lld,\"from\":", (long long)m->seq);
      lg_buf_add_jstr(out, m->from, strlen(m->from));
      lg_buf_adds(out, ",\"text\":");
      lg_buf_add_jstr(out, m->text, strlen(m->text));
      lg_buf_addc(out, '}');
      char payload[64], summary[64];
      snprintf(payload, sizeof payload, "{\"message_seq\":%lld}", (long long)m->seq);
      snprintf(summary, sizeof summary, "message %lld delivered", (long long)m->seq);
      lg_task_event(a, t, "message_delivered", payload, summary);
    }
    /* what a sender asked to interrupt is read now */
    atomic_store(&t->interrupt, 0);
  }
  lg_store *st = n ? a->store : NULL;
  if (n) lg_persist(a, t);
  uint64_t ticket = lg_store_ticket(st);
  pthread_mutex_unlock(&a->mu);
  lg_buf_addc(out, ']');
  /* the mark is in the file (with the events) before the model call that
   * carries the messages is made (docs/architecture.md, R-34) */
  lg_store_sync(st, ticket, NULL, 0);
  return n;
}

int lg_pending_messages(lg_app *a, lg_task *t) {
  if (!t) return 0;
  pthread_mutex_lock(&a->mu);
  int n = lg_inbox_pending(t);
  pthread_mutex_unlock(&a->mu);
  return n;
}
