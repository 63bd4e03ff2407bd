/* The store (docs/architecture.md, "The store"). With no store the
 * dispatcher's own task table is the store and every call here is a no-op
 * on a NULL store. A store is one engine (store_engine.h: SQLite or
 * PostgreSQL) behind one writer thread that alone uses the engine's write
 * connection: callers (under the dispatcher mutex) only queue operations;
 * the writer commits them in order, in batches (group commit), and
 * lg_store_sync lets an enqueuer wait, without the dispatcher mutex, until
 * its record is durable. Reads (recovery, old events, threads) use
 * the engine's read connection on the caller's thread, under rmu. */
#include "store.h"
#include "internal.h"
#include "store_engine.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define FAIL_RING 16 /* failed batches remembered for lg_store_sync */
#define READ_MSGS 8  /* read failures waiting for the writer to report them */
#define MSG_LEN 300

typedef lg_store_op op;

struct lg_store {
  char *path; /* what messages name: the file, or the server without secrets */
  lg_store_engine eng;
  pthread_mutex_t mu, rmu;
  pthread_cond_t work_cv, done_cv;
  pthread_t writer;
  op *head, *tail;
  uint64_t queued, committed;
  int stop, closed, reads_closed;
  int held; /* lg_store_hold: the writer leaves the queue alone */
  double completed_s, failed_s; /* retention, 0 = keep */
  unsigned commits;
  void (*on_error)(void *ud, const char *message);
  void *on_error_ud;
  /* failures (under mu): the ticket ranges (lo, hi] of the last failed
   * batches, counts, the latest message, reads waiting to be reported */
  struct {
    uint64_t lo, hi;
    char msg[MSG_LEN];
  } fails[FAIL_RING];
  uint64_t nfails, evicted_hi, write_failures, read_failures;
  uint64_t batches; /* batches committed (each one transaction), under mu */
  char last_error[MSG_LEN];
  char read_msgs[READ_MSGS][MSG_LEN];
  int nread_msgs;
  /* task records whose write failed, sorted by task id; only the writer
   * changes the array (under mu), so it reads it without the lock */
  op **unsaved;
  size_t nunsaved, unsaved_cap;
  /* the tests' page limit (lg_store_limit_pages) */
  int64_t want_pages, pages;
  unsigned pages_req, pages_done;
  /* a shared-queue call waiting for the writer (one at a time, under mu) */
  struct lease_call *call;
  int calling; /* a caller owns the slot */
  uint64_t stale_writes;
  /* the shared queue's heartbeat (lease_s > 0): this process's leases
   * renewed, lapsed ones queued again, every lease_s / 3 */
  char node[64];
  double lease_s;
  int64_t next_beat_mono;
  /* wake-ups (lg_store_listen): one listener at a time under nmu; the
   * pipe ends a wait early (lg_store_kick) */
  pthread_mutex_t nmu;
  int kick[2];
  int listen_closed;
  atomic_int listen_stop; /* set before the kick that ends the last wait */
  atomic_ullong wakeups;
};

static void close_kick(lg_store *st);

/* One shared-queue call handed to the writer thread. */
typedef struct lease_call {
  const lg_store_lease_req *req;
  buf_t *out;
  char err[MSG_LEN];
  int rc, done;
} lease_call;

/* Drop what a failed read added to b. */
static void cut_back(buf_t *b, size_t len) {
  b->len = len;
  if (b->p) b->p[len] = '\0';
}

static void free_ops(op *o) {
  while (o) {
    op *nx = o->next;
    free(o->key);
    free(o->json);
    free(o);
    o = nx;
  }
}

/* ------------------------------------------------------------ failures */

/* A failed write, under mu: counted, kept as the latest error and, for a
 * batch, remembered by ticket range for lg_store_sync. */
static void note_write_failure(lg_store *st, uint64_t lo, uint64_t hi, const char *msg) {
  st->write_failures++;
  snprintf(st->last_error, sizeof st->last_error, "%s", msg);
  if (hi <= lo) return;
  unsigned i = (unsigned)(st->nfails++ % FAIL_RING);
  if (st->nfails > FAIL_RING) st->evicted_hi = st->fails[i].hi; /* forgotten from here down */
  st->fails[i].lo = lo;
  st->fails[i].hi = hi;
  snprintf(st->fails[i].msg, sizeof st->fails[i].msg, "%s", msg);
}

/* The message of the failed batch that held `ticket`, or NULL. A ticket in
 * the span of forgotten failures counts as failed (it may have been). */
static const char *failure_of(lg_store *st, uint64_t ticket) {
  uint64_t kept = st->nfails < FAIL_RING ? st->nfails : FAIL_RING;
  for (uint64_t k = 0; k < kept; k++) {
    unsigned i = (unsigned)((st->nfails - 1 - k) % FAIL_RING);
    if (ticket > st->fails[i].lo && ticket <= st->fails[i].hi) return st->fails[i].msg;
  }
  return ticket <= st->evicted_hi ? st->last_error : NULL;
}

/* Tell the app, on the writer thread with no store lock held. */
static void tell(lg_store *st, const char *msg) {
  if (st->on_error) st->on_error(st->on_error_ud, msg);
}

/* A read that did not end well, rmu held: counted, kept as the latest
 * error (and copied into err) and handed to the writer thread to report,
 * since the reader may hold a mutex that the report's receiver takes. */
static void read_failed(lg_store *st, const char *what, const char *why, char *err,
                        size_t errlen) {
  char msg[MSG_LEN];
  snprintf(msg, sizeof msg, "store %s: a read failed (%s): %.200s", st->path, what, why);
  if (err && errlen) snprintf(err, errlen, "%s", msg);
  pthread_mutex_lock(&st->mu);
  st->read_failures++;
  snprintf(st->last_error, sizeof st->last_error, "%s", msg);
  if (st->nread_msgs < READ_MSGS && !st->stop) {
    memcpy(st->read_msgs[st->nread_msgs++], msg, sizeof msg);
    pthread_cond_signal(&st->work_cv);
  }
  pthread_mutex_unlock(&st->mu);
}

/* ------------------------------------------------------ unsaved records */

/* Index of `key` in the sorted unsaved array, or where it would go. */
static size_t unsaved_find(const lg_store *st, const char *key, int *found) {
  size_t lo = 0, hi = st->nunsaved;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    int c = strcmp(st->unsaved[mid]->key, key);
    if (c == 0) {
      *found = 1;
      return mid;
    }
    if (c < 0) lo = mid + 1;
    else hi = mid;
  }
  *found = 0;
  return lo;
}

/* Under mu: a failed batch's task records become the unsaved ones (a later
 * record of a task replaces an earlier one). They are moved, not copied. */
static void keep_unsaved(lg_store *st, op *batch) {
  for (op *o = batch; o; o = o->next) {
    if (o->type != LG_OP_TASK) continue;
    int found;
    size_t i = unsaved_find(st, o->key, &found);
    if (!found && st->nunsaved == st->unsaved_cap) {
      size_t cap = st->unsaved_cap ? st->unsaved_cap * 2 : 16;
      op **v = realloc(st->unsaved, cap * sizeof *v);
      if (!v) continue; /* still reported as failed; only not retried */
      st->unsaved = v;
      st->unsaved_cap = cap;
    }
    op *keep = calloc(1, sizeof *keep);
    if (!keep) continue;
    *keep = *o;
    keep->next = NULL;
    o->key = o->json = NULL;
    o->type = LG_OP_SKIP;
    if (found) {
      free_ops(st->unsaved[i]);
    } else {
      memmove(st->unsaved + i + 1, st->unsaved + i, (st->nunsaved - i) * sizeof *st->unsaved);
      st->nunsaved++;
    }
    st->unsaved[i] = keep;
  }
}

/* Under mu: records a committed batch wrote supersede the unsaved ones. */
static void forget_unsaved(lg_store *st, const op *batch) {
  for (const op *o = batch; o && st->nunsaved; o = o->next) {
    if (o->type != LG_OP_TASK) continue;
    int found;
    size_t i = unsaved_find(st, o->key, &found);
    if (!found) continue;
    free_ops(st->unsaved[i]);
    memmove(st->unsaved + i, st->unsaved + i + 1, (st->nunsaved - i - 1) * sizeof *st->unsaved);
    st->nunsaved--;
  }
}

/* One transaction on the engine; the message names the store. */
static int write_ops(lg_store *st, const op *list, op *const *v, size_t n, char *err,
                     size_t errlen) {
  char e[MSG_LEN];
  int stale = 0;
  if (st->eng.ops->write(st->eng.e, list, v, n, &stale, e, sizeof e) == 0) {
    if (stale > 0) { /* committed; what a lost lease wrote late is not */
      char m[MSG_LEN];
      snprintf(m, sizeof m,
               "store %s: %d late write%s of tasks whose lease another process holds now rejected",
               st->path, stale, stale == 1 ? "" : "s");
      pthread_mutex_lock(&st->mu);
      st->stale_writes += (uint64_t)stale;
      snprintf(st->last_error, sizeof st->last_error, "%s", m);
      pthread_mutex_unlock(&st->mu);
      tell(st, m);
    }
    return 0;
  }
  /* cut to fit (the engine's message is the part that matters least) */
  int w = snprintf(err, errlen, "store %s: ", st->path);
  if (w >= 0 && (size_t)w < errlen) snprintf(err + w, errlen - (size_t)w, "%.*s", (int)(errlen - (size_t)w - 1), e);
  return -1;
}

/* Write the unsaved records again (writer thread, no lock held). */
static void retry_unsaved(lg_store *st) {
  char msg[MSG_LEN];
  int rc = write_ops(st, NULL, st->unsaved, st->nunsaved, msg, sizeof msg);
  pthread_mutex_lock(&st->mu);
  if (rc == 0) {
    for (size_t i = 0; i < st->nunsaved; i++) free_ops(st->unsaved[i]);
    st->nunsaved = 0;
  } else {
    note_write_failure(st, 0, 0, msg);
  }
  pthread_mutex_unlock(&st->mu);
  if (rc != 0) tell(st, msg);
}

/* Token events (payload {"text": ...}) of one run that follow each other in
 * a batch are stored as one event: the first one's seq with the texts
 * joined (§6: the file keeps all events, tokens coalesced). The JSON is the
 * dispatcher's own, so its shape is known: the payload is the last field. */
static const char TOKEN_KIND[] = "\"kind\":\"token\"";
static const char TOKEN_TEXT[] = "\"payload\":{\"text\":\"";

static const char *token_text(const op *o, size_t *len) {
  if (o->type != LG_OP_EVENT || !strstr(o->json, TOKEN_KIND)) return NULL;
  const char *p = strstr(o->json, TOKEN_TEXT);
  size_t n = strlen(o->json);
  if (!p || n < 3 || strcmp(o->json + n - 3, "\"}}") != 0) return NULL;
  p += sizeof TOKEN_TEXT - 1;
  const char *end = o->json + n - 3;
  for (const char *q = p; q < end; q++) { /* one string up to the end, or not ours */
    if (*q == '\\') q++;
    else if (*q == '"') return NULL;
  }
  *len = (size_t)(end - p);
  return p;
}

static int same_run(const op *a, const op *b) {
  const char *x = strstr(a->json, "\"run_id\":\""), *y = strstr(b->json, "\"run_id\":\"");
  if (!x || !y) return !x && !y;
  x += 10;
  y += 10;
  const char *xe = strchr(x, '"'), *ye = strchr(y, '"');
  return xe && ye && xe - x == ye - y && memcmp(x, y, (size_t)(xe - x)) == 0;
}

static void coalesce_tokens(op *batch) {
  op *first = NULL;
  for (op *o = batch; o; o = o->next) {
    size_t tl;
    const char *text = token_text(o, &tl);
    if (!text) {
      if (o->type != LG_OP_SKIP) first = NULL;
      continue;
    }
    if (first && same_run(first, o)) {
      size_t fl = strlen(first->json);
      char *merged = malloc(fl + tl + 1);
      if (!merged) {
        first = o;
        continue;
      }
      memcpy(merged, first->json, fl - 3);
      memcpy(merged + fl - 3, text, tl);
      memcpy(merged + fl - 3 + tl, "\"}}", 4);
      free(first->json);
      first->json = merged;
      o->type = LG_OP_SKIP;
    } else {
      first = o;
    }
  }
}

/* A task whose record changed more than once in one batch (queued, then
 * started, often both under one enqueue) needs only its last record in the
 * transaction: the row is replaced whole and nothing reads between the ops
 * of one commit. Every event stays. Earlier records of the same task and
 * fence become LG_OP_SKIP. O(n) through a table of the last op per id. */
static void coalesce_records(op *batch) {
  size_t n = 0;
  for (op *o = batch; o; o = o->next) n += o->type == LG_OP_TASK;
  if (n < 2) return;
  size_t cap = 16;
  while (cap < 2 * n) cap *= 2;
  op **last = calloc(cap, sizeof *last);
  if (!last) return; /* every record is written: only slower */
  for (op *o = batch; o; o = o->next) {
    if (o->type != LG_OP_TASK) continue;
    size_t i = lg_hash_str(o->key) & (cap - 1);
    while (last[i] && strcmp(last[i]->key, o->key) != 0) i = (i + 1) & (cap - 1);
    if (last[i] && last[i]->fence == o->fence) last[i]->type = LG_OP_SKIP;
    last[i] = o;
  }
  free(last);
}

/* Commit one batch (everything queued so far) in one transaction, in order;
 * then, if it went in, the records earlier failures left unsaved. Called
 * and returns with mu held. */
static void write_batch(lg_store *st) {
  op *batch = st->head;
  uint64_t from = st->committed, upto = st->queued;
  st->head = st->tail = NULL;
  pthread_mutex_unlock(&st->mu);
  coalesce_tokens(batch);
  coalesce_records(batch);
  char msg[MSG_LEN];
  int rc = write_ops(st, batch, NULL, 0, msg, sizeof msg);
  char pmsg[MSG_LEN] = "";
  if (rc == 0 && ++st->commits % 256 == 0 && (st->completed_s > 0 || st->failed_s > 0)) {
    char e[200];
    if (st->eng.ops->prune(st->eng.e, st->completed_s, st->failed_s, e, sizeof e) != 0)
      snprintf(pmsg, sizeof pmsg, "store %s: removing old tasks failed: %s", st->path, e);
  }
  pthread_mutex_lock(&st->mu);
  if (rc == 0) {
    st->batches++;
    forget_unsaved(st, batch);
  } else {
    keep_unsaved(st, batch);
    note_write_failure(st, from, upto, msg);
  }
  if (pmsg[0]) note_write_failure(st, 0, 0, pmsg);
  int retry = rc == 0 && st->nunsaved > 0;
  st->committed = upto;
  pthread_cond_broadcast(&st->done_cv);
  pthread_mutex_unlock(&st->mu);
  free_ops(batch);
  if (rc != 0) tell(st, msg);
  if (pmsg[0]) tell(st, pmsg);
  if (retry) retry_unsaved(st);
  pthread_mutex_lock(&st->mu);
}

/* Report what readers queued (mu held on entry and return). */
static void report_reads(lg_store *st) {
  char msgs[READ_MSGS][MSG_LEN];
  int n = st->nread_msgs;
  memcpy(msgs, st->read_msgs, (size_t)n * MSG_LEN);
  st->nread_msgs = 0;
  pthread_mutex_unlock(&st->mu);
  for (int i = 0; i < n; i++) tell(st, msgs[i]);
  pthread_mutex_lock(&st->mu);
}

/* The tests' page limit (mu held on entry and return). */
static void apply_pages(lg_store *st) {
  unsigned req = st->pages_req;
  int64_t want = st->want_pages;
  pthread_mutex_unlock(&st->mu);
  int64_t now = st->eng.ops->limit_pages ? st->eng.ops->limit_pages(st->eng.e, want) : 0;
  pthread_mutex_lock(&st->mu);
  st->pages = now;
  st->pages_done = req;
  pthread_cond_broadcast(&st->done_cv);
}

/* A shared-queue call, after what was queued before it is committed (mu
 * held on entry and return). */
static void run_call(lg_store *st) {
  lease_call *c = st->call;
  st->call = NULL;
  pthread_mutex_unlock(&st->mu);
  c->rc = st->eng.ops->lease(st->eng.e, c->req, c->out, c->err, sizeof c->err);
  pthread_mutex_lock(&st->mu);
  if (c->req->what == LG_LEASE_PUT && c->rc == 1) st->stale_writes++;
  c->done = 1;
  pthread_cond_broadcast(&st->done_cv);
}

static int beat_due(const lg_store *st) {
  return st->lease_s > 0 && lg_mono_ms() >= st->next_beat_mono;
}

/* Renew this process's leases and queue lapsed ones again (mu held on
 * entry and return); a failure is reported like a failed write. */
static void heartbeat(lg_store *st) {
  st->next_beat_mono = lg_mono_ms() + (int64_t)(st->lease_s * 1000.0 / 3.0);
  pthread_mutex_unlock(&st->mu);
  lg_store_lease_req q;
  memset(&q, 0, sizeof q);
  q.claim.node = st->node;
  q.claim.lease_s = st->lease_s;
  char e[MSG_LEN], m[MSG_LEN] = "";
  q.what = LG_LEASE_RENEW;
  int rc = st->eng.ops->lease(st->eng.e, &q, NULL, e, sizeof e);
  if (rc >= 0) {
    q.what = LG_LEASE_REQUEUE;
    rc = st->eng.ops->lease(st->eng.e, &q, NULL, e, sizeof e);
  }
  if (rc < 0) snprintf(m, sizeof m, "store %s: %.200s", st->path, e);
  pthread_mutex_lock(&st->mu);
  if (m[0]) {
    note_write_failure(st, 0, 0, m);
    pthread_mutex_unlock(&st->mu);
    tell(st, m);
    pthread_mutex_lock(&st->mu);
  }
}

/* The writer thread: commits batches, reports failures, and at the end
 * tries once more to write what is unsaved. */
static void *writer_main(void *arg) {
  lg_store *st = arg;
  pthread_setname_np(pthread_self(), "lg-store"); /* what top -H and perf show */
  pthread_mutex_lock(&st->mu);
  for (;;) {
    while (!(st->head && !st->held) && !st->stop && !st->nread_msgs &&
           st->pages_req == st->pages_done && !st->call && !beat_due(st)) {
      if (st->lease_s > 0) {
        struct timespec ts = {(time_t)(st->next_beat_mono / 1000),
                              (long)(st->next_beat_mono % 1000) * 1000000L};
        pthread_cond_timedwait(&st->work_cv, &st->mu, &ts); /* work_cv runs on CLOCK_MONOTONIC */
      } else {
        pthread_cond_wait(&st->work_cv, &st->mu);
      }
    }
    if (st->nread_msgs) report_reads(st);
    else if (beat_due(st) && !st->stop) heartbeat(st);
    else if (st->pages_req != st->pages_done) apply_pages(st);
    else if (st->head && (!st->held || st->stop)) write_batch(st);
    else if (st->call) run_call(st);
    else if (st->head) continue; /* held: its release wakes the writer */
    else break; /* stopped, and everything queued is written */
  }
  int retry = st->nunsaved > 0;
  pthread_mutex_unlock(&st->mu);
  if (retry) retry_unsaved(st);
  return NULL;
}

/* ------------------------------------------------------------- open */

/* What messages call the store: a file's path as given; a server's URL
 * or conninfo with any password left out. */
static char *display_name(const char *target, int postgres) {
  if (!postgres) return lg_strdup(target);
  buf_t b;
  lg_buf_init(&b);
  const char *scheme = strstr(target, "://");
  if (scheme) { /* postgresql://user:secret@host/db: drop ":secret" */
    const char *auth = scheme + 3, *at = strchr(auth, '@'), *slash = strchr(auth, '/');
    const char *colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
    if (at && (!slash || at < slash) && colon) {
      lg_buf_add(&b, target, (size_t)(colon - target));
      lg_buf_add(&b, at, strlen(at));
    } else {
      lg_buf_add(&b, target, strlen(target));
    }
    const char *q = strchr(b.p ? b.p : "", '?');
    if (q && strstr(q, "password=")) cut_back(&b, (size_t)(q - b.p));
  } else { /* key=value pairs: every one but password */
    const char *p = target;
    while (*p) {
      while (*p == ' ') p++;
      const char *e = p;
      int quoted = 0;
      while (*e && (quoted || *e != ' ')) {
        if (*e == '\\' && e[1]) e++;
        else if (*e == '\'') quoted = !quoted;
        e++;
      }
      if (e > p && strncmp(p, "password", 8) != 0) {
        if (b.len) lg_buf_addc(&b, ' ');
        lg_buf_add(&b, p, (size_t)(e - p));
      }
      p = e;
    }
  }
  char *name = lg_strdup(b.p ? b.p : "");
  lg_buf_free(&b);
  return name;
}

lg_store *lg_store_open(const char *target, const lg_store_opts *o, char *err, size_t errlen) {
  int postgres = o && o->postgres;
  lg_store *st = calloc(1, sizeof *st);
  if (!st || !(st->path = display_name(target, postgres))) {
    free(st);
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  st->completed_s = o ? o->completed_s : 0;
  st->failed_s = o ? o->failed_s : 0;
  st->on_error = o ? o->on_error : NULL;
  st->on_error_ud = o ? o->ud : NULL;
  if (postgres && o->shared && o->lease_s > 0) {
    st->lease_s = o->lease_s;
    snprintf(st->node, sizeof st->node, "%s", o->node ? o->node : "");
  }
  lg_mutex_init(&st->mu);
  pthread_mutex_init(&st->rmu, NULL);
  pthread_condattr_t at; /* the heartbeat's timed waits count monotonic time */
  pthread_condattr_init(&at);
  pthread_condattr_setclock(&at, CLOCK_MONOTONIC);
  pthread_cond_init(&st->work_cv, &at);
  pthread_condattr_destroy(&at);
  pthread_cond_init(&st->done_cv, NULL);
  pthread_mutex_init(&st->nmu, NULL);
  st->kick[0] = st->kick[1] = -1;
  if (postgres && o->shared && pipe2(st->kick, O_NONBLOCK | O_CLOEXEC) != 0)
    st->kick[0] = st->kick[1] = -1; /* no wake-ups: listeners poll instead */
  char e[600] = "";
  int rc = postgres ? lg_store_pg_open(target, o, &st->eng, e, sizeof e)
                    : lg_store_sqlite_open(target, o, &st->eng, e, sizeof e);
  if (rc == 0 && pthread_create(&st->writer, NULL, writer_main, st) != 0) {
    snprintf(e, sizeof e, "cannot start the store's writer thread");
    st->eng.ops->close_reads(st->eng.e);
    st->eng.ops->close(st->eng.e);
    rc = -1;
  }
  if (rc != 0) {
    snprintf(err, errlen, "store %s: %s", st->path, e);
    close_kick(st);
    pthread_mutex_destroy(&st->nmu);
    pthread_mutex_destroy(&st->mu);
    pthread_mutex_destroy(&st->rmu);
    pthread_cond_destroy(&st->work_cv);
    pthread_cond_destroy(&st->done_cv);
    free(st->path);
    free(st);
    return NULL;
  }
  return st;
}

/* ------------------------------------------------------------ wake-ups */

int lg_store_listen(lg_store *st, int timeout_ms) {
  if (!st) return -1;
  pthread_mutex_lock(&st->nmu);
  int k = -1;
  if (!st->listen_closed && !atomic_load(&st->listen_stop) && st->kick[0] >= 0 &&
      st->eng.ops->listen)
    k = st->eng.ops->listen(st->eng.e, st->kick[0], timeout_ms);
  pthread_mutex_unlock(&st->nmu);
  if (k > 0 && (k & (LG_WAKE_QUEUED | LG_WAKE_FINISHED))) atomic_fetch_add(&st->wakeups, 1);
  return k;
}

void lg_store_kick(lg_store *st) {
  if (!st || st->kick[1] < 0) return;
  ssize_t w = write(st->kick[1], "k", 1); /* full: a wake is pending anyway */
  (void)w;
}

static void close_kick(lg_store *st) {
  for (int i = 0; i < 2; i++)
    if (st->kick[i] >= 0) close(st->kick[i]);
  st->kick[0] = st->kick[1] = -1;
}

/* ------------------------------------------------------------ queueing */

static void push(lg_store *st, op *o) {
  pthread_mutex_lock(&st->mu);
  if (st->closed) {
    pthread_mutex_unlock(&st->mu);
    free_ops(o);
    return;
  }
  o->next = NULL;
  if (st->tail)
    st->tail->next = o;
  else
    st->head = o;
  st->tail = o;
  st->queued++;
  if (!st->held) pthread_cond_signal(&st->work_cv);
  pthread_mutex_unlock(&st->mu);
}

static op *new_op(int type, const char *key, const char *json, size_t len) {
  op *o = calloc(1, sizeof *o);
  if (!o) return NULL;
  o->type = type;
  o->key = key ? strdup(key) : NULL;
  o->json = lg_strndup(json, len);
  if ((key && !o->key) || !o->json) {
    free_ops(o);
    return NULL;
  }
  return o;
}

void lg_store_task(lg_store *st, const char *task_id, const char *agent, const char *status,
                   int finished, int64_t fence, int lent, const char *json, size_t len) {
  if (!st) return;
  op *o = new_op(LG_OP_TASK, NULL, json, len);
  if (!o) return;
  /* the agent id rides in the key's allocation, so moving an op moves both */
  size_t ni = strlen(task_id), na = agent ? strlen(agent) : 0;
  if (!(o->key = malloc(ni + na + 2))) {
    free_ops(o);
    return;
  }
  memcpy(o->key, task_id, ni + 1);
  memcpy(o->key + ni + 1, agent ? agent : "", na + 1);
  o->agent = o->key + ni + 1;
  o->status = status;
  o->finished = finished;
  o->fence = fence;
  o->lent = lent;
  o->seq = lg_wall_ms();
  push(st, o);
}

void lg_store_event(lg_store *st, int64_t seq, const char *task_id, const char *json) {
  if (!st) return;
  op *o = new_op(LG_OP_EVENT, task_id, json, strlen(json));
  if (!o) return;
  o->seq = seq;
  push(st, o);
}

void lg_store_thread(lg_store *st, const char *key, const char *json) {
  if (!st) return;
  op *o = new_op(LG_OP_THREAD, key, json, strlen(json));
  if (o) push(st, o);
}

uint64_t lg_store_ticket(lg_store *st) {
  if (!st) return 0;
  pthread_mutex_lock(&st->mu);
  uint64_t t = st->queued;
  pthread_mutex_unlock(&st->mu);
  return t;
}

void lg_store_hold(lg_store *st) {
  if (!st) return;
  pthread_mutex_lock(&st->mu);
  st->held++;
  pthread_mutex_unlock(&st->mu);
}

void lg_store_release(lg_store *st) {
  if (!st) return;
  pthread_mutex_lock(&st->mu);
  if (--st->held == 0 && st->head) pthread_cond_signal(&st->work_cv);
  pthread_mutex_unlock(&st->mu);
}

int lg_store_sync(lg_store *st, uint64_t ticket, char *err, size_t errlen) {
  if (!st) return 0;
  pthread_mutex_lock(&st->mu);
  while (st->committed < ticket && !st->closed) pthread_cond_wait(&st->done_cv, &st->mu);
  int rc = 0;
  const char *failed = failure_of(st, ticket);
  if (failed) {
    rc = -1;
    if (err) snprintf(err, errlen, "%s", failed);
  } else if (st->committed < ticket) {
    rc = -1; /* closed first: what was queued after the close is not stored */
    if (err) snprintf(err, errlen, "store %s: the store is closed", st->path);
  }
  pthread_mutex_unlock(&st->mu);
  return rc;
}

int64_t lg_store_limit_pages(lg_store *st, int64_t pages) {
  if (!st) return 0;
  lg_store_sync(st, lg_store_ticket(st), NULL, 0);
  pthread_mutex_lock(&st->mu);
  unsigned req = ++st->pages_req;
  st->want_pages = pages;
  pthread_cond_signal(&st->work_cv);
  while (st->pages_done != req && !st->closed) pthread_cond_wait(&st->done_cv, &st->mu);
  int64_t now = st->pages;
  pthread_mutex_unlock(&st->mu);
  return now;
}

/* ------------------------------------------------------- shared queue */

/* Hand one call to the writer and wait for it (no app lock held). */
static int lease_call_run(lg_store *st, const lg_store_lease_req *r, buf_t *out, char *err,
                          size_t errlen) {
  if (!st || !st->eng.ops->lease) {
    snprintf(err, errlen, "store %s: a shared queue needs a PostgreSQL store", st ? st->path : "");
    return -1;
  }
  lease_call c;
  memset(&c, 0, sizeof c);
  c.req = r;
  c.out = out;
  pthread_mutex_lock(&st->mu);
  while (st->calling && !st->closed && !st->stop) pthread_cond_wait(&st->done_cv, &st->mu);
  if (st->closed || st->stop) {
    pthread_mutex_unlock(&st->mu);
    snprintf(err, errlen, "store %s: the store is closed", st->path);
    return -1;
  }
  st->calling = 1;
  st->call = &c;
  pthread_cond_signal(&st->work_cv);
  while (!c.done) pthread_cond_wait(&st->done_cv, &st->mu);
  st->calling = 0;
  pthread_cond_broadcast(&st->done_cv);
  pthread_mutex_unlock(&st->mu);
  if (c.rc < 0) snprintf(err, errlen, "store %s: %s", st->path, c.err);
  return c.rc;
}

int lg_store_claim(lg_store *st, const lg_store_claim_req *r, buf_t *out, char *err,
                   size_t errlen) {
  lg_store_lease_req q;
  memset(&q, 0, sizeof q);
  q.what = LG_LEASE_CLAIM;
  q.claim = *r;
  return lease_call_run(st, &q, out, err, errlen);
}

int lg_store_renew(lg_store *st, const char *node, double lease_s, char *err, size_t errlen) {
  lg_store_lease_req q;
  memset(&q, 0, sizeof q);
  q.what = LG_LEASE_RENEW;
  q.claim.node = node;
  q.claim.lease_s = lease_s;
  return lease_call_run(st, &q, NULL, err, errlen);
}

int lg_store_requeue_expired(lg_store *st, buf_t *out, char *err, size_t errlen) {
  lg_store_lease_req q;
  memset(&q, 0, sizeof q);
  q.what = LG_LEASE_REQUEUE;
  return lease_call_run(st, &q, out, err, errlen);
}

int lg_store_task_fenced(lg_store *st, const char *task_id, const char *node, int64_t token,
                         const char *status, int finished, const char *json, char *err,
                         size_t errlen) {
  lg_store_lease_req q;
  memset(&q, 0, sizeof q);
  q.what = LG_LEASE_PUT;
  q.claim.node = node;
  q.task_id = task_id;
  q.token = token;
  q.status = status;
  q.finished = finished;
  q.json = json;
  return lease_call_run(st, &q, NULL, err, errlen);
}

int lg_store_cancel(lg_store *st, const char *task_id, const char *cancelled_json, char *err,
                    size_t errlen) {
  lg_store_lease_req q;
  memset(&q, 0, sizeof q);
  q.what = LG_LEASE_CANCEL;
  q.task_id = task_id;
  q.json = cancelled_json;
  return lease_call_run(st, &q, NULL, err, errlen);
}

/* Flush, stop the writer, close both connections and release the lock. */
void lg_store_close(lg_store *st) {
  if (!st) return;
  pthread_mutex_lock(&st->mu);
  int already = st->stop;
  st->stop = 1;
  pthread_cond_signal(&st->work_cv);
  pthread_mutex_unlock(&st->mu);
  if (already) return;
  /* a listener leaves its wait, and none starts again */
  atomic_store(&st->listen_stop, 1);
  lg_store_kick(st);
  pthread_mutex_lock(&st->nmu);
  st->listen_closed = 1;
  pthread_mutex_unlock(&st->nmu);
  pthread_join(st->writer, NULL);
  pthread_mutex_lock(&st->mu);
  st->closed = 1;
  pthread_cond_broadcast(&st->done_cv);
  pthread_mutex_unlock(&st->mu);
  pthread_mutex_lock(&st->rmu);
  st->eng.ops->close_reads(st->eng.e);
  st->reads_closed = 1;
  pthread_mutex_unlock(&st->rmu);
  st->eng.ops->close(st->eng.e);
  st->eng.e = NULL;
}

void lg_store_free(lg_store *st) {
  if (!st) return;
  lg_store_close(st);
  pthread_mutex_destroy(&st->mu);
  pthread_mutex_destroy(&st->rmu);
  pthread_cond_destroy(&st->work_cv);
  pthread_cond_destroy(&st->done_cv);
  pthread_mutex_destroy(&st->nmu);
  close_kick(st);
  for (size_t i = 0; i < st->nunsaved; i++) free_ops(st->unsaved[i]);
  free(st->unsaved);
  free(st->path);
  free(st);
}

/* ------------------------------------------------------------- reads */

void lg_store_info(lg_store *st, lg_store_info_t *out, buf_t *unsaved) {
  memset(out, 0, sizeof *out);
  if (!st) return;
  out->path = st->path;
  out->engine = st->eng.ops->name;
  if (st->eng.e) st->eng.ops->info(st->eng.e, out);
  pthread_mutex_lock(&st->mu);
  snprintf(out->error, sizeof out->error, "%s", st->last_error);
  out->write_failures = st->write_failures;
  out->read_failures = st->read_failures;
  out->stale_writes = st->stale_writes;
  out->commits = st->batches;
  out->wakeups = atomic_load(&st->wakeups);
  if (unsaved) {
    lg_buf_addc(unsaved, '[');
    for (size_t i = 0; i < st->nunsaved; i++) {
      if (i) lg_buf_addc(unsaved, ',');
      lg_buf_add_jstr(unsaved, st->unsaved[i]->key, strlen(st->unsaved[i]->key));
    }
    lg_buf_addc(unsaved, ']');
  }
  pthread_mutex_unlock(&st->mu);
}

/* One read on the engine's read connection (rmu taken here): the number of
 * rows handed to fn, 0 when the store is closed, or -1 (reported). */
static int engine_read(lg_store *st, const lg_store_read *r, const char *what, lg_store_row_fn fn,
                       void *ud, char *err, size_t errlen) {
  pthread_mutex_lock(&st->rmu);
  int n = 0;
  if (!st->reads_closed) {
    char why[MSG_LEN] = "";
    n = st->eng.ops->read(st->eng.e, r, fn, ud, why, sizeof why);
    if (n < 0) read_failed(st, what, why, err, errlen);
  }
  pthread_mutex_unlock(&st->rmu);
  return n;
}

static int scan_tasks(lg_store *st, lg_store_row_fn fn, void *ud, char *err, size_t errlen) {
  lg_store_read r = {LG_READ_TASKS, NULL, 0, 0, 0};
  return engine_read(st, &r, "task records", fn, ud, err, errlen);
}

int lg_store_read_tasks(lg_store *st, lg_store_row_fn fn, void *ud) {
  return st ? scan_tasks(st, fn, ud, NULL, 0) : 0;
}

/* Rows joined with commas into b. */
typedef struct {
  buf_t *b;
  int n;
} list_ud;

static void add_listed(void *ud, const char *json, size_t len) {
  list_ud *l = ud;
  if (l->n++) lg_buf_addc(l->b, ',');
  lg_buf_add(l->b, json, len);
}

int lg_store_read_records(lg_store *st, buf_t *out, char *err, size_t errlen) {
  size_t start = out->len;
  list_ud l = {out, 0};
  lg_buf_addc(out, '[');
  if (st && scan_tasks(st, add_listed, &l, err, errlen) < 0) {
    cut_back(out, start);
    return -1;
  }
  lg_buf_addc(out, ']');
  if (out->oom) {
    snprintf(err, errlen, "store %s: out of memory reading the records", st ? st->path : "");
    return -1;
  }
  return 0;
}

static void keep_int(void *ud, const char *text, size_t len) {
  LG_UNUSED(len);
  *(int64_t *)ud = strtoll(text, NULL, 10);
}

int64_t lg_store_max_event_seq(lg_store *st) {
  if (!st) return 0;
  int64_t seq = st->eng.max_seq, found = 0;
  lg_store_read r = {LG_READ_MAX_SEQ, NULL, 0, 0, 0};
  if (engine_read(st, &r, "the last event", keep_int, &found, NULL, 0) >= 0 && found > seq)
    seq = found;
  return seq;
}

int lg_store_read_cluster_events(lg_store *st, int64_t since, int limit, buf_t *out, char *err,
                                 size_t errlen) {
  if (!st) return 0;
  lg_store_sync(st, lg_store_ticket(st), NULL, 0); /* this process's own first */
  size_t start = out->len;
  list_ud l = {out, 0};
  lg_buf_addc(out, '[');
  lg_store_read r = {LG_READ_CLUSTER_EVENTS, NULL, since, 0, limit};
  int n = engine_read(st, &r, "the cluster's events", add_listed, &l, err, errlen);
  if (n < 0 || out->oom) {
    cut_back(out, start);
    return -1;
  }
  lg_buf_addc(out, ']');
  return n;
}

int lg_store_read_finished(lg_store *st, char *const *ids, int n, lg_store_row_fn fn, void *ud) {
  if (!st || n <= 0) return 0;
  buf_t arr; /* a text[] literal: every element quoted, " and \ escaped */
  lg_buf_init(&arr);
  lg_buf_addc(&arr, '{');
  for (int i = 0; i < n; i++) {
    if (i) lg_buf_addc(&arr, ',');
    lg_buf_addc(&arr, '"');
    for (const char *c = ids[i]; *c; c++) {
      if (*c == '"' || *c == '\\') lg_buf_addc(&arr, '\\');
      lg_buf_addc(&arr, *c);
    }
    lg_buf_addc(&arr, '"');
  }
  lg_buf_adds(&arr, "}");
  int rc = -1;
  if (!arr.oom) {
    lg_store_read r = {LG_READ_FINISHED, arr.p, 0, 0, 0};
    rc = engine_read(st, &r, "the tasks other processes finished", fn, ud, NULL, 0);
  }
  lg_buf_free(&arr);
  return rc;
}

int lg_store_read_cancels(lg_store *st, lg_store_row_fn fn, void *ud) {
  if (!st) return 0;
  lg_store_read r = {LG_READ_CANCELS, NULL, 0, 0, 0};
  return engine_read(st, &r, "the cancels other processes asked for", fn, ud, NULL, 0);
}

int64_t lg_store_count_open(lg_store *st) {
  if (!st) return 0;
  int64_t n = 0;
  lg_store_read r = {LG_READ_OPEN, NULL, 0, 0, 0};
  return engine_read(st, &r, "the open tasks", keep_int, &n, NULL, 0) < 0 ? -1 : n;
}

int lg_store_read_events(lg_store *st, int64_t since, int64_t before, int limit, buf_t *out) {
  if (!st) return 0;
  size_t start = out->len;
  list_ud l = {out, 0};
  lg_store_read r = {LG_READ_EVENTS, NULL, since, before, limit};
  int n = engine_read(st, &r, "old events", add_listed, &l, NULL, 0);
  if (n <= 0 || out->oom) { /* nothing half-read: the caller sees a gap */
    cut_back(out, start);
    return 0;
  }
  return n;
}

/* One text column of one row found by key: 0 found, -1 none, -2 failed. */
static int read_one(lg_store *st, int what_kind, const char *what, const char *key, buf_t *out) {
  if (!st) return -1;
  size_t start = out->len;
  list_ud l = {out, 0};
  lg_store_read r = {what_kind, key, 0, 0, 0};
  int n = engine_read(st, &r, what, add_listed, &l, NULL, 0);
  if (n <= 0) cut_back(out, start);
  return n > 0 ? 0 : n < 0 ? -2 : -1;
}

int lg_store_read_thread(lg_store *st, const char *key, buf_t *out) {
  return read_one(st, LG_READ_THREAD, "a conversation", key, out);
}

int lg_store_read_task(lg_store *st, const char *task_id, buf_t *out) {
  return read_one(st, LG_READ_TASK, "a task record", task_id, out);
}
