/* The cancel hook of foreground runs. A foreground run executes
 * in the host's Lua state, where a handler could swallow the cancel error in
 * a pcall and loop; so, like a worker, the run's coroutine gets a C count
 * hook for the run's duration. It notices a timeout or an interrupt even in
 * code that never calls ctx, and from then on fires at every instruction and
 * raises the cancel sentinel in any code that is not luagent's own, so the
 * runner can still wind down. An explicit cancel strikes once luagent raised
 * it (arm), so a host callback that called app:cancel still returns.
 *
 * A hook the host had set on the coroutine is kept: it is chained (called
 * from ours for its events, at its count) and put back when the run ends.
 * luagent's own code is told apart by its chunks (the sources of the
 * functions of the loaded luagent modules), which works however the modules
 * were loaded. Host work pumped while the run waits is not the run's code:
 * it runs suspended (fg_suspend). One state has at most one watch that
 * strikes: the newest; an older one is suspended while a newer one runs. */
#include "bind.h"
#include "interrupt.h"

#include <stdint.h>
#include <string.h>

#define FG_MT "luagent.fg_watch"
#define WATCH_COUNT 1000
#define MAX_SOURCES 128
#define MAX_THREADS 64

enum { WHY_NONE, WHY_CANCEL, WHY_TIMEOUT, WHY_INTERRUPT };
static const char *const why_names[] = {NULL, "cancel", "timeout", "interrupt"};

typedef struct fg_watch {
  lua_State *co;         /* the run's coroutine */
  lua_Hook saved_hook;   /* what co had, put back at close */
  int saved_mask, saved_count;
  lua_Hook host_hook;    /* the host's own hook, chained (NULL: none) */
  int host_mask, host_count, acc;
  int64_t deadline_ms;   /* mono ms, 0 = none */
  int interrupt_base;    /* interrupts counted at the start; -1: not watched */
  int why, armed, over, suspended;
  int jit_was_on;        /* LuaJIT: this watch turned the compiler off */
  const char *sources[MAX_SOURCES]; /* luagent's chunks */
  int nsources, have_sources;      /* collected when the watch first strikes */
  lua_State *tight[MAX_THREADS]; /* threads firing at every instruction */
  int ntight;
  int threads_ref;       /* registry ref: a table anchoring those threads */
  struct fg_watch *prev; /* the watch this one stacks on */
} fg_watch;

/* The newest watch of a host state (the one that strikes). */
static char top_key;

static fg_watch *top_watch(lua_State *L) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &top_key);
  fg_watch *w = lua_touserdata(L, -1);
  lua_pop(L, 1);
  return w;
}

static void set_top(lua_State *L, fg_watch *w) {
  if (w)
    lua_pushlightuserdata(L, w);
  else
    lua_pushnil(L);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &top_key);
}

static void fg_hook(lua_State *L, lua_Debug *ar);

static int hook_mask(const fg_watch *w) { return LUA_MASKCOUNT | (w->host_mask & ~LUA_MASKCOUNT); }

/* The host's hook gets its own events at its own count. */
static void chain(fg_watch *w, lua_State *L, lua_Debug *ar) {
  if (!w->host_hook) return;
  if (ar->event == LUA_HOOKCOUNT) {
    if (!(w->host_mask & LUA_MASKCOUNT) || w->host_count <= 0) return;
    w->acc += lua_gethookcount(L);
    if (w->acc < w->host_count) return;
    w->acc = 0;
  } else if (!(w->host_mask & (1 << ar->event))) {
    return;
  }
  w->host_hook(L, ar);
}

static void collect_sources(lua_State *L, fg_watch *w);

/* luagent's own code, or C: where the hook does not strike. */
static int own_code(fg_watch *w, lua_State *L, lua_Debug *ar) {
  if (!w->have_sources) { /* most runs never strike: no need to look before */
    collect_sources(L, w);
    w->have_sources = 1;
  }
  if (!lua_getinfo(L, "S", ar)) return 1;
  if (ar->what && ar->what[0] == 'C') return 1;
  for (int i = 0; i < w->nsources; i++)
    if (w->sources[i] == ar->source) return 1;
  return 0;
}

/* From now on L (and the run's coroutine, which may catch the error coming
 * out of a resume) fire at every instruction: a pcall that caught the
 * sentinel gets it again at its next instruction. */
static void tighten(fg_watch *w, lua_State *L) {
  lua_State *ts[2] = {L, w->co};
  for (int k = 0; k < 2; k++) {
    lua_State *t = ts[k];
    int seen = 0;
    for (int i = 0; i < w->ntight && !seen; i++) seen = w->tight[i] == t;
    if (seen || w->ntight == MAX_THREADS) continue;
    if (t != w->co) { /* anchored until close, so its hook can be taken off */
      lua_rawgeti(L, LUA_REGISTRYINDEX, w->threads_ref);
      lua_pushthread(t);
      lua_xmove(t, L, 1);
      lua_rawseti(L, -2, (lua_Integer)luaL_len(L, -2) + 1);
      lua_pop(L, 1);
    }
    w->tight[w->ntight++] = t;
    lua_sethook(t, fg_hook, hook_mask(w), 1);
  }
}

static void fg_hook(lua_State *L, lua_Debug *ar) {
  fg_watch *w = top_watch(L);
  if (!w) {
    lua_sethook(L, NULL, 0, 0); /* a coroutine that outlived its run */
    return;
  }
  if (ar->event != LUA_HOOKCOUNT) {
    chain(w, L, ar);
    return;
  }
  if (!w->over && w->suspended == 0) {
    if (!w->why && w->deadline_ms && lg_mono_ms() >= w->deadline_ms) w->why = WHY_TIMEOUT;
    if (!w->why && w->interrupt_base >= 0 && lg_interrupts() > w->interrupt_base)
      w->why = WHY_INTERRUPT;
    if (w->why && (w->why != WHY_CANCEL || w->armed)) {
      tighten(w, L);
      if (!own_code(w, L, ar)) {
        chain(w, L, ar);
        lg_raise_cancel(L);
      }
    }
  }
  chain(w, L, ar);
}

/* The chunks of the loaded luagent modules (package.loaded["luagent..."]):
 * the source of each function they hold. */
static void collect_sources(lua_State *L, fg_watch *w) {
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    const char *name = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
    if (name && strncmp(name, "luagent", 7) == 0 && (name[7] == '\0' || name[7] == '.') &&
        lua_istable(L, -1)) {
      lua_pushnil(L);
      while (lua_next(L, -2)) {
        if (lua_type(L, -1) == LUA_TFUNCTION && !lua_iscfunction(L, -1) &&
            w->nsources < MAX_SOURCES) {
          lua_Debug d;
          lua_pushvalue(L, -1);
          lua_getinfo(L, ">S", &d);
          int seen = 0;
          for (int i = 0; i < w->nsources && !seen; i++) seen = w->sources[i] == d.source;
          if (!seen) w->sources[w->nsources++] = d.source;
        }
        lua_pop(L, 1);
      }
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

static fg_watch *check_watch(lua_State *L) { return luaL_checkudata(L, 1, FG_MT); }

/* fg_watch(deadline_s, interrupt_base) -> watch: deadline_s on core.now()'s
 * clock (nil: none); interrupt_base: core.interrupted() at the start, or nil. */
static int l_fg_watch(lua_State *L) {
  if (lg_current_worker(L)) return luaL_error(L, "luagent: fg_watch is for the host state");
  double deadline = luaL_optnumber(L, 1, 0);
  int base = (int)luaL_optinteger(L, 2, -1);
  fg_watch *w = lua_newuserdatauv(L, sizeof *w, 0);
  memset(w, 0, sizeof *w);
  w->threads_ref = LUA_NOREF;
  luaL_setmetatable(L, FG_MT);
  lua_newtable(L);
  w->threads_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  w->co = L;
  w->deadline_ms = deadline > 0 ? (int64_t)(deadline * 1000.0) : 0;
  if (deadline > 0 && w->deadline_ms == 0) w->deadline_ms = 1;
  w->interrupt_base = base;
  w->saved_hook = lua_gethook(L);
  w->saved_mask = lua_gethookmask(L);
  w->saved_count = lua_gethookcount(L);
  fg_watch *prev = top_watch(L);
  if (w->saved_hook == fg_hook && prev) { /* a run started by host work of another run */
    w->host_hook = prev->host_hook;
    w->host_mask = prev->host_mask;
    w->host_count = prev->host_count;
  } else if (w->saved_hook != fg_hook) {
    w->host_hook = w->saved_hook;
    w->host_mask = w->saved_mask;
    w->host_count = w->saved_count;
  }
  w->prev = prev;
  set_top(L, w);
  int count = WATCH_COUNT;
  if ((w->host_mask & LUA_MASKCOUNT) && w->host_count > 0 && w->host_count < count)
    count = w->host_count;
  w->jit_was_on = lg_jit_off(L); /* the hook must reach the run's loops */
  lua_sethook(L, fg_hook, hook_mask(w), count);
  return 1;
}

/* Ends the watch: hooks are put back. Returns why the run had to stop
 * ("timeout", "interrupt", "cancel") or nil. */
static int l_fg_close(lua_State *L) {
  fg_watch *w = check_watch(L);
  if (!w->over) {
    w->over = 1;
    for (int i = 0; i < w->ntight; i++)
      if (w->tight[i] != w->co) lua_sethook(w->tight[i], NULL, 0, 0);
    lua_sethook(w->co, w->saved_hook, w->saved_mask, w->saved_count);
    /* unstack (normally the newest) */
    if (top_watch(L) == w) {
      set_top(L, w->prev);
    } else {
      for (fg_watch *x = top_watch(L); x; x = x->prev)
        if (x->prev == w) x->prev = w->prev;
    }
    luaL_unref(L, LUA_REGISTRYINDEX, w->threads_ref);
    w->threads_ref = LUA_NOREF;
    if (w->jit_was_on) lg_jit_on(L);
  }
  if (!why_names[w->why]) return 0;
  lua_pushstring(L, why_names[w->why]);
  return 1;
}

/* cancel(): the run was cancelled (it strikes once armed). */
static int l_fg_cancel(lua_State *L) {
  fg_watch *w = check_watch(L);
  if (!w->why) w->why = WHY_CANCEL;
  return 0;
}

/* arm(): luagent raised the cancel error; from now on it strikes. */
static int l_fg_arm(lua_State *L) {
  fg_watch *w = check_watch(L);
  if (w->over) return 0;
  if (!w->why) w->why = WHY_CANCEL;
  w->armed = 1;
  tighten(w, L);
  return 0;
}

/* why() -> "timeout" | "interrupt" | "cancel" | nil */
static int l_fg_why(lua_State *L) {
  fg_watch *w = check_watch(L);
  if (!why_names[w->why]) return 0;
  lua_pushstring(L, why_names[w->why]);
  return 1;
}

/* fg_suspend(delta): host work of other tasks pumped while the newest run
 * waits is not that run's code; the watch does not strike in it. */
static int l_fg_suspend(lua_State *L) {
  fg_watch *w = top_watch(L);
  if (w) w->suspended += (int)luaL_checkinteger(L, 1);
  return 0;
}

static const luaL_Reg watch_methods[] = {
    {"close", l_fg_close}, {"cancel", l_fg_cancel}, {"arm", l_fg_arm}, {"why", l_fg_why},
    {NULL, NULL}};

const luaL_Reg lg_bind_fg_funcs[] = {
    {"fg_watch", l_fg_watch}, {"fg_suspend", l_fg_suspend}, {NULL, NULL}};

void lg_bind_fg_open(lua_State *L) { lg_open_handle_mt(L, FG_MT, watch_methods, l_fg_close); }
