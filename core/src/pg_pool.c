/*
 * pg_pool.c - connection pools and the fiber side of PostgreSQL (see pg_pool.h); the Lua
 * methods that drive them are in pg_lua.c, and what the two share in pg_internal.h.
 *
 * Each suspending Lua call gets an operation (op_t) that walks through
 *   WAIT (queued for a connection) -> CONNECT (opening one) -> RUN (statement in flight)
 *   -> RESET (ROLLBACK / DISCARD ALL before the connection goes back) -> DONE
 * skipping what it does not need. An op is referenced by its fiber until it is resumed or
 * cancelled, by its timer handle until the handle's close callback, and by a deferred resume
 * until that runs; it is freed when the last reference goes. The one timer of an op bounds
 * whatever phase it is in: the checkout wait, the connection attempt, the statement, the reset.
 *
 * Resuming: completions that come from the op's own libuv callbacks resume its fiber at once,
 * after the pool's books are straight. Everything else (a connection handed to a waiter when
 * another fiber returns it, a waiter failed because the database is down) is resumed through
 * rage__sched_defer, so no fiber ever runs inside another's call. rage__pg_pool_grant() is the one place
 * that serves waiters; it never runs Lua code.
 *
 * Pipelining: an op whose statement may share a connection (op->share) joins a busy one from
 * the pool's `sharing` list when no connection is idle and none may be opened, and only when no
 * one waits in the queue, so that nothing overtakes a waiting transaction. Results of one
 * connection come in statement order; when others are still in flight on it, the fiber resumes
 * through rage__sched_defer (pg.c is still reading that connection), and so do the ones after
 * it in the same burst, so that fibers resume in statement order too.
 *
 * Garbage collection may run a lease's finalizer in the middle of any of this, so finalizers
 * only close connections and adjust counters; they never serve waiters or resume fibers.
 */
#include "pg_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "util.h"

typedef rage__pg_pool_t pool_t;
typedef rage__pg_lease_t lease_t;
typedef rage__pg_op_t op_t;

enum { OP_QUERY, OP_ACQUIRE, OP_RELEASE, OP_NOTIFY };
enum { PH_NEW, PH_WAIT, PH_CONNECT, PH_RUN, PH_RESET, PH_LISTEN, PH_DONE };

struct rage__pg_op_s {
  pool_t *pool;
  int what;
  int phase;
  lease_t *lease; /* the lease a query runs on or an acquire fills; NULL if it was collected */
  rage__pg_conn_t *conn;
  rage__fiber_t *f;
  unsigned gen;
  int refs;
  int gone; /* the fiber side is over: resumed or cancelled */
  uv_timer_t timer;
  int timer_open;
  /* The statement. Points into Lua strings while the call runs, into `stmt` once copied. */
  const char *sql;
  const char **values;
  int nparams;
  int simple;
  int share;   /* a standalone statement that may ride a pipeline with other fibers' */
  char *stmt;
  /* The outcome. */
  PGresult *res;
  int lost;
  int retry;   /* the statement may succeed if run again (its cached plan changed) */
  int granted; /* an acquire handed its lease a connection */
  PGnotify *notify;
  const char *err_kind;
  char err[256];
  op_t *wnext, *wprev;
};

/* ---- pools, ops and their references ---------------------------------------------------- */

void rage__pg_pool_unref(pool_t *p) {
  if (--p->refs > 0) return;
  for (char **k = p->keys; *k; k++) free(*k);
  for (char **v = p->values; *v; v++) free(*v);
  free(p->keys);
  free(p->values);
  free(p);
}

static op_t *op_new(pool_t *p, rage__fiber_t *f, int what) {
  op_t *op = rage__calloc(1, sizeof(*op));
  op->pool = p;
  op->f = f;
  op->what = what;
  op->phase = PH_NEW;
  op->refs = 1;
  p->refs++;
  return op;
}

static void op_unref(op_t *op) {
  if (--op->refs > 0) return;
  if (op->res) PQclear(op->res);
  if (op->notify) PQfreemem(op->notify);
  free(op->stmt);
  rage__pg_pool_unref(op->pool);
  free(op);
}

static void op_fail(op_t *op, const char *kind, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void op_fail(op_t *op, const char *kind, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(op->err, sizeof(op->err), fmt, ap);
  va_end(ap);
  op->err_kind = kind;
}

/* Copies the statement into memory the op owns, for ops that cannot send it at once. */
static void op_keep_statement(op_t *op) {
  size_t total = (size_t)op->nparams * sizeof(char *) + strlen(op->sql) + 1;
  for (int i = 0; i < op->nparams; i++)
    if (op->values[i]) total += strlen(op->values[i]) + 1;
  char *block = rage__malloc(total);
  const char **vals = (const char **)(void *)block;
  char *s = block + (size_t)op->nparams * sizeof(char *);
  for (int i = 0; i < op->nparams; i++) {
    if (op->values[i] == NULL) {
      vals[i] = NULL;
      continue;
    }
    size_t n = strlen(op->values[i]) + 1;
    memcpy(s, op->values[i], n);
    vals[i] = s;
    s += n;
  }
  size_t n = strlen(op->sql) + 1;
  memcpy(s, op->sql, n);
  op->sql = s;
  op->values = vals;
  op->stmt = block;
}

static void on_timer_closed(uv_handle_t *h) {
  op_unref(h->data);
}

static void on_op_timer(uv_timer_t *t);

static void timer_arm(op_t *op, uint64_t ms) {
  if (ms == 0) {
    if (op->timer_open) uv_timer_stop(&op->timer);
    return;
  }
  if (!op->timer_open) {
    uv_timer_init(op->pool->loop, &op->timer);
    op->timer.data = op;
    op->timer_open = 1;
    op->refs++;
  }
  uv_timer_start(&op->timer, on_op_timer, ms, 0);
}

static void timer_close(op_t *op) {
  if (!op->timer_open) return;
  op->timer_open = 0;
  uv_close((uv_handle_t *)&op->timer, on_timer_closed);
}

/* ---- connections ------------------------------------------------------------------------ */

/* The list of connections with shared statements in flight, which others may join. */
static void unlist(pool_t *p, rage__pg_conn_t *c) {
  if (!c->listed) return;
  if (c->sprev) c->sprev->snext = c->snext;
  else p->sharing = c->snext;
  if (c->snext) c->snext->sprev = c->sprev;
  c->snext = c->sprev = NULL;
  c->listed = 0;
}

static void list(pool_t *p, rage__pg_conn_t *c) {
  if (c->listed) return;
  c->sprev = NULL;
  c->snext = p->sharing;
  if (p->sharing) p->sharing->sprev = c;
  p->sharing = c;
  c->listed = 1;
}

/* The least loaded connection a shared statement may join: in pipeline mode with only shared
 * statements in flight, none of them abandoned (a statement that timed out may still be running,
 * and anything sent behind it would wait for it), and room below the pipeline depth. */
static rage__pg_conn_t *pick_shared(pool_t *p) {
  rage__pg_conn_t *best = NULL;
  for (rage__pg_conn_t *c = p->sharing; c; c = c->snext) {
    if (!c->shared || c->broken || c->live != c->inflight || c->inflight >= p->pipeline) continue;
    if (best == NULL || c->inflight < best->inflight) best = c;
  }
  return best;
}

static void discard(pool_t *p, rage__pg_conn_t *c) {
  unlist(p, c);
  p->size--;
  p->closed_conns++;
  rage__pg_conn_close(c);
}

static int needs_reset(rage__pg_conn_t *c) {
  return PQtransactionStatus(c->pg) != PQTRANS_IDLE || c->dirty;
}

/* A connection back from its user, clean: idle in the pool (rage__pg_pool_grant() hands it on). */
static void release_conn(pool_t *p, rage__pg_conn_t *c) {
  if (p->closed || c->broken || needs_reset(c)) {
    discard(p, c);
    return;
  }
  c->next = p->idle;
  p->idle = c;
  p->nidle++;
}

/* The most recently used idle connection that is still alive; dead ones are closed. The idle
 * watch marks a connection broken when the loop reads the server's close, but the close may be
 * in the kernel before that (in this loop pass, or while Lua code runs without yielding), and a
 * connection back from an abandoned LISTEN has no watch: rage__pg_conn_alive looks at the
 * socket itself. */
static rage__pg_conn_t *take_idle(pool_t *p) {
  while (p->idle) {
    rage__pg_conn_t *c = p->idle;
    p->idle = c->next;
    p->nidle--;
    c->next = NULL;
    if (rage__pg_conn_alive(c)) return c;
    discard(p, c);
  }
  return NULL;
}

static void note_failure(pool_t *p, const char *msg) {
  size_t n = strlen(msg);
  while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == ' ')) n--;
  snprintf(p->last_error, sizeof(p->last_error), "%.*s", (int)n, msg);
  p->connect_failures++;
  unsigned shift = p->failures < 8 ? p->failures : 8;
  uint64_t backoff = (uint64_t)RAGE_PG_BACKOFF_MIN << shift;
  if (backoff > RAGE_PG_BACKOFF_MAX) backoff = RAGE_PG_BACKOFF_MAX;
  p->failures++;
  p->retry_at = uv_now(p->loop) + backoff;
}

/* ---- waiters ---------------------------------------------------------------------------- */

static void enqueue(pool_t *p, op_t *op) {
  op->phase = PH_WAIT;
  op->wnext = NULL;
  op->wprev = p->wtail;
  if (p->wtail) p->wtail->wnext = op;
  else p->whead = op;
  p->wtail = op;
  p->nwaiting++;
}

static void dequeue(pool_t *p, op_t *op) {
  if (op->wprev) op->wprev->wnext = op->wnext;
  else p->whead = op->wnext;
  if (op->wnext) op->wnext->wprev = op->wprev;
  else p->wtail = op->wprev;
  op->wnext = op->wprev = NULL;
  p->nwaiting--;
}

/* ---- completing ops --------------------------------------------------------------------- */

/* Pushes the outcome onto the fiber's stack; returns the number of values. */
static int push_notify(lua_State *L, PGnotify *n) {
  lua_pushstring(L, n->relname);
  lua_pushstring(L, n->extra ? n->extra : "");
  lua_pushinteger(L, n->be_pid);
  PQfreemem(n);
  return 3;
}

static int op_push(op_t *op, lua_State *L) {
  if (op->notify) {
    PGnotify *n = op->notify;
    op->notify = NULL;
    return push_notify(L, n);
  }
  if (op->res) {
    PGresult *res = op->res;
    op->res = NULL;
    ExecStatusType st = PQresultStatus(res);
    if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK || st == PGRES_EMPTY_QUERY ||
        st == PGRES_SINGLE_TUPLE) {
      if (op->err_kind == NULL) {
        rage__pg_push_result(L, res);
        return 1;
      }
      PQclear(res);
    } else {
      int n = rage__pg_push_error(L, res, op->lost);
      PQclear(res);
      if (op->retry) {
        lua_pushboolean(L, 1);
        lua_setfield(L, -2, "retry");
      }
      return n;
    }
  }
  if (op->err_kind) return rage__pg_push_client_error(L, op->err_kind, op->err);
  lua_pushboolean(L, 1);
  return 1;
}

/* Undoes what a finished op handed over, for a fiber that will never see it. */
static void drop_outcome(op_t *op) {
  if (op->res) {
    PQclear(op->res);
    op->res = NULL;
  }
  if (op->notify) {
    /* A notification the fiber will not see is lost, as one that arrives between waits is not:
     * those stay queued in libpq. */
    PQfreemem(op->notify);
    op->notify = NULL;
  }
  if (op->what == OP_ACQUIRE && op->granted && op->lease && op->lease->conn) {
    rage__pg_conn_t *c = op->lease->conn;
    op->lease->conn = NULL;
    op->lease->owner = NULL;
    release_conn(op->pool, c);
  }
}

static void detach_lease(op_t *op) {
  if (op->lease && op->lease->op == op) op->lease->op = NULL;
}

static void resume_op(op_t *op) {
  rage__fiber_t *f = op->f;
  if (op->gone) return;
  op->gone = 1;
  if (!rage__fiber_waiting(f, op->gen)) {
    drop_outcome(op);
    op_unref(op);
    return;
  }
  int n = op_push(op, f->L);
  op_unref(op);
  rage__fiber_resume(f, n);
}

/* Holds the reference complete() took. While the fiber side is not over, the fiber holds one
 * too, so the deferral's is dropped first and resume_op() drops the fiber's. */
static void deferred_resume(void *data) {
  op_t *op = data;
  if (op->gone) {
    op_unref(op);
    return;
  }
  op->refs--;
  resume_op(op);
}

/* Ends the op. `direct` resumes its fiber now (only from the op's own libuv callbacks, after
 * the pool's state is consistent); otherwise the resume is deferred. */
static void complete(op_t *op, int direct) {
  op->phase = PH_DONE;
  detach_lease(op);
  timer_close(op);
  if (direct) {
    resume_op(op);
  } else {
    op->refs++;
    rage__sched_defer(op->pool->sched, deferred_resume, op);
  }
}

/* The connection of the op failed or was abandoned: close it. */
static void drop_conn(op_t *op) {
  rage__pg_conn_t *c = op->conn;
  if (c == NULL) return;
  op->conn = NULL;
  if (op->lease && op->lease->conn == c) {
    op->lease->conn = NULL;
    op->lease->owner = NULL;
  }
  rage__pg_conn_abandon(c);
  discard(op->pool, c);
}

/* ---- running statements ----------------------------------------------------------------- */

static void on_result(rage__pg_conn_t *c, PGresult *res, void *data);
static void on_reset(rage__pg_conn_t *c, PGresult *res, void *data);
static void on_connected(rage__pg_conn_t *c, int ok, void *data);

/* Sends the op's statement on op->conn. Returns 0, or -1 after closing a connection that
 * could not take it (the op's outcome is then set). */
static int start_run(op_t *op) {
  pool_t *p = op->pool;
  rage__pg_conn_t *c = op->conn;
  int joining = c->busy;
  /* A shareable statement opens a pipeline others may join only when the pool has no idle
   * connection left for them; otherwise it goes out as it would without pipelining. */
  int share = op->share && (joining || p->nidle == 0);
  int mode = share ? RAGE_PG_SHARED : op->simple ? RAGE_PG_SIMPLE : RAGE_PG_EXTENDED;
  if (rage__pg_conn_send(c, op->sql, op->nparams, op->values, mode, on_result, op) != 0) {
    op_fail(op, "db.connection", "the database connection failed: %s", PQerrorMessage(c->pg));
    if (c->busy) {
      /* Statements of other fibers are in flight: they fail on their own, and the last one
       * closes the connection. */
      unlist(p, c);
      op->conn = NULL;
    } else {
      drop_conn(op);
    }
    return -1;
  }
  op->phase = PH_RUN;
  p->statements++;
  if (joining) p->pipelined++;
  if (share) list(p, c);
  timer_arm(op, p->statement_ms);
  return 0;
}

/* Gives up on the statement of `op` (its fiber was cancelled, or it timed out). Alone on its
 * connection, the statement is cancelled on the server and the connection closed, as its
 * protocol state is unknown. Sharing it with statements of other fibers, it cannot be cancelled
 * (the cancel request would stop whatever runs at that moment, maybe another fiber's
 * statement): its result is dropped when it arrives, and no statement joins the connection
 * until then. Once no statement on the connection has a caller left, it is cancelled and
 * closed. */
static void abandon_run(op_t *op) {
  rage__pg_conn_t *c = op->conn;
  if (c == NULL) return;
  if (rage__pg_conn_forget(c, op) == 0) {
    rage__pg_conn_cancel_remote(c);
    drop_conn(op);
  } else {
    op->conn = NULL;
  }
}

/* Starts the next reset step on op->conn (ROLLBACK, then DISCARD ALL). Returns 0 when a step
 * runs, or -1 when none is needed or possible: the connection is then back in the pool or
 * closed, and op->conn is NULL. */
static int start_reset(op_t *op) {
  pool_t *p = op->pool;
  rage__pg_conn_t *c = op->conn;
  PGTransactionStatusType ts = PQtransactionStatus(c->pg);
  const char *sql = NULL;
  if (ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR) sql = "ROLLBACK";
  else if (ts == PQTRANS_IDLE && c->dirty) sql = "DISCARD ALL";
  if (sql == NULL || c->broken) {
    op->conn = NULL;
    if (op->lease && op->lease->conn == c) op->lease->conn = NULL;
    if (ts == PQTRANS_IDLE && !c->broken) release_conn(p, c);
    else discard(p, c);
    return -1;
  }
  if (rage__pg_conn_send(c, sql, 0, NULL, 1, on_reset, op) != 0) {
    drop_conn(op);
    return -1;
  }
  op->phase = PH_RESET;
  p->resets++;
  timer_arm(op, RAGE_PG_RESET_TIMEOUT);
  return 0;
}

/* Opens a connection for `op`. Returns 0, or -1 with the op's outcome set (the database is in
 * its backoff period, or the parameters are unusable). */
static int open_conn(pool_t *p, op_t *op) {
  uint64_t now = uv_now(p->loop);
  if (now < p->retry_at) {
    op_fail(op, "db.connection", "the database is unavailable: %s (next attempt in %llu ms)",
            p->last_error, (unsigned long long)(p->retry_at - now));
    return -1;
  }
  char err[200];
  rage__pg_conn_t *c;
  int r = rage__pg_conn_connect(&c, p->loop, (const char *const *)p->keys,
                                (const char *const *)p->values, on_connected, op, err, sizeof(err));
  if (r != 0) {
    size_t n = strlen(err);
    while (n > 0 && err[n - 1] == '\n') err[--n] = '\0';
    op_fail(op, "db.connection", "cannot connect to the database: %s", err);
    return -1;
  }
  c->pool = p;
  c->max_stmts = p->stmt_cache;
  p->size++;
  p->connecting++;
  op->conn = c;
  op->phase = PH_CONNECT;
  timer_arm(op, p->connect_ms);
  return 0;
}

/* The op has its connection (op->conn): an acquire is done, a query starts. */
static void have_conn(op_t *op, int direct) {
  pool_t *p = op->pool;
  if (op->what == OP_ACQUIRE) {
    if (op->lease == NULL) {
      release_conn(p, op->conn);
      op->conn = NULL;
      op_fail(op, "db.connection", "the lease was collected");
    } else {
      op->lease->conn = op->conn;
      op->lease->owner = op->f;
      op->conn = NULL;
      op->granted = 1;
    }
    complete(op, direct);
    return;
  }
  if (start_run(op) != 0) complete(op, direct);
}

void rage__pg_pool_grant(pool_t *p) {
  while (p->whead) {
    op_t *op = p->whead;
    if (p->closed) {
      dequeue(p, op);
      op_fail(op, "db.connection", "the database pool is closed");
      complete(op, 0);
      continue;
    }
    rage__pg_conn_t *c = take_idle(p);
    if (c) {
      dequeue(p, op);
      op->conn = c;
      have_conn(op, 0);
      continue;
    }
    if (p->size >= p->max) {
      if (op->what != OP_QUERY || !op->share || (c = pick_shared(p)) == NULL) break;
      dequeue(p, op);
      op->conn = c;
      if (start_run(op) != 0) complete(op, 0);
      continue;
    }
    dequeue(p, op);
    if (open_conn(p, op) != 0) complete(op, 0);
  }
}

static void on_connected(rage__pg_conn_t *c, int ok, void *data) {
  op_t *op = data;
  pool_t *p = op->pool;
  p->refs++;
  p->connecting--;
  if (c->resolved) p->resolved++;
  if (!ok) {
    char msg[200];
    snprintf(msg, sizeof(msg), "%s", rage__pg_conn_message(c));
    note_failure(p, msg);
    op->conn = NULL;
    discard(p, c);
    op_fail(op, "db.connection", "cannot connect to the database: %s", p->last_error);
    rage__pg_pool_grant(p);
    complete(op, 1);
  } else {
    p->opened++;
    p->failures = 0;
    p->retry_at = 0;
    have_conn(op, 1);
    rage__pg_pool_grant(p);
  }
  rage__pg_pool_unref(p);
}

static void on_result(rage__pg_conn_t *c, PGresult *res, void *data) {
  op_t *op = data;
  pool_t *p = op->pool;
  p->refs++;
  if (op->timer_open) uv_timer_stop(&op->timer);
  op->res = res;
  op->lost = c->broken;
  /* A shared statement runs outside any transaction, whatever else is in flight. */
  op->retry = c->plan_changed && !c->broken &&
              (op->share || PQtransactionStatus(c->pg) == PQTRANS_IDLE);
  if (c->prepared) p->prepared++;
  if (res == NULL) op_fail(op, "db.connection", "%s", c->error);
  if (c->busy) {
    /* Other fibers' statements are still in flight on this connection: it stays with them,
     * and the fiber resumes after the connection's callback is over. */
    op->conn = NULL;
    if (c->live == 0) {
      /* Only abandoned statements are left. */
      rage__pg_conn_cancel_remote(c);
      discard(p, c);
    } else {
      c->resume_later = 1;
    }
    rage__pg_pool_grant(p);
    complete(op, 0);
    rage__pg_pool_unref(p);
    return;
  }
  /* Fibers resume in the order of their statements: after one was deferred, so are the rest. */
  int direct = !c->resume_later;
  c->resume_later = 0;
  unlist(p, c);
  if (op->lease) {
    /* The lease keeps its connection, whatever state the statement left it in. */
    op->conn = NULL;
    if (c->broken) {
      op->lease->conn = NULL;
      op->lease->owner = NULL;
      discard(p, c);
      rage__pg_pool_grant(p);
    }
    complete(op, direct);
  } else if (c->broken) {
    op->conn = NULL;
    discard(p, c);
    rage__pg_pool_grant(p);
    complete(op, direct);
  } else if (needs_reset(c) && start_reset(op) == 0) {
    /* Completes in on_reset. */
  } else {
    if (op->conn) {
      op->conn = NULL;
      release_conn(p, c);
    }
    rage__pg_pool_grant(p);
    complete(op, direct);
  }
  rage__pg_pool_unref(p);
}

static void on_reset(rage__pg_conn_t *c, PGresult *res, void *data) {
  op_t *op = data;
  pool_t *p = op->pool;
  p->refs++;
  if (op->timer_open) uv_timer_stop(&op->timer);
  int failed = res == NULL || PQresultStatus(res) != PGRES_COMMAND_OK;
  if (!failed && strcmp(PQcmdStatus(res), "DISCARD ALL") == 0) c->dirty = 0;
  if (res) PQclear(res);
  if (failed || c->broken) {
    op->conn = NULL;
    discard(p, c);
  } else if (start_reset(op) == 0) {
    rage__pg_pool_unref(p);
    return;
  }
  rage__pg_pool_grant(p);
  complete(op, 1);
  rage__pg_pool_unref(p);
}

static void on_op_timer(uv_timer_t *t) {
  op_t *op = t->data;
  pool_t *p = op->pool;
  double secs;
  p->refs++;
  switch (op->phase) {
  case PH_WAIT:
    dequeue(p, op);
    p->pool_timeouts++;
    op_fail(op, "db.pool_timeout",
            "no database connection was free within %g s (%u in use, %u waiting)",
            (double)p->checkout_ms / 1000.0, p->size - p->nidle, p->nwaiting);
    break;
  case PH_CONNECT:
    secs = (double)p->connect_ms / 1000.0;
    p->connecting--;
    drop_conn(op);
    {
      char msg[80];
      snprintf(msg, sizeof(msg), "connecting timed out after %g s", secs);
      note_failure(p, msg);
    }
    op_fail(op, "db.connection", "connecting to the database timed out after %g s", secs);
    break;
  case PH_RUN:
    abandon_run(op);
    p->timeouts++;
    if (op->res) {
      PQclear(op->res);
      op->res = NULL;
    }
    op_fail(op, "db.timeout", "the statement was cancelled after %g s (statement_timeout)",
            (double)p->statement_ms / 1000.0);
    break;
  case PH_RESET:
    /* The caller's result stands; the connection that would not reset is closed. */
    drop_conn(op);
    break;
  default:
    rage__pg_pool_unref(p);
    return;
  }
  rage__pg_pool_grant(p);
  complete(op, 1);
  rage__pg_pool_unref(p);
}

/* The fiber was cancelled (or its rage.timeout fired): release everything, resume nothing. */
static void op_cancel(rage__fiber_t *f, void *data) {
  op_t *op = data;
  pool_t *p = op->pool;
  p->refs++;
  switch (op->phase) {
  case PH_WAIT:
    dequeue(p, op);
    break;
  case PH_CONNECT:
    p->connecting--;
    drop_conn(op);
    break;
  case PH_RUN:
    abandon_run(op);
    break;
  case PH_RESET:
    drop_conn(op);
    break;
  case PH_LISTEN:
    /* No statement in flight: the connection stays with its lease, usable. */
    rage__pg_conn_abandon(op->conn);
    if (op->lease == NULL) release_conn(p, op->conn); /* the lease was collected meanwhile */
    op->conn = NULL;
    break;
  default:
    drop_outcome(op);
    break;
  }
  op->phase = PH_DONE;
  detach_lease(op);
  timer_close(op);
  rage__pg_pool_grant(p);
  if (!op->gone) {
    op->gone = 1;
    if (op->res) {
      PQclear(op->res);
      op->res = NULL;
    }
    op_unref(op);
  }
  rage__pg_pool_unref(p);
}

static int suspend(lua_State *L, rage__fiber_t *f, op_t *op) {
  int r = rage__fiber_suspend(L, f, op_cancel, op);
  op->gen = f->gen;
  return r;
}

/* Ends an op that never suspended: pushes its outcome onto L. */
static int finish_now(lua_State *L, op_t *op) {
  op->phase = PH_DONE;
  op->gone = 1;
  detach_lease(op);
  timer_close(op);
  int n = op_push(op, L);
  op_unref(op);
  return n;
}

/* ---- entry points of the Lua methods (pg_lua.c) ---------------------------------------- */

/* Runs a statement on a pooled connection (per-statement lease) or on a lease's. */
static int run_statement(lua_State *L, pool_t *p, lease_t *ls, rage__fiber_t *f, op_t *op) {
  uv_update_time(p->loop);
  if (ls) {
    op->lease = ls;
    op->conn = ls->conn;
    ls->op = op;
    if (start_run(op) != 0) {
      rage__pg_pool_grant(p);
      return finish_now(L, op);
    }
    return suspend(L, f, op);
  }
  if (p->whead == NULL) {
    rage__pg_conn_t *c;
    while ((c = take_idle(p)) != NULL) {
      op->conn = c;
      if (start_run(op) == 0) return suspend(L, f, op);
      op->err_kind = NULL;
    }
  }
  if (p->whead == NULL && p->size >= p->max && op->share) {
    rage__pg_conn_t *c = pick_shared(p);
    if (c) {
      op->conn = c;
      if (start_run(op) == 0) return suspend(L, f, op);
      return finish_now(L, op);
    }
  }
  op_keep_statement(op);
  if (p->whead == NULL && p->size < p->max) {
    if (open_conn(p, op) != 0) return finish_now(L, op);
    return suspend(L, f, op);
  }
  if (p->nwaiting >= p->max_waiters) {
    p->pool_timeouts++;
    op_fail(op, "db.pool_timeout", "too many fibers are waiting for a database connection (%u)", p->nwaiting);
    return finish_now(L, op);
  }
  enqueue(p, op);
  timer_arm(op, p->checkout_ms);
  return suspend(L, f, op);
}

/* Whether a statement may share a connection with other fibers' statements: one whose first
 * keyword is that of a query or of plain DML. Such a statement, outside a transaction, runs
 * and commits alone (autocommit) and changes no session state that a command tag would show;
 * BEGIN, SET, LISTEN, PREPARE, DECLARE and the rest never share. Session state changed by a
 * function (set_config(..., false), advisory locks) is not detected, as on a connection lent
 * to one statement at a time. */
static int word_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '$';
}

/* Whether `sql` holds the keyword `word` (a whole word, in any case), quoted text included. */
static int has_word(const char *sql, const char *word) {
  size_t n = strlen(word);
  for (const char *p = sql; *p; p++) {
    if (strncasecmp(p, word, n) == 0 && (p == sql || !word_char(p[-1])) && !word_char(p[n])) return 1;
  }
  return 0;
}

static int shareable(const char *sql) {
  static const char *const words[] = {"select", "insert", "update", "delete", "with", "values", "table"};
  while (*sql == ' ' || *sql == '\t' || *sql == '\n' || *sql == '\r' || *sql == '(') sql++;
  for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
    size_t n = strlen(words[i]);
    if (strncasecmp(sql, words[i], n) != 0 || word_char(sql[n])) continue;
    /* SELECT ... INTO creates a table, maybe a temporary one that later statements of the
     * session would see: such a query runs alone. */
    if (i == 0) return !has_word(sql, "into");
    if (i == 4) return !has_word(sql, "into") || has_word(sql, "insert");
    return 1;
  }
  return 0;
}

int rage__pg_pool_statement(lua_State *L, pool_t *p, lease_t *ls, rage__fiber_t *f,
                            const rage__pg_args_t *a, int simple) {
  op_t *op = op_new(p, f, OP_QUERY);
  op->sql = a->sql;
  op->nparams = a->nparams;
  op->values = a->values;
  op->simple = simple;
  op->share = ls == NULL && !simple && p->pipeline > 1 && shareable(a->sql);
  return run_statement(L, p, ls, f, op);
}

int rage__pg_lease_acquire(lua_State *L, lease_t *ls, rage__fiber_t *f) {
  pool_t *p = ls->pool;
  uv_update_time(p->loop);
  if (p->whead == NULL) {
    rage__pg_conn_t *c = take_idle(p);
    if (c) {
      ls->conn = c;
      ls->owner = f;
      lua_pushboolean(L, 1);
      return 1;
    }
  }
  op_t *op = op_new(p, f, OP_ACQUIRE);
  op->lease = ls;
  ls->op = op;
  if (p->whead == NULL && p->size < p->max) {
    if (open_conn(p, op) != 0) return finish_now(L, op);
    return suspend(L, f, op);
  }
  if (p->nwaiting >= p->max_waiters) {
    p->pool_timeouts++;
    op_fail(op, "db.pool_timeout", "too many fibers are waiting for a database connection (%u)", p->nwaiting);
    return finish_now(L, op);
  }
  enqueue(p, op);
  timer_arm(op, p->checkout_ms);
  return suspend(L, f, op);
}

int rage__pg_lease_release(lua_State *L, lease_t *ls) {
  pool_t *p = ls->pool;
  rage__pg_conn_t *c = ls->conn;
  lua_pushboolean(L, 1);
  if (c == NULL) return 1;
  ls->conn = NULL;
  ls->owner = NULL;
  if (!needs_reset(c) || c->broken) {
    release_conn(p, c);
    rage__pg_pool_grant(p);
    return 1;
  }
  rage__fiber_t *f = rage__fiber_current(p->sched);
  if (f == NULL || f->cancelled) {
    /* No one can wait for a reset: closing the connection rolls back on the server. */
    discard(p, c);
    rage__pg_pool_grant(p);
    return 1;
  }
  lua_pop(L, 1);
  uv_update_time(p->loop);
  op_t *op = op_new(p, f, OP_RELEASE);
  op->conn = c;
  if (start_reset(op) != 0) {
    rage__pg_pool_grant(p);
    return finish_now(L, op);
  }
  return suspend(L, f, op);
}

static void on_notify(rage__pg_conn_t *c, PGnotify *n, void *data) {
  op_t *op = data;
  pool_t *p = op->pool;
  p->refs++;
  op->notify = n;
  if (n == NULL) {
    op_fail(op, "db.connection", "the listening connection failed: %s", PQerrorMessage(c->pg));
    op->lost = 1;
    if (op->lease == NULL) {
      op->conn = NULL;
      discard(p, c);
    } else {
      drop_conn(op);
    }
    rage__pg_pool_grant(p);
  } else {
    op->conn = NULL;
    if (op->lease == NULL) release_conn(p, c); /* the lease was collected meanwhile */
  }
  complete(op, 1);
  rage__pg_pool_unref(p);
}

int rage__pg_lease_wait_notify(lua_State *L, lease_t *ls, rage__fiber_t *f) {
  pool_t *p = ls->pool;
  PGnotify *n = PQnotifies(ls->conn->pg);
  if (n) return push_notify(L, n);
  op_t *op = op_new(p, f, OP_NOTIFY);
  op->lease = ls;
  op->conn = ls->conn;
  ls->op = op;
  if (rage__pg_conn_wait(op->conn, on_notify, op) != 0) {
    op_fail(op, "db.connection", "the listening connection failed");
    drop_conn(op);
    rage__pg_pool_grant(p);
    return finish_now(L, op);
  }
  op->phase = PH_LISTEN;
  return suspend(L, f, op);
}

void rage__pg_pool_close(pool_t *p) {
  p->closed = 1;
  while (p->idle) {
    rage__pg_conn_t *c = p->idle;
    p->idle = c->next;
    p->nidle--;
    discard(p, c);
  }
}

void rage__pg_lease_drop(lease_t *ls) {
  pool_t *p = ls->pool;
  ls->pool = NULL;
  if (ls->op) {
    /* The op carries on as if it ran on a pooled connection and returns it itself. */
    ls->op->lease = NULL;
    ls->op = NULL;
  } else if (ls->conn) {
    discard(p, ls->conn);
  }
  ls->conn = NULL;
  rage__pg_pool_unref(p);
}
