-- End to end: the server as a process: graceful shutdown, cancellation of abandoned requests,
-- worker supervision and the command line.
--
--   RAGE_BIN=build/rage-lua build/rage-lua test spec/e2e/process_spec.lua

local server = require("spec.support.server")
local client = require("spec.support.client")

local build = client.build
local APP = "spec/fixtures/e2e_app"

local function get_json(port, target)
  local res = assert(client.request(port, "GET", target))
  assert.equal(200, res.status)
  return client.json(res.body)
end

-- Waits until /stats says `field` reached `value`; returns the stats.
local function wait_stats(port, field, value, timeout)
  local last
  local ok = server.wait_for(function()
    last = get_json(port, "/stats")
    return last[field] >= value
  end, timeout or 3)
  assert(ok, ("stats.%s never reached %d: %s"):format(field, value, require("cjson").encode(last or {})))
  return last
end

describe("graceful shutdown (SIGTERM)", function()
  it("finishes in-flight requests with Connection: close, refuses new ones and exits 0", function()
    local srv = assert(server.start{app = APP, env = {E2E_SERVER = "keepalive_timeout=10"}})
    local conns = {}
    finally(function()
      for _, c in ipairs(conns) do c:close() end
      srv:stop()
    end)
    -- an idle keep-alive connection
    local idle = assert(client.connect(srv.port))
    conns[#conns + 1] = idle
    assert(idle:send(build("GET", "/count")))
    assert.equal(200, assert(idle:read_response()).status)
    -- three slow requests in flight
    local slow = {}
    for i = 1, 3 do
      slow[i] = assert(client.connect(srv.port))
      conns[#conns + 1] = slow[i]
      assert(slow[i]:send(build("GET", "/slow?ms=800")))
    end
    wait_stats(srv.port, "started", 3)
    local t0 = server.now()
    srv:signal("TERM")
    -- the idle connection is closed at once, without a response
    assert.is_true(idle:wait_closed(1))
    assert.equal("", idle.buf)
    -- new connections are refused once the listener is closed
    assert.is_truthy(server.wait_for(function()
      local c = client.connect(srv.port)
      if c then c:close() return false end
      return true
    end, 1), "the server still accepts connections after SIGTERM")
    -- the in-flight requests complete
    for i = 1, 3 do
      local res = assert(slow[i]:read_response({timeout = 3}))
      assert.equal(200, res.status)
      assert.same({slept_ms = 800}, client.json(res.body))
      assert.is_true(res.close, "the response lacks Connection: close")
      assert.is_true(slow[i]:wait_closed(1))
    end
    assert.equal(0, srv:wait(3))
    assert.is_true(server.now() - t0 < 2.5)
    assert.matches("shutting down", srv:log())
  end)

  it("exits 0 with a connection idle in the rage.http pool", function()
    local up = assert(server.start{app = APP, env = {E2E_SERVER = "keepalive_timeout=60"}})
    local srv = assert(server.start{app = APP})
    finally(function()
      srv:stop()
      up:stop()
    end)
    assert.same({status = 200, idle = 1}, get_json(srv.port, "/relay?port=" .. up.port))
    srv:signal("TERM")
    assert.equal(0, srv:wait(3))
  end)

  it("gives up on requests still running after drain_timeout", function()
    local srv = assert(server.start{app = APP, env = {E2E_SERVER = "drain_timeout=0.5"}})
    local c
    finally(function()
      if c then c:close() end
      srv:stop()
    end)
    c = assert(client.connect(srv.port))
    assert(c:send(build("GET", "/slow?ms=10000")))
    wait_stats(srv.port, "started", 1)
    local t0 = server.now()
    srv:signal("TERM")
    local status = srv:wait(5)
    local elapsed = server.now() - t0
    assert.equal(0, status, "the server did not stop cleanly")
    assert.is_true(elapsed >= 0.4 and elapsed < 2.5, "stopped after " .. elapsed .. " s")
    assert.is_true(c:wait_closed(1))
    assert.matches("drain timeout", srv:log())
  end)

  it("stops at once on a second signal", function()
    local srv = assert(server.start{app = APP, env = {E2E_SERVER = "drain_timeout=30"}})
    local c
    finally(function()
      if c then c:close() end
      srv:stop()
    end)
    c = assert(client.connect(srv.port))
    assert(c:send(build("GET", "/slow?ms=20000")))
    wait_stats(srv.port, "started", 1)
    srv:signal("TERM")
    server.sleep(0.2)
    assert.is_true(srv:running(), "the first signal must wait for the request")
    local t0 = server.now()
    srv:signal("TERM")
    assert.is_not_nil(srv:wait(3), "the second signal did not stop the server")
    assert.is_true(server.now() - t0 < 2)
    assert.is_true(c:wait_closed(1))
  end)

  it("stops on SIGINT as on SIGTERM", function()
    local srv = assert(server.start{app = APP})
    finally(function() srv:stop() end)
    local c = assert(client.connect(srv.port))
    assert(c:send(build("GET", "/slow?ms=300")))
    wait_stats(srv.port, "started", 1)
    srv:signal("INT")
    local res = assert(c:read_response({timeout = 3}))
    c:close()
    assert.equal(200, res.status)
    assert.is_true(res.close)
    assert.equal(0, srv:wait(3))
  end)
end)

describe("a client that goes away", function()
  local srv

  setup(function()
    srv = assert(server.start{app = APP})
  end)

  teardown(function()
    if srv then assert.equal(0, srv:stop(), "the server did not stop cleanly") end
  end)

  it("cancels its request's fiber", function()
    local before = get_json(srv.port, "/stats")
    local c = assert(client.connect(srv.port))
    assert(c:send(build("GET", "/slow?ms=1000")))
    wait_stats(srv.port, "started", before.started + 1)
    c:close()
    local after = wait_stats(srv.port, "cancelled", before.cancelled + 1, 0.5)
    assert.equal(before.finished, after.finished)
    -- well past the sleep: it never finished
    server.sleep(1.1)
    after = get_json(srv.port, "/stats")
    assert.equal(before.finished, after.finished)
    assert.equal(before.cancelled + 1, after.cancelled)
    assert.equal(before.failed, after.failed)
    -- Nobody waits for its response: that is not an error of the app.
    assert.is_nil(srv:log():find("without a response", 1, true), srv:log())
  end)

  it("stops a streamed response", function()
    local before = get_json(srv.port, "/stats")
    local c = assert(client.connect(srv.port))
    -- 1000 chunks, 10 ms apart: 10 s if nobody stopped it
    assert(c:send(build("GET", "/stream?n=1000")))
    assert(c:read_until("part 3\n", 2))
    c:close()
    local after = wait_stats(srv.port, "streams_aborted", before.streams_aborted + 1, 1)
    assert.equal(before.streams_finished, after.streams_finished)
  end)

  it("does not disturb other requests", function()
    local before = get_json(srv.port, "/stats")
    local gone = assert(client.connect(srv.port))
    local stays = assert(client.connect(srv.port))
    finally(function() stays:close() end)
    assert(gone:send(build("GET", "/slow?ms=500")))
    assert(stays:send(build("GET", "/slow?ms=500")))
    wait_stats(srv.port, "started", before.started + 2)
    gone:close()
    local res = assert(stays:read_response({timeout = 3}))
    assert.equal(200, res.status)
    local after = get_json(srv.port, "/stats")
    assert.equal(before.finished + 1, after.finished)
    assert.equal(before.cancelled + 1, after.cancelled)
  end)
end)

describe("--workers 2", function()
  local srv

  setup(function()
    srv = assert(server.start{app = APP, workers = 2})
    assert.matches("2 workers", srv:log())
  end)

  teardown(function()
    if srv then assert.equal(0, srv:stop(), "the server did not stop cleanly") end
  end)

  -- PIDs seen answering `n` requests, each on a new connection.
  local function answering_pids(n)
    local seen, failures = {}, 0
    for _ = 1, n do
      local res = client.request(srv.port, "GET", "/pid")
      if res and res.status == 200 then
        local pid = client.json(res.body).pid
        seen[pid] = (seen[pid] or 0) + 1
      else
        failures = failures + 1
      end
    end
    return seen, failures
  end

  local function set_of(list)
    local s = {}
    for _, v in ipairs(list) do s[v] = true end
    return s
  end

  local function keys(t)
    local list = {}
    for k in pairs(t) do list[#list + 1] = k end
    table.sort(list)
    return list
  end

  it("bounds the master's wait at shutdown by the app's drain_timeout, not a fixed 30 s", function()
    local stuck = assert(server.start{app = APP, workers = 2, env = {E2E_SERVER = "drain_timeout=1"}})
    local conn = assert(client.connect(stuck.port))
    assert(conn:send("GET /spin?ms=60000 HTTP/1.1\r\nHost: t\r\n\r\n"))
    server.sleep(0.3)
    stuck:signal("TERM")
    local status = stuck:wait(20)
    conn:close()
    assert.is_not_nil(status, "the master was still waiting after 20 s")
    assert.matches("did not stop in time", stuck:log())
  end)

  it("serves from both workers", function()
    local workers = server.wait_for(function()
      local kids = srv:children()
      return #kids == 2 and kids
    end, 5)
    assert(workers, "the master does not have 2 workers")
    assert.equal(3, srv:process_count())
    local seen, failures = answering_pids(60)
    assert.equal(0, failures)
    assert.same(workers, keys(seen))
  end)

  it("restarts a worker killed with SIGKILL, and requests keep succeeding", function()
    local workers = server.wait_for(function()
      local kids = srv:children()
      return #kids == 2 and kids
    end, 5)
    assert(workers)
    local victim = workers[1]
    assert(server.sh("kill -9 " .. victim))
    assert.is_truthy(server.wait_for(function() return not server.alive(victim) end, 2))
    -- requests go on while the master replaces the worker
    local _, failures = answering_pids(20)
    assert.equal(0, failures)
    local now = server.wait_for(function()
      local kids = srv:children()
      return #kids == 2 and not set_of(kids)[victim] and kids
    end, 5)
    assert(now, "no new worker appeared: " .. table.concat(srv:children(), " "))
    local new_pid
    for _, p in ipairs(now) do
      if p ~= workers[2] then new_pid = p end
    end
    assert.is_not_nil(new_pid)
    assert.matches("killed by signal 9", srv:log())
    -- the new worker serves too
    local seen
    assert.is_truthy(server.wait_for(function()
      local s, f = answering_pids(20)
      assert.equal(0, f)
      seen = s
      return s[new_pid] ~= nil
    end, 5), "the new worker never answered")
    for pid in pairs(seen) do assert.is_true(set_of(now)[pid] ~= nil) end
  end)

  it("SIGTERM to the master stops every process and exits 0", function()
    local kids = srv:children()
    assert.equal(2, #kids)
    local c = assert(client.connect(srv.port))
    assert(c:send(build("GET", "/slow?ms=500")))
    server.sleep(0.1)
    srv:signal("TERM")
    local res = assert(c:read_response({timeout = 3}))
    c:close()
    assert.equal(200, res.status)
    assert.is_true(res.close)
    assert.equal(0, srv:wait(5))
    for _, pid in ipairs(kids) do
      assert.is_truthy(server.wait_for(function() return not server.alive(pid) end, 2),
        "worker " .. pid .. " outlived the master")
    end
    assert.is_nil(client.connect(srv.port))
  end)
end)

describe("the command line", function()
  it("prints its version", function()
    local code, out = server.run_cli({"--version"})
    assert.equal(0, code)
    assert.matches("^rage%-lua %d+%.%d+%.%d+", out)
  end)

  it("prints help", function()
    local code, out = server.run_cli({"--help"})
    assert.equal(0, code)
    assert.matches("Usage", out)
    assert.matches("run DIR", out)
    assert.matches("%-%-port", out)
  end)

  it("prints usage and fails without arguments", function()
    local code, _, err = server.run_cli({})
    assert.not_equal(0, code)
    assert.matches("Usage", err)
  end)

  local function fails_with(args, pattern)
    local code, out, err = server.run_cli(args, {timeout = 20})
    assert.is_not_nil(code)
    assert.not_equal(0, code, "exit 0 for " .. table.concat(args, " "))
    assert.matches(pattern, err .. out)
    -- readable: one short message, no Lua traceback
    assert.not_matches("stack traceback", err)
    return err
  end

  it("rejects a missing app directory", function()
    fails_with({"run", "/nonexistent/app", "--port", "0"}, "no such app directory: /nonexistent/app")
  end)

  it("rejects a directory that is not an app", function()
    fails_with({"run", "spec/e2e", "--port", "0"}, "does not look like a rage%-lua app")
  end)

  it("names the file and line of a syntax error in a controller", function()
    fails_with({"run", "spec/fixtures/e2e_broken", "--port", "0", "--host", "127.0.0.1"},
      "e2e_broken/app/controllers/broken%.lua:6:")
  end)

  it("names the file and line of a syntax error with --workers 2", function()
    fails_with({"run", "spec/fixtures/e2e_broken", "--port", "0", "--host", "127.0.0.1", "--workers", "2"},
      "e2e_broken/app/controllers/broken%.lua:6:")
  end)

  it("reports a port already in use", function()
    local srv = assert(server.start{app = APP})
    finally(function() srv:stop() end)
    fails_with({"run", APP, "--port", tostring(srv.port), "--host", "127.0.0.1"},
      "port " .. srv.port .. " is already in use")
    -- the running server is unharmed
    assert.equal(200, assert(client.request(srv.port, "GET", "/count")).status)
  end)

  it("rejects bad flags", function()
    fails_with({"run", APP, "--port", "abc"}, "%-%-port needs a number")
    fails_with({"run", APP, "--port", "70000"}, "%-%-port needs a number")
    fails_with({"run", APP, "--port"}, "%-%-port needs a number")
    fails_with({"run", APP, "--workers", "0"}, "%-%-workers needs a number")
    fails_with({"run", APP, "--env", "staging"}, "%-%-env must be development, production or test")
    fails_with({"run", APP, "--bogus"}, "unknown option '%-%-bogus'")
    fails_with({"run"}, "run needs an app directory")
    fails_with({"run", APP, "extra"}, "unexpected argument 'extra'")
    fails_with({"frobnicate"}, "unknown command 'frobnicate'")
  end)

  it("rejects a bad PORT variable", function()
    local code, _, err = server.run_cli({"run", APP}, {prefix = "PORT=notaport ", timeout = 10})
    assert.not_equal(0, code)
    assert.matches("PORT must be a number", err)
  end)
end)
