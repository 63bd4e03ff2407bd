/* Worker threads: each creates, uses and closes its own
 * lua_State, boots it by running the app's startup script (serialised by a
 * process mutex), then runs tasks until it has been idle too long or the app
 * closes. Cancellation and timeouts reach Lua through a count hook that the
 * worker installs itself; it raises the cancel sentinel and then fires on
 * every instruction, so a user pcall cannot swallow it. */
#include "http.h"
#include "lua_compat.h"
#include "luagent.h"
#include "worker.h"
#include "worker_link.h"

#include <lualib.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HOOK_COUNT 1000

/* a worker's lua_State is only ever touched by its own thread. TSan
 * cannot see inside the uninstrumented liblua, so debug builds (the
 * sanitizer targets) check it wherever luagent's C meets a worker state. */
#ifdef LUAGENT_DEBUG
#include <assert.h>
#define ASSERT_OWNER(w) assert(pthread_equal((w)->owner, pthread_self()))
#else
#define ASSERT_OWNER(w) ((void)0)
#endif

static pthread_mutex_t boot_mu = PTHREAD_MUTEX_INITIALIZER;
static char worker_key, cancel_key, interrupt_key, user_hook_key;

static luagent_worker_init_fn init_fn;
static void *init_ud;

void luagent_set_worker_init(luagent_worker_init_fn fn, void *ud) {
  pthread_mutex_lock(&boot_mu);
  init_fn = fn;
  init_ud = ud;
  pthread_mutex_unlock(&boot_mu);
}

/* ------------------------------------------------------------ sentinel */

void lg_push_cancel(lua_State *L) { lua_pushlightuserdata(L, &cancel_key); }

int lg_is_cancel(lua_State *L, int idx) {
  return lua_type(L, idx) == LUA_TLIGHTUSERDATA && lua_touserdata(L, idx) == &cancel_key;
}

int lg_raise_cancel(lua_State *L) {
  lg_push_cancel(L);
  return lua_error(L);
}

void lg_push_interrupt(lua_State *L) { lua_pushlightuserdata(L, &interrupt_key); }

int lg_is_interrupt(lua_State *L, int idx) {
  return lua_type(L, idx) == LUA_TLIGHTUSERDATA && lua_touserdata(L, idx) == &interrupt_key;
}

int lg_raise_interrupt(lua_State *L) {
  /* raised once, as by the hook: the step closes with it, or the count hook
   * would raise it again in a message handler the error passes through,
   * where an error replaces it ("error in error handling") */
  lg_worker *w = lg_current_worker(L);
  if (w && w->current) lg_task_step_open(w->current, 0);
  lg_push_interrupt(L);
  return lua_error(L);
}

lg_worker *lg_current_worker(lua_State *L) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &worker_key);
  lg_worker *w = lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (w) ASSERT_OWNER(w);
  return w;
}

int lg_worker_retired(lua_State *L) {
  lg_worker *w = lg_current_worker(L);
  return w && atomic_load(&w->retired);
}

/* ---------------------------------------------------------------- hook */

static const char *const hook_names[] = {"call", "return", "line", "count", "tail call"};

static void call_user_hook(lua_State *L, lua_Debug *ar) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &user_hook_key);
  if (!lua_isfunction(L, -1)) {
    lua_pop(L, 1);
    return;
  }
  lua_pushstring(L, hook_names[ar->event]);
  if (ar->event == LUA_HOOKLINE)
    lua_pushinteger(L, ar->currentline);
  else
    lua_pushnil(L);
  lua_call(L, 2, 0);
}

/* The worker of a hooked state, read at every count hook: from the state's
 * extra space (5.3 on; coroutines inherit it), else from the registry. */
static lg_worker *hooked_worker(lua_State *L) {
#if LUA_VERSION_NUM >= 503
  return *(lg_worker **)lua_getextraspace(L);
#else
  lua_rawgetp(L, LUA_REGISTRYINDEX, &worker_key);
  lg_worker *w = lua_touserdata(L, -1);
  lua_pop(L, 1);
  return w;
#endif
}

static void hook(lua_State *L, lua_Debug *ar) {
  lg_worker *w = hooked_worker(L);
  if (!w) return;
  ASSERT_OWNER(w);
  if (ar->event == LUA_HOOKCOUNT) {
    lg_task *t = w->current;
    if (t && lg_task_should_stop(t)) {
      /* From now on fire at every instruction: a pcall that catches the
       * sentinel gets it again at its next instruction. Hooks belong to
       * one Lua thread: when this fires in a coroutine, the main thread
       * (which may catch the error coming out of resume) must fire at
       * every instruction too. Coroutines made from now on inherit it. */
      int mask = LUA_MASKCOUNT | (w->user_mask & ~LUA_MASKCOUNT);
      lua_sethook(L, hook, mask, 1);
      lua_State *main_L = w->lua;
      if (main_L && main_L != L) lua_sethook(main_L, hook, mask, 1);
      w->hook_fired = 1;
      lg_raise_cancel(L);
    }
    if (t && lg_task_interrupted(t)) {
      /* a message asked to interrupt the open step: raised once (the step
       * is closed now), so unlike a cancel a pcall may keep it going; the
       * message then waits for the next model call (README, "Steering") */
      lg_task_step_open(t, 0);
      lg_raise_interrupt(L);
    }
    if (w->user_count > 0) {
      w->user_acc += w->hook_fired ? 1 : w->hook_count;
      if (w->user_acc >= w->user_count) {
        w->user_acc = 0;
        call_user_hook(L, ar);
      }
    }
  } else if (w->user_mask & (1 << ar->event)) {
    call_user_hook(L, ar);
  }
}

static void arm_hook(lua_State *L, lg_worker *w) {
  int count = HOOK_COUNT;
  if (w->user_count > 0 && w->user_count < count) count = w->user_count;
  w->hook_count = count;
  w->hook_fired = 0;
  lua_sethook(L, hook, LUA_MASKCOUNT | (w->user_mask & ~LUA_MASKCOUNT), count);
}

/* debug.sethook in a worker chains luagent's hook instead of replacing it. */
static int l_sethook(lua_State *L) {
  lg_worker *w = lg_current_worker(L);
  int arg = lua_isthread(L, 1) ? 1 : 0;
  lua_State *co = arg ? lua_tothread(L, 1) : L;
  int mask = 0, count = 0;
  if (lua_isnoneornil(L, arg + 1)) {
    lua_pushnil(L);
  } else {
    luaL_checktype(L, arg + 1, LUA_TFUNCTION);
    const char *smask = luaL_optstring(L, arg + 2, "");
    count = (int)luaL_optinteger(L, arg + 3, 0);
    if (strchr(smask, 'c')) mask |= LUA_MASKCALL;
    if (strchr(smask, 'r')) mask |= LUA_MASKRET;
    if (strchr(smask, 'l')) mask |= LUA_MASKLINE;
    if (count > 0) mask |= LUA_MASKCOUNT;
    lua_pushvalue(L, arg + 1);
  }
  lua_rawsetp(L, LUA_REGISTRYINDEX, &user_hook_key);
  w->user_mask = mask;
  w->user_count = count;
  w->user_acc = 0;
  arm_hook(co, w);
  return 0;
}

static int l_gethook(lua_State *L) {
  lg_worker *w = lg_current_worker(L);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &user_hook_key);
  if (lua_isnil(L, -1)) return 1;
  char smask[4];
  int i = 0;
  if (w->user_mask & LUA_MASKCALL) smask[i++] = 'c';
  if (w->user_mask & LUA_MASKRET) smask[i++] = 'r';
  if (w->user_mask & LUA_MASKLINE) smask[i++] = 'l';
  smask[i] = '\0';
  lua_pushstring(L, smask);
  lua_pushinteger(L, w->user_count);
  return 3;
}

/* --------------------------------------------------------------- boot */

/* Message handler: keep the cancel sentinel and error tables as they are,
 * add a traceback to anything else. It is C, so the hook cannot fire in it. */
static int msgh(lua_State *L) {
  if (lg_is_cancel(L, 1) || lg_is_interrupt(L, 1) || lua_istable(L, 1)) return 1;
  const char *msg = lua_tostring(L, 1);
  if (!msg) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) return 1;
    msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  luaL_traceback(L, L, msg, 1);
  return 1;
}

static char *error_text(lua_State *L, int idx) {
  if (lg_is_cancel(L, idx)) return strdup("cancelled");
  if (lg_is_interrupt(L, idx)) return strdup("interrupted by a message outside a step");
  size_t n = 0;
  const char *s = NULL;
  if (lua_istable(L, idx)) {
    lua_getfield(L, idx, "message");
    s = lua_tolstring(L, -1, &n);
    char *r = s ? lg_strndup(s, n) : strdup("error");
    lua_pop(L, 1);
    return r;
  }
  s = lua_tolstring(L, idx, &n);
  return s ? lg_strndup(s, n) : strdup("error");
}

static int boot_protected(lua_State *L) {
  lg_worker *w = lua_touserdata(L, 1);
  luaL_openlibs(L);
  lg_jit_off(L);
  lua_gc(L, LUA_GCRESTART, 0);
  lua_getglobal(L, "package");
  lua_pushstring(L, w->lua_path ? w->lua_path : "");
  lua_setfield(L, -2, "path");
  lua_pushstring(L, w->lua_cpath ? w->lua_cpath : "");
  lua_setfield(L, -2, "cpath");
  lua_pop(L, 1);
  luagent_open(L); /* luagent.core, and the built-in Lua half if any */
  lua_getglobal(L, "debug");
  lua_pushcfunction(L, l_sethook);
  lua_setfield(L, -2, "sethook");
  lua_pushcfunction(L, l_gethook);
  lua_setfield(L, -2, "gethook");
  lua_pop(L, 1);
  if (init_fn) init_fn(L, init_ud);
  lua_getglobal(L, "require");
  lua_pushstring(L, "luagent.worker");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "boot");
  lua_pushstring(L, w->boot_json ? w->boot_json : "{}");
  lua_call(L, 1, 1); /* returns run_task(info_json) */
  luaL_checktype(L, -1, LUA_TFUNCTION);
  return 1;
}

static lua_State *boot_state(lg_worker *w, int *run_ref, char **err) {
  lua_State *L = luaL_newstate();
  if (!L) {
    *err = strdup("cannot create a Lua state (out of memory)");
    return NULL;
  }
  lua_gc(L, LUA_GCSTOP, 0); /* opening the libraries need not collect */
  w->lua = L; /* the main thread, for the hook (this thread only) */
#if LUA_VERSION_NUM >= 503
  *(lg_worker **)lua_getextraspace(L) = w;
#endif
  lua_pushlightuserdata(L, w);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &worker_key);
  arm_hook(L, w);
  lua_pushcfunction(L, msgh);
  lua_pushcfunction(L, boot_protected);
  lua_pushlightuserdata(L, w);
  int rc = lua_pcall(L, 1, 1, 1);
  if (rc != LUA_OK) {
    char *m = error_text(L, -1);
    size_t n = strlen(m) + 64;
    *err = malloc(n);
    if (*err) snprintf(*err, n, "worker could not load the startup script: %s", m);
    free(m);
    lua_close(L);
    w->lua = NULL;
    return NULL;
  }
  *run_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_settop(L, 0);
  /* A task's garbage is young and dies young, while the booted modules stay:
   * generational mode collects the one without re-marking the other, so no
   * task pays for a collection step it did not need. */
#if LUA_VERSION_NUM >= 504
  lua_gc(L, LUA_GCGEN, 0, 0);
#endif
  return L;
}

/* ---------------------------------------------------------------- run */

static void run_task(lg_worker *w, lua_State *L, int run_ref, lg_task *t) {
  buf_t info;
  lg_buf_init(&info);
  w->ops->task_info(w->app, t, &info);
  arm_hook(L, w);
  lua_settop(L, 0);
  lua_pushcfunction(L, msgh);
  lua_rawgeti(L, LUA_REGISTRYINDEX, run_ref);
  lua_pushlstring(L, info.p ? info.p : "{}", info.len);
  lg_buf_free(&info);
  int rc = lua_pcall(L, 1, 5, 1);
  lg_outcome o = {0};
  o.agent_status = -1;
  char *msg = NULL;
  if (rc == LUA_OK) {
    o.ok = 1;
    o.result_json = lua_tostring(L, 2);
    o.usage_json = lua_tostring(L, 3);
    const char *st = lua_tostring(L, 4);
    o.run_status = st;
    if (st && strcmp(st, "failed") == 0) o.agent_status = TS_FAILED;
    if (lua_istable(L, 5)) {
      lua_getfield(L, 5, "kind");
      lua_getfield(L, 5, "message");
      lua_getfield(L, 5, "status");
      o.error_kind = lua_tostring(L, -3);
      o.error_message = lua_tostring(L, -2);
      o.error_status = lua_isinteger(L, -1) ? (int)lua_tointeger(L, -1) : 0;
    }
  } else if (lg_is_cancel(L, -1)) {
    o.raised_stop = 1;
  } else {
    msg = rc == LUA_ERRMEM ? strdup("out of memory") : error_text(L, -1);
    o.error_kind = "runtime";
    if (lua_istable(L, -1)) {
      int e = lua_gettop(L);
      lua_getfield(L, e, "kind");
      if (lua_isstring(L, -1)) o.error_kind = lua_tostring(L, -1);
      lua_getfield(L, e, "status");
      if (lua_isinteger(L, -1)) o.error_status = (int)lua_tointeger(L, -1);
    }
    o.error_message = msg;
  }
  w->current = NULL;
  w->ops->done(w, t, &o); /* copies what it keeps */
  free(msg);
  lua_settop(L, 0);
  arm_hook(L, w);
}

static void *worker_main(void *arg) {
  lg_worker *w = arg;
  pthread_setname_np(pthread_self(), "lg-worker"); /* what top -H and perf show */
  w->owner = pthread_self();
  lua_State *L = NULL;
  int run_ref = LUA_NOREF;
  char *boot_err = NULL;
  lg_task *t = w->ops->next(w);
  if (t) {
    w->current = t; /* the first task's deadline also bounds the boot */
    pthread_mutex_lock(&boot_mu);
    L = boot_state(w, &run_ref, &boot_err);
    pthread_mutex_unlock(&boot_mu);
    w->lua = L;
  }
  while (t) {
    if (!L) {
      /* fail the task with the script's message, then leave so the
       * next task gets a fresh attempt at booting. */
      lg_outcome o = {0};
      o.agent_status = -1;
      o.error_kind = "worker";
      o.error_message = boot_err ? boot_err : "worker could not start";
      o.raised_stop = lg_task_should_stop(t);
      w->current = NULL;
      w->ops->done(w, t, &o);
      break;
    }
    w->current = t;
    /* retired while it booted: the task is finished without it */
    if (!atomic_load(&w->retired)) run_task(w, L, run_ref, t);
    w->current = NULL;
    t = w->ops->next(w);
  }
  free(boot_err);
  if (L) lua_close(L); /* finalizers run here, on the owning thread */
  lg_http_worker_cleanup(w);
  w->ops->exit(w);
  return NULL;
}

lg_worker *lg_worker_start(const lg_worker_link *link, lg_task *first) {
  lg_worker *w = calloc(1, sizeof *w);
  if (!w) return NULL;
  w->app = link->app;
  w->ops = link->ops;
  w->app_mu = link->app_mu;
  w->hq_mu = link->hq_mu;
  w->lua_path = link->lua_path;
  w->lua_cpath = link->lua_cpath;
  w->boot_json = link->boot_json;
  pthread_condattr_t at;
  pthread_condattr_init(&at);
  pthread_condattr_setclock(&at, CLOCK_MONOTONIC);
  pthread_cond_init(&w->cv, &at);
  pthread_cond_init(&w->hcv, &at);
  pthread_condattr_destroy(&at);
  w->task = first;
  /* Workers never take the host's signals. */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  pthread_attr_t pa;
  pthread_attr_init(&pa);
  pthread_attr_setdetachstate(&pa, PTHREAD_CREATE_DETACHED);
  int rc = pthread_create(&w->thread, &pa, worker_main, w);
  pthread_attr_destroy(&pa);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc != 0) {
    pthread_cond_destroy(&w->cv);
    pthread_cond_destroy(&w->hcv);
    free(w);
    return NULL;
  }
  return w;
}

void lg_worker_wake(lg_worker *w) {
  atomic_store(&w->nudged, 1);
  pthread_cond_signal(&w->cv);
  /* a worker waiting for the host's reply waits under the host queue's lock */
  pthread_mutex_lock(w->hq_mu);
  pthread_cond_signal(&w->hcv);
  pthread_mutex_unlock(w->hq_mu);
  if (atomic_load(&w->in_http)) lg_http_wakeup(w->multi);
}

/* The worker's multi handle, made on first use. Published under the app
 * mutex because cancellers read it there (lg_worker_wake). */
void *lg_http_worker_multi(lg_worker *w) {
  if (!w->multi) {
    void *m = lg_http_multi_new();
    pthread_mutex_lock(w->app_mu);
    w->multi = m;
    pthread_mutex_unlock(w->app_mu);
  }
  return w->multi;
}

void lg_http_worker_cleanup(lg_worker *w) {
  pthread_mutex_lock(w->app_mu);
  void *m = w->multi;
  w->multi = NULL;
  pthread_mutex_unlock(w->app_mu);
  lg_http_multi_free(m);
}

lg_task *lg_worker_current(lg_worker *w) { return w ? w->current : NULL; }

lg_app *lg_worker_app(lg_worker *w) { return w->app; }

/* Published before the stop flag is checked, so a canceller either sees it
 * and wakes the transfer or the worker sees the flag. */
void lg_worker_set_in_http(lg_worker *w, int on) { atomic_store(&w->in_http, on); }
