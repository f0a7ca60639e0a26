-- The well-behaved upstream of the HTTP client specs (spec/unit/http_spec.lua): a rage-lua app
-- that echoes what it receives and can be slow, chunked, large or redirecting on request.
return {
  log = {level = "warn"},
  server = {
    max_body = 8 * 1024 * 1024,
    keepalive_timeout = 30,
    max_requests = 100000,
  },
}
