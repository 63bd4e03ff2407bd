/* Byte buffers, clocks, timestamps and ids. Pure C: safe under any mutex. */
#include "internal.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <math.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>
#include <pthread.h>

void lg_buf_init(buf_t *b) { memset(b, 0, sizeof *b); }

void lg_buf_free(buf_t *b) {
  free(b->p);
  memset(b, 0, sizeof *b);
}

void lg_buf_reset(buf_t *b) { b->len = 0; }

void lg_buf_reserve(buf_t *b, size_t extra) {
  if (b->oom) return;
  if (b->len + extra + 1 <= b->cap) return;
  size_t cap = b->cap ? b->cap : 64;
  while (cap < b->len + extra + 1) cap *= 2;
  char *p = realloc(b->p, cap);
  if (!p) {
    b->oom = 1;
    return;
  }
  b->p = p;
  b->cap = cap;
}

void lg_buf_add(buf_t *b, const void *s, size_t n) {
  lg_buf_reserve(b, n);
  if (b->oom) return;
  if (n) memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = '\0';
}

void lg_buf_adds(buf_t *b, const char *s) { lg_buf_add(b, s, strlen(s)); }

void lg_buf_addc(buf_t *b, char c) { lg_buf_add(b, &c, 1); }

void lg_buf_addf(buf_t *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char tmp[256];
  int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if ((size_t)n < sizeof tmp) {
    lg_buf_add(b, tmp, (size_t)n);
    return;
  }
  lg_buf_reserve(b, (size_t)n);
  if (b->oom) return;
  va_start(ap, fmt);
  vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
}

void lg_copy_str(char *dst, size_t size, const char *src) {
  if (size == 0) return;
  size_t n = src ? strnlen(src, size - 1) : 0;
  memcpy(dst, src ? src : "", n);
  dst[n] = 0;
}

size_t lg_int_text(long long v, char out[24]) {
  char tmp[24], *e = tmp + sizeof tmp, *p = e;
  unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
  do {
    *--p = (char)('0' + u % 10);
    u /= 10;
  } while (u);
  if (v < 0) *--p = '-';
  size_t n = (size_t)(e - p);
  memcpy(out, p, n);
  return n;
}

void lg_buf_add_int(buf_t *b, long long v) {
  char tmp[24];
  lg_buf_add(b, tmp, lg_int_text(v, tmp));
}

uint64_t lg_hash_str(const char *s) {
  uint64_t h = 1469598103934665603ULL; /* FNV-1a */
  while (*s) h = (h ^ (unsigned char)*s++) * 1099511628211ULL;
  return h;
}

void lg_buf_add_num(buf_t *b, double v) {
  /* %.17g of an integral double below 2^53 is its integer digits */
  if (v > -9e15 && v < 9e15 && v == (double)(long long)v) {
    lg_buf_add_int(b, (long long)v);
    return;
  }
  lg_buf_addf(b, "%.17g", v);
}

void lg_buf_add_fixed6(buf_t *b, double v) {
  if (!(v >= 0 && v < 9e9)) {
    lg_buf_addf(b, "%.6f", v);
    return;
  }
  long long us = llround(v * 1e6);
  char tmp[8];
  long long frac = us % 1000000;
  for (int i = 5; i >= 0; i--) {
    tmp[i] = (char)('0' + frac % 10);
    frac /= 10;
  }
  lg_buf_add_int(b, us / 1000000);
  lg_buf_addc(b, '.');
  lg_buf_add(b, tmp, 6);
}

size_t lg_utf8_seq(const char *p, size_t n) {
  const unsigned char *s = (const unsigned char *)p;
  if (n == 0) return 0;
  unsigned char c = s[0];
  if (c < 0x80) return 1;
  /* Unicode's table of well-formed sequences: the second byte's range rules
   * out overlong forms (E0, F0), surrogates (ED) and values above U+10FFFF
   * (F4); C0, C1 and F5..FF start nothing */
  size_t len = 0;
  unsigned char lo = 0x80, hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF) {
    len = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    len = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    len = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  if (n < len || s[1] < lo || s[1] > hi) return 0;
  for (size_t i = 2; i < len; i++)
    if (s[i] < 0x80 || s[i] > 0xBF) return 0;
  return len;
}

void lg_buf_add_jstr(buf_t *b, const char *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  lg_buf_reserve(b, n + 2);
  lg_buf_addc(b, '"');
  size_t run = 0; /* bytes copied verbatim in one go */
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    const char *esc = NULL;
    char u[6];
    switch (c) {
      case '"': esc = "\\\""; break;
      case '\\': esc = "\\\\"; break;
      case '\n': esc = "\\n"; break;
      case '\r': esc = "\\r"; break;
      case '\t': esc = "\\t"; break;
      case '\b': esc = "\\b"; break;
      case '\f': esc = "\\f"; break;
      default:
        if (c >= 0x80) {
          /* JSON is UTF-8: a byte that starts no valid sequence is written
           * as U+FFFD (README, JSON) */
          size_t k = lg_utf8_seq(s + i, n - i);
          if (k) {
            run += k;
            i += k - 1;
            continue;
          }
          lg_buf_add(b, s + i - run, run);
          run = 0;
          lg_buf_add(b, LG_UTF8_REPLACEMENT, 3);
          continue;
        }
        if (c < 0x20 || c == 0x7f) {
          u[0] = '\\'; u[1] = 'u'; u[2] = '0'; u[3] = '0';
          u[4] = hex[c >> 4]; u[5] = hex[c & 15];
          lg_buf_add(b, s + i - run, run);
          run = 0;
          lg_buf_add(b, u, 6);
          continue;
        }
        run++;
        continue;
    }
    lg_buf_add(b, s + i - run, run);
    run = 0;
    lg_buf_adds(b, esc);
  }
  lg_buf_add(b, s + n - run, run);
  lg_buf_addc(b, '"');
}

void lg_buf_add_jkey(buf_t *b, const char *key) {
  lg_buf_addc(b, '"');
  lg_buf_adds(b, key);
  lg_buf_add(b, "\":", 2);
}

char *lg_buf_detach(buf_t *b) {
  if (b->oom) {
    lg_buf_free(b);
    return NULL;
  }
  if (!b->p) lg_buf_reserve(b, 0);
  char *p = b->p;
  if (p) p[b->len] = '\0';
  memset(b, 0, sizeof *b);
  return p;
}

char *lg_strdup(const char *s) { return s ? strdup(s) : NULL; }

char *lg_strndup(const char *s, size_t n) {
  char *p = malloc(n + 1);
  if (!p) return NULL;
  memcpy(p, s, n);
  p[n] = '\0';
  return p;
}

int64_t lg_mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t lg_mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

double lg_mono_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int64_t lg_wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static char *put_digits(char *o, int v, int n) {
  for (int i = n - 1; i >= 0; i--) {
    o[i] = (char)('0' + v % 10);
    v /= 10;
  }
  return o + n;
}

/* YYYY-MM-DDTHH:MM:SS.mmmZ written by hand: every record and event has a
 * few, and strftime and snprintf cost more than the rest of an event. */
void lg_iso8601(int64_t wall_ms, char out[32]) {
  time_t secs = (time_t)(wall_ms / 1000);
  int ms = (int)(wall_ms % 1000);
  if (ms < 0) {
    ms += 1000;
    secs--;
  }
  struct tm tm;
  gmtime_r(&secs, &tm);
  int year = tm.tm_year + 1900;
  if (year < 0 || year > 9999) { /* not a time luagent writes: the general way */
    size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, 32 - n, ".%03dZ", ms);
    return;
  }
  char *o = put_digits(out, year, 4);
  *o++ = '-';
  o = put_digits(o, tm.tm_mon + 1, 2);
  *o++ = '-';
  o = put_digits(o, tm.tm_mday, 2);
  *o++ = 'T';
  o = put_digits(o, tm.tm_hour, 2);
  *o++ = ':';
  o = put_digits(o, tm.tm_min, 2);
  *o++ = ':';
  o = put_digits(o, tm.tm_sec, 2);
  *o++ = '.';
  o = put_digits(o, ms, 3);
  *o++ = 'Z';
  *o = '\0';
}

/* Crockford base 32 keeps ids sortable as plain strings. */
static const char b32[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
static atomic_llong id_last_ms;
static atomic_ullong id_counter;
static pthread_once_t id_once = PTHREAD_ONCE_INIT;
static unsigned id_salt;

static void id_init(void) {
  unsigned seed = (unsigned)lg_wall_ms() ^ (unsigned)getpid();
  int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    unsigned r;
    if (read(fd, &r, sizeof r) == (ssize_t)sizeof r) seed ^= r;
    close(fd);
  }
  id_salt = seed;
}

void lg_id_floor(int64_t ms) {
  long long cur = atomic_load(&id_last_ms);
  while (ms > cur && !atomic_compare_exchange_weak(&id_last_ms, &cur, ms)) {
  }
}

void lg_make_id(const char *prefix, char out[40]) {
  pthread_once(&id_once, id_init);
  /* The time part never goes backwards, even if the wall clock does. */
  long long now = lg_wall_ms();
  long long last = atomic_load(&id_last_ms);
  while (now > last && !atomic_compare_exchange_weak(&id_last_ms, &last, now)) {
  }
  if (now < last) now = last;
  unsigned long long n = atomic_fetch_add(&id_counter, 1);
  char t[10], c[6], r[4];
  unsigned long long v = (unsigned long long)now;
  for (int i = 9; i >= 0; i--, v >>= 5) t[i] = b32[v & 31];
  v = n;
  for (int i = 5; i >= 0; i--, v >>= 5) c[i] = b32[v & 31];
  unsigned x = id_salt ^ (unsigned)(n * 2654435761u);
  for (int i = 0; i < 4; i++, x >>= 5) r[i] = (char)(b32[x & 31] | 0x20); /* lower case */
  size_t len = strnlen(prefix, 39 - 20);
  memcpy(out, prefix, len);
  memcpy(out + len, t, 10);
  memcpy(out + len + 10, c, 6);
  memcpy(out + len + 16, r, 4);
  out[len + 20] = 0;
}

int64_t lg_parse_iso8601(const char *s) {
  if (!s) return 0;
  int y, mo, d, h, mi, sec, ms = 0;
  if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d.%3dZ", &y, &mo, &d, &h, &mi, &sec, &ms) < 6) return 0;
  struct tm tm;
  memset(&tm, 0, sizeof tm);
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  tm.tm_sec = sec;
  return (int64_t)timegm(&tm) * 1000 + ms;
}

/* A mutex that spins a little before it sleeps: the app's critical sections
 * are short, and on a contended hand-off (host enqueues while a worker
 * finishes) a futex sleep and wake-up costs more than the section itself. */
void lg_mutex_init(pthread_mutex_t *mu) {
  pthread_mutexattr_t at;
  pthread_mutexattr_init(&at);
  pthread_mutexattr_settype(&at, PTHREAD_MUTEX_ADAPTIVE_NP);
  pthread_mutex_init(mu, &at);
  pthread_mutexattr_destroy(&at);
}
