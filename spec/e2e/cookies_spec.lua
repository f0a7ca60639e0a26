-- End to end: cookies and the session through a real server and real clients. curl keeps the
-- session in its cookie jar across requests; the raw client shows every Set-Cookie line exactly
-- as it crossed the socket; a production boot without secret_key_base is refused.

local server = require("spec.support.server")
local client = require("spec.support.client")

local quote, sh = server.quote, server.sh

local write = server.write_file

local SESSIONS = [[
local Sessions = rage.controller("sessions")

function Sessions:create()
  self:reset_session()
  self.session.user = self.params.user
  self.cookies.permanent.signed.remember = self.params.user
  self:render{json = {ok = true}}
end

function Sessions:show()
  self:render{json = {user = self.session.user or rage.null, remember = self.cookies.signed.remember or rage.null,
                      visits = self.session.visits or 0}}
end

function Sessions:visit()
  self.session.visits = (self.session.visits or 0) + 1
  self:head(204)
end

function Sessions:destroy()
  self:reset_session()
  self:head(204)
end

return Sessions
]]

local JAR = [[
local Jar = rage.controller("jar")

function Jar:many()
  self.cookies.a = "1"
  self.cookies:set("b", "two words", {max_age = 60})
  self.cookies.encrypted.c = {x = 1}
  self:render{plain = "ok"}
end

function Jar:chunks()
  self.cookies.s = "streamed"
  self:stream(function(write) write("one,") write("two") end)
end

function Jar:attachment()
  self.cookies.f = "filed"
  self:send_file(rage.app.dir .. "/public/robots.txt")
end

function Jar:away()
  self.cookies.r = "redirected"
  self:redirect_to("/me")
end

function Jar:evil_value()
  self.cookies.v = "x\r\nSet-Cookie: admin=1; Domain=evil.example"
  self:head(204)
end

function Jar:evil_name()
  self.cookies.ok = "1"
  self.cookies["x\r\nSet-Cookie: admin"] = "1"
  self:head(204)
end

return Jar
]]

local ROUTES = [[
return function(r)
  r:post("/login", "sessions#create")
  r:get("/me", "sessions#show")
  r:post("/visit", "sessions#visit")
  r:post("/logout", "sessions#destroy")
  r:get("/many", "jar#many")
  r:get("/stream", "jar#chunks")
  r:get("/file", "jar#attachment")
  r:get("/redirect", "jar#away")
  r:get("/evil/value", "jar#evil_value")
  r:get("/evil/name", "jar#evil_name")
end
]]

-- The Set-Cookie lines of a raw response, in order.
local function set_cookies(res)
  local lines = {}
  for _, h in ipairs(res.header_list) do
    if h[1]:lower() == "set-cookie" then lines[#lines + 1] = h[2] end
  end
  return lines
end

describe("cookies and sessions over a socket", function()
  local dir, srv, jar

  setup(function()
    dir = server.capture("mktemp -d /tmp/rage-cookies.XXXXXX"):gsub("%s+$", "")
    sh("mkdir -p " .. quote(dir .. "/app/config") .. " " .. quote(dir .. "/app/app/controllers") .. " " ..
       quote(dir .. "/app/public"))
    write(dir .. "/app/config/routes.lua", ROUTES)
    write(dir .. "/app/config/application.lua",
      'return {trusted_proxies = {"127.0.0.1"}, session = {key = "_e2e_session"}}\n')
    write(dir .. "/app/app/controllers/sessions.lua", SESSIONS)
    write(dir .. "/app/app/controllers/jar.lua", JAR)
    write(dir .. "/app/public/robots.txt", "User-agent: *\n")
    jar = dir .. "/curl-jar.txt"
    srv = assert(server.start{app = dir .. "/app"})
  end)

  teardown(function()
    if srv then srv:stop() end
    if dir then sh("rm -rf " .. quote(dir)) end
  end)

  local function url(path)
    return "http://127.0.0.1:" .. srv.port .. path
  end

  local function curl(method, path)
    local status, body, headers, err = client.curl({"-X", method, "-c", jar, "-b", jar, url(path)})
    assert(status, err)
    return status, body, headers
  end

  local function get(path, headers)
    return assert(client.request(srv.port, "GET", path, headers))
  end

  it("keeps the session in curl's cookie jar across requests", function()
    local status = curl("POST", "/login?user=alice")
    assert.equal(200, status)
    local stored = server.read_file(jar)
    assert.matches("#HttpOnly_127%.0%.0%.1\tFALSE\t/\tFALSE\t0\t_e2e_session\t", stored)
    assert.matches("#HttpOnly_127%.0%.0%.1\tFALSE\t/\tFALSE\t%d+\tremember\t", stored)
    local _, body = curl("GET", "/me")
    assert.same({user = "alice", remember = "alice", visits = 0}, client.json(body))
    assert.equal(204, (curl("POST", "/visit")))
    assert.equal(204, (curl("POST", "/visit")))
    _, body = curl("GET", "/me")
    assert.same({user = "alice", remember = "alice", visits = 2}, client.json(body))
  end)

  it("forgets the session after reset_session and refuses a tampered cookie", function()
    curl("POST", "/login?user=bob")
    local stored = server.read_file(jar)
    local token = stored:match("_e2e_session\t(%S+)")
    local flipped = token:sub(1, 20) .. (token:sub(21, 21) == "A" and "B" or "A") .. token:sub(22)
    local res = get("/me", {Cookie = "_e2e_session=" .. flipped})
    assert.same({user = client.json("null"), remember = client.json("null"), visits = 0}, client.json(res.body))
    local status, _, headers = curl("POST", "/logout")
    assert.equal(204, status)
    assert.equal("_e2e_session=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax; Expires=Thu, 01 Jan 1970 00:00:00 GMT",
      headers["set-cookie"])
    stored = server.read_file(jar)
    assert.is_nil(stored:find("_e2e_session", 1, true))
    local _, body = curl("GET", "/me")
    assert.same({user = client.json("null"), remember = "bob", visits = 0}, client.json(body))
  end)

  it("sends one Set-Cookie line per cookie", function()
    local res = get("/many")
    assert.equal(200, res.status)
    local lines = set_cookies(res)
    assert.equal(3, #lines)
    assert.equal("a=1; Path=/; HttpOnly; SameSite=Lax", lines[1])
    assert.equal("b=two%20words; Path=/; Max-Age=60; HttpOnly; SameSite=Lax", lines[2])
    assert.matches("^c=[%w_%-]+; Path=/; HttpOnly; SameSite=Lax$", lines[3])
  end)

  it("sends Set-Cookie with a stream, a file and a redirect", function()
    local res = get("/stream")
    assert.equal("one,two", res.body)
    assert.same({"s=streamed; Path=/; HttpOnly; SameSite=Lax"}, set_cookies(res))
    res = get("/file")
    assert.equal("User-agent: *\n", res.body)
    assert.same({"f=filed; Path=/; HttpOnly; SameSite=Lax"}, set_cookies(res))
    res = get("/redirect")
    assert.equal(302, res.status)
    assert.same({"r=redirected; Path=/; HttpOnly; SameSite=Lax"}, set_cookies(res))
  end)

  it("marks cookies Secure behind a trusted proxy that terminated TLS", function()
    local res = get("/many", {["X-Forwarded-Proto"] = "https"})
    for _, line in ipairs(set_cookies(res)) do
      assert.matches("; Secure; HttpOnly; SameSite=Lax$", line)
    end
  end)

  it("never lets CR or LF from a value or a name reach the wire", function()
    local res = get("/evil/value")
    assert.equal(204, res.status)
    assert.same({"v=x%0D%0ASet-Cookie:%20admin=1%3B%20Domain=evil.example; Path=/; HttpOnly; SameSite=Lax"},
      set_cookies(res))
    assert.is_nil(res.head:find("admin=1;", 1, true))
    res = get("/evil/name")
    assert.equal(500, res.status)
    assert.same({}, set_cookies(res))
    assert.is_nil(res.head:lower():find("admin", 1, true))
    assert.matches("invalid cookie name", srv:log())
  end)
end)

describe("secret_key_base in production", function()
  local dir

  setup(function()
    dir = server.capture("mktemp -d /tmp/rage-cookies.XXXXXX"):gsub("%s+$", "")
    sh("mkdir -p " .. quote(dir .. "/app/config") .. " " .. quote(dir .. "/app/app/controllers"))
    write(dir .. "/app/config/routes.lua",
      'return function(r) r:get("/me", "sessions#show") r:post("/login", "sessions#create") end\n')
    write(dir .. "/app/app/controllers/sessions.lua", SESSIONS)
  end)

  teardown(function()
    if dir then sh("rm -rf " .. quote(dir)) end
  end)

  it("stops the boot when it is missing or short, saying why", function()
    local function boot(secret)
      local code, out, err = server.run_cli({"run", dir .. "/app", "--port", "0", "--host", "127.0.0.1",
                                             "--env", "production", "--workers", "1"},
                                            {prefix = "SECRET_KEY_BASE=" .. quote(secret) .. " ", timeout = 20})
      assert.is_not_nil(code)
      assert.not_equal(0, code)
      assert.not_matches("stack traceback", err)
      return err .. out
    end
    assert.matches("secret_key_base is missing for the production environment: set SECRET_KEY_BASE", boot(""), 1, true)
    assert.matches("SECRET_KEY_BASE is too short (63 characters): it needs at least 64", boot(string.rep("a", 63)),
      1, true)
  end)

  it("boots with one, and cookies outlive a restart with the same secret only", function()
    local jar = dir .. "/jar.txt"
    local function start(secret)
      return assert(server.start{app = dir .. "/app", rage_env = "production", workers = 1,
                                 env = {SECRET_KEY_BASE = secret}})
    end
    local function me(srv)
      local status, body, _, err = client.curl({"-c", jar, "-b", jar, "http://127.0.0.1:" .. srv.port .. "/me"})
      assert.equal(200, status, err)
      return client.json(body)
    end
    local secret = string.rep("0123456789abcdef", 8)
    local srv = start(secret)
    local status = client.curl({"-X", "POST", "-c", jar, "-b", jar,
                                "http://127.0.0.1:" .. srv.port .. "/login?user=carol"})
    assert.equal(200, status)
    assert.equal("carol", me(srv).user)
    srv:stop()
    srv = start(secret)
    assert.equal("carol", me(srv).user)
    assert.equal("carol", me(srv).remember)
    srv:stop()
    srv = start(string.rep("fedcba9876543210", 8))
    finally(function() srv:stop() end)
    assert.same({user = client.json("null"), remember = client.json("null"), visits = 0}, me(srv))
  end)
end)
