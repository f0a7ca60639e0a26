/*
 * test-sched.c - fibers: reuse of coroutines, the suspend protocol, cancellation, stale
 * completions, errors, user coroutines and pcall across scheduler waits, and many fibers at once.
 * Runs through the public runtime so that Lua code drives real timers on a real loop.
 */
#include <lauxlib.h>
#include <unistd.h>

#include "runtime.h"
#include "sched.h"
#include "test.h"

static rage_runtime_t *rt;

static void setup(void) {
  rage_options_t opts = {0};
  opts.env = "test";
  opts.lua_path = RAGE_LUA_DIR;
  ASSERT_EQ(rage_runtime_new(&rt, NULL, &opts), 0);
}

static void teardown(void) {
  rage_runtime_free(rt);
}

/* Runs a Lua snippet as a fiber job; returns its integer result. */
static int run_lua(const char *code) {
  lua_State *L = rage_runtime_lua(rt);
  char path[] = "/tmp/rage-test-XXXXXX";
  int fd = mkstemp(path);
  ASSERT(fd >= 0);
  ASSERT_EQ(write(fd, code, strlen(code)), (long long)strlen(code));
  close(fd);
  int status = -1;
  int r = rage_runtime_exec(rt, path, 0, NULL, &status);
  unlink(path);
  if (r != 0) {
    fprintf(stderr, "lua failed: %s\n", rage_runtime_error(rt));
    exit(1);
  }
  (void)L;
  return status;
}

TEST(sleep_and_order) {
  setup();
  int r = run_lua(
      "local t0 = rage.now()\n"
      "rage.sleep(0.02)\n"
      "local dt = rage.now() - t0\n"
      "assert(dt >= 0.015, 'slept ' .. dt)\n"
      "return 7\n");
  ASSERT_EQ(r, 7);
  teardown();
}

TEST(fibers_are_reused) {
  setup();
  /* Sequential jobs run in the same pooled coroutine. */
  run_lua("_G.first = coroutine.running(); return 0");
  run_lua("assert(coroutine.running() == _G.first, 'coroutine not reused'); return 0");
  teardown();
}

TEST(pcall_and_user_coroutines_across_waits) {
  setup();
  int r = run_lua(
      "local ok, v = pcall(function() rage.sleep(0.001); return 5 end)\n"
      "assert(ok and v == 5)\n"
      "local ok2, err = pcall(function() rage.sleep(0.001); error('boom') end)\n"
      "assert(not ok2 and err:find('boom'))\n"
      "local co = coroutine.create(function(a)\n"
      "  rage.sleep(0.001)\n"
      "  local b = coroutine.yield(a + 1)\n"
      "  rage.sleep(0.001)\n"
      "  return b * 2\n"
      "end)\n"
      "local ok3, x = coroutine.resume(co, 1)\n"
      "assert(ok3 and x == 2, tostring(x))\n"
      "local ok4, y = coroutine.resume(co, 10)\n"
      "assert(ok4 and y == 20, tostring(y))\n"
      "assert(coroutine.status(co) == 'dead')\n"
      "local gen = coroutine.wrap(function() for i = 1, 3 do rage.sleep(0); coroutine.yield(i) end end)\n"
      "assert(gen() == 1 and gen() == 2 and gen() == 3)\n"
      "return 1\n");
  ASSERT_EQ(r, 1);
  teardown();
}

/* A C operation for the tests: waits on a timer and lets the test cancel the fiber. */
static rage__fiber_t *waiting;
static int cancel_calls;
static uv_timer_t late_timer;
static unsigned late_gen;

static void on_cancel(rage__fiber_t *f, void *op) {
  cancel_calls++;
}

static int wait_forever(lua_State *L) {
  rage__fiber_t *f = rage__fiber_current(rt->sched);
  if (f->cancelled) {
    lua_pushnil(L);
    lua_pushliteral(L, "cancelled");
    lua_pushliteral(L, "cancelled");
    return 3;
  }
  waiting = f;
  int r = rage__fiber_suspend(L, f, on_cancel, NULL);
  late_gen = f->gen;
  return r;
}

static void on_cancel_timer(uv_timer_t *t) {
  rage__fiber_cancel(waiting);
}

static void on_late_completion(uv_timer_t *t) {
  /* A completion for a wait that was cancelled must resume nothing. */
  ASSERT(!rage__fiber_waiting(waiting, late_gen) || waiting->state != RAGE_FIBER_SUSPENDED ||
         waiting->gen != late_gen);
  uv_close((uv_handle_t *)t, NULL);
}

TEST(cancel_suspended_fiber) {
  setup();
  rage_runtime_register(rt, "wait_forever", wait_forever);
  uv_timer_t t;
  uv_timer_init(rage_runtime_loop(rt), &t);
  uv_timer_start(&t, on_cancel_timer, 10, 0);
  uv_timer_init(rage_runtime_loop(rt), &late_timer);
  uv_timer_start(&late_timer, on_late_completion, 30, 0);
  int r = run_lua(
      "local fiber = require('rage.fiber')\n"
      "local ok, err = pcall(function() fiber.check(rage.c.wait_forever()) end)\n"
      "assert(not ok and err.kind == 'cancelled', tostring(err))\n"
      "-- every later wait fails at once\n"
      "local ok2, err2 = pcall(rage.sleep, 1)\n"
      "assert(not ok2 and err2.kind == 'cancelled')\n"
      "return 3\n");
  ASSERT_EQ(r, 3);
  ASSERT_EQ(cancel_calls, 1);
  uv_close((uv_handle_t *)&t, NULL);
  uv_run(rage_runtime_loop(rt), UV_RUN_DEFAULT);
  teardown();
}

TEST(error_in_fiber_is_reported) {
  setup();
  lua_State *L = rage_runtime_lua(rt);
  (void)L;
  char path[] = "/tmp/rage-test-XXXXXX";
  int fd = mkstemp(path);
  const char code[] = "rage.sleep(0.001)\nerror('expected failure')\n";
  ASSERT_EQ(write(fd, code, sizeof(code) - 1), (long long)(sizeof(code) - 1));
  close(fd);
  int status = 0;
  ASSERT_EQ(rage_runtime_exec(rt, path, 0, NULL, &status), RAGE_ELUA);
  unlink(path);
  ASSERT(strstr(rage_runtime_error(rt), "expected failure") != NULL);
  /* The runtime keeps working. */
  ASSERT_EQ(run_lua("rage.sleep(0.001) return 9"), 9);
  teardown();
}

static int finished;

static int count_done(lua_State *L) {
  finished++;
  return 0;
}

static void on_fiber_done(rage__fiber_t *f, void *data, int failed) {
  ASSERT(!failed);
}

TEST(ten_thousand_fibers) {
  setup();
  rage_runtime_register(rt, "count_done", count_done);
  lua_State *L = rage_runtime_lua(rt);
  ASSERT_EQ(luaL_loadstring(L, "local ms = ... rage.sleep(ms / 1000) rage.c.count_done()"), 0);
  int fn = luaL_ref(L, LUA_REGISTRYINDEX);
  /* All 10,000 wait at the same time: the sleeps overlap instead of adding up. */
  uint64_t t0 = uv_now(rage_runtime_loop(rt));
  for (int i = 0; i < 10000; i++) {
    rage__fiber_t *f = rage__fiber_acquire(rt->sched, 1);
    lua_rawgeti(f->L, LUA_REGISTRYINDEX, fn);
    lua_pushinteger(f->L, 50);
    rage__fiber_start(f, 1, on_fiber_done, NULL);
  }
  ASSERT_EQ(rage__sched_active(rt->sched), 10000);
  uv_run(rage_runtime_loop(rt), UV_RUN_DEFAULT);
  ASSERT_EQ(finished, 10000);
  ASSERT_EQ(rage__sched_active(rt->sched), 0);
  uv_update_time(rage_runtime_loop(rt));
  ASSERT(uv_now(rage_runtime_loop(rt)) - t0 < 5000);
  luaL_unref(L, LUA_REGISTRYINDEX, fn);
  teardown();
}

/* Starts `fn` with the integer arguments args[0..nargs) in a fiber taken for that many. */
static rage__fiber_t *start_job(int fn, int nargs, const int *args) {
  rage__fiber_t *f = rage__fiber_acquire(rt->sched, nargs);
  lua_rawgeti(f->L, LUA_REGISTRYINDEX, fn);
  for (int i = 0; i < nargs; i++) lua_pushinteger(f->L, args[i]);
  rage__fiber_start(f, nargs, on_fiber_done, NULL);
  return f;
}

static int lua_int(const char *expr) {
  lua_State *L = rage_runtime_lua(rt);
  ASSERT_EQ(luaL_dostring(L, expr), 0);
  int v = (int)lua_tointeger(L, -1);
  lua_pop(L, 1);
  return v;
}

TEST(job_waits_for_the_next_job_of_four) {
  setup();
  lua_State *L = rage_runtime_lua(rt);
  /* A job like the request dispatcher's: it serves jobs of four arguments itself, waiting for
   * each with IDLE4, until it is resumed with nothing. */
  ASSERT_EQ(luaL_dostring(L,
                          "local IDLE4 = require('rage.core').IDLE4\n"
                          "_G.served, _G.left = 0, 0\n"
                          "local loop\n"
                          "loop = function(a, b, c, d)\n"
                          "  local j = loop\n"
                          "  while j == loop do\n"
                          "    _G.served = _G.served + a + b + c + d\n"
                          "    _G.co = coroutine.running()\n"
                          "    j, a, b, c, d = coroutine.yield(IDLE4)\n"
                          "  end\n"
                          "  _G.left = _G.left + 1\n"
                          "  if j then return j(a, b, c, d) end\n"
                          "end\n"
                          "return loop"),
            0);
  int loop = luaL_ref(L, LUA_REGISTRYINDEX);
  ASSERT_EQ(luaL_dostring(L, "return function(...) _G.nargs = select('#', ...) "
                             "_G.same = coroutine.running() == _G.co end"),
            0);
  int other = luaL_ref(L, LUA_REGISTRYINDEX);
  static const int four[] = {1, 2, 3, 4}, one[] = {7};

  rage__fiber_t *f = start_job(loop, 4, four);
  ASSERT_EQ(lua_int("return served"), 10);
  ASSERT_EQ(rage__sched_active(rt->sched), 0);
  /* The next job of four goes to the waiting loop, as the results of its yield. */
  ASSERT(start_job(loop, 4, four) == f);
  ASSERT_EQ(lua_int("return served"), 20);
  ASSERT_EQ(lua_int("return left"), 0);
  /* A job of another shape gets the same coroutine only after the loop has returned, and
   * sees exactly its own arguments. */
  ASSERT(start_job(other, 1, one) == f);
  ASSERT_EQ(lua_int("return left"), 1);
  ASSERT_EQ(lua_int("return nargs"), 1);
  ASSERT_EQ(lua_int("return same and 1 or 0"), 1);
  /* That fiber is back in the body's loop: a job of four starts the loop afresh. */
  ASSERT(start_job(loop, 4, four) == f);
  ASSERT_EQ(lua_int("return served"), 30);
  /* A different job of four is run by the waiting one, which returns into it. */
  start_job(other, 4, four);
  ASSERT_EQ(lua_int("return left"), 2);
  ASSERT_EQ(lua_int("return nargs"), 4);
  ASSERT_EQ(rage__sched_active(rt->sched), 0);
  luaL_unref(L, LUA_REGISTRYINDEX, loop);
  luaL_unref(L, LUA_REGISTRYINDEX, other);
  teardown();
}

TEST(loop_closes_clean) {
  /* A runtime on the host's loop leaves nothing behind after rage_runtime_free. */
  uv_loop_t loop;
  uv_loop_init(&loop);
  rage_options_t opts = {0};
  opts.lua_path = RAGE_LUA_DIR;
  ASSERT_EQ(rage_runtime_new(&rt, &loop, &opts), 0);
  ASSERT_EQ(run_lua("rage.sleep(0.001) return 1"), 1);
  rage_runtime_free(rt);
  ASSERT_LOOP_CLOSES(&loop);
}

int main(int argc, char **argv) {
  static const test_entry_t tests[] = {
      TEST_ENTRY(sleep_and_order), TEST_ENTRY(fibers_are_reused),
      TEST_ENTRY(pcall_and_user_coroutines_across_waits), TEST_ENTRY(cancel_suspended_fiber),
      TEST_ENTRY(error_in_fiber_is_reported), TEST_ENTRY(ten_thousand_fibers),
      TEST_ENTRY(job_waits_for_the_next_job_of_four),
      TEST_ENTRY(loop_closes_clean), {NULL, NULL}};
  return test_main(argc, argv, tests);
}
