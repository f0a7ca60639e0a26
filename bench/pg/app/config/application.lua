-- bench/pg: W2 (/db) and W3 (/queries?queries=20) on rage.db, as bench/pg/run sets it up from
-- the environment (DATABASE_URL gives the database):
--   BENCH_PG_POOL      connections per worker (5)
--   BENCH_PG_PIPELINE  statements in flight per connection (8; 1: no pipelining)
--   BENCH_PG_CACHE     prepared statements kept per connection (100; 0: none)
--   BENCH_PG_LEASE     "query" (a connection per statement) or "request" (with_connection)
local function num(name, default)
  return tonumber(os.getenv(name) or "") or default
end

return {
  log = {level = "warn"},
  request_id = false,
  static = false,
  database = {
    pool = num("BENCH_PG_POOL", 5),
    pipeline = num("BENCH_PG_PIPELINE", 8),
    statement_cache = num("BENCH_PG_CACHE", 100),
  },
}
