-- Specs for rage.session: the session in one encrypted cookie, loaded lazily, written back only
-- when it changed, reset, refused when tampered with or expired, and too large a session
-- reported clearly.

local t = require("rage.test")
local cookies = require("rage.cookies")
local crypto = require("rage.crypto")
local log = require("rage.log")

local hooks = {}
package.loaded["session_spec_hooks"] = hooks

local function write(path, text)
  assert(os.execute("mkdir -p '" .. path:match("^(.*)/[^/]+$") .. "'") == 0)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

-- An app in a temporary directory whose /run/:name runs hooks[name]; `config` is the text of
-- config/application.lua.
local function make_app(config)
  local dir = os.tmpname()
  os.remove(dir)
  write(dir .. "/config/application.lua", config or "return {}\n")
  write(dir .. "/config/routes.lua", 'return function(r) r:get("/run/:name", "s#run") end\n')
  write(dir .. "/app/controllers/s.lua", table.concat({
    'local hooks = require("session_spec_hooks")',
    'local S = rage.controller("s")',
    "function S:run() return hooks[self.params.name](self) end",
    "return S", ""}, "\n"))
  return dir, t.load(dir)
end

local NOW = 1700000000

describe("rage.session", function()
  local dir, app, saved_now, saved_error, logged
  local dirs = {}

  setup(function()
    dir, app = make_app('return {session = {key = "_spec_session"}}\n')
    dirs[#dirs + 1] = dir
  end)

  teardown(function()
    for _, d in ipairs(dirs) do os.execute("rm -rf '" .. d .. "'") end
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

  -- Runs fn(self) as an action with the session cookie `token` (or none); returns the response
  -- and the session cookie's new value ("" when deleted, nil when not sent).
  local function run(fn, token, the_app)
    hooks.spec = fn
    local headers = token and {cookie = "_spec_session=" .. token} or nil
    local res = t.request(the_app or app, "GET", "/run/spec", {headers = headers})
    local lines = res.headers["set-cookie"]
    if not lines then return res, nil end
    assert.equal(1, #lines)
    return res, lines[1]:match("^[^=]+=([^;]*)"), lines[1]
  end

  it("persists values across requests", function()
    local _, token, line = run(function(self)
      self.session.user_id = 42
      self.session.cart = {items = {"pen"}}
      self:head(204)
    end)
    assert.matches("^_spec_session=[%w_%-]+; Path=/; HttpOnly; SameSite=Lax$", line)
    local got
    local _, again = run(function(self)
      got = {self.session.user_id, self.session:get("cart"), self.session.missing}
      self:head(204)
    end, token)
    assert.same({42, {items = {"pen"}}, nil}, got)
    assert.is_nil(again, "an unchanged session is not written back")
  end)

  it("keeps its contents unreadable to the client", function()
    local _, token = run(function(self)
      self.session.email = "alice@example.com"
      self:head(204)
    end)
    assert.is_nil(crypto.base64url_decode(token):find("alice", 1, true))
  end)

  it("is not read, nor written, when the action does not use it", function()
    local _, token = run(function(self)
      self.session.a = 1
      self:head(204)
    end)
    local res, again = run(function(self) self:render{plain = "ok"} end, token)
    assert.equal(200, res.status)
    assert.is_nil(again)
  end)

  it("is written when a table inside it changes", function()
    local _, token = run(function(self)
      self.session.cart = {items = {}}
      self:head(204)
    end)
    local _, token2 = run(function(self)
      local cart = self.session.cart
      cart.items[#cart.items + 1] = "pen"
      self:head(204)
    end, token)
    assert.is_string(token2)
    local got
    run(function(self)
      got = self.session.cart
      self:head(204)
    end, token2)
    assert.same({items = {"pen"}}, got)
  end)

  it("deletes keys and reads what was set in the same request", function()
    local _, token = run(function(self)
      self.session.a, self.session.b = 1, 2
      self:head(204)
    end)
    local got
    local _, token2 = run(function(self)
      self.session.a = nil
      self.session.c = 3
      got = {self.session:delete("b"), self.session.a, self.session:to_table()}
      self:head(204)
    end, token)
    assert.same({2, nil, {c = 3}}, got)
    run(function(self)
      got = self.session:to_table()
      self:head(204)
    end, token2)
    assert.same({c = 3}, got)
  end)

  it("is emptied by reset_session, which deletes the cookie", function()
    local _, token = run(function(self)
      self.session.user_id = 42
      self:head(204)
    end)
    local got
    local _, deleted, line = run(function(self)
      self:reset_session()
      got = self.session.user_id
      self:head(204)
    end, token)
    assert.is_nil(got)
    assert.equal("", deleted)
    assert.equal("_spec_session=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax; " ..
      "Expires=Thu, 01 Jan 1970 00:00:00 GMT", line)
  end)

  it("starts over after reset_session when values are set again", function()
    local _, token = run(function(self)
      self.session.user_id = 42
      self.session.old = true
      self:head(204)
    end)
    local _, fresh = run(function(self)
      self:reset_session()
      self.session.user_id = 7
      self:head(204)
    end, token)
    local got
    run(function(self)
      got = self.session:to_table()
      self:head(204)
    end, fresh)
    assert.same({user_id = 7}, got)
  end)

  it("is empty when the cookie was altered or cut", function()
    local _, token = run(function(self)
      self.session.user_id = 42
      self:head(204)
    end)
    local box = crypto.base64url_decode(token)
    local flipped = crypto.base64url_encode(box:sub(1, 20) .. string.char(bit.bxor(box:byte(21), 0x80)) .. box:sub(22))
    for _, forged in ipairs({flipped, token:sub(1, -3), "garbage", ""}) do
      local got
      run(function(self)
        got = self.session:to_table()
        self:head(204)
      end, forged)
      assert.same({}, got)
    end
  end)

  it("refuses a cookie encrypted for another name", function()
    hooks.spec = function(self)
      self.cookies.encrypted.stolen = {user_id = 1}
      self:head(204)
    end
    local res = t.request(app, "GET", "/run/spec")
    local token = res.headers["set-cookie"][1]:match("^stolen=([^;]*)")
    local got
    run(function(self)
      got = self.session.user_id
      self:head(204)
    end, token)
    assert.is_nil(got)
  end)

  it("refuses keys that are not strings and values JSON cannot hold, at the caller's line", function()
    local errs = {}
    run(function(self)
      errs[1] = select(2, pcall(function() self.session[1] = "x" end))
      errs[2] = select(2, pcall(function() self.session.f = print end))
      errs[3] = select(2, pcall(function() self.session.clear = 1 end))
      self:head(204)
    end)
    assert.matches("session_spec.lua:%d+: session: keys are strings", errs[1])
    assert.matches("session_spec.lua:%d+: session: a function cannot be stored", errs[2])
    assert.matches("session_spec.lua:%d+: session: 'clear' is a method of the session", errs[3])
  end)

  it("refuses changes once the response is sent, instead of losing them", function()
    local errs = {}
    local res = run(function(self)
      self.session.before = 1
      self:stream(function(w)
        errs[1] = select(2, pcall(function() self.session.during = 2 end))
        w("body")
      end)
      self:after_response(function(c)
        errs[2] = select(2, pcall(function() c:reset_session() end))
      end)
    end)
    assert.equal("body", res.body)
    assert.matches("session_spec.lua:%d+: session: the response was already sent", errs[1])
    assert.matches("session_spec.lua:%d+: session: the response was already sent", errs[2])
    local token = res.headers["set-cookie"][1]:match("^_spec_session=([^;]*)")
    local got
    run(function(self)
      got = self.session:to_table()
      self:head(204)
    end, token)
    assert.same({before = 1}, got)
  end)

  it("answers 500 with a clear logged error when it outgrows a cookie", function()
    local res = run(function(self)
      self.session.blob = crypto.hex(crypto.random_bytes(2500))
      self:render{plain = "ok"}
    end)
    assert.equal(500, res.status)
    assert.is_nil(res.headers["set-cookie"])
    assert.equal(1, #logged)
    assert.matches("cookies.overflow: the session cookie '_spec_session' is %d+ bytes, over the 4096 bytes", logged[1])
  end)

  it("expires with expire_after, in the browser and on the server", function()
    local d, a = make_app("return {session = {key = \"_spec_session\", expire_after = 3600}}\n")
    dirs[#dirs + 1] = d
    local _, token, line = run(function(self)
      self.session.user_id = 42
      self:head(204)
    end, nil, a)
    assert.equal("_spec_session=" .. token .. "; Path=/; Expires=Tue, 14 Nov 2023 23:13:20 GMT; HttpOnly; " ..
      "SameSite=Lax", line)
    -- A request that reads the session slides the expiry forward.
    NOW = NOW + 1800
    local got
    local _, slid = run(function(self)
      got = self.session.user_id
      self:head(204)
    end, token, a)
    assert.equal(42, got)
    assert.is_string(slid)
    NOW = NOW + 1801
    run(function(self)
      got = self.session.user_id
      self:head(204)
    end, token, a)
    assert.is_nil(got, "the first cookie is past its expiry")
    run(function(self)
      got = self.session.user_id
      self:head(204)
    end, slid, a)
    assert.equal(42, got)
    NOW = 1700000000
  end)

  it("takes its cookie options and name from config.session, and is named after the app by default", function()
    local d, a = make_app("return {session = {path = \"/app\", samesite = \"Strict\", secure = true}}\n")
    dirs[#dirs + 1] = d
    hooks.spec = function(self)
      self.session.x = 1
      self:head(204)
    end
    local res = t.request(a, "GET", "/run/spec")
    local name = "_" .. d:match("([^/]+)$"):gsub("[^%w_]", "_") .. "_session"
    assert.matches("^" .. name:gsub("%p", "%%%0") .. "=[%w_%-]+; Path=/app; Secure; HttpOnly; SameSite=Strict$",
      res.headers["set-cookie"][1])
  end)

  it("can be turned off", function()
    local d, a = make_app("return {session = false}\n")
    dirs[#dirs + 1] = d
    hooks.spec = function(self)
      local ok, err = pcall(function() return self.session.x end)
      self:render{plain = tostring(ok) .. " " .. tostring(err)}
    end
    local res = t.request(a, "GET", "/run/spec")
    assert.matches("false .*session: sessions are turned off %(config.session = false%)", res.body)
  end)

  it("rejects invalid settings at boot", function()
    local function boot_error(config)
      local d = os.tmpname()
      os.remove(d)
      dirs[#dirs + 1] = d
      write(d .. "/config/application.lua", config)
      write(d .. "/config/routes.lua", "return function(r) end\n")
      local ok, err = pcall(t.load, d)
      assert.is_false(ok)
      return err.message
    end
    assert.equal("config.session: invalid cookie name \"a b\" (letters, digits and !#$%&'*+-.^_`|~ only)",
      (boot_error('return {session = {key = "a b"}}\n'):gsub("cookies: ", "")))
    assert.matches("config.session: cookies: unknown option 'colour'",
      boot_error('return {session = {colour = 1}}\n'), 1, true)
    assert.matches("config.session.expire_after must be a number of seconds",
      boot_error('return {session = {expire_after = "1h"}}\n'), 1, true)
    assert.matches("config.session must be a table of settings or false",
      boot_error('return {session = "x"}\n'), 1, true)
  end)
end)
