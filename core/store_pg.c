/* The PostgreSQL engine of the store (store_engine.h), through libpq: the
 * same tables as the SQLite file (luagent_meta, tasks, events, threads) in
 * the connection's current schema, one write connection (used by the
 * store's writer thread only, docs/architecture.md "The store") and one
 * read connection for reads. The schema carries a version and is brought
 * up to this build's by the migrations below, under an advisory lock so two
 * processes opening one database at once do not both migrate it. Until a
 * store is shared through leases, a session advisory lock keeps a second
 * app or process out, as the SQLite file's flock does. */
#include "store_engine.h"
#include "internal.h"

#include <libpq-fe.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MSG_LEN 300

/* The key of the advisory locks: the schema's own name hashed, so two
 * stores in two schemas of one database do not exclude each other. */
#define LOCK_KEY "hashtextextended('luagent:' || current_schema(), 0)"
#define MIGRATE_KEY "hashtextextended('luagent-migrate:' || current_schema(), 0)"
/* writers of a shared store's events take their gseq in commit order */
#define EVENTS_KEY "hashtextextended('luagent-events:' || current_schema(), 0)"
/* claimers under a cluster-wide cap count leased tasks one at a time */
#define CAP_KEY "hashtextextended('luagent-cap:' || current_schema(), 0)"

typedef struct {
  PGconn *w, *r;
  int synchronous;
  char node[64]; /* shared: this process in leases and events; else "" */
  /* shared: wake-ups (LISTEN/NOTIFY) on a connection of their own, made
   * by the first wait; the channel is named after the schema */
  PGconn *n;
  char *conninfo;
  char channel[160];
} pg;

/* The migrations: entry i brings schema version i to i + 1. Each runs in
 * the transaction that records the new version. */
static const char *const migrations[] = {
    /* 0 -> 1: the tables of the SQLite store */
    "CREATE TABLE IF NOT EXISTS tasks(task_id text PRIMARY KEY, pos bigserial NOT NULL,"
    " status text NOT NULL, record text NOT NULL, finished_ms bigint);"
    "CREATE INDEX IF NOT EXISTS tasks_pos ON tasks(pos);"
    "CREATE TABLE IF NOT EXISTS events(seq bigint PRIMARY KEY, task_id text, event text NOT NULL);"
    "CREATE INDEX IF NOT EXISTS events_task ON events(task_id);"
    "CREATE TABLE IF NOT EXISTS threads(key text PRIMARY KEY, messages text NOT NULL,"
    " updated_ms bigint NOT NULL);",
    /* 1 -> 2: the shared queue's leases (docs/architecture.md, "Leases and
     * fencing"): who holds a task, until when, and its fencing token */
    "ALTER TABLE tasks ADD COLUMN IF NOT EXISTS owner text,"
    " ADD COLUMN IF NOT EXISTS token bigint NOT NULL DEFAULT 0,"
    " ADD COLUMN IF NOT EXISTS lease_until_ms bigint;"
    "CREATE INDEX IF NOT EXISTS tasks_claimable ON tasks(pos) WHERE status = 'queued' AND owner IS NULL;"
    "CREATE INDEX IF NOT EXISTS tasks_leased ON tasks(lease_until_ms) WHERE owner IS NOT NULL;"
    /* events of several processes: each numbers its own (node, seq); gseq
     * is the order they were stored in, across all of them */
    "ALTER TABLE events ADD COLUMN IF NOT EXISTS node text NOT NULL DEFAULT '',"
    " ADD COLUMN IF NOT EXISTS gseq bigserial;"
    "ALTER TABLE events DROP CONSTRAINT IF EXISTS events_pkey;"
    "ALTER TABLE events ADD PRIMARY KEY (node, seq);"
    "CREATE UNIQUE INDEX IF NOT EXISTS events_gseq ON events(gseq);",
    /* 2 -> 3: a holder that waits on other tasks lends its slot:
     * its lease stays, but it does not count against a cluster cap */
    "ALTER TABLE tasks ADD COLUMN IF NOT EXISTS lent boolean NOT NULL DEFAULT false;"
    /* and a cluster-wide per_agent_concurrency counts by agent */
    "ALTER TABLE tasks ADD COLUMN IF NOT EXISTS agent text;"
    "UPDATE tasks SET agent = record::jsonb->>'agent_id' WHERE agent IS NULL"
    " AND status IN ('queued', 'running');",
};
#define SCHEMA_VERSION ((int)(sizeof migrations / sizeof *migrations))

/* libpq's message on one line, without its trailing newline. */
static void conn_msg(PGconn *c, char *out, size_t len) {
  snprintf(out, len, "%s", c ? PQerrorMessage(c) : "out of memory");
  for (char *p = out; *p; p++)
    if (*p == '\n' || *p == '\t') *p = ' ';
  size_t n = strlen(out);
  while (n && out[n - 1] == ' ') out[--n] = '\0';
}

/* Run a command; 0, or -1 with the server's message. */
static int run(PGconn *c, const char *sql, char *err, size_t errlen) {
  PGresult *res = PQexec(c, sql);
  ExecStatusType s = PQresultStatus(res);
  int ok = s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK;
  if (!ok) conn_msg(c, err, errlen);
  PQclear(res);
  return ok ? 0 : -1;
}

/* The single value a query returns, as text (NULL: no row); 0 or -1. */
static int query_text(PGconn *c, const char *sql, char *out, size_t outlen, int *found, char *err,
                      size_t errlen) {
  PGresult *res = PQexec(c, sql);
  if (PQresultStatus(res) != PGRES_TUPLES_OK) {
    conn_msg(c, err, errlen);
    PQclear(res);
    return -1;
  }
  *found = PQntuples(res) > 0 && !PQgetisnull(res, 0, 0);
  snprintf(out, outlen, "%s", *found ? PQgetvalue(res, 0, 0) : "");
  PQclear(res);
  return 0;
}

/* Connect; the message says which of the usual causes it was. */
static PGconn *connect_to(const char *conninfo, char *err, size_t errlen) {
  /* a default connect_timeout the conninfo's own one overrides */
  const char *const keys[] = {"connect_timeout", "fallback_application_name", "dbname", NULL};
  const char *const vals[] = {"10", "luagent", conninfo, NULL};
  PGconn *c = PQconnectdbParams(keys, vals, 1);
  if (c && PQstatus(c) == CONNECTION_OK) return c;
  char m[MSG_LEN];
  conn_msg(c, m, sizeof m);
  if (c && (PQconnectionNeedsPassword(c) || strstr(m, "authentication failed") ||
            strstr(m, "no password supplied")))
    snprintf(err, errlen, "cannot log in to the server (wrong user or password?): %s", m);
  else if (c && (strstr(m, "does not exist") && strstr(m, "database")))
    snprintf(err, errlen, "the database does not exist: %s", m);
  else
    snprintf(err, errlen, "cannot connect to the server: %s", m);
  PQfinish(c);
  return NULL;
}

/* Is the schema ours, and how old? Creates or migrates it; one transaction
 * under a transaction-level advisory lock. */
static int check_schema(PGconn *c, int *version_out, char *err, size_t errlen) {
  char m[MSG_LEN], v[64];
  int found;
  if (run(c, "BEGIN", m, sizeof m) != 0 ||
      run(c, "SELECT pg_advisory_xact_lock(" MIGRATE_KEY ")", m, sizeof m) != 0)
    goto failed;
  if (query_text(c,
                 "SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname = current_schema()",
                 v, sizeof v, &found, m, sizeof m) != 0)
    goto failed;
  long long objects = strtoll(v, NULL, 10);
  if (query_text(c, "SELECT to_regclass('luagent_meta') IS NOT NULL", v, sizeof v, &found, m,
                 sizeof m) != 0)
    goto failed;
  int has_meta = strcmp(v, "t") == 0;
  if (objects > 0 && !has_meta) {
    run(c, "ROLLBACK", m, sizeof m);
    query_text(c, "SELECT current_schema()", v, sizeof v, &found, m, sizeof m);
    snprintf(err, errlen,
             "not a luagent store (schema %s holds other tables; give luagent a database or"
             " schema of its own)",
             v[0] ? v : "?");
    return -1;
  }
  long long version = 0;
  if (has_meta) {
    if (query_text(c, "SELECT value FROM luagent_meta WHERE key = 'schema_version'", v, sizeof v,
                   &found, m, sizeof m) != 0)
      goto failed;
    char *end;
    version = found ? strtoll(v, &end, 10) : -1;
    if (!found || *end || version < 1) {
      run(c, "ROLLBACK", m, sizeof m);
      snprintf(err, errlen, "not a luagent store (luagent_meta has no schema version)");
      return -1;
    }
  } else if (run(c, "CREATE TABLE luagent_meta(key text PRIMARY KEY, value text NOT NULL)", m,
                 sizeof m) != 0) {
    goto failed;
  }
  if (version > SCHEMA_VERSION) {
    run(c, "ROLLBACK", m, sizeof m);
    snprintf(err, errlen,
             "the store was written by a newer luagent (schema %lld; this one reads up to %d)",
             version, SCHEMA_VERSION);
    return -1;
  }
  for (long long i = version; i < SCHEMA_VERSION; i++)
    if (run(c, migrations[i], m, sizeof m) != 0) goto failed;
  char sql[200];
  snprintf(sql, sizeof sql,
           "INSERT INTO luagent_meta(key, value) VALUES('schema_version', '%d')"
           " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
           SCHEMA_VERSION);
  if (run(c, sql, m, sizeof m) != 0) goto failed;
  snprintf(sql, sizeof sql,
           "INSERT INTO luagent_meta(key, value) VALUES('opened_ms', '%lld')"
           " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
           (long long)lg_wall_ms());
  if (run(c, sql, m, sizeof m) != 0 || run(c, "COMMIT", m, sizeof m) != 0) goto failed;
  *version_out = SCHEMA_VERSION;
  return 0;
failed:
  snprintf(err, errlen, "cannot set up the schema: %s", m);
  PQclear(PQexec(c, "ROLLBACK"));
  return -1;
}

/* ------------------------------------------------------------- writes */

static const char PUT_TASK[] =
    "INSERT INTO tasks(task_id, status, record, finished_ms, agent) VALUES($1, $2, $3, $4, $5)"
    " ON CONFLICT(task_id) DO UPDATE SET status = excluded.status, record = excluded.record,"
    " finished_ms = excluded.finished_ms";
static const char PUT_EVENT[] =
    "INSERT INTO events(node, seq, task_id, event) VALUES($4, $1, $2, $3)"
    " ON CONFLICT(node, seq) DO UPDATE SET task_id = excluded.task_id, event = excluded.event";
/* a claimed task: only while this process holds it with this token; a
 * finished record ends the lease */
static const char PUT_FENCED[] =
    "UPDATE tasks SET status = $2, record = $3, finished_ms = $4::bigint,"
    " owner = CASE WHEN $4::bigint IS NULL THEN owner END,"
    " lease_until_ms = CASE WHEN $4::bigint IS NULL THEN lease_until_ms END,"
    " lent = $7::boolean"
    " WHERE task_id = $1 AND owner = $5 AND token = $6::bigint";
static const char PUT_THREAD[] =
    "INSERT INTO threads(key, messages, updated_ms) VALUES($1, $2, $3)"
    " ON CONFLICT(key) DO UPDATE SET messages = excluded.messages, updated_ms = excluded.updated_ms";

static int prepare_all(PGconn *c, char *err, size_t errlen) {
  const char *names[] = {"put_task", "put_event", "put_thread", "put_fenced"};
  const char *sqls[] = {PUT_TASK, PUT_EVENT, PUT_THREAD, PUT_FENCED};
  for (int i = 0; i < 4; i++) {
    PGresult *res = PQprepare(c, names[i], sqls[i], 0, NULL);
    int ok = PQresultStatus(res) == PGRES_COMMAND_OK;
    if (!ok) conn_msg(c, err, errlen);
    PQclear(res);
    if (!ok) return -1;
  }
  return 0;
}

/* 0 written, 1 a fenced write that no longer matched, -1 failed. */
static int run_op(pg *p, const lg_store_op *o) {
  PGconn *c = p->w;
  char n1[32], n2[32];
  const char *v[7];
  const char *name;
  int nv, fenced = 0;
  switch (o->type) {
    case LG_OP_SKIP:
      return 0;
    case LG_OP_TASK:
      name = "put_task";
      v[0] = o->key;
      v[1] = o->status;
      v[2] = o->json;
      snprintf(n1, sizeof n1, "%lld", (long long)o->seq);
      v[3] = o->finished ? n1 : NULL; /* finished time, for retention */
      v[4] = o->agent;
      nv = 5;
      if (o->fence > 0) {
        name = "put_fenced";
        snprintf(n2, sizeof n2, "%lld", (long long)o->fence);
        v[4] = p->node;
        v[5] = n2;
        v[6] = o->lent ? "true" : "false";
        nv = 7;
        fenced = 1;
      }
      break;
    case LG_OP_EVENT:
      name = "put_event";
      snprintf(n1, sizeof n1, "%lld", (long long)o->seq);
      v[0] = n1;
      v[1] = o->key;
      v[2] = o->json;
      v[3] = p->node;
      nv = 4;
      break;
    default:
      name = "put_thread";
      v[0] = o->key;
      v[1] = o->json;
      snprintf(n2, sizeof n2, "%lld", (long long)lg_wall_ms());
      v[2] = n2;
      nv = 3;
      break;
  }
  PGresult *res = PQexecPrepared(c, name, nv, v, NULL, NULL, 0);
  int ok = PQresultStatus(res) == PGRES_COMMAND_OK;
  int stale = ok && fenced && strcmp(PQcmdTuples(res), "0") == 0;
  PQclear(res);
  return ok ? stale : -1;
}

/* A connection the server dropped is made again before the next batch
 * (its prepared statements with it); the batch that saw it go failed. */
static int ensure_conn(PGconn *c, char *err, size_t errlen) {
  if (PQstatus(c) == CONNECTION_OK) return 0;
  PQreset(c);
  if (PQstatus(c) != CONNECTION_OK) {
    char m[MSG_LEN];
    conn_msg(c, m, sizeof m);
    snprintf(err, errlen, "the connection to the server is lost: %s", m);
    return -1;
  }
  return prepare_all(c, err, errlen);
}

/* ------------------------------------------------------- wake-ups */

/* What a batch tells idle processes: LG_WAKE_QUEUED when it queues a task
 * (an enqueue, a retry), LG_WAKE_FINISHED when one ends. */
static unsigned wake_kinds(const lg_store_op *list, lg_store_op *const *v, size_t n) {
  unsigned k = 0;
  for (const lg_store_op *o = list; o; o = o->next)
    if (o->type == LG_OP_TASK) k |= o->finished ? LG_WAKE_FINISHED : strcmp(o->status, "queued") == 0 ? LG_WAKE_QUEUED : 0;
  for (size_t i = 0; i < n; i++)
    if (v[i]->type == LG_OP_TASK) k |= v[i]->finished ? LG_WAKE_FINISHED : 0;
  return k;
}

/* NOTIFY in the current transaction: sent when it commits (a wake-up only;
 * nothing depends on it arriving). */
static int notify(pg *p, unsigned kinds, char *m, size_t ml) {
  if (!kinds || !p->channel[0]) return 0;
  char payload[16];
  snprintf(payload, sizeof payload, "%u", kinds);
  const char *v[2] = {p->channel, payload};
  PGresult *res = PQexecParams(p->w, "SELECT pg_notify($1, $2)", 2, NULL, v, NULL, NULL, 0);
  int ok = PQresultStatus(res) == PGRES_TUPLES_OK;
  if (!ok) conn_msg(p->w, m, ml);
  PQclear(res);
  return ok ? 0 : -1;
}

/* The listening connection, made (and LISTENing) on first use. */
static PGconn *listener(pg *p) {
  if (p->n && PQstatus(p->n) == CONNECTION_OK) return p->n;
  PQfinish(p->n);
  p->n = PQconnectdb(p->conninfo);
  if (PQstatus(p->n) != CONNECTION_OK) {
    PQfinish(p->n);
    return p->n = NULL;
  }
  char *id = PQescapeIdentifier(p->n, p->channel, strlen(p->channel));
  char sql[400];
  snprintf(sql, sizeof sql, "LISTEN %s", id ? id : "luagent");
  PQfreemem(id);
  PGresult *res = PQexec(p->n, sql);
  int ok = PQresultStatus(res) == PGRES_COMMAND_OK;
  PQclear(res);
  if (!ok || PQsetnonblocking(p->n, 1) != 0) {
    PQfinish(p->n);
    return p->n = NULL;
  }
  return p->n;
}

static unsigned take_notifies(PGconn *c) {
  unsigned k = 0;
  PGnotify *nt;
  while ((nt = PQnotifies(c))) {
    k |= (unsigned)strtoul(nt->extra ? nt->extra : "0", NULL, 10);
    PQfreemem(nt);
  }
  return k;
}

static int pg_listen(void *e, int kick_fd, int timeout_ms) {
  pg *p = e;
  PGconn *c = p->channel[0] ? listener(p) : NULL;
  if (!c) return -1;
  unsigned k = take_notifies(c);
  if (k) return (int)k;
  struct pollfd fds[2] = {{PQsocket(c), POLLIN, 0}, {kick_fd, POLLIN, 0}};
  int r = poll(fds, 2, timeout_ms);
  if (r < 0) return 0; /* a signal: the caller looks again */
  if (fds[1].revents & POLLIN) {
    char drain[64];
    while (read(kick_fd, drain, sizeof drain) > 0) {}
    k |= LG_WAKE_KICKED;
  }
  if (fds[0].revents) {
    if (!PQconsumeInput(c)) { /* the server went away: made again next time */
      PQfinish(p->n);
      p->n = NULL;
      return -1;
    }
    k |= take_notifies(c);
  }
  return (int)k;
}

static int pg_write(void *e, const lg_store_op *list, lg_store_op *const *v, size_t n, int *stale,
                    char *err, size_t errlen) {
  pg *p = e;
  *stale = 0;
  if (ensure_conn(p->w, err, errlen) != 0) return -1;
  char m[MSG_LEN];
  int ok = run(p->w, "BEGIN", m, sizeof m) == 0, rc;
  /* shared: batches with events commit one at a time, so gseq (taken
   * inside) is commit order and a reader's cursor never skips one that
   * commits later with a lower number */
  int events = 0;
  for (const lg_store_op *o = list; o && !events; o = o->next) events = o->type == LG_OP_EVENT;
  if (ok && events && p->node[0])
    ok = run(p->w, "SELECT pg_advisory_xact_lock(" EVENTS_KEY ")", m, sizeof m) == 0;
  for (const lg_store_op *o = list; ok && o; o = o->next) {
    ok = (rc = run_op(p, o)) >= 0;
    *stale += rc > 0;
  }
  for (size_t i = 0; ok && i < n; i++) {
    ok = (rc = run_op(p, v[i])) >= 0;
    *stale += rc > 0;
  }
  if (ok && p->node[0]) ok = notify(p, wake_kinds(list, v, n), m, sizeof m) == 0;
  if (ok) ok = run(p->w, "COMMIT", m, sizeof m) == 0;
  if (ok) return 0;
  conn_msg(p->w, m, sizeof m);
  snprintf(err, errlen, "a write failed: %s", m);
  PQclear(PQexec(p->w, "ROLLBACK"));
  return -1;
}

static int prune_older(pg *p, const char *statuses, double secs, char *err, size_t errlen) {
  if (secs <= 0) return 0;
  long long before = (long long)(lg_wall_ms() - secs * 1000);
  char sql[500];
  snprintf(sql, sizeof sql,
           "BEGIN;"
           "DELETE FROM events WHERE task_id IN (SELECT task_id FROM tasks WHERE status IN %s"
           " AND finished_ms < %lld);"
           "DELETE FROM tasks WHERE status IN %s AND finished_ms < %lld;"
           "COMMIT",
           statuses, before, statuses, before);
  if (run(p->w, sql, err, errlen) == 0) return 0;
  PQclear(PQexec(p->w, "ROLLBACK"));
  return -1;
}

static int pg_prune(void *e, double completed_s, double failed_s, char *err, size_t errlen) {
  pg *p = e;
  if (ensure_conn(p->w, err, errlen) != 0) return -1;
  if (prune_older(p, "('completed')", completed_s, err, errlen) != 0) return -1;
  return prune_older(p, "('failed','cancelled','timed_out')", failed_s, err, errlen);
}

/* ------------------------------------------------------------- reads */

static int pg_read(void *e, const lg_store_read *rq, lg_store_row_fn fn, void *ud, char *why,
                   size_t whylen) {
  pg *p = e;
  if (!p->r) return 0;
  if (PQstatus(p->r) != CONNECTION_OK) PQreset(p->r);
  char a[32], b[32], c[32];
  const char *v[4] = {NULL, NULL, NULL, NULL};
  int nv = 0;
  const char *sql;
  switch (rq->what) {
    case LG_READ_TASKS:
      sql = "SELECT record FROM tasks ORDER BY pos";
      break;
    case LG_READ_TASK:
      sql = "SELECT record FROM tasks WHERE task_id = $1";
      v[nv++] = rq->key;
      break;
    case LG_READ_THREAD:
      sql = "SELECT messages FROM threads WHERE key = $1";
      v[nv++] = rq->key;
      break;
    case LG_READ_EVENTS:
      sql = "SELECT event FROM events WHERE node = $4 AND seq > $1 AND seq < $2 ORDER BY seq"
            " LIMIT $3";
      snprintf(a, sizeof a, "%lld", (long long)rq->since);
      snprintf(b, sizeof b, "%lld", (long long)rq->before);
      snprintf(c, sizeof c, "%d", rq->limit);
      v[nv++] = a;
      v[nv++] = b;
      v[nv++] = c;
      v[nv++] = p->node;
      break;
    case LG_READ_CLUSTER_EVENTS: /* every process's, in one order: seq is gseq */
      sql = "SELECT jsonb_set(jsonb_set(event::jsonb, '{seq}', to_jsonb(gseq)), '{node}',"
            " to_jsonb(node))::text FROM events WHERE gseq > $1 ORDER BY gseq LIMIT $2";
      snprintf(a, sizeof a, "%lld", (long long)rq->since);
      snprintf(c, sizeof c, "%d", rq->limit);
      v[nv++] = a;
      v[nv++] = c;
      break;
    case LG_READ_OPEN:
      sql = "SELECT count(*)::text FROM tasks WHERE status IN ('queued', 'running')";
      break;
    case LG_READ_FINISHED: /* by primary key: what other processes finished */
      sql = "SELECT record FROM tasks WHERE task_id = ANY($1::text[])"
            " AND status NOT IN ('queued', 'running')";
      v[nv++] = rq->key;
      break;
    default:
      sql = "SELECT coalesce(max(seq), 0)::text FROM events WHERE node = $1";
      v[nv++] = p->node;
      break;
  }
  PGresult *res = PQexecParams(p->r, sql, nv, NULL, v, NULL, NULL, 0);
  if (PQresultStatus(res) != PGRES_TUPLES_OK) {
    conn_msg(p->r, why, whylen);
    PQclear(res);
    return -1;
  }
  int n = PQntuples(res);
  for (int i = 0; i < n; i++) {
    if (PQgetisnull(res, i, 0)) {
      snprintf(why, whylen, "a stored value is NULL");
      PQclear(res);
      return -1;
    }
    fn(ud, PQgetvalue(res, i, 0), (size_t)PQgetlength(res, i, 0));
  }
  PQclear(res);
  return n;
}

/* ------------------------------------------------------- shared queue */

/* One parameterised command in the current transaction; its result. */
static PGresult *exec_params(PGconn *c, const char *sql, int n, const char *const *v) {
  return PQexecParams(c, sql, n, NULL, v, NULL, NULL, 0);
}

static int rows_changed(PGresult *res) { return (int)strtol(PQcmdTuples(res), NULL, 10); }

/* Claim up to r->max queued tasks, in enqueue order, rows another claimer
 * holds skipped; under a cap, the count of leased tasks is read and the
 * claim made under one advisory lock, so claimers never overshoot it. */
static int lease_claim(pg *p, const lg_store_claim_req *r, buf_t *out, char *m, size_t ml) {
  int want = r->max;
  if (r->cap > 0 || r->agent_cap > 0) {
    char v[32];
    int found;
    if (run(p->w, "SELECT pg_advisory_xact_lock(" CAP_KEY ")", m, ml) != 0 ||
        query_text(p->w, "SELECT count(*) FROM tasks WHERE owner IS NOT NULL AND NOT lent", v,
                   sizeof v, &found, m, ml) != 0)
      return -1;
    int room = r->cap > 0 ? r->cap - (int)strtol(v, NULL, 10) : want;
    if (room < want) want = room;
  }
  if (want <= 0) {
    lg_buf_add(out, "[]", 2);
    return 0;
  }
  char n[16], until[32], per[16];
  snprintf(n, sizeof n, "%d", want);
  snprintf(until, sizeof until, "%lld", (long long)(lg_wall_ms() + (int64_t)(r->lease_s * 1000.0)));
  snprintf(per, sizeof per, "%d", r->agent_cap);
  const char *v[4] = {r->node, n, until, per};
  /* under a per-agent cap, the queued tasks of each agent are ranked in
   * enqueue order and only those that fit beside its leased ones qualify
   * (the advisory lock above keeps the counts still meanwhile) */
  PGresult *res = exec_params(
      p->w,
      r->agent_cap > 0
          ? "WITH held AS (SELECT agent, count(*) AS n FROM tasks WHERE owner IS NOT NULL AND NOT lent"
            " GROUP BY agent),"
            " ranked AS (SELECT q.task_id FROM (SELECT task_id, agent, row_number() OVER"
            " (PARTITION BY agent ORDER BY pos) AS rn FROM tasks WHERE status = 'queued'"
            " AND owner IS NULL) q LEFT JOIN held h ON h.agent IS NOT DISTINCT FROM q.agent"
            " WHERE q.rn + coalesce(h.n, 0) <= $4::int),"
            " c AS (SELECT task_id FROM tasks WHERE task_id IN (SELECT task_id FROM ranked)"
            " AND status = 'queued' AND owner IS NULL ORDER BY pos LIMIT $2::int"
            " FOR UPDATE SKIP LOCKED)"
            " UPDATE tasks t SET owner = $1, token = t.token + 1, lease_until_ms = $3::bigint,"
            " status = 'running' FROM c WHERE t.task_id = c.task_id"
            " RETURNING t.task_id, t.token, t.record, t.pos"
          : "WITH c AS (SELECT task_id FROM tasks WHERE status = 'queued' AND owner IS NULL"
            " ORDER BY pos LIMIT $2::int FOR UPDATE SKIP LOCKED)"
            " UPDATE tasks t SET owner = $1, token = t.token + 1, lease_until_ms = $3::bigint,"
            " status = 'running' FROM c WHERE t.task_id = c.task_id"
            " RETURNING t.task_id, t.token, t.record, t.pos",
      r->agent_cap > 0 ? 4 : 3, v);
  if (PQresultStatus(res) != PGRES_TUPLES_OK) {
    conn_msg(p->w, m, ml);
    PQclear(res);
    return -1;
  }
  int rows = PQntuples(res);
  /* in enqueue order (RETURNING keeps none) */
  int *order = malloc((size_t)(rows ? rows : 1) * sizeof *order);
  if (!order) {
    PQclear(res);
    snprintf(m, ml, "out of memory");
    return -1;
  }
  for (int i = 0; i < rows; i++) {
    int j = i;
    long long pos = strtoll(PQgetvalue(res, i, 3), NULL, 10);
    while (j > 0 && strtoll(PQgetvalue(res, order[j - 1], 3), NULL, 10) > pos) {
      order[j] = order[j - 1];
      j--;
    }
    order[j] = i;
  }
  lg_buf_addc(out, '[');
  for (int k = 0; k < rows; k++) {
    int i = order[k];
    if (k) lg_buf_addc(out, ',');
    lg_buf_add(out, "{\"task_id\":", 11);
    lg_buf_add_jstr(out, PQgetvalue(res, i, 0), (size_t)PQgetlength(res, i, 0));
    lg_buf_addf(out, ",\"token\":%s,\"record\":", PQgetvalue(res, i, 1));
    lg_buf_add(out, PQgetvalue(res, i, 2), (size_t)PQgetlength(res, i, 2));
    lg_buf_addc(out, '}');
  }
  lg_buf_addc(out, ']');
  free(order);
  PQclear(res);
  return rows;
}

/* Leases that ran out: back to the queue, ownerless. The token stays; the
 * next claim raises it, and a write of the old owner no longer matches. */
static int lease_requeue(pg *p, buf_t *out, char *m, size_t ml) {
  char now[32];
  snprintf(now, sizeof now, "%lld", (long long)lg_wall_ms());
  const char *v[1] = {now};
  PGresult *res = exec_params(p->w,
                              "UPDATE tasks SET owner = NULL, lease_until_ms = NULL, status = 'queued',"
                              " lent = false WHERE owner IS NOT NULL AND lease_until_ms < $1::bigint"
                              " RETURNING task_id",
                              1, v);
  if (PQresultStatus(res) != PGRES_TUPLES_OK) {
    conn_msg(p->w, m, ml);
    PQclear(res);
    return -1;
  }
  int rows = PQntuples(res);
  if (out) {
    lg_buf_addc(out, '[');
    for (int i = 0; i < rows; i++) {
      if (i) lg_buf_addc(out, ',');
      lg_buf_add_jstr(out, PQgetvalue(res, i, 0), (size_t)PQgetlength(res, i, 0));
    }
    lg_buf_addc(out, ']');
  }
  PQclear(res);
  /* tasks went back to the queue: tell the idle */
  return rows > 0 && notify(p, LG_WAKE_QUEUED, m, ml) != 0 ? -1 : rows;
}

static int lease_renew(pg *p, const lg_store_claim_req *r, char *m, size_t ml) {
  char until[32];
  snprintf(until, sizeof until, "%lld", (long long)(lg_wall_ms() + (int64_t)(r->lease_s * 1000.0)));
  const char *v[2] = {r->node, until};
  PGresult *res = exec_params(p->w, "UPDATE tasks SET lease_until_ms = $2::bigint WHERE owner = $1", 2, v);
  int ok = PQresultStatus(res) == PGRES_COMMAND_OK;
  int n = ok ? rows_changed(res) : -1;
  if (!ok) conn_msg(p->w, m, ml);
  PQclear(res);
  return n;
}

/* The fenced write: only the holder with the current token writes; a
 * finished record ends the lease. 0 written, 1 stale. */
static int lease_put(pg *p, const lg_store_lease_req *r, char *m, size_t ml) {
  char tok[32], fin[32];
  snprintf(tok, sizeof tok, "%lld", (long long)r->token);
  snprintf(fin, sizeof fin, "%lld", (long long)lg_wall_ms());
  const char *v[6] = {r->task_id, r->claim.node, tok, r->status, r->json, r->finished ? fin : NULL};
  PGresult *res = exec_params(
      p->w,
      "UPDATE tasks SET status = $4, record = $5, finished_ms = $6::bigint,"
      " owner = CASE WHEN $6::bigint IS NULL THEN owner END,"
      " lease_until_ms = CASE WHEN $6::bigint IS NULL THEN lease_until_ms END"
      " WHERE task_id = $1 AND owner = $2 AND token = $3::bigint",
      6, v);
  int ok = PQresultStatus(res) == PGRES_COMMAND_OK;
  int n = ok ? rows_changed(res) : -1;
  if (!ok) conn_msg(p->w, m, ml);
  PQclear(res);
  return n < 0 ? -1 : n == 0 ? 1 : 0;
}

static int pg_lease(void *e, const lg_store_lease_req *r, buf_t *out, char *err, size_t errlen) {
  pg *p = e;
  if (ensure_conn(p->w, err, errlen) != 0) return -1;
  char m[MSG_LEN] = "";
  size_t start = out ? out->len : 0;
  int n = run(p->w, "BEGIN", m, sizeof m) == 0 ? 0 : -1;
  if (n == 0) {
    switch (r->what) {
      case LG_LEASE_CLAIM: n = lease_claim(p, &r->claim, out, m, sizeof m); break;
      case LG_LEASE_RENEW: n = lease_renew(p, &r->claim, m, sizeof m); break;
      case LG_LEASE_REQUEUE: n = lease_requeue(p, out, m, sizeof m); break;
      default: n = lease_put(p, r, m, sizeof m); break;
    }
  }
  if (n >= 0 && run(p->w, "COMMIT", m, sizeof m) == 0) return n;
  snprintf(err, errlen, "a shared-queue write failed: %s", m);
  PQclear(PQexec(p->w, "ROLLBACK"));
  if (out) {
    out->len = start;
    if (out->p) out->p[start] = '\0';
  }
  return -1;
}

/* ------------------------------------------------------------- close */

static void pg_close_reads(void *e) {
  pg *p = e;
  PQfinish(p->r);
  p->r = NULL;
}

static void pg_close(void *e) {
  pg *p = e;
  PQfinish(p->r);
  PQfinish(p->n);
  PQfinish(p->w); /* ends the session: its advisory lock goes with it */
  free(p->conninfo);
  free(p);
}

static void pg_info(void *e, lg_store_info_t *out) {
  pg *p = e;
  out->synchronous = p->synchronous;
  out->journal_mode = "wal";
  out->schema_version = SCHEMA_VERSION;
}

static const lg_store_engine_ops pg_ops = {
    "postgresql", pg_write, pg_prune, NULL, pg_read, pg_close_reads, pg_close, pg_info, pg_lease,
    pg_listen,
};

/* ------------------------------------------------------------- open */

int lg_store_pg_open(const char *conninfo, const lg_store_opts *o, lg_store_engine *out,
                     char *err, size_t errlen) {
  pg *p = calloc(1, sizeof *p);
  if (!p) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  char m[MSG_LEN], v[64];
  int found, version = 0;
  if (!(p->w = connect_to(conninfo, err, errlen))) goto fail_quiet;
  if (check_schema(p->w, &version, err, errlen) != 0) goto fail_quiet;
  /* a process that was killed holds the lock until the server sees its
   * connection gone, a moment later: wait that long, not more */
  PGresult *lr = o && o->shared ? PQexec(p->w, "SELECT 1")
                                 : PQexec(p->w, "SET lock_timeout = '1500ms';"
                                                " SELECT pg_advisory_lock(" LOCK_KEY ")");
  int locked = PQresultStatus(lr) == PGRES_TUPLES_OK;
  const char *state = PQresultErrorField(lr, PG_DIAG_SQLSTATE);
  int busy = !locked && state && strcmp(state, "55P03") == 0; /* lock_not_available */
  if (!locked) conn_msg(p->w, m, sizeof m);
  PQclear(lr);
  if (busy) {
    snprintf(err, errlen,
             "the store is already open in another app or process (its advisory lock is held)");
    goto fail_quiet;
  }
  if (!locked || run(p->w, "SET lock_timeout = 0", m, sizeof m) != 0) goto fail;
  /* durability "full": every commit waits for the server's disk */
  if (o && o->durability_full && run(p->w, "SET synchronous_commit = on", m, sizeof m) != 0)
    goto fail;
  if (query_text(p->w, "SHOW synchronous_commit", v, sizeof v, &found, m, sizeof m) != 0) goto fail;
  p->synchronous = strcmp(v, "off") == 0 ? 0 : strcmp(v, "local") == 0 ? 1 : 2;
  if (prepare_all(p->w, m, sizeof m) != 0) goto fail;
  double completed_s = o ? o->completed_s : 0, failed_s = o ? o->failed_s : 0;
  if ((completed_s > 0 || failed_s > 0) && pg_prune(p, completed_s, failed_s, m, sizeof m) != 0)
    goto fail;
  if (o && o->shared) {
    snprintf(p->node, sizeof p->node, "%s", o->node ? o->node : "");
    if (query_text(p->w, "SELECT 'luagent:' || current_schema()", v, sizeof v, &found, m, sizeof m) != 0)
      goto fail;
    snprintf(p->channel, sizeof p->channel, "%s", v);
    if (!(p->conninfo = lg_strdup(conninfo))) {
      snprintf(m, sizeof m, "out of memory");
      goto fail;
    }
  }
  {
    const char *pv[1] = {p->node};
    PGresult *mr = exec_params(p->w, "SELECT coalesce(max(seq), 0)::text FROM events WHERE node = $1",
                               1, pv);
    int ok = PQresultStatus(mr) == PGRES_TUPLES_OK && PQntuples(mr) == 1;
    if (ok) snprintf(v, sizeof v, "%s", PQgetvalue(mr, 0, 0));
    else conn_msg(p->w, m, sizeof m);
    PQclear(mr);
    if (!ok) goto fail;
  }
  out->max_seq = strtoll(v, NULL, 10);
  if (!(p->r = connect_to(conninfo, err, errlen))) goto fail_quiet;
  out->ops = &pg_ops;
  out->e = p;
  return 0;
fail:
  snprintf(err, errlen, "%s", m);
fail_quiet:
  PQfinish(p->r);
  PQfinish(p->w);
  free(p->conninfo);
  free(p);
  return -1;
}
