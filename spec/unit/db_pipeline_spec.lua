-- Specs for pipelining in rage.db (core/src/pg.c, pg_pool.c) and the per-request lease
-- (rage.db.with_connection), against a real PostgreSQL: statements of different fibers riding
-- one connection, each result routed to its fiber, failures, cancellations, a connection killed
-- under a pipeline, cached plans invalidated under one, and transactions never shared.
-- Skipped, with the reason, only when the PostgreSQL server binaries are not installed.

local pg = require("spec.support.pg")
local db = require("rage.db")

if not pg.available() then
  describe("rage.db pipelining", function()
    pending("skipped: " .. tostring(pg.why()))
  end)
  return
end

local function failure(f, ...)
  local ok, err = pcall(f, ...)
  assert(not ok, "expected an error")
  return err
end

-- Spawns n fibers running f(i); returns their handles.
local function spawn_n(n, f)
  local hs = {}
  for i = 1, n do hs[i] = rage.spawn(function() return f(i) end) end
  return hs
end

describe("rage.db pipelining", function()
  local srv

  lazy_setup(function()
    srv = pg.start()
    db.configure(srv.url)
    db.script([[
      DROP TABLE IF EXISTS pl_items, pl_alter;
      CREATE TABLE pl_items (id int PRIMARY KEY, v int);
      CREATE TABLE pl_alter (a int);
      INSERT INTO pl_alter VALUES (1);
    ]])
  end)

  lazy_teardown(function()
    db.default():close()
    if srv then srv:stop() end
  end)

  before_each(function()
    db.script("TRUNCATE pl_items")
  end)

  it("routes each result to the fiber that sent the statement", function()
    local d = db.new{url = srv.url, pool = 2, pipeline = 8}
    d:query("SELECT 1")
    local hs = spawn_n(60, function(i)
      return d:query_one("SELECT $1::int AS v, $2::text AS s", i, "fiber " .. i)
    end)
    for i = 1, 60 do
      local row = hs[i]:wait()
      assert.same({v = i, s = "fiber " .. i}, row)
    end
    local s = d:stats()
    assert.is_true(s.pipelined > 0)
    assert.same({2, 2, 0, 0}, {s.size, s.idle, s.waiting, s.closed})
    d:close()
  end)

  it("keeps a failing statement from touching its neighbours", function()
    local d = db.new{url = srv.url, pool = 1, pipeline = 16}
    d:exec("INSERT INTO pl_items VALUES (5, 0)")
    local hs = spawn_n(10, function(i)
      return pcall(d.exec, d, "INSERT INTO pl_items VALUES ($1, $2)", i, i * 10)
    end)
    for i = 1, 10 do
      local ok, res = hs[i]:wait()
      if i == 5 then
        assert.is_false(ok)
        assert.equal("db.unique_violation", res.kind)
      else
        assert.is_true(ok, tostring(res))
        assert.equal(1, res)
      end
    end
    assert.equal(10, d:query_one("SELECT count(*)::int AS n FROM pl_items").n)
    assert.equal(0, d:query_one("SELECT v FROM pl_items WHERE id = 5").v)
    assert.is_true(d:stats().pipelined >= 8)
    assert.equal(0, d:stats().closed)
    d:close()
  end)

  it("drops the result of a fiber cancelled in a pipeline and serves the others", function()
    local d = db.new{url = srv.url, pool = 1, pipeline = 8}
    d:query("SELECT 1")
    local first = rage.spawn(function() return d:query_one("SELECT pg_sleep(0.2), 1 AS a").a end)
    local gone = rage.spawn(function() return d:query_one("SELECT 2 AS b").b end)
    local last = rage.spawn(function() return d:query_one("SELECT 3 AS c").c end)
    assert.equal(2, d:stats().pipelined)
    gone:cancel()
    assert.equal(1, first:wait())
    assert.equal(3, last:wait())
    assert.same({1, 0}, {d:stats().idle, d:stats().closed})
    -- rage.timeout around a shared statement: the same
    local other = rage.spawn(function() return d:query_one("SELECT pg_sleep(0.3), 4 AS d").d end)
    local victim = rage.spawn(function()
      return pcall(rage.timeout, 0.05, function() return d:query("SELECT 5") end)
    end)
    local after = rage.spawn(function() return d:query_one("SELECT 6 AS f").f end)
    local ok, err = victim:wait()
    assert.is_false(ok)
    assert.equal("timeout", err.kind)
    assert.equal(4, other:wait())
    assert.equal(6, after:wait())
    assert.same({1, 0}, {d:stats().idle, d:stats().closed})
    -- when only abandoned statements are left in flight, the connection is closed
    other = rage.spawn(function() return d:query_one("SELECT pg_sleep(0.3), 7 AS g").g end)
    err = failure(rage.timeout, 0.05, function() d:query("SELECT 8") end)
    assert.equal(7, other:wait())
    assert.same({0, 1}, {d:stats().size, d:stats().closed})
    d:close()
  end)

  it("never lets another fiber's statement into a transaction", function()
    local d = db.new{url = srv.url, pool = 1, pipeline = 8}
    d:query("SELECT 1")
    local seen
    failure(d.transaction, d, function()
      d:exec("INSERT INTO pl_items VALUES (1, 1)")
      local h = rage.spawn(function() return d:query_one("SELECT count(*)::int AS n FROM pl_items").n end)
      rage.sleep(0.05)
      assert.equal(1, d:stats().waiting)
      rage.spawn(function() seen = h:wait() end)
      error("roll it back")
    end)
    rage.sleep(0.05)
    assert.equal(0, seen)
    assert.equal(0, d:stats().pipelined)
    d:close()
  end)

  it("fails every statement of a killed connection with db.connection, then recovers", function()
    local d = db.new{url = srv.url, pool = 1, pipeline = 8}
    local pid = d:query_one("SELECT pg_backend_pid() AS pid").pid
    local hs = spawn_n(5, function(i)
      if i == 1 then return pcall(d.query_one, d, "SELECT pg_sleep(30)") end
      return pcall(d.query_one, d, "SELECT $1::int AS v", i)
    end)
    assert.equal(4, d:stats().pipelined)
    db.query("SELECT pg_terminate_backend($1)", pid)
    for i = 1, 5 do
      local ok, err = hs[i]:wait()
      assert.is_false(ok)
      assert.equal("db.connection", err.kind)
      assert.equal(503, err.status)
    end
    assert.equal(7, d:query_one("SELECT 7 AS v").v)
    assert.same({1, 2}, {d:stats().closed, d:stats().opened})
    d:close()
  end)

  it("runs statements again when ALTER TABLE changes a cached plan under a pipeline", function()
    local d = db.new{url = srv.url, pool = 1, pipeline = 8}
    local sql = "SELECT * FROM pl_alter WHERE a = $1"
    d:query(sql, 1)
    d:exec("ALTER TABLE pl_alter ADD COLUMN b int DEFAULT 9")
    local hs = spawn_n(6, function() return d:query_one(sql, 1) end)
    for i = 1, 6 do assert.same({a = 1, b = 9}, hs[i]:wait()) end
    assert.is_true(d:stats().pipelined >= 5)
    assert.equal(0, d:stats().closed)
    d:close()
  end)

  it("is off with pipeline = 1", function()
    local d = db.new{url = srv.url, pool = 1, pipeline = 1}
    d:query("SELECT 1")
    local hs = spawn_n(10, function(i) return d:query_one("SELECT $1::int AS v", i).v end)
    for i = 1, 10 do assert.equal(i, hs[i]:wait()) end
    assert.equal(0, d:stats().pipelined)
    assert.equal(1, d:stats().pipeline)
    d:close()
    local ok, err = pcall(db.new, {url = srv.url, pipeline = 0})
    assert.is_false(ok)
    assert.matches("pipeline must be", err)
  end)
end)

describe("rage.db.with_connection", function()
  local srv

  lazy_setup(function()
    srv = pg.start()
    db.configure(srv.url)
    db.script("DROP TABLE IF EXISTS wc_items; CREATE TABLE wc_items (id int PRIMARY KEY)")
  end)

  lazy_teardown(function()
    db.default():close()
    if srv then srv:stop() end
  end)

  it("holds one connection for the whole function, outside a transaction", function()
    local d = db.new{url = srv.url, pool = 2}
    local pids = d:with_connection(function(x)
      assert.equal(d, x)
      assert.is_false(d:in_transaction())
      local t = {}
      for i = 1, 3 do t[i] = d:query_one("SELECT pg_backend_pid() AS pid").pid end
      assert.equal(1, d:stats().busy)
      return t
    end)
    assert.equal(pids[1], pids[2])
    assert.equal(pids[1], pids[3])
    assert.equal(d:stats().size, d:stats().idle)
    d:close()
  end)

  it("runs a transaction inside on the same connection, and nests", function()
    local d = db.new{url = srv.url, pool = 1}
    d:with_connection(function()
      local pid = d:query_one("SELECT pg_backend_pid() AS pid").pid
      d:transaction(function()
        assert.is_true(d:in_transaction())
        assert.equal(pid, d:query_one("SELECT pg_backend_pid() AS pid").pid)
        d:exec("INSERT INTO wc_items VALUES (1)")
      end)
      assert.is_false(d:in_transaction())
      failure(d.transaction, d, function()
        d:exec("INSERT INTO wc_items VALUES (2)")
        error("no")
      end)
      d:with_connection(function()
        assert.equal(pid, d:query_one("SELECT pg_backend_pid() AS pid").pid)
      end)
    end)
    assert.same({{id = 1}}, d:query("SELECT id FROM wc_items ORDER BY id"))
    d:close()
  end)

  it("gives the connection back when the function raises", function()
    local d = db.new{url = srv.url, pool = 1}
    local err = failure(d.with_connection, d, function()
      d:exec("SET application_name = 'held'")
      error({kind = "app.oops"})
    end)
    assert.equal("app.oops", err.kind)
    local s = d:stats()
    assert.same({1, 1}, {s.size, s.idle})
    assert.are_not.equal("held", d:query_one("SHOW application_name").application_name)
    d:close()
  end)

  it("is a module function of rage.db", function()
    assert.equal(3, rage.db.with_connection(function() return rage.db.query_one("SELECT 3 AS n").n end))
  end)
end)
