/* The floor for a durable enqueue: the store's tables (core/store.c), WAL,
 * synchronous=NORMAL, and per enqueue what a lone enqueuer's commit holds:
 * one task row and its task_enqueued event in one transaction; with
 * PER_COMMIT, that many rows and events a transaction (what a batch
 * enqueue commits at once). Prints inserts per second.
 * Usage: raw_sqlite DB_PATH N RECORD_BYTES [PER_COMMIT] */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double wall_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int run(sqlite3 *db, const char *sql) {
  char *err = NULL;
  if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) {
    fprintf(stderr, "raw_sqlite: %s\n", err ? err : "error");
    sqlite3_free(err);
    return -1;
  }
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 4) return 2;
  int n = atoi(argv[2]);
  size_t rec_len = (size_t)atol(argv[3]);
  int per = argc > 4 ? atoi(argv[4]) : 1;
  if (per < 1) per = 1;
  sqlite3 *db;
  if (sqlite3_open(argv[1], &db) != SQLITE_OK) return 1;
  if (run(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
              "CREATE TABLE tasks(task_id TEXT PRIMARY KEY, status TEXT NOT NULL,"
              " record TEXT NOT NULL, finished_ms INTEGER);"
              "CREATE TABLE events(seq INTEGER PRIMARY KEY, task_id TEXT, event TEXT NOT NULL);"
              "CREATE INDEX events_task ON events(task_id);") != 0)
    return 1;
  char *rec = malloc(rec_len + 1);
  if (!rec) return 1;
  memset(rec, 'x', rec_len);
  rec[rec_len] = '\0';
  sqlite3_stmt *ti, *ei;
  sqlite3_prepare_v2(db, "INSERT INTO tasks(task_id, status, record, finished_ms) VALUES(?,?,?,?)",
                     -1, &ti, NULL);
  sqlite3_prepare_v2(db, "INSERT OR REPLACE INTO events(seq, task_id, event) VALUES(?,?,?)", -1,
                     &ei, NULL);
  double w0 = wall_s();
  for (int i = 0; i < n; i++) {
    char id[32];
    snprintf(id, sizeof id, "t_%08d", i);
    if (i % per == 0 && run(db, "BEGIN IMMEDIATE") != 0) return 1;
    sqlite3_bind_text(ti, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(ti, 2, "queued", -1, SQLITE_STATIC);
    sqlite3_bind_text(ti, 3, rec, (int)rec_len, SQLITE_STATIC);
    sqlite3_bind_null(ti, 4);
    sqlite3_bind_int64(ei, 1, i + 1);
    sqlite3_bind_text(ei, 2, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(ei, 3, rec, (int)(rec_len / 2), SQLITE_STATIC);
    if (sqlite3_step(ti) != SQLITE_DONE || sqlite3_step(ei) != SQLITE_DONE) return 1;
    sqlite3_reset(ti);
    sqlite3_reset(ei);
    if ((i % per == per - 1 || i == n - 1) && run(db, "COMMIT") != 0) return 1;
  }
  double w1 = wall_s();
  printf("%.1f\n", n / (w1 - w0));
  sqlite3_finalize(ti);
  sqlite3_finalize(ei);
  sqlite3_close(db);
  free(rec);
  return 0;
}
