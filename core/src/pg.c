/*
 * pg.c - the PostgreSQL connection driver (see pg.h): libpq in non-blocking mode under a
 * uv_poll_t, running statements (alone or pipelined) and the prepared-statement cache.
 * Connecting and host name lookups are in pg_connect.c, SQLSTATEs and error objects in
 * pg_error.c, result objects and the decoding of their rows into Lua values in pg_result.c.
 *
 * The poll handle: libpq may close the socket and open another while it connects (the next
 * address of a host, a retry without SSL); a new socket can get the old one's number, so while
 * connecting the poll handle is re-created whenever the descriptor or its inode changes. Once
 * connected, the handle stays for the connection's life: an idle connection is watched for
 * reads too (rage__pg_watch_idle), so that the server's close is seen when it comes and a
 * statement starts polling without a system call.
 *
 * Running a statement: PQsendQueryParams() (text parameters, text results), PQflush() until
 * the output is sent (watching for readability meanwhile, as libpq asks), then on every
 * readable event PQconsumeInput() and PQgetResult() while PQisBusy() says it will not block.
 * The callback fires when PQgetResult() returns NULL: the connection is idle again. Any libpq
 * call may drop the socket when the server goes away; the poll handle is closed right after
 * such a call, before another descriptor can take its number.
 */
#include "pg.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "log.h"
#include "rage.h"
#include "util.h"

typedef struct rage__pg_watch_s {
  uv_poll_t poll;
  rage__pg_conn_t *conn; /* NULL once closing */
  int events;
} watch_t;

/* ---- the socket's poll handle ----------------------------------------------------------- */

static void on_watch_closed(uv_handle_t *h) {
  free(h->data);
}

void rage__pg_watch_close(rage__pg_conn_t *c) {
  watch_t *w = c->watch;
  if (w == NULL) return;
  c->watch = NULL;
  w->conn = NULL;
  /* uv_close stops the poll at once: the descriptor may be closed right after. */
  uv_close((uv_handle_t *)&w->poll, on_watch_closed);
}

static uint64_t socket_ino(int fd) {
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0) return 0;
  return (uint64_t)st.st_ino;
}

static void on_poll(uv_poll_t *h, int status, int events);

/* Polls libpq's current socket for `events`. Returns 0 or a negative libuv error. */
int rage__pg_watch(rage__pg_conn_t *c, int events) {
  int fd = PQsocket(c->pg);
  if (fd < 0) return UV_EBADF;
  if (c->watch && (fd != c->fd || (c->connecting && socket_ino(fd) != c->ino)))
    rage__pg_watch_close(c);
  if (c->watch == NULL) {
    watch_t *w = rage__malloc(sizeof(*w));
    int r = uv_poll_init(c->loop, &w->poll, fd);
    if (r != 0) {
      free(w);
      return r;
    }
    w->poll.data = w;
    w->conn = c;
    w->events = 0;
    c->watch = w;
    c->fd = fd;
    c->ino = socket_ino(fd);
  }
  uv_ref((uv_handle_t *)&c->watch->poll);
  if (c->watch->events == events) return 0;
  c->watch->events = events;
  return uv_poll_start(&c->watch->poll, events, on_poll);
}

void rage__pg_watch_idle(rage__pg_conn_t *c) {
  if (c->broken || rage__pg_watch(c, UV_READABLE) != 0) rage__pg_watch_close(c);
  else uv_unref((uv_handle_t *)&c->watch->poll); /* an idle connection keeps no loop running */
}

/* After a libpq call that may have dropped the socket: stop polling a descriptor that is gone. */
void rage__pg_check_socket(rage__pg_conn_t *c) {
  if (c->watch && PQsocket(c->pg) != c->fd) rage__pg_watch_close(c);
}

/* ---- notices ---------------------------------------------------------------------------- */

void rage__pg_on_notice(void *arg, const char *message) {
  size_t n = strlen(message);
  while (n > 0 && (message[n - 1] == '\n' || message[n - 1] == ' ')) n--;
  rage__log(RAGE_LOG_DEBUG, "postgres: %.*s", (int)n, message);
}

/* ---- statements in flight and the prepared-statement cache ---------------------------- */

struct rage__pg_stmt_s {
  rage__pg_stmt_t *prev, *next; /* most recently used first */
  uint32_t hash;
  unsigned id;
  int nparams;
  int ready; /* PREPARE succeeded: the server has it */
  int dead;  /* out of the cache; freed when no statement in flight executes it */
  unsigned uses; /* statements in flight executing it */
  size_t len;
  char sql[];
};

/* One statement in flight. Its results are gathered until its last one: the NULL after a
 * statement sent alone, the Sync result for a pipeline segment. */
typedef struct rage__pg_req_s {
  struct rage__pg_req_s *next;
  rage__pg_result_cb cb; /* NULL once forgotten: the result is dropped */
  void *data;
  PGresult *first_error, *last;
  rage__pg_stmt_t *exec_stmt; /* the cached statement it executes */
  int pipeline;     /* sent as a pipeline segment: DEALLOCATE..., PREPARE, EXECUTE, Sync */
  int pipe_at, pipe_prepare, pipe_exec; /* command being read, and the two that matter */
  int prepared;
} req_t;

static uint32_t hash_sql(const char *s, size_t *len) {
  uint32_t h = 2166136261u;
  const char *p = s;
  for (; *p; p++) h = (h ^ (unsigned char)*p) * 16777619u;
  *len = (size_t)(p - s);
  return h;
}

static void stmt_name(char *buf, size_t size, unsigned id) {
  snprintf(buf, size, "rage_%u", id);
}

static void stmt_unlink(rage__pg_conn_t *c, rage__pg_stmt_t *st) {
  if (st->prev) st->prev->next = st->next;
  else c->stmts = st->next;
  if (st->next) st->next->prev = st->prev;
  else c->stmts_tail = st->prev;
  st->prev = st->next = NULL;
  c->nstmts--;
}

static void stmt_push_front(rage__pg_conn_t *c, rage__pg_stmt_t *st) {
  st->prev = NULL;
  st->next = c->stmts;
  if (c->stmts) c->stmts->prev = st;
  else c->stmts_tail = st;
  c->stmts = st;
  c->nstmts++;
}

static rage__pg_stmt_t *stmt_find(rage__pg_conn_t *c, const char *sql, uint32_t h, size_t len) {
  for (rage__pg_stmt_t *st = c->stmts; st; st = st->next)
    if (st->hash == h && st->len == len && memcmp(st->sql, sql, len) == 0) return st;
  return NULL;
}

/* Frees a statement out of the cache once nothing in flight executes it; one the server holds
 * is deallocated with the next prepare. The DEALLOCATE goes out after every statement already
 * sent, so those still find it. */
static void stmt_finish(rage__pg_conn_t *c, rage__pg_stmt_t *st) {
  if (!st->dead || st->uses > 0) return;
  if (st->ready) {
    c->unprepare = rage__realloc(c->unprepare, (c->nunprepare + 1) * sizeof(unsigned));
    c->unprepare[c->nunprepare++] = st->id;
  }
  free(st);
}

/* Takes a statement out of the cache. */
static void stmt_drop(rage__pg_conn_t *c, rage__pg_stmt_t *st) {
  if (st->dead) return;
  stmt_unlink(c, st);
  st->dead = 1;
  stmt_finish(c, st);
}

static void stmt_unuse(rage__pg_conn_t *c, rage__pg_stmt_t *st) {
  st->uses--;
  stmt_finish(c, st);
}

/* The server dropped every prepared statement (DISCARD ALL, DEALLOCATE ALL). */
static void stmts_clear(rage__pg_conn_t *c) {
  while (c->stmts) {
    rage__pg_stmt_t *st = c->stmts;
    stmt_unlink(c, st);
    st->dead = 1;
    st->ready = 0;
    stmt_finish(c, st);
  }
  c->nunprepare = 0;
}

/* Sends a statement for `q` through the cache: EXECUTE alone when it is prepared, else a
 * pipeline of DEALLOCATE (evicted entries), PREPARE and EXECUTE. With `in_pipe` the connection
 * is already in pipeline mode and every statement becomes a segment with its own Sync.
 * Returns libpq's 1 or 0. */
static int send_cached(rage__pg_conn_t *c, req_t *q, const char *sql, int n,
                       const char *const *values, int in_pipe) {
  char name[32];
  size_t len;
  uint32_t h = hash_sql(sql, &len);
  rage__pg_stmt_t *st = stmt_find(c, sql, h, len);
  if (st && (st->nparams != n || !st->ready)) {
    /* Another parameter count, or its PREPARE is still in flight: unnamed this time. */
    if (!in_pipe) return PQsendQueryParams(c->pg, sql, n, NULL, values, NULL, NULL, 0);
    q->pipeline = 1;
    q->pipe_exec = 0;
    return PQsendQueryParams(c->pg, sql, n, NULL, values, NULL, NULL, 0) && PQpipelineSync(c->pg);
  }
  if (st && c->nunprepare == 0) {
    stmt_unlink(c, st);
    stmt_push_front(c, st);
    q->exec_stmt = st;
    st->uses++;
    stmt_name(name, sizeof(name), st->id);
    if (!in_pipe) return PQsendQueryPrepared(c->pg, name, n, values, NULL, NULL, 0);
    q->pipeline = 1;
    q->pipe_exec = 0;
    return PQsendQueryPrepared(c->pg, name, n, values, NULL, NULL, 0) && PQpipelineSync(c->pg);
  }
  if (!in_pipe && !PQenterPipelineMode(c->pg)) return 0;
  q->pipeline = 1;
  if (st == NULL) {
    /* Evict the least recently used entries that nothing in flight executes. */
    rage__pg_stmt_t *victim = c->stmts_tail;
    while (c->nstmts >= c->max_stmts && victim) {
      rage__pg_stmt_t *prev = victim->prev;
      if (victim->uses == 0) stmt_drop(c, victim);
      victim = prev;
    }
  }
  int cmds = 0;
  for (unsigned i = 0; i < c->nunprepare; i++) {
    char dq[48];
    snprintf(dq, sizeof(dq), "DEALLOCATE rage_%u", c->unprepare[i]);
    if (!PQsendQueryParams(c->pg, dq, 0, NULL, NULL, NULL, NULL, 0)) return 0;
    cmds++;
  }
  c->nunprepare = 0;
  if (st == NULL) {
    st = rage__malloc(sizeof(*st) + len + 1);
    memcpy(st->sql, sql, len + 1);
    st->len = len;
    st->hash = h;
    st->id = ++c->next_stmt;
    st->nparams = n;
    st->ready = 0;
    st->dead = 0;
    st->uses = 0;
    stmt_push_front(c, st);
    stmt_name(name, sizeof(name), st->id);
    q->exec_stmt = st;
    st->uses++;
    if (!PQsendPrepare(c->pg, name, sql, n, NULL)) return 0;
    q->pipe_prepare = cmds++;
    q->prepared = 1;
  } else {
    stmt_unlink(c, st);
    stmt_push_front(c, st);
    q->exec_stmt = st;
    st->uses++;
  }
  stmt_name(name, sizeof(name), st->id);
  if (!PQsendQueryPrepared(c->pg, name, n, values, NULL, NULL, 0)) return 0;
  q->pipe_exec = cmds;
  return PQpipelineSync(c->pg);
}

/* ---- statements ------------------------------------------------------------------------- */

/* Commands whose effect outlives the statement: the connection needs a reset before another
 * caller gets it. SET LOCAL is included (its tag is the same); resetting it costs little. */
static int changes_session(const char *tag) {
  return strcmp(tag, "SET") == 0 || strcmp(tag, "RESET") == 0 || strcmp(tag, "LISTEN") == 0 ||
         strcmp(tag, "PREPARE") == 0 || strcmp(tag, "DECLARE CURSOR") == 0 ||
         strcmp(tag, "LOAD") == 0;
}

static void req_free(rage__pg_conn_t *c, req_t *q) {
  if (q->first_error) PQclear(q->first_error);
  if (q->last) PQclear(q->last);
  if (q->exec_stmt) stmt_unuse(c, q->exec_stmt);
  free(q);
}

static req_t *req_pop(rage__pg_conn_t *c) {
  req_t *q = c->head;
  c->head = q->next;
  if (c->head == NULL) c->tail = NULL;
  c->inflight--;
  if (q->cb) c->live--;
  c->busy = c->inflight > 0;
  return q;
}

/* Hands the oldest statement its outcome: its first error, else its last result; NULL when the
 * connection failed without a result (`c->error` says why). Then runs its callback. */
static void result_done(rage__pg_conn_t *c, PGresult *res) {
  req_t *q = req_pop(c);
  if (res == NULL && c->error[0] == '\0') {
    if (q->first_error) {
      res = q->first_error;
      q->first_error = NULL;
    } else if (q->last) {
      res = q->last;
      q->last = NULL;
    } else {
      res = PQmakeEmptyPGresult(c->pg, PGRES_EMPTY_QUERY);
      if (res == NULL) abort();
    }
  }
  c->plan_changed = 0;
  c->prepared = q->prepared;
  rage__pg_stmt_t *st = q->exec_stmt;
  if (st && res && PQresultStatus(res) == PGRES_FATAL_ERROR) {
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    if (!st->ready) {
      stmt_drop(c, st); /* its PREPARE failed: the server does not have it */
    } else if (state && strcmp(state, "0A000") == 0 && msg &&
               strstr(msg, "cached plan must not change result type")) {
      stmt_drop(c, st);
      c->plan_changed = 1;
    }
  }
  if (PQstatus(c->pg) != CONNECTION_OK) c->broken = 1;
  if (c->inflight == 0) {
    c->shared = 0;
    if (PQpipelineStatus(c->pg) != PQ_PIPELINE_OFF && !c->broken && !PQexitPipelineMode(c->pg)) c->broken = 1;
    rage__pg_watch_idle(c);
  }
  rage__pg_result_cb cb = q->cb;
  void *data = q->data;
  req_free(c, q);
  if (cb) cb(c, res, data);
  else if (res) PQclear(res);
}

/* The connection failed: every statement in flight gets the server's error when one arrived
 * for it, else libpq's message (`why` NULL) or `why`. */
static void result_failed(rage__pg_conn_t *c, const char *why) {
  char msg[sizeof(c->error)];
  snprintf(msg, sizeof(msg), "%s%s", why && strncmp(why, "connection failed", 17) != 0 ? "connection failed: " : "",
           why ? why : "");
  c->broken = 1;
  c->shared = 0;
  rage__pg_check_socket(c);
  rage__pg_watch_close(c);
  while (c->head && !c->close_pending) {
    req_t *q = c->head;
    PGresult *res = NULL;
    if (q->first_error) {
      res = q->first_error;
      q->first_error = NULL;
    } else if (why == NULL) {
      res = PQmakeEmptyPGresult(c->pg, PGRES_FATAL_ERROR);
      if (res == NULL) abort();
    }
    if (res) c->error[0] = '\0';
    else snprintf(c->error, sizeof(c->error), "%s", msg);
    result_done(c, res);
  }
}

static void absorb(rage__pg_conn_t *c, req_t *q, PGresult *r) {
  switch (PQresultStatus(r)) {
  case PGRES_FATAL_ERROR:
    if (q->first_error == NULL) q->first_error = r;
    else PQclear(r);
    break;
  case PGRES_COPY_IN:
  case PGRES_COPY_OUT:
  case PGRES_COPY_BOTH:
    /* The connection is now in COPY mode, which this driver does not speak. */
    PQclear(r);
    c->broken = 1;
    snprintf(c->error, sizeof(c->error), "COPY is not supported by rage.db");
    break;
  default: {
    const char *tag = PQcmdStatus(r);
    if (changes_session(tag)) c->dirty = 1;
    if (strcmp(tag, "DISCARD ALL") == 0 || strcmp(tag, "DEALLOCATE ALL") == 0) stmts_clear(c);
    if (q->last) PQclear(q->last);
    q->last = r;
    break;
  }
  }
}

/* Gathers results while that needs no more input. A statement sent alone ends with a NULL. In
 * a pipeline segment each command's results end with a NULL and the segment ends with its
 * Sync; only the EXECUTE's result (and any error) counts; after an error the segment's other
 * commands come back PGRES_PIPELINE_ABORTED, and the next segment runs normally. */
static void collect(rage__pg_conn_t *c) {
  while (c->head && !c->close_pending && !c->broken && !PQisBusy(c->pg)) {
    req_t *q = c->head;
    PGresult *r = PQgetResult(c->pg);
    rage__pg_check_socket(c);
    if (r == NULL) {
      if (q->pipeline && PQstatus(c->pg) == CONNECTION_OK && q->pipe_at <= q->pipe_exec) {
        q->pipe_at++;
        continue;
      }
      if (q->pipeline) c->broken = 1; /* ended before its Sync: the protocol state is unknown */
      result_done(c, NULL);
      continue;
    }
    if (q->pipeline) {
      ExecStatusType st = PQresultStatus(r);
      if (st == PGRES_PIPELINE_SYNC) {
        PQclear(r);
        result_done(c, NULL);
        continue;
      }
      if (st == PGRES_PIPELINE_ABORTED) {
        PQclear(r);
        continue;
      }
      if (q->pipe_at != q->pipe_exec) {
        if (q->pipe_at == q->pipe_prepare && st == PGRES_COMMAND_OK && q->exec_stmt) q->exec_stmt->ready = 1;
        if (st == PGRES_FATAL_ERROR) absorb(c, q, r);
        else PQclear(r);
        continue;
      }
    }
    absorb(c, q, r);
    if (c->broken) result_done(c, NULL); /* COPY: stop here; the owner closes the connection */
  }
  /* A broken connection fails whatever is still in flight on it. */
  if (c->broken && c->head && !c->close_pending) result_failed(c, c->error[0] ? c->error : "the connection is unusable");
}

static void query_step(rage__pg_conn_t *c, int status, int events) {
  if (status < 0) {
    result_failed(c, uv_strerror(status));
    return;
  }
  if (c->broken) {
    result_failed(c, c->error[0] ? c->error : "the connection is unusable");
    return;
  }
  if (events & UV_WRITABLE) {
    int r = PQflush(c->pg);
    rage__pg_check_socket(c);
    if (r < 0) {
      result_failed(c, NULL);
      return;
    }
    if (r == 0 && rage__pg_watch(c, UV_READABLE) != 0) {
      result_failed(c, "cannot poll the socket");
      return;
    }
  }
  if (events & UV_READABLE) {
    if (!PQconsumeInput(c->pg)) {
      rage__pg_check_socket(c);
      /* What was read before the failure may hold the server's reason (57P01...). */
      while (c->head && c->head->first_error == NULL) {
        PGresult *r = PQisBusy(c->pg) ? NULL : PQgetResult(c->pg);
        if (r == NULL) break;
        if (PQresultStatus(r) == PGRES_FATAL_ERROR) absorb(c, c->head, r);
        else PQclear(r);
      }
      result_failed(c, NULL);
      return;
    }
    rage__pg_check_socket(c);
  }
  collect(c);
}

/* ---- notifications ---------------------------------------------------------------------- */

static void wait_step(rage__pg_conn_t *c, int status) {
  PGnotify *n = NULL;
  if (status < 0 || !PQconsumeInput(c->pg)) c->broken = 1;
  else n = PQnotifies(c->pg);
  rage__pg_check_socket(c);
  if (n == NULL && !c->broken) return; /* a notice or a parameter change: keep waiting */
  c->waiting = 0;
  rage__pg_watch_idle(c);
  rage__pg_notify_cb cb = c->on_notify;
  c->on_notify = NULL;
  cb(c, n, c->data);
}

int rage__pg_conn_wait(rage__pg_conn_t *c, rage__pg_notify_cb cb, void *data) {
  if (c->broken || c->busy || c->connecting || c->waiting) return -1;
  if (rage__pg_watch(c, UV_READABLE) != 0) {
    rage__pg_check_socket(c);
    rage__pg_watch_close(c);
    return -1;
  }
  c->waiting = 1;
  c->on_notify = cb;
  c->data = data;
  return 0;
}

/* Bytes on an idle connection: a notice, a notification kept for the next wait, or the
 * server's goodbye, which makes it broken (the pool discards it). */
static void idle_step(rage__pg_conn_t *c, int status) {
  if (status < 0 || !PQconsumeInput(c->pg) || PQstatus(c->pg) != CONNECTION_OK) c->broken = 1;
  rage__pg_check_socket(c);
  if (c->broken) rage__pg_watch_close(c);
}

static void on_poll(uv_poll_t *h, int status, int events) {
  watch_t *w = h->data;
  rage__pg_conn_t *c = w->conn;
  if (c == NULL) return;
  /* Callbacks may close the connection: it is freed when they are all done. */
  c->dispatching++;
  if (c->connecting) rage__pg_connect_step(c);
  else if (c->busy) query_step(c, status, events);
  else if (c->waiting) wait_step(c, status);
  else idle_step(c, status);
  if (--c->dispatching == 0 && c->close_pending) rage__pg_conn_free(c);
}

int rage__pg_conn_send(rage__pg_conn_t *c, const char *sql, int nparams, const char *const *values,
                       int mode, rage__pg_result_cb cb, void *data) {
  if (c->broken || c->connecting || c->waiting || c->close_pending) return -1;
  if (c->busy && (mode != RAGE_PG_SHARED || !c->shared)) return -1;
  req_t *q = rage__calloc(1, sizeof(*q));
  q->pipe_prepare = -1;
  int ok;
  if (mode == RAGE_PG_SHARED) {
    if (!c->busy) {
      ok = PQenterPipelineMode(c->pg);
      if (ok) c->shared = 1;
    } else {
      ok = 1;
    }
    if (ok && c->max_stmts == 0) {
      q->pipeline = 1;
      ok = PQsendQueryParams(c->pg, sql, nparams, NULL, values, NULL, NULL, 0) && PQpipelineSync(c->pg);
    } else if (ok) {
      ok = send_cached(c, q, sql, nparams, values, 1);
    }
  } else if (mode == RAGE_PG_SIMPLE && nparams == 0) {
    ok = PQsendQuery(c->pg, sql);
  } else if (c->max_stmts == 0 || PQtransactionStatus(c->pg) == PQTRANS_INERROR) {
    ok = PQsendQueryParams(c->pg, sql, nparams, NULL, values, NULL, NULL, 0);
  } else {
    ok = send_cached(c, q, sql, nparams, values, 0);
  }
  /* Queued even when sending failed, so that its cache bookkeeping is undone in one place. */
  q->cb = cb;
  q->data = data;
  if (c->tail) c->tail->next = q;
  else c->head = q;
  c->tail = q;
  c->inflight++;
  c->live++;
  c->busy = 1;
  int r = ok ? PQflush(c->pg) : -1;
  if (r >= 0 && rage__pg_watch(c, r == 0 ? UV_READABLE : UV_READABLE | UV_WRITABLE) != 0) r = -1;
  if (r < 0) {
    rage__pg_check_socket(c);
    c->broken = 1;
    c->shared = 0;
    if (c->error[0] == '\0') snprintf(c->error, sizeof(c->error), "connection failed: %s", PQerrorMessage(c->pg));
    /* Take this statement back; those in flight before it fail at the next poll event. */
    req_t **pp = &c->head;
    req_t *prev = NULL;
    while (*pp != q) {
      prev = *pp;
      pp = &(*pp)->next;
    }
    *pp = NULL;
    c->tail = prev;
    c->inflight--;
    c->live--;
    c->busy = c->inflight > 0;
    q->cb = NULL;
    req_free(c, q);
    if (!c->busy) rage__pg_watch_close(c);
    return -1;
  }
  if (c->inflight == 1) c->error[0] = '\0';
  c->statements++;
  return 0;
}

unsigned rage__pg_conn_forget(rage__pg_conn_t *c, void *data) {
  for (req_t *q = c->head; q; q = q->next) {
    if (q->cb && q->data == data) {
      q->cb = NULL;
      q->data = NULL;
      c->live--;
      break;
    }
  }
  return c->live;
}

void rage__pg_conn_abandon(rage__pg_conn_t *c) {
  rage__pg_watch_close(c);
  rage__pg_connect_abandon(c);
  c->on_connect = NULL;
  c->on_notify = NULL;
  if (c->busy || c->connecting) c->broken = 1;
  while (c->head) {
    req_t *q = req_pop(c);
    q->cb = NULL;
    req_free(c, q);
  }
  c->busy = c->connecting = c->waiting = c->shared = 0;
  c->error[0] = '\0';
}

/* ---- cancelling a statement on the server ----------------------------------------------- */

/* At most this many cancel requests are in flight at once; past it the connection is only
 * closed (the server notices when it next writes to it). This bounds the threads a black-holed
 * server can hold. */
#define MAX_CANCELS 16
static int cancels_in_flight;
static pthread_mutex_t cancels_lock = PTHREAD_MUTEX_INITIALIZER;

static void *cancel_thread(void *arg) {
  PGcancel *cancel = arg;
  char err[256];
  if (!PQcancel(cancel, err, sizeof(err))) rage__log(RAGE_LOG_DEBUG, "postgres: cancel request failed: %s", err);
  PQfreeCancel(cancel);
  pthread_mutex_lock(&cancels_lock);
  cancels_in_flight--;
  pthread_mutex_unlock(&cancels_lock);
  return NULL;
}

void rage__pg_conn_cancel_remote(rage__pg_conn_t *c) {
  PGcancel *cancel = PQgetCancel(c->pg);
  if (cancel == NULL) return;
  pthread_mutex_lock(&cancels_lock);
  int full = cancels_in_flight >= MAX_CANCELS;
  if (!full) cancels_in_flight++;
  pthread_mutex_unlock(&cancels_lock);
  if (full) {
    PQfreeCancel(cancel);
    return;
  }
  pthread_attr_t attr;
  pthread_t th;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, 256 * 1024);
  if (pthread_create(&th, &attr, cancel_thread, cancel) != 0) {
    PQfreeCancel(cancel);
    pthread_mutex_lock(&cancels_lock);
    cancels_in_flight--;
    pthread_mutex_unlock(&cancels_lock);
  }
  pthread_attr_destroy(&attr);
}

/* ---- idle connections ------------------------------------------------------------------- */

int rage__pg_conn_alive(rage__pg_conn_t *c) {
  if (c->broken || PQstatus(c->pg) != CONNECTION_OK) return 0;
  int fd = PQsocket(c->pg);
  if (fd < 0) return 0;
  char b;
  ssize_t n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 1;
  if (n <= 0) return 0;
  /* Bytes while idle: a notice, a parameter change, or the server's goodbye (an error, then
   * the end of the stream). Let libpq read them and tell. */
  if (!PQconsumeInput(c->pg) || PQstatus(c->pg) != CONNECTION_OK) return 0;
  n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) return 0;
  return 1;
}

const char *rage__pg_conn_message(rage__pg_conn_t *c) {
  if (c->error[0] || c->pg == NULL) return c->error;
  return PQerrorMessage(c->pg);
}

void rage__pg_conn_free(rage__pg_conn_t *c) {
  rage__pg_connect_free(c);
  stmts_clear(c);
  free(c->unprepare);
  free(c);
}

void rage__pg_conn_close(rage__pg_conn_t *c) {
  if (c->close_pending) return;
  rage__pg_conn_abandon(c);
  /* In non-blocking mode PQfinish only tries to send Terminate; it never waits. */
  PQfinish(c->pg);
  c->pg = NULL;
  if (c->dispatching) c->close_pending = 1;
  else rage__pg_conn_free(c);
}
