-- Specs for rage.request: what a controller reads about the request, over the core's object.

local request = require("rage.request")
local errors = require("rage.errors")

-- A stand-in for the core's request object, counting how often the body is read.
local function box(headers, body)
  local b = {reads = 0}
  function b.header(_, name) return headers[name:lower()] end
  function b.headers() local t = {} for k, v in pairs(headers) do t[k] = v end return t end
  function b.body(self) self.reads = self.reads + 1; return body or "" end
  function b.http_version() return "1.1" end
  function b.peer() return "10.0.0.7" end
  return b
end

describe("rage.request", function()
  it("keeps method, path and query string", function()
    local req = request.new(box({}), "GET", "/items/1", "a=1")
    assert.equal("GET", req.method)
    assert.equal("/items/1", req.path)
    assert.equal("a=1", req.query_string)
  end)

  it("reads headers, host, peer and version from the core", function()
    local req = request.new(box({host = "shop.example", ["x-id"] = "7"}), "GET", "/", nil)
    assert.equal("7", req:header("X-Id"))
    assert.equal("shop.example", req:host())
    assert.equal("10.0.0.7", req:remote_ip())
    assert.equal("1.1", req:http_version())
    assert.same({host = "shop.example", ["x-id"] = "7"}, req:headers())
    assert.equal(req:headers(), req:headers())
  end)

  it("gives the media type of the body without parameters, in lower case", function()
    local function ctype(v) return request.new(box({["content-type"] = v}), "POST", "/", nil):content_type() end
    assert.equal("application/json", ctype("Application/JSON; charset=utf-8"))
    assert.equal("text/plain", ctype("text/plain  "))
    assert.is_nil(request.new(box({}), "POST", "/", nil):content_type())
  end)

  it("parses the query string with nested keys, once", function()
    local req = request.new(box({}), "GET", "/", "a=1&f[x]=2&t[]=3")
    assert.same({a = "1", f = {x = "2"}, t = {"3"}}, req:query())
    assert.equal(req:query(), req:query())
    assert.same({}, request.new(box({}), "GET", "/", nil):query())
  end)

  describe("json", function()
    it("decodes the body once", function()
      local b = box({}, '{"name":"pen","tags":["a"]}')
      local req = request.new(b, "POST", "/", nil)
      assert.same({name = "pen", tags = {"a"}}, req:json())
      req:json()
      assert.equal(1, b.reads)
    end)

    it("gives rage.null for a body of null", function()
      assert.equal(rage.null, request.new(box({}, "null"), "POST", "/", nil):json())
    end)

    it("raises request.invalid_json with status 400 for a body that is not JSON", function()
      for _, body in ipairs({"", "{", "name=pen"}) do
        local ok, err = pcall(function() return request.new(box({}, body), "POST", "/", nil):json() end)
        assert.is_false(ok)
        assert.is_true(errors.is(err, "request.invalid_json"), body)
        assert.equal(400, err.status)
      end
    end)
  end)
end)
