/* libFuzzer target for core/sse.c.
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Icore tests/fuzz/fuzz_sse.c core/sse.c -o build/fuzz_sse
 *   build/fuzz_sse -max_total_time=60
 * The first two input bytes choose the chunk sizes, the limit and when the
 * callback stops; the rest is the stream. The stream is parsed in one go, in
 * pseudo-random chunks (empty ones included) and byte by byte: the three must
 * give the same events, status and pending flag. Callback arguments are
 * checked on the way. */
#include "sse.h"

#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c) do { if (!(c)) __builtin_trap(); } while (0)

typedef struct {
  uint64_t hash; /* FNV-1a over every event */
  size_t count, stop_after, max, input;
} run;

static void mix(run *r, const void *p, size_t n) {
  const unsigned char *s = p;
  for (size_t i = 0; i < n; i++) r->hash = (r->hash ^ s[i]) * 1099511628211u;
}

static int on_event(void *ud, const char *ev, size_t evlen, const char *d, size_t dlen) {
  run *r = ud;
  CHECK(ev && d && ev[evlen] == 0 && d[dlen] == 0);
  CHECK(evlen > 0 && dlen <= r->max && dlen <= r->input);
  CHECK(evlen <= r->max || (evlen == 7 && memcmp(ev, "message", 7) == 0)); /* the default */
  CHECK(!memchr(ev, '\n', evlen) && !memchr(ev, '\r', evlen) && !memchr(d, '\r', dlen));
  mix(r, &evlen, sizeof evlen);
  mix(r, ev, evlen);
  mix(r, &dlen, sizeof dlen);
  mix(r, d, dlen);
  r->count++;
  return r->stop_after && r->count == r->stop_after;
}

/* step 0: one feed; 1: byte by byte; else chunk sizes from an LCG. */
static void parse(const uint8_t *s, size_t n, int step, uint32_t seed, size_t max,
                  size_t stop_after, run *r, int *rc, int *pending) {
  sse_parser p;
  lg_sse_init(&p);
  if (max) p.max = max;
  memset(r, 0, sizeof *r);
  r->hash = 14695981039346656037u;
  r->max = p.max;
  r->input = n;
  r->stop_after = stop_after;
  size_t i = 0;
  *rc = 0;
  while (*rc == 0 && (i < n || step == 0)) {
    size_t k = n - i;
    if (step == 1) {
      k = 1;
    } else if (step) {
      seed = seed * 1103515245u + 12345u;
      k = (seed >> 16) % 17; /* 0..16, empty feeds included */
      if (k > n - i) k = n - i;
    }
    *rc = lg_sse_feed(&p, (const char *)s + i, k, on_event, r);
    i += k;
    if (step == 0) break;
  }
  int frc = lg_sse_finish(&p, on_event, r);
  CHECK(frc == *rc);
  *pending = lg_sse_pending(&p);
  lg_sse_free(&p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 2) return 0;
  uint32_t seed = data[0];
  size_t max = data[1] & 0x80 ? (size_t)(data[1] & 0x3f) + 1 : 0; /* tiny limits too */
  size_t stop_after = data[1] & 0x40 ? (size_t)(data[0] & 7) + 1 : 0;
  data += 2, size -= 2;
  run a, b, c;
  int rca, rcb, rcc, pa, pb, pc;
  parse(data, size, 0, seed, max, stop_after, &a, &rca, &pa);
  parse(data, size, 2, seed, max, stop_after, &b, &rcb, &pb);
  parse(data, size, 1, seed, max, stop_after, &c, &rcc, &pc);
  CHECK(rca >= -1 && rca <= 1);
  CHECK(a.hash == b.hash && a.count == b.count && rca == rcb);
  CHECK(a.hash == c.hash && a.count == c.count && rca == rcc);
  if (rca == 0) CHECK(pa == pb && pa == pc); /* after a stop the rest is unread */
  if (rca == 1) CHECK(a.count == stop_after);
  return 0;
}
