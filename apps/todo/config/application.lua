-- apps/todo: a JSON API on PostgreSQL. DATABASE_URL names the database (`make run` starts a
-- throwaway one when it is not set).
return {
  log = {level = "info"},
  database = {pool = 5, checkout_timeout = 5, statement_timeout = 10},
}
