/* A C host with its own fixed 60 Hz frame loop that embeds Lua 5.4 and
 * luagent, as a game would (README, "Embedding in a game or app"). No Lua
 * interpreter binary is involved.
 *
 * It loads a startup script (examples/host/agents.lua), enqueues N background
 * agent runs, and then, once a frame: moves the player, calls app:poll with a
 * budget (the host tool player_position is answered there, from the C game
 * state, on this thread), collects its Lua heap in the frame's spare time,
 * and shows the task counts when they change. When every run has finished it
 * closes the app without waiting, lets the workers wind down for at most 30
 * more frames, and exits.
 *
 * Two things keep the frame from stalling (README, "A frame that never
 * stalls"): worker threads are batch work for the kernel (SCHED_BATCH, set
 * in worker_init), so a worker woken by a host-tool answer never preempts
 * this thread; and the host state's automatic collector is off, a few
 * incremental steps run after each frame's work instead, so no poll pays
 * for a collection step over the whole heap.
 *
 * Two builds of the same file:
 *   static (libluagent.a, the Lua half built in; no package.path):
 *     cc host.c $(pkg-config --cflags --libs luagent)
 *   dynamic (require "luagent" loads luagent/core.so and the Lua files
 *   through package.path/cpath, LUA_PATH/LUA_CPATH):
 *     cc -DHOST_REQUIRE host.c $(pkg-config --cflags luagent) $(pkg-config --libs lua5.4)
 *
 *   host [--runs N] [--concurrency N] [--timeout-s S] [--budget-ms MS] [--gc-ms MS]
 *        [--quiet] [config.lua]
 *
 * The last lines it prints are a summary the specs read (key=value). Exit
 * status 0 when every run completed and every host-tool call was answered
 * on the main thread. */
#define _GNU_SOURCE
#include "luagent.h"

#include <lauxlib.h>
#include <lualib.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define FRAME_NS (1000000000L / 60)
#define POLL_BUDGET_MS 2.0 /* default; --budget-ms sets it */
#define GC_BUDGET_MS 1.0   /* spare time per frame for the collector; --gc-ms */

/* ------------------------------------------------------- game state */

static struct {
  pthread_t main_thread;
  long main_tid;
  long frame;
  double player_x, player_y;
  int host_calls, host_calls_on_main;
  long other_tid; /* a thread other than main that answered, if any */
  int finished, completed;
} game;

static atomic_int worker_inits, batch_workers;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double thread_cpu_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long thread_id(void) { return (long)syscall(SYS_gettid); }

/* This thread's context switches so far: voluntary (it slept in the
 * kernel: a lock, a wait) and involuntary (another thread took its core). */
static void thread_switches(long *vol, long *invol) {
  struct rusage ru;
  getrusage(RUSAGE_THREAD, &ru);
  *vol = ru.ru_nvcsw;
  *invol = ru.ru_nivcsw;
}

/* ------------------------------------------------ C called by luagent */

/* Every worker state runs this on its own thread before the startup
 * script: a real host would add its own C modules here. This one also
 * marks the worker thread as batch work (Linux): the kernel then never
 * lets it preempt a running thread when it wakes (a host-tool answer wakes
 * one), so the frame loop keeps its core until it sleeps. */
static void worker_init(lua_State *L, void *ud) {
  (void)L;
  (void)ud;
  atomic_fetch_add(&worker_inits, 1);
#ifdef SCHED_BATCH
  struct sched_param sp = {0};
  (void)sched_setscheduler(0, SCHED_BATCH, &sp); /* not fatal: frames may just stall more */
  if (sched_getscheduler(0) == SCHED_BATCH) atomic_fetch_add(&batch_workers, 1);
#endif
}

#ifndef HOST_REQUIRE
static void log_sink(const char *level, const char *message, void *ud) {
  (void)ud;
  fprintf(stderr, "[luagent %s] %s\n", level, message);
}
#else
static int lua_log_sink(lua_State *L) {
  fprintf(stderr, "[luagent %s] %s\n", luaL_optstring(L, 1, "?"), luaL_optstring(L, 2, ""));
  return 0;
}
#endif

/* The host tool player_position(args, info): answered from the C game
 * state. luagent runs it inside app:poll, so on the main thread. */
static int player_position(lua_State *L) {
  game.host_calls++;
  if (pthread_equal(pthread_self(), game.main_thread))
    game.host_calls_on_main++;
  else
    game.other_tid = thread_id();
  lua_createtable(L, 0, 3);
  lua_pushnumber(L, game.player_x);
  lua_setfield(L, -2, "x");
  lua_pushnumber(L, game.player_y);
  lua_setfield(L, -2, "y");
  lua_pushinteger(L, game.frame);
  lua_setfield(L, -2, "frame");
  return 1;
}

/* app:on("task_finished", fn): fn(record) */
static int on_finished(lua_State *L) {
  game.finished++;
  lua_getfield(L, 1, "status");
  const char *st = lua_tostring(L, -1);
  if (st && strcmp(st, "completed") == 0) game.completed++;
  return 0;
}

/* ------------------------------------------------------ calling Lua */

static int traceback(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (!msg) msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  luaL_traceback(L, L, msg, 1);
  return 1;
}

/* Calls the function below nargs arguments under a traceback handler; on
 * an error prints it and exits (a game would show it instead). */
static void call(lua_State *L, int nargs, int nres, const char *what) {
  int base = lua_gettop(L) - nargs;
  lua_pushcfunction(L, traceback);
  lua_insert(L, base);
  if (lua_pcall(L, nargs, nres, base) != LUA_OK) {
    fprintf(stderr, "host: %s failed: %s\n", what, lua_tostring(L, -1));
    exit(1);
  }
  lua_remove(L, base);
}

static int app_ref = LUA_NOREF;

/* Pushes app.<name> and app, ready for call(L, 1 + nargs, ...). */
static void method(lua_State *L, const char *name) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, app_ref);
  lua_getfield(L, -1, name);
  lua_insert(L, -2);
}

static lua_Integer int_field(lua_State *L, int idx, const char *k) {
  lua_getfield(L, idx, k);
  lua_Integer v = lua_tointeger(L, -1);
  lua_pop(L, 1);
  return v;
}

/* Sleeps to the next frame boundary (a game would render here). */
static void wait_next_frame(struct timespec *next) {
  next->tv_nsec += FRAME_NS;
  if (next->tv_nsec >= 1000000000L) {
    next->tv_nsec -= 1000000000L;
    next->tv_sec++;
  }
  clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, next, NULL);
}

/* The host state's collector, run in the frame's spare time (automatic
 * collection is off): incremental steps until `budget_ms` is spent or the
 * cycle ends; a new cycle starts once the heap has grown by half since the
 * last one ended. Returns the milliseconds spent. */
static double collect_spare(lua_State *L, double budget_ms) {
  static int in_cycle, base_kb;
  int kb = lua_gc(L, LUA_GCCOUNT, 0);
  if (!in_cycle && kb < base_kb + base_kb / 2 + 64) return 0;
  in_cycle = 1;
  double t0 = now_s(), spent = 0;
  do {
    if (lua_gc(L, LUA_GCSTEP, 0)) {
      in_cycle = 0;
      base_kb = lua_gc(L, LUA_GCCOUNT, 0);
    }
    spent = (now_s() - t0) * 1000.0;
  } while (in_cycle && spent < budget_ms);
  return spent;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* --------------------------------------------------------------- main */

int main(int argc, char **argv) {
  const char *config = "examples/host/agents.lua";
  int runs = 8, concurrency = 8, quiet = 0;
  double timeout_s = 60, budget_ms = POLL_BUDGET_MS, gc_ms = GC_BUDGET_MS;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc)
      runs = atoi(argv[++i]);
    else if (strcmp(argv[i], "--concurrency") == 0 && i + 1 < argc)
      concurrency = atoi(argv[++i]);
    else if (strcmp(argv[i], "--timeout-s") == 0 && i + 1 < argc)
      timeout_s = atof(argv[++i]);
    else if (strcmp(argv[i], "--budget-ms") == 0 && i + 1 < argc)
      budget_ms = atof(argv[++i]);
    else if (strcmp(argv[i], "--gc-ms") == 0 && i + 1 < argc)
      gc_ms = atof(argv[++i]);
    else if (strcmp(argv[i], "--quiet") == 0)
      quiet = 1;
    else if (argv[i][0] != '-')
      config = argv[i];
    else {
      fprintf(stderr, "usage: host [--runs N] [--concurrency N] [--timeout-s S] [--budget-ms MS] [--gc-ms MS] "
                      "[--quiet] [config.lua]\n");
      return 2;
    }
  }
  if (runs < 1 || concurrency < 1) {
    fprintf(stderr, "host: --runs and --concurrency must be at least 1\n");
    return 2;
  }
  game.main_thread = pthread_self();
  game.main_tid = thread_id();

  lua_State *L = luaL_newstate();
  if (!L) return 1;
  luaL_openlibs(L);
#ifndef HOST_REQUIRE
  /* libluagent.a: luagent.core and the Lua half, in this state and in
   * every worker state; then plain C setters */
  luagent_open(L);
  luagent_set_worker_init(worker_init, NULL);
  luagent_set_log(log_sink, NULL);
  lua_getglobal(L, "require");
  lua_pushstring(L, "luagent");
  call(L, 1, 1, "require \"luagent\"");
#else
  /* luagent/core.so through package.cpath: the same setters reached
   * through the module */
  static const luagent_worker_init init = {worker_init, NULL};
  lua_getglobal(L, "require");
  lua_pushstring(L, "luagent.core");
  call(L, 1, 1, "require \"luagent.core\"");
  lua_getfield(L, -1, "set_worker_init");
  lua_pushlightuserdata(L, (void *)&init);
  call(L, 1, 0, "luagent.core.set_worker_init");
  lua_pop(L, 1);
  lua_getglobal(L, "require");
  lua_pushstring(L, "luagent");
  call(L, 1, 1, "require \"luagent\"");
  lua_getfield(L, -1, "set_log");
  lua_pushcfunction(L, lua_log_sink);
  call(L, 1, 0, "luagent.set_log");
#endif
  int luagent_idx = lua_gettop(L);

  /* app = luagent.load(config, { background_tasks = {...} }) */
  lua_getfield(L, luagent_idx, "load");
  lua_pushstring(L, config);
  lua_createtable(L, 0, 1);
  lua_createtable(L, 0, 2);
  lua_pushinteger(L, concurrency);
  lua_setfield(L, -2, "global_concurrency");
  lua_pushinteger(L, concurrency);
  lua_setfield(L, -2, "per_agent_concurrency");
  lua_setfield(L, -2, "background_tasks");
  call(L, 2, 1, "luagent.load");
  app_ref = luaL_ref(L, LUA_REGISTRYINDEX);

  method(L, "host_tool");
  lua_pushstring(L, "player_position");
  lua_pushcfunction(L, player_position);
  call(L, 3, 0, "app:host_tool");
  method(L, "on");
  lua_pushstring(L, "task_finished");
  lua_pushcfunction(L, on_finished);
  call(L, 3, 0, "app:on");

  for (int i = 0; i < runs; i++) {
    method(L, "enqueue_background");
    lua_pushstring(L, "scout");
    lua_pushfstring(L, "Scout %d: where is the player?", i + 1);
    call(L, 3, 0, "app:enqueue_background");
  }

  /* from here on the heap is collected in each frame's spare time, in small
   * steps (2^10 bytes of allocation's worth of work each) */
#if LUA_VERSION_NUM >= 504
  lua_gc(L, LUA_GCINC, 0, 0, 10);
#endif
  lua_gc(L, LUA_GCSTOP, 0);
  collect_spare(L, 1e9); /* start from a collected heap */

  /* the frame loop */
  long max_frames = (long)(timeout_s * 60);
  double *poll_ms = calloc((size_t)max_frames + 1, sizeof *poll_ms);
  double *poll_cpu_ms = calloc((size_t)max_frames + 1, sizeof *poll_cpu_ms);
  double *gc_frame_ms = calloc((size_t)max_frames + 1, sizeof *gc_frame_ms);
  if (!poll_ms || !poll_cpu_ms || !gc_frame_ms) return 1;
  long frames = 0, blocked = 0, preempted = 0;
  lua_Integer last_running = -1, last_queued = -1, last_done = -1;
  struct timespec next;
  clock_gettime(CLOCK_MONOTONIC, &next);
  while (game.finished < runs && frames < max_frames) {
    game.frame = frames;
    game.player_x += 0.5; /* the game goes on */
    game.player_y = (double)(frames % 20);

    method(L, "poll");
    lua_createtable(L, 0, 1);
    lua_pushnumber(L, budget_ms);
    lua_setfield(L, -2, "budget_ms");
    long vol0, invol0, vol1, invol1;
    thread_switches(&vol0, &invol0);
    double t0 = now_s(), cpu0 = thread_cpu_s();
    call(L, 2, 0, "app:poll");
    poll_cpu_ms[frames] = (thread_cpu_s() - cpu0) * 1000.0;
    poll_ms[frames++] = (now_s() - t0) * 1000.0;
    thread_switches(&vol1, &invol1);
    blocked += vol1 > vol0;
    preempted += invol1 > invol0;

    method(L, "stats");
    call(L, 1, 1, "app:stats");
    lua_Integer running = int_field(L, -1, "running") + int_field(L, -1, "waiting");
    lua_Integer queued = int_field(L, -1, "queued");
    lua_pop(L, 1);
    if (!quiet && (running != last_running || queued != last_queued || game.finished != last_done))
      printf("frame %4ld: %lld running, %lld queued, %d finished\n", frames, (long long)running,
             (long long)queued, game.finished);
    last_running = running;
    last_queued = queued;
    last_done = game.finished;

    gc_frame_ms[frames - 1] = collect_spare(L, gc_ms); /* the frame's spare time */
    wait_next_frame(&next);
  }

  /* quit: close without waiting for anything still stuck, then lua_close
   * (which never blocks either) */
  method(L, "close");
  lua_createtable(L, 0, 1);
  lua_pushinteger(L, 0);
  lua_setfield(L, -2, "grace_s");
  double c0 = now_s();
  call(L, 2, 0, "app:close");
  double close_ms = (now_s() - c0) * 1000.0;
  /* a few more frames (half a second at most) while the workers wind down;
   * one stuck in a C call would simply be left behind, detached */
  long drain_frames = 0;
  lua_Integer draining = 0;
  for (;;) {
    method(L, "closing");
    call(L, 1, 1, "app:closing");
    draining = int_field(L, -1, "draining");
    lua_pop(L, 1);
    if (draining == 0 || drain_frames == 30) break;
    drain_frames++;
    wait_next_frame(&next);
  }
  luaL_unref(L, LUA_REGISTRYINDEX, app_ref);
  c0 = now_s();
  lua_close(L);
  double lua_close_ms = (now_s() - c0) * 1000.0;

  qsort(poll_ms, (size_t)frames, sizeof *poll_ms, cmp_double);
  double p50 = frames ? poll_ms[frames / 2] : 0;
  double p99 = frames ? poll_ms[(frames * 99) / 100] : 0;
  double worst = frames ? poll_ms[frames - 1] : 0;
  free(poll_ms);
  double cpu_total = 0;
  for (long i = 0; i < frames; i++) cpu_total += poll_cpu_ms[i];
  qsort(poll_cpu_ms, (size_t)frames, sizeof *poll_cpu_ms, cmp_double);
  double cpu_p50 = frames ? poll_cpu_ms[frames / 2] : 0;
  double cpu_p99 = frames ? poll_cpu_ms[(frames * 99) / 100] : 0;
  double cpu_worst = frames ? poll_cpu_ms[frames - 1] : 0;
  free(poll_cpu_ms);
  qsort(gc_frame_ms, (size_t)frames, sizeof *gc_frame_ms, cmp_double);
  double gc_p99 = frames ? gc_frame_ms[(frames * 99) / 100] : 0;
  double gc_worst = frames ? gc_frame_ms[frames - 1] : 0;
  free(gc_frame_ms);

  printf("runs=%d finished=%d completed=%d frames=%ld\n", runs, game.finished, game.completed, frames);
  printf("host_calls=%d main_thread_calls=%d main_tid=%ld other_tid=%ld worker_inits=%d batch_workers=%d\n",
         game.host_calls, game.host_calls_on_main, game.main_tid, game.other_tid,
         atomic_load(&worker_inits), atomic_load(&batch_workers));
  printf("poll_ms p50=%.3f p99=%.3f worst=%.3f close_ms=%.3f lua_close_ms=%.3f\n", p50, p99, worst,
         close_ms, lua_close_ms);
  printf("poll_cpu_ms cpu_p50=%.3f cpu_p99=%.3f cpu_worst=%.3f cpu_total=%.3f\n", cpu_p50, cpu_p99, cpu_worst,
         cpu_total);
  printf("gc_ms_p99=%.3f gc_ms_worst=%.3f polls_blocked=%ld polls_preempted=%ld\n", gc_p99, gc_worst,
         blocked, preempted);
  printf("drain_frames=%ld left_draining=%lld\n", drain_frames, (long long)draining);
  int ok = game.completed == runs && game.host_calls > 0 && game.host_calls == game.host_calls_on_main;
  return ok ? 0 : 1;
}
