-- rage.leaf: the core's leaf functions through the FFI, for the per-request hot path.
--
-- A classic C function ends the JIT trace that calls it and pays for a stack of Lua API calls;
-- a call through an FFI function pointer is compiled into the trace. These functions only read
-- core state: they never yield, raise or call back into Lua (core/src/bind.c, "leaf functions
-- for the FFI", defines the same struct). Request objects that are not the core's userdata (the
-- stand-ins of unit specs) go through their methods as before.

local ffi = require("ffi")
local core = require("rage.core")

local type, error, next = type, error, next
local ffi_string = ffi.string

ffi.cdef[[
typedef struct {
  const char *name;
  size_t name_len;
  const char *value;
  size_t value_len;
} rage_leaf_header_t;
typedef struct {
  int version;
  double (*now)(const void *rt);
  double (*fiber_id)(const void *rt);
  int (*responded)(void *box);
  const char *(*header)(void *box, const char *name, size_t len, size_t *value_len);
  int (*respond)(void *box, int status, const rage_leaf_header_t *headers, size_t nheaders,
                 const char *body, size_t body_len, const char **err);
  size_t (*json_plain)(const char *s, size_t len);
  size_t (*json_quote)(const char *s, size_t len, uint8_t *out);
} rage_leaf_api_t;
]]

local api = ffi.cast("const rage_leaf_api_t *", core.leaf)
if api.version ~= 2 then error("rage.leaf: the core's leaf API is version " .. api.version .. ", expected 2", 0) end
local rt = ffi.cast("const void *", core.runtime)   -- a cdata: a light userdata argument is not compiled
local value_len = ffi.new("size_t[1]")
local scratch = ffi.new("rage_leaf_header_t[4]")   -- respond() fills it, the core copies it
local err_out = ffi.new("const char *[1]")
local LEAF_FINISHED = 1

local FINISHED = "this request has finished; its object is no longer usable"

local _M = {}

-- For rage.json's encoder, called directly: json_plain(s, #s) is the length of the prefix of s
-- that JSON needs no escapes for; json_quote(s, #s, out) writes s quoted and escaped to out
-- (room for 6 * #s + 2 bytes) and returns its length.
_M.json_plain = api.json_plain
_M.json_quote = api.json_quote

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

-- Copies one header into the scratch array; false when it is not a plain string pair.
local function put(i, k, v)
  if type(k) ~= "string" or type(v) ~= "string" then return false end
  local h = scratch[i]
  h.name, h.name_len, h.value, h.value_len = k, #k, v, #v
  return true
end

-- box:respond(status, headers, body). The header table is copied into a C array here, which is
-- what the classic binding does with a dozen API calls. The copy is unrolled for up to four
-- headers: a loop here would end the JIT trace of the whole request path. Anything out of the
-- ordinary (more headers, a list of values, a value that is not a string, a request handed in
-- by a host) goes through box:respond itself, which also raises the same errors for misuse.
function _M.respond(box, status, headers, body)
  if type(box) ~= "userdata" or type(status) ~= "number" or type(headers) ~= "table" then
    return box:respond(status, headers, body)
  end
  if body == nil then body = "" elseif type(body) ~= "string" then return box:respond(status, headers, body) end
  local n = 0
  local k, v = next(headers)
  if k ~= nil then
    if not put(0, k, v) then return box:respond(status, headers, body) end
    k, v = next(headers, k)
    n = 1
    if k ~= nil then
      if not put(1, k, v) then return box:respond(status, headers, body) end
      k, v = next(headers, k)
      n = 2
      if k ~= nil then
        if not put(2, k, v) then return box:respond(status, headers, body) end
        k, v = next(headers, k)
        n = 3
        if k ~= nil then
          if not put(3, k, v) or next(headers, k) ~= nil then return box:respond(status, headers, body) end
          n = 4
        end
      end
    end
  end
  local r = api.respond(box, status, scratch, n, body, #body, err_out)
  if r == 0 then return end
  if r == LEAF_FINISHED then error(FINISHED, 2) end
  if r > 0 then return box:respond(status, headers, body) end
  error(ffi_string(err_out[0]), 0)
end

-- box:respond(status, {["content-type"] = content_type}, body) without the table: the response
-- of an action that set no other header. `content_type` may be nil (no header at all).
function _M.respond_type(box, status, content_type, body)
  if body == nil then body = "" end
  if type(box) ~= "userdata" or type(status) ~= "number" or type(body) ~= "string" or
     (content_type ~= nil and type(content_type) ~= "string") then
    return box:respond(status, {["content-type"] = content_type}, body)
  end
  local n = 0
  if content_type ~= nil then
    put(0, "content-type", content_type)
    n = 1
  end
  local r = api.respond(box, status, scratch, n, body, #body, err_out)
  if r == 0 then return end
  if r == LEAF_FINISHED then error(FINISHED, 2) end
  if r > 0 then return box:respond(status, {["content-type"] = content_type}, body) end
  error(ffi_string(err_out[0]), 0)
end

return _M
