-- End to end: form and file uploads through a real socket (curl -F), the body limit applied to
-- them, bodies larger than body_buffer written to a temporary file while they arrive (and gone
-- after the request), and redirects as a client sees them.

local server = require("spec.support.server")
local client = require("spec.support.client")

local quote, sh, capture = server.quote, server.sh, server.capture

local write = server.write_file

describe("uploads", function()
  local dir, srv
  local body_buffer = 16 * 1024

  setup(function()
    dir = capture("mktemp -d /tmp/rage-up.XXXXXX"):gsub("%s+$", "")
    sh("mkdir -p " .. quote(dir .. "/app/config") .. " " .. quote(dir .. "/app/app/controllers"))
    write(dir .. "/app/config/application.lua",
      "return {server = {max_body = 64 * 1024, body_buffer = " .. body_buffer .. ",\n" ..
      "  body_limits = {['/upload/large'] = 128 * 1024, ['/upload/huge'] = 64 * 1024 * 1024}}}\n")
    write(dir .. "/app/config/routes.lua", [[
return function(r)
  r:post("/upload", "files#create")
  r:post("/upload/large", "files#create")
  r:post("/upload/huge", "files#check")
  r:post("/upload/large/raw", "files#raw")
  r:get("/go", "files#go")
end
]])
    write(dir .. "/app/app/controllers/files.lua", [[
local Files = rage.controller("files")
function Files:create()
  local f = self.params.doc
  local h = io.open(f.path, "rb")
  local data = h:read("*a")
  h:close()
  self:render{json = {title = self.params.title, name = f.filename, size = f.size,
    same = data == string.rep("x", f.size), path = f.path}}
end
-- Reads the upload back in pieces: its size and whether every byte is an "x".
function Files:check()
  local f = self.params.doc
  local h = io.open(f.path, "rb")
  local n, all_x = 0, true
  while true do
    local piece = h:read(65536)
    if not piece then break end
    n = n + #piece
    if piece:find("[^x]") then all_x = false end
  end
  h:close()
  self:render{json = {size = f.size, read = n, all_x = all_x, body_size = self.request:body_size()}}
end
-- A raw body read in pieces and whole.
function Files:raw()
  local pieces, bytes, same = 0, 0, true
  for chunk in self.request:each_body_chunk(10000) do
    pieces, bytes = pieces + 1, bytes + #chunk
    if chunk ~= string.rep("y", #chunk) then same = false end
  end
  local whole = self.request:body()
  self:render{json = {pieces = pieces, bytes = bytes, same = same, whole = #whole,
    whole_same = whole == string.rep("y", 100000)}}
end
function Files:go()
  self:redirect_to("/upload?from=go", {status = "see_other"})
end
return Files
]])
    write(dir .. "/small.txt", string.rep("x", 40000))
    write(dir .. "/big.txt", string.rep("x", 70000))
    sh("mkdir -p " .. quote(dir .. "/tmp"))
    srv = assert(server.start{app = dir .. "/app", env = {TMPDIR = dir .. "/tmp"}})
  end)

  teardown(function()
    if srv then srv:stop() end
    if dir then sh("rm -rf " .. quote(dir)) end
  end)

  it("receives a file and fields from curl -F, and removes the temporary file after", function()
    local status, body = client.curl{"-F", "title=report", "-F", "doc=@" .. dir .. "/small.txt",
      "http://127.0.0.1:" .. srv.port .. "/upload"}
    assert.equal(200, status)
    local j = client.json(body)
    assert.equal("report", j.title)
    assert.equal("small.txt", j.name)
    assert.equal(40000, j.size)
    assert.is_true(j.same)
    assert.is_nil(io.open(j.path, "rb"))
  end)

  it("refuses a file over the body limit with 413 before reading it", function()
    local status = client.curl{"-F", "doc=@" .. dir .. "/big.txt", "http://127.0.0.1:" .. srv.port .. "/upload"}
    assert.equal(413, status)
    -- the server keeps serving
    local res = assert(client.request(srv.port, "GET", "/go"))
    assert.equal(303, res.status)
  end)

  it("allows a larger body where the config says so, by path prefix", function()
    local status, body = client.curl{"-F", "doc=@" .. dir .. "/big.txt", "http://127.0.0.1:" .. srv.port .. "/upload/large"}
    assert.equal(200, status)
    assert.equal(70000, client.json(body).size)
  end)

  -- The server's descriptors that point at files in its TMPDIR.
  local function temp_fds()
    local out = {}
    for fd in capture("ls /proc/" .. srv.pid .. "/fd 2>/dev/null"):gmatch("%d+") do
      local target = capture("readlink /proc/" .. srv.pid .. "/fd/" .. fd .. " 2>/dev/null")
      if target:find(dir .. "/tmp/", 1, true) then out[#out + 1] = target:gsub("%s+$", "") end
    end
    return out
  end

  local function multipart(boundary, filename, data)
    return "--" .. boundary .. "\r\n" ..
      'Content-Disposition: form-data; name="doc"; filename="' .. filename .. '"\r\n' ..
      "Content-Type: text/plain\r\n\r\n" .. data .. "\r\n--" .. boundary .. "--\r\n"
  end

  it("writes a body larger than body_buffer to an unlinked temporary file while it arrives", function()
    local body = multipart("b0undary", "half.txt", string.rep("x", 100000))
    local conn = assert(client.connect(srv.port))
    assert(conn:send("POST /upload/large HTTP/1.1\r\nHost: t\r\n" ..
      "Content-Type: multipart/form-data; boundary=b0undary\r\nContent-Length: " .. #body .. "\r\n\r\n"))
    assert(conn:send(body:sub(1, 50000)))
    -- Half the body is in: it is in a file that no longer has a name, not in memory.
    local fds = server.wait_for(function()
      local t = temp_fds()
      return #t > 0 and t or nil
    end, 5)
    assert.is_table(fds)
    assert.equal(1, #fds)
    assert.matches("/rage%-body%-%w+ %(deleted%)$", fds[1])
    assert(conn:send(body:sub(50001)))
    local res = assert(conn:read_response())
    conn:close()
    assert.equal(200, res.status)
    local j = client.json(res.body)
    assert.equal(100000, j.size)
    assert.is_true(j.same)
    -- After the request: no descriptor, no file left in TMPDIR.
    assert.is_true(server.wait_for(function() return #temp_fds() == 0 end, 5))
    assert.equal("", capture("ls -A " .. quote(dir .. "/tmp")))
  end)

  it("reads a large raw body in pieces or whole", function()
    local res = assert(client.request(srv.port, "POST", "/upload/large/raw",
      {["Content-Type"] = "application/octet-stream", ["Content-Length"] = "100000"}, string.rep("y", 100000)))
    assert.equal(200, res.status)
    assert.same({pieces = 10, bytes = 100000, same = true, whole = 100000, whole_same = true}, client.json(res.body))
  end)

  it("takes a 32 MB upload without holding it in memory", function()
    sh("head -c 33554432 /dev/zero | tr '\\0' x > " .. quote(dir .. "/huge.txt"))
    local function peak_kb()
      local status = server.read_file("/proc/" .. srv.pid .. "/status") or ""
      return tonumber(status:match("VmHWM:%s*(%d+)"))
    end
    local before = peak_kb()
    local status, body = client.curl{"-F", "doc=@" .. dir .. "/huge.txt", "http://127.0.0.1:" .. srv.port .. "/upload/huge"}
    assert.equal(200, status)
    local j = client.json(body)
    assert.equal(33554432, j.size)
    assert.equal(33554432, j.read)
    assert.is_true(j.all_x)
    assert.is_true(j.body_size > 33554432)
    -- The peak resident set grew by far less than the upload (the body went to disk, then the
    -- file part was copied out of it in 64 KiB pieces).
    assert.is_true(peak_kb() - before < 16 * 1024, "peak RSS grew by " .. (peak_kb() - before) .. " KiB")
    assert.is_true(server.wait_for(function() return #temp_fds() == 0 end, 5))
    assert.equal("", capture("ls -A " .. quote(dir .. "/tmp")))
  end)

  it("redirects on this host and refuses nothing a browser would not follow", function()
    local res = assert(client.request(srv.port, "GET", "/go"))
    assert.equal(303, res.status)
    assert.equal("/upload?from=go", res.headers["location"])
    assert.equal("", res.body)
  end)
end)
