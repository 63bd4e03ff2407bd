/* Reading JSON text the core wrote itself (records, stored rows), without
 * Lua: find a top-level field of an object and decode a string value. Used
 * by the control tools, which answer from records whether they are in memory
 * or read back from the store. The input is trusted to be valid JSON (the
 * core's own output); malformed text yields "absent", never a crash. */
#ifndef LUAGENT_JTEXT_H
#define LUAGENT_JTEXT_H

#include "internal.h"

#include <stddef.h>

typedef struct {
  const char *p; /* raw JSON of the value, NULL when absent */
  size_t n;
} lg_jspan;

/* The value of top-level key `key` of the object in s[0..n). */
lg_jspan lg_jtext_field(const char *s, size_t n, const char *key);
/* Same, on a span. */
lg_jspan lg_jspan_field(lg_jspan obj, const char *key);
/* The members named keys[0..nkeys) of the object obj in out (absent ones
 * {NULL, 0}; of a repeated name the last, as lg_json_decode keeps it). -1
 * when obj is not an object or a member's name has an escape (names are
 * compared as written). obj must be valid JSON (lg_json_check). */
int lg_jspan_members(lg_jspan obj, const char *const *keys, int nkeys, lg_jspan *out);
/* 1 when the span is the literal `null`. */
int lg_jspan_is_null(lg_jspan v);
/* 1 when the span is a JSON string literal. */
int lg_jspan_is_str(lg_jspan v);
/* 1 when the span is the literal `true`. */
int lg_jspan_is_true(lg_jspan v);
/* Decode a JSON string literal into bytes (appended to out); -1 if not a string. */
int lg_jspan_str(lg_jspan v, buf_t *out);
/* 1 when the span is a JSON string equal to s (NULL s: the span is absent). */
int lg_jspan_eq(lg_jspan v, const char *s);
/* `,"key":<raw>` when the span is present. */
void lg_jspan_put(buf_t *b, const char *key, lg_jspan v);

/* Array items: start with cur = NULL; returns where to go on, NULL at the end. */
const char *lg_jspan_next(lg_jspan arr, const char *cur, lg_jspan *item);

#endif
