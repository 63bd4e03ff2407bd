/* What leaves the dispatcher for observers: the event ring (§6) with each
 * task's ring of event digests, and the queue of work for the host thread
 * host tool calls, lifecycle callbacks and log lines, with the
 * generation counter a blocked host waits on. Everything is appended under
 * app->mu and drained by module.c on the host thread. Apart from
 * dispatcher.c because none of it decides what runs. */
#include "dispatch_internal.h"
#include "stall.h"
#include "store.h"
#include "http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* -------------------------------------------------------- host and wakeups */

/* Something the host may be waiting for changed. */
void bump(lg_app *a) {
  a->gen++;
  if (a->host_blocked) pthread_cond_broadcast(&a->host_cv);
  if (a->host_multi) lg_http_wakeup(a->host_multi);
}

void hq_push(lg_app *a, lg_host_item *it) {
  it->id = ++a->next_item_id;
  it->next = NULL;
  if (a->hq_tail)
    a->hq_tail->next = it;
  else
    a->hq_head = it;
  a->hq_tail = it;
  a->hq_n++;
  bump(a);
}

void hq_unlink(lg_app *a, lg_host_item *it) {
  lg_host_item **pp = &a->hq_head, *prev = NULL;
  for (; *pp; prev = *pp, pp = &(*pp)->next) {
    if (*pp == it) {
      *pp = it->next;
      if (a->hq_tail == it) a->hq_tail = prev;
      a->hq_n--;
      return;
    }
  }
}

void lg_host_item_free(lg_host_item *it) {
  if (!it) return;
  free(it->name);
  free(it->json);
  free(it->ctx_json);
  free(it->reply_json);
  free(it);
}

void queue_callback(lg_app *a, unsigned want, const char *kind, const lg_task *t) {
  if (!(a->wants & want)) return;
  lg_host_item *it = calloc(1, sizeof *it);
  if (!it) return;
  buf_t b;
  buf_init(&b);
  record_json(t, &b);
  it->type = HI_CALLBACK;
  snprintf(it->kind, sizeof it->kind, "%s", kind);
  snprintf(it->task_id, sizeof it->task_id, "%s", t->id);
  it->json = buf_detach(&b);
  if (!it->json) {
    free(it);
    return;
  }
  hq_push(a, it);
}

#define LOG_QUEUE_MAX 1000

void host_log(lg_app *a, const char *level, const char *msg) {
  int queued = 0;
  for (lg_host_item *it = a->hq_head; it; it = it->next) queued += it->type == HI_LOG;
  if (queued >= LOG_QUEUE_MAX) return; /* a host that never pumps must not grow us forever */
  lg_host_item *it = calloc(1, sizeof *it);
  if (!it) return;
  it->type = HI_LOG;
  snprintf(it->kind, sizeof it->kind, "%s", level);
  it->json = strdup(msg);
  if (!it->json) {
    free(it);
    return;
  }
  hq_push(a, it);
}

void lg_wake(lg_app *a) {
  pthread_mutex_lock(&a->mu);
  bump(a);
  pthread_mutex_unlock(&a->mu);
}

void lg_log(lg_app *a, const char *level, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  pthread_mutex_lock(&a->mu);
  host_log(a, level, msg);
  pthread_mutex_unlock(&a->mu);
}

/* ---------------------------------------------------------------- events */

static void ring_digest(lg_task *t, int64_t seq, int64_t ts, const char *kind, const char *summary) {
  lg_digest *d = &t->ring[(t->ring_head + t->ring_n) % LG_TASK_RING];
  if (t->ring_n == LG_TASK_RING)
    t->ring_head = (t->ring_head + 1) % LG_TASK_RING;
  else
    t->ring_n++;
  d->seq = seq;
  d->ts = ts;
  snprintf(d->kind, sizeof d->kind, "%s", kind);
  snprintf(d->summary, sizeof d->summary, "%s", summary ? summary : "");
}

/* Append one event. fields: task may be NULL (then ids come from e). */
static void emit_locked(lg_app *a, const lg_event_in *e, lg_task *t, const char *summary) {
  /* seq is 64-bit and never wraps: the last one handed out is
   * INT64_MAX - 1 (centuries of events at any real rate); after it events
   * are dropped and the host is told once, so a cursor never goes back */
  if (a->next_event_seq >= INT64_MAX) {
    if (!a->seq_exhausted) {
      a->seq_exhausted = 1;
      host_log(a, "error", "luagent: event seq reached its limit; later events are not recorded");
    }
    return;
  }
  int64_t seq = a->next_event_seq++;
  int64_t ts = lg_wall_ms();
  char iso[32];
  lg_iso8601(ts, iso);
  buf_t b;
  buf_init(&b);
  buf_addf(&b, "{\"seq\":%lld,\"ts\":\"%s\",\"t\":%.6f,\"kind\":", (long long)seq, iso,
           lg_mono_s() - a->t0);
  buf_add_jstr(&b, e->kind, strlen(e->kind));
  add_str_field(&b, "run_id", e->run_id);
  add_str_field(&b, "task_id", e->task_id);
  if (t) {
    add_str_field(&b, "parent_task_id", t->parent_task_id);
    add_str_field(&b, "root_task_id", t->root_task_id);
    add_str_field(&b, "root_run_id", root_run_id(t));
  }
  add_str_field(&b, "agent_id", e->agent_id);
  buf_addf(&b, ",\"depth\":%d", e->depth);
  add_raw_field(&b, "payload", e->payload_json ? e->payload_json : "{}");
  buf_addc(&b, '}');
  char *json = buf_detach(&b);
  if (!json) return;
  /* streamed tokens would crowd out what a digest is for (bg_check, wait
   * progress): they stay in the event stream only */
  if (t && strcmp(e->kind, "token") != 0) ring_digest(t, seq, ts, e->kind, summary);
  lg_store_event(a->store, seq, e->task_id, json);
  if (a->ring_n == a->ring_cap) {
    free(a->ring[a->ring_head].json);
    a->ring[a->ring_head].seq = seq;
    a->ring[a->ring_head].json = json;
    a->ring_head = (a->ring_head + 1) % a->ring_cap;
  } else {
    lg_event *ev = &a->ring[(a->ring_head + a->ring_n) % a->ring_cap];
    ev->seq = seq;
    ev->json = json;
    a->ring_n++;
  }
  bump(a);
}

void task_event(lg_app *a, lg_task *t, const char *kind, const char *payload,
                const char *summary) {
  lg_event_in e = {kind, t->run_id, t->id, t->agent_id, payload, t->depth};
  emit_locked(a, &e, t, summary);
}

void lg_emit(lg_app *a, const lg_event_in *e, const char *summary) {
  pthread_mutex_lock(&a->mu);
  lg_task *t = e->task_id ? task_find(a, e->task_id) : NULL;
  if (t && t->retired) {
    /* code of a task the watchdog finished, running on regardless */
    pthread_mutex_unlock(&a->mu);
    return;
  }
  emit_locked(a, e, t, summary);
  if (t) lg_stall_touch(t); /* the run said something: it is alive */
  if (strcmp(e->kind, "error") == 0 && (a->wants & W_ERROR)) {
    lg_host_item *it = calloc(1, sizeof *it);
    if (it) {
      it->type = HI_CALLBACK;
      snprintf(it->kind, sizeof it->kind, "error");
      it->json = strdup(e->payload_json ? e->payload_json : "{}");
      if (e->task_id) snprintf(it->task_id, sizeof it->task_id, "%s", e->task_id);
      if (it->json)
        hq_push(a, it);
      else
        free(it);
    }
  }
  pthread_mutex_unlock(&a->mu);
}

/* Events with seq > since from the ring. With a file store, what the ring
 * no longer holds is read back from the file (after flushing), so a cursor
 * never sees a gap; with memory only an old cursor gets {"kind":"gap"}. */
int lg_events(lg_app *a, int64_t since, int limit, buf_t *out) {
  int n = 0;
  buf_addc(out, '[');
  /* a negative cursor means "from the start, without a gap marker"; none
   * is past INT64_MAX - 1 (see emit_locked), so since + 1 cannot overflow */
  int gap_ok = since >= 0;
  if (since < 0) since = -1;
  if (since >= INT64_MAX - 1) {
    buf_addc(out, ']');
    return 0;
  }
  pthread_mutex_lock(&a->mu);
  lg_store *st = a->store;
  /* What the ring no longer holds comes from the file. The ring may move on
   * while the file is read, so read until the ring starts at or before the
   * next wanted seq (each round reads only what the ring dropped meanwhile). */
  for (;;) {
    int64_t oldest = a->ring_n > 0 ? a->ring[a->ring_head].seq : a->next_event_seq;
    if (!st || since + 1 >= oldest || n >= limit) break;
    uint64_t ticket = lg_store_ticket(st);
    pthread_mutex_unlock(&a->mu);
    lg_store_sync(st, ticket, NULL, 0);
    buf_t part;
    buf_init(&part);
    int k = lg_store_read_events(st, since, oldest, limit - n, &part);
    if (k > 0) {
      if (n) buf_addc(out, ',');
      buf_add(out, part.p, part.len);
      n += k;
    }
    buf_free(&part);
    pthread_mutex_lock(&a->mu);
    if (k == 0) break; /* nothing in the file (a closed store): the ring says gap */
    if (n >= limit) break;
    since = oldest - 1; /* the file held everything before `oldest` */
  }
  if (a->ring_n > 0 && n < limit) {
    int64_t oldest = a->ring[a->ring_head].seq;
    int64_t from = since + 1;
    if (from < oldest && gap_ok) {
      if (n) buf_addc(out, ',');
      buf_addf(out, "{\"kind\":\"gap\",\"seq\":%lld,\"payload\":{\"missed\":%lld,\"next_seq\":%lld}}",
               (long long)from, (long long)(oldest - from), (long long)oldest);
      n++;
    }
    if (from < oldest) from = oldest;
    for (int64_t s = from; s < a->next_event_seq && n < limit; s++) {
      const lg_event *ev = &a->ring[(a->ring_head + (s - oldest)) % a->ring_cap];
      if (n) buf_addc(out, ',');
      buf_adds(out, ev->json);
      n++;
    }
  }
  buf_addc(out, ']');
  pthread_mutex_unlock(&a->mu);
  return n;
}

/* --------------------------------------------------------------- digests */

void digest_json(buf_t *b, const lg_digest *d) {
  char iso[32];
  lg_iso8601(d->ts, iso);
  buf_addf(b, "{\"seq\":%lld,\"kind\":", (long long)d->seq);
  buf_add_jstr(b, d->kind, strlen(d->kind));
  buf_addf(b, ",\"ts\":\"%s\",\"summary\":", iso);
  buf_add_jstr(b, d->summary, strlen(d->summary));
  buf_addc(b, '}');
}

/* The last n event digests of a task, oldest first (bg_check). */
int lg_task_digests(lg_app *a, const char *id, int n, buf_t *out) {
  pthread_mutex_lock(&a->mu);
  lg_task *t = task_find(a, id);
  if (t) {
    if (n > t->ring_n) n = t->ring_n;
    if (n < 0) n = 0;
    buf_addc(out, '[');
    for (int i = t->ring_n - n; i < t->ring_n; i++) {
      if (i > t->ring_n - n) buf_addc(out, ',');
      digest_json(out, &t->ring[(t->ring_head + i) % LG_TASK_RING]);
    }
    buf_addc(out, ']');
  }
  pthread_mutex_unlock(&a->mu);
  return t ? 0 : -1;
}

/* --------------------------------------------------------------- host */

uint64_t lg_gen(lg_app *a) {
  pthread_mutex_lock(&a->mu);
  uint64_t g = a->gen;
  pthread_mutex_unlock(&a->mu);
  return g;
}

void lg_block(lg_app *a, uint64_t gen, double timeout_s) {
  pthread_mutex_lock(&a->mu);
  int64_t deadline = timeout_s >= 0 ? lg_mono_ms() + (int64_t)(timeout_s * 1000.0) : 0;
  if (timeout_s >= 0 && deadline <= lg_mono_ms()) deadline = lg_mono_ms() + 1;
  /* idle workers keep retry timers; a host waiting alone must run them too */
  while (a->gen == gen) {
    int64_t d = min_deadline(deadline, next_retry_mono(a));
    a->host_blocked++;
    cond_wait_until(&a->host_cv, &a->mu, d);
    a->host_blocked--;
    if (a->retry_head) schedule(a);
    if (deadline && lg_mono_ms() >= deadline) break;
  }
  pthread_mutex_unlock(&a->mu);
}

int lg_take_host_work(lg_app *a, int max, lg_host_item **out) {
  pthread_mutex_lock(&a->mu);
  /* Retry timers run on idle workers and in blocking host calls; a host
   * that only polls (a game loop) must run them too, since no worker may
   * be left (one that cannot boot its state exits). */
  if (a->retry_head) schedule(a);
  int n = 0;
  while (a->hq_head && n < max) {
    lg_host_item *it = a->hq_head;
    hq_unlink(a, it);
    if (it->type == HI_HOST_CALL && lg_task_should_stop(it->waiter->task)) {
      /* a call whose task was cancelled (or timed out) meanwhile is
       * dropped; its worker, woken by the stop, frees the item */
      continue;
    }
    if (it->type == HI_HOST_CALL) {
      /* the waiting worker keeps the original; the host gets a copy */
      lg_host_item *c = calloc(1, sizeof *c);
      if (!c) {
        it->next = a->hq_head;
        a->hq_head = it;
        if (!a->hq_tail) a->hq_tail = it;
        a->hq_n++;
        break;
      }
      *c = *it;
      c->name = lg_strdup(it->name);
      c->json = lg_strdup(it->json);
      c->ctx_json = lg_strdup(it->ctx_json);
      c->reply_json = NULL;
      c->next = NULL;
      it->replied = 0;
      out[n++] = c;
    } else {
      out[n++] = it;
    }
  }
  pthread_mutex_unlock(&a->mu);
  return n;
}

void lg_host_reply(lg_app *a, uint64_t id, const char *json) {
  pthread_mutex_lock(&a->mu);
  for (lg_worker *w = a->workers; w; w = w->next) {
    lg_task *t = w->task;
    lg_host_item *c = t ? t->host_call : NULL;
    if (c && c->id == id && !c->replied) {
      c->reply_json = lg_strdup(json);
      c->replied = 1;
      pthread_cond_signal(&w->cv);
      break;
    }
  }
  pthread_mutex_unlock(&a->mu);
}

void lg_set_wants(lg_app *a, unsigned wants) {
  pthread_mutex_lock(&a->mu);
  a->wants = wants;
  pthread_mutex_unlock(&a->mu);
}

void lg_set_host_multi(lg_app *a, void *multi) {
  pthread_mutex_lock(&a->mu);
  a->host_multi = multi;
  pthread_mutex_unlock(&a->mu);
}
