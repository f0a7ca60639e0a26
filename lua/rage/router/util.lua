-- rage.router.util: what every router module shares.
--
-- Misuse of the router (a bad pattern, an unknown option, a url_for without a required param) is
-- an error at the line of the routes file or the application code that made it, however deep
-- into the router modules the call went. Every router module registers its own source here as it
-- loads, so misuse() can skip all of their stack frames and no others.

local error, setmetatable = error, setmetatable
local getinfo = debug.getinfo

local _M = {}

-- The byte "/".
_M.SLASH = 47

-- Option tables and scope frames that have nothing to say share this one, which must stay empty.
_M.EMPTY = setmetatable({}, {__newindex = function() error("read-only table", 2) end})

local OWN = {[getinfo(1, "S").source] = true}

-- Called once by each router module at load: marks the caller's source file as the router's own.
function _M.own()
  OWN[getinfo(2, "S").source] = true
end

-- Raises "rage.router: msg" at the first stack frame outside the router modules.
function _M.misuse(msg)
  local level = 2
  while true do
    local info = getinfo(level, "S")
    if info == nil or not OWN[info.source] then break end
    level = level + 1
  end
  error("rage.router: " .. msg, level)
end

return _M
