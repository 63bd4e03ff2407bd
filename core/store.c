/* Store entry points. With no file store attached (memory only) the
 * dispatcher's task table is the store and these calls do nothing. */
#include "store.h"
#include "internal.h"

void lg_store_task(lg_store *st, const char *task_id, int status, const char *json, size_t len) {
  LG_UNUSED(st); LG_UNUSED(task_id); LG_UNUSED(status); LG_UNUSED(json); LG_UNUSED(len);
}

void lg_store_event(lg_store *st, int64_t seq, const char *json) {
  LG_UNUSED(st); LG_UNUSED(seq); LG_UNUSED(json);
}

uint64_t lg_store_ticket(lg_store *st) { LG_UNUSED(st); return 0; }

void lg_store_sync(lg_store *st, uint64_t ticket) { LG_UNUSED(st); LG_UNUSED(ticket); }

void lg_store_close(lg_store *st) { LG_UNUSED(st); }
