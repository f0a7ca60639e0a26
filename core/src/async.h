/*
 * async.h - the fiber primitives Lua builds its concurrency API on (lua/rage/async.lua):
 * spawning fibers, one-shot waiters, timeouts on the current fiber and fiber-local tables.
 */
#ifndef RAGE_ASYNC_H
#define RAGE_ASYNC_H

#include <lua.h>

/* Registers the waiter, fiber and timeout metatables; upvalue 1 of every function is the runtime. */
void rage__async_open(lua_State *L, void *rt);

int rage__async_lua_spawn(lua_State *L);
int rage__async_lua_waiter(lua_State *L);
int rage__async_lua_timeout(lua_State *L);
int rage__async_lua_locals(lua_State *L);

#endif /* RAGE_ASYNC_H */
