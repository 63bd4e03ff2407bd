/* Incremental text/event-stream (Server-Sent Events) parser, WHATWG rules.
 *
 * Feed it byte chunks split anywhere (inside a line, between CR and LF, inside
 * the UTF-8 BOM): the events are the same for every split. Lines end with
 * CRLF, LF or CR; ':' starts a comment; `field: value` loses one space after
 * the colon; data lines are joined with "\n"; an empty line dispatches the
 * event when a data or event field was seen since the last one. id and retry
 * are parsed and ignored. Pure C, no globals: one parser per stream, any
 * thread. The struct is visible so it can be embedded; treat its fields as
 * private except `max`. */
#ifndef LUAGENT_SSE_H
#define LUAGENT_SSE_H

#include <stddef.h>

#define SSE_DEFAULT_MAX ((size_t)16 << 20) /* 16 MiB per line and per event */

typedef struct sse_parser {
  size_t max;            /* limit for one line and one event's data (bytes) */
  char *line;            /* a line split across feeds */
  size_t line_len, line_cap;
  char *data;            /* data of the current event, '\n'-joined */
  size_t data_len, data_cap;
  char *event;           /* event field of the current event */
  size_t event_len, event_cap;
  int has_data, has_event;
  int in_line;           /* bytes of an unterminated line were seen */
  int after_cr;          /* last byte was CR: a following LF is part of it */
  int bom;               /* BOM bytes matched so far, -1 once past it */
  int status;            /* sticky: 0, 1 (stopped by the callback), -1 */
} sse_parser;

/* event is "message" when the event had no event field. Both strings are
 * NUL-terminated (data[data_len] == 0) and only valid during the call.
 * Return non-zero to stop. */
typedef int (*sse_event_cb)(void *ud, const char *event, size_t event_len,
                            const char *data, size_t data_len);

void lg_sse_init(sse_parser *p);
/* 0 ok, 1 stopped by cb, -1 out of memory or a line/event over p->max. The
 * status is sticky: after 1 or -1 the parser ignores input and returns it
 * again (bytes after the stopping event are not parsed). */
int lg_sse_feed(sse_parser *p, const char *buf, size_t len, sse_event_cb cb, void *ud);
/* End of stream. An unfinished event is discarded, as the spec says; check
 * lg_sse_pending() to report a truncated stream. Returns the sticky status. */
int lg_sse_finish(sse_parser *p, sse_event_cb cb, void *ud);
/* Non-zero when bytes of an unfinished event (a partial line, or fields not
 * yet dispatched by an empty line) are buffered. */
int lg_sse_pending(const sse_parser *p);
/* Frees the buffers; the parser is then as after lg_sse_init. */
void lg_sse_free(sse_parser *p);

#endif
