-- Specs for rage.cookies: parsing the Cookie header, Set-Cookie lines exactly as they go out,
-- signed and encrypted cookies refusing every alteration, expiry enforced by the server, and no
-- CR, LF, ';' or ',' from a name, value or attribute ever reaching the wire.
--
-- One app in a temporary directory routes /run/:name to a hook the spec defines, so each test
-- writes its action next to its assertions.

local t = require("rage.test")
local cookies = require("rage.cookies")
local crypto = require("rage.crypto")
local request = require("rage.request")
local errors = require("rage.errors")
local log = require("rage.log")

local hooks = {}
package.loaded["cookie_spec_hooks"] = hooks

local function write(path, text)
  assert(os.execute("mkdir -p '" .. path:match("^(.*)/[^/]+$") .. "'") == 0)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

local NOW = 1700000000   -- Tue, 14 Nov 2023 22:13:20 GMT

describe("rage.cookies", function()
  local dir, app, saved_now, saved_error, logged

  setup(function()
    dir = os.tmpname()
    os.remove(dir)
    write(dir .. "/config/application.lua", 'return {trusted_proxies = {"127.0.0.1"}}\n')
    write(dir .. "/config/routes.lua", table.concat({
      "return function(r)",
      '  r:get("/run/:name", "c#run")',
      '  r:post("/run/:name", "c#run")',
      "end", ""}, "\n"))
    write(dir .. "/app/controllers/c.lua", table.concat({
      'local hooks = require("cookie_spec_hooks")',
      'local C = rage.controller("c")',
      'C:rescue_from("spec.rescued", function(self) self:render{plain = "rescued"} end)',
      "function C:run() return hooks[self.params.name](self) end",
      "return C", ""}, "\n"))
    app = t.load(dir)
  end)

  teardown(function()
    request.trust(nil)
    os.execute("rm -rf '" .. dir .. "'")
  end)

  before_each(function()
    saved_now, saved_error = cookies.now, log.error
    cookies.now = function() return NOW end
    logged = {}
    log.error = function(...) logged[#logged + 1] = table.concat({...}) end
  end)

  after_each(function()
    cookies.now, log.error = saved_now, saved_error
    for k in pairs(hooks) do hooks[k] = nil end
  end)

  -- Runs fn(self) as the action of a GET (or `method`) with `headers`; returns the response.
  local function run(fn, headers, method)
    hooks.spec = fn
    return t.request(app, method or "GET", "/run/spec", {headers = headers})
  end

  -- The value part of a Set-Cookie line ("name=VALUE; Path=...").
  local function value_of(line)
    return line:match("^[^=]+=([^;]*)")
  end

  -- Sets cookie `name` with fn(self) and returns its value as the client would send it back.
  local function issue(fn, name)
    local res = run(fn)
    assert.equal(1, #res.headers["set-cookie"])
    local line = res.headers["set-cookie"][1]
    assert.equal(name, line:match("^([^=]+)="))
    return value_of(line)
  end

  -- What the action reads with read(self) when the request sends `cookie_header`.
  local function read_back(cookie_header, read)
    local got
    run(function(self)
      got = {read(self)}
      self:head(204)
    end, {cookie = cookie_header})
    return got[1]
  end

  describe("parsing the Cookie header", function()
    it("splits pairs on ';' and trims blanks around names and values", function()
      assert.same({a = "1", b = "2", c = "x y"}, cookies.parse("a=1;b=2 ;\t c = x y "))
    end)

    it("keeps '=' inside values, removes quotes and percent-decodes", function()
      assert.same({tok = "a=b==", q = "quoted value", p = "50% off;"},
        cookies.parse('tok=a=b==; q="quoted value"; p=50%25%20off%3B'))
    end)

    it("skips pairs without a name or '=', and lets the first of two names win", function()
      assert.same({a = "first", b = ""}, cookies.parse("junk; =nameless; a=first; a=second; b=; ;"))
    end)

    it("takes linear time over long runs of blanks a client may send", function()
      local blanks = "a" .. string.rep(" ", 15000) .. "b"
      local t0 = os.clock()
      local got = cookies.parse(blanks .. "=" .. blanks .. "; " .. blanks .. "; x= " .. string.rep("\t", 15000))
      assert.is_true(os.clock() - t0 < 0.25, "parsing took " .. (os.clock() - t0) .. " s")
      assert.same({[blanks] = blanks, x = ""}, got)
    end)

    it("gives an empty table without a header", function()
      assert.same({}, cookies.parse(nil))
      assert.same({}, cookies.parse(""))
    end)

    it("reads the request's cookies in an action, joined from several Cookie headers by the core", function()
      local got
      run(function(self)
        got = {self.cookies.a, self.cookies:get("b"), self.cookies.missing, self.cookies:all()}
        self:head(204)
      end, {cookie = "a=1; b=two%20words"})
      assert.same({"1", "two words", nil, {a = "1", b = "two words"}}, got)
    end)
  end)

  describe("Set-Cookie lines", function()
    it("default to Path=/, HttpOnly and SameSite=Lax, as a list", function()
      local res = run(function(self)
        self.cookies.theme = "dark"
        self:render{plain = "ok"}
      end)
      assert.same({"theme=dark; Path=/; HttpOnly; SameSite=Lax"}, res.headers["set-cookie"])
    end)

    it("write every option in a fixed order", function()
      local res = run(function(self)
        self.cookies:set("prefs", "a b", {path = "/admin", domain = "example.com", expires = 3600, max_age = 60,
          secure = true, httponly = false, samesite = "strict", partitioned = true})
        self:head(204)
      end)
      assert.same({"prefs=a%20b; Path=/admin; Domain=example.com; Expires=Tue, 14 Nov 2023 23:13:20 GMT; " ..
        "Max-Age=60; Secure; SameSite=Strict; Partitioned"}, res.headers["set-cookie"])
    end)

    it("take expires as seconds from now or as an os.time() value", function()
      local res = run(function(self)
        self.cookies:set("rel", "1", {expires = 60})
        self.cookies:set("abs", "1", {expires = NOW + 60})
        self:head(204)
      end)
      local lines = res.headers["set-cookie"]
      assert.equal("rel=1; Path=/; Expires=Tue, 14 Nov 2023 22:14:20 GMT; HttpOnly; SameSite=Lax", lines[1])
      assert.equal("abs=1; Path=/; Expires=Tue, 14 Nov 2023 22:14:20 GMT; HttpOnly; SameSite=Lax", lines[2])
    end)

    it("go out one per cookie, in the order they were set, the last value of a name winning", function()
      local res = run(function(self)
        self.cookies.a = "1"
        self.cookies.b = "2"
        self.cookies.a = "3"
        self.cookies.signed.c = "4"
        self:head(204)
      end)
      local lines = res.headers["set-cookie"]
      assert.equal(3, #lines)
      assert.equal("a=3; Path=/; HttpOnly; SameSite=Lax", lines[1])
      assert.equal("b=2; Path=/; HttpOnly; SameSite=Lax", lines[2])
      assert.matches("^c=[%w_%-]+%-%-[%w_%-]+; Path=/; HttpOnly; SameSite=Lax$", lines[3])
    end)

    it("keep a Set-Cookie header the action set itself", function()
      local res = run(function(self)
        self:set_header("set-cookie", "legacy=1; Path=/")
        self.cookies.a = "1"
        self:head(204)
      end)
      assert.same({"legacy=1; Path=/", "a=1; Path=/; HttpOnly; SameSite=Lax"}, res.headers["set-cookie"])
    end)

    it("are absent when no cookie changed", function()
      local res = run(function(self)
        local _ = self.cookies.a
        self:head(204)
      end, {cookie = "a=1"})
      assert.is_nil(res.headers["set-cookie"])
    end)

    it("let numbers and booleans be plain values, and a value set be read back in the same request", function()
      local got
      local res = run(function(self)
        self.cookies.n = 42
        self.cookies.b = true
        got = {self.cookies.n, self.cookies.b}
        self:head(204)
      end)
      assert.same({"42", "true"}, got)
      assert.equal("n=42; Path=/; HttpOnly; SameSite=Lax", res.headers["set-cookie"][1])
    end)

    it("come with every kind of response", function()
      local file = dir .. "/file.txt"
      write(file, "file body")
      local actions = {
        render = function(self) self:render{json = {ok = true}} end,
        head = function(self) self:head(201) end,
        redirect = function(self) self:redirect_to("/elsewhere") end,
        stream = function(self) self:stream(function(w) w("a") w("b") end) end,
        send_file = function(self) self:send_file(file) end,
        nothing = function() end,
        rescued = function() rage.error("spec.rescued", "handled") end,
      }
      for name, action in pairs(actions) do
        local res = run(function(self)
          self.cookies.k = "v"
          action(self)
        end)
        assert.is_true(res.status < 400, name .. " answered " .. res.status)
        assert.same({"k=v; Path=/; HttpOnly; SameSite=Lax"}, res.headers["set-cookie"], name)
      end
    end)

    it("are dropped when the action fails with an error nobody rescues", function()
      local res = run(function(self)
        self.cookies.k = "v"
        self.session.user = 1
        error("boom")
      end)
      assert.equal(500, res.status)
      assert.is_nil(res.headers["set-cookie"])
    end)

    it("cannot be added once the response is sent", function()
      local err
      run(function(self)
        self:after_response(function(c)
          err = select(2, pcall(function() c.cookies.late = "1" end))
        end)
        self:head(204)
      end)
      assert.matches("cookies_spec.lua:%d+: cookies: the response was already sent", err)
    end)
  end)

  describe("deleting", function()
    it("expires a cookie the client sent, with its path and domain", function()
      local res = run(function(self)
        self.cookies:delete("a", {path = "/x", domain = "example.com"})
        self.cookies.b = nil
        self:head(204)
      end, {cookie = "a=1; b=2"})
      assert.same({
        "a=; Path=/x; Domain=example.com; Max-Age=0; HttpOnly; SameSite=Lax; Expires=Thu, 01 Jan 1970 00:00:00 GMT",
        "b=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax; Expires=Thu, 01 Jan 1970 00:00:00 GMT",
      }, res.headers["set-cookie"])
    end)

    it("sends nothing for a cookie the client did not send, even one set earlier in the action", function()
      local got
      local res = run(function(self)
        self.cookies.a = "1"
        self.cookies:delete("a")
        self.cookies:delete("never")
        got = self.cookies.a
        self:head(204)
      end)
      assert.is_nil(got)
      assert.is_nil(res.headers["set-cookie"])
    end)
  end)

  describe("validation", function()
    -- The error fn raises in an action, and the response that action still gives.
    local function misuse(fn)
      local err
      local res = run(function(self)
        local ok
        ok, err = pcall(fn, self)
        assert.is_false(ok, "no error raised")
        self:head(204)
      end)
      return tostring(err), res
    end

    it("refuses names that are not HTTP tokens, at the caller's line, and sends nothing", function()
      for _, name in ipairs({"a\r\nSet-Cookie: x", "a;b", "a,b", "a b", "a=b", "a\0b", "", "\1", "é"}) do
        local err, res = misuse(function(self) self.cookies[name] = "v" end)
        assert.matches("cookies_spec.lua:%d+: cookies: invalid cookie name", err)
        assert.is_nil(res.headers["set-cookie"])
        err = misuse(function(self) self.cookies.signed:set(name, "v") end)
        assert.matches("cookies_spec.lua:%d+: cookies: invalid cookie name", err)
        err = misuse(function(self) self.cookies:delete(name) end)
        assert.matches("cookies_spec.lua:%d+: cookies: invalid cookie name", err)
      end
    end)

    it("percent-encodes CR, LF, NUL, ';', ',', quotes and spaces in values", function()
      local evil = "v\r\nSet-Cookie: admin=1; Domain=evil.example,x=\"y\"\0\\"
      local res = run(function(self)
        self.cookies.a = evil
        self:head(204)
      end)
      local line = res.headers["set-cookie"][1]
      assert.equal("a=v%0D%0ASet-Cookie:%20admin=1%3B%20Domain=evil.example%2Cx=%22y%22%00%5C; Path=/; HttpOnly; " ..
        "SameSite=Lax", line)
      assert.is_nil(line:find("[%z\r\n,\"\\]"))
      assert.equal(evil, read_back("a=" .. value_of(line), function(self) return self.cookies.a end))
    end)

    it("refuses attributes that could add a line or an attribute", function()
      local bad = {
        {path = "/a\r\nSet-Cookie: x=1"}, {path = "/a;Domain=evil"}, {path = "/a,b"}, {path = "/a b"},
        {path = "relative"}, {path = 1}, {domain = "evil.example\r\nX: y"}, {domain = "a;b"},
        {domain = "a,b"}, {domain = ""}, {samesite = "Lax\r\nX: y"}, {samesite = "Lax; Domain=evil"},
        {samesite = "whatever"}, {expires = "tomorrow"}, {expires = 0 / 0}, {max_age = "60\r\n"},
        {max_age = 1.5}, {secure = "yes"}, {httponly = 1}, {partitioned = "true"}, {unknown = true},
      }
      for _, opts in ipairs(bad) do
        local err, res = misuse(function(self) self.cookies:set("a", "v", opts) end)
        assert.matches("cookies_spec.lua:%d+: cookies: ", err)
        assert.is_nil(res.headers["set-cookie"])
      end
    end)

    it("refuses a table as a plain value and names that are jar methods", function()
      local err = misuse(function(self) self.cookies.a = {1} end)
      assert.matches("cookies_spec.lua:%d+: cookies: a plain cookie holds a string", err)
      err = misuse(function(self) self.cookies.signed = "x" end)
      assert.matches("cookies_spec.lua:%d+: cookies: 'signed' is a method of the cookie jar", err)
      err = misuse(function(self) self.cookies.signed.a = function() end end)
      assert.matches("cookies_spec.lua:%d+: cookies: a function cannot be stored", err)
    end)

    it("reaches cookies named like methods with get and set", function()
      local got
      local res = run(function(self)
        got = self.cookies:get("set")
        self.cookies:set("delete", "x")
        self:head(204)
      end, {cookie = "set=1"})
      assert.equal("1", got)
      assert.equal("delete=x; Path=/; HttpOnly; SameSite=Lax", res.headers["set-cookie"][1])
    end)

    it("raises cookies.overflow for a cookie over 4096 bytes", function()
      local err = misuse(function(self) self.cookies.big = string.rep("x", 4096) end)
      assert.matches("^cookies.overflow: the cookie 'big' is 4100 bytes, over the 4096 bytes browsers keep$", err)
      err = misuse(function(self) self.cookies.encrypted.big = string.rep("x", 3000) end)
      assert.matches("cookies.overflow", err)
      local res = run(function(self)
        self.cookies.fits = string.rep("x", 4090)
        self:head(204)
      end)
      assert.equal(1, #res.headers["set-cookie"])
    end)

    it("forces Secure where browsers require it", function()
      local res = run(function(self)
        self.cookies:set("a", "1", {samesite = "None"})
        self.cookies:set("__Host-b", "1")
        self.cookies:set("__Secure-c", "1", {path = "/x"})
        self.cookies:set("d", "1", {partitioned = true})
        self:head(204)
      end)
      assert.same({
        "a=1; Path=/; Secure; HttpOnly; SameSite=None",
        "__Host-b=1; Path=/; Secure; HttpOnly; SameSite=Lax",
        "__Secure-c=1; Path=/x; Secure; HttpOnly; SameSite=Lax",
        "d=1; Path=/; Secure; HttpOnly; SameSite=Lax; Partitioned",
      }, res.headers["set-cookie"])
      local err = misuse(function(self) self.cookies:set("a", "1", {samesite = "None", secure = false}) end)
      assert.matches("requires secure", err)
      err = misuse(function(self) self.cookies:set("__Host-a", "1", {domain = "example.com"}) end)
      assert.matches("a __Host%- cookie has path", err)
    end)
  end)

  describe("the Secure flag", function()
    local function line(headers, opts)
      local res = run(function(self)
        self.cookies:set("a", "1", opts)
        self:head(204)
      end, headers)
      return res.headers["set-cookie"][1]
    end

    it("is set when a trusted proxy says the request came over TLS", function()
      assert.equal("a=1; Path=/; Secure; HttpOnly; SameSite=Lax", line({["x-forwarded-proto"] = "https"}))
      assert.equal("a=1; Path=/; Secure; HttpOnly; SameSite=Lax", line({["x-forwarded-proto"] = "HTTPS, http"}))
      assert.equal("a=1; Path=/; HttpOnly; SameSite=Lax", line({["x-forwarded-proto"] = "http"}))
      assert.equal("a=1; Path=/; HttpOnly; SameSite=Lax", line({}))
    end)

    it("ignores X-Forwarded-Proto from a peer that is not a trusted proxy", function()
      request.trust({"10.0.0.1"})
      local ok, got = pcall(line, {["x-forwarded-proto"] = "https"})
      request.trust({"127.0.0.1"})
      assert.is_true(ok, got)
      assert.equal("a=1; Path=/; HttpOnly; SameSite=Lax", got)
    end)

    it("follows an explicit secure option either way", function()
      assert.equal("a=1; Path=/; Secure; HttpOnly; SameSite=Lax", line({}, {secure = true}))
      assert.equal("a=1; Path=/; HttpOnly; SameSite=Lax", line({["x-forwarded-proto"] = "https"}, {secure = false}))
    end)
  end)

  describe("signed cookies", function()
    local function set_signed(value, opts)
      return issue(function(self)
        self.cookies.signed:set("user", value, opts)
        self:head(204)
      end, "user")
    end

    local function read_signed(cookie_header, name)
      return read_back(cookie_header, function(self) return self.cookies.signed[name or "user"] end)
    end

    it("round-trip strings, numbers, booleans and tables", function()
      for _, v in ipairs({"alice", 42, 1.5, true, false, {id = 7, roles = {"admin", "dev"}}, ""}) do
        local token = set_signed(v)
        assert.same(v, read_signed("user=" .. token))
      end
    end)

    it("are readable but carry their purpose", function()
      local token = set_signed({id = 7})
      local payload = crypto.base64url_decode(token:sub(1, -46))
      assert.equal('{"_rage":{"pur":"cookie.user","message":{"id":7}}}', payload)
    end)

    it("read as nil when any byte is changed", function()
      local token = set_signed("alice")
      for i = 1, #token do
        local c = token:sub(i, i)
        local other = c == "A" and "B" or "A"
        local forged = token:sub(1, i - 1) .. other .. token:sub(i + 1)
        assert.is_nil(read_signed("user=" .. forged), "byte " .. i)
      end
    end)

    it("read as nil when cut short or extended", function()
      local token = set_signed("alice")
      for _, forged in ipairs({token:sub(1, -2), token:sub(1, 20), token:sub(2), token .. "A", "", "--",
                               token:sub(1, -46)}) do
        assert.is_nil(read_signed("user=" .. forged))
      end
    end)

    it("read as nil under another name (the purpose is signed)", function()
      local token = set_signed("alice")
      assert.is_nil(read_signed("admin=" .. token, "admin"))
      assert.equal("alice", read_signed("admin=" .. token .. "; user=" .. token))
    end)

    it("read as nil when re-signed with another key or read as encrypted", function()
      local token = set_signed("alice")
      local payload = token:sub(1, -46)
      local forged = payload .. "--" .. crypto.base64url_encode(crypto.hmac_sha256(string.rep("k", 64), payload))
      assert.is_nil(read_signed("user=" .. forged))
      assert.is_nil(read_back("user=" .. token, function(self) return self.cookies.encrypted.user end))
    end)

    it("read as nil once expired, checked by the server from the signed expiry", function()
      local token = set_signed("alice", {max_age = 60})
      NOW = NOW + 59
      assert.equal("alice", read_signed("user=" .. token))
      NOW = NOW + 2
      assert.is_nil(read_signed("user=" .. token))
      NOW = NOW - 61
      token = set_signed("alice", {expires = NOW + 10})
      NOW = NOW + 10
      assert.is_nil(read_signed("user=" .. token))
      NOW = NOW - 10
    end)

    it("last 20 years when permanent", function()
      local res = run(function(self)
        self.cookies.permanent.signed.remember = "token"
        self.cookies.signed.permanent:set("other", 1)
        self.cookies.permanent.plain = "p"
        self:head(204)
      end)
      local expires = "Expires=" .. cookies.http_date(NOW + cookies.PERMANENT)
      assert.matches("2043 ", expires)
      for _, l in ipairs(res.headers["set-cookie"]) do
        assert.truthy(l:find("; " .. expires .. ";", 1, true), l)
      end
      local token = value_of(res.headers["set-cookie"][1])
      NOW = NOW + cookies.PERMANENT - 1
      assert.equal("token", read_back("remember=" .. token, function(self) return self.cookies.signed.remember end))
      NOW = NOW + 2
      assert.is_nil(read_back("remember=" .. token, function(self) return self.cookies.signed.remember end))
      NOW = 1700000000
    end)
  end)

  describe("encrypted cookies", function()
    local function set_encrypted(value, opts, name)
      name = name or "card"
      return issue(function(self)
        self.cookies.encrypted:set(name, value, opts)
        self:head(204)
      end, name)
    end

    local function read_encrypted(cookie_header, name)
      return read_back(cookie_header, function(self) return self.cookies.encrypted[name or "card"] end)
    end

    it("round-trip any JSON value and hide it", function()
      for _, v in ipairs({"4242 secret", 7, true, {last4 = "4242", nested = {a = {1, 2}}}}) do
        local token = set_encrypted(v)
        assert.same(v, read_encrypted("card=" .. token))
        local box = crypto.base64url_decode(token)
        assert.is_nil(box:find("4242", 1, true))
        assert.is_nil(box:find("cookie.card", 1, true))
      end
    end)

    it("differ each time for one value (a fresh IV)", function()
      assert.are_not.equal(set_encrypted("x"), set_encrypted("x"))
    end)

    it("read as nil when any byte of IV, ciphertext or tag is flipped", function()
      local token = set_encrypted("secret")
      local box = crypto.base64url_decode(token)
      for i = 1, #box do
        local flipped = box:sub(1, i - 1) .. string.char(bit.bxor(box:byte(i), 1)) .. box:sub(i + 1)
        assert.is_nil(read_encrypted("card=" .. crypto.base64url_encode(flipped)), "byte " .. i)
      end
    end)

    it("read as nil when cut short, extended or not base64url", function()
      local token = set_encrypted("secret")
      local box = crypto.base64url_decode(token)
      for _, forged in ipairs({crypto.base64url_encode(box:sub(1, -2)), crypto.base64url_encode(box .. "x"),
                               token:sub(1, -2), token .. "%", "", "not base64!"}) do
        assert.is_nil(read_encrypted("card=" .. forged))
      end
    end)

    it("read as nil under another name, or as a signed cookie", function()
      local token = set_encrypted("secret")
      assert.is_nil(read_encrypted("other=" .. token, "other"))
      assert.is_nil(read_back("card=" .. token, function(self) return self.cookies.signed.card end))
    end)

    it("read as nil once expired", function()
      local token = set_encrypted("secret", {max_age = 30})
      NOW = NOW + 29
      assert.equal("secret", read_encrypted("card=" .. token))
      NOW = NOW + 1
      assert.is_nil(read_encrypted("card=" .. token))
      NOW = 1700000000
    end)
  end)

  describe("secret_key_base", function()
    local saved_env

    before_each(function()
      saved_env = cookies.current
    end)

    after_each(function()
      cookies.current = saved_env
    end)

    it("is required outside development and test, with a clear message", function()
      local ok, err = pcall(cookies.settings, dir, "production", {})
      assert.is_false(ok)
      assert.matches("secret_key_base is missing for the production environment: set SECRET_KEY_BASE", err, 1, true)
      ok, err = pcall(cookies.settings, dir, "production", {secret_key_base = "short"})
      assert.is_false(ok)
      assert.matches("config.secret_key_base is too short (5 characters): it needs at least 64", err, 1, true)
      ok, err = pcall(cookies.settings, dir, "production", {secret_key_base = 42})
      assert.is_false(ok)
      assert.matches("config.secret_key_base must be a string", err, 1, true)
      assert.is_true((pcall(cookies.settings, dir, "production", {secret_key_base = string.rep("s", 64)})))
    end)

    it("stops the boot of a production app without one (app.load error)", function()
      local core = require("rage.core")
      local env = core.env
      core.env = "production"
      local ok, err = pcall(require("rage.app").load, dir)
      core.env = env
      assert.is_false(ok)
      assert.is_true(errors.is(err, "app.load"))
      assert.matches("secret_key_base is missing for the production environment", err.message, 1, true)
    end)

    it("gives different keys for different secrets, and cookies of one do not verify under another", function()
      local token = issue(function(self)
        self.cookies.signed.user = "alice"
        self:head(204)
      end, "user")
      local other = cookies.settings(dir, "production", {secret_key_base = string.rep("z", 64)})
      local saved = app.cookie_settings
      app.cookie_settings = other
      local ok, got = pcall(read_back, "user=" .. token, function(self) return self.cookies.signed.user end)
      app.cookie_settings = saved
      assert.is_true(ok, got)
      assert.is_nil(got)
      assert.equal("alice", read_back("user=" .. token, function(self) return self.cookies.signed.user end))
    end)

    it("is derived from the app's path in test, writing nothing", function()
      local a = cookies.settings(dir, "test", {}):keys()
      local b = cookies.settings(dir .. "/", "test", {}):keys()
      assert.equal(a.signed, b.signed)
      assert.equal(64, #a.signed)
      assert.equal(32, #a.encrypted)
      assert.are_not.equal(a.signed:sub(1, 32), a.encrypted)
      assert.is_nil(io.open(dir .. "/tmp/local_secret.txt"))
    end)

    it("is generated once and kept in tmp/local_secret.txt in development", function()
      local saved_info = log.info
      log.info = function() end
      local a = cookies.settings(dir, "development", {}):keys()
      local f = assert(io.open(dir .. "/tmp/local_secret.txt"))
      local stored = f:read("*a")
      f:close()
      local b = cookies.settings(dir, "development", {}):keys()
      log.info = saved_info
      assert.matches("^%x+\n$", stored)
      assert.equal(129, #stored)
      assert.equal(a.signed, b.signed)
      local mode = io.popen("stat -c %a '" .. dir .. "/tmp/local_secret.txt'"):read("*l")
      assert.equal("600", mode)
      os.remove(dir .. "/tmp/local_secret.txt")
    end)
  end)
end)
