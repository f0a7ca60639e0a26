-- Specs for conditional GET (is_stale, fresh_when, Request:is_fresh) and bearer tokens
-- (Request:bearer_token, authenticate_with_token).

local t = require("rage.test")
local request = require("rage.request")
local crypto = require("rage.crypto")
local log = require("rage.log")

local hooks = {}
package.loaded["conditional_spec_hooks"] = hooks

local function write(path, text)
  assert(os.execute("mkdir -p '" .. path:match("^(.*)/[^/]+$") .. "'") == 0)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

-- A stand-in for the core's request object with the given headers.
local function box(headers)
  return {
    header = function(_, name) return headers[name:lower()] end,
    peer = function() return "127.0.0.1" end,
  }
end

local function bearer(value)
  return request.new(box({authorization = value}), "GET", "/", nil):bearer_token()
end

local MODIFIED = 1700000000   -- Tue, 14 Nov 2023 22:13:20 GMT

describe("bearer tokens", function()
  it("are read from Authorization whatever the scheme's case and the blanks around", function()
    assert.equal("abc123", bearer("Bearer abc123"))
    assert.equal("abc123", bearer("bearer abc123"))
    assert.equal("abc123", bearer("BEARER abc123"))
    assert.equal("abc123", bearer("  Bearer    abc123  "))
    assert.equal("abc123", bearer("Bearer\tabc123"))
    assert.equal("a-b.c_d~e+f/g==", bearer("Bearer a-b.c_d~e+f/g=="))
    assert.equal("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOjF9.sig", bearer("Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOjF9.sig"))
  end)

  it("are nil without a header, with another scheme or with a malformed token", function()
    assert.is_nil(bearer(nil))
    assert.is_nil(bearer(""))
    assert.is_nil(bearer("Bearer"))
    assert.is_nil(bearer("Bearer "))
    assert.is_nil(bearer("Basic dXNlcjpwYXNz"))
    assert.is_nil(bearer("Token abc"))
    assert.is_nil(bearer("Bearerabc"))
    assert.is_nil(bearer("Bearer abc def"))
    assert.is_nil(bearer("Bearer abc,def"))
    assert.is_nil(bearer('Bearer "abc"'))
    assert.is_nil(bearer("Bearer a=b"))
  end)
end)

describe("client headers", function()
  it("are read in linear time, however many blanks they hold", function()
    local blanks = "a" .. string.rep(" ", 15000) .. "b"
    local req = request.new(box({["if-none-match"] = blanks .. "," .. blanks, ["if-modified-since"] = blanks,
                                 authorization = "Bearer" .. blanks}), "GET", "/", nil)
    local t0 = os.clock()
    assert.is_false(req:is_fresh('"x"', MODIFIED))
    assert.is_nil(req:bearer_token())
    assert.is_nil(request.parse_http_date(blanks))
    assert.is_true(os.clock() - t0 < 0.25, "reading took " .. (os.clock() - t0) .. " s")
  end)
end)

describe("HTTP dates", function()
  it("are read in the three formats HTTP allows", function()
    assert.equal(784111777, request.parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"))
    assert.equal(784111777, request.parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"))
    assert.equal(784111777, request.parse_http_date("Sun Nov  6 08:49:37 1994"))
    assert.equal(MODIFIED, request.parse_http_date("Tue, 14 Nov 2023 22:13:20 GMT"))
    assert.equal(951782400, request.parse_http_date("Tue, 29 Feb 2000 00:00:00 GMT"))
    assert.is_nil(request.parse_http_date("yesterday"))
    assert.is_nil(request.parse_http_date("Tue, 14 Nov 2023 22:13:20 CET"))
    assert.is_nil(request.parse_http_date("Tue, 14 Foo 2023 22:13:20 GMT"))
  end)
end)

describe("controllers", function()
  local dir, app, saved_error

  setup(function()
    dir = os.tmpname()
    os.remove(dir)
    write(dir .. "/config/routes.lua", table.concat({
      "return function(r)",
      '  r:get("/run/:name", "c#run")',
      '  r:post("/run/:name", "c#run")',
      '  r:get("/api/secret", "api#show")',
      "end", ""}, "\n"))
    write(dir .. "/app/controllers/c.lua", table.concat({
      'local hooks = require("conditional_spec_hooks")',
      'local C = rage.controller("c")',
      "function C:run() return hooks[self.params.name](self) end",
      "return C", ""}, "\n"))
    write(dir .. "/app/controllers/api.lua", table.concat({
      'local crypto = require("rage.crypto")',
      'local Api = rage.controller("api")',
      'Api:before_action("authenticate")',
      "function Api:authenticate()",
      "  self.user = self:authenticate_with_token(function(token)",
      '    if crypto.secure_compare(token, "s3cret") then return {name = "alice"} end',
      "  end)",
      "end",
      "function Api:show() self:render{json = {user = self.user.name}} end",
      "return Api", ""}, "\n"))
    app = t.load(dir)
  end)

  teardown(function()
    os.execute("rm -rf '" .. dir .. "'")
  end)

  before_each(function()
    saved_error = log.error
    log.error = function() end
  end)

  after_each(function()
    log.error = saved_error
    for k in pairs(hooks) do hooks[k] = nil end
  end)

  local function run(fn, headers, method)
    hooks.spec = fn
    return t.request(app, method or "GET", "/run/spec", {headers = headers})
  end

  describe("authenticate_with_token", function()
    it("lets a request with a token the function accepts through", function()
      local res = t.request(app, "GET", "/api/secret", {headers = {authorization = "bearer   s3cret "}})
      assert.equal(200, res.status)
      assert.same({user = "alice"}, res:json())
      assert.is_nil(res.headers["www-authenticate"])
    end)

    it("answers 401 with a Bearer challenge without a token, halting the chain", function()
      local res = t.request(app, "GET", "/api/secret")
      assert.equal(401, res.status)
      assert.equal('Bearer realm="Application"', res.headers["www-authenticate"])
      assert.equal("Unauthorized\n", res.body)
      res = t.request(app, "GET", "/api/secret", {headers = {authorization = "Basic czNjcmV0"}})
      assert.equal(401, res.status)
      assert.equal('Bearer realm="Application"', res.headers["www-authenticate"])
    end)

    it("answers 401 with error=\"invalid_token\" when the function refuses the token", function()
      local res = t.request(app, "GET", "/api/secret", {headers = {authorization = "Bearer wrong"}})
      assert.equal(401, res.status)
      assert.equal('Bearer realm="Application", error="invalid_token"', res.headers["www-authenticate"])
    end)

    it("takes a realm, refusing one that could break the header", function()
      local res = run(function(self) self:authenticate_with_token(function() end, {realm = "Admin API"}) end)
      assert.equal('Bearer realm="Admin API"', res.headers["www-authenticate"])
      local err
      run(function(self)
        err = select(2, pcall(function() self:authenticate_with_token(function() end, {realm = 'x"\r\nX: y'}) end))
        self:head(204)
      end)
      assert.matches("conditional_spec.lua:%d+: authenticate_with_token: the realm must be", err)
    end)
  end)

  describe("is_stale", function()
    local post = {id = 7, title = "Hello", tags = {"a", "b"}}

    local function show(headers, opts, method)
      local stale
      local res = run(function(self)
        stale = self:is_stale(opts or {etag = post, last_modified = MODIFIED})
        if stale then self:render{json = post} end
      end, headers, method)
      return res, stale
    end

    it("renders with a strong ETag, Last-Modified and a private Cache-Control when the client has nothing", function()
      local res, stale = show()
      assert.is_true(stale)
      assert.equal(200, res.status)
      assert.matches('^"%x+"$', res.headers.etag)
      assert.equal(66, #res.headers.etag)
      assert.equal("Tue, 14 Nov 2023 22:13:20 GMT", res.headers["last-modified"])
      assert.equal("max-age=0, private, must-revalidate", res.headers["cache-control"])
    end)

    it("computes the ETag from the contents, whatever order a table was built in", function()
      local a = show(nil, {etag = {x = 1, y = {2, 3}, z = "s"}}).headers.etag
      local b = show(nil, {etag = {z = "s", y = {2, 3}, x = 1}}).headers.etag
      local c = show(nil, {etag = {x = 1, y = {2, 4}, z = "s"}}).headers.etag
      assert.equal(a, b)
      assert.are_not.equal(a, c)
      assert.equal('"' .. crypto.hex(crypto.sha256("string:v1;")) .. '"', show(nil, {etag = "v1"}).headers.etag)
      assert.are_not.equal(show(nil, {etag = 1}).headers.etag, show(nil, {etag = "1"}).headers.etag)
    end)

    it("sends an entity tag it is given as it is", function()
      assert.equal('"v1"', show(nil, {etag = '"v1"'}).headers.etag)
      assert.equal('W/"v1"', show(nil, {etag = 'W/"v1"'}).headers.etag)
    end)

    it("answers 304 without a body when If-None-Match names the ETag", function()
      local etag = show().headers.etag
      for _, inm in ipairs({etag, "W/" .. etag, '"other", ' .. etag, "*", "  " .. etag .. "  "}) do
        local res, stale = show({["if-none-match"] = inm})
        assert.is_false(stale, inm)
        assert.equal(304, res.status)
        assert.equal("", res.body)
        assert.equal(etag, res.headers.etag)
        assert.equal("Tue, 14 Nov 2023 22:13:20 GMT", res.headers["last-modified"])
      end
    end)

    it("renders when If-None-Match names another ETag, even if If-Modified-Since matches", function()
      local res, stale = show({["if-none-match"] = '"other"', ["if-modified-since"] = "Tue, 14 Nov 2023 22:13:20 GMT"})
      assert.is_true(stale)
      assert.equal(200, res.status)
      assert.same(post, res:json())
    end)

    it("answers 304 when If-Modified-Since is at or after Last-Modified", function()
      for _, ims in ipairs({"Tue, 14 Nov 2023 22:13:20 GMT", "Wed, 15 Nov 2023 00:00:00 GMT"}) do
        local res = show({["if-modified-since"] = ims}, {last_modified = MODIFIED + 0.9})
        assert.equal(304, res.status)
      end
      for _, ims in ipairs({"Tue, 14 Nov 2023 22:13:19 GMT", "not a date"}) do
        local res = show({["if-modified-since"] = ims}, {last_modified = MODIFIED})
        assert.equal(200, res.status)
      end
    end)

    it("answers HEAD like GET and never 304 for other methods", function()
      local etag = show().headers.etag
      assert.equal(304, show({["if-none-match"] = etag}, nil, "HEAD").status)
      local res, stale = show({["if-none-match"] = etag}, nil, "POST")
      assert.is_true(stale)
      assert.equal(200, res.status)
    end)

    it("marks a public response public and keeps a Cache-Control the action set", function()
      assert.equal("public", show(nil, {etag = "x", public = true}).headers["cache-control"])
      local res = run(function(self)
        self:set_header("cache-control", "max-age=60")
        if self:is_stale{etag = "x"} then self:head(200) end
      end)
      assert.equal("max-age=60", res.headers["cache-control"])
    end)

    it("refuses misuse at the caller's line", function()
      local errs = {}
      run(function(self)
        errs[1] = select(2, pcall(function() self:is_stale() end))
        errs[2] = select(2, pcall(function() self:is_stale{} end))
        errs[3] = select(2, pcall(function() self:is_stale{last_modified = "yesterday"} end))
        errs[4] = select(2, pcall(function() self:fresh_when{etag = print} end))
        self:head(204)
      end)
      assert.matches("conditional_spec.lua:%d+: is_stale expects a table", errs[1])
      assert.matches("conditional_spec.lua:%d+: is_stale needs etag or last_modified", errs[2])
      assert.matches("conditional_spec.lua:%d+: is_stale: last_modified must be a time", errs[3])
      assert.matches("conditional_spec.lua:%d+: fresh_when: etag must be a string", errs[4])
    end)
  end)

  describe("fresh_when", function()
    it("answers 304 itself and lets the action render otherwise", function()
      local function action(self)
        self:fresh_when{etag = '"v2"', public = true}
        if not self:is_rendered() then self:render{plain = "body"} end
      end
      local res = run(action)
      assert.equal(200, res.status)
      assert.equal("body", res.body)
      assert.equal('"v2"', res.headers.etag)
      res = run(action, {["if-none-match"] = '"v2"'})
      assert.equal(304, res.status)
      assert.equal("", res.body)
      assert.equal("public", res.headers["cache-control"])
    end)
  end)
end)
