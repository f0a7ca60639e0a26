-- The bare core for benchmarks: no middleware and no controller, a Lua handler per route. Set
-- beside apps/hello's /json it measures what the framework layer costs.
return {
  log = {level = "warn"},
  request_id = false,
  static = false,
}
