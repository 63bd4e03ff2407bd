/* The SQLite engine of the store (store_engine.h): a file in WAL mode, one
 * write connection (used by the store's writer thread only) and one
 * read-only connection for reads. An exclusive flock on `path.lock` keeps
 * a second app or process out. */
#include "store_engine.h"
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define SCHEMA_VERSION 1
#define MSG_LEN 300

typedef struct {
  char *path;
  int lock_fd;
  sqlite3 *wdb, *rdb;
  sqlite3_stmt *put_task, *put_event, *put_thread;
  int synchronous;       /* PRAGMA synchronous as the write connection reports it */
  char journal_mode[16]; /* PRAGMA journal_mode likewise ("wal") */
  int64_t open_max_seq;  /* the highest event seq at open */
  int64_t open_pages;    /* PRAGMA max_page_count at open */
} sq;

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
static int check_file(sq *st, sqlite3 *db, char *err, size_t errlen) {
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
static int check_schema(sq *st, sqlite3 *db, char *err, size_t errlen) {
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


/* ------------------------------------------------------------- writes */

/* Delete tasks in `statuses` (an SQL list) finished before `secs` ago, and
 * their events. */
static int prune_older(sq *st, const char *statuses, double secs, char *err, size_t errlen) {
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

static int prune(sq *st, double completed_s, double failed_s, char *err, size_t errlen) {
  if (prune_older(st, "('completed')", completed_s, err, errlen) != 0) return -1;
  return prune_older(st, "('failed','cancelled','timed_out')", failed_s, err, errlen);
}

static int sq_prune(void *e, double completed_s, double failed_s, char *err, size_t errlen) {
  return prune(e, completed_s, failed_s, err, errlen);
}

static int run_op(sq *st, const lg_store_op *o) {
  sqlite3_stmt *s;
  switch (o->type) {
    case LG_OP_SKIP:
      return 0;
    case LG_OP_TASK:
      s = st->put_task;
      sqlite3_bind_text(s, 1, o->key, -1, SQLITE_STATIC);
      sqlite3_bind_text(s, 2, o->status, -1, SQLITE_STATIC);
      sqlite3_bind_text(s, 3, o->json, -1, SQLITE_STATIC);
      if (o->finished)
        sqlite3_bind_int64(s, 4, o->seq); /* finished time, for retention */
      else
        sqlite3_bind_null(s, 4);
      break;
    case LG_OP_EVENT:
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
static int sq_write(void *e, const lg_store_op *list, lg_store_op *const *v, size_t n, int *stale,
                    char *err, size_t errlen) {
  sq *st = e;
  *stale = 0; /* a file has one owner: nothing is fenced */
  int ok = sqlite3_exec(st->wdb, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK;
  for (const lg_store_op *o = list; ok && o; o = o->next) ok = run_op(st, o) == 0;
  for (size_t i = 0; ok && i < n; i++) ok = run_op(st, v[i]) == 0;
  if (ok) ok = sqlite3_exec(st->wdb, "COMMIT", NULL, NULL, NULL) == SQLITE_OK;
  if (ok) return 0;
  snprintf(err, errlen, "a write failed: %s", sqlite3_errmsg(st->wdb));
  sqlite3_exec(st->wdb, "ROLLBACK", NULL, NULL, NULL);
  return -1;
}

/* The tests' page limit, on the writer thread. */
static int64_t sq_limit_pages(void *e, int64_t pages) {
  sq *st = e;
  char sql[80], m[200];
  snprintf(sql, sizeof sql, "PRAGMA max_page_count = %lld",
           (long long)(pages > 0 ? pages : st->open_pages));
  int64_t now = 0;
  query_int(st->wdb, sql, &now, m, sizeof m);
  return now;
}

/* ------------------------------------------------------------- reads */

static const char *read_sql(int what) {
  switch (what) {
    case LG_READ_TASKS: return "SELECT record FROM tasks ORDER BY rowid";
    case LG_READ_TASK: return "SELECT record FROM tasks WHERE task_id = ?";
    case LG_READ_THREAD: return "SELECT messages FROM threads WHERE key = ?";
    case LG_READ_EVENTS:
      return "SELECT event FROM events WHERE seq > ? AND seq < ? ORDER BY seq LIMIT ?";
    case LG_READ_OPEN:
      return "SELECT CAST(count(*) AS TEXT) FROM tasks WHERE status IN ('queued', 'running')";
    default: return "SELECT CAST(coalesce(max(seq), 0) AS TEXT) FROM events";
  }
}

/* Step a read to its end, handing every row's first column to fn: the
 * number of rows, or -1 with why if it did not end in SQLITE_DONE. A NULL
 * text is a failed read too (out of memory, or not ours). */
static int sq_read(void *e, const lg_store_read *r, lg_store_row_fn fn, void *ud, char *why,
                   size_t whylen) {
  sq *st = e;
  sqlite3_stmt *s;
  if (!st->rdb) return 0; /* closed: nothing to read */
  if (r->what == LG_READ_CLUSTER_EVENTS || r->what == LG_READ_FINISHED) {
    snprintf(why, whylen, "a file store is not shared");
    return -1;
  }
  if (sqlite3_prepare_v2(st->rdb, read_sql(r->what), -1, &s, NULL) != SQLITE_OK) {
    snprintf(why, whylen, "%s", sqlite3_errmsg(st->rdb));
    return -1;
  }
  if (r->what == LG_READ_TASK || r->what == LG_READ_THREAD) {
    sqlite3_bind_text(s, 1, r->key, -1, SQLITE_STATIC);
  } else if (r->what == LG_READ_EVENTS) {
    sqlite3_bind_int64(s, 1, r->since);
    sqlite3_bind_int64(s, 2, r->before);
    sqlite3_bind_int(s, 3, r->limit);
  }
  int n = 0, rc;
  const char *null_why = NULL;
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
    const char *text = (const char *)sqlite3_column_text(s, 0);
    if (!text) {
      null_why = sqlite3_errcode(st->rdb) == SQLITE_NOMEM ? "out of memory" : "a stored value is NULL";
      break;
    }
    fn(ud, text, (size_t)sqlite3_column_bytes(s, 0));
    n++;
  }
  if (rc != SQLITE_DONE)
    snprintf(why, whylen, "%s", null_why ? null_why : sqlite3_errmsg(st->rdb));
  sqlite3_finalize(s);
  return rc == SQLITE_DONE ? n : -1;
}

/* ------------------------------------------------------------- close */

/* The read connection first: the last connection to close checkpoints the
 * WAL into the database and removes -wal and -shm, and only the write
 * connection can. */
static void sq_close_reads(void *e) {
  sq *st = e;
  sqlite3_close(st->rdb);
  st->rdb = NULL;
}

static void sq_free(sq *st) {
  sqlite3_finalize(st->put_task);
  sqlite3_finalize(st->put_event);
  sqlite3_finalize(st->put_thread);
  sqlite3_close(st->rdb);
  sqlite3_close(st->wdb);
  if (st->lock_fd >= 0) close(st->lock_fd); /* releases the flock */
  free(st->path);
  free(st);
}

static void sq_close(void *e) { sq_free(e); }

static void sq_info(void *e, lg_store_info_t *out) {
  sq *st = e;
  out->synchronous = st->synchronous;
  out->journal_mode = st->journal_mode;
  out->schema_version = SCHEMA_VERSION;
}

static const lg_store_engine_ops sqlite_ops = {
    "sqlite", sq_write, sq_prune, sq_limit_pages, sq_read, sq_close_reads, sq_close, sq_info, NULL,
    NULL,
};

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

int lg_store_sqlite_open(const char *path, const lg_store_opts *o, lg_store_engine *out,
                         char *err, size_t errlen) {
  char e[600] = "";
  char *lock = NULL;
  int made_lock = 0, made_db = 0;
  sq *st = calloc(1, sizeof *st);
  if (!st || !(st->path = strdup(path))) {
    free(st);
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  st->lock_fd = -1;
  double completed_s = o ? o->completed_s : 0, failed_s = o ? o->failed_s : 0;
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
  if ((completed_s > 0 || failed_s > 0) && prune(st, completed_s, failed_s, e, sizeof e) != 0)
    goto fail;
  if (open_db(path, SQLITE_OPEN_READONLY, &st->rdb, e, sizeof e) != 0) goto fail;
  free(lock);
  out->ops = &sqlite_ops;
  out->e = st;
  out->max_seq = st->open_max_seq;
  return 0;
oom:
  snprintf(e, sizeof e, "out of memory");
fail:
  snprintf(err, errlen, "%s", e);
  sqlite3_finalize(st->put_task);
  sqlite3_finalize(st->put_event);
  sqlite3_finalize(st->put_thread);
  st->put_task = st->put_event = st->put_thread = NULL;
  sqlite3_close(st->rdb);
  sqlite3_close(st->wdb);
  st->rdb = st->wdb = NULL;
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
  free(lock);
  sq_free(st);
  return -1;
}

