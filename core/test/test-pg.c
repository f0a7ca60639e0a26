/*
 * test-pg.c - the PostgreSQL driver and pool against a real server: a throwaway cluster
 * started by tools/pg-throwaway for each test process (or $DATABASE_URL when set). Covers
 * statements and results through the pool objects, a runtime closed with connections in its
 * pool, a fiber cancelled in the middle of a statement (the statement is cancelled on the
 * server too), the statement timeout, a refused connection with its backoff, waiters that are
 * cancelled, and calls from outside a fiber. Every test ends by proving that the loop closes
 * with no handle left and no file descriptor leaked.
 *
 * When the PostgreSQL server binaries are not installed, every test says so and passes.
 */
#include <dirent.h>
#include <lauxlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "runtime.h"
#include "test.h"

static uv_loop_t loop;
static rage_runtime_t *rt;
static int fds_at_start;
static char url[1024];
static char pg_dir[1024];

static int fd_count(void) {
  int n = 0;
  DIR *d = opendir("/proc/self/fd");
  ASSERT(d != NULL);
  while (readdir(d)) n++;
  closedir(d);
  return n;
}

/* Starts a throwaway server (unless DATABASE_URL is set). Returns 0, or 1 when PostgreSQL is
 * not installed. */
static int start_pg(void) {
  const char *env = getenv("DATABASE_URL");
  if (env && *env) {
    snprintf(url, sizeof(url), "%s", env);
    return 0;
  }
  char cmd[1024];
  snprintf(cmd, sizeof(cmd), "%s/tools/pg-throwaway start --owner %d", RAGE_SOURCE_DIR, (int)getpid());
  FILE *f = popen(cmd, "r");
  ASSERT(f != NULL);
  char line[1024];
  while (fgets(line, sizeof(line), f)) {
    line[strcspn(line, "\n")] = '\0';
    if (strncmp(line, "DATABASE_URL=", 13) == 0) snprintf(url, sizeof(url), "%s", line + 13);
    if (strncmp(line, "PG_THROWAWAY_DIR=", 17) == 0) snprintf(pg_dir, sizeof(pg_dir), "%s", line + 17);
  }
  int status = pclose(f);
  if (WIFEXITED(status) && WEXITSTATUS(status) == 3) return 1;
  ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  ASSERT(url[0] != '\0');
  return 0;
}

static void stop_pg(void) {
  if (pg_dir[0] == '\0') return;
  char cmd[2200];
  snprintf(cmd, sizeof(cmd), "%s/tools/pg-throwaway stop %s", RAGE_SOURCE_DIR, pg_dir);
  ASSERT_EQ(system(cmd), 0);
}

static int setup(void) {
  if (start_pg() != 0) {
    printf("skipped: PostgreSQL server binaries not found (install the Debian package postgresql)\n");
    return 1;
  }
  /* libuv opens a process-wide pipe at its first loop and keeps it: count after that. */
  ASSERT_EQ(uv_loop_init(&loop), 0);
  ASSERT_EQ(uv_loop_close(&loop), 0);
  fds_at_start = fd_count();
  ASSERT_EQ(uv_loop_init(&loop), 0);
  rage_options_t opts = {0};
  opts.env = "test";
  opts.lua_path = RAGE_LUA_DIR;
  ASSERT_EQ(rage_runtime_new(&rt, &loop, &opts), 0);
  return 0;
}

/* Frees the runtime and proves that nothing is left: no handle, no file descriptor. Cancel
 * requests run on threads of their own for a moment; their sockets are waited for. */
static void teardown(void) {
  rage_runtime_free(rt);
  ASSERT_LOOP_CLOSES(&loop);
  for (int i = 0; i < 200 && fd_count() != fds_at_start; i++) usleep(10000);
  ASSERT_EQ(fd_count(), fds_at_start);
  stop_pg();
}

/* Runs Lua code as a fiber job with URL defined; returns the number it returns. */
static int run_lua(const char *code) {
  char path[] = "/tmp/rage-test-XXXXXX";
  int fd = mkstemp(path);
  ASSERT(fd >= 0);
  char head[700];
  snprintf(head, sizeof(head),
           "local URL = %s\n"
           "local core = require('rage.core')\n"
           "local function pool(opts) return core.pg_pool({'dbname'}, {URL}, opts) end\n",
           "os.getenv('RAGE_TEST_URL')");
  ASSERT_EQ(write(fd, head, strlen(head)), (long long)strlen(head));
  ASSERT_EQ(write(fd, code, strlen(code)), (long long)strlen(code));
  close(fd);
  setenv("RAGE_TEST_URL", url, 1);
  int status = -1;
  int r = rage_runtime_exec(rt, path, 0, NULL, &status);
  unlink(path);
  if (r != 0) {
    fprintf(stderr, "lua failed: %s\n", rage_runtime_error(rt));
    exit(1);
  }
  return status;
}

TEST(query_and_pool_at_close) {
  if (setup()) return;
  int r = run_lua(
      "local p = pool()\n"
      "local res, kind, msg = p:query('SELECT $1::int + 1 AS n, $2::text AS t, NULL AS z', 2, '41', 'x')\n"
      "assert(res, msg)\n"
      "local rows, cols, affected, tag = res:decode(false)\n"
      "assert(rows[1].n == 42 and rows[1].t == 'x' and rows[1].z == false, 'row')\n"
      "assert(cols[1] == 'n' and cols[3] == 'z' and affected == 1 and tag == 'SELECT 1', tag)\n"
      "local ok, kind, msg, fields = p:query('SELECT 1/0', 0)\n"
      "assert(ok == nil and kind == 'db.data' and fields.sqlstate == '22012', kind)\n"
      "for i = 1, 3 do assert(p:query('SELECT 1', 0)) end\n"
      "local s = p:stats()\n"
      "assert(s.size == 1 and s.idle == 1 and s.opened == 1, 'one connection reused')\n"
      "return s.idle\n");
  ASSERT_EQ(r, 1);
  /* The idle connection is watched (its close would be seen) but keeps no loop running. */
  ASSERT_EQ(uv_run(&loop, UV_RUN_DEFAULT), 0);
  /* The runtime closes with a connection in its pool, its handle closed on the way out. */
  teardown();
}

TEST(cancel_mid_statement) {
  if (setup()) return;
  int r = run_lua(
      "local p = pool()\n"
      "local h = rage.spawn(function() return p:query('SELECT pg_sleep(30)', 0) end)\n"
      "rage.sleep(0.1)\n"
      "h:cancel()\n"
      "local ok, err = pcall(h.wait, h)\n"
      "assert(ok and err == nil, 'the query call returned nil, cancelled')\n"
      "assert(p:stats().size == 0, 'the connection of a cancelled statement is closed')\n"
      "for i = 1, 100 do\n"
      "  local res = assert(p:query(\"SELECT count(*) AS n FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' AND state = 'active'\", 0))\n"
      "  if res:decode(false)[1].n == 0 then return i end\n"
      "  rage.sleep(0.02)\n"
      "end\n"
      "return 0\n");
  ASSERT(r > 0); /* the server stopped the statement */
  teardown();
}

TEST(statement_timeout) {
  if (setup()) return;
  int r = run_lua(
      "local p = pool{statement_timeout = 0.2}\n"
      "local t0 = rage.clock()\n"
      "local ok, kind, msg, fields = p:query('SELECT pg_sleep(30)', 0)\n"
      "local dt = rage.clock() - t0\n"
      "assert(ok == nil and kind == 'db.timeout' and fields.status == 503, tostring(kind))\n"
      "assert(dt > 0.15 and dt < 1, 'timed out after ' .. dt)\n"
      "assert(p:stats().timeouts == 1)\n"
      "for i = 1, 100 do\n"
      "  local res = assert(p:query(\"SELECT count(*) AS n FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' AND state = 'active'\", 0))\n"
      "  if res:decode(false)[1].n == 0 then return i end\n"
      "  rage.sleep(0.02)\n"
      "end\n"
      "return 0\n");
  ASSERT(r > 0);
  teardown();
}

TEST(refused_connection_backoff) {
  if (setup()) return;
  int r = run_lua(
      "local p = core.pg_pool({'dbname'}, {'postgres://nobody@127.0.0.1:1/none'})\n"
      "local t0 = rage.clock()\n"
      "local ok, kind, msg, fields = p:query('SELECT 1', 0)\n"
      "assert(ok == nil and kind == 'db.connection' and fields.status == 503, tostring(kind))\n"
      "assert(rage.clock() - t0 < 1)\n"
      "-- within the backoff, no new attempt: the failure is immediate\n"
      "ok, kind, msg = p:query('SELECT 1', 0)\n"
      "assert(kind == 'db.connection' and msg:find('next attempt'), msg)\n"
      "local s = p:stats()\n"
      "assert(s.connect_failures == 1 and s.size == 0 and s.backoff_ms > 0, 'one attempt')\n"
      "rage.sleep(0.15)\n"
      "ok, kind = p:query('SELECT 1', 0)\n"
      "assert(kind == 'db.connection')\n"
      "return p:stats().connect_failures\n");
  ASSERT_EQ(r, 2);
  teardown();
}

TEST(waiters_fifo_and_cancel) {
  if (setup()) return;
  int r = run_lua(
      "local p = pool{size = 1, checkout_timeout = 0.3}\n"
      "local lease = p:lease()\n"
      "assert(lease:acquire())\n"
      "local order = {}\n"
      "local hs = {}\n"
      "for i = 1, 3 do\n"
      "  hs[i] = rage.spawn(function()\n"
      "    local res, kind = p:query('SELECT ' .. i .. ' AS i', 0)\n"
      "    if res then order[#order + 1] = res:decode(false)[1].i end\n"
      "  end)\n"
      "end\n"
      "assert(p:stats().waiting == 3)\n"
      "hs[2]:cancel()\n"
      "assert(p:stats().waiting == 2, 'a cancelled waiter leaves the queue')\n"
      "assert(lease:release())\n"
      "hs[1]:wait(); hs[3]:wait()\n"
      "assert(order[1] == 1 and order[2] == 3, table.concat(order, ','))\n"
      "-- the checkout timeout\n"
      "assert(lease:acquire())\n"
      "local res, kind = p:query('SELECT 1', 0)\n"
      "assert(kind == 'db.pool_timeout', tostring(kind))\n"
      "assert(lease:release())\n"
      "local s = p:stats()\n"
      "return s.waiting * 100 + s.pool_timeouts * 10 + s.idle\n");
  ASSERT_EQ(r, 11);
  teardown();
}

TEST(dirty_connection_reset) {
  if (setup()) return;
  int r = run_lua(
      "local p = pool{size = 1}\n"
      "assert(p:query('BEGIN', 0))\n"                      /* per-statement lease left open */
      "local ok, kind = p:query('SAVEPOINT s', 0)\n"
      "assert(kind == 'db.transaction_state', 'not inside the old transaction')\n"
      "assert(p:query(\"SET application_name = 'dirty'\", 0))\n"
      "res = assert(p:query('SHOW application_name', 0))\n"
      "assert(res:decode(false)[1].application_name ~= 'dirty', 'settings reset')\n"
      "local lease = p:lease()\n"
      "assert(lease:acquire())\n"
      "assert(lease:query('BEGIN', 0))\n"
      "assert(lease:status() == 'transaction')\n"
      "assert(lease:release())\n"
      "local s = p:stats()\n"
      "assert(s.size == 1 and s.idle == 1, 'reused after reset')\n"
      "return s.resets\n");
  ASSERT_EQ(r, 3);
  teardown();
}

TEST(outside_a_fiber) {
  if (setup()) return;
  lua_State *L = rage_runtime_lua(rt);
  ASSERT(luaL_dostring(L, "local core = require('rage.core')\n"
                          "return core.pg_pool({'dbname'}, {'postgres://x@127.0.0.1:1/x'}):query('SELECT 1', 0)") != 0);
  ASSERT(strstr(lua_tostring(L, -1), "inside a fiber") != NULL);
  lua_pop(L, 1);
  teardown();
}

/* Many fibers on a pool of two connections: statements ride the connections' pipelines, and
 * each result reaches the fiber that sent it. */
TEST(pipeline_routes_results) {
  if (setup()) return;
  int r = run_lua(
      "local p = pool{size = 2, pipeline = 8}\n"
      "local hs = {}\n"
      "for i = 1, 40 do\n"
      "  hs[i] = rage.spawn(function()\n"
      "    local res, kind, msg = p:query('SELECT $1::int * 3 AS v, pg_sleep(0.01)', 1, tostring(i))\n"
      "    assert(res, msg)\n"
      "    return res:decode(false)[1].v\n"
      "  end)\n"
      "end\n"
      "for i = 1, 40 do assert(hs[i]:wait() == i * 3, 'result of fiber ' .. i) end\n"
      "local s = p:stats()\n"
      "assert(s.size == 2 and s.idle == 2 and s.waiting == 0 and s.closed == 0, 'connections kept')\n"
      "assert(s.statements == 40, s.statements)\n"
      "return s.pipelined > 0 and 1 or 0\n");
  ASSERT_EQ(r, 1);
  teardown();
}

/* One statement failing in a pipeline aborts only itself: each statement has its own Sync. */
TEST(pipeline_error_isolated) {
  if (setup()) return;
  int r = run_lua(
      "local p = pool{size = 1, pipeline = 16}\n"
      "local hs = {}\n"
      "for i = 1, 12 do\n"
      "  hs[i] = rage.spawn(function()\n"
      "    local res, kind, msg, fields = p:query('SELECT 60 / $1::int AS v', 1, tostring(i % 4))\n"
      "    if not res then return kind, fields.sqlstate end\n"
      "    return res:decode(false)[1].v\n"
      "  end)\n"
      "end\n"
      "for i = 1, 12 do\n"
      "  local v, state = hs[i]:wait()\n"
      "  if i % 4 == 0 then assert(v == 'db.data' and state == '22012', tostring(v))\n"
      "  else assert(v == 60 / (i % 4), 'fiber ' .. i .. ' got ' .. tostring(v)) end\n"
      "end\n"
      "local s = p:stats()\n"
      "assert(s.closed == 0 and s.idle == 1, 'the connection survives')\n"
      "return s.pipelined\n");
  ASSERT(r >= 8);
  teardown();
}

/* A fiber cancelled while its statement sits in a shared pipeline: its result is dropped, the
 * others get theirs, and the connection is kept (nothing is cancelled on the server). */
TEST(pipeline_cancel_discards) {
  if (setup()) return;
  int r = run_lua(
      "local p = pool{size = 1, pipeline = 8}\n"
      "assert(p:query('SELECT 1', 0))\n"
      "local a = rage.spawn(function() return p:query('SELECT pg_sleep(0.2), 1 AS a', 0) end)\n"
      "local b = rage.spawn(function() return p:query('SELECT $1::int AS b', 1, '2') end)\n"
      "local c = rage.spawn(function() return p:query('SELECT $1::int AS c', 1, '3') end)\n"
      "assert(p:stats().pipelined == 2, 'b and c joined a')\n"
      "b:cancel()\n"
      "local ok, res = pcall(b.wait, b)\n"
      "assert(ok and res == nil, 'the cancelled call returned nothing')\n"
      "assert(assert(a:wait()):decode(false)[1].a == 1)\n"
      "assert(assert(c:wait()):decode(false)[1].c == 3)\n"
      "local s = p:stats()\n"
      "assert(s.closed == 0 and s.idle == 1, 'the connection is kept')\n"
      "-- cancelling every statement in flight cancels on the server and closes it\n"
      "local d = rage.spawn(function() return p:query('SELECT pg_sleep(30), 4', 0) end)\n"
      "local e = rage.spawn(function() return p:query('SELECT pg_sleep(30), 5', 0) end)\n"
      "assert(p:stats().pipelined == 3)\n"
      "d:cancel()\n"
      "assert(p:stats().size == 1, 'e still waits on it')\n"
      "e:cancel()\n"
      "s = p:stats()\n"
      "assert(s.size == 0 and s.closed == 1, 'closed once no one waits')\n"
      "for i = 1, 200 do\n"
      "  local res = assert(p:query(\"SELECT count(*) AS n FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(30)%' AND state = 'active'\", 0))\n"
      "  if res:decode(false)[1].n == 0 then return i end\n"
      "  rage.sleep(0.02)\n"
      "end\n"
      "return 0\n");
  ASSERT(r > 0);
  teardown();
}

/* A statement that times out while sharing its connection: its fiber gets db.timeout at once,
 * nothing is cancelled on the server, and the statement behind it completes. The first
 * statement waits for an advisory lock that a transaction holds until told to let go. */
TEST(pipeline_timeout_spares_others) {
  if (setup()) return;
  int r = run_lua(
      "local p = pool{size = 2, pipeline = 8, statement_timeout = 1}\n"
      "local lease = p:lease()\n"
      "assert(lease:acquire())\n"
      "assert(lease:query('BEGIN', 0))\n"
      "assert(lease:query('SELECT pg_advisory_xact_lock(42)', 0))\n"
      "local a = rage.spawn(function() return p:query('SELECT pg_advisory_xact_lock($1::bigint), 1 AS a', 1, '42') end)\n"
      "rage.sleep(0.5)\n"
      "local b = rage.spawn(function() return p:query('SELECT $1::int AS b', 1, '7') end)\n"
      "assert(p:stats().pipelined == 1, 'b joined a')\n"
      "local res, kind = a:wait()\n"
      "assert(res == nil and kind == 'db.timeout', tostring(kind))\n"
      "assert(lease:query('ROLLBACK', 0))\n"
      "res = assert(b:wait())\n"
      "assert(res:decode(false)[1].b == 7)\n"
      "assert(lease:release())\n"
      "local s = p:stats()\n"
      "assert(s.timeouts == 1 and s.closed == 0 and s.idle == 2, 'the shared connection is kept')\n"
      "return 1\n");
  ASSERT_EQ(r, 1);
  teardown();
}

/* A connection pinned to a transaction never takes other fibers' statements; nor does a busy
 * connection running something that is not a standalone query; and statements queue behind a
 * waiting transaction instead of overtaking it. */
TEST(pipeline_never_shares_transactions) {
  if (setup()) return;
  int r = run_lua(
      "local p = pool{size = 1, pipeline = 8, checkout_timeout = 10}\n"
      "assert(p:query('SELECT 1', 0))\n"
      "local t = rage.spawn(function()\n"
      "  local lease = p:lease()\n"
      "  assert(lease:acquire())\n"
      "  assert(lease:query('BEGIN', 0))\n"
      "  assert(lease:query('SELECT pg_sleep(0.1)', 0))\n"
      "  assert(lease:query('ROLLBACK', 0))\n"
      "  return lease:release()\n"
      "end)\n"
      "local q = rage.spawn(function() return p:query('SELECT 1 AS one', 0) end)\n"
      "assert(p:stats().waiting == 1 and p:stats().pipelined == 0, 'waits for the transaction')\n"
      "assert(t:wait())\n"
      "assert(q:wait())\n"
      "-- a pooled statement that is not a standalone query runs alone\n"
      "local s1 = rage.spawn(function() return p:query(\"SELECT pg_sleep(0.1)\", 0) end)\n"
      "local s2 = rage.spawn(function() return p:script('SELECT 2') end)\n"
      "local s3 = rage.spawn(function() return p:query('SELECT 3', 0) end)\n"
      "assert(p:stats().waiting == 2, 's2 waits and s3 does not overtake it')\n"
      "assert(s1:wait()); assert(s2:wait()); assert(s3:wait())\n"
      "local i1 = rage.spawn(function() return p:query('SELECT 1 AS a INTO TEMP t_into FROM pg_sleep(0.05)', 0) end)\n"
      "local i2 = rage.spawn(function() return p:query('SELECT 5', 0) end)\n"
      "assert(p:stats().waiting == 1, 'nothing joins a SELECT INTO')\n"
      "assert(i1:wait()); assert(i2:wait())\n"
      "local x1 = rage.spawn(function() return p:query(\"SET application_name = 'x'\", 0) end)\n"
      "local x2 = rage.spawn(function() return p:query('SELECT 4', 0) end)\n"
      "assert(p:stats().waiting == 1, 'nothing joins a SET')\n"
      "assert(x1:wait()); assert(x2:wait())\n"
      "local s = p:stats()\n"
      "return s.pipelined * 10 + s.waiting\n");
  ASSERT_EQ(r, 0);
  teardown();
}

/* The server ends a connection with statements of several fibers in flight: each fiber gets
 * db.connection, and the pool opens a new connection for the next statement. */
TEST(pipeline_connection_killed) {
  if (setup()) return;
  int r = run_lua(
      "local p = pool{size = 1, pipeline = 8}\n"
      "local killer = pool{size = 1}\n"
      "local pid = assert(p:query('SELECT pg_backend_pid() AS pid', 0)):decode(false)[1].pid\n"
      "local hs = {}\n"
      "hs[1] = rage.spawn(function() return p:query('SELECT pg_sleep(30), 0', 0) end)\n"
      "for i = 2, 5 do\n"
      "  hs[i] = rage.spawn(function() return p:query('SELECT $1::int AS v', 1, tostring(i)) end)\n"
      "end\n"
      "assert(p:stats().pipelined == 4)\n"
      "assert(killer:query('SELECT pg_terminate_backend($1::int)', 1, tostring(pid)))\n"
      "for i = 1, 5 do\n"
      "  local res, kind, msg, fields = hs[i]:wait()\n"
      "  assert(res == nil and kind == 'db.connection' and fields.status == 503, 'fiber ' .. i .. ': ' .. tostring(kind))\n"
      "end\n"
      "local s = p:stats()\n"
      "assert(s.size == 0 and s.closed == 1, 'the connection is gone')\n"
      "local res = assert(p:query('SELECT $1::int AS v', 1, '9'))\n"
      "assert(res:decode(false)[1].v == 9)\n"
      "return p:stats().opened\n");
  ASSERT_EQ(r, 2);
  teardown();
}

/* A cached statement whose result type changed (ALTER TABLE) while several fibers execute it
 * in one pipeline: each of them fails once with the retry mark, and running it again works. */
TEST(pipeline_plan_change) {
  if (setup()) return;
  int r = run_lua(
      "local p = pool{size = 1, pipeline = 8}\n"
      "assert(p:script('DROP TABLE IF EXISTS pc; CREATE TABLE pc (a int); INSERT INTO pc VALUES (1)'))\n"
      "local sql = 'SELECT * FROM pc WHERE a = $1'\n"
      "assert(p:query(sql, 1, '1'))\n"
      "assert(p:query('ALTER TABLE pc ADD COLUMN b int DEFAULT 5', 0))\n"
      "local hs, retried = {}, 0\n"
      "for i = 1, 6 do\n"
      "  hs[i] = rage.spawn(function()\n"
      "    local res, kind, msg, fields = p:query(sql, 1, '1')\n"
      "    if not res and fields.retry then\n"
      "      retried = retried + 1\n"
      "      res, kind, msg = p:query(sql, 1, '1')\n"
      "    end\n"
      "    assert(res, msg)\n"
      "    return res:decode(false)[1].b\n"
      "  end)\n"
      "end\n"
      "for i = 1, 6 do assert(hs[i]:wait() == 5, 'fiber ' .. i) end\n"
      "local s = p:stats()\n"
      "assert(s.closed == 0 and s.pipelined >= 5, 'one connection, pipelined')\n"
      "return retried\n");
  ASSERT_EQ(r, 6);
  teardown();
}

/* A host name is looked up on the loop's thread pool, not by libpq's blocking getaddrinfo:
 * "localhost" (which may give ::1 before 127.0.0.1, where the server listens) connects, and a
 * name that does not resolve fails with db.connection. */
TEST(host_name_resolved_on_the_loop) {
  if (setup()) return;
  char *at = strstr(url, "@127.0.0.1:");
  if (at == NULL) {
    printf("skipped: DATABASE_URL does not name 127.0.0.1\n");
    teardown();
    return;
  }
  char local[1100];
  snprintf(local, sizeof(local), "%.*s@localhost:%s", (int)(at - url), url, at + strlen("@127.0.0.1:"));
  setenv("RAGE_TEST_LOCAL_URL", local, 1);
  int r = run_lua(
      "local p = core.pg_pool({'dbname'}, {os.getenv('RAGE_TEST_LOCAL_URL')})\n"
      "local res, kind, msg = p:query('SELECT 1 AS one', 0)\n"
      "assert(res, msg)\n"
      "assert(res:decode(false)[1].one == 1)\n"
      "assert(p:stats().resolved == 1, 'looked up by the pool')\n"
      "local bad = core.pg_pool({'dbname'}, {'postgres://x@rage-no-such-host.invalid:5432/x'}, {connect_timeout = 10})\n"
      "local ok, kind2, msg2 = bad:query('SELECT 1', 0)\n"
      "assert(ok == nil and kind2 == 'db.connection', tostring(kind2))\n"
      "local ip = core.pg_pool({'dbname'}, {URL})\n"
      "assert(ip:query('SELECT 1', 0))\n"
      "return ip:stats().resolved * 10 + p:stats().resolved\n");
  ASSERT_EQ(r, 1);
  teardown();
}

int main(int argc, char **argv) {
  static const test_entry_t tests[] = {
      TEST_ENTRY(query_and_pool_at_close),
      TEST_ENTRY(cancel_mid_statement),
      TEST_ENTRY(statement_timeout),
      TEST_ENTRY(refused_connection_backoff),
      TEST_ENTRY(waiters_fifo_and_cancel),
      TEST_ENTRY(dirty_connection_reset),
      TEST_ENTRY(outside_a_fiber),
      TEST_ENTRY(pipeline_routes_results),
      TEST_ENTRY(pipeline_error_isolated),
      TEST_ENTRY(pipeline_cancel_discards),
      TEST_ENTRY(pipeline_timeout_spares_others),
      TEST_ENTRY(pipeline_never_shares_transactions),
      TEST_ENTRY(pipeline_connection_killed),
      TEST_ENTRY(pipeline_plan_change),
      TEST_ENTRY(host_name_resolved_on_the_loop),
      {NULL, NULL},
  };
  return test_main(argc, argv, tests);
}
