/* Incremental text/event-stream parser (see sse.h). Complete lines are parsed
 * straight from the caller's chunk; only a line split across feeds is copied.
 * Buffers are reused from event to event. */
#include "sse.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const unsigned char bom_bytes[3] = {0xEF, 0xBB, 0xBF};

void lg_sse_init(sse_parser *p) {
  memset(p, 0, sizeof *p);
  p->max = SSE_DEFAULT_MAX;
}

void lg_sse_free(sse_parser *p) {
  size_t max = p->max;
  free(p->line);
  free(p->data);
  free(p->event);
  lg_sse_init(p);
  p->max = max;
}

int lg_sse_pending(const sse_parser *p) {
  return p->line_len > 0 || p->has_data || p->has_event || p->bom > 0;
}

/* Room for need bytes plus a NUL. */
static int reserve(char **b, size_t *cap, size_t need) {
  if (need < *cap) return 0;
  if (need >= SIZE_MAX / 2) return -1;
  size_t c = *cap ? *cap : 128;
  while (c <= need) c *= 2;
  char *q = realloc(*b, c);
  if (!q) return -1;
  *b = q;
  *cap = c;
  return 0;
}

static int dispatch(sse_parser *p, sse_event_cb cb, void *ud) {
  int r = 0;
  if (p->has_data || p->has_event) {
    const char *ev = "message", *data = "";
    size_t evlen = 7;
    if (p->event_len) {
      p->event[p->event_len] = 0;
      ev = p->event;
      evlen = p->event_len;
    }
    if (p->data) {
      p->data[p->data_len] = 0;
      data = p->data;
    }
    r = cb && cb(ud, ev, evlen, data, p->data_len) != 0;
  }
  p->data_len = p->event_len = 0;
  p->has_data = p->has_event = 0;
  return r;
}

/* One complete line, terminator excluded. */
static int line(sse_parser *p, const char *s, size_t n, sse_event_cb cb, void *ud) {
  if (n == 0) return dispatch(p, cb, ud);
  if (s[0] == ':') return 0;
  const char *colon = memchr(s, ':', n);
  size_t nlen = colon ? (size_t)(colon - s) : n;
  const char *v = colon ? colon + 1 : s + n;
  size_t vlen = n - (size_t)(v - s);
  if (vlen && *v == ' ') v++, vlen--;
  if (nlen == 4 && memcmp(s, "data", 4) == 0) {
    size_t sep = p->has_data ? 1 : 0;
    if (vlen + sep > p->max - p->data_len) return -1;
    if (reserve(&p->data, &p->data_cap, p->data_len + sep + vlen)) return -1;
    if (sep) p->data[p->data_len++] = '\n';
    if (vlen) memcpy(p->data + p->data_len, v, vlen);
    p->data_len += vlen;
    p->has_data = 1;
  } else if (nlen == 5 && memcmp(s, "event", 5) == 0) {
    if (reserve(&p->event, &p->event_cap, vlen)) return -1;
    if (vlen) memcpy(p->event, v, vlen);
    p->event_len = vlen;
    p->has_event = 1;
  }
  /* id, retry and unknown fields change nothing we report */
  return 0;
}

static int feed(sse_parser *p, const char *s, size_t n, sse_event_cb cb, void *ud) {
  size_t i = 0;
  if (p->after_cr && n) {
    if (s[0] == '\n') i = 1; /* second half of a CRLF split across feeds */
    p->after_cr = 0;
  }
  while (i < n) {
    size_t k = i;
    while (k < n && s[k] != '\n' && s[k] != '\r') k++;
    size_t add = k - i;
    /* checked before the copy so a split line fails like a whole one */
    if (add > p->max - p->line_len) return -1;
    if (k == n) { /* unterminated: keep it for the next feed */
      if (reserve(&p->line, &p->line_cap, p->line_len + add)) return -1;
      memcpy(p->line + p->line_len, s + i, add);
      p->line_len += add;
      return 0;
    }
    int r;
    if (p->line_len) {
      if (reserve(&p->line, &p->line_cap, p->line_len + add)) return -1;
      if (add) memcpy(p->line + p->line_len, s + i, add);
      size_t len = p->line_len + add;
      p->line_len = 0;
      r = line(p, p->line, len, cb, ud);
    } else {
      r = line(p, s + i, add, cb, ud);
    }
    if (r) return r;
    if (s[k] == '\r') {
      if (k + 1 == n) p->after_cr = 1;
      else if (s[k + 1] == '\n') k++;
    }
    i = k + 1;
  }
  return 0;
}

int lg_sse_feed(sse_parser *p, const char *buf, size_t len, sse_event_cb cb, void *ud) {
  if (p->status) return p->status;
  /* a BOM at the very start is skipped, even when split across feeds */
  while (p->bom >= 0 && len) {
    if ((unsigned char)*buf == bom_bytes[p->bom]) {
      buf++, len--;
      if (++p->bom == 3) p->bom = -1;
    } else {
      int held = p->bom;
      p->bom = -1;
      if (held && (p->status = feed(p, (const char *)bom_bytes, (size_t)held, cb, ud)))
        return p->status;
    }
  }
  if (len) p->status = feed(p, buf, len, cb, ud);
  return p->status;
}

int lg_sse_finish(sse_parser *p, sse_event_cb cb, void *ud) {
  (void)cb, (void)ud; /* an unfinished event is dropped, never dispatched */
  return p->status;
}
