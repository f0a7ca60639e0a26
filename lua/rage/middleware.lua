-- rage.middleware: the ordered stack every request passes through before the router.
--
-- A middleware is function(req, nxt): it may answer the request itself (req.box:respond, or
-- rage.static) or call nxt(req) to go on. It adds response headers with req:add_header(), which
-- every answer includes. The stack is composed once at boot into plain function calls, so a
-- request allocates nothing for it. Built in, in this order: CORS (when configured), static
-- files from public/ (when the folder exists), then the app's own (config.middleware). Request
-- ids are the server's (see Request:request_id).

local core = require("rage.core")

local type, error, tostring, lower, concat = type, error, tostring, string.lower, table.concat

local _M = {}

-- Builds f(req) = mws[1](req, mws[2](req, ... final(req))).
function _M.compose(mws, final)
  local fn = final
  for i = #mws, 1, -1 do
    local mw, nxt = mws[i], fn
    if type(mw) ~= "function" then error("middleware #" .. i .. " is not a function", 2) end
    fn = function(req) return mw(req, nxt) end
  end
  return fn
end

-- ---- CORS -----------------------------------------------------------------------------------

local function list(v, default)
  if v == nil then return default end
  if type(v) == "string" then return {v} end
  return v
end

-- cors{origins = {"https://app.example"} or "*", methods =, headers =, expose =,
--      credentials = false, max_age = 600}
function _M.cors(opts)
  opts = opts or {}
  local origins = list(opts.origins, {})
  local any = false
  local allowed = {}
  for _, o in ipairs(origins) do
    if o == "*" then any = true else allowed[lower(o)] = true end
  end
  if any and opts.credentials then
    error("cors: credentials cannot be allowed for every origin; list the origins", 2)
  end
  local methods = concat(list(opts.methods, {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}), ", ")
  local allow_headers = opts.headers and concat(list(opts.headers), ", ")
  local expose = opts.expose and concat(list(opts.expose), ", ")
  local max_age = tostring(opts.max_age or 600)
  return function(req, nxt)
    local origin = req.box:header("origin")
    if not origin then return nxt(req) end
    local ok = any or allowed[lower(origin)]
    req:add_header("vary", "Origin")
    if not ok then return nxt(req) end
    local allow_origin = any and "*" or origin
    local preflight = req.method == "OPTIONS" and req.box:header("access-control-request-method")
    if preflight then
      local h = {
        ["access-control-allow-origin"] = allow_origin,
        ["access-control-allow-methods"] = methods,
        ["access-control-allow-headers"] = allow_headers or req.box:header("access-control-request-headers"),
        ["access-control-max-age"] = max_age,
        vary = "Origin",
      }
      if opts.credentials then h["access-control-allow-credentials"] = "true" end
      req.status = 204
      req:respond(204, h, "")
      return
    end
    req:add_header("access-control-allow-origin", allow_origin)
    if opts.credentials then req:add_header("access-control-allow-credentials", "true") end
    if expose then req:add_header("access-control-expose-headers", expose) end
    return nxt(req)
  end
end

-- ---- the default stack ----------------------------------------------------------------------

-- The built-in middleware, which all go on with a tail call (`return nxt(req)`): nothing of
-- theirs is left on the stack below the route's code (see rage.dispatcher).
local tail_calling = setmetatable({}, {__mode = "k"})

function _M.tail_calling(mw)
  return tail_calling[mw] == true
end

function _M.stack(app)
  local config = app.config
  local mws = {}
  if config.cors then mws[#mws + 1] = _M.cors(config.cors) end
  if config.static ~= false then
    local dir = type(config.static) == "table" and config.static.dir or (app.dir .. "/public")
    if core.stat(dir) == "directory" then
      local static = require("rage.static")
      mws[#mws + 1] = static.middleware(dir, type(config.static) == "table" and config.static or nil)
    end
  end
  for i = 1, #mws do tail_calling[mws[i]] = true end
  local user = config.middleware
  if user ~= nil then
    if type(user) ~= "table" then error("config.middleware must be a list of functions", 0) end
    for i, mw in ipairs(user) do
      if type(mw) ~= "function" then
        error("config.middleware[" .. i .. "] must be a function(req, nxt)", 0)
      end
      mws[#mws + 1] = mw
    end
  end
  return mws
end

return _M
