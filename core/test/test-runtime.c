/*
 * test-runtime.c - the embedding API of rage.h: a runtime on the host's loop, an app loaded
 * from a directory, requests handed in without sockets, C functions registered for Lua, and a
 * clean close that leaves no handle on the host's loop.
 */
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "rage.h"
#include "test.h"

typedef struct {
  int status;
  char body[1024];
  char ctype[128];
  char request_id[160];
  int request_ids; /* X-Request-Id headers in the answer */
  int calls;
} answer_t;

static void on_response(const rage_response_t *res, void *data) {
  answer_t *a = data;
  a->calls++;
  a->status = res->status;
  snprintf(a->body, sizeof(a->body), "%.*s", (int)res->body_len, res->body);
  for (size_t i = 0; i < res->nheaders; i++) {
    const rage_header_t *h = &res->headers[i];
    if (h->name_len == 12 && strncmp(h->name, "content-type", 12) == 0)
      snprintf(a->ctype, sizeof(a->ctype), "%.*s", (int)h->value_len, h->value);
    if (h->name_len == 12 && strncasecmp(h->name, "x-request-id", 12) == 0) {
      snprintf(a->request_id, sizeof(a->request_id), "%.*s", (int)h->value_len, h->value);
      a->request_ids++;
    }
  }
}

static void ask_with(rage_runtime_t *rt, uv_loop_t *loop, const char *method, const char *target,
                     const char *request_id, answer_t *a) {
  rage_header_t hs[] = {{"Host", 4, "test", 4}, {"X-Request-Id", 12, request_id, 0}};
  if (request_id) hs[1].value_len = strlen(request_id);
  rage_request_t req = {method, target, hs, request_id ? 2 : 1, NULL, 0};
  memset(a, 0, sizeof(*a));
  ASSERT_EQ(rage_runtime_dispatch(rt, &req, on_response, a), 0);
  ASSERT_EQ(a->calls, 0); /* never from inside the call */
  while (a->calls == 0) uv_run(loop, UV_RUN_ONCE);
  ASSERT_EQ(a->calls, 1);
}

static void ask(rage_runtime_t *rt, uv_loop_t *loop, const char *method, const char *target,
                answer_t *a) {
  ask_with(rt, loop, method, target, NULL, a);
}

TEST(dispatch_without_sockets) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  rage_runtime_t *rt;
  rage_options_t opts = {0};
  opts.env = "test";
  opts.lua_path = RAGE_LUA_DIR;
  ASSERT_EQ(rage_runtime_new(&rt, &loop, &opts), 0);
  ASSERT_EQ(rage_runtime_load_app(rt, RAGE_SOURCE_DIR "/apps/hello"), 0);
  answer_t a;
  ask(rt, &loop, "GET", "/json", &a);
  ASSERT_EQ(a.status, 200);
  ASSERT_STR(a.body, "{\"message\":\"Hello, World!\"}");
  ASSERT_STR(a.ctype, "application/json; charset=utf-8");
  ask(rt, &loop, "GET", "/hello/rage", &a);
  ASSERT_EQ(a.status, 200);
  ASSERT(strstr(a.body, "Hello, rage!") != NULL);
  ask(rt, &loop, "GET", "/sleep?ms=20", &a);
  ASSERT_EQ(a.status, 200);
  ask(rt, &loop, "GET", "/error", &a);
  ASSERT_EQ(a.status, 500);
  ASSERT_STR(a.body, "Internal Server Error\n"); /* no traceback to clients */
  ask(rt, &loop, "GET", "/nowhere", &a);
  ASSERT_EQ(a.status, 404);
  ask(rt, &loop, "DELETE", "/json", &a);
  ASSERT_EQ(a.status, 405);
  ask(rt, &loop, "GET", "/stream?n=2", &a);
  ASSERT_EQ(a.status, 200);
  ASSERT_STR(a.body, "chunk 1\nchunk 2\n");
  ASSERT_EQ(a.request_ids, 1); /* streamed answers carry the request id too */
  /* Every answer carries one X-Request-Id: the host's own when it is safe, else a new one. */
  ask_with(rt, &loop, "GET", "/json", "host-id-1", &a);
  ASSERT_EQ(a.request_ids, 1);
  ASSERT_STR(a.request_id, "host-id-1");
  ask_with(rt, &loop, "GET", "/nowhere", "not safe!", &a);
  ASSERT_EQ(a.request_ids, 1);
  ASSERT(strcmp(a.request_id, "not safe!") != 0);
  ASSERT(strchr(a.request_id, '-') != NULL);
  rage_runtime_free(rt);
  ASSERT_LOOP_CLOSES(&loop);
}

static int add(lua_State *L) {
  lua_pushnumber(L, lua_tonumber(L, 1) + lua_tonumber(L, 2));
  return 1;
}

TEST(register_c_function) {
  rage_runtime_t *rt;
  rage_options_t opts = {0};
  opts.lua_path = RAGE_LUA_DIR;
  ASSERT_EQ(rage_runtime_new(&rt, NULL, &opts), 0);
  ASSERT_EQ(rage_runtime_register(rt, "add", add), 0);
  ASSERT_EQ(rage_runtime_register(rt, "", add), RAGE_EINVAL);
  char path[] = "/tmp/rage-test-XXXXXX";
  int fd = mkstemp(path);
  const char code[] = "return rage.c.add(40, 2)";
  ASSERT_EQ(write(fd, code, sizeof(code) - 1), (long long)(sizeof(code) - 1));
  close(fd);
  int status = 0;
  ASSERT_EQ(rage_runtime_exec(rt, path, 0, NULL, &status), 0);
  unlink(path);
  ASSERT_EQ(status, 42);
  rage_runtime_free(rt);
}

TEST(boot_errors_are_readable) {
  rage_runtime_t *rt;
  rage_options_t opts = {0};
  opts.lua_path = RAGE_LUA_DIR;
  ASSERT_EQ(rage_runtime_new(&rt, NULL, &opts), 0);
  char dir[] = "/tmp/rage-app-XXXXXX";
  ASSERT(mkdtemp(dir) != NULL);
  char path[512];
  snprintf(path, sizeof(path), "%s/config", dir);
  mkdir(path, 0755);
  snprintf(path, sizeof(path), "%s/config/routes.lua", dir);
  FILE *f = fopen(path, "w");
  fputs("return function(r)\n  r:get('/x' 'oops')\nend\n", f);
  fclose(f);
  ASSERT_EQ(rage_runtime_load_app(rt, dir), RAGE_EBOOT);
  ASSERT(strstr(rage_runtime_error(rt), "routes.lua:2:") != NULL);
  unlink(path);
  snprintf(path, sizeof(path), "%s/config", dir);
  rmdir(path);
  rmdir(dir);
  rage_runtime_free(rt);
}

TEST(strerror_names_codes) {
  ASSERT_STR(rage_strerror(RAGE_EBOOT), "app failed to boot");
  ASSERT_STR(rage_strerror(UV_EADDRINUSE), "address already in use");
  ASSERT_STR(rage_strerror(0), "success");
}

int main(int argc, char **argv) {
  static const test_entry_t tests[] = {
      TEST_ENTRY(dispatch_without_sockets), TEST_ENTRY(register_c_function),
      TEST_ENTRY(boot_errors_are_readable), TEST_ENTRY(strerror_names_codes), {NULL, NULL}};
  return test_main(argc, argv, tests);
}
