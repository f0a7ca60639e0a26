/*
 * timer.c - rage.sleep (see timer.h): the first suspending operation, and the model for all
 * the others. A fiber sleeps on the uv_timer_t it carries (it waits for one thing at a time),
 * which is stopped when the wait is cancelled and closed only with the fiber; a completion that
 * arrives for a wait that is no longer current (the generation moved on) resumes nothing.
 */
#include "timer.h"

#include <lauxlib.h>
#include <math.h>
#include <stdlib.h>

#include "runtime.h"
#include "util.h"

static void on_fire(uv_timer_t *t) {
  rage__fiber_t *f = t->data;
  if (!rage__fiber_waiting(f, f->timer_gen)) return;
  lua_pushboolean(f->L, 1);
  rage__fiber_resume(f, 1);
}

static void on_cancel(rage__fiber_t *f, void *data) {
  (void)data;
  uv_timer_stop(&f->timer);
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
  uint64_t ms = (uint64_t)ceil(seconds * 1000.0);
  /* The loop's clock is cached per iteration; a fiber that computed for a while must not have
   * that time counted against its sleep. */
  uv_update_time(rt->loop);
  uv_timer_start(&f->timer, on_fire, ms, 0);
  int r = rage__fiber_suspend(L, f, on_cancel, NULL);
  f->timer_gen = f->gen;
  return r;
}
