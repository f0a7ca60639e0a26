-- End to end: form and file uploads through a real socket (curl -F), the body limit applied to
-- them, and redirects as a client sees them.

local server = require("spec.support.server")
local client = require("spec.support.client")

local quote, sh, capture = server.quote, server.sh, server.capture

local function write(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end

describe("uploads", function()
  local dir, srv

  setup(function()
    dir = capture("mktemp -d /tmp/rage-up.XXXXXX"):gsub("%s+$", "")
    sh("mkdir -p " .. quote(dir .. "/app/config") .. " " .. quote(dir .. "/app/app/controllers"))
    write(dir .. "/app/config/application.lua",
      "return {server = {max_body = 64 * 1024, body_limits = {['/upload/large'] = 128 * 1024}}}\n")
    write(dir .. "/app/config/routes.lua", [[
return function(r)
  r:post("/upload", "files#create")
  r:post("/upload/large", "files#create")
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
function Files:go()
  self:redirect_to("/upload?from=go", {status = "see_other"})
end
return Files
]])
    write(dir .. "/small.txt", string.rep("x", 40000))
    write(dir .. "/big.txt", string.rep("x", 70000))
    srv = assert(server.start{app = dir .. "/app"})
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

  it("redirects on this host and refuses nothing a browser would not follow", function()
    local res = assert(client.request(srv.port, "GET", "/go"))
    assert.equal(303, res.status)
    assert.equal("/upload?from=go", res.headers["location"])
    assert.equal("", res.body)
  end)
end)
