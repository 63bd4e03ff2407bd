/* Tests of the embedding API (core/luagent.h) against libluagent.a: the
 * built-in Lua half and its searcher, the worker-state initializer (set in
 * C and through luagent.core.set_worker_init), and the C log sink. Prints
 * "ok N - name" / "not ok N - name" lines and exits non-zero when a check
 * failed. Built by `make build/test_embed`, run by tests/c_spec.lua. */
#include "luagent.h"
#include "check.h"
#include "lua_compat.h" /* the API on every Lua luagent builds against */

#include <lauxlib.h>
#include <lualib.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

/* A state as a static host makes it: nothing on package.path/cpath. */
static lua_State *host_state(void) {
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  luagent_open(L);
  if (luaL_dostring(L, "package.path = '' package.cpath = ''") != LUA_OK) lua_pop(L, 1);
  return L;
}

/* Runs chunk; it returns a string, compared with want ("" = no error and
 * any value). On an error the message is printed. */
static int run(lua_State *L, const char *chunk, const char *want) {
  int ok = luaL_dostring(L, chunk) == LUA_OK;
  const char *got = lua_tostring(L, -1);
  if (!ok) fprintf(stderr, "lua error: %s\n", got ? got : "?");
  int match = ok && (want[0] == 0 || (got && strcmp(got, want) == 0));
  if (ok && !match) fprintf(stderr, "got %s, want %s\n", got ? got : "(nil)", want);
  lua_settop(L, 0);
  return match;
}

static void test_embedded_modules(void) {
  lua_State *L = host_state();
  CHECK(run(L, "return tostring(require('luagent.core').embedded)", "true"));
  CHECK(run(L, "return require('luagent').version", ""));
  CHECK(run(L, "return type(require('luagent.plugins.shell').new)", "function"));
  /* chunk names as installed, for tracebacks */
  CHECK(run(L, "return debug.getinfo(require('luagent').load, 'S').source", "@luagent/init.lua"));
  CHECK(run(L, "return debug.getinfo(require('luagent.models.openai').new, 'S').source",
            "@luagent/models/openai.lua"));
  CHECK(run(L, "local ok, e = pcall(require, 'luagent.nope') "
               "return tostring(not ok and e:find(\"no module 'luagent.nope' built into luagent\", 1, true) ~= nil)",
            "true"));
  /* one searcher, however often luagent_open runs */
  luagent_open(L);
  luagent_open(L);
  CHECK(run(L, "local n = 0 for _, s in ipairs(package.searchers or package.loaders) do n = n + 1 end return tostring(n)", "5"));
  lua_close(L);
  done("the Lua half is built in: require works with no package.path, chunks are @luagent/...");
}

static void test_preload_wins(void) {
  lua_State *L = host_state();
  CHECK(run(L, "package.preload['luagent.log'] = function() return { mine = true, emit = function() end } end "
               "return tostring(require('luagent.log').mine)",
            "true"));
  lua_close(L);
  done("a host can replace one built-in module through package.preload");
}

static atomic_int inits;
static pthread_t main_thread;
static atomic_int init_on_main;

static int host_mod(lua_State *L) {
  lua_pushstring(L, "from the host's worker init");
  return 1;
}

static void worker_init(lua_State *L, void *ud) {
  atomic_fetch_add(&inits, 1);
  if (pthread_equal(pthread_self(), main_thread)) atomic_store(&init_on_main, 1);
  lg_push_preload(L);
  lua_pushcfunction(L, host_mod);
  lua_setfield(L, -2, (const char *)ud);
  lua_pop(L, 1);
}

/* A tool run on a worker returns what `require(name)` gives there. */
static const char *const worker_chunk =
    "local luagent = require 'luagent' "
    "local app = luagent.load_string([[ "
    "  local luagent = require 'luagent' "
    "  return luagent.config{ background_tasks = { enabled = true }, "
    "    tools = { luagent.tool{ name = 't', handler = function(a) "
    "      return tostring(luagent.in_worker()) .. ': ' .. require(a.m) end } } } ]]) "
    "local w = app:wait({ app:enqueue_tool('t', { m = MOD }).task_id }, { timeout_s = 10 }) "
    "app:close() "
    "return w.tasks[1].status .. ' ' .. tostring(w.tasks[1].result)";

static void test_worker_init(void) {
  main_thread = pthread_self();
  lua_State *L = host_state();
  luagent_set_worker_init(worker_init, "host_c_mod");
  CHECK(run(L, "MOD = 'host_c_mod' return 1", ""));
  CHECK(run(L, worker_chunk, "completed true: from the host's worker init"));
  CHECK(atomic_load(&inits) >= 1);
  CHECK(!atomic_load(&init_on_main));
  luagent_set_worker_init(NULL, NULL);
  lua_close(L);
  done("luagent_set_worker_init reaches worker states, on their threads; they load the built-in Lua half");
}

static void test_worker_init_from_lua(void) {
  lua_State *L = host_state();
  int before = atomic_load(&inits);
  const luagent_worker_init wi = {worker_init, "other_mod"};
  CHECK(run(L, "MOD = 'other_mod' return 1", ""));
  lua_getglobal(L, "require");
  lua_pushstring(L, "luagent.core");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "set_worker_init");
  lua_pushlightuserdata(L, (void *)&wi);
  CHECK(lua_pcall(L, 1, 0, 0) == LUA_OK);
  lua_settop(L, 0);
  CHECK(run(L, worker_chunk, "completed true: from the host's worker init"));
  CHECK(atomic_load(&inits) > before);
  CHECK(run(L, "local ok, e = pcall(require('luagent.core').set_worker_init, 42) "
               "return tostring(e):match('light userdata') or tostring(e)",
            "light userdata"));
  CHECK(run(L, "require('luagent.core').set_worker_init(nil) return 1", ""));
  before = atomic_load(&inits);
  CHECK(run(L, "local luagent = require 'luagent' "
               "local app = luagent.load_string([[ local luagent = require 'luagent' "
               "  return luagent.config{ background_tasks = { enabled = true }, "
               "    tools = { luagent.tool{ name = 't', handler = function() return 1 end } } } ]]) "
               "local st = app:wait({ app:enqueue_tool('t', {}).task_id }).tasks[1].status "
               "app:close() return st",
            "completed"));
  CHECK(atomic_load(&inits) == before);
  lua_close(L);
  done("luagent.core.set_worker_init takes a luagent_worker_init pointer; nil removes it");
}

static char log_level[16], log_msg[64];
static int log_calls, log_on_main;

static void log_sink(const char *level, const char *message, void *ud) {
  log_calls++;
  log_on_main = pthread_equal(pthread_self(), main_thread) && ud == &log_calls;
  snprintf(log_level, sizeof log_level, "%s", level);
  snprintf(log_msg, sizeof log_msg, "%s", message);
}

static void test_log_sink(void) {
  lua_State *L = host_state();
  luagent_set_log(log_sink, &log_calls);
  CHECK(run(L, "require('luagent.log').emit('warn', 'hello sink') return 1", ""));
  CHECK(log_calls == 1 && log_on_main);
  CHECK(strcmp(log_level, "warn") == 0 && strcmp(log_msg, "hello sink") == 0);
  /* a Lua sink set with luagent.set_log hears it as well */
  CHECK(run(L, "local got; require('luagent').set_log(function(l, m) got = l .. ':' .. m end) "
               "require('luagent.log').emit('error', 'both') return got",
            "error:both"));
  CHECK(log_calls == 2 && strcmp(log_msg, "both") == 0);
  luagent_set_log(NULL, NULL);
  CHECK(run(L, "require('luagent.log').emit('error', 'nobody') return 1", ""));
  CHECK(log_calls == 2);
  lua_close(L);
  done("luagent_set_log receives luagent's messages on the host thread");
}

int main(void) {
  main_thread = pthread_self();
  test_embedded_modules();
  test_preload_wins();
  test_worker_init();
  test_worker_init_from_lua();
  test_log_sink();
  printf("%d tests, %d failed\n", test_no, failures);
  return failures != 0;
}
