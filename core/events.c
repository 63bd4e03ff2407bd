/* What leaves the dispatcher for observers: the event ring (README) with each
 * task's ring of event digests, and the queue of work for the host thread
 * host tool calls, lifecycle callbacks and log lines, with the
 * generation counter a blocked host waits on. The scheduler appends to it
 * (its entries that take an app are in app_log.c) and the bindings drain
 * it on the host thread. Apart from dispatcher.c because none of it decides
 * what runs: it works on the lg_eventlog it is handed and knows no
 * scheduler (events.h). */
#include "events.h"
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

/* The host's HTTP poll is woken from another thread; the host's own news
 * (its foreground run's events and tokens) needs no wake: the run pumps,
 * and so tells its watchers, before it polls again. */
static int from_host_thread(const lg_eventlog *l) {
  return l->host_multi && pthread_equal(l->host_thread, pthread_self());
}

static void wake_locked(lg_eventlog *l, int news) {
  if (news ? l->host_blocked_news : l->host_blocked) {
    pthread_cond_broadcast(&l->host_cv);
    l->host_wakes++;
    l->last_wake_ms = lg_mono_ms();
    l->wake_due = 0;
  }
  if (l->host_multi && (!news || (l->host_poll_news && !from_host_thread(l))))
    lg_http_wakeup(l->host_multi);
}

static void bump_locked(lg_eventlog *l) {
  l->gen++;
  wake_locked(l, 0);
}

/* Something the host may be waiting for changed. */
void lg_ev_bump(lg_eventlog *l) {
  pthread_mutex_lock(&l->hq_mu);
  bump_locked(l);
  pthread_mutex_unlock(&l->hq_mu);
}

void lg_ev_bump_news(lg_eventlog *l) {
  pthread_mutex_lock(&l->hq_mu);
  l->gen++;
  wake_locked(l, 1);
  pthread_mutex_unlock(&l->hq_mu);
}

/* A streamed token changes the generation at once, so a host that looks
 * sees it, but a blocked host is woken for tokens at most once per
 * LG_TOKEN_WAKE_MS: a reply streaming hundreds of tokens a second would
 * otherwise wake it for each. A deferred wake is due LG_TOKEN_WAKE_MS after
 * the last one; the host's timed wait (lg_block) delivers it, so no token
 * waits longer than that. */
void lg_ev_bump_token(lg_eventlog *l) {
  int64_t now = lg_mono_ms();
  pthread_mutex_lock(&l->hq_mu);
  l->gen++;
  if (!l->host_blocked_news || now - l->last_wake_ms >= LG_TOKEN_WAKE_MS) {
    wake_locked(l, 1);
  } else {
    if (!l->wake_due) l->wake_due = l->last_wake_ms + LG_TOKEN_WAKE_MS;
    if (l->host_multi && l->host_poll_news && !from_host_thread(l)) lg_http_wakeup(l->host_multi);
  }
  pthread_mutex_unlock(&l->hq_mu);
}

void lg_ev_set_poll_news(lg_eventlog *l, int on) {
  pthread_mutex_lock(&l->hq_mu);
  l->host_poll_news = on;
  pthread_mutex_unlock(&l->hq_mu);
}

static void hq_push_locked(lg_eventlog *l, lg_host_item *it) {
  it->id = ++l->next_item_id;
  it->next = NULL;
  it->where = HQ_QUEUED;
  if (l->hq_tail)
    l->hq_tail->next = it;
  else
    l->hq_head = it;
  l->hq_tail = it;
  l->hq_n++;
  if (it->type != HI_LOG) l->hq_work++;
  bump_locked(l);
}

void lg_ev_push(lg_eventlog *l, lg_host_item *it) {
  pthread_mutex_lock(&l->hq_mu);
  hq_push_locked(l, it);
  pthread_mutex_unlock(&l->hq_mu);
}

void lg_ev_unlink_locked(lg_eventlog *l, lg_host_item *it) {
  lg_host_item **head = it->where == HQ_INFLIGHT ? &l->inflight : &l->hq_head;
  lg_host_item **pp = head, *prev = NULL;
  for (; *pp; prev = *pp, pp = &(*pp)->next) {
    if (*pp == it) {
      *pp = it->next;
      if (it->where == HQ_QUEUED) {
        if (l->hq_tail == it) l->hq_tail = prev;
        l->hq_n--;
        if (it->type != HI_LOG) l->hq_work--;
      }
      break;
    }
  }
  it->next = NULL;
  it->where = HQ_NONE;
}

void lg_ev_unlink(lg_eventlog *l, lg_host_item *it) {
  pthread_mutex_lock(&l->hq_mu);
  lg_ev_unlink_locked(l, it);
  pthread_mutex_unlock(&l->hq_mu);
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

void lg_ev_callback(lg_eventlog *l, unsigned want, const char *kind, const lg_task *t) {
  if (!(l->wants & want)) return;
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
  lg_ev_push(l, it);
}

#define LOG_QUEUE_MAX 1000

void lg_ev_line(lg_eventlog *l, const char *level, const char *msg) {
  lg_host_item *it = calloc(1, sizeof *it);
  if (!it) return;
  it->type = HI_LOG;
  snprintf(it->kind, sizeof it->kind, "%s", level);
  it->json = strdup(msg);
  pthread_mutex_lock(&l->hq_mu);
  /* a host that never pumps must not grow us forever */
  if (it->json && l->hq_n - l->hq_work < LOG_QUEUE_MAX) {
    hq_push_locked(l, it);
    it = NULL;
  }
  pthread_mutex_unlock(&l->hq_mu);
  lg_host_item_free(it);
}

/* ---------------------------------------------------------------- events */

static void ring_digest(lg_task *t, int64_t seq, int64_t ts, const char *kind, const char *summary) {
  if (t->ring_n == t->ring_cap && t->ring_cap < LG_TASK_RING) {
    int cap = t->ring_cap ? t->ring_cap * 2 : 4;
    if (cap > LG_TASK_RING) cap = LG_TASK_RING;
    lg_digest *r = realloc(t->ring, (size_t)cap * sizeof *r);
    if (!r) return; /* out of memory: this digest is left out, the event is not */
    t->ring = r;
    t->ring_cap = cap;
  }
  lg_digest *d = &t->ring[(t->ring_head + t->ring_n) % LG_TASK_RING];
  if (t->ring_n == LG_TASK_RING)
    t->ring_head = (t->ring_head + 1) % LG_TASK_RING;
  else
    t->ring_n++;
  d->seq = seq;
  d->ts = ts;
  lg_copy_str(d->kind, sizeof d->kind, kind);
  lg_copy_str(d->summary, sizeof d->summary, summary);
}

/* Append one event. fields: task may be NULL (then ids come from e). */
void lg_ev_emit(lg_eventlog *l, const lg_event_in *e, lg_task *t, const char *summary) {
  int64_t ts = lg_wall_ms();
  pthread_mutex_lock(&l->ev_mu);
  /* seq is 64-bit and never wraps: the last one handed out is
   * INT64_MAX - 1 (centuries of events at any real rate); after it events
   * are dropped and the host is told once, so a cursor never goes back */
  if (l->next_event_seq >= INT64_MAX) {
    int first = !l->seq_exhausted;
    l->seq_exhausted = 1;
    pthread_mutex_unlock(&l->ev_mu);
    if (first) lg_ev_line(l, "error", "luagent: event seq reached its limit; later events are not recorded");
    return;
  }
  int64_t seq = l->next_event_seq++;
  char iso[32];
  lg_iso8601(ts, iso);
  buf_t b;
  lg_buf_init(&b);
  /* one allocation for most events (the ids and a short payload) */
  lg_buf_reserve(&b, 320 + (e->payload_json ? strlen(e->payload_json) : 2));
  lg_buf_adds(&b, "{\"seq\":");
  lg_buf_add_int(&b, (long long)seq);
  lg_buf_adds(&b, ",\"ts\":\"");
  lg_buf_adds(&b, iso);
  lg_buf_adds(&b, "\",\"t\":");
  lg_buf_add_fixed6(&b, lg_mono_s() - l->t0);
  lg_buf_adds(&b, ",\"kind\":");
  lg_buf_add_jstr(&b, e->kind, strlen(e->kind));
  lg_add_str_field(&b, "run_id", e->run_id);
  lg_add_str_field(&b, "task_id", e->task_id);
  if (t) {
    lg_add_str_field(&b, "parent_task_id", t->parent_task_id);
    lg_add_str_field(&b, "root_task_id", t->root_task_id);
    lg_add_str_field(&b, "root_run_id", lg_root_run_id(t));
  }
  lg_add_str_field(&b, "agent_id", e->agent_id);
  lg_buf_adds(&b, ",\"depth\":");
  lg_buf_add_int(&b, e->depth);
  lg_add_raw_field(&b, "payload", e->payload_json ? e->payload_json : "{}");
  lg_buf_addc(&b, '}');
  char *json = lg_buf_detach(&b);
  if (!json) {
    pthread_mutex_unlock(&l->ev_mu);
    return;
  }
  /* queued for the file in seq order (the store has its own lock) */
  if (l->log_file) l->log_file->write(l->log_file_ud, seq, e->task_id, json);
  /* streamed tokens would crowd out what a digest is for (bg_check, wait
   * progress): they stay in the event stream only */
  if (t && strcmp(e->kind, "token") != 0) ring_digest(t, seq, ts, e->kind, summary);
  if (l->ring_n == l->ring_cap) {
    free(l->ring[l->ring_head].json);
    l->ring[l->ring_head].seq = seq;
    l->ring[l->ring_head].json = json;
    l->ring_head = (l->ring_head + 1) % l->ring_cap;
  } else {
    lg_event *ev = &l->ring[(l->ring_head + l->ring_n) % l->ring_cap];
    ev->seq = seq;
    ev->json = json;
    l->ring_n++;
  }
  pthread_mutex_unlock(&l->ev_mu);
  if (strcmp(e->kind, "token") == 0)
    lg_ev_bump_token(l);
  else
    lg_ev_bump_news(l);
}

void lg_ev_task_event(lg_eventlog *l, lg_task *t, const char *kind, const char *payload,
                const char *summary) {
  lg_event_in e = {kind, t->run_id, t->id, t->agent_id, payload, t->depth};
  lg_ev_emit(l, &e, t, summary);
}

void lg_ev_error_callback(lg_eventlog *l, const lg_event_in *e) {
  if (strcmp(e->kind, "error") != 0 || !(l->wants & W_ERROR)) return;
  lg_host_item *it = calloc(1, sizeof *it);
  if (it) {
    it->type = HI_CALLBACK;
    snprintf(it->kind, sizeof it->kind, "error");
    it->json = strdup(e->payload_json ? e->payload_json : "{}");
    if (e->task_id) snprintf(it->task_id, sizeof it->task_id, "%s", e->task_id);
    if (it->json)
      lg_ev_push(l, it);
    else
      free(it);
  }
}

/* Events with seq > since from the ring. With a file store, what the ring
 * no longer holds is read back from the file (after flushing), so a cursor
 * never sees a gap; with memory only an old cursor gets {"kind":"gap"}. */
int lg_ev_read(lg_eventlog *l, int64_t since, int limit, buf_t *out) {
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
  pthread_mutex_lock(&l->ev_mu);
  const lg_log_file *file = l->log_file;
  /* What the ring no longer holds comes from the file. The ring may move on
   * while the file is read, so read until the ring starts at or before the
   * next wanted seq (each round reads only what the ring dropped meanwhile). */
  for (;;) {
    int64_t oldest = l->ring_n > 0 ? l->ring[l->ring_head].seq : l->next_event_seq;
    if (!file || since + 1 >= oldest || n >= limit) break;
    uint64_t ticket = file->ticket(l->log_file_ud);
    pthread_mutex_unlock(&l->ev_mu);
    buf_t part;
    lg_buf_init(&part);
    int k = file->read(l->log_file_ud, ticket, since, oldest, limit - n, &part);
    if (k > 0) {
      if (n) lg_buf_addc(out, ',');
      lg_buf_add(out, part.p, part.len);
      n += k;
    }
    lg_buf_free(&part);
    pthread_mutex_lock(&l->ev_mu);
    if (k == 0) break; /* nothing in the file (a closed store): the ring says gap */
    if (n >= limit) break;
    since = oldest - 1; /* the file held everything before `oldest` */
  }
  if (l->ring_n > 0 && n < limit) {
    int64_t oldest = l->ring[l->ring_head].seq;
    int64_t from = since + 1;
    if (from < oldest && gap_ok) {
      if (n) lg_buf_addc(out, ',');
      lg_buf_addf(out, "{\"kind\":\"gap\",\"seq\":%lld,\"payload\":{\"missed\":%lld,\"next_seq\":%lld}}",
               (long long)from, (long long)(oldest - from), (long long)oldest);
      n++;
    }
    if (from < oldest) from = oldest;
    for (int64_t s = from; s < l->next_event_seq && n < limit; s++) {
      const lg_event *ev = &l->ring[(l->ring_head + (s - oldest)) % l->ring_cap];
      if (n) lg_buf_addc(out, ',');
      lg_buf_adds(out, ev->json);
      n++;
    }
  }
  lg_buf_addc(out, ']');
  pthread_mutex_unlock(&l->ev_mu);
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

/* --------------------------------------------------------------- host */

uint64_t lg_ev_host_wakes(lg_eventlog *l) {
  pthread_mutex_lock(&l->hq_mu);
  uint64_t n = l->host_wakes;
  pthread_mutex_unlock(&l->hq_mu);
  return n;
}

uint64_t lg_ev_gen(lg_eventlog *l) {
  pthread_mutex_lock(&l->hq_mu);
  uint64_t g = l->gen;
  pthread_mutex_unlock(&l->hq_mu);
  return g;
}

static int take_locked(lg_eventlog *l, int max, lg_host_item **out);

int lg_ev_take(lg_eventlog *l, int max, lg_host_item **out) {
  pthread_mutex_lock(&l->hq_mu);
  int n = take_locked(l, max, out);
  pthread_mutex_unlock(&l->hq_mu);
  return n;
}

/* The same without waiting for the lock: a worker holding it may have lost
 * its core, and a frame must not wait for it to get one back. A few tries
 * (a holder that runs lets go within them); -1 when it stayed busy. */
int lg_ev_take_try(lg_eventlog *l, int max, lg_host_item **out) {
  for (int i = 0; pthread_mutex_trylock(&l->hq_mu) != 0; i++)
    if (i == 64) return -1;
  int n = take_locked(l, max, out);
  pthread_mutex_unlock(&l->hq_mu);
  return n;
}

static int take_locked(lg_eventlog *l, int max, lg_host_item **out) {
  int n = 0;
  while (l->hq_head && n < max) {
    lg_host_item *it = l->hq_head;
    if (it->type == HI_HOST_CALL && lg_task_should_stop(it->task)) {
      /* a call whose task was cancelled (or timed out) meanwhile is
       * dropped; its worker, woken by the stop, frees the item */
      lg_ev_unlink_locked(l, it);
      continue;
    }
    if (it->type == HI_HOST_CALL) {
      /* the waiting worker keeps the original; the host gets a copy */
      lg_host_item *c = calloc(1, sizeof *c);
      if (!c) break;
      lg_ev_unlink_locked(l, it);
      it->next = l->inflight; /* where lg_host_reply finds it */
      l->inflight = it;
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
      lg_ev_unlink_locked(l, it);
      out[n++] = it;
    }
  }
  return n;
}

static void reply_locked(lg_eventlog *l, uint64_t id, char *copy);

void lg_ev_reply(lg_eventlog *l, uint64_t id, const char *json) {
  char *copy = lg_strdup(json);
  pthread_mutex_lock(&l->hq_mu);
  reply_locked(l, id, copy);
}

/* The same without waiting for a busy lock (a few tries, as lg_ev_take_try);
 * -1 when it stayed busy: nothing was delivered. */
int lg_ev_reply_try(lg_eventlog *l, uint64_t id, const char *json) {
  char *copy = lg_strdup(json);
  for (int i = 0; pthread_mutex_trylock(&l->hq_mu) != 0; i++) {
    if (i == 64) {
      free(copy);
      return -1;
    }
  }
  reply_locked(l, id, copy);
  return 0;
}

/* Delivers the reply (hq_mu held; released here). */
static void reply_locked(lg_eventlog *l, uint64_t id, char *copy) {
  for (lg_host_item *it = l->inflight; it; it = it->next) {
    if (it->id == id && !it->replied) {
      it->reply_json = copy;
      copy = NULL;
      it->replied = 1;
      pthread_cond_signal(it->waiter);
      break;
    }
  }
  pthread_mutex_unlock(&l->hq_mu);
  free(copy);
}

/* Host work that is not a log line (stats' idle). */
int lg_ev_pending(lg_eventlog *l) {
  pthread_mutex_lock(&l->hq_mu);
  int n = l->hq_work;
  pthread_mutex_unlock(&l->hq_mu);
  return n;
}

/* Called by the host thread (the one that polls it). */
void lg_ev_set_host_multi(lg_eventlog *l, void *multi) {
  pthread_mutex_lock(&l->hq_mu);
  l->host_multi = multi;
  if (multi) l->host_thread = pthread_self();
  pthread_mutex_unlock(&l->hq_mu);
}

void *lg_ev_host_multi(lg_eventlog *l) {
  pthread_mutex_lock(&l->hq_mu);
  void *m = l->host_multi;
  pthread_mutex_unlock(&l->hq_mu);
  return m;
}
