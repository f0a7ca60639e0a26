-- Specs for mounting one rage app inside another (r:mount(prefix, app)).
local t = require("rage.test")

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

describe("a mounted app", function()
  local root, app

  setup(function()
    root = os.tmpname()
    os.remove(root)
    os.execute("mkdir -p " .. root .. "/admin/config " .. root .. "/admin/app/controllers " ..
      root .. "/main/config " .. root .. "/main/app/controllers")
    write(root .. "/admin/config/routes.lua", [[
return function(r)
  r:get("/users/:id", "users#show")
  r:root("users#index")
end
]])
    write(root .. "/admin/app/controllers/users.lua", [[
local Users = rage.controller("users")
Users:before_action(function(self) self.headers["x-admin"] = "yes" end)
function Users:index() self:render{json = {admin = "index"}} end
function Users:show() self:render{json = {admin_user = self.params.id, q = self.params.q}} end
return Users
]])
    write(root .. "/main/config/routes.lua", string.format([[
return function(r)
  r:get("/users/:id", "users#show")
  r:mount("/admin", require("rage.app").load(%q))
end
]], root .. "/admin"))
    write(root .. "/main/app/controllers/users.lua", [[
local Users = rage.controller("users")
function Users:show() self:render{json = {user = self.params.id}} end
return Users
]])
    app = t.load(root .. "/main")
  end)

  teardown(function()
    os.execute("rm -rf " .. root)
  end)

  it("serves paths under its prefix with its own routes, controllers and callbacks", function()
    local res = t.request(app, "GET", "/admin/users/7?q=x")
    assert.equal(200, res.status)
    assert.same({admin_user = "7", q = "x"}, res:json())
    assert.equal("yes", res.headers["x-admin"])
    assert.same({admin = "index"}, t.request(app, "GET", "/admin"):json())
  end)

  it("leaves the host app's own routes and controllers alone", function()
    local res = t.request(app, "GET", "/users/3")
    assert.same({user = "3"}, res:json())
    assert.is_nil(res.headers["x-admin"])
    assert.equal(404, t.request(app, "GET", "/admin/nope").status)
  end)
end)
