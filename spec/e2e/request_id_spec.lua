-- End to end: request ids. The server echoes a safe X-Request-Id or makes one, in every response
-- (routes, errors, static files, streams), hands it to Lua as request:request_id(), and puts it in
-- the log lines of the request and of the fibers it spawns; config.request_id = false turns it off.

local server = require("spec.support.server")
local client = require("spec.support.client")

local quote, sh = server.quote, server.sh

local write = server.write_file

local ROUTES = [[
return function(r)
  r:get("/api", "api#show")
  r:get("/id", "api#id")
  r:get("/own", "api#own")
  r:get("/logged", "api#logged")
  r:get("/stream", "api#chunks")
  r:get("/boom", "api#boom")
end
]]

local CONTROLLER = [[
local A = rage.controller("api")
function A:show() self:render{json = {ok = true}} end
function A:id() self:render{plain = self.request:request_id()} end
function A:own() self:render{plain = "mine", headers = {["X-Request-Id"] = "set-by-app"}} end
function A:logged()
  rage.log.info("in the action")
  rage.spawn(function() rage.log.info("in a spawned fiber") end):wait()
  self:after_response(function() rage.log.info("after the response") end)
  self:render{plain = "ok"}
end
function A:chunks() self:stream(function(write) write("a") write("b") end) end
function A:boom() error("kaboom") end
return A
]]

local function make_app(dir, config)
  sh("mkdir -p " .. quote(dir .. "/config") .. " " .. quote(dir .. "/public") .. " " ..
     quote(dir .. "/app/controllers"))
  write(dir .. "/config/routes.lua", ROUTES)
  write(dir .. "/config/application.lua", config)
  write(dir .. "/app/controllers/api.lua", CONTROLLER)
  write(dir .. "/public/page.txt", "static\n")
end

describe("request ids", function()
  local dir, srv

  setup(function()
    dir = server.capture("mktemp -d /tmp/rage-rid.XXXXXX"):gsub("%s+$", "")
    make_app(dir .. "/on", 'return {log = {level = "info"}}\n')
    make_app(dir .. "/off", 'return {request_id = false, log = {level = "info"}}\n')
    srv = assert(server.start{app = dir .. "/on"})
  end)

  teardown(function()
    if srv then srv:stop() end
    if dir then sh("rm -rf " .. quote(dir)) end
  end)

  local function get(target, headers)
    return assert(client.request(srv.port, "GET", target, headers))
  end

  it("echoes a safe X-Request-Id and replaces an unsafe one", function()
    assert.equal("req-42.a:b@c_d", get("/api", {["X-Request-Id"] = "req-42.a:b@c_d"}).headers["x-request-id"])
    for _, bad in ipairs({"bad id with spaces", "semi;colon", ("x"):rep(129)}) do
      local id = get("/api", {["X-Request-Id"] = bad}).headers["x-request-id"]
      assert.is_string(id)
      assert.not_equal(bad, id)
    end
    assert.equal(("y"):rep(128), get("/api", {["X-Request-Id"] = ("y"):rep(128)}).headers["x-request-id"])
  end)

  it("finds X-Request-Id whatever the case of its name", function()
    assert.equal("upper-7", get("/api", {["X-REQUEST-ID"] = "upper-7"}).headers["x-request-id"])
  end)

  it("makes ids that are unique, short and safe: a per-process prefix and a counter", function()
    local seen, prefix, last = {}, nil, nil
    for _ = 1, 20 do
      local id = get("/api").headers["x-request-id"]
      assert.is_string(id)
      assert.is_nil(seen[id], "request id " .. id .. " was given twice")
      seen[id] = true
      local p, n = id:match("^(%x+%-)(%d+)$")
      assert.is_string(p, "unexpected request id format: " .. id)
      prefix = prefix or p
      assert.equal(prefix, p)
      n = tonumber(n)
      if last then assert.is_true(n > last) end
      last = n
    end
  end)

  it("gives request:request_id() the id the response carries", function()
    local res = get("/id")
    assert.equal(res.headers["x-request-id"], res.body)
    assert.equal("mine-1", get("/id", {["X-Request-Id"] = "mine-1"}).body)
  end)

  it("is in every response: not found, errors, static files, streams and HEAD", function()
    for _, target in ipairs({"/nope", "/boom", "/page.txt", "/stream"}) do
      local res = get(target)
      assert.is_string(res.headers["x-request-id"], target)
      assert.matches("^%x+%-%d+$", res.headers["x-request-id"], 1, false, target)
    end
    local head = assert(client.request(srv.port, "HEAD", "/api", nil, nil, {head = true}))
    assert.is_string(head.headers["x-request-id"])
  end)

  it("leaves an X-Request-Id the app set alone, and sends one only", function()
    local res = get("/own", {["X-Request-Id"] = "from-client"})
    local n = 0
    for _, h in ipairs(res.header_list) do
      if h[1]:lower() == "x-request-id" then n = n + 1 end
    end
    assert.equal(1, n)
    assert.equal("set-by-app", res.headers["x-request-id"])
  end)

  it("is in the log lines of the request, of the fibers it spawns and of after_response", function()
    local res = get("/logged", {["X-Request-Id"] = "trace-me-9"})
    assert.equal(200, res.status)
    local log
    server.wait_for(function()
      log = srv:log()
      return log:find("after the response", 1, true)
    end, 5)
    for _, msg in ipairs({"in the action", "in a spawned fiber", "after the response"}) do
      local line = log:match("[^\n]*" .. msg .. "[^\n]*")
      assert.is_string(line, msg)
      assert.matches("request_id=trace%-me%-9", line)
    end
    -- The failed request's error line names its id too.
    local boom = get("/boom")
    server.wait_for(function() return srv:log():find("kaboom", 1, true) end, 5)
    assert.truthy(srv:log():find("[" .. boom.headers["x-request-id"] .. "] failed", 1, true))
  end)

  it("is off with config.request_id = false: no header, no id in the log lines", function()
    local off = assert(server.start{app = dir .. "/off"})
    finally(function() off:stop() end)
    local res = assert(client.request(off.port, "GET", "/logged", {["X-Request-Id"] = "x-1"}))
    assert.equal(200, res.status)
    assert.is_nil(res.headers["x-request-id"])
    assert.is_nil(assert(client.request(off.port, "GET", "/api")).headers["x-request-id"])
    server.wait_for(function() return off:log():find("after the response", 1, true) end, 5)
    assert.falsy(off:log():find("request_id=", 1, true))
  end)
end)
