/* Waits as values (ctx:wait, app:wait, bg_wait): a wait registers its ids
 * once with the tasks it waits on, is told by each of them when it ends,
 * and builds its value once, when the waiter asks for it. Nothing here
 * rescans the task table or the wait set on a wakeup: a task that ends
 * counts itself into the waits registered with it (lg_waits_task_done),
 * and the one whose condition that completes is marked over and its waiter
 * woken. Callers of the functions taking an lg_app hold app->mu unless the
 * name says otherwise (see docs/architecture.md, "Locks"). */
#include "dispatch_internal.h"
#include "jtext.h"

#include <stdlib.h>
#include <string.h>

struct lg_wait {
  lg_app *app;
  char **ids;
  lg_task **tasks; /* the task of ids[i] when it is in memory (pinned), else NULL */
  int n, any, ndone;
  atomic_int over;
  lg_worker *worker; /* woken when the wait is over; NULL for the host (bumped) */
};

static int is_self_or_ancestor(const lg_task *caller, const lg_task *x) {
  for (const lg_task *p = caller; p; p = p->parent)
    if (p == x) return 1;
  return 0;
}

static int watch(lg_task *t, lg_wait *w) {
  if (t->nwaits == t->waits_cap) {
    int cap = t->waits_cap ? t->waits_cap * 2 : 2;
    lg_wait **v = realloc(t->waits, (size_t)cap * sizeof *v);
    if (!v) return -1;
    t->waits = v;
    t->waits_cap = cap;
  }
  t->waits[t->nwaits++] = w;
  return 0;
}

static void unwatch(lg_task *t, lg_wait *w) {
  for (int i = 0; i < t->nwaits; i++)
    if (t->waits[i] == w) {
      t->waits[i] = t->waits[--t->nwaits];
      return;
    }
}

static void check_over(lg_wait *w) {
  if (w->n == 0 || (w->any ? w->ndone > 0 : w->ndone >= w->n)) atomic_store(&w->over, 1);
}

static void release(lg_wait *w) {
  for (int i = 0; i < w->n; i++) {
    lg_task *t = w->tasks ? w->tasks[i] : NULL;
    if (t) {
      unwatch(t, w);
      t->waited--;
      lg_evict_sync(w->app, t);
    }
    if (w->ids) free(w->ids[i]);
  }
}

static void wait_free_mem(lg_wait *w) {
  free(w->ids);
  free(w->tasks);
  free(w);
}

lg_wait *lg_wait_begin_locked(lg_app *a, lg_task *caller, char **ids, int n, int any, lg_err *err) {
  lg_wait *w = calloc(1, sizeof *w);
  if (w) {
    w->ids = calloc((size_t)(n ? n : 1), sizeof *w->ids);
    w->tasks = calloc((size_t)(n ? n : 1), sizeof *w->tasks);
  }
  if (!w || !w->ids || !w->tasks) {
    if (w) wait_free_mem(w);
    lg_err_set(err, "runtime", "out of memory");
    return NULL;
  }
  w->app = a;
  w->any = any;
  atomic_init(&w->over, 0);
  for (int i = 0; i < n; i++) {
    lg_task *t = lg_task_find(a, ids[i]);
    const char *bad = NULL;
    if (!t) {
      /* a task that left memory is finished; a file store still has it */
      buf_t rec;
      lg_buf_init(&rec);
      char st[16];
      if (lg_stored_record(a, ids[i], &rec, st) != 0) bad = "not_found";
      lg_buf_free(&rec);
    } else if (caller && is_self_or_ancestor(caller, t)) {
      bad = "validation";
    }
    w->ids[i] = lg_strdup(ids[i]);
    w->n = i + 1;
    if (bad || !w->ids[i] || (t && !TS_TERMINAL(t->status) && watch(t, w) != 0)) {
      if (!bad)
        lg_err_set(err, "runtime", "out of memory");
      else if (strcmp(bad, "not_found") == 0)
        lg_err_set(err, "not_found", "unknown task id '%s'", ids[i]);
      else
        lg_err_set(err, "validation",
                   "would wait on itself: task '%s' is the caller or its ancestor", ids[i]);
      w->tasks[i] = NULL;
      release(w);
      wait_free_mem(w);
      return NULL;
    }
    w->tasks[i] = t;
    if (t) {
      t->waited++; /* stays in memory until the wait is freed */
      lg_evict_sync(a, t);
    }
    if (!t || TS_TERMINAL(t->status)) w->ndone++;
  }
  w->n = n;
  check_over(w);
  for (int i = 0; i < n && !atomic_load(&w->over); i++)
    if (w->tasks[i] && w->tasks[i]->phase == PH_REMOTE) { /* it ends in another process */
      lg_cluster_poke(a);
      break;
    }
  lg_app_retain(a);
  return w;
}

lg_wait *lg_wait_begin(lg_app *a, lg_task *caller, char **ids, int n, int any, lg_err *err) {
  pthread_mutex_lock(&a->mu);
  lg_wait *w = lg_wait_begin_locked(a, caller, ids, n, any, err);
  pthread_mutex_unlock(&a->mu);
  return w;
}

lg_wait *lg_wait_begin_by_id(lg_app *a, const char *caller_id, char **ids, int n, int any,
                             lg_err *err) {
  pthread_mutex_lock(&a->mu);
  lg_task *caller = caller_id ? lg_task_find(a, caller_id) : NULL;
  lg_wait *w = lg_wait_begin_locked(a, caller, ids, n, any, err);
  pthread_mutex_unlock(&a->mu);
  return w;
}

int lg_wait_over(lg_wait *w) { return atomic_load(&w->over); }

int lg_wait_ids(lg_wait *w, char ***ids) {
  *ids = w->ids;
  return w->n;
}

int lg_wait_any(lg_wait *w) { return w->any; }

void lg_wait_set_worker(lg_wait *w, lg_worker *wk) { w->worker = wk; }

void lg_waits_task_done(lg_app *a, lg_task *t) {
  LG_UNUSED(a);
  for (int i = 0; i < t->nwaits; i++) {
    lg_wait *w = t->waits[i];
    w->ndone++;
    if (atomic_load(&w->over)) continue;
    check_over(w);
    if (atomic_load(&w->over) && w->worker) pthread_cond_signal(&w->worker->cv);
  }
  /* it ended once: later finishes (none) must not count it again */
  t->nwaits = 0;
}

/* The entry of one task in a wait value: the same fields whether the task is
 * in memory or was read back from the store (docs/architecture.md, "Waits"). */
static void entry_from_task(const lg_task *t, buf_t *b) {
  lg_buf_adds(b, "{\"task_id\":");
  lg_buf_add_jstr(b, t->id, strlen(t->id));
  lg_add_str_field(b, "status", lg_status_name(t->status));
  lg_add_str_field(b, "agent_id", t->agent_id);
  lg_add_str_field(b, "tool", t->tool);
  lg_buf_addf(b, ",\"kind\":\"%s\",\"attempts\":%d", t->kind == TK_AGENT ? "agent" : "tool",
              t->attempts);
  if (TS_TERMINAL(t->status)) {
    lg_add_raw_field(b, "result", t->result_json);
    if (t->run_status[0]) lg_add_str_field(b, "run_status", t->run_status);
    lg_add_error(b, t);
    lg_usage_fields(b, t, 1);
  } else {
    double elapsed = t->started_at ? (double)(lg_wall_ms() - t->started_at) / 1000.0 : 0.0;
    lg_buf_addf(b, ",\"progress\":{\"elapsed_s\":%.3f", elapsed);
    if (t->ring_n > 0) {
      lg_buf_adds(b, ",\"last_event\":");
      lg_digest_json(b, &t->ring[(t->ring_head + t->ring_n - 1) % LG_TASK_RING]);
    }
    lg_usage_fields(b, t, 1);
    lg_buf_addc(b, '}');
  }
  lg_buf_addc(b, '}');
}

static void entry_from_record(const char *rec, size_t n, buf_t *b) {
  static const char *const keys[] = {"status", "agent_id", "tool",  "kind",
                                     "attempts", "result", "run_status", "error", "usage", "tree_usage"};
  lg_buf_adds(b, "{\"task_id\":");
  lg_jspan id = lg_jtext_field(rec, n, "task_id");
  lg_buf_add(b, id.p ? id.p : "null", id.p ? id.n : 4);
  for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
    lg_jspan_put(b, keys[i], lg_jtext_field(rec, n, keys[i]));
  lg_buf_addc(b, '}');
}

void lg_wait_value_locked(lg_app *a, lg_wait *w, int timed_out, buf_t *out) {
  int over = atomic_load(&w->over);
  lg_buf_addf(out, "{\"done\":%s,\"timed_out\":%s,\"tasks\":[", over ? "true" : "false",
              !over && timed_out ? "true" : "false");
  for (int i = 0; i < w->n; i++) {
    if (i) lg_buf_addc(out, ',');
    if (w->tasks[i]) {
      entry_from_task(w->tasks[i], out);
    } else {
      buf_t rec;
      lg_buf_init(&rec);
      char st[16];
      if (lg_stored_record(a, w->ids[i], &rec, st) == 0)
        entry_from_record(rec.p, rec.len, out);
      else /* the store went away meanwhile: say what we know */
      {
        lg_buf_adds(out, "{\"task_id\":");
        lg_buf_add_jstr(out, w->ids[i], strlen(w->ids[i]));
        lg_buf_adds(out, ",\"status\":\"completed\"}");
      }
      lg_buf_free(&rec);
    }
  }
  lg_buf_adds(out, "],\"pending\":[");
  int k = 0;
  for (int i = 0; i < w->n; i++) {
    lg_task *t = w->tasks[i];
    if (!t || TS_TERMINAL(t->status)) continue;
    if (k++) lg_buf_addc(out, ',');
    lg_buf_add_jstr(out, t->id, strlen(t->id));
  }
  lg_buf_adds(out, "]}");
}

void lg_wait_value(lg_wait *w, int timed_out, buf_t *out) {
  lg_app *a = w->app;
  pthread_mutex_lock(&a->mu);
  lg_wait_value_locked(a, w, timed_out, out);
  pthread_mutex_unlock(&a->mu);
}

void lg_wait_free(lg_wait *w) {
  if (!w) return;
  lg_app *a = w->app;
  pthread_mutex_lock(&a->mu);
  release(w);
  lg_evict_finished(a); /* what it kept in memory may leave now */
  pthread_mutex_unlock(&a->mu);
  wait_free_mem(w);
  lg_app_release(a);
}
