-- rage.leaf: the core's leaf functions through the FFI, for the per-request hot path.
--
-- A classic C function ends the JIT trace that calls it and pays for a stack of Lua API calls;
-- a call through an FFI function pointer is compiled into the trace. These functions only read
-- core state: they never yield, raise or call back into Lua (core/src/bind.c, "leaf functions
-- for the FFI", defines the same struct). Request objects that are not the core's userdata (the
-- stand-ins of unit specs) go through their methods as before.

local ffi = require("ffi")
local core = require("rage.core")

local type, error = type, error
local ffi_string = ffi.string

ffi.cdef[[
typedef struct {
  int version;
  double (*now)(const void *rt);
  double (*fiber_id)(const void *rt);
  int (*responded)(void *box);
  const char *(*header)(void *box, const char *name, size_t len, size_t *value_len);
} rage_leaf_api_t;
]]

local api = ffi.cast("const rage_leaf_api_t *", core.leaf)
local rt = ffi.cast("const void *", core.runtime)   -- a cdata: a light userdata argument is not compiled
local value_len = ffi.new("size_t[1]")

local FINISHED = "this request has finished; its object is no longer usable"

local _M = {}

-- The loop's cached time in seconds, as core.now().
function _M.now()
  return api.now(rt)
end

-- The running fiber as a number (0 outside fibers): a table key that allocates nothing.
function _M.fiber_id()
  return api.fiber_id(rt)
end

-- box:responded()
function _M.responded(box)
  if type(box) ~= "userdata" then return box:responded() end
  local r = api.responded(box)
  if r < 0 then error(FINISHED, 2) end
  return r == 1
end

-- box:header(name): the first value of the header `name` (any case), or nil.
function _M.header(box, name)
  if type(box) ~= "userdata" then return box:header(name) end
  local p = api.header(box, name, #name, value_len)
  if p == nil then
    if api.responded(box) < 0 then error(FINISHED, 2) end
    return nil
  end
  return ffi_string(p, value_len[0])
end

return _M
