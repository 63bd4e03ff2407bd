/* A task's inbox (README, "Steering"): the messages sent to a running agent
 * task, in the order they came, each delivered once into the run's
 * transcript before its next model call. The messages live in the task's
 * record ("messages"), so a file store keeps them with it and recovery
 * reads them back (docs/architecture.md, "Steering"). Data only: callers
 * hold app->mu (tasks.h), except lg_task_interrupted, which the task's own
 * worker thread reads in its count hook. */
#include "jtext.h"
#include "tasks.h"

#include <stdlib.h>
#include <string.h>

/* Times as the rest of the record has them (ISO 8601, UTC). */
static void add_time(buf_t *b, const char *k, int64_t ms) {
  char iso[32];
  lg_iso8601(ms, iso);
  lg_buf_addf(b, ",\"%s\":\"%s\"", k, iso);
}

lg_msg *lg_inbox_add(lg_task *t, const char *text, const char *from, int interrupt, int64_t now) {
  lg_msg *m = calloc(1, sizeof *m);
  if (!m) return NULL;
  m->text = lg_strdup(text);
  m->from = lg_strdup(from);
  if (!m->text || !m->from) {
    free(m->text);
    free(m->from);
    free(m);
    return NULL;
  }
  m->seq = ++t->inbox_seq;
  m->queued_at = now;
  m->interrupt = interrupt;
  if (t->inbox_tail)
    t->inbox_tail->next = m;
  else
    t->inbox = m;
  t->inbox_tail = m;
  return m;
}

int lg_inbox_pending(const lg_task *t) {
  int n = 0;
  for (const lg_msg *m = t->inbox; m; m = m->next) n += m->delivered_at == 0;
  return n;
}

void lg_inbox_json(const lg_task *t, buf_t *b) {
  if (!t->inbox) return;
  lg_buf_adds(b, ",\"messages\":[");
  for (const lg_msg *m = t->inbox; m; m = m->next) {
    if (m != t->inbox) lg_buf_addc(b, ',');
    lg_buf_addf(b, "{\"seq\":%lld", (long long)m->seq);
    lg_buf_adds(b, ",\"from\":");
    lg_buf_add_jstr(b, m->from, strlen(m->from));
    lg_buf_adds(b, ",\"text\":");
    lg_buf_add_jstr(b, m->text, strlen(m->text));
    add_time(b, "queued_at", m->queued_at);
    if (m->delivered_at) add_time(b, "delivered_at", m->delivered_at);
    if (m->interrupt) lg_buf_adds(b, ",\"interrupt\":true");
    lg_buf_addc(b, '}');
  }
  lg_buf_addc(b, ']');
}

static double span_num(lg_jspan v) {
  if (!v.p) return 0;
  char tmp[48];
  size_t n = v.n < sizeof tmp - 1 ? v.n : sizeof tmp - 1;
  memcpy(tmp, v.p, n);
  tmp[n] = '\0';
  return strtod(tmp, NULL);
}

static char *span_text(lg_jspan v);

static int64_t span_ms(lg_jspan v) {
  char *s = lg_jspan_is_str(v) ? span_text(v) : NULL;
  int64_t ms = s ? lg_parse_iso8601(s) : 0;
  free(s);
  return ms;
}

static char *span_text(lg_jspan v) {
  buf_t b;
  lg_buf_init(&b);
  if (lg_jspan_str(v, &b) != 0) lg_buf_adds(&b, "");
  lg_buf_addc(&b, '\0');
  if (b.oom) {
    lg_buf_free(&b);
    return NULL;
  }
  return b.p;
}

int lg_inbox_restore(lg_task *t, const char *json, size_t len) {
  lg_jspan arr = {json, len}, item;
  for (const char *cur = NULL; (cur = lg_jspan_next(arr, cur, &item));) {
    char *text = span_text(lg_jspan_field(item, "text"));
    char *from = span_text(lg_jspan_field(item, "from"));
    lg_msg *m = text && from ? lg_inbox_add(t, text, from, 0, 0) : NULL;
    free(text);
    free(from);
    if (!m) return -1;
    m->seq = (int64_t)span_num(lg_jspan_field(item, "seq"));
    if (m->seq > t->inbox_seq) t->inbox_seq = m->seq;
    m->queued_at = span_ms(lg_jspan_field(item, "queued_at"));
    m->delivered_at = span_ms(lg_jspan_field(item, "delivered_at"));
    m->interrupt = lg_jspan_is_true(lg_jspan_field(item, "interrupt"));
  }
  return 0;
}

void lg_inbox_free(lg_task *t) {
  for (lg_msg *m = t->inbox, *nx; m; m = nx) {
    nx = m->next;
    free(m->text);
    free(m->from);
    free(m);
  }
  t->inbox = t->inbox_tail = NULL;
}

int lg_task_interrupted(lg_task *t) {
  return atomic_load(&t->step_open) && atomic_load(&t->interrupt);
}

void lg_task_step_open(lg_task *t, int open) { atomic_store(&t->step_open, open ? 1 : 0); }
