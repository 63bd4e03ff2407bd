/* The control tools the model is given (bg_list, bg_check, bg_cancel,
 * bg_send, bg_wait; rules R-30..R-33 of docs/architecture.md): one entry each, taking
 * the caller's scope and the model's arguments as JSON and returning the
 * model-facing ToolResult as JSON. Scope is checked here for all five, so a
 * task of another scope is `not_found` whatever asks (a Lua run, a C host).
 *
 * This layer sits above the scheduler and uses only its API: records come as
 * JSON text (from memory or the store, the same shape) and are read with
 * jtext.h. Lua keeps what is policy: the descriptions and schemas the model
 * sees, and where notices go in the prompt. */
#include "budget.h"
#include "dispatcher.h"
#include "jtext.h"
#include "luagent.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ results */

static char *finish_out(buf_t *b) {
  if (b->oom) {
    lg_buf_free(b);
    return NULL;
  }
  return lg_buf_detach(b);
}

/* Like Lua's %q for the ids we make (and a safe quote of any other). */
static void add_quoted(buf_t *b, const char *s, size_t n) {
  lg_buf_addc(b, '"');
  for (size_t i = 0; i < n; i++) {
    if (s[i] == '"' || s[i] == '\\') lg_buf_addc(b, '\\');
    lg_buf_addc(b, s[i]);
  }
  lg_buf_addc(b, '"');
}

static char *fail_json(const char *kind, const char *msg, size_t n) {
  buf_t b;
  lg_buf_init(&b);
  lg_buf_adds(&b, "{\"ok\":false,\"error\":");
  lg_buf_add_jstr(&b, msg, n);
  lg_buf_adds(&b, ",\"cause\":{\"kind\":");
  lg_buf_add_jstr(&b, kind, strlen(kind));
  lg_buf_adds(&b, ",\"message\":");
  lg_buf_add_jstr(&b, msg, n);
  lg_buf_adds(&b, "}}");
  return finish_out(&b);
}

static char *fail_str(const char *kind, const char *msg) { return fail_json(kind, msg, strlen(msg)); }

static char *not_found(const char *id, size_t n) {
  buf_t m;
  lg_buf_init(&m);
  lg_buf_adds(&m, "no background task ");
  add_quoted(&m, id, n);
  lg_buf_adds(&m, " in this conversation");
  char *r = m.oom ? NULL : fail_json("not_found", m.p, m.len);
  lg_buf_free(&m);
  return r;
}

/* ------------------------------------------------------------- scope */

typedef struct {
  const luagent_scope *s;
  char *narrow; /* a sub-agent run sees only its own task's children */
} scope_t;

/* a run that is a sub-agent (its task was spawned by a run) shares its
 * tree's thread, so its scope is narrowed to the children of its own task. */
static void scope_open(lg_app *a, const luagent_scope *s, scope_t *sc) {
  sc->s = s;
  sc->narrow = NULL;
  if (!s->task_id) return;
  buf_t rec;
  lg_buf_init(&rec);
  /* a task we cannot read narrows too: an unknown caller sees nothing */
  int narrow = 1;
  if (lg_get(a, s->task_id, &rec) == 0 && !rec.oom)
    narrow = lg_jspan_is_str(lg_jtext_field(rec.p, rec.len, "parent_run_id"));
  if (narrow) sc->narrow = lg_strdup(s->task_id);
  lg_buf_free(&rec);
}

static void scope_close(scope_t *sc) { free(sc->narrow); }

/* The scheduler's filter for the tasks of a scope. */
static void scope_filter(const scope_t *sc, lg_filter *f) {
  memset(f, 0, sizeof *f);
  f->parent_agent_id = sc->s->agent_id;
  f->thread_id = sc->s->thread_id;
  f->parent_task_id = sc->narrow;
}

static int in_scope(const scope_t *sc, lg_jspan rec) {
  return rec.p && lg_jspan_eq(lg_jspan_field(rec, "parent_agent_id"), sc->s->agent_id) &&
         lg_jspan_eq(lg_jspan_field(rec, "thread_id"), sc->s->thread_id) &&
         (!sc->narrow || lg_jspan_eq(lg_jspan_field(rec, "parent_task_id"), sc->narrow));
}

/* The record of `id` when it is in scope (rec filled), else 0. */
static int scoped_record(lg_app *a, const scope_t *sc, const char *id, buf_t *rec) {
  if (lg_get(a, id, rec) != 0 || rec->oom) return 0;
  lg_jspan r = {rec->p, rec->len};
  return in_scope(sc, r);
}

/* ----------------------------------------------------------- entries */

static int terminal_status(lg_jspan st) {
  return lg_jspan_eq(st, "completed") || lg_jspan_eq(st, "failed") ||
         lg_jspan_eq(st, "cancelled") || lg_jspan_eq(st, "timed_out");
}

/* How much of s (len bytes) fits in n bytes without ending inside a UTF-8
 * sequence (the cut of the Lua side, tools.cut). */
static size_t utf8_fit(const char *s, size_t len, size_t n) {
  if (len <= n) return len;
  size_t k = n, i = n;
  while (i > 0 && ((unsigned char)s[i - 1] & 0xC0) == 0x80) i--;
  if (i > 0 && (unsigned char)s[i - 1] >= 0xC0) k = i - 1;
  return k;
}

/* ------------------------------------------------------ big results */

/* The full result of a finished task as text, the one every page is cut
 * from (README, "Big results"): an agent run's final text, a tool's value
 * (a string as it is, anything else as its JSON). The record keeps it
 * whole (in memory within keep_finished, and in the file store). */
static void full_text(lg_jspan rec, buf_t *out) {
  lg_jspan v = lg_jspan_field(rec, "result");
  if (lg_jspan_eq(lg_jspan_field(rec, "kind"), "agent") && v.p && v.p[0] == '{')
    v = lg_jspan_field(v, "final");
  if (lg_jspan_is_str(v))
    lg_jspan_str(v, out);
  else
    lg_buf_add(out, v.p ? v.p : "null", v.p ? v.n : 4);
}

/* The page of text at byte offset (moved back to the start of a UTF-8
 * sequence), at most limit bytes and never ending inside a sequence:
 * *from is where it starts, the return value its length. */
static size_t page_of(const char *text, size_t len, size_t offset, size_t limit, size_t *from) {
  while (offset > 0 && offset < len && ((unsigned char)text[offset] & 0xC0) == 0x80) offset--;
  *from = offset;
  size_t left = len - offset;
  size_t n = utf8_fit(text + offset, left, limit);
  if (n == 0 && left > 0) n = left < limit ? left : limit; /* one sequence longer than a page */
  return n;
}

/* A result text longer than max reaches the parent's context as its first
 * page and a note saying how much was cut and how to read on; appends that
 * text to out, or nothing and returns 0 when the text fits. */
static int add_bounded(buf_t *out, const char *text, size_t len, size_t max, const char *id,
                       size_t id_n) {
  if (len <= max) return 0;
  size_t from, n = page_of(text, len, 0, max, &from);
  lg_buf_add(out, text, n);
  lg_buf_addf(out, "\n[luagent: result cut: showing bytes 0-%zu of %zu; call bg_check{task_id = ", n,
              len);
  add_quoted(out, id, id_n);
  lg_buf_addf(out, ", offset = %zu} for the rest, a page at a time]", n);
  return 1;
}

void lg_control_bounded(const char *text, size_t len, size_t max, const char *id, buf_t *out) {
  if (!add_bounded(out, text, len, max, id, strlen(id))) lg_buf_add(out, text, len);
}

/* `,"result":` and what the model is shown of a completed task's result
 * (value: the agent's final or the tool's value), bounded by max. */
static void put_result(buf_t *b, lg_jspan rec, lg_jspan value, size_t max) {
  buf_t text, cut;
  lg_buf_init(&text);
  lg_buf_init(&cut);
  full_text(rec, &text);
  lg_jspan id = lg_jspan_field(rec, "task_id");
  buf_t idb;
  lg_buf_init(&idb);
  lg_jspan_str(id, &idb);
  lg_buf_adds(b, ",\"result\":");
  if (add_bounded(&cut, text.p ? text.p : "", text.len, max, idb.p ? idb.p : "", idb.len))
    lg_buf_add_jstr(b, cut.p ? cut.p : "", cut.len);
  else
    lg_buf_add(b, value.p ? value.p : "null", value.p ? value.n : 4);
  if (text.oom || cut.oom || idb.oom) b->oom = 1;
  lg_buf_free(&text);
  lg_buf_free(&cut);
  lg_buf_free(&idb);
}

/* What the model is shown of a task (bg_check, bg_wait): for agent runs
 * their final text and how the run ended when that was not `completed`; for
 * tools the handler's value; a result longer than max_out (the smaller of
 * max_result_bytes and the tool output limit) as its first page and a note. */
static void add_entry(buf_t *b, lg_jspan rec, size_t max_out, int omit_result) {
  static const char *const keys[] = {"status",     "tool",        "agent_id", "enqueued_at",
                                     "started_at", "finished_at", "attempts", "usage"};
  lg_buf_adds(b, "{\"task_id\":");
  lg_jspan id = lg_jspan_field(rec, "task_id");
  lg_buf_add(b, id.p ? id.p : "null", id.p ? id.n : 4);
  for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
    lg_jspan_put(b, keys[i], lg_jspan_field(rec, keys[i]));
  lg_jspan st = lg_jspan_field(rec, "status");
  if (terminal_status(st)) {
    lg_jspan result = lg_jspan_field(rec, "result"), error = lg_jspan_field(rec, "error");
    if (lg_jspan_eq(st, "completed")) {
      if (lg_jspan_eq(lg_jspan_field(rec, "kind"), "agent") && result.p && result.p[0] == '{') {
        lg_jspan final = lg_jspan_field(result, "final");
        lg_jspan run_status = lg_jspan_field(result, "status");
        if (!omit_result && final.p) put_result(b, rec, final, max_out);
        if (run_status.p && !lg_jspan_eq(run_status, "completed")) {
          /* an agent run that ended budget_exceeded or stopped: say why */
          lg_jspan_put(b, "run_status", run_status);
          if (!omit_result) lg_jspan_put(b, "error", error);
        }
      } else if (!omit_result && result.p) {
        put_result(b, rec, result, max_out);
      }
    } else if (!omit_result) {
      lg_jspan_put(b, "error", error);
    }
  }
  if (omit_result)
    lg_buf_adds(b, ",\"omitted\":\"too large for this message: call bg_check with this task_id\"");
  lg_buf_addc(b, '}');
}

static lg_jspan args_field(const char *args, const char *key) {
  return lg_jtext_field(args, args ? strlen(args) : 0, key);
}

static double span_num(lg_jspan v, double dflt) {
  if (!v.p || !(v.p[0] == '-' || (v.p[0] >= '0' && v.p[0] <= '9'))) return dflt;
  char tmp[64];
  size_t n = v.n < sizeof tmp - 1 ? v.n : sizeof tmp - 1;
  memcpy(tmp, v.p, n);
  tmp[n] = '\0';
  return strtod(tmp, NULL);
}

static int valid_utf8(const unsigned char *p, size_t n) {
  for (size_t i = 0; i < n;) {
    unsigned c = p[i];
    size_t k = c < 0x80 ? 0 : (c & 0xE0) == 0xC0 ? 1 : (c & 0xF0) == 0xE0 ? 2 : (c & 0xF8) == 0xF0 ? 3 : 9;
    if (k == 9 || (k == 1 && c < 0xC2) || i + k >= n + (k ? 0 : 1)) return 0;
    for (size_t j = 1; j <= k; j++)
      if ((p[i + j] & 0xC0) != 0x80) return 0;
    i += k + 1;
  }
  return 1;
}

/* A task id argument as a C string (malloc'd, *out), or NULL. A string that
 * is not text (a NUL byte, invalid UTF-8) names no task: C would cut it at
 * the NUL and find another one. */
static char *span_cstr(lg_jspan v) {
  if (!lg_jspan_is_str(v)) return NULL;
  buf_t b;
  lg_buf_init(&b);
  lg_jspan_str(v, &b);
  int text = !b.oom && !memchr(b.p ? b.p : "", '\0', b.len) &&
             valid_utf8((const unsigned char *)(b.p ? b.p : ""), b.len);
  lg_buf_addc(&b, '\0');
  if (b.oom || !text) {
    lg_buf_free(&b);
    return NULL;
  }
  return b.p;
}

/* The not_found answer for an id argument that is not text. */
static char *not_found_span(lg_jspan v) {
  return lg_jspan_is_str(v) ? not_found(v.p + 1, v.n - 2) : not_found(v.p ? v.p : "", v.p ? v.n : 0);
}

/* The bound of a result in a tool message or notice. */
static size_t result_bound(lg_app *a) {
  int out = lg_app_max_output(a), res = lg_app_max_result(a);
  return (size_t)(out < res ? out : res);
}

/* bg_check{task_id, offset?, limit?}: a page of the full result of a task in
 * scope (rec); next_offset is where the next page starts, absent after the
 * last one. A page is at most max_result_bytes. */
static char *result_page(lg_app *a, lg_jspan rec, const char *id, const char *args_json) {
  lg_jspan st = lg_jspan_field(rec, "status");
  if (!lg_jspan_eq(st, "completed")) {
    buf_t m;
    lg_buf_init(&m);
    lg_buf_addf(&m, "task %s has no result to page: it is ", id);
    lg_jspan_str(st, &m);
    char *r = m.oom ? NULL : fail_json("not_found", m.p, m.len);
    lg_buf_free(&m);
    return r;
  }
  lg_jspan ov = args_field(args_json, "offset"), lv = args_field(args_json, "limit");
  double off = span_num(ov, ov.p ? -1 : 0), lim = span_num(lv, lv.p ? 0 : (double)INT_MAX);
  if (off < 0 || off != (double)(long long)off)
    return fail_str("validation", "bg_check: offset must be an integer >= 0");
  if (lim < 1 || lim != (double)(long long)lim)
    return fail_str("validation", "bg_check: limit must be an integer >= 1");
  size_t max = (size_t)lg_app_max_result(a);
  size_t limit = lim < (double)max ? (size_t)lim : max;
  buf_t text;
  lg_buf_init(&text);
  full_text(rec, &text);
  if (text.oom) {
    lg_buf_free(&text);
    return NULL;
  }
  const char *tp = text.p ? text.p : "";
  if (off > (double)text.len) {
    char m[160];
    snprintf(m, sizeof m, "offset %.0f is past the end of the result (%zu bytes)", off, text.len);
    lg_buf_free(&text);
    return fail_str("validation", m);
  }
  size_t from, n = page_of(tp, text.len, (size_t)off, limit, &from);
  buf_t b;
  lg_buf_init(&b);
  lg_buf_adds(&b, "{\"ok\":true,\"value\":{");
  if (from + n < text.len) lg_buf_addf(&b, "\"next_offset\":%zu,", from + n);
  lg_buf_addf(&b, "\"offset\":%zu", from);
  lg_jspan_put(&b, "status", st);
  lg_jspan_put(&b, "task_id", lg_jspan_field(rec, "task_id"));
  lg_buf_adds(&b, ",\"text\":");
  lg_buf_add_jstr(&b, tp + from, n);
  lg_buf_addf(&b, ",\"total_bytes\":%zu}}", text.len);
  lg_buf_free(&text);
  lg_set_delivered(a, id);
  return finish_out(&b);
}

/* ------------------------------------------------------------ bg_list */

char *luagent_bg_list(lg_app *a, const luagent_scope *s, const char *args_json) {
  int all = lg_jspan_is_true(args_field(args_json, "include_finished"));
  scope_t sc;
  scope_open(a, s, &sc);
  lg_filter f;
  scope_filter(&sc, &f);
  f.include_finished = 1;
  buf_t recs;
  lg_buf_init(&recs);
  lg_list(a, &f, &recs);
  scope_close(&sc);
  buf_t b;
  lg_buf_init(&b);
  lg_buf_adds(&b, "{\"ok\":true,\"value\":{\"tasks\":[");
  lg_jspan arr = {recs.p, recs.len}, rec;
  int k = 0;
  for (const char *cur = NULL; (cur = lg_jspan_next(arr, cur, &rec));) {
    if (!all && terminal_status(lg_jspan_field(rec, "status"))) continue;
    static const char *const keys[] = {"status", "tool", "agent_id", "enqueued_at", "started_at"};
    if (k++) lg_buf_addc(&b, ',');
    lg_buf_adds(&b, "{\"task_id\":");
    lg_jspan id = lg_jspan_field(rec, "task_id");
    lg_buf_add(&b, id.p, id.n);
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
      lg_jspan_put(&b, keys[i], lg_jspan_field(rec, keys[i]));
    lg_buf_addc(&b, '}');
  }
  lg_buf_addc(&b, ']');
  lg_budget_left_field(a, s->root_key, &b); /* the tree's budget (core/budget.c) */
  lg_buf_adds(&b, "}}");
  if (recs.oom) b.oom = 1;
  lg_buf_free(&recs);
  return finish_out(&b);
}

/* The task a bg_check/bg_cancel call names, looked up in the caller's
 * scope: returns its id (the caller frees it) with the record in rec, or
 * NULL with the model-facing answer in *answer (not_found, validation). */
static char *scoped_task_arg(lg_app *a, const luagent_scope *s, const char *args_json,
                             const char *tool, buf_t *rec, char **answer) {
  lg_jspan idv = args_field(args_json, "task_id");
  char *id = span_cstr(idv);
  lg_buf_init(rec);
  if (!id) {
    if (lg_jspan_is_str(idv)) {
      *answer = not_found_span(idv);
    } else {
      char msg[96];
      snprintf(msg, sizeof msg, "%s needs task_id, a task id string", tool);
      *answer = fail_str("validation", msg);
    }
    return NULL;
  }
  scope_t sc;
  scope_open(a, s, &sc);
  int ok = scoped_record(a, &sc, id, rec);
  scope_close(&sc);
  if (!ok) {
    *answer = not_found(id, strlen(id));
    lg_buf_free(rec);
    free(id);
    return NULL;
  }
  return id;
}

/* ----------------------------------------------------------- bg_check */

char *luagent_bg_check(lg_app *a, const luagent_scope *s, const char *args_json) {
  buf_t rec;
  char *r = NULL;
  char *id = scoped_task_arg(a, s, args_json, "bg_check", &rec, &r);
  if (!id) return r;
  if (args_field(args_json, "offset").p || args_field(args_json, "limit").p) {
    lg_jspan rv = {rec.p, rec.len};
    r = result_page(a, rv, id, args_json);
  } else {
    lg_jspan rv = {rec.p, rec.len};
    int n = (int)span_num(args_field(args_json, "last_n_events"), 0);
    if (n > 16) n = 16;
    buf_t b;
    lg_buf_init(&b);
    lg_buf_adds(&b, "{\"ok\":true,\"value\":");
    add_entry(&b, rv, result_bound(a), 0);
    if (n > 0) {
      b.len--; /* reopen the entry */
      lg_buf_adds(&b, ",\"events\":");
      buf_t d;
      lg_buf_init(&d);
      if (lg_task_digests(a, id, n, &d) == 0 && !d.oom)
        lg_buf_add(&b, d.p, d.len);
      else
        lg_buf_adds(&b, "[]");
      lg_buf_free(&d);
      lg_buf_addc(&b, '}');
    }
    if (s->root_key && b.len > 0) { /* the tree's budget (core/budget.c) */
      b.len--; /* reopen the entry */
      lg_budget_left_field(a, s->root_key, &b);
      lg_buf_addc(&b, '}');
    }
    lg_buf_addc(&b, '}');
    if (terminal_status(lg_jspan_field(rv, "status"))) lg_set_delivered(a, id);
    r = finish_out(&b);
  }
  lg_buf_free(&rec);
  free(id);
  return r;
}

/* ---------------------------------------------------------- bg_cancel */

char *luagent_bg_cancel(lg_app *a, const luagent_scope *s, const char *args_json) {
  buf_t rec;
  char *r = NULL;
  char *id = scoped_task_arg(a, s, args_json, "bg_cancel", &rec, &r);
  if (!id) return r;
  lg_buf_free(&rec);
  {
    buf_t b, c;
    lg_buf_init(&b);
    lg_buf_init(&c);
    if (lg_cancel(a, id, &c) == 0 && !c.oom) {
      lg_buf_adds(&b, "{\"ok\":true,\"value\":");
      lg_buf_add(&b, c.p, c.len);
      lg_buf_addc(&b, '}');
      r = finish_out(&b);
    } else {
      lg_buf_free(&b);
      r = not_found(id, strlen(id));
    }
    lg_buf_free(&c);
  }
  free(id);
  return r;
}

/* ------------------------------------------------------------ bg_send */

/* What the child is told sent the message: its parent, by agent id. */
static void sender_label(const luagent_scope *s, buf_t *b) {
  lg_buf_adds(b, "your parent agent \"");
  lg_buf_adds(b, s->agent_id ? s->agent_id : "?");
  lg_buf_addc(b, '"');
}

char *luagent_bg_send(lg_app *a, const luagent_scope *s, const char *args_json) {
  lg_jspan mv = args_field(args_json, "message");
  char *text = span_cstr(mv);
  if (!text || !text[0]) {
    free(text);
    return fail_str("validation", "bg_send needs message, a non-empty text");
  }
  buf_t rec;
  char *r = NULL;
  char *id = scoped_task_arg(a, s, args_json, "bg_send", &rec, &r);
  if (!id) {
    free(text);
    return r;
  }
  lg_buf_free(&rec);
  buf_t from, out, b;
  lg_buf_init(&from);
  lg_buf_init(&out);
  lg_buf_init(&b);
  sender_label(s, &from);
  lg_buf_addc(&from, '\0');
  lg_err err = {{0}, {0}};
  int rc = from.oom ? -2 : lg_send(a, id, text, from.p,
                                   lg_jspan_is_true(args_field(args_json, "interrupt")), &out, &err);
  if (rc == 0 && !out.oom) {
    lg_buf_adds(&b, "{\"ok\":true,\"value\":");
    lg_buf_add(&b, out.p, out.len);
    lg_buf_addc(&b, '}');
    r = finish_out(&b);
  } else if (rc == 1 && !out.oom) {
    /* not_found, saying it finished; the cause names its status */
    lg_jspan st = lg_jtext_field(out.p, out.len, "status");
    buf_t m;
    lg_buf_init(&m);
    lg_buf_adds(&m, "task ");
    add_quoted(&m, id, strlen(id));
    lg_buf_adds(&m, " has finished (");
    lg_jspan_str(st, &m);
    lg_buf_adds(&m, "): it reads no more messages; bg_check shows its result");
    lg_buf_adds(&b, "{\"ok\":false,\"error\":");
    lg_buf_add_jstr(&b, m.p ? m.p : "", m.len);
    lg_buf_adds(&b, ",\"cause\":{\"kind\":\"not_found\",\"message\":");
    lg_buf_add_jstr(&b, m.p ? m.p : "", m.len);
    lg_jspan_put(&b, "status", st);
    lg_buf_adds(&b, ",\"task_id\":");
    lg_buf_add_jstr(&b, id, strlen(id));
    lg_buf_adds(&b, "}}");
    if (m.oom) b.oom = 1;
    lg_buf_free(&m);
    r = finish_out(&b);
  } else if (rc == -1) {
    lg_buf_free(&b);
    r = not_found(id, strlen(id));
  } else {
    lg_buf_free(&b);
    r = fail_str(err.kind[0] ? err.kind : "runtime", err.message[0] ? err.message : "out of memory");
  }
  lg_buf_free(&from);
  lg_buf_free(&out);
  free(text);
  free(id);
  return r;
}

/* ------------------------------------------------------------ bg_wait */

lg_wait *luagent_bg_wait_begin(lg_app *a, const luagent_scope *s, const char *args_json,
                               double *timeout_s, char **answer) {
  *answer = NULL;
  lg_jspan ids = args_field(args_json, "task_ids");
  lg_jspan legacy = args_field(args_json, "task_id");
  lg_jspan one = {NULL, 0};
  int n = 0;
  lg_jspan item;
  if (!ids.p && lg_jspan_is_str(legacy)) {
    one = legacy;
    n = 1;
  } else if (ids.p && ids.p[0] == '[') {
    for (const char *cur = NULL; (cur = lg_jspan_next(ids, cur, &item));) n++;
  }
  if (n == 0) {
    *answer = fail_str("validation", "bg_wait needs task_ids, a non-empty list of task ids");
    return NULL;
  }
  char **v = calloc((size_t)n, sizeof *v);
  if (!v) return NULL;
  scope_t sc;
  scope_open(a, s, &sc);
  int k = 0;
  const char *cur = NULL;
  for (; k < n; k++) {
    if (one.p)
      item = one;
    else
      cur = lg_jspan_next(ids, cur, &item);
    v[k] = span_cstr(item);
    buf_t rec;
    lg_buf_init(&rec);
    int ok = v[k] && scoped_record(a, &sc, v[k], &rec);
    lg_buf_free(&rec);
    if (!ok) {
      *answer = v[k] ? not_found(v[k], strlen(v[k])) : not_found_span(item);
      k++;
      break;
    }
  }
  lg_wait *w = NULL;
  if (k == n && !*answer) {
    lg_err err = {{0}, {0}};
    w = lg_wait_begin_by_id(a, s->task_id, v, n, lg_jspan_eq(args_field(args_json, "mode"), "any"),
                            &err);
    if (!w) *answer = fail_str(err.kind[0] ? err.kind : "runtime", err.message);
  }
  scope_close(&sc);
  for (int i = 0; i < n; i++) free(v[i]);
  free(v);
  *timeout_s = span_num(args_field(args_json, "timeout_s"), lg_app_default_wait_s(a));
  return w;
}

/* The bg_wait reply: finished tasks with their results while they fit in
 * one tool message (the rest say so and stay undelivered, R-33: a child is
 * never marked seen unseen), pending ones with their progress. */
char *luagent_bg_wait_finish(lg_app *a, lg_wait *w) {
  buf_t val;
  lg_buf_init(&val);
  lg_wait_value(w, 1, &val);
  if (val.oom) {
    lg_buf_free(&val);
    return NULL;
  }
  lg_jspan vs = {val.p, val.len};
  size_t max_out = (size_t)lg_app_max_output(a);
  long room = (long)max_out - 256;
  char **ids;
  int n = lg_wait_ids(w, &ids);
  const char **done = calloc((size_t)(n ? n : 1), sizeof *done);
  int ndone = 0;
  buf_t b;
  lg_buf_init(&b);
  lg_buf_adds(&b, "{\"ok\":true,\"value\":{\"done\":");
  lg_jspan d = lg_jspan_field(vs, "done"), to = lg_jspan_field(vs, "timed_out");
  lg_buf_add(&b, d.p, d.n);
  lg_buf_adds(&b, ",\"timed_out\":");
  lg_buf_add(&b, to.p, to.n);
  lg_buf_adds(&b, ",\"tasks\":[");
  lg_jspan tasks = lg_jspan_field(vs, "tasks"), t;
  int i = 0;
  for (const char *cur = NULL; (cur = lg_jspan_next(tasks, cur, &t)); i++) {
    if (i) lg_buf_addc(&b, ',');
    lg_jspan st = lg_jspan_field(t, "status");
    buf_t rec;
    lg_buf_init(&rec);
    if (terminal_status(st) && i < n && lg_get(a, ids[i], &rec) == 0 && !rec.oom) {
      lg_jspan rv = {rec.p, rec.len};
      size_t at = b.len;
      add_entry(&b, rv, result_bound(a), 0);
      long size = (long)(b.len - at);
      if (size <= room || i == 0) {
        room -= size;
        if (done) done[ndone++] = ids[i];
      } else {
        b.len = at;
        add_entry(&b, rv, result_bound(a), 1);
      }
    } else {
      static const char *const keys[] = {"status", "tool", "agent_id", "progress"};
      lg_buf_adds(&b, "{\"task_id\":");
      lg_jspan id = lg_jspan_field(t, "task_id");
      lg_buf_add(&b, id.p, id.n);
      for (size_t j = 0; j < sizeof keys / sizeof *keys; j++)
        lg_jspan_put(&b, keys[j], lg_jspan_field(t, keys[j]));
      lg_buf_addc(&b, '}');
    }
    lg_buf_free(&rec);
  }
  lg_buf_adds(&b, "],\"pending\":");
  lg_jspan pending = lg_jspan_field(vs, "pending");
  lg_buf_add(&b, pending.p ? pending.p : "[]", pending.p ? pending.n : 2);
  lg_buf_adds(&b, "}}");
  if (done && ndone) lg_set_delivered_many(a, done, ndone);
  free(done);
  lg_buf_free(&val);
  return finish_out(&b);
}

/* the scope's finished children no model call has carried yet,
 * claimed for the notice of `claimer`'s next model call. */
void lg_control_claim(lg_app *a, const luagent_scope *s, lg_task *claimer, buf_t *out) {
  scope_t sc;
  scope_open(a, s, &sc);
  lg_filter f;
  scope_filter(&sc, &f);
  lg_claim(a, claimer, &f, out);
  scope_close(&sc);
}

int luagent_wait_over(lg_wait *w) { return lg_wait_over(w); }
void luagent_wait_free(lg_wait *w) { lg_wait_free(w); }
void luagent_free(void *p) { free(p); }

/* The blocking form, for C hosts that have no host work to pump meanwhile. */
char *luagent_bg_wait(lg_app *a, const luagent_scope *s, const char *args_json) {
  double timeout_s;
  char *answer;
  lg_wait *w = luagent_bg_wait_begin(a, s, args_json, &timeout_s, &answer);
  if (!w) return answer;
  int64_t end = lg_mono_ms() + (int64_t)(timeout_s * 1000.0);
  while (!lg_wait_over(w)) {
    uint64_t gen = lg_gen(a);
    if (lg_wait_over(w)) break;
    int64_t left = end - lg_mono_ms();
    if (left <= 0) break;
    lg_block(a, gen, (double)left / 1000.0, 0);
  }
  char *r = luagent_bg_wait_finish(a, w);
  lg_wait_free(w);
  return r;
}
