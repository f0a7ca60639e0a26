/*
 * embed-host - a C program that embeds rage-lua through core/include/rage.h alone.
 *
 * It runs rage on a libuv loop it owns, exposes one of its own C functions to Lua as
 * rage.c.greet, loads a small app, hands requests in without any socket and checks the answers.
 * With --listen PORT it then serves the same app over HTTP until SIGINT or SIGTERM.
 *
 *   embed-host APP_DIR [--listen PORT]
 */
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rage.h"

/* rage.c.greet(name) -> "Hello from C, <name>!" (runs in the caller's fiber; never blocks). */
static int greet(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  lua_pushfstring(L, "Hello from C, %s!", name);
  return 1;
}

typedef struct {
  int status;
  char body[512];
  int done;
} answer_t;

static void on_response(const rage_response_t *res, void *data) {
  answer_t *a = data;
  a->status = res->status;
  size_t n = res->body_len < sizeof(a->body) - 1 ? res->body_len : sizeof(a->body) - 1;
  memcpy(a->body, res->body, n);
  a->body[n] = '\0';
  a->done = 1;
}

static int ask(rage_runtime_t *rt, uv_loop_t *loop, const char *method, const char *target,
               answer_t *a) {
  rage_header_t host = {"Host", 4, "embedded", 8};
  rage_request_t req = {method, target, &host, 1, NULL, 0};
  memset(a, 0, sizeof(*a));
  int r = rage_runtime_dispatch(rt, &req, on_response, a);
  if (r != 0) {
    fprintf(stderr, "embed-host: dispatch failed: %s\n", rage_strerror(r));
    return r;
  }
  while (!a->done) uv_run(loop, UV_RUN_ONCE);
  printf("%s %s -> %d %s\n", method, target, a->status, a->body);
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: embed-host APP_DIR [--listen PORT]\n");
    return 2;
  }
  uv_loop_t loop;
  uv_loop_init(&loop);
  rage_runtime_t *rt;
  rage_options_t opts = {0};
  opts.env = "test";
  if (rage_runtime_new(&rt, &loop, &opts) != 0) {
    fprintf(stderr, "embed-host: %s\n", rage_runtime_error(NULL));
    return 1;
  }
  rage_runtime_register(rt, "greet", greet);
  if (rage_runtime_load_app(rt, argv[1]) != 0) {
    fprintf(stderr, "embed-host: %s\n", rage_runtime_error(rt));
    rage_runtime_free(rt);
    return 1;
  }
  answer_t a;
  int failures = 0;
  if (ask(rt, &loop, "GET", "/greet/world", &a) || a.status != 200 ||
      strstr(a.body, "Hello from C, world!") == NULL)
    failures++;
  if (ask(rt, &loop, "GET", "/wait?ms=20", &a) || a.status != 200) failures++;
  if (ask(rt, &loop, "GET", "/missing", &a) || a.status != 404) failures++;

  if (argc >= 4 && strcmp(argv[2], "--listen") == 0) {
    int r = rage_runtime_listen(rt, "127.0.0.1", atoi(argv[3]), 0);
    if (r != 0) {
      fprintf(stderr, "embed-host: listen: %s\n", rage_strerror(r));
      failures++;
    } else {
      fprintf(stderr, "embed-host listening on http://127.0.0.1:%d\n", rage_runtime_port(rt));
      rage_runtime_handle_signals(rt);
      uv_run(&loop, UV_RUN_DEFAULT);
    }
  }
  rage_runtime_free(rt);
  int closed = uv_loop_close(&loop);
  if (closed != 0) {
    fprintf(stderr, "embed-host: the loop still has handles after rage_runtime_free\n");
    failures++;
  }
  printf("%d passed, %d failed\n", 3 - (failures > 3 ? 3 : failures), failures);
  return failures ? 1 : 0;
}
