-- rage.dispatcher: the function the core runs, in a fresh fiber, for every request.
--
--   handler(box, method, path, query)
-- routes the request, runs the controller action with its callbacks, and sends the response
-- through the core. An error nobody rescued answers 500 with a generic body; the traceback goes
-- to the log only. The same handler serves sockets, requests handed in by an embedding host and
-- rage.test's in-process requests, so all three exercise one path.

local request = require("rage.request")
local params_mod = require("rage.params")
local controller = require("rage.controller")
local errors = require("rage.errors")
local log = require("rage.log")
local core = require("rage.core")
local async = require("rage.async")
local middleware = require("rage.middleware")
local leaf = require("rage.leaf")

local xpcall, traceback, type, tostring, concat, format = xpcall, debug.traceback, type, tostring, table.concat, string.format
local pairs, find = pairs, string.find
local new_request = request.new
local parse_params = params_mod.parse
local clock = core.clock
local floor = math.floor
local responded, respond = leaf.responded, leaf.respond

local _M = {}

local PLAIN = {["content-type"] = "text/plain; charset=utf-8"}

-- Errors that a controller with rescue_from handlers raised again already carry the stack
-- where they happened (see controller.compile); others get it here.
local function on_error(err)
  if type(err) == "table" then
    if err.kind == "cancelled" then return err end
    err.traceback = err.traceback or traceback(tostring(err), 2)
    return err
  end
  err = tostring(err)
  if find(err, "\nstack traceback:\n", 1, true) then return err end
  return traceback(err, 2)
end

-- self.params: the query string, then a form body over it, then the path parameters over
-- both (as Rails: a query cannot replace the :id the route matched).
-- Request params: query < body (form or JSON object) < path, as in Rails.
local function merge_params(req, path_params)
  local qs = req.query_string
  local body = req.method ~= "GET" and req.method ~= "HEAD" and req:body_params()
  if not qs and not body then return path_params end
  local merged = parse_params(qs)
  if body then
    for k, v in pairs(body) do merged[k] = v end
  end
  for k, v in pairs(path_params) do merged[k] = v end
  return merged
end

local function fail(req, status, message, headers)
  local box = req.box
  if box:responded() then return end
  local h = {["content-type"] = PLAIN["content-type"]}
  if headers then
    for k, v in pairs(headers) do h[k] = v end
  end
  box:respond(status, req:with_headers(h), message)
end

-- Binds the compiled runner of every route to the route table, so matching a route gives the
-- code to run without another lookup.
function _M.prepare(router, controllers)
  for _, route in ipairs(router:routes()) do
    if not route.handler then
      local class = controllers[route.controller]
      if not class then
        error(("route %s %s points to controller '%s', which is not defined (expected app/controllers/%s.lua)")
          :format(route.verb, route.path, tostring(route.controller), tostring(route.controller)), 0)
      end
      local ok, run = pcall(controller.compile, class, route.action)
      if not ok then
        error(("route %s %s: %s"):format(route.verb, route.path, tostring(run)), 0)
      end
      route.run = run
    end
  end
end

function _M.new(app)
  local router = app.router
  local match = router.match
  local uses_host = router.uses_host

  local function serve(req)
    local box = req.box
    local host = uses_host and box:header("host") or nil
    local route, params = match(router, req.method, req.path, host)
    if not route then
      if params then
        req.status = 405
        return fail(req, 405, "Method Not Allowed\n", {allow = concat(params, ", ")})
      end
      req.status = 404
      return fail(req, 404, "Not Found\n")
    end
    req.route = route
    local run = route.run
    if run then
      local c = run(req, merge_params(req, params))
      req.status = c.status
      if responded(box) then return end
      if c.__rendered then
        respond(box, c.status, req:with_headers(c.headers), c.body)
        req.status = c.status
      else
        -- An action that renders nothing answers 204, as a Rails API controller does.
        box:respond(204, req:with_headers(c.headers), "")
        req.status = 204
      end
      return
    end
    -- A Lua handler (mount or function target): handler(req, params) -> status, headers, body
    local h = route.handler
    local status, headers, body
    if type(h) == "function" then
      status, headers, body = h(req, params)
    else
      status, headers, body = h:call(req, params)
    end
    if status and not responded(box) then
      respond(box, status, req:with_headers(headers or {}), body or "")
      req.status = status
    end
  end

  local chain = middleware.compose(app.middleware or {}, serve)

  return function(box, method, path, query)
    local t0 = log.enabled("info") and clock()
    local req = new_request(box, method, path, query, app)
    local ok, err = xpcall(chain, on_error, req)
    async.end_scope()
    if not ok then
      if errors.is(err, "cancelled") then
        if req.id then log.bind_request_id(nil) end
        return
      end
      -- As in Rails, an error nobody rescued discards the cookies and session changes.
      req.cookie_jar = nil
      local status = type(err) == "table" and type(err.status) == "number" and err.status or 500
      req.status = status
      if status >= 500 then
        log.error(method, " ", path, " [", req.id or "-", "] failed: ", type(err) == "table" and (err.traceback or tostring(err)) or err)
        fail(req, status, status == 503 and "Service Unavailable\n" or "Internal Server Error\n")
      else
        fail(req, status, (err.message or "Error") .. "\n")
      end
    end
    local after = req.after_response
    if after then
      for i = 1, #after do
        local aok, aerr = xpcall(after[i], on_error)
        if not aok and not errors.is(aerr, "cancelled") then
          log.error(method, " ", path, " [", req.id or "-", "] after_response failed: ",
            type(aerr) == "table" and (aerr.traceback or tostring(aerr)) or aerr)
        end
      end
    end
    local cleanup = req.cleanup
    if cleanup then
      for i = 1, #cleanup do pcall(cleanup[i]) end
    end
    if t0 then
      local route = req.route
      local action = route and (route.controller and (route.controller .. "#" .. route.action) or "handler") or "-"
      local ms = (clock() - t0) * 1000
      if log.format() == "json" then
        log.event("info", "request", {method = method, path = path, action = action,
          status = req.status or 0, duration_ms = floor(ms * 100 + 0.5) / 100})
      else
        log.info(format("%s %s -> %s %d in %.2fms", method, path, action, req.status or 0, ms))
      end
    end
    if req.id then log.bind_request_id(nil) end
  end
end

return _M
