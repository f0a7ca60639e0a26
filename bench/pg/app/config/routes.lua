-- W2 and W3 of the benchmark notes, as plain Lua handlers (no controller), so that what is
-- measured is rage.db and the pool.
local db = rage.db
local json = rage.json
local random, floor, tonumber, min, max = math.random, math.floor, tonumber, math.min, math.max

local HEADERS = {["content-type"] = "application/json"}
local SQL = "SELECT id, randomnumber FROM worlds WHERE id = $1"
local per_request = os.getenv("BENCH_PG_LEASE") == "request"

local function world()
  return db.query_one(SQL, random(1, 10000))
end

local function queries(n)
  local out = json.array()
  for i = 1, n do out[i] = world() end
  return out
end

local function one()
  return json.encode(world())
end

local function many(req)
  local n = floor(tonumber(req:query().queries) or 1)
  return json.encode(queries(max(1, min(500, n))))
end

local function leased(f)
  return function(req)
    return db.with_connection(function() return f(req) end)
  end
end

if per_request then
  one, many = leased(one), leased(many)
end

return function(r)
  r:get("/db", function(req) return 200, HEADERS, one(req) end)
  r:get("/queries", function(req) return 200, HEADERS, many(req) end)
end
