/* The store (§7). With no file store the dispatcher's own task table is the
 * store and every call here is a no-op on a NULL store. A file store is
 * SQLite in WAL mode behind one writer thread that owns the only write
 * connection: callers (under the dispatcher mutex) only queue operations;
 * the writer commits them in order, in batches (group commit), and
 * lg_store_sync lets an enqueuer wait, without the dispatcher mutex, until
 * its record is durable. An exclusive flock on `path.lock` keeps a
 * second app or process out. Reads (recovery, old events, threads) use a
 * second, read-only connection on the host thread. */
#include "store.h"
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SCHEMA_VERSION 1
#define FAIL_RING 16 /* failed batches remembered for lg_store_sync */
#define READ_MSGS 8  /* read failures waiting for the writer to report them */
#define MSG_LEN 300

enum { OP_TASK, OP_EVENT, OP_THREAD, OP_SKIP };

typedef struct op {
  int type;
  int64_t seq;
  char *key, *json;
  const char *status; /* a task's status name (a static string) */
  int finished;       /* the task ended: its record ages for retention */
  struct op *next;
} op;

struct lg_store {
  char *path;
  int lock_fd;
  sqlite3 *wdb, *rdb;
  sqlite3_stmt *put_task, *put_event, *put_thread;
  pthread_mutex_t mu, rmu;
  pthread_cond_t work_cv, done_cv;
  pthread_t writer;
  op *head, *tail;
  uint64_t queued, committed;
  int stop, closed;
  double completed_s, failed_s; /* retention, 0 = keep */
  unsigned commits;
  void (*on_error)(void *ud, const char *message);
  void *on_error_ud;
  int synchronous;       /* PRAGMA synchronous as the write connection reports it */
  char journal_mode[16]; /* PRAGMA journal_mode likewise ("wal") */
  int64_t open_max_seq;  /* the highest event seq at open */
  /* failures (under mu): the ticket ranges (lo, hi] of the last failed
   * batches, counts, the latest message, reads waiting to be reported */
  struct {
    uint64_t lo, hi;
    char msg[MSG_LEN];
  } fails[FAIL_RING];
  uint64_t nfails, evicted_hi, write_failures, read_failures;
  char last_error[MSG_LEN];
  char read_msgs[READ_MSGS][MSG_LEN];
  int nread_msgs;
  /* task records whose write failed, sorted by task id; only the writer
   * changes the array (under mu), so it reads it without the lock */
  op **unsaved;
  size_t nunsaved, unsaved_cap;
  /* the tests' page limit (lg_store_limit_pages) */
  int64_t open_pages, want_pages, pages;
  unsigned pages_req, pages_done;
};

/* ------------------------------------------------------------ helpers */

static int exec(sqlite3 *db, const char *sql, char *err, size_t errlen) {
  char *m = NULL;
  if (sqlite3_exec(db, sql, NULL, NULL, &m) != SQLITE_OK) {
    snprintf(err, errlen, "%s", m ? m : sqlite3_errmsg(db));
    sqlite3_free(m);
    return -1;
  }
  return 0;
}

/* The single integer a statement returns; -1 with a message if it fails. */
static int query_int(sqlite3 *db, const char *sql, int64_t *out, char *err, size_t errlen) {
  sqlite3_stmt *s;
  *out = 0;
  if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) != SQLITE_OK) {
    snprintf(err, errlen, "%s", sqlite3_errmsg(db));
    return -1;
  }
  int rc = sqlite3_step(s);
  if (rc == SQLITE_ROW) {
    *out = sqlite3_column_int64(s, 0);
    rc = sqlite3_step(s);
  }
  if (rc != SQLITE_DONE) snprintf(err, errlen, "%s", sqlite3_errmsg(db));
  sqlite3_finalize(s);
  return rc == SQLITE_DONE ? 0 : -1;
}

static const char *const schema_sql =
    "CREATE TABLE IF NOT EXISTS luagent_meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS tasks(task_id TEXT PRIMARY KEY, status TEXT NOT NULL,"
    " record TEXT NOT NULL, finished_ms INTEGER);"
    "CREATE TABLE IF NOT EXISTS events(seq INTEGER PRIMARY KEY, task_id TEXT, event TEXT NOT NULL);"
    "CREATE INDEX IF NOT EXISTS events_task ON events(task_id);"
    "CREATE TABLE IF NOT EXISTS threads(key TEXT PRIMARY KEY, messages TEXT NOT NULL,"
    " updated_ms INTEGER NOT NULL);";

/* PRAGMA quick_check: every page, b-tree and index of the file is sound. */
static int check_pages(sqlite3 *db, char *err, size_t errlen) {
  sqlite3_stmt *s;
  if (sqlite3_prepare_v2(db, "PRAGMA quick_check(3)", -1, &s, NULL) != SQLITE_OK) {
    snprintf(err, errlen, "the file is damaged (%s)", sqlite3_errmsg(db));
    return -1;
  }
  char found[MSG_LEN] = "";
  int rc;
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
    const char *t = (const char *)sqlite3_column_text(s, 0);
    if (t && strcmp(t, "ok") == 0) continue;
    size_t n = strlen(found);
    snprintf(found + n, sizeof found - n, "%s%s", n ? "; " : "", t ? t : "?");
  }
  if (rc != SQLITE_DONE) snprintf(found, sizeof found, "%s", sqlite3_errmsg(db));
  sqlite3_finalize(s);
  if (!found[0]) return 0;
  for (char *c = found; *c; c++)
    if (*c == '\n') *c = ' ';
  snprintf(err, errlen, "the file is damaged (quick_check: %s)", found);
  return -1;
}

/* Every row of one table holds JSON of the right kind: a record or event
 * is an object, a conversation an array. The message names the row. */
typedef struct {
  const char *sql, *what;
  char open;
} row_check;

static const row_check row_checks[] = {
    {"SELECT task_id, record FROM tasks ORDER BY rowid", "the record of task", '{'},
    {"SELECT seq, event FROM events ORDER BY seq", "event", '{'},
    {"SELECT key, messages FROM threads", "the conversation", '['},
};

static int check_rows(sqlite3 *db, const row_check *c, char *err, size_t errlen) {
  sqlite3_stmt *s;
  if (sqlite3_prepare_v2(db, c->sql, -1, &s, NULL) != SQLITE_OK) {
    snprintf(err, errlen, "the file is damaged (%s)", sqlite3_errmsg(db));
    return -1;
  }
  int rc, bad = 0;
  while (!bad && (rc = sqlite3_step(s)) == SQLITE_ROW) {
    const char *key = (const char *)sqlite3_column_text(s, 0);
    const char *json = (const char *)sqlite3_column_text(s, 1);
    size_t len = (size_t)sqlite3_column_bytes(s, 1), i = 0;
    char why[160] = "", jerr[128];
    if (!json) {
      snprintf(why, sizeof why, "it is missing");
    } else if (lg_json_check(json, len, jerr, sizeof jerr) != 0) {
      snprintf(why, sizeof why, "not JSON: %s", jerr);
    } else {
      while (i < len && strchr(" \t\r\n", json[i])) i++;
      if (json[i] != c->open)
        snprintf(why, sizeof why, "not a JSON %s", c->open == '{' ? "object" : "array");
    }
    if (why[0]) {
      snprintf(err, errlen, "%s %.80s is damaged (%s)", c->what, key ? key : "(no key)", why);
      bad = 1;
    }
  }
  if (!bad && rc != SQLITE_DONE) {
    snprintf(err, errlen, "the file is damaged (%s)", sqlite3_errmsg(db));
    bad = 1;
  }
  sqlite3_finalize(s);
  return bad ? -1 : 0;
}

/* A luagent store that is already there is read whole before anything is
 * written or recovered from it: a damaged file is refused, never half-read. */
static int check_file(lg_store *st, sqlite3 *db, char *err, size_t errlen) {
  if (check_pages(db, err, errlen) != 0) return -1;
  for (size_t i = 0; i < sizeof row_checks / sizeof *row_checks; i++)
    if (check_rows(db, &row_checks[i], err, errlen) != 0) return -1;
  char m[200];
  if (query_int(db, "SELECT coalesce(max(seq), 0) FROM events", &st->open_max_seq, m, sizeof m)) {
    snprintf(err, errlen, "the file is damaged (%s)", m);
    return -1;
  }
  return 0;
}

/* A file that SQLite opens but that has tables and no luagent_meta is
 * someone else's database: refuse it rather than write into it. */
static int check_schema(lg_store *st, sqlite3 *db, char *err, size_t errlen) {
  int64_t objects, has_meta, version = 0;
  char m[200];
  if (query_int(db, "SELECT count(*) FROM sqlite_master", &objects, m, sizeof m) != 0) {
    if (sqlite3_errcode(db) == SQLITE_CORRUPT)
      snprintf(err, errlen, "the file is damaged (%s)", m);
    else
      snprintf(err, errlen, "not a luagent store (%s)", m);
    return -1;
  }
  if (query_int(db, "SELECT count(*) FROM sqlite_master WHERE name='luagent_meta'", &has_meta, m,
                sizeof m) != 0 ||
      (has_meta && query_int(db,
                             "SELECT coalesce((SELECT CAST(value AS INTEGER) FROM luagent_meta"
                             " WHERE key='schema_version'), 0)",
                             &version, m, sizeof m) != 0)) {
    snprintf(err, errlen, "the file is damaged (%s)", m);
    return -1;
  }
  if (objects > 0 && !has_meta) {
    snprintf(err, errlen, "not a luagent store (the file holds another database)");
    return -1;
  }
  if (version > SCHEMA_VERSION) {
    snprintf(err, errlen,
             "the store was written by a newer luagent (schema %lld; this one reads up to %d)",
             (long long)version, SCHEMA_VERSION);
    return -1;
  }
  if (has_meta && check_file(st, db, err, errlen) != 0) return -1;
  if (exec(db, schema_sql, err, errlen) != 0) return -1;
  char sql[128];
  snprintf(sql, sizeof sql,
           "INSERT OR IGNORE INTO luagent_meta(key, value) VALUES('schema_version', '%d')",
           SCHEMA_VERSION);
  return exec(db, sql, err, errlen);
}

static void free_ops(op *o) {
  while (o) {
    op *nx = o->next;
    free(o->key);
    free(o->json);
    free(o);
    o = nx;
  }
}

/* ------------------------------------------------------------ failures */

/* A failed write, under mu: counted, kept as the latest error and, for a
 * batch, remembered by ticket range for lg_store_sync. */
static void note_write_failure(lg_store *st, uint64_t lo, uint64_t hi, const char *msg) {
  st->write_failures++;
  snprintf(st->last_error, sizeof st->last_error, "%s", msg);
  if (hi <= lo) return;
  unsigned i = (unsigned)(st->nfails++ % FAIL_RING);
  if (st->nfails > FAIL_RING) st->evicted_hi = st->fails[i].hi; /* forgotten from here down */
  st->fails[i].lo = lo;
  st->fails[i].hi = hi;
  snprintf(st->fails[i].msg, sizeof st->fails[i].msg, "%s", msg);
}

/* The message of the failed batch that held `ticket`, or NULL. A ticket in
 * the span of forgotten failures counts as failed (it may have been). */
static const char *failure_of(lg_store *st, uint64_t ticket) {
  uint64_t kept = st->nfails < FAIL_RING ? st->nfails : FAIL_RING;
  for (uint64_t k = 0; k < kept; k++) {
    unsigned i = (unsigned)((st->nfails - 1 - k) % FAIL_RING);
    if (ticket > st->fails[i].lo && ticket <= st->fails[i].hi) return st->fails[i].msg;
  }
  return ticket <= st->evicted_hi ? st->last_error : NULL;
}

/* Tell the app, on the writer thread with no store lock held. */
static void tell(lg_store *st, const char *msg) {
  if (st->on_error) st->on_error(st->on_error_ud, msg);
}

/* A read that did not end well, rmu held: counted, kept as the latest
 * error (and copied into err) and handed to the writer thread to report,
 * since the reader may hold a mutex that the report's receiver takes. */
static void read_failed(lg_store *st, const char *what, const char *why, char *err,
                        size_t errlen) {
  char msg[MSG_LEN];
  snprintf(msg, sizeof msg, "store %s: a read failed (%s): %s", st->path, what,
           why ? why : sqlite3_errmsg(st->rdb));
  if (err && errlen) snprintf(err, errlen, "%s", msg);
  pthread_mutex_lock(&st->mu);
  st->read_failures++;
  snprintf(st->last_error, sizeof st->last_error, "%s", msg);
  if (st->nread_msgs < READ_MSGS && !st->stop) {
    memcpy(st->read_msgs[st->nread_msgs++], msg, sizeof msg);
    pthread_cond_signal(&st->work_cv);
  }
  pthread_mutex_unlock(&st->mu);
}

/* ------------------------------------------------------ unsaved records */

/* Index of `key` in the sorted unsaved array, or where it would go. */
static size_t unsaved_find(const lg_store *st, const char *key, int *found) {
  size_t lo = 0, hi = st->nunsaved;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    int c = strcmp(st->unsaved[mid]->key, key);
    if (c == 0) {
      *found = 1;
      return mid;
    }
    if (c < 0) lo = mid + 1;
    else hi = mid;
  }
  *found = 0;
  return lo;
}

/* Under mu: a failed batch's task records become the unsaved ones (a later
 * record of a task replaces an earlier one). They are moved, not copied. */
static void keep_unsaved(lg_store *st, op *batch) {
  for (op *o = batch; o; o = o->next) {
    if (o->type != OP_TASK) continue;
    int found;
    size_t i = unsaved_find(st, o->key, &found);
    if (!found && st->nunsaved == st->unsaved_cap) {
      size_t cap = st->unsaved_cap ? st->unsaved_cap * 2 : 16;
      op **v = realloc(st->unsaved, cap * sizeof *v);
      if (!v) continue; /* still reported as failed; only not retried */
      st->unsaved = v;
      st->unsaved_cap = cap;
    }
    op *keep = calloc(1, sizeof *keep);
    if (!keep) continue;
    *keep = *o;
    keep->next = NULL;
    o->key = o->json = NULL;
    o->type = OP_SKIP;
    if (found) {
      free_ops(st->unsaved[i]);
    } else {
      memmove(st->unsaved + i + 1, st->unsaved + i, (st->nunsaved - i) * sizeof *st->unsaved);
      st->nunsaved++;
    }
    st->unsaved[i] = keep;
  }
}

/* Under mu: records a committed batch wrote supersede the unsaved ones. */
static void forget_unsaved(lg_store *st, const op *batch) {
  for (const op *o = batch; o && st->nunsaved; o = o->next) {
    if (o->type != OP_TASK) continue;
    int found;
    size_t i = unsaved_find(st, o->key, &found);
    if (!found) continue;
    free_ops(st->unsaved[i]);
    memmove(st->unsaved + i, st->unsaved + i + 1, (st->nunsaved - i - 1) * sizeof *st->unsaved);
    st->nunsaved--;
  }
}

/* ------------------------------------------------------------- writes */

/* Delete tasks in `statuses` (an SQL list) finished before `secs` ago, and
 * their events. */
static int prune_older(lg_store *st, const char *statuses, double secs, char *err, size_t errlen) {
  if (secs <= 0) return 0;
  long long before = (long long)(lg_wall_ms() - secs * 1000);
  char sql[400];
  snprintf(sql, sizeof sql,
           "DELETE FROM events WHERE task_id IN (SELECT task_id FROM tasks WHERE status IN %s"
           " AND finished_ms < %lld);"
           "DELETE FROM tasks WHERE status IN %s AND finished_ms < %lld;",
           statuses, before, statuses, before);
  return exec(st->wdb, sql, err, errlen);
}

static int prune(lg_store *st, char *err, size_t errlen) {
  if (prune_older(st, "('completed')", st->completed_s, err, errlen) != 0) return -1;
  return prune_older(st, "('failed','cancelled','timed_out')", st->failed_s, err, errlen);
}

static int run_op(lg_store *st, const op *o) {
  sqlite3_stmt *s;
  switch (o->type) {
    case OP_SKIP:
      return 0;
    case OP_TASK:
      s = st->put_task;
      sqlite3_bind_text(s, 1, o->key, -1, SQLITE_STATIC);
      sqlite3_bind_text(s, 2, o->status, -1, SQLITE_STATIC);
      sqlite3_bind_text(s, 3, o->json, -1, SQLITE_STATIC);
      if (o->finished)
        sqlite3_bind_int64(s, 4, o->seq); /* finished time, for retention */
      else
        sqlite3_bind_null(s, 4);
      break;
    case OP_EVENT:
      s = st->put_event;
      sqlite3_bind_int64(s, 1, o->seq);
      if (o->key)
        sqlite3_bind_text(s, 2, o->key, -1, SQLITE_STATIC);
      else
        sqlite3_bind_null(s, 2);
      sqlite3_bind_text(s, 3, o->json, -1, SQLITE_STATIC);
      break;
    default:
      s = st->put_thread;
      sqlite3_bind_text(s, 1, o->key, -1, SQLITE_STATIC);
      sqlite3_bind_text(s, 2, o->json, -1, SQLITE_STATIC);
      sqlite3_bind_int64(s, 3, lg_wall_ms());
      break;
  }
  int rc = sqlite3_step(s);
  sqlite3_reset(s);
  sqlite3_clear_bindings(s);
  return rc == SQLITE_DONE ? 0 : -1;
}

/* One transaction: the ops of a list, or of an array; 0 committed, else -1
 * with SQLite's message (and nothing of it written). */
static int write_ops(lg_store *st, const op *list, op *const *v, size_t n, char *err,
                     size_t errlen) {
  int ok = sqlite3_exec(st->wdb, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK;
  for (const op *o = list; ok && o; o = o->next) ok = run_op(st, o) == 0;
  for (size_t i = 0; ok && i < n; i++) ok = run_op(st, v[i]) == 0;
  if (ok) ok = sqlite3_exec(st->wdb, "COMMIT", NULL, NULL, NULL) == SQLITE_OK;
  if (ok) return 0;
  snprintf(err, errlen, "store %s: a write failed: %s", st->path, sqlite3_errmsg(st->wdb));
  sqlite3_exec(st->wdb, "ROLLBACK", NULL, NULL, NULL);
  return -1;
}

/* Write the unsaved records again (writer thread, no lock held). */
static void retry_unsaved(lg_store *st) {
  char msg[MSG_LEN];
  int rc = write_ops(st, NULL, st->unsaved, st->nunsaved, msg, sizeof msg);
  pthread_mutex_lock(&st->mu);
  if (rc == 0) {
    for (size_t i = 0; i < st->nunsaved; i++) free_ops(st->unsaved[i]);
    st->nunsaved = 0;
  } else {
    note_write_failure(st, 0, 0, msg);
  }
  pthread_mutex_unlock(&st->mu);
  if (rc != 0) tell(st, msg);
}

/* Token events (payload {"text": ...}) of one run that follow each other in
 * a batch are stored as one event: the first one's seq with the texts
 * joined (§6: the file keeps all events, tokens coalesced). The JSON is the
 * dispatcher's own, so its shape is known: the payload is the last field. */
static const char TOKEN_KIND[] = "\"kind\":\"token\"";
static const char TOKEN_TEXT[] = "\"payload\":{\"text\":\"";

static const char *token_text(const op *o, size_t *len) {
  if (o->type != OP_EVENT || !strstr(o->json, TOKEN_KIND)) return NULL;
  const char *p = strstr(o->json, TOKEN_TEXT);
  size_t n = strlen(o->json);
  if (!p || n < 3 || strcmp(o->json + n - 3, "\"}}") != 0) return NULL;
  p += sizeof TOKEN_TEXT - 1;
  const char *end = o->json + n - 3;
  for (const char *q = p; q < end; q++) { /* one string up to the end, or not ours */
    if (*q == '\\') q++;
    else if (*q == '"') return NULL;
  }
  *len = (size_t)(end - p);
  return p;
}

static int same_run(const op *a, const op *b) {
  const char *x = strstr(a->json, "\"run_id\":\""), *y = strstr(b->json, "\"run_id\":\"");
  if (!x || !y) return !x && !y;
  x += 10;
  y += 10;
  const char *xe = strchr(x, '"'), *ye = strchr(y, '"');
  return xe && ye && xe - x == ye - y && memcmp(x, y, (size_t)(xe - x)) == 0;
}

static void coalesce_tokens(op *batch) {
  op *first = NULL;
  for (op *o = batch; o; o = o->next) {
    size_t tl;
    const char *text = token_text(o, &tl);
    if (!text) {
      if (o->type != OP_SKIP) first = NULL;
      continue;
    }
    if (first && same_run(first, o)) {
      size_t fl = strlen(first->json);
      char *merged = malloc(fl + tl + 1);
      if (!merged) {
        first = o;
        continue;
      }
      memcpy(merged, first->json, fl - 3);
      memcpy(merged + fl - 3, text, tl);
      memcpy(merged + fl - 3 + tl, "\"}}", 4);
      free(first->json);
      first->json = merged;
      o->type = OP_SKIP;
    } else {
      first = o;
    }
  }
}

/* Commit one batch (everything queued so far) in one transaction, in order;
 * then, if it went in, the records earlier failures left unsaved. Called
 * and returns with mu held. */
static void write_batch(lg_store *st) {
  op *batch = st->head;
  uint64_t from = st->committed, upto = st->queued;
  st->head = st->tail = NULL;
  pthread_mutex_unlock(&st->mu);
  coalesce_tokens(batch);
  char msg[MSG_LEN];
  int rc = write_ops(st, batch, NULL, 0, msg, sizeof msg);
  char pmsg[MSG_LEN] = "";
  if (rc == 0 && ++st->commits % 256 == 0 && (st->completed_s > 0 || st->failed_s > 0)) {
    char e[200];
    if (prune(st, e, sizeof e) != 0)
      snprintf(pmsg, sizeof pmsg, "store %s: removing old tasks failed: %s", st->path, e);
  }
  pthread_mutex_lock(&st->mu);
  if (rc == 0) {
    forget_unsaved(st, batch);
  } else {
    keep_unsaved(st, batch);
    note_write_failure(st, from, upto, msg);
  }
  if (pmsg[0]) note_write_failure(st, 0, 0, pmsg);
  int retry = rc == 0 && st->nunsaved > 0;
  st->committed = upto;
  pthread_cond_broadcast(&st->done_cv);
  pthread_mutex_unlock(&st->mu);
  free_ops(batch);
  if (rc != 0) tell(st, msg);
  if (pmsg[0]) tell(st, pmsg);
  if (retry) retry_unsaved(st);
  pthread_mutex_lock(&st->mu);
}

/* Report what readers queued (mu held on entry and return). */
static void report_reads(lg_store *st) {
  char msgs[READ_MSGS][MSG_LEN];
  int n = st->nread_msgs;
  memcpy(msgs, st->read_msgs, (size_t)n * MSG_LEN);
  st->nread_msgs = 0;
  pthread_mutex_unlock(&st->mu);
  for (int i = 0; i < n; i++) tell(st, msgs[i]);
  pthread_mutex_lock(&st->mu);
}

/* The tests' page limit (mu held on entry and return). */
static void apply_pages(lg_store *st) {
  unsigned req = st->pages_req;
  char sql[80], e[200];
  snprintf(sql, sizeof sql, "PRAGMA max_page_count = %lld", (long long)st->want_pages);
  pthread_mutex_unlock(&st->mu);
  int64_t now = 0;
  query_int(st->wdb, sql, &now, e, sizeof e);
  pthread_mutex_lock(&st->mu);
  st->pages = now;
  st->pages_done = req;
  pthread_cond_broadcast(&st->done_cv);
}

/* The writer thread: commits batches, reports failures, and at the end
 * tries once more to write what is unsaved. */
static void *writer_main(void *arg) {
  lg_store *st = arg;
  pthread_mutex_lock(&st->mu);
  for (;;) {
    while (!st->head && !st->stop && !st->nread_msgs && st->pages_req == st->pages_done)
      pthread_cond_wait(&st->work_cv, &st->mu);
    if (st->nread_msgs) report_reads(st);
    else if (st->pages_req != st->pages_done) apply_pages(st);
    else if (st->head) write_batch(st);
    else break; /* stopped, and everything queued is written */
  }
  int retry = st->nunsaved > 0;
  pthread_mutex_unlock(&st->mu);
  if (retry) retry_unsaved(st);
  return NULL;
}

/* ------------------------------------------------------------- open */

static int open_db(const char *path, int flags, sqlite3 **db, char *err, size_t errlen) {
  if (sqlite3_open_v2(path, db, flags | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
    snprintf(err, errlen, "%s", *db ? sqlite3_errmsg(*db) : "cannot open");
    sqlite3_close(*db);
    *db = NULL;
    return -1;
  }
  sqlite3_busy_timeout(*db, 5000);
  return 0;
}

lg_store *lg_store_open(const char *path, const lg_store_opts *o, char *err, size_t errlen) {
  char e[600] = "";
  char *lock = NULL;
  int made_lock = 0, made_db = 0;
  lg_store *st = calloc(1, sizeof *st);
  if (!st) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  st->lock_fd = -1;
  st->path = strdup(path);
  st->completed_s = o ? o->completed_s : 0;
  st->failed_s = o ? o->failed_s : 0;
  st->on_error = o ? o->on_error : NULL;
  st->on_error_ud = o ? o->ud : NULL;
  pthread_mutex_init(&st->mu, NULL);
  pthread_mutex_init(&st->rmu, NULL);
  pthread_cond_init(&st->work_cv, NULL);
  pthread_cond_init(&st->done_cv, NULL);
  /* a directory is not a store; say so before creating anything beside it */
  struct stat sb;
  if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
    snprintf(e, sizeof e, "the path is a directory (give the path of a database file)");
    goto fail;
  }
  /* the lock file keeps a second app or process out */
  size_t n = strlen(path) + 6;
  lock = malloc(n);
  if (!lock) goto oom;
  snprintf(lock, n, "%s.lock", path);
  st->lock_fd = open(lock, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (st->lock_fd >= 0)
    made_lock = 1;
  else if (errno == EEXIST)
    st->lock_fd = open(lock, O_RDWR | O_CLOEXEC);
  if (st->lock_fd < 0) {
    int en = errno;
    char *dir = strdup(path), *slash = dir ? strrchr(dir, '/') : NULL;
    if (slash) *(slash == dir ? slash + 1 : slash) = '\0';
    if (en == ENOENT && slash && stat(dir, &sb) != 0)
      snprintf(e, sizeof e, "the directory %s does not exist", dir);
    else
      snprintf(e, sizeof e, "cannot create the lock file %s: %s", lock, strerror(en));
    free(dir);
    goto fail;
  }
  if (flock(st->lock_fd, LOCK_EX | LOCK_NB) != 0) {
    snprintf(e, sizeof e,
             "the store is already open in another app or process (%s is locked)", lock);
    made_lock = 0; /* it is theirs */
    goto fail;
  }
  /* create the file ourselves so it is 0600 (SQLite gives its -wal and
   * -shm files the database file's permissions) */
  int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd >= 0)
    made_db = 1;
  else if (errno == EEXIST)
    fd = open(path, O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    snprintf(e, sizeof e, "cannot open the database file: %s", strerror(errno));
    goto fail;
  }
  close(fd);
  if (open_db(path, SQLITE_OPEN_READWRITE, &st->wdb, e, sizeof e) != 0) goto fail;
  if (check_schema(st, st->wdb, e, sizeof e) != 0) goto fail;
  char pragmas[160];
  snprintf(pragmas, sizeof pragmas, "PRAGMA journal_mode=WAL; PRAGMA synchronous=%s;",
           o && o->durability_full ? "FULL" : "NORMAL");
  if (exec(st->wdb, pragmas, e, sizeof e) != 0) goto fail;
  /* what the connection really runs with: WAL or nothing (a file system
   * without shared memory support would silently keep a rollback journal) */
  sqlite3_stmt *ps;
  if (sqlite3_prepare_v2(st->wdb, "PRAGMA journal_mode", -1, &ps, NULL) == SQLITE_OK) {
    if (sqlite3_step(ps) == SQLITE_ROW && sqlite3_column_text(ps, 0))
      snprintf(st->journal_mode, sizeof st->journal_mode, "%s",
               (const char *)sqlite3_column_text(ps, 0));
    if (sqlite3_step(ps) != SQLITE_DONE) st->journal_mode[0] = '\0'; /* not read after all */
    sqlite3_finalize(ps);
  }
  int64_t v;
  if (query_int(st->wdb, "PRAGMA synchronous", &v, e, sizeof e) != 0 ||
      query_int(st->wdb, "PRAGMA max_page_count", &st->open_pages, e, sizeof e) != 0)
    goto fail;
  st->synchronous = (int)v;
  st->pages = st->open_pages;
  if (strcmp(st->journal_mode, "wal") != 0) {
    snprintf(e, sizeof e, "cannot use WAL mode (journal_mode is %s)",
             st->journal_mode[0] ? st->journal_mode : "unknown");
    goto fail;
  }
  if (sqlite3_prepare_v2(st->wdb,
                         "INSERT INTO tasks(task_id, status, record, finished_ms) VALUES(?,?,?,?)"
                         " ON CONFLICT(task_id) DO UPDATE SET status=excluded.status,"
                         " record=excluded.record, finished_ms=excluded.finished_ms",
                         -1, &st->put_task, NULL) != SQLITE_OK ||
      sqlite3_prepare_v2(st->wdb, "INSERT OR REPLACE INTO events(seq, task_id, event) VALUES(?,?,?)",
                         -1, &st->put_event, NULL) != SQLITE_OK ||
      sqlite3_prepare_v2(st->wdb,
                         "INSERT INTO threads(key, messages, updated_ms) VALUES(?,?,?)"
                         " ON CONFLICT(key) DO UPDATE SET messages=excluded.messages,"
                         " updated_ms=excluded.updated_ms",
                         -1, &st->put_thread, NULL) != SQLITE_OK) {
    snprintf(e, sizeof e, "%s", sqlite3_errmsg(st->wdb));
    goto fail;
  }
  /* a write probe: a read-only file or directory fails here, at load */
  char probe[200];
  snprintf(probe, sizeof probe,
           "BEGIN IMMEDIATE; INSERT OR REPLACE INTO luagent_meta(key, value)"
           " VALUES('opened_ms', '%lld'); COMMIT;",
           (long long)lg_wall_ms());
  if (exec(st->wdb, probe, e, sizeof e) != 0) {
    sqlite3_exec(st->wdb, "ROLLBACK", NULL, NULL, NULL);
    goto fail;
  }
  if ((st->completed_s > 0 || st->failed_s > 0) && prune(st, e, sizeof e) != 0) goto fail;
  if (open_db(path, SQLITE_OPEN_READONLY, &st->rdb, e, sizeof e) != 0) goto fail;
  if (pthread_create(&st->writer, NULL, writer_main, st) != 0) {
    snprintf(e, sizeof e, "cannot start the store's writer thread");
    goto fail;
  }
  free(lock);
  return st;
oom:
  snprintf(e, sizeof e, "out of memory");
fail:
  snprintf(err, errlen, "store %s: %s", path, e);
  sqlite3_finalize(st->put_task);
  sqlite3_finalize(st->put_event);
  sqlite3_finalize(st->put_thread);
  sqlite3_close(st->rdb);
  sqlite3_close(st->wdb);
  /* leave nothing behind that this failed open created */
  if (made_db) {
    unlink(path);
    for (const char *sfx = "-wal\0-shm\0-journal\0"; *sfx; sfx += strlen(sfx) + 1) {
      char side[4096];
      snprintf(side, sizeof side, "%s%s", path, sfx);
      unlink(side);
    }
  }
  if (made_lock) unlink(lock);
  if (st->lock_fd >= 0) close(st->lock_fd);
  free(lock);
  pthread_mutex_destroy(&st->mu);
  pthread_mutex_destroy(&st->rmu);
  pthread_cond_destroy(&st->work_cv);
  pthread_cond_destroy(&st->done_cv);
  free(st->path);
  free(st);
  return NULL;
}

/* ------------------------------------------------------------ queueing */

static void push(lg_store *st, op *o) {
  pthread_mutex_lock(&st->mu);
  if (st->closed) {
    pthread_mutex_unlock(&st->mu);
    free_ops(o);
    return;
  }
  o->next = NULL;
  if (st->tail)
    st->tail->next = o;
  else
    st->head = o;
  st->tail = o;
  st->queued++;
  pthread_cond_signal(&st->work_cv);
  pthread_mutex_unlock(&st->mu);
}

static op *new_op(int type, const char *key, const char *json, size_t len) {
  op *o = calloc(1, sizeof *o);
  if (!o) return NULL;
  o->type = type;
  o->key = key ? strdup(key) : NULL;
  o->json = lg_strndup(json, len);
  if ((key && !o->key) || !o->json) {
    free_ops(o);
    return NULL;
  }
  return o;
}

void lg_store_task(lg_store *st, const char *task_id, const char *status, int finished,
                   const char *json, size_t len) {
  if (!st) return;
  op *o = new_op(OP_TASK, task_id, json, len);
  if (!o) return;
  o->status = status;
  o->finished = finished;
  o->seq = lg_wall_ms();
  push(st, o);
}

void lg_store_event(lg_store *st, int64_t seq, const char *task_id, const char *json) {
  if (!st) return;
  op *o = new_op(OP_EVENT, task_id, json, strlen(json));
  if (!o) return;
  o->seq = seq;
  push(st, o);
}

void lg_store_thread(lg_store *st, const char *key, const char *json) {
  if (!st) return;
  op *o = new_op(OP_THREAD, key, json, strlen(json));
  if (o) push(st, o);
}

uint64_t lg_store_ticket(lg_store *st) {
  if (!st) return 0;
  pthread_mutex_lock(&st->mu);
  uint64_t t = st->queued;
  pthread_mutex_unlock(&st->mu);
  return t;
}

int lg_store_sync(lg_store *st, uint64_t ticket, char *err, size_t errlen) {
  if (!st) return 0;
  pthread_mutex_lock(&st->mu);
  while (st->committed < ticket && !st->closed) pthread_cond_wait(&st->done_cv, &st->mu);
  int rc = 0;
  const char *failed = failure_of(st, ticket);
  if (failed) {
    rc = -1;
    if (err) snprintf(err, errlen, "%s", failed);
  } else if (st->committed < ticket) {
    rc = -1; /* closed first: what was queued after the close is not stored */
    if (err) snprintf(err, errlen, "store %s: the store is closed", st->path);
  }
  pthread_mutex_unlock(&st->mu);
  return rc;
}

int64_t lg_store_limit_pages(lg_store *st, int64_t pages) {
  if (!st) return 0;
  lg_store_sync(st, lg_store_ticket(st), NULL, 0);
  pthread_mutex_lock(&st->mu);
  unsigned req = ++st->pages_req;
  st->want_pages = pages > 0 ? pages : st->open_pages;
  pthread_cond_signal(&st->work_cv);
  while (st->pages_done != req && !st->closed) pthread_cond_wait(&st->done_cv, &st->mu);
  int64_t now = st->pages;
  pthread_mutex_unlock(&st->mu);
  return now;
}

/* Flush, stop the writer, close both connections and release the lock. */
void lg_store_close(lg_store *st) {
  if (!st) return;
  pthread_mutex_lock(&st->mu);
  int already = st->stop;
  st->stop = 1;
  pthread_cond_signal(&st->work_cv);
  pthread_mutex_unlock(&st->mu);
  if (already) return;
  pthread_join(st->writer, NULL);
  pthread_mutex_lock(&st->mu);
  st->closed = 1;
  pthread_cond_broadcast(&st->done_cv);
  pthread_mutex_unlock(&st->mu);
  sqlite3_finalize(st->put_task);
  sqlite3_finalize(st->put_event);
  sqlite3_finalize(st->put_thread);
  st->put_task = st->put_event = st->put_thread = NULL;
  /* the read connection first: the last connection to close checkpoints
   * the WAL into the database and removes -wal and -shm, and only the
   * write connection can */
  pthread_mutex_lock(&st->rmu);
  sqlite3_close(st->rdb);
  st->rdb = NULL;
  pthread_mutex_unlock(&st->rmu);
  sqlite3_close(st->wdb);
  st->wdb = NULL;
  if (st->lock_fd >= 0) {
    close(st->lock_fd); /* releases the flock */
    st->lock_fd = -1;
  }
}

void lg_store_free(lg_store *st) {
  if (!st) return;
  lg_store_close(st);
  pthread_mutex_destroy(&st->mu);
  pthread_mutex_destroy(&st->rmu);
  pthread_cond_destroy(&st->work_cv);
  pthread_cond_destroy(&st->done_cv);
  for (size_t i = 0; i < st->nunsaved; i++) free_ops(st->unsaved[i]);
  free(st->unsaved);
  free(st->path);
  free(st);
}

/* ------------------------------------------------------------- reads */

void lg_store_info(lg_store *st, lg_store_info_t *out) {
  memset(out, 0, sizeof *out);
  if (!st) return;
  out->path = st->path;
  out->synchronous = st->synchronous;
  out->journal_mode = st->journal_mode;
  out->schema_version = SCHEMA_VERSION;
  pthread_mutex_lock(&st->mu);
  snprintf(out->error, sizeof out->error, "%s", st->last_error);
  out->write_failures = st->write_failures;
  out->read_failures = st->read_failures;
  pthread_mutex_unlock(&st->mu);
}

void lg_store_unsaved(lg_store *st, buf_t *out) {
  lg_buf_addc(out, '[');
  if (st) {
    pthread_mutex_lock(&st->mu);
    for (size_t i = 0; i < st->nunsaved; i++) {
      if (i) lg_buf_addc(out, ',');
      lg_buf_add_jstr(out, st->unsaved[i]->key, strlen(st->unsaved[i]->key));
    }
    pthread_mutex_unlock(&st->mu);
  }
  lg_buf_addc(out, ']');
}

/* A read statement on the read connection (rmu held): 0 ready, 1 nothing
 * to read (the store is closed), -1 failed (reported). */
static int read_stmt(lg_store *st, const char *sql, const char *what, sqlite3_stmt **s,
                     char *err, size_t errlen) {
  *s = NULL;
  if (!st->rdb) return 1;
  if (sqlite3_prepare_v2(st->rdb, sql, -1, s, NULL) == SQLITE_OK) return 0;
  read_failed(st, what, NULL, err, errlen);
  return -1;
}

/* Step a read to its end, handing every row's first column to fn: the
 * number of rows, or -1 (reported) if it did not end in SQLITE_DONE. A
 * NULL text is a failed read too (out of memory, or not ours). */
static int read_rows(lg_store *st, sqlite3_stmt *s, const char *what, lg_store_row_fn fn,
                     void *ud, char *err, size_t errlen) {
  int n = 0, rc;
  const char *why = NULL;
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
    const char *text = (const char *)sqlite3_column_text(s, 0);
    if (!text) {
      why = sqlite3_errcode(st->rdb) == SQLITE_NOMEM ? "out of memory" : "a stored value is NULL";
      break;
    }
    fn(ud, text, (size_t)sqlite3_column_bytes(s, 0));
    n++;
  }
  if (rc != SQLITE_DONE) read_failed(st, what, why, err, errlen);
  sqlite3_finalize(s);
  return rc == SQLITE_DONE ? n : -1;
}

static int scan_tasks(lg_store *st, lg_store_row_fn fn, void *ud, char *err, size_t errlen) {
  pthread_mutex_lock(&st->rmu);
  sqlite3_stmt *s;
  int n = read_stmt(st, "SELECT record FROM tasks ORDER BY rowid", "task records", &s, err, errlen);
  if (n == 0) n = read_rows(st, s, "task records", fn, ud, err, errlen);
  else if (n == 1) n = 0;
  pthread_mutex_unlock(&st->rmu);
  return n;
}

int lg_store_read_tasks(lg_store *st, lg_store_row_fn fn, void *ud) {
  return st ? scan_tasks(st, fn, ud, NULL, 0) : 0;
}

/* Rows joined with commas into b. */
typedef struct {
  buf_t *b;
  int n;
} list_ud;

static void add_listed(void *ud, const char *json, size_t len) {
  list_ud *l = ud;
  if (l->n++) lg_buf_addc(l->b, ',');
  lg_buf_add(l->b, json, len);
}

/* Drop what a failed read added to b. */
static void cut_back(buf_t *b, size_t len) {
  b->len = len;
  if (b->p) b->p[len] = '\0';
}

int lg_store_read_records(lg_store *st, buf_t *out, char *err, size_t errlen) {
  size_t start = out->len;
  list_ud l = {out, 0};
  lg_buf_addc(out, '[');
  if (st && scan_tasks(st, add_listed, &l, err, errlen) < 0) {
    cut_back(out, start);
    return -1;
  }
  lg_buf_addc(out, ']');
  if (out->oom) {
    snprintf(err, errlen, "store %s: out of memory reading the records", st ? st->path : "");
    return -1;
  }
  return 0;
}

static void keep_int(void *ud, const char *text, size_t len) {
  LG_UNUSED(len);
  *(int64_t *)ud = strtoll(text, NULL, 10);
}

int64_t lg_store_max_event_seq(lg_store *st) {
  if (!st) return 0;
  int64_t seq = st->open_max_seq;
  pthread_mutex_lock(&st->rmu);
  sqlite3_stmt *s;
  if (read_stmt(st, "SELECT coalesce(max(seq), 0) FROM events", "the last event", &s, NULL, 0) ==
      0) {
    int64_t found = 0;
    if (read_rows(st, s, "the last event", keep_int, &found, NULL, 0) >= 0 && found > seq)
      seq = found;
  }
  pthread_mutex_unlock(&st->rmu);
  return seq;
}

int lg_store_read_events(lg_store *st, int64_t since, int64_t before, int limit, buf_t *out) {
  if (!st) return 0;
  size_t start = out->len;
  list_ud l = {out, 0};
  int n = 0;
  pthread_mutex_lock(&st->rmu);
  sqlite3_stmt *s;
  if (read_stmt(st, "SELECT event FROM events WHERE seq > ? AND seq < ? ORDER BY seq LIMIT ?",
                "old events", &s, NULL, 0) == 0) { /* else closed or failed: nothing */
    sqlite3_bind_int64(s, 1, since);
    sqlite3_bind_int64(s, 2, before);
    sqlite3_bind_int(s, 3, limit);
    n = read_rows(st, s, "old events", add_listed, &l, NULL, 0);
  }
  pthread_mutex_unlock(&st->rmu);
  if (n <= 0 || out->oom) { /* nothing half-read: the caller sees a gap */
    cut_back(out, start);
    return 0;
  }
  return n;
}

/* One text column of one row found by key: 0 found, -1 none, -2 failed. */
static int read_one(lg_store *st, const char *sql, const char *what, const char *key, buf_t *out) {
  if (!st) return -1;
  pthread_mutex_lock(&st->rmu);
  sqlite3_stmt *s;
  int n = read_stmt(st, sql, what, &s, NULL, 0);
  size_t start = out->len;
  if (n == 1) {
    n = 0; /* closed: nothing there */
  } else if (n == 0) {
    list_ud l = {out, 0};
    sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
    n = read_rows(st, s, what, add_listed, &l, NULL, 0);
    if (n <= 0) cut_back(out, start);
  }
  pthread_mutex_unlock(&st->rmu);
  return n > 0 ? 0 : n < 0 ? -2 : -1;
}

int lg_store_read_thread(lg_store *st, const char *key, buf_t *out) {
  return read_one(st, "SELECT messages FROM threads WHERE key = ?", "a conversation", key, out);
}

int lg_store_read_task(lg_store *st, const char *task_id, buf_t *out) {
  return read_one(st, "SELECT record FROM tasks WHERE task_id = ?", "a task record", task_id, out);
}
