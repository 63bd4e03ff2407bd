/* Idempotent enqueues (README, "Idempotent enqueues"): an enqueue with an
 * idempotency_key returns the task an earlier enqueue with the same key
 * made in the same scope instead of making another. The scope is the
 * spawning task (its id: the same across its attempts, restarts and
 * recovery) or, for the host and foreground runs, the app. The earlier
 * task must be the same request — kind, agent, tool and arguments or
 * prompt — or the enqueue is refused with kind "conflict".
 *
 * The look-up scans the tasks in memory (under app->mu); records of a file
 * store are loaded back into memory at start, so a key holds across a
 * restart while the task it names is kept. */
#include "dispatch_internal.h"
#include "idem.h"

#include <string.h>

static int same(const char *x, const char *y) {
  if (!x || !y) return x == y;
  return strcmp(x, y) == 0;
}

lg_task *lg_idem_find(lg_app *a, const char *scope, const char *key) {
  for (size_t i = 0; i < a->tab_cap; i++)
    for (lg_task *t = a->tab[i]; t; t = t->hnext)
      if (t->idem_key && strcmp(t->idem_key, key) == 0 && same(t->parent_task_id, scope))
        return t;
  return NULL;
}

int lg_idem_matches(const lg_task *t, const lg_enqueue_req *r) {
  const char *agent = r->agent_id ? r->agent_id : "host";
  return t->kind == r->kind && same(t->agent_id, agent) && same(t->tool, r->tool) &&
         same(t->args_json, r->args_json) && same(t->prompt, r->prompt);
}
