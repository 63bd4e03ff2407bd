/* libFuzzer target for core/json.c, in a Lua 5.4 state (liblua5.4).
 *   make run-fuzz-json FUZZ_SECONDS=60      (tests/c/README.md)
 * For every input:
 *  - lg_json_check and lg_json_decode agree: both accept it, or both refuse
 *    it with the same message;
 *  - what decodes encodes without error to valid UTF-8 that the check
 *    accepts, decode -> encode -> decode gives the same value (integer and
 *    float subtypes, array marks and all) and encoding that gives the same
 *    bytes again (the JSON rules of README: sorted keys, U+FFFD, ...);
 *  - the input taken as one Lua string encodes to valid UTF-8 that decodes
 *    to a string encoding to the same bytes again.
 * Everything runs inside lua_pcall: a Lua error there is a bug too. */
#include "internal.h"

#include <lauxlib.h>
#include <lualib.h>

#include <math.h>
#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c) do { if (!(c)) __builtin_trap(); } while (0)

typedef struct {
  const char *s;
  size_t n;
} input;

static int valid_utf8(const char *s, size_t n) {
  for (size_t i = 0; i < n;) {
    size_t k = lg_utf8_seq(s + i, n - i);
    if (!k) return 0;
    i += k;
  }
  return 1;
}

/* The values at a and b are the same JSON data, down to number subtypes
 * and array marks. */
static int same_value(lua_State *L, int a, int b) {
  a = lua_absindex(L, a);
  b = lua_absindex(L, b);
  int t = lua_type(L, a);
  if (t != lua_type(L, b)) return 0;
  if (t == LUA_TNUMBER) {
    if (lua_isinteger(L, a) != lua_isinteger(L, b)) return 0;
    if (lua_isinteger(L, a)) return lua_tointeger(L, a) == lua_tointeger(L, b);
    double x = lua_tonumber(L, a), y = lua_tonumber(L, b);
    return x == y && signbit(x) == signbit(y);
  }
  if (t != LUA_TTABLE) return lua_rawequal(L, a, b);
  CHECK(lua_checkstack(L, 6));
  int ma = lua_getmetatable(L, a), mb = lua_getmetatable(L, b);
  int same_mt = ma == mb && (!ma || lua_rawequal(L, -1, -2));
  lua_pop(L, ma + mb);
  if (!same_mt || lua_rawlen(L, a) != lua_rawlen(L, b)) return 0;
  size_t na = 0, nb = 0;
  lua_pushnil(L);
  while (lua_next(L, a)) {
    na++;
    lua_pushvalue(L, -2);
    lua_rawget(L, b);
    int ok = same_value(L, -2, -1);
    lua_pop(L, 2);
    if (!ok) {
      lua_pop(L, 1);
      return 0;
    }
  }
  lua_pushnil(L);
  while (lua_next(L, b)) {
    nb++;
    lua_pop(L, 1);
  }
  return na == nb;
}

/* Encode the value at the top of the stack; the text is pushed as a string
 * (so it lives with the state) and returned through *len. */
static const char *encode_top(lua_State *L, size_t *len) {
  char err[256];
  buf_t b;
  lg_buf_init(&b);
  int rc = lg_json_encode(L, -1, &b, err, sizeof err);
  CHECK(rc == 0 && !b.oom);
  lua_pushlstring(L, b.p ? b.p : "", b.len);
  lg_buf_free(&b);
  const char *s = lua_tolstring(L, -1, len);
  CHECK(valid_utf8(s, *len));
  CHECK(lg_json_check(s, *len, err, sizeof err) == 0);
  return s;
}

static int run(lua_State *L) {
  const input *in = lua_touserdata(L, 1);
  char err1[256], err2[256];
  int rc = lg_json_decode(L, in->s, in->n, err1, sizeof err1);
  int crc = lg_json_check(in->s, in->n, err2, sizeof err2);
  CHECK(rc == crc);
  if (rc != 0) {
    CHECK(strcmp(err1, err2) == 0 && strstr(err1, " at byte ") != NULL);
  } else {
    size_t n1, n2;
    int v1 = lua_gettop(L);
    const char *s1 = encode_top(L, &n1);
    CHECK(lg_json_decode(L, s1, n1, err1, sizeof err1) == 0);
    CHECK(same_value(L, v1, -1));
    const char *s2 = encode_top(L, &n2);
    CHECK(n1 == n2 && memcmp(s1, s2, n1) == 0);
  }
  lua_settop(L, 1);
  /* the raw bytes as a string value */
  lua_pushlstring(L, in->s, in->n);
  size_t n1, n2;
  const char *s1 = encode_top(L, &n1);
  CHECK(lg_json_decode(L, s1, n1, err1, sizeof err1) == 0 && lua_type(L, -1) == LUA_TSTRING);
  size_t back_n;
  const char *back = lua_tolstring(L, -1, &back_n);
  CHECK(valid_utf8(back, back_n));
  if (valid_utf8(in->s, in->n)) CHECK(back_n == in->n && memcmp(back, in->s, in->n) == 0);
  const char *s2 = encode_top(L, &n2);
  CHECK(n1 == n2 && memcmp(s1, s2, n1) == 0);
  return 0;
}

static lua_State *state;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!state) {
    state = luaL_newstate();
    CHECK(state != NULL);
    luaL_openlibs(state);
  }
  input in = {(const char *)data, size};
  lua_pushcfunction(state, run);
  lua_pushlightuserdata(state, &in);
  int rc = lua_pcall(state, 1, 0, 0);
  CHECK(rc == LUA_OK);
  lua_settop(state, 0);
  return 0;
}
