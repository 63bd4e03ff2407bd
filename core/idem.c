/* Idempotent enqueues (README, "Idempotent enqueues"): an enqueue with an
 * idempotency_key returns the task an earlier enqueue with the same key
 * made in the same scope instead of making another. The scope is the
 * spawning task (its id: the same across its attempts, restarts and
 * recovery) or, for the host and foreground runs, the app. The earlier
 * task must be the same request — kind, agent, tool and arguments or
 * prompt — or the enqueue is refused with kind "conflict".
 *
 * The look-up is an index: a hash table of the tasks in memory that carry
 * a key, by (scope, key), kept by lg_task_insert and lg_task_remove (under
 * app->mu). Records of a file store are loaded back into memory at start,
 * so a key holds across a restart while the task it names is kept. */
#include "dispatch_internal.h"

#include <stdlib.h>
#include <string.h>

static int same(const char *x, const char *y) {
  if (!x || !y) return x == y;
  return strcmp(x, y) == 0;
}

/* FNV-1a over the scope (NULL hashes as empty) and the key. */
static uint64_t idem_hash(const char *scope, const char *key) {
  uint64_t h = 1469598103934665603ULL;
  for (const char *s = scope ? scope : ""; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ULL;
  h = (h ^ 0xff) * 1099511628211ULL; /* a separator no text holds */
  for (const char *s = key; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ULL;
  return h;
}

static int grow(lg_app *a) {
  size_t cap = a->itab_cap ? a->itab_cap * 2 : 64;
  lg_task **tab = calloc(cap, sizeof *tab);
  if (!tab) return -1;
  for (size_t i = 0; i < a->itab_cap; i++) {
    for (lg_task *x = a->itab[i], *nx; x; x = nx) {
      nx = x->ihnext;
      size_t k = idem_hash(x->parent_task_id, x->idem_key) & (cap - 1);
      x->ihnext = tab[k];
      tab[k] = x;
    }
  }
  free(a->itab);
  a->itab = tab;
  a->itab_cap = cap;
  return 0;
}

int lg_idem_add(lg_app *a, lg_task *t) {
  if (!t->idem_key) return 0;
  if ((a->nidem + 1) * 4 > a->itab_cap * 3 && grow(a) != 0 && !a->itab_cap) return -1;
  size_t k = idem_hash(t->parent_task_id, t->idem_key) & (a->itab_cap - 1);
  t->ihnext = a->itab[k];
  a->itab[k] = t;
  a->nidem++;
  return 0;
}

void lg_idem_drop(lg_app *a, lg_task *t) {
  if (!t->idem_key || !a->itab_cap) return;
  size_t k = idem_hash(t->parent_task_id, t->idem_key) & (a->itab_cap - 1);
  for (lg_task **pp = &a->itab[k]; *pp; pp = &(*pp)->ihnext) {
    if (*pp == t) {
      *pp = t->ihnext;
      t->ihnext = NULL;
      a->nidem--;
      return;
    }
  }
}

void lg_idem_free(lg_app *a) {
  free(a->itab);
  a->itab = NULL;
  a->itab_cap = a->nidem = 0;
}

lg_task *lg_idem_find(lg_app *a, const char *scope, const char *key) {
  if (!a->itab_cap) return NULL;
  for (lg_task *t = a->itab[idem_hash(scope, key) & (a->itab_cap - 1)]; t; t = t->ihnext)
    if (strcmp(t->idem_key, key) == 0 && same(t->parent_task_id, scope)) return t;
  return NULL;
}

int lg_idem_matches(const lg_task *t, const lg_enqueue_req *r) {
  const char *agent = r->agent_id ? r->agent_id : "host";
  return t->kind == r->kind && same(t->agent_id, agent) && same(t->tool, r->tool) &&
         same(t->args_json, r->args_json) && same(t->prompt, r->prompt);
}
