/*
 * sched.c - fibers: a pool of recycled LuaJIT coroutines and the only code that resumes them.
 *
 * Each fiber runs a tiny Lua loop, `loop(job, ...)`: it calls the job, then yields a private
 * IDLE marker and waits to be handed the next job, so a coroutine (and its stack) is reused
 * across thousands of requests. A job may also wait for its next job itself, by yielding the
 * IDLE4 marker: such a fiber is kept apart and handed only jobs of four arguments (the request
 * dispatcher's), and resumed with no values first when a job of another shape needs it (see
 * rage__fiber_acquire). A suspending C function yields the SUSPEND marker instead; the
 * coroutine wrappers that lua/rage/fiber.lua installs pass that marker up through user
 * coroutines, so `coroutine.*` keeps working inside fibers.
 *
 * Resumes may nest (a fiber that starts another fiber), so `current` is saved and restored
 * around every resume. Work deferred while fibers run is drained when the outermost resume
 * returns, or by an idle handle on the next loop iteration.
 */
#include "sched.h"

#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "log.h"
#include "rage.h"
#include "util.h"

typedef struct {
  rage__defer_cb cb;
  void *data;
} deferred_t;

struct rage__sched_s {
  lua_State *L;
  uv_loop_t *loop;
  rage__fiber_t *current;
  rage__fiber_t *pool;  /* idle fibers in the fiber body's loop */
  rage__fiber_t *pool4; /* idle fibers whose job waits for a job of four arguments (IDLE4) */
  rage__fiber_t *actives; /* running or suspended fibers */
  unsigned npool;       /* in both pools */
  unsigned active;
  int loop_ref;        /* the fiber body function */
  int depth;           /* nesting of rage__fiber_resume() */
  deferred_t *queue;
  size_t qlen, qcap;
  uv_idle_t idle;
  int idle_active;
  int draining;
  unsigned next_gen;   /* wait generations are unique across fibers, not just per fiber */
};

static char idle_marker;    /* yielded by a fiber whose job has finished */
static char idle4_marker;   /* yielded by a job that takes the next job of four arguments itself */
static char suspend_marker; /* yielded by a fiber that waits on an operation */

static const char fiber_body[] =
    "local yield, IDLE = coroutine.yield, ...\n"
    "local function loop(job, ...)\n"
    "  job(...)\n"
    "  return loop(yield(IDLE))\n"
    "end\n"
    "return loop\n";

void *rage__sched_marker(void) {
  return &suspend_marker;
}

void *rage__sched_idle4_marker(void) {
  return &idle4_marker;
}

static void drain_deferred(rage__sched_t *s) {
  /* Callbacks may defer more work (and so grow the queue); run everything in order. A
   * callback that resumes a fiber reaches the end of run() again: it must not drain too. */
  if (s->draining) return;
  s->draining = 1;
  for (size_t i = 0; i < s->qlen; i++) {
    deferred_t d = s->queue[i];
    d.cb(d.data);
  }
  s->qlen = 0;
  s->draining = 0;
}

static void on_idle(uv_idle_t *h) {
  rage__sched_t *s = h->data;
  drain_deferred(s);
  if (s->qlen == 0) {
    uv_idle_stop(&s->idle);
    s->idle_active = 0;
  }
}

rage__sched_t *rage__sched_new(lua_State *L, uv_loop_t *loop) {
  rage__sched_t *s = rage__calloc(1, sizeof(*s));
  s->L = L;
  s->loop = loop;
  if (luaL_loadbuffer(L, fiber_body, sizeof(fiber_body) - 1, "=rage.fiber") != 0) {
    rage__log(RAGE_LOG_ERROR, "fiber body: %s", lua_tostring(L, -1));
    abort();
  }
  lua_pushlightuserdata(L, &idle_marker);
  lua_call(L, 1, 1);
  s->loop_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  uv_idle_init(loop, &s->idle);
  s->idle.data = s;
  return s;
}

static void on_idle_closed(uv_handle_t *h) {
  rage__sched_t *s = h->data;
  free(s->queue);
  free(s);
}

void rage__sched_cancel_all(rage__sched_t *s) {
  /* Cancelling runs Lua code that may start or end other fibers: restart the walk each time. */
  for (;;) {
    rage__fiber_t *f = s->actives;
    while (f && (f->cancelled || f->state != RAGE_FIBER_SUSPENDED)) f = f->anext;
    if (f == NULL) return;
    rage__fiber_cancel(f);
  }
}

static void free_fiber(rage__fiber_t *f) {
  luaL_unref(f->sched->L, LUA_REGISTRYINDEX, f->ref);
  free(f);
}

void rage__sched_free(rage__sched_t *s) {
  rage__fiber_t *pools[] = {s->pool, s->pool4};
  for (int i = 0; i < 2; i++) {
    for (rage__fiber_t *f = pools[i], *next; f; f = next) {
      next = f->next;
      free_fiber(f);
    }
  }
  s->pool = s->pool4 = NULL;
  luaL_unref(s->L, LUA_REGISTRYINDEX, s->loop_ref);
  uv_close((uv_handle_t *)&s->idle, on_idle_closed);
}

rage__fiber_t *rage__fiber_current(rage__sched_t *s) {
  return s->current;
}

unsigned rage__sched_active(rage__sched_t *s) {
  return s->active;
}

static rage__fiber_t *new_fiber(rage__sched_t *s) {
  rage__fiber_t *f = rage__calloc(1, sizeof(*f));
  f->sched = s;
  f->L = lua_newthread(s->L);
  f->ref = luaL_ref(s->L, LUA_REGISTRYINDEX);
  lua_rawgeti(f->L, LUA_REGISTRYINDEX, s->loop_ref);
  return f;
}

static rage__fiber_t *pop(rage__fiber_t **pool) {
  rage__fiber_t *f = *pool;
  if (f) *pool = f->next;
  return f;
}

/* Hands a fiber whose job waits for a job of four arguments back to the fiber body's loop: the
 * job, resumed with no values, returns, and the body yields IDLE. A fiber that does anything
 * else is not reused. */
static rage__fiber_t *leave_job(rage__sched_t *s, rage__fiber_t *f) {
  rage__fiber_t *prev = s->current;
  s->current = f;
  int rc = lua_resume(f->L, 0);
  s->current = prev;
  int idle = rc == LUA_YIELD && lua_gettop(f->L) > 0 && lua_touserdata(f->L, -1) == &idle_marker;
  if (!idle) {
    const char *err = rc == LUA_YIELD || rc == 0 ? NULL : lua_tostring(f->L, -1);
    rage__log(RAGE_LOG_ERROR, "a fiber waiting for a job of four arguments %s%s",
              rc == LUA_YIELD ? "yielded instead of returning"
              : rc == 0       ? "ended"
                              : "failed: ",
              err ? err : "");
  }
  lua_settop(f->L, 0);
  if (idle) return f;
  free_fiber(f);
  return new_fiber(s);
}

rage__fiber_t *rage__fiber_acquire(rage__sched_t *s, int nargs) {
  rage__fiber_t *f;
  if (nargs == 4 && (f = pop(&s->pool4)) != NULL) {
    s->npool--;
  } else if ((f = pop(&s->pool)) != NULL) {
    s->npool--;
  } else if ((f = pop(&s->pool4)) != NULL) {
    s->npool--;
    if (nargs != 4) f = leave_job(s, f);
  } else {
    f = new_fiber(s);
  }
  f->idle4 = 0;
  f->next = NULL;
  f->locals_ref = LUA_NOREF;
  f->state = RAGE_FIBER_IDLE;
  f->cancelled = 0;
  f->cancel = NULL;
  f->op = NULL;
  f->aprev = NULL;
  f->anext = s->actives;
  if (s->actives) s->actives->aprev = f;
  s->actives = f;
  s->active++;
  return f;
}

static void release(rage__fiber_t *f, int reusable) {
  rage__sched_t *s = f->sched;
  s->active--;
  if (f->aprev) f->aprev->anext = f->anext;
  else s->actives = f->anext;
  if (f->anext) f->anext->aprev = f->aprev;
  f->aprev = f->anext = NULL;
  if (reusable && s->npool < RAGE_FIBER_POOL_MAX) {
    rage__fiber_t **pool = f->idle4 ? &s->pool4 : &s->pool;
    f->state = RAGE_FIBER_IDLE;
    f->next = *pool;
    *pool = f;
    s->npool++;
    return;
  }
  free_fiber(f);
}

static void finish(rage__fiber_t *f, int failed) {
  if (f->locals_ref != LUA_NOREF) {
    luaL_unref(f->sched->L, LUA_REGISTRYINDEX, f->locals_ref);
    f->locals_ref = LUA_NOREF;
  }
  rage__fiber_done_cb done = f->done;
  void *data = f->done_data;
  f->done = NULL;
  f->done_data = NULL;
  if (done) done(f, data, failed);
  release(f, !failed);
}

static void run(rage__fiber_t *f, int nargs) {
  rage__sched_t *s = f->sched;
  rage__fiber_t *prev = s->current;
  s->current = f;
  s->depth++;
  f->state = RAGE_FIBER_RUNNING;
  int rc = lua_resume(f->L, nargs);
  s->current = prev;
  if (rc == LUA_YIELD) {
    int top = lua_gettop(f->L);
    void *mark = top > 0 ? lua_touserdata(f->L, -1) : NULL;
    if (mark == &suspend_marker && f->state == RAGE_FIBER_SUSPENDED) {
      lua_settop(f->L, 0);
    } else if (mark == &idle_marker || mark == &idle4_marker) {
      lua_settop(f->L, 0);
      f->idle4 = mark == &idle4_marker;
      finish(f, 0);
    } else {
      /* A bare coroutine.yield at the top of a fiber has no coroutine to return to. */
      lua_settop(f->L, 0);
      rage__log(RAGE_LOG_ERROR, "coroutine.yield called outside a coroutine in a fiber");
      finish(f, 1);
    }
  } else if (rc != 0) {
    const char *msg = lua_tostring(f->L, -1);
    luaL_traceback(s->L, f->L, msg ? msg : "(error object is not a string)", 0);
    rage__log(RAGE_LOG_ERROR, "uncaught error in fiber: %s", lua_tostring(s->L, -1));
    lua_pop(s->L, 1);
    finish(f, 1);
  } else {
    /* The fiber body never returns; reaching here means it was replaced. Do not reuse it. */
    finish(f, 1);
  }
  if (--s->depth == 0) drain_deferred(s);
}

void rage__fiber_start(rage__fiber_t *f, int nargs, rage__fiber_done_cb done, void *data) {
  f->done = done;
  f->done_data = data;
  run(f, nargs + 1);
}

int rage__fiber_suspend(lua_State *L, rage__fiber_t *f, rage__fiber_cancel_cb cancel, void *op) {
  f->state = RAGE_FIBER_SUSPENDED;
  f->gen = ++f->sched->next_gen;
  f->cancel = cancel;
  f->op = op;
  lua_pushlightuserdata(L, &suspend_marker);
  return lua_yield(L, 1);
}

int rage__fiber_waiting(rage__fiber_t *f, unsigned gen) {
  return f->state == RAGE_FIBER_SUSPENDED && f->gen == gen;
}

void rage__fiber_resume(rage__fiber_t *f, int nresults) {
  f->cancel = NULL;
  f->op = NULL;
  run(f, nresults);
}

void rage__fiber_cancel(rage__fiber_t *f) {
  if (f->cancelled) return;
  f->cancelled = 1;
  if (f->state != RAGE_FIBER_SUSPENDED) return;
  if (f->cancel) f->cancel(f, f->op);
  lua_settop(f->L, 0);
  lua_pushnil(f->L);
  lua_pushliteral(f->L, "cancelled");
  lua_pushliteral(f->L, "the request was cancelled (client went away or shutdown)");
  rage__fiber_resume(f, 3);
}

void rage__sched_defer(rage__sched_t *s, rage__defer_cb cb, void *data) {
  if (s->qlen == s->qcap) {
    s->qcap = s->qcap ? s->qcap * 2 : 16;
    s->queue = rage__realloc(s->queue, s->qcap * sizeof(*s->queue));
  }
  s->queue[s->qlen].cb = cb;
  s->queue[s->qlen].data = data;
  s->qlen++;
  if (!s->idle_active) {
    uv_idle_start(&s->idle, on_idle);
    s->idle_active = 1;
  }
}
