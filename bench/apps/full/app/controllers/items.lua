-- W5: GET /accounts/:id/items, an account's 20 items. The before_action validates the id from
-- the path (404 unless it is an account id); the action runs one query and renders the rows.
local Items = rage.controller("items")

Items:before_action("find_account")

local ITEMS = "SELECT id, title, price FROM items WHERE account_id = $1 ORDER BY id LIMIT 20"

function Items:find_account()
  local id = tonumber(self.params.id)
  if not id or id ~= math.floor(id) or id < 1 or id > 1000 then
    return self:head(404)
  end
  self.account_id = id
end

function Items:index()
  self:render{json = rage.db.query(ITEMS, self.account_id)}
end

return Items
