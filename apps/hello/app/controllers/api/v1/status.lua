-- GET /api/v1/status: a namespaced controller.
local Status = rage.controller("api/v1/status")

function Status:show()
  self:render{json = {status = "ok", version = rage.VERSION, env = rage.env}}
end

return Status
