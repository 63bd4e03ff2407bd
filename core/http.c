/* HTTP over libcurl (R-6, R-23, README). One transfer at a time per thread,
 * driven through that thread's multi handle so that a canceller (or, for the
 * host, any news for the host) wakes it at once with curl_multi_wakeup.
 * Pure C: the write callback only appends bytes or parsed SSE events to C
 * buffers; Lua sees them after lg_http_poll returns (no Lua inside curl). */
#include "http.h"
#include "internal.h"
#include "sse.h"

#include <curl/curl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

static long ms_at_least_1(double s) {
  double ms = s * 1000.0;
  return ms < 1 ? 1L : ms > (double)LONG_MAX ? LONG_MAX : (long)ms;
}

/* curl_global_init once per process; never curl_global_cleanup (other
 * threads or the host may still use libcurl). */
static void curl_init_once(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

void lg_http_global_init(void) { pthread_once(&curl_once, curl_init_once); }

/* A thread's multi handle and the easy handle its last transfer used: the
 * next transfer resets and reuses it (curl_easy_reset keeps the handle's
 * caches) instead of making a new one. Only the owning thread touches
 * `spare`; other threads only wake `m`. */
typedef struct {
  CURLM *m;
  CURL *spare;
} lg_multi;

void lg_http_wakeup(void *multi) {
  if (multi) curl_multi_wakeup(((lg_multi *)multi)->m);
}

void *lg_http_multi_new(void) {
  lg_http_global_init();
  lg_multi *x = calloc(1, sizeof *x);
  if (!x) return NULL;
  x->m = curl_multi_init();
  if (!x->m) {
    free(x);
    return NULL;
  }
  return x;
}

void lg_http_multi_free(void *multi) {
  lg_multi *x = multi;
  if (!x) return;
  if (x->spare) curl_easy_cleanup(x->spare);
  curl_multi_cleanup(x->m);
  free(x);
}

struct lg_http {
  lg_multi *owner;         /* the thread's multi handle (and its spare easy) */
  CURLM *multi;
  CURL *easy;
  struct curl_slist *headers;
  char *body;              /* request body (owned) */
  buf_t resp;              /* response body (or error body of a stream) */
  buf_t hdrs;              /* raw response header lines */
  size_t max_bytes;
  int stream, sse_mode;    /* asked for SSE; response is 2xx SSE */
  int decided;             /* sse_mode decided (first body byte) */
  int sniffing;            /* a 2xx stream reply of another content type:
                              SSE or not is told by its first bytes */
  sse_parser sse;
  lg_http_event *ev_head, *ev_tail;
  int done, too_big, added;
  int body_cut;            /* the body was cut at max_bytes (not an error) */
  int truncate;            /* cut any body at max_bytes instead of failing */
  int oom;                 /* out of memory while parsing the stream */
  long status;             /* HTTP status, known at the first body byte */
  size_t total;            /* body bytes received (SSE mode) */
  int64_t idle_ms;         /* end the transfer after this long without a byte */
  int64_t last_byte_ms;    /* when a byte last went out or came in */
  curl_off_t ul_seen;      /* request bytes sent so far */
  int idle;                /* ended by the idle clock */
  char idle_msg[96];
  CURLcode result;
  char errbuf[CURL_ERROR_SIZE];
};

static int on_sse(void *ud, const char *event, size_t event_len, const char *data, size_t len) {
  lg_http *h = ud;
  LG_UNUSED(event_len);
  lg_http_event *e = malloc(sizeof *e + len + 1);
  if (!e) return 1;
  e->next = NULL;
  e->len = len;
  e->is_error = strcmp(event, "error") == 0;
  memcpy(e->data, data, len + 1);
  if (h->ev_tail)
    h->ev_tail->next = e;
  else
    h->ev_head = e;
  h->ev_tail = e;
  return 0;
}

/* Stream bytes to the SSE parser: len, or 0 to abort the transfer. */
static size_t feed_sse(lg_http *h, const char *p, size_t len) {
  /* max_bytes bounds the whole stream, not only one line or event */
  if (h->max_bytes && len > h->max_bytes - h->total) {
    h->too_big = 1;
    return 0;
  }
  h->total += len;
  int r = lg_sse_feed(&h->sse, p, len, on_sse, h);
  if (r < 0) {
    h->too_big = 1; /* a line or an event over the limit (or no memory) */
    return 0;
  }
  if (r > 0) {
    h->oom = 1; /* on_sse could not allocate */
    return 0;
  }
  return len;
}

/* Is a body that starts with these bytes SSE? 1 yes, 0 no, -1 not known
 * yet. SSE starts (after blank lines and a byte order mark) with a field
 * such as `data:` or `event:`, or with a `:` comment; JSON never does. As
 * the official SDKs do, such a body is read as a stream whatever its
 * content type says. */
static int sniff_sse(const char *p, size_t n) {
  static const char *const starts[] = {"data:", "event:", "id:", "retry:", ":"};
  size_t i = 0;
  if (n >= 3 && memcmp(p, "\xef\xbb\xbf", 3) == 0) i = 3;
  while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == '\r' || p[i] == '\n')) i++;
  if (i == n) return -1;
  int maybe = 0;
  for (size_t k = 0; k < sizeof starts / sizeof starts[0]; k++) {
    size_t m = strlen(starts[k]), have = n - i;
    if (have >= m && memcmp(p + i, starts[k], m) == 0) return 1;
    if (have < m && memcmp(p + i, starts[k], have) == 0) maybe = 1;
  }
  return maybe ? -1 : 0;
}

/* Returning less than len aborts the transfer with CURLE_WRITE_ERROR. */
static size_t on_write(char *p, size_t size, size_t n, void *ud) {
  lg_http *h = ud;
  size_t len = size * n;
  h->last_byte_ms = lg_mono_ms();
  if (!h->decided) {
    long code = 0;
    char *ct = NULL;
    curl_easy_getinfo(h->easy, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_getinfo(h->easy, CURLINFO_CONTENT_TYPE, &ct);
    h->status = code;
    int ok = h->stream && code >= 200 && code < 300;
    h->sse_mode = ok && ct && strstr(ct, "text/event-stream");
    h->sniffing = ok && !h->sse_mode;
    h->decided = 1;
  }
  if (h->sse_mode) return feed_sse(h, p, len);
  if (h->max_bytes && len > h->max_bytes - h->resp.len) {
    if (h->truncate || h->status < 200 || h->status >= 300) {
      /* keep the status and the start of the body: an error reply always,
       * any reply when the caller asked for truncation (ctx:http) */
      lg_buf_add(&h->resp, p, h->max_bytes - h->resp.len);
      h->body_cut = 1;
      return 0;
    }
    h->too_big = 1;
    return 0;
  }
  lg_buf_add(&h->resp, p, len);
  if (h->resp.oom) return 0;
  if (h->sniffing) {
    int v = sniff_sse(h->resp.p, h->resp.len);
    if (v >= 0) h->sniffing = 0;
    if (v == 1) {
      /* what came so far is the start of the stream */
      buf_t start = h->resp;
      lg_buf_init(&h->resp);
      h->sse_mode = 1;
      size_t fed = feed_sse(h, start.p, start.len), want = start.len;
      lg_buf_free(&start);
      if (fed != want) return 0;
    }
  }
  return len;
}

/* Any byte sent or received resets the idle clock. */
static int on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow) {
  lg_http *h = ud;
  LG_UNUSED(dltotal);
  LG_UNUSED(dlnow);
  LG_UNUSED(ultotal);
  if (ulnow != h->ul_seen) {
    h->ul_seen = ulnow;
    h->last_byte_ms = lg_mono_ms();
  }
  return 0;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud) {
  lg_http *h = ud;
  size_t len = size * n;
  h->last_byte_ms = lg_mono_ms();
  /* a new status line (redirect or 100-continue) starts a new header block */
  if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) lg_buf_reset(&h->hdrs);
  if (h->hdrs.len + len < 256 * 1024) lg_buf_add(&h->hdrs, p, len);
  return len;
}

lg_http *lg_http_start(void *multi, const lg_http_req *r, char *err, size_t errlen) {
  lg_http *h = calloc(1, sizeof *h);
  if (!h) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  h->owner = multi;
  h->multi = multi ? h->owner->m : NULL;
  h->max_bytes = r->max_bytes;
  h->stream = r->stream;
  h->truncate = r->truncate;
  lg_sse_init(&h->sse);
  if (r->max_bytes) h->sse.max = r->max_bytes;
  lg_buf_init(&h->resp);
  lg_buf_init(&h->hdrs);
  if (multi && h->owner->spare) {
    h->easy = h->owner->spare;
    h->owner->spare = NULL;
  } else {
    h->easy = curl_easy_init();
  }
  if (!h->easy || !multi) {
    snprintf(err, errlen, "cannot start an HTTP transfer");
    lg_http_free(h);
    return NULL;
  }
  CURL *e = h->easy;
  curl_easy_setopt(e, CURLOPT_URL, r->url);
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, h->errbuf);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, h);
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, h);
  curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
  curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
  curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
  /* (at least 1 ms: 0 would mean no limit to curl) */
  if (r->timeout_s > 0) curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, ms_at_least_1(r->timeout_s));
  if (r->connect_timeout_s > 0)
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, ms_at_least_1(r->connect_timeout_s));
  if (r->idle_timeout_s > 0) {
    h->idle_ms = ms_at_least_1(r->idle_timeout_s);
    snprintf(h->idle_msg, sizeof h->idle_msg, "no data sent or received for %g s", r->idle_timeout_s);
    curl_easy_setopt(e, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(e, CURLOPT_XFERINFODATA, h);
    curl_easy_setopt(e, CURLOPT_NOPROGRESS, 0L);
  }
  h->last_byte_ms = lg_mono_ms();
  for (int i = 0; i < r->nheaders; i++) {
    struct curl_slist *s = curl_slist_append(h->headers, r->headers[i]);
    if (!s) break;
    h->headers = s;
  }
  /* no "Expect: 100-continue" round trip for large bodies */
  struct curl_slist *s = curl_slist_append(h->headers, "Expect:");
  if (s) h->headers = s;
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, h->headers);
  const char *method = r->method ? r->method : "GET";
  if (r->body) {
    h->body = lg_strndup(r->body, r->body_len);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, h->body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_len);
  }
  if (strcmp(method, "GET") == 0 && !r->body)
    curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
  else if (strcmp(method, "POST") != 0 || !r->body)
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
  if (strcmp(method, "HEAD") == 0) curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
  if (curl_multi_add_handle(h->multi, e) != CURLM_OK) {
    snprintf(err, errlen, "cannot start an HTTP transfer");
    lg_http_free(h);
    return NULL;
  }
  h->added = 1;
  return h;
}

/* The idle clock: a transfer quiet for idle_ms ends here (curl's own
 * low-speed limit counts whole seconds only). */
static void check_idle(lg_http *h) {
  if (!h->done && h->idle_ms > 0 && lg_mono_ms() - h->last_byte_ms >= h->idle_ms) {
    h->done = 1;
    h->idle = 1;
  }
}

static void check_done(lg_http *h) {
  int left;
  CURLMsg *m;
  while ((m = curl_multi_info_read(h->multi, &left))) {
    if (m->msg == CURLMSG_DONE && m->easy_handle == h->easy) {
      h->done = 1;
      h->result = m->data.result;
    }
  }
  if (h->done && h->sse_mode) lg_sse_finish(&h->sse, on_sse, h);
}

int lg_http_poll(lg_http *h, int timeout_ms) {
  if (h->done) return 1;
  int running = 0;
  curl_multi_perform(h->multi, &running);
  check_done(h);
  check_idle(h);
  if (h->done) return 1;
  if (timeout_ms > 0) {
    if (h->idle_ms > 0) {
      int64_t left = h->last_byte_ms + h->idle_ms - lg_mono_ms();
      if (left < timeout_ms) timeout_ms = left > 0 ? (int)left : 0;
    }
    curl_multi_poll(h->multi, NULL, 0, timeout_ms, NULL);
    curl_multi_perform(h->multi, &running);
    check_done(h);
    check_idle(h);
  }
  return h->done;
}

lg_http_event *lg_http_take_events(lg_http *h) {
  lg_http_event *e = h->ev_head;
  h->ev_head = h->ev_tail = NULL;
  return e;
}

void lg_http_info(lg_http *h, lg_http_result *out) {
  memset(out, 0, sizeof *out);
  long code = 0;
  char *ct = NULL;
  curl_easy_getinfo(h->easy, CURLINFO_RESPONSE_CODE, &code);
  curl_easy_getinfo(h->easy, CURLINFO_CONTENT_TYPE, &ct);
  out->status = code;
  out->content_type = ct;
  out->headers = h->hdrs.p ? h->hdrs.p : "";
  out->headers_len = h->hdrs.len;
  out->body = h->resp.p ? h->resp.p : "";
  out->body_len = h->resp.len;
  out->done = h->done;
  out->sse = h->sse_mode;
  out->sse_pending = h->sse_mode && lg_sse_pending(&h->sse);
  out->too_big = h->too_big;
  out->body_cut = h->body_cut;
  if (h->oom) {
    out->error = "out of memory while reading the response";
    out->error_kind = "transport";
  } else if (h->idle) {
    out->error = h->idle_msg;
    out->error_kind = "idle";
  } else if (h->done && h->result != CURLE_OK && !h->too_big && !h->body_cut) {
    out->error = h->errbuf[0] ? h->errbuf : curl_easy_strerror(h->result);
    switch (h->result) {
      case CURLE_OPERATION_TIMEDOUT: out->error_kind = "timeout"; break;
      case CURLE_COULDNT_CONNECT:
      case CURLE_COULDNT_RESOLVE_HOST:
      case CURLE_COULDNT_RESOLVE_PROXY: out->error_kind = "connect"; break;
      case CURLE_SSL_CONNECT_ERROR:
      case CURLE_PEER_FAILED_VERIFICATION: out->error_kind = "tls"; break;
      default: out->error_kind = "transport"; break;
    }
  } else if (h->too_big) {
    out->error = "the response is larger than the limit";
    out->error_kind = "too_big";
  }
}

void lg_http_free(lg_http *h) {
  if (!h) return;
  if (h->added) curl_multi_remove_handle(h->multi, h->easy);
  if (h->easy && h->owner && !h->owner->spare) {
    /* reset now: nothing of this transfer (its buffers, callbacks' data)
     * stays pointed at once h is freed */
    curl_easy_reset(h->easy);
    h->owner->spare = h->easy;
  } else if (h->easy)
    curl_easy_cleanup(h->easy);
  curl_slist_free_all(h->headers);
  free(h->body);
  lg_buf_free(&h->resp);
  lg_buf_free(&h->hdrs);
  lg_sse_free(&h->sse);
  for (lg_http_event *e = h->ev_head, *nx; e; e = nx) {
    nx = e->next;
    free(e);
  }
  free(h);
}
