/*
 * httpc_pool.c - what the HTTP client keeps between exchanges, per runtime: the keep-alive pool
 * of idle connections by origin, the DNS cache and the TLS client contexts.
 *
 * An idle connection keeps its libuv handle, reading: when the server closes it or writes to it,
 * the read callback drops it from the pool (rage__httpc_pool_drop), and taking one out costs no
 * system call. A request that cannot be retried (not idempotent) checks the socket with a peek
 * first, since a close can be in the kernel before this loop pass reads it. Closing one
 * completes on the next loop iteration. The pool is bounded per origin and in all; connections
 * idle longer than the idle timeout are closed by a sweep that runs at most once a second, when
 * a connection is taken or given back. The pool key of an origin holds the scheme, host and
 * port, and for https the verification settings, so that a connection is only reused by
 * requests that trust alike.
 *
 * The DNS cache keeps the addresses of up to RAGE_HTTPC_DNS_CACHE names, newest first, each
 * for the DNS TTL; when it is full of live entries the oldest goes. TLS contexts are made once
 * per CA file ("" for the system store) and live as long as the state.
 */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "httpc_internal.h"

typedef struct rage__httpc_pooled_s {
  struct rage__httpc_pooled_s *next;
  struct rage__httpc_origin_s *origin;
  rage__httpc_conn_t *conn;
  rage__tls_t tls;
  uint64_t since;
} pooled_t;

typedef struct rage__httpc_origin_s {
  struct rage__httpc_origin_s *next;
  char *key;
  pooled_t *idle; /* most recently used first */
  unsigned nidle;
} origin_t;

typedef struct rage__httpc_dns_s {
  struct rage__httpc_dns_s *next;
  char *host;
  int naddr;
  struct sockaddr_storage addr[RAGE_HTTPC_MAX_ADDRS];
  uint64_t expires;
} dns_t;

typedef struct rage__httpc_tlsctx_s {
  struct rage__httpc_tlsctx_s *next;
  char *ca_file; /* "" for the system store */
  SSL_CTX *ctx;
} tlsctx_t;

void rage__httpc_init(rage__httpc_t *hc, uv_loop_t *loop) {
  memset(hc, 0, offsetof(rage__httpc_t, rbuf));
  hc->loop = loop;
  hc->max_per_origin = RAGE_HTTPC_POOL_PER_ORIGIN;
  hc->max_idle = RAGE_HTTPC_POOL_TOTAL;
  hc->idle_ms = RAGE_HTTPC_POOL_IDLE;
  hc->dns_ttl = RAGE_HTTPC_DNS_TTL;
}

void rage__httpc_free(rage__httpc_t *hc) {
  rage__httpc_pool_sweep(hc, 0, 1);
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
}

/* ---- the pool --------------------------------------------------------------------------- */

static void pooled_close(pooled_t *p) {
  p->conn->pooled = NULL;
  rage__httpc_conn_close(p->conn);
  rage__tls_free(&p->tls);
  free(p);
}

void rage__httpc_pool_sweep(rage__httpc_t *hc, uint64_t now, int force) {
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

static origin_t *origin_find(rage__httpc_t *hc, const char *key, int create) {
  for (origin_t *o = hc->origins; o; o = o->next)
    if (strcmp(o->key, key) == 0) return o;
  if (!create) return NULL;
  origin_t *o = rage__calloc(1, sizeof(*o));
  o->key = rage__strndup(key, strlen(key));
  o->next = hc->origins;
  hc->origins = o;
  return o;
}

/* Nothing has arrived on the socket: no close and no stray bytes that the read callback has
 * not been called for yet (they may be in the kernel while this loop pass runs). */
static int pooled_quiet(const pooled_t *p) {
  uv_os_fd_t fd;
  char byte;
  if (uv_fileno((const uv_handle_t *)&p->conn->tcp, &fd) != 0) return 0;
  ssize_t n;
  do
    n = recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  while (n < 0 && errno == EINTR);
  return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

rage__httpc_conn_t *rage__httpc_pool_take(rage__httpc_t *hc, const char *key, uint64_t now,
                                          int check, rage__tls_t *tls) {
  rage__httpc_pool_sweep(hc, now, 0);
  origin_t *o = origin_find(hc, key, 0);
  while (o && o->idle) {
    pooled_t *p = o->idle;
    o->idle = p->next;
    o->nidle--;
    hc->nidle--;
    if (now - p->since < hc->idle_ms && (!check || pooled_quiet(p))) {
      rage__httpc_conn_t *c = p->conn;
      c->pooled = NULL;
      *tls = p->tls;
      free(p);
      return c;
    }
    pooled_close(p);
  }
  return NULL;
}

void rage__httpc_pool_put(rage__httpc_t *hc, const char *key, rage__httpc_conn_t *c,
                          rage__tls_t *tls, uint64_t now) {
  pooled_t *p = rage__calloc(1, sizeof(*p));
  p->conn = c;
  c->pooled = p;
  p->tls = *tls;
  memset(tls, 0, sizeof(*tls));
  p->since = now;
  rage__httpc_pool_sweep(hc, now, 0);
  origin_t *o = origin_find(hc, key, 1);
  if (o->nidle >= hc->max_per_origin || hc->nidle >= hc->max_idle) {
    pooled_close(p);
    if (o->nidle == 0) rage__httpc_pool_sweep(hc, now, 0);
    return;
  }
  p->origin = o;
  p->next = o->idle;
  o->idle = p;
  o->nidle++;
  hc->nidle++;
}

void rage__httpc_pool_drop(rage__httpc_conn_t *c) {
  pooled_t *p = c->pooled;
  if (p == NULL) return;
  origin_t *o = p->origin;
  for (pooled_t **pp = &o->idle; *pp; pp = &(*pp)->next) {
    if (*pp == p) {
      *pp = p->next;
      o->nidle--;
      c->hc->nidle--;
      break;
    }
  }
  pooled_close(p);
}

/* ---- DNS cache and TLS contexts --------------------------------------------------------- */

int rage__httpc_dns_find(rage__httpc_t *hc, const char *host, uint64_t now,
                         struct sockaddr_storage *addr) {
  for (dns_t *d = hc->dns; d; d = d->next) {
    if (strcmp(d->host, host) != 0) continue;
    if (d->expires <= now) return 0;
    memcpy(addr, d->addr, sizeof(d->addr[0]) * (size_t)d->naddr);
    return d->naddr;
  }
  return 0;
}

void rage__httpc_dns_put(rage__httpc_t *hc, const char *host, const struct sockaddr_storage *addr,
                         int naddr, uint64_t now) {
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

SSL_CTX *rage__httpc_tls_ctx(rage__httpc_t *hc, const char *ca_file, char *err, size_t errlen) {
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
