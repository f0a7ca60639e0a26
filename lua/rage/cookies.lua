-- rage.cookies: the request's cookies and the Set-Cookie lines of its response (self.cookies).
--
--   self.cookies.theme                               -- a request cookie (a string), or nil
--   self.cookies.theme = "dark"                      -- Path=/; HttpOnly; SameSite=Lax
--   self.cookies:set("theme", "dark", {expires = 3600, path = "/admin"})
--   self.cookies.theme = nil                         -- deletes it, as cookies:delete("theme")
--   self.cookies.signed.user_id = 42                 -- HMAC-SHA256: readable, not forgeable
--   self.cookies.encrypted.card = {last4 = "4242"}   -- AES-256-GCM: neither readable nor forgeable
--   self.cookies.permanent.signed.remember = token   -- expires in 20 years
--
-- Signed and encrypted cookies hold any JSON value wrapped with their purpose ("cookie.<name>")
-- and, when they expire, their expiry: a value copied under another name, altered, cut short or
-- past its expiry reads as nil. Their keys come from secret_key_base through PBKDF2 with Rails'
-- salts ("signed cookie", "authenticated encrypted cookie"). Names must be HTTP tokens, values
-- are percent-encoded and every attribute is checked, so nothing a caller passes can add a line
-- or an attribute to a Set-Cookie header; misuse raises at the caller's line.
--
-- The state of one request lives on the request (req.cookie_jar); Request:with_headers() calls
-- commit(), which turns what was set into Set-Cookie lines (a list) when the response goes out,
-- whichever way it goes (render, head, redirect_to, stream, send_file). The session
-- (rage.session) writes itself there too.

local crypto = require("rage.crypto")
local json = require("rage.json")
local errors = require("rage.errors")
local core = require("rage.core")
local log = require("rage.log")
local ffi = require("ffi")

local setmetatable, rawget, type, tostring, tonumber, error, pairs, ipairs, pcall =
  setmetatable, rawget, type, tostring, tonumber, error, pairs, ipairs, pcall
local find, sub, gsub, match, gmatch, lower, format, byte, char =
  string.find, string.sub, string.gsub, string.match, string.gmatch, string.lower, string.format,
  string.byte, string.char
local floor, date, concat = math.floor, os.date, table.concat
local hmac, secure_compare, b64url, b64url_decode = crypto.hmac_sha256, crypto.secure_compare,
  crypto.base64url_encode, crypto.base64url_decode
local json_decode = json.decode

local _M = {}

-- Browsers keep at most 4096 bytes of name and value per cookie (RFC 6265 §6.1).
_M.MAX_SIZE = 4096
_M.PERMANENT = 20 * 365 * 86400 + 5 * 86400   -- 20 years, as Rails' cookies.permanent

-- The wall clock for expiry, in os.time() seconds. Specs may replace it.
_M.now = os.time

-- An expires below this is a duration in seconds from now, above it a point in time.
local RELATIVE_LIMIT = 1e9

local SIGNED_SALT, ENCRYPTED_SALT = "signed cookie", "authenticated encrypted cookie"
local MAC_LEN = 43   -- base64url of 32 bytes, unpadded

local DAYS = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"}
local MONTHS = {"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"}

-- An IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT"), independent of the C locale.
local function http_date(t)
  local d = date("!*t", t)
  return format("%s, %02d %s %04d %02d:%02d:%02d GMT", DAYS[d.wday], d.day, MONTHS[d.month], d.year,
    d.hour, d.min, d.sec)
end
_M.http_date = http_date

-- ---- secret_key_base ------------------------------------------------------------------------

-- In a pcall: another module may have declared these already, with its own spelling of mode_t.
pcall(ffi.cdef, [[
int mkdir(const char *path, unsigned int mode);
int chmod(const char *path, unsigned int mode);
int link(const char *oldpath, const char *newpath);
]])

local function read_secret(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  s = match(s or "", "^%s*(%x+)%s*$")
  return s and #s >= 64 and s or nil
end

-- The secret of an app without one, outside production. In test it is derived from the app's
-- path (stable, nothing written). In development it is random and kept in tmp/local_secret.txt
-- (mode 0600), as Rails does, so sessions survive restarts; link(2) publishes the file only if
-- it does not exist yet, so workers booting at once agree on one secret.
local function local_secret(dir, env)
  if env == "test" then
    return crypto.hex(crypto.sha256("rage-lua test secret_key_base\0" .. dir))
  end
  local path = dir .. "/tmp/local_secret.txt"
  local secret = read_secret(path)
  if secret then return secret end
  secret = crypto.hex(crypto.random_bytes(64))
  ffi.C.mkdir(dir .. "/tmp", 448)   -- 0700; it may exist already
  local tmp = format("%s.%d.%s", path, core.pid or 0, crypto.hex(crypto.random_bytes(4)))
  local f = io.open(tmp, "wb")
  if f then
    ffi.C.chmod(tmp, 384)   -- 0600, before the secret is written
    f:write(secret, "\n")
    f:close()
    ffi.C.link(tmp, path)
    os.remove(tmp)
    local stored = read_secret(path)
    if stored then
      if stored == secret then log.info("generated a development secret_key_base in ", path) end
      return stored
    end
  end
  log.warn("cannot write ", path, ": using a secret_key_base that lasts until the app stops")
  return secret
end

local Settings = {}
Settings.__index = Settings

local check_options   -- defined below

-- settings(dir, env, config): the cookie and session settings of an app, checked at boot.
-- secret_key_base comes from $SECRET_KEY_BASE, else config.secret_key_base; it must have at
-- least 64 characters. Only development and test may go without one. Raises a message.
function _M.settings(dir, env, config)
  dir = core.realpath(dir) or dir
  local secret, source = os.getenv("SECRET_KEY_BASE"), "SECRET_KEY_BASE"
  if secret == "" then secret = nil end
  if secret == nil then secret, source = config.secret_key_base, "config.secret_key_base" end
  if secret ~= nil then
    if type(secret) ~= "string" then error(source .. " must be a string", 0) end
    if #secret < 64 then
      error(("%s is too short (%d characters): it needs at least 64; `openssl rand -hex 64` makes one")
        :format(source, #secret), 0)
    end
  elseif env ~= "development" and env ~= "test" then
    error(("secret_key_base is missing for the %s environment: set SECRET_KEY_BASE (at least 64 " ..
      "characters; `openssl rand -hex 64` makes one) or config.secret_key_base"):format(env), 0)
  end
  local session = config.session
  if session == nil then session = {} end
  if session ~= false then
    if type(session) ~= "table" then error("config.session must be a table of settings or false", 0) end
    local key = session.key
    if key == nil then
      key = "_" .. gsub(match(dir, "([^/]*)/*$") or "", "[^%w_]", "_") .. "_session"
    end
    local opts = {}
    for k, v in pairs(session) do
      if k ~= "key" and k ~= "expire_after" then opts[k] = v end
    end
    local ok, err = pcall(check_options, key, opts)
    if not ok then error("config.session: " .. gsub(tostring(err), "^.-:%d+: ", ""), 0) end
    local expire_after = session.expire_after
    if expire_after ~= nil and (type(expire_after) ~= "number" or expire_after <= 0) then
      error("config.session.expire_after must be a number of seconds", 0)
    end
    session = {key = key, options = opts, expire_after = expire_after}
  end
  local s = setmetatable({dir = dir, env = env, secret = secret, session = session}, Settings)
  _M.current = s
  return s
end

-- The signing and encryption keys, derived once (and the development secret made) on first use.
function Settings:keys()
  local k = self.derived
  if k then return k end
  local secret = self.secret or local_secret(self.dir, self.env)
  local gen = crypto.key_generator(secret, 1000)
  k = {signed = gen:generate(SIGNED_SALT, 64), encrypted = gen:generate(ENCRYPTED_SALT, crypto.KEY_LEN)}
  self.derived = k
  return k
end

-- ---- validation and encoding ----------------------------------------------------------------

local function check_name(name, level)
  if type(name) ~= "string" or not find(name, "^[%w!#$%%&'*+%-.^_`|~]+$") then
    local shown = gsub(tostring(name), "[%c\"\\\128-\255]", function(c) return format("\\%d", byte(c)) end)
    error("cookies: invalid cookie name \"" .. shown .. "\"" ..
      " (letters, digits and !#$%&'*+-.^_`|~ only)", level + 1)
  end
end

-- Percent-encodes every byte outside RFC 6265's cookie-octet set, and '%' itself.
local function escape(v)
  return (gsub(v, "[^%w!#$&'()*+%-./:<=>?@%[%]^_`{|}~]", function(c) return format("%%%02X", byte(c)) end))
end

local function unescape(v)
  if not find(v, "%", 1, true) then return v end
  return (gsub(v, "%%(%x%x)", function(h) return char(tonumber(h, 16)) end))
end

-- `s` without blanks around it, in linear time: the header comes from the client, and a pattern
-- with a lazy middle ("^%s*(.-)%s*$") backtracks quadratically over a long run of blanks.
local function trim(s)
  local i = find(s, "[^ \t]")
  if not i then return "" end
  return match(s, "^.*[^ \t]", i)
end

-- The Cookie header as {name = value}: pairs split on ';', blanks trimmed, quotes around a value
-- removed, values percent-decoded; the first of two pairs with one name wins (browsers send the
-- most specific path first); pairs without '=' or a name are skipped.
function _M.parse(header)
  local out = {}
  if type(header) ~= "string" then return out end
  for pair in gmatch(header, "[^;]+") do
    local eq = find(pair, "=", 1, true)
    local k = eq and trim(sub(pair, 1, eq - 1))
    if k and k ~= "" and out[k] == nil then
      local v = trim(sub(pair, eq + 1))
      if #v >= 2 and byte(v, 1) == 34 and byte(v, -1) == 34 then v = sub(v, 2, -2) end
      out[k] = unescape(v)
    end
  end
  return out
end

local OPTIONS = {path = true, domain = true, expires = true, max_age = true, secure = true,
                 httponly = true, samesite = true, partitioned = true}
local SAMESITE = {lax = "Lax", strict = "Strict", none = "None"}

local function bool_option(opts, k, level)
  local v = opts[k]
  if v ~= nil and type(v) ~= "boolean" then error("cookies: " .. k .. " must be true or false", level + 1) end
  return v
end

-- Checks `opts` for cookie `name` and returns the attribute string ("; Path=/; ...") and the
-- time the cookie expires (the earlier of expires and max_age), or nil for a browser-session
-- cookie. `permanent` sets expires 20 years ahead.
local function attributes(name, opts, https, permanent, level)
  level = level + 1
  if opts ~= nil and type(opts) ~= "table" then error("cookies: options must be a table", level) end
  opts = opts or {}
  for k in pairs(opts) do
    if not OPTIONS[k] then error("cookies: unknown option '" .. tostring(k) .. "'", level) end
  end
  local path = opts.path or "/"
  if type(path) ~= "string" or not find(path, "^/[!-~]*$") or find(path, "[;,]") then
    error("cookies: path must start with / and hold no spaces, control characters, ';' or ','", level)
  end
  local domain = opts.domain
  if domain ~= nil and (type(domain) ~= "string" or not find(domain, "^%.?[%w][%w%-%.]*$")) then
    error("cookies: domain must be a host name such as example.com", level)
  end
  local now = _M.now()
  local expires, max_age = opts.expires, opts.max_age
  if expires ~= nil then
    if type(expires) ~= "number" or expires ~= expires or expires == 1 / 0 or expires == -1 / 0 then
      error("cookies: expires must be os.time() or a number of seconds from now", level)
    end
    expires = floor(expires)
    if expires < RELATIVE_LIMIT then expires = now + expires end
  end
  if permanent then expires = now + _M.PERMANENT end
  if max_age ~= nil and (type(max_age) ~= "number" or max_age % 1 ~= 0 or max_age > 2 ^ 53) then
    error("cookies: max_age must be a whole number of seconds", level)
  end
  local samesite = opts.samesite
  if samesite == nil then
    samesite = "Lax"
  elseif samesite ~= false then
    samesite = type(samesite) == "string" and SAMESITE[lower(samesite)]
    if not samesite then error("cookies: samesite must be \"Lax\", \"Strict\", \"None\" or false", level) end
  end
  local httponly = bool_option(opts, "httponly", level)
  local partitioned = bool_option(opts, "partitioned", level)
  local secure = bool_option(opts, "secure", level)
  -- Browsers drop these cookies unless they are Secure, so Secure comes with them.
  local needs_secure = samesite == "None" and "samesite = \"None\"" or partitioned and "partitioned"
    or find(name, "^__Secure%-") and "the __Secure- prefix" or find(name, "^__Host%-") and "the __Host- prefix"
  if needs_secure then
    if secure == false then error("cookies: " .. needs_secure .. " requires secure", level) end
    secure = true
  end
  if find(name, "^__Host%-") and (domain or path ~= "/") then
    error("cookies: a __Host- cookie has path \"/\" and no domain", level)
  end
  if secure == nil then secure = https end
  local parts = {"; Path=", path}
  if domain then parts[#parts + 1] = "; Domain=" .. domain end
  if expires then parts[#parts + 1] = "; Expires=" .. http_date(expires) end
  if max_age then parts[#parts + 1] = format("; Max-Age=%d", max_age) end
  if secure then parts[#parts + 1] = "; Secure" end
  if httponly ~= false then parts[#parts + 1] = "; HttpOnly" end
  if samesite then parts[#parts + 1] = "; SameSite=" .. samesite end
  if partitioned then parts[#parts + 1] = "; Partitioned" end
  local exp = expires
  if max_age and (not exp or now + max_age < exp) then exp = now + max_age end
  return concat(parts), exp
end

check_options = function(name, opts)
  check_name(name, 2)
  attributes(name, opts, false, false, 2)
end

-- ---- signed and encrypted values --------------------------------------------------------------

-- The JSON wrapper of a value: its purpose and expiry travel inside what is signed or encrypted.
local function wrap(text, name, exp)
  return '{"_rage":{"pur":' .. json.encode("cookie." .. name) .. (exp and format(',"exp":%d', exp) or "") ..
    ',"message":' .. text .. "}}"
end

-- The value inside a wrapper, when the purpose is this cookie's and it has not expired.
local function unwrap(text, name)
  local t = text and json_decode(text)
  local w = type(t) == "table" and t._rage
  if type(w) ~= "table" or w.pur ~= "cookie." .. name then return nil end
  local exp = w.exp
  if exp ~= nil and (type(exp) ~= "number" or exp <= _M.now()) then return nil end
  local v = w.message
  if v == json.null then return nil end
  return v
end

-- signed: base64url(wrapper) .. "--" .. base64url(HMAC-SHA256(key, first part))
local function sign(keys, text)
  local payload = b64url(text)
  return payload .. "--" .. b64url(hmac(keys.signed, payload))
end

local function verify(keys, token)
  local n = #token
  if n < MAC_LEN + 3 or sub(token, n - MAC_LEN - 1, n - MAC_LEN) ~= "--" then return nil end
  local payload = sub(token, 1, n - MAC_LEN - 2)
  if not secure_compare(sub(token, -MAC_LEN), b64url(hmac(keys.signed, payload))) then return nil end
  return b64url_decode(payload)
end

-- encrypted: base64url(iv .. ciphertext .. tag) of the wrapper under AES-256-GCM
local function seal(keys, text)
  return b64url(crypto.encrypt(keys.encrypted, text))
end

local function open(keys, token)
  local box = b64url_decode(token)
  return box and crypto.decrypt(keys.encrypted, box)
end

-- ---- per-request state ----------------------------------------------------------------------

local State = {}
State.__index = State

-- The cookie state of `req`, made on first use.
local function state(req)
  local st = req.cookie_jar
  if not st then
    st = setmetatable({req = req, pending = {}, order = {}, changed = {}}, State)
    req.cookie_jar = st
  end
  return st
end
_M.state = state

function State:settings()
  local app = self.req.app
  local s = app and app.cookie_settings or _M.current
  if not s then error("cookies: no app settings (load the app with rage.app or rage.test)", 0) end
  return s
end

-- The value of cookie `name` as this response stands: what the client sent, then what was set
-- (a string) or deleted (false) since.
function State:raw(name)
  local v = self.changed[name]
  if v == nil then
    local sent = self.sent
    if not sent then
      sent = _M.parse(self.req:headers().cookie)
      self.sent = sent
    end
    v = sent[name]
  end
  return v or nil
end

-- The names of every cookie the request sent or the response set, without deleted ones.
function State:names()
  self:raw("")
  local out = {}
  for name in pairs(self.sent) do out[#out + 1] = name end
  for name in pairs(self.changed) do
    if self.sent[name] == nil then out[#out + 1] = name end
  end
  local live = {}
  for _, name in ipairs(out) do
    if self:raw(name) then live[#live + 1] = name end
  end
  return live
end

function State:https()
  local req = self.req
  return req.is_ssl ~= nil and req:is_ssl() or false
end

local function put(st, name, line, level)
  if not st.committing and (st.committed or st.req.box:responded()) then
    error("cookies: the response was already sent; cookies must be set before it", level + 1)
  end
  if st.pending[name] == nil then st.order[#st.order + 1] = name end
  st.pending[name] = line
end

-- The value of cookie `name` read in `mode`: as sent for a plain cookie; verified or decrypted,
-- then checked for its purpose and expiry, for the others (nil when any check fails).
function State:read(mode, name)
  local raw = self:raw(name)
  if raw == nil or mode == "plain" then return raw end
  local keys = self:settings():keys()
  local text
  if mode == "signed" then text = verify(keys, raw) else text = open(keys, raw) end
  if not text then return nil end
  return unwrap(text, name)
end

-- Writes cookie `name` in `mode` ("plain", "signed" or "encrypted"); `value` is a string for a
-- plain cookie and any JSON value otherwise. Used by the jars below and by rage.session.
function State:write(mode, name, value, opts, permanent, level, what)
  level = level + 1
  check_name(name, level)
  local attrs, exp = attributes(name, opts, self:https(), permanent, level)
  local stored
  if mode == "plain" then
    local t = type(value)
    if t == "number" or t == "boolean" then value = tostring(value) end
    if type(value) ~= "string" then
      error("cookies: a plain cookie holds a string; use cookies.signed or cookies.encrypted for " .. t ..
        " values", level)
    end
    stored = value
    value = escape(value)
  else
    local t = type(value)
    if t == "function" or t == "userdata" or t == "thread" or t == "cdata" then
      error("cookies: a " .. t .. " cannot be stored in a cookie", level)
    end
    local ok, text = pcall(json.encode, value)
    if not ok then
      error("cookies: the value cannot be stored as JSON: " .. tostring(text and text.message or text), level)
    end
    local keys = self:settings():keys()
    text = wrap(text, name, exp)
    value = mode == "signed" and sign(keys, text) or seal(keys, text)
    stored = value
  end
  local size = #name + 1 + #value
  if size > _M.MAX_SIZE then
    errors.raise("cookies.overflow", ("%s '%s' is %d bytes, over the %d bytes browsers keep"):format(
      what or "the cookie", name, size, _M.MAX_SIZE), {size = size}, level)
  end
  put(self, name, name .. "=" .. value .. attrs, level)
  self.changed[name] = stored
end

-- Deletes cookie `name` (path and domain must be those it was set with). A cookie the client
-- did not send and this response set is simply not sent.
function State:delete(name, opts, level)
  level = level + 1
  check_name(name, level)
  local o = {}
  if opts ~= nil and type(opts) ~= "table" then error("cookies: options must be a table", level) end
  for k, v in pairs(opts or {}) do o[k] = v end
  o.expires, o.max_age = nil, 0
  local attrs = attributes(name, o, self:https(), false, level)
  self:raw(name)
  local sent = self.sent[name] ~= nil
  self.changed[name] = false
  if sent then
    put(self, name, name .. "=" .. attrs .. "; Expires=Thu, 01 Jan 1970 00:00:00 GMT", level)
  elseif self.pending[name] then
    put(self, name, false, level)
  end
end

-- Adds the Set-Cookie lines to `headers` (a response header table) once, when the response goes
-- out. A cookie set by the app's code as a header is kept.
function State:commit(headers)
  if self.committed then return headers end
  self.committed = true
  local session = self.session
  if session then
    self.committing = true
    session:commit(self)
    self.committing = nil
  end
  local lines = {}
  local prev = headers["set-cookie"]
  if type(prev) == "string" then
    lines[1] = prev
  elseif type(prev) == "table" then
    for i = 1, #prev do lines[i] = prev[i] end
  end
  local n = #lines
  local pending = self.pending
  for _, name in ipairs(self.order) do
    local line = pending[name]
    if line then lines[#lines + 1] = line end
  end
  if #lines > n then headers["set-cookie"] = lines end
  return headers
end

-- ---- the jars -------------------------------------------------------------------------------

-- self.cookies is a view of the request's state in one mode; .signed, .encrypted and .permanent
-- give the other views. Names that are methods (get, set, delete, all, signed, encrypted,
-- permanent) are reached with :get(name) and :set(name, value). A view keeps the request and
-- its mode under private keys no name can reach; the plain view every controller instance gets
-- holds only the request.
local REQ, MODE = {}, {}

local MODES = {}
for _, kind in ipairs({"plain", "signed", "encrypted"}) do
  MODES[kind] = {kind = kind, permanent = false}
  MODES["permanent " .. kind] = {kind = kind, permanent = true}
end
for _, m in pairs(MODES) do
  local p = m.permanent and "permanent " or ""
  m.to = {signed = MODES[p .. "signed"], encrypted = MODES[p .. "encrypted"], permanent = MODES["permanent " .. m.kind]}
end

local Jar = {}
local methods = {}

local function mode_of(jar)
  return rawget(jar, MODE) or MODES.plain
end
local PROPERTIES = {signed = true, encrypted = true, permanent = true}

local function view(req, mode)
  local st = state(req)
  local views = st.views
  if not views then
    views = {}
    st.views = views
  end
  local v = views[mode]
  if not v then
    v = setmetatable({[REQ] = req, [MODE] = mode}, Jar)
    views[mode] = v
  end
  return v
end

-- The controller's self.cookies for `req`: made without touching the request until it is used.
function _M.jar(req)
  return setmetatable({[REQ] = req}, Jar)
end

local function read(jar, name, level)
  if type(name) ~= "string" then error("cookies: cookie names are strings", level + 1) end
  return state(rawget(jar, REQ)):read(mode_of(jar).kind, name)
end

-- jar:get(name): the cookie's value (nil when absent, or for signed and encrypted cookies when
-- it does not verify).
function methods.get(jar, name)
  return read(jar, name, 2)
end

-- jar:set(name, value, opts): sets a cookie; opts are path, domain, expires, max_age, secure,
-- httponly, samesite and partitioned. A nil value deletes it.
function methods.set(jar, name, value, opts)
  local mode = mode_of(jar)
  local st = state(rawget(jar, REQ))
  if value == nil then
    st:delete(name, opts, 2)
  else
    st:write(mode.kind, name, value, opts, mode.permanent, 2)
  end
end

-- jar:delete(name, {path =, domain =}): expires the cookie in the browser.
function methods.delete(jar, name, opts)
  state(rawget(jar, REQ)):delete(name, opts, 2)
end

-- jar:all(): {name = value} of every cookie this view can read.
function methods.all(jar)
  local out = {}
  for _, name in ipairs(state(rawget(jar, REQ)):names()) do
    out[name] = read(jar, name, 2)
  end
  return out
end

Jar.__index = function(jar, k)
  local m = methods[k]
  if m then return m end
  if PROPERTIES[k] then return view(rawget(jar, REQ), mode_of(jar).to[k]) end
  return read(jar, k, 2)
end

Jar.__newindex = function(jar, k, value)
  if methods[k] or PROPERTIES[k] then
    error(("cookies: '%s' is a method of the cookie jar; use cookies:set(\"%s\", value)"):format(k, k), 2)
  end
  local mode = mode_of(jar)
  local st = state(rawget(jar, REQ))
  if value == nil then
    st:delete(k, nil, 2)
  else
    st:write(mode.kind, k, value, nil, mode.permanent, 2)
  end
end

Jar.__tostring = function(jar)
  return "rage.cookies (" .. (mode_of(jar).permanent and "permanent " or "") .. mode_of(jar).kind .. ")"
end

return _M
