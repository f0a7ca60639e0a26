-- apps/todo's own specs: `rage-lua db migrate apps/todo && rage-lua test apps/todo` with
-- DATABASE_URL naming a database (the ctest entry starts a throwaway PostgreSQL).
local t = require("rage.test")

describe("apps/todo", function()
  local app = t.app()

  before_each(function()
    rage.db.exec("TRUNCATE todos, tags, todo_tags RESTART IDENTITY CASCADE")
  end)

  local function create(body)
    return t.request(app, "POST", "/todos", {json = body})
  end

  it("creates, lists, shows, updates and deletes todos with tags", function()
    local res = create{title = "write docs", tags = {"work", "docs"}}
    assert.equal(201, res.status)
    local todo = res:json()
    assert.equal("/todos/" .. todo.id, res.headers.location)
    assert.same({"docs", "work"}, todo.tags)
    assert.is_false(todo.done)

    local list = t.request(app, "GET", "/todos"):json()
    assert.equal(1, #list)
    assert.equal("write docs", list[1].title)

    res = t.request(app, "PATCH", "/todos/" .. todo.id, {json = {title = "write more docs", tags = {"docs"}}})
    assert.equal(200, res.status)
    assert.same({"docs"}, res:json().tags)
    assert.equal("write more docs", res:json().title)

    assert.is_true(t.request(app, "POST", "/todos/" .. todo.id .. "/done"):json().done)
    assert.equal(204, t.request(app, "DELETE", "/todos/" .. todo.id).status)
    assert.equal(404, t.request(app, "GET", "/todos/" .. todo.id).status)
  end)

  it("answers [] for an empty list, and filters by tag", function()
    assert.equal("[]", t.request(app, "GET", "/todos").body)
    create{title = "a", tags = {"x"}}
    create{title = "b", tags = {"y"}}
    local only = t.request(app, "GET", "/todos?tag=y"):json()
    assert.equal(1, #only)
    assert.equal("b", only[1].title)
    local tags = t.request(app, "GET", "/tags"):json()
    assert.same({{name = "x", todos = 1}, {name = "y", todos = 1}}, tags)
  end)

  it("answers 422 for invalid input and keeps nothing of a failed create", function()
    assert.equal(422, create{title = ""}.status)
    assert.equal(422, create{title = string.rep("x", 201)}.status)
    assert.equal(422, create{title = "ok", done = "maybe"}.status)
    local res = create{title = "half", tags = {"fine", "Not Valid"}}
    assert.equal(422, res.status)
    assert.matches("check constraint", res:json().error)
    -- the transaction rolled back: neither the todo nor the first tag exists
    assert.equal("[]", t.request(app, "GET", "/todos").body)
    assert.equal("[]", t.request(app, "GET", "/tags").body)
  end)

  it("keeps parameters as data", function()
    local res = create{title = "'); DROP TABLE todos; --"}
    assert.equal(201, res.status)
    assert.equal("'); DROP TABLE todos; --", t.request(app, "GET", "/todos/" .. res:json().id):json().title)
    assert.equal(404, t.request(app, "GET", "/todos/1%20OR%201=1").status)
  end)

  it("serves concurrent requests from the pool", function()
    local fns = {}
    for i = 1, 20 do
      fns[i] = function() return create{title = "t" .. i}.status end
    end
    local statuses = {rage.await(unpack(fns))}
    for i = 1, 20 do assert.equal(201, statuses[i]) end
    assert.equal(20, #t.request(app, "GET", "/todos"):json())
    assert.is_true(t.request(app, "GET", "/health"):json().ok)
  end)
end)
