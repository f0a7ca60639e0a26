-- End to end: static files from public/ served by the core (sendfile), with ranges, ETags,
-- precompressed twins, CORS, and every way of escaping the root refused.

local server = require("spec.support.server")
local client = require("spec.support.client")

local quote, sh = server.quote, server.sh

local write = server.write_file

-- A pseudo-random body with no repeating pattern, so an offset error cannot go unnoticed.
local function noise(n)
  local parts, x = {}, 12345
  for i = 1, n do
    x = (x * 1103515245 + 12345) % 2147483648
    parts[i] = string.char(x % 256)
  end
  return table.concat(parts)
end

describe("static files", function()
  local dir, srv, big, secret

  setup(function()
    dir = server.capture("mktemp -d /tmp/rage-static.XXXXXX"):gsub("%s+$", "")
    sh("mkdir -p " .. quote(dir .. "/app/config") .. " " .. quote(dir .. "/app/public/sub") ..
       " " .. quote(dir .. "/app/app/controllers"))
    write(dir .. "/app/config/routes.lua", 'return function(r) r:get("/api", "api#show") end\n')
    write(dir .. "/app/config/application.lua",
      'return {cors = {origins = {"https://allowed.example"}, max_age = 60}}\n')
    write(dir .. "/app/app/controllers/api.lua",
      'local A = rage.controller("api")\nfunction A:show() self:render{json = {ok = true}} end\nreturn A\n')
    write(dir .. "/app/public/index.html", "<h1>home</h1>\n")
    write(dir .. "/app/public/sub/page.txt", "0123456789abcdefghij")
    big = noise(3 * 1024 * 1024 + 17)
    write(dir .. "/app/public/big.bin", big)
    write(dir .. "/app/public/app.js", "console.log('plain')\n")
    write(dir .. "/app/public/app.js.gz", "not really gzip, but the twin")
    secret = dir .. "/secret.txt"
    write(secret, "outside the root")
    sh("ln -s " .. quote(secret) .. " " .. quote(dir .. "/app/public/escape.txt"))
    sh("ln -s /etc " .. quote(dir .. "/app/public/etc"))
    srv = assert(server.start{app = dir .. "/app"})
  end)

  teardown(function()
    if srv then srv:stop() end
    if dir then sh("rm -rf " .. quote(dir)) end
  end)

  local function get(target, headers, opts)
    return assert(client.request(srv.port, "GET", target, headers, nil, opts))
  end

  it("serves index.html for / with validators and a type", function()
    local res = get("/")
    assert.equal(200, res.status)
    assert.equal("<h1>home</h1>\n", res.body)
    assert.equal("text/html; charset=utf-8", res.headers["content-type"])
    assert.is_string(res.headers["etag"])
    assert.is_string(res.headers["last-modified"])
    assert.equal("bytes", res.headers["accept-ranges"])
  end)

  it("answers HEAD with the length and no body", function()
    local res = assert(client.request(srv.port, "HEAD", "/sub/page.txt"))
    assert.equal(200, res.status)
    assert.equal("20", res.headers["content-length"])
    assert.equal("", res.body)
  end)

  it("sends a large file exactly", function()
    local res = get("/big.bin", nil, {timeout = 20})
    assert.equal(200, res.status)
    assert.equal(#big, #res.body)
    assert.is_true(res.body == big)
  end)

  it("keeps the bytes right for a client that reads slowly", function()
    local c = assert(client.connect(srv.port))
    finally(function() c:close() end)
    c:send(client.build("GET", "/big.bin", {Host = "localhost"}))
    server.sleep(0.5)   -- let the socket fill: the rest goes through the write queue
    local res = assert(c:read_response({timeout = 20}))
    assert.equal(200, res.status)
    assert.is_true(res.body == big)
  end)

  it("keeps responses in order behind a file on a pipelined connection", function()
    local c = assert(client.connect(srv.port))
    finally(function() c:close() end)
    c:send(client.build("GET", "/big.bin", {Host = "localhost"}) ..
           client.build("GET", "/api", {Host = "localhost"}) ..
           client.build("GET", "/sub/page.txt", {Host = "localhost"}))
    local a = assert(c:read_response({timeout = 20}))
    local b = assert(c:read_response({timeout = 5}))
    local d = assert(c:read_response({timeout = 5}))
    assert.is_true(a.body == big)
    assert.equal('{"ok":true}', b.body)
    assert.equal("0123456789abcdefghij", d.body)
  end)

  it("serves byte ranges", function()
    local res = get("/sub/page.txt", {Range = "bytes=10-14"})
    assert.equal(206, res.status)
    assert.equal("abcde", res.body)
    assert.equal("bytes 10-14/20", res.headers["content-range"])
    res = get("/sub/page.txt", {Range = "bytes=-3"})
    assert.equal(206, res.status)
    assert.equal("hij", res.body)
    res = get("/sub/page.txt", {Range = "bytes=15-"})
    assert.equal("fghij", res.body)
    res = get("/big.bin", {Range = "bytes=1000000-1000099"})
    assert.equal(206, res.status)
    assert.is_true(res.body == big:sub(1000001, 1000100))
  end)

  it("answers 416 for a range past the end and ignores malformed ones", function()
    local res = get("/sub/page.txt", {Range = "bytes=20-30"})
    assert.equal(416, res.status)
    assert.equal("bytes */20", res.headers["content-range"])
    res = get("/sub/page.txt", {Range = "lines=1-2"})
    assert.equal(200, res.status)
    assert.equal(20, #res.body)
  end)

  it("answers 304 to If-None-Match and If-Modified-Since", function()
    local first = get("/sub/page.txt")
    local res = get("/sub/page.txt", {["If-None-Match"] = first.headers["etag"]})
    assert.equal(304, res.status)
    assert.equal("", res.body)
    res = get("/sub/page.txt", {["If-Modified-Since"] = first.headers["last-modified"]})
    assert.equal(304, res.status)
    res = get("/sub/page.txt", {["If-None-Match"] = '"something-else"'})
    assert.equal(200, res.status)
  end)

  it("ignores Range when If-Range names another version", function()
    local res = get("/sub/page.txt", {Range = "bytes=0-1", ["If-Range"] = '"old"'})
    assert.equal(200, res.status)
    assert.equal(20, #res.body)
  end)

  it("serves the precompressed twin to clients that accept gzip", function()
    local res = get("/app.js", {["Accept-Encoding"] = "gzip, br"})
    assert.equal(200, res.status)
    assert.equal("gzip", res.headers["content-encoding"])
    assert.equal("not really gzip, but the twin", res.body)
    assert.equal("text/javascript; charset=utf-8", res.headers["content-type"])
    res = get("/app.js")
    assert.is_nil(res.headers["content-encoding"])
    assert.equal("console.log('plain')\n", res.body)
  end)

  it("never escapes the root", function()
    local attempts = {
      "/../secret.txt", "/..%2fsecret.txt", "/%2e%2e/secret.txt", "/%2E%2E%2Fsecret.txt",
      "/sub/../../secret.txt", "/escape.txt", "/etc/passwd", "/index.html%00.txt",
      "/..%5csecret.txt", "/./index.html",
    }
    for _, target in ipairs(attempts) do
      local res = get(target)
      assert.equal(404, res.status, target)
      assert.not_matches("outside the root", res.body)
      assert.not_matches("root:", res.body)
    end
  end)

  it("lets the router answer what public/ does not have", function()
    local res = get("/api")
    assert.equal(200, res.status)
    assert.equal('{"ok":true}', res.body)
  end)

  it("answers CORS preflights for allowed origins only", function()
    local res = assert(client.request(srv.port, "OPTIONS", "/api", {
      Origin = "https://allowed.example", ["Access-Control-Request-Method"] = "POST",
      ["Access-Control-Request-Headers"] = "content-type"}))
    assert.equal(204, res.status)
    assert.equal("https://allowed.example", res.headers["access-control-allow-origin"])
    assert.matches("POST", res.headers["access-control-allow-methods"])
    assert.equal("content-type", res.headers["access-control-allow-headers"])
    assert.equal("60", res.headers["access-control-max-age"])
    res = get("/api", {Origin = "https://allowed.example"})
    assert.equal("https://allowed.example", res.headers["access-control-allow-origin"])
    res = get("/api", {Origin = "https://evil.example"})
    assert.equal(200, res.status)
    assert.is_nil(res.headers["access-control-allow-origin"])
  end)
end)
