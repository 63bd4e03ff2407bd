/* Token usage rolled up the task tree (README "Usage and cost"): each task
 * keeps the usage of its own model calls and its tree_usage (itself plus
 * every descendant), and the app keeps the total of all model calls,
 * foreground runs included. Runs report each model call as it returns
 * (runner.lua), so a parent's tree_usage is current while its children
 * still run. Tasks' usage is guarded by app->mu, the app total also by
 * app->ev_mu (so stats need not wait for the scheduler). */
#include "dispatch_internal.h"

#include <stdio.h>

static void usage_add(lg_usage *u, const lg_usage *d) {
  u->prompt += d->prompt;
  u->completion += d->completion;
  u->total += d->total;
  u->cached += d->cached;
  if (d->has_cost) {
    u->cost += d->cost;
    u->has_cost = 1;
  }
  u->estimated |= d->estimated;
  u->set = 1;
}

void lg_usage_roll_up(lg_app *a, lg_task *from, const lg_usage *d) {
  /* an ancestor another process runs keeps its own count (its holder's) */
  for (lg_task *p = from; p && p->phase != PH_REMOTE; p = p->parent) {
    usage_add(&p->tree_usage, d);
    lg_persist(a, p);
  }
}

int lg_add_usage(lg_app *a, const char *task_id, const lg_usage *d) {
  pthread_mutex_lock(&a->mu);
  pthread_mutex_lock(&a->log.ev_mu); /* the app total: stats reads it under ev_mu alone */
  usage_add(&a->usage, d);
  pthread_mutex_unlock(&a->log.ev_mu);
  lg_task *t = task_id ? lg_task_find(a, task_id) : NULL;
  if (t) {
    usage_add(&t->usage, d);
    lg_usage_roll_up(a, t, d);
  }
  lg_bump(a);
  pthread_mutex_unlock(&a->mu);
  return t || !task_id ? 0 : -1;
}
