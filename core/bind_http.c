/* Bindings of HTTP transfers (http.c) on the calling thread's multi handle:
 * a worker's own, or the host's, which the app wakes with the host. */
#include "bind.h"
#include "http.h"
#include "jtext.h"

#include <stdlib.h>
#include <string.h>

#define HTTP_MT "luagent.http"

typedef struct {
  lg_http *h;
  lg_app *app; /* kept alive by the user value */
  /* token events made here (http_start's token_event): whose they are */
  int tokens, tok_depth;
  char *tok_run, *tok_task, *tok_agent;
  buf_t text, payload; /* reused from poll to poll */
} http_ud;

static void ud_free(http_ud *u) {
  lg_http_free(u->h);
  u->h = NULL;
  free(u->tok_run);
  free(u->tok_task);
  free(u->tok_agent);
  u->tok_run = u->tok_task = u->tok_agent = NULL;
  u->tokens = 0;
  lg_buf_free(&u->text);
  lg_buf_free(&u->payload);
}

static lg_http *check_http(lua_State *L) {
  http_ud *u = luaL_checkudata(L, 1, HTTP_MT);
  if (!u->h) luaL_error(L, "luagent: the HTTP transfer is closed");
  return u->h;
}

/* The multi handle of the calling thread: the worker's own, or the host's
 * (registered with the app so that news for the host wakes its poll). */
static void *calling_multi(lua_State *L, int app_idx) {
  lg_worker *w = lg_current_worker(L);
  if (w) return lg_http_worker_multi(w);
  app_ud *u = luaL_checkudata(L, app_idx, APP_MT);
  if (!u->app) luaL_error(L, "luagent: the app is closed");
  void *m = lg_host_multi(u->app);
  if (!m) {
    m = lg_http_multi_new();
    lg_set_host_multi(u->app, m);
  }
  return m;
}

/* http_start(app, { method, url, headers = {"Name: value"...}, body,
 * timeout_s, connect_timeout_s, idle_timeout_s, max_bytes, stream }) -> transfer */
static int l_http_start(lua_State *L) {
  luaL_checktype(L, 2, LUA_TTABLE);
  void *multi = calling_multi(L, 1);
  lg_http_req r;
  memset(&r, 0, sizeof r);
  r.method = lg_opt_field_str(L, 2, "method");
  r.url = lg_opt_field_str(L, 2, "url");
  if (!r.url) return luaL_error(L, "luagent: http request needs a url");
  lua_getfield(L, 2, "body");
  r.body = lua_tolstring(L, -1, &r.body_len);
  lua_pop(L, 1); /* anchored in the table */
  r.timeout_s = lg_opt_field_num(L, 2, "timeout_s", 0);
  r.connect_timeout_s = lg_opt_field_num(L, 2, "connect_timeout_s", 0);
  r.idle_timeout_s = lg_opt_field_num(L, 2, "idle_timeout_s", 0);
  r.max_bytes = (size_t)lg_opt_field_int(L, 2, "max_bytes", 0);
  lua_getfield(L, 2, "stream");
  r.stream = lua_toboolean(L, -1);
  lua_getfield(L, 2, "truncate");
  r.truncate = lua_toboolean(L, -1);
  lua_pop(L, 2);
  lua_getfield(L, 2, "headers");
  int hidx = lua_gettop(L);
  const char **hv = NULL;
  if (lua_istable(L, hidx)) {
    int n = (int)luaL_len(L, hidx);
    hv = lua_newuserdatauv(L, (size_t)(n ? n : 1) * sizeof *hv, 0);
    for (int i = 0; i < n; i++) {
      lua_rawgeti(L, hidx, i + 1);
      size_t len_i = 0;
      hv[i] = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len_i) : NULL;
      lua_pop(L, 1);
      if (!hv[i]) return luaL_error(L, "luagent: http headers must be strings");
      if (strlen(hv[i]) != len_i) return luaL_error(L, "luagent: http headers must not contain a NUL byte");
    }
    r.headers = hv;
    r.nheaders = n;
  }
  http_ud *u = lua_newuserdatauv(L, sizeof *u, 1);
  memset(u, 0, sizeof *u);
  u->app = ((app_ud *)luaL_checkudata(L, 1, APP_MT))->app;
  luaL_setmetatable(L, HTTP_MT);
  lua_getfield(L, 2, "token_event");
  if (lua_istable(L, -1)) {
    int t = lua_gettop(L);
    const char *run = lg_opt_field_str(L, t, "run_id"), *task = lg_opt_field_str(L, t, "task_id"),
               *agent = lg_opt_field_str(L, t, "agent_id");
    u->tok_depth = (int)lg_opt_field_int(L, t, "depth", 0);
    u->tok_run = lg_strdup(run);
    u->tok_task = lg_strdup(task);
    u->tok_agent = lg_strdup(agent);
    u->tokens = (!run || u->tok_run) && (!task || u->tok_task) && (!agent || u->tok_agent);
  }
  lua_pop(L, 1);
  lua_pushvalue(L, 1); /* keep the app (and its multi) alive while we live */
  lua_setiuservalue(L, -2, 1);
  char err[256];
  u->h = lg_http_start(multi, &r, err, sizeof err);
  if (!u->h) return luaL_error(L, "luagent: %s", err);
  return 1;
}

/* A Chat Completions stream chunk (README, luagent.openai) whose only news
 * is text, read as openai.lua reads it: 1 with the text appended to out, 0
 * when it carries nothing (no text, no tool call, usage, error or finish),
 * -1 when Lua must read it (anything else, or text Lua would not take). */
static int text_delta(const char *data, size_t len, buf_t *out) {
  static const char *const top_keys[] = {"error", "usage", "choices"};
  static const char *const choice_keys[] = {"delta", "finish_reason"};
  static const char *const delta_keys[] = {"content", "tool_calls"};
  lg_jspan top = {data, len}, tv[3], cv[2], dv[2], choice;
  if (lg_json_check(data, len, NULL, 0) != 0) return -1;
  if (lg_jspan_members(top, top_keys, 3, tv) != 0) return -1;
  if ((tv[0].p && !lg_jspan_is_null(tv[0])) || (tv[1].p && !lg_jspan_is_null(tv[1]))) return -1;
  if (!lg_jspan_next(tv[2], NULL, &choice)) return -1;
  if (lg_jspan_members(choice, choice_keys, 2, cv) != 0) return -1;
  if (cv[1].p && !lg_jspan_is_null(cv[1])) return -1;
  if (!cv[0].p) return 0;
  if (lg_jspan_members(cv[0], delta_keys, 2, dv) != 0) return -1;
  if (dv[1].p && !lg_jspan_is_null(dv[1])) return -1;
  if (!dv[0].p || lg_jspan_is_null(dv[0])) return 0;
  size_t before = out->len;
  if (lg_json_str(dv[0].p, dv[0].n, out) != 0) {
    if (out->len > before) out->len = before;
    return -1;
  }
  return out->len > before;
}

/* The token event of one text delta, as ctx:emit("token", {text}) makes it. */
static int emit_token(http_ud *u, const char *text, size_t n) {
  if (u->payload.oom) {
    lg_buf_free(&u->payload);
    lg_buf_init(&u->payload);
  }
  lg_buf_reset(&u->payload);
  lg_buf_adds(&u->payload, "{\"text\":");
  lg_buf_add_jstr(&u->payload, text, n);
  lg_buf_addc(&u->payload, '}');
  if (u->payload.oom) return -1;
  lg_event_in e = {"token", u->tok_run, u->tok_task, u->tok_agent, u->payload.p, u->tok_depth};
  lg_emit(u->app, &e, NULL);
  return 0;
}

/* poll(timeout_s, news) -> done, events (nil: none), stop, interrupted, text. In a worker,
 * `stop` means the task must stop (cancel or deadline): the caller raises
 * the cancel error; `interrupted` that a message cut the open step short
 * (steer.c): the caller raises the interrupt error. In the host, `news`
 * says whether new events of other threads end the wait early (the host's
 * watchers want them); host work always does. With token_event (http_start)
 * text deltas are not among `events`: each was emitted as a token event and
 * `text` is their text joined (nil when none). */
static int l_http_poll(lua_State *L) {
  lg_http *h = check_http(L);
  double t = luaL_optnumber(L, 2, 0.1);
  int ms = t > 0 ? (int)(t * 1000.0) : 0;
  lg_worker *w = lg_current_worker(L);
  lg_task *task = lg_worker_current(w);
  if (!w) {
    http_ud *u = lua_touserdata(L, 1);
    lg_host_poll_news(u->app, lua_isnoneornil(L, 3) || lua_toboolean(L, 3));
  }
  int done, stop = 0, interrupted = 0;
  if (task) {
    /* publish "in HTTP" before checking the flag, so a canceller either
     * sees it and wakes us or we see its flag */
    lg_worker_set_in_http(w, 1);
    if (lg_task_should_stop(task)) {
      stop = 1;
    } else if (lg_task_interrupted(task)) {
      interrupted = 1;
    } else if (lg_task_deadline(task) > 0) {
      int64_t left = lg_task_deadline(task) - lg_mono_ms();
      if (left < ms) ms = left > 0 ? (int)left : 0;
    }
  }
  done = stop || interrupted ? 0 : lg_http_poll(h, ms);
  if (task) {
    lg_worker_set_in_http(w, 0);
    if (!done && lg_task_should_stop(task)) stop = 1;
    if (!done && !stop && lg_task_interrupted(task)) interrupted = 1;
  }
  lua_pushboolean(L, done);
  http_ud *u = lua_touserdata(L, 1);
  lg_http_event *ev = lg_http_take_events(h);
  lua_pushnil(L); /* the events' list, made for the first one */
  int list = lua_gettop(L);
  int i = 0;
  /* text deltas become token events here while no event of this batch has
   * gone to Lua, so events keep the stream's order */
  int fast = u->tokens;
  if (u->text.oom) {
    lg_buf_free(&u->text);
    lg_buf_init(&u->text);
  }
  lg_buf_reset(&u->text);
  while (ev) {
    lg_http_event *nx = ev->next;
    if (fast && !ev->is_error) {
      size_t before = u->text.len;
      int r = text_delta(ev->data, ev->len, &u->text);
      if (r > 0 && emit_token(u, u->text.p + before, u->text.len - before) != 0) {
        u->text.len = before; /* no memory for the event: Lua makes it */
        r = -1;
      }
      if (r >= 0) {
        free(ev);
        ev = nx;
        continue;
      }
      fast = 0;
    }
    if (ev->is_error) {
      lua_createtable(L, 0, 1);
      lg_set_lstr(L, "error", ev->data, ev->len);
    } else {
      lua_pushlstring(L, ev->data, ev->len);
    }
    free(ev);
    if (i == 0) {
      lua_newtable(L);
      lua_replace(L, list);
    }
    lua_rawseti(L, list, ++i);
    ev = nx;
  }
  lua_pushboolean(L, stop);
  lua_pushboolean(L, interrupted);
  if (u->text.len)
    lua_pushlstring(L, u->text.p, u->text.len);
  else
    lua_pushnil(L);
  return 5;
}

static int l_http_result(lua_State *L) {
  lg_http *h = check_http(L);
  lg_http_result r;
  lg_http_info(h, &r);
  lua_createtable(L, 0, 10);
  lg_set_int(L, "status", r.status);
  if (r.content_type) {
    lg_set_str(L, "content_type", r.content_type);
  }
  lg_set_lstr(L, "headers_raw", r.headers, r.headers_len);
  lg_set_lstr(L, "body", r.body, r.body_len);
  lg_set_bool(L, "done", r.done);
  lg_set_bool(L, "sse", r.sse);
  lg_set_bool(L, "sse_pending", r.sse_pending);
  lg_set_bool(L, "body_cut", r.body_cut);
  if (r.error) {
    lg_set_str(L, "error", r.error);
    lg_set_str(L, "error_kind", r.error_kind);
  }
  return 1;
}

static int l_http_close(lua_State *L) {
  ud_free(luaL_checkudata(L, 1, HTTP_MT));
  return 0;
}

static const luaL_Reg http_methods[] = {
    {"poll", l_http_poll}, {"result", l_http_result}, {"close", l_http_close}, {NULL, NULL}};

const luaL_Reg lg_bind_http_funcs[] = {{"http_start", l_http_start}, {NULL, NULL}};

void lg_bind_http_open(lua_State *L) { lg_open_handle_mt(L, HTTP_MT, http_methods, l_http_close); }
