-- Specs for lua/rage/multipart.lua through the real dispatcher (rage.test).

local t = require("rage.test")

local function app_with(routes_src, controller_src)
  local dir = os.tmpname()
  os.remove(dir)
  os.execute("mkdir -p " .. dir .. "/config " .. dir .. "/app/controllers")
  local f = io.open(dir .. "/config/routes.lua", "w"); f:write(routes_src); f:close()
  f = io.open(dir .. "/app/controllers/up.lua", "w"); f:write(controller_src); f:close()
  return dir
end

describe("multipart/form-data", function()
  local dir, app
  local seen = {}

  setup(function()
    dir = app_with('return function(r) r:post("/up", "up#create") end\n', [[
      local Up = rage.controller("up")
      function Up:create()
        local f = self.params.user and self.params.user.avatar
        local content
        if f then
          local h = io.open(f.path, "rb"); content = h:read("*a"); h:close()
          _G.__rage_upload_path = f.path
        end
        self:render{json = {name = self.params.user and self.params.user.name, title = self.params.title,
          filename = f and f.filename, size = f and f.size, type = f and f.content_type, content = content}}
      end
      return Up
    ]])
    app = t.load(dir)
  end)

  teardown(function()
    os.execute("rm -rf " .. dir)
  end)

  local function body(boundary, parts)
    local out = {}
    for _, p in ipairs(parts) do
      out[#out + 1] = "--" .. boundary .. "\r\n" .. p.head .. "\r\n\r\n" .. p.data .. "\r\n"
    end
    out[#out + 1] = "--" .. boundary .. "--\r\n"
    return table.concat(out)
  end

  it("parses fields and files; uploads live in temp files removed after the request", function()
    local b = "XyZ123"
    local res = t.request(app, "POST", "/up", {
      headers = {["content-type"] = "multipart/form-data; boundary=" .. b},
      body = body(b, {
        {head = 'Content-Disposition: form-data; name="title"', data = "hello\r\nworld"},
        {head = 'Content-Disposition: form-data; name="user[name]"', data = "Ann"},
        {head = 'Content-Disposition: form-data; name="user[avatar]"; filename="me.png"\r\nContent-Type: image/png',
         data = "\0\1\2binary--XyZ12"},
      })})
    assert.equal(200, res.status)
    local j = res:json()
    assert.equal("hello\r\nworld", j.title)
    assert.equal("Ann", j.name)
    assert.equal("me.png", j.filename)
    assert.equal("image/png", j.type)
    assert.equal(16, j.size)
    assert.equal("\0\1\2binary--XyZ12", j.content)
    assert.is_nil(io.open(_G.__rage_upload_path, "rb"))   -- removed after the request
  end)

  it("sanitizes file names", function()
    local b = "b0"
    local res = t.request(app, "POST", "/up", {
      headers = {["content-type"] = "multipart/form-data; boundary=" .. b},
      body = body(b, {{head = 'Content-Disposition: form-data; name="user[avatar]"; filename="../../etc/passwd"', data = "x"}})})
    assert.equal(".._.._etc_passwd", res:json().filename)
  end)

  it("answers 400 to a malformed body", function()
    local res = t.request(app, "POST", "/up", {
      headers = {["content-type"] = "multipart/form-data; boundary=zz"},
      body = "--zz\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nno closing boundary"})
    assert.equal(400, res.status)
    res = t.request(app, "POST", "/up", {headers = {["content-type"] = "multipart/form-data"}, body = "x"})
    assert.equal(400, res.status)
  end)

  it("gives the same params whatever the read size (boundaries split across reads)", function()
    local mp = require("rage.multipart")
    local b = "XyZ123"
    local data = "\r\n--XyZ12 is not the boundary\r\n--XyZ1 neither\r\n" .. string.rep("0123456789", 50)
    local req_body = body(b, {
      {head = 'Content-Disposition: form-data; name="title"', data = "t\r\n-"},
      {head = 'Content-Disposition: form-data; name="user[avatar]"; filename="a.bin"', data = data},
      {head = 'Content-Disposition: form-data; name="user[name]"', data = ""},
    })
    local saved = mp.chunk_size
    for _, size in ipairs({1, 2, 3, 7, 8, 9, 64, 4096}) do
      mp.chunk_size = size
      local res = t.request(app, "POST", "/up", {
        headers = {["content-type"] = "multipart/form-data; boundary=" .. b}, body = req_body})
      assert.equal(200, res.status, "read size " .. size .. ": " .. res.body)
      local j = res:json()
      assert.equal("t\r\n-", j.title)
      assert.equal("", j.name)
      assert.equal(#data, j.size)
      assert.equal(data, j.content)
    end
    mp.chunk_size = saved
  end)

  it("bounds a field that is not a file (413) and part headers (400)", function()
    local mp = require("rage.multipart")
    local saved = mp.max_field_size
    mp.max_field_size = 10
    local b = "q"
    local res = t.request(app, "POST", "/up", {
      headers = {["content-type"] = "multipart/form-data; boundary=" .. b},
      body = body(b, {{head = 'Content-Disposition: form-data; name="title"', data = string.rep("x", 11)}})})
    mp.max_field_size = saved
    assert.equal(413, res.status)
    res = t.request(app, "POST", "/up", {
      headers = {["content-type"] = "multipart/form-data; boundary=" .. b},
      body = "--q\r\nX-Long: " .. string.rep("y", mp.max_part_header + 10)})
    assert.equal(400, res.status)
  end)
end)
