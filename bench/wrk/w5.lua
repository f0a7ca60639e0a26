-- W5: each request asks for the items of a random account, 1..1000 (bench/db/schema.sql).
math.randomseed(os.time())

request = function()
  return wrk.format("GET", "/accounts/" .. math.random(1, 1000) .. "/items")
end
