/*
 * flood.c - rage-flood: opens many HTTP connections at once and sends one request on each.
 *
 *   rage-flood --port P [--host 127.0.0.1] [--path /] [--connections N]
 *              [--connect-concurrency C] [--timeout SECONDS]
 *
 * All N connections are opened first (at most C connects in progress at any time, so the listen
 * backlog of the server under test is not overrun); then every connection sends one GET (with
 * Connection: close) in a single burst, so all N requests are in flight together. A connection
 * counts as ok when a complete 200 response arrives. Prints "N ok, N failed" on
 * stdout (details on stderr) and exits 0 only if every request succeeded.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <uv.h>

typedef struct conn {
  uv_tcp_t tcp;
  uv_connect_t connect;
  uv_write_t write;
  char *buf;
  size_t len, cap;
  int done;
  int connected;
  int index;
} conn_t;

static uv_loop_t *loop;
static struct sockaddr_storage addr;
static char request[1024];
static size_t request_len;
static int total = 10000, concurrency = 500;
static int started, connecting, open_now, connected_now, peak_open, ok, failed, finished;
static int errors_shown;
static uv_timer_t deadline;
static conn_t **conns;
static int nconns, burst_started;
static uint64_t sent_at;

static void start_more(void);
static void maybe_burst(void);

static void report_error(const char *what, int status) {
  if (errors_shown++ < 5) fprintf(stderr, "rage-flood: %s: %s\n", what, uv_strerror(status));
}

static void on_closed(uv_handle_t *h) {
  conn_t *c = h->data;
  conns[c->index] = NULL;
  free(c->buf);
  free(c);
}

static void finish(conn_t *c, int success) {
  if (c->done) return;
  c->done = 1;
  if (success) ok++;
  else failed++;
  finished++;
  open_now--;
  if (c->connected) connected_now--;
  uv_close((uv_handle_t *)&c->tcp, on_closed);
  if (finished == total) uv_timer_stop(&deadline);
  else if (!burst_started) start_more();
}

/* 1: a complete 200 response; 0: a complete other response; -1: incomplete. */
static int check_response(conn_t *c) {
  char *end = NULL;
  for (size_t i = 3; i < c->len; i++) {
    if (c->buf[i - 3] == '\r' && c->buf[i - 2] == '\n' && c->buf[i - 1] == '\r' && c->buf[i] == '\n') {
      end = c->buf + i + 1;
      break;
    }
  }
  if (end == NULL) return -1;
  size_t head_len = (size_t)(end - c->buf);
  int status = 0;
  if (c->len < 12 || sscanf(c->buf, "HTTP/1.%*d %d", &status) != 1) return 0;
  long clen = -1;
  for (char *p = c->buf; p < end;) {
    char *eol = memchr(p, '\n', (size_t)(end - p));
    if (eol == NULL) break;
    if ((size_t)(eol - p) > 15 && strncasecmp(p, "content-length:", 15) == 0) clen = strtol(p + 15, NULL, 10);
    p = eol + 1;
  }
  if (clen < 0) return 0; /* the flood asks for sized responses only */
  if (c->len - head_len < (size_t)clen) return -1;
  return status == 200;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b) {
  conn_t *c = h->data;
  if (c->cap - c->len < 4096) {
    c->cap = c->cap ? c->cap * 2 : 8192;
    c->buf = realloc(c->buf, c->cap);
    if (c->buf == NULL) abort();
  }
  *b = uv_buf_init(c->buf + c->len, (unsigned)(c->cap - c->len));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b) {
  conn_t *c = s->data;
  if (nread < 0) {
    int r = check_response(c);
    if (r != 1 && nread != UV_EOF) report_error("read", (int)nread);
    else if (r != 1) fprintf(stderr, "rage-flood: connection closed before a complete 200 response\n");
    finish(c, r == 1);
    return;
  }
  c->len += (size_t)nread;
  int r = check_response(c);
  if (r == 0 && errors_shown++ < 5) {
    size_t n = 0;
    while (n < c->len && n < 200 && c->buf[n] != '\r' && c->buf[n] != '\n') n++;
    fprintf(stderr, "rage-flood: unexpected response: %.*s\n", (int)n, c->buf);
  }
  if (r >= 0) finish(c, r == 1);
}

static void on_write(uv_write_t *w, int status) {
  conn_t *c = w->data;
  if (status < 0 && !c->done) {
    report_error("write", status);
    finish(c, 0);
  }
}

static void send_request(conn_t *c) {
  c->write.data = c;
  uv_buf_t b = uv_buf_init(request, (unsigned)request_len);
  int r = uv_write(&c->write, (uv_stream_t *)&c->tcp, &b, 1, on_write);
  if (r == 0) r = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
  if (r < 0) {
    report_error("write", r);
    finish(c, 0);
  }
}

/* Once every connection is up (or failed), all requests go out in one burst. */
static void maybe_burst(void) {
  if (burst_started || started < total || connecting > 0) return;
  burst_started = 1;
  sent_at = uv_hrtime();
  fprintf(stderr, "rage-flood: %d connections open; sending the requests\n", connected_now);
  for (int i = 0; i < nconns; i++) {
    if (conns[i] && conns[i]->connected && !conns[i]->done) send_request(conns[i]);
  }
}

static void on_connect(uv_connect_t *req, int status) {
  conn_t *c = req->data;
  connecting--;
  if (status < 0) {
    report_error("connect", status);
    finish(c, 0);
  } else {
    c->connected = 1;
    if (++connected_now > peak_open) peak_open = connected_now;
    start_more();
  }
  maybe_burst();
}

static void start_more(void) {
  while (started < total && connecting < concurrency) {
    conn_t *c = calloc(1, sizeof(*c));
    if (c == NULL) abort();
    c->index = nconns;
    conns[nconns++] = c;
    started++;
    connecting++;
    open_now++;
    uv_tcp_init(loop, &c->tcp);
    c->tcp.data = c;
    c->connect.data = c;
    int r = uv_tcp_connect(&c->connect, &c->tcp, (struct sockaddr *)&addr, on_connect);
    if (r < 0) {
      connecting--;
      report_error("connect", r);
      finish(c, 0);
    }
  }
  maybe_burst();
}

static void on_deadline(uv_timer_t *t) {
  fprintf(stderr, "rage-flood: timeout with %d request(s) unanswered\n", total - finished);
  failed += total - finished;
  finished = total;
  uv_stop(loop);
}

static void raise_nofile(int want) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
  rlim_t target = (rlim_t)want;
  if (rl.rlim_max != RLIM_INFINITY && target > rl.rlim_max) target = rl.rlim_max;
  if (rl.rlim_cur < target) {
    rl.rlim_cur = target;
    setrlimit(RLIMIT_NOFILE, &rl);
    getrlimit(RLIMIT_NOFILE, &rl);
  }
  if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < (rlim_t)want)
    fprintf(stderr, "rage-flood: warning: only %llu file descriptors available\n",
            (unsigned long long)rl.rlim_cur);
}

static int usage(void) {
  fprintf(stderr,
          "usage: rage-flood --port P [--host H] [--path /x] [--connections N]\n"
          "                  [--connect-concurrency C] [--timeout SECONDS]\n");
  return 2;
}

int main(int argc, char **argv) {
  const char *host = "127.0.0.1", *path = "/";
  int port = 0;
  double timeout = 60;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (v == NULL) return usage();
    if (strcmp(a, "--port") == 0) port = atoi(v);
    else if (strcmp(a, "--host") == 0) host = v;
    else if (strcmp(a, "--path") == 0) path = v;
    else if (strcmp(a, "--connections") == 0 || strcmp(a, "-n") == 0) total = atoi(v);
    else if (strcmp(a, "--connect-concurrency") == 0 || strcmp(a, "-c") == 0) concurrency = atoi(v);
    else if (strcmp(a, "--timeout") == 0) timeout = atof(v);
    else return usage();
    i++;
  }
  if (port <= 0 || port > 65535 || total < 1 || concurrency < 1 || timeout <= 0) return usage();
  if (uv_ip4_addr(host, port, (struct sockaddr_in *)&addr) != 0 &&
      uv_ip6_addr(host, port, (struct sockaddr_in6 *)&addr) != 0) {
    fprintf(stderr, "rage-flood: bad address %s\n", host);
    return 2;
  }
  int v6 = strchr(host, ':') != NULL;
  int n = snprintf(request, sizeof(request), "GET %s HTTP/1.1\r\nHost: %s%s%s:%d\r\nConnection: close\r\n\r\n",
                   path, v6 ? "[" : "", host, v6 ? "]" : "", port);
  if (n < 0 || (size_t)n >= sizeof(request)) return usage();
  request_len = (size_t)n;
  raise_nofile(total + 64);

  conns = calloc((size_t)total, sizeof(*conns));
  if (conns == NULL) abort();
  loop = uv_default_loop();
  uv_timer_init(loop, &deadline);
  uv_timer_start(&deadline, on_deadline, (uint64_t)(timeout * 1000), 0);
  uint64_t t0 = uv_hrtime();
  start_more();
  uv_run(loop, UV_RUN_DEFAULT);
  double elapsed = (double)(uv_hrtime() - t0) / 1e9;
  printf("%d ok, %d failed\n", ok, failed);
  double burst = sent_at ? (double)(uv_hrtime() - sent_at) / 1e9 : 0;
  fprintf(stderr, "rage-flood: %d requests in %.2f s (%.2f s after the burst), %d connections open at once\n",
          total, elapsed, burst, peak_open);
  fflush(stdout);
  return ok == total && failed == 0 ? 0 : 1;
}
