/*
 * runtime.c - the runtime of rage.h: creating the Lua state with the rage framework, running
 * boot code and scripts in fibers, connecting the server to the app's Lua handler, stopping
 * gracefully and closing everything.
 */
#include "runtime.h"

#include <lauxlib.h>
#include <lualib.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "log.h"

void rage_server_config_init(rage_server_config_t *cfg) {
  cfg->max_request_line = RAGE_DEFAULT_MAX_REQUEST_LINE;
  cfg->max_header_size = RAGE_DEFAULT_MAX_HEADER_SIZE;
  cfg->max_headers = RAGE_DEFAULT_MAX_HEADERS;
  cfg->max_body = RAGE_DEFAULT_MAX_BODY;
  cfg->body_buffer = RAGE_DEFAULT_BODY_BUFFER;
  cfg->max_chunk_ext = RAGE_DEFAULT_MAX_CHUNK_EXT;
  cfg->header_timeout = RAGE_DEFAULT_HEADER_TIMEOUT;
  cfg->body_idle_timeout = RAGE_DEFAULT_BODY_IDLE_TIMEOUT;
  cfg->request_timeout = RAGE_DEFAULT_REQUEST_TIMEOUT;
  cfg->keepalive_timeout = RAGE_DEFAULT_KEEPALIVE_TIMEOUT;
  cfg->max_requests = RAGE_DEFAULT_MAX_REQUESTS;
  cfg->send_timeout = RAGE_DEFAULT_SEND_TIMEOUT;
  cfg->output_high_water = RAGE_DEFAULT_OUTPUT_HIGH_WATER;
  cfg->max_connections = RAGE_DEFAULT_MAX_CONNECTIONS;
  cfg->drain_timeout = RAGE_DEFAULT_DRAIN_TIMEOUT;
  cfg->request_id = 1;
  cfg->body_limits = NULL;
  cfg->nbody_limits = 0;
}

/* Runs a job under xpcall and hands (result, ok, value) to the C reporter. Error objects that
 * are tables (rage errors) pass through; anything else gets a traceback. */
static const char trampoline_src[] =
    "local xpcall, traceback, tostring, type, report = xpcall, debug.traceback, tostring, type, ...\n"
    "local function handler(e)\n"
    "  if type(e) == 'table' then return e end\n"
    "  return traceback(tostring(e), 2)\n"
    "end\n"
    "return function(result, fn, ...)\n"
    "  report(result, xpcall(fn, handler, ...))\n"
    "end\n";

typedef struct {
  int done;
  int ok;
  int status;
} job_result_t;

static char last_error[4096];

static int report(lua_State *L) {
  job_result_t *res = lua_touserdata(L, 1);
  res->done = 1;
  res->ok = lua_toboolean(L, 2);
  if (res->ok) {
    res->status = lua_isnumber(L, 3) ? (int)lua_tointeger(L, 3) : 0;
    return 0;
  }
  const char *msg = NULL;
  if (lua_istable(L, 3)) {
    lua_getfield(L, 3, "message");
    msg = lua_tostring(L, -1);
  } else {
    msg = lua_tostring(L, 3);
  }
  snprintf(last_error, sizeof(last_error), "%s", msg ? msg : "(error object is not a string)");
  return 0;
}

const char *rage_runtime_error(rage_runtime_t *rt) {
  (void)rt;
  return last_error;
}

static void on_job_done(rage__fiber_t *f, void *data, int failed) {
  job_result_t *res = data;
  if (!res->done) {
    res->done = 1;
    res->ok = 0;
    snprintf(last_error, sizeof(last_error), "the job ended without reporting (see the log)");
  }
}

/* Runs the function on top of rt->L with `nargs` arguments below it in a fiber, and drives
 * the loop until it finishes. */
static int run_job(rage_runtime_t *rt, int nargs, job_result_t *res) {
  lua_State *L = rt->L;
  memset(res, 0, sizeof(*res));
  rage__fiber_t *f = rage__fiber_acquire(rt->sched, nargs + 2);
  lua_rawgeti(f->L, LUA_REGISTRYINDEX, rt->trampoline_ref);
  lua_pushlightuserdata(f->L, res);
  lua_xmove(L, f->L, nargs + 1);
  rage__fiber_start(f, nargs + 2, on_job_done, res);
  while (!res->done) {
    if (uv_run(rt->loop, UV_RUN_ONCE) == 0 && !res->done) {
      snprintf(last_error, sizeof(last_error), "the job is waiting on nothing and cannot finish");
      return RAGE_ESTATE;
    }
  }
  return res->ok ? 0 : RAGE_ELUA;
}

static int open_core(lua_State *L) {
  return rage__bind_open(L);
}

int rage_runtime_new(rage_runtime_t **out, uv_loop_t *loop, const rage_options_t *opts) {
  rage_options_t none = {0};
  if (opts == NULL) opts = &none;
  rage_runtime_t *rt = rage__calloc(1, sizeof(*rt));
  if (loop == NULL) {
    int r = uv_loop_init(&rt->own_loop);
    if (r) {
      free(rt);
      return r;
    }
    rt->loop = &rt->own_loop;
    rt->owns_loop = 1;
  } else {
    rt->loop = loop;
  }
  rage_server_config_init(&rt->cfg);
  rt->handler_ref = LUA_NOREF;
  const char *env = opts->env ? opts->env : getenv("RAGE_ENV");
  if (env == NULL || *env == '\0') env = "development";
  snprintf(rt->env, sizeof(rt->env), "%s", env);
  int level = opts->log_level;
  if (level == 0) level = strcmp(rt->env, "production") == 0 ? RAGE_LOG_WARN : RAGE_LOG_INFO;
  rage__log_set_level(level);

  rt->lalloc = rage__lalloc_new();
  lua_State *L = rt->lalloc ? lua_newstate(rage__lalloc, rt->lalloc) : NULL;
  if (L == NULL) {
    rage__lalloc_free(rt->lalloc);
    if (rt->owns_loop) uv_loop_close(&rt->own_loop);
    free(rt);
    return UV_ENOMEM;
  }
  rt->L = L;
  lua_gc(L, LUA_GCSETPAUSE, RAGE_GC_PAUSE);
  luaL_openlibs(L);

  /* package.path: the framework's modules first. */
  const char *dir = opts->lua_path ? opts->lua_path : getenv("RAGE_LUA_PATH");
  if (dir == NULL || *dir == '\0') dir = RAGE_LUA_DIR;
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "path");
  lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;%s", dir, dir, lua_tostring(L, -1));
  lua_setfield(L, -3, "path");
  lua_pop(L, 1);
  /* package.preload["rage.core"] and the table behind rage.c */
  lua_getfield(L, -1, "preload");
  lua_pushlightuserdata(L, rt);
  lua_pushcclosure(L, open_core, 1);
  lua_setfield(L, -2, "rage.core");
  lua_pop(L, 1);
  lua_getfield(L, -1, "loaded");
  lua_newtable(L);
  lua_setfield(L, -2, "rage.c");
  lua_pop(L, 2);

  rt->sched = rage__sched_new(L, rt->loop);
  rt->timers = rage__timers_new(rt->loop);
  if (luaL_loadbuffer(L, trampoline_src, sizeof(trampoline_src) - 1, "=rage.job") != 0) abort();
  lua_pushcfunction(L, report);
  lua_call(L, 1, 1);
  rt->trampoline_ref = luaL_ref(L, LUA_REGISTRYINDEX);

  /* The framework: defines the global `rage`. */
  lua_getglobal(L, "require");
  lua_pushliteral(L, "rage");
  if (lua_pcall(L, 1, 0, 0) != 0) {
    snprintf(last_error, sizeof(last_error), "cannot load the rage Lua framework from %s: %s", dir,
             lua_tostring(L, -1));
    rage__log(RAGE_LOG_ERROR, "%s", last_error);
    lua_pop(L, 1);
    rage_runtime_free(rt);
    return RAGE_ELUA;
  }
  *out = rt;
  return 0;
}

uv_loop_t *rage_runtime_loop(rage_runtime_t *rt) {
  return rt->loop;
}

lua_State *rage_runtime_lua(rage_runtime_t *rt) {
  return rt->L;
}

rage_server_config_t *rage_runtime_server_config(rage_runtime_t *rt) {
  return &rt->cfg;
}

int rage_runtime_register(rage_runtime_t *rt, const char *name, lua_CFunction fn) {
  lua_State *L = rt->L;
  if (name == NULL || *name == '\0' || fn == NULL) return RAGE_EINVAL;
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "loaded");
  lua_getfield(L, -1, "rage.c");
  lua_pushcfunction(L, fn);
  lua_setfield(L, -2, name);
  lua_pop(L, 3);
  return 0;
}

int rage_runtime_load_app(rage_runtime_t *rt, const char *dir) {
  lua_State *L = rt->L;
  job_result_t res;
  lua_getglobal(L, "require");
  lua_pushliteral(L, "rage.app");
  if (lua_pcall(L, 1, 1, 0) != 0) {
    snprintf(last_error, sizeof(last_error), "%s", lua_tostring(L, -1));
    lua_pop(L, 1);
    return RAGE_EBOOT;
  }
  lua_getfield(L, -1, "boot");
  lua_remove(L, -2);
  lua_pushstring(L, dir);
  if (run_job(rt, 1, &res) != 0) return RAGE_EBOOT;
  if (rt->handler_ref == LUA_NOREF) {
    snprintf(last_error, sizeof(last_error), "the app did not install a request handler");
    return RAGE_EBOOT;
  }
  return 0;
}

int rage_runtime_exec(rage_runtime_t *rt, const char *path, int argc, char **argv, int *status) {
  lua_State *L = rt->L;
  job_result_t res;
  if (luaL_loadfile(L, path) != 0) {
    snprintf(last_error, sizeof(last_error), "%s", lua_tostring(L, -1));
    lua_pop(L, 1);
    return RAGE_ELUA;
  }
  for (int i = 0; i < argc; i++) lua_pushstring(L, argv[i]);
  int r = run_job(rt, argc, &res);
  if (r == 0 && status) *status = res.status;
  return r;
}

int rage_runtime_call(rage_runtime_t *rt, const char *module, const char *func, int argc,
                      char **argv, int *status) {
  lua_State *L = rt->L;
  job_result_t res;
  lua_getglobal(L, "require");
  lua_pushstring(L, module);
  if (lua_pcall(L, 1, 1, 0) != 0) {
    snprintf(last_error, sizeof(last_error), "%s", lua_tostring(L, -1));
    lua_pop(L, 1);
    return RAGE_ELUA;
  }
  lua_getfield(L, -1, func);
  lua_remove(L, -2);
  if (!lua_isfunction(L, -1)) {
    lua_pop(L, 1);
    snprintf(last_error, sizeof(last_error), "%s has no function %s", module, func);
    return RAGE_EINVAL;
  }
  for (int i = 0; i < argc; i++) lua_pushstring(L, argv[i]);
  int r = run_job(rt, argc, &res);
  if (r == 0 && status) *status = res.status;
  return r;
}

/* ---- requests --------------------------------------------------------------------------- */

static void on_request_done(rage__fiber_t *f, void *data, int failed) {
  rage__req_job_done(data, failed);
}

rage__req_t *rage__runtime_current_request(rage_runtime_t *rt) {
  rage__fiber_t *f = rage__fiber_current(rt->sched);
  return f && f->done == on_request_done ? f->done_data : NULL;
}

/* The method name as a Lua string: parsed methods come from strings made once (interning a new
 * copy of "GET" for every request costs more than fetching it). */
static void push_method(rage_runtime_t *rt, lua_State *L, const rage__req_t *req) {
  int id = req->method_id;
  if (id < 0 || id >= RAGE_METHOD_REFS) {
    lua_pushlstring(L, req->method, req->method_len);
    return;
  }
  if (rt->method_refs[id] == 0) {
    lua_pushlstring(L, req->method, req->method_len);
    rt->method_refs[id] = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->method_refs[id]);
}

static void start_request(rage_runtime_t *rt, rage__req_t *req) {
  if (rt->handler_ref == LUA_NOREF) {
    static const char body[] = "Service Unavailable: no app loaded\n";
    const char *err;
    rage__req_respond(req, 503, NULL, 0, body, sizeof(body) - 1, &err);
    rage__req_job_done(req, 0);
    return;
  }
  rage__fiber_t *f = rage__fiber_acquire(rt->sched, 4);
  lua_State *L = f->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->handler_ref);
  rage__bind_push_box(rt, L, req);
  push_method(rt, L, req);
  lua_pushlstring(L, req->target, req->path_len);
  if (req->path_len < req->target_len)
    lua_pushlstring(L, req->target + req->path_len + 1, req->target_len - req->path_len - 1);
  else
    lua_pushnil(L);
  req->fiber = f;
  rage__fiber_start(f, 4, on_request_done, req);
}

static void on_server_request(rage__server_t *s, rage__req_t *req) {
  start_request(s->data, req);
}

typedef struct {
  rage_runtime_t *rt;
  rage__req_t *req;
} handin_t;

static void start_handin(void *data) {
  handin_t *h = data;
  rage_runtime_t *rt = h->rt;
  rage__req_t *req = h->req;
  free(h);
  start_request(rt, req);
}

int rage_runtime_dispatch(rage_runtime_t *rt, const rage_request_t *in, rage_response_cb cb,
                          void *data) {
  if (in == NULL || in->method == NULL || in->target == NULL || cb == NULL) return RAGE_EINVAL;
  if (in->target[0] != '/') return RAGE_EINVAL;
  if (rt->pools.rbuf_size == 0) rage__pools_init(&rt->pools, &rt->cfg);
  rage__req_t *req = rage__req_new(&rt->pools);
  req->method_len = strlen(in->method);
  req->method = rage__arena_strndup(&req->arena, in->method, req->method_len);
  req->method_id = -1;
  req->target_len = strlen(in->target);
  req->target = rage__arena_strndup(&req->arena, in->target, req->target_len);
  const char *q = strchr(req->target, '?');
  req->path_len = q ? (size_t)(q - req->target) : req->target_len;
  req->headers = rage__arena_alloc(&req->arena, (in->nheaders ? in->nheaders : 1) * sizeof(rage_header_t));
  req->nheaders = (unsigned)in->nheaders;
  for (size_t i = 0; i < in->nheaders; i++) {
    req->headers[i].name = rage__arena_strndup(&req->arena, in->headers[i].name, in->headers[i].name_len);
    req->headers[i].name_len = in->headers[i].name_len;
    req->headers[i].value = rage__arena_strndup(&req->arena, in->headers[i].value, in->headers[i].value_len);
    req->headers[i].value_len = in->headers[i].value_len;
  }
  if (in->body_len) rage__req_body_append(req, in->body, in->body_len, SIZE_MAX);
  req->want_id = rt->cfg.request_id != 0;
  const rage_header_t *rid = rage__req_header(req, "x-request-id", 12);
  if (rid) rage__req_take_id(req, rid->value, rid->value_len);
  req->http_major = 1;
  req->http_minor = 1;
  req->head_only = strcmp(req->method, "HEAD") == 0;
  req->cb = cb;
  req->cb_data = data;
  req->start_ms = uv_now(rt->loop);
  handin_t *h = rage__malloc(sizeof(*h));
  h->rt = rt;
  h->req = req;
  rage__sched_defer(rt->sched, start_handin, h);
  return 0;
}

/* ---- serving ---------------------------------------------------------------------------- */

int rage_runtime_listen(rage_runtime_t *rt, const char *host, int port, int reuseport) {
  if (rt->server_started) return RAGE_ESTATE;
  if (rt->pools.rbuf_size == 0) rage__pools_init(&rt->pools, &rt->cfg);
  rage__server_init(&rt->server, rt->loop, rt->sched, &rt->cfg, &rt->pools, on_server_request, rt);
  int r = rage__server_listen(&rt->server, host ? host : "127.0.0.1", port, reuseport);
  if (r == 0) rt->server_started = 1;
  return r;
}

int rage_runtime_port(rage_runtime_t *rt) {
  return rt->server_started ? rt->server.port : 0;
}

int rage_runtime_run(rage_runtime_t *rt) {
  uv_run(rt->loop, UV_RUN_DEFAULT);
  return 0;
}

static void on_fibers_overdue(uv_timer_t *t) {
  rage_runtime_t *rt = t->data;
  rage__log(RAGE_LOG_WARN, "shutdown: cancelling %u fiber(s) still running",
            rage__sched_active(rt->sched));
  rage__sched_cancel_all(rt->sched);
}

/* Connections are closed; fibers that outlive their requests (detached work) get what is left
 * of the drain time, then are cancelled. The timer does not keep the loop alive by itself. */
static void on_drained(rage__server_t *s) {
  rage_runtime_t *rt = s->data;
  rage__log(RAGE_LOG_INFO, "all connections closed");
  if (rage__sched_active(rt->sched) == 0 || rt->fiber_timer_on) return;
  uint64_t now = uv_now(rt->loop);
  uv_timer_init(rt->loop, &rt->fiber_timer);
  rt->fiber_timer.data = rt;
  rt->fiber_timer_on = 1;
  uv_timer_start(&rt->fiber_timer, on_fibers_overdue, rt->stop_deadline > now ? rt->stop_deadline - now : 0, 0);
  uv_unref((uv_handle_t *)&rt->fiber_timer);
}

void rage_runtime_stop(rage_runtime_t *rt) {
  rt->stops++;
  if (rt->stops == 1) {
    rage__log(RAGE_LOG_INFO, "shutting down: finishing in-flight requests (at most %llu ms)",
              (unsigned long long)rt->cfg.drain_timeout);
    rt->stop_deadline = uv_now(rt->loop) + rt->cfg.drain_timeout;
    if (rt->server_started) rage__server_drain(&rt->server, on_drained);
  } else {
    rage__log(RAGE_LOG_WARN, "shutting down now");
    if (rt->server_started) rage__server_close(&rt->server);
    rage__sched_cancel_all(rt->sched);
  }
  if (rt->signals) {
    /* Let the loop end once the drain is over, even though the signal handlers stay. */
    uv_unref((uv_handle_t *)&rt->sigterm);
    uv_unref((uv_handle_t *)&rt->sigint);
  }
}

static void on_signal(uv_signal_t *h, int signum) {
  rage_runtime_stop(h->data);
}

int rage_runtime_handle_signals(rage_runtime_t *rt) {
  if (rt->signals) return 0;
  uv_signal_init(rt->loop, &rt->sigterm);
  uv_signal_init(rt->loop, &rt->sigint);
  rt->sigterm.data = rt->sigint.data = rt;
  int r = uv_signal_start(&rt->sigterm, on_signal, SIGTERM);
  if (r == 0) r = uv_signal_start(&rt->sigint, on_signal, SIGINT);
  uv_unref((uv_handle_t *)&rt->sigterm);
  uv_unref((uv_handle_t *)&rt->sigint);
  rt->signals = 1;
  return r;
}

static void report_handle(uv_handle_t *h, void *arg) {
  rage__log(RAGE_LOG_WARN, "handle left open at close: %s", uv_handle_type_name(h->type));
}

void rage_runtime_free(rage_runtime_t *rt) {
  if (rt->server_started) rage__server_close(&rt->server);
  if (rt->sched) rage__sched_cancel_all(rt->sched);
  if (rt->signals) {
    uv_close((uv_handle_t *)&rt->sigterm, NULL);
    uv_close((uv_handle_t *)&rt->sigint, NULL);
  }
  if (rt->fiber_timer_on) uv_close((uv_handle_t *)&rt->fiber_timer, NULL);
  if (rt->sched) rage__sched_free(rt->sched);
  if (rt->timers) rage__timers_free(rt->timers);
  /* Close callbacks free connections (returning their buffers to the pools) and timers. */
  uv_run(rt->loop, UV_RUN_NOWAIT);
  uv_run(rt->loop, UV_RUN_NOWAIT);
  if (rt->L) lua_close(rt->L);
  /* Finalizers close the handles of idle pooled connections (rage.db, rage.http); their close
   * callbacks free C memory only. */
  uv_run(rt->loop, UV_RUN_NOWAIT);
  rage__lalloc_free(rt->lalloc);
  rage__pools_free(&rt->pools);
  rage__bind_free_body_limits(&rt->cfg);
  if (rt->owns_loop) {
    if (uv_loop_close(&rt->own_loop) != 0) {
      uv_walk(&rt->own_loop, report_handle, NULL);
      uv_run(&rt->own_loop, UV_RUN_NOWAIT);
      uv_loop_close(&rt->own_loop);
    }
  }
  free(rt);
}
