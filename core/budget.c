/* Tree-wide budgets (README "Tree budgets"). Each budget counts the usage
 * every model call of its tree reports (the same reports that roll up into
 * tree_usage, core/usage.c) and the tasks the tree started. Once a limit is
 * spent, lg_enqueue refuses new tasks of the tree (kind "budget"), and with
 * stop_children the tree's runs end budget_exceeded before their next model
 * call (runner.lua asks lg_budget_spent). A budget leaves memory once its
 * root is done and no task of its tree is live. */
#include "budget.h"
#include "dispatch_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct lg_budget {
  char *key;
  lg_budget_limits l;
  int root_is_task, closed;
  int64_t started_mono;
  lg_usage used;
  long long tasks;
  lg_budget *next;
};

#define PRUNE_AT 256 /* budgets kept before finished trees' are looked for */

static lg_budget *find(lg_app *a, const char *key) {
  if (!key) return NULL;
  for (lg_budget *b = a->budgets; b; b = b->next)
    if (strcmp(b->key, key) == 0) return b;
  return NULL;
}

static int tree_live(lg_app *a, const lg_budget *b) {
  if (!b->closed) {
    if (!b->root_is_task) return 1;
    lg_task *root = lg_task_find(a, b->key);
    if (root && !TS_TERMINAL(root->status)) return 1;
  }
  for (size_t i = 0; i < a->tasks.tab_cap; i++)
    for (lg_task *t = a->tasks.tab[i]; t; t = t->hnext)
      if (!TS_TERMINAL(t->status) && t->root_key && strcmp(t->root_key, b->key) == 0) return 1;
  return 0;
}

static void prune(lg_app *a) {
  size_t n = 0;
  for (lg_budget *b = a->budgets; b; b = b->next) n++;
  if (n < PRUNE_AT) return;
  for (lg_budget **p = &a->budgets; *p;) {
    lg_budget *b = *p;
    if (!tree_live(a, b)) {
      *p = b->next;
      free(b->key);
      free(b);
    } else {
      p = &b->next;
    }
  }
}

void lg_budget_define_locked(lg_app *a, const char *key, const lg_budget_limits *l,
                             int root_is_task) {
  lg_budget *b = find(a, key);
  if (!b) {
    prune(a);
    b = calloc(1, sizeof *b);
    if (b) b->key = lg_strdup(key);
    if (!b || !b->key) {
      free(b);
      return;
    }
    b->next = a->budgets;
    a->budgets = b;
    b->started_mono = lg_mono_ms();
  }
  b->l = *l;
  b->root_is_task = root_is_task;
}

int lg_budget_define(lg_app *a, const char *key, const lg_budget_limits *l, int root_is_task) {
  pthread_mutex_lock(&a->mu);
  lg_budget_define_locked(a, key, l, root_is_task);
  int rc = find(a, key) ? 0 : -1;
  pthread_mutex_unlock(&a->mu);
  return rc;
}

static const char *spent(const lg_budget *b) {
  if (b->l.max_tokens >= 0 && b->used.total >= b->l.max_tokens) return "max_tokens";
  if (b->l.max_cost >= 0 && b->used.has_cost && b->used.cost >= b->l.max_cost) return "max_cost";
  if (b->l.max_wall_s >= 0 &&
      (double)(lg_mono_ms() - b->started_mono) / 1000.0 >= b->l.max_wall_s)
    return "max_wall_seconds";
  return NULL;
}

int lg_budget_admit_locked(lg_app *a, const char *key, lg_err *err) {
  lg_budget *b = find(a, key);
  if (!b) return 0;
  const char *why = spent(b);
  if (why) {
    lg_err_set(err, "budget", "the tree's budget is spent (tree_budget.%s): no new tasks", why);
    return -1;
  }
  if (b->l.max_tasks >= 0 && b->tasks >= b->l.max_tasks) {
    lg_err_set(err, "budget", "the tree's budget is spent (tree_budget.max_tasks = %lld tasks started)",
            b->l.max_tasks);
    return -1;
  }
  b->tasks++;
  return 0;
}

void lg_budget_unadmit_locked(lg_app *a, const char *key) {
  lg_budget *b = find(a, key);
  if (b && b->tasks > 0) b->tasks--;
}

void lg_budget_add_usage(lg_app *a, const char *key, const lg_usage *d) {
  pthread_mutex_lock(&a->mu);
  lg_budget *b = find(a, key);
  if (b) {
    b->used.prompt += d->prompt;
    b->used.completion += d->completion;
    b->used.total += d->total;
    b->used.cached += d->cached;
    if (d->has_cost) {
      b->used.cost += d->cost;
      b->used.has_cost = 1;
    }
    b->used.estimated |= d->estimated;
    b->used.set = 1;
  }
  pthread_mutex_unlock(&a->mu);
}

const char *lg_budget_spent(lg_app *a, const char *key, int *stop) {
  pthread_mutex_lock(&a->mu);
  lg_budget *b = find(a, key);
  const char *why = b ? spent(b) : NULL;
  *stop = b && b->l.stop_children;
  pthread_mutex_unlock(&a->mu);
  return why; /* a string literal */
}

/* {tokens, cost, seconds, tasks}: what is left of each limit the budget has */
static void add_left(const lg_budget *b, double elapsed, buf_t *out) {
  lg_buf_addc(out, '{');
  const char *sep = "";
  if (b->l.max_tokens >= 0) {
    long long left = b->l.max_tokens - b->used.total;
    lg_buf_addf(out, "%s\"tokens\":%lld", sep, left > 0 ? left : 0);
    sep = ",";
  }
  if (b->l.max_cost >= 0) {
    double left = b->l.max_cost - b->used.cost;
    lg_buf_addf(out, "%s\"cost\":%.17g", sep, left > 0 ? left : 0);
    sep = ",";
  }
  if (b->l.max_wall_s >= 0) {
    double left = b->l.max_wall_s - elapsed;
    lg_buf_addf(out, "%s\"seconds\":%.3f", sep, left > 0 ? left : 0);
    sep = ",";
  }
  if (b->l.max_tasks >= 0) {
    long long left = b->l.max_tasks - b->tasks;
    lg_buf_addf(out, "%s\"tasks\":%lld", sep, left > 0 ? left : 0);
  }
  lg_buf_addc(out, '}');
}

int lg_budget_json(lg_app *a, const char *key, buf_t *out) {
  pthread_mutex_lock(&a->mu);
  lg_budget *b = find(a, key);
  if (!b) {
    pthread_mutex_unlock(&a->mu);
    return -1;
  }
  double elapsed = (double)(lg_mono_ms() - b->started_mono) / 1000.0;
  lg_buf_adds(out, "{\"left\":");
  add_left(b, elapsed, out);
  lg_buf_adds(out, ",\"usage\":");
  lg_usage_json(out, &b->used);
  lg_buf_addf(out, ",\"tasks\":%lld,\"elapsed_s\":%.3f,\"on_exhausted\":\"%s\"", b->tasks, elapsed,
           b->l.stop_children ? "stop_children" : "refuse_spawns");
  const char *why = spent(b);
  if (why) lg_buf_addf(out, ",\"spent\":\"%s\"", why);
  lg_buf_addc(out, '}');
  pthread_mutex_unlock(&a->mu);
  return 0;
}

void lg_budget_left_field(lg_app *a, const char *key, buf_t *out) {
  if (!key) return;
  pthread_mutex_lock(&a->mu);
  lg_budget *b = find(a, key);
  if (b) {
    lg_buf_adds(out, ",\"budget_left\":");
    add_left(b, (double)(lg_mono_ms() - b->started_mono) / 1000.0, out);
  }
  pthread_mutex_unlock(&a->mu);
}

void lg_budget_close(lg_app *a, const char *key) {
  pthread_mutex_lock(&a->mu);
  lg_budget *b = find(a, key);
  if (b) b->closed = 1;
  pthread_mutex_unlock(&a->mu);
}

void lg_budget_free_all(lg_app *a) {
  for (lg_budget *b = a->budgets, *nx; b; b = nx) {
    nx = b->next;
    free(b->key);
    free(b);
  }
  a->budgets = NULL;
}
