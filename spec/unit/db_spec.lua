-- Specs for lua/rage/db.lua (and core/src/pg.c, pg_pool.c) against a real PostgreSQL: a
-- throwaway server started by spec/support/pg.lua, or $DATABASE_URL. Types both ways, every
-- error kind that can be provoked, the pool under exhaustion, transactions and savepoints,
-- dirty connections, injection attempts, and the server stopped and started underneath.
-- Skipped, with the reason, only when the PostgreSQL server binaries are not installed.

local pg = require("spec.support.pg")
local db = require("rage.db")
local json = require("rage.json")
local errors = require("rage.errors")

if not pg.available() then
  describe("rage.db", function()
    pending("skipped: " .. tostring(pg.why()))
  end)
  return
end

-- The error raised by f(...), which must fail.
local function failure(f, ...)
  local ok, err = pcall(f, ...)
  assert(not ok, "expected an error")
  return err
end

local function elapsed(f)
  local t0 = rage.clock()
  f()
  return rage.clock() - t0
end

describe("rage.db", function()
  local srv

  lazy_setup(function()
    srv = pg.start()
    db.configure(srv.url)
    db.script([[
      DROP TABLE IF EXISTS child, parent, items, ser, locks;
      CREATE TABLE parent (id int PRIMARY KEY, name text UNIQUE);
      CREATE TABLE child (id serial PRIMARY KEY, parent_id int REFERENCES parent(id),
                          n int NOT NULL DEFAULT 0 CHECK (n >= 0));
      CREATE TABLE items (id serial PRIMARY KEY, name text, data jsonb);
      CREATE TABLE ser (v int);
      CREATE TABLE locks (id int PRIMARY KEY);
      INSERT INTO locks VALUES (1), (2);
    ]])
  end)

  lazy_teardown(function()
    db.default():close()
    if srv then srv:stop() end
  end)

  before_each(function()
    db.script("TRUNCATE child, parent, items, ser")
  end)

  it("is rage.db", function()
    assert.equal(db, rage.db)
  end)

  describe("results", function()
    it("are arrays of rows keyed by column name, with columns and affected", function()
      local rows = db.query("SELECT 1 AS a, 'x' AS b UNION ALL SELECT 2, 'y' ORDER BY 1")
      assert.same({{a = 1, b = "x"}, {a = 2, b = "y"}}, {rows[1], rows[2]})
      assert.equal(2, #rows)
      assert.same({"a", "b"}, rows.columns)
      assert.equal(2, rows.affected)
      local text = json.encode(rows)
      assert.equal("[", text:sub(1, 1))
      assert.same({{a = 1, b = "x"}, {a = 2, b = "y"}}, json.decode(text))
    end)

    it("encode as [] when empty", function()
      local rows = db.query("SELECT 1 AS a WHERE false")
      assert.equal(0, #rows)
      assert.equal("[]", json.encode(rows))
      assert.equal('{"todos":[]}', json.encode({todos = rows}))
      assert.same({"a"}, rows.columns)
    end)

    it("give query_one's first row or nil, and exec's affected count", function()
      assert.equal(0, db.exec("INSERT INTO parent VALUES (1, 'a'), (2, 'b')") - 2)
      assert.same({id = 2, name = "b"}, db.query_one("SELECT * FROM parent WHERE id = $1", 2))
      assert.is_nil(db.query_one("SELECT * FROM parent WHERE id = $1", 3))
      assert.equal(2, db.exec("UPDATE parent SET name = name || '!'"))
      assert.equal(0, db.exec("CREATE TEMP TABLE IF NOT EXISTS scratch (x int)"))
    end)

    it("decode every common type", function()
      local r = db.query_one([[
        SELECT 1::int2 AS i2, 2::int4 AS i4, 3::int8 AS i8, 9007199254740993::int8 AS big,
               -9007199254740993::int8 AS nbig, 9007199254740992::int8 AS safe, 1.5::float4 AS f4,
               0.1::float8 AS f8, 'NaN'::float8 AS nan, '-Infinity'::float8 AS ninf,
               12.345::numeric AS num, true AS t, false AS f, 'hé'::text AS txt, 'v'::varchar AS vc,
               'n'::name AS nm, 'c'::char(3) AS ch, 42::oid AS o,
               '{"a":[1,2,{"b":null}]}'::json AS j, '{"x": 1}'::jsonb AS jb, '[]'::jsonb AS jempty,
               '\xdeadbeef00'::bytea AS by, ''::bytea AS by0,
               'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid AS u,
               '2024-02-29'::date AS d, '2024-02-29 13:14:15.5'::timestamp AS ts,
               '2024-02-29 13:14:15.5+02'::timestamptz AS tstz, '2024-02-29 13:14:15+05:30'::timestamptz AS tstz2,
               'infinity'::timestamp AS tsinf, '13:14:15'::time AS tm, '1 day 02:00:00'::interval AS iv,
               NULL::int AS nul, NULL::jsonb AS jnul]])
      assert.same({i2 = 1, i4 = 2, i8 = 3}, {i2 = r.i2, i4 = r.i4, i8 = r.i8})
      assert.equal("9007199254740993", r.big)
      assert.equal("-9007199254740993", r.nbig)
      assert.equal(9007199254740992, r.safe)
      assert.equal(1.5, r.f4)
      assert.equal(0.1, r.f8)
      assert.is_true(r.nan ~= r.nan)
      assert.equal(-math.huge, r.ninf)
      assert.equal("12.345", r.num)
      assert.is_true(r.t)
      assert.is_false(r.f)
      assert.equal("hé", r.txt)
      assert.equal("v", r.vc)
      assert.equal("n", r.nm)
      assert.equal("c  ", r.ch)
      assert.equal(42, r.o)
      assert.same({a = {1, 2, {b = rage.null}}}, r.j)
      assert.same({x = 1}, r.jb)
      assert.same({}, r.jempty)
      assert.equal("\222\173\190\239\0", r.by)
      assert.equal("", r.by0)
      assert.equal("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", r.u)
      assert.equal("2024-02-29", r.d)
      assert.equal("2024-02-29T13:14:15.5", r.ts)
      assert.equal("2024-02-29T11:14:15.5+00:00", r.tstz)
      assert.equal("2024-02-29T07:44:15+00:00", r.tstz2)
      assert.equal("infinity", r.tsinf)
      assert.equal("13:14:15", r.tm)
      assert.equal("1 day 02:00:00", r.iv)
      assert.equal(rage.null, r.nul)
      assert.equal(rage.null, r.jnul)
    end)

    it("decode arrays into Lua arrays, NULL elements as rage.null", function()
      local r = db.query_one([=[
        SELECT ARRAY[1,2,NULL]::int[] AS ai, ARRAY['a','b c','"q"','NULL',NULL,'x\y','{}']::text[] AS at,
               ARRAY[[1,2],[3,4]] AS a2, '{}'::int[] AS ae, ARRAY['{"k":1}'::jsonb] AS aj,
               ARRAY[true,false] AS ab, ARRAY['2024-01-01'::date] AS ad, '[0:1]={7,8}'::int[] AS alb,
               ARRAY[1.5,2.25]::float8[] AS af, ARRAY[10.5]::numeric[] AS an,
               ARRAY['\x0102'::bytea] AS aby, ARRAY['2024-01-01 00:00:00+00'::timestamptz] AS ats,
               ARRAY['a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid] AS au, ARRAY[9007199254740993]::int8[] AS abig]=])
      assert.same({1, 2, rage.null}, r.ai)
      assert.same({"a", "b c", '"q"', "NULL", rage.null, "x\\y", "{}"}, r.at)
      assert.same({{1, 2}, {3, 4}}, r.a2)
      assert.equal(0, #r.ae)
      assert.equal("[]", json.encode(r.ae))
      assert.same({{k = 1}}, r.aj)
      assert.same({true, false}, r.ab)
      assert.same({"2024-01-01"}, r.ad)
      assert.same({7, 8}, r.alb)
      assert.same({1.5, 2.25}, r.af)
      assert.same({"10.5"}, r.an)
      assert.same({"\1\2"}, r.aby)
      assert.same({"2024-01-01T00:00:00+00:00"}, r.ats)
      assert.same({"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"}, r.au)
      assert.same({"9007199254740993"}, r.abig)
    end)
  end)

  describe("parameters", function()
    it("encode Lua values and read back the same", function()
      local r = db.query_one([[SELECT $1::int8 AS a, $2::float8 AS b, $3::bool AS c, $4::jsonb AS d,
                                      $5::bytea AS e, $6::text AS f, $7::int[] AS g, $8::text AS h,
                                      $9::text AS i, $10::float8 AS j, $11::int AS k, $12::text[] AS l]],
        1e15, 0.1, true, {x = {1, 2}, y = "z"}, db.bytea("\0\1\255"), nil, db.array({1, 2, 3}), "",
        rage.null, 1 / 3, -7, db.array({"a,b", 'q"', "back\\slash", rage.null}))
      assert.equal(1e15, r.a)
      assert.equal(0.1, r.b)
      assert.is_true(r.c)
      assert.same({x = {1, 2}, y = "z"}, r.d)
      assert.equal("\0\1\255", r.e)
      assert.equal(rage.null, r.f)
      assert.same({1, 2, 3}, r.g)
      assert.equal("", r.h)
      assert.equal(rage.null, r.i)
      assert.equal(1 / 3, r.j)
      assert.equal(-7, r.k)
      assert.same({"a,b", 'q"', "back\\slash", rage.null}, r.l)
    end)

    it("write integers without an exponent and booleans as words", function()
      local r = db.query_one("SELECT $1::text AS a, $2::text AS b, $3::text AS c", 1e15, 2^60, false)
      assert.equal("1000000000000000", r.a)
      assert.equal("1152921504606846976", r.b)
      assert.equal("false", r.c)
    end)

    it("accept many parameters", function()
      local sql, args = {}, {}
      for i = 1, 40 do
        sql[i] = "$" .. i .. "::int"
        args[i] = i
      end
      local r = db.query_one("SELECT " .. table.concat(sql, " + ") .. " AS total", unpack(args))
      assert.equal(820, r.total)
    end)

    it("stay data: injection attempts are stored as text", function()
      local evil = "x'); DROP TABLE parent; --"
      db.exec("INSERT INTO parent (id, name) VALUES ($1, $2)", 1, evil)
      assert.equal(evil, db.query_one("SELECT name FROM parent WHERE id = $1", 1).name)
      assert.equal(1, #db.query("SELECT * FROM parent WHERE name = $1", evil))
      assert.equal(0, #db.query("SELECT * FROM parent WHERE name = $1", "' OR '1'='1"))
      local err = failure(db.query, "SELECT * FROM parent WHERE id = $1", "1 OR 1=1")
      assert.equal("db.data", err.kind)
      assert.equal("22P02", err.sqlstate)
      assert.equal("$1", db.query_one("SELECT $1::text AS v", "$1").v)
      -- Parameters carry one statement only: no second statement can ride along.
      err = failure(db.query, "SELECT $1::int; DROP TABLE parent", 1)
      assert.equal("db.syntax", err.kind)
      assert.equal(1, #db.query("SELECT * FROM parent"))
    end)

    it("reject values that have no SQL form, at the caller's line", function()
      local ok, err = pcall(db.query, "SELECT $1", function() end)
      assert.is_false(ok)
      assert.matches("parameter %$1 is a function", err)
      ok, err = pcall(function() db.query("SELECT $1::text", "a\0b") end)
      assert.is_false(ok)
      assert.matches("NUL", tostring(err))
    end)
  end)

  describe("errors", function()
    before_each(function()
      db.exec("INSERT INTO parent VALUES (1, 'one')")
    end)

    local function check(err, kind, sqlstate)
      assert.equal(kind, err.kind)
      assert.equal(sqlstate, err.sqlstate)
      assert.is_string(err.message)
      assert.is_true(errors.is(err, kind))
      assert.is_true(errors.is(err, "db"))
    end

    it("unique_violation, with detail and constraint", function()
      local err = failure(db.exec, "INSERT INTO parent VALUES (1, 'again')")
      check(err, "db.unique_violation", "23505")
      assert.matches("duplicate key", err.message)
      assert.equal("Key (id)=(1) already exists.", err.detail)
      assert.equal("parent_pkey", err.constraint)
      assert.equal("parent", err.table)
      assert.equal("db.unique_violation: " .. err.message, tostring(err))
    end)

    it("foreign_key_violation", function()
      check(failure(db.exec, "INSERT INTO child (parent_id) VALUES (99)"), "db.foreign_key_violation", "23503")
    end)

    it("not_null_violation", function()
      local err = failure(db.exec, "INSERT INTO child (parent_id, n) VALUES (1, $1)", nil)
      check(err, "db.not_null_violation", "23502")
      assert.equal("n", err.column)
    end)

    it("check_violation", function()
      check(failure(db.exec, "INSERT INTO child (parent_id, n) VALUES (1, -1)"), "db.check_violation", "23514")
    end)

    it("syntax, for syntax errors and the rest of class 42", function()
      local err = failure(db.query, "SELEC 1")
      check(err, "db.syntax", "42601")
      assert.equal(1, err.position)
      check(failure(db.query, "SELECT * FROM no_such_table"), "db.syntax", "42P01")
      check(failure(db.query, "SELECT no_such_column FROM parent"), "db.syntax", "42703")
    end)

    it("timeout, for the statement timeout (the statement is cancelled on the server)", function()
      local d = db.new{url = srv.url, statement_timeout = 0.2}
      local err
      local dt = elapsed(function() err = failure(d.query, d, "SELECT pg_sleep(5)") end)
      assert.equal("db.timeout", err.kind)
      assert.equal(503, err.status)
      assert.is_true(dt < 1, "took " .. dt)
      assert.equal(1, d:stats().timeouts)
      assert.same({x = 1}, d:query_one("SELECT 1 AS x"))
      d:close()
    end)

    it("timeout, for a statement the server cancels (57014)", function()
      local err = failure(db.transaction, function()
        db.exec("SET LOCAL statement_timeout = 50")
        db.query("SELECT pg_sleep(2)")
      end)
      check(err, "db.timeout", "57014")
    end)

    it("connection, when the server cannot be reached (503)", function()
      local d = db.new{url = "postgres://nobody@127.0.0.1:1/none"}
      local err = failure(d.query, d, "SELECT 1")
      assert.equal("db.connection", err.kind)
      assert.equal(503, err.status)
      assert.is_true(errors.is(err, "db"))
      d:close()
    end)

    it("connection, when no database is configured", function()
      local d = db.new{}
      local err = failure(d.query, d, "SELECT 1")
      assert.equal("db.connection", err.kind)
      assert.matches("DATABASE_URL", err.message)
    end)

    it("serialization_failure, between two serializable transactions", function()
      local function writer(v)
        return function()
          local ok, err = pcall(db.transaction, function()
            db.query("SELECT sum(v) FROM ser")
            rage.sleep(0.05)
            db.exec("INSERT INTO ser VALUES ($1)", v)
          end, {isolation = "serializable"})
          return ok or err
        end
      end
      local a, b = rage.await(writer(1), writer(2))
      local err = a == true and b or a
      assert.is_true(a == true or b == true, "one of them commits")
      assert.equal("table", type(err))
      check(err, "db.serialization_failure", "40001")
    end)

    it("deadlock, between two transactions locking rows in opposite orders", function()
      local function locker(first, second)
        return function()
          local ok, err = pcall(db.transaction, function()
            db.exec("SET LOCAL deadlock_timeout = '50ms'")
            db.query("SELECT * FROM locks WHERE id = $1 FOR UPDATE", first)
            rage.sleep(0.1)
            db.query("SELECT * FROM locks WHERE id = $1 FOR UPDATE", second)
          end)
          return ok or err
        end
      end
      local a, b = rage.await(locker(1, 2), locker(2, 1))
      assert.is_true(a == true or b == true, "one of them commits")
      check(a == true and b or a, "db.deadlock", "40P01")
    end)

    it("data, for values the column type refuses", function()
      check(failure(db.query, "SELECT 1 / 0"), "db.data", "22012")
    end)
  end)

  describe("transactions", function()
    it("commit and return the function's results", function()
      local a, b = db.transaction(function(d)
        assert.equal(db.default(), d)
        assert.is_true(db.in_transaction())
        db.exec("INSERT INTO parent VALUES (1, 'one')")
        return "a", "b"
      end)
      assert.same({"a", "b"}, {a, b})
      assert.is_false(db.in_transaction())
      assert.equal(1, #db.query("SELECT * FROM parent"))
    end)

    it("roll back on error and raise it again", function()
      local err = failure(db.transaction, function()
        db.exec("INSERT INTO parent VALUES (1, 'one')")
        rage.error("app.failure", "boom")
      end)
      assert.equal("app.failure", err.kind)
      assert.equal(0, #db.query("SELECT * FROM parent"))
      err = failure(db.transaction, function()
        db.exec("INSERT INTO parent VALUES (1, 'one')")
        db.exec("INSERT INTO parent VALUES (1, 'dup')")
      end)
      assert.equal("db.unique_violation", err.kind)
      assert.equal(0, #db.query("SELECT * FROM parent"))
      assert.equal(0, db.stats().busy)
    end)

    it("refuse to commit when a failed statement was caught inside", function()
      local err = failure(db.transaction, function()
        db.exec("INSERT INTO parent VALUES (1, 'one')")
        pcall(db.exec, "INSERT INTO parent VALUES (1, 'dup')")
      end)
      assert.equal("db.transaction_state", err.kind)
      assert.equal(0, #db.query("SELECT * FROM parent"))
    end)

    it("nest as savepoints", function()
      db.transaction(function()
        db.exec("INSERT INTO parent VALUES (1, 'outer')")
        local err = failure(db.transaction, function()
          db.exec("INSERT INTO parent VALUES (2, 'inner')")
          db.exec("INSERT INTO parent VALUES (1, 'dup')")
        end)
        assert.equal("db.unique_violation", err.kind)
        db.transaction(function()
          db.exec("INSERT INTO parent VALUES (3, 'inner ok')")
          db.transaction(function() db.exec("INSERT INTO parent VALUES (4, 'deeper')") end)
        end)
        assert.same({1, 3, 4}, (function()
          local ids = {}
          for i, r in ipairs(db.query("SELECT id FROM parent ORDER BY id")) do ids[i] = r.id end
          return ids
        end)())
      end)
      assert.equal(3, #db.query("SELECT * FROM parent"))
    end)

    it("hold one connection across other waits while other fibers keep querying", function()
      local d = db.new{url = srv.url, pool = 2}
      local pids, outside, others_done, tx_done = {}, nil, nil, nil
      rage.await(function()
        d:transaction(function()
          pids[1] = d:query_one("SELECT pg_backend_pid() AS p").p
          d:exec("INSERT INTO parent VALUES (1, 'tx')")
          rage.sleep(0.2)
          pids[2] = d:query_one("SELECT pg_backend_pid() AS p").p
          assert.equal(1, #d:query("SELECT * FROM parent"))   -- its own uncommitted row
        end)
        tx_done = rage.clock()
      end, function()
        rage.sleep(0.02)
        for _ = 1, 10 do
          assert.equal(1, d:query_one("SELECT 1 AS x").x)
          rage.sleep(0.005)
        end
        outside = #d:query("SELECT * FROM parent")
        others_done = rage.clock()
      end)
      assert.equal(pids[1], pids[2])
      assert.equal(0, outside)                 -- not visible before COMMIT
      assert.is_true(others_done < tx_done, "the other fiber was not blocked by the transaction")
      assert.equal(1, #d:query("SELECT * FROM parent"))
      assert.equal(0, d:stats().busy)
      d:close()
    end)

    it("leave fibers spawned inside out of the transaction", function()
      db.transaction(function()
        db.exec("INSERT INTO parent VALUES (1, 'tx')")
        local seen = rage.spawn(function() return #db.query("SELECT * FROM parent") end):wait()
        assert.equal(0, seen)
      end)
    end)

    it("release the connection when the fiber is cancelled inside", function()
      local d = db.new{url = srv.url, pool = 1}
      local h = rage.spawn(function()
        d:transaction(function()
          d:exec("INSERT INTO parent VALUES (1, 'tx')")
          rage.sleep(5)
        end)
      end)
      rage.sleep(0.1)
      h:cancel()
      assert.equal("cancelled", errors.kind(failure(h.wait, h)))
      assert.equal(0, d:stats().busy)
      assert.equal(0, #d:query("SELECT * FROM parent"))   -- rolled back
      d:close()
    end)

    it("take isolation options", function()
      local iso, err
      local outer = failure(db.transaction, function()
        iso = db.query_one("SHOW transaction_isolation").transaction_isolation
        err = failure(db.exec, "INSERT INTO parent VALUES (1, 'x')")
      end, {isolation = "serializable", read_only = true})
      assert.equal("serializable", iso)
      assert.equal("db.transaction_state", err.kind)
      assert.equal("25006", err.sqlstate)
      assert.equal("db.transaction_state", outer.kind)   -- the caught failure aborted the COMMIT
      assert.matches("isolation", failure(db.transaction, function() end, {isolation = "bogus"}))
    end)
  end)

  describe("the pool", function()
    it("opens lazily and reuses connections", function()
      local d = db.new{url = srv.url}
      assert.equal(0, d:stats().size)
      for _ = 1, 5 do d:query("SELECT 1") end
      local s = d:stats()
      assert.same({1, 1, 0, 0, 5}, {s.size, s.opened, s.busy, s.waiting, s.max})
      d:close()
    end)

    it("replaces an idle connection the server closed", function()
      local d = db.new{url = srv.url, pool = 1}
      local pid = d:query_one("SELECT pg_backend_pid() AS pid").pid
      db.query("SELECT pg_terminate_backend($1)", pid)
      rage.sleep(0.05)
      assert.equal(7, d:query_one("SELECT 7 AS v").v)
      assert.are_not.equal(pid, d:query_one("SELECT pg_backend_pid() AS pid").pid)
      local s = d:stats()
      assert.same({1, 2, 1}, {s.size, s.opened, s.closed})
      d:close()
    end)

    it("serves waiters in FIFO order", function()
      local d = db.new{url = srv.url, pool = 1}
      local order = {}
      local holder = rage.spawn(function() d:transaction(function() rage.sleep(0.1) end) end)
      local hs = {}
      for i = 1, 4 do
        hs[i] = rage.spawn(function()
          d:query("SELECT $1::int AS i", i)
          order[#order + 1] = i
        end)
      end
      assert.equal(4, d:stats().waiting)
      holder:wait()
      for i = 1, 4 do hs[i]:wait() end
      assert.same({1, 2, 3, 4}, order)
      d:close()
    end)

    it("fails a checkout after checkout_timeout with db.pool_timeout (503)", function()
      local d = db.new{url = srv.url, pool = 1, checkout_timeout = 0.15}
      local holder = rage.spawn(function() d:transaction(function() rage.sleep(0.5) end) end)
      local err
      local dt = elapsed(function() err = failure(d.query, d, "SELECT 1") end)
      assert.equal("db.pool_timeout", err.kind)
      assert.equal(503, err.status)
      assert.is_true(dt >= 0.14 and dt < 0.4, "waited " .. dt)
      holder:wait()
      assert.equal(1, d:stats().pool_timeouts)
      d:close()
    end)

    it("bounds the waiter queue", function()
      local d = db.new{url = srv.url, pool = 1, max_waiters = 2}
      local holder = rage.spawn(function() d:transaction(function() rage.sleep(0.2) end) end)
      local w1 = rage.spawn(function() return d:query_one("SELECT 1 AS x").x end)
      local w2 = rage.spawn(function() return d:query_one("SELECT 2 AS x").x end)
      local err
      local dt = elapsed(function() err = failure(d.query, d, "SELECT 3") end)
      assert.equal("db.pool_timeout", err.kind)
      assert.is_true(dt < 0.05, "failed at once")
      holder:wait()
      assert.same({1, 2}, {w1:wait(), w2:wait()})
      d:close()
    end)

    it("forgets a cancelled waiter", function()
      local d = db.new{url = srv.url, pool = 1}
      local order = {}
      local holder = rage.spawn(function() d:transaction(function() rage.sleep(0.1) end) end)
      local hs = {}
      for i = 1, 3 do
        hs[i] = rage.spawn(function()
          d:query("SELECT 1")
          order[#order + 1] = i
        end)
      end
      hs[2]:cancel()
      assert.equal(2, d:stats().waiting)
      holder:wait()
      hs[1]:wait()
      hs[3]:wait()
      assert.same({1, 3}, order)
      local s = d:stats()
      assert.same({1, 0, 0, 1}, {s.size, s.busy, s.waiting, s.idle})
      d:close()
    end)

    it("recovers a connection cancelled mid-statement (rage.timeout)", function()
      local d = db.new{url = srv.url, pool = 1}
      local err = failure(rage.timeout, 0.1, function() d:query("SELECT pg_sleep(5)") end)
      assert.equal("timeout", err.kind)
      assert.equal(0, d:stats().size)          -- that connection was closed
      assert.equal(1, d:query_one("SELECT 1 AS x").x)
      d:close()
    end)

    it("cleans a dirty connection before lending it again", function()
      local d = db.new{url = srv.url, pool = 1}
      local pid = d:query_one("SELECT pg_backend_pid() AS p").p
      d:exec("BEGIN")                                   -- left open by a single statement
      assert.equal("db.transaction_state", failure(d.exec, d, "SAVEPOINT s").kind)
      d:exec("SET search_path = nowhere")               -- a changed setting
      assert.equal('"$user", public', d:query_one("SHOW search_path").search_path)
      d:transaction(function()
        d:exec("SET work_mem = '1MB'")                  -- SET inside a transaction outlives COMMIT
      end)
      assert.equal("4MB", d:query_one("SHOW work_mem").work_mem)
      assert.equal(pid, d:query_one("SELECT pg_backend_pid() AS p").p)   -- the same connection, cleaned
      assert.is_true(d:stats().resets >= 3)
      d:close()
    end)

    it("fails fast while the server is down and recovers by itself", function()
      if not srv.own then
        pending("DATABASE_URL is set: the specs cannot stop that server")
        return
      end
      local d = db.new{url = srv.url, pool = 2}
      d:query("SELECT 1")
      srv:down()
      local ok, err
      local dt = elapsed(function()
        for _ = 1, 5 do
          ok, err = pcall(d.query, d, "SELECT 1")
          assert.is_false(ok)
          assert.equal("db.connection", err.kind)
          assert.equal(503, err.status)
        end
      end)
      assert.is_true(dt < 1, "five failures took " .. dt)
      -- The default database fails the same way.
      assert.equal("db.connection", failure(db.query, "SELECT 1").kind)
      srv:up()
      local t0 = rage.clock()
      repeat
        ok = pcall(d.query, d, "SELECT 1")
        if not ok then rage.sleep(0.05) end
      until ok or rage.clock() - t0 > 10
      assert.is_true(ok, "recovered")
      assert.is_true(rage.clock() - t0 < 3, "recovered within " .. (rage.clock() - t0))
      assert.equal(1, db.query_one("SELECT 1 AS x").x)
      d:close()
    end)

    it("reports its stats through rage.db.stats", function()
      local s = db.stats()
      for _, k in ipairs({"size", "busy", "idle", "waiting", "max"}) do assert.is_number(s[k], k) end
    end)
  end)

  describe("prepared statements", function()
    local function server_statements(d)
      return d:query_one("SELECT count(*) AS n FROM pg_prepared_statements").n
    end

    it("are prepared once per connection and SQL text", function()
      local d = db.new{url = srv.url, pool = 1}
      for i = 1, 3 do assert.equal(i, d:query_one("SELECT $1::int AS i", i).i) end
      assert.equal(1, d:stats().prepared)
      d:query("SELECT 2 AS other")
      assert.equal(2, d:stats().prepared)
      assert.equal(3, server_statements(d))
      d:close()
    end)

    it("keep the most recently used ones, deallocating the others on the server", function()
      local d = db.new{url = srv.url, pool = 1, statement_cache = 3}
      for i = 1, 10 do d:query("SELECT " .. i .. " AS n") end
      assert.equal(1, d:query_one("SELECT 1 AS n").n)
      assert.is_true(server_statements(d) <= 3)
      local before = d:stats().prepared
      d:query("SELECT count(*) AS n FROM pg_prepared_statements")   -- still cached
      assert.equal(before, d:stats().prepared)
      d:close()
    end)

    it("are run again after ALTER TABLE changes a cached plan's result type", function()
      local d = db.new{url = srv.url, pool = 1}
      d:script("DROP TABLE IF EXISTS altered; CREATE TABLE altered (a int); INSERT INTO altered VALUES (1)")
      assert.same({a = 1}, d:query_one("SELECT * FROM altered"))
      assert.same({a = 1}, d:query_one("SELECT * FROM altered"))
      d:exec("ALTER TABLE altered ADD COLUMN b int DEFAULT 7")
      assert.same({a = 1, b = 7}, d:query_one("SELECT * FROM altered"))
      -- Inside a transaction the failed statement aborted it: no retry, the error surfaces.
      d:exec("ALTER TABLE altered ADD COLUMN c int DEFAULT 8")
      local err = failure(d.transaction, d, function() d:query("SELECT * FROM altered") end)
      assert.equal("0A000", err.sqlstate)
      assert.is_nil(err.retry)
      assert.same({a = 1, b = 7, c = 8}, d:query_one("SELECT * FROM altered"))
      d:close()
    end)

    it("survive DISCARD ALL and statements that fail to prepare", function()
      local d = db.new{url = srv.url, pool = 1}
      d:query("SELECT 1 AS x")
      d:exec("DISCARD ALL")
      assert.equal(1, d:query_one("SELECT 1 AS x").x)
      assert.equal("db.syntax", failure(d.query, d, "SELEC 1").kind)
      assert.equal("db.syntax", failure(d.query, d, "SELEC 1").kind)
      assert.equal(1, d:query_one("SELECT 1 AS x").x)
      d:close()
    end)

    it("can be turned off", function()
      local d = db.new{url = srv.url, pool = 1, statement_cache = 0}
      for _ = 1, 3 do d:query("SELECT 1 AS x") end
      assert.equal(0, d:stats().prepared)
      assert.equal(0, server_statements(d))
      d:close()
    end)
  end)

  describe("listen and notify", function()
    it("deliver notifications in order to a listening fiber", function()
      local got = {}
      local listener = rage.spawn(function()
        db.listen("events", function(payload, channel, pid)
          got[#got + 1] = {payload, channel, type(pid)}
          -- The handler may query: through other connections.
          assert.equal(1, db.query_one("SELECT 1 AS x").x)
          if #got == 3 then return false end
        end)
        return "done"
      end)
      rage.sleep(0.05)
      for i = 1, 3 do db.notify("events", "m" .. i) end
      assert.equal("done", listener:wait())
      assert.same({{"m1", "events", "number"}, {"m2", "events", "number"}, {"m3", "events", "number"}}, got)
      assert.equal(0, db.stats().busy)
    end)

    it("deliver at COMMIT, and nothing from a rolled back transaction", function()
      local got = {}
      local listener = rage.spawn(function()
        db.listen({"Mixed Case", 'with "quotes"'}, function(payload, channel)
          got[#got + 1] = channel .. ":" .. payload
          if payload == "last" then return false end
        end)
      end)
      rage.sleep(0.05)
      pcall(db.transaction, function()
        db.notify("Mixed Case", "rolled back")
        error("no")
      end)
      db.transaction(function()
        db.notify("Mixed Case", "committed")
        rage.sleep(0.05)
        assert.equal(0, #got)
      end)
      db.notify('with "quotes"', "last")
      listener:wait()
      assert.same({"Mixed Case:committed", 'with "quotes":last'}, got)
    end)

    it("give the connection back when the listening fiber is cancelled", function()
      local d = db.new{url = srv.url, pool = 1}
      local listener = rage.spawn(function() d:listen("nobody", function() end) end)
      rage.sleep(0.05)
      assert.equal(1, d:stats().busy)
      listener:cancel()
      assert.equal("cancelled", errors.kind(failure(listener.wait, listener)))
      assert.equal(0, d:stats().busy)
      assert.equal(1, d:query_one("SELECT 1 AS x").x)   -- the pool is usable at once
      d:close()
    end)

    it("let rage.timeout bound a listen", function()
      local err = failure(rage.timeout, 0.1, function() db.listen("quiet", function() end) end)
      assert.equal("timeout", err.kind)
      assert.equal(0, db.stats().busy)
    end)
  end)

  describe("migrations", function()
    local dir

    local function write(name, text)
      local f = assert(io.open(dir .. "/" .. name, "wb"))
      f:write(text)
      f:close()
    end

    before_each(function()
      dir = os.tmpname()
      os.remove(dir)
      assert(os.execute("mkdir " .. dir) == 0)
      db.script("DROP TABLE IF EXISTS schema_migrations, m_todos, m_tags")
      write("001_todos.sql", "CREATE TABLE m_todos (id serial PRIMARY KEY, title text);\n" ..
        "INSERT INTO m_todos (title) VALUES ('first');\n-- migrate:down\nDROP TABLE m_todos;\n")
      write("002_tags.sql", "CREATE TABLE m_tags (name text);\n-- migrate:down\nDROP TABLE m_tags;\n")
      write("README", "not a migration")
    end)

    after_each(function()
      os.execute("rm -rf " .. dir)
    end)

    it("apply in order, once", function()
      assert.same({"001_todos", "002_tags"}, db.migrate(dir))
      assert.same({}, db.migrate(dir))
      assert.equal("first", db.query_one("SELECT title FROM m_todos").title)
      local st = db.migration_status(dir)
      assert.same({"001_todos", "002_tags"}, {st[1].version, st[2].version})
      assert.is_true(st[1].applied and st[2].applied and st[1].file)
      assert.is_string(st[1].applied_at)
    end)

    it("roll back the newest first", function()
      db.migrate(dir)
      assert.same({"002_tags"}, db.rollback(dir))
      assert.equal("db.syntax", failure(db.query, "SELECT * FROM m_tags").kind)
      assert.same({true, false}, {db.migration_status(dir)[1].applied, db.migration_status(dir)[2].applied})
      assert.same({"002_tags"}, db.migrate(dir))
      assert.same({"002_tags", "001_todos"}, db.rollback(dir, 2))
      assert.same({}, db.rollback(dir))
    end)

    it("leave nothing of a migration that fails", function()
      write("003_broken.sql", "CREATE TABLE m_half (x int);\nSELEC oops;\n")
      local err = failure(db.migrate, dir)
      assert.equal("db.syntax", err.kind)
      assert.equal("003_broken", err.migration)
      assert.matches("003_broken.sql", err.message)
      assert.equal(0, #db.query("SELECT * FROM pg_tables WHERE tablename = 'm_half'"))
      local st = db.migration_status(dir)
      assert.same({true, true, false}, {st[1].applied, st[2].applied, st[3].applied})
    end)

    it("refuse to roll back a migration without a down part", function()
      write("003_oneway.sql", "ALTER TABLE m_tags ADD COLUMN color text;\n")
      assert.same({"001_todos", "002_tags", "003_oneway"}, db.migrate(dir))
      local err = failure(db.rollback, dir)
      assert.equal("db.migration", err.kind)
      assert.equal("003_oneway", err.migration)
      assert.is_true(db.migration_status(dir)[3].applied)
    end)

    it("migrate once when several fibers race", function()
      local a, b = rage.await(function() return db.migrate(dir) end, function() return db.migrate(dir) end)
      assert.equal(2, #a + #b)
    end)
  end)

  describe("configuration", function()
    it("rejects unknown settings at the caller's line", function()
      local ok, err = pcall(db.new, {url = srv.url, poool = 3})
      assert.is_false(ok)
      assert.matches("unknown database setting 'poool'", err)
      ok, err = pcall(db.new, {url = srv.url, pool = 0})
      assert.is_false(ok)
      assert.matches("pool must be", err)
    end)

    it("sets the session time zone (UTC unless told otherwise)", function()
      assert.equal("UTC", db.query_one("SHOW timezone").TimeZone)
      local d = db.new{url = srv.url, timezone = "Asia/Tokyo"}
      assert.equal("2024-01-01T09:00:00+09:00", d:query_one("SELECT '2024-01-01 00:00:00+00'::timestamptz AS t").t)
      d:close()
    end)
  end)
end)
