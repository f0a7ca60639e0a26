-- rage.http: outbound HTTP/1.1 requests that look blocking and suspend only the calling fiber.
--
--   local res = rage.http.get("http://api.local/users/1", {timeout = 2})
--   res.status, res.headers["content-type"], res.body, res:json()
--   rage.http.post(url, {json = {name = "x"}})
--   rage.http.request{method = "PUT", url = url, headers = {...}, body = "...", redirects = 3}
--   rage.http.get(url, {stream = function(chunk) ... end})
--
-- This module validates options (misuse raises at the caller's line), builds the request head
-- and follows redirects; core/src/httpc.c does the rest: DNS, the keep-alive pool, TLS, the
-- response parser and the timeouts. Failures raise rage error objects whose kind is one of
-- http.dns, http.connect, http.timeout (with err.phase), http.tls, http.protocol,
-- http.too_large, http.closed, http.too_many_redirects, or cancelled.

local core = require("rage.core")
local errors = require("rage.errors")
local json = require("rage.json")

local type, tostring, tonumber, pairs, error, setmetatable, pcall, next =
  type, tostring, tonumber, pairs, error, setmetatable, pcall, next
local format, find, gsub, lower, upper, byte, sub, match =
  string.format, string.find, string.gsub, string.lower, string.upper, string.byte, string.sub, string.match
local concat, sort, floor = table.concat, table.sort, math.floor
local core_request = core.http_request

local _M = {}

local USER_AGENT = "rage-lua/" .. tostring(core.version)
local MAX_REDIRECTS = 10

local IDEMPOTENT = {GET = true, HEAD = true, PUT = true, DELETE = true, OPTIONS = true, TRACE = true}
local WITH_BODY = {POST = true, PUT = true, PATCH = true}
local REDIRECT = {[301] = true, [302] = true, [303] = true, [307] = true, [308] = true}
-- Headers the client owns: a caller's value would contradict the framing it writes.
local RESERVED = {["content-length"] = true, ["transfer-encoding"] = true}

local OPTIONS = {
  method = "string", url = "string", headers = "table", query = "table", body = "string",
  json = true, form = "table", timeout = true, redirects = "number", stream = "function",
  max_body = true, max_header_size = "number", max_headers = "number", ca_file = "string",
  verify = "boolean",
}

local function misuse(msg, level)
  error("rage.http: " .. msg, level + 1)
end

-- ---- responses ------------------------------------------------------------------------------

local Response = {}
Response.__index = Response

-- Decodes the body as JSON; raises json.decode when it is not JSON.
function Response:json()
  local v, err = json.decode(self.body or "")
  if v == nil and err ~= nil then errors.raise("json.decode", "response body is not JSON: " .. tostring(err), nil, 2) end
  return v
end

-- ---- URLs -----------------------------------------------------------------------------------

local function pct(c)
  return format("%%%02X", byte(c))
end

-- Percent-encodes everything but RFC 3986's unreserved characters.
local function encode_component(s)
  return (gsub(s, "[^%w%-%._~]", pct))
end
_M.encode_component = encode_component

local function parse_url(url, level)
  if type(url) ~= "string" then misuse("url must be a string, not " .. type(url), level + 1) end
  local scheme, rest = match(url, "^(%a[%w+.-]*)://(.*)$")
  if not scheme then misuse("invalid URL (expected http:// or https://): " .. url, level + 1) end
  scheme = lower(scheme)
  if scheme ~= "http" and scheme ~= "https" then misuse("unsupported URL scheme: " .. scheme, level + 1) end
  local authority, target = match(rest, "^([^/?#]*)(.*)$")
  if find(authority, "@", 1, true) then
    misuse("credentials in URLs are not supported; send an Authorization header", level + 1)
  end
  local host, port, ipv6
  if sub(authority, 1, 1) == "[" then
    host, port = match(authority, "^%[([%x:.]+)%]:?(%d*)$")
    ipv6 = true
  else
    host, port = match(authority, "^([%w%.%-_]+):?(%d*)$")
  end
  if not host then misuse("invalid host in URL: " .. url, level + 1) end
  host = lower(host)
  local default = scheme == "https" and 443 or 80
  local p = port ~= "" and tonumber(port) or default
  if p < 1 or p > 65535 then misuse("invalid port in URL: " .. url, level + 1) end
  target = gsub(target, "#.*$", "")
  if target == "" then
    target = "/"
  elseif sub(target, 1, 1) == "?" then
    target = "/" .. target
  end
  -- Bytes that may not appear in a request target are sent percent-encoded.
  target = gsub(target, "[%c%s\"<>\\^`{|}\128-\255]", pct)
  local host_header = ipv6 and ("[" .. host .. "]") or host
  if p ~= default then host_header = host_header .. ":" .. p end
  return {scheme = scheme, host = host, port = p, target = target, host_header = host_header}
end

local function origin_of(u)
  return u.scheme .. "://" .. u.host .. ":" .. u.port
end

local function query_value(v, key, level)
  local t = type(v)
  if t == "string" then return v end
  if t == "number" then
    if v == floor(v) and v > -1e15 and v < 1e15 then return format("%d", v) end
    return tostring(v)
  end
  if t == "boolean" then return tostring(v) end
  misuse("query value for '" .. tostring(key) .. "' must be a string, number or boolean", level + 1)
end

-- Encodes a query table ({k = v} or {k = {v1, v2}}) with sorted keys, so URLs are stable.
local function encode_query(q, level)
  local keys = {}
  for k in pairs(q) do
    if type(k) ~= "string" then misuse("query keys must be strings", level + 1) end
    keys[#keys + 1] = k
  end
  sort(keys)
  local out = {}
  for i = 1, #keys do
    local k = keys[i]
    local v = q[k]
    local ek = encode_component(k)
    if type(v) == "table" then
      for j = 1, #v do out[#out + 1] = ek .. "=" .. encode_component(query_value(v[j], k, level + 1)) end
    else
      out[#out + 1] = ek .. "=" .. encode_component(query_value(v, k, level + 1))
    end
  end
  return concat(out, "&")
end
_M.encode_query = function(q)
  if type(q) ~= "table" then misuse("encode_query expects a table", 2) end
  return encode_query(q, 2)
end

-- Resolves a Location header against the URL it answered.
local function resolve(base, loc)
  if match(loc, "^%a[%w+.-]*://") then return loc end
  local prefix = base.scheme .. "://" .. base.host_header
  if sub(loc, 1, 2) == "//" then return base.scheme .. ":" .. loc end
  if sub(loc, 1, 1) == "/" then return prefix .. loc end
  local path = match(base.target, "^[^?]*")
  local dir = match(path, "^(.*/)") or "/"
  if sub(loc, 1, 1) == "?" then return prefix .. path .. loc end
  return prefix .. dir .. loc
end

-- ---- requests -------------------------------------------------------------------------------

local TOKEN = "^[!#$%%&'*+%-.^_`|~%w]+$"

local function add_header(out, seen, name, value, level)
  if type(name) ~= "string" or not find(name, TOKEN) then
    misuse("invalid header name: " .. tostring(name), level + 1)
  end
  local t = type(value)
  if t == "number" then
    value = tostring(value)
  elseif t ~= "string" then
    misuse("header '" .. name .. "' must have a string value", level + 1)
  end
  if find(value, "[%z\r\n]") then misuse("header '" .. name .. "' contains CR, LF or NUL", level + 1) end
  local lname = lower(name)
  if RESERVED[lname] then misuse("header '" .. name .. "' is set by the client", level + 1) end
  seen[lname] = true
  out[#out + 1] = name .. ": " .. value .. "\r\n"
  if lname == "connection" and find(lower(value), "close", 1, true) then out.close = true end
end

local function timeouts(params, t, level)
  local tt = type(t)
  if t == nil then return end
  if tt == "number" then
    if not (t > 0) then misuse("timeout must be a positive number of seconds", level + 1) end
    params.total_timeout = t
    return
  end
  if tt ~= "table" then misuse("timeout must be a number or a table", level + 1) end
  for k, v in pairs(t) do
    if k ~= "connect" and k ~= "headers" and k ~= "idle" and k ~= "total" then
      misuse("unknown timeout '" .. tostring(k) .. "' (connect, headers, idle, total)", level + 1)
    end
    if v ~= false and (type(v) ~= "number" or not (v > 0)) then
      misuse("timeout." .. k .. " must be a positive number of seconds or false", level + 1)
    end
    params[k .. "_timeout"] = v
  end
end

local function check_opts(opts, level)
  for k, v in pairs(opts) do
    local want = OPTIONS[k]
    if want == nil then misuse("unknown option '" .. tostring(k) .. "'", level + 1) end
    if want ~= true and type(v) ~= want then
      misuse("option '" .. k .. "' must be a " .. want .. ", not " .. type(v), level + 1)
    end
  end
  local mb = opts.max_body
  if mb ~= nil and mb ~= false and (type(mb) ~= "number" or mb < 0) then
    misuse("max_body must be a number of bytes or false", level + 1)
  end
  local r = opts.redirects
  if r ~= nil and (r < 0 or r > MAX_REDIRECTS or r ~= floor(r)) then
    misuse("redirects must be a whole number from 0 to " .. MAX_REDIRECTS, level + 1)
  end
  local n = (opts.body ~= nil and 1 or 0) + (opts.json ~= nil and 1 or 0) + (opts.form ~= nil and 1 or 0)
  if n > 1 then misuse("body, json and form are exclusive", level + 1) end
end

local function raise_failure(kind, msg, phase, method, url)
  errors.raise(kind, msg, {phase = phase, method = method, url = url}, 3)
end

-- Sends one request and reads its response (through `stream` or into res.body).
local function exchange(method, u, url, headers, body, params, stream, follow)
  local p = params
  p.host, p.port, p.tls = u.host, u.port, u.scheme == "https"
  p.method_head = method == "HEAD"
  p.idempotent = IDEMPOTENT[method] or false
  p.keepalive = not headers.lines.close
  local head = {method, " ", u.target, " HTTP/1.1\r\n"}
  if not headers.seen.host then head[#head + 1] = "Host: " .. u.host_header .. "\r\n" end
  local lines = headers.lines
  for i = 1, #lines do head[#head + 1] = lines[i] end
  if not headers.seen["user-agent"] then head[#head + 1] = "User-Agent: " .. USER_AGENT .. "\r\n" end
  if body ~= nil and (body ~= "" or WITH_BODY[method]) then
    head[#head + 1] = "Content-Length: " .. #body .. "\r\n"
  elseif WITH_BODY[method] then
    head[#head + 1] = "Content-Length: 0\r\n"
  end
  head[#head + 1] = "\r\n"
  p.head = concat(head)
  p.body = body
  -- A redirect we are going to follow is drained, never streamed to the caller.
  p.stream = stream ~= nil
  local x, status, hdrs, rbody = core_request(p)
  if not x then raise_failure(status, hdrs, rbody, method, url) end
  local res = setmetatable({status = status, headers = hdrs, url = url, ok = status >= 200 and status < 300},
    Response)
  local redirecting = follow and REDIRECT[status] and hdrs.location ~= nil
  if rbody ~= nil then
    res.body = rbody
  elseif stream and not redirecting then
    while true do
      local chunk, kind, msg, phase = x:read()
      if chunk == nil then
        x:close()
        raise_failure(kind, msg, phase, method, url)
      end
      if chunk == false then break end
      local ok, err = pcall(stream, chunk)
      if not ok then
        x:close()
        error(err, 0)
      end
    end
  elseif stream then
    while true do
      local chunk, kind, msg, phase = x:read()
      if chunk == nil then
        x:close()
        raise_failure(kind, msg, phase, method, url)
      end
      if chunk == false then break end
    end
  else
    local b, kind, msg, phase = x:read_all()
    if b == nil then
      x:close()
      raise_failure(kind, msg, phase, method, url)
    end
    res.body = b
  end
  x:close()
  return res, redirecting
end

local function build_headers(h, level)
  local out = {lines = {}, seen = {}}
  if h == nil then return out end
  local names = {}
  for name in pairs(h) do
    if type(name) ~= "string" then misuse("header names must be strings", level + 1) end
    names[#names + 1] = name
  end
  sort(names)
  for i = 1, #names do
    local name = names[i]
    local v = h[name]
    if type(v) == "table" then
      for j = 1, #v do add_header(out.lines, out.seen, name, v[j], level + 1) end
    else
      add_header(out.lines, out.seen, name, v, level + 1)
    end
  end
  return out
end

local function request(opts, level)
  if type(opts) ~= "table" then misuse("request expects a table of options", level + 1) end
  check_opts(opts, level + 1)
  local method = opts.method or "GET"
  if not find(method, TOKEN) then misuse("invalid method: " .. method, level + 1) end
  method = upper(method)
  local url = opts.url
  local u = parse_url(url, level + 1)
  if opts.query and next(opts.query) ~= nil then
    local q = encode_query(opts.query, level + 1)
    u.target = u.target .. (find(u.target, "?", 1, true) and "&" or "?") .. q
    url = url .. (find(url, "?", 1, true) and "&" or "?") .. q
  end
  local user_headers = opts.headers
  local body = opts.body
  local content_type
  if opts.json ~= nil then
    body = json.encode(opts.json)
    content_type = "application/json"
  elseif opts.form ~= nil then
    body = encode_query(opts.form, level + 1)
    content_type = "application/x-www-form-urlencoded"
  end
  local headers = build_headers(user_headers, level + 1)
  if content_type and not headers.seen["content-type"] then
    add_header(headers.lines, headers.seen, "Content-Type", content_type, level + 1)
  end
  local params = {
    verify = opts.verify ~= false, ca_file = opts.ca_file,
    max_body = opts.max_body, max_header_size = opts.max_header_size, max_headers = opts.max_headers,
  }
  timeouts(params, opts.timeout, level + 1)
  local max_hops = opts.redirects or 0
  local hops = 0
  while true do
    local res, redirecting = exchange(method, u, url, headers, body, params, opts.stream, max_hops > 0)
    if not redirecting then
      res.redirects = hops
      return res
    end
    if hops >= max_hops then
      errors.raise("http.too_many_redirects", format("more than %d redirects (last: %d to %s)",
        max_hops, res.status, res.headers.location), {url = url, method = method}, level + 1)
    end
    hops = hops + 1
    local next_url = resolve(u, res.headers.location)
    local ok, nu = pcall(parse_url, next_url, 1)
    if not ok then
      errors.raise("http.protocol", "cannot follow the redirect to " .. tostring(next_url),
        {url = url, method = method}, level + 1)
    end
    local st = res.status
    if (st == 301 or st == 302 or st == 303) and method ~= "HEAD" then
      -- As browsers do: the next request is a GET without a body.
      if method ~= "GET" then
        method = "GET"
        body = nil
        local lines, seen = {}, {}
        for name, v in pairs(user_headers or {}) do
          local l = lower(name)
          if l ~= "content-type" then
            if type(v) == "table" then
              for j = 1, #v do add_header(lines, seen, name, v[j], 1) end
            else
              add_header(lines, seen, name, v, 1)
            end
          end
        end
        headers = {lines = lines, seen = seen}
        user_headers = nil
      end
    end
    if origin_of(nu) ~= origin_of(u) then
      -- Credentials never travel to another origin.
      local old = headers.lines
      local lines, seen = {close = old.close}, {}
      for i = 1, #old do
        local line = old[i]
        local l = lower(match(line, "^[^:]*"))
        if l ~= "authorization" and l ~= "cookie" and l ~= "proxy-authorization" then
          lines[#lines + 1] = line
          seen[l] = true
        end
      end
      if headers.seen.host then
        -- A Host header set for the first origin would send the request to the wrong site.
        local kept = {close = lines.close}
        for i = 1, #lines do
          if lower(match(lines[i], "^[^:]*")) ~= "host" then kept[#kept + 1] = lines[i] end
        end
        lines = kept
        seen.host = nil
      end
      headers = {lines = lines, seen = seen}
    end
    u, url = nu, next_url
  end
end

-- request{method =, url =, headers =, query =, body = | json = | form =, timeout =, redirects =,
--         stream =, max_body =, max_header_size =, max_headers =, ca_file =, verify =}
function _M.request(opts)
  local res = request(opts, 2) -- not a tail call: the caller's frame must stay for error levels
  return res
end

local function verb(method)
  return function(url, opts)
    local o = {}
    if opts ~= nil then
      if type(opts) ~= "table" then misuse(lower(method) .. " expects an options table as its second argument", 2) end
      for k, v in pairs(opts) do o[k] = v end
    end
    o.method = method
    o.url = url
    local res = request(o, 2)
    return res
  end
end

_M.get = verb("GET")
_M.head = verb("HEAD")
_M.post = verb("POST")
_M.put = verb("PUT")
_M.patch = verb("PATCH")
_M.delete = verb("DELETE")
_M.options = verb("OPTIONS")

-- Pool settings: max_idle_per_origin, max_idle (all origins), idle_timeout (s), dns_ttl (s).
function _M.configure(opts)
  if type(opts) ~= "table" then misuse("configure expects a table", 2) end
  for k, v in pairs(opts) do
    if k ~= "max_idle_per_origin" and k ~= "max_idle" and k ~= "idle_timeout" and k ~= "dns_ttl" then
      misuse("unknown pool setting '" .. tostring(k) .. "'", 2)
    end
    if type(v) ~= "number" or v < 0 then misuse("pool setting '" .. k .. "' must be a non-negative number", 2) end
  end
  core.http_configure(opts)
end

-- Counters: idle (pooled now), opened, reused, retried, dns_lookups, dns_hits.
function _M.stats()
  return core.http_stats()
end

-- Closes every idle pooled connection.
function _M.close_idle()
  core.http_close_idle()
end

return _M
