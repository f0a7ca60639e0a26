/*
 * timer.c - rage.sleep (see timer.h): the first suspending operation, and the model for all
 * the others. Each wait owns a uv_timer_t that is closed, and freed in its close callback,
 * whether the wait completes or is cancelled; a completion that arrives for a wait that is no
 * longer current (the generation moved on) resumes nothing.
 */
#include "timer.h"

#include <lauxlib.h>
#include <math.h>
#include <stdlib.h>

#include "runtime.h"
#include "util.h"

typedef struct {
  uv_timer_t timer;
  rage__fiber_t *fiber;
  unsigned gen;
} sleep_op_t;

static void on_closed(uv_handle_t *h) {
  free(h->data);
}

static void on_fire(uv_timer_t *t) {
  sleep_op_t *op = t->data;
  rage__fiber_t *f = op->fiber;
  unsigned gen = op->gen;
  uv_close((uv_handle_t *)&op->timer, on_closed);
  if (!rage__fiber_waiting(f, gen)) return;
  lua_pushboolean(f->L, 1);
  rage__fiber_resume(f, 1);
}

static void on_cancel(rage__fiber_t *f, void *data) {
  sleep_op_t *op = data;
  uv_close((uv_handle_t *)&op->timer, on_closed);
}

int rage__timer_lua_sleep(lua_State *L) {
  rage_runtime_t *rt = lua_touserdata(L, lua_upvalueindex(1));
  lua_Number seconds = luaL_checknumber(L, 1);
  rage__fiber_t *f = rage__fiber_current(rt->sched);
  if (f == NULL) return luaL_error(L, "rage.sleep can only be called inside a fiber");
  if (!(seconds >= 0) || seconds > 1e9) return luaL_argerror(L, 1, "seconds must be between 0 and 1e9");
  if (f->cancelled) {
    lua_pushnil(L);
    lua_pushliteral(L, "cancelled");
    lua_pushliteral(L, "the fiber was cancelled");
    return 3;
  }
  sleep_op_t *op = rage__malloc(sizeof(*op));
  op->fiber = f;
  uv_timer_init(rt->loop, &op->timer);
  op->timer.data = op;
  uint64_t ms = (uint64_t)ceil(seconds * 1000.0);
  /* The loop's clock is cached per iteration; a fiber that computed for a while must not have
   * that time counted against its sleep. */
  uv_update_time(rt->loop);
  uv_timer_start(&op->timer, on_fire, ms, 0);
  int r = rage__fiber_suspend(L, f, on_cancel, op);
  op->gen = f->gen;
  return r;
}
