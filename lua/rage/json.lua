-- rage.json: JSON through lua-cjson, with rage.null for JSON null.
--
-- An empty Lua table encodes as {}. A table marked with rage.json.array(t) encodes as an array,
-- [] when empty (database rows are marked this way). lua-cjson has no array marker, so encode()
-- looks for empty marked tables only when the output contains "{}", which keeps the common
-- case at one cjson call and one string search.
--
-- lua-cjson 2.1.0 writes numbers with at most 14 significant digits, so an id such as
-- 1234567890123456 would come out as 1.2345678901235e+15. When the output has an exponent,
-- encode() writes integers below 1e21 in full digits instead (as JavaScript does).

local cjson = require("cjson.safe")
local cjson_raise = require("cjson")

local setmetatable, getmetatable, type, pairs, next, pcall, error = setmetatable, getmetatable, type, pairs, next, pcall, error
local find, gsub, format, floor, abs = string.find, string.gsub, string.format, math.floor, math.abs

local _M = {}

_M.null = cjson.null
cjson.encode_sparse_array(true)
cjson_raise.encode_sparse_array(true)

local ARRAY = {__name = "rage.json.array"}
local SENTINEL = "\0rage-empty-array\0"
local SENTINEL_JSON = "\"\\u0000rage%-empty%-array\\u0000\""   -- a pattern: '-' is escaped
local INT_MARK = "\0rage-int:"
local INT_JSON = "\"\\u0000rage%-int:(%-?%d+)\\u0000\""

-- Marks `t` (or a new table) as a JSON array. Returns it.
function _M.array(t)
  return setmetatable(t or {}, ARRAY)
end

function _M.is_array(t)
  return getmetatable(t) == ARRAY
end

local function has_empty_array(v, depth)
  if depth > 100 then return false end
  if getmetatable(v) == ARRAY and next(v) == nil then return true end
  for _, x in pairs(v) do
    if type(x) == "table" and has_empty_array(x, depth + 1) then return true end
  end
  return false
end

local function is_big_int(x)
  return x == floor(x) and abs(x) >= 1e14 and abs(x) < 1e21
end

local function substitute(v, depth)
  if getmetatable(v) == ARRAY and next(v) == nil then return SENTINEL end
  if depth > 100 then return v end
  local copy = {}
  for k, x in pairs(v) do
    local t = type(x)
    if t == "table" then
      x = substitute(x, depth + 1)
    elseif t == "number" and is_big_int(x) then
      x = INT_MARK .. format("%.0f", x) .. "\0"
    end
    copy[k] = x
  end
  return copy
end

local encode, safe_encode = cjson_raise.encode, cjson.encode

-- Encodes `value`; raises a json.encode error for values JSON cannot hold (functions, cycles).
-- cjson.safe's encode returns nil and the message instead of raising: called directly rather
-- than under pcall, the C call does not end the JIT trace of the request path (LuaJIT stitches
-- a new trace after a C function called from Lua, never after one called from pcall).
function _M.encode(value)
  local s, err = safe_encode(value)
  if s == nil then error(require("rage.errors").new("json.encode", err), 2) end
  local t = type(value)
  if t == "table" then
    if find(s, "e+", 1, true) or (find(s, "{}", 1, true) and has_empty_array(value, 0)) then
      s = gsub(gsub(encode(substitute(value, 0)), SENTINEL_JSON, "[]"), INT_JSON, "%1")
    end
  elseif t == "number" and is_big_int(value) then
    s = format("%.0f", value)
  end
  return s
end

-- Decodes `text`; returns nil and a message for invalid JSON.
_M.decode = cjson.decode

return _M
