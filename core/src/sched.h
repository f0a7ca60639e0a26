/*
 * sched.h - the fiber scheduler: every request, boot script and test runs in a fiber, a
 * LuaJIT coroutine taken from a pool of recycled ones. This module is the only place that
 * resumes a coroutine.
 *
 * The suspend protocol, followed by every waiting operation (timers, sockets, queries):
 *   1. rage__fiber_current() gives the fiber; if it is cancelled, fail at once without waiting.
 *   2. Start the non-blocking work, keeping (fiber, fiber->gen) in the operation.
 *   3. return rage__fiber_suspend(L, fiber, cancel_cb, op): this records how to cancel the
 *      operation, bumps nothing, and yields to the scheduler.
 *   4. On completion, the operation checks rage__fiber_waiting(fiber, gen), pushes its
 *      results onto fiber->L (true, values... or nil, kind, message) and calls
 *      rage__fiber_resume(fiber, nresults). The results become the return values of the
 *      lua_CFunction that suspended.
 * Cancelling a suspended fiber calls its cancel_cb, which must release the operation's
 * resources and never resume the fiber; the scheduler then resumes the fiber with
 * nil, "cancelled", message. A fiber marked cancelled fails every later wait at once.
 */
#ifndef RAGE_SCHED_H
#define RAGE_SCHED_H

#include <lua.h>
#include <uv.h>

typedef struct rage__sched_s rage__sched_t;
typedef struct rage__fiber_s rage__fiber_t;

typedef void (*rage__fiber_cancel_cb)(rage__fiber_t *fiber, void *op);
/* Called once when a fiber's job ends: `failed` is 1 when it raised an uncaught error (already
 * logged with its traceback). The fiber must not be used after the callback. */
typedef void (*rage__fiber_done_cb)(rage__fiber_t *fiber, void *data, int failed);
typedef void (*rage__defer_cb)(void *data);

enum { RAGE_FIBER_IDLE, RAGE_FIBER_RUNNING, RAGE_FIBER_SUSPENDED };

struct rage__fiber_s {
  lua_State *L;     /* the coroutine; its results are pushed here */
  rage__sched_t *sched;
  int ref;          /* registry reference anchoring the coroutine */
  int state;
  int cancelled;
  int idle4;        /* idle with its job waiting for the next job (IDLE4) */
  unsigned gen;     /* a new value on every suspension; completions carry the one they saw */
  int locals_ref;   /* registry reference to the job's fiber-local table, or LUA_NOREF */
  rage__fiber_cancel_cb cancel;
  void *op;
  rage__fiber_done_cb done;
  void *done_data;
  rage__fiber_t *next; /* free list */
  rage__fiber_t *aprev, *anext; /* list of active fibers */
  struct {            /* rage.sleep's (timer.c): a fiber sleeps once at a time */
    uint64_t due;     /* loop time it wakes at */
    uint64_t seq;     /* order in which sleeps began */
    rage__fiber_t *prev, *next; /* in its queue */
    void *queue;      /* the queue it waits in, or NULL */
    unsigned gen;     /* the suspension the sleep belongs to */
  } sleep;
};

rage__sched_t *rage__sched_new(lua_State *L, uv_loop_t *loop);
/* Cancels every active fiber (each unwinds with a "cancelled" error). */
void rage__sched_cancel_all(rage__sched_t *s);
/* Frees pooled fibers and the deferred-work handle; the close completes on the next loop run. */
void rage__sched_free(rage__sched_t *s);

/* The fiber whose code is running now, or NULL outside fibers. */
rage__fiber_t *rage__fiber_current(rage__sched_t *s);

/*
 * Takes an idle fiber from the pool (or creates one) for a job of `nargs` arguments. The caller
 * pushes the job function and exactly that many arguments onto fiber->L, then calls
 * rage__fiber_start(). A job of four arguments may go to a fiber whose last job waits for it
 * (IDLE4): that job is resumed with the new job and its arguments.
 */
rage__fiber_t *rage__fiber_acquire(rage__sched_t *s, int nargs);
void rage__fiber_start(rage__fiber_t *f, int nargs, rage__fiber_done_cb done, void *data);

int rage__fiber_suspend(lua_State *L, rage__fiber_t *f, rage__fiber_cancel_cb cancel, void *op);
int rage__fiber_waiting(rage__fiber_t *f, unsigned gen);
void rage__fiber_resume(rage__fiber_t *f, int nresults);
/* Cancels the fiber: its pending wait (if any) is cancelled and it resumes with an error now;
 * otherwise its next wait fails. Safe to call from any callback. */
void rage__fiber_cancel(rage__fiber_t *f);

/*
 * Runs `cb(data)` after the current fiber has yielded, or on the next loop iteration when no
 * fiber is running: work that must not happen inside a running fiber (starting another request
 * on the same connection, calling a host's callback) goes through here.
 */
void rage__sched_defer(rage__sched_t *s, rage__defer_cb cb, void *data);

/* Number of fibers currently running or suspended (not idle in the pool). */
unsigned rage__sched_active(rage__sched_t *s);

/* The lightuserdata that suspending C functions yield; Lua's coroutine wrappers pass it up. */
void *rage__sched_marker(void);

/* The light userdata a job yields to wait, in its fiber, for the next job of exactly four
 * arguments (core.IDLE4 in Lua): the yield returns that job and its four arguments, or nothing
 * when the fiber is wanted for a job of another shape, and the job must then return. The
 * request dispatcher's loop waits this way, so that it serves the next request without going
 * back through the fiber body (a vararg tail call LuaJIT cannot compile across the resume). */
void *rage__sched_idle4_marker(void);

#endif /* RAGE_SCHED_H */
