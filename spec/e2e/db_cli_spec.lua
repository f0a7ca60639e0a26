-- End to end: `rage-lua db create|migrate|status|rollback DIR` against a real PostgreSQL.

local server = require("spec.support.server")
local pg = require("spec.support.pg")

local quote, sh, capture = server.quote, server.sh, server.capture

describe("rage-lua db", function()
  local srv, dir, url

  setup(function()
    if not pg.available() then return end
    srv = pg.start()
    dir = capture("mktemp -d /tmp/rage-dbcli.XXXXXX"):gsub("%s+$", "")
    capture(quote(server.bin()) .. " new " .. quote(dir .. "/app"))
    sh("mkdir -p " .. quote(dir .. "/app/db/migrations"))
    local f = assert(io.open(dir .. "/app/db/migrations/20260101000001_create_notes.sql", "w"))
    f:write("CREATE TABLE notes (id serial PRIMARY KEY, text text NOT NULL);\n-- migrate:down\nDROP TABLE notes;\n")
    f:close()
    f = assert(io.open(dir .. "/app/db/migrations/20260101000002_add_done.sql", "w"))
    f:write("ALTER TABLE notes ADD COLUMN done boolean NOT NULL DEFAULT false;\n-- migrate:down\nALTER TABLE notes DROP COLUMN done;\n")
    f:close()
    -- A database of its own, created by the command under test.
    url = srv.url:gsub("/[^/?]+$", "/rage_cli_" .. os.time())
  end)

  teardown(function()
    if srv then srv:stop() end
    if dir then sh("rm -rf " .. quote(dir)) end
  end)

  local function db(args)
    return capture("DATABASE_URL=" .. quote(url) .. " " .. quote(server.bin()) .. " db " .. args ..
      " " .. quote(dir .. "/app") .. " 2>&1; echo rc=$?")
  end

  it("creates the database, migrates, reports and rolls back", function()
    if not srv then return pending(pg.why()) end
    assert.matches("created database", db("create"))
    assert.matches("already exists", db("create"))
    local out = db("migrate")
    assert.matches("migrated 20260101000001_create_notes", out)
    assert.matches("migrated 20260101000002_add_done", out)
    assert.matches("no pending migrations", db("migrate"))
    out = db("status")
    assert.matches("up%s+20260101000002_add_done", out)
    out = capture("DATABASE_URL=" .. quote(url) .. " " .. quote(server.bin()) .. " db rollback " ..
      quote(dir .. "/app") .. " 2 2>&1")
    assert.matches("rolled back 20260101000002_add_done", out)
    assert.matches("rolled back 20260101000001_create_notes", out)
    assert.matches("down%s+20260101000001_create_notes", db("status"))
  end)

  it("explains its usage and fails clearly without a database", function()
    if not srv then return pending(pg.why()) end
    local out = capture(quote(server.bin()) .. " db bogus " .. quote(dir .. "/app") .. " 2>&1; echo rc=$?")
    assert.matches("usage: rage%-lua db", out)
    assert.matches("rc=1", out)
    out = capture("env -u DATABASE_URL " .. quote(server.bin()) .. " db migrate " .. quote(dir .. "/app") .. " 2>&1; echo rc=$?")
    assert.matches("no database configured", out)
    assert.matches("rc=1", out)
  end)
end)
