local Greetings = rage.controller("greetings")

function Greetings:show()
  self:render{json = {greeting = "Hello, " .. self.params.name .. "!"}}
end

return Greetings
