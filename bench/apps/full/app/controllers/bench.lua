local Bench = rage.controller("bench")

local WORLD = "SELECT id, randomnumber FROM worlds WHERE id = $1"

local function random_id()
  return math.random(1, 10000)
end

-- W1.
function Bench:json()
  self:render{json = {message = "Hello, World!"}}
end

-- W2: one random row.
function Bench:db()
  self:render{json = rage.db.query_one(WORLD, random_id())}
end

-- W3: ?queries=N random rows (1..500), one query after another.
function Bench:queries()
  local n = math.floor(tonumber(self.params.queries) or 1)
  if n < 1 then n = 1 elseif n > 500 then n = 500 end
  local worlds = rage.json.array({})
  for i = 1, n do
    worlds[i] = rage.db.query_one(WORLD, random_id())
  end
  self:render{json = worlds}
end

-- W4: a 10 ms wait.
function Bench:wait()
  rage.sleep(0.01)
  self:render{json = {message = "Hello, World!"}}
end

return Bench
