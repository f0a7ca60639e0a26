/*
 * baseline.c - rage-baseline, the raw C ceiling that rage-lua is measured against.
 *
 * A single-threaded HTTP/1.1 server on libuv and llhttp with no Lua and no framework: whatever
 * rage-lua spends beyond this server is the price of the framework. It keeps the things any fast
 * server does and nothing more: keep-alive, pipelining, HTTP/1.0, a Date header formatted once
 * per second, TCP_NODELAY, one fixed read buffer per connection and responses written with
 * uv_try_write first, falling back to uv_write only for what the kernel did not take.
 *
 * Pipelining: llhttp parses every request in a read in turn. A synchronous handler appends its
 * response to the connection's output buffer; the buffer is flushed once per read, so a burst of
 * pipelined requests costs one write. An asynchronous handler pauses the parser instead: the
 * unparsed rest of the read buffer stays where it is, reading stops, and when the handler
 * finishes, parsing resumes where it stopped. Responses therefore always leave in request order
 * and a connection has at most one asynchronous request in flight.
 *
 * Output uses two buffers per connection: handlers append to `out` while `pending` belongs to
 * a uv_write in flight. When the kernel does not take all of `out` at once, the two swap roles,
 * so a handler never moves memory that libuv is still writing from.
 *
 * Routes live in one table. A handler either responds at once and returns HANDLER_DONE, or
 * starts some work and returns HANDLER_ASYNC; the work then calls respond() and
 * conn_finish_async() exactly once. New workloads add a row and a handler.
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime, gmtime_r, and what uv.h needs under -std=c11. */

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <llhttp.h>
#include <uv.h>

/* One read buffer per connection. Parsing is streaming, so any request size works; a larger
 * buffer only means fewer reads for deep pipelines. */
#define READ_BUFFER_SIZE (16 * 1024)

/* Longest request target kept; longer ones get 414. */
#define URL_MAX 1024

/* While a uv_write is in flight and this much output is queued behind it, reading stops. */
#define OUTPUT_HIGH_WATER (256 * 1024)

#define LISTEN_BACKLOG 1024
#define DEFAULT_HOST "127.0.0.1"
#define DEFAULT_PORT 8080

/* The W4 handler's wait, in milliseconds. */
#define WAIT_MS 10

#define HELLO_JSON "{\"message\":\"Hello, World!\"}"

typedef struct conn_s conn_t;

typedef struct {
  char *base;
  size_t len;
  size_t cap;
} buffer_t;

/* A parsed request as handlers see it. The pointers are views into the connection and stay
 * valid until the handler has responded. */
typedef struct {
  uint8_t method;
  const char *path;
  size_t path_len;
  const char *query; /* After the '?', or NULL. */
  size_t query_len;
} request_t;

enum { HANDLER_DONE, HANDLER_ASYNC };

typedef int (*handler_fn)(conn_t *c, const request_t *req);

typedef struct {
  uint8_t method;
  const char *path;
  handler_fn handler;
} route_t;

struct conn_s {
  uv_tcp_t tcp;
  uv_timer_t timer; /* For handlers that wait; one is enough since one request runs at a time. */
  uv_write_t write_req;
  uv_shutdown_t shutdown_req;
  llhttp_t parser;
  conn_t *prev;
  conn_t *next;
  buffer_t out;     /* Responses not yet handed to the kernel. */
  buffer_t pending; /* Owned by write_req while `writing`. */
  size_t rest_off;  /* Unparsed bytes kept in rbuf while the parser is paused. */
  size_t rest_len;
  size_t url_len;
  int open_handles;
  bool reading;
  bool writing;
  bool async;       /* A handler is running; the parser is paused behind it. */
  bool close_after; /* Serve nothing more: close once the output is written. */
  bool eof;         /* The peer has finished sending. */
  bool shutting;
  bool closing;
  bool keep_alive; /* Of the request being answered. */
  bool http10;
  bool url_too_long;
  /* Left uninitialised at accept so idle connections do not touch these pages. */
  char url[URL_MAX];
  char rbuf[READ_BUFFER_SIZE];
};

static uv_loop_t *loop;
static uv_tcp_t listener;
static uv_signal_t sigterm_handle;
static uv_signal_t sigint_handle;
static llhttp_settings_t parser_settings;
static conn_t *conns; /* Every open connection, so that a signal can close them all. */

/* The Date header value and the loop time at which it goes stale (the next wall-clock second). */
static char date_value[sizeof "Sun, 06 Nov 1994 08:49:37 GMT"];
static uint64_t date_stale_at;

static void conn_flush(conn_t *c);
static void conn_close(conn_t *c);

static void *xrealloc(void *p, size_t n) {
  void *q = realloc(p, n);
  if (q == NULL) {
    fprintf(stderr, "rage-baseline: out of memory\n");
    abort();
  }
  return q;
}

static void buffer_reserve(buffer_t *b, size_t extra) {
  if (b->len + extra <= b->cap)
    return;
  size_t cap = b->cap ? b->cap : 4096;
  while (cap < b->len + extra)
    cap *= 2;
  b->base = xrealloc(b->base, cap);
  b->cap = cap;
}

static void date_refresh(void) {
  struct timespec ts;
  struct tm tm;
  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  strftime(date_value, sizeof date_value, "%a, %d %b %Y %H:%M:%S GMT", &tm);
  date_stale_at = uv_now(loop) + 1000 - (uint64_t)(ts.tv_nsec / 1000000);
}

/* uv_now() is read once per loop iteration, so checking it costs a load and a compare. */
static const char *date_get(void) {
  if (uv_now(loop) >= date_stale_at)
    date_refresh();
  return date_value;
}

static char *put(char *p, const char *s, size_t n) {
  memcpy(p, s, n);
  return p + n;
}

#define PUT_LITERAL(p, s) put((p), (s), sizeof(s) - 1)

static char *put_size(char *p, size_t v) {
  char digits[20];
  size_t n = 0;
  do {
    digits[n++] = (char)('0' + v % 10);
    v /= 10;
  } while (v != 0);
  while (n > 0)
    *p++ = digits[--n];
  return p;
}

/* Appends a complete response to c->out. The Connection header follows what the request asked
 * for: HTTP/1.1 keep-alive is implicit, HTTP/1.0 keep-alive must be said, and close is always
 * said. `status` is like "200 OK". */
static void respond(conn_t *c, const char *status, const char *content_type, const char *body,
                    size_t body_len) {
  size_t status_len = strlen(status);
  size_t type_len = strlen(content_type);
  buffer_reserve(&c->out, 160 + status_len + type_len + body_len);
  char *p = c->out.base + c->out.len;
  p = PUT_LITERAL(p, "HTTP/1.1 ");
  p = put(p, status, status_len);
  p = PUT_LITERAL(p, "\r\nServer: rage-baseline\r\nDate: ");
  p = put(p, date_get(), sizeof date_value - 1);
  p = PUT_LITERAL(p, "\r\nContent-Type: ");
  p = put(p, content_type, type_len);
  p = PUT_LITERAL(p, "\r\nContent-Length: ");
  p = put_size(p, body_len);
  if (!c->keep_alive)
    p = PUT_LITERAL(p, "\r\nConnection: close");
  else if (c->http10)
    p = PUT_LITERAL(p, "\r\nConnection: keep-alive");
  p = PUT_LITERAL(p, "\r\n\r\n");
  p = put(p, body, body_len);
  c->out.len = (size_t)(p - c->out.base);
}

static void respond_hello(conn_t *c) {
  respond(c, "200 OK", "application/json", HELLO_JSON, sizeof HELLO_JSON - 1);
}

/* W1. */
static int handle_json(conn_t *c, const request_t *req) {
  (void)req;
  respond_hello(c);
  return HANDLER_DONE;
}

static void conn_finish_async(conn_t *c);

static void on_wait_done(uv_timer_t *timer) {
  conn_t *c = timer->data;
  respond_hello(c);
  conn_finish_async(c);
}

/* W4: the request waits on a timer while the loop serves other connections. */
static int handle_wait(conn_t *c, const request_t *req) {
  (void)req;
  uv_timer_start(&c->timer, on_wait_done, WAIT_MS, 0);
  return HANDLER_ASYNC;
}

static const route_t routes[] = {
  {HTTP_GET, "/json", handle_json},
  {HTTP_GET, "/wait", handle_wait},
};

static const route_t *route_find(uint8_t method, const char *path, size_t path_len) {
  for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
    const route_t *r = &routes[i];
    if (r->method == method && strlen(r->path) == path_len && memcmp(r->path, path, path_len) == 0)
      return r;
  }
  return NULL;
}

static int on_message_begin(llhttp_t *parser) {
  conn_t *c = parser->data;
  c->url_len = 0;
  c->url_too_long = false;
  return 0;
}

/* llhttp may deliver the target in pieces when it straddles two reads. */
static int on_url(llhttp_t *parser, const char *at, size_t len) {
  conn_t *c = parser->data;
  if (c->url_too_long || len > URL_MAX - c->url_len) {
    c->url_too_long = true;
    return 0;
  }
  memcpy(c->url + c->url_len, at, len);
  c->url_len += len;
  return 0;
}

static int on_headers_complete(llhttp_t *parser) {
  conn_t *c = parser->data;
  c->keep_alive = llhttp_should_keep_alive(parser) != 0;
  c->http10 = llhttp_get_http_major(parser) == 1 && llhttp_get_http_minor(parser) == 0;
  return 0;
}

/* Requests are dispatched once complete; a body, if any, has been skipped by then. Pausing
 * stops llhttp right after this message, which is how a running handler or a closing
 * connection holds back the pipelined requests behind it. */
static int on_message_complete(llhttp_t *parser) {
  conn_t *c = parser->data;
  if (c->url_too_long) {
    respond(c, "414 URI Too Long", "text/plain", "URI Too Long\n", 13);
  } else {
    request_t req = {.method = (uint8_t)llhttp_get_method(parser), .path = c->url,
                     .path_len = c->url_len};
    const char *q = memchr(c->url, '?', c->url_len);
    if (q != NULL) {
      req.path_len = (size_t)(q - c->url);
      req.query = q + 1;
      req.query_len = c->url_len - req.path_len - 1;
    }
    const route_t *r = route_find(req.method, req.path, req.path_len);
    if (r == NULL)
      respond(c, "404 Not Found", "text/plain", "Not Found\n", 10);
    else if (r->handler(c, &req) == HANDLER_ASYNC)
      c->async = true;
  }
  if (!c->keep_alive)
    c->close_after = true;
  return c->async || c->close_after ? HPE_PAUSED : 0;
}

/* Parses bytes that lie in c->rbuf. On a pause the rest is remembered for conn_finish_async. */
static void conn_parse(conn_t *c, const char *data, size_t len) {
  llhttp_errno_t err = llhttp_execute(&c->parser, data, len);
  if (err == HPE_OK) {
    c->rest_len = 0;
    return;
  }
  if (err == HPE_PAUSED) {
    const char *pos = llhttp_get_error_pos(&c->parser);
    c->rest_off = (size_t)(pos - c->rbuf);
    c->rest_len = (size_t)(data + len - pos);
    return;
  }
  /* A malformed request: the responses before it still go out, then 400 and close. */
  c->rest_len = 0;
  c->keep_alive = false;
  c->http10 = false;
  c->close_after = true;
  respond(c, "400 Bad Request", "text/plain", "Bad Request\n", 12);
}

/* Called by an asynchronous handler once it has responded. */
static void conn_finish_async(conn_t *c) {
  c->async = false;
  if (!c->close_after) {
    llhttp_resume(&c->parser);
    if (c->rest_len > 0)
      conn_parse(c, c->rbuf + c->rest_off, c->rest_len);
    if (c->eof && !c->async)
      c->close_after = true;
  }
  conn_flush(c);
}

static void on_conn_closed(uv_handle_t *handle) {
  conn_t *c = handle->data;
  if (--c->open_handles == 0) {
    free(c->out.base);
    free(c->pending.base);
    free(c);
  }
}

/* Closing cancels a write in flight (its callback runs with UV_ECANCELED) and stops the timer,
 * which is all an asynchronous handler holds today. A handler that holds more, such as a
 * database query, must be detached from the connection here. */
static void conn_close(conn_t *c) {
  if (c->closing)
    return;
  c->closing = true;
  if (c->prev != NULL)
    c->prev->next = c->next;
  else
    conns = c->next;
  if (c->next != NULL)
    c->next->prev = c->prev;
  uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
  uv_close((uv_handle_t *)&c->timer, on_conn_closed);
}

static void on_shutdown(uv_shutdown_t *req, int status) {
  (void)status;
  conn_close(req->data);
}

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf) {
  (void)suggested;
  conn_t *c = handle->data;
  *buf = uv_buf_init(c->rbuf, sizeof c->rbuf);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  conn_t *c = stream->data;
  if (nread > 0) {
    conn_parse(c, buf->base, (size_t)nread);
  } else if (nread == UV_EOF) {
    c->eof = true;
    if (!c->async)
      c->close_after = true;
  } else if (nread < 0) {
    conn_close(c);
    return;
  }
  conn_flush(c);
}

/* Reads only when the next request could be served right away. Stopping inside on_read also
 * ends libuv's read loop at once, so a paused parser's rest of rbuf is never overwritten. */
static void conn_update_reading(conn_t *c) {
  bool want = !c->async && !c->close_after && !c->eof &&
              !(c->writing && c->out.len >= OUTPUT_HIGH_WATER);
  if (want == c->reading)
    return;
  if (want) {
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) {
      conn_close(c);
      return;
    }
  } else {
    uv_read_stop((uv_stream_t *)&c->tcp);
  }
  c->reading = want;
}

static void on_write(uv_write_t *req, int status) {
  conn_t *c = req->data;
  c->writing = false;
  c->pending.len = 0;
  if (status < 0) {
    conn_close(c);
    return;
  }
  conn_flush(c);
}

static void conn_flush(conn_t *c) {
  if (c->closing || c->shutting)
    return;
  if (!c->writing && c->out.len > 0) {
    uv_buf_t buf = uv_buf_init(c->out.base, (unsigned int)c->out.len);
    int n = uv_try_write((uv_stream_t *)&c->tcp, &buf, 1);
    if (n == UV_EAGAIN)
      n = 0;
    if (n < 0) {
      conn_close(c);
      return;
    }
    if ((size_t)n < c->out.len) {
      buffer_t tmp = c->pending;
      c->pending = c->out;
      c->out = tmp;
      buf = uv_buf_init(c->pending.base + n, (unsigned int)(c->pending.len - (size_t)n));
      c->write_req.data = c;
      if (uv_write(&c->write_req, (uv_stream_t *)&c->tcp, &buf, 1, on_write) != 0) {
        conn_close(c);
        return;
      }
      c->writing = true;
    }
    c->out.len = 0;
  }
  if (c->close_after && !c->async && !c->writing && c->out.len == 0) {
    /* Shut down the write side first so the last response is not lost to a reset. */
    if (c->reading) {
      uv_read_stop((uv_stream_t *)&c->tcp);
      c->reading = false;
    }
    c->shutting = true;
    c->shutdown_req.data = c;
    if (uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, on_shutdown) != 0)
      conn_close(c);
    return;
  }
  conn_update_reading(c);
}

static void on_connection(uv_stream_t *server, int status) {
  if (status < 0)
    return;
  conn_t *c = xrealloc(NULL, sizeof *c);
  memset(c, 0, offsetof(conn_t, url));
  uv_tcp_init(loop, &c->tcp);
  uv_timer_init(loop, &c->timer);
  c->tcp.data = c;
  c->timer.data = c;
  c->open_handles = 2;
  c->next = conns;
  if (conns != NULL)
    conns->prev = c;
  conns = c;
  if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
    conn_close(c);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  llhttp_init(&c->parser, HTTP_REQUEST, &parser_settings);
  c->parser.data = c;
  conn_update_reading(c);
}

/* SIGTERM and SIGINT close every handle, so uv_run returns and the loop closes empty. */
static void on_signal(uv_signal_t *handle, int signum) {
  (void)handle;
  (void)signum;
  uv_close((uv_handle_t *)&listener, NULL);
  uv_close((uv_handle_t *)&sigterm_handle, NULL);
  uv_close((uv_handle_t *)&sigint_handle, NULL);
  while (conns != NULL)
    conn_close(conns);
}

static void usage(FILE *f) {
  fprintf(f, "usage: rage-baseline [--host HOST] [--port PORT]\n"
             "  --host HOST  address to listen on (default " DEFAULT_HOST ")\n"
             "  --port PORT  port to listen on, 0 for any free port (default %d)\n",
          DEFAULT_PORT);
}

int main(int argc, char **argv) {
  const char *host = DEFAULT_HOST;
  long port = DEFAULT_PORT;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--host") == 0 && i + 1 < argc) {
      host = argv[++i];
    } else if (strcmp(argv[i], "--port") == 0 && i + 1 < argc) {
      char *end;
      port = strtol(argv[++i], &end, 10);
      if (*end != '\0' || port < 0 || port > 65535) {
        fprintf(stderr, "rage-baseline: bad port: %s\n", argv[i]);
        return 2;
      }
    } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      usage(stdout);
      return 0;
    } else {
      usage(stderr);
      return 2;
    }
  }

  /* A peer that goes away mid-write must cost an error code, not the process. */
  signal(SIGPIPE, SIG_IGN);

  loop = uv_default_loop();
  llhttp_settings_init(&parser_settings);
  parser_settings.on_message_begin = on_message_begin;
  parser_settings.on_url = on_url;
  parser_settings.on_headers_complete = on_headers_complete;
  parser_settings.on_message_complete = on_message_complete;
  date_refresh();

  struct sockaddr_storage addr;
  int err = uv_ip4_addr(host, (int)port, (struct sockaddr_in *)&addr);
  if (err != 0)
    err = uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)&addr);
  if (err != 0) {
    fprintf(stderr, "rage-baseline: bad host: %s\n", host);
    return 2;
  }
  uv_tcp_init(loop, &listener);
  err = uv_tcp_bind(&listener, (const struct sockaddr *)&addr, 0);
  if (err == 0)
    err = uv_listen((uv_stream_t *)&listener, LISTEN_BACKLOG, on_connection);
  if (err != 0) {
    fprintf(stderr, "rage-baseline: cannot listen on %s:%ld: %s\n", host, port, uv_strerror(err));
    return 1;
  }

  /* Print the port actually bound, which differs from the one asked for when that was 0. */
  struct sockaddr_storage bound;
  int bound_len = sizeof bound;
  uv_tcp_getsockname(&listener, (struct sockaddr *)&bound, &bound_len);
  int bound_port = bound.ss_family == AF_INET6
                       ? ntohs(((struct sockaddr_in6 *)&bound)->sin6_port)
                       : ntohs(((struct sockaddr_in *)&bound)->sin_port);
  if (strchr(host, ':') != NULL)
    fprintf(stderr, "listening on http://[%s]:%d\n", host, bound_port);
  else
    fprintf(stderr, "listening on http://%s:%d\n", host, bound_port);

  uv_signal_init(loop, &sigterm_handle);
  uv_signal_init(loop, &sigint_handle);
  uv_signal_start(&sigterm_handle, on_signal, SIGTERM);
  uv_signal_start(&sigint_handle, on_signal, SIGINT);

  uv_run(loop, UV_RUN_DEFAULT);
  err = uv_loop_close(loop);
  if (err != 0) {
    fprintf(stderr, "rage-baseline: loop not empty at exit: %s\n", uv_strerror(err));
    return 1;
  }
  return 0;
}
