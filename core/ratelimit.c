/* Per-provider rate budgets (README "Rate limits"). A call counts against
 * its provider's request and token windows from the moment it starts until
 * window_s after it ended, so whichever moment the provider counts it at,
 * it never sees more than the limit in any window. A 429 pauses the
 * provider for every caller; when the pause ends, callers come back at
 * jittered times and the first one is a probe that the others wait for, so
 * a pause never ends in a burst of 429s. */
#include "ratelimit.h"
#include "dispatch_internal.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
  int64_t expire_ms; /* mono ms it leaves the window */
  long long tokens;
} rate_entry;

struct lg_rate {
  char *key;
  lg_rate_limits l;
  int in_flight;
  long long tokens_in_flight;
  rate_entry *ring; /* calls that ended, oldest first */
  size_t n, head, cap;
  long long live_tokens; /* tokens of the entries in the ring */
  int64_t paused_until, pause_ms; /* mono ms; the length of the latest pause */
  int probe_needed, probe_out;
  long long pauses;
  uint64_t rng;
  lg_worker **waiters;
  int nwaiters, cap_waiters;
  int refused; /* a try has been refused: a host may be waiting (lg_rate_done wakes it) */
  lg_rate *next;
};

static lg_rate *rate_find(lg_app *a, const char *key) {
  for (lg_rate *r = a->rates; r; r = r->next)
    if (strcmp(r->key, key) == 0) return r;
  return NULL;
}

static long long tighter(long long have, long long want) {
  if (want <= 0) return have;
  return have <= 0 || want < have ? want : have;
}

int lg_rate_define(lg_app *a, const char *key, const lg_rate_limits *l) {
  pthread_mutex_lock(&a->mu);
  lg_rate *r = rate_find(a, key);
  int rc = 0;
  if (!r) {
    r = calloc(1, sizeof *r);
    if (r) r->key = lg_strdup(key);
    if (!r || !r->key) {
      free(r);
      rc = -1;
      goto out;
    }
    r->rng = (uint64_t)lg_mono_ms() * 0x9E3779B97F4A7C15ull ^ (uintptr_t)r;
    r->l.window_s = l->window_s > 0 ? l->window_s : 60;
    r->next = a->rates;
    a->rates = r;
  } else if (l->window_s > 0 && l->window_s > r->l.window_s) {
    r->l.window_s = l->window_s; /* the longer window is the tighter one */
  }
  r->l.requests = tighter(r->l.requests, l->requests);
  r->l.tokens = tighter(r->l.tokens, l->tokens);
  r->l.max_concurrency = (int)tighter(r->l.max_concurrency, l->max_concurrency);
out:
  pthread_mutex_unlock(&a->mu);
  return rc;
}

static void purge(lg_rate *r, int64_t now) {
  while (r->n > 0 && r->ring[r->head].expire_ms <= now) {
    r->live_tokens -= r->ring[r->head].tokens;
    r->head = (r->head + 1) % r->cap;
    r->n--;
  }
}

static int push_entry(lg_rate *r, int64_t expire_ms, long long tokens) {
  if (r->n == r->cap) {
    size_t cap = r->cap ? r->cap * 2 : 16;
    rate_entry *p = malloc(cap * sizeof *p);
    if (!p) return -1;
    for (size_t i = 0; i < r->n; i++) p[i] = r->ring[(r->head + i) % r->cap];
    free(r->ring);
    r->ring = p;
    r->cap = cap;
    r->head = 0;
  }
  r->ring[(r->head + r->n) % r->cap] = (rate_entry){expire_ms, tokens};
  r->n++;
  r->live_tokens += tokens;
  return 0;
}

/* 0 .. n-1 (xorshift; under app->mu) */
static int64_t jitter(lg_rate *r, int64_t n) {
  if (n <= 0) return 0;
  r->rng ^= r->rng << 13;
  r->rng ^= r->rng >> 7;
  r->rng ^= r->rng << 17;
  return (int64_t)(r->rng % (uint64_t)n);
}

/* Under app->mu. 1 granted; 0 with *wait_ms (0: until a call ends) and *reason. */
static int try_locked(lg_rate *r, long long est, lg_rate_grant *g, int64_t *wait_ms,
                      const char **reason) {
  int64_t now = lg_mono_ms();
  purge(r, now);
  if (est < 0) est = 0;
  if (now < r->paused_until) {
    /* each caller comes back at its own time within a quarter of the pause
     * (at most a second), the first of them as the probe */
    int64_t spread = r->pause_ms / 4;
    if (spread > 1000) spread = 1000;
    if (spread < 20) spread = 20;
    *wait_ms = r->paused_until - now + jitter(r, spread);
    *reason = "paused";
    return 0;
  }
  if (r->probe_out) {
    *wait_ms = 0;
    *reason = "paused";
    return 0;
  }
  if (r->l.max_concurrency > 0 && r->in_flight >= r->l.max_concurrency) {
    *wait_ms = 0;
    *reason = "max_concurrency";
    return 0;
  }
  if (r->l.requests > 0 && (long long)r->in_flight + (long long)r->n >= r->l.requests) {
    *wait_ms = r->n > 0 ? r->ring[r->head].expire_ms - now : 0;
    *reason = "requests_per_minute";
    return 0;
  }
  long long busy = r->tokens_in_flight + r->live_tokens;
  /* a call larger than the whole window still goes, alone */
  if (r->l.tokens > 0 && busy > 0 && busy + est > r->l.tokens) {
    *wait_ms = 0;
    long long need = busy + est - r->l.tokens;
    for (size_t i = 0; i < r->n && r->tokens_in_flight + est <= r->l.tokens; i++) {
      const rate_entry *e = &r->ring[(r->head + i) % r->cap];
      need -= e->tokens;
      if (need <= 0) {
        *wait_ms = e->expire_ms - now;
        break;
      }
    }
    *reason = "tokens_per_minute";
    return 0;
  }
  r->in_flight++;
  r->tokens_in_flight += est;
  g->est = est;
  g->probe = r->probe_needed;
  if (r->probe_needed) {
    r->probe_needed = 0;
    r->probe_out = 1;
  }
  return 1;
}

int lg_rate_try(lg_app *a, const char *key, long long est, lg_rate_grant *g, double *wait_s,
                const char **reason) {
  pthread_mutex_lock(&a->mu);
  lg_rate *r = rate_find(a, key);
  int64_t wait_ms = 0;
  int rc = r ? try_locked(r, est, g, &wait_ms, reason) : -1;
  if (rc == 0) r->refused = 1;
  pthread_mutex_unlock(&a->mu);
  *wait_s = wait_ms > 0 ? (double)wait_ms / 1000.0 : 0;
  return rc;
}

static int add_waiter(lg_rate *r, lg_worker *w) {
  if (r->nwaiters == r->cap_waiters) {
    int cap = r->cap_waiters ? r->cap_waiters * 2 : 8;
    lg_worker **p = realloc(r->waiters, (size_t)cap * sizeof *p);
    if (!p) return -1;
    r->waiters = p;
    r->cap_waiters = cap;
  }
  r->waiters[r->nwaiters++] = w;
  return 0;
}

static void remove_waiter(lg_rate *r, lg_worker *w) {
  for (int i = 0; i < r->nwaiters; i++) {
    if (r->waiters[i] == w) {
      r->waiters[i] = r->waiters[--r->nwaiters];
      return;
    }
  }
}

int lg_rate_wait(lg_worker *w, const char *key, long long est, double timeout_s, lg_rate_grant *g) {
  lg_app *a = w->app;
  lg_task *t = w->task;
  int64_t end = timeout_s >= 0 ? lg_mono_ms() + (int64_t)(timeout_s * 1000.0) : 0;
  pthread_mutex_lock(&a->mu);
  lg_rate *r = rate_find(a, key);
  int rc = -1;
  w->in_core = 1;
  while (r) {
    int64_t wait_ms = 0;
    const char *reason = NULL;
    if (try_locked(r, est, g, &wait_ms, &reason)) {
      rc = 0;
      break;
    }
    if (t && lg_task_should_stop(t)) {
      rc = 1;
      break;
    }
    int64_t now = lg_mono_ms();
    if (end && now >= end) {
      rc = 2;
      break;
    }
    int64_t until = lg_min_deadline(wait_ms > 0 ? now + wait_ms : 0, end);
    if (t) until = lg_min_deadline(until, t->deadline_mono);
    if (add_waiter(r, w) != 0) until = lg_min_deadline(until, now + 10); /* oom: poll */
    lg_cond_wait_until(&w->cv, &a->mu, until);
    remove_waiter(r, w);
  }
  w->in_core = 0;
  pthread_mutex_unlock(&a->mu);
  return rc;
}

void lg_rate_done(lg_app *a, const char *key, const lg_rate_grant *g, long long used,
                  double pause_s) {
  pthread_mutex_lock(&a->mu);
  lg_rate *r = rate_find(a, key);
  if (r) {
    int64_t now = lg_mono_ms();
    r->in_flight--;
    r->tokens_in_flight -= g->est;
    if (r->l.requests > 0 || r->l.tokens > 0)
      (void)push_entry(r, now + (int64_t)(r->l.window_s * 1000.0), used >= 0 ? used : g->est);
    if (g->probe) r->probe_out = 0;
    if (pause_s > 0) {
      int64_t until = now + (int64_t)(pause_s * 1000.0);
      if (until > r->paused_until) {
        r->paused_until = until;
        r->pause_ms = until - now;
        r->pauses++;
      }
      r->probe_needed = 1;
    }
    for (int i = 0; i < r->nwaiters; i++) lg_worker_wake(r->waiters[i]);
    /* a foreground run waiting on the host: only a refused try waits, so a
     * budget that never refused one wakes no host */
    if (r->refused) lg_bump(a);
  }
  pthread_mutex_unlock(&a->mu);
}

void lg_rate_stats(lg_app *a, buf_t *out) {
  pthread_mutex_lock(&a->mu);
  int64_t now = lg_mono_ms();
  lg_buf_addc(out, '{');
  for (lg_rate *r = a->rates; r; r = r->next) {
    if (r != a->rates) lg_buf_addc(out, ',');
    lg_buf_add_jstr(out, r->key, strlen(r->key));
    double paused = r->paused_until > now ? (double)(r->paused_until - now) / 1000.0 : 0;
    lg_buf_addf(out, ":{\"in_flight\":%d,\"waiting\":%d,\"pauses\":%lld,\"paused_s\":%.3f}",
             r->in_flight, r->nwaiters, r->pauses, paused);
  }
  lg_buf_addc(out, '}');
  pthread_mutex_unlock(&a->mu);
}

void lg_rate_free_all(lg_app *a) {
  for (lg_rate *r = a->rates, *nx; r; r = nx) {
    nx = r->next;
    free(r->key);
    free(r->ring);
    free(r->waiters);
    free(r);
  }
  a->rates = NULL;
}
