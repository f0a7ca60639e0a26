-- Specs for rage.app: loading an app directory (config, controllers, routes) and the errors a
-- broken app gives at boot. The working app is spec/fixtures/unit_app; broken ones are written
-- to temporary directories and removed after each spec.

local app_mod = require("rage.app")
local errors = require("rage.errors")
local log = require("rage.log")
local t = require("rage.test")

local FIXTURE = "spec/fixtures/unit_app"

-- A minimal working app; each broken app replaces or adds files.
local BASE = {
  ["config/routes.lua"] = 'return function(r) r:get("/", "pages#home") end\n',
  ["app/controllers/pages.lua"] = table.concat({
    'local Pages = rage.controller("pages")',
    'function Pages:home() self:render{plain = "home"} end',
    "return Pages", ""}, "\n"),
}

local dirs = {}

local function write(path, text)
  assert(os.execute("mkdir -p '" .. path:match("^(.*)/[^/]+$") .. "'") == 0)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

-- Writes an app made of BASE with `files` over it (false removes a file); returns its path.
local function make_app(files)
  local dir = os.tmpname()
  os.remove(dir)
  dirs[#dirs + 1] = dir
  local all = {}
  for k, v in pairs(BASE) do all[k] = v end
  for k, v in pairs(files or {}) do all[k] = v end
  for rel, text in pairs(all) do
    if text then write(dir .. "/" .. rel, text) end
  end
  return dir
end

-- The app.load error that loading `dir` raises.
local function boot_error(dir)
  local ok, err = pcall(app_mod.load, dir)
  assert.is_false(ok, "the app booted")
  assert.is_true(errors.is(err, "app.load"), "not an app.load error: " .. tostring(err))
  return err.message
end

describe("rage.app", function()
  local saved_level, saved_error

  before_each(function()
    saved_level, saved_error = log.level(), log.error
    log.error = function() end
  end)

  after_each(function()
    log.level(saved_level)
    log.error = saved_error
    for _, dir in ipairs(dirs) do os.execute("rm -rf '" .. dir .. "'") end
    dirs = {}
  end)

  describe("loading the fixture app", function()
    local app

    before_each(function()
      app = t.load(FIXTURE)
    end)

    it("knows its directory and environment", function()
      assert.equal(FIXTURE, app.dir)
      assert.equal("test", app.env)
      assert.equal("test", rage.env)
    end)

    it("merges config/environments/<env>.lua over config/application.lua", function()
      local c = app.config
      assert.same({text = "hi", punctuation = "!"}, c.greeting)
      assert.same({search = true, export = true}, c.features)
      assert.same({"grace"}, c.admins)
      assert.equal(64 * 1024, c.server.max_body)
      assert.equal("warn", c.log.level)
    end)

    it("applies the log level it configures", function()
      assert.equal("warn", log.level())
    end)

    it("loads controllers by file name, nested directories included", function()
      for _, name in ipairs({"application", "pages", "items", "admin/reports"}) do
        assert.is_table(app.controllers[name], name)
      end
    end)

    it("serves its routes through the controllers", function()
      assert.equal("home", t.request(app, "GET", "/").body)
      assert.same({greeting = "hello, ada!"}, t.request(app, "GET", "/hello/ada"):json())
      assert.same({slept = true}, t.request(app, "GET", "/nap?s=0.001"):json())
    end)

    it("runs the application controller's callbacks and rescue_from in every controller", function()
      local res = t.request(app, "GET", "/items")
      assert.equal(401, res.status)
      assert.same({error = "sign in first"}, res:json())

      local auth = {headers = {Authorization = "Bearer secret"}}
      res = t.request(app, "GET", "/items", auth)
      assert.equal(200, res.status)
      assert.same({{id = 1, name = "pen"}, {id = 2, name = "ink"}}, res:json())

      res = t.request(app, "GET", "/items/9", auth)
      assert.equal(404, res.status)
      assert.same({error = "no item 9"}, res:json())

      res = t.request(app, "GET", "/admin/reports", auth)
      assert.equal(200, res.status)
      assert.matches('"reports":[]', res.body, 1, true)
      assert.equal("ada", res:json().user)
      assert.equal(401, t.request(app, "GET", "/admin/reports").status)
    end)

    it("takes JSON bodies", function()
      local auth = {Authorization = "Bearer secret"}
      local res = t.request(app, "POST", "/items", {json = {name = "nib"}, headers = auth})
      assert.equal(201, res.status)
      assert.same({id = 3, name = "nib", by = "ada"}, res:json())
      res = t.request(app, "POST", "/items", {json = {name = ""}, headers = auth})
      assert.equal(422, res.status)
      res = t.request(app, "POST", "/items", {body = "{", headers = auth})
      assert.equal(400, res.status)
    end)

    it("answers 404 and 405 outside its routes", function()
      assert.equal(404, t.request(app, "GET", "/nowhere").status)
      assert.equal(405, t.request(app, "DELETE", "/items").status)
    end)

    it("loads again from scratch", function()
      local again = t.load(FIXTURE)
      assert.not_equal(app.controllers.pages, again.controllers.pages)
      assert.equal("home", t.request(again, "GET", "/").body)
    end)
  end)

  describe("boot errors", function()
    it("name the file and line of a syntax error in a controller", function()
      local dir = make_app({["app/controllers/broken.lua"] = 'local B = rage.controller("broken")\n\nfunction B:x(\n'})
      local msg = boot_error(dir)
      assert.matches(dir .. "/app/controllers/broken.lua:%d+:", msg)
      assert.matches("expected", msg)
    end)

    it("name the file and line of an error raised while a controller loads", function()
      local dir = make_app({["app/controllers/broken.lua"] = 'local B = rage.controller("broken")\nB:nope()\n'})
      local msg = boot_error(dir)
      assert.matches(dir .. "/app/controllers/broken.lua:2:", msg, 1, true)
    end)

    it("name the controller file and line for an unknown parent", function()
      local dir = make_app({["app/controllers/child.lua"] =
        'local Child = rage.controller("child", "missing")\nreturn Child\n'})
      local msg = boot_error(dir)
      assert.matches(dir .. "/app/controllers/child.lua:1: rage.controller: unknown parent controller 'missing'",
        msg, 1, true)
    end)

    it("name a controller file that does not return its controller", function()
      local dir = make_app({["app/controllers/lost.lua"] = 'local Lost = rage.controller("lost")\n'})
      local msg = boot_error(dir)
      assert.matches(dir .. "/app/controllers/lost.lua must return its controller", msg, 1, true)
    end)

    it("name an error object raised while a controller loads", function()
      local dir = make_app({["app/controllers/broken.lua"] = 'rage.error("setup.failed", "no key")\n'})
      local msg = boot_error(dir)
      assert.matches(dir .. "/app/controllers/broken.lua", msg, 1, true)
      assert.matches("no key", msg, 1, true)
    end)

    it("name a routes file that does not return a function", function()
      local dir = make_app({["config/routes.lua"] = "return {}\n"})
      assert.matches(dir .. "/config/routes.lua must return function(r) ... end", boot_error(dir), 1, true)
    end)

    it("name a routes file that is missing", function()
      local dir = make_app({["config/routes.lua"] = false})
      assert.matches(dir .. "/config/routes.lua", boot_error(dir), 1, true)
    end)

    it("name the line of a syntax error in the routes file", function()
      local dir = make_app({["config/routes.lua"] = 'return function(r)\n  r:get("/", "pages#home"\nend\n'})
      assert.matches(dir .. "/config/routes.lua:%d+:", boot_error(dir))
    end)

    it("name the line of the routes file that misuses the router", function()
      local dir = make_app({["config/routes.lua"] =
        'return function(r)\n  r:get("/", "pages#home")\n  r:get("/x", "no-hash")\nend\n'})
      local msg = boot_error(dir)
      assert.equal(1, select(2, msg:gsub("routes.lua", "")))
      assert.matches(dir .. "/config/routes.lua:3:", msg, 1, true)
      assert.matches("no-hash", msg, 1, true)
    end)

    it("name the routes file and the route that points to a missing controller", function()
      local dir = make_app({["config/routes.lua"] =
        'return function(r)\n  r:get("/", "pages#home")\n  r:get("/users", "users#index")\nend\n'})
      local msg = boot_error(dir)
      assert.matches(dir .. "/config/routes.lua", msg, 1, true)
      assert.matches("GET /users", msg, 1, true)
      assert.matches("controller 'users', which is not defined (expected app/controllers/users.lua)", msg, 1, true)
    end)

    it("name the routes file and the route that points to a missing action", function()
      local dir = make_app({["config/routes.lua"] =
        'return function(r)\n  r:get("/", "pages#home")\n  r:get("/about", "pages#about")\nend\n'})
      local msg = boot_error(dir)
      assert.matches(dir .. "/config/routes.lua", msg, 1, true)
      assert.matches("GET /about", msg, 1, true)
      assert.matches("controller 'pages' has no action 'about'", msg, 1, true)
    end)

    it("name a route to an action that is a controller method", function()
      local dir = make_app({["config/routes.lua"] = 'return function(r) r:get("/", "pages#render") end\n'})
      assert.matches("'render' is a controller method and cannot be an action", boot_error(dir), 1, true)
    end)

    it("name a callback that refers to a missing method", function()
      local dir = make_app({["app/controllers/pages.lua"] = table.concat({
        'local Pages = rage.controller("pages")',
        'Pages:before_action("load_page")',
        'function Pages:home() end',
        "return Pages", ""}, "\n")})
      assert.matches("before_action refers to a missing method 'load_page'", boot_error(dir), 1, true)
    end)

    it("name a settings file that does not return a table", function()
      local dir = make_app({["config/application.lua"] = 'return "production"\n'})
      assert.matches(dir .. "/config/application.lua must return a table of settings", boot_error(dir), 1, true)
      dir = make_app({["config/environments/test.lua"] = "return 42\n"})
      assert.matches(dir .. "/config/environments/test.lua must return a table of settings", boot_error(dir), 1, true)
    end)

    it("name the line of an error in a settings file", function()
      local dir = make_app({["config/application.lua"] = 'local x = nil\nreturn {port = x.port}\n'})
      assert.matches(dir .. "/config/application.lua:2:", boot_error(dir), 1, true)
    end)

    describe("for invalid server settings", function()
      local function server_error(settings)
        return boot_error(make_app({["config/application.lua"] = "return {server = " .. settings .. "}\n"}))
      end

      it("reject unknown names", function()
        assert.equal("config.server: unknown server setting 'max_bodyy'", server_error("{max_bodyy = 1}"))
      end)

      it("reject values that are not numbers", function()
        assert.equal("config.server: server setting 'max_body' must be a number", server_error('{max_body = "1MB"}'))
      end)

      it("reject zero, negative and huge values", function()
        for _, v in ipairs({"0", "-1", "1e13", "0/0"}) do
          assert.equal("config.server: server setting 'request_timeout' must be a positive number",
            server_error("{request_timeout = " .. v .. "}"), v)
        end
      end)

      it("reject head limits that are too large", function()
        assert.matches("config.server: server head limits are too large", server_error("{max_headers = 20000}"), 1, true)
      end)

      it("reject a server entry that is not a table", function()
        assert.equal("config.server must be a table", server_error('"fast"'))
      end)

      it("accept host, port and workers, which belong to the command line", function()
        local dir = make_app({["config/application.lua"] =
          'return {server = {host = "0.0.0.0", port = 8080, workers = 2, max_body = 1024}}\n'})
        local app = app_mod.load(dir)
        assert.equal(8080, app.config.server.port)
      end)
    end)

    it("reject an unknown log level", function()
      local dir = make_app({["config/application.lua"] = 'return {log = {level = "loud"}}\n'})
      assert.matches("config.log.level: rage.log.level: unknown level 'loud'", boot_error(dir), 1, true)
    end)
  end)
end)
