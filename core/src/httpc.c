/*
 * httpc.c - the outbound HTTP/1.1 client (see httpc.h): the exchange state machine and the Lua
 * bindings. What outlives an exchange (the keep-alive pool, the DNS cache, the TLS contexts)
 * is in httpc_pool.c, reading the response is in httpc_parse.c, and what the three share is
 * declared in httpc_internal.h.
 *
 * An exchange (rage__xchg_t) walks through RESOLVE -> CONNECT -> HANDSHAKE (https) -> HEAD ->
 * BODY -> DONE, or ends in FAILED. libuv callbacks only change its state; each callback ends
 * with x_progress(), the one place that resumes the waiting fiber, so Lua code never runs
 * inside llhttp or while a callback is half done. The fiber waits for one of three things: the
 * response head (the request call), the whole body (read_all) or the next chunk (read).
 *
 * Memory: an exchange is reference counted. One reference belongs to its owner (the request
 * call until the head arrives, then the exchange object Lua receives); every open libuv handle
 * and pending getaddrinfo holds another, dropped in its close or completion callback; each
 * callback holds one while it runs, so a resumed fiber can never free the exchange under it.
 *
 * Pooling: a connection returns to its origin's pool only after a complete response whose
 * framing allowed reuse (keep-alive, no extra bytes, nothing left in TLS buffers). Its libuv
 * handle (rage__httpc_conn_t, memory of its own) goes to the pool as it is, reading: a pooled
 * connection that reads anything (the server's close, or bytes it should not send) is dropped
 * from the pool there and then, and the next request on the origin takes it over without a
 * system call. A close can be in the kernel before the loop pass that reads it: a request that
 * meets such a connection is retried once on a fresh one when no response byte arrived and the
 * method is idempotent, and a request that is not idempotent peeks at a pooled socket before it
 * takes it.
 *
 * Timeouts: one timer per exchange, armed for the earliest deadline that applies in the
 * current state (connect, headers, idle, total). Reads do not re-arm it: when it fires early
 * because reads moved the idle deadline, it re-arms for the new earliest deadline.
 */
#include "httpc.h"

#include <lauxlib.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "httpc_internal.h"
#include "runtime.h"

#define RT(L) ((rage_runtime_t *)lua_touserdata((L), lua_upvalueindex(1)))
#define XMT "rage.httpc"

static char state_key; /* registry key of the per-runtime client state */

static rage__httpc_t *get_hc(lua_State *L) {
  lua_pushlightuserdata(L, &state_key);
  lua_rawget(L, LUA_REGISTRYINDEX);
  rage__httpc_t *hc = lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (hc == NULL) luaL_error(L, "the HTTP client is not initialized");
  return hc;
}

/* ---- exchanges -------------------------------------------------------------------------- */

enum { W_NONE, W_HEAD, W_ALL, W_CHUNK };

typedef struct {
  uv_write_t req;
  char data[];
} wreq_t;

typedef struct {
  rage__xchg_t *x; /* NULL once released */
} box_t;

static void x_ref(rage__xchg_t *x) {
  x->refs++;
}

static void x_unref(rage__xchg_t *x) {
  if (--x->refs > 0) return;
  rage__tls_free(&x->tls);
  rage__buf_free(&x->req);
  rage__buf_free(&x->hbuf);
  rage__buf_free(&x->body);
  free(x->spans);
  free(x->host);
  free(x->ca_file);
  free(x->origin);
  free(x);
}

static void on_timer_closed(uv_handle_t *h) {
  x_unref(h->data);
}

static void x_begin_connect(rage__xchg_t *x);
static void x_connect(rage__xchg_t *x);
static void x_progress(rage__xchg_t *x);

static void on_tcp_closed(uv_handle_t *h) {
  rage__httpc_conn_t *c = (rage__httpc_conn_t *)h;
  rage__xchg_t *x = c->x;
  free(c);
  if (x == NULL) return; /* a pooled connection */
  x->conn = NULL;
  /* The closed connection's reference to the exchange is dropped last: it keeps the exchange
   * alive while the next attempt starts. */
  if (x->reconnect) {
    x->reconnect = 0;
    if (!x->aborted && x->state != RAGE_XCHG_FAILED) {
      if (x->addr_i < x->naddr) x_connect(x); /* the next address of the name */
      else x_begin_connect(x);                /* a retry on a fresh connection */
      x_progress(x); /* a failure while starting the next attempt is delivered here */
    }
  }
  x_unref(x);
}

void rage__httpc_conn_close(rage__httpc_conn_t *c) {
  if (!uv_is_closing((uv_handle_t *)&c->tcp)) uv_close((uv_handle_t *)&c->tcp, on_tcp_closed);
}

static void x_close_tcp(rage__xchg_t *x) {
  rage__httpc_conn_t *c = x->conn;
  if (c == NULL || uv_is_closing((uv_handle_t *)&c->tcp)) return;
  if (x->reading) uv_read_stop((uv_stream_t *)&c->tcp);
  x->reading = 0;
  x->paused = 0;
  uv_close((uv_handle_t *)&c->tcp, on_tcp_closed);
}

static void x_close_timer(rage__xchg_t *x) {
  if (x->timer_closed) return;
  x->timer_closed = 1;
  uv_close((uv_handle_t *)&x->timer, on_timer_closed);
}

/* Releases every resource the exchange holds; its memory goes with the last reference. */
static void x_shutdown(rage__xchg_t *x) {
  x->reconnect = 0;
  if (x->gai_pending) uv_cancel((uv_req_t *)&x->gai);
  x_close_tcp(x);
  x_close_timer(x);
}

/* ---- timeouts --------------------------------------------------------------------------- */

static uint64_t x_deadline(rage__xchg_t *x, const char **phase) {
  uint64_t d = UINT64_MAX;
  *phase = NULL;
#define CAND(cond, t, name)          \
  if ((cond) && (t) < d) {           \
    d = (t);                         \
    *phase = (name);                 \
  }
  CAND(x->t_connect && x->state < RAGE_XCHG_HEAD, x->connect_start + x->t_connect, "connect");
  CAND(x->t_headers && x->state == RAGE_XCHG_HEAD, x->sent_at + x->t_headers, "headers");
  CAND(x->t_idle && (x->state == RAGE_XCHG_HEAD || x->state == RAGE_XCHG_BODY) && !x->paused,
       x->last_read + x->t_idle, "idle");
  CAND(x->t_total && x->state < RAGE_XCHG_DONE, x->started + x->t_total, "total");
#undef CAND
  return d;
}

static void on_timer(uv_timer_t *t);

static void x_arm(rage__xchg_t *x) {
  if (x->timer_closed) return;
  const char *phase;
  uint64_t d = x_deadline(x, &phase);
  if (d == UINT64_MAX || x->state >= RAGE_XCHG_DONE) {
    uv_timer_stop(&x->timer);
    return;
  }
  uint64_t now = uv_now(x->loop);
  uv_timer_start(&x->timer, on_timer, d > now ? d - now : 0, 0);
}

static uint64_t phase_limit(rage__xchg_t *x, const char *phase) {
  switch (phase[0]) {
  case 'c': return x->t_connect;
  case 'h': return x->t_headers;
  case 'i': return x->t_idle;
  default: return x->t_total;
  }
}

static void on_timer(uv_timer_t *t) {
  rage__xchg_t *x = t->data;
  x_ref(x);
  const char *phase;
  uint64_t d = x_deadline(x, &phase);
  if (d != UINT64_MAX && d <= uv_now(x->loop)) {
    rage__xchg_fail(x, "http.timeout", phase, "timed out (%s) after %.3f s: %s:%d", phase,
                    (double)phase_limit(x, phase) / 1000.0, x->host, x->port);
  } else {
    x_arm(x);
  }
  x_progress(x);
  x_unref(x);
}

/* ---- writing ---------------------------------------------------------------------------- */

static void on_write(uv_write_t *req, int status) {
  rage__xchg_t *x = ((rage__httpc_conn_t *)req->handle)->x;
  free(req);
  if (status == 0 || status == UV_ECANCELED || x == NULL || x->aborted) return;
  x_ref(x);
  rage__xchg_fail(x, "http.closed", NULL, "cannot send the request to %s:%d: %s", x->host, x->port,
                  uv_strerror(status));
  x_progress(x);
  x_unref(x);
}

/* Writes with uv_try_write first; whatever the socket did not take is copied and queued. */
static void x_write(rage__xchg_t *x, const char *data, size_t len) {
  if (len == 0 || x->conn == NULL) return;
  uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
  int n = uv_try_write((uv_stream_t *)&x->conn->tcp, &b, 1);
  if (n == (int)len) return;
  if (n < 0 && n != UV_EAGAIN) {
    rage__xchg_fail(x, "http.closed", NULL, "cannot send the request to %s:%d: %s", x->host,
                    x->port, uv_strerror(n));
    return;
  }
  if (n < 0) n = 0;
  size_t rest = len - (size_t)n;
  wreq_t *w = rage__malloc(sizeof(*w) + rest);
  memcpy(w->data, data + n, rest);
  b = uv_buf_init(w->data, (unsigned)rest);
  int r = uv_write(&w->req, (uv_stream_t *)&x->conn->tcp, &b, 1, on_write);
  if (r < 0) {
    free(w);
    rage__xchg_fail(x, "http.closed", NULL, "cannot send the request to %s:%d: %s", x->host,
                    x->port, uv_strerror(r));
  }
}

static void x_flush_tls(rage__xchg_t *x) {
  rage__buf_t out = {0};
  if (rage__tls_take_output(&x->tls, &out) > 0) x_write(x, out.data, out.len);
  rage__buf_free(&out);
}

/* ---- failure and retry ------------------------------------------------------------------ */

/* A reused connection that the server had closed: nothing came back, so an idempotent request
 * can go again, once, on a fresh connection. */
static int x_retry(rage__xchg_t *x, const char *kind) {
  if (!x->reused || x->retried || x->resp_bytes > 0 || !x->idempotent || x->aborted) return 0;
  if (strcmp(kind, "http.closed") != 0) return 0;
  if (x->state != RAGE_XCHG_HEAD && x->state != RAGE_XCHG_HANDSHAKE) return 0;
  x->retried = 1;
  x->reused = 0;
  x->hc->retried++;
  rage__xchg_parse_reset(x);
  rage__tls_free(&x->tls);
  x->state = RAGE_XCHG_RESOLVE;
  x->naddr = x->addr_i = 0;
  x->reconnect = 1;
  x_close_tcp(x);
  return 1;
}

void rage__xchg_fail(rage__xchg_t *x, const char *kind, const char *phase, const char *fmt, ...) {
  if (x->state == RAGE_XCHG_FAILED || x->state == RAGE_XCHG_DONE) return;
  if (x_retry(x, kind)) return;
  x->state = RAGE_XCHG_FAILED;
  x->err_kind = kind;
  x->err_phase = phase;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(x->err_msg, sizeof(x->err_msg), fmt, ap);
  va_end(ap);
  x_shutdown(x);
}

/* Ends the exchange at once (cancellation, or the caller dropped it): the connection is closed,
 * never pooled. */
static void x_abort(rage__xchg_t *x, const char *why) {
  x->aborted = 1;
  x->wait = W_NONE;
  if (x->state != RAGE_XCHG_FAILED && x->state != RAGE_XCHG_DONE) {
    x->state = RAGE_XCHG_FAILED;
    x->err_kind = "http.closed";
    x->err_phase = NULL;
    snprintf(x->err_msg, sizeof(x->err_msg), "%s", why);
  }
  x_shutdown(x);
}

/* ---- reading ---------------------------------------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  *buf = uv_buf_init(((rage__httpc_conn_t *)h)->hc->rbuf, RAGE_HTTPC_READ_SIZE);
}

static void x_send(rage__xchg_t *x);

static void x_handshake(rage__xchg_t *x) {
  char err[256];
  int r = rage__tls_handshake(&x->tls, err, sizeof(err));
  x_flush_tls(x);
  if (r == RAGE_TLS_OK) {
    x_send(x);
  } else if (r == RAGE_TLS_ERROR) {
    rage__xchg_fail(x, "http.tls", NULL, "TLS with %s:%d failed: %s", x->host, x->port, err);
  }
}

static void x_input(rage__xchg_t *x, const char *data, size_t len) {
  x->last_read = uv_now(x->loop);
  if (!x->use_tls) {
    rage__xchg_parse(x, data, len);
    return;
  }
  rage__tls_feed(&x->tls, data, len);
  if (x->state == RAGE_XCHG_HANDSHAKE) x_handshake(x);
  char err[256];
  while (x->state == RAGE_XCHG_HEAD || x->state == RAGE_XCHG_BODY || x->state == RAGE_XCHG_DONE) {
    int n = rage__tls_read(&x->tls, x->hc->tbuf, RAGE_HTTPC_READ_SIZE, err, sizeof(err));
    if (n > 0) {
      rage__xchg_parse(x, x->hc->tbuf, (size_t)n);
    } else {
      if (n == RAGE_TLS_EOF) {
        x->clean = 0;
        rage__xchg_parse_eof(x);
      } else if (n == RAGE_TLS_ERROR) {
        x->clean = 0;
        rage__xchg_fail(x, "http.tls", NULL, "TLS with %s:%d failed: %s", x->host, x->port, err);
      }
      break;
    }
  }
  if (x->state != RAGE_XCHG_FAILED) x_flush_tls(x);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  rage__httpc_conn_t *c = (rage__httpc_conn_t *)s;
  rage__xchg_t *x = c->x;
  if (x == NULL) { /* pooled: an idle connection has nothing to read but its close */
    if (nread != 0) rage__httpc_pool_drop(c);
    return;
  }
  if (x->aborted) return;
  x_ref(x);
  if (nread > 0) {
    x_input(x, buf->base, (size_t)nread);
  } else if (nread == UV_EOF) {
    rage__xchg_parse_eof(x);
  } else if (nread < 0) {
    rage__xchg_fail(x, "http.closed", NULL, "connection to %s:%d failed: %s", x->host, x->port,
                    uv_strerror((int)nread));
  }
  x_progress(x);
  x_unref(x);
}

static void x_start_reading(rage__xchg_t *x) {
  if (x->reading || x->conn == NULL) return;
  int r = uv_read_start((uv_stream_t *)&x->conn->tcp, on_alloc, on_read);
  if (r < 0) {
    rage__xchg_fail(x, "http.closed", NULL, "cannot read from %s:%d: %s", x->host, x->port,
                    uv_strerror(r));
    return;
  }
  x->reading = 1;
}

/* ---- connecting and sending ------------------------------------------------------------- */

static void x_send(rage__xchg_t *x) {
  x->state = RAGE_XCHG_HEAD;
  x->sent_at = x->last_read = uv_now(x->loop);
  x_start_reading(x);
  if (x->state != RAGE_XCHG_HEAD) return;
  if (x->use_tls) {
    char err[256];
    if (rage__tls_write(&x->tls, x->req.data, x->req.len, err, sizeof(err)) != 0) {
      rage__xchg_fail(x, "http.tls", NULL, "TLS with %s:%d failed: %s", x->host, x->port, err);
      return;
    }
    x_flush_tls(x);
  } else {
    x_write(x, x->req.data, x->req.len);
  }
  x_arm(x);
}

static void x_connected(rage__xchg_t *x) {
  x->hc->opened++;
  if (!x->use_tls) {
    x_send(x);
    return;
  }
  char err[256];
  SSL_CTX *ctx = rage__httpc_tls_ctx(x->hc, x->ca_file, err, sizeof(err));
  if (ctx == NULL || rage__tls_init(&x->tls, ctx, x->host, x->verify, err, sizeof(err)) != 0) {
    rage__xchg_fail(x, "http.tls", NULL, "%s", err);
    return;
  }
  x->state = RAGE_XCHG_HANDSHAKE;
  x_start_reading(x);
  if (x->state == RAGE_XCHG_HANDSHAKE) x_handshake(x);
}

static void x_connect_failed(rage__xchg_t *x, int err) {
  x->last_err = err;
  x->addr_i++;
  if (x->addr_i < x->naddr) {
    x->reconnect = 1; /* the next address, once this handle has closed */
    x_close_tcp(x);
    return;
  }
  rage__xchg_fail(x, "http.connect", NULL, "cannot connect to %s:%d: %s", x->host, x->port,
                  uv_strerror(err));
}

static void on_connect(uv_connect_t *req, int status) {
  rage__xchg_t *x = ((rage__httpc_conn_t *)req->handle)->x;
  if (status == UV_ECANCELED || x->aborted || x->state != RAGE_XCHG_CONNECT) return;
  x_ref(x);
  if (status < 0) x_connect_failed(x, status);
  else x_connected(x);
  x_progress(x);
  x_unref(x);
}

static void x_connect(rage__xchg_t *x) {
  x->state = RAGE_XCHG_CONNECT;
  struct sockaddr_storage *sa = &x->addr[x->addr_i];
  if (sa->ss_family == AF_INET) ((struct sockaddr_in *)sa)->sin_port = htons((uint16_t)x->port);
  else ((struct sockaddr_in6 *)sa)->sin6_port = htons((uint16_t)x->port);
  rage__httpc_conn_t *c = rage__calloc(1, sizeof(*c));
  c->hc = x->hc;
  c->x = x;
  uv_tcp_init(x->loop, &c->tcp);
  x->conn = c;
  x_ref(x);
  uv_tcp_nodelay(&c->tcp, 1);
  int r = uv_tcp_connect(&x->creq, &c->tcp, (const struct sockaddr *)sa, on_connect);
  if (r < 0) x_connect_failed(x, r);
  else x_arm(x);
}

static void on_gai(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
  rage__xchg_t *x = req->data;
  x->gai_pending = 0;
  if (x->aborted || x->state != RAGE_XCHG_RESOLVE) {
    if (res) uv_freeaddrinfo(res);
    x_unref(x);
    return;
  }
  if (status < 0) {
    rage__xchg_fail(x, "http.dns", NULL, "cannot resolve %s: %s", x->host, uv_strerror(status));
  } else {
    x->naddr = 0;
    for (struct addrinfo *ai = res; ai && x->naddr < RAGE_HTTPC_MAX_ADDRS; ai = ai->ai_next) {
      if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6) ||
          ai->ai_addrlen > sizeof(x->addr[0]))
        continue;
      memset(&x->addr[x->naddr], 0, sizeof(x->addr[0]));
      memcpy(&x->addr[x->naddr], ai->ai_addr, ai->ai_addrlen);
      x->naddr++;
    }
    if (x->naddr == 0) {
      rage__xchg_fail(x, "http.dns", NULL, "cannot resolve %s: no IPv4 or IPv6 address", x->host);
    } else {
      rage__httpc_dns_put(x->hc, x->host, x->addr, x->naddr, uv_now(x->loop));
      x->addr_i = 0;
      x_connect(x);
    }
  }
  uv_freeaddrinfo(res);
  x_progress(x);
  x_unref(x);
}

static void x_begin_connect(rage__xchg_t *x) {
  x->state = RAGE_XCHG_RESOLVE;
  x->connect_start = uv_now(x->loop);
  x->addr_i = 0;
  x_arm(x);
  struct sockaddr_in6 a6;
  struct sockaddr_in a4;
  if (uv_ip4_addr(x->host, x->port, &a4) == 0) {
    memset(&x->addr[0], 0, sizeof(x->addr[0]));
    memcpy(&x->addr[0], &a4, sizeof(a4));
    x->naddr = 1;
    x_connect(x);
    return;
  }
  if (uv_ip6_addr(x->host, x->port, &a6) == 0) {
    memset(&x->addr[0], 0, sizeof(x->addr[0]));
    memcpy(&x->addr[0], &a6, sizeof(a6));
    x->naddr = 1;
    x_connect(x);
    return;
  }
  int cached = rage__httpc_dns_find(x->hc, x->host, uv_now(x->loop), x->addr);
  if (cached > 0) {
    x->hc->hits++;
    x->naddr = cached;
    x_connect(x);
    return;
  }
  x->hc->lookups++;
  struct addrinfo hints;
  memset(&hints, 0, sizeof(hints));
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  x->gai.data = x;
  int r = uv_getaddrinfo(x->loop, &x->gai, on_gai, x->host, NULL, &hints);
  if (r < 0) {
    rage__xchg_fail(x, "http.dns", NULL, "cannot resolve %s: %s", x->host, uv_strerror(r));
    return;
  }
  x->gai_pending = 1;
  x_ref(x);
}

/* Starts the exchange on a pooled connection if a live one is there, else on a new one. */
static void x_start(rage__xchg_t *x) {
  rage__httpc_conn_t *c =
      rage__httpc_pool_take(x->hc, x->origin, uv_now(x->loop), !x->idempotent, &x->tls);
  if (c != NULL) { /* it is reading already, with the callbacks every connection has */
    uv_ref((uv_handle_t *)&c->tcp);
    c->x = x;
    x->conn = c;
    x_ref(x);
    x->reading = 1;
    x->reused = 1;
    x->hc->reused++;
    x_send(x);
    return;
  }
  x_begin_connect(x);
}

/* The response is complete: the connection goes back to the pool if its framing allows. */
static void x_finish(rage__xchg_t *x) {
  x->state = RAGE_XCHG_DONE;
  x_close_timer(x);
  rage__httpc_conn_t *c = x->conn;
  if (c == NULL || uv_is_closing((uv_handle_t *)&c->tcp)) return;
  int reusable = x->keep_alive && x->clean && !x->aborted && !x->no_reuse;
  if (reusable && x->use_tls)
    reusable = x->tls.ssl && BIO_ctrl_pending(x->tls.rbio) == 0 && SSL_pending(x->tls.ssl) == 0;
  if (reusable && c->tcp.write_queue_size > 0) reusable = 0;
  /* A pooled connection reads, to see its close: one the response left paused starts again. */
  if (reusable && !x->reading && uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0)
    reusable = 0;
  if (!reusable) {
    x_close_tcp(x);
    return;
  }
  uv_unref((uv_handle_t *)&c->tcp); /* an idle connection keeps no loop running */
  c->x = NULL;
  x->conn = NULL;
  x->reading = 0;
  x->paused = 0;
  rage__httpc_pool_put(x->hc, x->origin, c, &x->tls, uv_now(x->loop));
  x_unref(x); /* the connection's reference; the caller holds another */
}

/* ---- results ---------------------------------------------------------------------------- */

static int push_error(rage__xchg_t *x, lua_State *L) {
  lua_pushnil(L);
  lua_pushstring(L, x->err_kind ? x->err_kind : "http.closed");
  lua_pushstring(L, x->err_msg);
  if (x->err_phase) lua_pushstring(L, x->err_phase);
  else lua_pushnil(L);
  return 4;
}

static void push_body(rage__xchg_t *x, lua_State *L) {
  lua_pushlstring(L, x->body.data ? x->body.data : "", x->body.len);
  x->body.len = 0;
}

/* Response headers by lower-case name. A repeated header's values are joined with ", ", except
 * Set-Cookie, whose values contain commas (Expires=Wed, 21 Oct ...): repeated, it is an array. */
static void push_headers(rage__xchg_t *x, lua_State *L) {
  lua_createtable(L, 0, (int)x->nspans);
  for (unsigned i = 0; i < x->nspans; i++) {
    const rage__httpc_span_t *s = &x->spans[i];
    const char *name = x->hbuf.data + s->name_off;
    const char *v = x->hbuf.data + s->value_off;
    size_t vlen = s->value_len;
    while (vlen > 0 && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t')) vlen--;
    lua_pushlstring(L, name, s->name_len);
    lua_pushvalue(L, -1);
    lua_rawget(L, -3);
    if (lua_isnil(L, -1)) {
      lua_pop(L, 1);
      lua_pushlstring(L, v, vlen);
    } else if (s->name_len == 10 && memcmp(name, "set-cookie", 10) == 0) {
      if (!lua_istable(L, -1)) {
        lua_createtable(L, 2, 0);
        lua_insert(L, -2);
        lua_rawseti(L, -2, 1);
      }
      lua_pushlstring(L, v, vlen);
      lua_rawseti(L, -2, (int)lua_objlen(L, -2) + 1);
    } else {
      lua_pushliteral(L, ", ");
      lua_pushlstring(L, v, vlen);
      lua_concat(L, 3);
    }
    lua_rawset(L, -3);
  }
}

/* Pushes the results of a request that has its head: exchange, status, headers[, body]. */
static int push_head(rage__xchg_t *x, lua_State *L) {
  box_t *b = lua_newuserdata(L, sizeof(*b));
  b->x = x; /* the owner reference moves from the request call to the object */
  luaL_getmetatable(L, XMT);
  lua_setmetatable(L, -2);
  lua_pushinteger(L, x->status);
  push_headers(x, L);
  if (!x->stream && x->msg_done) {
    push_body(x, L);
    return 4;
  }
  return 3;
}

/* Delivers what the waiting fiber waits for, if it is there. Called at the end of every
 * callback (never from inside llhttp), with a reference held. */
static void x_progress(rage__xchg_t *x) {
  if (x->msg_done && x->state == RAGE_XCHG_BODY) x_finish(x);
  if (x->state == RAGE_XCHG_BODY && x->want_pause && x->reading && x->wait != W_CHUNK) {
    uv_read_stop((uv_stream_t *)&x->conn->tcp);
    x->reading = 0;
    x->paused = 1;
    x_arm(x);
  }
  if (x->wait == W_NONE) return;
  rage__fiber_t *f = x->fiber;
  if (!rage__fiber_waiting(f, x->gen)) {
    x->wait = W_NONE;
    return;
  }
  lua_State *L = f->L;
  int wait = x->wait, n;
  if (x->state == RAGE_XCHG_FAILED) {
    n = push_error(x, L);
  } else if (wait == W_HEAD) {
    if (!x->head_done) return;
    n = push_head(x, L);
  } else if (wait == W_ALL) {
    if (!x->msg_done) return;
    push_body(x, L);
    n = 1;
  } else {
    if (x->body.len == 0 && !x->msg_done) return;
    if (x->body.len) push_body(x, L);
    else lua_pushboolean(L, 0);
    n = 1;
  }
  x->wait = W_NONE;
  /* A request that failed before its head arrived made no object to take the owner reference. */
  int drop = wait == W_HEAD && x->state == RAGE_XCHG_FAILED;
  rage__fiber_resume(f, n);
  if (drop) x_unref(x);
}

/* ---- Lua API ---------------------------------------------------------------------------- */

static void on_cancel(rage__fiber_t *f, void *op) {
  rage__xchg_t *x = op;
  int wait = x->wait;
  x_abort(x, "the request was cancelled");
  if (wait == W_HEAD) x_unref(x); /* the request call owned it */
}

static int push_cancelled(lua_State *L) {
  lua_pushnil(L);
  lua_pushliteral(L, "cancelled");
  lua_pushliteral(L, "the fiber was cancelled");
  return 3;
}

static char *opt_string(lua_State *L, const char *name) {
  lua_getfield(L, 1, name);
  char *s = NULL;
  if (lua_type(L, -1) == LUA_TSTRING) {
    size_t len;
    const char *v = lua_tolstring(L, -1, &len);
    s = rage__strndup(v, len);
  } else if (!lua_isnil(L, -1)) {
    luaL_error(L, "http_request: %s must be a string", name);
  }
  lua_pop(L, 1);
  return s;
}

static int opt_bool(lua_State *L, const char *name, int dflt) {
  lua_getfield(L, 1, name);
  int v = lua_isnil(L, -1) ? dflt : lua_toboolean(L, -1);
  lua_pop(L, 1);
  return v;
}

/* A number (seconds for times), false for "no limit", or nil for the default. */
static double opt_number(lua_State *L, const char *name, double dflt, double scale) {
  lua_getfield(L, 1, name);
  double v = dflt;
  if (lua_type(L, -1) == LUA_TNUMBER) {
    v = lua_tonumber(L, -1) * scale;
    if (!(v >= 0) || v > 1e15) luaL_error(L, "http_request: %s is out of range", name);
    if (scale > 1 && v > 0 && v < 1) v = 1;
  } else if (lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1)) {
    v = 0;
  } else if (!lua_isnil(L, -1)) {
    luaL_error(L, "http_request: %s must be a number", name);
  }
  lua_pop(L, 1);
  return v;
}

int rage__httpc_lua_request(lua_State *L) {
  rage_runtime_t *rt = RT(L);
  luaL_checktype(L, 1, LUA_TTABLE);
  rage__httpc_t *hc = get_hc(L);
  rage__fiber_t *f = rage__fiber_current(rt->sched);
  if (f == NULL) return luaL_error(L, "rage.http can only be used inside a fiber");
  if (f->cancelled) return push_cancelled(L);

  char *host = opt_string(L, "host");
  lua_getfield(L, 1, "head");
  size_t hlen = 0, blen = 0;
  const char *head = lua_tolstring(L, -1, &hlen);
  lua_getfield(L, 1, "body");
  const char *body = lua_tolstring(L, -1, &blen);
  int port = (int)opt_number(L, "port", 0, 1);
  if (host == NULL || head == NULL || port <= 0 || port > 65535) {
    free(host);
    return luaL_error(L, "http_request: host, port and head are required");
  }
  rage__xchg_t *x = rage__calloc(1, sizeof(*x));
  x->hc = hc;
  x->loop = rt->loop;
  x->refs = 1;
  x->host = host;
  x->port = port;
  x->ca_file = opt_string(L, "ca_file");
  x->use_tls = opt_bool(L, "tls", 0);
  x->verify = opt_bool(L, "verify", 1);
  x->method_head = opt_bool(L, "method_head", 0);
  x->idempotent = opt_bool(L, "idempotent", 0);
  x->stream = opt_bool(L, "stream", 0);
  x->no_reuse = !opt_bool(L, "keepalive", 1);
  x->t_connect = (uint64_t)opt_number(L, "connect_timeout", RAGE_HTTPC_CONNECT_TIMEOUT, 1000);
  x->t_headers = (uint64_t)opt_number(L, "headers_timeout", RAGE_HTTPC_HEADERS_TIMEOUT, 1000);
  x->t_idle = (uint64_t)opt_number(L, "idle_timeout", RAGE_HTTPC_IDLE_TIMEOUT, 1000);
  x->t_total = (uint64_t)opt_number(L, "total_timeout", RAGE_HTTPC_TOTAL_TIMEOUT, 1000);
  x->max_header_size = (size_t)opt_number(L, "max_header_size", RAGE_HTTPC_MAX_HEADER_SIZE, 1);
  x->max_headers = (unsigned)opt_number(L, "max_headers", RAGE_HTTPC_MAX_HEADERS, 1);
  x->max_body = (size_t)opt_number(L, "max_body", x->stream ? 0 : RAGE_HTTPC_MAX_BODY, 1);
  if (x->max_header_size == 0) x->max_header_size = SIZE_MAX;
  if (x->max_headers == 0) x->max_headers = UINT32_MAX;
  rage__buf_reserve(&x->req, hlen + blen);
  rage__buf_append(&x->req, head, hlen);
  if (blen) rage__buf_append(&x->req, body, blen);
  lua_pop(L, 2);
  char key[600];
  if (x->use_tls)
    snprintf(key, sizeof(key), "https://%s:%d %d %s", x->host, x->port, x->verify,
             x->ca_file ? x->ca_file : "");
  else
    snprintf(key, sizeof(key), "http://%s:%d", x->host, x->port);
  x->origin = rage__strndup(key, strlen(key));

  uv_timer_init(x->loop, &x->timer);
  x->timer.data = x;
  x_ref(x);
  rage__xchg_parse_reset(x);
  x->started = x->connect_start = uv_now(x->loop);
  x_start(x);
  if (x->state == RAGE_XCHG_FAILED) {
    int n = push_error(x, L);
    x_unref(x);
    return n;
  }
  x->fiber = f;
  x->wait = W_HEAD;
  int r = rage__fiber_suspend(L, f, on_cancel, x);
  x->gen = f->gen;
  return r;
}

static rage__xchg_t *check_x(lua_State *L) {
  box_t *b = luaL_checkudata(L, 1, XMT);
  if (b->x == NULL) luaL_error(L, "this HTTP exchange is closed");
  return b->x;
}

static int x_wait(lua_State *L, rage__xchg_t *x, int what) {
  rage_runtime_t *rt = RT(L);
  rage__fiber_t *f = rage__fiber_current(rt->sched);
  if (f == NULL) return luaL_error(L, "rage.http can only be used inside a fiber");
  if (f->cancelled) {
    x_abort(x, "the request was cancelled");
    return push_cancelled(L);
  }
  x->fiber = f;
  x->wait = what;
  int r = rage__fiber_suspend(L, f, on_cancel, x);
  x->gen = f->gen;
  return r;
}

static int xchg_read_all(lua_State *L) {
  rage__xchg_t *x = check_x(L);
  if (x->state == RAGE_XCHG_FAILED) return push_error(x, L);
  if (x->msg_done) {
    push_body(x, L);
    return 1;
  }
  return x_wait(L, x, W_ALL);
}

static int xchg_read(lua_State *L) {
  rage__xchg_t *x = check_x(L);
  if (x->state == RAGE_XCHG_FAILED) return push_error(x, L);
  if (x->paused && x->state == RAGE_XCHG_BODY) {
    x->paused = 0;
    x->want_pause = 0;
    x->last_read = uv_now(x->loop);
    x_start_reading(x);
    x_arm(x);
    if (x->state == RAGE_XCHG_FAILED) return push_error(x, L);
  }
  if (x->body.len > 0) {
    push_body(x, L);
    return 1;
  }
  if (x->msg_done) {
    lua_pushboolean(L, 0);
    return 1;
  }
  return x_wait(L, x, W_CHUNK);
}

static int xchg_close(lua_State *L) {
  box_t *b = luaL_checkudata(L, 1, XMT);
  rage__xchg_t *x = b->x;
  if (x == NULL) return 0;
  b->x = NULL;
  if (x->state != RAGE_XCHG_DONE)
    x_abort(x, "the exchange was closed before the response was complete");
  x_unref(x);
  return 0;
}

int rage__httpc_lua_configure(lua_State *L) {
  rage__httpc_t *hc = get_hc(L);
  luaL_checktype(L, 1, LUA_TTABLE);
  double v;
  v = opt_number(L, "max_idle_per_origin", hc->max_per_origin, 1);
  hc->max_per_origin = (unsigned)v;
  v = opt_number(L, "max_idle", hc->max_idle, 1);
  hc->max_idle = (unsigned)v;
  v = opt_number(L, "idle_timeout", (double)hc->idle_ms, 1000);
  hc->idle_ms = (uint64_t)v;
  v = opt_number(L, "dns_ttl", (double)hc->dns_ttl, 1000);
  hc->dns_ttl = (uint64_t)v;
  rage__httpc_pool_sweep(hc, uv_now(hc->loop), 0);
  return 0;
}

int rage__httpc_lua_stats(lua_State *L) {
  rage__httpc_t *hc = get_hc(L);
  lua_createtable(L, 0, 6);
#define F(name, v)                    \
  lua_pushnumber(L, (lua_Number)(v)); \
  lua_setfield(L, -2, name)
  F("idle", hc->nidle);
  F("opened", hc->opened);
  F("reused", hc->reused);
  F("retried", hc->retried);
  F("dns_lookups", hc->lookups);
  F("dns_hits", hc->hits);
#undef F
  return 1;
}

int rage__httpc_lua_close_idle(lua_State *L) {
  rage__httpc_t *hc = get_hc(L);
  rage__httpc_pool_sweep(hc, uv_now(hc->loop), 1);
  return 0;
}

static int hc_gc(lua_State *L) {
  rage__httpc_free(lua_touserdata(L, 1));
  return 0;
}

void rage__httpc_open(lua_State *L, void *rtp) {
  rage_runtime_t *rt = rtp;
  rage__httpc_t *hc = lua_newuserdata(L, sizeof(*hc));
  rage__httpc_init(hc, rt->loop);
  lua_newtable(L);
  lua_pushcfunction(L, hc_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  lua_pushlightuserdata(L, &state_key);
  lua_insert(L, -2);
  lua_rawset(L, LUA_REGISTRYINDEX);

  static const luaL_Reg methods[] = {
      {"read_all", xchg_read_all}, {"read", xchg_read}, {"close", xchg_close}, {NULL, NULL}};
  luaL_newmetatable(L, XMT);
  lua_newtable(L);
  lua_pushlightuserdata(L, rt);
  luaL_openlib(L, NULL, methods, 1);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, xchg_close);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
}
