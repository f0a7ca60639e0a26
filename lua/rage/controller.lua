-- rage.controller: Rails-shaped controllers.
--
--   local Todos = rage.controller("todos")           -- inherits from "application" if defined
--   Todos:before_action("find_todo", {only = {"show"}})
--   Todos:rescue_from("db.unique_violation", function(self, err) ... end)
--   function Todos:show() self:render{json = self.todo} end
--
-- A controller is a class table; each request gets a fresh instance whose lookups go to the
-- class (its metatable is the class's instance_mt, which also makes self.cookies and
-- self.session on first use). Callback chains are compiled once per action when the app boots (compile()), never
-- rebuilt per request. Rendering inside a before callback halts the chain, as in Rails.

local json = require("rage.json")
local errors = require("rage.errors")
local cookies = require("rage.cookies")
local session = require("rage.session")
local crypto = require("rage.crypto")

local setmetatable, getmetatable, rawget, rawset, type, pairs, ipairs, error, tostring, xpcall =
  setmetatable, getmetatable, rawget, rawset, type, pairs, ipairs, error, tostring, xpcall
local lower, concat, traceback = string.lower, table.concat, debug.traceback
local getinfo, getlocal = debug.getinfo, debug.getlocal
local json_encode = json.encode
local find, floor, sort = string.find, math.floor, table.sort
local new_jar, new_session = cookies.jar, session.new

local _M = {}

local registry = {}   -- name -> class
_M.registry = registry

-- Rails' status symbols, for render{status = "created"}.
local STATUS = {
  ok = 200, created = 201, accepted = 202, no_content = 204,
  moved_permanently = 301, found = 302, see_other = 303, not_modified = 304,
  temporary_redirect = 307, permanent_redirect = 308,
  bad_request = 400, unauthorized = 401, payment_required = 402, forbidden = 403,
  not_found = 404, method_not_allowed = 405, not_acceptable = 406, request_timeout = 408,
  conflict = 409, gone = 410, precondition_failed = 412, payload_too_large = 413,
  unsupported_media_type = 415, unprocessable_entity = 422, unprocessable_content = 422,
  too_many_requests = 429, internal_server_error = 500, not_implemented = 501,
  bad_gateway = 502, service_unavailable = 503, gateway_timeout = 504,
}
_M.STATUS = STATUS

local function status_code(s, level)
  if type(s) == "number" then
    if s < 100 or s > 999 or s % 1 ~= 0 then error("invalid status " .. tostring(s), level + 1) end
    return s
  end
  local code = STATUS[s]
  if not code then error("unknown status '" .. tostring(s) .. "'", level + 1) end
  return code
end
_M.status_code = status_code

-- The base class every controller inherits from.
local Base = {}
Base.__index = Base
Base.__name = "base"
Base.__callbacks = {}
Base.__rescuers = {}
_M.Base = Base

local base_methods = {}   -- names an action may not have

-- Response headers. The Content-Type is kept in self.__content_type, the others in
-- self.headers, a table made only when an action sets one: most responses carry nothing but
-- a content type, and go out without a header table at all (see rage.dispatcher).
local function put_header(self, name, value)
  if type(value) == "number" then value = tostring(value) end
  name = lower(name)
  if name == "content-type" then
    self.__content_type = value
  else
    self.headers[name] = value
  end
end

local function set_headers(self, headers)
  for k, v in pairs(headers) do put_header(self, k, v) end
end

-- The response headers of instance `self` as one table (a new one without other headers).
local function response_headers(self)
  local h = rawget(self, "headers") or {}
  local ct = self.__content_type
  if ct ~= nil then h["content-type"] = ct end
  return h
end
_M.response_headers = response_headers

-- render{json = v | plain = s | html = s | body = s, status = 200, headers = {...}, content_type = s}
function Base:render(opts)
  if self.__rendered then error("render or head was already called for this request", 2) end
  if type(opts) ~= "table" then error("render expects a table: render{json = ...}", 2) end
  local body, ctype
  local v = opts.json
  if v ~= nil then
    body, ctype = json_encode(v), "application/json; charset=utf-8"
  elseif opts.plain ~= nil then
    body, ctype = tostring(opts.plain), "text/plain; charset=utf-8"
  elseif opts.html ~= nil then
    body, ctype = tostring(opts.html), "text/html; charset=utf-8"
  elseif opts.body ~= nil then
    body, ctype = tostring(opts.body), "application/octet-stream"
  else
    body = ""
  end
  if opts.headers then set_headers(self, opts.headers) end
  if opts.content_type then
    self.__content_type = opts.content_type
  elseif ctype and not self.__content_type then
    self.__content_type = ctype
  end
  local status = opts.status
  self.status = status and status_code(status, 2) or 200
  self.body = body
  self.__rendered = true
end

-- head(status, headers): a response without a body.
function Base:head(status, headers)
  if self.__rendered then error("render or head was already called for this request", 2) end
  self.status = status_code(status or 200, 2)
  if headers then set_headers(self, headers) end
  self.body = ""
  self.__rendered = true
end

-- stream(fn, {status =, headers =, content_type =}): sends the body in chunks as fn(write)
-- calls write(data). Chunked on HTTP/1.1; write waits (without blocking others) while the
-- client is slow to read, and raises "closed" once the client has gone.
function Base:stream(fn, opts)
  if self.__rendered then error("render or head was already called for this request", 2) end
  if type(fn) ~= "function" then error("stream expects a function(write)", 2) end
  opts = opts or {}
  if opts.headers then set_headers(self, opts.headers) end
  self.__content_type = opts.content_type or self.__content_type or "text/plain; charset=utf-8"
  local box = self.request.box
  self.status = opts.status and status_code(opts.status, 2) or 200
  self.__rendered = true
  self.__streamed = true
  box:stream_start(self.status, self.request:with_headers(response_headers(self)))
  local function write(data)
    local ok, kind, msg = box:write(tostring(data))
    if not ok then errors.raise(kind, msg, nil, 2) end
  end
  fn(write)
  box:finish()
end

-- Runs fn(self) after the response has been sent, in the same fiber: work the client need not
-- wait for (it may wait itself: rage.sleep, queries, HTTP calls).
function Base:after_response(fn)
  if type(fn) ~= "function" then error("after_response expects a function", 2) end
  local me = self
  self.request:on_after_response(function() return fn(me) end)
end

-- send_file(path, {content_type =, disposition = "inline" | "attachment", filename =}): the
-- core sends the file (Range, ETag and 304 as for static files).
function Base:send_file(path, opts)
  if self.__rendered then error("render or head was already called for this request", 2) end
  if type(path) ~= "string" then error("send_file expects a file path", 2) end
  opts = opts or {}
  local static = require("rage.static")
  local core = require("rage.core")
  local real = core.realpath(path)
  if not real or core.stat(real) ~= "file" then
    errors.raise("controller.file_not_found", "send_file: no such file: " .. path, {status = 404}, 2)
  end
  self.__content_type = opts.content_type or static.content_type(opts.filename or real)
  if opts.disposition or opts.filename then
    local name = (opts.filename or real:match("[^/]+$")):gsub('[%c"\\]', "_")
    self.headers["content-disposition"] =
      (opts.disposition or "attachment") .. '; filename="' .. name .. '"'
  end
  self.__rendered = true
  self.__streamed = true
  self.status = 200
  static.send(self.request, real, self.request:with_headers(response_headers(self)))
end

-- url_for("photo", {id = 1}) -> "/photos/1": the app's named routes.
function Base:url_for(name, params)
  return self.request.app.router:url_for(name, params)
end

function Base:is_rendered()
  return self.__rendered == true
end

function Base:set_header(name, value)
  put_header(self, name, value)
end

-- redirect_to(url, {status = 302, allow_other_host = false})
function Base:redirect_to(url, opts)
  if type(url) ~= "string" then error("redirect_to expects a URL string", 2) end
  opts = opts or {}
  -- Browsers drop tabs inside URLs, so "/\t/evil.example" would reach another host.
  if url:find("[%z\1-\31\127]") then
    error("redirect_to: the URL contains CR, LF, NUL or another control character", 2)
  end
  -- Only paths on this host unless the caller asks for another host explicitly. The check
  -- reads the URL as a browser does: leading spaces dropped and '\' taken as '/'.
  local probe = url:gsub("^ +", ""):gsub("\\", "/")
  local other = probe:find("^%a[%w+.-]*:") or probe:sub(1, 2) == "//"
  if other and not opts.allow_other_host then
    local host = self.request:host()
    local target = probe:match("^%a[%w+.-]*://([^/?#]+)") or probe:match("^//([^/?#]+)")
    if not (host and target and lower(target) == lower(host)) then
      errors.raise("controller.unsafe_redirect",
        "redirect_to refused a redirect to another host (pass allow_other_host = true): " .. url, nil, 2)
    end
  end
  self:head(opts.status or 302, {location = url})
end

-- ---- session, tokens, conditional GET -----------------------------------------------------
-- self.cookies and self.session are rage.cookies and rage.session; Set-Cookie lines go out with
-- whatever response the action gives.

-- reset_session(): empties the session; its cookie is deleted as the response goes out.
function Base:reset_session()
  session.reset(self.request)
end

-- authenticate_with_token(fn, {realm = "Application"}): calls fn(token) with the request's
-- bearer token and returns what fn returns (who the token belongs to). Without a token, or when
-- fn returns nil or false, answers 401 with a "WWW-Authenticate: Bearer" challenge, which halts
-- a before_action chain, and returns nil. fn should compare secrets with crypto.secure_compare.
function Base:authenticate_with_token(fn, opts)
  if type(fn) ~= "function" then error("authenticate_with_token expects a function(token)", 2) end
  local realm = opts and opts.realm or "Application"
  if type(realm) ~= "string" or find(realm, '[%z\1-\31\127"\\]') then
    error("authenticate_with_token: the realm must be a string without quotes, '\\' or control characters", 2)
  end
  local token = self.request:bearer_token()
  if token then
    local who = fn(token)
    if who then return who end
  end
  if not self.__rendered then
    local challenge = 'Bearer realm="' .. realm .. '"' .. (token and ', error="invalid_token"' or "")
    self:render{plain = "Unauthorized\n", status = 401, headers = {["www-authenticate"] = challenge}}
  end
  return nil
end

-- A deterministic text for any value (table keys sorted), the source of a computed ETag.
local function etag_source(v, out, depth)
  local t = type(v)
  if t ~= "table" then
    out[#out + 1] = t .. ":" .. tostring(v) .. ";"
    return
  end
  if depth > 32 then error("is_stale: the etag value is nested too deeply", 0) end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  sort(keys, function(a, b)
    local ta, tb = type(a), type(b)
    if ta ~= tb then return ta < tb end
    if ta == "string" or ta == "number" then return a < b end
    return tostring(a) < tostring(b)
  end)
  out[#out + 1] = "{"
  for _, k in ipairs(keys) do
    etag_source(k, out, depth + 1)
    etag_source(v[k], out, depth + 1)
  end
  out[#out + 1] = "}"
end

-- is_stale{etag =, last_modified =, public = false}: Rails' stale?. Sets ETag and
-- Last-Modified (os.time()); when the request's If-None-Match (or, without it,
-- If-Modified-Since) shows the client's copy is current, answers 304 and returns false.
-- An etag that is already an entity tag ('"v1"', 'W/"v1"') is sent as given; any other value
-- (a string, number or table) gives a strong tag from the SHA-256 of its contents.
-- Cache-Control becomes "public" with public = true, else "max-age=0, private,
-- must-revalidate" unless the action set one.
local function conditional(self, opts, what, level)
  level = level + 1
  if type(opts) ~= "table" then
    error(what .. " expects a table: " .. what .. "{etag = ..., last_modified = ...}", level)
  end
  local etag, modified = opts.etag, opts.last_modified
  if etag == nil and modified == nil then error(what .. " needs etag or last_modified", level) end
  local h = self.headers
  if etag ~= nil then
    local t = type(etag)
    if t == "function" or t == "userdata" or t == "thread" or t == "cdata" then
      error(what .. ": etag must be a string, a number or a table", level)
    end
    if not (t == "string" and (find(etag, '^"[!#-~]*"$') or find(etag, '^W/"[!#-~]*"$'))) then
      local out = {}
      etag_source(etag, out, 0)
      etag = '"' .. crypto.hex(crypto.sha256(concat(out))) .. '"'
    end
    h.etag = etag
  end
  if modified ~= nil then
    if type(modified) ~= "number" or modified ~= modified then
      error(what .. ": last_modified must be a time (os.time())", level)
    end
    modified = floor(modified)
    h["last-modified"] = cookies.http_date(modified)
  end
  if opts.public then
    h["cache-control"] = "public"
  elseif not h["cache-control"] then
    h["cache-control"] = "max-age=0, private, must-revalidate"
  end
  if self.request:is_fresh(etag, modified) then
    self:head(304)
    return false
  end
  return true
end

function Base:is_stale(opts)
  return (conditional(self, opts, "is_stale", 2))
end

-- fresh_when{...}: the same without a result, for an action that renders only when stale:
-- `self:fresh_when{etag = post}; if not self:is_rendered() then self:render{...} end`.
function Base:fresh_when(opts)
  conditional(self, opts, "fresh_when", 2)
end


-- ---- class definition -------------------------------------------------------------------

local function copy(list)
  local t = {}
  for i, v in ipairs(list) do t[i] = v end
  return t
end

local function resolve_parent(parent)
  if parent == nil then
    return registry.application or Base
  end
  if type(parent) == "string" then
    local p = registry[parent]
    if not p then error("rage.controller: unknown parent controller '" .. parent .. "'", 3) end
    return p
  end
  if type(parent) == "table" and parent.__callbacks then return parent end
  error("rage.controller: the parent must be a controller or a controller name", 3)
end

function _M.define(name, parent)
  if type(name) ~= "string" or name == "" then
    error("rage.controller: a controller needs a name, e.g. rage.controller(\"todos\")", 2)
  end
  local p = (name == "application") and (parent and resolve_parent(parent) or Base) or resolve_parent(parent)
  local class = setmetatable({}, {__index = p})
  class.__index = class
  class.__name = name
  class.__parent = p
  class.__callbacks = copy(p.__callbacks)
  class.__rescuers = copy(p.__rescuers)
  registry[name] = class
  return class
end

-- Forgets every defined controller (used when an app is loaded again).
function _M.reset()
  for k in pairs(registry) do registry[k] = nil end
end

local function as_set(v, what, level)
  if v == nil then return nil end
  if type(v) == "string" then return {[v] = true} end
  if type(v) ~= "table" then error(what .. " must be an action name or a list of them", level + 1) end
  local s = {}
  for _, a in ipairs(v) do s[a] = true end
  return s
end

local CALLBACK_OPTS = {only = true, except = true, ["if"] = true, unless = true}

local function check_condition(v, name, kind, level)
  if v ~= nil and type(v) ~= "string" and type(v) ~= "function" then
    error(kind .. "_action: '" .. name .. "' must be a method name or a function", level + 1)
  end
end

local function add_callback(class, kind, fn, opts, level)
  if type(fn) ~= "string" and type(fn) ~= "function" then
    error(kind .. "_action expects a method name or a function", level + 1)
  end
  opts = opts or {}
  for k in pairs(opts) do
    if not CALLBACK_OPTS[k] then error(kind .. "_action: unknown option '" .. tostring(k) .. "'", level + 1) end
  end
  check_condition(opts["if"], "if", kind, level + 1)
  check_condition(opts.unless, "unless", kind, level + 1)
  class.__callbacks[#class.__callbacks + 1] = {
    kind = kind, fn = fn, only = as_set(opts.only, "only", level + 1),
    except = as_set(opts.except, "except", level + 1), cond = opts["if"], unless = opts.unless,
  }
end

function Base.before_action(class, fn, opts) add_callback(class, "before", fn, opts, 2) end
function Base.after_action(class, fn, opts) add_callback(class, "after", fn, opts, 2) end
function Base.around_action(class, fn, opts) add_callback(class, "around", fn, opts, 2) end

-- skip_before_action("name", {only = ...}): removes an inherited before callback, for the
-- listed actions or all of them.
function Base.skip_before_action(class, name, opts)
  opts = opts or {}
  local only = as_set(opts.only, "only", 2)
  local except = as_set(opts.except, "except", 2)
  local found = false
  for i, cb in ipairs(class.__callbacks) do
    if cb.kind == "before" and cb.fn == name then
      found = true
      local new = {}
      for k, v in pairs(cb) do new[k] = v end
      new.skip_only, new.skip_except = only, except
      new.skipped = not only and not except
      class.__callbacks[i] = new
    end
  end
  if not found then error("skip_before_action: no before_action named '" .. tostring(name) .. "'", 2) end
end

-- rescue_from("db.unique_violation", handler): handler(self, err) for errors whose kind is
-- `kind` or starts with `kind.`; "lua" matches plain Lua errors. Later declarations win.
function Base.rescue_from(class, kind, handler)
  if type(kind) ~= "string" then error("rescue_from expects an error kind such as \"db\"", 2) end
  if type(handler) ~= "function" and type(handler) ~= "string" then
    error("rescue_from expects a handler function or method name", 2)
  end
  class.__rescuers[#class.__rescuers + 1] = {kind = kind, handler = handler}
end

for k in pairs(Base) do base_methods[k] = true end

-- ---- compiled chains --------------------------------------------------------------------

local function applies(cb, action)
  if cb.skipped then return false end
  if cb.skip_only and cb.skip_only[action] then return false end
  if cb.skip_except and not cb.skip_except[action] then return false end
  if cb.only and not cb.only[action] then return false end
  if cb.except and cb.except[action] then return false end
  return true
end

local function method_of(class, fn, what)
  if type(fn) == "function" then return fn end
  local m = class[fn]
  if type(m) ~= "function" then
    error(("controller '%s': %s refers to a missing method '%s'"):format(class.__name, what, fn), 0)
  end
  return m
end

-- Builds the function that runs `action` with its callbacks for one instance.
local function compile_action(class, action)
  local act = class[action]
  if base_methods[action] then
    error(("controller '%s': '%s' is a controller method and cannot be an action"):format(class.__name, action), 0)
  end
  if type(act) ~= "function" then
    error(("controller '%s' has no action '%s'"):format(class.__name, action), 0)
  end
  local befores, afters, arounds = {}, {}, {}
  for _, cb in ipairs(class.__callbacks) do
    if applies(cb, action) then
      local entry = {fn = method_of(class, cb.fn, cb.kind .. "_action"), cond = cb.cond, unless = cb.unless}
      if cb.kind == "before" then befores[#befores + 1] = entry
      elseif cb.kind == "after" then afters[#afters + 1] = entry
      else arounds[#arounds + 1] = entry end
    end
  end
  local function allowed(self, e)
    local c, u = e.cond, e.unless
    if c ~= nil then
      if type(c) == "string" then c = self[c](self) else c = c(self) end
      if not c then return false end
    end
    if u ~= nil then
      if type(u) == "string" then u = self[u](self) else u = u(self) end
      if u then return false end
    end
    return true
  end
  -- The action wrapped by around callbacks, innermost last. Each level returns whether the
  -- action ran: an around callback that does not call it halts the chain, after callbacks too.
  local core = act
  if #arounds > 0 then
    core = function(self)
      act(self)
      return true
    end
  end
  for i = #arounds, 1, -1 do
    local e, inner = arounds[i], core
    core = function(self)
      if not allowed(self, e) then return inner(self) end
      local ran = false
      e.fn(self, function() ran = inner(self) end)
      return ran
    end
  end
  local nb, na, nr = #befores, #afters, #arounds
  if nb == 0 and na == 0 and nr == 0 then return act end
  return function(self)
    for i = 1, nb do
      local e = befores[i]
      if allowed(self, e) then
        e.fn(self)
        if self.__rendered then return end  -- rendering in a before callback halts the chain
      end
    end
    if not core(self) and nr > 0 then return end
    for i = 1, na do
      local e = afters[i]
      if allowed(self, e) then e.fn(self) end
    end
  end
end

-- Finds the rescue handler for `err` (latest declaration first), or nil.
local function rescuer(class, err)
  local list = class.__rescuers
  for i = #list, 1, -1 do
    local r = list[i]
    if errors.is(err, r.kind) or (r.kind == "lua" and not errors.is(err)) then return r.handler end
  end
end

-- UNSET is nil; as a variable (not the constant nil) it keeps the keys of these placeholder
-- fields in LuaJIT's table template, so setting them later inserts no key (see rage.request).
local UNSET = nil

-- The metatable of class's instances: lookups go to the class, except self.params,
-- self.cookies and self.session, which are made on first use and then kept in the instance
-- (many actions never touch them; making the cookie jar and the session cost a W1 request
-- ~1.3k instructions).
local function instance_mt(class)
  local mt = rawget(class, "__instance_mt")
  if mt then return mt end
  mt = {__index = function(self, k)
    if k == "params" then
      local p = rawget(self, "request"):params()
      rawset(self, "params", p)
      return p
    elseif k == "headers" then
      local h = {}
      rawset(self, "headers", h)
      return h
    elseif k == "cookies" then
      local jar = new_jar(rawget(self, "request"))
      rawset(self, "cookies", jar)
      return jar
    elseif k == "session" then
      local s = new_session(rawget(self, "request"))
      rawset(self, "session", s)
      return s
    end
    return class[k]
  end}
  class.__instance_mt = mt
  return mt
end

-- A fresh controller instance, with slots for what render() sets (and room for self.params).
local function new_instance(mt, req)
  return setmetatable({request = req, status = UNSET, body = UNSET, __content_type = UNSET,
                       __rendered = UNSET}, mt)
end

-- The runner for `action` kept in the class's table `field`, made by make() the first time.
local function cached(class, field, action, make)
  local cache = rawget(class, field)
  if not cache then
    cache = {}
    class[field] = cache
  end
  local run = cache[action]
  if not run then
    run = make()
    cache[action] = run
  end
  return run
end

local compile_runner

-- Runners made by compile_open, mapped to their class: a caller's error handler finds them on
-- the stack (see rescue_frame).
local open_runners = setmetatable({}, {__mode = "k"})

-- compile_open(class, action): the runner without its own protected call, for a caller whose
-- protected call (and error handler, rescue_frame) does the class's rescue_from instead and
-- then goes on as if the runner had returned: rage.dispatcher, when nothing but tail calls
-- stands between its protected call and the runner. Without a protected call in the runner,
-- a trace that starts after a classic C function the action calls can return through it.
function _M.compile_open(class, action)
  if #class.__rescuers == 0 then return _M.compile(class, action) end
  return cached(class, "__compiled_open", action, function()
    local chain = compile_action(class, action)
    local mt = instance_mt(class)
    local run = function(req)
      local self = new_instance(mt, req)
      chain(self)
      return self
    end
    open_runners[run] = class
    return run
  end)
end

-- For an error handler that runs while `err` unwinds (levels from `level` up): when the error
-- comes from inside an open runner, returns its instance and the rescue handler for `err`
-- (nil when there is none), and true; else nothing. Stops at `stop` (the caller's frame).
function _M.rescue_frame(err, level, stop)
  while true do
    local info = getinfo(level + 1, "f")
    if not info or info.func == stop then return end
    local class = open_runners[info.func]
    if class then
      for i = 1, 8 do
        local name, value = getlocal(level + 1, i)
        if not name then break end
        if name == "self" then return value, rescuer(class, err), true end
      end
      return
    end
    level = level + 1
  end
end

-- What the runner does with the rescue handler `h` of an error `err` in instance `self`.
function _M.rescue(self, h, err)
  self.__rendered = nil
  self.headers = nil
  self.__content_type = nil
  if type(h) == "string" then self[h](self, err) else h(self, err) end
end

-- Returns the runner for class#action: run(req) -> instance (with status, headers,
-- body). Compiled once and cached on the class.
function _M.compile(class, action)
  return cached(class, "__compiled", action, function() return compile_runner(class, action) end)
end

-- The runner of class#action with its own protected call when the class has rescue_from.
function compile_runner(class, action)
  local run
  local chain = compile_action(class, action)
  local mt = instance_mt(class)
  local has_rescue = #class.__rescuers > 0
  if has_rescue then
    -- An error no handler takes is raised again below, far from where it happened: keep the
    -- stack where it was raised for the dispatcher's log.
    local function keep_stack(err)
      if rescuer(class, err) then return err end
      if type(err) == "table" then
        if err.kind ~= "cancelled" then err.traceback = traceback(tostring(err), 2) end
        return err
      end
      return traceback(tostring(err), 2)
    end
    run = function(req)
      local self = new_instance(mt, req)
      local ok, err = xpcall(chain, keep_stack, self)
      if not ok then
        local h = rescuer(class, err)
        if not h then error(err, 0) end
        _M.rescue(self, h, err)
      end
      return self
    end
  else
    run = function(req)
      local self = new_instance(mt, req)
      chain(self)
      return self
    end
  end
  return run
end

return _M
