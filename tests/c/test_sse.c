/* Unit tests for core/sse.c. Prints "ok N - name" / "not ok N - name" lines
 * and exits non-zero when a check failed.
 *   cc -std=c11 -Wall -Wextra -Werror -Icore -o build/test_sse tests/c/test_sse.c core/sse.c */
#include "sse.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures, test_no, test_failed;

#define CHECK(c)                                                             \
  do {                                                                       \
    if (!(c)) {                                                              \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c); \
      test_failed = 1;                                                       \
    }                                                                        \
  } while (0)

static void done(const char *name) {
  test_no++;
  printf("%sok %d - %s\n", test_failed ? "not " : "", test_no, name);
  failures += test_failed;
  test_failed = 0;
}

/* Events rendered as "event=data|" into a fixed buffer; counts calls. */
typedef struct {
  char out[8192];
  size_t len;
  int count, stop_after, bad;
  size_t last_dlen;
} rec;

static int on_event(void *ud, const char *ev, size_t evlen, const char *data, size_t dlen) {
  rec *r = ud;
  if (data[dlen] != 0 || ev[evlen] != 0) r->bad = 1;
  r->last_dlen = dlen;
  if (r->len + evlen + dlen + 2 < sizeof r->out) {
    memcpy(r->out + r->len, ev, evlen);
    r->len += evlen;
    r->out[r->len++] = '=';
    memcpy(r->out + r->len, data, dlen);
    r->len += dlen;
    r->out[r->len++] = '|';
    r->out[r->len] = 0;
  } else {
    r->bad = 1;
  }
  r->count++;
  return r->stop_after && r->count >= r->stop_after;
}

/* Parse s (n bytes) fed in pieces of `step` bytes (0: in one go). */
static int parse(const char *s, size_t n, size_t step, rec *r, int *pending) {
  sse_parser p;
  lg_sse_init(&p);
  memset(r, 0, sizeof *r);
  int rc = 0;
  if (!step) step = n ? n : 1;
  for (size_t i = 0; i < n && rc == 0; i += step)
    rc = lg_sse_feed(&p, s + i, n - i < step ? n - i : step, on_event, r);
  if (rc == 0) rc = lg_sse_finish(&p, on_event, r);
  if (pending) *pending = lg_sse_pending(&p);
  lg_sse_free(&p);
  return rc;
}

static int parse_str(const char *s, rec *r) { return parse(s, strlen(s), 0, r, NULL); }

static void expect(const char *name, const char *in, const char *want) {
  rec r;
  CHECK(parse_str(in, &r) == 0);
  CHECK(!r.bad);
  if (strcmp(r.out, want) != 0) {
    fprintf(stderr, "%s: got [%s] want [%s]\n", name, r.out, want);
    test_failed = 1;
  }
  done(name);
}

/* Every 2- and 3-piece split and byte-by-byte feeding give the same events. */
static void splits(const char *name, const char *in, size_t n, const char *want) {
  rec whole, r;
  int pw, pr;
  CHECK(parse(in, n, 0, &whole, &pw) == 0);
  CHECK(strcmp(whole.out, want) == 0);
  CHECK(parse(in, n, 1, &r, &pr) == 0 && strcmp(r.out, want) == 0 && pr == pw);
  for (size_t a = 0; a <= n; a++) {
    for (size_t b = a; b <= n; b++) {
      sse_parser p;
      lg_sse_init(&p);
      memset(&r, 0, sizeof r);
      int rc = lg_sse_feed(&p, in, a, on_event, &r);
      rc |= lg_sse_feed(&p, in + a, b - a, on_event, &r);
      rc |= lg_sse_feed(&p, in + b, n - b, on_event, &r);
      rc |= lg_sse_finish(&p, on_event, &r);
      if (!test_failed && (rc != 0 || strcmp(r.out, want) != 0 || lg_sse_pending(&p) != pw || r.bad)) {
        fprintf(stderr, "%s: split %zu/%zu got [%s]\n", name, a, b, r.out);
        test_failed = 1;
      }
      lg_sse_free(&p);
    }
  }
  done(name);
}

int main(void) {
  expect("single event", "data: hello\n\n", "message=hello|");
  expect("multi-line data", "data: a\ndata: b\ndata:\ndata: c\n\n", "message=a\nb\n\nc|");
  expect("comments are ignored", ": keep-alive\n:\ndata: x\n: mid\n\n: tail\n\n", "message=x|");
  expect("LF CRLF CR endings", "data: lf\n\ndata: crlf\r\n\r\ndata: cr\r\rdata: mixed\r\n\n",
         "message=lf|message=crlf|message=cr|message=mixed|");
  expect("data with and without space", "data:nospace\n\ndata: one\n\ndata:  two\n\n",
         "message=nospace|message=one|message= two|");
  expect("field without colon", "data\n\ndata\ndata\n\n", "message=|message=\n|");
  expect("colons in the value", "data: {\"a\":\"b:c\"}\n\n", "message={\"a\":\"b:c\"}|");
  expect("[DONE]", "data: {\"x\":1}\n\ndata: [DONE]\n\n", "message={\"x\":1}|message=[DONE]|");
  expect("event names", "event: ping\ndata: 1\n\ndata: 2\n\nevent: error\ndata: e\n\n",
         "ping=1|message=2|error=e|");
  expect("event without data dispatches", "event: done\n\n", "done=|");
  expect("empty event name means message", "event:\ndata: z\n\n", "message=z|");
  expect("blank lines alone dispatch nothing", "\n\n\r\n\r\r", "");
  expect("id, retry and unknown fields are ignored",
         "id: 7\nretry: 100\nfoo: bar\ndata: v\nid\n\n", "message=v|");
  expect("a space before the colon is part of the name", "data : x\n\ndata: y\n\n", "message=y|");
  expect("BOM is skipped", "\xEF\xBB\xBF" "data: b\n\n", "message=b|");
  expect("only the first BOM is skipped", "\xEF\xBB\xBF\xEF\xBB\xBF" "data: b\n\ndata: c\n\n",
         "message=c|");
  expect("a BOM prefix is line content", "\xEF" "data: b\n\ndata: c\n\n", "message=c|");
  expect("NUL bytes pass through", "data: x\n\n", "message=x|");
  {
    rec r;
    static const char in[] = "data: a\0b\n\n";
    CHECK(parse(in, sizeof in - 1, 0, &r, NULL) == 0);
    CHECK(r.count == 1 && r.len == 12 && memcmp(r.out, "message=a\0b|", 12) == 0);
    done("NUL bytes inside data");
  }

  {
    static const char in[] =
        "\xEF\xBB\xBF: hi\r\n"
        "event: delta\r\ndata: {\"a\":1}\r\n\r\n"
        "data: line1\rdata: line2\r\r"
        "data:x\n\n"
        "id: 3\nevent: tool\ndata: [\r\ndata: ]\n\n"
        "data: [DONE]\r\n\r\n"
        "data: partial";
    splits("every split point gives the same events", in, sizeof in - 1,
           "delta={\"a\":1}|message=line1\nline2|message=x|tool=[\n]|message=[DONE]|");
  }
  {
    const char *in = "data: a\r\n\r\ndata: b\r\r\n";
    splits("CRLF split between CR and LF", in, strlen(in), "message=a|message=b|");
    in = "\xEF\xBB\xBF" "data: a\n\n";
    splits("BOM split", in, strlen(in), "message=a|");
  }

  { /* the callback stops the parser; the status sticks */
    sse_parser p;
    rec r;
    lg_sse_init(&p);
    memset(&r, 0, sizeof r);
    r.stop_after = 1;
    const char *in = "data: 1\n\ndata: 2\n\n";
    CHECK(lg_sse_feed(&p, in, strlen(in), on_event, &r) == 1);
    CHECK(r.count == 1 && strcmp(r.out, "message=1|") == 0);
    CHECK(lg_sse_feed(&p, "data: 3\n\n", 9, on_event, &r) == 1);
    CHECK(r.count == 1);
    CHECK(lg_sse_finish(&p, on_event, &r) == 1);
    lg_sse_free(&p);
    done("stop from callback");
  }

  { /* truncated streams: the unfinished event is dropped and reported */
    rec r;
    int pending;
    CHECK(parse_str("data: a\n\ndata: b", &r) == 0 && strcmp(r.out, "message=a|") == 0);
    CHECK(parse("data: a\n\ndata: b", 16, 0, &r, &pending) == 0 && pending);
    CHECK(parse("data: a\n\ndata: b\n", 17, 0, &r, &pending) == 0 && pending);
    CHECK(parse("data: a\n\nevent: x\n", 18, 0, &r, &pending) == 0 && pending);
    CHECK(parse("data: a\n\n", 9, 0, &r, &pending) == 0 && !pending);
    CHECK(parse("data: a\n\n: bye\n", 15, 0, &r, &pending) == 0 && !pending);
    CHECK(parse("data: a\r\n\r", 10, 0, &r, &pending) == 0 && !pending);
    CHECK(parse("\xEF\xBB", 2, 0, &r, &pending) == 0 && pending);
    CHECK(parse("", 0, 0, &r, &pending) == 0 && !pending);
    done("truncated input is pending");
  }

  { /* limits: a long line and a long event fail, also when split */
    sse_parser p;
    rec r;
    char big[200];
    memset(big, 'x', sizeof big);
    memcpy(big, "data: ", 6);
    for (size_t step = 1; step <= sizeof big; step += 37) {
      lg_sse_init(&p);
      p.max = 100;
      memset(&r, 0, sizeof r);
      int rc = 0;
      for (size_t i = 0; i < sizeof big && rc == 0; i += step)
        rc = lg_sse_feed(&p, big + i, sizeof big - i < step ? sizeof big - i : step, on_event, &r);
      CHECK(rc == -1);
      CHECK(lg_sse_feed(&p, "\n\n", 2, on_event, &r) == -1);
      CHECK(r.count == 0);
      lg_sse_free(&p);
    }
    lg_sse_init(&p);
    p.max = 100;
    memset(&r, 0, sizeof r);
    big[99] = '\n'; /* a 99-byte line is fine... */
    CHECK(lg_sse_feed(&p, big, 100, on_event, &r) == 0);
    big[59] = '\n'; /* ...but two data lines make a 148-byte event */
    CHECK(lg_sse_feed(&p, big, 60, on_event, &r) == -1);
    lg_sse_free(&p);
    lg_sse_init(&p);
    p.max = 100;
    memset(&r, 0, sizeof r);
    CHECK(lg_sse_feed(&p, big, 60, on_event, &r) == 0);
    CHECK(lg_sse_feed(&p, "\n", 1, on_event, &r) == 0);
    CHECK(lg_sse_feed(&p, big, 60, on_event, &r) == 0 && r.count == 1);
    lg_sse_free(&p);
    done("line and event over the limit fail");
  }

  { /* a big event through the default limit, fed in odd pieces */
    size_t n = 3 << 20;
    char *in = malloc(n + 16);
    CHECK(in != NULL);
    if (in) {
      memcpy(in, "data: ", 6);
      memset(in + 6, 'y', n - 6);
      memcpy(in + n, "\n\n", 2);
      sse_parser p;
      lg_sse_init(&p);
      rec r;
      memset(&r, 0, sizeof r);
      int rc = 0;
      for (size_t i = 0; i < n + 2 && rc == 0; i += 65521)
        rc = lg_sse_feed(&p, in + i, n + 2 - i < 65521 ? n + 2 - i : 65521, on_event, &r);
      CHECK(rc == 0 && r.count == 1 && !lg_sse_pending(&p));
      CHECK(r.last_dlen == n - 6);
      lg_sse_free(&p);
      free(in);
    }
    done("multi-megabyte event");
  }

  { /* the parser is reusable after lg_sse_free, and a NULL callback is allowed */
    sse_parser p;
    lg_sse_init(&p);
    CHECK(lg_sse_feed(&p, "data: x\n\n", 9, NULL, NULL) == 0);
    lg_sse_free(&p);
    lg_sse_free(&p);
    CHECK(lg_sse_feed(&p, "data: x", 7, NULL, NULL) == 0 && lg_sse_pending(&p));
    lg_sse_free(&p);
    done("free, reuse and NULL callback");
  }

  printf("%d tests, %d failed\n", test_no, failures);
  return failures ? 1 : 0;
}
