-- The bare core for benchmarks: no middleware and no controller, a Lua handler per route. Set
-- beside bench/apps/full it measures what the framework layer costs, on the database workloads
-- too (the same pool size: 10).
return {
  log = {level = "warn"},
  request_id = false,
  static = false,
  database = {pool = 10},
}
