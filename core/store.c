/* The store (README). With no file store the dispatcher's own task table is the
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

enum { OP_TASK, OP_EVENT, OP_THREAD, OP_SKIP };

typedef struct op {
  int type;
  int64_t seq;
  char *key, *json;
  int status;
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
  int stop, closed, failed;
  double completed_s, failed_s; /* retention, 0 = keep */
  unsigned commits;
  void (*on_error)(void *ud, const char *message);
  void *on_error_ud;
  int synchronous;       /* PRAGMA synchronous as the write connection reports it */
  char journal_mode[16]; /* PRAGMA journal_mode likewise ("wal") */
  char last_error[256];
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

static const char *const schema_sql =
    "CREATE TABLE IF NOT EXISTS luagent_meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS tasks(task_id TEXT PRIMARY KEY, status TEXT NOT NULL,"
    " record TEXT NOT NULL, finished_ms INTEGER);"
    "CREATE TABLE IF NOT EXISTS events(seq INTEGER PRIMARY KEY, task_id TEXT, event TEXT NOT NULL);"
    "CREATE INDEX IF NOT EXISTS events_task ON events(task_id);"
    "CREATE TABLE IF NOT EXISTS threads(key TEXT PRIMARY KEY, messages TEXT NOT NULL,"
    " updated_ms INTEGER NOT NULL);";

/* A file that SQLite opens but that has tables and no luagent_meta is
 * someone else's database: refuse it rather than write into it. */
static int check_schema(sqlite3 *db, char *err, size_t errlen) {
  sqlite3_stmt *s;
  if (sqlite3_prepare_v2(db, "SELECT count(*) FROM sqlite_master", -1, &s, NULL) != SQLITE_OK) {
    snprintf(err, errlen, "not a luagent store (%s)", sqlite3_errmsg(db));
    return -1;
  }
  int objects = sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int(s, 0) : 0;
  sqlite3_finalize(s);
  int has_meta = 0;
  if (sqlite3_prepare_v2(db, "SELECT 1 FROM sqlite_master WHERE name='luagent_meta'", -1, &s,
                         NULL) == SQLITE_OK) {
    has_meta = sqlite3_step(s) == SQLITE_ROW;
    sqlite3_finalize(s);
  }
  if (objects > 0 && !has_meta) {
    snprintf(err, errlen, "not a luagent store (the file holds another database)");
    return -1;
  }
  if (has_meta) {
    int version = 0;
    if (sqlite3_prepare_v2(db, "SELECT value FROM luagent_meta WHERE key='schema_version'", -1,
                           &s, NULL) == SQLITE_OK) {
      if (sqlite3_step(s) == SQLITE_ROW) version = atoi((const char *)sqlite3_column_text(s, 0));
      sqlite3_finalize(s);
    }
    if (version > SCHEMA_VERSION) {
      snprintf(err, errlen,
               "the store was written by a newer luagent (schema %d; this one reads up to %d)",
               version, SCHEMA_VERSION);
      return -1;
    }
  }
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

/* Delete tasks in `statuses` (an SQL list) finished before `secs` ago, and
 * their events. */
static void prune_older(lg_store *st, const char *statuses, double secs) {
  if (secs <= 0) return;
  long long before = (long long)(lg_wall_ms() - secs * 1000);
  char sql[400];
  snprintf(sql, sizeof sql,
           "DELETE FROM events WHERE task_id IN (SELECT task_id FROM tasks WHERE status IN %s"
           " AND finished_ms < %lld);"
           "DELETE FROM tasks WHERE status IN %s AND finished_ms < %lld;",
           statuses, before, statuses, before);
  sqlite3_exec(st->wdb, sql, NULL, NULL, NULL);
}

static void prune(lg_store *st) {
  prune_older(st, "('completed')", st->completed_s);
  prune_older(st, "('failed','cancelled','timed_out')", st->failed_s);
}

static int run_op(lg_store *st, const op *o) {
  sqlite3_stmt *s;
  switch (o->type) {
    case OP_SKIP:
      return 0;
    case OP_TASK:
      s = st->put_task;
      sqlite3_bind_text(s, 1, o->key, -1, SQLITE_STATIC);
      sqlite3_bind_text(s, 2, lg_status_name(o->status), -1, SQLITE_STATIC);
      sqlite3_bind_text(s, 3, o->json, -1, SQLITE_STATIC);
      if (o->status >= 2)
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

/* Token events (payload {"text": ...}) of one run that follow each other in
 * a batch are stored as one event: the first one's seq with the texts
 * joined (README: the file keeps all events, tokens coalesced). The JSON is the
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

/* Commit everything queued so far in one transaction; in order. */
static void *writer_main(void *arg) {
  lg_store *st = arg;
  pthread_mutex_lock(&st->mu);
  for (;;) {
    while (!st->head && !st->stop) pthread_cond_wait(&st->work_cv, &st->mu);
    if (!st->head && st->stop) break;
    op *batch = st->head;
    uint64_t upto = st->queued;
    st->head = st->tail = NULL;
    pthread_mutex_unlock(&st->mu);
    coalesce_tokens(batch);
    int ok = sqlite3_exec(st->wdb, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK;
    for (op *o = batch; ok && o; o = o->next) ok = run_op(st, o) == 0;
    if (ok) ok = sqlite3_exec(st->wdb, "COMMIT", NULL, NULL, NULL) == SQLITE_OK;
    if (!ok) {
      char msg[200];
      snprintf(msg, sizeof msg, "%s", sqlite3_errmsg(st->wdb));
      sqlite3_exec(st->wdb, "ROLLBACK", NULL, NULL, NULL);
      pthread_mutex_lock(&st->mu);
      if (!st->failed)
        snprintf(st->last_error, sizeof st->last_error, "store %s: a write failed: %s", st->path,
                 msg);
      st->failed = 1;
      pthread_mutex_unlock(&st->mu);
      if (st->on_error) {
        char full[300];
        snprintf(full, sizeof full, "store %s: a write failed: %s", st->path, msg);
        st->on_error(st->on_error_ud, full);
      }
    }
    free_ops(batch);
    if (++st->commits % 256 == 0 && (st->completed_s > 0 || st->failed_s > 0)) prune(st);
    pthread_mutex_lock(&st->mu);
    st->committed = upto;
    pthread_cond_broadcast(&st->done_cv);
  }
  pthread_mutex_unlock(&st->mu);
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
  if (check_schema(st->wdb, e, sizeof e) != 0) goto fail;
  char pragmas[160];
  snprintf(pragmas, sizeof pragmas, "PRAGMA journal_mode=WAL; PRAGMA synchronous=%s;",
           o && o->durability_full ? "FULL" : "NORMAL");
  if (exec(st->wdb, pragmas, e, sizeof e) != 0) goto fail;
  /* what the connection really runs with: WAL or nothing (a file system
   * without shared memory support would silently keep a rollback journal) */
  sqlite3_stmt *ps;
  if (sqlite3_prepare_v2(st->wdb, "PRAGMA journal_mode", -1, &ps, NULL) == SQLITE_OK) {
    if (sqlite3_step(ps) == SQLITE_ROW)
      snprintf(st->journal_mode, sizeof st->journal_mode, "%s",
               (const char *)sqlite3_column_text(ps, 0));
    sqlite3_finalize(ps);
  }
  if (sqlite3_prepare_v2(st->wdb, "PRAGMA synchronous", -1, &ps, NULL) == SQLITE_OK) {
    if (sqlite3_step(ps) == SQLITE_ROW) st->synchronous = sqlite3_column_int(ps, 0);
    sqlite3_finalize(ps);
  }
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
  if (st->completed_s > 0 || st->failed_s > 0) prune(st);
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

/* ------------------------------------------------------------ writes */

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

void lg_store_task(lg_store *st, const char *task_id, int status, const char *json, size_t len) {
  if (!st) return;
  op *o = new_op(OP_TASK, task_id, json, len);
  if (!o) return;
  o->status = status;
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
  if (st->failed) {
    rc = -1;
    if (err) snprintf(err, errlen, "%s", st->last_error);
  } else if (st->committed < ticket) {
    rc = -1; /* closed first: what was queued after the close is not stored */
    if (err) snprintf(err, errlen, "store %s: the store is closed", st->path);
  }
  pthread_mutex_unlock(&st->mu);
  return rc;
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
  snprintf(out->error, sizeof out->error, "%s", st->failed ? st->last_error : "");
  pthread_mutex_unlock(&st->mu);
}

int lg_store_read_tasks(lg_store *st, lg_store_row_fn fn, void *ud) {
  if (!st) return 0;
  pthread_mutex_lock(&st->rmu);
  sqlite3_stmt *s;
  int n = 0;
  if (st->rdb &&
      sqlite3_prepare_v2(st->rdb, "SELECT record FROM tasks ORDER BY rowid", -1, &s, NULL) ==
          SQLITE_OK) {
    while (sqlite3_step(s) == SQLITE_ROW) {
      fn(ud, (const char *)sqlite3_column_text(s, 0), (size_t)sqlite3_column_bytes(s, 0));
      n++;
    }
    sqlite3_finalize(s);
  }
  pthread_mutex_unlock(&st->rmu);
  return n;
}

int64_t lg_store_max_event_seq(lg_store *st) {
  if (!st) return 0;
  int64_t seq = 0;
  pthread_mutex_lock(&st->rmu);
  sqlite3_stmt *s;
  if (st->rdb && sqlite3_prepare_v2(st->rdb, "SELECT max(seq) FROM events", -1, &s, NULL) == SQLITE_OK) {
    if (sqlite3_step(s) == SQLITE_ROW) seq = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
  }
  pthread_mutex_unlock(&st->rmu);
  return seq;
}

int lg_store_read_events(lg_store *st, int64_t since, int64_t before, int limit, buf_t *out) {
  if (!st) return 0;
  int n = 0;
  pthread_mutex_lock(&st->rmu);
  sqlite3_stmt *s;
  if (st->rdb && sqlite3_prepare_v2(st->rdb,
                                    "SELECT event FROM events WHERE seq > ? AND seq < ? ORDER BY seq"
                                    " LIMIT ?",
                                    -1, &s, NULL) == SQLITE_OK) {
    sqlite3_bind_int64(s, 1, since);
    sqlite3_bind_int64(s, 2, before);
    sqlite3_bind_int(s, 3, limit);
    while (sqlite3_step(s) == SQLITE_ROW) {
      if (n++) lg_buf_addc(out, ',');
      lg_buf_add(out, sqlite3_column_text(s, 0), (size_t)sqlite3_column_bytes(s, 0));
    }
    sqlite3_finalize(s);
  }
  pthread_mutex_unlock(&st->rmu);
  return n;
}

/* One text column of one row found by key; 0 found, -1 not. */
static int read_one(lg_store *st, const char *sql, const char *key, buf_t *out) {
  if (!st) return -1;
  int found = -1;
  pthread_mutex_lock(&st->rmu);
  sqlite3_stmt *s;
  if (st->rdb && sqlite3_prepare_v2(st->rdb, sql, -1, &s, NULL) == SQLITE_OK) {
    sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
    if (sqlite3_step(s) == SQLITE_ROW) {
      lg_buf_add(out, sqlite3_column_text(s, 0), (size_t)sqlite3_column_bytes(s, 0));
      found = 0;
    }
    sqlite3_finalize(s);
  }
  pthread_mutex_unlock(&st->rmu);
  return found;
}

int lg_store_read_thread(lg_store *st, const char *key, buf_t *out) {
  return read_one(st, "SELECT messages FROM threads WHERE key = ?", key, out);
}

int lg_store_read_task(lg_store *st, const char *task_id, buf_t *out) {
  return read_one(st, "SELECT record FROM tasks WHERE task_id = ?", task_id, out);
}
