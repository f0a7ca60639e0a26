/*
 * runtime.h - the runtime behind rage.h: one loop, one Lua state, the scheduler and the server.
 * Internal to librage; bind.c reaches it through the upvalue of every rage.core function.
 */
#ifndef RAGE_RUNTIME_H
#define RAGE_RUNTIME_H

#include "rage.h"
#include "request.h"
#include "lalloc.h"
#include "sched.h"
#include "server.h"
#include "timer.h"

#define RAGE_METHOD_REFS 64

struct rage_runtime_s {
  uv_loop_t *loop;
  uv_loop_t own_loop;
  int owns_loop;
  lua_State *L;
  rage__lalloc_t *lalloc;   /* the Lua state's memory */
  rage__sched_t *sched;
  rage__timers_t *timers;   /* rage.sleep's queues */
  rage_server_config_t cfg;
  rage__pools_t pools;
  rage__server_t server;
  int server_started;
  int handler_ref;          /* the Lua function each request runs in its fiber */
  int box_mt_ref;           /* the metatable of request objects */
  int method_refs[RAGE_METHOD_REFS]; /* method names by llhttp method id (0: not made yet) */
  int trampoline_ref;       /* runs a job under xpcall and reports how it ended */
  uv_signal_t sigterm, sigint;
  int signals;
  int stops;                /* rage_runtime_stop() calls so far */
  uint64_t stop_deadline;   /* loop time by which a graceful stop must be over */
  uv_timer_t fiber_timer;   /* bounds the wait for fibers still running after the drain */
  int fiber_timer_on;
  char env[16];
};

/* The request whose fiber is running now, or NULL outside a request's fiber. */
rage__req_t *rage__runtime_current_request(rage_runtime_t *rt);

/* Opens the rage.core module (bind.c) with `rt` as the upvalue of its functions. */
int rage__bind_open(lua_State *L);
/* Pushes a new request object for `req` onto L. */
void rage__bind_push_box(rage_runtime_t *rt, lua_State *L, rage__req_t *req);
/* Frees body limits that rage__bind_read_server_config() allocated. */
void rage__bind_free_body_limits(rage_server_config_t *cfg);
/* Reads a `server` settings table at index `idx` into rt->cfg; raises a Lua error if invalid. */
void rage__bind_read_server_config(lua_State *L, int idx, rage_server_config_t *cfg);

#endif /* RAGE_RUNTIME_H */
