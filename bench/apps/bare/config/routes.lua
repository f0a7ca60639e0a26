local HEADERS = {["content-type"] = "application/json"}
local BODY = '{"message":"Hello, World!"}'
local WORLD = "SELECT id, randomnumber FROM worlds WHERE id = $1"

return function(r)
  r:get("/json", function() return 200, HEADERS, BODY end)
  r:get("/sleep", function()
    rage.sleep(0.01)
    return 200, HEADERS, BODY
  end)
  -- W2 and W3 (DATABASE_URL names the database).
  r:get("/db", function()
    return 200, HEADERS, rage.json.encode(rage.db.query_one(WORLD, math.random(1, 10000)))
  end)
  r:get("/queries", function(req)
    local n = math.floor(tonumber(req:query().queries) or 1)
    if n < 1 then n = 1 elseif n > 500 then n = 500 end
    local worlds = rage.json.array({})
    for i = 1, n do
      worlds[i] = rage.db.query_one(WORLD, math.random(1, 10000))
    end
    return 200, HEADERS, rage.json.encode(worlds)
  end)
end
