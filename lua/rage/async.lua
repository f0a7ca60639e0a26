-- rage.async: concurrency inside a worker, Promise.all-style.
--
--   local user, orders = rage.await(function() return fetch_user(id) end,
--                                   function() return fetch_orders(id) end)
--   local h = rage.spawn(work, arg)    -- h:wait(), h:cancel(), h:status(), h:detach()
--   rage.timeout(2, function() ... end) -- raises an error of kind "timeout"
--   local sem = rage.semaphore(10); sem:with(function() ... end)
--   local ch = rage.channel(100); ch:send(v); local v = ch:recv()
--
-- Everything is built on three core primitives (core/src/async.c): spawn a fiber, a one-shot
-- waiter, and a timeout on the current fiber. A fiber spawned while handling a request belongs
-- to it: when the request's handler returns, children still running are cancelled, unless
-- detached. Detached fibers are tracked; shutdown waits for them within the drain bound.

local core = require("rage.core")
local errors = require("rage.errors")

local setmetatable, select, type, error, pcall, unpack, remove =
  setmetatable, select, type, error, pcall, unpack, table.remove
local core_spawn, core_waiter, core_timeout, core_locals = core.spawn, core.waiter, core.timeout, core.locals

local _M = {}

local function pack(...)
  return {n = select("#", ...), ...}
end

local function raise(kind, msg, level)
  errors.raise(kind, msg, nil, (level or 1) + 1)
end

-- ---- spawned fibers -------------------------------------------------------------------------

local Handle = {}
Handle.__index = Handle

-- Appends v to the list t[key], creating the list on first use.
local function push(t, key, v)
  local list = t[key]
  if not list then
    list = {}
    t[key] = list
  end
  list[#list + 1] = v
end

local detached = {}   -- handle -> true while a detached fiber runs
local ndetached = 0

local function settle(h, ok, ...)
  if ok then
    h._state = "done"
    h._results = pack(...)
  else
    local err = ...
    h._state = errors.is(err, "cancelled") and "cancelled" or "failed"
    h._err = err
  end
  if detached[h] then
    detached[h] = nil
    ndetached = ndetached - 1
  end
  local ws = h._waiters
  h._waiters = nil
  if ws then
    for i = 1, #ws do ws[i]:wake() end
  end
end

local function traceback_handler(e)
  if type(e) == "table" then return e end
  return debug.traceback(tostring(e), 2)
end

local log = require("rage.log")

local function run(h, rid, f, ...)
  if rid then log.bind_request_id(rid) end
  settle(h, xpcall(f, traceback_handler, ...))
  if rid then log.bind_request_id(nil) end
end

-- How many scopes hold a list of children that end_scope() has not cleared yet: while it is 0,
-- end_scope() has nothing to look for and skips the fiber-locals lookup (a C call per request).
local open_scopes = 0

-- Starts f(...) in a new fiber; it runs until its first wait before spawn returns.
function _M.spawn(f, ...)
  if type(f) ~= "function" then error("rage.spawn expects a function", 2) end
  local h = setmetatable({_state = "running"}, Handle)
  local scope = core_locals(false)
  h._fiber = core_spawn(run, h, log.request_id(), f, ...)
  if h._state == "running" and scope then
    if not scope.__children then open_scopes = open_scopes + 1 end
    push(scope, "__children", h)
  end
  return h
end

-- "running", "done", "failed" or "cancelled".
function Handle:status()
  return self._state
end

-- Waits for the fiber; returns its results or raises its error.
function Handle:wait()
  if self._state == "running" then
    local w = core_waiter()
    push(self, "_waiters", w)
    local ok, kind, msg = w:wait()
    if not ok then
      raise(kind, msg, 2)
    end
  end
  if self._state == "done" then
    local r = self._results
    return unpack(r, 1, r.n)
  end
  error(self._err, 0)
end

-- Cancels the fiber: its pending wait raises "cancelled" now. No effect once it has ended.
function Handle:cancel()
  if self._state == "running" then self._fiber:cancel() end
end

-- Lets the fiber outlive the request that spawned it (shutdown still waits for it, bounded).
function Handle:detach()
  if self._state == "running" and not detached[self] then
    detached[self] = true
    ndetached = ndetached + 1
  end
  self._detached = true
  return self
end

function _M.detached_count()
  return ndetached
end

-- Called when a request's handler returns: cancels its children that are still running.
function _M.end_scope()
  if open_scopes == 0 then return end
  local scope = core_locals(false)
  local children = scope and scope.__children
  if not children then return end
  scope.__children = nil
  open_scopes = open_scopes - 1
  for i = 1, #children do
    local h = children[i]
    if h._state == "running" and not h._detached then h._fiber:cancel() end
  end
end

-- ---- await ----------------------------------------------------------------------------------

local function cancel_all(hs)
  for i = 1, #hs do hs[i]:cancel() end
end

-- Waits until one of the running handles in hs settles.
local function wait_any(hs)
  local w = core_waiter()
  for i = 1, #hs do
    local h = hs[i]
    if h._state == "running" then push(h, "_waiters", w) end
  end
  local ok, kind, msg = w:wait()
  -- Forget this waiter in the handles that did not settle.
  for i = 1, #hs do
    local ws = hs[i]._waiters
    if ws then
      for j = #ws, 1, -1 do
        if ws[j] == w then remove(ws, j) end
      end
    end
  end
  return ok, kind, msg
end

local function spawn_all(level, ...)
  local n = select("#", ...)
  local hs = {}
  for i = 1, n do
    local f = select(i, ...)
    if type(f) ~= "function" then error("expects functions; argument " .. i .. " is a " .. type(f), level + 1) end
    hs[i] = _M.spawn(f)
  end
  return hs, n
end

-- Runs every function concurrently and returns their first results, in order. On the first
-- error the others are cancelled and that error is raised.
function _M.await(...)
  local hs, n = spawn_all(2, ...)
  while true do
    local pending = false
    for i = 1, n do
      local h = hs[i]
      local st = h._state
      if st == "failed" or st == "cancelled" then
        cancel_all(hs)
        error(h._err, 0)
      elseif st == "running" then
        pending = true
      end
    end
    if not pending then break end
    local ok, kind, msg = wait_any(hs)
    if not ok then
      cancel_all(hs)
      raise(kind, msg, 2)
    end
  end
  local out = {}
  for i = 1, n do out[i] = hs[i]._results[1] end
  return unpack(out, 1, n)
end

-- Runs every function concurrently; returns the first successful result and its position,
-- and cancels the rest. When all fail, raises the last error.
function _M.await_any(...)
  local hs, n = spawn_all(2, ...)
  if n == 0 then error("rage.await_any expects at least one function", 2) end
  while true do
    local pending, last_err = false, nil
    for i = 1, n do
      local h = hs[i]
      local st = h._state
      if st == "done" then
        cancel_all(hs)
        return h._results[1], i
      elseif st == "running" then
        pending = true
      else
        last_err = h._err
      end
    end
    if not pending then error(last_err, 0) end
    local ok, kind, msg = wait_any(hs)
    if not ok then
      cancel_all(hs)
      raise(kind, msg, 2)
    end
  end
end

-- ---- timeout --------------------------------------------------------------------------------

-- Runs f(...) in the current fiber; if it is still waiting after `seconds`, its pending wait is
-- cancelled and an error of kind "timeout" is raised.
function _M.timeout(seconds, f, ...)
  if type(seconds) ~= "number" or seconds ~= seconds or seconds < 0 then
    error("rage.timeout: seconds must be a non-negative number", 2)
  end
  if type(f) ~= "function" then error("rage.timeout expects a function", 2) end
  local t = core_timeout(seconds)
  local res = pack(pcall(f, ...))
  t:stop()
  if not res[1] then error(res[2], 0) end
  return unpack(res, 2, res.n)
end

-- The current job's fiber-local table (spawned fibers see their parent's values).
function _M.fiber_local()
  return core_locals(true)
end

-- ---- semaphore ------------------------------------------------------------------------------

local Semaphore = {}
Semaphore.__index = Semaphore

function _M.semaphore(permits)
  if type(permits) ~= "number" or permits < 0 or permits % 1 ~= 0 then
    error("rage.semaphore expects a whole number of permits", 2)
  end
  return setmetatable({count = permits, queue = {}}, Semaphore)
end

function Semaphore:acquire()
  if self.count > 0 and #self.queue == 0 then
    self.count = self.count - 1
    return
  end
  local w = core_waiter()
  local q = self.queue
  q[#q + 1] = w
  local ok, kind, msg = w:wait()
  if not ok then
    if w:woken() then
      self:release()            -- the permit came with the wake-up: hand it on
    else
      for i = #q, 1, -1 do
        if q[i] == w then remove(q, i) end
      end
    end
    raise(kind, msg, 2)
  end
end

function Semaphore:release()
  local q = self.queue
  while #q > 0 do
    local w = remove(q, 1)
    if w:wake() then return end
  end
  self.count = self.count + 1
end

-- Runs f(...) holding a permit, released however f ends.
function Semaphore:with(f, ...)
  self:acquire()
  local res = pack(pcall(f, ...))
  self:release()
  if not res[1] then error(res[2], 0) end
  return unpack(res, 2, res.n)
end

function Semaphore:available()
  return self.count
end

-- ---- channel --------------------------------------------------------------------------------

local Channel = {}
Channel.__index = Channel

-- A bounded FIFO between fibers of one worker; capacity 0 makes every send meet a receive.
function _M.channel(capacity)
  capacity = capacity or 0
  if type(capacity) ~= "number" or capacity < 0 or capacity % 1 ~= 0 then
    error("rage.channel expects a whole capacity", 2)
  end
  return setmetatable({cap = capacity, buf = {}, senders = {}, receivers = {}, closed = false}, Channel)
end

local function drop(list, w)
  for i = #list, 1, -1 do
    local e = list[i]
    if e == w or (type(e) == "table" and e.w == w) then remove(list, i) end
  end
end

-- Sends v, waiting while the channel is full. Raises channel.closed on a closed channel.
function Channel:send(v)
  if self.closed then raise("channel.closed", "send on a closed channel", 2) end
  local rs = self.receivers
  while #rs > 0 do
    local r = remove(rs, 1)
    r.v = v
    if r.w:wake(v) then return end
  end
  if #self.buf < self.cap then
    self.buf[#self.buf + 1] = v
    return
  end
  local w = core_waiter()
  self.senders[#self.senders + 1] = {w = w, v = v}
  local ok, kind, msg = w:wait()
  if ok then
    if kind == "closed" then raise("channel.closed", "the channel was closed", 2) end
    return
  end
  if not w:woken() then drop(self.senders, w) end
  raise(kind, msg, 2)
end

-- Receives the next value, waiting while the channel is empty. Returns nil, "closed" once the
-- channel is closed and drained.
function Channel:recv()
  local buf, ss = self.buf, self.senders
  if #buf > 0 then
    local v = remove(buf, 1)
    while #ss > 0 do
      local s = remove(ss, 1)
      if s.w:wake() then
        buf[#buf + 1] = s.v
        break
      end
    end
    return v
  end
  while #ss > 0 do
    local s = remove(ss, 1)
    if s.w:wake() then return s.v end
  end
  if self.closed then return nil, "closed" end
  local w = core_waiter()
  local entry = {w = w}
  self.receivers[#self.receivers + 1] = entry
  local ok, v, why = w:wait()
  if not ok then
    if w:woken() then
      if not self.closed then
        table.insert(buf, 1, entry.v)   -- the value came with the wake-up: keep it for the next receiver
      end
    else
      drop(self.receivers, w)
    end
    raise(v, why, 2)
  end
  if v == nil and why == "closed" then return nil, "closed" end
  return v
end

function Channel:close()
  if self.closed then return end
  self.closed = true
  local rs = self.receivers
  self.receivers = {}
  for i = 1, #rs do rs[i].w:wake(nil, "closed") end
  local ss = self.senders
  self.senders = {}
  for i = 1, #ss do ss[i].w:wake("closed") end
end

function Channel:size()
  return #self.buf
end

return _M
