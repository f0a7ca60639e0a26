-- rage.errors: error objects with a stable dotted kind.
--
-- Framework calls that fail raise a table {kind = "db.unique_violation", message = "..."}; its
-- __tostring gives "kind: message" so an unhandled one still prints readably. rescue_from and
-- the helpers below match a kind exactly or by prefix ("db" matches "db.timeout").

local setmetatable, getmetatable, type, error, tostring = setmetatable, getmetatable, type, error, tostring
local sub = string.sub

local _M = {}

local Error = {}
Error.__index = Error
Error.__tostring = function(e)
  return e.kind .. ": " .. tostring(e.message)
end

local function check_kind(kind, level)
  if type(kind) ~= "string" or kind == "" then
    error("rage.error: the kind must be a non-empty string such as \"db.timeout\", not " .. tostring(kind),
      level + 1)
  end
end

function _M.new(kind, message, fields)
  check_kind(kind, 2)
  local e = fields or {}
  e.kind = kind
  e.message = message or kind
  return setmetatable(e, Error)
end

-- Raises a new error object. `level` works as for error(): 1 is the caller of raise.
function _M.raise(kind, message, fields, level)
  check_kind(kind, 2)
  error(_M.new(kind, message, fields), (level or 1) + 1)
end

function _M.is(err, kind)
  if type(err) ~= "table" or getmetatable(err) ~= Error then return false end
  if kind == nil then return true end
  local k = err.kind
  return k == kind or (#k > #kind and sub(k, 1, #kind) == kind and sub(k, #kind + 1, #kind + 1) == ".")
end

-- The kind of any error value: an error object's kind, or "lua" for strings and others.
function _M.kind(err)
  if type(err) == "table" and getmetatable(err) == Error then return err.kind end
  return "lua"
end

return _M
