/*
 * pg_internal.h - what the PostgreSQL pool (pg_pool.c) shares with its Lua bindings (pg_lua.c).
 *
 * The pool and lease structs are read by the bindings (stats, status, argument checks); every
 * change of state goes through the functions below, which keep the pool's books and follow the
 * suspend protocol of sched.h. An operation (rage__pg_op_t) is private to pg_pool.c.
 *
 * Functions taking a lua_State are called from a Lua method with the method's arguments already
 * checked; they push the method's results and return their number (or yield, for those marked
 * "suspends").
 */
#ifndef RAGE_PG_INTERNAL_H
#define RAGE_PG_INTERNAL_H

#include "pg_pool.h"
#include "sched.h"

typedef struct rage__pg_pool_s rage__pg_pool_t;
typedef struct rage__pg_lease_s rage__pg_lease_t;
typedef struct rage__pg_op_s rage__pg_op_t;

/* A pool: owned by its Lua object, each lease object and each op (refs); freed by the last
 * rage__pg_pool_unref(). */
struct rage__pg_pool_s {
  uv_loop_t *loop;
  rage__sched_t *sched;
  int refs;   /* the Lua object, each lease object, each op */
  int closed; /* no new connection; returned ones are closed */
  char **keys, **values;
  unsigned max, max_waiters;
  uint64_t checkout_ms, connect_ms, statement_ms;
  unsigned stmt_cache;   /* prepared statements kept per connection */
  unsigned pipeline;     /* statements in flight per connection (1: no pipelining) */
  rage__pg_conn_t *sharing; /* busy connections that other standalone statements may join */
  rage__pg_conn_t *idle; /* most recently returned first */
  unsigned nidle;
  unsigned size;         /* connections open or being opened */
  unsigned connecting;
  rage__pg_op_t *whead, *wtail;   /* FIFO of waiting ops */
  unsigned nwaiting;
  unsigned failures;     /* consecutive failed connection attempts */
  uint64_t retry_at;     /* no new attempt before this loop time */
  char last_error[200];
  uint64_t opened, closed_conns, statements, prepared, timeouts, pool_timeouts, resets, connect_failures;
  uint64_t pipelined; /* statements sent behind others in flight on their connection */
  uint64_t resolved;  /* host names looked up on the thread pool before connecting */
};

/* A lease: the memory of a Lua userdata; the pool never frees it. */
struct rage__pg_lease_s {
  rage__pg_pool_t *pool;
  rage__pg_conn_t *conn;
  rage__fiber_t *owner;
  rage__pg_op_t *op; /* the op using this lease, while one runs */
};

/* A statement as read from Lua arguments. The strings point into the Lua stack and stay valid
 * while the method runs; the pool copies what it needs to keep. */
typedef struct {
  const char *sql;
  const char **values;
  int nparams;
} rage__pg_args_t;

/* Drops one reference to `p`, freeing it with the last. */
void rage__pg_pool_unref(rage__pg_pool_t *p);

/* Marks the pool closed and closes its idle connections. Waiters are failed by the next
 * rage__pg_pool_grant(). */
void rage__pg_pool_close(rage__pg_pool_t *p);

/* Serves waiters, oldest first, with idle connections or new ones. Never runs Lua code. */
void rage__pg_pool_grant(rage__pg_pool_t *p);

/* Runs a statement for fiber `f`: on the lease's connection when `ls` is not NULL, otherwise on
 * a pooled one. `simple` sends several statements without parameters. Suspends. */
int rage__pg_pool_statement(lua_State *L, rage__pg_pool_t *p, rage__pg_lease_t *ls,
                            rage__fiber_t *f, const rage__pg_args_t *a, int simple);

/* Pins a connection to the lease for fiber `f` (which holds none yet). May suspend. */
int rage__pg_lease_acquire(lua_State *L, rage__pg_lease_t *ls, rage__fiber_t *f);

/* Returns the lease's connection to the pool, after a reset when one is needed (no op may be
 * running on it). May suspend. */
int rage__pg_lease_release(lua_State *L, rage__pg_lease_t *ls);

/* Waits for a notification on the lease's connection, held by fiber `f` with no op running;
 * returns one that already arrived without waiting. May suspend. */
int rage__pg_lease_wait_notify(lua_State *L, rage__pg_lease_t *ls, rage__fiber_t *f);

/* For a lease being collected: a running op carries on as if on a pooled connection and
 * returns it itself; a held connection is closed. Drops the lease's pool reference. */
void rage__pg_lease_drop(rage__pg_lease_t *ls);

#endif /* RAGE_PG_INTERNAL_H */
