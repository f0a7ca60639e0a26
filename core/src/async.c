/*
 * async.c - spawning fibers, waiters, timeouts and fiber-local tables (see async.h).
 *
 * core.spawn(fn, ...) starts fn in a new fiber at once (it runs until its first wait) and
 * returns a fiber object with :cancel() and :alive(). The object is anchored in the registry
 * while the fiber runs, so the done callback never writes into a collected userdata.
 *
 * A waiter is a one-shot wake-up bound to the fiber that created it: :wait() suspends that fiber
 * until someone calls :wake(...), whose arguments become :wait()'s results. wake() only queues
 * the resume (rage__sched_defer), so waking never runs another fiber inside the caller. A waiter
 * remembers that it was woken even when its fiber was cancelled before the resume ran, so
 * Lua code can hand back what the wake transferred (a semaphore permit, a channel item).
 *
 * core.timeout(seconds) arms a timer for the current fiber: if it fires while the fiber waits,
 * the pending operation is cancelled (its resources released) and the fiber resumes with
 * nil, "timeout", message. Unlike cancellation it leaves the fiber usable. :stop() disarms it.
 */
#include "async.h"

#include <lauxlib.h>
#include <stdlib.h>

#include "runtime.h"
#include "util.h"

#define RT(L) ((rage_runtime_t *)lua_touserdata((L), lua_upvalueindex(1)))

static rage__fiber_t *current(lua_State *L, const char *what) {
  rage__fiber_t *f = rage__fiber_current(RT(L)->sched);
  if (f == NULL) luaL_error(L, "%s can only be used inside a fiber", what);
  return f;
}

static int push_cancelled(lua_State *L) {
  lua_pushnil(L);
  lua_pushliteral(L, "cancelled");
  lua_pushliteral(L, "the fiber was cancelled");
  return 3;
}

/* ---- spawned fibers --------------------------------------------------------------------- */

typedef struct {
  rage__fiber_t *f; /* NULL once the job has ended */
  int anchor;       /* registry reference keeping this userdata alive while the job runs */
  lua_State *L;     /* the main state, for unref */
} spawned_t;

static void on_spawned_done(rage__fiber_t *f, void *data, int failed) {
  spawned_t *s = data;
  s->f = NULL;
  luaL_unref(s->L, LUA_REGISTRYINDEX, s->anchor);
  s->anchor = LUA_NOREF;
}

int rage__async_lua_spawn(lua_State *L) {
  rage_runtime_t *rt = RT(L);
  luaL_checktype(L, 1, LUA_TFUNCTION);
  int nargs = lua_gettop(L) - 1;
  rage__fiber_t *parent = rage__fiber_current(rt->sched);
  spawned_t *s = lua_newuserdata(L, sizeof(*s));
  s->f = NULL;
  s->anchor = LUA_NOREF;
  s->L = rt->L;
  luaL_getmetatable(L, "rage.fiber");
  lua_setmetatable(L, -2);
  lua_pushvalue(L, -1);
  s->anchor = luaL_ref(L, LUA_REGISTRYINDEX);
  rage__fiber_t *f = rage__fiber_acquire(rt->sched, nargs);
  s->f = f;
  /* A child's fiber-local table inherits from its parent's (request id, log tags). */
  if (parent && parent->locals_ref != LUA_NOREF) {
    lua_newtable(L);
    lua_newtable(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, parent->locals_ref);
    lua_setfield(L, -2, "__index");
    lua_setmetatable(L, -2);
    f->locals_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  for (int i = 1; i <= nargs + 1; i++) lua_pushvalue(L, i);
  lua_xmove(L, f->L, nargs + 1);
  rage__fiber_start(f, nargs, on_spawned_done, s);
  return 1; /* the userdata, still on L's stack below nothing else we pushed */
}

static spawned_t *check_spawned(lua_State *L) {
  return luaL_checkudata(L, 1, "rage.fiber");
}

static int spawned_cancel(lua_State *L) {
  spawned_t *s = check_spawned(L);
  if (s->f) rage__fiber_cancel(s->f);
  return 0;
}

static int spawned_alive(lua_State *L) {
  lua_pushboolean(L, check_spawned(L)->f != NULL);
  return 1;
}

/* ---- waiters ---------------------------------------------------------------------------- */

enum { WAITER_IDLE, WAITER_PARKED, WAITER_WOKEN };

typedef struct {
  rage__fiber_t *f;
  unsigned gen;
  int state;
} waiter_t;

typedef struct {
  rage__fiber_t *f;
  unsigned gen;
  int n;
} wake_t;

int rage__async_lua_waiter(lua_State *L) {
  rage__fiber_t *f = current(L, "a waiter");
  waiter_t *w = lua_newuserdata(L, sizeof(*w));
  w->f = f;
  w->gen = 0;
  w->state = WAITER_IDLE;
  luaL_getmetatable(L, "rage.waiter");
  lua_setmetatable(L, -2);
  return 1;
}

static void on_waiter_cancel(rage__fiber_t *f, void *op) {
  waiter_t *w = op;
  if (w->state == WAITER_PARKED) w->state = WAITER_IDLE;
}

static int waiter_wait(lua_State *L) {
  rage_runtime_t *rt = RT(L);
  waiter_t *w = luaL_checkudata(L, 1, "rage.waiter");
  rage__fiber_t *f = rage__fiber_current(rt->sched);
  if (f != w->f) return luaL_error(L, "a waiter can only be waited on by the fiber that created it");
  if (w->state != WAITER_IDLE) return luaL_error(L, "this waiter was already used");
  if (f->cancelled) return push_cancelled(L);
  w->state = WAITER_PARKED;
  int r = rage__fiber_suspend(L, f, on_waiter_cancel, w);
  w->gen = f->gen;
  return r;
}

static void deferred_wake(void *data) {
  wake_t *k = data;
  if (rage__fiber_waiting(k->f, k->gen)) rage__fiber_resume(k->f, k->n);
  free(k);
}

static int waiter_wake(lua_State *L) {
  rage_runtime_t *rt = RT(L);
  waiter_t *w = luaL_checkudata(L, 1, "rage.waiter");
  int n = lua_gettop(L) - 1;
  if (w->state != WAITER_PARKED || !rage__fiber_waiting(w->f, w->gen)) {
    lua_pushboolean(L, 0);
    return 1;
  }
  w->state = WAITER_WOKEN;
  rage__fiber_t *f = w->f;
  lua_settop(f->L, 0);
  lua_pushboolean(f->L, 1);
  for (int i = 2; i <= n + 1; i++) lua_pushvalue(L, i);
  lua_xmove(L, f->L, n);
  wake_t *k = rage__malloc(sizeof(*k));
  k->f = f;
  k->gen = w->gen;
  k->n = n + 1;
  rage__sched_defer(rt->sched, deferred_wake, k);
  lua_pushboolean(L, 1);
  return 1;
}

static int waiter_woken(lua_State *L) {
  waiter_t *w = luaL_checkudata(L, 1, "rage.waiter");
  lua_pushboolean(L, w->state == WAITER_WOKEN);
  return 1;
}

/* ---- timeouts --------------------------------------------------------------------------- */

/* Owned twice: by the Lua object and by the timer handle until its close callback. */
typedef struct {
  uv_timer_t timer;
  rage__fiber_t *f;
  double seconds;
  int armed;
  int refs;
} timeout_t;

typedef struct {
  timeout_t *t; /* NULL once the Lua object has released it */
} timeout_box_t;

static void timeout_release(timeout_t *t) {
  if (--t->refs == 0) free(t);
}

static void on_timeout_closed(uv_handle_t *h) {
  timeout_release(h->data);
}

static void timeout_disarm(timeout_t *t) {
  if (!t->armed) return;
  t->armed = 0;
  uv_timer_stop(&t->timer);
  uv_close((uv_handle_t *)&t->timer, on_timeout_closed);
}

static void on_timeout_fire(uv_timer_t *h) {
  timeout_t *t = h->data;
  rage__fiber_t *f = t->f;
  double seconds = t->seconds;
  timeout_disarm(t);
  if (f->state != RAGE_FIBER_SUSPENDED) return;
  if (f->cancel) f->cancel(f, f->op);
  lua_settop(f->L, 0);
  lua_pushnil(f->L);
  lua_pushliteral(f->L, "timeout");
  lua_pushfstring(f->L, "timed out after %f seconds", seconds);
  rage__fiber_resume(f, 3);
}

int rage__async_lua_timeout(lua_State *L) {
  rage_runtime_t *rt = RT(L);
  lua_Number seconds = luaL_checknumber(L, 1);
  if (!(seconds >= 0) || seconds > 1e9) return luaL_argerror(L, 1, "seconds must be between 0 and 1e9");
  rage__fiber_t *f = current(L, "rage.timeout");
  timeout_t *t = rage__malloc(sizeof(*t));
  t->f = f;
  t->seconds = seconds;
  t->armed = 1;
  t->refs = 2;
  uv_timer_init(rt->loop, &t->timer);
  t->timer.data = t;
  uv_update_time(rt->loop);
  uv_timer_start(&t->timer, on_timeout_fire, (uint64_t)(seconds * 1000.0 + 0.999), 0);
  timeout_box_t *box = lua_newuserdata(L, sizeof(*box));
  box->t = t;
  luaL_getmetatable(L, "rage.timeout");
  lua_setmetatable(L, -2);
  return 1;
}

static int timeout_stop(lua_State *L) {
  timeout_box_t *box = luaL_checkudata(L, 1, "rage.timeout");
  if (box->t) {
    timeout_t *t = box->t;
    box->t = NULL;
    timeout_disarm(t);
    timeout_release(t);
  }
  return 0;
}

static int timeout_gc(lua_State *L) {
  /* A timeout dropped without stop() is disarmed, never left to fire into a later wait. */
  return timeout_stop(L);
}

/* ---- fiber-local tables ----------------------------------------------------------------- */

/* core.locals(create): the job's fiber-local table; without `create`, nil when there is none. */
int rage__async_lua_locals(lua_State *L) {
  rage__fiber_t *f = rage__fiber_current(RT(L)->sched);
  int create = lua_toboolean(L, 1);
  if (f == NULL) {
    if (create) return luaL_error(L, "rage.fiber_local can only be used inside a fiber");
    return 0;
  }
  if (f->locals_ref == LUA_NOREF) {
    if (!create) return 0;
    lua_newtable(L);
    lua_pushvalue(L, -1);
    f->locals_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 1;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, f->locals_ref);
  return 1;
}

/* ---- registration ----------------------------------------------------------------------- */

static void add_methods(lua_State *L, void *rt, const char *name, const luaL_Reg *methods,
                        lua_CFunction gc) {
  luaL_newmetatable(L, name);
  lua_newtable(L);
  lua_pushlightuserdata(L, rt);
  luaL_openlib(L, NULL, methods, 1);
  lua_setfield(L, -2, "__index");
  if (gc) {
    lua_pushcfunction(L, gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
}

void rage__async_open(lua_State *L, void *rt) {
  static const luaL_Reg fiber_methods[] = {{"cancel", spawned_cancel}, {"alive", spawned_alive}, {NULL, NULL}};
  static const luaL_Reg waiter_methods[] = {
      {"wait", waiter_wait}, {"wake", waiter_wake}, {"woken", waiter_woken}, {NULL, NULL}};
  static const luaL_Reg timeout_methods[] = {{"stop", timeout_stop}, {NULL, NULL}};
  add_methods(L, rt, "rage.fiber", fiber_methods, NULL);
  add_methods(L, rt, "rage.waiter", waiter_methods, NULL);
  add_methods(L, rt, "rage.timeout", timeout_methods, timeout_gc);
}
