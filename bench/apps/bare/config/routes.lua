local HEADERS = {["content-type"] = "application/json"}
local BODY = '{"message":"Hello, World!"}'

return function(r)
  r:get("/json", function() return 200, HEADERS, BODY end)
  r:get("/sleep", function()
    rage.sleep(0.01)
    return 200, HEADERS, BODY
  end)
end
