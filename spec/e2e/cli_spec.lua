-- End to end: the developer commands — rage-lua new, test DIR, routes, console — and reloading
-- changed files in development, with the real executable.

local server = require("spec.support.server")
local client = require("spec.support.client")

local quote, sh, capture = server.quote, server.sh, server.capture

-- Runs fn(srv) with a server of `opts`, stopping it however fn ends.
local function with_server(opts, fn)
  local srv = assert(server.start(opts))
  local ok, err = pcall(fn, srv)
  srv:stop()
  if not ok then error(err, 0) end
end

describe("rage-lua new", function()
  local dir

  setup(function()
    dir = capture("mktemp -d /tmp/rage-cli.XXXXXX"):gsub("%s+$", "")
  end)

  teardown(function()
    if dir then sh("rm -rf " .. quote(dir)) end
  end)

  it("creates an app whose specs pass and which serves", function()
    local app = dir .. "/blog"
    local out = capture(quote(server.bin()) .. " new " .. quote(app) .. " 2>&1")
    assert.matches("create " .. app:gsub("%p", "%%%0") .. "/config/routes.lua", out)
    local test_out = capture(quote(server.bin()) .. " test " .. quote(app) .. " 2>&1; echo rc=$?")
    assert.matches("2 successes / 0 failures", test_out)
    assert.matches("rc=0", test_out)
    local routes = capture(quote(server.bin()) .. " routes " .. quote(app) .. " 2>&1")
    assert.matches("welcome#index", routes)
    assert.matches("/hello/:name", routes)
    with_server({app = app, rage_env = "development"}, function(srv)
      local res = assert(client.request(srv.port, "GET", "/"))
      assert.equal(200, res.status)
      assert.equal("blog", client.json(res.body).app)
    end)
  end)

  it("refuses to overwrite and explains its usage", function()
    local out = capture(quote(server.bin()) .. " new " .. quote(dir) .. " 2>&1; echo rc=$?")
    assert.matches("already exists", out)
    assert.matches("rc=1", out)
    out = capture(quote(server.bin()) .. " new 2>&1; echo rc=$?")
    assert.matches("usage", out)
    assert.matches("rc=1", out)
  end)

  it("reloads changed files in development", function()
    local app = dir .. "/reload"
    capture(quote(server.bin()) .. " new " .. quote(app))
    with_server({app = app, rage_env = "development"}, function(srv)
      local res = assert(client.request(srv.port, "GET", "/hello/a"))
      assert.equal("Hello, a!", client.json(res.body).greeting)
      local path = app .. "/app/controllers/welcome.lua"
      local src = server.read_file(path)
      local f = assert(io.open(path, "w"))
      f:write((src:gsub('"Hello, "', '"Howdy, "')))
      f:close()
      assert.is_truthy(server.wait_for(function()
        local r = client.request(srv.port, "GET", "/hello/a")
        return r and r.body:find("Howdy, a!", 1, true) ~= nil
      end, 5, 0.2), "the change was not picked up")
      -- a broken edit answers 500 with the load error, then recovers when fixed
      f = assert(io.open(path, "w"))
      f:write("local W = rage.controller('welcome'\n")
      f:close()
      assert.is_truthy(server.wait_for(function()
        local r = client.request(srv.port, "GET", "/hello/a")
        return r and r.status == 500 and r.body:find("welcome.lua", 1, true) ~= nil
      end, 5, 0.2), "a broken file did not show its error")
      f = assert(io.open(path, "w"))
      f:write(src)
      f:close()
      assert.is_truthy(server.wait_for(function()
        local r = client.request(srv.port, "GET", "/hello/a")
        return r and r.status == 200
      end, 5, 0.2), "the app did not recover")
    end)
  end)

  it("runs a console inside the runtime", function()
    local out = capture("printf 'rage.sleep(0.01)\\nreturn 6 * 7\\nrage.app.env\\nerror(\"x\")\\n' | " ..
      quote(server.bin()) .. " console apps/hello 2>&1")
    assert.matches("rage> 42", out)
    assert.matches('rage> "%a+"', out)   -- rage.app.env
    assert.matches("error: ", out)
  end)
end)
