-- Every controller inherits from this one: shared callbacks and error handling go here.
local Application = rage.controller("application")

return Application
