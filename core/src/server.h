/*
 * server.h - the HTTP/1.1 server of one worker: the listening socket, connections, their
 * timeouts and limits, the response writer with backpressure, and graceful draining.
 *
 * The server knows nothing about Lua: it hands each complete request to `on_request`, and the
 * runtime answers through rage__req_respond() or the streaming calls, from a fiber or not.
 */
#ifndef RAGE_SERVER_H
#define RAGE_SERVER_H

#include <uv.h>

#include "http1.h"
#include "request.h"
#include "sched.h"

typedef struct rage__server_s rage__server_t;

typedef void (*rage__server_request_cb)(rage__server_t *s, rage__req_t *req);
typedef void (*rage__server_drained_cb)(rage__server_t *s);

struct rage__conn_s {
  uv_tcp_t tcp;
  uv_timer_t timer;
  rage__server_t *server;
  rage__http1_t http;
  rage__req_t *active;        /* the request whose response is being produced */
  unsigned nrequests;
  uint64_t msg_start;         /* when the first byte of the current request arrived */
  uint64_t last_read;         /* when bytes last arrived */
  uint64_t idle_since;        /* when the connection last became idle */
  uint64_t timer_due;         /* when the timer is set to fire */
  size_t queued;              /* bytes handed to uv_write and not yet written */
  uint64_t last_progress;     /* last time queued output moved */
  size_t last_wq;             /* libuv's write queue size at that time */
  int refs;                   /* deferred work pending on this connection */
  int handles_open;
  uint8_t reading;
  uint8_t closing;
  uint8_t lingering;          /* write side shut down; input is read and dropped */
  uint8_t wait_drain;         /* continue with pipelined input once output drains */
  int file_fd;                /* a file being sent as the response body, or -1 */
  int64_t file_off;
  uint64_t file_left;
  uint8_t file_keep_alive;
  rage__fiber_t *writer;      /* a streaming writer waiting for output to drain */
  unsigned writer_gen;
  rage__conn_t *prev, *next;
};

struct rage__server_s {
  uv_loop_t *loop;
  rage__sched_t *sched;
  const rage_server_config_t *cfg;
  rage__pools_t *pools;
  uv_tcp_t listener;
  int listening;
  int port;
  int accept_paused;          /* at max_connections: a connection waits in the listener */
  unsigned nconns;
  rage__conn_t *conns;        /* all open connections */
  int draining;
  uv_timer_t drain_timer;
  rage__server_request_cb on_request;
  rage__server_drained_cb on_drained;
  void *data;
  int closed_handles;
};

int rage__server_init(rage__server_t *s, uv_loop_t *loop, rage__sched_t *sched,
                      const rage_server_config_t *cfg, rage__pools_t *pools,
                      rage__server_request_cb on_request, void *data);
int rage__server_listen(rage__server_t *s, const char *host, int port, int reuseport);
/* Graceful stop (see rage_runtime_stop); `on_drained` runs once every connection is closed. */
void rage__server_drain(rage__server_t *s, rage__server_drained_cb on_drained);
/* Closes everything now, cancelling in-flight requests. */
void rage__server_close(rage__server_t *s);

/* Whether rage__req_respond() on `req` is a leaf call now: it cannot run Lua code before it
 * returns (no host callback, no drain to report, no paused accept to resume). The FFI path of
 * box:respond (bind.c) relies on it. */
int rage__req_respond_is_leaf(const rage__req_t *req);

/*
 * Answers `req` with a complete response. `headers` and `body` need only live during the call.
 * Returns 0; RAGE_EINVAL with *err set when the status or a header is invalid (nothing is sent
 * and the request may still be answered); RAGE_ESTATE when it was answered already. A request
 * whose client went away returns 0 and sends nothing.
 */
int rage__req_respond(rage__req_t *req, int status, const rage_header_t *headers,
                      size_t nheaders, const char *body, size_t body_len, const char **err);
/* Starts a streamed (chunked) response. Same returns as rage__req_respond(). */
int rage__req_stream_start(rage__req_t *req, int status, const rage_header_t *headers,
                           size_t nheaders, const char **err);
/*
 * Writes one chunk. Returns 1 when the connection's output is above the high-water mark: the
 * caller (a fiber) should wait with rage__req_stream_wait(); 0 otherwise; RAGE_ECLOSED when the
 * client went away; RAGE_ESTATE when no stream is open.
 */
int rage__req_stream_write(rage__req_t *req, const char *data, size_t len);
/* Suspends the fiber until output drains below the mark (a lua_CFunction tail call). */
int rage__req_stream_wait(lua_State *L, rage__req_t *req, rage__fiber_t *f);
int rage__req_stream_end(rage__req_t *req);
/*
 * Answers `req` with `length` bytes of the file at `path` from `offset` as the body, sent with
 * sendfile(2) while the socket takes it and through the write queue when it is full. The caller
 * has already chosen the status and headers (ETag, ranges: lua/rage/static.lua). Returns 0, a
 * negative errno-style code when the file cannot be opened or is not a regular file, RAGE_EINVAL
 * when the range lies outside the file, or the errors of rage__req_respond().
 */
int rage__req_send_file(rage__req_t *req, int status, const rage_header_t *headers,
                        size_t nheaders, const char *path, uint64_t offset, uint64_t length,
                        const char **err);
/* The fiber handling `req` has finished; frees the request once its response is complete.
 * A request that was never answered gets a 500. */
void rage__req_job_done(rage__req_t *req, int failed);
/* The peer address of the request's connection as text, or NULL. */
int rage__req_peer(rage__req_t *req, char *out, size_t outlen);

#endif /* RAGE_SERVER_H */
