/* The dispatcher of one app: its entry points above the task-state core
 * (sched.c, which admits, requeues, finishes and stops tasks): slot lending
 * while tasks wait, retries, cancellation and its cascade
 * close (R-25a), enqueue, the app's creation, and the calls a
 * worker makes for the task it runs.
 *
 * Everything is guarded by app->mu and nothing here calls into Lua:
 * records and events leave as JSON text that module.c decodes after
 * unlocking. This file holds the scheduling decisions only; the data they
 * work on (task table, agent queues, records) is in tasks.c, what leaves for
 * observers (event ring, host work queue) in events.c, and the store side in
 * recovery.c, so each can be read without the others. What they share is
 * declared in dispatch_internal.h. */
#include "budget.h"
#include "dispatch_internal.h"
#include "store.h"

#include <limits.h>
#include <math.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* What a worker thread calls of the scheduler (worker_link.h); sched.c
 * hands it to each worker it starts (app->up.ops, set by lg_app_new). */
static const lg_worker_ops worker_ops = {lg_worker_next, lg_worker_done, lg_worker_exit, lg_task_info};

/* ------------------------------------------------------------ lending */

static int in_wait_set(const lg_task *w, const char *id) {
  for (int i = 0; i < w->wait_n; i++)
    if (strcmp(w->wait_ids[i], id) == 0) return 1;
  return 0;
}

static void boost_tree(lg_app *a, lg_task *t, int boost) {
  for (lg_task *c = t; c; c = c->next_sibling) {
    if (c->phase == PH_QUEUED && c->boost < boost) {
      c->boost = boost;
      lg_heap_up(c->aq, c->heap_idx);
    } else if (c->boost < boost) {
      c->boost = boost;
    }
    boost_tree(a, c->first_child, boost);
  }
}

/* A waiting task's slot goes first to what it waits on and their
 * descendants (boost 2), then to its other descendants (boost 1). */
static void lend(lg_app *a, lg_task *w) {
  for (lg_task *c = w->first_child; c; c = c->next_sibling) {
    int b = in_wait_set(w, c->id) ? 2 : 1;
    if (c->phase == PH_QUEUED && c->boost < b) {
      c->boost = b;
      lg_heap_up(c->aq, c->heap_idx);
    } else if (c->boost < b) {
      c->boost = b;
    }
    boost_tree(a, c->first_child, b);
  }
  /* waited-on tasks that are not children (same scope, other parent) */
  for (int i = 0; i < w->wait_n; i++) {
    lg_task *x = lg_task_find(a, w->wait_ids[i]);
    if (x && x->phase == PH_QUEUED && x->boost < 2) {
      x->boost = 2;
      lg_heap_up(x->aq, x->heap_idx);
    }
  }
}

static int inherited_boost(const lg_task *parent) {
  int b = parent ? parent->boost : 0;
  for (const lg_task *p = parent; p; p = p->parent)
    if (p->phase == PH_WAITING) return b > 1 ? b : 1;
  return b;
}

/* ------------------------------------------------------- finish, cancel */

int lg_cancel(lg_app *a, const char *id, buf_t *out) {
  pthread_mutex_lock(&a->mu);
  lg_task *t = lg_task_find(a, id);
  if (!t) {
    /* one that left memory is finished: report its stored status */
    buf_t rec;
    lg_buf_init(&rec);
    char st[16];
    int found = lg_stored_record(a, id, &rec, st) == 0;
    lg_buf_free(&rec);
    pthread_mutex_unlock(&a->mu);
    if (!found) return -1;
    lg_buf_addf(out, "{\"ok\":false,\"status\":\"%s\",\"task_id\":", st);
    lg_buf_add_jstr(out, id, strlen(id));
    lg_buf_addc(out, '}');
    return 0;
  }
  int ok = 0;
  if (!TS_TERMINAL(t->status)) {
    ok = lg_stop_task(a, t, STOP_CANCEL);
    lg_cascade(a, t);
  }
  lg_buf_addf(out, "{\"ok\":%s,\"status\":\"%s\",\"task_id\":", ok ? "true" : "false",
           lg_status_name(t->status));
  lg_buf_add_jstr(out, t->id, strlen(t->id));
  lg_buf_addc(out, '}');
  lg_evict_finished(a); /* t is not used after this */
  pthread_mutex_unlock(&a->mu);
  return 0;
}

/* ----------------------------------------------------------------- app */

lg_app *lg_app_new(const lg_settings *s, lg_err *err) {
  lg_app *a = calloc(1, sizeof *a);
  if (!a) {
    snprintf(err->message, sizeof err->message, "out of memory");
    return NULL;
  }
  a->cfg = *s;
  a->cfg.boot_json = lg_strdup(s->boot_json);
  a->cfg.lua_path = lg_strdup(s->lua_path);
  a->cfg.lua_cpath = lg_strdup(s->lua_cpath);
  a->log.ring_cap = s->event_buffer > 0 ? s->event_buffer : 10000;
  a->log.ring = calloc((size_t)a->log.ring_cap, sizeof *a->log.ring);
  if (!a->log.ring || (s->boot_json && !a->cfg.boot_json)) {
    free(a->log.ring);
    free(a->cfg.boot_json);
    free(a);
    snprintf(err->message, sizeof err->message, "out of memory");
    return NULL;
  }
  lg_mutex_init(&a->mu);
  lg_mutex_init(&a->log.hq_mu);
  lg_mutex_init(&a->log.ev_mu);
  lg_cond_init(&a->log.host_cv);
  lg_cond_init(&a->workers_cv);
  lg_cond_init(&a->watch_cv);
  lg_cond_init(&a->cluster_cv);
  atomic_init(&a->refs, 1);
  a->busy_deferred = -1;
  a->log.next_event_seq = 1;
  a->log.t0 = lg_mono_s();
  a->up.ops = &worker_ops;
  a->up.on_worker_start = lg_watchdog_start;
  a->up.on_task_end = lg_waits_task_done;
  a->up.on_remote_cancel = lg_cluster_poke;
  lg_make_id("app_", a->id);
  return a;
}

int lg_app_max_output(const lg_app *a) {
  return a->cfg.max_output_bytes > 0 ? a->cfg.max_output_bytes : 16384;
}

int lg_app_max_result(const lg_app *a) {
  return a->cfg.max_result_bytes > 0 ? a->cfg.max_result_bytes : 8192;
}

double lg_app_default_wait_s(const lg_app *a) { return a->cfg.default_wait_timeout_s; }

/* ------------------------------------------------------------- enqueue */

/* What a UI shows of a new task without reading its record: kind, agent,
 * tool, and the head of its prompt (README "Events"). */
#define PROMPT_HEAD 200
static void enqueued_payload(const lg_task *t, buf_t *p) {
  lg_buf_adds(p, t->kind == TK_AGENT ? "{\"kind\":\"agent\"" : "{\"kind\":\"tool\"");
  lg_add_str_field(p, "agent_id", t->agent_id);
  lg_add_str_field(p, "tool", t->tool);
  lg_add_str_field(p, "tool_call_id", t->tool_call_id);
  lg_add_str_field(p, "parent_run_id", t->parent_run_id);
  if (t->prompt) {
    size_t n = strlen(t->prompt);
    if (n > PROMPT_HEAD) {
      n = PROMPT_HEAD;
      while (n > 0 && ((unsigned char)t->prompt[n] & 0xC0) == 0x80) n--; /* whole UTF-8 chars */
    }
    lg_buf_adds(p, ",\"prompt\":");
    lg_buf_add_jstr(p, t->prompt, n);
    if (n < strlen(t->prompt)) lg_buf_adds(p, ",\"prompt_cut\":true");
  }
  lg_buf_adds(p, ",\"priority\":");
  lg_buf_add_int(p, t->priority);
  lg_buf_adds(p, ",\"max_retries\":");
  lg_buf_add_int(p, t->max_retries);
  lg_buf_adds(p, ",\"timeout_s\":");
  lg_buf_add_num(p, t->timeout_s);
  lg_buf_addc(p, '}');
}

/* A new task from its request, before any lock is taken; NULL: out of memory. */
static lg_task *task_new(const lg_enqueue_req *r) {
  lg_task *t = calloc(1, sizeof *t);
  if (!t) return NULL;
  lg_make_id("tsk_", t->id);
  char run_id[40];
  lg_make_id("run_", run_id);
  t->kind = r->kind;
  t->agent_id = lg_strdup(r->agent_id ? r->agent_id : "host");
  t->parent_agent_id = lg_strdup(r->parent_agent_id);
  t->thread_id = lg_strdup(r->thread_id);
  t->tool = lg_strdup(r->tool);
  t->tool_call_id = lg_strdup(r->tool_call_id);
  t->run_id = lg_strdup(run_id);
  t->parent_run_id = lg_strdup(r->parent_run_id);
  t->prompt = lg_strdup(r->prompt);
  t->args_json = lg_strdup(r->args_json);
  t->metadata_json = lg_strdup(r->metadata_json);
  t->depth = r->depth;
  t->max_depth = r->max_depth;
  t->scoped = r->scoped;
  t->heap_idx = -1;
  atomic_init(&t->stop, STOP_NONE);
  return t;
}

/* One request of an enqueue while it is placed (under app->mu). */
typedef struct {
  lg_task *t;        /* the new task, placed; NULL when `had` answers it */
  lg_task *had;      /* the task its idempotency key already names */
  lg_counter *count; /* its run tree's descendant counter, counted */
  int budgeted;      /* counted by its tree's budget (lg_budget_admit_locked) */
  char id[40];       /* the new task's id, for after the lock */
} placing;

/* Undo place_locked for a task placed last (placements are undone newest
 * first, so the sequence number and the sibling list unwind in order). */
static void unplace_locked(lg_app *a, placing *p) {
  lg_task *t = p->t;
  if (t->parent) {
    for (lg_task **pp = &t->parent->first_child; *pp; pp = &(*pp)->next_sibling) {
      if (*pp == t) {
        *pp = t->next_sibling;
        break;
      }
    }
    t->next_sibling = NULL;
  }
  if (p->count) {
    p->count->n--;
    lg_counter_detach(a, t);
  }
  lg_task_remove(a, t);
  if (!a->shared) lg_aq_remove(t->aq, t);
  if (p->budgeted) lg_budget_unadmit_locked(a, t->root_key);
  a->next_seq--;
}

/* Under app->mu: every check of one request, then the task placed in the
 * table, its agent's queue and its tree; nothing has left for observers
 * yet (no event, no record, no store write, not counted in queued or busy).
 * placed: tasks of the same enqueue placed before it (not yet counted in
 * a->queued); vqueued: how many of them a single enqueue each would have
 * left queued (the others it would have started). 0 placed, 1 answered by an earlier task with its
 * idempotency key (p->had), -1 refused (err; nothing of it is left). */
static int place_locked(lg_app *a, lg_task *parent, const lg_enqueue_req *r, lg_task *t,
                        int placed, int vqueued, placing *p, lg_err *err) {
  lg_counter *count = NULL; /* the run tree's, when it has one */
  if (parent && parent->retired) {
    /* code of a task the watchdog finished, running on regardless */
    lg_err_set(err, "rejected", "the calling task is finished (its worker was retired)");
    return -1;
  }
  if (!parent && r->parent_id) parent = lg_task_find(a, r->parent_id); /* admitted on the host */
  if (parent && TS_TERMINAL(parent->status)) parent = NULL;
  if (r->idempotency_key) {
    lg_task *had = lg_idem_find(a, parent ? parent->id : NULL, r->idempotency_key);
    if (had && !lg_idem_matches(had, r)) {
      lg_err_set(err, "conflict", "idempotency_key %s already names task %s, made by another "
                 "request (kind, agent, tool and arguments or prompt must match)",
                 r->idempotency_key, had->id);
      return -1;
    }
    if (had) {
      p->had = had;
      return 1;
    }
    t->idem_key = lg_strdup(r->idempotency_key);
    if (!t->idem_key) {
      lg_err_set(err, "runtime", "out of memory");
      return -1;
    }
  }
  t->parent = parent;
  t->parent_task_id = lg_strdup(parent ? parent->id : NULL);
  t->root_task_id = lg_strdup(parent ? parent->root_task_id : t->id);
  t->root_key = lg_strdup(r->root_key ? r->root_key : parent ? parent->root_key : t->id);
  t->timeout_s = r->timeout_s >= 0 ? r->timeout_s : a->cfg.default_timeout_s;
  t->stale_ms = r->stale_after_s > 0 ? (int64_t)(r->stale_after_s * 1000.0) : 0;
  t->max_retries = r->retries >= 0 ? r->retries : a->cfg.default_retries;
  t->priority = r->priority != LLONG_MIN ? r->priority : parent ? parent->priority : 0;
  t->max_depth = r->max_depth;
  if (t->max_depth < 0 && parent) t->max_depth = parent->max_depth;
  if (parent && parent->max_depth >= 0 && t->depth > parent->max_depth) {
    lg_err_set(err, "limit", "depth %d would exceed max_depth (%d)", t->depth, parent->max_depth);
    return -1;
  }
  if (!t->agent_id || !t->run_id || !t->root_task_id || !t->root_key) {
    lg_err_set(err, "runtime", "out of memory");
    return -1;
  }
  /* depth and fan-out limits */
  if (t->depth > a->cfg.max_depth) {
    lg_err_set(err, "limit", "depth %d would exceed max_depth (%d)", t->depth, a->cfg.max_depth);
    return -1;
  }
  if (r->root_key || parent) {
    count = lg_counter_get(a, t->root_key);
    if (count && count->n >= a->cfg.max_descendants) {
      lg_err_set(err, "limit", "max_descendants (%d) reached for this run tree",
              a->cfg.max_descendants);
      goto fail;
    }
  }
  /* the enqueue order is 64-bit and never wraps: at its limit (2^64
   * enqueues) new work is refused rather than ordered wrongly */
  if (a->next_seq == UINT64_MAX) {
    lg_err_set(err, "limit", "the app ran out of task sequence numbers");
    goto fail;
  }
  lg_agentq *q = lg_aq_get(a, t->agent_id);
  if (!q) {
    lg_err_set(err, "runtime", "out of memory");
    goto fail;
  }
  /* backpressure (the agent's queue already holds this enqueue's
   * earlier tasks; the app's count does not yet) */
  if (a->cfg.reject) {
    if (a->holders + a->queued + placed >= a->cfg.global_concurrency) {
      lg_err_set(err, "rejected", "global_concurrency (%d) reached", a->cfg.global_concurrency);
      goto fail;
    }
    if (q->holders + q->n >= a->cfg.per_agent_concurrency) {
      lg_err_set(err, "rejected", "per_agent_concurrency (%d) reached for agent '%s'",
              a->cfg.per_agent_concurrency, t->agent_id);
      goto fail;
    }
  } else if (a->queued + vqueued >= a->cfg.max_queue) {
    lg_err_set(err, "rejected", "max_queue (%d) reached", a->cfg.max_queue);
    goto fail;
  }
  /* a tree budget: spent trees start nothing more (core/budget.c) */
  if (r->root_key || parent) {
    if (lg_budget_admit_locked(a, t->root_key, err) != 0) goto fail;
    p->budgeted = 1;
  }
  /* everything the heap orders by is set before the push */
  t->aq = q;
  t->seq = a->next_seq++;
  t->status = TS_QUEUED;
  t->phase = PH_QUEUED;
  t->enqueued_at = lg_wall_ms();
  t->boost = inherited_boost(parent);
  /* a shared store's queue is the database: the task runs in whichever
   * process claims it (recovery.c, lg_cluster_admit), this one included */
  if (a->shared) t->phase = PH_REMOTE;
  if (!a->shared && lg_aq_push(q, t) != 0) {
    lg_err_set(err, "runtime", "out of memory");
    goto unseq;
  }
  if (lg_task_insert(a, t) != 0) {
    if (!a->shared) lg_aq_remove(q, t);
    lg_err_set(err, "runtime", "out of memory");
    goto unseq;
  }
  if (count) {
    count->n++;
    lg_counter_attach(count, t);
    p->count = count;
  }
  if (parent) {
    t->next_sibling = parent->first_child;
    parent->first_child = t;
    if (a->shared) lg_cluster_poke(a); /* its end matters to the parent here */
  }
  p->t = t;
  memcpy(p->id, t->id, sizeof p->id);
  return 0;
unseq:
  a->next_seq--;
fail:
  if (p->budgeted) lg_budget_unadmit_locked(a, t->root_key);
  p->budgeted = 0;
  if (count) lg_counter_drop_unused(a, count);
  return -1;
}

/* Under app->mu: a placed task goes live and is announced: counted, its
 * tree budget defined, its record written to out, its task_enqueued event
 * and callback queued, its record's store write queued. */
static void announce_locked(lg_app *a, lg_task *t, const lg_enqueue_req *r, buf_t *out) {
  if (!a->shared) {
    a->queued++;
    a->busy++;
    t->live = 1;
  }
  if (r->tree_budget && !t->parent && !r->root_key)
    lg_budget_define_locked(a, t->id, r->tree_budget, 1);
  lg_record_json(t, out);
  /* "enqueued <kind> <agent or tool>", cut to fit as snprintf would */
  char summary[96];
  const char *what = t->kind == TK_AGENT ? t->agent_id : (t->tool ? t->tool : "");
  const char *head = t->kind == TK_AGENT ? "enqueued agent " : "enqueued tool ";
  size_t hn = strlen(head), wn = strlen(what);
  if (wn > sizeof summary - 1 - hn) wn = sizeof summary - 1 - hn;
  memcpy(summary, head, hn);
  memcpy(summary + hn, what, wn);
  summary[hn + wn] = '\0';
  buf_t pl;
  lg_buf_init(&pl);
  lg_buf_reserve(&pl, 256);
  enqueued_payload(t, &pl);
  lg_task_event(a, t, "task_enqueued", pl.oom || !pl.p ? "{}" : pl.p, summary);
  lg_buf_free(&pl);
  lg_queue_callback(a, W_ENQUEUED, "task_enqueued", t);
  lg_persist(a, t);
}

int lg_enqueue_many(lg_app *a, lg_task *parent, const lg_enqueue_req *rs, int n, buf_t *out,
                    size_t *ends, int *bad, lg_err *err) {
  *bad = -1;
  if (n <= 0) return 0;
  /* ps[i]: request i while it is placed; ts[i]: its task while no one else
   * owns it (freed at the end: refused, or answered by an earlier task) */
  placing one_p;
  lg_task *one_t = NULL;
  placing *ps = n == 1 ? &one_p : calloc((size_t)n, sizeof *ps);
  lg_task **ts = n == 1 ? &one_t : calloc((size_t)n, sizeof *ts);
  if (!ps || !ts) {
    if (n > 1) {
      free(ps);
      free(ts);
    }
    lg_err_set(err, "runtime", "out of memory");
    return -1;
  }
  if (n == 1) memset(&one_p, 0, sizeof one_p);
  int rc = -1;
  for (int i = 0; i < n; i++) {
    ts[i] = task_new(&rs[i]);
    if (!ts[i]) {
      lg_err_set(err, "runtime", "out of memory");
      goto done;
    }
  }
  pthread_mutex_lock(&a->mu);
  lg_evict_finished(a);
  if (a->closing) {
    lg_err_set(err, "rejected", "the app is closed");
    pthread_mutex_unlock(&a->mu);
    goto done;
  }
  /* caps count what single enqueues would have started meanwhile: from a
   * state where nothing queued is startable (lg_would_admit) */
  if (n > 1) lg_schedule(a);
  int placed = 0, fresh = 0, nplaced = 0, vqueued = 0, taken = 0;
  for (; placed < n; placed++) {
    int pr = place_locked(a, parent, &rs[placed], ts[placed], nplaced, vqueued, &ps[placed], err);
    if (pr < 0) break;
    if (pr == 0) {
      lg_task *t = ts[placed];
      ts[placed] = NULL;
      fresh++;
      if (a->shared) continue;
      nplaced++;
      if (lg_would_admit(a, t, taken)) {
        taken++;
        t->aq->batch_taken++;
      } else {
        vqueued++;
      }
    }
  }
  for (int i = 0; i < placed; i++)
    if (ps[i].t) ps[i].t->aq->batch_taken = 0;
  if (placed < n) {
    /* all or nothing: what this enqueue placed is taken back, newest first */
    *bad = placed;
    for (int i = placed - 1; i >= 0; i--) {
      if (ps[i].t) {
        unplace_locked(a, &ps[i]);
        ts[i] = ps[i].t;
        ps[i].t = NULL;
      }
    }
    pthread_mutex_unlock(&a->mu);
    goto done;
  }
  /* one store commit for the whole enqueue: the writer takes none of it
   * before all of it is queued */
  lg_store *st = fresh > 0 ? a->store : NULL; /* only tasks found by their keys: nothing to write */
  lg_store_hold(st);
  lg_buf_reserve(out, (size_t)n * 512);
  for (int i = 0; i < n; i++) {
    if (ps[i].t) announce_locked(a, ps[i].t, &rs[i], out);
    else lg_record_json(ps[i].had, out);
    if (ends) ends[i] = out->len;
  }
  uint64_t ticket = lg_store_ticket(st);
  lg_store_release(st);
  lg_schedule(a);
  pthread_mutex_unlock(&a->mu);
  /* durable before enqueue returns; the commit is not under our lock */
  char msg[300];
  if (lg_store_sync(st, ticket, msg, sizeof msg) != 0) {
    /* not in the store: the caller is told, and the tasks do not go on
     * running as if they had been accepted */
    pthread_mutex_lock(&a->mu);
    for (int i = 0; i < n; i++) {
      if (!ps[i].t) continue;
      lg_task *x = lg_task_find(a, ps[i].id);
      if (x && !TS_TERMINAL(x->status)) {
        lg_stop_task(a, x, STOP_CANCEL);
        if (!TS_TERMINAL(x->status)) lg_set_error(x, "store", msg);
      }
    }
    pthread_mutex_unlock(&a->mu);
    lg_buf_reset(out);
    lg_err_set(err, "store", "%s", msg);
    goto done;
  }
  rc = 0;
done:
  for (int i = 0; i < n; i++)
    if (ts[i]) lg_task_free(ts[i]);
  if (n > 1) {
    free(ps);
    free(ts);
  }
  return rc;
}

int lg_enqueue(lg_app *a, lg_task *parent, const lg_enqueue_req *r, buf_t *out, lg_err *err) {
  int bad;
  return lg_enqueue_many(a, parent, r, 1, out, NULL, &bad, err);
}

/* ----------------------------------------------------------------- stats */

/* Without app->mu: the counters are atomics the scheduler writes under it.
 * idle reads `busy` first: a task queues its task_finished callback before
 * it stops counting as busy, so idle is never seen with work left. */
void lg_get_stats(lg_app *a, lg_stats *s) {
  int busy = a->busy;
  int pending_host = lg_host_work_pending(a);
  /* running: slot holders; waiting: running tasks that lent their slot
   * (waiting, queued to take a slot back, or unwinding after a cancel) */
  s->queued = a->queued;
  s->running = a->holders;
  s->waiting = a->running_n - s->running;
  if (s->waiting < 0) s->waiting = 0;
  s->workers = a->nworkers;
  s->lent_slots = s->waiting;
  s->host_calls_pending = a->host_calls_pending;
  s->idle = busy == 0 && s->host_calls_pending == 0 && pending_host == 0;
  for (int i = 0; i < 6; i++) s->finished[i] = a->finished[i];
  pthread_mutex_lock(&a->log.ev_mu);
  s->usage = a->usage;
  s->last_seq = a->log.next_event_seq - 1;
  pthread_mutex_unlock(&a->log.ev_mu);
  s->in_memory = (long long)a->tasks.ntasks;
  s->threads = a->live_threads;
  s->host_wakes = (long long)lg_ev_host_wakes(&a->log);
}


/* --------------------------------------------------------------- close */

int lg_close(lg_app *a, int mode, double grace_s, int wait) {
  pthread_mutex_lock(&a->mu);
  if (!a->closing) {
    a->closing = 1;
    int reason = mode == CLOSE_SUSPEND ? STOP_CLOSE_SUSPEND : STOP_CLOSE_CANCEL;
    for (size_t i = 0; i < a->tasks.tab_cap; i++) {
      for (lg_task *t = a->tasks.tab[i]; t; t = t->hnext) {
        if (TS_TERMINAL(t->status) || t->phase == PH_REMOTE) continue; /* not ours to stop */
        if (t->phase == PH_QUEUED || t->phase == PH_RETRY) {
          if (mode == CLOSE_CANCEL) lg_stop_task(a, t, reason);
        } else {
          lg_stop_task(a, t, reason);
        }
      }
    }
    for (lg_worker *w = a->workers; w; w = w->next) lg_worker_wake(w);
    lg_watchdog_poke(a); /* it leaves */
    lg_cluster_flush_cancels(a); /* cancels asked of other processes go out first */
    lg_cluster_poke(a);  /* and the watcher of other processes' tasks leaves */
    lg_bump(a);
  }
  int64_t deadline = lg_mono_ms() + (int64_t)(grace_s * 1000.0);
  while (wait && a->live_threads > 0 && lg_mono_ms() < deadline)
    lg_cond_wait_until(&a->workers_cv, &a->mu, deadline);
  int all = a->live_threads == 0;
  a->closed = 1;
  lg_store *st = all && wait ? a->store : NULL;
  pthread_mutex_unlock(&a->mu);
  /* flush and release the lock file, so the next app can open the store;
   * with a worker still stuck, the store stays open until the app is freed */
  lg_store_close(st);
  return all;
}

/* -------------------------------------------------------- worker side */

/* How long an idle worker keeps looking for its next task before it sleeps
 * on its condition variable (docs/architecture.md, "Locks"). A host that
 * enqueues one task at a time hands each to a worker that is still awake:
 * no futex wake-up and no context switch per task. One worker at a time
 * looks, only with a second CPU for the host, and it yields while it looks;
 * a look that found nothing makes the worker skip the next SPIN_SKIP, so a
 * worker whose tasks come seldom (model calls) does not burn CPU. */
#define SPIN_NS 50000
#define SPIN_SKIP 8

static int spin_allowed(const lg_app *a, lg_worker *w) {
  if (w->spin_skip > 0) {
    w->spin_skip--;
    return 0;
  }
  static atomic_int cpus; /* 0 until read */
  int n = atomic_load(&cpus);
  if (n == 0) {
    long c = sysconf(_SC_NPROCESSORS_ONLN);
    n = c > 1 ? (int)c : 1;
    atomic_store(&cpus, n);
  }
  return n > 1 && !a->spinner;
}

/* Look for work without the lock for up to SPIN_NS; mu held on entry and
 * return. What changed is found by the caller's loop. */
static void spin_for_work(lg_app *a, lg_worker *w) {
  atomic_store(&w->nudged, 0);
  a->spinner = w;
  pthread_mutex_unlock(&a->mu);
  int64_t until = lg_mono_ns() + SPIN_NS;
  for (unsigned i = 1; !atomic_load(&w->nudged); i++) {
    if (i % 64 == 0) {
      if (lg_mono_ns() >= until) break;
      sched_yield(); /* the host goes first if it wants this CPU */
    }
  }
  pthread_mutex_lock(&a->mu);
  a->spinner = NULL;
  if (!w->task) w->spin_skip = SPIN_SKIP;
}

lg_task *lg_worker_next(lg_worker *w) {
  lg_app *a = w->app;
  pthread_mutex_lock(&a->mu);
  w->busy_since = 0;
  int spun = 0;
  for (;;) {
    if (atomic_load(&w->retired)) break; /* its task was finished without it */
    if (w->task) {
      lg_task *t = w->task;
      pthread_mutex_unlock(&a->mu);
      return t;
    }
    if (a->closing || w->exiting) break;
    if (!w->idle) {
      w->idle = 1;
      a->nidle++;
      w->idle_since = lg_mono_ms();
      lg_schedule(a); /* a free thread may admit a task held back by thread_ok */
      if (w->task) continue;
    }
    int64_t idle_deadline = w->idle_since + (int64_t)(a->cfg.worker_idle_s * 1000.0);
    int64_t now = lg_mono_ms();
    if (now >= idle_deadline && !(a->retry_head && a->nidle == 1)) break;
    if (!spun && !a->closing && !w->exiting && spin_allowed(a, w)) {
      spun = 1;
      spin_for_work(a, w);
      continue;
    }
    lg_cond_wait_until(&w->cv, &a->mu, lg_min_deadline(idle_deadline, lg_next_retry_mono(a)));
    if (a->retry_head) lg_schedule(a);
  }
  /* Leaving: off the list before the state is closed (its finalizers may
   * take long), so a fresh worker can start meanwhile. */
  w->exiting = 1;
  lg_worker_unlink(a, w);
  lg_schedule(a);
  lg_bump(a);
  pthread_mutex_unlock(&a->mu);
  return NULL;
}

int64_t lg_task_deadline(const lg_task *t) { return t->deadline_mono; }

void lg_task_heartbeat(lg_task *t) {
  if (t) lg_stall_touch(t);
}

static int64_t backoff_ms(const lg_app *a, int attempt) {
  double base = a->cfg.retry_backoff_s * 1000.0;
  double d = base * pow(2.0, attempt > 1 ? attempt - 1 : 0);
  double cap = a->cfg.retry_backoff_max_s * 1000.0;
  if (d > cap) d = cap;
  /* jitter: 80%..120% */
  /* jitter from the clock and the attempt: no shared PRNG state */
  uint64_t x = (uint64_t)lg_mono_ms() * 0x9E3779B97F4A7C15ULL + (uint64_t)attempt;
  x ^= x >> 29;
  d *= 0.8 + 0.4 * ((double)(x % 1000) / 1000.0);
  return (int64_t)d;
}

/* An agent task's record says how its run ended (completed, budget_exceeded,
 * stopped, failed) next to the task status, which only says the run
 * returned; it always matches the AgentResult kept in result. */
static void set_run_status(lg_task *t, const lg_outcome *o) {
  if (t->kind != TK_AGENT) return;
  snprintf(t->run_status, sizeof t->run_status, "%s", o->run_status ? o->run_status : "");
}

/* A failed attempt's children stop with it, except those
 * with an idempotency key: the next attempt re-attaches to them by the same
 * key instead of starting them again (README, "Idempotent enqueues"). */
static void cascade_unkeyed(lg_app *a, lg_task *t) {
  for (lg_task *c = t->first_child; c; c = c->next_sibling) {
    if (c->idem_key) continue; /* it and what it started run on */
    if (!TS_TERMINAL(c->status)) lg_stop_task(a, c, STOP_CANCEL);
    lg_cascade(a, c);
  }
}

/* back to the queue after a backoff; never `failed` in between.
 * What the failed attempt started without a key stops with it, so the next
 * attempt does not find — and duplicate — a half-done fan-out; what it
 * started with one is found again by the next attempt's enqueues. */
static void retry_later(lg_app *a, lg_task *t) {
  cascade_unkeyed(a, t);
  t->status = TS_QUEUED;
  t->phase = PH_RETRY;
  t->retry_at = lg_wall_ms() + backoff_ms(a, t->attempts);
  t->lnext = a->retry_head;
  a->retry_head = t;
  a->queued++;
  buf_t p;
  lg_buf_init(&p);
  lg_buf_addf(&p, "{\"attempt\":%d,\"retry_in_ms\":%lld", t->attempts,
              (long long)(t->retry_at - lg_wall_ms()));
  lg_add_error(&p, t);
  lg_buf_addc(&p, '}');
  char summary[128];
  snprintf(summary, sizeof summary, "retry after: %s", t->error_message);
  lg_task_event(a, t, "task_retry", p.oom ? "{}" : p.p, summary);
  lg_buf_free(&p);
  lg_queue_callback(a, W_RETRY, "task_retry", t);
  lg_persist(a, t);
  lg_bump(a);
}

void lg_worker_done(lg_worker *w, lg_task *t, const lg_outcome *o) {
  lg_app *a = w->app;
  pthread_mutex_lock(&a->mu);
  if (atomic_load(&w->retired)) {
    /* the watchdog finished the task: what came back is ignored */
    pthread_mutex_unlock(&a->mu);
    return;
  }
  a->busy_deferred = 0;
  w->task = NULL;
  w->busy_since = lg_mono_ms(); /* until lg_worker_next: the watchdog sees a stuck GC step */
  t->worker = NULL;
  lg_give_slot(a, t);
  a->running_n--;
  lg_release_claims(a, t);
  /* code that raised luagent's cancel error itself cancelled its task */
  if (o->raised_stop) {
    int none = STOP_NONE;
    if (atomic_compare_exchange_strong(&t->stop, &none, STOP_CANCEL)) t->cancel_requested = 1;
  }
  int stop = atomic_load(&t->stop);
  if (o->usage_json) {
    free(t->usage_json);
    t->usage_json = lg_strdup(o->usage_json);
  }
  if (stop == STOP_CLOSE_SUSPEND) {
    /* R-25a: back to the queue without spending an attempt */
    t->status = TS_QUEUED;
    t->attempts--;
    t->started_at = 0;
    atomic_store(&t->stop, STOP_NONE);
    a->queued++;
    lg_requeue(a, t);
    lg_task_event(a, t, "task_suspended", "{}", "suspended by close");
    lg_persist(a, t);
  } else if (stop == STOP_STALL) {
    char m[160];
    lg_stall_message(t, m, sizeof m);
    lg_set_error(t, "stalled", m);
    if (t->attempts <= t->max_retries && !a->closing) {
      atomic_store(&t->stop, STOP_NONE);
      retry_later(a, t);
    } else {
      lg_finish_task(a, t, TS_TIMED_OUT);
    }
  } else if (stop != STOP_NONE) {
    if (o->ok && o->result_json) t->late_result_json = lg_strdup(o->result_json);
    if (stop == STOP_TIMEOUT) {
      char m[96];
      snprintf(m, sizeof m, "timed out after %gs", t->timeout_s);
      lg_set_error(t, "timeout", m);
      lg_finish_task(a, t, TS_TIMED_OUT);
    } else {
      lg_set_error(t, "cancelled",
                stop == STOP_CLOSE_CANCEL ? "cancelled: the app was closed" : "cancelled");
      lg_finish_task(a, t, TS_CANCELLED);
    }
  } else if (o->ok && o->agent_status != TS_FAILED) {
    free(t->result_json);
    t->result_json = lg_strdup(o->result_json ? o->result_json : "null");
    set_run_status(t, o);
    if (o->error_kind) {
      lg_set_error(t, o->error_kind, o->error_message);
      t->error_status = o->error_status;
    } else {
      free(t->error_kind);
      free(t->error_message);
      t->error_kind = t->error_message = NULL;
    }
    lg_finish_task(a, t, TS_COMPLETED);
  } else {
    if (o->ok) {
      free(t->result_json);
      t->result_json = lg_strdup(o->result_json);
      set_run_status(t, o);
    }
    lg_set_error(t, o->error_kind ? o->error_kind : "runtime",
              o->error_message ? o->error_message : "task failed");
    t->error_status = o->error_status;
    if (t->attempts <= t->max_retries && !a->closing) {
      retry_later(a, t);
    } else {
      lg_finish_task(a, t, TS_FAILED);
    }
  }
  lg_schedule(a);
  lg_evict_finished(a);
  if (a->busy_deferred > 0) {
    a->busy -= a->busy_deferred;
    lg_bump(a); /* a host waiting for idle looks again */
  }
  a->busy_deferred = -1;
  pthread_mutex_unlock(&a->mu);
}

void lg_worker_exit(lg_worker *w) {
  lg_app *a = w->app;
  pthread_mutex_lock(&a->mu);
  lg_worker_unlink(a, w);
  if (w->task) {
    /* retired: its finished task may leave memory now that nothing reads it */
    w->task->worker = NULL;
    lg_evict_sync(a, w->task);
    w->task = NULL;
    lg_evict_finished(a);
  }
  a->live_threads--;
  pthread_cond_broadcast(&a->workers_cv);
  /* a thread left: work held back for want of threads may now start */
  lg_schedule(a);
  lg_bump(a);
  pthread_mutex_unlock(&a->mu);
  pthread_cond_destroy(&w->cv);
  pthread_cond_destroy(&w->hcv);
  free(w);
  lg_app_release(a);
}

int lg_task_sleep(lg_worker *w, double seconds) {
  lg_app *a = w->app;
  lg_task *t = w->task;
  int64_t end = lg_mono_ms() + (int64_t)(seconds * 1000.0);
  pthread_mutex_lock(&a->mu);
  int stop = 0;
  w->in_core = 1;
  lg_stall_pause(t);
  while (!(stop = lg_task_should_stop(t)) && lg_mono_ms() < end) {
    if (lg_task_interrupted(t)) {
      stop = 2; /* a message cut the step short (steer.c) */
      break;
    }
    lg_cond_wait_until(&w->cv, &a->mu, lg_min_deadline(end, t->deadline_mono));
  }
  w->in_core = 0;
  lg_stall_resume(t);
  pthread_mutex_unlock(&a->mu);
  return stop;
}

/* Give the slot back while waiting and take one back after. */
static void begin_wait(lg_app *a, lg_task *t, const char *what) {
  lg_give_slot(a, t);
  t->phase = PH_WAITING;
  a->waiting++;
  lend(a, t);
  char summary[96];
  snprintf(summary, sizeof summary, "waiting on %s", what);
  lg_task_event(a, t, "task_waiting", "{}", summary);
  lg_persist(a, t);
  lg_schedule(a);
}

/* Returns 1 if the task must stop instead of resuming. */
static int end_wait(lg_app *a, lg_worker *w, lg_task *t) {
  a->waiting--;
  if (lg_task_should_stop(t)) {
    t->phase = PH_UNWINDING;
    return 1;
  }
  t->phase = PH_RESUMING;
  t->lnext = NULL;
  if (a->resume_tail)
    a->resume_tail->lnext = t;
  else
    a->resume_head = t;
  a->resume_tail = t;
  a->resuming_n++;
  lg_schedule(a);
  while (t->phase == PH_RESUMING) {
    if (lg_task_should_stop(t)) {
      lg_resume_unlink(a, t);
      t->phase = PH_UNWINDING;
      return 1;
    }
    lg_cond_wait_until(&w->cv, &a->mu, t->deadline_mono);
  }
  /* stop_task took it off the resume list: it holds no slot, so it must
   * unwind instead of running on */
  if (t->phase != PH_ASSIGNED) return 1;
  lg_task_event(a, t, "task_resumed", "{}", "resumed");
  return 0;
}

/* Block the worker's task on a wait (lending its slot, R-27) until the wait
 * is over, timeout_s passes (< 0: no limit) or the task must stop. */
int lg_task_block(lg_worker *w, lg_wait *wt, double timeout_s) {
  lg_app *a = w->app;
  lg_task *t = w->task;
  pthread_mutex_lock(&a->mu);
  int stop = lg_task_should_stop(t);
  if (!lg_wait_over(wt) && !stop) {
    char **ids;
    int n = lg_wait_ids(wt, &ids);
    t->wait_ids = ids; /* borrowed from the wait for lending and records */
    t->wait_n = n;
    t->wait_any = lg_wait_any(wt);
    lg_wait_set_worker(wt, w);
    w->in_core = 1;
    lg_stall_pause(t);
    char what[64];
    snprintf(what, sizeof what, "%d task%s", n, n == 1 ? "" : "s");
    begin_wait(a, t, what);
    int64_t end = timeout_s >= 0 ? lg_mono_ms() + (int64_t)(timeout_s * 1000.0) : 0;
    int interrupted = 0;
    while (!(stop = lg_task_should_stop(t)) && !lg_wait_over(wt)) {
      if (end && lg_mono_ms() >= end) break;
      if ((interrupted = lg_task_interrupted(t))) break; /* steer.c */
      lg_cond_wait_until(&w->cv, &a->mu, lg_min_deadline(end, t->deadline_mono));
    }
    lg_wait_set_worker(wt, NULL);
    t->wait_ids = NULL;
    t->wait_n = 0;
    stop = end_wait(a, w, t);
    if (!stop && interrupted) stop = 2;
    w->in_core = 0;
    lg_stall_resume(t);
  }
  pthread_mutex_unlock(&a->mu);
  return stop;
}

int lg_task_wait(lg_worker *w, char **ids, int n, int any, double timeout_s, buf_t *out,
                 lg_err *err) {
  lg_wait *wt = lg_wait_begin(w->app, w->task, ids, n, any, err);
  if (!wt) return -1;
  int stop = lg_task_block(w, wt, timeout_s);
  if (!stop) lg_wait_value(wt, 1, out);
  lg_wait_free(wt);
  return stop;
}

int lg_task_call_host(lg_worker *w, const char *name, const char *args_json, const char *ctx_json,
                      buf_t *out) {
  lg_app *a = w->app;
  lg_task *t = w->task;
  lg_host_item *it = calloc(1, sizeof *it);
  if (!it) return -1;
  it->type = HI_HOST_CALL;
  it->name = lg_strdup(name);
  it->json = lg_strdup(args_json);
  it->ctx_json = lg_strdup(ctx_json);
  it->waiter = &w->hcv;
  it->task = t;
  snprintf(it->task_id, sizeof it->task_id, "%s", t->id);
  pthread_mutex_lock(&a->mu);
  int stop = lg_task_should_stop(t);
  if (stop) {
    pthread_mutex_unlock(&a->mu);
    lg_host_item_free(it);
    return stop;
  }
  lg_stall_pause(t);
  t->host_call = it;
  a->host_calls_pending++;
  lg_hq_push(a, it);
  {
    char summary[96];
    buf_t p;
    lg_buf_init(&p);
    lg_buf_adds(&p, "{\"tool\":");
    lg_buf_add_jstr(&p, name, strlen(name));
    lg_buf_addc(&p, '}');
    snprintf(summary, sizeof summary, "host call %s", name);
    lg_task_event(a, t, "host_call", p.oom ? "{}" : p.p, summary);
    lg_buf_free(&p);
  }
  begin_wait(a, t, "the host");
  w->in_core = 1;
  pthread_mutex_unlock(&a->mu);
  /* the reply comes through the host queue's lock, not the scheduler's */
  stop = lg_hq_await_reply(a, w, it, t);
  pthread_mutex_lock(&a->mu);
  w->in_core = 0;
  a->host_calls_pending--;
  t->host_call = NULL;
  if (!stop && it->replied) lg_buf_adds(out, it->reply_json ? it->reply_json : "null");
  stop = end_wait(a, w, t) ? 1 : stop;
  lg_stall_resume(t);
  lg_bump(a);
  pthread_mutex_unlock(&a->mu);
  lg_host_item_free(it);
  return stop;
}

/* What the worker's Lua entry gets: the record with its internal fields
 * (root_key, max_depth); `attempts` counts the attempt now starting. */
void lg_task_info(lg_app *a, lg_task *t, buf_t *out) {
  pthread_mutex_lock(&a->mu);
  lg_task_brief_json(t, out);
  pthread_mutex_unlock(&a->mu);
}
