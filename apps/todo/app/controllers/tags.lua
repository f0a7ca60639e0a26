local Tags = rage.controller("tags")

-- Every tag with how many todos carry it.
function Tags:index()
  self:render{json = rage.db.query([[
    SELECT g.name, count(tt.todo_id)::int AS todos
      FROM tags g LEFT JOIN todo_tags tt ON tt.tag_id = g.id
     GROUP BY g.name ORDER BY g.name]])}
end

return Tags
