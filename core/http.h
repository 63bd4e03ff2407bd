/* HTTP over libcurl: one multi handle per worker and one for the host, so a
 * canceller can wake a transfer at once and the host can keep pumping
 * while it waits. No Lua here: module.c drives transfers from Lua. */
#ifndef LUAGENT_HTTP_H
#define LUAGENT_HTTP_H

#include <stddef.h>

void lg_http_global_init(void);
/* Wake a thread blocked in lg_http_poll on this multi handle (any thread). */
void lg_http_wakeup(void *multi);
void *lg_http_multi_new(void);
void lg_http_multi_free(void *multi);

typedef struct {
  const char *method, *url, *body;
  size_t body_len;
  const char *const *headers; /* "Name: value" lines */
  int nheaders;
  double timeout_s, connect_timeout_s;
  double idle_timeout_s;      /* no byte sent or received for this long ends it (0 = off) */
  size_t max_bytes;           /* response limit (0 = none) */
  int stream;                 /* parse a 2xx SSE body (by content type or its first bytes) */
  int truncate;               /* a body over max_bytes is cut, not an error */
} lg_http_req;

typedef struct lg_http_event {
  struct lg_http_event *next;
  size_t len;
  int is_error;               /* the SSE event was named "error" */
  char data[];                /* NUL-terminated */
} lg_http_event;

typedef struct {
  long status;
  const char *content_type, *headers, *body;
  size_t headers_len, body_len;
  int done, sse, sse_pending, too_big;
  int body_cut;               /* the body was cut at max_bytes (not an error) */
  const char *error, *error_kind; /* transport failure ("timeout", "idle", "connect", ...), or NULL */
} lg_http_result;

typedef struct lg_http lg_http;

lg_http *lg_http_start(void *multi, const lg_http_req *r, char *err, size_t errlen);
/* Drive the transfer for up to timeout_ms (0: only what is ready). 1 = done. */
int lg_http_poll(lg_http *h, int timeout_ms);
/* Parsed SSE events since the last call (a list the caller frees). */
lg_http_event *lg_http_take_events(lg_http *h);
void lg_http_info(lg_http *h, lg_http_result *out);
void lg_http_free(lg_http *h);

#endif
