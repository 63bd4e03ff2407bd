/* See jtext.h. A small scanner: it only skips values and decodes strings. */
#include "jtext.h"

#include <string.h>

static const char *skip_ws(const char *p, const char *e) {
  while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
  return p;
}

static const char *skip_string(const char *p, const char *e) {
  if (p >= e || *p != '"') return NULL;
  for (p++; p < e; p++) {
    if (*p == '\\') {
      p++;
    } else if (*p == '"') {
      return p + 1;
    }
  }
  return NULL;
}

/* End of the value starting at p, or NULL. */
static const char *skip_value(const char *p, const char *e) {
  p = skip_ws(p, e);
  if (p >= e) return NULL;
  if (*p == '"') return skip_string(p, e);
  if (*p == '{' || *p == '[') {
    int depth = 0;
    while (p < e) {
      if (*p == '"') {
        p = skip_string(p, e);
        if (!p) return NULL;
        continue;
      }
      if (*p == '{' || *p == '[') depth++;
      if (*p == '}' || *p == ']') {
        if (--depth == 0) return p + 1;
      }
      p++;
    }
    return NULL;
  }
  while (p < e && *p != ',' && *p != '}' && *p != ']' && *p != ' ' && *p != '\n') p++;
  return p;
}

lg_jspan lg_jtext_field(const char *s, size_t n, const char *key) {
  lg_jspan none = {NULL, 0};
  if (!s) return none;
  const char *p = skip_ws(s, s + n), *e = s + n;
  if (p >= e || *p != '{') return none;
  size_t klen = strlen(key);
  p++;
  for (;;) {
    p = skip_ws(p, e);
    if (p >= e || *p == '}') return none;
    const char *ks = p, *ke = skip_string(p, e);
    if (!ke) return none;
    p = skip_ws(ke, e);
    if (p >= e || *p != ':') return none;
    p = skip_ws(p + 1, e);
    const char *ve = skip_value(p, e);
    if (!ve) return none;
    if ((size_t)(ke - ks) == klen + 2 && memcmp(ks + 1, key, klen) == 0) {
      lg_jspan v = {p, (size_t)(ve - p)};
      return v;
    }
    p = skip_ws(ve, e);
    if (p < e && *p == ',') p++;
  }
}

lg_jspan lg_jspan_field(lg_jspan obj, const char *key) { return lg_jtext_field(obj.p, obj.n, key); }

int lg_jspan_members(lg_jspan obj, const char *const *keys, int nkeys, lg_jspan *out) {
  for (int i = 0; i < nkeys; i++) out[i].p = NULL, out[i].n = 0;
  if (!obj.p) return -1;
  const char *e = obj.p + obj.n, *p = skip_ws(obj.p, e);
  if (p >= e || *p != '{') return -1;
  p++;
  for (;;) {
    p = skip_ws(p, e);
    if (p < e && *p == ',') p = skip_ws(p + 1, e);
    if (p >= e) return -1;
    if (*p == '}') return 0;
    const char *ks = p, *ke = skip_string(p, e);
    if (!ke || memchr(ks, '\\', (size_t)(ke - ks))) return -1;
    p = skip_ws(ke, e);
    if (p >= e || *p != ':') return -1;
    p = skip_ws(p + 1, e);
    const char *ve = skip_value(p, e);
    if (!ve) return -1;
    size_t klen = (size_t)(ke - ks) - 2;
    for (int i = 0; i < nkeys; i++) {
      if (strlen(keys[i]) == klen && memcmp(ks + 1, keys[i], klen) == 0) {
        out[i].p = p; /* a later member of the same name wins */
        out[i].n = (size_t)(ve - p);
      }
    }
    p = ve;
  }
}

int lg_jspan_is_null(lg_jspan v) { return v.p && v.n == 4 && memcmp(v.p, "null", 4) == 0; }

int lg_jspan_is_str(lg_jspan v) { return v.p && v.n >= 2 && v.p[0] == '"'; }

int lg_jspan_is_true(lg_jspan v) { return v.p && v.n == 4 && memcmp(v.p, "true", 4) == 0; }

static int hex4(const char *p, unsigned *out) {
  unsigned v = 0;
  for (int i = 0; i < 4; i++) {
    char c = p[i];
    v <<= 4;
    if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
    else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
    else return -1;
  }
  *out = v;
  return 0;
}

static void put_utf8(buf_t *b, unsigned cp) {
  char o[4];
  size_t n;
  if (cp < 0x80) {
    o[0] = (char)cp, n = 1;
  } else if (cp < 0x800) {
    o[0] = (char)(0xC0 | (cp >> 6)), o[1] = (char)(0x80 | (cp & 0x3F)), n = 2;
  } else if (cp < 0x10000) {
    o[0] = (char)(0xE0 | (cp >> 12)), o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[2] = (char)(0x80 | (cp & 0x3F)), n = 3;
  } else {
    o[0] = (char)(0xF0 | (cp >> 18)), o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F)), o[3] = (char)(0x80 | (cp & 0x3F)), n = 4;
  }
  lg_buf_add(b, o, n);
}

int lg_jspan_str(lg_jspan v, buf_t *out) {
  if (!lg_jspan_is_str(v)) return -1;
  const char *p = v.p + 1, *e = v.p + v.n - 1;
  while (p < e) {
    const char *q = p;
    while (q < e && *q != '\\') q++;
    lg_buf_add(out, p, (size_t)(q - p));
    if (q >= e) break;
    p = q + 1;
    if (p >= e) break;
    char c = *p++;
    switch (c) {
    case 'n': lg_buf_addc(out, '\n'); break;
    case 't': lg_buf_addc(out, '\t'); break;
    case 'r': lg_buf_addc(out, '\r'); break;
    case 'b': lg_buf_addc(out, '\b'); break;
    case 'f': lg_buf_addc(out, '\f'); break;
    case 'u': {
      unsigned cp, lo;
      if (e - p < 4 || hex4(p, &cp) != 0) return -1;
      p += 4;
      if (cp >= 0xD800 && cp < 0xDC00 && e - p >= 6 && p[0] == '\\' && p[1] == 'u' &&
          hex4(p + 2, &lo) == 0 && lo >= 0xDC00 && lo < 0xE000) {
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        p += 6;
      }
      put_utf8(out, cp);
      break;
    }
    default: lg_buf_addc(out, c); break; /* \" \\ \/ */
    }
  }
  return 0;
}

int lg_jspan_eq(lg_jspan v, const char *s) {
  if (!s) return v.p == NULL;
  if (!lg_jspan_is_str(v)) return 0;
  size_t n = strlen(s);
  /* the common case: no escapes */
  if (v.n == n + 2 && memcmp(v.p + 1, s, n) == 0) return 1;
  if (!memchr(v.p, '\\', v.n)) return 0;
  buf_t b;
  lg_buf_init(&b);
  int eq = lg_jspan_str(v, &b) == 0 && b.len == n && (n == 0 || memcmp(b.p, s, n) == 0);
  lg_buf_free(&b);
  return eq;
}

void lg_jspan_put(buf_t *b, const char *key, lg_jspan v) {
  if (!v.p) return;
  lg_buf_addc(b, ',');
  lg_buf_add_jkey(b, key);
  lg_buf_add(b, v.p, v.n);
}

const char *lg_jspan_next(lg_jspan arr, const char *cur, lg_jspan *item) {
  const char *e = arr.p + arr.n;
  const char *p = cur ? cur : arr.p;
  if (!arr.p) return NULL;
  if (!cur) {
    p = skip_ws(p, e);
    if (p >= e || *p != '[') return NULL;
    p++;
  }
  p = skip_ws(p, e);
  if (p < e && *p == ',') p = skip_ws(p + 1, e);
  if (p >= e || *p == ']') return NULL;
  const char *ve = skip_value(p, e);
  if (!ve) return NULL;
  item->p = p;
  item->n = (size_t)(ve - p);
  return ve;
}
