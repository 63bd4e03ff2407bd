/* Tree-wide budgets (README "Tree budgets"): a root run or task bounds the
 * tokens, cost, wall time and number of tasks of itself and every
 * descendant. Keyed by the tree's root key; guarded by app->mu. Nothing
 * here calls Lua. */
#ifndef LUAGENT_BUDGET_H
#define LUAGENT_BUDGET_H

#include "dispatcher.h"

typedef struct lg_budget lg_budget;

typedef struct lg_budget_limits {
  long long max_tokens, max_tasks; /* < 0: no limit */
  double max_cost, max_wall_s;     /* < 0: no limit */
  int stop_children;               /* on_exhausted = "stop_children" (else "refuse_spawns") */
} lg_budget_limits;

/* The budget of tree `key` (replaces one defined before). -1: oom. */
int lg_budget_define(lg_app *a, const char *key, const lg_budget_limits *l, int root_is_task);
/* Under app->mu, from lg_enqueue: may tree `key` start one more task? 0 yes
 * (counted), -1 no (err kind "budget"). Trees without a budget: 0. */
int lg_budget_admit_locked(lg_app *a, const char *key, lg_err *err);
/* Under app->mu: take back one admission of tree `key` (a batch enqueue
 * that is refused as a whole, lg_enqueue_many). */
void lg_budget_unadmit_locked(lg_app *a, const char *key);
void lg_budget_define_locked(lg_app *a, const char *key, const lg_budget_limits *l, int root_is_task);
/* A model call of the tree. */
void lg_budget_add_usage(lg_app *a, const char *key, const lg_usage *d);
/* The limit spent first ("max_tokens", ...) or NULL; *stop: runs must end. */
const char *lg_budget_spent(lg_app *a, const char *key, int *stop);
/* {"limits":{...},"left":{...},"usage":{...},"tasks":n,"spent":name?,"on_exhausted":...}; -1: none */
int lg_budget_json(lg_app *a, const char *key, buf_t *out);
/* `,"budget_left":{...}` for tree `key` when it has a budget (takes app->mu). */
void lg_budget_left_field(lg_app *a, const char *key, buf_t *out);
/* A foreground root run returned: its budget may go once its tree is done. */
void lg_budget_close(lg_app *a, const char *key);
void lg_budget_free_all(lg_app *a);

#endif
