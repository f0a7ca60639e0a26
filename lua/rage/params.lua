-- rage.params: percent-decoding and query-string / form parsing with Rails-style nested keys.
--
--   parse("a=1&b=x+y")              --> {a = "1", b = "x y"}
--   parse("user[name]=Al&tags[]=x") --> {user = {name = "Al"}, tags = {"x"}}
-- Parsing is bounded: at most `max_params` pairs and `max_depth` levels of nesting, so a hostile
-- query string cannot make a request build an arbitrarily large or deep table.

local gsub, find, sub, char, tonumber, type = string.gsub, string.find, string.sub, string.char, tonumber, type
local gmatch = string.gmatch

local _M = {}

_M.max_params = 1000
_M.max_depth = 32

local function hex_to_char(h)
  return char(tonumber(h, 16))
end

-- Decodes %XX escapes (and '+' as space when `form` is true). Invalid escapes stay as they are.
function _M.unescape(s, form)
  if form and find(s, "+", 1, true) then s = gsub(s, "+", " ") end
  if not find(s, "%", 1, true) then return s end
  return (gsub(s, "%%(%x%x)", hex_to_char))
end

local function char_to_hex(c)
  return ("%%%02X"):format(c:byte())
end

-- Percent-encodes everything but unreserved characters (RFC 3986).
function _M.escape(s)
  return (gsub(s, "[^%w%-%._~]", char_to_hex))
end

local function index(part)
  return tonumber(part) and #part < 10 and tonumber(part) or part
end

-- Whether `node` already has a value at the key path parts[i..n] (Rack's params_hash_has_key?).
local function has_path(node, parts, i, n)
  for j = i, n do
    local part = parts[j]
    if part == "" or type(node) ~= "table" then return false end
    node = node[index(part)]
    if node == nil then return false end
  end
  return true
end

-- Stores value at the nested key path of `name` ("a[b][]") inside `t`.
local function store(t, name, value)
  local first = find(name, "[", 1, true)
  if not first or first == 1 then
    t[name] = value
    return
  end
  local parts, n = {}, 0
  for part in gmatch(sub(name, first), "%[([^%]]*)%]") do
    if n == _M.max_depth then break end
    n = n + 1
    parts[n] = part
  end
  local node, key = t, sub(name, 1, first - 1)
  for i = 1, n do
    local child = node[key]
    if type(child) ~= "table" then
      child = {}
      node[key] = child
    end
    node = child
    local part = parts[i]
    if part == "" then
      -- "items[][name]=a&items[][qty]=1" builds one item: a key goes into the last item
      -- unless that item already has it, as in Rails.
      local len = #node
      local last = len > 0 and node[len]
      if i < n and type(last) == "table" and not has_path(last, parts, i + 1, n) then
        key = len
      else
        key = len + 1
      end
    else
      key = index(part)
    end
  end
  node[key] = value
end

_M.store = store

-- Parses an application/x-www-form-urlencoded string (a query string or a form body). Cut
-- with plain find and sub, which LuaJIT compiles into the request's trace (gmatch it does not).
function _M.parse(s, into)
  local t = into or {}
  if s == nil or s == "" then return t end
  local count, pos, len, unescape = 0, 1, #s, _M.unescape
  while pos <= len do
    local amp = find(s, "&", pos, true)
    local stop = amp and amp - 1 or len
    if stop >= pos then
      count = count + 1
      if count > _M.max_params then break end
      local pair = sub(s, pos, stop)
      local eq = find(pair, "=", 1, true)
      local k, v
      if eq then
        k, v = sub(pair, 1, eq - 1), sub(pair, eq + 1)
      else
        k, v = pair, ""
      end
      k = unescape(k, true)
      if k ~= "" then store(t, k, unescape(v, true)) end
    end
    if not amp then break end
    pos = amp + 1
  end
  return t
end

return _M
