/*
 * httpc_internal.h - what the files of the HTTP client share, and nothing else includes.
 *
 * httpc.c runs exchanges (the state machine, timeouts, reading and writing) and holds the Lua
 * bindings; httpc_pool.c keeps what outlives an exchange (idle connections, the DNS cache, the
 * TLS contexts); httpc_parse.c reads the response through llhttp. The two structures here are
 * the client state of one runtime and an exchange; the rules for their memory are in httpc.c.
 */
#ifndef RAGE_HTTPC_INTERNAL_H
#define RAGE_HTTPC_INTERNAL_H

#include <llhttp.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "config.h"
#include "sched.h"
#include "tls.h"
#include "util.h"

/* The client state of one runtime: a userdata anchored in the registry of its Lua state. The
 * origins, cached names and TLS contexts are lists private to httpc_pool.c. */
typedef struct rage__httpc_s {
  uv_loop_t *loop;
  struct rage__httpc_origin_s *origins;
  unsigned nidle;
  struct rage__httpc_dns_s *dns;
  unsigned ndns;
  struct rage__httpc_tlsctx_s *ctxs;
  unsigned max_per_origin, max_idle;
  uint64_t idle_ms, dns_ttl, last_sweep;
  uint64_t opened, reused, retried, lookups, hits;
  char rbuf[RAGE_HTTPC_READ_SIZE]; /* socket reads: consumed before the read callback returns */
  char tbuf[RAGE_HTTPC_READ_SIZE]; /* decrypted TLS bytes, likewise */
} rage__httpc_t;

/* The states of an exchange, in the order it walks through them. */
enum {
  RAGE_XCHG_START,
  RAGE_XCHG_RESOLVE,
  RAGE_XCHG_CONNECT,
  RAGE_XCHG_HANDSHAKE, /* https only */
  RAGE_XCHG_HEAD,      /* the request is sent; waiting for the response head */
  RAGE_XCHG_BODY,
  RAGE_XCHG_DONE,
  RAGE_XCHG_FAILED
};

/* A TCP connection of the client. Its libuv handle lives in memory of its own so that it can
 * outlive the exchange it served: an idle connection waits in the keep-alive pool as it is,
 * still registered with the loop and reading, so that one the server closes (or writes to) is
 * dropped when that happens, and reusing one costs no system call. */
typedef struct rage__httpc_conn_s {
  uv_tcp_t tcp; /* first: a pointer to the handle is one to the connection */
  rage__httpc_t *hc;
  struct rage__xchg_s *x;              /* the exchange on it; NULL while pooled */
  struct rage__httpc_pooled_s *pooled; /* its pool entry while pooled */
} rage__httpc_conn_t;

/* One response header field: offsets into the exchange's hbuf. */
typedef struct {
  uint32_t name_off, name_len, value_off, value_len;
} rage__httpc_span_t;

typedef struct rage__xchg_s {
  rage__httpc_t *hc;
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
  /* the connection: open and held (it holds a reference) until its close callback, or given
   * to the pool; NULL when there is none */
  rage__httpc_conn_t *conn;
  int reconnect, reading, paused;
  uv_connect_t creq;
  uv_getaddrinfo_t gai;
  int gai_pending;
  struct sockaddr_storage addr[RAGE_HTTPC_MAX_ADDRS];
  int naddr, addr_i, last_err;
  rage__tls_t tls;
  int reused, retried;
  /* the response */
  llhttp_t parser;
  int head_done, msg_done, keep_alive, clean, interim, want_pause;
  int status;
  rage__buf_t hbuf;
  rage__httpc_span_t *spans;
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
} rage__xchg_t;

/* ---- httpc.c ---------------------------------------------------------------------------- */

/* Ends the exchange with an error of `kind` ("http.closed", ...) unless it has already ended,
 * or retries it once on a fresh connection when a reused one turned out closed. The connection
 * and the timer are closed at once; the fiber is never resumed from here, but by x_progress() at
 * the end of the current callback (or the Lua call sees the failure when it returns). */
void rage__xchg_fail(rage__xchg_t *x, const char *kind, const char *phase, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* ---- httpc_parse.c ---------------------------------------------------------------------- */

/* Readies the parser and forgets any response received so far (before the first attempt and
 * before a retry). */
void rage__xchg_parse_reset(rage__xchg_t *x);

/* Parses response bytes while the exchange is in HEAD or BODY; after the end of the response,
 * bytes only mark the connection unreusable. A malformed or over-limit response fails the
 * exchange. Never runs Lua. */
void rage__xchg_parse(rage__xchg_t *x, const char *data, size_t len);

/* The peer closed the connection: ends a body delimited by the close, or fails the exchange. */
void rage__xchg_parse_eof(rage__xchg_t *x);

/* ---- httpc_pool.c ----------------------------------------------------------------------- */

/* Sets up a client state with the default pool settings; its read buffers stay uninitialized.
 * rage__httpc_free() releases what it holds (the memory of `hc` is the caller's). */
void rage__httpc_init(rage__httpc_t *hc, uv_loop_t *loop);
void rage__httpc_free(rage__httpc_t *hc);

/* Closes idle connections older than the idle timeout, at most once a second unless `force`,
 * which closes them all. */
void rage__httpc_pool_sweep(rage__httpc_t *hc, uint64_t now, int force);

/* Takes an idle connection of `origin` (its pool key) out of the pool: returns it, still
 * reading, and moves its TLS session (zeroed for plain HTTP) into *tls, or returns NULL when
 * there is none. The caller owns both. With `check`, a connection whose socket has anything to
 * read (a close or bytes its read callback has not seen yet) is closed and the next one tried:
 * for requests that are not retried when a reused connection turns out closed. */
rage__httpc_conn_t *rage__httpc_pool_take(rage__httpc_t *hc, const char *origin, uint64_t now,
                                          int check, rage__tls_t *tls);

/* Gives an idle connection, reading and with no exchange, to the pool, which takes ownership of
 * it and of *tls (zeroed here) and closes them at once when the pool is full. */
void rage__httpc_pool_put(rage__httpc_t *hc, const char *origin, rage__httpc_conn_t *c,
                          rage__tls_t *tls, uint64_t now);

/* A pooled connection read something or failed: it leaves the pool and is closed. */
void rage__httpc_pool_drop(rage__httpc_conn_t *c);

/* Closes a connection; its memory goes in the close callback (httpc.c). */
void rage__httpc_conn_close(rage__httpc_conn_t *c);

/* Copies the live cached addresses of `host` into addr (RAGE_HTTPC_MAX_ADDRS entries, ports
 * unset) and returns how many; 0 when the name is not cached or has expired. */
int rage__httpc_dns_find(rage__httpc_t *hc, const char *host, uint64_t now,
                         struct sockaddr_storage *addr);

/* Caches `naddr` (1 to RAGE_HTTPC_MAX_ADDRS) addresses of `host` for the DNS TTL. */
void rage__httpc_dns_put(rage__httpc_t *hc, const char *host, const struct sockaddr_storage *addr,
                         int naddr, uint64_t now);

/* The TLS context that verifies against `ca_file` (NULL for the system store), made on first
 * use and owned by the state. Returns NULL with a message in err when it cannot be made. */
SSL_CTX *rage__httpc_tls_ctx(rage__httpc_t *hc, const char *ca_file, char *err, size_t errlen);

#endif /* RAGE_HTTPC_INTERNAL_H */
