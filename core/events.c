/* What leaves the dispatcher for observers: the event ring (README) with each
 * task's ring of event digests, and the queue of work for the host thread
 * host tool calls, lifecycle callbacks and log lines, with the
 * generation counter a blocked host waits on. Everything is appended under
 * app->mu and drained by module.c on the host thread. Apart from
 * dispatcher.c because none of it decides what runs. */
#include "dispatch_internal.h"
#include "http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* -------------------------------------------------------- host and wakeups */

/* The host's path has its own locks (docs/architecture.md, "Locks"): the
 * host work queue, the generation counter and the host's condition variable
 * are guarded by app->hq_mu, the event ring by app->ev_mu. Both are taken
 * for a few pointer moves only and may be taken with app->mu held, never
 * the other way round, so poll, take, reply, events and stats never wait
 * for the scheduler while it works. */

static void bump_locked(lg_app *a) {
  a->gen++;
  if (a->host_blocked) pthread_cond_broadcast(&a->host_cv);
  if (a->host_multi) lg_http_wakeup(a->host_multi);
}

/* Something the host may be waiting for changed. */
void lg_bump(lg_app *a) {
  pthread_mutex_lock(&a->hq_mu);
  bump_locked(a);
  pthread_mutex_unlock(&a->hq_mu);
}

static void hq_push_locked(lg_app *a, lg_host_item *it) {
  it->id = ++a->next_item_id;
  it->next = NULL;
  it->where = HQ_QUEUED;
  if (a->hq_tail)
    a->hq_tail->next = it;
  else
    a->hq_head = it;
  a->hq_tail = it;
  a->hq_n++;
  if (it->type != HI_LOG) a->hq_work++;
  bump_locked(a);
}

void lg_hq_push(lg_app *a, lg_host_item *it) {
  pthread_mutex_lock(&a->hq_mu);
  hq_push_locked(a, it);
  pthread_mutex_unlock(&a->hq_mu);
}

static void hq_unlink_locked(lg_app *a, lg_host_item *it) {
  lg_host_item **head = it->where == HQ_INFLIGHT ? &a->inflight : &a->hq_head;
  lg_host_item **pp = head, *prev = NULL;
  for (; *pp; prev = *pp, pp = &(*pp)->next) {
    if (*pp == it) {
      *pp = it->next;
      if (it->where == HQ_QUEUED) {
        if (a->hq_tail == it) a->hq_tail = prev;
        a->hq_n--;
        if (it->type != HI_LOG) a->hq_work--;
      }
      break;
    }
  }
  it->next = NULL;
  it->where = HQ_NONE;
}

void lg_hq_unlink(lg_app *a, lg_host_item *it) {
  pthread_mutex_lock(&a->hq_mu);
  hq_unlink_locked(a, it);
  pthread_mutex_unlock(&a->hq_mu);
}

/* A worker waits for the host's reply to its call (HQ lock only). Returns 1
 * when the task must stop first. Stop requests wake it (lg_worker_wake). */
int lg_hq_await_reply(lg_app *a, lg_worker *w, lg_host_item *it, lg_task *t) {
  pthread_mutex_lock(&a->hq_mu);
  int stop = 0;
  while (!it->replied && !(stop = lg_task_should_stop(t)))
    lg_cond_wait_until(&w->hcv, &a->hq_mu, t->deadline_mono);
  hq_unlink_locked(a, it); /* still queued if the host never took it: drop it */
  pthread_mutex_unlock(&a->hq_mu);
  return stop;
}

void lg_host_item_read(const lg_host_item *it, lg_host_work *out) {
  out->type = it->type;
  out->id = it->id;
  out->kind = it->kind;
  out->name = it->name;
  out->json = it->json;
  out->ctx_json = it->ctx_json;
  out->task_id = it->task_id;
}

void lg_host_item_free(lg_host_item *it) {
  if (!it) return;
  free(it->name);
  free(it->json);
  free(it->ctx_json);
  free(it->reply_json);
  free(it);
}

void lg_queue_callback(lg_app *a, unsigned want, const char *kind, const lg_task *t) {
  if (!(a->wants & want)) return;
  lg_host_item *it = calloc(1, sizeof *it);
  if (!it) return;
  buf_t b;
  lg_buf_init(&b);
  lg_record_json(t, &b);
  it->type = HI_CALLBACK;
  snprintf(it->kind, sizeof it->kind, "%s", kind);
  snprintf(it->task_id, sizeof it->task_id, "%s", t->id);
  it->json = lg_buf_detach(&b);
  if (!it->json) {
    free(it);
    return;
  }
  lg_hq_push(a, it);
}

#define LOG_QUEUE_MAX 1000

/* Wake a host blocked in lg_block or an HTTP poll (a signal's watcher). */
void lg_wake(lg_app *a) { lg_bump(a); }

void lg_log(lg_app *a, const char *level, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  lg_host_item *it = calloc(1, sizeof *it);
  if (!it) return;
  it->type = HI_LOG;
  snprintf(it->kind, sizeof it->kind, "%s", level);
  it->json = strdup(msg);
  pthread_mutex_lock(&a->hq_mu);
  /* a host that never pumps must not grow us forever */
  if (it->json && a->hq_n - a->hq_work < LOG_QUEUE_MAX) {
    hq_push_locked(a, it);
    it = NULL;
  }
  pthread_mutex_unlock(&a->hq_mu);
  lg_host_item_free(it);
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
  int64_t ts = lg_wall_ms();
  pthread_mutex_lock(&a->ev_mu);
  /* seq is 64-bit and never wraps: the last one handed out is
   * INT64_MAX - 1 (centuries of events at any real rate); after it events
   * are dropped and the host is told once, so a cursor never goes back */
  if (a->next_event_seq >= INT64_MAX) {
    int first = !a->seq_exhausted;
    a->seq_exhausted = 1;
    pthread_mutex_unlock(&a->ev_mu);
    if (first) lg_log(a, "error", "luagent: event seq reached its limit; later events are not recorded");
    return;
  }
  int64_t seq = a->next_event_seq++;
  char iso[32];
  lg_iso8601(ts, iso);
  buf_t b;
  lg_buf_init(&b);
  lg_buf_addf(&b, "{\"seq\":%lld,\"ts\":\"%s\",\"t\":%.6f,\"kind\":", (long long)seq, iso,
              lg_mono_s() - a->t0);
  lg_buf_add_jstr(&b, e->kind, strlen(e->kind));
  lg_add_str_field(&b, "run_id", e->run_id);
  lg_add_str_field(&b, "task_id", e->task_id);
  if (t) {
    lg_add_str_field(&b, "parent_task_id", t->parent_task_id);
    lg_add_str_field(&b, "root_task_id", t->root_task_id);
    lg_add_str_field(&b, "root_run_id", lg_root_run_id(t));
  }
  lg_add_str_field(&b, "agent_id", e->agent_id);
  lg_buf_addf(&b, ",\"depth\":%d", e->depth);
  lg_add_raw_field(&b, "payload", e->payload_json ? e->payload_json : "{}");
  lg_buf_addc(&b, '}');
  char *json = lg_buf_detach(&b);
  if (!json) {
    pthread_mutex_unlock(&a->ev_mu);
    return;
  }
  /* queued for the file in seq order (the store has its own lock) */
  if (a->log_file) a->log_file->write(a->log_file_ud, seq, e->task_id, json);
  /* streamed tokens would crowd out what a digest is for (bg_check, wait
   * progress): they stay in the event stream only */
  if (t && strcmp(e->kind, "token") != 0) ring_digest(t, seq, ts, e->kind, summary);
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
  pthread_mutex_unlock(&a->ev_mu);
  lg_bump(a);
}

void lg_task_event(lg_app *a, lg_task *t, const char *kind, const char *payload,
                const char *summary) {
  lg_event_in e = {kind, t->run_id, t->id, t->agent_id, payload, t->depth};
  emit_locked(a, &e, t, summary);
}

void lg_emit(lg_app *a, const lg_event_in *e, const char *summary) {
  pthread_mutex_lock(&a->mu);
  lg_task *t = e->task_id ? lg_task_find(a, e->task_id) : NULL;
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
        lg_hq_push(a, it);
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
  lg_buf_addc(out, '[');
  /* a negative cursor means "from the start, without a gap marker"; none
   * is past INT64_MAX - 1 (see emit_locked), so since + 1 cannot overflow */
  int gap_ok = since >= 0;
  if (since < 0) since = -1;
  if (since >= INT64_MAX - 1) {
    lg_buf_addc(out, ']');
    return 0;
  }
  pthread_mutex_lock(&a->ev_mu);
  const lg_log_file *file = a->log_file;
  /* What the ring no longer holds comes from the file. The ring may move on
   * while the file is read, so read until the ring starts at or before the
   * next wanted seq (each round reads only what the ring dropped meanwhile). */
  for (;;) {
    int64_t oldest = a->ring_n > 0 ? a->ring[a->ring_head].seq : a->next_event_seq;
    if (!file || since + 1 >= oldest || n >= limit) break;
    uint64_t ticket = file->ticket(a->log_file_ud);
    pthread_mutex_unlock(&a->ev_mu);
    buf_t part;
    lg_buf_init(&part);
    int k = file->read(a->log_file_ud, ticket, since, oldest, limit - n, &part);
    if (k > 0) {
      if (n) lg_buf_addc(out, ',');
      lg_buf_add(out, part.p, part.len);
      n += k;
    }
    lg_buf_free(&part);
    pthread_mutex_lock(&a->ev_mu);
    if (k == 0) break; /* nothing in the file (a closed store): the ring says gap */
    if (n >= limit) break;
    since = oldest - 1; /* the file held everything before `oldest` */
  }
  if (a->ring_n > 0 && n < limit) {
    int64_t oldest = a->ring[a->ring_head].seq;
    int64_t from = since + 1;
    if (from < oldest && gap_ok) {
      if (n) lg_buf_addc(out, ',');
      lg_buf_addf(out, "{\"kind\":\"gap\",\"seq\":%lld,\"payload\":{\"missed\":%lld,\"next_seq\":%lld}}",
               (long long)from, (long long)(oldest - from), (long long)oldest);
      n++;
    }
    if (from < oldest) from = oldest;
    for (int64_t s = from; s < a->next_event_seq && n < limit; s++) {
      const lg_event *ev = &a->ring[(a->ring_head + (s - oldest)) % a->ring_cap];
      if (n) lg_buf_addc(out, ',');
      lg_buf_adds(out, ev->json);
      n++;
    }
  }
  lg_buf_addc(out, ']');
  pthread_mutex_unlock(&a->ev_mu);
  return n;
}

/* --------------------------------------------------------------- digests */

void lg_digest_json(buf_t *b, const lg_digest *d) {
  char iso[32];
  lg_iso8601(d->ts, iso);
  lg_buf_addf(b, "{\"seq\":%lld,\"kind\":", (long long)d->seq);
  lg_buf_add_jstr(b, d->kind, strlen(d->kind));
  lg_buf_addf(b, ",\"ts\":\"%s\",\"summary\":", iso);
  lg_buf_add_jstr(b, d->summary, strlen(d->summary));
  lg_buf_addc(b, '}');
}

/* The last n event digests of a task, oldest first (bg_check). */
int lg_task_digests(lg_app *a, const char *id, int n, buf_t *out) {
  pthread_mutex_lock(&a->mu);
  lg_task *t = lg_task_find(a, id);
  if (t) {
    if (n > t->ring_n) n = t->ring_n;
    if (n < 0) n = 0;
    lg_buf_addc(out, '[');
    for (int i = t->ring_n - n; i < t->ring_n; i++) {
      if (i > t->ring_n - n) lg_buf_addc(out, ',');
      lg_digest_json(out, &t->ring[(t->ring_head + i) % LG_TASK_RING]);
    }
    lg_buf_addc(out, ']');
  }
  pthread_mutex_unlock(&a->mu);
  return t ? 0 : -1;
}

/* --------------------------------------------------------------- host */

uint64_t lg_gen(lg_app *a) {
  pthread_mutex_lock(&a->hq_mu);
  uint64_t g = a->gen;
  pthread_mutex_unlock(&a->hq_mu);
  return g;
}

/* Retry timers run on idle workers; a host that waits or polls alone must
 * run them too, since no worker may be left (one that cannot boot its
 * state exits). The scheduler publishes when the next one is due, so the
 * host takes the scheduler's lock only when one is. */
static void run_due_retries(lg_app *a) {
  int64_t due = atomic_load(&a->retry_due);
  if (!due || lg_mono_ms() < due) return;
  pthread_mutex_lock(&a->mu);
  lg_schedule(a);
  pthread_mutex_unlock(&a->mu);
}

void lg_block(lg_app *a, uint64_t gen, double timeout_s) {
  int64_t deadline = timeout_s >= 0 ? lg_mono_ms() + (int64_t)(timeout_s * 1000.0) : 0;
  if (timeout_s >= 0 && deadline <= lg_mono_ms()) deadline = lg_mono_ms() + 1;
  pthread_mutex_lock(&a->hq_mu);
  while (a->gen == gen) {
    int64_t d = lg_min_deadline(deadline, atomic_load(&a->retry_due));
    a->host_blocked++;
    lg_cond_wait_until(&a->host_cv, &a->hq_mu, d);
    a->host_blocked--;
    pthread_mutex_unlock(&a->hq_mu);
    run_due_retries(a);
    pthread_mutex_lock(&a->hq_mu);
    if (deadline && lg_mono_ms() >= deadline) break;
  }
  pthread_mutex_unlock(&a->hq_mu);
}

int lg_take_host_work(lg_app *a, int max, lg_host_item **out) {
  run_due_retries(a);
  pthread_mutex_lock(&a->hq_mu);
  int n = 0;
  while (a->hq_head && n < max) {
    lg_host_item *it = a->hq_head;
    if (it->type == HI_HOST_CALL && lg_task_should_stop(it->task)) {
      /* a call whose task was cancelled (or timed out) meanwhile is
       * dropped; its worker, woken by the stop, frees the item */
      hq_unlink_locked(a, it);
      continue;
    }
    if (it->type == HI_HOST_CALL) {
      /* the waiting worker keeps the original; the host gets a copy */
      lg_host_item *c = calloc(1, sizeof *c);
      if (!c) break;
      hq_unlink_locked(a, it);
      it->next = a->inflight; /* where lg_host_reply finds it */
      a->inflight = it;
      it->where = HQ_INFLIGHT;
      *c = *it;
      c->name = lg_strdup(it->name);
      c->json = lg_strdup(it->json);
      c->ctx_json = lg_strdup(it->ctx_json);
      c->reply_json = NULL;
      c->next = NULL;
      c->where = HQ_NONE;
      it->replied = 0;
      out[n++] = c;
    } else {
      hq_unlink_locked(a, it);
      out[n++] = it;
    }
  }
  pthread_mutex_unlock(&a->hq_mu);
  return n;
}

void lg_host_reply(lg_app *a, uint64_t id, const char *json) {
  char *copy = lg_strdup(json);
  pthread_mutex_lock(&a->hq_mu);
  for (lg_host_item *it = a->inflight; it; it = it->next) {
    if (it->id == id && !it->replied) {
      it->reply_json = copy;
      copy = NULL;
      it->replied = 1;
      pthread_cond_signal(&it->waiter->hcv);
      break;
    }
  }
  pthread_mutex_unlock(&a->hq_mu);
  free(copy);
}

/* Host work that is not a log line (stats' idle). */
int lg_host_work_pending(lg_app *a) {
  pthread_mutex_lock(&a->hq_mu);
  int n = a->hq_work;
  pthread_mutex_unlock(&a->hq_mu);
  return n;
}

void lg_set_wants(lg_app *a, unsigned wants) {
  pthread_mutex_lock(&a->mu);
  a->wants = wants;
  pthread_mutex_unlock(&a->mu);
}

void lg_set_host_multi(lg_app *a, void *multi) {
  pthread_mutex_lock(&a->hq_mu);
  a->host_multi = multi;
  pthread_mutex_unlock(&a->hq_mu);
}

void *lg_host_multi(lg_app *a) {
  pthread_mutex_lock(&a->hq_mu);
  void *m = a->host_multi;
  pthread_mutex_unlock(&a->hq_mu);
  return m;
}
