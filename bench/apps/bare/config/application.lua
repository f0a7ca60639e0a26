-- The bare core for benchmarks: no middleware and no controller, a Lua handler per route. Set
-- beside bench/apps/full it measures what the framework layer costs, on the database workloads
-- too (the same pool size: 10).
return {
  log = {level = "warn"},
  request_id = false,
  static = false,
  database = {pool = 10},
  -- W6: room for 10,000 idle keep-alive connections beside wrk's, kept open (as in bench/apps/full).
  server = {max_connections = 16000, keepalive_timeout = 300},
}
