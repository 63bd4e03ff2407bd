/* Declarations shared by the C files of the core. Nothing here is exported:
 * the module is built with -fvisibility=hidden, so only luaopen_luagent_core
 * and the luagent_* API of luagent.h are visible to hosts. */
#ifndef LUAGENT_INTERNAL_H
#define LUAGENT_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <stdarg.h>
#include <pthread.h>
#include "lua_compat.h"

#define LG_UNUSED(x) ((void)(x))

/* ---- growable byte buffer (util.c) ---------------------------------------
 * Plain malloc memory, never Lua memory, so it can be filled under a core
 * mutex. On allocation failure the buffer sets `oom` and stops growing;
 * callers check `oom` once at the end. */
typedef struct {
  char *p;
  size_t len, cap;
  int oom;
} buf_t;

void lg_buf_init(buf_t *b);
void lg_buf_free(buf_t *b);
void lg_buf_reset(buf_t *b);
void lg_buf_reserve(buf_t *b, size_t extra);
void lg_buf_add(buf_t *b, const void *s, size_t n);
void lg_buf_adds(buf_t *b, const char *s);
void lg_buf_addc(buf_t *b, char c);
void lg_buf_addf(buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Append v in decimal, as "%lld" would (the record and event paths write
 * many integers: no printf for them). */
void lg_buf_add_int(buf_t *b, long long v);
/* v's decimal digits into out (no NUL); their count */
size_t lg_int_text(long long v, char out[24]);
/* FNV-1a of a C string, for the core's hash tables */
uint64_t lg_hash_str(const char *s);
/* src (NULL: "") into dst[size], cut to fit, as snprintf(dst, size, "%s", src) */
void lg_copy_str(char *dst, size_t size, const char *src);
/* A number as %.17g writes it (integral values without printf). */
void lg_buf_add_num(buf_t *b, double v);
/* A non-negative number as %.6f writes it, rounded to the microsecond. */
void lg_buf_add_fixed6(buf_t *b, double v);
/* Append a JSON string literal (quotes included) for the n bytes of s; a
 * byte that starts no valid UTF-8 sequence is written as U+FFFD. */
void lg_buf_add_jstr(buf_t *b, const char *s, size_t n);
/* Length (1-4) of the well-formed UTF-8 sequence at s (n bytes left), 0 if
 * none starts there. */
size_t lg_utf8_seq(const char *s, size_t n);
#define LG_UTF8_REPLACEMENT "\xEF\xBF\xBD" /* U+FFFD */
/* Append `"key":` (key must not need escaping). */
void lg_buf_add_jkey(buf_t *b, const char *key);
/* Returns a malloc'd NUL-terminated copy and resets the buffer (NULL on oom). */
char *lg_buf_detach(buf_t *b);

char *lg_strdup(const char *s);           /* NULL-safe strdup */
char *lg_strndup(const char *s, size_t n);

/* ---- time and ids (util.c) ----------------------------------------------- */
int64_t lg_mono_ms(void);                  /* monotonic clock, milliseconds */
int64_t lg_mono_ns(void);                  /* monotonic clock, nanoseconds */
double lg_mono_s(void);                    /* monotonic clock, seconds (fractional) */
int64_t lg_wall_ms(void);                  /* wall clock, ms since the epoch */
/* ISO-8601 UTC with milliseconds, e.g. 2026-06-08T12:00:00.000Z (24 chars). */
void lg_iso8601(int64_t wall_ms, char out[32]);
int64_t lg_parse_iso8601(const char *s); /* 0 when absent or malformed */

/* A mutex that spins briefly before it sleeps (util.c). */
void lg_mutex_init(pthread_mutex_t *mu);
/* Ids of [A-Za-z0-9_-]: prefix, 10 chars of ms time, 6 chars of a process-wide
 * counter (base 32, so ids sort by creation time), 4 random chars. */
void lg_make_id(const char *prefix, char out[40]);
/* Make later ids sort after an id made at wall time `ms` (store recovery). */
void lg_id_floor(int64_t ms);

/* Task status names, indexed by TS_* (tasks.c). */
const char *lg_status_name(int s);

/* ---- JSON codec (json.c) -------------------------------------------------
 * integers stay integers, floats round-trip, arrays are explicit,
 * NaN/inf/cycles/sparse arrays are errors, '/' is not escaped, object keys
 * are written sorted so the same value always gives the same bytes.
 * Neither function raises for bad input: they return -1 and write a message
 * into err (a Lua memory error may still be raised by the Lua API). */
int lg_json_encode(lua_State *L, int idx, buf_t *out, char *err, size_t errlen);
/* Pushes the decoded value and returns 0, or pushes nothing and returns -1. */
int lg_json_decode(lua_State *L, const char *s, size_t len, char *err, size_t errlen);
/* 0 if lg_json_decode would accept the text, else -1 with the message it
 * would give; plain C (no Lua state), safe under any mutex. */
int lg_json_check(const char *s, size_t len, char *err, size_t errlen);
/* The JSON string literal s[0..n) (quotes included) decoded as
 * lg_json_decode decodes it, appended to out; -1 when it is not one. */
int lg_json_str(const char *s, size_t n, buf_t *out);
/* Decode, raising a Lua error on bad input. */
void lg_json_push(lua_State *L, const char *s, size_t len);
/* The same for a record: an object whose nested objects and arrays decode
 * on first access (json.c, "records decoded on first access"). */
void lg_json_push_record(lua_State *L, const char *s, size_t len);
/* Replaces the object text at the stack top by a record with only member
 * `key` decoded; any other field read decodes the rest (json.c). */
void lg_json_push_handle(lua_State *L, const char *key);
/* Pushes the `luagent.json` C table: encode, decode, array, is_array,
 * empty_array, null. Idempotent per state (metatables live in the registry). */
void lg_json_open(lua_State *L);
/* Light userdata used for JSON null (equal in every state). */
#define LG_JSON_NULL ((void *)0)

#endif
