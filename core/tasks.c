/* The data the dispatcher works on: the task table (a hash by task id),
 * the per-agent queues (heaps, best first), task records as JSON, the
 * selection of tasks by filter, and the small helpers every dispatcher
 * file uses (status names, timed condition waits, filters, errors). Kept
 * apart from dispatcher.c so the scheduling code reads as decisions over
 * these structures, not their upkeep. The table is data: it knows no
 * scheduler, whose callers hold app->mu around every call (tasks.h). */
#include "tasks.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *const status_names[] = {"queued",    "running",   "completed",
                                           "failed",    "cancelled", "timed_out"};

const char *lg_status_name(int s) { return status_names[s]; }

int lg_status_from_name(const char *s) {
  for (int i = 0; i < 6; i++)
    if (strcmp(s, status_names[i]) == 0) return i;
  return -1;
}

/* ------------------------------------------------------------------ time */

static void deadline_ts(struct timespec *ts, int64_t mono_ms) {
  /* condition variables use CLOCK_MONOTONIC (see lg_cond_init) */
  ts->tv_sec = (time_t)(mono_ms / 1000);
  ts->tv_nsec = (long)(mono_ms % 1000) * 1000000L;
}

void lg_cond_init(pthread_cond_t *cv) {
  pthread_condattr_t at;
  pthread_condattr_init(&at);
  pthread_condattr_setclock(&at, CLOCK_MONOTONIC);
  pthread_cond_init(cv, &at);
  pthread_condattr_destroy(&at);
}

/* Wait on cv until signalled or mono deadline (0 = none). */
void lg_cond_wait_until(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t deadline) {
  if (deadline <= 0) {
    pthread_cond_wait(cv, mu);
    return;
  }
  struct timespec ts;
  deadline_ts(&ts, deadline);
  pthread_cond_timedwait(cv, mu, &ts);
}

int64_t lg_min_deadline(int64_t a, int64_t b) {
  if (a <= 0) return b;
  if (b <= 0) return a;
  return a < b ? a : b;
}

/* ------------------------------------------------------------ task table */

lg_task *lg_table_find(lg_table *tb, const char *id) {
  if (!tb->tab_cap) return NULL;
  for (lg_task *t = tb->tab[lg_hash_str(id) & (tb->tab_cap - 1)]; t; t = t->hnext)
    if (strcmp(t->id, id) == 0) return t;
  return NULL;
}

static uint64_t scope_hash(const char *agent, const char *thread) {
  return lg_hash_str(agent) * 31 + lg_hash_str(thread);
}

static lg_scopeq *scope_find(lg_table *tb, const char *agent, const char *thread, int create) {
  if (!tb->sc_cap) {
    if (!create) return NULL;
    tb->sctab = calloc(256, sizeof *tb->sctab);
    if (!tb->sctab) return NULL;
    tb->sc_cap = 256;
  }
  size_t k = scope_hash(agent, thread) & (tb->sc_cap - 1);
  for (lg_scopeq *q = tb->sctab[k]; q; q = q->hnext)
    if (strcmp(q->agent_id, agent) == 0 && strcmp(q->thread_id, thread) == 0) return q;
  if (!create) return NULL;
  lg_scopeq *q = calloc(1, sizeof *q);
  if (!q || !(q->agent_id = strdup(agent)) || !(q->thread_id = strdup(thread))) {
    if (q) free(q->agent_id);
    free(q);
    return NULL;
  }
  q->hnext = tb->sctab[k];
  tb->sctab[k] = q;
  return q;
}

static void scope_drop(lg_table *tb, lg_scopeq *q) {
  size_t k = scope_hash(q->agent_id, q->thread_id) & (tb->sc_cap - 1);
  for (lg_scopeq **pp = &tb->sctab[k]; *pp; pp = &(*pp)->hnext)
    if (*pp == q) {
      *pp = q->hnext;
      break;
    }
  free(q->agent_id);
  free(q->thread_id);
  free(q);
}

void lg_table_scopes_free(lg_table *tb) {
  for (size_t i = 0; i < tb->sc_cap; i++)
    for (lg_scopeq *q = tb->sctab[i], *nx; q; q = nx) {
      nx = q->hnext;
      free(q->agent_id);
      free(q->thread_id);
      free(q);
    }
  free(tb->sctab);
}

int lg_table_insert(lg_table *tb, lg_task *t) {
  lg_scopeq *q = NULL;
  if (t->parent_agent_id && t->thread_id) {
    q = scope_find(tb, t->parent_agent_id, t->thread_id, 1);
    if (!q) return -1;
  }
  if ((tb->ntasks + 1) * 4 > tb->tab_cap * 3) {
    size_t cap = tb->tab_cap ? tb->tab_cap * 2 : 256;
    lg_task **tab = calloc(cap, sizeof *tab);
    if (!tab) {
      if (q && q->n == 0) scope_drop(tb, q);
      return -1;
    }
    for (size_t i = 0; i < tb->tab_cap; i++) {
      for (lg_task *x = tb->tab[i], *nx; x; x = nx) {
        nx = x->hnext;
        size_t k = lg_hash_str(x->id) & (cap - 1);
        x->hnext = tab[k];
        tab[k] = x;
      }
    }
    free(tb->tab);
    tb->tab = tab;
    tb->tab_cap = cap;
  }
  size_t k = lg_hash_str(t->id) & (tb->tab_cap - 1);
  t->hnext = tb->tab[k];
  tb->tab[k] = t;
  tb->ntasks++;
  /* enqueue order: seq only grows, so appending keeps both lists sorted */
  t->all_prev = tb->all_tail;
  t->all_next = NULL;
  if (tb->all_tail)
    tb->all_tail->all_next = t;
  else
    tb->all_head = t;
  tb->all_tail = t;
  t->scq = q;
  if (q) {
    t->sc_prev = q->tail;
    t->sc_next = NULL;
    if (q->tail)
      q->tail->sc_next = t;
    else
      q->head = t;
    q->tail = t;
    q->n++;
  }
  return 0;
}

void lg_table_remove(lg_table *tb, lg_task *t) {
  for (lg_task **pp = &tb->tab[lg_hash_str(t->id) & (tb->tab_cap - 1)]; *pp; pp = &(*pp)->hnext) {
    if (*pp == t) {
      *pp = t->hnext;
      tb->ntasks--;
      break;
    }
  }
  if (t->all_prev) t->all_prev->all_next = t->all_next; else tb->all_head = t->all_next;
  if (t->all_next) t->all_next->all_prev = t->all_prev; else tb->all_tail = t->all_prev;
  t->all_prev = t->all_next = NULL;
  lg_scopeq *q = t->scq;
  if (q) {
    if (t->sc_prev) t->sc_prev->sc_next = t->sc_next; else q->head = t->sc_next;
    if (t->sc_next) t->sc_next->sc_prev = t->sc_prev; else q->tail = t->sc_prev;
    t->sc_prev = t->sc_next = NULL;
    t->scq = NULL;
    if (--q->n == 0) scope_drop(tb, q);
  }
}

void lg_task_free(lg_task *t) {
  char **strs[] = {&t->agent_id,      &t->parent_agent_id, &t->thread_id,      &t->tool,
                   &t->tool_call_id,  &t->run_id,          &t->parent_run_id,  &t->parent_task_id,
                   &t->root_task_id,  &t->root_key,        &t->prompt,         &t->args_json,
                   &t->metadata_json, &t->result_json,     &t->usage_json,     &t->late_result_json,
                   &t->error_kind,    &t->error_message,   &t->idem_key};
  for (size_t i = 0; i < sizeof strs / sizeof *strs; i++) free(*strs[i]);
  free(t->waits);
  free(t->ring);
  lg_inbox_free(t);
  free(t);
}

/* ---------------------------------------------------- descendant counters */

/* How many tasks a run tree spawned (R-28 max_descendants), by root key: a
 * hash, since every enqueue of a child looks one up. A counter lives while
 * a task of its tree is in memory, the root task included, so counters of
 * trees long gone do not pile up. */
static lg_counter **counter_slot(lg_table *tb, const char *key) {
  lg_counter **pp = &tb->ctab[lg_hash_str(key) & (tb->ctab_cap - 1)];
  while (*pp && strcmp((*pp)->key, key) != 0) pp = &(*pp)->next;
  return pp;
}

static int counters_grow(lg_table *tb) {
  size_t cap = tb->ctab_cap ? tb->ctab_cap * 2 : 64;
  lg_counter **tab = calloc(cap, sizeof *tab);
  if (!tab) return -1;
  for (size_t i = 0; i < tb->ctab_cap; i++) {
    for (lg_counter *c = tb->ctab[i], *nx; c; c = nx) {
      nx = c->next;
      size_t k = lg_hash_str(c->key) & (cap - 1);
      c->next = tab[k];
      tab[k] = c;
    }
  }
  free(tb->ctab);
  tb->ctab = tab;
  tb->ctab_cap = cap;
  return 0;
}

lg_counter *lg_table_counter_get(lg_table *tb, const char *key) {
  if ((tb->ncounters + 1) * 4 > tb->ctab_cap * 3 && counters_grow(tb) != 0 && !tb->ctab_cap) return NULL;
  lg_counter **pp = counter_slot(tb, key);
  if (*pp) return *pp;
  lg_counter *c = calloc(1, sizeof *c);
  if (!c || !(c->key = strdup(key))) {
    free(c);
    return NULL;
  }
  *pp = c;
  tb->ncounters++;
  lg_task *root = lg_table_find(tb, key); /* the root task, while it is in memory */
  if (root && !root->rootc) lg_counter_attach(c, root);
  return c;
}

void lg_counter_attach(lg_counter *c, lg_task *t) {
  t->rootc = c;
  c->refs++;
}

static void counter_free(lg_table *tb, lg_counter *c) {
  lg_counter **pp = counter_slot(tb, c->key);
  if (*pp == c) *pp = c->next;
  tb->ncounters--;
  free(c->key);
  free(c);
}

void lg_table_counter_detach(lg_table *tb, lg_task *t) {
  lg_counter *c = t->rootc;
  t->rootc = NULL;
  if (c && --c->refs == 0) counter_free(tb, c);
}

void lg_table_counter_drop_unused(lg_table *tb, lg_counter *c) {
  if (c && c->refs == 0) counter_free(tb, c);
}

void lg_table_counters_free(lg_table *tb) {
  for (size_t i = 0; i < tb->ctab_cap; i++) {
    for (lg_counter *c = tb->ctab[i], *nx; c; c = nx) {
      nx = c->next;
      free(c->key);
      free(c);
    }
  }
  free(tb->ctab);
}

/* ---------------------------------------------------------- agent queues */

/* Best first: boosted (R-27 lending), then higher priority, then FIFO. */
int lg_task_before(const lg_task *x, const lg_task *y) {
  if (x->boost != y->boost) return x->boost > y->boost;
  if (x->priority != y->priority) return x->priority > y->priority;
  return x->seq < y->seq;
}

lg_agentq *lg_table_aq_get(lg_table *tb, const char *name) {
  if (!tb->aq_cap) {
    tb->aqtab = calloc(64, sizeof *tb->aqtab);
    if (!tb->aqtab) return NULL;
    tb->aq_cap = 64;
  }
  size_t k = lg_hash_str(name) & (tb->aq_cap - 1);
  for (lg_agentq *q = tb->aqtab[k]; q; q = q->hnext)
    if (strcmp(q->name, name) == 0) return q;
  lg_agentq *q = calloc(1, sizeof *q);
  if (!q || !(q->name = strdup(name))) {
    free(q);
    return NULL;
  }
  q->hnext = tb->aqtab[k];
  tb->aqtab[k] = q;
  q->next = tb->agents;
  tb->agents = q;
  return q;
}

static void heap_swap(lg_agentq *q, int i, int j) {
  lg_task *t = q->heap[i];
  q->heap[i] = q->heap[j];
  q->heap[j] = t;
  q->heap[i]->heap_idx = i;
  q->heap[j]->heap_idx = j;
}

void lg_heap_up(lg_agentq *q, int i) {
  while (i > 0) {
    int p = (i - 1) / 2;
    if (!lg_task_before(q->heap[i], q->heap[p])) break;
    heap_swap(q, i, p);
    i = p;
  }
}

static void heap_down(lg_agentq *q, int i) {
  for (;;) {
    int l = 2 * i + 1, r = l + 1, m = i;
    if (l < q->n && lg_task_before(q->heap[l], q->heap[m])) m = l;
    if (r < q->n && lg_task_before(q->heap[r], q->heap[m])) m = r;
    if (m == i) break;
    heap_swap(q, i, m);
    i = m;
  }
}

int lg_aq_push(lg_agentq *q, lg_task *t) {
  if (q->n == q->cap) {
    int cap = q->cap ? q->cap * 2 : 16;
    lg_task **h = realloc(q->heap, (size_t)cap * sizeof *h);
    if (!h) return -1;
    q->heap = h;
    q->cap = cap;
  }
  q->heap[q->n] = t;
  t->heap_idx = q->n++;
  lg_heap_up(q, t->heap_idx);
  return 0;
}

void lg_aq_remove(lg_agentq *q, lg_task *t) {
  int i = t->heap_idx;
  if (i < 0 || i >= q->n || q->heap[i] != t) return;
  q->n--;
  if (i != q->n) {
    q->heap[i] = q->heap[q->n];
    q->heap[i]->heap_idx = i;
    heap_down(q, i);
    lg_heap_up(q, i);
  }
  t->heap_idx = -1;
}

/* ------------------------------------------------------------ stopping */

/* A stop asked for (STOP_*), or the attempt's deadline passed, which
 * then counts as a timeout. */
int lg_task_should_stop(lg_task *t) {
  if (atomic_load(&t->stop) != STOP_NONE) return 1;
  if (t->stale_ms > 0 && lg_stall_check(t, lg_mono_ms())) return 1;
  if (t->deadline_mono > 0 && lg_mono_ms() >= t->deadline_mono) {
    int expected = STOP_NONE;
    atomic_compare_exchange_strong(&t->stop, &expected, STOP_TIMEOUT);
    return 1;
  }
  return 0;
}

/* --------------------------------------------------------------- records */

void lg_add_str_field(buf_t *b, const char *k, const char *v) {
  if (!v) return;
  lg_buf_addc(b, ',');
  lg_buf_add_jkey(b, k);
  lg_buf_add_jstr(b, v, strlen(v));
}

void lg_add_raw_field(buf_t *b, const char *k, const char *json) {
  if (!json) return;
  lg_buf_addc(b, ',');
  lg_buf_add_jkey(b, k);
  lg_buf_adds(b, json);
}

static void add_time_field(buf_t *b, const char *k, int64_t ms) {
  if (!ms) return;
  char iso[32];
  lg_iso8601(ms, iso);
  lg_buf_addc(b, ',');
  lg_buf_add_jkey(b, k);
  lg_buf_addc(b, '"');
  lg_buf_adds(b, iso);
  lg_buf_addc(b, '"');
}

void lg_add_error(buf_t *b, const lg_task *t) {
  if (!t->error_kind) return;
  lg_buf_adds(b, ",\"error\":{\"kind\":");
  lg_buf_add_jstr(b, t->error_kind, strlen(t->error_kind));
  lg_buf_adds(b, ",\"message\":");
  const char *m = t->error_message ? t->error_message : "";
  lg_buf_add_jstr(b, m, strlen(m));
  if (t->error_status) lg_buf_addf(b, ",\"status\":%d", t->error_status);
  lg_buf_addc(b, '}');
}

/* The foreground run a task's tree was started by (its root key when that
 * is not the root task's id), or NULL for a tree a host enqueue started. */
const char *lg_root_run_id(const lg_task *t) {
  if (!t->root_key || !t->root_task_id || strcmp(t->root_key, t->root_task_id) == 0) return NULL;
  return t->root_key;
}

/* internal: also the fields only recovery needs (the store's copy). */
void lg_record_json_x(const lg_task *t, buf_t *b, int internal) {
  lg_buf_adds(b, "{\"task_id\":");
  lg_buf_add_jstr(b, t->id, strlen(t->id));
  lg_add_str_field(b, "kind", t->kind == TK_AGENT ? "agent" : "tool");
  lg_add_str_field(b, "agent_id", t->agent_id);
  lg_add_str_field(b, "parent_agent_id", t->parent_agent_id);
  lg_add_str_field(b, "thread_id", t->thread_id);
  lg_add_str_field(b, "tool", t->tool);
  lg_add_str_field(b, "tool_call_id", t->tool_call_id);
  lg_add_str_field(b, "run_id", t->run_id);
  lg_add_str_field(b, "parent_run_id", t->parent_run_id);
  lg_add_str_field(b, "parent_task_id", t->parent_task_id);
  lg_add_str_field(b, "root_task_id", t->root_task_id);
  lg_add_str_field(b, "root_run_id", lg_root_run_id(t));
  lg_buf_adds(b, ",\"depth\":");
  lg_buf_add_int(b, t->depth);
  lg_add_str_field(b, "prompt", t->prompt);
  lg_add_raw_field(b, "args", t->args_json);
  lg_add_str_field(b, "status", status_names[t->status]);
  add_time_field(b, "enqueued_at", t->enqueued_at);
  add_time_field(b, "started_at", t->started_at);
  add_time_field(b, "finished_at", t->finished_at);
  add_time_field(b, "retry_at", t->phase == PH_RETRY ? t->retry_at : 0);
  lg_buf_adds(b, ",\"attempts\":");
  lg_buf_add_int(b, t->attempts);
  lg_buf_adds(b, ",\"max_retries\":");
  lg_buf_add_int(b, t->max_retries);
  /* %.17g of an integral double below 2^53 is its integer digits */
  if (t->timeout_s > -9e15 && t->timeout_s < 9e15 && t->timeout_s == (double)(long long)t->timeout_s) {
    lg_buf_adds(b, ",\"timeout_s\":");
    lg_buf_add_int(b, (long long)t->timeout_s);
  } else {
    lg_buf_addf(b, ",\"timeout_s\":%.17g", t->timeout_s);
  }
  lg_add_str_field(b, "idempotency_key", t->idem_key);
  if (t->stale_ms > 0) lg_buf_addf(b, ",\"stale_after_s\":%.17g", (double)t->stale_ms / 1000.0);
  lg_add_raw_field(b, "result", t->result_json);
  if (t->run_status[0]) lg_add_str_field(b, "run_status", t->run_status);
  lg_add_error(b, t);
  lg_usage_fields(b, t, 1);
  lg_buf_adds(b, t->cancel_requested ? ",\"cancel_requested\":true" : ",\"cancel_requested\":false");
  if (t->wait_n > 0) {
    lg_buf_adds(b, ",\"waiting_on\":[");
    for (int i = 0; i < t->wait_n; i++) {
      if (i) lg_buf_addc(b, ',');
      lg_buf_add_jstr(b, t->wait_ids[i], strlen(t->wait_ids[i]));
    }
    lg_buf_addc(b, ']');
  }
  lg_buf_adds(b, t->delivered ? ",\"delivered\":true,\"priority\":" : ",\"delivered\":false,\"priority\":");
  lg_buf_add_int(b, (long long)t->priority);
  lg_add_raw_field(b, "metadata", t->metadata_json);
  lg_inbox_json(t, b);
  if (internal) {
    lg_add_str_field(b, "root_key", t->root_key);
    if (t->max_depth >= 0) lg_buf_addf(b, ",\"max_depth\":%d", t->max_depth);
    if (t->scoped) lg_buf_adds(b, ",\"scoped\":true");
  }
  lg_buf_addc(b, '}');
}

void lg_record_json(const lg_task *t, buf_t *b) { lg_record_json_x(t, b, 0); }

void lg_task_brief_json(const lg_task *t, buf_t *b) {
  lg_buf_adds(b, "{\"task_id\":");
  lg_buf_add_jstr(b, t->id, strlen(t->id));
  lg_add_str_field(b, "kind", t->kind == TK_AGENT ? "agent" : "tool");
  lg_add_str_field(b, "agent_id", t->agent_id);
  lg_add_str_field(b, "thread_id", t->thread_id);
  lg_add_str_field(b, "tool", t->tool);
  lg_add_str_field(b, "run_id", t->run_id);
  lg_buf_adds(b, ",\"depth\":");
  lg_buf_add_int(b, t->depth);
  lg_add_str_field(b, "prompt", t->prompt);
  lg_add_raw_field(b, "args", t->args_json);
  lg_buf_adds(b, ",\"attempts\":");
  lg_buf_add_int(b, t->attempts);
  lg_add_raw_field(b, "metadata", t->metadata_json);
  lg_add_str_field(b, "root_key", t->root_key);
  if (t->max_depth >= 0) {
    lg_buf_adds(b, ",\"max_depth\":");
    lg_buf_add_int(b, t->max_depth);
  }
  lg_buf_addc(b, '}');
}

/* --------------------------------------------------------------- helpers */

void lg_err_set(lg_err *e, const char *kind, const char *fmt, ...) {
  snprintf(e->kind, sizeof e->kind, "%s", kind);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(e->message, sizeof e->message, fmt, ap);
  va_end(ap);
}

int lg_eq_opt(const char *want, const char *have) {
  return !want || (have && strcmp(want, have) == 0);
}

int lg_cmp_seq(const void *x, const void *y) {
  const lg_task *a = *(lg_task *const *)x, *b = *(lg_task *const *)y;
  return a->seq < b->seq ? -1 : a->seq > b->seq;
}

static int task_matches(const lg_filter *f, int want, const lg_task *t) {
  if (t->stub) return 0; /* a stand-in of another process's task lists there */
  if (f->claimable) {
    if (!TS_TERMINAL(t->status) || t->delivered || t->claimed) return 0;
  } else if (want >= 0) {
    if (t->status != want) return 0;
  } else if (!f->include_finished && TS_TERMINAL(t->status)) {
    return 0;
  }
  return lg_eq_opt(f->agent_id, t->agent_id) && lg_eq_opt(f->parent_agent_id, t->parent_agent_id) &&
         lg_eq_opt(f->thread_id, t->thread_id) && lg_eq_opt(f->parent_run_id, t->parent_run_id) &&
         lg_eq_opt(f->parent_task_id, t->parent_task_id);
}

/* The tasks matching f, in enqueue order, at most f->limit: a malloc'd
 * array (NULL with *n = 0 when there is none or no memory). A scope filter
 * walks that scope's list only; both lists are in enqueue order, so there
 * is nothing to sort and a limit stops the walk. */
lg_task **lg_table_select(lg_table *tb, const lg_filter *f, size_t *n) {
  int want = f->status ? lg_status_from_name(f->status) : -1;
  *n = 0;
  lg_task *start = tb->all_head;
  size_t most = tb->ntasks;
  int by_scope = f->parent_agent_id && f->thread_id;
  if (by_scope) {
    lg_scopeq *q = scope_find(tb, f->parent_agent_id, f->thread_id, 0);
    start = q ? q->head : NULL;
    most = q ? (size_t)q->n : 0;
  }
  if (f->limit > 0 && (size_t)f->limit < most) most = (size_t)f->limit;
  lg_task **v = malloc((most + 1) * sizeof *v);
  if (!v) return NULL;
  for (lg_task *t = start; t && *n < most; t = by_scope ? t->sc_next : t->all_next)
    if (task_matches(f, want, t)) v[(*n)++] = t;
  return v;
}

/* ----------------------------------------------------------- usage */

void lg_usage_json(buf_t *b, const lg_usage *u) {
  lg_buf_addf(b, "{\"prompt_tokens\":%lld,\"completion_tokens\":%lld,\"total_tokens\":%lld", u->prompt,
           u->completion, u->total);
  if (u->cached) lg_buf_addf(b, ",\"cached_tokens\":%lld", u->cached);
  if (u->has_cost) lg_buf_addf(b, ",\"cost\":%.17g", u->cost);
  if (u->estimated) lg_buf_adds(b, ",\"estimated\":true");
  lg_buf_addc(b, '}');
}

/* A task that never reported a model call keeps the usage its outcome
 * gave (usage_json); it has no descendants' usage to add then. */
void lg_usage_fields(buf_t *b, const lg_task *t, int with_tree) {
  if (t->usage.set) {
    lg_buf_adds(b, ",\"usage\":");
    lg_usage_json(b, &t->usage);
  } else {
    lg_add_raw_field(b, "usage", t->usage_json);
  }
  if (!with_tree) return;
  if (t->tree_usage.set) {
    lg_buf_adds(b, ",\"tree_usage\":");
    lg_usage_json(b, &t->tree_usage);
  } else {
    lg_add_raw_field(b, "tree_usage", t->usage_json);
  }
}
