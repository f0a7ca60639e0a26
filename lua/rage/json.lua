-- rage.json: JSON for rage-lua, with rage.null for JSON null.
--
-- encode() is written in Lua over a string buffer so that LuaJIT compiles it into the trace of
-- the request that renders: a call into lua-cjson's C encoder ends that trace, after which
-- every table the request made must be built for real instead of being sunk. Its output is
-- lua-cjson's, byte for byte (spec/unit/json_spec.lua compares the two), with two additions:
--
--   * An empty Lua table encodes as {}. A table marked with rage.json.array(t) encodes as an
--     array, [] when empty (database rows are marked this way).
--   * lua-cjson writes numbers with 14 significant digits, so an id such as 1234567890123456
--     would come out as 1.2345678901235e+15; integers below 1e21 are written in full digits
--     (as JavaScript does).
--
-- As in lua-cjson: keys are strings or numbers; a table whose keys are all positive integers
-- is an array (holes are null) unless it is sparse (its largest index is over 10 and over
-- twice its number of elements), which is written as an object; '/' and DEL are escaped;
-- NaN, infinity, functions, coroutines and userdata other than rage.null are errors, and so
-- is nesting deeper than 1000 (a cycle). Numbers are written as tostring writes them; for a
-- number exactly halfway between two 14-digit decimals that may differ from lua-cjson's (C's
-- printf) in the last digit. decode() is lua-cjson's.

local cjson = require("cjson.safe")
local buffer = require("string.buffer")
local leaf = require("rage.leaf")

local setmetatable, getmetatable, type, next, error = setmetatable, getmetatable, type, next, error
local floor, huge = math.floor, math.huge

local _M = {}

local null = cjson.null
_M.null = null

local ARRAY = {__name = "rage.json.array"}
local MAX_DEPTH = 1000
local KEEP = 64 * 1024   -- a buffer grown past this is given back after the call

local json_plain, json_quote = leaf.json_plain, leaf.json_quote
local buf = buffer.new(1024)

-- Marks `t` (or a new table) as a JSON array. Returns it.
function _M.array(t)
  return setmetatable(t or {}, ARRAY)
end

function _M.is_array(t)
  return getmetatable(t) == ARRAY
end

local function fail(what, why)
  buf:reset()
  error(require("rage.errors").new("json.encode", "Cannot serialise " .. what .. ": " .. why), 0)
end

local function put_string(s)
  local n = #s
  if json_plain(s, n) == n then
    buf:put('"', s, '"')
  else
    local out = buf:reserve(n * 6 + 2)
    buf:commit(json_quote(s, n, out))
  end
end

local function put_number(x)
  if x ~= x or x == huge or x == -huge then fail("number", "must not be NaN or Inf") end
  if (x >= 1e14 or x <= -1e14) and x < 1e21 and x > -1e21 and floor(x) == x then
    buf:putf("%.0f", x)
  else
    buf:put(x)   -- as tostring: %.14g
  end
end

-- The length of t as a JSON array, or -1 when it is an object.
local function array_length(t)
  local max, items = 0, 0
  for k in next, t do
    if type(k) ~= "number" or k < 1 or floor(k) ~= k then return -1 end
    if k > max then max = k end
    items = items + 1
  end
  if max > 10 and max > items * 2 then return -1 end
  return max
end

local put_value

local function put_array(t, n, depth)
  if n == 0 then
    buf:put("[]")
    return
  end
  buf:put("[")
  put_value(t[1], depth)
  for i = 2, n do
    buf:put(",")
    put_value(t[i], depth)
  end
  buf:put("]")
end

local function put_key(k)
  local kt = type(k)
  if kt == "string" then
    put_string(k)
  elseif kt == "number" then
    if k ~= k or k == huge or k == -huge then fail("number", "must not be NaN or Inf") end
    buf:put('"', k, '"')
  else
    fail(kt, "table key must be a number or string")
  end
end

local function put_object(t, depth)
  local k, v = next(t)
  buf:put("{")
  put_key(k)
  buf:put(":")
  put_value(v, depth)
  k, v = next(t, k)
  while k ~= nil do
    buf:put(",")
    put_key(k)
    buf:put(":")
    put_value(v, depth)
    k, v = next(t, k)
  end
  buf:put("}")
end

function put_value(v, depth)
  local t = type(v)
  if t == "string" then
    put_string(v)
  elseif t == "number" then
    put_number(v)
  elseif t == "table" then
    if depth >= MAX_DEPTH then
      buf:reset()
      error(require("rage.errors").new("json.encode", "Cannot serialise, excessive nesting (" .. (depth + 1) .. ")"), 0)
    end
    local k = next(v)
    if k == nil then
      buf:put(getmetatable(v) == ARRAY and "[]" or "{}")
    elseif type(k) == "string" then
      put_object(v, depth + 1)
    else
      local n = array_length(v)
      if n < 0 then put_object(v, depth + 1) else put_array(v, n, depth + 1) end
    end
  elseif t == "boolean" then
    buf:put(v and "true" or "false")
  elseif v == nil or v == null then
    buf:put("null")
  else
    fail(t, "type not supported")
  end
end

-- Encodes `value`; raises a json.encode error for values JSON cannot hold (functions, cycles).
function _M.encode(value)
  buf:reset()
  put_value(value, 0)
  local s = buf:tostring()
  if #buf > KEEP then buf:free() end
  return s
end

-- Decodes `text`; returns nil and a message for invalid JSON.
_M.decode = cjson.decode

return _M
