/* Idempotent enqueues (idem.c). Under app->mu. */
#ifndef LUAGENT_IDEM_H
#define LUAGENT_IDEM_H

#include "dispatcher.h"

/* The task enqueued with key in scope (a parent task id, NULL: the app). */
lg_task *lg_idem_find(lg_app *a, const char *scope, const char *key);
/* Whether t was made by the same request as r. */
int lg_idem_matches(const lg_task *t, const lg_enqueue_req *r);

#endif
