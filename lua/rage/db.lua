-- rage.db: PostgreSQL for fibers, over the pools of core/src/pg_pool.c.
--
--   local rows = rage.db.query("SELECT id, title FROM todos WHERE done = $1", false)
--   local todo = rage.db.query_one("SELECT * FROM todos WHERE id = $1", id)   -- or nil
--   local n = rage.db.exec("UPDATE todos SET done = true WHERE id = $1", id)  -- rows affected
--   rage.db.transaction(function() ... end)     -- BEGIN/COMMIT; ROLLBACK and re-raise on error
--
-- Every call looks blocking and waits in the scheduler. Parameters travel separately from the
-- SQL ($1..$n), never interpolated. Rows are tables keyed by column name with values decoded
-- by column type; NULL is rage.null. The row list is a rage.json.array (so no rows encodes as
-- []) and also answers rows.columns (names in order) and rows.affected.
--
-- Configuration, read at first use: rage.db.configure{...}, else DATABASE_URL and the app's
-- config `database = {url =, pool =, checkout_timeout =, statement_timeout =, ...}` (the URL
-- from the environment wins over the file's). One pool per worker per database.

local core = require("rage.core")
local json = require("rage.json")
local errors = require("rage.errors")

local type, select, error, pcall, unpack, setmetatable, getmetatable, tostring, tonumber, pairs, ipairs =
  type, select, error, pcall, unpack, setmetatable, getmetatable, tostring, tonumber, pairs, ipairs
local format, gsub, byte, concat, floor, huge = string.format, string.gsub, string.byte, table.concat, math.floor,
  math.huge
local core_fiber, getenv = core.fiber, os.getenv

local _M = {}

local null = json.null
local json_decode, json_encode = json.decode, json.encode
_M.null = null

-- ---- rows -----------------------------------------------------------------------------------

-- Row lists carry the json.array metatable (an empty list must encode as []). Their columns
-- and affected count live beside them, found through that metatable's __index, so the list
-- itself holds nothing but rows and encodes as a JSON array.
local ARRAY = getmetatable(json.array())
local extras = setmetatable({}, {__mode = "k"})
if ARRAY.__index == nil then
  ARRAY.__index = function(t, k)
    local e = extras[t]
    if e then return e[k] end
  end
end

local function rows_of(res)
  local rows, columns, affected, tag = res:decode(null, ARRAY, json_decode)
  extras[rows] = {columns = columns, affected = affected or 0, command = tag}
  return rows, affected, tag
end

-- ---- parameters -----------------------------------------------------------------------------

local BYTEA = {__name = "rage.db.bytea"}
local PGARRAY = {__name = "rage.db.array"}

-- Marks a string as binary data for a bytea parameter.
function _M.bytea(s)
  if type(s) ~= "string" then error("rage.db.bytea expects a string", 2) end
  return setmetatable({s}, BYTEA)
end

-- Marks a Lua array as a PostgreSQL array parameter ("WHERE id = ANY($1)"); other tables are
-- sent as JSON text.
function _M.array(t)
  if type(t) ~= "table" then error("rage.db.array expects a table", 2) end
  return setmetatable({t}, PGARRAY)
end

local function number_text(v)
  if v ~= v then return "NaN" end
  if v == huge then return "Infinity" end
  if v == -huge then return "-Infinity" end
  if v == floor(v) then
    if v > -2^53 and v < 2^53 then return format("%d", v) end
    if v > -1e21 and v < 1e21 then return format("%.0f", v) end
  end
  -- The shortest text that reads back as the same double.
  for digits = 15, 17 do
    local s = format("%." .. digits .. "g", v)
    if tonumber(s) == v then return s end
  end
  return format("%.17g", v)
end

local encode

local function hex(s)
  return (gsub(s, ".", function(c) return format("%02x", byte(c)) end))
end

local function array_literal(t, i, depth)
  if depth > 6 then return nil, "rage.db: parameter $" .. i .. " nests arrays too deeply" end
  local parts = {}
  local n = #t
  for k in pairs(t) do
    if type(k) == "number" and k > n and k % 1 == 0 then n = k end
  end
  for k = 1, n do
    local v = t[k]
    if v == nil or v == null then
      parts[k] = "NULL"
    else
      local s, err
      if type(v) == "table" and getmetatable(v) ~= BYTEA and getmetatable(v) ~= PGARRAY then
        s, err = array_literal(v, i, depth + 1)
      else
        s, err = encode(v, i)
        if s then s = '"' .. gsub(s, '[\\"]', "\\%0") .. '"' end
      end
      if err then return nil, err end
      parts[k] = s
    end
  end
  return "{" .. concat(parts, ",") .. "}"
end

-- The text of one parameter (nil for SQL NULL), or nil and a message for a value that has none.
encode = function(v, i)
  local t = type(v)
  if t == "string" then return v end
  if v == nil or v == null then return nil end
  if t == "number" then return number_text(v) end
  if t == "boolean" then return v and "true" or "false" end
  if t == "table" then
    local mt = getmetatable(v)
    if mt == BYTEA then return "\\x" .. hex(v[1]) end
    if mt == PGARRAY then return array_literal(v[1], i, 1) end
    return json_encode(v)
  end
  return nil, "rage.db: parameter $" .. i .. " is a " .. t ..
    " (expected nil, rage.null, a boolean, a number, a string or a table)"
end

-- ---- databases ------------------------------------------------------------------------------

local Database = {}
Database.__index = Database

local DEFAULTS = {pool = 5, checkout_timeout = 5, statement_timeout = 30, connect_timeout = 5, max_waiters = 1000,
  timezone = "UTC", statement_cache = 100, pipeline = 8}
local KNOWN = {url = true, pool = true, checkout_timeout = true, statement_timeout = true, connect_timeout = true,
  max_waiters = true, timezone = true, statement_cache = true, pipeline = true}

local function check_settings(s, level)
  for k in pairs(s) do
    if not KNOWN[k] then error("rage.db: unknown database setting '" .. tostring(k) .. "'", level + 1) end
  end
  if s.url ~= nil and type(s.url) ~= "string" then error("rage.db: url must be a string", level + 1) end
  for _, k in ipairs({"pool", "checkout_timeout", "statement_timeout", "connect_timeout", "max_waiters",
    "statement_cache", "pipeline"}) do
    local v = s[k]
    if v ~= nil and (type(v) ~= "number" or v ~= v or v < 0) then
      error("rage.db: " .. k .. " must be a non-negative number", level + 1)
    end
  end
  if s.pool ~= nil and (s.pool < 1 or s.pool % 1 ~= 0) then error("rage.db: pool must be a whole number >= 1", level + 1) end
  if s.pipeline ~= nil and (s.pipeline < 1 or s.pipeline % 1 ~= 0 or s.pipeline > 1000) then
    error("rage.db: pipeline must be a whole number from 1 to 1000", level + 1)
  end
  if s.timezone ~= nil and s.timezone ~= false and (type(s.timezone) ~= "string" or s.timezone:find("[%s\\]")) then
    error("rage.db: timezone must be a time zone name such as \"UTC\", or false", level + 1)
  end
end

-- A database handle; the pool opens at first use. Settings as for rage.db.configure.
function _M.new(settings)
  if type(settings) == "string" then settings = {url = settings} end
  if type(settings) ~= "table" then error("rage.db.new expects a URL or a settings table", 2) end
  check_settings(settings, 2)
  local s = {}
  for k, v in pairs(DEFAULTS) do s[k] = v end
  for k, v in pairs(settings) do s[k] = v end
  return setmetatable({settings = s, txs = {}}, Database)
end

function Database:pool()
  local p = self._pool
  if p then return p end
  local s = self.settings
  if not s.url or s.url == "" then
    errors.raise("db.connection", "no database configured: set DATABASE_URL or `database = {url = ...}` in " ..
      "config/application.lua", {status = 503}, 3)
  end
  -- The session settings the decoder relies on come first, so a URL's own options win.
  local options = "-c DateStyle=ISO -c bytea_output=hex"
  if s.timezone then options = options .. " -c TimeZone=" .. s.timezone end
  p = core.pg_pool({"client_encoding", "options", "fallback_application_name", "dbname"},
    {"UTF8", options, "rage-lua", s.url},
    {size = s.pool, max_waiters = s.max_waiters, checkout_timeout = s.checkout_timeout,
      statement_timeout = s.statement_timeout, connect_timeout = s.connect_timeout,
      statement_cache = s.statement_cache, pipeline = s.pipeline})
  self._pool = p
  return p
end

-- The lease of the transaction this fiber has open on this database, if any.
local function current_lease(db)
  local fid = core_fiber()
  local tx = fid and db.txs[fid]
  return tx and tx.lease
end

local function raise(kind, msg, fields)
  error(errors.new(kind, msg, fields), 0)
end

-- Encodes one parameter; misuse raises at the line that called rage.db (level 4 from here).
local function param(v, i)
  local s, err = encode(v, i)
  if err then error(err, 4) end
  return s
end

local function call(target, script, sql, n, a, b, args)
  if script then return target:script(sql) end
  if n == 0 then return target:query(sql, 0) end
  if n == 1 then return target:query(sql, 1, a) end
  if n == 2 then return target:query(sql, 2, a, b) end
  return target:query(sql, n, unpack(args, 1, n))
end

-- Runs one statement; returns its result object or raises. A statement whose cached plan
-- changed result type (the table was altered) runs once more, outside transactions.
local function run(db, script, sql, n, ...)
  if type(sql) ~= "string" then error("rage.db: the SQL must be a string", 3) end
  local target = current_lease(db) or db:pool()
  local a, b, args
  if n == 1 then
    a = param((...), 1)
  elseif n == 2 then
    a, b = ...
    a, b = param(a, 1), param(b, 2)
  elseif n > 2 then
    args = {...}
    for i = 1, n do args[i] = param(args[i], i) end
  end
  local res, kind, msg, fields = call(target, script, sql, n, a, b, args)
  if not res and fields and fields.retry then
    res, kind, msg, fields = call(target, script, sql, n, a, b, args)
  end
  if not res then
    if fields then fields.retry = nil end
    raise(kind, msg, fields)
  end
  return res
end

-- Rows of a statement: an array of tables keyed by column name.
function Database:query(sql, ...)
  return (rows_of(run(self, false, sql, select("#", ...), ...)))
end

-- The first row, or nil.
function Database:query_one(sql, ...)
  local rows = rows_of(run(self, false, sql, select("#", ...), ...))
  return rows[1]
end

-- Runs a statement for its effect; returns the number of rows it affected.
function Database:exec(sql, ...)
  local _, affected = rows_of(run(self, false, sql, select("#", ...), ...))
  return affected or 0
end

-- Runs SQL text that may hold several statements (a schema, a migration), without parameters,
-- through the simple query protocol. Returns the affected count of the last statement.
function Database:script(sql)
  local _, affected = rows_of(run(self, true, sql, 0))
  return affected or 0
end

local ISOLATION = {["read committed"] = "READ COMMITTED", ["repeatable read"] = "REPEATABLE READ",
  serializable = "SERIALIZABLE"}

local function begin_sql(opts, level)
  if opts == nil then return "BEGIN" end
  if type(opts) ~= "table" then error("rage.db.transaction: options must be a table", level + 1) end
  local sql = "BEGIN"
  if opts.isolation ~= nil then
    local iso = ISOLATION[opts.isolation]
    if not iso then
      error("rage.db.transaction: isolation must be \"read committed\", \"repeatable read\" or \"serializable\"",
        level + 1)
    end
    sql = sql .. " ISOLATION LEVEL " .. iso
  end
  if opts.read_only then sql = sql .. " READ ONLY" end
  return sql
end

local function pack(...)
  return {n = select("#", ...), ...}
end

local function savepoint(db, tx, fn)
  local lease = tx.lease
  tx.depth = tx.depth + 1
  local name = "rage_savepoint_" .. tx.depth
  local ok, kind, msg, fields = lease:query("SAVEPOINT " .. name, 0)
  if not ok then
    tx.depth = tx.depth - 1
    raise(kind, msg, fields)
  end
  local res = pack(pcall(fn, db))
  if res[1] then
    ok, kind, msg, fields = lease:query("RELEASE SAVEPOINT " .. name, 0)
    tx.depth = tx.depth - 1
    if not ok then raise(kind, msg, fields) end
    return unpack(res, 2, res.n)
  end
  lease:query("ROLLBACK TO SAVEPOINT " .. name, 0)
  tx.depth = tx.depth - 1
  error(res[2], 0)
end

-- Runs fn(db) as a transaction on `lease`, which holds a connection; registered for this fiber
-- while fn runs (replacing `outer`, the with_connection it runs in, if any).
local function run_transaction(db, fid, lease, begin, fn, outer)
  local txs = db.txs
  local ok, kind, msg, fields = lease:query(begin, 0)
  if not ok then return false, errors.new(kind, msg, fields) end
  txs[fid] = {lease = lease, depth = 0}
  local res = pack(pcall(fn, db))
  local err
  if res[1] then
    local c
    c, kind, msg, fields = lease:query("COMMIT", 0)
    if not c then
      err = errors.new(kind, msg, fields)
    else
      local _, _, tag = rows_of(c)
      if tag == "ROLLBACK" then
        err = errors.new("db.transaction_state",
          "the transaction was rolled back at COMMIT: a statement inside it had failed")
      end
    end
  else
    err = res[2]
    lease:query("ROLLBACK", 0)
  end
  txs[fid] = outer
  if err then return false, err end
  return true, res
end

-- Runs fn(db) inside a transaction on one connection pinned to this fiber: every rage.db call
-- the fiber makes meanwhile goes through it. COMMIT when fn returns (its results are
-- returned); ROLLBACK when it raises, and the error is raised again. A nested call makes a
-- SAVEPOINT, rolled back alone when the inner function raises. Fibers spawned inside fn are
-- not part of the transaction. opts: {isolation = "serializable", read_only = true}.
function Database:transaction(fn, opts)
  if type(fn) ~= "function" then error("rage.db.transaction expects a function", 2) end
  local fid = core_fiber()
  if not fid then error("rage.db.transaction can only be used inside a fiber", 2) end
  local tx = self.txs[fid]
  if tx and not tx.held then return savepoint(self, tx, fn) end
  local begin = begin_sql(opts, 2)
  local lease = tx and tx.lease
  if not lease then
    lease = self:pool():lease()
    local ok, kind, msg, fields = lease:acquire()
    if not ok then raise(kind, msg, fields) end
  end
  local ok, res = run_transaction(self, fid, lease, begin, fn, tx)
  if not tx then lease:release() end
  if not ok then error(res, 0) end
  return unpack(res, 2, res.n)
end

-- Runs fn(db) with one connection of the pool held by this fiber for the whole call, without a
-- transaction: every rage.db call the fiber makes meanwhile goes through it, one after another
-- (a per-request lease, where the pool otherwise lends a connection per statement). A
-- transaction inside uses the same connection. Returns fn's results; an error is raised again
-- after the connection is back in the pool.
function Database:with_connection(fn)
  if type(fn) ~= "function" then error("rage.db.with_connection expects a function", 2) end
  local fid = core_fiber()
  if not fid then error("rage.db.with_connection can only be used inside a fiber", 2) end
  local txs = self.txs
  if txs[fid] then return fn(self) end -- already holding one (a transaction or with_connection)
  local lease = self:pool():lease()
  local ok, kind, msg, fields = lease:acquire()
  if not ok then raise(kind, msg, fields) end
  txs[fid] = {lease = lease, held = true}
  local res = pack(pcall(fn, self))
  txs[fid] = nil
  lease:release()
  if not res[1] then error(res[2], 0) end
  return unpack(res, 2, res.n)
end

local function quote_ident(name)
  return '"' .. gsub(name, '"', '""') .. '"'
end

-- Listens on one channel or a list of channels and calls fn(payload, channel, pid) for every
-- notification, in the calling fiber, until fn returns false (listen then returns) or the fiber
-- is cancelled. The listening connection is one of the pool's, held meanwhile; fn's own
-- queries use others. Usually run in a detached fiber:
--   rage.spawn(function() rage.db.listen("events", on_event) end):detach()
function Database:listen(channels, fn)
  if type(channels) == "string" then channels = {channels} end
  if type(channels) ~= "table" or #channels == 0 then
    error("rage.db.listen expects a channel name or a list of them", 2)
  end
  for i = 1, #channels do
    if type(channels[i]) ~= "string" or channels[i] == "" then error("rage.db.listen: channel names are strings", 2) end
  end
  if type(fn) ~= "function" then error("rage.db.listen expects a function", 2) end
  if not core_fiber() then error("rage.db.listen can only be used inside a fiber", 2) end
  local lease = self:pool():lease()
  local ok, kind, msg, fields = lease:acquire()
  if not ok then raise(kind, msg, fields) end
  local res = pack(pcall(function()
    for i = 1, #channels do
      local r, k, m, f = lease:query("LISTEN " .. quote_ident(channels[i]), 0)
      if not r then raise(k, m, f) end
    end
    while true do
      local channel, payload, pid, f = lease:wait_notify()
      if not channel then raise(payload, pid, f) end
      if fn(payload, channel, pid) == false then return end
    end
  end))
  lease:release()   -- DISCARD ALL (which includes UNLISTEN) before the pool lends it again
  if not res[1] then error(res[2], 0) end
end

-- Sends a notification (pg_notify): delivered when the current transaction commits, or at
-- once outside one.
function Database:notify(channel, payload)
  if type(channel) ~= "string" or channel == "" then error("rage.db.notify expects a channel name", 2) end
  if payload ~= nil and type(payload) ~= "string" then error("rage.db.notify: the payload must be a string", 2) end
  rows_of(run(self, false, "SELECT pg_notify($1, $2)", 2, channel, payload or ""))
end

-- True when this fiber is inside a transaction of this database.
function Database:in_transaction()
  local fid = core_fiber()
  local tx = fid and self.txs[fid]
  return tx ~= nil and not tx.held
end

-- The pool's counters: size, busy, idle, waiting, connecting, max and totals.
function Database:stats()
  return self:pool():stats()
end

-- Closes the idle connections; later calls open a new pool.
function Database:close()
  local p = self._pool
  self._pool = nil
  if p then p:close() end
end

-- ---- migrations -----------------------------------------------------------------------------
--
-- DIR holds one .sql file per migration, applied in file-name order (name them
-- 20240101120000_create_todos.sql). A line "-- migrate:down" splits a file: above it what
-- migrate runs, below it what rollback runs. Each migration runs in its own transaction under
-- an advisory lock (workers and machines migrating at once apply each one once); applied
-- versions are rows of schema_migrations. Statements that refuse transactions (CREATE INDEX
-- CONCURRENTLY) do not belong in migrations.

local MIGRATIONS_TABLE = "CREATE TABLE IF NOT EXISTS schema_migrations (version text PRIMARY KEY, " ..
  "applied_at timestamptz NOT NULL DEFAULT now())"
local MIGRATIONS_LOCK = "SELECT pg_advisory_xact_lock(hashtext('rage.db.migrations'))"

-- CREATE TABLE IF NOT EXISTS is not safe against itself in another session: take the lock.
local function ensure_migrations_table(db)
  db:transaction(function()
    db:query(MIGRATIONS_LOCK)
    db:script(MIGRATIONS_TABLE)
  end)
end

local function read_migrations(dir, level)
  if type(dir) ~= "string" then error("rage.db: a migrations directory is required", level + 1) end
  local names = core.scandir(dir)
  if not names then error("rage.db: cannot read the migrations directory " .. dir, level + 1) end
  table.sort(names)
  local list = {}
  for _, name in ipairs(names) do
    local version = name:match("^(.+)%.sql$")
    if version then
      local f = io.open(dir .. "/" .. name, "rb")
      if not f then error("rage.db: cannot read " .. dir .. "/" .. name, level + 1) end
      local text = f:read("*a")
      f:close()
      local up, down = text, ""
      local at, stop = text:find("\n%-%-%s*migrate:down[^\n]*")
      if at then
        up, down = text:sub(1, at), text:sub(stop + 1)
      elseif text:find("^%-%-%s*migrate:down") then
        local nl = text:find("\n", 1, true)
        up, down = "", nl and text:sub(nl + 1) or ""
      end
      list[#list + 1] = {version = version, path = dir .. "/" .. name, up = up, down = down}
    end
  end
  return list
end

local function run_migration(db, m, sql, applying)
  local ok, err = pcall(db.transaction, db, function()
    db:query(MIGRATIONS_LOCK)
    local present = db:query_one("SELECT 1 AS x FROM schema_migrations WHERE version = $1", m.version) ~= nil
    if present == applying then return false end
    if sql:find("%S") then db:script(sql) end
    if applying then
      db:exec("INSERT INTO schema_migrations (version) VALUES ($1)", m.version)
    else
      db:exec("DELETE FROM schema_migrations WHERE version = $1", m.version)
    end
    return true
  end)
  if not ok then
    if errors.is(err) then
      err.migration = m.version
      err.message = m.path .. ": " .. tostring(err.message)
    end
    error(err, 0)
  end
  return err
end

-- Applies the migrations of dir not applied yet, in order. Returns the versions applied.
function Database:migrate(dir)
  local list = read_migrations(dir, 2)
  ensure_migrations_table(self)
  local done = {}
  for _, m in ipairs(list) do
    if run_migration(self, m, m.up, true) then done[#done + 1] = m.version end
  end
  return done
end

-- Undoes the last `steps` (1) applied migrations, newest first. Returns the versions undone.
function Database:rollback(dir, steps)
  steps = steps or 1
  if type(steps) ~= "number" or steps < 1 or steps % 1 ~= 0 then
    error("rage.db.rollback: steps must be a whole number >= 1", 2)
  end
  local by_version = {}
  for _, m in ipairs(read_migrations(dir, 2)) do by_version[m.version] = m end
  ensure_migrations_table(self)
  local done = {}
  for _, row in ipairs(self:query("SELECT version FROM schema_migrations ORDER BY version DESC LIMIT $1", steps)) do
    local m = by_version[row.version]
    if not m then
      errors.raise("db.migration", "no file for the applied migration " .. row.version .. " in " .. dir)
    end
    if not m.down:find("%S") then
      errors.raise("db.migration", m.path .. " has no \"-- migrate:down\" part: it cannot be rolled back",
        {migration = m.version})
    end
    if run_migration(self, m, m.down, false) then done[#done + 1] = m.version end
  end
  return done
end

-- Every migration of dir and of the database: {version =, applied = bool, applied_at =,
-- file = bool}, in version order.
function Database:migration_status(dir)
  local list = read_migrations(dir, 2)
  ensure_migrations_table(self)
  local applied = {}
  for _, row in ipairs(self:query("SELECT version, applied_at FROM schema_migrations")) do
    applied[row.version] = row.applied_at
  end
  local out, seen = {}, {}
  for _, m in ipairs(list) do
    seen[m.version] = true
    out[#out + 1] = {version = m.version, applied = applied[m.version] ~= nil, applied_at = applied[m.version],
      file = true}
  end
  for version, at in pairs(applied) do
    if not seen[version] then out[#out + 1] = {version = version, applied = true, applied_at = at, file = false} end
  end
  table.sort(out, function(a, b) return a.version < b.version end)
  return out
end

-- ---- the default database -------------------------------------------------------------------

local default
local explicit

local function app_settings()
  local rage = package.loaded.rage
  local app = type(rage) == "table" and rage.app
  local c = type(app) == "table" and type(app.config) == "table" and app.config.database
  if type(c) == "string" then return {url = c} end
  if type(c) == "table" then return c end
  return {}
end

local function get_default()
  if default then return default end
  local s = {}
  for k, v in pairs(explicit or app_settings()) do s[k] = v end
  if not explicit then
    local url = getenv("DATABASE_URL")
    if url and url ~= "" then s.url = url end
  end
  check_settings(s, 3)
  default = _M.new(s)
  return default
end

-- Sets the default database (replacing the one in use, whose idle connections are closed):
-- {url =, pool = 5, checkout_timeout = 5, statement_timeout = 30, connect_timeout = 5,
--  max_waiters = 1000, timezone = "UTC", statement_cache = 100, pipeline = 8}, or a URL. Seconds; 0 disables statement_timeout.
function _M.configure(settings)
  if type(settings) == "string" then settings = {url = settings} end
  if type(settings) ~= "table" then error("rage.db.configure expects a URL or a settings table", 2) end
  check_settings(settings, 2)
  if default then default:close() end
  default = nil
  explicit = settings
  get_default()
end

-- The default database handle.
function _M.default()
  return get_default()
end

for _, name in ipairs({"query", "query_one", "exec", "script", "transaction", "with_connection", "in_transaction",
  "stats", "listen",
  "notify", "migrate", "rollback", "migration_status"}) do
  local method = Database[name]
  _M[name] = function(...)
    return method(get_default(), ...)
  end
end

_M.Database = Database
return _M
