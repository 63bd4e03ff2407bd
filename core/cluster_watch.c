/* Tasks of a shared store that other processes run (docs/architecture.md,
 * "Leases and fencing"). A task enqueued here but claimed elsewhere stays
 * in this process's memory in phase PH_REMOTE. While something here depends
 * on its end (a wait: bg_wait, ctx:wait, app:wait; or a parent running
 * here, whose notices and tree usage count it), this thread reads the
 * finished ones among them from the store every POLL_MS and settles each:
 * the task in memory takes its record's outcome and ends for those who wait
 * here as a local one does, without a second task_finished event or record
 * write (its holder wrote both).
 *
 * It also listens for the store's wake-ups (LISTEN/NOTIFY, store.h) while
 * something is watched or app:serve runs: a task queued or finished in
 * another process bumps the host, so an idle serve claims at once and a
 * finish elsewhere is read at once. They are hints only: while wake-ups
 * arrive, the finished ones are still read every LISTEN_MS (and serve
 * looks for work as often); without them, every POLL_MS. It sleeps while
 * nothing is watched and nothing serves, and leaves when the app closes;
 * detached, like the watchdog. Under app->mu, except while it reads the
 * store or listens. */
#include "dispatch_internal.h"
#include "jtext.h"
#include "store.h"

#include <stdlib.h>
#include <string.h>

#define POLL_MS 20        /* how soon a finish elsewhere is seen here, without wake-ups */
#define LISTEN_MS 500     /* the same with them: only a safety net */
#define BACKOFF_MS 1000   /* the longest pause after reads that failed */

/* Whether anything in this process waits for t to end. */
static int watched(const lg_task *t) {
  if (t->phase != PH_REMOTE || TS_TERMINAL(t->status)) return 0;
  if (t->nwaits > 0) return 1;
  const lg_task *p = t->parent;
  return p && p->phase != PH_REMOTE && !TS_TERMINAL(p->status);
}

/* The ids of the watched tasks (copies); how many, -1 out of memory. */
static int collect(lg_app *a, char ***out) {
  int n = 0, cap = 0;
  char **v = NULL;
  for (size_t i = 0; i < a->tasks.tab_cap; i++)
    for (lg_task *t = a->tasks.tab[i]; t; t = t->hnext) {
      if (!watched(t)) continue;
      if (n == cap) {
        cap = cap ? cap * 2 : 8;
        char **nv = realloc(v, (size_t)cap * sizeof *nv);
        if (!nv) goto oom;
        v = nv;
      }
      if (!(v[n] = lg_strdup(t->id))) goto oom;
      n++;
    }
  *out = v;
  return n;
oom:
  while (n > 0) free(v[--n]);
  free(v);
  return -1;
}

typedef struct {
  char **recs;
  size_t *lens;
  int n, cap;
} rec_list;

static void keep_record(void *ud, const char *json, size_t len) {
  rec_list *l = ud;
  if (l->n == l->cap) {
    int cap = l->cap ? l->cap * 2 : 8;
    char **r = realloc(l->recs, (size_t)cap * sizeof *r);
    if (r) l->recs = r;
    size_t *s = r ? realloc(l->lens, (size_t)cap * sizeof *s) : NULL;
    if (s) l->lens = s;
    if (!r || !s) return; /* read again next time */
    l->cap = cap;
  }
  char *c = malloc(len + 1);
  if (!c) return;
  memcpy(c, json, len);
  c[len] = 0;
  l->recs[l->n] = c;
  l->lens[l->n++] = len;
}

/* A string field of the record, decoded (NULL when absent or not a string). */
static char *str_field(lg_jspan obj, const char *key) {
  lg_jspan v = lg_jspan_field(obj, key);
  if (!v.p || !lg_jspan_is_str(v)) return NULL;
  buf_t b;
  lg_buf_init(&b);
  if (lg_jspan_str(v, &b) != 0 || b.oom) {
    lg_buf_free(&b);
    return NULL;
  }
  lg_buf_addc(&b, 0);
  return b.p ? b.p : lg_strdup("");
}

static long long int_field(lg_jspan obj, const char *key, long long dflt) {
  lg_jspan v = lg_jspan_field(obj, key);
  if (!v.p) return dflt;
  char tmp[32];
  size_t n = v.n < sizeof tmp - 1 ? v.n : sizeof tmp - 1;
  memcpy(tmp, v.p, n);
  tmp[n] = 0;
  char *end;
  double d = strtod(tmp, &end);
  return end == tmp ? dflt : (long long)d;
}

static char *raw_field(lg_jspan obj, const char *key) {
  lg_jspan v = lg_jspan_field(obj, key);
  if (!v.p || (v.n == 4 && memcmp(v.p, "null", 4) == 0)) return NULL;
  char *c = malloc(v.n + 1);
  if (c) {
    memcpy(c, v.p, v.n);
    c[v.n] = 0;
  }
  return c;
}

static void usage_field(lg_jspan obj, const char *key, lg_usage *u) {
  memset(u, 0, sizeof *u);
  lg_jspan v = lg_jspan_field(obj, key);
  if (!v.p || *v.p != '{') return;
  u->set = 1;
  u->prompt = int_field(v, "prompt_tokens", 0);
  u->completion = int_field(v, "completion_tokens", 0);
  u->total = int_field(v, "total_tokens", u->prompt + u->completion);
  u->cached = int_field(v, "cached_tokens", 0);
  lg_jspan cost = lg_jspan_field(v, "cost");
  if (cost.p) {
    char tmp[64];
    size_t n = cost.n < sizeof tmp - 1 ? cost.n : sizeof tmp - 1;
    memcpy(tmp, cost.p, n);
    tmp[n] = 0;
    u->cost = strtod(tmp, NULL);
    u->has_cost = 1;
  }
  u->estimated = lg_jspan_is_true(lg_jspan_field(v, "estimated"));
}

static int64_t time_field(lg_jspan obj, const char *key) {
  char *s = str_field(obj, key);
  int64_t ms = lg_parse_iso8601(s);
  free(s);
  return ms;
}

static void replace(char **slot, char *v) {
  free(*slot);
  *slot = v;
}

/* A finished record of a task another process ran: its outcome becomes the
 * in-memory task's, and those who wait here are told. */
static void settle(lg_app *a, const char *rec, size_t n) {
  lg_jspan obj = {rec, n};
  char *id = str_field(obj, "task_id");
  lg_task *t = id ? lg_task_find(a, id) : NULL;
  free(id);
  if (!t || t->phase != PH_REMOTE || TS_TERMINAL(t->status)) return; /* claimed here meanwhile */
  char *status = str_field(obj, "status");
  int st = status ? lg_status_from_name(status) : -1;
  free(status);
  if (st < 0 || !TS_TERMINAL(st)) return;
  replace(&t->result_json, raw_field(obj, "result"));
  replace(&t->usage_json, raw_field(obj, "usage"));
  char *run_status = str_field(obj, "run_status");
  snprintf(t->run_status, sizeof t->run_status, "%s", run_status ? run_status : "");
  free(run_status);
  lg_jspan err = lg_jspan_field(obj, "error");
  replace(&t->error_kind, err.p && *err.p == '{' ? str_field(err, "kind") : NULL);
  replace(&t->error_message, err.p && *err.p == '{' ? str_field(err, "message") : NULL);
  t->error_status = err.p && *err.p == '{' ? (int)int_field(err, "status", 0) : 0;
  t->attempts = (int)int_field(obj, "attempts", t->attempts);
  t->cancel_requested = lg_jspan_is_true(lg_jspan_field(obj, "cancel_requested"));
  t->started_at = time_field(obj, "started_at");
  t->finished_at = time_field(obj, "finished_at");
  usage_field(obj, "usage", &t->usage);
  usage_field(obj, "tree_usage", &t->tree_usage);
  /* its tree's usage counts in its ancestors here (it ran where they are not) */
  if (t->tree_usage.set) lg_usage_roll_up(a, t->parent, &t->tree_usage);
  t->status = st;
  t->phase = PH_DONE;
  t->restored = 1; /* it ages for keep_finished from when it ended */
  a->up.on_task_end(a, t);
  a->nfinished++;
  lg_evict_sync(a, t);
  lg_bump(a);
}

/* Wait for a wake-up, a poke or `pause` ms; mu held on entry and return. */
static void await(lg_app *a, lg_store *store, int pause) {
  int k = -1;
  if (!a->closing) {
    pthread_mutex_unlock(&a->mu);
    k = lg_store_listen(store, atomic_load(&a->listening) ? LISTEN_MS : pause);
    pthread_mutex_lock(&a->mu);
  }
  atomic_store(&a->listening, k >= 0);
  if (k < 0 && !a->closing) { /* none can come: a plain timed wait */
    lg_cond_wait_until(&a->cluster_cv, &a->mu, lg_mono_ms() + pause);
  } else if (k > 0 && (k & (LG_WAKE_QUEUED | LG_WAKE_FINISHED))) {
    lg_bump(a); /* a serve looks for work; a wait looks again */
  }
}

/* ---------------------------------------------------------- cancels */

/* Cancels asked here of tasks another process may hold (lg_stop_task marks
 * them): each goes to the store, which cancels one still queued at once or
 * asks its holder. The record written then is the task's own, cancelled. */
static void send_cancels(lg_app *a, lg_store *store) {
  for (;;) {
    lg_task *t = NULL;
    for (size_t i = 0; !t && i < a->tasks.tab_cap; i++)
      for (lg_task *x = a->tasks.tab[i]; x && !t; x = x->hnext)
        if (x->remote_cancel == 1 && x->phase == PH_REMOTE && !TS_TERMINAL(x->status)) t = x;
    if (!t) return;
    t->remote_cancel = 2;
    /* its record as cancelled now (set for the copy, then put back) */
    char *kind = t->error_kind, *msg = t->error_message;
    int st = t->status, asked = t->cancel_requested;
    int64_t fin = t->finished_at;
    t->error_kind = "cancelled";
    t->error_message = "cancelled before it started";
    t->status = TS_CANCELLED;
    t->cancel_requested = 1;
    t->finished_at = lg_wall_ms();
    buf_t rec;
    lg_buf_init(&rec);
    lg_record_json_x(t, &rec, 1);
    t->error_kind = kind;
    t->error_message = msg;
    t->status = st;
    t->cancel_requested = asked;
    t->finished_at = fin;
    char id[sizeof t->id];
    snprintf(id, sizeof id, "%s", t->id);
    t->waited++; /* kept in memory while the lock is let go */
    a->cancels_sending++; /* close waits for it: the store must still be open */
    pthread_mutex_unlock(&a->mu);
    char err[320];
    int rc = rec.oom ? -1 : lg_store_cancel(store, id, rec.p, err, sizeof err);
    lg_buf_free(&rec);
    pthread_mutex_lock(&a->mu);
    a->cancels_sending--;
    pthread_cond_broadcast(&a->cluster_cv);
    t->waited--;
    if (rc < 0) lg_log(a, "error", "luagent: cancel of task %s: %s", id, rec.oom ? "out of memory" : err);
    if (rc == 1 && t->phase == PH_REMOTE && !TS_TERMINAL(t->status)) {
      /* it never started anywhere: it ends here, as a local queued one does */
      t->cancel_requested = 1;
      lg_set_error(t, "cancelled", "cancelled before it started");
      lg_finish_task(a, t, TS_CANCELLED);
    }
    lg_evict_sync(a, t);
  }
}

void lg_cluster_flush_cancels(lg_app *a) {
  if (!a->shared || !a->store) return;
  /* one the watcher is sending completes first (the store closes after) */
  while (a->cancels_sending > 0) lg_cond_wait_until(&a->cluster_cv, &a->mu, 0);
  send_cancels(a, a->store);
}

/* A task of the shared queue that is not in memory here (another process
 * enqueued it) and has not finished, as a stand-in to wait on: what a wait
 * entry shows of it, in phase PH_REMOTE, settled like the others. */
lg_task *lg_cluster_stub(lg_app *a, const char *id, const char *rec, size_t n) {
  lg_jspan obj = {rec, n};
  char *status = str_field(obj, "status");
  int st = status ? lg_status_from_name(status) : -1;
  free(status);
  if (st < 0 || TS_TERMINAL(st)) return NULL;
  lg_task *t = calloc(1, sizeof *t);
  if (!t) return NULL;
  snprintf(t->id, sizeof t->id, "%s", id);
  char *kind = str_field(obj, "kind");
  t->kind = kind && strcmp(kind, "agent") == 0 ? TK_AGENT : TK_TOOL;
  free(kind);
  t->agent_id = str_field(obj, "agent_id");
  if (!t->agent_id) t->agent_id = lg_strdup("host");
  t->tool = str_field(obj, "tool");
  t->root_task_id = str_field(obj, "root_task_id");
  t->attempts = (int)int_field(obj, "attempts", 0);
  t->status = TS_QUEUED;
  t->phase = PH_REMOTE;
  t->stub = 1;
  t->heap_idx = -1;
  atomic_init(&t->stop, STOP_NONE);
  if (a->next_seq == UINT64_MAX || !t->agent_id || !(t->aq = lg_aq_get(a, t->agent_id)) ||
      lg_task_insert(a, t) != 0) {
    lg_task_free(t);
    return NULL;
  }
  t->seq = a->next_seq++;
  return t;
}

/* Whether this process holds a claimed task that has not ended. */
static int holds_claims(const lg_app *a) {
  for (size_t i = 0; i < a->tasks.tab_cap; i++)
    for (const lg_task *t = a->tasks.tab[i]; t; t = t->hnext)
      if (t->fence > 0 && t->phase != PH_REMOTE && !TS_TERMINAL(t->status)) return 1;
  return 0;
}

static void stop_asked(void *ud, const char *id, size_t len) {
  lg_app *a = ud;
  char key[64];
  if (len >= sizeof key) return;
  memcpy(key, id, len);
  key[len] = 0;
  lg_task *t = lg_task_find(a, key);
  if (!t || t->fence <= 0 || t->phase == PH_REMOTE || TS_TERMINAL(t->status)) return;
  lg_stop_task(a, t, STOP_CANCEL); /* a second ask finds it stopping already */
  lg_cascade(a, t);
}

/* Cancels other processes asked of tasks this one holds (mu held). */
static void take_cancels(lg_app *a, lg_store *store) {
  /* read into a list without the lock, then stop them under it */
  rec_list l = {0};
  pthread_mutex_unlock(&a->mu);
  lg_store_read_cancels(store, keep_record, &l);
  pthread_mutex_lock(&a->mu);
  for (int i = 0; i < l.n; i++) {
    stop_asked(a, l.recs[i], l.lens[i]);
    free(l.recs[i]);
  }
  free(l.recs);
  free(l.lens);
}

/* ------------------------------------------------------------- loop */

static int pending_cancels(const lg_app *a) {
  for (size_t i = 0; i < a->tasks.tab_cap; i++)
    for (const lg_task *t = a->tasks.tab[i]; t; t = t->hnext)
      if (t->remote_cancel == 1 && t->phase == PH_REMOTE && !TS_TERMINAL(t->status)) return 1;
  return 0;
}

static void *watch_main(void *arg) {
  lg_app *a = arg;
  pthread_setname_np(pthread_self(), "lg-cluster"); /* what top -H and perf show */
  int pause = POLL_MS;
  pthread_mutex_lock(&a->mu);
  while (!a->closing) {
    lg_store *store = a->store;
    if (pending_cancels(a)) send_cancels(a, store);
    int held = holds_claims(a);
    if (held) take_cancels(a, store);
    char **ids = NULL;
    int n = collect(a, &ids);
    if (n == 0 && a->serving == 0 && !held) { /* nothing depends on another process: until poked */
      atomic_store(&a->listening, 0);
      lg_cond_wait_until(&a->cluster_cv, &a->mu, 0);
      continue;
    }
    int rc = 0;
    if (n != 0) {
      pthread_mutex_unlock(&a->mu);
      rec_list l = {0};
      rc = n > 0 ? lg_store_read_finished(store, ids, n, keep_record, &l) : -1;
      pthread_mutex_lock(&a->mu);
      for (int i = 0; i < l.n; i++) {
        settle(a, l.recs[i], l.lens[i]);
        free(l.recs[i]);
      }
      free(l.recs);
      free(l.lens);
      for (int i = 0; i < n; i++) free(ids[i]);
      free(ids);
      if (l.n > 0) lg_evict_finished(a);
    }
    /* a store that cannot be read is told once per read; do not flood */
    pause = rc < 0 ? (pause * 2 < BACKOFF_MS ? pause * 2 : BACKOFF_MS) : POLL_MS;
    await(a, store, pause);
  }
  a->cluster_on = 0;
  pthread_mutex_unlock(&a->mu);
  lg_app_release(a);
  return NULL;
}

void lg_cluster_poke(lg_app *a) {
  if (a->cluster_on) {
    pthread_cond_signal(&a->cluster_cv);
    lg_store_kick(a->store); /* it may be listening */
    return;
  }
  if (!a->shared || a->closing) return;
  if (lg_app_thread(a, watch_main) != 0) {
    lg_log(a, "warn", "%s", "luagent: could not start the thread that watches tasks other "
             "processes run; waits on them will not end here");
    return;
  }
  a->cluster_on = 1;
}

void lg_cluster_serving(lg_app *a, int on) {
  pthread_mutex_lock(&a->mu);
  a->serving += on ? 1 : -1;
  lg_cluster_poke(a);
  pthread_mutex_unlock(&a->mu);
}

int lg_cluster_listening(lg_app *a) { return atomic_load(&a->listening); }
