/* Finished tasks leaving memory (background_tasks.keep_finished), so a host
 * that runs for days, or a million tasks, does not grow without bound: at
 * most `max` finished tasks stay, and none longer than `ttl_s` after it
 * could leave. Oldest first, in the order tasks became free to leave: a
 * task stays while a wait in progress is on it, while a notice has claimed
 * it or its runs hold claims, while its worker runs on (retired), and until
 * it is announced if an agent run started it. A file store keeps the
 * records (per store.retention); only memory forgets.
 *
 * The tasks free to leave are kept on a list in that order, so making room
 * never scans the task table: lg_evict_sync() puts a task on the list or
 * takes it off whenever something it depends on changes, and
 * lg_evict_finished() drops from the head. Callers hold app->mu;
 * lg_evict_finished() frees tasks, so it runs only where no caller holds a
 * pointer to a finished task (the end of the public entry points). */
#include "dispatch_internal.h"

static int evictable(const lg_task *t) {
  return TS_TERMINAL(t->status) && !t->claimed && t->claims_held == 0 && !t->worker &&
         t->waited == 0 && (t->delivered || !t->scoped); /* announced first */
}

static void list_unlink(lg_app *a, lg_task *t) {
  if (t->eprev)
    t->eprev->enext = t->enext;
  else
    a->ehead = t->enext;
  if (t->enext)
    t->enext->eprev = t->eprev;
  else
    a->etail = t->eprev;
  t->enext = t->eprev = NULL;
  t->in_elist = 0;
}

static void list_append(lg_app *a, lg_task *t, int64_t since) {
  t->evictable_at = since;
  t->eprev = a->etail;
  t->enext = NULL;
  if (a->etail)
    a->etail->enext = t;
  else
    a->ehead = t;
  a->etail = t;
  t->in_elist = 1;
}

void lg_evict_sync(lg_app *a, lg_task *t) {
  int want = evictable(t);
  if (want && !t->in_elist) {
    /* a task restored from the store counts its age from when it ended */
    list_append(a, t, t->restored && t->finished_at > 0 ? t->finished_at : lg_wall_ms());
  } else if (!want && t->in_elist) {
    list_unlink(a, t);
  }
}

static void evict(lg_app *a, lg_task *t) {
  list_unlink(a, t);
  if (t->parent) {
    lg_task **pp = &t->parent->first_child;
    while (*pp && *pp != t) pp = &(*pp)->next_sibling;
    if (*pp) *pp = t->next_sibling;
  }
  for (lg_task *c = t->first_child; c; c = c->next_sibling) c->parent = NULL;
  lg_counter_detach(a, t);
  a->nfinished--;
  lg_task_remove(a, t);
  lg_task_free(t);
}

void lg_evict_finished(lg_app *a) {
  long max = a->cfg.keep_finished_max;
  double ttl = a->cfg.keep_finished_s;
  if (max < 0 && ttl < 0) return;
  int64_t cutoff = ttl >= 0 ? lg_wall_ms() - (int64_t)(ttl * 1000.0) : 0;
  while (a->ehead) {
    lg_task *t = a->ehead;
    int over = max >= 0 && a->nfinished > (size_t)max;
    int old = ttl >= 0 && t->evictable_at < cutoff;
    if (!over && !old) break;
    evict(a, t);
  }
}
