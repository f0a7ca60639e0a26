-- rage.request: what a controller knows about the request, over the core's request object.
--
-- Fields: method, path, query_string. Methods read lazily from the core (headers, body) so a
-- request that never looks at its headers never builds a table for them.

local json = require("rage.json")
local errors = require("rage.errors")
local params = require("rage.params")

local setmetatable, find, sub, lower, pairs = setmetatable, string.find, string.sub, string.lower, pairs

local _M = {}

local Request = {}
Request.__index = Request
_M.Request = Request

function _M.new(box, method, path, query)
  return setmetatable({box = box, method = method, path = path, query_string = query}, Request)
end

-- Adds a header to whatever response this request gets (middleware use this).
function Request:add_header(name, value)
  local extra = self.extra_headers
  if not extra then
    extra = {}
    self.extra_headers = extra
  end
  extra[lower(name)] = value
end

-- Merges the added headers into `headers` (a response header table) and returns it.
function Request:with_headers(headers)
  local extra = self.extra_headers
  if extra then
    for k, v in pairs(extra) do
      if headers[k] == nil then headers[k] = v end
    end
  end
  return headers
end

-- Answers directly (middleware), including the added headers.
function Request:respond(status, headers, body)
  self.status = status
  self.box:respond(status, self:with_headers(headers or {}), body or "")
end

function Request:header(name)
  return self.box:header(name)
end

-- All headers, keyed by lower-case name.
function Request:headers()
  local h = self._headers
  if not h then
    h = self.box:headers()
    self._headers = h
  end
  return h
end

function Request:body()
  return self.box:body()
end

function Request:http_version()
  return self.box:http_version()
end

function Request:remote_ip()
  return self.box:peer()
end

function Request:host()
  return self.box:header("host")
end

-- The media type without parameters, lower-cased ("application/json"), or nil.
function Request:content_type()
  local ct = self.box:header("content-type")
  if not ct then return nil end
  local semi = find(ct, ";", 1, true)
  if semi then ct = sub(ct, 1, semi - 1) end
  return lower((ct:gsub("%s+$", "")))
end

-- The query string parsed into a table (nested keys as Rails).
function Request:query()
  local q = self._query
  if not q then
    q = params.parse(self.query_string)
    self._query = q
  end
  return q
end

-- The body decoded as JSON; raises request.invalid_json (answered 400) when it is not JSON.
function Request:json()
  if self._json == nil then
    local body = self.box:body()
    local v, err = json.decode(body)
    if v == nil and body ~= "null" then
      errors.raise("request.invalid_json", "the request body is not valid JSON: " .. tostring(err), {status = 400}, 2)
    end
    self._json = v
  end
  return self._json
end

return _M
