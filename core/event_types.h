/* The values of the event log and the host work queue that the scheduler's
 * API hands on: what one event is made of, what the host is handed of one
 * item of host work, the lifecycle callbacks it may want. Plain data, no
 * layout; events.c owns them, dispatcher.h passes them on. */
#ifndef LUAGENT_EVENT_TYPES_H
#define LUAGENT_EVENT_TYPES_H

#include <stdint.h>

typedef struct lg_host_item lg_host_item;

enum { HI_HOST_CALL, HI_CALLBACK, HI_LOG };

/* What the host is handed of one item of host work; the strings stay valid
 * until lg_host_item_free. */
typedef struct {
  int type; /* HI_* */
  uint64_t id;
  const char *kind;     /* callback name, or log level */
  const char *name;     /* host tool name, or NULL */
  const char *json;     /* args (host call), record/payload (callback), message (log) */
  const char *ctx_json; /* host call: the calling run's context, or NULL */
  const char *task_id;  /* "" when none */
} lg_host_work;

void lg_host_item_read(const lg_host_item *it, lg_host_work *out);
void lg_host_item_free(lg_host_item *it);

typedef struct {
  const char *kind, *run_id, *task_id, *agent_id, *payload_json;
  int depth;
} lg_event_in;

/* lifecycle callbacks the host wants queued */
enum { W_ENQUEUED = 1, W_STARTED = 2, W_RETRY = 4, W_FINISHED = 8, W_ERROR = 16 };

#endif
