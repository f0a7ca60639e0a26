-- rage.dispatcher: the function the core runs, in a fiber, for every request.
--
--   local handler, job = dispatcher.new(app)
--   handler(box, method, path, query)
-- routes the request, runs the controller action with its callbacks, and sends the response
-- through the core. An error nobody rescued answers 500 with a generic body; the traceback goes
-- to the log only. `job` is the same request path as a fiber job that serves request after
-- request (see below): the core runs it for sockets and for requests handed in by an embedding
-- host. rage.test's in-process requests, mounted apps and the development reloader call
-- `handler`. Both share every step but the protected call.

local request = require("rage.request")
local controller = require("rage.controller")
local errors = require("rage.errors")
local log = require("rage.log")
local core = require("rage.core")
local async = require("rage.async")
local middleware = require("rage.middleware")
local leaf = require("rage.leaf")

local xpcall, traceback, type, tostring, concat, format = xpcall, debug.traceback, type, tostring, table.concat, string.format
local pairs, ipairs, find = pairs, ipairs, string.find
local clock = core.clock
local floor = math.floor
local responded, respond, respond_type = leaf.responded, leaf.respond, leaf.respond_type
local response_headers = controller.response_headers
local yield, IDLE4 = coroutine.yield, core.IDLE4
local UNSET = request.UNSET
local getinfo, getlocal = debug.getinfo, debug.getlocal

local _M = {}

local PLAIN = {["content-type"] = "text/plain; charset=utf-8"}

-- Errors that a controller with rescue_from handlers raised again already carry the stack
-- where they happened (see controller.compile); others get it here, from `level` (the
-- function that raised, seen from here).
local function with_stack(err, level)
  if type(err) == "table" then
    if err.kind == "cancelled" then return err end
    err.traceback = err.traceback or traceback(tostring(err), level)
    return err
  end
  err = tostring(err)
  if find(err, "\nstack traceback:\n", 1, true) then return err end
  return traceback(err, level)
end

local function on_error(err)
  local e = with_stack(err, 3)   -- not a tail call: the level counts this frame
  return e
end

-- Set by an error handler (on_failure) while an error unwinds, read as soon as the protected
-- call returns: nothing can run in between.
local pending_self, pending_rescue

-- The request's id for an error line, "-" when the request object has none.
local function request_id(req)
  local ok, id = pcall(req.request_id, req)
  return ok and id or "-"
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
      route.open_run = controller.compile_open(class, route.action)
    end
  end
end

function _M.new(app)
  local router = app.router
  local match = router.match
  local new_request = request.maker(app)
  local uses_host = router.uses_host

  -- With only built-in middleware (tail calls) between the dispatcher's protected call and
  -- the controller's runner, the runner goes without a protected call of its own: the
  -- dispatcher's error handler finds the instance on the stack and the dispatcher does the
  -- controller's rescue_from, then answers as serve would have (see controller.compile_open).
  local open = true
  for _, mw in ipairs(app.middleware or {}) do
    if not middleware.tail_calling(mw) then open = false end
  end

  -- Answers with what controller instance `c` rendered. A response with no header but its
  -- Content-Type (set by neither the action, a middleware nor the cookies) goes out without a
  -- header table.
  local function answer(req, c)
    local box = req.box
    req.status = c.status
    if responded(box) then return end
    if c.__rendered then
      if rawget(c, "headers") == nil and not req:adds_headers() then
        respond_type(box, c.status, c.__content_type, c.body)
      else
        respond(box, c.status, req:with_headers(response_headers(c)), c.body)
      end
      req.status = c.status
    else
      -- An action that renders nothing answers 204, as a Rails API controller does.
      box:respond(204, req:with_headers(response_headers(c)), "")
      req.status = 204
    end
  end

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
    req.path_params = params
    local run = open and route.open_run or route.run
    if run then
      return answer(req, run(req))
    end
    -- A Lua handler (mount or function target): handler(req, params) -> status, headers, body
    params = params or {}
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

  -- What follows every request, answered or failed: after_response hooks, cleanups, the log
  -- line. Runs unprotected, as the fiber's job: an error here ends the fiber.
  local function after(req, t0, method, path)
    local after_response = req.after_response
    if after_response then
      for i = 1, #after_response do
        local aok, aerr = xpcall(after_response[i], on_error)
        if not aok and not errors.is(aerr, "cancelled") then
          log.error(method, " ", path, " [", request_id(req), "] after_response failed: ",
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
  end

  -- A request whose middleware, route or action raised `err` (already through on_error).
  local function failed(req, err, t0, method, path)
    if errors.is(err, "cancelled") then return end
    -- As in Rails, an error nobody rescued discards the cookies and session changes.
    req.cookie_jar = nil
    local status = type(err) == "table" and type(err.status) == "number" and err.status or 500
    req.status = status
    if status >= 500 then
      log.error(method, " ", path, " [", request_id(req), "] failed: ", type(err) == "table" and (err.traceback or tostring(err)) or err)
      fail(req, status, status == 503 and "Service Unavailable\n" or "Internal Server Error\n")
    else
      fail(req, status, (err.message or "Error") .. "\n")
    end
    return after(req, t0, method, path)
  end

  local handler, serve_handed, serve_one

  -- The error handler's part for a controller runner without a protected call: when the
  -- error comes from inside one (below `stop`, the dispatcher's own frame) and its class
  -- rescues it, the instance and the handler are left in pending_self and pending_rescue and
  -- the error as it is; an error it does not rescue keeps the stack where it was raised, as
  -- the runner's own protected call would keep it. Levels: 1 is this function, 2 the handler
  -- that called it, 3 the function that raised.
  local function on_failure(err, stop)
    local self, h, found = controller.rescue_frame(err, 3, stop)
    if h then
      pending_self, pending_rescue = self, h
      return err
    end
    if found then
      if type(err) == "table" then
        if err.kind ~= "cancelled" then err.traceback = traceback(tostring(err), 3) end
        return err
      end
      return traceback(tostring(err), 3)
    end
    return with_stack(err, 3)
  end

  local function on_handler_error(err)
    local e = on_failure(err, serve_handed)
    return e
  end

  -- The controller's rescue_from for `err` in instance `c`, then the answer serve would give.
  local function recover(req, c, h, err)
    controller.rescue(c, h, err)
    return answer(req, c)
  end

  -- After a protected call failed with `err`: when the error handler left a controller rescue
  -- pending, runs it (protected); returns whether the request is answered and the error.
  local function try_rescue(req, err)
    local c, h = pending_self, pending_rescue
    if c == nil then return false, err end
    pending_self, pending_rescue = nil, nil
    return xpcall(recover, on_error, req, c, h, err)
  end

  -- The handler: one request, its own protected call. Requests handed to the app by another
  -- app (mount), by rage.test and by the development reloader come this way.
  serve_handed = function(box, method, path, query)
    local t0 = log.enabled("info") and clock()
    local req = new_request(box, method, path, query)
    local ok, err = xpcall(chain, on_handler_error, req)
    if not ok then ok, err = try_rescue(req, err) end
    async.end_scope()
    if not ok then return failed(req, err, t0, method, path) end
    return after(req, t0, method, path)
  end

  -- A request object that is not the core's (rage.test's) is served in a fiber the core does
  -- not know as a request's: its id is bound to the fiber for the log lines.
  handler = function(box, method, path, query)
    if type(box) == "userdata" or not box.request_id then
      return serve_handed(box, method, path, query)
    end
    local before = log.bind_request_id(box:request_id())
    serve_handed(box, method, path, query)
    log.bind_request_id(before)
  end

  -- The fiber job the server runs (app.boot installs it): the same request path, but one
  -- protected call serves request after request. When a request is done the job waits for the
  -- next one itself (next_job: it yields IDLE4, and the scheduler hands it the next request
  -- job and its four arguments as the results of that yield); the protected call returns only
  -- when a request fails or the fiber is wanted for another job. So no request returns into a
  -- protected call: LuaJIT cannot compile a return into one from a trace that did not enter
  -- it, and a trace stitched after a C call (a classic C function the action calls) would end
  -- there and leave the rest of the request to the interpreter. `cell` tells the error path
  -- which request failed.
  local job

  -- The request lives in serve_one's locals only, and that frame is gone before the fiber
  -- yields: a compiled request path whose tables never outlive it lets LuaJIT sink their
  -- allocations. The error handler finds the request on the stack (find_request, below).
  serve_one = function(box, method, path, query)
    local t0 = log.enabled("info") and clock()
    local req = new_request(box, method, path, query)
    chain(req)
    local done = req
    req = nil   -- from here on an error is not the request's: it ends the fiber (see job)
    async.end_scope()
    after(done, t0, method, path)
  end

  -- The next job of four arguments and its arguments, or nothing when the fiber is wanted for
  -- another kind of job. A function of its own with a fixed number of results, called from
  -- inside the loop below: LuaJIT then stitches the compiled loop around the yield, and after
  -- the resume the next request runs compiled at once, not in the interpreter.
  local function next_job()
    local j, box, method, path, query = yield(IDLE4)
    return j, box, method, path, query
  end

  -- Serves requests until the fiber is given another job (returned with its arguments).
  local function serve_fiber(cell, box, method, path, query)
    local j = job
    while j == job do
      serve_one(box, method, path, query)
      j, box, method, path, query = next_job()
    end
    return j, box, method, path, query
  end

  -- Records in `cell` the request (and its start time) of the serve_one frame an error went
  -- through, read from that frame's locals before the stack unwinds; nil outside a request.
  local function find_request(cell)
    cell.req, cell.t0 = nil, nil
    local level = 3
    while true do
      local info = getinfo(level, "f")
      if not info then return end
      if info.func == serve_one then
        for i = 1, 16 do
          local name, value = getlocal(level, i)
          if not name then return end
          if name == "req" then cell.req = value elseif name == "t0" then cell.t0 = value end
        end
        return
      end
      level = level + 1
    end
  end

  job = function(box, method, path, query)
    local cell = {req = UNSET, t0 = UNSET, on_error = UNSET}
    cell.on_error = function(err)
      find_request(cell)
      local e = on_failure(err, serve_one)
      return e
    end
    local j = job
    while j == job do
      local ok, a
      ok, a, box, method, path, query = xpcall(serve_fiber, cell.on_error, cell, box, method, path, query)
      if ok then
        j = a
      else
        local req = cell.req
        if req == nil then   -- outside a request's protected part: ends the fiber
          pending_self, pending_rescue = nil, nil
          error(a, 0)
        end
        cell.req = nil
        local answered, err = try_rescue(req, a)
        async.end_scope()
        if answered then
          after(req, cell.t0, req.method, req.path)
        else
          failed(req, err, cell.t0, req.method, req.path)
        end
        j, box, method, path, query = next_job()
      end
    end
    -- Another job of four arguments (a reloaded app's), run as the fiber body would run it,
    -- or none: the fiber goes back to the body's loop.
    if j ~= nil then return j(box, method, path, query) end
  end

  return handler, job
end

return _M
