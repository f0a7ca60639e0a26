-- rage.fiber: waiting without blocking, and coroutine.* that keeps working inside fibers.
--
-- Each request runs in a fiber (a coroutine the C scheduler owns). A waiting C function yields
-- a private marker to the scheduler. When the wait happens inside a coroutine the application
-- created itself, the wrappers below pass the marker up to the fiber and hand the results back
-- down, so user coroutines and scheduler waits compose.

local core = require("rage.core")
local errors = require("rage.errors")

local co_create, co_resume, co_yield, co_status = coroutine.create, coroutine.resume, coroutine.yield, coroutine.status
local type, error = type, error
local core_sleep = core.sleep
local SUSPEND = core.SUSPEND

local _M = {}

local function pass(co, ok, first, ...)
  if ok and first == SUSPEND and co_status(co) == "suspended" then
    -- The scheduler's wait, from inside a user coroutine: suspend this level too, then give
    -- the completion's results to the waiting C function.
    return pass(co, co_resume(co, co_yield(SUSPEND)))
  end
  return ok, first, ...
end

local function resume(co, ...)
  return pass(co, co_resume(co, ...))
end

local function unwrap(ok, ...)
  if not ok then error((...), 0) end
  return ...
end

local function wrap(f)
  local co = co_create(f)
  return function(...)
    return unwrap(resume(co, ...))
  end
end

-- Installs the wrappers into the global coroutine table (once per Lua state).
function _M.install()
  if coroutine.resume == resume then return end
  coroutine.resume = resume
  coroutine.wrap = wrap
end

-- Suspends the calling fiber for `seconds` (0 yields to other fibers and resumes next tick).
function _M.sleep(seconds)
  if type(seconds) ~= "number" or seconds ~= seconds or seconds < 0 or seconds > 1e9 then
    error("rage.sleep: seconds must be a number from 0 to 1e9", 2)
  end
  local ok, kind, msg = core_sleep(seconds)
  if not ok then errors.raise(kind, msg, nil, 2) end
end

-- Raises the error that a failed wait returned (nil, kind, message); passes results through.
function _M.check(ok, ...)
  if ok == nil then
    local kind, msg = ...
    errors.raise(kind, msg, nil, 2)
  end
  return ok, ...
end

return _M
