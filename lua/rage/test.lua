-- rage.test: helpers for app specs.
--
--   local t = require("rage.test")
--   local app = t.load("apps/todo")
--   local res = t.request(app, "POST", "/todos", {json = {title = "x"}, headers = {...}})
--   assert.equal(201, res.status); local body = res:json()
--
-- request() dispatches in-process, without sockets, through the same handler (router,
-- controller, callbacks, error handling) that serves real connections: it hands the handler an
-- object with the same methods as the core's request object.

local json = require("rage.json")
local params = require("rage.params")
local log = require("rage.log")

local setmetatable, type, pairs, ipairs, lower, error, tostring = setmetatable, type, pairs, ipairs, string.lower, error, tostring
local sort, concat = table.sort, table.concat

local _M = {}

local Box = {}
Box.__index = Box

function Box:header(name)
  return self._headers[lower(name)]
end

function Box:headers()
  local t = {}
  for k, v in pairs(self._headers) do t[k] = v end
  return t
end

function Box:body() return self._body end
function Box:body_size() return #self._body end
function Box:body_read(off, n)
  if off >= #self._body then return nil end
  return self._body:sub(off + 1, off + n)
end
function Box:http_version() return "1.1" end
function Box:peer() return "127.0.0.1" end
function Box:responded() return self.res.status ~= nil end

-- As the core: the request's own X-Request-Id when it is safe, else a new one.
local ids = 0
function Box:request_id()
  if not self._id then
    local own = self._headers["x-request-id"]
    if own and #own <= 128 and own:find("^[%w%-_%.:@]+$") then
      self._id = own
    else
      ids = ids + 1
      self._id = "test-" .. ids
    end
  end
  return self._id
end

-- The response headers as the core sends them: with X-Request-Id unless the app set one.
local function add_request_id(box, headers)
  if box._want_id and headers["x-request-id"] == nil then
    headers["x-request-id"] = box:request_id()
  end
end
function Box:connected() return true end

local function check_headers(headers)
  for k, v in pairs(headers or {}) do
    local vs = type(v) == "table" and v or {v}
    if not k:find("^[%w!#$%%&'*+%-.^_`|~]+$") then error("invalid header name " .. k, 3) end
    for _, x in ipairs(vs) do
      if type(x) ~= "string" then error("header '" .. k .. "' has a non-string value", 3) end
      if x:find("[%z\1-\8\10-\31\127]") then
        error("invalid header value (CR, LF, NUL and control characters are not allowed)", 3)
      end
    end
  end
end

function Box:respond(status, headers, body)
  if self.res.status then error("the response was already sent", 2) end
  check_headers(headers)
  local res = self.res
  res.status = status
  for k, v in pairs(headers or {}) do res.headers[lower(k)] = v end
  add_request_id(self, res.headers)
  res.body = self._head_only and "" or (body or "")
end

function Box:stream_start(status, headers)
  if self.res.status then error("the response was already sent", 2) end
  check_headers(headers)
  self.res.status = status
  for k, v in pairs(headers or {}) do self.res.headers[lower(k)] = v end
  add_request_id(self, self.res.headers)
  self._chunks = {}
end

function Box:write(data)
  self._chunks[#self._chunks + 1] = data
  return true
end

function Box:finish()
  self.res.body = self._head_only and "" or table.concat(self._chunks)
end

-- The core sends files with sendfile(2); in-process requests read the range instead.
function Box:send_file(status, headers, path, offset, length)
  local f = io.open(path, "rb")
  if not f then return nil, "fs.error", "cannot open " .. path end
  f:seek("set", offset)
  local data = length > 0 and f:read(length) or ""
  f:close()
  self:respond(status, headers, data)
  return true
end

local Response = {}
Response.__index = Response

function Response:json()
  local v, err = json.decode(self.body)
  if v == nil and self.body ~= "null" then error("response body is not JSON: " .. tostring(err), 2) end
  return v
end

function Response:header(name)
  return self.headers[lower(name)]
end

-- Loads an app directory for specs (without installing it as the server's handler).
function _M.load(dir)
  local log = require("rage.log")
  local level = log.level()
  local app = require("rage.app").load(dir)
  log.level(level)   -- the app's configured level is for serving, not for spec output
  return app
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  return keys
end

-- Form-encodes `v` under `key` into `out` as Rails' to_query does: a[]=1 for lists, a[b]=1 for
-- tables, in sorted key order.
local function to_query(out, key, v)
  if type(v) ~= "table" then
    out[#out + 1] = params.escape(key) .. "=" .. params.escape(tostring(v))
  elseif #v > 0 then
    for _, x in ipairs(v) do to_query(out, key .. "[]", x) end
  else
    for _, k in ipairs(sorted_keys(v)) do to_query(out, key .. "[" .. tostring(k) .. "]", v[k]) end
  end
end

-- The app under test: the directory `rage-lua test DIR` was given, or the current one. Loaded
-- once per spec run.
local loaded_app
function _M.app()
  if not loaded_app then loaded_app = _M.load(_M.root or ".") end
  return loaded_app
end

-- request(app, method, target, {headers =, body =, json =, params =}) -> response
-- `params` go into the query string for GET and HEAD, into a form body otherwise.
function _M.request(app, method, target, opts)
  opts = opts or {}
  local headers = {}
  for k, v in pairs(opts.headers or {}) do headers[lower(k)] = v end
  headers.host = headers.host or "localhost"
  local body = opts.body or ""
  if opts.json ~= nil then
    body = json.encode(opts.json)
    headers["content-type"] = headers["content-type"] or "application/json"
  elseif opts.params then
    local parts = {}
    for _, k in ipairs(sorted_keys(opts.params)) do to_query(parts, tostring(k), opts.params[k]) end
    local encoded = concat(parts, "&")
    if method == "GET" or method == "HEAD" then
      if encoded ~= "" then target = target .. (target:find("?", 1, true) and "&" or "?") .. encoded end
    else
      body = encoded
      headers["content-type"] = headers["content-type"] or "application/x-www-form-urlencoded"
    end
  end
  if body ~= "" then headers["content-length"] = tostring(#body) end
  local path, query = target:match("^([^?]*)%??(.*)$")
  local res = setmetatable({headers = {}}, Response)
  local box = setmetatable({_headers = headers, _body = body, res = res, _head_only = method == "HEAD",
                            _want_id = app.config == nil or app.config.request_id ~= false}, Box)
  -- A job of its own, as a real request gets: fiber-local state (request id, log context,
  -- spawned children) never leaks into the spec that made the request.
  require("rage.async").spawn(app.handler, box, method, path, query ~= "" and query or nil):wait()
  if res.body == nil and box._chunks then
    -- A stream that failed before finishing: what the client had received.
    res.body = box._head_only and "" or concat(box._chunks)
  end
  if res.status == nil then
    -- What the core answers for a request whose handler sent nothing.
    log.error(method, " ", target, " finished without a response")
    box:respond(500, {["content-type"] = "text/plain; charset=utf-8"}, "Internal Server Error\n")
  end
  return res
end

return _M
