/*
 * server.c - connections of one worker (see server.h).
 *
 * A connection is in one of four phases, and its single timer enforces the phase's limit:
 *   idle      - between requests: keep-alive timeout, then a silent close;
 *   head      - receiving a head: header timeout from its first byte, then 408;
 *   body      - receiving a body: idle time between reads and total request time, then 408;
 *   handling  - a fiber is producing the response: only the send timeout while output is queued.
 * Requests on one connection are handled one at a time, so responses leave in request order;
 * pipelined bytes wait in the read buffer (bounded) and are parsed when the response is done.
 *
 * Output goes out with uv_try_write() first; only what the socket does not take is copied and
 * queued. Above the high-water mark the connection stops taking pipelined requests and
 * streaming writers wait, so a client that does not read cannot make the server buffer without
 * bound. A client that closes its side while its request runs cancels the request's fiber.
 */
#include "server.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "response.h"

typedef struct {
  uv_write_t req;
  rage__conn_t *conn;
  size_t len;
  char data[];
} write_t;

static void conn_close(rage__conn_t *c);
static void conn_arm(rage__conn_t *c);
static void conn_linger(rage__conn_t *c);
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);

/* ---- writing ---------------------------------------------------------------------------- */

static void wake_writer(rage__conn_t *c) {
  rage__fiber_t *f = c->writer;
  if (f == NULL) return;
  c->writer = NULL;
  if (!rage__fiber_waiting(f, c->writer_gen)) return;
  lua_pushboolean(f->L, 1);
  rage__fiber_resume(f, 1);
}

static void conn_continue(void *data);
static void file_pump(rage__conn_t *c);

static void on_write(uv_write_t *wr, int status) {
  write_t *w = (write_t *)wr;
  rage__conn_t *c = w->conn;
  c->queued -= w->len;
  c->last_progress = uv_now(c->server->loop);
  c->last_wq = c->tcp.write_queue_size;
  free(w);
  if (c->closing) return;
  if (status < 0) {
    conn_close(c);
    return;
  }
  if (c->file_fd >= 0) {
    if (c->queued == 0) file_pump(c);
    return;
  }
  if (c->lingering) return;
  if (c->queued < c->server->cfg->output_high_water) {
    if (c->writer) wake_writer(c);
    if (c->wait_drain && !c->closing) {
      c->wait_drain = 0;
      c->refs++;
      rage__sched_defer(c->server->sched, conn_continue, c);
    }
  }
  if (!c->closing) conn_arm(c);
}

/* Writes `bufs`; returns 0 or a negative code after which the connection is closing. */
static int conn_write(rage__conn_t *c, uv_buf_t *bufs, unsigned nbufs) {
  size_t total = 0, skip = 0;
  if (c->closing) return RAGE_ECLOSED;
  for (unsigned i = 0; i < nbufs; i++) total += bufs[i].len;
  if (total == 0) return 0;
  if (c->queued == 0) {
    int r = uv_try_write((uv_stream_t *)&c->tcp, bufs, nbufs);
    if (r >= 0 && (size_t)r == total) return 0;
    if (r < 0 && r != UV_EAGAIN) {
      conn_close(c);
      return r;
    }
    if (r > 0) skip = (size_t)r;
  }
  write_t *w = rage__malloc(sizeof(*w) + total - skip);
  w->conn = c;
  w->len = total - skip;
  char *dst = w->data;
  for (unsigned i = 0; i < nbufs; i++) {
    size_t len = bufs[i].len;
    const char *src = bufs[i].base;
    if (skip >= len) {
      skip -= len;
      continue;
    }
    src += skip;
    len -= skip;
    skip = 0;
    memcpy(dst, src, len);
    dst += len;
  }
  uv_buf_t b = uv_buf_init(w->data, (unsigned)w->len);
  int r = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_write);
  if (r < 0) {
    free(w);
    conn_close(c);
    return r;
  }
  if (c->queued == 0) c->last_progress = uv_now(c->server->loop);
  c->queued += w->len;
  c->last_wq = c->tcp.write_queue_size;
  conn_arm(c);
  return 0;
}

/*
 * Lingering close, as nginx does it: closing a socket that still has unread input makes the
 * kernel send a reset, which can destroy responses the client has not read yet. So the write
 * side is shut down once the output is flushed (uv_shutdown waits for queued writes), and input is
 * read and dropped until the client closes or RAGE_LINGER_TIMEOUT passes.
 */
static char linger_scratch[64 * 1024];

static void on_linger_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  buf->base = linger_scratch;
  buf->len = sizeof(linger_scratch);
}

static void on_linger_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  if (nread < 0) conn_close(stream->data);
}

static void on_linger_timeout(uv_timer_t *t) {
  conn_close(t->data);
}

static void on_shutdown(uv_shutdown_t *req, int status) {
  rage__conn_t *c = req->data;
  free(req);
  c->refs--;
  if (c->closing) return;
  if (status < 0) {
    conn_close(c);
    return;
  }
  uv_timer_start(&c->timer, on_linger_timeout,
                 c->server->draining ? RAGE_LINGER_DRAIN_TIMEOUT : RAGE_LINGER_TIMEOUT, 0);
}

static void conn_linger(rage__conn_t *c) {
  if (c->closing || c->lingering) return;
  c->lingering = 1;
  rage__http1_free(&c->http);
  uv_read_stop((uv_stream_t *)&c->tcp);
  c->reading = 0;
  uv_shutdown_t *req = rage__malloc(sizeof(*req));
  req->data = c;
  if (uv_shutdown(req, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
    free(req);
    conn_close(c);
    return;
  }
  c->refs++;
  if (uv_read_start((uv_stream_t *)&c->tcp, on_linger_alloc, on_linger_read) == 0) c->reading = 1;
}

/* Answers a protocol error and closes once it is written. */
static void conn_error(rage__conn_t *c, int status, const char *reason) {
  char body[256];
  int blen = snprintf(body, sizeof(body), "%d %s\n", status, reason ? reason : rage__status_reason(status));
  if (blen < 0 || (size_t)blen >= sizeof(body)) blen = (int)strlen(body);
  rage_header_t ct = {"Content-Type", 12, "text/plain; charset=utf-8", 25};
  rage__response_t res = {.status = status, .headers = &ct, .nheaders = 1, .chunked = 0,
                          .content_length = (size_t)blen, .keep_alive = 0, .http_minor = 1};
  rage__buf_t head = {0};
  const char *err;
  rage__response_head(&head, &res, &err);
  uv_buf_t bufs[2] = {uv_buf_init(head.data, (unsigned)head.len), uv_buf_init(body, (unsigned)blen)};
  rage__log(RAGE_LOG_DEBUG, "closing connection after %d: %s", status, reason ? reason : "");
  if (conn_write(c, bufs, 2) == 0) conn_linger(c);
  rage__buf_free(&head);
}

/* ---- timers ----------------------------------------------------------------------------- */

/*
 * The deadline of the connection's current phase (absolute loop time in ms; 0 for none). The
 * timer is re-armed lazily: it is moved only when the deadline comes earlier than the time it is
 * set for, and when it fires early it re-arms itself, so a busy keep-alive connection costs no
 * timer operation per request.
 */
static uint64_t conn_deadline(rage__conn_t *c) {
  const rage_server_config_t *cfg = c->server->cfg;
  uint64_t d = 0;
  switch (c->http.state) {
  case RAGE_HTTP1_IDLE:
    if (c->active == NULL) {
      rage__server_t *s = c->server;
      uint64_t t = cfg->keepalive_timeout;
      if (s->nconns * 100 >= (uint64_t)cfg->max_connections * RAGE_KEEPALIVE_PRESSURE_PCT &&
          t > RAGE_KEEPALIVE_PRESSURE_TIMEOUT)
        t = RAGE_KEEPALIVE_PRESSURE_TIMEOUT;
      d = c->idle_since + t;
    }
    break;
  case RAGE_HTTP1_HEAD:
    d = c->msg_start + cfg->header_timeout;
    break;
  case RAGE_HTTP1_BODY: {
    uint64_t idle = c->last_read + cfg->body_idle_timeout;
    uint64_t total = c->msg_start + cfg->request_timeout;
    d = idle < total ? idle : total;
    break;
  }
  default:
    break;
  }
  if (c->queued > 0) {
    uint64_t send = c->last_progress + cfg->send_timeout;
    if (d == 0 || send < d) d = send;
  }
  return d;
}

static void on_timer(uv_timer_t *t);

static void conn_arm(rage__conn_t *c) {
  if (c->lingering) return;
  uint64_t d = conn_deadline(c);
  if (d == 0) return;
  if (uv_is_active((uv_handle_t *)&c->timer) && c->timer_due <= d) return;
  uint64_t now = uv_now(c->server->loop);
  c->timer_due = d;
  uv_timer_start(&c->timer, on_timer, d > now ? d - now : 0, 0);
}

static void on_timer(uv_timer_t *t) {
  rage__conn_t *c = t->data;
  const rage_server_config_t *cfg = c->server->cfg;
  uint64_t now = uv_now(c->server->loop);
  uint64_t d = conn_deadline(c);
  if (d == 0) return;
  if (now < d) {
    c->timer_due = d;
    uv_timer_start(&c->timer, on_timer, d - now, 0);
    return;
  }
  if (c->queued > 0 && c->tcp.write_queue_size < c->last_wq) {
    /* One large write still in progress but moving: that is progress too. */
    c->last_wq = c->tcp.write_queue_size;
    c->last_progress = now;
    conn_arm(c);
    return;
  }
  if (c->queued > 0 && now >= c->last_progress + cfg->send_timeout) {
    rage__log(RAGE_LOG_DEBUG, "closing connection: no send progress for %llu ms",
              (unsigned long long)cfg->send_timeout);
    conn_close(c);
    return;
  }
  switch (c->http.state) {
  case RAGE_HTTP1_IDLE:
    conn_close(c);
    return;
  case RAGE_HTTP1_HEAD:
  case RAGE_HTTP1_BODY:
    rage__http1_fail(&c->http, 408, "Request Timeout");
    return;
  default:
    return;
  }
}

/* ---- reading and parsing ---------------------------------------------------------------- */

static void on_head(rage__http1_t *p, rage__req_t *req) {
  rage__conn_t *c = p->data;
  if (req->expect_continue) {
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    uv_buf_t b = uv_buf_init((char *)cont, sizeof(cont) - 1);
    conn_write(c, &b, 1);
  }
}

static void on_parsed(rage__http1_t *p, rage__req_t *req) {
  rage__conn_t *c = p->data;
  rage__server_t *s = c->server;
  c->nrequests++;
  if (s->draining || c->nrequests >= s->cfg->max_requests) req->keep_alive = 0;
  req->conn = c;
  req->start_ms = c->msg_start;
  c->active = req;
  conn_arm(c);
  s->on_request(s, req);
}

static void on_parse_error(rage__http1_t *p, int status, const char *reason) {
  rage__conn_t *c = p->data;
  if (c->reading) {
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = 0;
  }
  conn_error(c, status, reason);
}

static const rage__http1_cbs_t http1_cbs = {on_head, on_parsed, on_parse_error};

static void start_reading(rage__conn_t *c) {
  if (c->reading || c->closing) return;
  if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0) c->reading = 1;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  rage__conn_t *c = h->data;
  if (!rage__http1_alloc(&c->http, buf)) {
    buf->base = NULL;
    buf->len = 0;
  }
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  rage__conn_t *c = stream->data;
  if (nread == UV_ENOBUFS) {
    /* Pipelined input is at its bound: wait until the running request is done. */
    uv_read_stop(stream);
    c->reading = 0;
    return;
  }
  if (nread < 0) {
    rage__http1_feed(&c->http, 0);
    conn_close(c);
    return;
  }
  uint64_t now = uv_now(c->server->loop);
  if (c->http.state == RAGE_HTTP1_IDLE && nread > 0) c->msg_start = now;
  c->last_read = now;
  rage__http1_feed(&c->http, (size_t)nread);
  if (!c->closing && c->http.state != RAGE_HTTP1_PAUSED) conn_arm(c);
}

/* The response of the active request is complete: go on with the next request. */
static void conn_continue(void *data) {
  rage__conn_t *c = data;
  if (--c->refs == 0 && c->closing && c->handles_open == 0) {
    free(c);
    return;
  }
  if (c->closing || c->active || c->file_fd >= 0) return;
  if (c->queued >= c->server->cfg->output_high_water) {
    c->wait_drain = 1;
    return;
  }
  start_reading(c);
  c->idle_since = c->msg_start = c->last_read = uv_now(c->server->loop);
  rage__http1_resume(&c->http);
  if (!c->closing && c->http.state != RAGE_HTTP1_PAUSED) conn_arm(c);
}

static void response_complete(rage__req_t *req) {
  rage__conn_t *c = req->conn;
  req->finished = 1;
  req->conn = NULL;
  if (c == NULL) return;
  c->active = NULL;
  if (!req->keep_alive || c->server->draining) {
    conn_linger(c);
    return;
  }
  c->refs++;
  rage__sched_defer(c->server->sched, conn_continue, c);
}

/* ---- files ------------------------------------------------------------------------------ */

#define FILE_CHUNK (64 * 1024)
#define SENDFILE_MAX (1024 * 1024)

static void file_done(rage__conn_t *c) {
  close(c->file_fd);
  c->file_fd = -1;
  if (!c->file_keep_alive || c->server->draining) {
    conn_linger(c);
    return;
  }
  c->refs++;
  rage__sched_defer(c->server->sched, conn_continue, c);
}

/*
 * Sends the rest of the file: sendfile(2) straight from the page cache while the socket takes
 * it (as nginx does), and when the socket is full, one chunk through uv_write, whose completion
 * waits for the socket to drain and calls this again.
 */
static void file_pump(rage__conn_t *c) {
  uv_os_fd_t sock;
  uv_fileno((uv_handle_t *)&c->tcp, &sock);
  while (c->file_left > 0 && !c->closing) {
    if (c->queued == 0) {
      size_t want = c->file_left > SENDFILE_MAX ? SENDFILE_MAX : (size_t)c->file_left;
      off_t off = (off_t)c->file_off;
      ssize_t n = sendfile(sock, c->file_fd, &off, want);
      if (n > 0) {
        c->file_off = off;
        c->file_left -= (uint64_t)n;
        c->last_progress = uv_now(c->server->loop);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n == 0 || errno != EAGAIN) {
        /* The file shrank under us, or the socket failed: the body cannot be completed. */
        conn_close(c);
        return;
      }
    }
    size_t want = c->file_left > FILE_CHUNK ? FILE_CHUNK : (size_t)c->file_left;
    write_t *w = rage__malloc(sizeof(*w) + want);
    ssize_t r = pread(c->file_fd, w->data, want, (off_t)c->file_off);
    if (r <= 0) {
      free(w);
      conn_close(c);
      return;
    }
    c->file_off += r;
    c->file_left -= (uint64_t)r;
    w->conn = c;
    w->len = (size_t)r;
    uv_buf_t b = uv_buf_init(w->data, (unsigned)r);
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_write) < 0) {
      free(w);
      conn_close(c);
      return;
    }
    if (c->queued == 0) c->last_progress = uv_now(c->server->loop);
    c->queued += (size_t)r;
    conn_arm(c);
    return;
  }
  if (!c->closing && c->file_fd >= 0 && c->file_left == 0) file_done(c);
}

/* The request id the response head carries (rage__response_head leaves it out when the
 * application set its own X-Request-Id). */
static void put_request_id(rage__response_t *res, rage__req_t *req) {
  if (req->want_id) res->request_id = rage__req_id(req, &res->request_id_len);
}

/* For a request handed in by a host: the headers its callback gets, the application's plus
 * X-Request-Id as a response head would carry it (a copy in the request's arena then). */
static const rage_header_t *handin_headers(rage__req_t *req, const rage_header_t *headers,
                                           size_t *n) {
  if (!req->want_id) return headers;
  for (size_t i = 0; i < *n; i++)
    if (rage__strieq(headers[i].name, headers[i].name_len, "x-request-id", 12)) return headers;
  rage_header_t *all = rage__arena_alloc(&req->arena, (*n + 1) * sizeof(rage_header_t));
  if (*n) memcpy(all, headers, *n * sizeof(rage_header_t));
  all[*n].name = "x-request-id";
  all[*n].name_len = 12;
  all[*n].value = rage__req_id(req, &all[*n].value_len);
  (*n)++;
  return all;
}

int rage__req_send_file(rage__req_t *req, int status, const rage_header_t *headers,
                        size_t nheaders, const char *path, uint64_t offset, uint64_t length,
                        const char **err) {
  if (req->responded) {
    *err = "the response was already sent";
    return RAGE_ESTATE;
  }
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    *err = "cannot open the file";
    return uv_translate_sys_error(errno);
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    *err = "not a regular file";
    return UV_EISDIR;
  }
  if (offset > (uint64_t)st.st_size || length > (uint64_t)st.st_size - offset) {
    close(fd);
    *err = "the range lies outside the file";
    return RAGE_EINVAL;
  }
  if (req->cb || req->conn == NULL) {
    /* Handed-in requests (and gone clients) get the bytes through the ordinary path. */
    char *data = rage__malloc(length ? length : 1);
    ssize_t r = length ? pread(fd, data, length, (off_t)offset) : 0;
    close(fd);
    if (r < 0 || (uint64_t)r != length) {
      free(data);
      *err = "cannot read the file";
      return UV_EIO;
    }
    int rc = rage__req_respond(req, status, headers, nheaders, data, length, err);
    free(data);
    return rc;
  }
  rage__conn_t *c = req->conn;
  rage__response_t res = {.status = status, .headers = headers, .nheaders = nheaders, .chunked = 0,
                          .content_length = (size_t)length, .keep_alive = req->keep_alive,
                          .http_minor = req->http_minor};
  put_request_id(&res, req);
  if (c->server->draining || rage__response_wants_close(&res)) {
    req->keep_alive = 0;
    res.keep_alive = 0;
  }
  rage__buf_t head = {0};
  int r = rage__response_head(&head, &res, err);
  if (r) {
    rage__buf_free(&head);
    close(fd);
    return r;
  }
  req->responded = 1;
  uv_buf_t b = uv_buf_init(head.data, (unsigned)head.len);
  conn_write(c, &b, 1);
  rage__buf_free(&head);
  if (req->head_only || rage__response_bodyless(status) || length == 0 || c->closing) {
    close(fd);
    response_complete(req);
    return 0;
  }
  /* The connection owns the transfer from here; the request is answered. */
  c->file_fd = fd;
  c->file_off = (int64_t)offset;
  c->file_left = length;
  c->file_keep_alive = req->keep_alive;
  c->active = NULL;
  req->finished = 1;
  req->conn = NULL;
  if (c->queued == 0) file_pump(c);
  return 0;
}

/* ---- connections ------------------------------------------------------------------------ */

static void on_conn_handle_closed(uv_handle_t *h) {
  rage__conn_t *c = h->data;
  if (--c->handles_open == 0 && c->refs == 0) free(c);
}

static void accept_one(rage__server_t *s);

static void stop_drain_timer(rage__server_t *s) {
  if (s->drain_timer.loop && !uv_is_closing((uv_handle_t *)&s->drain_timer))
    uv_close((uv_handle_t *)&s->drain_timer, NULL);
}

static void drained(rage__server_t *s) {
  stop_drain_timer(s);
  rage__server_drained_cb cb = s->on_drained;
  s->on_drained = NULL;
  if (cb) cb(s);
}

static void conn_close(rage__conn_t *c) {
  if (c->closing) return;
  c->closing = 1;
  rage__server_t *s = c->server;
  if (c->prev) c->prev->next = c->next;
  else s->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  s->nconns--;
  rage__http1_free(&c->http);
  if (c->file_fd >= 0) {
    close(c->file_fd);
    c->file_fd = -1;
  }
  uv_timer_stop(&c->timer);
  uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
  uv_close((uv_handle_t *)&c->timer, on_conn_handle_closed);
  /* Detach the request first: its fiber, once cancelled, may finish and free it. A streaming
   * writer is normally that same fiber and is cancelled with it; any other one is woken. */
  rage__req_t *req = c->active;
  rage__fiber_t *writer = c->writer;
  c->writer = NULL;
  c->active = NULL;
  if (req) req->conn = NULL;
  rage__fiber_t *fiber = req && !req->job_done ? req->fiber : NULL;
  if (writer && writer != fiber && rage__fiber_waiting(writer, c->writer_gen)) {
    lua_pushnil(writer->L);
    lua_pushliteral(writer->L, "closed");
    lua_pushliteral(writer->L, "the client closed the connection");
    rage__fiber_resume(writer, 3);
  }
  if (fiber) rage__fiber_cancel(fiber);
  if (s->accept_paused && s->listening && s->nconns < s->cfg->max_connections) accept_one(s);
  if (s->draining && s->nconns == 0) drained(s);
}

static void accept_one(rage__server_t *s) {
  if (s->nconns >= s->cfg->max_connections) {
    /* Leaving the connection unaccepted makes libuv stop polling the listener until the
     * next uv_accept(), which conn_close() makes when a slot frees up. */
    s->accept_paused = 1;
    return;
  }
  s->accept_paused = 0;
  rage__conn_t *c = rage__calloc(1, sizeof(*c));
  c->server = s;
  c->file_fd = -1;
  uv_tcp_init(s->loop, &c->tcp);
  uv_timer_init(s->loop, &c->timer);
  c->tcp.data = c;
  c->timer.data = c;
  c->handles_open = 2;
  if (uv_accept((uv_stream_t *)&s->listener, (uv_stream_t *)&c->tcp) != 0) {
    c->closing = 1;
    uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
    uv_close((uv_handle_t *)&c->timer, on_conn_handle_closed);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  rage__http1_init(&c->http, s->cfg, s->pools, &http1_cbs, c);
  c->next = s->conns;
  if (s->conns) s->conns->prev = c;
  s->conns = c;
  s->nconns++;
  c->idle_since = uv_now(s->loop);
  conn_arm(c);
  start_reading(c);
}

static void on_connection(uv_stream_t *listener, int status) {
  rage__server_t *s = listener->data;
  if (status < 0) {
    rage__log(RAGE_LOG_WARN, "accept failed: %s", uv_strerror(status));
    return;
  }
  accept_one(s);
}

int rage__server_init(rage__server_t *s, uv_loop_t *loop, rage__sched_t *sched,
                      const rage_server_config_t *cfg, rage__pools_t *pools,
                      rage__server_request_cb on_request, void *data) {
  memset(s, 0, sizeof(*s));
  s->loop = loop;
  s->sched = sched;
  s->cfg = cfg;
  s->pools = pools;
  s->on_request = on_request;
  s->data = data;
  return 0;
}

int rage__server_listen(rage__server_t *s, const char *host, int port, int reuseport) {
  struct sockaddr_storage addr;
  int r;
  if (strcmp(host, "localhost") == 0) host = "127.0.0.1";
  if (uv_ip4_addr(host, port, (struct sockaddr_in *)&addr) != 0 &&
      uv_ip6_addr(host, port, (struct sockaddr_in6 *)&addr) != 0)
    return UV_EINVAL;
  r = uv_tcp_init_ex(s->loop, &s->listener, addr.ss_family);
  if (r < 0) return r;
  s->listener.data = s;
  s->listening = 1;
  uv_os_fd_t fd;
  uv_fileno((uv_handle_t *)&s->listener, &fd);
  int one = 1;
  if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) {
    r = uv_translate_sys_error(errno);
    goto fail;
  }
  r = uv_tcp_bind(&s->listener, (struct sockaddr *)&addr, 0);
  if (r == 0) r = uv_listen((uv_stream_t *)&s->listener, 4096, on_connection);
  if (r < 0) goto fail;
  struct sockaddr_storage bound;
  int len = sizeof(bound);
  uv_tcp_getsockname(&s->listener, (struct sockaddr *)&bound, &len);
  s->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                              : ((struct sockaddr_in *)&bound)->sin_port);
  return 0;
fail:
  uv_close((uv_handle_t *)&s->listener, NULL);
  s->listening = 0;
  return r;
}

static void on_drain_timeout(uv_timer_t *t) {
  rage__server_t *s = t->data;
  rage__log(RAGE_LOG_WARN, "drain timeout: closing %u connection(s) with requests in flight",
            s->nconns);
  rage__server_close(s);
}

void rage__server_drain(rage__server_t *s, rage__server_drained_cb on_drained) {
  if (s->draining) {
    rage__server_close(s);
    return;
  }
  s->draining = 1;
  s->on_drained = on_drained;
  if (s->listening) {
    uv_close((uv_handle_t *)&s->listener, NULL);
    s->listening = 0;
  }
  rage__conn_t *c = s->conns;
  while (c) {
    rage__conn_t *next = c->next;
    if (c->active) c->active->keep_alive = 0;
    if (c->lingering && uv_is_active((uv_handle_t *)&c->timer))
      uv_timer_start(&c->timer, on_linger_timeout, RAGE_LINGER_DRAIN_TIMEOUT, 0);
    else if (c->active == NULL && c->queued == 0 && c->http.state == RAGE_HTTP1_IDLE && c->file_fd < 0)
      conn_close(c);
    c = next;
  }
  if (s->nconns == 0) {
    drained(s);
    return;
  }
  uv_timer_init(s->loop, &s->drain_timer);
  s->drain_timer.data = s;
  uv_timer_start(&s->drain_timer, on_drain_timeout, s->cfg->drain_timeout, 0);
  uv_unref((uv_handle_t *)&s->drain_timer);
}

void rage__server_close(rage__server_t *s) {
  if (s->listening) {
    uv_close((uv_handle_t *)&s->listener, NULL);
    s->listening = 0;
  }
  s->draining = 1;
  while (s->conns) conn_close(s->conns);
  if (s->nconns == 0) drained(s);
}

/* ---- answering -------------------------------------------------------------------------- */

static void deliver(rage__req_t *req, int status, const rage_header_t *headers, size_t nheaders,
                    const char *body, size_t len) {
  rage_response_t res = {status, headers, nheaders, body, len};
  req->finished = 1;
  req->cb(&res, req->cb_data);
}

int rage__req_respond_is_leaf(const rage__req_t *req) {
  const rage__conn_t *c = req->conn;
  if (req->cb != NULL) return 0;
  return c == NULL || (!c->server->draining && !c->server->accept_paused);
}

int rage__req_respond(rage__req_t *req, int status, const rage_header_t *headers,
                      size_t nheaders, const char *body, size_t body_len, const char **err) {
  if (req->responded) {
    *err = "the response was already sent";
    return RAGE_ESTATE;
  }
  rage__conn_t *c = req->conn;
  if (req->cb) {
    rage__buf_t tmp = {0};
    rage__response_t res = {.status = status, .headers = headers, .nheaders = nheaders,
                            .chunked = 0, .content_length = body_len, .keep_alive = 1,
                            .http_minor = 1};
    int r = rage__response_head(&tmp, &res, err);
    rage__buf_free(&tmp);
    if (r) return r;
    req->responded = 1;
    headers = handin_headers(req, headers, &nheaders);
    deliver(req, status, headers, nheaders, body, body_len);
    return 0;
  }
  rage__response_t res = {.status = status, .headers = headers, .nheaders = nheaders, .chunked = 0,
                          .content_length = body_len, .keep_alive = req->keep_alive,
                          .http_minor = req->http_minor};
  put_request_id(&res, req);
  if (c && (c->server->draining || rage__response_wants_close(&res))) {
    req->keep_alive = 0;
    res.keep_alive = 0;
  }
  char stack[2048];
  rage__buf_t head = {stack, 0, sizeof(stack)};
  int r = rage__response_head(&head, &res, err);
  if (r) {
    if (head.data != stack) free(head.data);
    return r;
  }
  req->responded = 1;
  if (c) {
    int nb = (req->head_only || rage__response_bodyless(status)) ? 1 : 2;
    uv_buf_t bufs[2] = {uv_buf_init(head.data, (unsigned)head.len), uv_buf_init((char *)body, (unsigned)body_len)};
    conn_write(c, bufs, (unsigned)nb);
  }
  if (head.data != stack) free(head.data);
  response_complete(req);
  return 0;
}

int rage__req_stream_start(rage__req_t *req, int status, const rage_header_t *headers,
                           size_t nheaders, const char **err) {
  if (req->responded) {
    *err = "the response was already sent";
    return RAGE_ESTATE;
  }
  rage__response_t res = {.status = status, .headers = headers, .nheaders = nheaders, .chunked = 1,
                          .content_length = 0, .keep_alive = req->keep_alive,
                          .http_minor = req->http_minor};
  put_request_id(&res, req);
  if (req->http_minor == 0) res.keep_alive = 0; /* no chunked in HTTP/1.0: close ends the body */
  rage__conn_t *c = req->conn;
  if (c && (c->server->draining || rage__response_wants_close(&res))) res.keep_alive = 0;
  rage__buf_t head = {0};
  int r = rage__response_head(&head, &res, err);
  if (r) {
    rage__buf_free(&head);
    return r;
  }
  req->keep_alive = (uint8_t)res.keep_alive;
  req->responded = 1;
  req->streaming = 1;
  if (req->cb) {
    req->out_status = status;
    headers = handin_headers(req, headers, &nheaders);
    req->out_headers = rage__arena_alloc(&req->arena, (nheaders ? nheaders : 1) * sizeof(rage_header_t));
    for (size_t i = 0; i < nheaders; i++) {
      req->out_headers[i].name = rage__arena_strndup(&req->arena, headers[i].name, headers[i].name_len);
      req->out_headers[i].name_len = headers[i].name_len;
      req->out_headers[i].value = rage__arena_strndup(&req->arena, headers[i].value, headers[i].value_len);
      req->out_headers[i].value_len = headers[i].value_len;
    }
    req->out_nheaders = nheaders;
  } else if (c) {
    uv_buf_t b = uv_buf_init(head.data, (unsigned)head.len);
    conn_write(c, &b, 1);
  }
  rage__buf_free(&head);
  return 0;
}

int rage__req_stream_write(rage__req_t *req, const char *data, size_t len) {
  if (!req->streaming) return RAGE_ESTATE;
  if (req->cb) {
    rage__buf_append(&req->out, data, len);
    return 0;
  }
  rage__conn_t *c = req->conn;
  if (c == NULL || c->closing) return RAGE_ECLOSED;
  if (len == 0 || req->head_only) return 0;
  if (req->http_minor == 0) {
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
    if (conn_write(c, &b, 1) < 0) return RAGE_ECLOSED;
  } else {
    char size[24];
    int n = snprintf(size, sizeof(size), "%zx\r\n", len);
    uv_buf_t bufs[3] = {uv_buf_init(size, (unsigned)n), uv_buf_init((char *)data, (unsigned)len),
                        uv_buf_init("\r\n", 2)};
    if (conn_write(c, bufs, 3) < 0) return RAGE_ECLOSED;
  }
  if (c->closing) return RAGE_ECLOSED;
  return c->queued >= c->server->cfg->output_high_water;
}

static void cancel_writer(rage__fiber_t *f, void *op) {
  rage__conn_t *c = op;
  if (c->writer == f) c->writer = NULL;
}

int rage__req_stream_wait(lua_State *L, rage__req_t *req, rage__fiber_t *f) {
  rage__conn_t *c = req->conn;
  c->writer = f;
  int r = rage__fiber_suspend(L, f, cancel_writer, c);
  c->writer_gen = f->gen;
  return r;
}

int rage__req_stream_end(rage__req_t *req) {
  if (!req->streaming) return RAGE_ESTATE;
  req->streaming = 0;
  if (req->cb) {
    deliver(req, req->out_status, req->out_headers, req->out_nheaders, req->out.data, req->out.len);
    return 0;
  }
  rage__conn_t *c = req->conn;
  if (c && req->http_minor >= 1 && !req->head_only) {
    uv_buf_t b = uv_buf_init("0\r\n\r\n", 5);
    conn_write(c, &b, 1);
  }
  if (c && req->http_minor == 0) req->keep_alive = 0;
  response_complete(req);
  return 0;
}

void rage__req_job_done(rage__req_t *req, int failed) {
  req->job_done = 1;
  req->fiber = NULL;
  if (req->box) *req->box = NULL;
  req->box = NULL;
  if (!req->responded) {
    static const char body[] = "Internal Server Error\n";
    rage_header_t ct = {"Content-Type", 12, "text/plain; charset=utf-8", 25};
    const char *err;
    /* A request whose client went away was cancelled: nobody is waiting for its response. */
    if (!failed && (req->conn || req->cb))
      rage__log(RAGE_LOG_ERROR, "%s %s finished without a response", req->method, req->target);
    rage__req_respond(req, 500, &ct, 1, body, sizeof(body) - 1, &err);
  }
  if (!req->finished) {
    /* The response head went out (a stream the handler never finished, typically because it
     * raised): end it by closing the connection, so the client sees a cut body, not a whole one. */
    if (req->conn) conn_close(req->conn);
    else if (req->cb && req->streaming) rage__req_stream_end(req);
  }
  rage__req_free(req);
}

int rage__req_peer(rage__req_t *req, char *out, size_t outlen) {
  struct sockaddr_storage ss;
  int len = sizeof(ss);
  if (req->conn == NULL) return RAGE_ECLOSED;
  int r = uv_tcp_getpeername(&req->conn->tcp, (struct sockaddr *)&ss, &len);
  if (r) return r;
  if (ss.ss_family == AF_INET6) return uv_ip6_name((struct sockaddr_in6 *)&ss, out, outlen);
  return uv_ip4_name((struct sockaddr_in *)&ss, out, outlen);
}
