/* Persistence behind the dispatcher (README). The memory store is the
 * dispatcher's own task table, so a NULL store means "memory only" and every
 * call is then a no-op. A store is one engine behind the same calls: an
 * SQLite file (store_sqlite.c) or a PostgreSQL database (store_pg.c);
 * store.c queues, commits and reads for both (store_engine.h). */
#ifndef LUAGENT_STORE_H
#define LUAGENT_STORE_H

#include "internal.h"

#include <stddef.h>
#include <stdint.h>

typedef struct lg_store lg_store;

typedef struct lg_store_opts_s {
  int postgres;                  /* the target is a PostgreSQL URL or conninfo, not a file */
  int shared;                    /* PostgreSQL: several processes share it (no exclusive lock) */
  const char *node;              /* shared: this process's name in leases and events */
  double lease_s;                /* shared: leases last this long; the writer renews them
                                    every lease_s / 3 and queues lapsed ones again */
  int durability_full;           /* synchronous=FULL instead of NORMAL */
  double completed_s, failed_s;  /* retention of finished tasks (0 = keep) */
  /* told (on the writer thread, no store lock held) each time a write or a
   * read fails */
  void (*on_error)(void *ud, const char *message);
  void *ud;
} lg_store_opts;

/* Opens the store; NULL with a message on error. A file is created 0600 and
 * locked; an existing one is checked whole first (PRAGMA quick_check, then
 * every record, event and conversation must be JSON): a damaged one is
 * refused with a message naming the path and the task id, event seq or
 * thread. A PostgreSQL database gets its schema created or migrated; one
 * that holds other tables, or a newer schema, is refused. */
lg_store *lg_store_open(const char *target, const lg_store_opts *o, char *err, size_t errlen);

/* Called under the dispatcher mutex: they only queue work, never do I/O. */
/* status: the task's status name, a string that lives as long as the
 * process; finished: it ended (its record ages for retention). */
/* fence: the token of this process's claim on a shared store (0: the
 * task is not claimed; its row is written as is). A fenced write that no
 * longer matches the row's holder and token is dropped and counted in
 * stale_writes (docs/architecture.md, "Leases and fencing"). */
/* agent: the task's agent id (a cluster-wide per-agent cap counts by it);
 * lent: a claimed task waiting with its slot lent; a cluster-wide cap does
 * not count it while it waits. */
void lg_store_task(lg_store *st, const char *task_id, const char *agent, const char *status,
                   int finished, int64_t fence, int lent, const char *json, size_t len);
void lg_store_event(lg_store *st, int64_t seq, const char *task_id, const char *json);
void lg_store_thread(lg_store *st, const char *key, const char *json);
/* A ticket for everything queued so far; lg_store_sync blocks (without the
 * dispatcher mutex) until it is committed. -1 if the write that held the
 * ticket failed (later writes may succeed again: a failure is not sticky). */
uint64_t lg_store_ticket(lg_store *st);
/* Between hold and release the writer takes nothing queued, so what is
 * queued meanwhile goes into one transaction (a batch enqueue). Holds
 * nest; a close writes what is queued regardless. */
void lg_store_hold(lg_store *st);
void lg_store_release(lg_store *st);
int lg_store_sync(lg_store *st, uint64_t ticket, char *err, size_t errlen);
/* Flush, close and release the lock (idempotent); free after close. */
void lg_store_close(lg_store *st);
void lg_store_free(lg_store *st);

/* Reads, on the host thread. Each one checks how its statement ended: a read
 * that fails is reported through on_error (from the writer thread, so a
 * caller may hold its own mutex) and counted in lg_store_info. */
typedef void (*lg_store_row_fn)(void *ud, const char *json, size_t len);
/* The number of records, -1 if the read failed. */
int lg_store_read_tasks(lg_store *st, lg_store_row_fn fn, void *ud);
/* Every stored record as one JSON array, in enqueue order; -1 with a
 * message if the read failed (nothing half-read is returned). */
int lg_store_read_records(lg_store *st, buf_t *out, char *err, size_t errlen);
/* A shared store's events of every process with gseq > since, in gseq
 * order, each with "seq" set to its gseq and "node" to the process that
 * wrote it, as a JSON array (after this process's queued writes commit).
 * The number, or -1 with a message. */
int lg_store_read_cluster_events(lg_store *st, int64_t since, int limit, buf_t *out, char *err,
                                 size_t errlen);
/* Tasks stored queued or running (in a shared store: anywhere); -1 if the
 * read failed. */
int64_t lg_store_count_open(lg_store *st);
/* The highest stored event seq (as found at open if the read fails). */
int64_t lg_store_max_event_seq(lg_store *st);
/* Events with since < seq < before, as a comma-separated list of objects;
 * 0 (nothing) if the read failed. */
int lg_store_read_events(lg_store *st, int64_t since, int64_t before, int limit, buf_t *out);
/* 0 found, -1 none, -2 the read failed (lg_store_info has the message). */
int lg_store_read_thread(lg_store *st, const char *key, buf_t *out);
/* A task's stored record (with the internal fields); as lg_store_read_thread. */
int lg_store_read_task(lg_store *st, const char *task_id, buf_t *out);

/* Wake-ups between the processes of a shared store (LISTEN/NOTIFY): only
 * ever a hint to look again, never needed for correctness. A batch that
 * queues a task sends LG_WAKE_QUEUED, one that ends a task
 * LG_WAKE_FINISHED, a cancel asked of another process LG_WAKE_CANCEL. lg_store_listen waits up to timeout_ms for either, or
 * for lg_store_kick (LG_WAKE_KICKED); it returns what it saw (0: the time
 * passed), or -1 when no wake-up can come (a file store, the listening
 * connection down, the store closing). One thread at a time may listen;
 * lg_store_kick may be called from any thread, with any lock held. */
enum { LG_WAKE_QUEUED = 1, LG_WAKE_FINISHED = 2, LG_WAKE_KICKED = 4, LG_WAKE_CANCEL = 8 };
int lg_store_listen(lg_store *st, int timeout_ms);
void lg_store_kick(lg_store *st);

/* Cancel a task of the shared queue that this process does not hold:
 * cancelled_json is its record as cancelled before it started, written if
 * it is still queued and unclaimed. 1 cancelled so, 0 asked of the process
 * that holds it (lg_store_read_cancels there), 2 it had finished, 3 no
 * such task, -1 failed (err). On the writer thread, without app locks. */
int lg_store_cancel(lg_store *st, const char *task_id, const char *cancelled_json, char *err,
                    size_t errlen);
/* The ids of the tasks this process holds that another asked to stop,
 * each handed to fn; how many, or -1 (reported). */
int lg_store_read_cancels(lg_store *st, lg_store_row_fn fn, void *ud);

/* The stored records of those of ids[0..n) that have finished, each handed
 * to fn (a shared store: tasks other processes ran); the number found, or
 * -1 (reported, and counted as a failed read). */
int lg_store_read_finished(lg_store *st, char *const *ids, int n, lg_store_row_fn fn, void *ud);

/* The shared queue of a PostgreSQL store (docs/architecture.md, "Leases
 * and fencing"): several processes claim queued tasks, each claim a lease
 * with a fencing token. Each call runs on the store's writer thread, in its
 * own transaction, and returns once it committed; call them without any
 * app lock. A file store has none of these: -1 with a message. */
typedef struct {
  const char *node; /* the process that claims, renews or writes */
  int max;          /* claim at most this many */
  int cap;          /* and only while leased tasks stay at most this many (0: no cap) */
  double lease_s;   /* the lease given or renewed */
  int agent_cap;    /* and only while each agent's leased tasks stay at most this many (0: no cap) */
} lg_store_claim_req;
/* Claim queued tasks in enqueue order, skipping rows another claimer holds
 * (FOR UPDATE SKIP LOCKED); appends [{"task_id","token","record"},...] to
 * out. The number claimed, or -1. */
int lg_store_claim(lg_store *st, const lg_store_claim_req *r, buf_t *out, char *err,
                   size_t errlen);
/* Extend the leases `node` holds by lease_s; the number renewed, or -1. */
int lg_store_renew(lg_store *st, const char *node, double lease_s, char *err, size_t errlen);
/* Queue again every task whose lease ran out, whoever held it; appends their
 * ids as a JSON array to out. The number, or -1. */
int lg_store_requeue_expired(lg_store *st, buf_t *out, char *err, size_t errlen);
/* Write a claimed task's record only while `node` still holds it with
 * `token` (the fencing token): 0 written, 1 rejected as stale (a late write
 * of an owner whose lease was taken over), -1 failed. A finished record ends
 * the lease. */
int lg_store_task_fenced(lg_store *st, const char *task_id, const char *node, int64_t token,
                         const char *status, int finished, const char *json, char *err,
                         size_t errlen);

/* Tests only: PRAGMA max_page_count on the write connection, after what is
 * queued now is committed, to make writes fail as on a full disk; <= 0
 * restores the limit found at open. Returns the limit in force. */
int64_t lg_store_limit_pages(lg_store *st, int64_t pages);

/* How the store runs (for checks): the write connection's settings as it
 * reported them at open. Strings live as long as the store. */
typedef struct {
  const char *path;   /* a file's path; a server's URL or conninfo without password */
  const char *engine; /* "sqlite" or "postgresql" */
  int synchronous; /* 0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA */
  const char *journal_mode;
  int schema_version;
  char error[320];      /* the latest failed write or read, "" if none */
  uint64_t write_failures, read_failures;
  uint64_t stale_writes; /* fenced writes rejected (lg_store_task_fenced) */
  uint64_t commits;      /* batches the writer committed, one transaction each */
  uint64_t wakeups;      /* waits lg_store_listen ended on another process's wake-up */
} lg_store_info_t;
/* One snapshot, taken under one lock so the counts and the list agree.
 * `unsaved` (may be NULL) gets the ids of the tasks whose latest record is
 * only in memory (its write failed and no later one succeeded), as a JSON
 * array in id order; the writer writes them again with every later batch
 * and at close. */
void lg_store_info(lg_store *st, lg_store_info_t *out, buf_t *unsaved);

#endif
