-- rage.log: leveled logging through the core's logger, so Lua and C lines share one stream.
--
--   rage.log.info("user ", id, " signed in")   -- arguments are concatenated with tostring
--   rage.log.level("debug")                    -- change the level at run time

local core = require("rage.core")

local tostring, select, concat, type = tostring, select, table.concat, type
local core_log, core_level = core.log, core.log_level

local _M = {}

local LEVELS = {debug = core.DEBUG, info = core.INFO, warn = core.WARN, error = core.ERROR}
_M.LEVELS = LEVELS

local function format(...)
  local n = select("#", ...)
  if n == 1 then return tostring((...)) end
  local parts = {...}
  for i = 1, n do parts[i] = tostring(parts[i]) end
  return concat(parts)
end

-- The level is cached here; log.level() is the one way to change it after boot.
local current = core_level()

local function writer(level)
  return function(...)
    if level >= current then core_log(level, format(...)) end
  end
end

_M.debug = writer(LEVELS.debug)
_M.info = writer(LEVELS.info)
_M.warn = writer(LEVELS.warn)
_M.error = writer(LEVELS.error)

-- Returns the current level's name; with a name, sets it first.
function _M.level(name)
  if name ~= nil then
    local n = LEVELS[name]
    if not n then error("rage.log.level: unknown level '" .. tostring(name) .. "' (debug, info, warn, error)", 2) end
    core_level(n)
    current = n
  end
  local cur = current
  for k, v in pairs(LEVELS) do if v == cur then return k end end
end

function _M.enabled(name)
  return LEVELS[name] >= current
end

return _M
