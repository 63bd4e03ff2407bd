/* The values of the task table that the scheduler's API hands on (statuses,
 * kinds, errors, usage, list filters): plain data, no layout. tasks.c owns
 * them; dispatcher.h passes them on to the bindings. */
#ifndef LUAGENT_TASK_TYPES_H
#define LUAGENT_TASK_TYPES_H

#include "internal.h"

typedef struct lg_task lg_task;

enum { TK_TOOL, TK_AGENT };

enum { TS_QUEUED, TS_RUNNING, TS_COMPLETED, TS_FAILED, TS_CANCELLED, TS_TIMED_OUT };
#define TS_TERMINAL(s) ((s) >= TS_COMPLETED)

typedef struct {
  char kind[16];
  char message[512];
} lg_err;

/* Token usage and its cost (added up in usage.c, written as JSON in
 * tasks.c). `set`: something was reported;
 * `has_cost`: some call had a price; `estimated`: some call's usage was an
 * estimate (the provider reported none). */
typedef struct {
  long long prompt, completion, total, cached;
  double cost;
  int set, has_cost, estimated;
} lg_usage;

typedef struct {
  const char *status, *agent_id, *parent_agent_id, *thread_id, *parent_run_id, *parent_task_id;
  int limit, include_finished;
  int claimable; /* finished, not delivered, not claimed (R-33 notices) */
} lg_filter;

/* `,"usage":{...},"tree_usage":{...}` of a record (nothing when none). */
void lg_usage_fields(buf_t *b, const lg_task *t, int with_tree);
void lg_usage_json(buf_t *b, const lg_usage *u);

#endif
