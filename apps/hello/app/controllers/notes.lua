-- A small JSON resource kept in memory (one store per worker): the shape of a Rails API
-- controller, with callbacks and error handling.
local Notes = rage.controller("notes")

local store, next_id = {}, 1

Notes:before_action("find_note", {only = {"show", "update", "destroy", "pin"}})

function Notes:index()
  local list = rage.json.array()
  for id = 1, next_id - 1 do
    if store[id] then list[#list + 1] = store[id] end
  end
  self:render{json = list}
end

function Notes:show()
  self:render{json = self.note}
end

local function validate(params)
  local text = params.text
  if type(text) ~= "string" or text == "" then
    rage.error("notes.invalid", "text must be a non-empty string")
  end
  return text
end

function Notes:create()
  local note = {id = next_id, text = validate(self.params), pinned = false}
  store[next_id], next_id = note, next_id + 1
  self:render{json = note, status = "created", headers = {location = self:url_for("note", {id = note.id})}}
end

function Notes:update()
  self.note.text = validate(self.params)
  self:render{json = self.note}
end

function Notes:destroy()
  store[self.note.id] = nil
  self:head("no_content")
end

function Notes:pin()
  self.note.pinned = true
  self:render{json = self.note}
end

-- Rendering in a before_action halts the chain: the action does not run.
function Notes:find_note()
  self.note = store[tonumber(self.params.id)]
  if not self.note then self:render{json = {error = "not found"}, status = "not_found"} end
end

return Notes
