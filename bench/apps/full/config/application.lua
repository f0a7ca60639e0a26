-- bench/apps/full: the full rage-lua stack for bench/run, shaped like an app `rage-lua new`
-- generates (default middleware: request id, static files from public/), plus a database.
-- DATABASE_URL names the database (bench/run starts a throwaway one with bench/db/schema.sql).
return {
  log = {level = "info"},
  server = {
    max_body = 1024 * 1024,
    -- W6 holds 10,000 idle keep-alive connections open during a W1 run: room for them and
    -- wrk's, kept open as long as the peers keep theirs.
    max_connections = 16000,
    keepalive_timeout = 300,
  },
  -- The same pool size as the peers' (Node's pg Pool max 10, the raw C ceiling's 10).
  database = {pool = 10},
}
