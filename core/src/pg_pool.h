/*
 * pg_pool.h - PostgreSQL connection pools for fibers, behind rage.db (lua/rage/db.lua).
 *
 * A pool belongs to one runtime (one worker) and one database. It opens connections lazily, up
 * to its size, and lends one per statement: the connection returns to the pool as soon as the
 * statement's result is in. Once every connection is busy, standalone statements (queries and
 * plain DML outside transactions) of other fibers are pipelined onto connections that already
 * run such statements, up to the pipeline depth, each with its own Sync so that an error stays
 * its own. A lease pins one connection to one fiber for a transaction; it is never shared.
 *
 * Fibers that find every connection busy wait in FIFO order, each for at most the checkout
 * timeout; the queue of waiters is bounded. Both limits fail with db.pool_timeout. Connections
 * that fail are closed and replaced on demand; after a failed connection attempt, new attempts
 * wait for a backoff (100 ms doubling to 2 s) and checkouts that would need one fail at once
 * with db.connection, so requests fail fast while the database is down and the pool recovers
 * by itself when it is back. A connection that comes back inside a transaction or with changed
 * session settings is reset (ROLLBACK, DISCARD ALL) before anyone else gets it, or closed.
 *
 * Every wait follows the suspend protocol of sched.h. A statement whose fiber is cancelled, or
 * that outlives the statement timeout, is cancelled on the server (rage__pg_conn_cancel_remote)
 * and its connection closed when it is alone on it. Sharing a pipeline, it is only forgotten
 * (a cancel request could stop another fiber's statement): its result is dropped when it
 * arrives, nothing joins the connection meanwhile, and once no statement in flight on the
 * connection has a fiber waiting, the connection is cancelled and closed.
 *
 * Lua objects (upvalue 1 of every method is the runtime):
 *   core.pg_pool(keys, values, opts) -> pool      keys/values: libpq connection parameters
 *     opts: size (5), max_waiters (1000), checkout_timeout (5), connect_timeout (5),
 *           statement_timeout (30; 0 for none), all times in seconds; statement_cache (100
 *           prepared statements per connection; 0 sends every statement unnamed); pipeline
 *           (8: standalone statements in flight per connection, from different fibers,
 *           once every connection is busy; 1 lends a connection to one statement at a time)
 *   pool:query(sql, n, p1..pn)   -> result | nil, kind, message, fields          (suspends)
 *                                   fields.retry: the cached plan changed; running the
 *                                   statement again will prepare it anew
 *   pool:script(sql)             -> result | nil, kind, message, fields          (suspends)
 *   pool:lease()                 -> lease holding no connection yet
 *   pool:stats()                 -> {size, busy, idle, waiting, connecting, max, ...}
 *   pool:close()                 -> closes idle connections; later calls fail
 *   lease:acquire()              -> true | nil, kind, message, fields            (may suspend)
 *   lease:query(sql, n, p1..pn), lease:script(sql)   as the pool's, on the pinned connection
 *   lease:release()              -> true, after a reset when one is needed       (may suspend)
 *   lease:status()               -> "none", "idle", "transaction", "failed", "active", "unknown"
 *   lease:wait_notify()          -> channel, payload, pid | nil, kind, message, fields
 *                                   (after LISTEN; suspends until a notification arrives;
 *                                   cancelling the wait leaves the connection usable)
 * A lease collected while it holds a connection closes that connection.
 */
#ifndef RAGE_PG_POOL_H
#define RAGE_PG_POOL_H

#include "pg.h"

#define RAGE_PG_POOL_SIZE 5
#define RAGE_PG_MAX_WAITERS 1000
#define RAGE_PG_CHECKOUT_TIMEOUT 5000  /* ms */
#define RAGE_PG_CONNECT_TIMEOUT 5000   /* ms */
#define RAGE_PG_STATEMENT_TIMEOUT 30000 /* ms */
#define RAGE_PG_PIPELINE 8             /* statements in flight per connection */
#define RAGE_PG_RESET_TIMEOUT 5000     /* ms, for ROLLBACK / DISCARD ALL on a returned connection */
#define RAGE_PG_BACKOFF_MIN 100        /* ms */
#define RAGE_PG_BACKOFF_MAX 2000       /* ms */

/* core.pg_pool(keys, values, opts): a new pool; see above. */
int rage__pg_lua_pool(lua_State *L);

/* Registers the pool and lease metatables (called by rage__pg_open). */
void rage__pg_pool_open(lua_State *L, void *rt);

#endif /* RAGE_PG_POOL_H */
