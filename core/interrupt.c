/* Ctrl-C for command-line hosts such as bin/luagent (README "The luagent
 * command"). Lua's own SIGINT handler raises "interrupted!" at the next Lua
 * instruction, wherever that is (a library's pcall may swallow it), and not
 * at all while the host blocks in C (a wait, an HTTP poll). This handler
 * only counts the signal and posts a semaphore (both async-signal-safe); a
 * watcher thread then wakes the app's host, whose foreground runs read the
 * count in their cancel check (app.lua) and wind down as cancelled. A
 * second SIGINT ends the process at once with status 130. */
#include "interrupt.h"

#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static atomic_int interrupts;
static sem_t posted;
static pthread_mutex_t watched_mu = PTHREAD_MUTEX_INITIALIZER;
static lg_app *watched; /* retained; the app a SIGINT wakes */
static int installed;

static void on_sigint(int sig) {
  (void)sig;
  if (atomic_fetch_add(&interrupts, 1) >= 1) _exit(130);
  sem_post(&posted);
}

static void *watch_main(void *arg) {
  (void)arg;
  pthread_setname_np(pthread_self(), "lg-interrupt"); /* what top -H and perf show */
  for (;;) {
    if (sem_wait(&posted) != 0) continue; /* EINTR */
    pthread_mutex_lock(&watched_mu);
    lg_app *a = watched;
    if (a) lg_app_retain(a);
    pthread_mutex_unlock(&watched_mu);
    if (a) {
      lg_wake(a);
      lg_app_release(a);
    }
  }
  return NULL;
}

int lg_interrupt_catch(lg_app *a, char *err, size_t errlen) {
  pthread_mutex_lock(&watched_mu);
  int rc = 0;
  if (!installed) {
    pthread_t th;
    pthread_attr_t at;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    /* no SA_RESTART: a blocking read of stdin (luagent chat) returns */
    if (sem_init(&posted, 0, 0) != 0 || pthread_attr_init(&at) != 0) {
      snprintf(err, errlen, "cannot set up the interrupt watcher");
      rc = -1;
    } else {
      pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
      /* the watcher must not take the signal itself */
      sigset_t all, old;
      sigfillset(&all);
      pthread_sigmask(SIG_BLOCK, &all, &old);
      int started = pthread_create(&th, &at, watch_main, NULL) == 0;
      pthread_sigmask(SIG_SETMASK, &old, NULL);
      pthread_attr_destroy(&at);
      if (!started || sigaction(SIGINT, &sa, NULL) != 0) {
        snprintf(err, errlen, "cannot install the SIGINT handler");
        rc = -1;
      } else {
        installed = 1;
      }
    }
  }
  if (rc == 0 && watched != a) {
    lg_app_retain(a);
    if (watched) lg_app_release(watched);
    watched = a;
  }
  pthread_mutex_unlock(&watched_mu);
  return rc;
}

int lg_interrupts(void) { return atomic_load(&interrupts); }
