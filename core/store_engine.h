/* The engines behind the store (docs/architecture.md, "The store"). store.c
 * owns what every engine shares: the queue callers fill under the
 * dispatcher mutex, the one writer thread, group commit, tickets, failures
 * and the unsaved records, token coalescing, the read lock. An engine owns
 * its connections and SQL: SQLite (store_sqlite.c) or PostgreSQL
 * (store_pg.c). Its write calls run on the writer thread only; its reads
 * on the caller's thread with the store's read lock held. Inside the Store
 * layer only: nothing above includes this. */
#ifndef LUAGENT_STORE_ENGINE_H
#define LUAGENT_STORE_ENGINE_H

#include "store.h"

#include <stddef.h>
#include <stdint.h>

enum { LG_OP_TASK, LG_OP_EVENT, LG_OP_THREAD, LG_OP_SKIP };

typedef struct lg_store_op {
  int type;
  int64_t seq;        /* an event's seq; a task's write time (ms) */
  char *key, *json;   /* task id, event's task id (or NULL), thread key */
  const char *agent;  /* a task's agent id: inside key's allocation, after its NUL */
  const char *status; /* a task's status name (a static string) */
  int finished;       /* the task ended: its record ages for retention */
  int64_t fence;      /* a claimed task's token (0: none), store.h */
  int lent;           /* a claimed task waiting with its slot lent */
  struct lg_store_op *next;
} lg_store_op;

/* What a read asks for. */
enum { LG_READ_TASKS, LG_READ_TASK, LG_READ_THREAD, LG_READ_EVENTS, LG_READ_MAX_SEQ, LG_READ_OPEN,
       LG_READ_CLUSTER_EVENTS, LG_READ_FINISHED };

typedef struct {
  int what;
  const char *key;       /* LG_READ_TASK, LG_READ_THREAD; LG_READ_FINISHED: ids as a
                            PostgreSQL text[] literal */
  int64_t since, before; /* LG_READ_EVENTS: since < seq < before */
  int limit;
} lg_store_read;

/* The shared queue's calls (store.h, lg_store_claim and after). */
enum { LG_LEASE_CLAIM, LG_LEASE_RENEW, LG_LEASE_REQUEUE, LG_LEASE_PUT };

typedef struct {
  int what;
  lg_store_claim_req claim; /* node, max, cap, lease_s */
  const char *task_id, *status, *json; /* LG_LEASE_PUT */
  int64_t token;
  int finished;
} lg_store_lease_req;

typedef struct lg_store_engine_ops {
  const char *name; /* "sqlite", "postgresql" */
  /* One transaction: the ops of a list, then those of an array, in order;
   * 0 committed, else -1 with the engine's message and nothing written.
   * *stale: fenced task writes dropped because the lease moved on. */
  int (*write)(void *e, const lg_store_op *list, lg_store_op *const *v, size_t n, int *stale,
               char *err, size_t errlen);
  /* Delete finished tasks older than their retention, and their events. */
  int (*prune)(void *e, double completed_s, double failed_s, char *err, size_t errlen);
  /* Tests only (NULL where the engine has none): see lg_store_limit_pages. */
  int64_t (*limit_pages)(void *e, int64_t pages);
  /* Every row's text handed to fn; the number of rows, or -1 with why. */
  int (*read)(void *e, const lg_store_read *r, lg_store_row_fn fn, void *ud, char *why,
              size_t whylen);
  /* The read connection first (reads end), then the rest; free. */
  void (*close_reads)(void *e);
  void (*close)(void *e);
  void (*info)(void *e, lg_store_info_t *out);
  /* The shared queue, on the writer thread (NULL: the engine has none). The
   * count (claimed, renewed, re-queued; for a put 0 written, 1 stale), or -1. */
  int (*lease)(void *e, const lg_store_lease_req *r, buf_t *out, char *err, size_t errlen);
  /* Wait up to timeout_ms for other processes' wake-ups, or a byte on
   * kick_fd (drained); the LG_WAKE_* seen (0: none), -1 none can come
   * (NULL where the engine has none). One caller at a time (store.c). */
  int (*listen)(void *e, int kick_fd, int timeout_ms);
} lg_store_engine_ops;

typedef struct {
  const lg_store_engine_ops *ops;
  void *e;
  int64_t max_seq; /* the highest event seq found at open */
} lg_store_engine;

/* Open an engine on `target` (a file path, or a PostgreSQL URL or conninfo);
 * 0, or -1 with a message (without the "store X:" prefix) in err. */
int lg_store_sqlite_open(const char *path, const lg_store_opts *o, lg_store_engine *out,
                         char *err, size_t errlen);
int lg_store_pg_open(const char *conninfo, const lg_store_opts *o, lg_store_engine *out,
                     char *err, size_t errlen);

#endif
