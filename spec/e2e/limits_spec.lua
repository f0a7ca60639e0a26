-- End to end: every size and time limit of the server, at the boundary and one step past it.
--
--   RAGE_BIN=build/rage-lua build/rage-lua test spec/e2e/limits_spec.lua
--
-- spec/fixtures/e2e_app has small limits (see its config/application.lua):
--   target 256 B, header bytes 1024 (names + values), 10 headers, body 1024 B, chunk
--   extensions 64 B per chunk (names + values), header/body-idle/keep-alive timeouts 0.5 s,
--   5 requests per connection.
-- spec/fixtures/e2e_defaults has no server settings: the built-in defaults apply.

local server = require("spec.support.server")
local client = require("spec.support.client")

local build = client.build

-- Helpers bound to one server.
local function helpers(get_srv)
  local h = {}

  function h.count()
    local res = assert(client.request(get_srv().port, "GET", "/count"))
    assert.equal(200, res.status)
    return client.json(res.body).count
  end

  -- Sends `bytes` on a fresh connection and returns the response and whether the server closed
  -- the connection after it.
  function h.exchange(bytes, opts)
    opts = opts or {}
    local c = assert(client.connect(get_srv().port))
    local ok, err = c:send(bytes)
    if not ok and not opts.may_fail_send then error("send failed: " .. tostring(err)) end
    local res, rerr, raw = c:read_response({timeout = opts.timeout or 3})
    local closed = res and opts.check_close and c:wait_closed(1)
    c:close()
    assert(res, "no response: " .. tostring(rerr) .. " after " .. tostring(raw))
    return res, closed
  end

  -- The request succeeds and reaches the handler exactly once.
  function h.accepted(bytes, status)
    local before = h.count()
    local res = h.exchange(bytes)
    assert.equal(status or 200, res.status)
    assert.equal(before + 1, h.count())
    return res
  end

  -- The request is refused with `status`, the connection closes, and no handler ran.
  function h.refused(bytes, status, opts)
    local before = h.count()
    opts = opts or {}
    opts.check_close = true
    local res, closed = h.exchange(bytes, opts)
    assert.equal(status, res.status)
    assert.is_true(closed, "the server kept the connection open after " .. status)
    assert.equal(before, h.count())
    return res
  end

  return h
end

-- A target of exactly `len` bytes, routed to /touch.
local function target_of(len)
  local base = "/touch?pad="
  return base .. ("a"):rep(len - #base)
end

-- Headers whose names and values add up to exactly `total` bytes (Host: localhost included).
local function headers_totalling(total)
  local host = #"Host" + #"localhost"
  return {{"Host", "localhost"}, {"X-Pad", ("p"):rep(total - host - #"X-Pad")}}
end

-- `n` headers in all (Host included).
local function n_headers(n)
  local list = {{"Host", "localhost"}}
  for i = 2, n do list[#list + 1] = {"X-H" .. i, "v"} end
  return list
end

-- A chunked body whose first chunk has an extension of `len` bytes (name + value).
local function chunk_with_ext(len)
  local name = "e"
  local value = ("x"):rep(len - #name)
  return "3;" .. name .. "=" .. value .. "\r\nabc\r\n0\r\n\r\n"
end

describe("limits at the boundary (small limits)", function()
  local srv
  local h = helpers(function() return srv end)

  setup(function()
    srv = assert(server.start{app = "spec/fixtures/e2e_app"})
  end)

  teardown(function()
    if srv then assert.equal(0, srv:stop(), "the server did not stop cleanly") end
  end)

  it("request target: 256 bytes pass, 257 get 414", function()
    local res = h.accepted(build("GET", target_of(256)))
    assert.equal(256, client.json(res.body).target_length)
    h.refused(build("GET", target_of(257)), 414)
  end)

  it("header bytes: 1024 pass, 1025 get 431", function()
    local res = h.accepted(build("GET", "/touch", headers_totalling(1024)))
    assert.equal(2, client.json(res.body).headers)
    h.refused(build("GET", "/touch", headers_totalling(1025)), 431)
  end)

  it("header count: 10 pass, 11 get 431", function()
    local res = h.accepted(build("GET", "/touch", n_headers(10)))
    assert.equal(10, client.json(res.body).headers)
    h.refused(build("GET", "/touch", n_headers(11)), 431)
  end)

  it("body by Content-Length: 1024 pass, 1025 get 413 from the head alone", function()
    local body = ("b"):rep(1024)
    local res = h.accepted(build("POST", "/touch", {{"Content-Length", "1024"}}, body))
    assert.equal(1024, client.json(res.body).length)
    -- only the head is sent: the answer must not wait for the body
    h.refused(build("POST", "/touch", {{"Content-Length", "1025"}}), 413)
  end)

  it("de-chunked body: 1024 pass, 1025 get 413", function()
    local te = {{"Transfer-Encoding", "chunked"}}
    local res = h.accepted(build("POST", "/touch", te) .. client.chunked(("c"):rep(1024), 100))
    assert.equal(1024, client.json(res.body).length)
    h.refused(build("POST", "/touch", te) .. client.chunked(("c"):rep(1025), 100), 413, {may_fail_send = true})
    -- one byte over in a final one-byte chunk
    h.refused(build("POST", "/touch", te) .. client.chunked(("c"):rep(1024), 1024):gsub("0\r\n\r\n$", "1\r\nc\r\n0\r\n\r\n"),
      413, {may_fail_send = true})
  end)

  it("chunk extensions: 64 bytes per chunk pass, 65 get 413", function()
    local te = {{"Transfer-Encoding", "chunked"}}
    local res = h.accepted(build("POST", "/touch", te) .. chunk_with_ext(64))
    assert.equal(3, client.json(res.body).length)
    -- the limit is per chunk: 64 bytes on each of several chunks still pass
    local many = ("3;e=" .. ("x"):rep(63) .. "\r\nabc\r\n"):rep(4) .. "0\r\n\r\n"
    res = h.accepted(build("POST", "/touch", te) .. many)
    assert.equal(12, client.json(res.body).length)
    h.refused(build("POST", "/touch", te) .. chunk_with_ext(65), 413)
  end)

  it("trailer fields count against the header limits", function()
    local te = {{"Transfer-Encoding", "chunked"}}
    local trailers = {}
    for i = 1, 20 do trailers[#trailers + 1] = "X-T" .. i .. ": v\r\n" end
    h.refused(build("POST", "/touch", te) .. "3\r\nabc\r\n0\r\n" .. table.concat(trailers) .. "\r\n", 431)
    h.refused(build("POST", "/touch", te) .. "3\r\nabc\r\n0\r\nX-Big: " .. ("b"):rep(2000) .. "\r\n\r\n", 431)
  end)

  it("a head that does not complete within header_timeout gets 408 and a close", function()
    local before = h.count()
    local c = assert(client.connect(srv.port))
    finally(function() c:close() end)
    local t0 = server.now()
    assert(c:send("GET /touch HTTP/1.1\r\nHost: localhost\r\n"))
    local res = assert(c:read_response({timeout = 3}))
    local elapsed = server.now() - t0
    assert.equal(408, res.status)
    assert.is_true(elapsed >= 0.4 and elapsed < 2, "408 after " .. elapsed .. " s")
    assert.is_true(c:wait_closed(1))
    assert.equal(before, h.count())
  end)

  it("a head dripped byte by byte (slowloris) still gets 408 at header_timeout", function()
    local before = h.count()
    local c = assert(client.connect(srv.port))
    finally(function() c:close() end)
    local head = "GET /touch HTTP/1.1\r\nHost: localhost\r\nX-Slow: " .. ("s"):rep(100) .. "\r\n\r\n"
    local t0 = server.now()
    -- 100 ms between bytes: the head would take many seconds to complete
    c:send_split(head:sub(1, 20), 1, 0.1)
    local res = assert(c:read_response({timeout = 3}))
    local elapsed = server.now() - t0
    assert.equal(408, res.status)
    assert.is_true(elapsed < 2, "408 after " .. elapsed .. " s")
    assert.is_true(c:wait_closed(1))
    assert.equal(before, h.count())
  end)

  it("a body that stops arriving gets 408 after body_idle_timeout", function()
    local before = h.count()
    local c = assert(client.connect(srv.port))
    finally(function() c:close() end)
    local t0 = server.now()
    assert(c:send(build("POST", "/touch", {{"Content-Length", "10"}}) .. "abc"))
    local res = assert(c:read_response({timeout = 3}))
    local elapsed = server.now() - t0
    assert.equal(408, res.status)
    assert.is_true(elapsed >= 0.4 and elapsed < 2, "408 after " .. elapsed .. " s")
    assert.is_true(c:wait_closed(1))
    assert.equal(before, h.count())
  end)

  it("a body that keeps trickling within body_idle_timeout is accepted", function()
    local before = h.count()
    local c = assert(client.connect(srv.port))
    finally(function() c:close() end)
    -- 8 bytes, 200 ms apart: 1.6 s in all, more than three idle timeouts, never idle 0.5 s
    assert(c:send(build("POST", "/touch", {{"Content-Length", "8"}})))
    for i = 1, 8 do
      server.sleep(0.2)
      assert(c:send(tostring(i)))
    end
    local res = assert(c:read_response({timeout = 3}))
    assert.equal(200, res.status)
    assert.equal(before + 1, h.count())
  end)

  it("an idle keep-alive connection is closed silently after keepalive_timeout", function()
    local c = assert(client.connect(srv.port))
    finally(function() c:close() end)
    assert(c:send(build("GET", "/count")))
    local res = assert(c:read_response())
    assert.equal(200, res.status)
    local t0 = server.now()
    assert.is_true(c:wait_closed(3))
    local elapsed = server.now() - t0
    assert.equal("", c.buf) -- silent: no 408, no bytes at all
    assert.is_true(elapsed >= 0.4 and elapsed < 2, "closed after " .. elapsed .. " s")
  end)

  it("a connection that never sends anything is closed silently", function()
    local c = assert(client.connect(srv.port))
    finally(function() c:close() end)
    local t0 = server.now()
    assert.is_true(c:wait_closed(3))
    assert.equal("", c.buf)
    assert.is_true(server.now() - t0 < 2)
  end)

  it("max_requests: the 5th response on a connection carries Connection: close", function()
    local c = assert(client.connect(srv.port))
    finally(function() c:close() end)
    for i = 1, 5 do
      assert(c:send(build("GET", "/count")))
      local res = assert(c:read_response())
      assert.equal(200, res.status)
      if i < 5 then
        assert.is_false(res.close, "response " .. i .. " closes")
      else
        assert.is_true(res.close, "the last response lacks Connection: close")
      end
    end
    assert.is_true(c:wait_closed(1))
  end)

  it("max_requests with pipelining: requests past the 5th are not processed", function()
    local before = h.count()
    local c = assert(client.connect(srv.port))
    finally(function() c:close() end)
    assert(c:send(build("GET", "/touch"):rep(7)))
    local list = c:read_responses(5)
    assert.equal(5, #list)
    assert.is_true(list[5].close)
    assert.is_true(c:wait_closed(1))
    assert.equal("", c.buf)
    assert.equal(before + 5, h.count())
  end)
end)

describe("request_timeout", function()
  it("a body trickling slower than the whole-request limit gets 408", function()
    local srv = assert(server.start{app = "spec/fixtures/e2e_app", env = {E2E_SERVER = "request_timeout=1"}})
    local c
    finally(function()
      if c then c:close() end
      srv:stop()
    end)
    c = assert(client.connect(srv.port))
    local t0 = server.now()
    local head = build("POST", "/touch", {{"Content-Length", "20"}})
    assert(c:send(head))
    -- a byte every 200 ms: never idle for body_idle_timeout (0.5 s), but 4 s in all
    for _ = 1, 19 do
      local readable = require("socket").select({c.sock}, nil, 0.2)
      if readable[1] or not c:send("x") then break end
    end
    local res = assert(c:read_response({timeout = 3}))
    local elapsed = server.now() - t0
    assert.equal(408, res.status)
    assert.is_true(elapsed >= 0.9 and elapsed < 2.5, "408 after " .. elapsed .. " s")
    assert.is_true(c:wait_closed(1))
    local count = assert(client.request(srv.port, "GET", "/count"))
    assert.equal(0, client.json(count.body).count)
  end)
end)

describe("max_connections", function()
  it("extra connections wait and are served once others close", function()
    local srv = assert(server.start{app = "spec/fixtures/e2e_app",
                                    env = {E2E_SERVER = "max_connections=2,keepalive_timeout=10"}})
    local conns = {}
    finally(function()
      for _, c in ipairs(conns) do c:close() end
      srv:stop()
    end)
    for i = 1, 2 do
      conns[i] = assert(client.connect(srv.port))
      assert(conns[i]:send(build("GET", "/count")))
      assert.equal(200, assert(conns[i]:read_response()).status)
    end
    -- the third connection completes in the kernel's backlog, but the server does not take it
    conns[3] = assert(client.connect(srv.port))
    assert(conns[3]:send(build("GET", "/count")))
    local res, err = conns[3]:read_response({timeout = 0.5})
    assert.is_nil(res)
    assert.equal("timeout", err)
    -- a fourth waits as well
    conns[4] = assert(client.connect(srv.port))
    assert(conns[4]:send(build("GET", "/count")))
    -- one slot frees up: one waiting connection is served
    conns[1]:close()
    local t0 = server.now()
    res = assert(conns[3]:read_response({timeout = 2}))
    assert.equal(200, res.status)
    assert.is_true(server.now() - t0 < 1)
    assert.is_nil((conns[4]:read_response({timeout = 0.3})))
    conns[2]:close()
    res = assert(conns[4]:read_response({timeout = 2}))
    assert.equal(200, res.status)
    -- the served connections are ordinary keep-alive connections
    assert(conns[3]:send(build("GET", "/count")))
    assert.equal(200, assert(conns[3]:read_response()).status)
  end)
end)

describe("a client that stops reading", function()
  it("makes the server stop producing output, and is dropped after send_timeout", function()
    local srv = assert(server.start{app = "spec/fixtures/e2e_app", env = {
      E2E_SERVER = "send_timeout=1,output_high_water=65536,keepalive_timeout=10,max_requests=5000"}})
    local c
    finally(function()
      if c then c:close() end
      srv:stop()
    end)
    local N = 1000
    c = assert(client.connect(srv.port))
    -- 1000 pipelined requests for 64 KiB each (64 MB of answers), and no reading at all
    assert(c:send(build("GET", "/big?kb=64"):rep(N)))
    -- meanwhile other clients are served promptly
    local t0 = server.now()
    local res = assert(client.request(srv.port, "GET", "/count"))
    assert.equal(200, res.status)
    assert.is_true(server.now() - t0 < 1)
    -- the output stalls: the server stops answering (and reading) the pipelined requests
    local stats
    local served = -1
    assert.is_truthy(server.wait_for(function()
      stats = client.json(assert(client.request(srv.port, "GET", "/stats")).body)
      local stalled = stats.big == served
      served = stats.big
      return stalled
    end, 5, 0.3), "the server kept producing output for a client that does not read")
    assert.is_true(stats.big < N / 2, stats.big .. " of " .. N .. " answers produced")
    -- after send_timeout without progress, the connection is closed
    server.sleep(1.5)
    local data, why = c:read_all(5)
    assert.equal("closed", why)
    local _, complete = data:gsub("HTTP/1%.1 200 OK\r\n", "")
    assert.is_true(complete <= stats.big and complete < N,
      complete .. " responses received, " .. stats.big .. " produced")
    -- and nothing was produced after the stall
    assert.equal(stats.big, client.json(assert(client.request(srv.port, "GET", "/stats")).body).big)
  end)
end)

describe("a slow reader that keeps reading", function()
  it("receives a large response in full, even past keepalive_timeout and send_timeout", function()
    local srv = assert(server.start{app = "spec/fixtures/e2e_app", env = {E2E_SERVER = "send_timeout=1"}})
    local c
    finally(function()
      if c then c:close() end
      srv:stop()
    end)
    c = assert(client.connect(srv.port))
    -- send_timeout is measured between completed writes: one large response is one write, so
    -- a reader that keeps reading is cut off once that write takes longer than send_timeout.
    server.known_bug(pending, "send_timeout cuts off a large response that is still being read", function()
      local kb = 32 * 1024 -- 32 MiB: far more than the socket buffers hold
      assert(c:send(build("GET", "/big?kb=" .. kb)))
      local head = assert(c:read_until("\r\n\r\n", 3))
      assert.matches("^HTTP/1%.1 200", head)
      local want = kb * 1024
      local got = #c:take()
      local t0 = server.now()
      -- about 1 MiB every 100 ms: over 3 s in all, six keep-alive timeouts and three send
      -- timeouts, but the transfer never stalls
      while got < want do
        local piece, err = c:read_bytes(math.min(1024 * 1024, want - got), 2)
        assert(piece, ("stopped after %d of %d bytes: %s"):format(got, want, tostring(err)))
        got = got + #piece
        server.sleep(0.1)
      end
      assert.equal(want, got)
      assert.is_true(server.now() - t0 > 2)
      -- and the connection is still usable
      assert(c:send(build("GET", "/count")))
      assert.equal(200, assert(c:read_response()).status)
    end)
  end)
end)

describe("default limits (no server settings)", function()
  local srv
  local h = helpers(function() return srv end)

  setup(function()
    srv = assert(server.start{app = "spec/fixtures/e2e_defaults"})
  end)

  teardown(function()
    if srv then assert.equal(0, srv:stop(), "the server did not stop cleanly") end
  end)

  it("request target: 8 KiB pass, one byte more gets 414", function()
    local res = h.accepted(build("GET", target_of(8192)))
    assert.equal(8192, client.json(res.body).target_length)
    h.refused(build("GET", target_of(8193)), 414)
  end)

  it("header bytes: 16 KiB pass, one byte more gets 431", function()
    h.accepted(build("GET", "/touch", headers_totalling(16384)))
    h.refused(build("GET", "/touch", headers_totalling(16385)), 431)
  end)

  it("header count: 100 pass, 101 get 431", function()
    local res = h.accepted(build("GET", "/touch", n_headers(100)))
    assert.equal(100, client.json(res.body).headers)
    h.refused(build("GET", "/touch", n_headers(101)), 431)
  end)

  it("body by Content-Length: 1 MiB pass, one byte more gets 413 from the head alone", function()
    local mib = 1024 * 1024
    local res = h.accepted(build("POST", "/touch", {{"Content-Length", tostring(mib)}}, ("b"):rep(mib)))
    assert.equal(mib, client.json(res.body).length)
    h.refused(build("POST", "/touch", {{"Content-Length", tostring(mib + 1)}}), 413)
  end)

  it("de-chunked body: 1 MiB pass, one byte more gets 413", function()
    local mib = 1024 * 1024
    local te = {{"Transfer-Encoding", "chunked"}}
    local res = h.accepted(build("POST", "/touch", te) .. client.chunked(("c"):rep(mib), 65536))
    assert.equal(mib, client.json(res.body).length)
    h.refused(build("POST", "/touch", te) .. client.chunked(("c"):rep(mib + 1), 65536), 413,
      {may_fail_send = true})
  end)

  it("requests per connection: 1000 answered from a pipelined flood, the last with Connection: close", function()
    local before = h.count()
    local c = assert(client.connect(srv.port))
    finally(function() c:close() end)
    -- 3000 requests in one write, far more than the server buffers while it works, from a
    -- client with a small receive window that is busy for a moment before it reads
    c.sock:setoption("recv-buffer-size", 4096)
    assert(c:send(build("GET", "/touch"):rep(3000)))
    server.sleep(0.3)
    -- The server closes after the 1000th response with the surplus requests unread; a plain
    -- close() then resets the connection and the kernel drops the responses it still holds.
    server.known_bug(pending, "closing with unread input (no lingering close) loses responses already sent", function()
      local list, err = c:read_responses(1000, {timeout = 10})
      assert.equal(1000, #list, ("%d of 1000 responses, then %s"):format(#list, tostring(err)))
      for i = 1, 999 do
        assert.is_false(list[i].close, "response " .. i .. " closes")
      end
      assert.is_true(list[1000].close)
      assert.equal(before + 1000, client.json(list[1000].body).count)
      assert.is_true(c:wait_closed(2))
      assert.equal("", c.buf)
    end)
    -- in any case exactly 1000 requests ran
    assert.equal(before + 1000, h.count())
  end)

  it("chunk extensions: 16 KiB pass, one byte more gets 413", function()
    local te = {{"Transfer-Encoding", "chunked"}}
    local res = h.accepted(build("POST", "/touch", te) .. chunk_with_ext(16384))
    assert.equal(3, client.json(res.body).length)
    h.refused(build("POST", "/touch", te) .. chunk_with_ext(16385), 413)
  end)
end)
