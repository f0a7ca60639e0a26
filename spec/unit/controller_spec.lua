-- Specs for rage.controller: rendering, callbacks, rescue_from, redirects and streaming. Each
-- spec defines its controllers from scratch and sends requests through rage.test, so the same
-- router → dispatcher → controller path as a real request runs.

local controller = require("rage.controller")
local router = require("rage.router")
local dispatcher = require("rage.dispatcher")
local errors = require("rage.errors")
local log = require("rage.log")
local t = require("rage.test")

-- An app for routes given as {"GET /path controller#action", ...} over the controllers defined
-- so far.
local function app(routes)
  local r = router.new()
  r:draw(function(m)
    for _, line in ipairs(routes) do
      local verb, path, target = line:match("^(%u+) (%S+) (%S+)$")
      m[verb:lower()](m, path, target)
    end
  end)
  r:compile()
  dispatcher.prepare(r, controller.registry)
  return {router = r, handler = dispatcher.new({router = r})}
end

-- One request to a one-route app: GET /x runs name#action.
local function get(name, action, opts)
  return t.request(app({"GET /x " .. name .. "#" .. action}), "GET", "/x", opts)
end

-- The message an error raised by fn carries, and fn must raise.
local function raises(fn, ...)
  local ok, err = pcall(fn, ...)
  assert.is_false(ok, "expected an error")
  return err
end

local function here()
  return "controller_spec.lua:" .. debug.getinfo(2, "l").currentline .. ":"
end

describe("rage.controller", function()
  local logged, saved_error, saved_level

  before_each(function()
    controller.reset()
    logged = {}
    saved_error, saved_level = log.error, log.level()
    log.level("warn")
    log.error = function(...) logged[#logged + 1] = table.concat({...}) end
  end)

  after_each(function()
    log.error = saved_error
    log.level(saved_level)
    controller.reset()
  end)

  describe("render", function()
    it("renders JSON with its content type", function()
      local C = rage.controller("c")
      function C:a() self:render{json = {ok = true, list = rage.json.array(), none = rage.null}} end
      local res = get("c", "a")
      assert.equal(200, res.status)
      assert.equal("application/json; charset=utf-8", res.headers["content-type"])
      assert.equal(true, res:json().ok)
      assert.equal(rage.null, res:json().none)
      assert.matches('"list":%[%]', res.body)
    end)

    it("renders plain text, HTML and raw bodies with their content types", function()
      local C = rage.controller("c")
      function C:plain() self:render{plain = "hi"} end
      function C:html() self:render{html = "<p>hi</p>"} end
      function C:body() self:render{body = "\0\1\2"} end
      local a = app({"GET /plain c#plain", "GET /html c#html", "GET /body c#body"})
      local res = t.request(a, "GET", "/plain")
      assert.equal("hi", res.body)
      assert.equal("text/plain; charset=utf-8", res.headers["content-type"])
      res = t.request(a, "GET", "/html")
      assert.equal("<p>hi</p>", res.body)
      assert.equal("text/html; charset=utf-8", res.headers["content-type"])
      res = t.request(a, "GET", "/body")
      assert.equal("\0\1\2", res.body)
      assert.equal("application/octet-stream", res.headers["content-type"])
    end)

    it("renders non-string plain values with tostring", function()
      local C = rage.controller("c")
      function C:a() self:render{plain = 42} end
      assert.equal("42", get("c", "a").body)
    end)

    it("renders JSON false and null rather than an empty body", function()
      local C = rage.controller("c")
      function C:f() self:render{json = false} end
      function C:n() self:render{json = rage.null} end
      local a = app({"GET /f c#f", "GET /n c#n"})
      assert.equal("false", t.request(a, "GET", "/f").body)
      assert.equal("null", t.request(a, "GET", "/n").body)
    end)

    it("takes content_type over the default one", function()
      local C = rage.controller("c")
      function C:a() self:render{json = {data = {}}, content_type = "application/vnd.api+json"} end
      assert.equal("application/vnd.api+json", get("c", "a").headers["content-type"])
    end)

    it("keeps a content type set earlier with set_header", function()
      local C = rage.controller("c")
      function C:a()
        self:set_header("Content-Type", "text/csv")
        self:render{plain = "a,b\n"}
      end
      assert.equal("text/csv", get("c", "a").headers["content-type"])
    end)

    it("sets headers with lower-case names and numbers as strings", function()
      local C = rage.controller("c")
      function C:a()
        self:set_header("X-Request-Cost", 3)
        self:render{plain = "x", headers = {["X-Total-Count"] = 12, ["Cache-Control"] = "no-store"}}
      end
      local res = get("c", "a")
      assert.equal("12", res.headers["x-total-count"])
      assert.equal("3", res.headers["x-request-cost"])
      assert.equal("no-store", res.headers["cache-control"])
    end)

    it("renders an empty body when given no content", function()
      local C = rage.controller("c")
      function C:a() self:render{status = "accepted"} end
      local res = get("c", "a")
      assert.equal(202, res.status)
      assert.equal("", res.body)
    end)

    describe("status", function()
      it("takes numbers", function()
        local C = rage.controller("c")
        function C:a() self:render{plain = "tea", status = 418} end
        assert.equal(418, get("c", "a").status)
      end)

      it("takes Rails' symbols", function()
        local C = rage.controller("c")
        local expect = {created = 201, no_content = 204, see_other = 303, not_found = 404,
                        unprocessable_entity = 422, unprocessable_content = 422, too_many_requests = 429,
                        service_unavailable = 503}
        for sym, code in pairs(expect) do
          C[sym] = function(self) self:render{json = {}, status = sym} end
          assert.equal(code, get("c", sym).status, sym)
          controller.reset()
          C = rage.controller("c")
        end
      end)

      it("rejects unknown symbols and out-of-range numbers at the caller's line", function()
        local C = rage.controller("c")
        local inst = setmetatable({headers = {}}, C)
        local line
        local err = raises(function() line = here(); inst:render{plain = "x", status = "teapot"} end)
        assert.matches(line, err, 1, true)
        assert.matches("unknown status 'teapot'", err, 1, true)
        for _, bad in ipairs({99, 1000, 200.5}) do
          inst = setmetatable({headers = {}}, C)
          assert.matches("invalid status", raises(inst.render, inst, {status = bad}))
        end
      end)
    end)

    it("raises on a second render, at the caller's line", function()
      local C = rage.controller("c")
      local line
      function C:a()
        self:render{plain = "one"}
        line = here(); self:render{plain = "two"}
      end
      local res = get("c", "a")
      assert.equal(500, res.status)
      assert.equal("Internal Server Error\n", res.body)
      assert.matches(line .. " render or head was already called", logged[1], 1, true)
    end)

    it("raises when render gets no table", function()
      local C = rage.controller("c")
      local inst = setmetatable({headers = {}}, C)
      assert.matches("render expects a table", raises(inst.render, inst, "text"))
    end)
  end)

  describe("head", function()
    it("answers a status and headers without a body", function()
      local C = rage.controller("c")
      function C:a() self:head("created", {Location = "/things/1"}) end
      local res = get("c", "a")
      assert.equal(201, res.status)
      assert.equal("/things/1", res.headers.location)
      assert.equal("", res.body)
    end)

    it("defaults to 200 and counts as rendering", function()
      local C = rage.controller("c")
      local rendered
      function C:a()
        self:head()
        rendered = self:is_rendered()
      end
      assert.equal(200, get("c", "a").status)
      assert.is_true(rendered)
    end)

    it("cannot follow render", function()
      local C = rage.controller("c")
      function C:a()
        self:render{plain = "x"}
        self:head(204)
      end
      assert.equal(500, get("c", "a").status)
      assert.matches("already called", logged[1])
    end)
  end)

  describe("callbacks", function()
    local seen

    before_each(function() seen = {} end)

    local function note(name)
      return function() seen[#seen + 1] = name end
    end

    it("run before and after the action, in declaration order", function()
      local C = rage.controller("c")
      C:before_action(note("b1"))
      C:before_action("b2")
      C:after_action(note("a1"))
      C:after_action("a2")
      C.b2 = note("b2")
      C.a2 = note("a2")
      function C:act()
        seen[#seen + 1] = "action"
        self:render{plain = "ok"}
      end
      assert.equal("ok", get("c", "act").body)
      assert.same({"b1", "b2", "action", "a1", "a2"}, seen)
    end)

    it("halt the chain when a before callback renders", function()
      local C = rage.controller("c")
      C:before_action(note("b1"))
      C:before_action(function(self) seen[#seen + 1] = "deny"; self:head(403) end)
      C:before_action(note("b3"))
      C:after_action(note("after"))
      C:around_action(function(_, action) seen[#seen + 1] = "around"; action() end)
      function C:act() seen[#seen + 1] = "action" end
      local res = get("c", "act")
      assert.equal(403, res.status)
      assert.same({"b1", "deny"}, seen)
    end)

    it("halt on redirect_to in a before callback", function()
      local C = rage.controller("c")
      C:before_action(function(self) self:redirect_to("/login") end)
      function C:act() seen[#seen + 1] = "action" end
      local res = get("c", "act")
      assert.equal(302, res.status)
      assert.equal("/login", res.headers.location)
      assert.same({}, seen)
    end)

    it("let after callbacks see the rendered response", function()
      local C = rage.controller("c")
      local status
      C:after_action(function(self) status = self.status; self:set_header("X-After", "1") end)
      function C:act() self:render{plain = "x", status = 201} end
      local res = get("c", "act")
      assert.equal(201, status)
      assert.equal("1", res.headers["x-after"])
    end)

    describe("only and except", function()
      local function build(opts)
        local C = rage.controller("c")
        C:before_action(note("cb"), opts)
        for _, name in ipairs({"index", "show", "update"}) do
          C[name] = function() seen[#seen + 1] = name end
        end
        return app({"GET /index c#index", "GET /show c#show", "GET /update c#update"})
      end

      local function run(a, ...)
        seen = {}
        for _, name in ipairs({...}) do t.request(a, "GET", "/" .. name) end
        return seen
      end

      it("only: one name", function()
        assert.same({"index", "cb", "show", "update"}, run(build({only = "show"}), "index", "show", "update"))
      end)

      it("only: a list", function()
        assert.same({"cb", "index", "cb", "show", "update"},
          run(build({only = {"index", "show"}}), "index", "show", "update"))
      end)

      it("except", function()
        assert.same({"cb", "index", "show", "cb", "update"},
          run(build({except = {"show"}}), "index", "show", "update"))
      end)
    end)

    describe("if and unless", function()
      it("take method names and functions, per request", function()
        local C = rage.controller("c")
        C:before_action(note("admin"), {["if"] = "is_admin"})
        C:before_action(note("guest"), {unless = function(self) return self.params.role == "admin" end})
        function C:is_admin() return self.params.role == "admin" end
        function C:act() seen[#seen + 1] = "action" end
        local a = app({"GET /x c#act"})
        t.request(a, "GET", "/x?role=admin")
        assert.same({"admin", "action"}, seen)
        seen = {}
        t.request(a, "GET", "/x?role=guest")
        assert.same({"guest", "action"}, seen)
      end)

      it("apply to around callbacks too", function()
        local C = rage.controller("c")
        C:around_action(function(_, action) seen[#seen + 1] = "around"; action() end,
          {["if"] = function(self) return self.params.wrap == "1" end})
        function C:act() seen[#seen + 1] = "action" end
        local a = app({"GET /x c#act"})
        t.request(a, "GET", "/x?wrap=1")
        t.request(a, "GET", "/x")
        assert.same({"around", "action", "action"}, seen)
      end)
    end)

    describe("around_action", function()
      it("wraps the action, first declared outermost", function()
        local C = rage.controller("c")
        C:before_action(note("before"))
        C:around_action(function(_, action)
          seen[#seen + 1] = "outer in"
          action()
          seen[#seen + 1] = "outer out"
        end)
        C:around_action(function(_, action)
          seen[#seen + 1] = "inner in"
          action()
          seen[#seen + 1] = "inner out"
        end)
        C:after_action(note("after"))
        function C:act() seen[#seen + 1] = "action"; self:render{plain = "ok"} end
        assert.equal("ok", get("c", "act").body)
        assert.same({"before", "outer in", "inner in", "action", "inner out", "outer out", "after"}, seen)
      end)

      it("can wait around the action", function()
        local C = rage.controller("c")
        C:around_action(function(self, action)
          local t0 = rage.clock()
          action()
          self:set_header("X-Runtime", ("%.3f"):format(rage.clock() - t0))
        end)
        function C:act() rage.sleep(0.01); self:render{plain = "ok"} end
        local res = get("c", "act")
        assert.matches("^%d+%.%d%d%d$", res.headers["x-runtime"])
        assert.equal("ok", res.body)
      end)

      it("skips the action and the after callbacks when it does not call it", function()
        local C = rage.controller("c")
        C:around_action(function(self)
          seen[#seen + 1] = "around"
          self:render{plain = "cached", status = 200}
        end)
        C:after_action(note("after"))
        function C:act() seen[#seen + 1] = "action" end
        local res = get("c", "act")
        assert.equal("cached", res.body)
        assert.same({"around"}, seen)
      end)

      it("skips the action when an inner one does not call it", function()
        local C = rage.controller("c")
        C:around_action(function(_, action) seen[#seen + 1] = "outer"; action() end)
        C:around_action(function(self) seen[#seen + 1] = "inner"; self:head(304) end)
        C:after_action(note("after"))
        function C:act() seen[#seen + 1] = "action" end
        assert.equal(304, get("c", "act").status)
        assert.same({"outer", "inner"}, seen)
      end)

      it("runs after callbacks when the action ran even if it returned false", function()
        local C = rage.controller("c")
        C:around_action(function(_, action) action() end)
        C:after_action(note("after"))
        function C:act() seen[#seen + 1] = "action"; return false end
        get("c", "act")
        assert.same({"action", "after"}, seen)
      end)
    end)

    describe("skip_before_action", function()
      local function build(child_opts)
        local Application = rage.controller("application")
        Application:before_action("authenticate")
        function Application:authenticate()
          seen[#seen + 1] = "auth"
          if self.params.token ~= "t" then self:head(401) end
        end
        local C = rage.controller("c")
        C:skip_before_action("authenticate", child_opts)
        function C:index() seen[#seen + 1] = "index" end
        function C:show() seen[#seen + 1] = "show" end
        local Other = rage.controller("other")
        function Other:index() seen[#seen + 1] = "other" end
        return app({"GET /index c#index", "GET /show c#show", "GET /other other#index"})
      end

      it("removes an inherited callback for every action", function()
        local a = build()
        assert.equal(204, t.request(a, "GET", "/index").status)
        assert.equal(204, t.request(a, "GET", "/show").status)
        assert.same({"index", "show"}, seen)
      end)

      it("leaves the parent and sibling controllers alone", function()
        local a = build()
        assert.equal(401, t.request(a, "GET", "/other").status)
        assert.same({"auth"}, seen)
      end)

      it("with only, removes it for the listed actions", function()
        local a = build({only = "index"})
        assert.equal(204, t.request(a, "GET", "/index").status)
        assert.equal(401, t.request(a, "GET", "/show").status)
        assert.same({"index", "auth"}, seen)
      end)

      it("with except, keeps it for the listed actions", function()
        local a = build({except = {"show"}})
        assert.equal(204, t.request(a, "GET", "/index").status)
        assert.equal(401, t.request(a, "GET", "/show").status)
      end)

      it("raises for a callback that does not exist", function()
        local C = rage.controller("c")
        local line
        local err = raises(function() line = here(); C:skip_before_action("nope") end)
        assert.matches(line .. " skip_before_action: no before_action named 'nope'", err, 1, true)
      end)
    end)

    describe("misuse", function()
      it("is reported at the declaring line", function()
        local C = rage.controller("c")
        local line
        local err = raises(function() line = here(); C:before_action("x", {onyl = "show"}) end)
        assert.matches(line .. " before_action: unknown option 'onyl'", err, 1, true)
        err = raises(function() line = here(); C:after_action(42) end)
        assert.matches(line .. " after_action expects a method name or a function", err, 1, true)
        err = raises(function() line = here(); C:before_action("x", {only = 7}) end)
        assert.matches(line .. " only must be an action name or a list of them", err, 1, true)
        err = raises(function() line = here(); C:before_action("x", {["if"] = true}) end)
        assert.matches(line, err, 1, true)
        assert.matches("'if' must be a method name or a function", err, 1, true)
      end)

      it("a callback naming a missing method fails when the app boots", function()
        local C = rage.controller("c")
        C:before_action("load_thing")
        function C:act() end
        local err = raises(app, {"GET /x c#act"})
        assert.matches("controller 'c': before_action refers to a missing method 'load_thing'", err, 1, true)
        assert.matches("GET /x", err, 1, true)
      end)
    end)

    it("chains are compiled once per action", function()
      local C = rage.controller("c")
      function C:a() end
      function C:b() end
      local run = controller.compile(C, "a")
      assert.equal(run, controller.compile(C, "a"))
      assert.not_equal(run, controller.compile(C, "b"))
    end)
  end)

  describe("inheritance", function()
    it("runs the application controller's callbacks first and inherits its methods", function()
      local seen = {}
      local Application = rage.controller("application")
      Application:before_action(function() seen[#seen + 1] = "app before" end)
      Application:after_action(function() seen[#seen + 1] = "app after" end)
      function Application:current_user() return "ada" end
      local C = rage.controller("c")
      C:before_action(function() seen[#seen + 1] = "c before" end)
      function C:act() self:render{plain = self:current_user()} end
      assert.equal("ada", get("c", "act").body)
      assert.same({"app before", "c before", "app after"}, seen)
    end)

    it("takes a parent by name or by class, over several levels", function()
      local seen = {}
      local Base = rage.controller("api_base")
      Base:before_action(function() seen[#seen + 1] = "base" end)
      local Mid = rage.controller("api_mid", "api_base")
      Mid:before_action(function() seen[#seen + 1] = "mid" end)
      local Leaf = rage.controller("leaf", Mid)
      Leaf:before_action(function() seen[#seen + 1] = "leaf" end)
      function Leaf:act() end
      get("leaf", "act")
      assert.same({"base", "mid", "leaf"}, seen)
      assert.equal(Mid, Leaf.__parent)
      assert.equal(Base, Mid.__parent)
    end)

    it("does not leak a child's callbacks into its parent", function()
      local seen = {}
      local Application = rage.controller("application")
      function Application:act() seen[#seen + 1] = "app action" end
      local C = rage.controller("c")
      C:before_action(function() seen[#seen + 1] = "child" end)
      get("application", "act")
      assert.same({"app action"}, seen)
    end)

    it("rejects an unknown parent at the caller's line", function()
      local line
      local err = raises(function() line = here(); rage.controller("c", "missing") end)
      assert.matches(line .. " rage.controller: unknown parent controller 'missing'", err, 1, true)
      err = raises(function() line = here(); rage.controller("c", 42) end)
      assert.matches(line, err, 1, true)
      err = raises(function() line = here(); rage.controller("") end)
      assert.matches(line .. " rage.controller: a controller needs a name", err, 1, true)
    end)
  end)

  describe("rescue_from", function()
    local function failing(kind)
      local C = rage.controller("c")
      function C:act()
        rage.sleep(0)
        if kind == "lua" then error("plain failure") end
        rage.error(kind, "failed with " .. kind)
      end
      return C
    end

    it("handles an exact kind", function()
      local C = failing("db.unique_violation")
      C:rescue_from("db.unique_violation", function(self, err)
        self:render{json = {error = err.message}, status = 422}
      end)
      local res = get("c", "act")
      assert.equal(422, res.status)
      assert.equal("failed with db.unique_violation", res:json().error)
    end)

    it("handles every kind under a prefix", function()
      local C = failing("db.timeout")
      C:rescue_from("db", function(self, err) self:render{plain = err.kind, status = 503} end)
      local res = get("c", "act")
      assert.equal(503, res.status)
      assert.equal("db.timeout", res.body)
    end)

    it("does not take a prefix that ends inside a segment", function()
      local C = failing("dbx.timeout")
      C:rescue_from("db", function(self) self:head(503) end)
      assert.equal(500, get("c", "act").status)
    end)

    it("with \"lua\" handles plain Lua errors but not error objects", function()
      local C = failing("lua")
      C:rescue_from("lua", function(self, err) self:render{plain = err, status = 500} end)
      local res = get("c", "act")
      assert.matches("plain failure", res.body)

      controller.reset()
      C = failing("db.timeout")
      local called = false
      C:rescue_from("lua", function(self) called = true; self:head(200) end)
      assert.equal(500, get("c", "act").status)
      assert.is_false(called)
    end)

    it("catches runtime errors with \"lua\"", function()
      local C = rage.controller("c")
      function C:act() local x = nil; return x.field end
      C:rescue_from("lua", function(self) self:head(400) end)
      assert.equal(400, get("c", "act").status)
    end)

    it("is inherited from the application controller", function()
      local Application = rage.controller("application")
      Application:rescue_from("auth", function(self, err) self:render{plain = err.message, status = 401} end)
      failing("auth.expired")
      local res = get("c", "act")
      assert.equal(401, res.status)
      assert.equal("failed with auth.expired", res.body)
    end)

    it("later declarations win, and a child's over its parent's", function()
      local Application = rage.controller("application")
      Application:rescue_from("db", function(self) self:render{plain = "parent", status = 500} end)
      local C = failing("db.timeout")
      C:rescue_from("db.timeout", function(self) self:render{plain = "specific", status = 503} end)
      C:rescue_from("db", function(self) self:render{plain = "latest", status = 503} end)
      assert.equal("latest", get("c", "act").body)

      controller.reset()
      Application = rage.controller("application")
      Application:rescue_from("db", function(self) self:render{plain = "parent", status = 500} end)
      C = failing("db.timeout")
      C:rescue_from("db.timeout", function(self) self:render{plain = "child", status = 503} end)
      assert.equal("child", get("c", "act").body)
    end)

    it("takes a method name as the handler", function()
      local C = failing("payment.declined")
      C:rescue_from("payment", "payment_failed")
      function C:payment_failed(err) self:render{plain = "sorry: " .. err.message, status = 402} end
      local res = get("c", "act")
      assert.equal(402, res.status)
      assert.equal("sorry: failed with payment.declined", res.body)
    end)

    it("lets the handler render after the action had rendered, with fresh headers", function()
      local C = rage.controller("c")
      function C:act()
        self:set_header("X-Partial", "1")
        self:render{plain = "half"}
        rage.error("late.failure")
      end
      C:rescue_from("late", function(self) self:render{plain = "recovered", status = 500} end)
      local res = get("c", "act")
      assert.equal("recovered", res.body)
      assert.is_nil(res.headers["x-partial"])
    end)

    it("handles errors raised in callbacks", function()
      local C = rage.controller("c")
      C:before_action(function() rage.error("auth.missing", "no token") end)
      C:rescue_from("auth", function(self) self:head(401) end)
      function C:act() end
      assert.equal(401, get("c", "act").status)
    end)

    it("answers 500 when the handler fails too", function()
      local C = failing("db.timeout")
      C:rescue_from("db", function() error("handler broke") end)
      local res = get("c", "act")
      assert.equal(500, res.status)
      assert.matches("handler broke", logged[1])
    end)

    it("rejects bad declarations", function()
      local C = rage.controller("c")
      assert.matches("rescue_from expects an error kind", raises(C.rescue_from, C, 42, function() end))
      assert.matches("rescue_from expects a handler", raises(C.rescue_from, C, "db", 42))
    end)
  end)

  describe("redirect_to", function()
    local function redirect(url, opts, headers)
      local C = rage.controller("c")
      function C:act() self:redirect_to(url, opts) end
      local res = get("c", "act", {headers = headers})
      controller.reset()
      return res
    end

    it("redirects to a path with 302", function()
      local res = redirect("/things/1?tab=2")
      assert.equal(302, res.status)
      assert.equal("/things/1?tab=2", res.headers.location)
      assert.equal("", res.body)
    end)

    it("takes a status", function()
      assert.equal(301, redirect("/new", {status = 301}).status)
      assert.equal(303, redirect("/new", {status = "see_other"}).status)
    end)

    it("allows an absolute URL on the request's own host", function()
      local res = redirect("https://shop.example:8080/cart", nil, {host = "shop.example:8080"})
      assert.equal(302, res.status)
      assert.equal("https://shop.example:8080/cart", res.headers.location)
      assert.equal(302, redirect("http://LOCALHOST/x").status)
    end)

    it("refuses other hosts with controller.unsafe_redirect", function()
      local targets = {
        "https://evil.example/", "//evil.example/x", "/\\evil.example", "\\\\evil.example",
        "http://localhost@evil.example/", "http://localhost.evil.example/", "javascript:alert(1)",
        "https:evil.example", " //evil.example", "  https://evil.example",
      }
      for _, url in ipairs(targets) do
        local C = rage.controller("c")
        local caught
        function C:act() self:redirect_to(url) end
        C:rescue_from("controller.unsafe_redirect", function(self, err)
          caught = err
          self:head(400)
        end)
        local res = get("c", "act")
        assert.equal(400, res.status, url)
        assert.is_nil(res.headers.location, url)
        assert.is_true(errors.is(caught, "controller.unsafe_redirect"), url)
        assert.matches("allow_other_host", caught.message, 1, true)
        controller.reset()
      end
    end)

    it("answers 500 for a refused redirect nobody rescues", function()
      local res = redirect("https://evil.example/")
      assert.equal(500, res.status)
      assert.is_nil(res.headers.location)
    end)

    it("allows another host with allow_other_host", function()
      local res = redirect("https://accounts.example/login", {allow_other_host = true})
      assert.equal(302, res.status)
      assert.equal("https://accounts.example/login", res.headers.location)
    end)

    it("refuses CR, LF, NUL and other control characters even with allow_other_host", function()
      for _, url in ipairs({"/a\r\nSet-Cookie: x=1", "/a\nb", "/a\0b", "/\t/evil.example", "/a\127"}) do
        local res = redirect(url, {allow_other_host = true})
        assert.equal(500, res.status)
        assert.is_nil(res.headers.location)
        assert.is_nil(res.headers["set-cookie"])
      end
      assert.matches("redirect_to: the URL contains", logged[1], 1, true)
    end)
  end)

  describe("actions", function()
    it("named like a controller method are refused when the app boots", function()
      for _, name in ipairs({"render", "head", "redirect_to", "stream", "before_action", "rescue_from",
                             "set_header", "is_rendered"}) do
        controller.reset()
        local C = rage.controller("c")
        C[name] = function(self) self:render{plain = "shadowed"} end
        local err = raises(app, {"GET /x c#" .. name})
        assert.matches("'" .. name .. "' is a controller method and cannot be an action", err, 1, true)
      end
    end)

    it("that do not exist are refused when the app boots", function()
      rage.controller("c")
      local err = raises(app, {"GET /x c#missing"})
      assert.matches("controller 'c' has no action 'missing'", err, 1, true)
    end)

    it("see params, the request and their own instance", function()
      local C = rage.controller("c")
      local instances = {}
      function C:act()
        instances[#instances + 1] = self
        self:render{json = {id = self.params.id, q = self.params.q, method = self.request.method,
                            agent = self.request:header("user-agent")}}
      end
      local a = app({"GET /items/:id c#act"})
      local res = t.request(a, "GET", "/items/7?q=x", {headers = {["User-Agent"] = "spec"}})
      assert.same({id = "7", q = "x", method = "GET", agent = "spec"}, res:json())
      t.request(a, "GET", "/items/8")
      assert.not_equal(instances[1], instances[2])
    end)
  end)

  describe("stream", function()
    it("sends the chunks write() is given, waiting between them", function()
      local C = rage.controller("c")
      function C:act()
        self:stream(function(write)
          for i = 1, 3 do
            write("chunk " .. i .. "\n")
            rage.sleep(0.001)
          end
        end, {headers = {["X-Stream"] = "yes"}})
      end
      local res = get("c", "act")
      assert.equal(200, res.status)
      assert.equal("chunk 1\nchunk 2\nchunk 3\n", res.body)
      assert.equal("text/plain; charset=utf-8", res.headers["content-type"])
      assert.equal("yes", res.headers["x-stream"])
    end)

    it("takes a status and a content type, and writes non-strings with tostring", function()
      local C = rage.controller("c")
      function C:act()
        self:stream(function(write) write(1); write(2) end, {status = "created", content_type = "text/csv"})
      end
      local res = get("c", "act")
      assert.equal(201, res.status)
      assert.equal("text/csv", res.headers["content-type"])
      assert.equal("12", res.body)
    end)

    it("sends no body for HEAD", function()
      local C = rage.controller("c")
      function C:act() self:stream(function(write) write("data") end) end
      local res = t.request(app({"GET /x c#act"}), "HEAD", "/x")
      assert.equal(200, res.status)
      assert.equal("", res.body)
    end)

    it("logs an error raised midway, after what was already sent", function()
      local C = rage.controller("c")
      function C:act()
        self:stream(function(write)
          write("first\n")
          rage.sleep(0)
          error("the source broke")
        end)
      end
      local res = get("c", "act")
      assert.equal(200, res.status)
      assert.equal("first\n", res.body)
      assert.equal(1, #logged)
      assert.matches("the source broke", logged[1], 1, true)
    end)

    it("cannot follow render, and needs a function", function()
      local C = rage.controller("c")
      function C:act()
        self:render{plain = "x"}
        self:stream(function() end)
      end
      assert.equal(500, get("c", "act").status)
      assert.matches("already called", logged[1])
      local inst = setmetatable({headers = {}}, C)
      assert.matches("stream expects a function", raises(inst.stream, inst, "text"))
    end)
  end)
end)
