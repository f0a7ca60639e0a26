/*
 * httpc.c - the outbound HTTP/1.1 client (see httpc.h): exchanges, the keep-alive pool, the
 * DNS cache and the TLS contexts of one runtime.
 *
 * An exchange (xchg_t) walks through RESOLVE -> CONNECT -> HANDSHAKE (https) -> HEAD -> BODY
 * -> DONE, or ends in FAILED. libuv callbacks only change its state; each callback ends with
 * x_progress(), the one place that resumes the waiting fiber, so Lua code never runs inside
 * llhttp or while a callback is half done. The fiber waits for one of three things: the
 * response head (the request call), the whole body (read_all) or the next chunk (read).
 *
 * Memory: an exchange is reference counted. One reference belongs to its owner (the request
 * call until the head arrives, then the exchange object Lua receives); every open libuv handle
 * and pending getaddrinfo holds another, dropped in its close or completion callback; each
 * callback holds one while it runs, so a resumed fiber can never free the exchange under it.
 *
 * Pooling: a connection returns to its origin's pool only after a complete response whose
 * framing allowed reuse (keep-alive, no extra bytes, nothing left in TLS buffers). Pooled
 * connections are bare sockets: the libuv handle is closed over a dup() of the fd, and the next
 * request adopts the fd with uv_tcp_open(). Before reuse, a peek tells whether the server has
 * closed (or written to) the idle socket; such a connection is dropped. A request that still
 * meets a closed pooled connection (the close raced the reuse) is retried once on a fresh
 * connection when no response byte arrived and the method is idempotent.
 *
 * Timeouts: one timer per exchange, armed for the earliest deadline that applies in the
 * current state (connect, headers, idle, total). Reads do not re-arm it: when it fires early
 * because reads moved the idle deadline, it re-arms for the new earliest deadline.
 */
#include "httpc.h"

#include <errno.h>
#include <lauxlib.h>
#include <llhttp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "runtime.h"
#include "tls.h"
#include "util.h"

#define RT(L) ((rage_runtime_t *)lua_touserdata((L), lua_upvalueindex(1)))
#define XMT "rage.httpc"
#define READ_SIZE (64 * 1024)
#define MAX_ADDRS 4
#define MAX_CHUNK_EXT (16 * 1024)

static char state_key; /* registry key of the per-runtime client state */

/* ---- per-runtime state ------------------------------------------------------------------ */

typedef struct pooled_s {
  struct pooled_s *next;
  int fd;
  rage__tls_t tls;
  uint64_t since;
} pooled_t;

typedef struct origin_s {
  struct origin_s *next;
  char *key;
  pooled_t *idle; /* most recently used first */
  unsigned nidle;
} origin_t;

typedef struct dns_s {
  struct dns_s *next;
  char *host;
  int naddr;
  struct sockaddr_storage addr[MAX_ADDRS];
  uint64_t expires;
} dns_t;

typedef struct tlsctx_s {
  struct tlsctx_s *next;
  char *ca_file; /* "" for the system store */
  SSL_CTX *ctx;
} tlsctx_t;

typedef struct {
  uv_loop_t *loop;
  origin_t *origins;
  unsigned nidle;
  dns_t *dns;
  unsigned ndns;
  tlsctx_t *ctxs;
  unsigned max_per_origin, max_idle;
  uint64_t idle_ms, dns_ttl, last_sweep;
  uint64_t opened, reused, retried, lookups, hits;
  char rbuf[READ_SIZE]; /* socket reads: consumed before the read callback returns */
  char tbuf[READ_SIZE]; /* decrypted TLS bytes, likewise */
} httpc_t;

static httpc_t *get_hc(lua_State *L) {
  lua_pushlightuserdata(L, &state_key);
  lua_rawget(L, LUA_REGISTRYINDEX);
  httpc_t *hc = lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (hc == NULL) luaL_error(L, "the HTTP client is not initialized");
  return hc;
}

/* ---- the pool --------------------------------------------------------------------------- */

static void pooled_close(pooled_t *p) {
  close(p->fd);
  rage__tls_free(&p->tls);
  free(p);
}

/* An idle HTTP/1.1 connection must have nothing to read: data or end-of-file means the server
 * closed it (or broke the protocol), so it cannot carry another request. */
static int pooled_alive(pooled_t *p) {
  char c;
  ssize_t r = recv(p->fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
  return r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

static void pool_sweep(httpc_t *hc, uint64_t now, int force) {
  if (!force && now - hc->last_sweep < 1000) return;
  hc->last_sweep = now;
  origin_t **op = &hc->origins;
  while (*op) {
    origin_t *o = *op;
    pooled_t **pp = &o->idle;
    while (*pp) {
      pooled_t *p = *pp;
      if (force || now - p->since >= hc->idle_ms) {
        *pp = p->next;
        o->nidle--;
        hc->nidle--;
        pooled_close(p);
      } else {
        pp = &p->next;
      }
    }
    if (o->nidle == 0) {
      *op = o->next;
      free(o->key);
      free(o);
    } else {
      op = &o->next;
    }
  }
}

static origin_t *origin_find(httpc_t *hc, const char *key, int create) {
  for (origin_t *o = hc->origins; o; o = o->next)
    if (strcmp(o->key, key) == 0) return o;
  if (!create) return NULL;
  origin_t *o = rage__calloc(1, sizeof(*o));
  o->key = rage__strndup(key, strlen(key));
  o->next = hc->origins;
  hc->origins = o;
  return o;
}

static pooled_t *pool_take(httpc_t *hc, const char *key, uint64_t now) {
  pool_sweep(hc, now, 0);
  origin_t *o = origin_find(hc, key, 0);
  while (o && o->idle) {
    pooled_t *p = o->idle;
    o->idle = p->next;
    o->nidle--;
    hc->nidle--;
    if (now - p->since < hc->idle_ms && pooled_alive(p)) return p;
    pooled_close(p);
  }
  return NULL;
}

/* Takes ownership of fd and *tls (which is zeroed). */
static void pool_put(httpc_t *hc, const char *key, int fd, rage__tls_t *tls, uint64_t now) {
  pooled_t *p = rage__calloc(1, sizeof(*p));
  p->fd = fd;
  p->tls = *tls;
  memset(tls, 0, sizeof(*tls));
  p->since = now;
  pool_sweep(hc, now, 0);
  origin_t *o = origin_find(hc, key, 1);
  if (o->nidle >= hc->max_per_origin || hc->nidle >= hc->max_idle) {
    pooled_close(p);
    if (o->nidle == 0) pool_sweep(hc, now, 0);
    return;
  }
  p->next = o->idle;
  o->idle = p;
  o->nidle++;
  hc->nidle++;
}

/* ---- DNS cache and TLS contexts --------------------------------------------------------- */

static dns_t *dns_find(httpc_t *hc, const char *host, uint64_t now) {
  for (dns_t *d = hc->dns; d; d = d->next)
    if (strcmp(d->host, host) == 0) return d->expires > now ? d : NULL;
  return NULL;
}

static void dns_put(httpc_t *hc, const char *host, const struct sockaddr_storage *addr, int naddr,
                    uint64_t now) {
  dns_t **dp = &hc->dns, *d = NULL;
  while (*dp) {
    dns_t *e = *dp;
    if (strcmp(e->host, host) == 0 || e->expires <= now) {
      *dp = e->next;
      hc->ndns--;
      if (d == NULL && strcmp(e->host, host) == 0) {
        d = e;
        continue;
      }
      free(e->host);
      free(e);
      continue;
    }
    dp = &e->next;
  }
  if (d == NULL) {
    if (hc->ndns >= RAGE_HTTPC_DNS_CACHE) {
      /* Full of live entries: drop the oldest (the last in the list). */
      dns_t **lp = &hc->dns;
      while ((*lp)->next) lp = &(*lp)->next;
      free((*lp)->host);
      free(*lp);
      *lp = NULL;
      hc->ndns--;
    }
    d = rage__calloc(1, sizeof(*d));
    d->host = rage__strndup(host, strlen(host));
  }
  memcpy(d->addr, addr, sizeof(d->addr[0]) * (size_t)naddr);
  d->naddr = naddr;
  d->expires = now + hc->dns_ttl;
  d->next = hc->dns;
  hc->dns = d;
  hc->ndns++;
}

static SSL_CTX *get_ctx(httpc_t *hc, const char *ca_file, char *err, size_t errlen) {
  const char *key = ca_file ? ca_file : "";
  for (tlsctx_t *c = hc->ctxs; c; c = c->next)
    if (strcmp(c->ca_file, key) == 0) return c->ctx;
  SSL_CTX *ctx = rage__tls_ctx_new(ca_file, err, errlen);
  if (ctx == NULL) return NULL;
  tlsctx_t *c = rage__calloc(1, sizeof(*c));
  c->ca_file = rage__strndup(key, strlen(key));
  c->ctx = ctx;
  c->next = hc->ctxs;
  hc->ctxs = c;
  return ctx;
}

/* ---- exchanges -------------------------------------------------------------------------- */

enum { X_START, X_RESOLVE, X_CONNECT, X_HANDSHAKE, X_HEAD, X_BODY, X_DONE, X_FAILED };
enum { W_NONE, W_HEAD, W_ALL, W_CHUNK };

typedef struct {
  uint32_t name_off, name_len, value_off, value_len;
} hspan_t;

typedef struct {
  uv_write_t req;
  char data[];
} wreq_t;

typedef struct xchg_s {
  httpc_t *hc;
  uv_loop_t *loop;
  int refs;
  int state;
  int aborted; /* closed early: no completion may touch the pool or resume */
  /* the request */
  char *host, *ca_file, *origin;
  int port, use_tls, verify;
  int method_head, idempotent, stream, no_reuse;
  rage__buf_t req;
  uint64_t t_connect, t_headers, t_idle, t_total;
  size_t max_header_size, max_body;
  unsigned max_headers;
  /* time */
  uint64_t started, connect_start, sent_at, last_read;
  uv_timer_t timer;
  int timer_closed;
  /* the connection */
  uv_tcp_t tcp;
  int tcp_open, reconnect, reading, paused;
  uv_connect_t creq;
  uv_getaddrinfo_t gai;
  int gai_pending;
  struct sockaddr_storage addr[MAX_ADDRS];
  int naddr, addr_i, last_err;
  rage__tls_t tls;
  int reused, retried;
  /* the response */
  llhttp_t parser;
  int head_done, msg_done, keep_alive, clean, interim, want_pause;
  int status;
  rage__buf_t hbuf;
  hspan_t *spans;
  unsigned nspans, capspans;
  int in_field, ncl, nte, value_at_end;
  const char *exec_data, *exec_end; /* the buffer llhttp_execute() is parsing */
  size_t header_bytes, chunk_ext;
  rage__buf_t body;
  size_t body_total, resp_bytes;
  /* failure: the kind and message a callback set before returning -1 to llhttp */
  const char *cb_kind, *cb_msg;
  const char *err_kind, *err_phase;
  char err_msg[320];
  /* the waiting fiber */
  rage__fiber_t *fiber;
  unsigned gen;
  int wait;
} xchg_t;

typedef struct {
  xchg_t *x; /* NULL once released */
} box_t;

static llhttp_settings_t settings;

static void x_ref(xchg_t *x) {
  x->refs++;
}

static void x_unref(xchg_t *x) {
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

static void x_begin_connect(xchg_t *x);
static void x_connect(xchg_t *x);
static void x_progress(xchg_t *x);

static void on_tcp_closed(uv_handle_t *h) {
  xchg_t *x = h->data;
  x->tcp_open = 0;
  if (x->reconnect) {
    x->reconnect = 0;
    if (!x->aborted && x->state != X_FAILED) {
      x_ref(x);
      if (x->addr_i < x->naddr) x_connect(x); /* the next address of the name */
      else x_begin_connect(x);                /* a retry, or a pooled socket that failed */
      x_progress(x); /* a failure while starting the next attempt is delivered here */
      x_unref(x);
    }
  }
  x_unref(x);
}

static void x_close_tcp(xchg_t *x) {
  if (!x->tcp_open || uv_is_closing((uv_handle_t *)&x->tcp)) return;
  if (x->reading) uv_read_stop((uv_stream_t *)&x->tcp);
  x->reading = 0;
  x->paused = 0;
  uv_close((uv_handle_t *)&x->tcp, on_tcp_closed);
}

static void x_close_timer(xchg_t *x) {
  if (x->timer_closed) return;
  x->timer_closed = 1;
  uv_close((uv_handle_t *)&x->timer, on_timer_closed);
}

/* Releases every resource the exchange holds; its memory goes with the last reference. */
static void x_shutdown(xchg_t *x) {
  x->reconnect = 0;
  if (x->gai_pending) uv_cancel((uv_req_t *)&x->gai);
  x_close_tcp(x);
  x_close_timer(x);
}

static void x_fail(xchg_t *x, const char *kind, const char *phase, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* ---- timeouts --------------------------------------------------------------------------- */

static uint64_t x_deadline(xchg_t *x, const char **phase) {
  uint64_t d = UINT64_MAX;
  *phase = NULL;
#define CAND(cond, t, name)          \
  if ((cond) && (t) < d) {           \
    d = (t);                         \
    *phase = (name);                 \
  }
  CAND(x->t_connect && x->state < X_HEAD, x->connect_start + x->t_connect, "connect");
  CAND(x->t_headers && x->state == X_HEAD, x->sent_at + x->t_headers, "headers");
  CAND(x->t_idle && (x->state == X_HEAD || x->state == X_BODY) && !x->paused,
       x->last_read + x->t_idle, "idle");
  CAND(x->t_total && x->state < X_DONE, x->started + x->t_total, "total");
#undef CAND
  return d;
}

static void on_timer(uv_timer_t *t);

static void x_arm(xchg_t *x) {
  if (x->timer_closed) return;
  const char *phase;
  uint64_t d = x_deadline(x, &phase);
  if (d == UINT64_MAX || x->state >= X_DONE) {
    uv_timer_stop(&x->timer);
    return;
  }
  uint64_t now = uv_now(x->loop);
  uv_timer_start(&x->timer, on_timer, d > now ? d - now : 0, 0);
}

static uint64_t phase_limit(xchg_t *x, const char *phase) {
  switch (phase[0]) {
  case 'c': return x->t_connect;
  case 'h': return x->t_headers;
  case 'i': return x->t_idle;
  default: return x->t_total;
  }
}

static void on_timer(uv_timer_t *t) {
  xchg_t *x = t->data;
  x_ref(x);
  const char *phase;
  uint64_t d = x_deadline(x, &phase);
  if (d != UINT64_MAX && d <= uv_now(x->loop)) {
    x_fail(x, "http.timeout", phase, "timed out (%s) after %.3f s: %s:%d", phase,
           (double)phase_limit(x, phase) / 1000.0, x->host, x->port);
  } else {
    x_arm(x);
  }
  x_progress(x);
  x_unref(x);
}

/* ---- writing ---------------------------------------------------------------------------- */

static void on_write(uv_write_t *req, int status) {
  xchg_t *x = req->handle->data;
  free(req);
  if (status == 0 || status == UV_ECANCELED || x->aborted) return;
  x_ref(x);
  x_fail(x, "http.closed", NULL, "cannot send the request to %s:%d: %s", x->host, x->port,
         uv_strerror(status));
  x_progress(x);
  x_unref(x);
}

/* Writes with uv_try_write first; whatever the socket did not take is copied and queued. */
static void x_write(xchg_t *x, const char *data, size_t len) {
  if (len == 0 || !x->tcp_open) return;
  uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
  int n = uv_try_write((uv_stream_t *)&x->tcp, &b, 1);
  if (n == (int)len) return;
  if (n < 0 && n != UV_EAGAIN) {
    x_fail(x, "http.closed", NULL, "cannot send the request to %s:%d: %s", x->host, x->port,
           uv_strerror(n));
    return;
  }
  if (n < 0) n = 0;
  size_t rest = len - (size_t)n;
  wreq_t *w = rage__malloc(sizeof(*w) + rest);
  memcpy(w->data, data + n, rest);
  b = uv_buf_init(w->data, (unsigned)rest);
  int r = uv_write(&w->req, (uv_stream_t *)&x->tcp, &b, 1, on_write);
  if (r < 0) {
    free(w);
    x_fail(x, "http.closed", NULL, "cannot send the request to %s:%d: %s", x->host, x->port,
           uv_strerror(r));
  }
}

static void x_flush_tls(xchg_t *x) {
  rage__buf_t out = {0};
  if (rage__tls_take_output(&x->tls, &out) > 0) x_write(x, out.data, out.len);
  rage__buf_free(&out);
}

/* ---- failure and retry ------------------------------------------------------------------ */

static void x_reset_response(xchg_t *x) {
  llhttp_init(&x->parser, HTTP_RESPONSE, &settings);
  x->parser.data = x;
  x->head_done = x->msg_done = x->keep_alive = x->interim = x->want_pause = 0;
  x->clean = 1;
  x->status = 0;
  x->hbuf.len = 0;
  x->nspans = 0;
  x->in_field = x->ncl = x->nte = 0;
  x->header_bytes = x->chunk_ext = 0;
  x->body.len = 0;
  x->body_total = x->resp_bytes = 0;
  x->cb_kind = x->cb_msg = NULL;
}

/* A reused connection that the server had closed: nothing came back, so an idempotent request
 * can go again, once, on a fresh connection. */
static int x_retry(xchg_t *x, const char *kind) {
  if (!x->reused || x->retried || x->resp_bytes > 0 || !x->idempotent || x->aborted) return 0;
  if (strcmp(kind, "http.closed") != 0 || (x->state != X_HEAD && x->state != X_HANDSHAKE)) return 0;
  x->retried = 1;
  x->reused = 0;
  x->hc->retried++;
  x_reset_response(x);
  rage__tls_free(&x->tls);
  x->state = X_RESOLVE;
  x->naddr = x->addr_i = 0;
  x->reconnect = 1;
  x_close_tcp(x);
  return 1;
}

static void x_fail(xchg_t *x, const char *kind, const char *phase, const char *fmt, ...) {
  if (x->state == X_FAILED || x->state == X_DONE) return;
  if (x_retry(x, kind)) return;
  x->state = X_FAILED;
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
static void x_abort(xchg_t *x, const char *why) {
  x->aborted = 1;
  x->wait = W_NONE;
  if (x->state != X_FAILED && x->state != X_DONE) {
    x->state = X_FAILED;
    x->err_kind = "http.closed";
    x->err_phase = NULL;
    snprintf(x->err_msg, sizeof(x->err_msg), "%s", why);
  }
  x_shutdown(x);
}

/* ---- the response parser ---------------------------------------------------------------- */

#define X(p) ((xchg_t *)(p)->data)

static int cb_fail(xchg_t *x, const char *kind, const char *msg) {
  if (x->cb_kind == NULL) {
    x->cb_kind = kind;
    x->cb_msg = msg;
  }
  return -1;
}

static int add_head_bytes(xchg_t *x, size_t len) {
  x->header_bytes += len;
  if (x->header_bytes > x->max_header_size)
    return cb_fail(x, "http.too_large", "the response header section is over the limit");
  return 0;
}

static int has_ctl(const char *at, size_t len) {
  for (size_t i = 0; i < len; i++)
    if (at[i] == '\r' || at[i] == '\n' || at[i] == '\0') return 1;
  return 0;
}

static int on_message_begin(llhttp_t *p) {
  xchg_t *x = X(p);
  x->hbuf.len = 0;
  x->nspans = 0;
  x->in_field = x->ncl = x->nte = 0;
  x->header_bytes = 0;
  return 0;
}

static int on_status(llhttp_t *p, const char *at, size_t len) {
  xchg_t *x = X(p);
  if (has_ctl(at, len)) return cb_fail(x, "http.protocol", "invalid character in the status line");
  return add_head_bytes(x, len);
}

static int on_header_field(llhttp_t *p, const char *at, size_t len) {
  xchg_t *x = X(p);
  if (x->in_field != 1) {
    if (x->nspans >= x->max_headers)
      return cb_fail(x, "http.too_large", "the response has too many header fields");
    if (x->nspans == x->capspans) {
      x->capspans = x->capspans ? x->capspans * 2 : 16;
      x->spans = rage__realloc(x->spans, x->capspans * sizeof(*x->spans));
    }
    hspan_t *s = &x->spans[x->nspans++];
    s->name_off = (uint32_t)x->hbuf.len;
    s->name_len = 0;
    s->value_off = 0;
    s->value_len = 0;
    x->in_field = 1;
  }
  if (add_head_bytes(x, len)) return -1;
  rage__buf_reserve(&x->hbuf, len);
  char *d = x->hbuf.data + x->hbuf.len;
  for (size_t i = 0; i < len; i++) {
    char c = at[i];
    d[i] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
  }
  x->hbuf.len += len;
  x->spans[x->nspans - 1].name_len += (uint32_t)len;
  return 0;
}

static int on_header_field_complete(llhttp_t *p) {
  xchg_t *x = X(p);
  hspan_t *s = &x->spans[x->nspans - 1];
  const char *name = x->hbuf.data + s->name_off;
  if (s->name_len == 14 && memcmp(name, "content-length", 14) == 0 && x->ncl++)
    return cb_fail(x, "http.protocol", "the response has more than one Content-Length header");
  if (s->name_len == 17 && memcmp(name, "transfer-encoding", 17) == 0 && x->nte++)
    return cb_fail(x, "http.protocol", "the response has more than one Transfer-Encoding header");
  x->in_field = 2;
  s->value_off = (uint32_t)x->hbuf.len;
  return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len) {
  xchg_t *x = X(p);
  hspan_t *s = &x->spans[x->nspans - 1];
  if (x->in_field != 3) {
    s->value_off = (uint32_t)x->hbuf.len;
    x->in_field = 3;
  } else if (!(at == x->exec_data && x->value_at_end)) {
    /* llhttp reports one span per value per buffer. A second span of the same value that does
     * not simply continue a read boundary means bytes were skipped: an obs-fold line. */
    return cb_fail(x, "http.protocol", "obsolete line folding in a response header");
  }
  x->value_at_end = at + len == x->exec_end;
  if (has_ctl(at, len)) return cb_fail(x, "http.protocol", "invalid character in a response header value");
  if (add_head_bytes(x, len)) return -1;
  rage__buf_append(&x->hbuf, at, len);
  s->value_len += (uint32_t)len;
  return 0;
}

static int on_header_value_complete(llhttp_t *p) {
  X(p)->in_field = 0;
  return 0;
}

static int on_headers_complete(llhttp_t *p) {
  xchg_t *x = X(p);
  int status = p->status_code;
  if (status >= 100 && status < 200) {
    if (status == 101) return cb_fail(x, "http.protocol", "unexpected 101 Switching Protocols");
    x->interim = 1; /* 100 Continue, 103 Early Hints: the real response follows */
    return 0;
  }
  if ((p->flags & F_CONTENT_LENGTH) && (p->flags & F_TRANSFER_ENCODING))
    return cb_fail(x, "http.protocol", "the response has both Content-Length and Transfer-Encoding");
  /* Responses to HEAD, 204 and 304 never have a body, whatever their Content-Length says. */
  int no_body = x->method_head || status == 204 || status == 304;
  if (x->max_body && !no_body && (p->flags & F_CONTENT_LENGTH) && p->content_length > x->max_body)
    return cb_fail(x, "http.too_large", "the response body is over the limit");
  x->status = status;
  x->head_done = 1;
  x->state = X_BODY;
  return no_body ? 1 : 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len) {
  xchg_t *x = X(p);
  x->body_total += len;
  if (x->max_body && x->body_total > x->max_body)
    return cb_fail(x, "http.too_large", "the response body is over the limit");
  rage__buf_append(&x->body, at, len);
  if (x->stream && x->body.len >= RAGE_HTTPC_STREAM_HIGH_WATER) x->want_pause = 1;
  return 0;
}

static int on_chunk_header(llhttp_t *p) {
  X(p)->chunk_ext = 0;
  return 0;
}

static int on_chunk_ext(llhttp_t *p, const char *at, size_t len) {
  xchg_t *x = X(p);
  x->chunk_ext += len;
  if (x->chunk_ext > MAX_CHUNK_EXT) return cb_fail(x, "http.protocol", "chunk extensions are too long");
  return 0;
}

static int on_message_complete(llhttp_t *p) {
  xchg_t *x = X(p);
  if (x->interim) {
    x->interim = 0;
    return 0;
  }
  x->msg_done = 1;
  x->keep_alive = llhttp_should_keep_alive(p);
  return HPE_PAUSED;
}

static void init_settings(void) {
  llhttp_settings_init(&settings);
  settings.on_message_begin = on_message_begin;
  settings.on_status = on_status;
  settings.on_header_field = on_header_field;
  settings.on_header_field_complete = on_header_field_complete;
  settings.on_header_value = on_header_value;
  settings.on_header_value_complete = on_header_value_complete;
  settings.on_headers_complete = on_headers_complete;
  settings.on_body = on_body;
  settings.on_chunk_header = on_chunk_header;
  settings.on_chunk_extension_name = on_chunk_ext;
  settings.on_chunk_extension_value = on_chunk_ext;
  settings.on_message_complete = on_message_complete;
}

static void x_parse(xchg_t *x, const char *data, size_t len) {
  if (x->msg_done) {
    if (len) x->clean = 0; /* bytes after the response: the connection is not reusable */
    return;
  }
  if (x->state != X_HEAD && x->state != X_BODY) return;
  x->resp_bytes += len;
  x->exec_data = data;
  x->exec_end = data + len;
  llhttp_errno_t e = llhttp_execute(&x->parser, data, len);
  if (e == HPE_OK) return;
  if (e == HPE_PAUSED && x->msg_done) {
    if (llhttp_get_error_pos(&x->parser) < data + len) x->clean = 0;
    return;
  }
  if (x->cb_kind) {
    x_fail(x, x->cb_kind, NULL, "%s (%s:%d)", x->cb_msg, x->host, x->port);
  } else {
    x_fail(x, "http.protocol", NULL, "malformed response from %s:%d: %s", x->host, x->port,
           llhttp_get_error_reason(&x->parser));
  }
}

static void x_eof(xchg_t *x) {
  if (x->state == X_HANDSHAKE) {
    x_fail(x, "http.tls", NULL, "%s:%d closed the connection during the TLS handshake", x->host, x->port);
    return;
  }
  if (x->state != X_HEAD && x->state != X_BODY) return;
  if (x->resp_bytes > 0) {
    /* A body delimited by the end of the connection ends here. */
    llhttp_errno_t e = llhttp_finish(&x->parser);
    if (x->msg_done) {
      x->keep_alive = 0;
      return;
    }
    if (e != HPE_OK && e != HPE_PAUSED && x->cb_kind) {
      x_fail(x, x->cb_kind, NULL, "%s (%s:%d)", x->cb_msg, x->host, x->port);
      return;
    }
  }
  if (x->resp_bytes == 0)
    x_fail(x, "http.closed", NULL, "%s:%d closed the connection without responding", x->host, x->port);
  else
    x_fail(x, "http.closed", NULL, "%s:%d closed the connection before the response was complete",
           x->host, x->port);
}

/* ---- reading ---------------------------------------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  xchg_t *x = h->data;
  *buf = uv_buf_init(x->hc->rbuf, READ_SIZE);
}

static void x_send(xchg_t *x);

static void x_handshake(xchg_t *x) {
  char err[256];
  int r = rage__tls_handshake(&x->tls, err, sizeof(err));
  x_flush_tls(x);
  if (r == RAGE_TLS_OK) {
    x_send(x);
  } else if (r == RAGE_TLS_ERROR) {
    x_fail(x, "http.tls", NULL, "TLS with %s:%d failed: %s", x->host, x->port, err);
  }
}

static void x_input(xchg_t *x, const char *data, size_t len) {
  x->last_read = uv_now(x->loop);
  if (!x->use_tls) {
    x_parse(x, data, len);
    return;
  }
  rage__tls_feed(&x->tls, data, len);
  if (x->state == X_HANDSHAKE) x_handshake(x);
  char err[256];
  while (x->state == X_HEAD || x->state == X_BODY || x->state == X_DONE) {
    int n = rage__tls_read(&x->tls, x->hc->tbuf, READ_SIZE, err, sizeof(err));
    if (n > 0) {
      x_parse(x, x->hc->tbuf, (size_t)n);
    } else {
      if (n == RAGE_TLS_EOF) {
        x->clean = 0;
        x_eof(x);
      } else if (n == RAGE_TLS_ERROR) {
        x->clean = 0;
        x_fail(x, "http.tls", NULL, "TLS with %s:%d failed: %s", x->host, x->port, err);
      }
      break;
    }
  }
  if (x->state != X_FAILED) x_flush_tls(x);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  xchg_t *x = s->data;
  if (x->aborted) return;
  x_ref(x);
  if (nread > 0) {
    x_input(x, buf->base, (size_t)nread);
  } else if (nread == UV_EOF) {
    x_eof(x);
  } else if (nread < 0) {
    x_fail(x, "http.closed", NULL, "connection to %s:%d failed: %s", x->host, x->port,
           uv_strerror((int)nread));
  }
  x_progress(x);
  x_unref(x);
}

static void x_start_reading(xchg_t *x) {
  if (x->reading || !x->tcp_open) return;
  int r = uv_read_start((uv_stream_t *)&x->tcp, on_alloc, on_read);
  if (r < 0) {
    x_fail(x, "http.closed", NULL, "cannot read from %s:%d: %s", x->host, x->port, uv_strerror(r));
    return;
  }
  x->reading = 1;
}

/* ---- connecting and sending ------------------------------------------------------------- */

static void x_send(xchg_t *x) {
  x->state = X_HEAD;
  x->sent_at = x->last_read = uv_now(x->loop);
  x_start_reading(x);
  if (x->state != X_HEAD) return;
  if (x->use_tls) {
    char err[256];
    if (rage__tls_write(&x->tls, x->req.data, x->req.len, err, sizeof(err)) != 0) {
      x_fail(x, "http.tls", NULL, "TLS with %s:%d failed: %s", x->host, x->port, err);
      return;
    }
    x_flush_tls(x);
  } else {
    x_write(x, x->req.data, x->req.len);
  }
  x_arm(x);
}

static void x_connected(xchg_t *x) {
  x->hc->opened++;
  if (!x->use_tls) {
    x_send(x);
    return;
  }
  char err[256];
  SSL_CTX *ctx = get_ctx(x->hc, x->ca_file, err, sizeof(err));
  if (ctx == NULL || rage__tls_init(&x->tls, ctx, x->host, x->verify, err, sizeof(err)) != 0) {
    x_fail(x, "http.tls", NULL, "%s", err);
    return;
  }
  x->state = X_HANDSHAKE;
  x_start_reading(x);
  if (x->state == X_HANDSHAKE) x_handshake(x);
}

static void x_connect_failed(xchg_t *x, int err) {
  x->last_err = err;
  x->addr_i++;
  if (x->addr_i < x->naddr) {
    x->reconnect = 1; /* the next address, once this handle has closed */
    x_close_tcp(x);
    return;
  }
  x_fail(x, "http.connect", NULL, "cannot connect to %s:%d: %s", x->host, x->port, uv_strerror(err));
}

static void on_connect(uv_connect_t *req, int status) {
  xchg_t *x = req->handle->data;
  if (status == UV_ECANCELED || x->aborted || x->state != X_CONNECT) return;
  x_ref(x);
  if (status < 0) x_connect_failed(x, status);
  else x_connected(x);
  x_progress(x);
  x_unref(x);
}

static void x_connect(xchg_t *x) {
  x->state = X_CONNECT;
  struct sockaddr_storage *sa = &x->addr[x->addr_i];
  if (sa->ss_family == AF_INET) ((struct sockaddr_in *)sa)->sin_port = htons((uint16_t)x->port);
  else ((struct sockaddr_in6 *)sa)->sin6_port = htons((uint16_t)x->port);
  uv_tcp_init(x->loop, &x->tcp);
  x->tcp.data = x;
  x->tcp_open = 1;
  x_ref(x);
  uv_tcp_nodelay(&x->tcp, 1);
  int r = uv_tcp_connect(&x->creq, &x->tcp, (const struct sockaddr *)sa, on_connect);
  if (r < 0) x_connect_failed(x, r);
  else x_arm(x);
}

static void on_gai(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
  xchg_t *x = req->data;
  x->gai_pending = 0;
  if (x->aborted || x->state != X_RESOLVE) {
    if (res) uv_freeaddrinfo(res);
    x_unref(x);
    return;
  }
  if (status < 0) {
    x_fail(x, "http.dns", NULL, "cannot resolve %s: %s", x->host, uv_strerror(status));
  } else {
    x->naddr = 0;
    for (struct addrinfo *ai = res; ai && x->naddr < MAX_ADDRS; ai = ai->ai_next) {
      if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6) || ai->ai_addrlen > sizeof(x->addr[0]))
        continue;
      memset(&x->addr[x->naddr], 0, sizeof(x->addr[0]));
      memcpy(&x->addr[x->naddr], ai->ai_addr, ai->ai_addrlen);
      x->naddr++;
    }
    if (x->naddr == 0) {
      x_fail(x, "http.dns", NULL, "cannot resolve %s: no IPv4 or IPv6 address", x->host);
    } else {
      dns_put(x->hc, x->host, x->addr, x->naddr, uv_now(x->loop));
      x->addr_i = 0;
      x_connect(x);
    }
  }
  uv_freeaddrinfo(res);
  x_progress(x);
  x_unref(x);
}

static void x_begin_connect(xchg_t *x) {
  x->state = X_RESOLVE;
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
  uint64_t now = uv_now(x->loop);
  dns_t *d = dns_find(x->hc, x->host, now);
  if (d) {
    x->hc->hits++;
    memcpy(x->addr, d->addr, sizeof(d->addr[0]) * (size_t)d->naddr);
    x->naddr = d->naddr;
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
    x_fail(x, "http.dns", NULL, "cannot resolve %s: %s", x->host, uv_strerror(r));
    return;
  }
  x->gai_pending = 1;
  x_ref(x);
}

/* Starts the exchange on a pooled connection if a live one is there, else on a new one. */
static void x_start(xchg_t *x) {
  pooled_t *p = pool_take(x->hc, x->origin, uv_now(x->loop));
  if (p) {
    uv_tcp_init(x->loop, &x->tcp);
    x->tcp.data = x;
    if (uv_tcp_open(&x->tcp, p->fd) == 0) {
      x->tcp_open = 1;
      x_ref(x);
      x->tls = p->tls;
      free(p); /* the fd now belongs to the handle, the TLS session to the exchange */
      x->reused = 1;
      x->hc->reused++;
      x_send(x);
      return;
    }
    /* The handle never took the fd: close both and start afresh once it has closed. */
    pooled_close(p);
    x->tcp_open = 1;
    x_ref(x);
    x->state = X_RESOLVE;
    x->reconnect = 1;
    x_close_tcp(x);
    x_arm(x);
    return;
  }
  x_begin_connect(x);
}

/* The response is complete: the connection goes back to the pool if its framing allows. */
static void x_finish(xchg_t *x) {
  x->state = X_DONE;
  x_close_timer(x);
  if (!x->tcp_open || uv_is_closing((uv_handle_t *)&x->tcp)) return;
  int reusable = x->keep_alive && x->clean && !x->aborted && !x->no_reuse;
  if (reusable && x->use_tls)
    reusable = x->tls.ssl && BIO_ctrl_pending(x->tls.rbio) == 0 && SSL_pending(x->tls.ssl) == 0;
  if (reusable && (x->tcp.write_queue_size > 0)) reusable = 0;
  if (reusable) {
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)&x->tcp, &fd) == 0) {
      int copy = dup(fd);
      if (copy >= 0) pool_put(x->hc, x->origin, copy, &x->tls, uv_now(x->loop));
    }
  }
  x_close_tcp(x);
}

/* ---- results ---------------------------------------------------------------------------- */

static int push_error(xchg_t *x, lua_State *L) {
  lua_pushnil(L);
  lua_pushstring(L, x->err_kind ? x->err_kind : "http.closed");
  lua_pushstring(L, x->err_msg);
  if (x->err_phase) lua_pushstring(L, x->err_phase);
  else lua_pushnil(L);
  return 4;
}

static void push_body(xchg_t *x, lua_State *L) {
  lua_pushlstring(L, x->body.data ? x->body.data : "", x->body.len);
  x->body.len = 0;
}

static void push_headers(xchg_t *x, lua_State *L) {
  lua_createtable(L, 0, (int)x->nspans);
  for (unsigned i = 0; i < x->nspans; i++) {
    const hspan_t *s = &x->spans[i];
    const char *v = x->hbuf.data + s->value_off;
    size_t vlen = s->value_len;
    while (vlen > 0 && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t')) vlen--;
    lua_pushlstring(L, x->hbuf.data + s->name_off, s->name_len);
    lua_pushvalue(L, -1);
    lua_rawget(L, -3);
    if (lua_isnil(L, -1)) {
      lua_pop(L, 1);
      lua_pushlstring(L, v, vlen);
    } else {
      lua_pushliteral(L, ", ");
      lua_pushlstring(L, v, vlen);
      lua_concat(L, 3);
    }
    lua_rawset(L, -3);
  }
}

/* Pushes the results of a request that has its head: exchange, status, headers[, body]. */
static int push_head(xchg_t *x, lua_State *L) {
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
static void x_progress(xchg_t *x) {
  if (x->msg_done && x->state == X_BODY) x_finish(x);
  if (x->state == X_BODY && x->want_pause && x->reading && x->wait != W_CHUNK) {
    uv_read_stop((uv_stream_t *)&x->tcp);
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
  if (x->state == X_FAILED) {
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
  int drop = wait == W_HEAD && x->state == X_FAILED; /* no object took the owner reference */
  rage__fiber_resume(f, n);
  if (drop) x_unref(x);
}

/* ---- Lua API ---------------------------------------------------------------------------- */

static void on_cancel(rage__fiber_t *f, void *op) {
  xchg_t *x = op;
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
  httpc_t *hc = get_hc(L);
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
  xchg_t *x = rage__calloc(1, sizeof(*x));
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
  x_reset_response(x);
  x->started = x->connect_start = uv_now(x->loop);
  x_start(x);
  if (x->state == X_FAILED) {
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

static xchg_t *check_x(lua_State *L) {
  box_t *b = luaL_checkudata(L, 1, XMT);
  if (b->x == NULL) luaL_error(L, "this HTTP exchange is closed");
  return b->x;
}

static int x_wait(lua_State *L, xchg_t *x, int what) {
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
  xchg_t *x = check_x(L);
  if (x->state == X_FAILED) return push_error(x, L);
  if (x->msg_done) {
    push_body(x, L);
    return 1;
  }
  return x_wait(L, x, W_ALL);
}

static int xchg_read(lua_State *L) {
  xchg_t *x = check_x(L);
  if (x->state == X_FAILED) return push_error(x, L);
  if (x->paused && x->state == X_BODY) {
    x->paused = 0;
    x->want_pause = 0;
    x->last_read = uv_now(x->loop);
    x_start_reading(x);
    x_arm(x);
    if (x->state == X_FAILED) return push_error(x, L);
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
  xchg_t *x = b->x;
  if (x == NULL) return 0;
  b->x = NULL;
  if (x->state != X_DONE) x_abort(x, "the exchange was closed before the response was complete");
  x_unref(x);
  return 0;
}

int rage__httpc_lua_configure(lua_State *L) {
  httpc_t *hc = get_hc(L);
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
  pool_sweep(hc, uv_now(hc->loop), 0);
  return 0;
}

int rage__httpc_lua_stats(lua_State *L) {
  httpc_t *hc = get_hc(L);
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
  httpc_t *hc = get_hc(L);
  pool_sweep(hc, uv_now(hc->loop), 1);
  return 0;
}

static int hc_gc(lua_State *L) {
  httpc_t *hc = lua_touserdata(L, 1);
  pool_sweep(hc, 0, 1);
  while (hc->dns) {
    dns_t *d = hc->dns;
    hc->dns = d->next;
    free(d->host);
    free(d);
  }
  while (hc->ctxs) {
    tlsctx_t *c = hc->ctxs;
    hc->ctxs = c->next;
    SSL_CTX_free(c->ctx);
    free(c->ca_file);
    free(c);
  }
  return 0;
}

void rage__httpc_open(lua_State *L, void *rtp) {
  rage_runtime_t *rt = rtp;
  if (settings.on_message_complete == NULL) init_settings();
  httpc_t *hc = lua_newuserdata(L, sizeof(*hc));
  memset(hc, 0, offsetof(httpc_t, rbuf));
  hc->loop = rt->loop;
  hc->max_per_origin = RAGE_HTTPC_POOL_PER_ORIGIN;
  hc->max_idle = RAGE_HTTPC_POOL_TOTAL;
  hc->idle_ms = RAGE_HTTPC_POOL_IDLE;
  hc->dns_ttl = RAGE_HTTPC_DNS_TTL;
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
