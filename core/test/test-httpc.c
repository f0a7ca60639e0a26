/*
 * test-httpc.c - the outbound HTTP client against a small libuv server running on the same
 * loop as the runtime: connection reuse, a runtime closed with connections in its pool,
 * cancellation while waiting and while the response is already in the socket, responses split
 * across reads (parser state kept between them, obs-fold detected at a read boundary), and
 * calls from outside a fiber. Every test ends by proving the loop closes with no handle left
 * and no file descriptor leaked.
 */
#define _GNU_SOURCE /* memmem */
#include <dirent.h>
#include <lauxlib.h>
#include <unistd.h>

#include "runtime.h"
#include "test.h"

enum { RESPOND, SILENT, RESPOND_THEN_CANCEL, SPLIT };

typedef struct {
  uv_tcp_t listener;
  int port;
  int mode;
  int accepted, requests, closed;
  const char *response;   /* whole response, or the first piece in SPLIT mode */
  const char *response2;  /* the second piece in SPLIT mode */
  uv_timer_t split_timer;
  uv_stream_t *split_conn;
} upstream_t;

typedef struct {
  uv_tcp_t tcp;
  upstream_t *up;
  char buf[8192];
  size_t len;
} sconn_t;

static uv_loop_t loop;
static rage_runtime_t *rt;
static upstream_t up;
static int fds_at_start;

static int fd_count(void) {
  int n = 0;
  DIR *d = opendir("/proc/self/fd");
  ASSERT(d != NULL);
  while (readdir(d)) n++;
  closedir(d);
  return n;
}

static void on_sconn_closed(uv_handle_t *h) {
  up.closed++;
  free(h->data);
}

static void write_str(uv_stream_t *s, const char *str) {
  uv_buf_t b = uv_buf_init((char *)str, (unsigned)strlen(str));
  ASSERT_EQ(uv_try_write(s, &b, 1), (long long)strlen(str));
}

static void on_split_timer(uv_timer_t *t) {
  write_str(up.split_conn, up.response2);
}

static void call_lua_global(const char *name) {
  lua_State *L = rage_runtime_lua(rt);
  lua_getglobal(L, name);
  ASSERT(lua_isfunction(L, -1));
  if (lua_pcall(L, 0, 0, 0) != 0) {
    fprintf(stderr, "%s failed: %s\n", name, lua_tostring(L, -1));
    exit(1);
  }
}

static void on_sread(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  sconn_t *c = s->data;
  if (nread < 0) {
    uv_close((uv_handle_t *)s, on_sconn_closed);
    return;
  }
  c->len += (size_t)nread;
  char *end;
  while ((end = memmem(c->buf, c->len, "\r\n\r\n", 4)) != NULL) {
    size_t used = (size_t)(end + 4 - c->buf);
    memmove(c->buf, c->buf + used, c->len - used);
    c->len -= used;
    up.requests++;
    if (up.mode == SILENT) continue;
    write_str(s, up.response);
    if (up.mode == SPLIT) {
      up.split_conn = s;
      uv_timer_start(&up.split_timer, on_split_timer, 30, 0);
    }
    /* The response is in the client's socket, unread: cancel its fiber right now. */
    if (up.mode == RESPOND_THEN_CANCEL) call_lua_global("cancel_it");
  }
}

static void on_salloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  sconn_t *c = h->data;
  *buf = uv_buf_init(c->buf + c->len, (unsigned)(sizeof(c->buf) - c->len));
}

static void on_connection(uv_stream_t *server, int status) {
  ASSERT_EQ(status, 0);
  sconn_t *c = calloc(1, sizeof(*c));
  c->up = &up;
  uv_tcp_init(&loop, &c->tcp);
  c->tcp.data = c;
  ASSERT_EQ(uv_accept(server, (uv_stream_t *)&c->tcp), 0);
  up.accepted++;
  uv_read_start((uv_stream_t *)&c->tcp, on_salloc, on_sread);
}

static void setup(int mode, const char *response, const char *response2) {
  /* libuv opens a process-wide pipe with the first loop; count descriptors after that. */
  uv_loop_t first;
  uv_loop_init(&first);
  uv_loop_close(&first);
  fds_at_start = fd_count();
  ASSERT_EQ(uv_loop_init(&loop), 0);
  memset(&up, 0, sizeof(up));
  up.mode = mode;
  up.response = response;
  up.response2 = response2;
  uv_tcp_init(&loop, &up.listener);
  uv_timer_init(&loop, &up.split_timer);
  struct sockaddr_in addr;
  uv_ip4_addr("127.0.0.1", 0, &addr);
  ASSERT_EQ(uv_tcp_bind(&up.listener, (const struct sockaddr *)&addr, 0), 0);
  ASSERT_EQ(uv_listen((uv_stream_t *)&up.listener, 16, on_connection), 0);
  struct sockaddr_storage name;
  int len = sizeof(name);
  uv_tcp_getsockname(&up.listener, (struct sockaddr *)&name, &len);
  up.port = ntohs(((struct sockaddr_in *)&name)->sin_port);
  rage_options_t opts = {0};
  opts.env = "test";
  opts.lua_path = RAGE_LUA_DIR;
  ASSERT_EQ(rage_runtime_new(&rt, &loop, &opts), 0);
}

/* Frees the runtime, waits until the server saw every client connection close, and proves
 * that nothing is left: no handle on the loop, no file descriptor open. */
static void teardown(void) {
  rage_runtime_free(rt);
  for (int i = 0; i < 100 && up.closed < up.accepted; i++) uv_run(&loop, UV_RUN_NOWAIT), usleep(1000);
  ASSERT_EQ(up.closed, up.accepted);
  uv_close((uv_handle_t *)&up.listener, NULL);
  uv_close((uv_handle_t *)&up.split_timer, NULL);
  ASSERT_LOOP_CLOSES(&loop);
  ASSERT_EQ(fd_count(), fds_at_start);
}

/* Runs Lua code (with %d replaced by the upstream's port) as a fiber job; returns its result. */
static int run_lua(const char *fmt) {
  char code[4096];
  snprintf(code, sizeof(code), fmt, up.port, up.port, up.port);
  char path[] = "/tmp/rage-test-XXXXXX";
  int fd = mkstemp(path);
  ASSERT(fd >= 0);
  ASSERT_EQ(write(fd, code, strlen(code)), (long long)strlen(code));
  close(fd);
  int status = -1;
  int r = rage_runtime_exec(rt, path, 0, NULL, &status);
  unlink(path);
  if (r != 0) {
    fprintf(stderr, "lua failed: %s\n", rage_runtime_error(rt));
    exit(1);
  }
  return status;
}

#define OK_RESPONSE "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"

TEST(keepalive_reuse) {
  setup(RESPOND, OK_RESPONSE, NULL);
  int r = run_lua(
      "local url = 'http://127.0.0.1:%d/'\n"
      "assert(rage.http.get(url).body == 'hello')\n"
      "assert(rage.http.get(url).body == 'hello')\n"
      "local s = rage.http.stats()\n"
      "assert(s.opened == 1 and s.reused == 1, rage.json.encode(s))\n"
      "return s.idle\n");
  ASSERT_EQ(r, 1);
  ASSERT_EQ(up.accepted, 1);
  ASSERT_EQ(up.requests, 2);
  /* The runtime closes with a connection in its pool, its handle closed on the way out. */
  teardown();
}

TEST(cancel_while_waiting) {
  setup(SILENT, NULL, NULL);
  int r = run_lua(
      "local h = rage.spawn(function() return rage.http.get('http://127.0.0.1:%d/') end)\n"
      "rage.sleep(0.05)\n"
      "h:cancel()\n"
      "local ok, err = pcall(h.wait, h)\n"
      "assert(not ok and err.kind == 'cancelled', tostring(err))\n"
      "rage.sleep(0.02)\n"
      "return rage.http.stats().idle\n");
  ASSERT_EQ(r, 0);
  ASSERT_EQ(up.requests, 1);
  ASSERT_EQ(up.closed, 1); /* the server saw the cancelled request's connection close */
  teardown();
}

TEST(cancel_with_response_in_socket) {
  setup(RESPOND_THEN_CANCEL, OK_RESPONSE, NULL);
  int r = run_lua(
      "local h = rage.spawn(function() return rage.http.get('http://127.0.0.1:%d/') end)\n"
      "_G.cancel_it = function() h:cancel() end\n"
      "local ok, err = pcall(h.wait, h)\n"
      "assert(not ok and err.kind == 'cancelled', tostring(err))\n"
      "rage.sleep(0.02)\n"
      "local s = rage.http.stats()\n"
      "assert(s.opened == 1, rage.json.encode(s))\n"
      "return s.idle\n");
  ASSERT_EQ(r, 0); /* a cancelled request's connection is never pooled */
  ASSERT_EQ(up.closed, 1);
  teardown();
}

TEST(response_split_across_reads) {
  setup(SPLIT, "HTTP/1.1 200 OK\r\nContent-Le", "ngth: 5\r\nX-Long: abc\r\n\r\nhello");
  int r = run_lua(
      "local res = rage.http.get('http://127.0.0.1:%d/')\n"
      "assert(res.body == 'hello' and res.headers['content-length'] == '5')\n"
      "assert(res.headers['x-long'] == 'abc')\n"
      "return res.status\n");
  ASSERT_EQ(r, 200);
  teardown();
}

TEST(value_split_across_reads) {
  setup(SPLIT, "HTTP/1.1 200 OK\r\nX-Long: ab", "cd\r\nContent-Length: 2\r\n\r\nok");
  int r = run_lua(
      "local res = rage.http.get('http://127.0.0.1:%d/')\n"
      "assert(res.headers['x-long'] == 'abcd', res.headers['x-long'])\n"
      "return #res.body\n");
  ASSERT_EQ(r, 2);
  teardown();
}

TEST(obs_fold_at_read_boundary) {
  setup(SPLIT, "HTTP/1.1 200 OK\r\nX-A: one\r\n", " two\r\nContent-Length: 2\r\n\r\nok");
  int r = run_lua(
      "local ok, err = pcall(rage.http.get, 'http://127.0.0.1:%d/')\n"
      "assert(not ok and err.kind == 'http.protocol', tostring(err))\n"
      "return 1\n");
  ASSERT_EQ(r, 1);
  teardown();
}

TEST(framing_conflict) {
  setup(RESPOND, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", NULL);
  int r = run_lua(
      "local ok, err = pcall(rage.http.get, 'http://127.0.0.1:%d/')\n"
      "assert(not ok and err.kind == 'http.protocol', tostring(err))\n"
      "return rage.http.stats().idle\n");
  ASSERT_EQ(r, 0);
  teardown();
}

TEST(outside_a_fiber) {
  setup(RESPOND, OK_RESPONSE, NULL);
  lua_State *L = rage_runtime_lua(rt);
  ASSERT(luaL_dostring(L, "return rage.http.get('http://127.0.0.1:1/')") != 0);
  ASSERT(strstr(lua_tostring(L, -1), "inside a fiber") != NULL);
  lua_pop(L, 1);
  teardown();
}

int main(int argc, char **argv) {
  static const test_entry_t tests[] = {
      TEST_ENTRY(keepalive_reuse),
      TEST_ENTRY(cancel_while_waiting),
      TEST_ENTRY(cancel_with_response_in_socket),
      TEST_ENTRY(response_split_across_reads),
      TEST_ENTRY(value_split_across_reads),
      TEST_ENTRY(obs_fold_at_read_boundary),
      TEST_ENTRY(framing_conflict),
      TEST_ENTRY(outside_a_fiber),
      {NULL, NULL},
  };
  return test_main(argc, argv, tests);
}
