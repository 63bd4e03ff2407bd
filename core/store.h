/* Persistence behind the dispatcher. The memory store is the dispatcher's
 * own task table, so a NULL store means "memory only" and every call below
 * is then a no-op. The SQLite store implements the same calls. */
#ifndef LUAGENT_STORE_H
#define LUAGENT_STORE_H

#include <stddef.h>
#include <stdint.h>

typedef struct lg_store lg_store;

/* Called under the dispatcher mutex: they only queue work, never do I/O. */
void lg_store_task(lg_store *st, const char *task_id, int status, const char *json, size_t len);
void lg_store_event(lg_store *st, int64_t seq, const char *json);
/* A ticket for everything queued so far; lg_store_sync blocks (without the
 * dispatcher mutex) until it is durable. */
uint64_t lg_store_ticket(lg_store *st);
void lg_store_sync(lg_store *st, uint64_t ticket);
void lg_store_close(lg_store *st);

#endif
