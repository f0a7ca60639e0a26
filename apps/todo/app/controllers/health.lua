local Health = rage.controller("health")

-- The database answers and the pool's counters.
function Health:show()
  local row = rage.db.query_one("SELECT 1 AS ok")
  self:render{json = {ok = row.ok == 1, pool = rage.db.stats()}}
end

return Health
