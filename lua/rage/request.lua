-- rage.request: what a controller knows about the request, over the core's request object.
--
-- Fields: method, path, query_string. Methods read lazily from the core (headers, body) so a
-- request that never looks at its headers never builds a table for them.

local json = require("rage.json")
local errors = require("rage.errors")
local params = require("rage.params")
local rtrim = require("rage.text").rtrim

local setmetatable, find, sub, lower, pairs, ipairs, type, tonumber = setmetatable, string.find, string.sub, string.lower, pairs, ipairs, type, tonumber
local match, gmatch = string.match, string.gmatch

local _M = {}

local Request = {}
Request.__index = Request
_M.Request = Request

-- UNSET is nil. The fields set to it are placeholders: naming them in the constructor sizes the
-- table for what the middleware, the dispatcher and the controller set on every request, and
-- because the value is a variable rather than the constant nil, LuaJIT keeps their keys in the
-- constructor's template, so setting them later stores into an existing slot instead of
-- inserting a key (a constant nil key is dropped from the template).
local UNSET = nil
_M.UNSET = UNSET

function _M.new(box, method, path, query, app)
  return setmetatable({box = box, method = method, path = path, query_string = query, app = app,
                       route = UNSET, path_params = UNSET, status = UNSET, extra_headers = UNSET},
                      Request)
end

-- maker(app) -> new(box, method, path, query): what the dispatcher uses. `app` comes from a
-- class of the app's own (a table with app = app whose lookups fall back to Request), so the
-- request table holds seven fields, in a hash part of eight slots that leaves room for one more.
function _M.maker(app)
  local class = setmetatable({app = app}, Request)
  class.__index = class
  return function(box, method, path, query)
    return setmetatable({box = box, method = method, path = path, query_string = query,
                         route = UNSET, path_params = UNSET, status = UNSET}, class)
  end
end

-- Adds a header to whatever response this request gets (middleware use this).
function Request:add_header(name, value)
  name = lower(name)
  local extra = self.extra_headers
  if not extra then
    self.extra_headers = {[name] = value}
    return
  end
  extra[name] = value
end

-- Whether with_headers would add anything: headers added by middleware, or cookies.
function Request:adds_headers()
  return self.extra_headers ~= nil or self.cookie_jar ~= nil
end

-- Merges the added headers into `headers` (a response header table) and returns it, with the
-- Set-Cookie lines of the cookies and session this request changed (see rage.cookies).
function Request:with_headers(headers)
  local extra = self.extra_headers
  if extra then
    for k, v in pairs(extra) do
      if headers[k] == nil then headers[k] = v end
    end
  end
  local jar = self.cookie_jar
  if jar then jar:commit(headers) end
  return headers
end

-- Answers directly (middleware), including the added headers.
function Request:respond(status, headers, body)
  self.status = status
  self.box:respond(status, self:with_headers(headers or {}), body or "")
end

-- The request id: the request's own X-Request-Id when it is safe to echo and to log (at most
-- 128 of letters, digits and -_.:@), else one the server made (a per-process prefix and a
-- counter). The server sends it back as X-Request-Id (unless config.request_id = false) and it
-- is in every log line of the request. Made the first time it is needed.
function Request:request_id()
  return self.box:request_id()
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

-- The whole body as a string. A body larger than the server's body_buffer arrived in a temporary
-- file; this reads it into memory, so for large uploads prefer each_body_chunk or params.
function Request:body()
  return self.box:body()
end

-- The body's size in bytes, without reading it.
function Request:body_size()
  return self.box:body_size()
end

-- Iterates over the body in pieces of at most `size` bytes (default 64 KiB):
--   for chunk in request:each_body_chunk() do digest:update(chunk) end
function Request:each_body_chunk(size)
  local box, off, n = self.box, 0, size or 65536
  return function()
    local chunk = box:body_read(off, n)
    if chunk then off = off + #chunk end
    return chunk
  end
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
  return lower(rtrim(ct))
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

-- The body's params: a form (urlencoded or multipart) or a JSON object; nil for other bodies.
-- Parsed once. Invalid JSON raises request.invalid_json (answered 400).
function Request:body_params()
  local bp = self._body_params
  if bp ~= nil then return bp or nil end
  local ct = self:content_type()
  if ct == "application/x-www-form-urlencoded" then
    bp = params.parse(self.box:body())
  elseif ct == "application/json" or (ct and sub(ct, -5) == "+json") then
    local v = self:json()
    bp = type(v) == "table" and not (v[1] ~= nil) and v or {}
    if type(v) == "table" and v[1] ~= nil then bp = {_json = v} end
  elseif ct == "multipart/form-data" then
    bp = require("rage.multipart").parse(self)
  end
  self._body_params = bp or false
  return bp
end

-- A controller's params: the query string, then a form or JSON body over it, then the path's
-- parameters (`path_params`, set by the router) over both, as in Rails: a query cannot replace
-- the :id the route matched. Made when the action first reads self.params, never before.
function Request:params()
  local path_params = self.path_params
  local qs = self.query_string
  local method = self.method
  local body = method ~= "GET" and method ~= "HEAD" and self:body_params()
  if not qs and not body then return path_params or {} end
  local merged = params.parse(qs)
  if body then
    for k, v in pairs(body) do merged[k] = v end
  end
  if path_params then
    for k, v in pairs(path_params) do merged[k] = v end
  end
  return merged
end

-- Registers fn to run when the request ends, whatever happened (temporary files).
function Request:on_cleanup(fn)
  local list = self.cleanup
  if not list then
    list = {}
    self.cleanup = list
  end
  list[#list + 1] = fn
end

-- Registers fn to run after the response has been sent, in this request's fiber.
function Request:on_after_response(fn)
  local list = self.after_response
  if not list then
    list = {}
    self.after_response = list
  end
  list[#list + 1] = fn
end

-- The client's address. X-Forwarded-For is believed only from the proxies listed in
-- config.trusted_proxies (addresses or IPv4 CIDR ranges): the rightmost untrusted hop wins.
function Request:remote_ip()
  local ip = self.box:peer()
  local trusted = _M.trusted_proxies
  if not trusted or not ip or not trusted(ip) then return ip end
  local xff = self.box:header("x-forwarded-for")
  if not xff then return ip end
  local hops = {}
  for hop in gmatch(xff, "[^,%s]+") do hops[#hops + 1] = hop end
  for i = #hops, 1, -1 do
    if not trusted(hops[i]) then return hops[i] end
  end
  return hops[1] or ip
end

-- "https" when a proxy from config.trusted_proxies says the client came over TLS
-- (X-Forwarded-Proto, its first value), else "http": the server itself speaks plain HTTP.
function Request:scheme()
  local trusted = _M.trusted_proxies
  if not trusted then return "http" end
  local ip = self.box:peer()
  if not ip or not trusted(ip) then return "http" end
  local proto = self.box:header("x-forwarded-proto")
  return proto and lower(match(proto, "^%s*([^,%s]*)")) == "https" and "https" or "http"
end

function Request:is_ssl()
  return self:scheme() == "https"
end

-- The token of an "Authorization: Bearer <token>" header (RFC 6750: the scheme in any case, a
-- token68), or nil when there is none or it is malformed.
function Request:bearer_token()
  local auth = self.box:header("authorization")
  if not auth then return nil end
  local scheme, token = match(auth, "^%s*(%a+)%s+([%w%-%._~%+/]+=*)%s*$")
  if scheme and lower(scheme) == "bearer" then return token end
  return nil
end

local MONTHS = {jan = 1, feb = 2, mar = 3, apr = 4, may = 5, jun = 6, jul = 7, aug = 8, sep = 9, oct = 10,
                nov = 11, dec = 12}

-- An HTTP-date (IMF-fixdate, RFC 850 or asctime, RFC 9110 §5.6.7) as os.time() seconds, or nil.
local function parse_http_date(s)
  local d, mon, y, h, mi, sec = match(s, "^%a+, (%d%d) (%a%a%a) (%d%d%d%d) (%d%d):(%d%d):(%d%d) GMT$")
  if not d then
    d, mon, y, h, mi, sec = match(s, "^%a+, (%d%d)%-(%a%a%a)%-(%d%d) (%d%d):(%d%d):(%d%d) GMT$")
    if y then y = tonumber(y) + (tonumber(y) < 70 and 2000 or 1900) end
  end
  if not d then
    mon, d, h, mi, sec, y = match(s, "^%a+ (%a%a%a) +(%d?%d) (%d%d):(%d%d):(%d%d) (%d%d%d%d)$")
  end
  local m = mon and MONTHS[lower(mon)]
  if not m then return nil end
  local floor = math.floor
  y, d = tonumber(y), tonumber(d)
  -- Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
  local yy = m <= 2 and y - 1 or y
  local era = floor(yy / 400)
  local yoe = yy - era * 400
  local doy = floor((153 * (m > 2 and m - 3 or m + 9) + 2) / 5) + d - 1
  local days = era * 146097 + yoe * 365 + floor(yoe / 4) - floor(yoe / 100) + doy - 719468
  return days * 86400 + tonumber(h) * 3600 + tonumber(mi) * 60 + tonumber(sec)
end
_M.parse_http_date = parse_http_date

-- Whether an If-None-Match list names `etag` (weak comparison, "*" matching any). Each member
-- is cut out with find(), in linear time whatever blanks the client sends.
local function etag_matches(list, etag)
  local bare = etag:gsub("^W/", "")
  for tag in gmatch(list, "[^,]+") do
    local i = find(tag, "%S")
    if i then
      tag = match(tag, "^.*%S", i)
      if tag == "*" or tag == bare or (sub(tag, 1, 2) == "W/" and sub(tag, 3) == bare) then return true end
    end
  end
  return false
end

-- Whether the client's copy is still good for a response with these validators (RFC 9110
-- §13.2.2): for GET and HEAD, If-None-Match when present, else If-Modified-Since.
function Request:is_fresh(etag, last_modified)
  local method = self.method
  if method ~= "GET" and method ~= "HEAD" then return false end
  local inm = self.box:header("if-none-match")
  if inm then return etag ~= nil and etag_matches(inm, etag) end
  local ims = last_modified and self.box:header("if-modified-since")
  local t = ims and parse_http_date(ims)
  return t ~= nil and last_modified <= t
end

local FORMATS = {json = "json", html = "html", xml = "xml", csv = "csv", txt = "text", text = "text"}

-- "json", "html", ...: the path's extension if the route had one (`(.:format)`), else the
-- Accept header.
function Request:format()
  local route_format = self.path_params and self.path_params.format
  if route_format then return route_format end
  local accept = self.box:header("accept")
  if not accept or find(accept, "*/*", 1, true) and not find(accept, ",", 1, true) then return "html" end
  if find(accept, "json", 1, true) then return "json" end
  if find(accept, "html", 1, true) then return "html" end
  if find(accept, "xml", 1, true) then return "xml" end
  if find(accept, "text/plain", 1, true) then return "text" end
  return FORMATS[accept] or "html"
end

-- Builds the trusted-proxy test from a list of addresses and IPv4 CIDR ranges.
function _M.trust(list)
  if not list or #list == 0 then
    _M.trusted_proxies = nil
    return
  end
  local exact, ranges = {}, {}
  local function v4(s)
    local a, b, c, d = match(s, "^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
    if not a then return nil end
    return ((tonumber(a) * 256 + tonumber(b)) * 256 + tonumber(c)) * 256 + tonumber(d)
  end
  for _, entry in ipairs(list) do
    local addr, bits = match(entry, "^([^/]+)/(%d+)$")
    if addr and v4(addr) then
      local size = 2 ^ (32 - tonumber(bits))
      local base = v4(addr) - v4(addr) % size
      ranges[#ranges + 1] = {base, size}
    else
      exact[entry] = true
    end
  end
  _M.trusted_proxies = function(ip)
    if exact[ip] then return true end
    local n = v4(ip)
    if not n then return false end
    for i = 1, #ranges do
      local r = ranges[i]
      if n >= r[1] and n < r[1] + r[2] then return true end
    end
    return false
  end
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
