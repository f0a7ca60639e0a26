/*
 * request.h - one HTTP request as the core hands it to Lua: the parsed head (copied out of the
 * read buffer into the request's arena), the body, and the state of its response.
 *
 * A request lives from the end of its head until both its response is complete and the fiber
 * that handled it has finished, whichever is later. It may outlive its connection: when the
 * client goes away, `conn` becomes NULL and writes are dropped.
 */
#ifndef RAGE_REQUEST_H
#define RAGE_REQUEST_H

#include <stdint.h>
#include <sys/types.h>

#include "rage.h"
#include "sched.h"
#include "util.h"

typedef struct rage__conn_s rage__conn_t;
typedef struct rage__req_s rage__req_t;
typedef struct rage__pools_s rage__pools_t;

/* Room for a generated request id and its NUL. */
#define RAGE_REQUEST_ID_SIZE 40

struct rage__req_s {
  rage__conn_t *conn;       /* the connection writing the response, or NULL */
  rage__pools_t *pools;
  const char *method;       /* static string */
  size_t method_len;
  int method_id;            /* llhttp_method_t */
  char *target;             /* NUL-terminated, in the arena */
  size_t target_len;
  size_t path_len;          /* bytes before '?' */
  rage_header_t *headers;   /* names and values NUL-terminated, in the arena */
  unsigned nheaders;
  rage__buf_t body;         /* the body while it fits in the server's body_buffer */
  int body_fd;              /* -1, or an unnamed temporary file holding the whole body */
  size_t body_len;          /* body bytes received, in `body` or in the file */
  uint8_t http_major, http_minor;
  uint8_t keep_alive;       /* the client allows another request on this connection */
  uint8_t head_only;        /* HEAD: the response carries no body bytes */
  uint8_t expect_continue;
  uint8_t responded;        /* the response head has been produced */
  uint8_t streaming;        /* the response is chunked and not yet finished */
  uint8_t finished;         /* the response is complete */
  uint8_t job_done;         /* the fiber has finished */
  rage__fiber_t *fiber;
  void **box;               /* the Lua userdata's pointer slot; cleared when the job ends */
  rage_response_cb cb;      /* for requests handed in without sockets */
  void *cb_data;
  rage__buf_t out;          /* a streamed body collected for `cb` */
  int out_status;
  rage_header_t *out_headers;
  size_t out_nheaders;
  uint64_t start_ms;
  const char *id;           /* the request id once known (NUL-terminated), else NULL */
  size_t id_len;
  uint8_t want_id;          /* the response carries X-Request-Id */
  char id_buf[RAGE_REQUEST_ID_SIZE]; /* a generated id */
  rage__req_t *next;        /* free list */
  rage__arena_t arena;
};

/*
 * Free lists shared by the connections of one runtime: read buffers (a fixed size, room for the
 * largest head the limits allow) and request objects.
 */
typedef struct rage__rbuf_s {
  struct rage__rbuf_s *next;
  char data[];
} rage__rbuf_t;

struct rage__pools_s {
  rage__rbuf_t *rbufs;
  unsigned nrbufs;
  size_t rbuf_size;         /* bytes of data in one read buffer */
  rage__req_t *reqs;
  unsigned nreqs;
};

void rage__pools_init(rage__pools_t *pools, const rage_server_config_t *cfg);
void rage__pools_free(rage__pools_t *pools);
rage__rbuf_t *rage__rbuf_get(rage__pools_t *pools);
void rage__rbuf_put(rage__pools_t *pools, rage__rbuf_t *b);

rage__req_t *rage__req_new(rage__pools_t *pools);
void rage__req_free(rage__req_t *req);
/* Finds a request header by name (ASCII case-insensitive); NULL if absent. */
/*
 * The body. Bytes are kept in memory while they fit in `buffer`; past it (or at once, with
 * rage__req_body_spool() when the announced length is larger) they go to a temporary file in
 * $TMPDIR (else /tmp) that is unlinked on creation, so it disappears with the request even when
 * the process dies. Both return 0 or a negative errno.
 */
int rage__req_body_append(rage__req_t *req, const char *data, size_t len, size_t buffer);
int rage__req_body_spool(rage__req_t *req);
/* Copies up to `n` body bytes from offset `off` into `dst`: the count, 0 past the end, or a
 * negative errno. */
ssize_t rage__req_body_read(const rage__req_t *req, size_t off, char *dst, size_t n);

const rage_header_t *rage__req_header(const rage__req_t *req, const char *name, size_t len);

/*
 * Request ids. rage__req_take_id() adopts the request's own X-Request-Id (`value`) when it is
 * safe to echo and to log: 1 to 128 of A-Z a-z 0-9 - _ . : @. rage__req_id() returns the id,
 * making one the first time when none was adopted: a per-process prefix (pid and 16 random
 * bits, in hex) and a counter, e.g. "4f2a1c3d-17".
 */
void rage__req_take_id(rage__req_t *req, const char *value, size_t len);
const char *rage__req_id(rage__req_t *req, size_t *len);

#endif /* RAGE_REQUEST_H */
