/*
 * timer.h - timed waits for fibers: rage.sleep and the building block of timeouts.
 */
#ifndef RAGE_TIMER_H
#define RAGE_TIMER_H

#include <lua.h>
#include <uv.h>

/* The sleep queues of one loop: rage__timers_new() with the runtime, rage__timers_free() after
 * every fiber has been cancelled (their close completes on the next loop run). */
typedef struct rage__timers_s rage__timers_t;
rage__timers_t *rage__timers_new(uv_loop_t *loop);
void rage__timers_free(rage__timers_t *t);

/* core.sleep(seconds): suspends the calling fiber. Returns true, or nil, kind, message when
 * the fiber was cancelled. Upvalue 1 is the runtime. */
int rage__timer_lua_sleep(lua_State *L);

#endif /* RAGE_TIMER_H */
