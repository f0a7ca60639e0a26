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
 *
 * PostgreSQL (W2 /db, W3 /queries?queries=N), when DATABASE_URL (or --db) names a database:
 * a pool of DB_POOL_SIZE libpq connections in non-blocking mode, opened with PQconnectStart and
 * PQconnectPoll and watched with uv_poll. Each connection prepares one named statement once;
 * every query is a PQsendQueryPrepared of it with a random id. A connection runs one query at a
 * time (no pipelining) and goes back to the pool as soon as its result is read: a request of W3
 * leases a connection per query. Requests that find no free connection wait in a FIFO queue.
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

#include <libpq-fe.h>
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

/* W2/W3: connections in the pool, rows in the table, the largest ?queries= served. */
#define DB_POOL_SIZE 10
#define WORLD_ROWS 10000
#define QUERIES_MAX 500
#define DB_RECONNECT_MS 1000
#define WORLD_STATEMENT "world"
#define WORLD_SQL "SELECT id, randomnumber FROM worlds WHERE id = $1"

typedef struct conn_s conn_t;
typedef struct db_job_s db_job_t;

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
  db_job_t *job; /* The database work of the request being answered, if any. */
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
static void db_job_detach(conn_t *c);
static void db_close_all(void);

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

/* ---------------------------------------------------------------------------------------------
 * PostgreSQL: W2 and W3. */

typedef enum { DB_DOWN, DB_CONNECTING, DB_PREPARING, DB_IDLE, DB_BUSY } db_state_t;

typedef struct {
  uv_poll_t poll;   /* Watches PQsocket(pg) while poll_open. */
  uv_timer_t retry; /* Reconnects a while after a failure. */
  PGconn *pg;
  db_state_t state;
  db_job_t *job; /* The job whose query is in flight (DB_BUSY). */
  bool poll_open;
} db_conn_t;

/* The database work of one request: `left` more queries, their JSON collected in `body`. */
struct db_job_s {
  conn_t *c;      /* NULL once the client has gone away: the job then ends silently. */
  db_job_t *next; /* In the waiters queue. */
  bool queued;
  bool array; /* /queries answers an array, /db one object. */
  bool failed;
  int left;
  buffer_t body;
};

static const char *db_conninfo; /* NULL: /db and /queries answer 503. */
static db_conn_t db_pool[DB_POOL_SIZE];
static db_job_t *db_waiters_head, *db_waiters_tail; /* FIFO of jobs waiting for a connection. */
static bool db_shutting_down;
static uint32_t rng_state = 2463534242u;

static void db_connect(db_conn_t *dc);
static void db_job_step(db_job_t *job);

/* xorshift32: an id in 1..WORLD_ROWS. */
static int random_world_id(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 17;
  rng_state ^= rng_state << 5;
  return (int)(rng_state % WORLD_ROWS) + 1;
}

static void buffer_append(buffer_t *b, const char *s, size_t n) {
  buffer_reserve(b, n);
  memcpy(b->base + b->len, s, n);
  b->len += n;
}

#define APPEND_LITERAL(b, s) buffer_append((b), (s), sizeof(s) - 1)

static void db_job_free(db_job_t *job) {
  free(job->body.base);
  free(job);
}

static void on_db_retry(uv_timer_t *timer) {
  db_connect(timer->data);
}

static void db_schedule_retry(db_conn_t *dc) {
  if (!db_shutting_down)
    uv_timer_start(&dc->retry, on_db_retry, DB_RECONNECT_MS, 0);
}

/* libpq closes the socket in PQfinish, so the poll handle on it is closed first. */
static void on_db_poll_closed(uv_handle_t *handle) {
  db_conn_t *dc = handle->data;
  PQfinish(dc->pg);
  dc->pg = NULL;
  db_schedule_retry(dc);
}

/* A connection that failed: its query's request gets 503, and it reconnects later. */
static void db_conn_fail(db_conn_t *dc) {
  if (dc->pg != NULL && !db_shutting_down)
    fprintf(stderr, "rage-baseline: database: %s", PQerrorMessage(dc->pg));
  db_job_t *job = dc->job;
  dc->job = NULL;
  dc->state = DB_DOWN;
  if (dc->poll_open) {
    dc->poll_open = false;
    uv_close((uv_handle_t *)&dc->poll, on_db_poll_closed);
  } else {
    PQfinish(dc->pg);
    dc->pg = NULL;
    db_schedule_retry(dc);
  }
  if (job != NULL) {
    job->failed = true;
    db_job_step(job);
  }
}

/* Flushes what libpq has queued and watches the socket for the answer (and for room to write
 * while output remains). */
static void on_db_poll(uv_poll_t *handle, int status, int events);
static bool db_watch(db_conn_t *dc) {
  int flushed = PQflush(dc->pg);
  if (flushed < 0) {
    db_conn_fail(dc);
    return false;
  }
  uv_poll_start(&dc->poll, UV_READABLE | (flushed == 1 ? UV_WRITABLE : 0), on_db_poll);
  return true;
}

static void db_send(db_conn_t *dc, db_job_t *job) {
  char id[16];
  snprintf(id, sizeof id, "%d", random_world_id());
  const char *params[1] = {id};
  job->left--;
  dc->job = job;
  dc->state = DB_BUSY;
  if (!PQsendQueryPrepared(dc->pg, WORLD_STATEMENT, 1, params, NULL, NULL, 0)) {
    db_conn_fail(dc);
    return;
  }
  db_watch(dc);
}

/* The job's next query: on a free connection, else at the back of the queue. */
static void db_submit(db_job_t *job) {
  for (int i = 0; i < DB_POOL_SIZE; i++) {
    if (db_pool[i].state == DB_IDLE) {
      db_send(&db_pool[i], job);
      return;
    }
  }
  job->next = NULL;
  job->queued = true;
  if (db_waiters_tail != NULL)
    db_waiters_tail->next = job;
  else
    db_waiters_head = job;
  db_waiters_tail = job;
}

/* A connection that became free serves the first waiter. */
static void db_conn_release(db_conn_t *dc) {
  db_job_t *job = db_waiters_head;
  if (job == NULL)
    return;
  db_waiters_head = job->next;
  if (db_waiters_head == NULL)
    db_waiters_tail = NULL;
  job->queued = false;
  db_send(dc, job);
}

/* One row of worlds as JSON. */
static void db_append_world(db_job_t *job, const PGresult *res) {
  if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1 || PQnfields(res) != 2) {
    job->failed = true;
    return;
  }
  if (job->array && job->body.len > 1)
    APPEND_LITERAL(&job->body, ",");
  APPEND_LITERAL(&job->body, "{\"id\":");
  buffer_append(&job->body, PQgetvalue(res, 0, 0), (size_t)PQgetlength(res, 0, 0));
  APPEND_LITERAL(&job->body, ",\"randomnumber\":");
  buffer_append(&job->body, PQgetvalue(res, 0, 1), (size_t)PQgetlength(res, 0, 1));
  APPEND_LITERAL(&job->body, "}");
}

static void on_db_poll(uv_poll_t *handle, int status, int events) {
  db_conn_t *dc = handle->data;
  if (status < 0) {
    db_conn_fail(dc);
    return;
  }
  if (dc->state == DB_CONNECTING) {
    PostgresPollingStatusType st = PQconnectPoll(dc->pg);
    if (st == PGRES_POLLING_FAILED) {
      db_conn_fail(dc);
    } else if (st == PGRES_POLLING_OK) {
      /* Connected: prepare the statement once, without waiting for it here. */
      PQsetnonblocking(dc->pg, 1);
      dc->state = DB_PREPARING;
      if (!PQsendPrepare(dc->pg, WORLD_STATEMENT, WORLD_SQL, 1, NULL))
        db_conn_fail(dc);
      else
        db_watch(dc);
    } else {
      uv_poll_start(&dc->poll, st == PGRES_POLLING_READING ? UV_READABLE : UV_WRITABLE, on_db_poll);
    }
    return;
  }
  if ((events & UV_WRITABLE) && PQflush(dc->pg) < 0) {
    db_conn_fail(dc);
    return;
  }
  if ((events & UV_READABLE) && !PQconsumeInput(dc->pg)) {
    db_conn_fail(dc);
    return;
  }
  if (dc->state == DB_IDLE)
    return; /* A notice, or nothing: an idle connection has no result to read. */
  while (!PQisBusy(dc->pg)) {
    PGresult *res = PQgetResult(dc->pg);
    if (res == NULL) {
      /* The command is complete: the connection is free again. */
      db_job_t *job = dc->job;
      bool prepared = dc->state == DB_PREPARING;
      dc->job = NULL;
      dc->state = DB_IDLE;
      uv_poll_start(&dc->poll, UV_READABLE, on_db_poll);
      db_conn_release(dc);
      if (!prepared)
        db_job_step(job);
      return;
    }
    if (dc->state == DB_PREPARING) {
      if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        fprintf(stderr, "rage-baseline: database: cannot prepare: %s", PQresultErrorMessage(res));
        PQclear(res);
        db_conn_fail(dc);
        return;
      }
    } else {
      db_append_world(dc->job, res);
    }
    PQclear(res);
  }
  db_watch(dc);
}

static void db_connect(db_conn_t *dc) {
  dc->pg = PQconnectStart(db_conninfo);
  if (dc->pg == NULL || PQstatus(dc->pg) == CONNECTION_BAD || PQsocket(dc->pg) < 0) {
    db_conn_fail(dc);
    return;
  }
  dc->state = DB_CONNECTING;
  uv_poll_init(loop, &dc->poll, PQsocket(dc->pg));
  dc->poll.data = dc;
  dc->poll_open = true;
  uv_poll_start(&dc->poll, UV_WRITABLE, on_db_poll);
}

static void db_start(void) {
  for (int i = 0; i < DB_POOL_SIZE; i++) {
    db_conn_t *dc = &db_pool[i];
    uv_timer_init(loop, &dc->retry);
    dc->retry.data = dc;
    db_connect(dc);
  }
}

/* Called on SIGTERM after every client connection is closed: every job is detached by then. */
static void db_close_all(void) {
  if (db_conninfo == NULL)
    return;
  db_shutting_down = true;
  for (int i = 0; i < DB_POOL_SIZE; i++) {
    db_conn_t *dc = &db_pool[i];
    if (dc->job != NULL)
      db_job_free(dc->job);
    dc->job = NULL;
    dc->state = DB_DOWN;
    uv_close((uv_handle_t *)&dc->retry, NULL);
    if (dc->poll_open) {
      dc->poll_open = false;
      uv_close((uv_handle_t *)&dc->poll, on_db_poll_closed);
    } else if (dc->pg != NULL) {
      PQfinish(dc->pg);
      dc->pg = NULL;
    }
  }
}

/* After a query: the next one, or the response once all are done. */
static void db_job_step(db_job_t *job) {
  conn_t *c = job->c;
  if (c == NULL) {
    db_job_free(job);
    return;
  }
  if (job->failed || job->left == 0) {
    c->job = NULL;
    if (job->failed) {
      respond(c, "503 Service Unavailable", "text/plain", "Service Unavailable\n", 20);
    } else {
      if (job->array)
        APPEND_LITERAL(&job->body, "]");
      respond(c, "200 OK", "application/json", job->body.base, job->body.len);
    }
    db_job_free(job);
    conn_finish_async(c);
    return;
  }
  db_submit(job);
}

/* The connection closes: its job, waiting or in flight, ends without a response. */
static void db_job_detach(conn_t *c) {
  db_job_t *job = c->job;
  if (job == NULL)
    return;
  c->job = NULL;
  job->c = NULL;
  if (!job->queued)
    return; /* In flight: freed when its query ends. */
  db_job_t **p = &db_waiters_head, *prev = NULL;
  while (*p != job) {
    prev = *p;
    p = &(*p)->next;
  }
  *p = job->next;
  if (db_waiters_tail == job)
    db_waiters_tail = prev;
  db_job_free(job);
}

static int db_begin(conn_t *c, int queries, bool array) {
  if (db_conninfo == NULL) {
    respond(c, "503 Service Unavailable", "text/plain", "No database: set DATABASE_URL\n", 30);
    return HANDLER_DONE;
  }
  db_job_t *job = xrealloc(NULL, sizeof *job);
  memset(job, 0, sizeof *job);
  job->c = c;
  job->left = queries;
  job->array = array;
  if (array)
    APPEND_LITERAL(&job->body, "[");
  c->job = job;
  db_submit(job);
  return HANDLER_ASYNC;
}

/* W2: one random row. */
static int handle_db(conn_t *c, const request_t *req) {
  (void)req;
  return db_begin(c, 1, false);
}

/* ?queries=N, clamped to 1..QUERIES_MAX; anything unreadable counts as 1. */
static int queries_param(const request_t *req) {
  const char *q = req->query, *end = req->query + req->query_len;
  long n = 1;
  while (q != NULL && q < end) {
    const char *amp = memchr(q, '&', (size_t)(end - q));
    const char *stop = amp != NULL ? amp : end;
    if (stop - q > 8 && memcmp(q, "queries=", 8) == 0) {
      n = 0;
      for (const char *d = q + 8; d < stop && *d >= '0' && *d <= '9' && n <= QUERIES_MAX; d++)
        n = n * 10 + (*d - '0');
    }
    q = amp != NULL ? amp + 1 : end;
  }
  return n < 1 ? 1 : n > QUERIES_MAX ? QUERIES_MAX : (int)n;
}

/* W3: N random rows, one query after another, as an array. */
static int handle_queries(conn_t *c, const request_t *req) {
  return db_begin(c, queries_param(req), true);
}

static const route_t routes[] = {
  {HTTP_GET, "/json", handle_json},
  {HTTP_GET, "/wait", handle_wait},
  {HTTP_GET, "/db", handle_db},
  {HTTP_GET, "/queries", handle_queries},
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

/* Closing cancels a write in flight (its callback runs with UV_ECANCELED), stops the timer and
 * detaches a database job, which then ends without a response. */
static void conn_close(conn_t *c) {
  if (c->closing)
    return;
  c->closing = true;
  db_job_detach(c);
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
  db_close_all();
}

static void usage(FILE *f) {
  fprintf(f, "usage: rage-baseline [--host HOST] [--port PORT] [--db CONNINFO]\n"
             "  --host HOST  address to listen on (default " DEFAULT_HOST ")\n"
             "  --port PORT  port to listen on, 0 for any free port (default %d)\n"
             "  --db URL     PostgreSQL for /db and /queries (default: $DATABASE_URL)\n",
          DEFAULT_PORT);
}

int main(int argc, char **argv) {
  const char *host = DEFAULT_HOST;
  long port = DEFAULT_PORT;
  db_conninfo = getenv("DATABASE_URL");
  if (db_conninfo != NULL && *db_conninfo == '\0')
    db_conninfo = NULL;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--db") == 0 && i + 1 < argc) {
      db_conninfo = argv[++i];
    } else if (strcmp(argv[i], "--host") == 0 && i + 1 < argc) {
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

  rng_state ^= (uint32_t)uv_hrtime() | 1u;
  if (db_conninfo != NULL)
    db_start();

  uv_run(loop, UV_RUN_DEFAULT);
  err = uv_loop_close(loop);
  if (err != 0) {
    fprintf(stderr, "rage-baseline: loop not empty at exit: %s\n", uv_strerror(err));
    return 1;
  }
  return 0;
}
