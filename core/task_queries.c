/* The scheduler's read-only queries over the task table: a record, a
 * status, a filtered list. They take app->mu themselves; a record that
 * left memory (keep_finished_s) is read back from a file store, which has
 * every committed record. Apart from tasks.c because the table knows
 * neither the app's lock nor its store. */
#include "dispatch_internal.h"
#include "store.h"

#include <stdio.h>
#include <stdlib.h>

int lg_get(lg_app *a, const char *id, buf_t *out) {
  pthread_mutex_lock(&a->mu);
  lg_task *t = lg_task_find(a, id);
  if (t && (t->phase == PH_REMOTE || t->stub)) t = NULL; /* the shared store has the news */
  if (t) lg_record_json(t, out);
  lg_store *st = a->store;
  pthread_mutex_unlock(&a->mu);
  if (t) return 0;
  return lg_store_read_task(st, id, out);
}

int lg_status(lg_app *a, const char *id, char out[16]) {
  pthread_mutex_lock(&a->mu);
  lg_task *t = lg_task_find(a, id);
  if (t) snprintf(out, 16, "%s", lg_status_name(t->status));
  pthread_mutex_unlock(&a->mu);
  return t ? 0 : -1;
}

void lg_list(lg_app *a, const lg_filter *f, buf_t *out) {
  pthread_mutex_lock(&a->mu);
  size_t n;
  lg_task **v = lg_select_tasks(a, f, &n);
  lg_buf_addc(out, '[');
  for (size_t i = 0; i < n; i++) {
    if (i) lg_buf_addc(out, ',');
    lg_record_json(v[i], out);
  }
  lg_buf_addc(out, ']');
  free(v);
  pthread_mutex_unlock(&a->mu);
}
/* The last n event digests of a task, oldest first (bg_check). */
int lg_task_digests(lg_app *a, const char *id, int n, buf_t *out) {
  pthread_mutex_lock(&a->mu);
  lg_task *t = lg_task_find(a, id);
  if (t) {
    if (n > t->ring_n) n = t->ring_n;
    if (n < 0) n = 0;
    lg_buf_addc(out, '[');
    for (int i = t->ring_n - n; i < t->ring_n; i++) {
      if (i > t->ring_n - n) lg_buf_addc(out, ',');
      lg_digest_json(out, &t->ring[(t->ring_head + i) % LG_TASK_RING]);
    }
    lg_buf_addc(out, ']');
  }
  pthread_mutex_unlock(&a->mu);
  return t ? 0 : -1;
}
