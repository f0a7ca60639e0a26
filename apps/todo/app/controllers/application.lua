-- Shared error handling: database and validation errors become 422, an unavailable database 503.
local Application = rage.controller("application")

local function unprocessable(self, err)
  self:render{json = {error = err.message}, status = "unprocessable_entity"}
end

Application:rescue_from("todos.invalid", unprocessable)
Application:rescue_from("db.check_violation", unprocessable)
Application:rescue_from("db.not_null_violation", unprocessable)
Application:rescue_from("db.unique_violation", unprocessable)
Application:rescue_from("db.pool_timeout", function(self)
  self:render{json = {error = "the database is busy; try again"}, status = "service_unavailable"}
end)
Application:rescue_from("db.connection", function(self)
  self:render{json = {error = "the database is unavailable"}, status = "service_unavailable"}
end)

return Application
