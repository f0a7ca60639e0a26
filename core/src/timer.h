/*
 * timer.h - timed waits for fibers: rage.sleep and the building block of timeouts.
 */
#ifndef RAGE_TIMER_H
#define RAGE_TIMER_H

#include <lua.h>

/* core.sleep(seconds): suspends the calling fiber. Returns true, or nil, kind, message when
 * the fiber was cancelled. Upvalue 1 is the runtime. */
int rage__timer_lua_sleep(lua_State *L);

#endif /* RAGE_TIMER_H */
