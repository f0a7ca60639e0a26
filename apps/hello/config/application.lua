-- Settings for apps/hello. Environment files in config/environments/ override these.
return {
  log = {level = "info"},
  server = {
    max_body = 1024 * 1024,   -- bytes
    keepalive_timeout = 65,   -- seconds
  },
}
