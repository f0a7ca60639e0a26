-- Specs for rage.dispatcher: the per-request handler (route, run the controller, respond) and
-- what it answers when there is no route, no response, or an error.

local controller = require("rage.controller")
local router = require("rage.router")
local dispatcher = require("rage.dispatcher")
local log = require("rage.log")
local t = require("rage.test")

local function app(draw)
  local r = router.new()
  r:draw(draw)
  r:compile()
  dispatcher.prepare(r, controller.registry)
  return {router = r, handler = dispatcher.new({router = r})}
end

-- A request object that records what the dispatcher does with it, for the cases rage.test
-- cannot show (whether respond was called at all).
local function recording_box()
  local box = {calls = {}}
  function box.header() return nil end
  function box.headers() return {} end
  function box.body() return "" end
  function box.responded(self) return #self.calls > 0 end
  function box.respond(self, status, headers, body)
    self.calls[#self.calls + 1] = {status = status, headers = headers, body = body}
  end
  return box
end

describe("rage.dispatcher", function()
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

  describe("without a matching route", function()
    local a

    before_each(function()
      local Things = rage.controller("things")
      function Things:index() self:render{plain = "list"} end
      function Things:create() self:head(201) end
      function Things:show() self:render{plain = "one"} end
      a = app(function(r)
        r:get("/things", "things#index")
        r:post("/things", "things#create")
        r:get("/things/:id", "things#show")
      end)
    end)

    it("answers 404 with a plain body", function()
      local res = t.request(a, "GET", "/nothing/here")
      assert.equal(404, res.status)
      assert.equal("Not Found\n", res.body)
      assert.equal("text/plain; charset=utf-8", res.headers["content-type"])
    end)

    it("answers 405 with Allow when the path exists for other methods", function()
      local res = t.request(a, "DELETE", "/things")
      assert.equal(405, res.status)
      assert.equal("Method Not Allowed\n", res.body)
      local allowed = {}
      for m in res.headers.allow:gmatch("[^, ]+") do allowed[m] = true end
      assert.is_true(allowed.GET)
      assert.is_true(allowed.POST)
      assert.is_nil(allowed.DELETE)

      res = t.request(a, "POST", "/things/1")
      assert.equal(405, res.status)
      assert.matches("GET", res.headers.allow)
    end)
  end)

  describe("responses", function()
    it("answers HEAD from the GET route, with headers and no body", function()
      local Pages = rage.controller("pages")
      function Pages:show() self:render{plain = "a body", headers = {["X-Page"] = "1"}} end
      local res = t.request(app(function(r) r:get("/page", "pages#show") end), "HEAD", "/page")
      assert.equal(200, res.status)
      assert.equal("", res.body)
      assert.equal("1", res.headers["x-page"])
      assert.equal("text/plain; charset=utf-8", res.headers["content-type"])
    end)

    it("answers 204 with the headers set when the action renders nothing", function()
      local Pings = rage.controller("pings")
      function Pings:create() self:set_header("X-Seen", "yes") end
      local res = t.request(app(function(r) r:post("/ping", "pings#create") end), "POST", "/ping")
      assert.equal(204, res.status)
      assert.equal("", res.body)
      assert.equal("yes", res.headers["x-seen"])
    end)

    it("serves a function route with what it returns", function()
      local a = app(function(r)
        r:get("/fn/:id", function(req, params)
          return 201, {["X-Method"] = req.method}, "made " .. params.id
        end)
      end)
      local res = t.request(a, "GET", "/fn/5")
      assert.equal(201, res.status)
      assert.equal("made 5", res.body)
      assert.equal("GET", res.headers["x-method"])
    end)
  end)

  describe("a function route that returns no status", function()
    it("gets the core's 500, and the log says why", function()
      local a = app(function(r) r:get("/fn", function() end) end)
      local res = t.request(a, "GET", "/fn")
      assert.equal(500, res.status)
      assert.equal("Internal Server Error\n", res.body)
      assert.matches("GET /fn finished without a response", logged[1], 1, true)
    end)
  end)

  describe("errors", function()
    it("answer 500 with a generic body and log the traceback", function()
      local Boom = rage.controller("boom")
      function Boom:show()
        rage.sleep(0)
        error("secret detail: db password is hunter2")
      end
      function Boom:fine() self:render{plain = "fine"} end
      local a = app(function(r)
        r:get("/boom", "boom#show")
        r:get("/fine", "boom#fine")
      end)
      local res = t.request(a, "GET", "/boom")
      assert.equal(500, res.status)
      assert.equal("Internal Server Error\n", res.body)
      assert.equal("text/plain; charset=utf-8", res.headers["content-type"])
      assert.not_matches("hunter2", res.body)
      assert.equal(1, #logged)
      assert.matches("^GET /boom %[[^]]+%] failed: ", logged[1])
      assert.matches("hunter2", logged[1])
      assert.matches("stack traceback:", logged[1], 1, true)

      res = t.request(a, "GET", "/fine")
      assert.equal(200, res.status)
      assert.equal("fine", res.body)
    end)

    it("log the line that failed even when the controller rescues other kinds", function()
      local Boom = rage.controller("boom")
      Boom:rescue_from("db", function(self) self:head(503) end)
      local line
      function Boom:show()
        line = debug.getinfo(1, "l").currentline + 1
        rage.error("payment.declined", "card refused")
      end
      function Boom:plain()
        local x = nil
        return x.field
      end
      local a = app(function(r)
        r:get("/boom", "boom#show")
        r:get("/plain", "boom#plain")
      end)
      assert.equal(500, t.request(a, "GET", "/boom").status)
      assert.matches("payment.declined: card refused", logged[1], 1, true)
      assert.matches("dispatcher_spec.lua:" .. line .. ":", logged[1], 1, true)

      assert.equal(500, t.request(a, "GET", "/plain").status)
      assert.matches("attempt to index", logged[2], 1, true)
      local _, n = logged[2]:gsub("stack traceback:", "")
      assert.equal(1, n)
    end)

    it("rescue in the controller, and run a middleware's code after nxt, for a rescued error", function()
      local Boom = rage.controller("boom")
      Boom:rescue_from("payment", function(self, err) self:render{plain = err.message, status = 402} end)
      function Boom:show() rage.error("payment.declined", "card refused") end
      local r = router.new()
      r:draw(function(d) d:get("/boom", "boom#show") end)
      r:compile()
      dispatcher.prepare(r, controller.registry)
      local after_nxt = 0
      -- A middleware of the app's own that does something after nxt returns: the controller
      -- must rescue inside it, not after unwinding it.
      local handler = dispatcher.new({router = r, middleware = {function(req, nxt)
        nxt(req)
        after_nxt = after_nxt + 1
      end}})
      local res = t.request({router = r, handler = handler}, "GET", "/boom")
      assert.equal(402, res.status)
      assert.equal("card refused", res.body)
      assert.equal(1, after_nxt)
      -- Without middleware of the app's own the dispatcher does the rescue: the same answer.
      res = t.request(app(function(d) d:get("/boom", "boom#show") end), "GET", "/boom")
      assert.equal(402, res.status)
      assert.equal("card refused", res.body)
      assert.same({}, logged)
    end)

    it("answer an error object's own 4xx status with its message", function()
      local Echo = rage.controller("echo")
      function Echo:create() self:render{json = self.request:json()} end
      local a = app(function(r) r:post("/echo", "echo#create") end)
      local res = t.request(a, "POST", "/echo", {body = "{not json", headers = {["content-type"] = "application/json"}})
      assert.equal(400, res.status)
      assert.matches("the request body is not valid JSON", res.body, 1, true)
      assert.equal(0, #logged)
      res = t.request(a, "POST", "/echo", {json = {a = {1, 2}}})
      assert.same({a = {1, 2}}, res:json())
    end)

    it("answer 500 and send no header with CR or LF set by a controller", function()
      local Bad = rage.controller("bad")
      function Bad:crlf()
        self:set_header("X-Next", "a\r\nSet-Cookie: admin=1")
        self:render{plain = "x"}
      end
      function Bad:lf() self:render{plain = "x", headers = {["X-Next"] = "a\nb"}} end
      function Bad:name() self:render{plain = "x", headers = {["Bad Name"] = "v"}} end
      function Bad:redirect()
        self:set_header("Location", "/a\r\n\r\n<script>")
        self:head(302)
      end
      local a = app(function(r)
        r:get("/crlf", "bad#crlf")
        r:get("/lf", "bad#lf")
        r:get("/name", "bad#name")
        r:get("/redirect", "bad#redirect")
      end)
      for _, path in ipairs({"/crlf", "/lf", "/name", "/redirect"}) do
        local res = t.request(a, "GET", path)
        assert.equal(500, res.status, path)
        assert.equal("Internal Server Error\n", res.body, path)
        assert.is_nil(res.headers["x-next"], path)
        assert.is_nil(res.headers["set-cookie"], path)
        assert.is_nil(res.headers.location, path)
      end
      assert.equal(4, #logged)
      assert.matches("invalid header", logged[1], 1, true)
    end)

    it("send nothing for a cancelled request", function()
      local Slow = rage.controller("slow")
      function Slow:show()
        rage.sleep(0)
        rage.error("cancelled", "the client went away")
      end
      local a = app(function(r) r:get("/slow", "slow#show") end)
      local box = recording_box()
      a.handler(box, "GET", "/slow", nil)
      assert.equal(0, #box.calls)
      assert.equal(0, #logged)
    end)
  end)

  describe("params", function()
    local a

    before_each(function()
      local Items = rage.controller("items")
      function Items:show() self:render{json = self.params} end
      function Items:update() self:render{json = self.params} end
      function Items:index() self:render{json = self.params} end
      function Items:bad() self:render{plain = "never read the body"} end
      function Items:format() self:render{plain = self.request:format()} end
      a = app(function(r)
        r:get("/shops/:shop_id/items/:id", "items#show")
        r:post("/shops/:shop_id/items/:id", "items#update")
        r:get("/items", "items#index")
        r:post("/items/bad", "items#bad")
        r:get("/items/:id/format(.:format)", "items#format")
      end)
    end)

    it("are an empty table on a route without parameters and no query", function()
      local res = t.request(a, "GET", "/items")
      assert.equal(200, res.status)
      assert.same({}, res:json())
      assert.same({page = "2"}, t.request(a, "GET", "/items?page=2"):json())
    end)

    it("are made only when the action reads them: a body it never reads is never parsed", function()
      local res = t.request(a, "POST", "/items/bad",
        {body = "{not json", headers = {["content-type"] = "application/json"}})
      assert.equal(200, res.status)
      assert.equal("never read the body", res.body)
    end)

    it("give request:format() the path's extension, else the Accept header", function()
      assert.equal("json", t.request(a, "GET", "/items/1/format.json").body)
      assert.equal("xml", t.request(a, "GET", "/items/1/format.xml", {headers = {accept = "application/json"}}).body)
      assert.equal("json", t.request(a, "GET", "/items/1/format", {headers = {accept = "application/json"}}).body)
    end)

    it("merge path and query parameters", function()
      local p = t.request(a, "GET", "/shops/3/items/7?sort=asc&filter[color]=red&tags[]=a&tags[]=b"):json()
      assert.same({shop_id = "3", id = "7", sort = "asc", filter = {color = "red"}, tags = {"a", "b"}}, p)
    end)

    it("let path parameters win over the query", function()
      local p = t.request(a, "GET", "/shops/3/items/7?id=999&shop_id=1&x=1"):json()
      assert.equal("7", p.id)
      assert.equal("3", p.shop_id)
      assert.equal("1", p.x)
    end)

    it("decode path parameters and the query", function()
      local p = t.request(a, "GET", "/shops/a%20b/items/7?q=x+y%21"):json()
      assert.equal("a b", p.shop_id)
      assert.equal("x y!", p.q)
    end)

    it("include form bodies, under path parameters and over the query", function()
      local res = t.request(a, "POST", "/shops/3/items/7?source=query&name=q",
        {params = {name = "pen", id = "999"}})
      assert.same({shop_id = "3", id = "7", source = "query", name = "pen"}, res:json())
    end)

    it("include JSON object bodies, under path parameters", function()
      local res = t.request(a, "POST", "/shops/3/items/7", {json = {name = "pen", id = "999"}})
      assert.same({shop_id = "3", id = "7", name = "pen"}, res:json())
    end)

    it("do not read bodies of other types", function()
      local res = t.request(a, "POST", "/shops/3/items/7",
        {body = "name=pen", headers = {["content-type"] = "text/plain"}})
      assert.same({shop_id = "3", id = "7"}, res:json())
    end)

    it("round-trip nested tables and lists given to rage.test as a form", function()
      local res = t.request(a, "POST", "/shops/3/items/7",
        {params = {item = {name = "pen & ink", tags = {"a", "b"}}, n = 1}})
      assert.same({shop_id = "3", id = "7", n = "1", item = {name = "pen & ink", tags = {"a", "b"}}}, res:json())
    end)

    it("come from rage.test's params option in the query string for GET", function()
      local p = t.request(a, "GET", "/shops/3/items/7?a=1", {params = {b = "2 3"}}):json()
      assert.same({shop_id = "3", id = "7", a = "1", b = "2 3"}, p)
    end)
  end)
end)
