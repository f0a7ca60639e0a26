/*
 * pg.h - one PostgreSQL connection driven by the loop (libpq in non-blocking mode), the
 * mapping of SQLSTATEs to rage error kinds, and result objects that decode rows for Lua.
 *
 * A connection is a plain C object. It polls its socket (a uv_poll_t) only while an operation
 * runs, connecting or running a statement; an idle connection holds no libuv handle, so a
 * runtime can close with connections in its pool. Operations report through callbacks, never
 * from inside the call that started them, and libpq is never called in a way that blocks.
 * The pool (pg_pool.h) builds fibers, waiting and leases on top of this.
 */
#ifndef RAGE_PG_H
#define RAGE_PG_H

#include <libpq-fe.h>
#include <lua.h>
#include <stdint.h>
#include <uv.h>

typedef struct rage__pg_conn_s rage__pg_conn_t;
typedef struct rage__pg_stmt_s rage__pg_stmt_t;

/* Prepared statements kept per connection by default (the least recently used is dropped). */
#define RAGE_PG_STATEMENT_CACHE 100

/* Called once when connecting ends: `ok` is 1 when the connection is ready, 0 when it failed
 * (PQerrorMessage(c->pg) says why; the connection must then be closed). */
typedef void (*rage__pg_connect_cb)(rage__pg_conn_t *c, int ok, void *data);

/* Called once when a statement has run. `res` belongs to the callback: the statement's result,
 * its first error, or a PGRES_FATAL_ERROR made from libpq's message when the connection failed
 * (then c->broken is set). It is NULL for failures found by this driver (a poll error, COPY):
 * c->error says what happened, and c->broken is set. */
typedef void (*rage__pg_result_cb)(rage__pg_conn_t *c, PGresult *res, void *data);

/* Called once when a notification arrives on a waiting connection (`n`, freed with PQfreemem by
 * the callback), or with NULL when the connection failed (c->broken is set). */
typedef void (*rage__pg_notify_cb)(rage__pg_conn_t *c, PGnotify *n, void *data);

struct rage__pg_conn_s {
  PGconn *pg;
  uv_loop_t *loop;
  struct rage__pg_watch_s *watch; /* the socket's poll handle while an operation runs */
  int fd;                         /* the socket `watch` polls */
  uint64_t ino;                   /* its inode: a new socket may reuse a closed one's number */
  int connecting;                 /* resolving the host name, or PQconnectPoll drives it */
  struct rage__pg_resolve_s *resolve; /* the host name lookup in flight, if any */
  char **keys, **values;          /* connection parameters, kept while connecting */
  char *host;                     /* the host name looked up */
  int resolved;                   /* the host name was looked up on the loop's thread pool */
  int busy;                       /* statements are in flight (inflight > 0) */
  int waiting;                    /* waiting for a notification (LISTEN) */
  int broken;                     /* failed or abandoned: close it, never reuse it */
  int dirty;                      /* session state changed (SET, LISTEN...): reset before reuse */
  int shared;                     /* in pipeline mode with only RAGE_PG_SHARED statements in
                                   * flight: another such statement may join */
  unsigned inflight;              /* statements sent whose results are not all in */
  unsigned live;                  /* those whose caller still waits (not abandoned) */
  struct rage__pg_req_s *head, *tail; /* the statements in flight, oldest first */
  int dispatching;                /* inside a poll callback: closing only marks close_pending */
  int close_pending;
  rage__pg_connect_cb on_connect;
  rage__pg_notify_cb on_notify;
  void *data;            /* of on_connect / on_notify */
  char error[160];       /* the failure of the connection when there is no result for it */
  /* Prepared statements, keyed by SQL text, most recently used first. */
  rage__pg_stmt_t *stmts, *stmts_tail;
  unsigned nstmts, max_stmts;  /* max_stmts 0: every statement goes unnamed */
  unsigned next_stmt;          /* names are "rage_<n>" */
  unsigned *unprepare;         /* statements to DEALLOCATE with the next prepare */
  unsigned nunprepare;
  /* Of the statement whose result callback is running: */
  int prepared;                /* it was prepared (not found in the cache) */
  int plan_changed;            /* it failed with "cached plan must not change result type": its
                                * entry is gone, running it again may work */
  uint64_t created_ms;
  unsigned long statements;
  /* Owned by the pool. */
  rage__pg_conn_t *next;
  rage__pg_conn_t *snext, *sprev; /* the pool's list of connections taking joiners */
  int listed;
  int resume_later; /* a fiber of a statement on it was resumed later: the next ones are too */
  void *pool;
};

/* How rage__pg_conn_send sends a statement. */
enum {
  RAGE_PG_EXTENDED = 0, /* one statement with parameters, through the prepared-statement cache */
  RAGE_PG_SIMPLE = 1,   /* SQL text that may hold several statements, no parameters */
  RAGE_PG_SHARED = 2    /* as EXTENDED, as one pipeline segment ending in its own Sync: other
                         * RAGE_PG_SHARED statements may be sent behind it before its result is
                         * in, and an error aborts only its own segment */
};

/*
 * Starts connecting with libpq's connection parameters (keys/values as for
 * PQconnectStartParams, expand_dbname on, so a "dbname" value may be a URL). Returns 0 and
 * calls `cb` later, or a negative error with a message in `err` (and never calls `cb`).
 * The connection is allocated here and freed by rage__pg_conn_close().
 *
 * libpq resolves host names with a blocking getaddrinfo() inside PQconnectStartParams. So a
 * single host name (not an IP address, not a socket directory, no hostaddr given) is looked up
 * first with uv_getaddrinfo, on libuv's thread pool, and libpq gets every address found as
 * `hostaddr`, with the name repeated as `host` (kept for TLS server name checks and .pgpass):
 * it tries them in order, as it would have. Lists of hosts are left to libpq.
 */
int rage__pg_conn_connect(rage__pg_conn_t **out, uv_loop_t *loop, const char *const *keys,
                          const char *const *values, rage__pg_connect_cb cb, void *data,
                          char *err, size_t errlen);

/*
 * Sends one statement (see the modes above; NULL values are SQL NULLs). Returns 0 and calls
 * `cb` later with `data`, or -1 when nothing could be sent (the connection is then broken and
 * `cb` is never called; statements already in flight on it fail with their own callbacks).
 * The connection must be idle, or, for RAGE_PG_SHARED, have c->shared set.
 *
 * Callbacks run in the order the statements were sent. A callback may close the connection;
 * when other statements are still in flight (c->inflight > 0 as it runs) it must not, unless
 * none of them has a caller left (c->live == 0).
 *
 * Extended-protocol statements are prepared once per connection and kept in an LRU cache of
 * max_stmts entries keyed by SQL text. A statement not in the cache goes out as a pipeline in
 * one round trip: DEALLOCATE of the entries evicted since the last one, PREPARE, EXECUTE. A
 * statement whose PREPARE is still in flight for an earlier statement goes unnamed. A cached
 * statement whose plan changed result type (ALTER TABLE) fails once with SQLSTATE 0A000; its
 * entry is dropped and c->plan_changed tells the callback that running it again will prepare
 * it anew. DISCARD ALL and DEALLOCATE ALL empty the cache.
 */
int rage__pg_conn_send(rage__pg_conn_t *c, const char *sql, int nparams, const char *const *values,
                       int mode, rage__pg_result_cb cb, void *data);

/* Forgets the caller of the statement sent with `data`: its callback will not run and its
 * result is dropped when it arrives. Returns the number of statements in flight whose caller
 * still waits (c->live); at 0 the connection is only useful once drained, or closed. */
unsigned rage__pg_conn_forget(rage__pg_conn_t *c, void *data);

/* Waits on an idle connection for a notification (after LISTEN). Returns 0 and calls `cb`
 * later, or -1 when the connection cannot be watched. rage__pg_conn_abandon() stops the wait
 * and leaves the connection usable. Notifications that already arrived are in PQnotifies(). */
int rage__pg_conn_wait(rage__pg_conn_t *c, rage__pg_notify_cb cb, void *data);

/* Abandons the running operations without calling their callbacks. A statement's or a
 * connection attempt's protocol state is then unknown, so the connection is marked broken:
 * close it. */
void rage__pg_conn_abandon(rage__pg_conn_t *c);

/* Asks the server to cancel the statement running on `c`. libpq's PQcancel() blocks while it
 * opens a second connection, so it runs on a short-lived detached thread of its own, which
 * touches nothing but its own copy of the cancel key: the connection may be closed at once. */
void rage__pg_conn_cancel_remote(rage__pg_conn_t *c);

/* For an idle connection: 0 when the server closed it or sent an error while it was idle. */
int rage__pg_conn_alive(rage__pg_conn_t *c);

/* What went wrong with the connection: libpq's message, or this driver's when libpq has none
 * (a host name that could not be resolved). */
const char *rage__pg_conn_message(rage__pg_conn_t *c);

/* Closes the connection (libpq's Terminate message is sent without blocking) and frees it;
 * from inside one of its callbacks, frees it when the callback returns. */
void rage__pg_conn_close(rage__pg_conn_t *c);

/* The stable error kind for a SQLSTATE ("db.unique_violation"...); `lost` when the connection
 * failed, for errors libpq made up without a SQLSTATE. */
const char *rage__pg_error_kind(const char *sqlstate, int lost);

/* Pushes nil, kind, message, fields for an error result (fields: sqlstate, detail, hint,
 * constraint, table, column, schema, severity, position, status). Returns 4. */
int rage__pg_push_error(lua_State *L, const PGresult *res, int lost);
/* Pushes nil, kind, message, fields for an error made by the client (no SQLSTATE). */
int rage__pg_push_client_error(lua_State *L, const char *kind, const char *message);

/* Pushes a result object that takes ownership of `res`. Its method
 * decode(null, array_mt, json_decode) returns rows, columns, affected, command tag. */
void rage__pg_push_result(lua_State *L, PGresult *res);

/* Between the driver's files, pg.c (the socket and statements) and pg_connect.c (opening a
 * connection): not for other callers. */
int rage__pg_watch(rage__pg_conn_t *c, int events);   /* poll the socket for `events` */
void rage__pg_watch_close(rage__pg_conn_t *c);
void rage__pg_watch_idle(rage__pg_conn_t *c);         /* idle: watch for reads, unless broken */
void rage__pg_check_socket(rage__pg_conn_t *c);       /* libpq dropped the socket: stop polling it */
void rage__pg_on_notice(void *arg, const char *message);
void rage__pg_conn_free(rage__pg_conn_t *c);
void rage__pg_connect_step(rage__pg_conn_t *c);       /* the socket is ready while connecting */
void rage__pg_connect_abandon(rage__pg_conn_t *c);    /* forget a host name lookup in flight */
void rage__pg_connect_free(rage__pg_conn_t *c);       /* free the connection parameters */

/* Registers the metatables of result, pool and lease objects; `rt` is the runtime. */
void rage__pg_open(lua_State *L, void *rt);

#endif /* RAGE_PG_H */
