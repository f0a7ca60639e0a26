-- Shared by every controller of apps/hello.
local Application = rage.controller("application")

-- Errors with a kind get a JSON answer instead of a bare 500.
Application:rescue_from("notes.invalid", function(self, err)
  self:render{json = {error = err.message}, status = "unprocessable_entity"}
end)

return Application
