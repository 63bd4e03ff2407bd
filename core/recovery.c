/* The dispatcher's side of the store: every change of a record
 * is queued for the store through lg_persist() (sched.c, below this file,
 * since finishing a task writes it); the store is opened and attached, stored records are read back and restored, and lg_restore_done
 * re-queues or fails what was not finished. Thread state is here too, and
 * the claimed/delivered flags of finished children, since marking a
 * child delivered must reach the file before anyone acts on it. The I/O
 * itself is store.c; this file maps tasks to it. */
#include "dispatch_internal.h"
#include "store.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------- store and recovery */

/* A failed write reaches the host as an error log, not only the next
 * enqueue. The store is closed before the app is freed, so `a` is alive. */
static void store_failed(void *ud, const char *message) { lg_log(ud, "error", "%s", message); }

/* The event log's view of the store (dispatch_internal.h, lg_log_file). */
static void log_write(void *ud, int64_t seq, const char *task_id, const char *json) {
  lg_store_event(ud, seq, task_id, json);
}

static uint64_t log_ticket(void *ud) { return lg_store_ticket(ud); }

static int log_read(void *ud, uint64_t ticket, int64_t since, int64_t before, int limit, buf_t *out) {
  lg_store_sync(ud, ticket, NULL, 0);
  return lg_store_read_events(ud, since, before, limit, out);
}

static const lg_log_file store_log = {log_write, log_ticket, log_read};

int lg_app_open_store(lg_app *a, const char *path, const lg_store_opts *opts, lg_err *err) {
  char msg[sizeof err->message];
  lg_store_opts o = *opts;
  o.on_error = store_failed;
  o.ud = a;
  if (o.shared) { /* this process's name in leases and events */
    lg_make_id("node", a->node);
    o.node = a->node;
  }
  lg_store *st = lg_store_open(path, &o, msg, sizeof msg);
  if (!st) {
    lg_err_set(err, "store", "%s", msg);
    return -1;
  }
  pthread_mutex_lock(&a->mu);
  pthread_mutex_lock(&a->log.ev_mu); /* the event log writes to it too */
  a->store = st;
  a->shared = o.shared;
  a->log.log_file = &store_log;
  a->log.log_file_ud = st;
  pthread_mutex_unlock(&a->log.ev_mu);
  pthread_mutex_unlock(&a->mu);
  return 0;
}

lg_store *lg_app_store(lg_app *a) {
  pthread_mutex_lock(&a->mu);
  lg_store *st = a->store;
  pthread_mutex_unlock(&a->mu);
  return st;
}

/* Put a stored task back as it was written; lg_restore_done then applies
 * R-40 to the ones that were not finished. */
int lg_restore(lg_app *a, const lg_restore_req *r, lg_err *err) {
  lg_task *t = calloc(1, sizeof *t);
  if (!t) {
    lg_err_set(err, "store", "out of memory");
    return -1;
  }
  const lg_enqueue_req *e = &r->base;
  snprintf(t->id, sizeof t->id, "%s", r->task_id);
  t->kind = e->kind;
  t->agent_id = lg_strdup(e->agent_id ? e->agent_id : "host");
  t->parent_agent_id = lg_strdup(e->parent_agent_id);
  t->thread_id = lg_strdup(e->thread_id);
  t->tool = lg_strdup(e->tool);
  t->tool_call_id = lg_strdup(e->tool_call_id);
  t->run_id = lg_strdup(r->run_id);
  t->parent_run_id = lg_strdup(e->parent_run_id);
  t->parent_task_id = lg_strdup(r->parent_task_id);
  t->root_task_id = lg_strdup(r->root_task_id ? r->root_task_id : r->task_id);
  t->root_key = lg_strdup(e->root_key ? e->root_key : t->root_task_id);
  t->prompt = lg_strdup(e->prompt);
  t->args_json = lg_strdup(e->args_json);
  t->metadata_json = lg_strdup(e->metadata_json);
  t->result_json = lg_strdup(r->result_json);
  t->usage_json = lg_strdup(r->usage_json);
  t->usage = r->usage;
  t->tree_usage = r->tree_usage;
  t->error_kind = lg_strdup(r->error_kind);
  t->error_message = lg_strdup(r->error_message);
  t->error_status = r->error_status;
  if (r->run_status) snprintf(t->run_status, sizeof t->run_status, "%s", r->run_status);
  t->depth = e->depth;
  t->max_depth = e->max_depth;
  t->scoped = e->scoped;
  t->timeout_s = e->timeout_s;
  t->idem_key = lg_strdup(e->idempotency_key);
  t->stale_ms = e->stale_after_s > 0 ? (int64_t)(e->stale_after_s * 1000.0) : 0;
  t->max_retries = e->retries;
  t->priority = e->priority == LLONG_MIN ? 0 : e->priority;
  t->attempts = r->attempts;
  t->delivered = r->delivered;
  t->cancel_requested = r->cancel_requested;
  t->enqueued_at = r->enqueued_at;
  t->started_at = r->started_at;
  t->finished_at = r->finished_at;
  t->retry_at = r->retry_at;
  t->heap_idx = -1;
  atomic_init(&t->stop, STOP_NONE);
  if (r->messages_json && lg_inbox_restore(t, r->messages_json, strlen(r->messages_json)) != 0) {
    lg_err_set(err, "store", "cannot restore the messages of task %s", r->task_id);
    lg_task_free(t);
    return -1;
  }
  int st = lg_status_from_name(r->status ? r->status : "");
  t->status = st < 0 ? TS_QUEUED : st;
  t->phase = TS_TERMINAL(t->status) ? PH_DONE : PH_RECOVERING;
  pthread_mutex_lock(&a->mu);
  if (a->next_seq == UINT64_MAX || lg_task_find(a, t->id) || !(t->aq = lg_aq_get(a, t->agent_id)) ||
      lg_task_insert(a, t) != 0) {
    pthread_mutex_unlock(&a->mu);
    lg_err_set(err, "store", "cannot restore task %s", r->task_id);
    lg_task_free(t);
    return -1;
  }
  t->seq = a->next_seq++;
  t->parent = t->parent_task_id ? lg_task_find(a, t->parent_task_id) : NULL;
  if (t->parent) {
    t->next_sibling = t->parent->first_child;
    t->parent->first_child = t;
  }
  if (t->parent || (e->root_key && strcmp(e->root_key, t->id) != 0)) {
    lg_counter *count = lg_counter_get(a, t->root_key);
    if (count) {
      count->n++;
      lg_counter_attach(count, t);
    }
  }
  t->restored = 1;
  if (TS_TERMINAL(t->status)) {
    a->nfinished++;
    lg_evict_sync(a, t);
  }
  lg_id_floor(t->enqueued_at);
  pthread_mutex_unlock(&a->mu);
  return 0;
}

/* An attempt that was running when its process stopped: queued
 * again while attempts are left, else failed. 1 if it finished. */
static int lost_attempt(lg_app *a, lg_task *t, const char *why, const char *requeued) {
  char msg[160];
  if (t->attempts <= t->max_retries) {
    snprintf(msg, sizeof msg, "%s; queued again", why);
    lg_set_error(t, "lost", msg);
    t->status = TS_QUEUED;
    t->started_at = 0;
    lg_task_event(a, t, "task_recovered", "{\"requeued\":true}", requeued);
    return 0;
  }
  snprintf(msg, sizeof msg, "%s and no attempts were left", why);
  lg_set_error(t, "lost", msg);
  t->phase = PH_DONE;
  lg_finish_task(a, t, TS_FAILED);
  return 1;
}

/* queued tasks are queued again in order; running ones go back to
 * the queue while attempts remain, else fail with error.kind "lost". */
int64_t lg_restore_done(lg_app *a) {
  int64_t max_seq = lg_store_max_event_seq(a->store);
  pthread_mutex_lock(&a->mu);
  /* a damaged file may hold any number: never past the limit (events.c) */
  if (max_seq >= a->log.next_event_seq) a->log.next_event_seq = max_seq < INT64_MAX ? max_seq + 1 : INT64_MAX;
  lg_task **v = malloc((a->tasks.ntasks + 1) * sizeof *v);
  size_t n = 0;
  for (size_t i = 0; v && i < a->tasks.tab_cap; i++)
    for (lg_task *t = a->tasks.tab[i]; t; t = t->hnext)
      if (t->phase == PH_RECOVERING) v[n++] = t;
  if (v) qsort(v, n, sizeof *v, lg_cmp_seq);
  for (size_t i = 0; i < n; i++) {
    lg_task *t = v[i];
    if (TS_TERMINAL(t->status)) continue; /* finished meanwhile by a cascade */
    if (t->status == TS_RUNNING && t->cancel_requested) {
      /* the cancel was asked for and the process went away first: it
       * stopped, so it is cancelled, never run again */
      lg_set_error(t, "cancelled", "cancelled (the process stopped before the task did)");
      t->phase = PH_DONE;
      lg_finish_task(a, t, TS_CANCELLED);
      continue;
    }
    if (t->status == TS_RUNNING &&
        lost_attempt(a, t, "the process stopped while the task ran", "re-queued after a restart"))
      continue;
    a->queued++;
    a->busy++;
    t->live = 1;
    if (t->retry_at > 0 && t->retry_at > lg_wall_ms()) {
      t->phase = PH_RETRY;
      t->lnext = a->retry_head;
      a->retry_head = t;
    } else {
      t->retry_at = 0;
      lg_requeue(a, t);
    }
    lg_persist(a, t);
  }
  free(v);
  lg_schedule(a);
  lg_evict_finished(a);
  lg_bump(a);
  pthread_mutex_unlock(&a->mu);
  return max_seq;
}

/* ------------------------------------------------- the shared queue */

/* Free slots for claims: what this process would admit now. */
int lg_cluster_room(lg_app *a) {
  pthread_mutex_lock(&a->mu);
  int room = a->cfg.global_concurrency - a->holders - (int)a->queued;
  pthread_mutex_unlock(&a->mu);
  return room > 0 ? room : 0;
}

const char *lg_cluster_node(lg_app *a) { return a->node; }

/* A task this process claimed (docs/architecture.md, "Leases and fencing"):
 * it is in memory (enqueued here, or restored from the claimed record) and
 * joins the local queue with the claim's token, so every record it writes
 * from now on is fenced. A record that says running is an attempt whose
 * holder's lease ran out: R-40 applies as after a restart. `cancel`: one
 * asked for elsewhere; it is cancelled at once. 1 admitted, 0 not in
 * memory (restore it first), -1 already finished. */
int lg_cluster_admit(lg_app *a, const char *id, int64_t token, int cancel) {
  pthread_mutex_lock(&a->mu);
  lg_task *t = lg_task_find(a, id);
  int rc = !t ? 0 : TS_TERMINAL(t->status) ? -1 : 1;
  if (rc == 1 && t->phase != PH_REMOTE && t->phase != PH_RECOVERING) rc = -1; /* ours already */
  if (rc != 1) {
    pthread_mutex_unlock(&a->mu);
    return rc;
  }
  t->fence = token;
  if (t->status == TS_RUNNING &&
      lost_attempt(a, t, "the process running it stopped renewing its lease", "re-queued after a lapsed lease")) {
    pthread_mutex_unlock(&a->mu);
    return 1;
  }
  t->status = TS_QUEUED;
  t->retry_at = 0;
  a->queued++;
  a->busy++;
  t->live = 1;
  lg_requeue(a, t);
  /* another process asked for its cancel (its lease lapsed meanwhile, or
   * the claim came first): it ends here, never run again */
  if (cancel) lg_stop_task(a, t, STOP_CANCEL);
  lg_schedule(a);
  lg_bump(a);
  pthread_mutex_unlock(&a->mu);
  return 1;
}

/* The stored record of a task that is not in memory (it left after
 * keep_finished_s) and its status; -1 when there is no file store or no
 * such record. Called with app->mu held: a read on the store's own read
 * connection, by primary key. */
int lg_stored_record(lg_app *a, const char *id, buf_t *out, char status[16]) {
  size_t start = out->len;
  if (lg_store_read_task(a->store, id, out) != 0) return -1;
  const char *p = out->p ? strstr(out->p + start, "\"status\":\"") : NULL;
  snprintf(status, 16, "%s", "completed");
  if (p) {
    p += 10;
    const char *e = strchr(p, '"');
    if (e && e - p < 16) snprintf(status, 16, "%.*s", (int)(e - p), p);
  }
  return 0;
}

/* ------------------------------------------------------ threads, claims */

int lg_thread_get(lg_app *a, const char *key, buf_t *out) {
  return lg_store_read_thread(a->store, key, out);
}

int lg_thread_put(lg_app *a, const char *key, const char *json, lg_err *err) {
  pthread_mutex_lock(&a->mu);
  lg_store_thread(a->store, key, json);
  uint64_t ticket = lg_store_ticket(a->store);
  lg_store *st = a->store;
  pthread_mutex_unlock(&a->mu);
  char msg[256];
  if (lg_store_sync(st, ticket, msg, sizeof msg) != 0) {
    lg_err_set(err, "store", "%s", msg);
    return -1;
  }
  return 0;
}

/* finished children of a scope that no model call has carried yet,
 * oldest first; they are claimed so a concurrent run of the same scope does
 * not announce them too. lg_set_delivered or lg_unclaim ends the claim. */
static void end_claim(lg_app *a, lg_task *t) {
  lg_task *c = t->claimed_by;
  if (c) {
    c->claims_held--;
    if (t->cl_prev) t->cl_prev->cl_next = t->cl_next; else c->claims_head = t->cl_next;
    if (t->cl_next) t->cl_next->cl_prev = t->cl_prev;
  }
  t->cl_prev = t->cl_next = NULL;
  t->claimed = 0;
  t->claimed_by = NULL;
  lg_evict_sync(a, t);
  if (c) lg_evict_sync(a, c);
}

/* A task that ends (or is retried) gives back what its runs claimed: its Lua
 * may not have unwound far enough to do it (a cancel raises at every
 * instruction). */
void lg_release_claims(lg_app *a, lg_task *claimer) {
  while (claimer->claims_head) end_claim(a, claimer->claims_head);
  claimer->claims_held = 0;
  lg_evict_sync(a, claimer);
}

void lg_claim(lg_app *a, lg_task *claimer, const lg_filter *f, buf_t *out) {
  lg_filter cf = *f;
  cf.claimable = 1;
  pthread_mutex_lock(&a->mu);
  size_t n = 0;
  /* a finished claimer (its worker retired) would hold the claims forever */
  lg_task **v = claimer && claimer->retired ? NULL : lg_select_tasks(a, &cf, &n);
  lg_buf_addc(out, '[');
  for (size_t i = 0; i < n; i++) {
    if (i) lg_buf_addc(out, ',');
    v[i]->claimed = 1;
    v[i]->claimed_by = claimer;
    lg_evict_sync(a, v[i]); /* claimed: it stays */
    if (claimer) {
      claimer->claims_held++;
      v[i]->cl_prev = NULL;
      v[i]->cl_next = claimer->claims_head;
      if (claimer->claims_head) claimer->claims_head->cl_prev = v[i];
      claimer->claims_head = v[i];
    }
    lg_record_json(v[i], out);
  }
  lg_buf_addc(out, ']');
  free(v);
  pthread_mutex_unlock(&a->mu);
}

void lg_unclaim(lg_app *a, const char *id) {
  pthread_mutex_lock(&a->mu);
  lg_task *t = lg_task_find(a, id);
  if (t) end_claim(a, t);
  lg_evict_finished(a);
  pthread_mutex_unlock(&a->mu);
}

/* Mark tasks delivered; returns how many were found. R-33: the flags are in
 * the store (one commit for all) before anyone acts on them, so a restart
 * never announces a child again that was already delivered. */
static int deliver(lg_app *a, const char *const *ids, int n) {
  pthread_mutex_lock(&a->mu);
  int found = 0, changed = 0;
  for (int i = 0; i < n; i++) {
    lg_task *t = lg_task_find(a, ids[i]);
    found += t != NULL;
    if (t && !t->delivered) {
      t->delivered = 1;
      end_claim(a, t);
      lg_persist(a, t);
      changed = 1;
    }
  }
  lg_evict_finished(a); /* t is not used after this */
  lg_store *st = changed ? a->store : NULL;
  uint64_t ticket = lg_store_ticket(st);
  pthread_mutex_unlock(&a->mu);
  lg_store_sync(st, ticket, NULL, 0);
  return found;
}

void lg_set_delivered_many(lg_app *a, const char *const *ids, int n) { deliver(a, ids, n); }

int lg_set_delivered(lg_app *a, const char *id) { return deliver(a, &id, 1) > 0 ? 0 : -1; }
