-- Specs for lua/rage/http.lua and core/src/httpc.c: the outbound HTTP client against real
-- servers on 127.0.0.1 -- a rage-lua app (spec/support/upstreams/app), a hostile LuaSocket
-- server (spec/support/upstreams/hostile.lua) and openssl s_server with certificates made here.

local upstreams = require("spec.support.upstreams.procs")
local errors = require("rage.errors")
local http = rage.http

local function failure(f, ...)
  local ok, err = pcall(f, ...)
  assert.is_false(ok, "expected an error")
  return err
end

local function kind_of(f, ...)
  local err = failure(f, ...)
  assert.is_true(errors.is(err), "not a rage error: " .. tostring(err))
  return err.kind, err
end

-- Parses the hostile server's "peer=P conn=C n=N method=M" bodies.
local function peer(res)
  local p, c, n, m = res.body:match("^peer=(%d+) conn=(%d+) n=(%d+) method=(%u+)")
  return {port = tonumber(p), conn = tonumber(c), n = tonumber(n), method = m}
end

local DEFAULT_POOL = {max_idle_per_origin = 256, max_idle = 256, idle_timeout = 30, dns_ttl = 5}

describe("rage.http", function()
  local app, bad

  setup(function()
    app = upstreams.app()
    bad = upstreams.hostile()
  end)

  teardown(function()
    if bad then bad:stop() end
    if app then app.stop() end
  end)

  after_each(function()
    http.configure(DEFAULT_POOL)
  end)

  describe("requests", function()
    it("sends every verb with its body", function()
      for _, verb in ipairs({"get", "post", "put", "patch", "delete", "options"}) do
        local body = (verb == "get" or verb == "options") and nil or ("data for " .. verb)
        local res = http[verb](app.url .. "/echo", {body = body})
        assert.equal(200, res.status)
        local e = res:json()
        assert.equal(verb:upper(), e.method)
        assert.equal(body or "", e.body)
      end
      local res = http.request{method = "HEAD", url = app.url .. "/echo"}
      assert.equal(200, res.status)
      assert.equal("", res.body)
      assert.is_truthy(tonumber(res.headers["content-length"]) > 0)
    end)

    it("encodes the query and keeps the URL's own", function()
      local res = http.get(app.url .. "/echo?a=1", {query = {b = "x y&z", c = {1, 2}, d = "é", e = true}})
      assert.equal("a=1&b=x%20y%26z&c=1&c=2&d=%C3%A9&e=true", res:json().query)
      assert.equal("/echo", res:json().path)
    end)

    it("sends JSON and form bodies with their content types", function()
      local e = http.post(app.url .. "/echo", {json = {name = "ada", tags = {"x"}}}):json()
      assert.equal("application/json", e.headers["content-type"])
      assert.same({name = "ada", tags = {"x"}}, rage.json.decode(e.body))
      e = http.post(app.url .. "/echo", {form = {q = "a b", n = 3}}):json()
      assert.equal("application/x-www-form-urlencoded", e.headers["content-type"])
      assert.equal("n=3&q=a%20b", e.body)
    end)

    it("sends headers and reads response headers with lower-case names", function()
      local res = http.get(app.url .. "/echo", {headers = {["X-One"] = "1", ["X-Many"] = {"a", "b"},
                                                            ["User-Agent"] = "spec"}})
      local h = res:json().headers
      assert.equal("1", h["x-one"])
      assert.equal("a, b", h["x-many"])
      assert.equal("spec", h["user-agent"])
      assert.equal("127.0.0.1:" .. app.port, h.host)
      assert.equal("1", res.headers["x-echo"])
      assert.matches("application/json", res.headers["content-type"])
      res = http.get(bad.url .. "/repeated")
      assert.equal("a, b", res.headers["x-multi"])
      assert.equal("v", res.headers["x-space"])
      -- Set-Cookie values carry commas: repeated, they stay apart; once, it is a string.
      assert.same({"a=1; Expires=Wed, 21 Oct 2037 07:28:00 GMT", "b=2", "c=3"}, res.headers["set-cookie"])
      res = http.get(app.url .. "/echo")
      assert.is_nil(res.headers["set-cookie"])
    end)

    it("reads Content-Length, chunked and until-close bodies", function()
      local res = http.get(app.url .. "/big?n=300000")
      assert.equal(300000, #res.body)
      assert.equal("300000", res.headers["content-length"])
      res = http.get(app.url .. "/chunks?n=5&ms=0")
      assert.equal("chunked", res.headers["transfer-encoding"])
      assert.equal("chunk 1\nchunk 2\nchunk 3\nchunk 4\nchunk 5\n", res.body)
      res = http.get(bad.url .. "/until-close")
      assert.equal("until the end", res.body)
    end)

    it("streams a body chunk by chunk as it arrives", function()
      local chunks, times = {}, {}
      local res = http.get(app.url .. "/chunks?n=4&ms=30", {stream = function(c)
        chunks[#chunks + 1] = c
        times[#times + 1] = rage.clock()
      end})
      assert.equal(200, res.status)
      assert.is_nil(res.body)
      assert.equal("chunk 1\nchunk 2\nchunk 3\nchunk 4\n", table.concat(chunks))
      assert.is_true(#chunks >= 3, "chunks: " .. #chunks)
      assert.is_true(times[#times] - times[1] >= 0.05) -- they came over time, not at the end
    end)

    it("stops streaming when the callback raises, closing the connection", function()
      http.close_idle()
      local err = failure(http.get, app.url .. "/chunks?n=50&ms=5", {stream = function() error("enough") end})
      assert.matches("enough", tostring(err))
      assert.equal(0, http.stats().idle)
    end)

    it("handles HEAD, 204, 304 and interim responses without a body", function()
      local res = http.get(bad.url .. "/204")
      assert.equal(204, res.status)
      assert.equal("", res.body)
      res = http.get(bad.url .. "/304")
      assert.equal(304, res.status)
      assert.equal("", res.body)
      res = http.get(bad.url .. "/interim")
      assert.equal(200, res.status)
      assert.equal("GET", peer(res).method)
    end)

    it("resolves a name once per DNS TTL and tries each of its addresses", function()
      local url = "http://localhost:" .. app.port .. "/hello"
      local function fresh_get()
        http.close_idle() -- a pooled connection would skip the lookup
        assert.equal("hello", http.get(url).body)
      end
      http.configure{dns_ttl = 0}
      local s0 = http.stats()
      fresh_get()
      http.configure{dns_ttl = 5}
      fresh_get()
      fresh_get()
      local s1 = http.stats()
      assert.equal(2, s1.dns_lookups - s0.dns_lookups)
      assert.equal(1, s1.dns_hits - s0.dns_hits)
    end)

    it("works from spawned fibers", function()
      local h = rage.spawn(function() return http.get(app.url .. "/hello").body end)
      assert.equal("hello", h:wait())
    end)

    it("raises misuse at the caller's line", function()
      local line = debug.getinfo(1, "l").currentline + 1
      local err = failure(function() http.get("ftp://x/") end)
      assert.matches("http_spec.lua:" .. line .. ":.*unsupported URL scheme", err)
      assert.matches("http_spec.lua:%d+:.*invalid URL", failure(function() http.get("nope") end))
      assert.matches("'url' must be a string", failure(function() http.get(42) end))
      assert.matches("unknown option 'timeouts'", failure(function() http.get(app.url, {timeouts = 1}) end))
      assert.matches("CR, LF or NUL",
        failure(function() http.get(app.url, {headers = {["X-A"] = "a\r\nInjected: 1"}}) end))
      assert.matches("invalid header name", failure(function() http.get(app.url, {headers = {["X A"] = "1"}}) end))
      assert.matches("set by the client",
        failure(function() http.get(app.url, {headers = {["Content-Length"] = "5"}}) end))
      assert.matches("exclusive", failure(function() http.post(app.url, {body = "x", json = {}}) end))
      assert.matches("redirects must be", failure(function() http.get(app.url, {redirects = 11}) end))
      assert.matches("credentials", failure(function() http.get("http://u:p@127.0.0.1/") end))
      assert.matches("invalid port", failure(function() http.get("http://127.0.0.1:70000/") end))
    end)

    it("raises json.decode for a body that is not JSON", function()
      local res = http.get(app.url .. "/hello")
      local kind = kind_of(res.json, res)
      assert.equal("json.decode", kind)
    end)
  end)

  describe("failures", function()
    it("http.dns for a name that does not resolve", function()
      assert.equal("http.dns", (kind_of(http.get, "http://no-such-host.invalid/")))
    end)

    it("http.connect for a refused connection", function()
      local s = require("socket").bind("127.0.0.1", 0)
      local _, port = s:getsockname()
      s:close()
      local kind, err = kind_of(http.get, "http://127.0.0.1:" .. port .. "/")
      assert.equal("http.connect", kind)
      assert.matches("refused", err.message)
    end)

    it("http.protocol for malformed framing", function()
      for _, path in ipairs({"/cl-te", "/dup-cl", "/bad-chunk", "/obs-fold", "/bare-lf"}) do
        local kind, err = kind_of(http.get, bad.url .. path)
        assert.equal("http.protocol", kind, path .. ": " .. tostring(err))
      end
    end)

    it("http.too_large for header sections and bodies over the limits", function()
      assert.equal("http.too_large", (kind_of(http.get, bad.url .. "/endless-headers")))
      assert.equal("http.too_large", (kind_of(http.get, bad.url .. "/many-headers?n=150")))
      assert.equal(200, http.get(bad.url .. "/many-headers?n=150", {max_headers = 200}).status)
      assert.equal("http.too_large", (kind_of(http.get, bad.url .. "/endless-headers", {max_header_size = 1000})))
      -- Content-Length over the default limit is refused before the body is read.
      assert.equal("http.too_large", (kind_of(http.get, bad.url .. "/huge")))
      -- A chunked body crosses the limit while it is read.
      assert.equal("http.too_large", (kind_of(http.get, bad.url .. "/huge-chunked?n=64", {max_body = 10000})))
      assert.equal(64 * 1024, #http.get(bad.url .. "/huge-chunked?n=64").body)
    end)

    it("http.closed when the server closes early", function()
      assert.equal("http.closed", (kind_of(http.get, bad.url .. "/early-close")))
      assert.equal("http.closed", (kind_of(http.get, bad.url .. "/no-response")))
    end)
  end)

  describe("timeouts", function()
    it("connect: a TLS handshake that never completes", function()
      local t0 = rage.clock()
      local kind, err = kind_of(http.get, "https://127.0.0.1:" .. bad.port .. "/", {timeout = {connect = 0.2}})
      assert.equal("http.timeout", kind)
      assert.equal("connect", err.phase)
      assert.is_true(rage.clock() - t0 < 1)
    end)

    it("headers: a head dripped one byte at a time", function()
      local kind, err = kind_of(http.get, bad.url .. "/drip?ms=100", {timeout = {headers = 0.5, idle = 5}})
      assert.equal("http.timeout", kind)
      assert.equal("headers", err.phase)
      kind, err = kind_of(http.get, bad.url .. "/silent", {timeout = {headers = 0.2}})
      assert.equal("headers", err.phase)
    end)

    it("idle: a body that stalls between reads", function()
      local kind, err = kind_of(http.get, bad.url .. "/slow-body?ms=400", {timeout = {idle = 0.15}})
      assert.equal("http.timeout", kind)
      assert.equal("idle", err.phase)
      -- The same body in a stream: the idle timer counts from the last read.
      kind, err = kind_of(http.get, bad.url .. "/slow-body?ms=400", {timeout = {idle = 0.15}, stream = function() end})
      assert.equal("idle", err.phase)
    end)

    it("total: a body that keeps coming but takes too long", function()
      local t0 = rage.clock()
      local kind, err = kind_of(http.get, bad.url .. "/slow-body?ms=50&n=40", {timeout = 0.4})
      assert.equal("http.timeout", kind)
      assert.equal("total", err.phase)
      assert.is_true(rage.clock() - t0 < 0.8)
      -- A slow but steady body is fine under the idle limit.
      local res = http.get(bad.url .. "/slow-body?ms=50&n=5", {timeout = {idle = 0.3}})
      assert.equal("bbbbb", res.body)
    end)
  end)

  describe("keep-alive pool", function()
    before_each(function()
      http.close_idle()
    end)

    it("serves sequential requests on the same connection", function()
      local s0 = http.stats()
      local a = peer(http.get(bad.url .. "/peer"))
      local b = peer(http.get(bad.url .. "/peer"))
      local c = peer(http.post(bad.url .. "/peer", {body = "x"}))
      assert.equal(a.port, b.port)
      assert.equal(a.conn, c.conn)
      assert.same({1, 2, 3}, {a.n, b.n, c.n})
      local s1 = http.stats()
      assert.equal(2, s1.reused - s0.reused)
      assert.equal(1, s1.opened - s0.opened)
      assert.equal(1, s1.idle)
    end)

    it("keeps at most max_idle_per_origin and max_idle connections", function()
      http.configure{max_idle_per_origin = 2}
      local function burst(url, n)
        local fs = {}
        for i = 1, n do fs[i] = function() return peer(http.get(url .. "/peer")).conn end end
        return {rage.await(unpack(fs))}
      end
      local conns = burst(bad.url, 4)
      local distinct = {}
      for _, c in ipairs(conns) do distinct[c] = true end
      local n = 0
      for _ in pairs(distinct) do n = n + 1 end
      assert.equal(4, n) -- concurrent requests each had a connection
      assert.equal(2, http.stats().idle)
      http.close_idle()
      http.configure{max_idle_per_origin = 16, max_idle = 3}
      burst(bad.url, 3)
      http.get(app.url .. "/hello")
      assert.equal(3, http.stats().idle)
    end)

    it("closes connections idle for longer than idle_timeout", function()
      http.configure{idle_timeout = 0.2}
      local a = peer(http.get(bad.url .. "/peer"))
      rage.sleep(0.3)
      local b = peer(http.get(bad.url .. "/peer"))
      assert.are_not.equal(a.conn, b.conn)
      assert.equal(1, b.n)
    end)

    it("does not pool connections whose framing forbids reuse", function()
      http.get(bad.url .. "/extra")
      assert.equal(0, http.stats().idle)
      http.get(bad.url .. "/http10")
      assert.equal(0, http.stats().idle)
      http.get(bad.url .. "/until-close")
      assert.equal(0, http.stats().idle)
      http.get(bad.url .. "/peer", {headers = {Connection = "close"}})
      assert.equal(0, http.stats().idle)
    end)

    it("drops a pooled connection when the server closes it", function()
      local s0 = http.stats()
      local a = peer(http.get(bad.url .. "/close-after"))
      assert.equal(1, http.stats().idle)
      rage.sleep(0.15)
      assert.equal(0, http.stats().idle) -- gone from the pool before anyone asks for it
      local b = peer(http.get(bad.url .. "/peer"))
      assert.are_not.equal(a.conn, b.conn)
      local s1 = http.stats()
      assert.equal(0, s1.retried - s0.retried)
      assert.equal(0, s1.reused - s0.reused)
    end)

    it("drops a pooled connection the server writes to", function()
      local s0 = http.stats()
      local a = peer(http.get(bad.url .. "/late-bytes"))
      assert.equal(1, http.stats().idle)
      rage.sleep(0.15)
      assert.equal(0, http.stats().idle)
      local b = peer(http.get(bad.url .. "/peer"))
      assert.are_not.equal(a.conn, b.conn)
      assert.equal(0, http.stats().reused - s0.reused)
    end)

    it("does not send a POST on a pooled connection whose close the loop has not read yet", function()
      local s0 = http.stats()
      local a = peer(http.get(bad.url .. "/close-after"))
      -- Busy for 0.2 s without yielding: the server's close reaches the kernel, but the loop
      -- does not run, so the pool still holds the connection.
      local t = os.clock() + 0.2
      while os.clock() < t do end
      assert.equal(1, http.stats().idle)
      local b = peer(http.post(bad.url .. "/peer", {body = "x"}))
      assert.are_not.equal(a.conn, b.conn)
      assert.equal("POST", b.method)
      local s1 = http.stats()
      assert.equal(0, s1.reused - s0.reused)
      assert.equal(0, s1.retried - s0.retried)
    end)

    it("retries an idempotent request once when a reused connection dies unanswered", function()
      local s0 = http.stats()
      local a = peer(http.get(bad.url .. "/drop-next"))
      local b = peer(http.get(bad.url .. "/peer"))
      assert.are_not.equal(a.conn, b.conn)
      assert.equal(1, http.stats().retried - s0.retried)
      -- POST is not idempotent: the failure is reported, not retried.
      http.get(bad.url .. "/drop-next")
      assert.equal("http.closed", (kind_of(http.post, bad.url .. "/peer", {body = "x"})))
    end)
  end)

  describe("redirects", function()
    it("are returned as responses unless asked for", function()
      local res = http.get(app.url .. "/redirect?to=/hello")
      assert.equal(302, res.status)
      assert.equal("/hello", res.headers.location)
    end)

    it("are followed up to the limit", function()
      local res = http.get(app.url .. "/redirect?hops=2&to=/hello", {redirects = 3})
      assert.equal(200, res.status)
      assert.equal("hello", res.body)
      assert.equal(3, res.redirects)
      assert.equal(app.url .. "/hello", res.url)
      local kind = kind_of(http.get, app.url .. "/redirect?hops=2&to=/hello", {redirects = 2})
      assert.equal("http.too_many_redirects", kind)
    end)

    it("turn POST into GET for 301/302/303 and keep it for 307/308", function()
      for _, st in ipairs({301, 302, 303}) do
        local e = http.post(app.url .. "/redirect?status=" .. st .. "&to=/echo", {json = {a = 1}, redirects = 1}):json()
        assert.equal("GET", e.method)
        assert.equal("", e.body)
        assert.is_nil(e.headers["content-type"])
      end
      for _, st in ipairs({307, 308}) do
        local e = http.post(app.url .. "/redirect?status=" .. st .. "&to=/echo", {body = "keep", redirects = 1}):json()
        assert.equal("POST", e.method)
        assert.equal("keep", e.body)
      end
    end)

    it("never forward Authorization to another host", function()
      local same = http.get(app.url .. "/redirect?to=/echo",
        {headers = {Authorization = "Bearer s3cret"}, redirects = 1}):json()
      assert.equal("Bearer s3cret", same.headers.authorization)
      local other = "http://localhost:" .. app.port .. "/echo"
      local res = http.get(app.url .. "/redirect?to=" .. http.encode_component(other),
        {headers = {Authorization = "Bearer s3cret"}, redirects = 1})
      assert.equal(other, res.url)
      assert.is_nil(res:json().headers.authorization)
      assert.equal("localhost:" .. app.port, res:json().headers.host)
    end)
  end)

  describe("HTTPS", function()
    local certs, tls, other
    -- The certificates are made with the openssl command-line tool (Debian package openssl).
    local have_openssl = os.execute("openssl version >/dev/null 2>&1")
    have_openssl = have_openssl == 0 or have_openssl == true

    local it = have_openssl and it or pending -- luacheck: ignore 431

    setup(function()
      if not have_openssl then return end
      certs = upstreams.certs()
      tls = upstreams.tls(certs.cert, certs.key)
      other = upstreams.tls(certs.other_cert, certs.other_key)
    end)

    teardown(function()
      if tls then tls:stop() end
      if other then other:stop() end
      if certs then certs.cleanup() end
    end)

    it("verifies the server against a CA file, by name and by address", function()
      local res = http.get("https://localhost:" .. tls.port .. "/", {ca_file = certs.ca})
      assert.equal(200, res.status)
      assert.matches("s_server", res.body)
      res = http.get("https://127.0.0.1:" .. tls.port .. "/", {ca_file = certs.ca})
      assert.equal(200, res.status)
    end)

    it("fails verification for the wrong host name", function()
      local kind, err = kind_of(http.get, "https://127.0.0.1:" .. other.port .. "/", {ca_file = certs.ca})
      assert.equal("http.tls", kind)
      assert.matches("mismatch", err.message)
      kind, err = kind_of(http.get, "https://localhost:" .. other.port .. "/", {ca_file = certs.ca})
      assert.equal("http.tls", kind)
      assert.matches("mismatch", err.message)
    end)

    it("fails verification against the system store for a private CA", function()
      local kind, err = kind_of(http.get, "https://localhost:" .. tls.port .. "/")
      assert.equal("http.tls", kind)
      assert.matches("certificate verification failed", err.message)
    end)

    it("skips verification only when asked", function()
      local res = http.get("https://127.0.0.1:" .. other.port .. "/", {verify = false})
      assert.equal(200, res.status)
    end)

    it("reports a TLS error for a server that does not speak TLS", function()
      local kind = kind_of(http.get, "https://127.0.0.1:" .. app.port .. "/hello", {ca_file = certs.ca})
      assert.equal("http.tls", kind)
    end)

    it("fails clearly for a CA file that cannot be read", function()
      local kind, err = kind_of(http.get, "https://localhost:" .. tls.port .. "/", {ca_file = "/nonexistent.pem"})
      assert.equal("http.tls", kind)
      assert.matches("CA certificates", err.message)
    end)
  end)

  describe("fibers", function()
    it("cancelling a fiber mid-request closes its connection", function()
      http.close_idle()
      local fds = upstreams.fd_count()
      local h = rage.spawn(function() return http.get(bad.url .. "/silent") end)
      rage.sleep(0.1)
      assert.is_true(upstreams.fd_count() > fds) -- the request holds a socket
      h:cancel()
      assert.equal("cancelled", (kind_of(h.wait, h)))
      rage.sleep(0.01)
      assert.equal(fds, upstreams.fd_count())
      assert.equal(0, http.stats().idle)
    end)

    it("rage.timeout cancels a request in flight", function()
      local kind = kind_of(rage.timeout, 0.1, function() return http.get(bad.url .. "/silent") end)
      assert.equal("timeout", kind)
      assert.equal(0, http.stats().idle)
    end)

    it("a timeout on the tick of completion leaves nothing behind", function()
      http.get(app.url .. "/hello") -- a pooled connection to start from
      local fds = upstreams.fd_count()
      local done, timed_out = 0, 0
      for i = 1, 40 do
        local ok, res = pcall(rage.timeout, 0.02, function()
          return http.get(app.url .. "/sleep?ms=" .. (5 + (i * 7) % 31))
        end)
        if ok then
          assert.equal(200, res.status)
          done = done + 1
        else
          assert.equal("timeout", res.kind)
          timed_out = timed_out + 1
        end
      end
      assert.equal(40, done + timed_out)
      assert.is_true(timed_out > 0, "no request timed out")
      assert.is_true(done > 0, "no request completed")
      rage.sleep(0.05)
      assert.is_true(upstreams.fd_count() <= fds + 1, "fds " .. fds .. " -> " .. upstreams.fd_count())
    end)

    it("two 100 ms upstream calls through rage.await take about 100 ms", function()
      http.get(app.url .. "/hello")
      local t0 = rage.clock()
      local a, b = rage.await(
        function() return http.get(app.url .. "/sleep?ms=100"):json() end,
        function() return http.get(app.url .. "/sleep?ms=100"):json() end)
      local dt = rage.clock() - t0
      assert.equal(100, a.slept_ms)
      assert.equal(100, b.slept_ms)
      assert.is_true(dt >= 0.095 and dt < 0.18, "took " .. dt)
    end)

    it("a controller's two 100 ms upstream calls through rage.await take about 100 ms", function()
      local e = http.get(app.url .. "/fanout"):json()
      assert.same({100, 100}, {e.a, e.b})
      assert.is_true(e.elapsed_ms >= 95 and e.elapsed_ms < 180, "took " .. e.elapsed_ms .. " ms")
    end)

    it("1,000 sequential requests leave no fd behind", function()
      http.get(app.url .. "/hello")
      local fds = upstreams.fd_count()
      local s0 = http.stats()
      for _ = 1, 1000 do
        assert.equal("hello", http.get(app.url .. "/hello").body)
      end
      assert.equal(fds, upstreams.fd_count())
      assert.equal(1000, http.stats().reused - s0.reused)
    end)
  end)
end)
