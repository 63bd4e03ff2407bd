/* The event log's layouts and functions (events.c): the event ring, the
 * queue of work for the host thread with its items, and the generation
 * counter a blocked host waits on. The scheduler embeds one lg_eventlog in
 * each app; the log decides nothing and knows no scheduler: it is handed
 * the task an event is about, and its file store as an lg_log_file.
 * Locks: hq_mu guards the host work queue, gen, host_cv and host_multi;
 * ev_mu the event ring and the next seq (docs/architecture.md, "Locks"). */
#ifndef LUAGENT_EVENTS_H
#define LUAGENT_EVENTS_H

#include "event_types.h"
#include "tasks.h"

#include <pthread.h>
#include <stdint.h>

enum { HQ_NONE, HQ_QUEUED, HQ_INFLIGHT }; /* where a host item is linked */

struct lg_host_item {
  int type;
  uint64_t id;
  char kind[24];        /* callback name, or log level */
  char *name;           /* host tool name */
  char *json;           /* args (host call), record/payload (callback), message (log) */
  char *ctx_json;       /* host call: the calling run's context */
  char task_id[40];
  /* host call reply */
  int replied;
  char *reply_json;
  pthread_cond_t *waiter; /* host call: the calling worker's, signalled under hq_mu */
  lg_task *task;        /* host call: the calling task (its stop flag is atomic) */
  int where;            /* HQ_* */
  lg_host_item *next;
};

typedef struct {
  int64_t seq;
  char *json;
} lg_event;

/* The file store as the event log sees it: where new events go and where
 * the events the ring dropped are read back. The scheduler sets it when a
 * store opens (recovery.c); the log knows no store. */
typedef struct {
  void (*write)(void *ud, int64_t seq, const char *task_id, const char *json); /* queued */
  uint64_t (*ticket)(void *ud); /* what is queued so far (taken under ev_mu) */
  /* after that ticket is committed: events since < seq < before, at most
   * limit, appended to out as JSON objects with commas; returns how many */
  int (*read)(void *ud, uint64_t ticket, int64_t since, int64_t before, int limit, buf_t *out);
} lg_log_file;

typedef struct lg_eventlog {
  pthread_mutex_t hq_mu; /* host work queue, gen, host_cv (taken after mu, never before) */
  pthread_mutex_t ev_mu; /* the event ring (taken after mu, never before) */
  pthread_cond_t host_cv;
  /* host side */
  uint64_t gen;
  int host_blocked;
  int host_blocked_news; /* of those, blocked hosts that news (an event) wakes too */
  int host_poll_news;    /* the host's HTTP poll is woken by news too */
  pthread_t host_thread; /* the thread polling host_multi (valid when host_multi is set) */
  int64_t last_wake_ms; /* when a blocked host was last woken (lg_mono_ms) */
  int64_t wake_due;     /* a token's deferred wake is due then (0: none; events.c) */
  uint64_t host_wakes;  /* times a blocked host was woken by news (stats) */
  void *host_multi; /* CURLM* the host is polling, woken with the host */
  lg_host_item *hq_head, *hq_tail;
  lg_host_item *inflight; /* host calls the host has taken and not answered */
  int hq_n, hq_work;      /* queued items; those that are not log lines */
  uint64_t next_item_id;
  unsigned wants; /* bit per lifecycle callback kind (written under the app's mu) */
  /* events */
  lg_event *ring;
  int ring_cap, ring_n, ring_head;
  int64_t next_event_seq; /* never past INT64_MAX (events.c) */
  int seq_exhausted;
  double t0; /* lg_mono_s() at creation: events' `t` counts from here */
  const lg_log_file *log_file; /* NULL for memory only */
  void *log_file_ud;
} lg_eventlog;

void lg_ev_bump(lg_eventlog *l); /* something the host may be waiting for changed */
/* News: a new event (or usage) and nothing else. The generation changes, so
 * a host that looks sees it, but only a host that waits for news is woken
 * (a blocked host that asked for it, the host's HTTP poll when it asked for
 * it and the news comes from another thread). A host waiting for a task, a
 * reply or idle waits for what lg_ev_bump reports, not for events. */
void lg_ev_bump_news(lg_eventlog *l);
/* The same for a streamed token: a blocked host is woken at most once per
 * LG_TOKEN_WAKE_MS; lg_block's timed wait delivers a deferred wake. */
#define LG_TOKEN_WAKE_MS 5
void lg_ev_bump_token(lg_eventlog *l);
/* Whether news wakes the host's HTTP poll (the host's watchers want events). */
void lg_ev_set_poll_news(lg_eventlog *l, int on);
void lg_ev_push(lg_eventlog *l, lg_host_item *it);
void lg_ev_unlink(lg_eventlog *l, lg_host_item *it);
void lg_ev_unlink_locked(lg_eventlog *l, lg_host_item *it); /* hq_mu held */
void lg_ev_callback(lg_eventlog *l, unsigned want, const char *kind, const lg_task *t);
void lg_ev_line(lg_eventlog *l, const char *level, const char *msg); /* a log line for the host */
/* Append one event; t (may be NULL) is the task it is about. */
void lg_ev_emit(lg_eventlog *l, const lg_event_in *e, lg_task *t, const char *summary);
/* An "error" event also goes to the host's on("error") when it wants it. */
void lg_ev_error_callback(lg_eventlog *l, const lg_event_in *e);
void lg_ev_task_event(lg_eventlog *l, lg_task *t, const char *kind, const char *payload,
                      const char *summary);
int lg_ev_read(lg_eventlog *l, int64_t since, int limit, buf_t *out);
void lg_digest_json(buf_t *b, const lg_digest *d);
uint64_t lg_ev_gen(lg_eventlog *l);
uint64_t lg_ev_host_wakes(lg_eventlog *l);
int lg_ev_take(lg_eventlog *l, int max, lg_host_item **out);
int lg_ev_take_try(lg_eventlog *l, int max, lg_host_item **out); /* -1: the lock stayed busy */
void lg_ev_reply(lg_eventlog *l, uint64_t id, const char *json);
int lg_ev_reply_try(lg_eventlog *l, uint64_t id, const char *json); /* -1: the lock stayed busy */
int lg_ev_pending(lg_eventlog *l); /* host work that is not a log line */
void lg_ev_set_host_multi(lg_eventlog *l, void *multi);
void *lg_ev_host_multi(lg_eventlog *l);

#endif
