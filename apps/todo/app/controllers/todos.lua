-- /todos: create, list, show, update and delete todos with tags. Writes that touch several
-- tables run in one transaction; a failed validation rolls everything back and answers 422.
local Todos = rage.controller("todos")

Todos:before_action("find_todo", {only = {"show", "update", "destroy", "done"}})

local SELECT = [[
  SELECT t.id, t.title, t.done, t.created_at,
         COALESCE(array_agg(g.name ORDER BY g.name) FILTER (WHERE g.name IS NOT NULL), '{}') AS tags
    FROM todos t
    LEFT JOIN todo_tags tt ON tt.todo_id = t.id
    LEFT JOIN tags g ON g.id = tt.tag_id
]]

local function load(id)
  return rage.db.query_one(SELECT .. " WHERE t.id = $1 GROUP BY t.id", id)
end

local function with_array_tags(todo)
  todo.tags = rage.json.array(todo.tags)
  return todo
end

-- Validates the params of a create or update; `partial` allows missing fields.
local function attributes(params, partial)
  local title, done, tags = params.title, params.done, params.tags
  if title ~= nil or not partial then
    if type(title) ~= "string" or #title == 0 or #title > 200 then
      rage.error("todos.invalid", "title must be 1 to 200 characters")
    end
  end
  if done ~= nil and type(done) ~= "boolean" then
    if done == "true" or done == "false" then done = done == "true"
    else rage.error("todos.invalid", "done must be true or false") end
  end
  if tags ~= nil and type(tags) ~= "table" then rage.error("todos.invalid", "tags must be a list") end
  return title, done, tags
end

local function set_tags(id, tags)
  rage.db.exec("DELETE FROM todo_tags WHERE todo_id = $1", id)
  for _, name in ipairs(tags) do
    if type(name) ~= "string" then rage.error("todos.invalid", "tags must be strings") end
    local tag = rage.db.query_one(
      "INSERT INTO tags (name) VALUES ($1) ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id", name)
    rage.db.exec("INSERT INTO todo_tags (todo_id, tag_id) VALUES ($1, $2) ON CONFLICT DO NOTHING", id, tag.id)
  end
end

function Todos:index()
  local rows
  if self.params.tag then
    rows = rage.db.query(SELECT .. [[ WHERE t.id IN (SELECT tt2.todo_id FROM todo_tags tt2
      JOIN tags g2 ON g2.id = tt2.tag_id WHERE g2.name = $1) GROUP BY t.id ORDER BY t.id]], self.params.tag)
  else
    rows = rage.db.query(SELECT .. " GROUP BY t.id ORDER BY t.id")
  end
  for _, row in ipairs(rows) do with_array_tags(row) end
  self:render{json = rows}
end

function Todos:show()
  self:render{json = with_array_tags(self.todo)}
end

function Todos:create()
  local title, done, tags = attributes(self.params, false)
  local id = rage.db.transaction(function()
    local row = rage.db.query_one("INSERT INTO todos (title, done) VALUES ($1, $2) RETURNING id", title, done or false)
    if tags then set_tags(row.id, tags) end
    return row.id
  end)
  self:render{json = with_array_tags(load(id)), status = "created",
    headers = {location = self:url_for("todo", {id = id})}}
end

function Todos:update()
  local title, done, tags = attributes(self.params, true)
  rage.db.transaction(function()
    rage.db.exec("UPDATE todos SET title = COALESCE($2, title), done = COALESCE($3, done) WHERE id = $1",
      self.todo.id, title, done)
    if tags then set_tags(self.todo.id, tags) end
  end)
  self:render{json = with_array_tags(load(self.todo.id))}
end

function Todos:done()
  rage.db.exec("UPDATE todos SET done = true WHERE id = $1", self.todo.id)
  self:render{json = with_array_tags(load(self.todo.id))}
end

function Todos:destroy()
  rage.db.exec("DELETE FROM todos WHERE id = $1", self.todo.id)
  self:head("no_content")
end

function Todos:find_todo()
  local id = tonumber(self.params.id)
  self.todo = id and id == math.floor(id) and id < 2^31 and load(id)
  if not self.todo then self:render{json = {error = "not found"}, status = "not_found"} end
end

return Todos
