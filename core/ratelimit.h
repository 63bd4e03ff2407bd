/* One rate budget per provider, shared by every Lua state of an app (its
 * workers and the host's foreground runs): requests and tokens per window,
 * calls in flight, and the pause a 429 puts on the provider (README "Rate
 * limits"). Guarded by app->mu like the dispatcher; nothing here calls Lua. */
#ifndef LUAGENT_RATELIMIT_H
#define LUAGENT_RATELIMIT_H

#include "dispatcher.h"

#include <stdint.h>

typedef struct lg_rate lg_rate;

typedef struct {
  long long requests, tokens; /* per window; 0 = no limit */
  int max_concurrency;        /* 0 = no limit */
  double window_s;            /* the window's length (60: "per minute") */
} lg_rate_limits;

/* A granted call: what lg_rate_done needs back. */
typedef struct {
  long long est; /* the tokens it reserved */
  int probe;     /* the first call after a pause: the others wait for it */
} lg_rate_grant;

/* Create the budget of `key` or tighten it (the smaller of each limit). -1: oom. */
int lg_rate_define(lg_app *a, const char *key, const lg_rate_limits *l);
/* Take budget for one call of about `est` tokens, without waiting. 1: granted.
 * 0: not now; *wait_s is how long until it may be (0 = until a call ends)
 * and *reason names the limit. -1: no budget of that key. */
int lg_rate_try(lg_app *a, const char *key, long long est, lg_rate_grant *g, double *wait_s,
                const char **reason);
/* A worker waits for budget, at most timeout_s (< 0: no bound). 0: granted,
 * 1: its task must stop (cancel, timeout, close), 2: timed out, -1: no such key. */
int lg_rate_wait(lg_worker *w, const char *key, long long est, double timeout_s, lg_rate_grant *g);
/* The call ended: `used` tokens (< 0: unknown, the estimate stays), and a
 * pause of pause_s seconds for every caller of the provider (0: none). */
void lg_rate_done(lg_app *a, const char *key, const lg_rate_grant *g, long long used,
                  double pause_s);
/* {"key":{"in_flight":n,"waiting":n,"pauses":n,"paused_s":x},...} */
void lg_rate_stats(lg_app *a, buf_t *out);
void lg_rate_free_all(lg_app *a);

#endif
