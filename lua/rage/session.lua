-- rage.session: the session (self.session), kept in one encrypted cookie as Rails' CookieStore.
--
--   self.session.user_id = user.id       -- any JSON value under a string key
--   local id = self.session.user_id
--   self.session.user_id = nil           -- or self.session:delete("user_id")
--   self:reset_session()                 -- forget everything (on sign-in and sign-out)
--
-- The cookie (config.session.key, "_<app>_session" by default) is an encrypted cookie bound to
-- its name, so the client can neither read nor alter it. It is read the first time the session
-- is used in a request, and written back when the response goes out only if the session changed
-- (assigned, deleted, or a table inside it modified). With config.session.expire_after the cookie
-- and the payload expire that many seconds after the last request that used the session.
-- A session over the 4096 bytes a cookie can hold raises cookies.overflow when the response is
-- sent: keep ids in the session, not records.
--
-- Keys that are method names (get, set, delete, clear, to_table) are reached with :get and :set.

local cookies = require("rage.cookies")
local json = require("rage.json")

local setmetatable, rawget, type, pairs, next, error = setmetatable, rawget, type, pairs, next, error

local _M = {}

local REQ = {}   -- the proxy keeps the request under a key no session key can be

-- ---- per-request state (on the request's cookie state) --------------------------------------

local SessionState = {}
SessionState.__index = SessionState

local function settings(st)
  local s = st:settings().session
  if not s then error("session: sessions are turned off (config.session = false)", 4) end
  return s
end

-- The session state of `req`, loading the cookie on first use.
local function load(req)
  local st = cookies.state(req)
  local ss = st.session
  if ss then return ss end
  local conf = settings(st)
  local data, baseline
  if st:raw(conf.key) ~= nil then
    data = st:read("encrypted", conf.key)
    if type(data) == "table" and data[1] == nil then
      baseline = json.encode(data)
    else
      data = nil
    end
  end
  ss = setmetatable({st = st, conf = conf, data = data or {}, baseline = baseline, sent = st:raw(conf.key) ~= nil},
    SessionState)
  st.session = ss
  return ss
end

-- The session state of `req` for a change: after the response went out, a change would be lost.
local function changing(req, level)
  local ss = load(req)
  local st = ss.st
  if not st.committing and (st.committed or req.box:responded()) then
    error("session: the response was already sent; the session must be changed before it", level + 1)
  end
  return ss
end

-- Writes the cookie if the session changed; called by the cookie state as the response goes out.
function SessionState:commit(st)
  local conf, data = self.conf, self.data
  if next(data) == nil then
    if self.sent and (self.dirty or self.baseline) then st:delete(conf.key, conf.options, 1) end
    return
  end
  local text = json.encode(data)
  if not self.dirty and text == self.baseline and not conf.expire_after then return end
  local opts = conf.options
  if conf.expire_after then
    opts = {}
    for k, v in pairs(conf.options) do opts[k] = v end
    opts.expires = cookies.now() + conf.expire_after
  end
  st:write("encrypted", conf.key, data, opts, false, 1, "the session cookie")
end

-- Forgets the session's contents; the cookie is deleted when the response goes out.
function _M.reset(req)
  local ss = changing(req, 3)
  ss.data = {}
  ss.dirty = true
end

-- ---- the proxy ------------------------------------------------------------------------------

local Session = {}
local methods = {}

-- The controller's self.session for `req`: nothing is read until it is used.
function _M.new(req)
  return setmetatable({[REQ] = req}, Session)
end

local function check_key(k, level)
  if type(k) ~= "string" then error("session: keys are strings, not " .. type(k), level + 1) end
end

local function check_value(v, level)
  local t = type(v)
  if t == "function" or t == "userdata" or t == "thread" or t == "cdata" then
    error("session: a " .. t .. " cannot be stored in the session (JSON values only)", level + 1)
  end
end

function methods.get(s, k)
  check_key(k, 2)
  return load(rawget(s, REQ)).data[k]
end

function methods.set(s, k, v)
  check_key(k, 2)
  check_value(v, 2)
  local ss = changing(rawget(s, REQ), 2)
  ss.data[k] = v
  ss.dirty = true
end

function methods.delete(s, k)
  check_key(k, 2)
  local ss = changing(rawget(s, REQ), 2)
  local v = ss.data[k]
  if v ~= nil then
    ss.data[k] = nil
    ss.dirty = true
  end
  return v
end

function methods.clear(s)
  _M.reset(rawget(s, REQ))
end

-- A shallow copy of the session's contents.
function methods.to_table(s)
  local out = {}
  for k, v in pairs(load(rawget(s, REQ)).data) do out[k] = v end
  return out
end

Session.__index = function(s, k)
  local m = methods[k]
  if m then return m end
  check_key(k, 2)
  return load(rawget(s, REQ)).data[k]
end

Session.__newindex = function(s, k, v)
  if methods[k] then
    error(("session: '%s' is a method of the session; use session:set(\"%s\", value)"):format(k, k), 2)
  end
  check_key(k, 2)
  check_value(v, 2)
  local ss = changing(rawget(s, REQ), 2)
  ss.data[k] = v
  ss.dirty = true
end

Session.__tostring = function() return "rage.session" end

return _M
