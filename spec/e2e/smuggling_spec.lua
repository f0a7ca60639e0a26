-- End to end: request smuggling and malformed framing. Every vector must be answered with the
-- right status, the connection must close, and no handler may run (the fixture's hit counter
-- stays the same). Each vector is sent in one write and again byte by byte.
--
--   RAGE_BIN=build/rage-lua build/rage-lua test spec/e2e/smuggling_spec.lua

local server = require("spec.support.server")
local client = require("spec.support.client")

-- A request that would reach the hit counter if a lenient parser let it through.
local SMUGGLED = "GET /touch HTTP/1.1\r\nHost: localhost\r\n\r\n"

local function post(headers, body)
  return "POST /touch HTTP/1.1\r\nHost: localhost\r\n" .. headers .. "\r\n" .. body
end

local function get(extra_headers)
  return "GET /touch HTTP/1.1\r\nHost: localhost\r\n" .. (extra_headers or "") .. "\r\n"
end

local function chunked(body)
  return post("Transfer-Encoding: chunked\r\n", body)
end

local BAD_HOST = "a Host with an invalid value is accepted (RFC 9112 3.2 requires 400)"

-- {name, expected status (or list of acceptable ones), bytes, known server bug}
local VECTORS = {
  {"Content-Length with Transfer-Encoding", 400,
   post("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n" .. SMUGGLED)},
  {"Transfer-Encoding with Content-Length", 400,
   post("Transfer-Encoding: chunked\r\nContent-Length: 40\r\n", "0\r\n\r\n" .. SMUGGLED)},
  {"Content-Length: 0 with Transfer-Encoding", 400,
   post("Content-Length: 0\r\nTransfer-Encoding: chunked\r\n", "5\r\nhello\r\n0\r\n\r\n" .. SMUGGLED)},
  {"duplicate Content-Length, same value", 400,
   post("Content-Length: 5\r\nContent-Length: 5\r\n", "hello" .. SMUGGLED)},
  {"duplicate Content-Length, different values", 400,
   post("Content-Length: 5\r\nContent-Length: 0\r\n", "hello" .. SMUGGLED)},
  {"Content-Length as a list", 400, post("Content-Length: 5, 5\r\n", "hello" .. SMUGGLED)},
  {"Content-Length with a sign", 400, post("Content-Length: +5\r\n", "hello" .. SMUGGLED)},
  {"Content-Length not a number", 400, post("Content-Length: abc\r\n", "hello" .. SMUGGLED)},
  {"whitespace before the colon of Content-Length", 400,
   post("Content-Length : 5\r\n", "hello" .. SMUGGLED)},
  {"whitespace before the colon of Transfer-Encoding", 400,
   post("Transfer-Encoding : chunked\r\n", "0\r\n\r\n" .. SMUGGLED)},
  {"whitespace before the colon of any header", 400,
   "GET /touch HTTP/1.1\r\nHost: localhost\r\nX-Name : value\r\n\r\n"},
  {"a second Host hidden by whitespace before the colon", 400,
   "GET /touch HTTP/1.1\r\nHost: localhost\r\nHost : evil.example\r\n\r\n"},
  {"duplicate Transfer-Encoding", 400,
   post("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n" .. SMUGGLED)},
  {"unknown transfer coding", 501, post("Transfer-Encoding: gzip, chunked\r\n", "0\r\n\r\n" .. SMUGGLED)},
  {"obs-fold (space)", 400, get("X-Folded: a\r\n b\r\n")},
  {"obs-fold (tab)", 400, get("X-Folded: a\r\n\tb\r\n")},
  {"obs-fold of Transfer-Encoding", 400,
   post("Transfer-Encoding: identity\r\n chunked\r\nContent-Length: 5\r\n", "hello")},
  {"bare LF line endings", 400, "GET /touch HTTP/1.1\nHost: localhost\n\n"},
  {"bare LF after a header", 400, "GET /touch HTTP/1.1\r\nHost: localhost\nX-A: b\r\n\r\n"},
  {"bare CR in a header value", 400, get("X-A: a\rb\r\n")},
  {"NUL in a header value", 400, get("X-A: a\0b\r\n")},
  {"NUL in a header name", 400, get("X-\0A: b\r\n")},
  {"chunk size not hex", 400, chunked("zz\r\nhello\r\n0\r\n\r\n" .. SMUGGLED)},
  {"negative chunk size", 400, chunked("-1\r\nhello\r\n0\r\n\r\n" .. SMUGGLED)},
  {"chunk size with 0x prefix", 400, chunked("0x5\r\nhello\r\n0\r\n\r\n" .. SMUGGLED)},
  {"chunk size overflow", 400, chunked("fffffffffffffffff\r\nhello\r\n0\r\n\r\n" .. SMUGGLED)},
  {"chunk size with a bare LF", 400, chunked("5\nhello\r\n0\r\n\r\n" .. SMUGGLED)},
  {"chunk data not followed by CRLF", 400, chunked("3\r\nabcXX0\r\n\r\n" .. SMUGGLED)},
  {"chunk data longer than its size", 400, chunked("3\r\nabcdef\r\n0\r\n\r\n")},
  {"missing Host on HTTP/1.1", 400, "GET /touch HTTP/1.1\r\nX-A: b\r\n\r\n"},
  {"duplicate Host", 400, get("Host: evil.example\r\n")},
  {"duplicate Host, differing only in case", 400, get("host: localhost\r\n")},
  {"Host with a space", 400, "GET /touch HTTP/1.1\r\nHost: local host\r\n\r\n", BAD_HOST},
  {"Host with a path", 400, "GET /touch HTTP/1.1\r\nHost: localhost/evil\r\n\r\n", BAD_HOST},
  {"Host with user info", 400, "GET /touch HTTP/1.1\r\nHost: user@localhost\r\n\r\n", BAD_HOST},
  {"HTTP/2.0", 505, "GET /touch HTTP/2.0\r\nHost: localhost\r\n\r\n"},
  {"HTTP/1.2", 505, "GET /touch HTTP/1.2\r\nHost: localhost\r\n\r\n"},
  {"HTTP/3.0", 505, "GET /touch HTTP/3.0\r\nHost: localhost\r\n\r\n"},
  {"HTTP/0.9", 505, "GET /touch HTTP/0.9\r\nHost: localhost\r\n\r\n"},
  {"malformed version", {400, 505}, "GET /touch HTTP/x.y\r\nHost: localhost\r\n\r\n"},
  {"HTTP/2 preface", {400, 505}, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"},
  {"unknown method", 501, "FOO /touch HTTP/1.1\r\nHost: localhost\r\n\r\n"},
  {"lower-case method", 501, "get /touch HTTP/1.1\r\nHost: localhost\r\n\r\n"},
  {"unsupported Expect", 417, post("Content-Length: 5\r\nExpect: something-else\r\n", "hello")},
}

local function status_ok(expected, got)
  if type(expected) == "table" then
    for _, s in ipairs(expected) do
      if s == got then return true end
    end
    return false
  end
  return expected == got
end

describe("request smuggling and malformed framing", function()
  local srv

  setup(function()
    srv = assert(server.start{app = "spec/fixtures/e2e_app"})
  end)

  teardown(function()
    if srv then assert.equal(0, srv:stop(), "the server did not stop cleanly") end
  end)

  local function count()
    local res = assert(client.request(srv.port, "GET", "/count"))
    assert.equal(200, res.status)
    return client.json(res.body).count
  end

  -- Sends `bytes` whole or byte by byte; asserts the status, the close and that nothing ran.
  local function check(bytes, expected, split)
    local before = count()
    local c = assert(client.connect(srv.port))
    local res, err, raw, closed
    local ok, perr = pcall(function()
      if split then
        c:send_split(bytes, 1, 0.001, {until_answered = true})
      else
        c:send(bytes)
      end
      res, err, raw = c:read_response({timeout = 3})
      closed = res and c:wait_closed(2)
    end)
    c:close()
    assert(ok, perr)
    assert(res, "no response (" .. tostring(err) .. "): " .. tostring(raw))
    assert.is_true(status_ok(expected, res.status),
      ("expected %s, got %d %s"):format(type(expected) == "table" and table.concat(expected, " or ") or expected,
        res.status, res.body))
    assert.is_true(closed, "the connection stayed open")
    assert.equal("", c.buf, "more bytes followed the error response")
    assert.equal(before, count(), "a handler ran")
    return res
  end

  for _, v in ipairs(VECTORS) do
    local name, expected, bytes, bug = v[1], v[2], v[3], v[4]
    for _, split in ipairs({false, true}) do
      it(name .. (split and " (byte by byte)" or " (one write)"), function()
        if bug then
          server.known_bug(pending, bug, function() check(bytes, expected, split) end)
        else
          check(bytes, expected, split)
        end
      end)
    end
  end

  it("answers a parse error with a complete plain-text response", function()
    local res = check(VECTORS[1][3], 400, false)
    assert.matches("^text/plain", res.headers["content-type"])
    assert.is_truthy(tonumber(res.headers["content-length"]))
  end)

  describe("an error on a pipelined connection is sticky", function()
    local function pipeline(bytes, split)
      local c = assert(client.connect(srv.port))
      local list, err
      local ok, perr = pcall(function()
        if split then c:send_split(bytes, 1, 0.001) else c:send(bytes) end
        list, err = c:read_responses(5, {timeout = 2})
        c:wait_closed(2)
      end)
      c:close()
      assert(ok, perr)
      return list, c
    end

    for _, split in ipairs({false, true}) do
      local how = split and " (byte by byte)" or " (one write)"

      it("good, bad, good: only the first is processed" .. how, function()
        local before = count()
        local bytes = get() ..
          post("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n") .. get() .. get()
        local list, c = pipeline(bytes, split)
        assert.equal(2, #list)
        assert.equal(200, list[1].status)
        assert.equal(before + 1, client.json(list[1].body).count)
        assert.equal(400, list[2].status)
        assert.equal("", c.buf)
        assert.equal(before + 1, count())
      end)

      it("bad first: nothing after it is processed" .. how, function()
        local before = count()
        local bytes = "GET /touch HTTP/1.1\r\n\r\n" .. get() .. get()
        local list, c = pipeline(bytes, split)
        assert.equal(1, #list)
        assert.equal(400, list[1].status)
        assert.equal("", c.buf)
        assert.equal(before, count())
      end)

      it("an unknown method in the middle stops the pipeline" .. how, function()
        local before = count()
        local bytes = get() .. "FOO /touch HTTP/1.1\r\nHost: localhost\r\n\r\n" .. get()
        local list, c = pipeline(bytes, split)
        assert.equal(2, #list)
        assert.equal(200, list[1].status)
        assert.equal(501, list[2].status)
        assert.equal("", c.buf)
        assert.equal(before + 1, count())
      end)
    end
  end)
end)
