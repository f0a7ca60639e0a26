local Host = rage.controller("host")

-- Calls a C function that the embedding program registered.
function Host:greet()
  self:render{json = {message = rage.c.greet(self.params.name)}}
end

-- Waits on the host's loop, through the same scheduler as every other fiber.
function Host:wait()
  rage.sleep((tonumber(self.params.ms) or 10) / 1000)
  self:render{json = {waited = true}}
end

return Host
