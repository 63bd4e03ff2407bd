/* JSON codec. Integers stay integers, floats round-trip, arrays are
 * explicit (array_mt), NaN/inf/cycles/sparse arrays are errors, object keys
 * are written sorted so a value always gives the same bytes.
 *
 * Memory: the encoder writes into the caller's buf_t and only walks tables
 * with lua_next/lua_rawget; the decoder builds Lua values directly and never
 * holds malloc'd memory across a Lua call, so a Lua memory error leaks
 * nothing. Numbers are formatted and parsed under a process-wide "C" locale
 * installed with uselocale() around each call, so os.setlocale in the host
 * cannot turn "0.5" into "0,5".
 *
 * Error positions: encode errors name a path ($ is the root, $.key, $[i] with
 * 1-based Lua indices); decode errors name a 1-based byte offset. */
#include "internal.h"

#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAXDEPTH 1000
#define IS_DIGIT(c) ((c) >= '0' && (c) <= '9')
#define TWO53 9007199254740992.0

/* Registry keys: only their addresses matter. */
static const char array_mt_key = 'a';
static const char empty_mt_key = 'm';
static const char empty_key = 'e';

/* ---- locale ---------------------------------------------------------------- */

static pthread_once_t c_locale_once = PTHREAD_ONCE_INIT;
static locale_t c_locale; /* written once under pthread_once, then read-only */

static void c_locale_init(void) { c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0); }

/* Switch this thread to the C locale; returns what to give back to
 * locale_end (0 if newlocale failed: then we live with the host's locale). */
static locale_t locale_begin(void) {
  pthread_once(&c_locale_once, c_locale_init);
  return c_locale ? uselocale(c_locale) : (locale_t)0;
}

static void locale_end(locale_t old) {
  if (old) uselocale(old);
}

/* ---- metatables ------------------------------------------------------------ */

/* Pushes array_mt, creating it on first use in this state. */
static void push_array_mt(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &array_mt_key) == LUA_TTABLE) return;
  lua_pop(L, 1);
  lua_createtable(L, 0, 2);
  lua_pushliteral(L, "luagent.json.array");
  lua_setfield(L, -2, "__name");
  lua_pushliteral(L, "array");
  lua_setfield(L, -2, "__jsontype");
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &array_mt_key);
}

/* Address of a registry table, or NULL if it was never created. */
static const void *registry_ptr(lua_State *L, const char *key) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, key);
  const void *p = lua_istable(L, -1) ? lua_topointer(L, -1) : NULL;
  lua_pop(L, 1);
  return p;
}

/* True if the table at idx has array_mt or empty_array's metatable. */
static int marked_array(lua_State *L, int idx) {
  if (!lua_getmetatable(L, idx)) return 0;
  const void *mt = lua_topointer(L, -1);
  lua_pop(L, 1);
  return mt == registry_ptr(L, &array_mt_key) || mt == registry_ptr(L, &empty_mt_key);
}

/* ---- encoder --------------------------------------------------------------- */

typedef struct {
  const char *key; /* NULL: array index */
  union { size_t klen; lua_Integer idx; } u;
} seg_t;

typedef struct {
  lua_State *L;
  buf_t *out;
  char *err;
  size_t errlen;
  const void *arr_mt, *empty_mt;
  int depth;                   /* tables currently open */
  const void *open[MAXDEPTH];  /* those tables, for cycle detection */
  seg_t seg[MAXDEPTH];         /* key taken inside each, for error paths */
} enc_t;

typedef struct {
  const char *s;
  size_t len;
  lua_Integer slot; /* index in the key anchor table */
} okey_t;

static int is_ident(const char *s, size_t n) {
  if (n == 0 || IS_DIGIT(s[0])) return 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (!(c == '_' || IS_DIGIT(c) || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z'))) return 0;
  }
  return 1;
}

/* Writes "<msg> at <path>" into err. Plain C only: no Lua call in here, so
 * the temporary path buffer cannot leak. */
static int enc_error(enc_t *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int enc_error(enc_t *e, const char *fmt, ...) {
  if (!e->err || !e->errlen) return -1;
  char msg[128];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  buf_t p;
  lg_buf_init(&p);
  lg_buf_addc(&p, '$');
  for (int i = 0; i < e->depth && p.len < e->errlen; i++) {
    const seg_t *s = &e->seg[i];
    if (!s->key) {
      lg_buf_addf(&p, "[%lld]", (long long)s->u.idx);
    } else if (is_ident(s->key, s->u.klen)) {
      lg_buf_addc(&p, '.');
      lg_buf_add(&p, s->key, s->u.klen);
    } else {
      lg_buf_addc(&p, '[');
      lg_buf_add_jstr(&p, s->key, s->u.klen < 64 ? s->u.klen : 64);
      lg_buf_addc(&p, ']');
    }
  }
  snprintf(e->err, e->errlen, "%s at %s", msg, p.oom ? "$" : p.p);
  lg_buf_free(&p);
  return -1;
}

static int enc_value(enc_t *e, int idx);

static int enc_float(enc_t *e, double x) {
  if (isnan(x)) return enc_error(e, "cannot encode NaN");
  if (isinf(x)) return enc_error(e, x > 0 ? "cannot encode inf" : "cannot encode -inf");
  /* Shortest of %.15g/%.16g/%.17g that reads back as the same double. */
  char tmp[40];
  locale_t old = locale_begin();
  for (int prec = 15; prec <= 17; prec++) {
    snprintf(tmp, sizeof tmp, "%.*g", prec, x);
    if (strtod(tmp, NULL) == x) break;
  }
  locale_end(old);
  /* An integral float below 2^53 prints like the equal integer ("2"): equal
   * values give equal bytes, and decode turns it into that integer. From
   * 2^53 on decode keeps a float a float, so plain digits get a ".0" (else
   * they would read back as an integer). */
  lg_buf_adds(e->out, tmp);
  if (fabs(x) >= TWO53 && !strpbrk(tmp, ".e")) lg_buf_add(e->out, ".0", 2);
  return 0;
}

static int okey_cmp(const void *a, const void *b) {
  const okey_t *x = a, *y = b;
  int c = memcmp(x->s, y->s, x->len < y->len ? x->len : y->len);
  return c ? c : (x->len > y->len) - (x->len < y->len);
}

/* Object with n string keys (checked by the caller). The keys are copied into
 * an anchor table first: that keeps the strings alive while siblings are
 * encoded (even if the table is weak and the GC clears entries), and
 * lua_rawgeti on it pushes a key without allocating. */
/* Objects of at most this many keys keep their keys and values on the stack
 * while they are written: no anchor table, no key array to allocate. */
#define SMALL_OBJECT 16

static int enc_small_object(enc_t *e, int idx, int d) {
  lua_State *L = e->L;
  int base = lua_gettop(L);
  okey_t keys[SMALL_OBJECT];
  size_t k = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) { /* the stack holds each key, its value, then the key again */
    if (k == SMALL_OBJECT) { /* (cannot happen: counted before) */
      lua_pop(L, 2);
      break;
    }
    keys[k].s = lua_tolstring(L, -2, &keys[k].len); /* already a string */
    keys[k].slot = lua_gettop(L); /* the value; its key just below */
    k++;
    lua_pushvalue(L, -2);
  }
  qsort(keys, k, sizeof *keys, okey_cmp);
  lg_buf_addc(e->out, '{');
  for (size_t i = 0; i < k; i++) {
    if (i) lg_buf_addc(e->out, ',');
    lg_buf_add_jstr(e->out, keys[i].s, keys[i].len);
    lg_buf_addc(e->out, ':');
    e->seg[d].key = keys[i].s;
    e->seg[d].u.klen = keys[i].len;
    if (enc_value(e, (int)keys[i].slot)) return -1;
  }
  lg_buf_addc(e->out, '}');
  lua_settop(L, base);
  return 0;
}

static int enc_object(enc_t *e, int idx, size_t n, int d) {
  lua_State *L = e->L;
  if (n <= SMALL_OBJECT && lua_checkstack(L, 2 * SMALL_OBJECT + 4)) return enc_small_object(e, idx, d);
  if (n > (size_t)INT32_MAX) return enc_error(e, "table too large");
  lua_createtable(L, (int)n, 0);
  int anchor = lua_gettop(L);
  okey_t *keys = lua_newuserdatauv(L, n * sizeof *keys, 0);
  size_t k = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) { /* no allocation in this loop */
    lua_pop(L, 1);
    if (k == n) { /* a weak table lost entries meanwhile */
      lua_pop(L, 1);
      break;
    }
    lua_pushvalue(L, -1);
    lua_rawseti(L, anchor, (lua_Integer)k + 1);
    keys[k].s = lua_tolstring(L, -1, &keys[k].len); /* already a string */
    keys[k].slot = (lua_Integer)k + 1;
    k++;
  }
  qsort(keys, k, sizeof *keys, okey_cmp);
  lg_buf_addc(e->out, '{');
  for (size_t i = 0; i < k; i++) {
    if (i) lg_buf_addc(e->out, ',');
    lg_buf_add_jstr(e->out, keys[i].s, keys[i].len);
    lg_buf_addc(e->out, ':');
    e->seg[d].key = keys[i].s;
    e->seg[d].u.klen = keys[i].len;
    lua_rawgeti(L, anchor, keys[i].slot);
    lua_rawget(L, idx);
    if (enc_value(e, lua_gettop(L))) return -1;
    lua_pop(L, 1);
  }
  lg_buf_addc(e->out, '}');
  lua_pop(L, 2);
  return 0;
}

static void lazy_materialize(lua_State *L, int t); /* records decoded on first access */

static int enc_table(enc_t *e, int idx) {
  lua_State *L = e->L;
  const void *t = lua_topointer(L, idx);
  int d = e->depth;
  for (int i = 0; i < d; i++)
    if (e->open[i] == t) return enc_error(e, "cycle in table");
  if (d >= MAXDEPTH) return enc_error(e, "nesting too deep");
  if (!lua_checkstack(L, 8)) return enc_error(e, "Lua stack overflow");

  lazy_materialize(L, idx); /* a lazy record is encoded whole */
  int marked = 0;
  if (lua_getmetatable(L, idx)) {
    const void *mt = lua_topointer(L, -1);
    marked = mt == e->arr_mt || mt == e->empty_mt;
    lua_pop(L, 1);
  }

  /* Classify the keys in one pass. */
  lua_Integer nint = 0, kmin = 0, kmax = 0;
  size_t nstr = 0;
  const char *bad = NULL;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    int kt = lua_type(L, -2);
    lua_pop(L, 1);
    if (kt == LUA_TNUMBER && lua_isinteger(L, -1)) {
      lua_Integer k = lua_tointeger(L, -1);
      if (nint == 0 || k < kmin) kmin = k;
      if (nint == 0 || k > kmax) kmax = k;
      nint++;
    } else if (kt == LUA_TSTRING) {
      nstr++;
    } else {
      bad = kt == LUA_TNUMBER ? "float" : lua_typename(L, kt);
    }
  }
  if (marked && (bad || nstr)) return enc_error(e, "array with non-integer key");
  if (bad) return enc_error(e, "cannot encode table with %s key", bad);
  if (nint && nstr) return enc_error(e, "table mixes array and object keys");
  /* Distinct integer keys, all >= 1, as many as the largest: exactly 1..n. */
  if (nint && (kmin < 1 || kmax != nint))
    return enc_error(e, "sparse array (key %lld)", (long long)(kmin < 1 ? kmin : kmax));

  e->open[d] = t;
  e->depth = d + 1;
  if (nstr) {
    if (enc_object(e, idx, nstr, d)) return -1;
  } else if (nint || marked) {
    lg_buf_addc(e->out, '[');
    for (lua_Integer i = 1; i <= nint; i++) {
      if (i > 1) lg_buf_addc(e->out, ',');
      e->seg[d].key = NULL;
      e->seg[d].u.idx = i;
      lua_rawgeti(L, idx, i);
      if (enc_value(e, lua_gettop(L))) return -1;
      lua_pop(L, 1);
    }
    lg_buf_addc(e->out, ']');
  } else {
    lg_buf_add(e->out, "{}", 2);
  }
  e->depth = d;
  return 0;
}

static int enc_value(enc_t *e, int idx) {
  lua_State *L = e->L;
  switch (lua_type(L, idx)) {
    case LUA_TNIL:
      lg_buf_add(e->out, "null", 4);
      return 0;
    case LUA_TBOOLEAN:
      lg_buf_adds(e->out, lua_toboolean(L, idx) ? "true" : "false");
      return 0;
    case LUA_TNUMBER:
      if (lua_isinteger(L, idx)) {
        lg_buf_add_int(e->out, (long long)lua_tointeger(L, idx));
        return 0;
      }
      return enc_float(e, (double)lua_tonumber(L, idx));
    case LUA_TSTRING: {
      size_t n;
      const char *s = lua_tolstring(L, idx, &n);
      lg_buf_add_jstr(e->out, s, n);
      return 0;
    }
    case LUA_TTABLE:
      return enc_table(e, idx);
    case LUA_TLIGHTUSERDATA:
      if (lua_touserdata(L, idx) == LG_JSON_NULL) {
        lg_buf_add(e->out, "null", 4);
        return 0;
      }
      return enc_error(e, "cannot encode light userdata");
    default:
      return enc_error(e, "cannot encode %s", luaL_typename(L, idx));
  }
}

int lg_json_encode(lua_State *L, int idx, buf_t *out, char *err, size_t errlen) {
  idx = lua_absindex(L, idx);
  int top = lua_gettop(L);
  size_t start = out->len;
  enc_t e; /* the arrays are filled as the walk goes deeper */
  e.L = L;
  e.out = out;
  e.err = err;
  e.errlen = errlen;
  e.depth = 0;
  if (err && errlen) err[0] = '\0';
  int rc;
  if (!lua_checkstack(L, 8)) {
    rc = enc_error(&e, "Lua stack overflow");
  } else {
    e.arr_mt = registry_ptr(L, &array_mt_key);
    e.empty_mt = registry_ptr(L, &empty_mt_key);
    rc = enc_value(&e, idx);
  }
  lua_settop(L, top);
  if (rc == 0 && out->oom) {
    e.depth = 0;
    rc = enc_error(&e, "out of memory");
  }
  if (rc != 0) { /* drop the partial output */
    out->len = start;
    if (out->p) out->p[start] = '\0';
  }
  return rc;
}

/* ---- decoder --------------------------------------------------------------- */

/* With L NULL the decoder only checks the text (lg_json_check): the same
 * grammar and the same messages, no Lua and no allocation. */
typedef struct {
  lua_State *L;
  const char *s, *p, *e; /* input, cursor, end */
  char *err;
  size_t errlen;
  int depth;
  int mt; /* stack index of array_mt */
} dec_t;

static int dec_error(dec_t *d, const char *at, const char *msg) {
  if (d->err && d->errlen)
    snprintf(d->err, d->errlen, "%s at byte %zu", msg, (size_t)(at - d->s) + 1);
  return -1;
}

static void skip_ws(dec_t *d) {
  while (d->p < d->e && (*d->p == ' ' || *d->p == '\t' || *d->p == '\n' || *d->p == '\r'))
    d->p++;
}

static int peek(dec_t *d) { return d->p < d->e ? (unsigned char)*d->p : -1; }

static int hex4(const char *p) {
  int v = 0;
  for (int i = 0; i < 4; i++) {
    int c = (unsigned char)p[i], x;
    if (IS_DIGIT(c)) x = c - '0';
    else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f') x = (c | 0x20) - 'a' + 10;
    else return -1;
    v = v * 16 + x;
  }
  return v;
}

/* The writers below take o == NULL (checking only) and then write nothing. */
static char *put_c(char *o, char c) {
  if (o) *o++ = c;
  return o;
}

static char *put_utf8(char *o, unsigned cp) {
  if (!o) return NULL;
  if (cp < 0x80) {
    *o++ = (char)cp;
  } else if (cp < 0x800) {
    *o++ = (char)(0xC0 | (cp >> 6));
    *o++ = (char)(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    *o++ = (char)(0xE0 | (cp >> 12));
    *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
    *o++ = (char)(0x80 | (cp & 0x3F));
  } else {
    *o++ = (char)(0xF0 | (cp >> 18));
    *o++ = (char)(0x80 | ((cp >> 12) & 0x3F));
    *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
    *o++ = (char)(0x80 | (cp & 0x3F));
  }
  return o;
}

/* Raw bytes of a string literal, as UTF-8: a byte that starts no valid
 * sequence becomes U+FFFD (README, JSON), as the encoder writes it. */
static char *put_raw(char *o, const char *r, const char *end) {
  while (o && r < end) {
    size_t k = lg_utf8_seq(r, (size_t)(end - r));
    if (k) {
      memcpy(o, r, k);
      o += k;
      r += k;
    } else {
      memcpy(o, LG_UTF8_REPLACEMENT, 3);
      o += 3;
      r++;
    }
  }
  return o;
}

/* A string of at most n bytes, written in place, then pushed. 5.1's
 * luaL_Buffer grows in fixed pieces, so there it is a userdata copied out. */
#if LUA_VERSION_NUM >= 502
typedef luaL_Buffer strbuf;
static char *strbuf_init(lua_State *L, strbuf *b, size_t n) { return luaL_buffinitsize(L, b, n); }
static void strbuf_push(lua_State *L, strbuf *b, const char *o0, size_t n) {
  LG_UNUSED(L);
  LG_UNUSED(o0);
  luaL_pushresultsize(b, n);
}
#else
typedef int strbuf;
static char *strbuf_init(lua_State *L, strbuf *b, size_t n) {
  LG_UNUSED(b);
  return lua_newuserdata(L, n ? n : 1);
}
static void strbuf_push(lua_State *L, strbuf *b, const char *o0, size_t n) {
  LG_UNUSED(b);
  lua_pushlstring(L, o0, n);
  lua_remove(L, -2);
}
#endif

/* The bytes of a literal's inside r..q (the quotes excluded; q is the
 * closing quote, escapes checked to stay before it), escapes resolved and
 * raw bytes as put_raw writes them, written to *o (NULL: only checked).
 * Returns NULL, or the escape that is invalid. */
static const char *unescape(const char *r, const char *q, char **op) {
  char *o = *op;
  while (r < q) {
    if (*r != '\\') {
      const char *run = r;
      while (r < q && *r != '\\') r++;
      o = put_raw(o, run, r);
      continue;
    }
    const char *at = r;
    r += 2;
    switch (at[1]) {
      case '"': o = put_c(o, '"'); break;
      case '\\': o = put_c(o, '\\'); break;
      case '/': o = put_c(o, '/'); break;
      case 'b': o = put_c(o, '\b'); break;
      case 'f': o = put_c(o, '\f'); break;
      case 'n': o = put_c(o, '\n'); break;
      case 'r': o = put_c(o, '\r'); break;
      case 't': o = put_c(o, '\t'); break;
      case 'u': {
        int cp = q - r >= 4 ? hex4(r) : -1;
        if (cp < 0) return at;
        r += 4;
        if (cp >= 0xD800 && cp <= 0xDBFF) {
          int lo = q - r >= 6 && r[0] == '\\' && r[1] == 'u' ? hex4(r + 2) : -1;
          if (lo >= 0xDC00 && lo <= 0xDFFF) {
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            r += 6;
          } else {
            cp = 0xFFFD; /* lone high surrogate; the next escape stands alone */
          }
        } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
          cp = 0xFFFD; /* lone low surrogate */
        }
        o = put_utf8(o, (unsigned)cp);
        break;
      }
      default:
        return at;
    }
  }
  *op = o;
  return NULL;
}

/* Scans the literal at open (a '"') up to e: its closing quote in *close,
 * whether it has escapes and how many bytes start no valid UTF-8 sequence.
 * NULL, or where it is malformed (with the message in *msg). */
static const char *scan_string(const char *open, const char *e, const char **close, int *esc,
                               size_t *bad, const char **msg) {
  const char *q = open + 1;
  *esc = 0;
  *bad = 0;
  for (;; q++) {
    if (q >= e) {
      *msg = "unterminated string";
      return open;
    }
    unsigned char c = (unsigned char)*q;
    if (c == '"') break;
    if (c < 0x20) {
      *msg = "control character in string";
      return q;
    }
    if (c == '\\') {
      *esc = 1;
      if (++q >= e) {
        *msg = "unterminated string";
        return open;
      }
    } else if (c >= 0x80) {
      /* a valid sequence holds no '"' or '\\', so it never hides one */
      size_t k = lg_utf8_seq(q, (size_t)(e - q));
      if (k) q += k - 1;
      else (*bad)++;
    }
  }
  *close = q;
  return NULL;
}

/* Pushes the string at d->p (a '"'). Valid UTF-8 without escapes is pushed
 * straight from the input; otherwise the bytes go into a buffer (strbuf) sized
 * for the literal plus two bytes per invalid byte (each becomes U+FFFD). */
static int dec_string(dec_t *d) {
  const char *open = d->p, *q, *msg;
  int esc;
  size_t bad;
  const char *at = scan_string(open, d->e, &q, &esc, &bad, &msg);
  if (at) return dec_error(d, at, msg);
  const char *r = open + 1;
  d->p = q + 1;
  if (!esc && !bad) {
    if (d->L) lua_pushlstring(d->L, r, (size_t)(q - r));
    return 0;
  }
  if (!esc && !d->L) return 0;
  strbuf b;
  char *o0 = d->L ? strbuf_init(d->L, &b, (size_t)(q - r) + 2 * bad) : NULL, *o = o0;
  at = unescape(r, q, &o);
  if (at) return dec_error(d, at, "invalid escape");
  if (d->L) strbuf_push(d->L, &b, o0, (size_t)(o - o0));
  return 0;
}

int lg_json_str(const char *s, size_t n, buf_t *out) {
  const char *q, *msg;
  int esc;
  size_t bad;
  if (n < 2 || s[0] != '"' || scan_string(s, s + n, &q, &esc, &bad, &msg) || q != s + n - 1) return -1;
  const char *r = s + 1;
  if (!esc && !bad) {
    lg_buf_add(out, r, (size_t)(q - r));
    return out->oom ? -1 : 0;
  }
  size_t start = out->len;
  lg_buf_reserve(out, (size_t)(q - r) + 2 * bad);
  if (out->oom) return -1;
  char *o = out->p + start;
  if (unescape(r, q, &o)) return -1;
  out->len = (size_t)(o - out->p);
  out->p[out->len] = '\0';
  return 0;
}

static int dec_number(dec_t *d) {
  const char *start = d->p, *p = start, *e = d->e;
  int neg = 0, isfloat = 0;
  if (*p == '-') {
    neg = 1;
    p++;
  }
  if (p >= e || !IS_DIGIT(*p)) return dec_error(d, start, "invalid number");
  if (*p == '0' && p + 1 < e && IS_DIGIT(p[1]))
    return dec_error(d, start, "invalid number (leading zero)");
  while (p < e && IS_DIGIT(*p)) p++;
  if (p < e && *p == '.') {
    isfloat = 1;
    if (++p >= e || !IS_DIGIT(*p)) return dec_error(d, start, "invalid number");
    while (p < e && IS_DIGIT(*p)) p++;
  }
  if (p < e && (*p == 'e' || *p == 'E')) {
    isfloat = 1;
    if (++p < e && (*p == '+' || *p == '-')) p++;
    if (p >= e || !IS_DIGIT(*p)) return dec_error(d, start, "invalid number");
    while (p < e && IS_DIGIT(*p)) p++;
  }
  d->p = p;

#if !LG_LUA_INTEGERS
  /* No integer subtype (docs/architecture.md, "Lua versions"): an integer
   * is exact up to 2^53, a larger one an error, never a rounded number. */
  if (!isfloat) {
    uint64_t v = 0;
    for (const char *q = start + neg; q < p; q++) {
      v = v * 10 + (unsigned)(*q - '0');
      if (v > ((uint64_t)1 << 53))
        return dec_error(d, start, "integer out of range (exact up to 2^53 on this Lua)");
    }
    if (d->L) lua_pushnumber(d->L, neg && v ? -(lua_Number)v : (lua_Number)v);
    return 0;
  }
#else
  if (!isfloat) { /* exact int64, or fall through to a float on overflow */
    uint64_t limit = neg ? (uint64_t)1 << 63 : ((uint64_t)1 << 63) - 1, v = 0;
    const char *q = start + neg;
    for (; q < p; q++) {
      unsigned dig = (unsigned)(*q - '0');
      if (v > (limit - dig) / 10) break;
      v = v * 10 + dig;
    }
    if (q == p) {
      lua_Integer i;
      if (!neg) i = (lua_Integer)v;
      else if (v == (uint64_t)1 << 63) i = LUA_MININTEGER;
      else i = -(lua_Integer)v;
      if (d->L) lua_pushinteger(d->L, i);
      return 0;
    }
  }
#endif

  /* The input is not NUL-terminated, so strtod gets a copy. */
  size_t n = (size_t)(p - start);
  char tmp[64], *buf = n < sizeof tmp ? tmp : malloc(n + 1);
  if (!buf) return dec_error(d, start, "out of memory");
  memcpy(buf, start, n);
  buf[n] = '\0';
  locale_t old = locale_begin();
  double x = strtod(buf, NULL);
  locale_end(old);
  if (buf != tmp) free(buf);
  if (isinf(x)) return dec_error(d, start, "invalid number (out of range)");
  if (!d->L) return 0;
  if (x == floor(x) && fabs(x) < TWO53) lua_pushinteger(d->L, (lua_Integer)x);
  else lua_pushnumber(d->L, (lua_Number)x);
  return 0;
}

static int dec_literal(dec_t *d, const char *word, size_t n) {
  if ((size_t)(d->e - d->p) < n || memcmp(d->p, word, n) != 0)
    return dec_error(d, d->p, "invalid literal");
  d->p += n;
  return 0;
}

static int dec_value(dec_t *d);

static int dec_enter(dec_t *d) {
  if (++d->depth > MAXDEPTH) return dec_error(d, d->p, "nesting too deep");
  if (d->L && !lua_checkstack(d->L, 8)) return dec_error(d, d->p, "Lua stack overflow");
  d->p++;
  skip_ws(d);
  return 0;
}

static int dec_array(dec_t *d) {
  lua_State *L = d->L;
  if (dec_enter(d)) return -1;
  if (L) {
    lua_newtable(L);
    lua_pushvalue(L, d->mt);
    lua_setmetatable(L, -2);
  }
  if (peek(d) == ']') {
    d->p++;
  } else {
    for (lua_Integer i = 1;; i++) {
      if (dec_value(d)) return -1;
      if (L) lua_rawseti(L, -2, i);
      skip_ws(d);
      int c = peek(d);
      if (c != ',' && c != ']') return dec_error(d, d->p, "expected ',' or ']'");
      d->p++;
      if (c == ']') break;
    }
  }
  d->depth--;
  return 0;
}

static int dec_object(dec_t *d) {
  lua_State *L = d->L;
  if (dec_enter(d)) return -1;
  if (L) lua_newtable(L);
  if (peek(d) == '}') {
    d->p++;
  } else {
    for (;;) {
      skip_ws(d);
      if (peek(d) != '"') return dec_error(d, d->p, "expected string key");
      if (dec_string(d)) return -1;
      skip_ws(d);
      if (peek(d) != ':') return dec_error(d, d->p, "expected ':'");
      d->p++;
      if (dec_value(d)) return -1;
      /* A null member leaves the key absent (and drops an earlier duplicate). */
      if (L && lua_islightuserdata(L, -1) && lua_touserdata(L, -1) == LG_JSON_NULL) {
        lua_pop(L, 1);
        lua_pushnil(L);
      }
      if (L) lua_rawset(L, -3);
      skip_ws(d);
      int c = peek(d);
      if (c != ',' && c != '}') return dec_error(d, d->p, "expected ',' or '}'");
      d->p++;
      if (c == '}') break;
    }
  }
  d->depth--;
  return 0;
}

static int dec_value(dec_t *d) {
  skip_ws(d);
  switch (peek(d)) {
    case '{': return dec_object(d);
    case '[': return dec_array(d);
    case '"': return dec_string(d);
    case 't':
      if (dec_literal(d, "true", 4)) return -1;
      if (d->L) lua_pushboolean(d->L, 1);
      return 0;
    case 'f':
      if (dec_literal(d, "false", 5)) return -1;
      if (d->L) lua_pushboolean(d->L, 0);
      return 0;
    case 'n':
      if (dec_literal(d, "null", 4)) return -1;
      if (d->L) lua_pushlightuserdata(d->L, LG_JSON_NULL);
      return 0;
    default:
      if (peek(d) == '-' || IS_DIGIT(peek(d))) return dec_number(d);
      return dec_error(d, d->p, "expected value");
  }
}

int lg_json_decode(lua_State *L, const char *s, size_t len, char *err, size_t errlen) {
  int top = lua_gettop(L);
  if (!s) {
    s = "";
    len = 0;
  }
  dec_t d = {L, s, s, s + len, err, errlen, 0, 0};
  if (err && errlen) err[0] = '\0';
  if (!lua_checkstack(L, 8)) return dec_error(&d, s, "Lua stack overflow");
  push_array_mt(L);
  d.mt = lua_gettop(L);
  if (dec_value(&d) == 0) {
    skip_ws(&d);
    if (d.p == d.e) {
      lua_remove(L, d.mt);
      return 0;
    }
    dec_error(&d, d.p, "trailing garbage");
  }
  lua_settop(L, top);
  return -1;
}

int lg_json_check(const char *s, size_t len, char *err, size_t errlen) {
  if (!s) {
    s = "";
    len = 0;
  }
  dec_t d = {NULL, s, s, s + len, err, errlen, 0, 0};
  if (err && errlen) err[0] = '\0';
  if (dec_value(&d) != 0) return -1;
  skip_ws(&d);
  return d.p == d.e ? 0 : dec_error(&d, d.p, "trailing garbage");
}

void lg_json_push(lua_State *L, const char *s, size_t len) {
  char err[256];
  if (lg_json_decode(L, s, len, err, sizeof err) != 0)
    luaL_error(L, "luagent.json.decode: %s", err);
}

/* ---- records decoded on first access ---------------------------------------- */

/* A record (a JSON object) whose nested objects and arrays longer than
 * LAZY_MIN bytes stay JSON text until first read: its scalar members are
 * plain fields; each nested one is kept as text in the record's own
 * metatable under the member's name, and __index decodes it into the
 * record on first access (rawset, so it is decoded once). pairs (__pairs)
 * and encode decode every member still pending first and drop the
 * metatable, so the record is then a plain table. The whole text is
 * checked when the record is made: a bad record fails there, never later.
 * A field assigned before it was read wins over the pending text.
 * Lua 5.1 and LuaJIT call no __pairs: there a record is decoded whole when
 * it is made (docs/architecture.md, "Lua versions"). */
#define LAZY_MIN 32

/* whether pairs() honours __pairs, which a lazy record needs */
#define LAZY_RECORDS (LUA_VERSION_NUM >= 502)

static int lazy_index(lua_State *L);
static int handle_index(lua_State *L);

/* A record made by lg_json_push_handle keeps its whole text in its
 * metatable at [1] until a field other than the one decoded at once is
 * read: then every member is decoded into it (the fields it has win). */
static void handle_fill(lua_State *L, int t, int mt) {
  if (lua_rawgeti(L, mt, 1) != LUA_TSTRING) {
    lua_pop(L, 1);
    return;
  }
  size_t n;
  const char *text = lua_tolstring(L, -1, &n);
  lg_json_push(L, text, n);
  int all = lua_gettop(L);
  lua_pushnil(L);
  while (lua_next(L, all)) {
    lua_pushvalue(L, -2);
    if (lua_rawget(L, t) == LUA_TNIL) {
      lua_pop(L, 1);
      lua_pushvalue(L, -2);
      lua_insert(L, -2);
      lua_rawset(L, t);
    } else {
      lua_pop(L, 2);
    }
  }
  lua_pop(L, 2);
  lua_pushnil(L);
  lua_rawseti(L, mt, 1);
}

/* Decodes the pending member named by the key at `key` into the record at
 * `t` (metatable at `mt`) unless the record has it already; pushes the
 * field's value. */
static void lazy_fill(lua_State *L, int t, int mt, int key) {
  lua_pushvalue(L, key);
  if (lua_rawget(L, t) != LUA_TNIL) return;
  lua_pop(L, 1);
  size_t n;
  lua_pushvalue(L, key);
  lua_rawget(L, mt);
  const char *text = lua_tolstring(L, -1, &n);
  lg_json_push(L, text, n);
  lua_remove(L, -2);
  lua_pushvalue(L, key);
  lua_pushvalue(L, -2);
  lua_rawset(L, t);
  lua_pushvalue(L, key);
  lua_pushnil(L);
  lua_rawset(L, mt);
}

static int is_lazy(lua_State *L, int idx) {
  if (!lua_getmetatable(L, idx)) return 0;
  lua_pushliteral(L, "__index");
  lua_rawget(L, -2);
  lua_CFunction f = lua_tocfunction(L, -1);
  int yes = f == lazy_index || f == handle_index;
  lua_pop(L, 2);
  return yes;
}

/* Every pending member decoded; the record becomes a plain table. */
static void lazy_materialize(lua_State *L, int t) {
  t = lua_absindex(L, t);
  if (!is_lazy(L, t)) return;
  lua_getmetatable(L, t);
  int mt = lua_gettop(L);
  handle_fill(L, t, mt);
  /* the names first: filling clears their slots in mt */
  lua_newtable(L);
  int names = lua_gettop(L);
  lua_Integer n = 0;
  lua_pushnil(L);
  while (lua_next(L, mt)) {
    if (lua_type(L, -1) == LUA_TSTRING) {
      lua_pushvalue(L, -2);
      lua_rawseti(L, names, ++n);
    }
    lua_pop(L, 1);
  }
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, names, i);
    lazy_fill(L, t, mt, lua_gettop(L));
    lua_pop(L, 2);
  }
  lua_pushnil(L);
  lua_setmetatable(L, t);
  lua_pop(L, 2);
}

static int lazy_index(lua_State *L) {
  if (lua_type(L, 2) != LUA_TSTRING || !lua_getmetatable(L, 1)) return 0;
  lua_pushvalue(L, 2);
  if (lua_rawget(L, 3) != LUA_TSTRING) return 0; /* not pending (or a metamethod) */
  lua_pop(L, 1);
  lazy_fill(L, 1, 3, 2);
  return 1;
}

static int handle_index(lua_State *L) {
  if (!lua_getmetatable(L, 1)) return 0;
  handle_fill(L, 1, 3);
  lua_pushnil(L);
  lua_setmetatable(L, 1);
  lua_settop(L, 2);
  lua_rawget(L, 1);
  return 1;
}

static int lazy_next(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 2);
  if (lua_next(L, 1)) return 2;
  lua_pushnil(L);
  return 1;
}

static int lazy_pairs(lua_State *L) {
  lazy_materialize(L, 1);
  lua_pushcfunction(L, lazy_next);
  lua_pushvalue(L, 1);
  lua_pushnil(L);
  return 3;
}

/* Pushes the lazy record of an object's JSON text (any other JSON value is
 * decoded as by lg_json_decode); returns 0, or -1 with nothing pushed. */
static int json_decode_record(lua_State *L, const char *s, size_t len, char *err, size_t errlen) {
  if (!LAZY_RECORDS) return lg_json_decode(L, s ? s : "", s ? len : 0, err, errlen);
  int top = lua_gettop(L);
  if (!s) {
    s = "";
    len = 0;
  }
  dec_t d = {L, s, s, s + len, err, errlen, 0, 0};
  if (err && errlen) err[0] = '\0';
  if (!lua_checkstack(L, 12)) return dec_error(&d, s, "Lua stack overflow");
  skip_ws(&d);
  if (peek(&d) != '{') return lg_json_decode(L, s, len, err, errlen);
  push_array_mt(L);
  d.mt = lua_gettop(L);
  lua_pushnil(L); /* the metatable, made with the first pending member */
  int mt = lua_gettop(L);
  if (dec_enter(&d)) goto fail;
  lua_newtable(L);
  int t = lua_gettop(L);
  if (peek(&d) == '}') {
    d.p++;
  } else {
    for (;;) {
      skip_ws(&d);
      if (peek(&d) != '"') {
        dec_error(&d, d.p, "expected string key");
        goto fail;
      }
      if (dec_string(&d)) goto fail;
      skip_ws(&d);
      if (peek(&d) != ':') {
        dec_error(&d, d.p, "expected ':'");
        goto fail;
      }
      d.p++;
      skip_ws(&d);
      int c = peek(&d);
      if (c == '{' || c == '[') {
        const char *start = d.p;
        d.L = NULL; /* only checked now */
        int rc = dec_value(&d);
        d.L = L;
        if (rc) goto fail;
        if ((size_t)(d.p - start) > LAZY_MIN) {
          if (lua_isnil(L, mt)) {
            lua_createtable(L, 0, 4);
            lua_pushcfunction(L, lazy_index);
            lua_setfield(L, -2, "__index");
            lua_pushcfunction(L, lazy_pairs);
            lua_setfield(L, -2, "__pairs");
            lua_replace(L, mt);
          }
          lua_pushvalue(L, -1);
          lua_pushnil(L);
          lua_rawset(L, t); /* a later member of the same name replaces an earlier one */
          lua_pushlstring(L, start, (size_t)(d.p - start));
          lua_rawset(L, mt);
        } else {
          d.p = start;
          if (dec_value(&d)) goto fail;
          lua_rawset(L, t);
        }
      } else {
        if (dec_value(&d)) goto fail;
        if (lua_islightuserdata(L, -1) && lua_touserdata(L, -1) == LG_JSON_NULL) {
          lua_pop(L, 1);
          lua_pushnil(L);
        }
        if (!lua_isnil(L, mt)) { /* an earlier pending member of the same name is dropped */
          lua_pushvalue(L, -2);
          lua_pushnil(L);
          lua_rawset(L, mt);
        }
        lua_rawset(L, t);
      }
      skip_ws(&d);
      c = peek(&d);
      if (c != ',' && c != '}') {
        dec_error(&d, d.p, "expected ',' or '}'");
        goto fail;
      }
      d.p++;
      if (c == '}') break;
    }
  }
  skip_ws(&d);
  if (d.p != d.e) {
    dec_error(&d, d.p, "trailing garbage");
    goto fail;
  }
  if (!lua_isnil(L, mt)) {
    lua_pushvalue(L, mt);
    lua_setmetatable(L, t);
  }
  lua_replace(L, top + 1);
  lua_settop(L, top + 1);
  return 0;
fail:
  lua_settop(L, top);
  return -1;
}

/* Pushes a record of the object text at the stack top (replaced by it)
 * with only member `key` decoded; the rest decodes when another field is
 * first read (handle_fill). The text is checked now. */
void lg_json_push_handle(lua_State *L, const char *key) {
  char err[256];
  size_t len;
  const char *s = lua_tolstring(L, -1, &len);
  if (lg_json_check(s, len, err, sizeof err) != 0) luaL_error(L, "luagent.json.decode: %s", err);
  int text = lua_gettop(L);
  if (!LAZY_RECORDS) {
    LG_UNUSED(key);
    lg_json_push(L, s, len);
    lua_replace(L, text);
    return;
  }
  lua_createtable(L, 0, 8);
  int t = lua_gettop(L);
  /* the member's value: found by a decode that checks and skips the rest */
  dec_t d = {L, s, s, s + len, err, sizeof err, 0, 0};
  push_array_mt(L);
  d.mt = lua_gettop(L);
  skip_ws(&d);
  if (peek(&d) != '{') { /* not an object: decoded whole */
    lua_settop(L, text);
    lg_json_push(L, s, len);
    lua_replace(L, text);
    return;
  }
  d.p++;
  size_t klen = strlen(key);
  for (skip_ws(&d); peek(&d) == '"';) {
    if (dec_string(&d)) break;
    size_t n;
    const char *k = lua_tolstring(L, -1, &n);
    int hit = n == klen && memcmp(k, key, n) == 0;
    skip_ws(&d);
    d.p++; /* ':' (checked above) */
    skip_ws(&d);
    if (hit) {
      if (dec_value(&d)) break;
      if (lua_islightuserdata(L, -1) && lua_touserdata(L, -1) == LG_JSON_NULL) break; /* absent */
      lua_rawset(L, t);
      break;
    }
    lua_pop(L, 1);
    d.L = NULL;
    int rc = dec_value(&d);
    d.L = L;
    if (rc) break;
    skip_ws(&d);
    if (peek(&d) != ',') break;
    d.p++;
    skip_ws(&d);
  }
  lua_settop(L, t);
  lua_createtable(L, 1, 2);
  lua_pushcfunction(L, handle_index);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, lazy_pairs);
  lua_setfield(L, -2, "__pairs");
  lua_pushvalue(L, text);
  lua_rawseti(L, -2, 1);
  lua_setmetatable(L, t);
  lua_replace(L, text);
}

void lg_json_push_record(lua_State *L, const char *s, size_t len) {
  char err[256];
  if (json_decode_record(L, s, len, err, sizeof err) != 0)
    luaL_error(L, "luagent.json.decode_record: %s", err);
}

/* ---- Lua functions --------------------------------------------------------- */

static int buf_gc(lua_State *L) {
  lg_buf_free(lua_touserdata(L, 1));
  return 0;
}

/* The output buffer lives in a userdata whose __gc frees it, so a Lua memory
 * error in the middle of encoding does not leak it: one per state (the
 * function's upvalue), reused by every call (encoding runs no Lua code, so
 * no call starts inside another), kept small after a large text. */
static int l_encode(lua_State *L) {
  char err[256];
  luaL_checkany(L, 1);
  lua_settop(L, 1);
  buf_t *b = lua_touserdata(L, lua_upvalueindex(1));
  if (b->oom) {
    lg_buf_free(b);
    lg_buf_init(b);
  }
  lg_buf_reset(b);
  int rc = lg_json_encode(L, 1, b, err, sizeof err);
  if (rc == 0) lua_pushlstring(L, b->p ? b->p : "", b->len);
  if (b->cap > 64 * 1024) {
    lg_buf_free(b);
    lg_buf_init(b);
  }
  if (rc != 0) return luaL_error(L, "luagent.json.encode: %s", err);
  return 1;
}

static int l_decode(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  lg_json_push(L, s, len);
  return 1;
}

static int l_decode_record(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  lg_json_push_record(L, s, len);
  return 1;
}

/* decode every pending member of a lazy record now (any other value: as is) */
static int l_materialize(lua_State *L) {
  if (lua_istable(L, 1)) lazy_materialize(L, 1);
  lua_settop(L, 1);
  return 1;
}

static int l_array(lua_State *L) {
  if (lua_isnoneornil(L, 1)) {
    lua_settop(L, 0);
    lua_newtable(L);
  } else {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
  }
  if (marked_array(L, 1)) return 1;
  if (lua_getmetatable(L, 1))
    return luaL_error(L, "luagent.json.array: table already has a metatable");
  push_array_mt(L);
  lua_setmetatable(L, 1);
  return 1;
}

static int l_is_array(lua_State *L) {
  lua_pushboolean(L, lua_istable(L, 1) && marked_array(L, 1));
  return 1;
}

static int l_readonly(lua_State *L) {
  return luaL_error(L, "luagent.json.empty_array is read-only");
}

/* The shared empty array: its own metatable adds __newindex, and its
 * __metatable makes getmetatable(empty_array) == array_mt in Lua. */
static void push_empty_array(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &empty_key) == LUA_TTABLE) return;
  lua_pop(L, 1);
  lua_newtable(L);
  lua_createtable(L, 0, 4);
  lua_pushliteral(L, "luagent.json.array");
  lua_setfield(L, -2, "__name");
  lua_pushliteral(L, "array");
  lua_setfield(L, -2, "__jsontype");
  lua_pushcfunction(L, l_readonly);
  lua_setfield(L, -2, "__newindex");
  push_array_mt(L);
  lua_setfield(L, -2, "__metatable");
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &empty_mt_key);
  lua_setmetatable(L, -2);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &empty_key);
}

void lg_json_open(lua_State *L) {
  static const luaL_Reg fns[] = {
    {"encode", l_encode},
    {"decode", l_decode},
    {"decode_record", l_decode_record},
    {"materialize", l_materialize},
    {"array", l_array},
    {"is_array", l_is_array},
    {NULL, NULL},
  };
  luaL_newlib(L, fns);
  buf_t *b = lua_newuserdatauv(L, sizeof *b, 0);
  lg_buf_init(b);
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, buf_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  lua_pushcclosure(L, l_encode, 1);
  lua_setfield(L, -2, "encode");
  push_empty_array(L);
  lua_setfield(L, -2, "empty_array");
  lua_pushlightuserdata(L, LG_JSON_NULL);
  lua_setfield(L, -2, "null");
  push_array_mt(L);
  lua_setfield(L, -2, "array_mt");
}
