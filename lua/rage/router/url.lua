-- rage.router.url: percent-encoding, and the paths url_for builds from route names.
--
-- The router reads paths and writes them, and both directions go through here: unescape() for
-- the parameters a match captures, escape_literal() for the literal text of a pattern (which is
-- how the tree keys it), and url_for(), which walks a named route's pattern tokens, fills in the
-- params, drops optional groups that have nothing to say, escapes what a segment cannot hold and
-- sends every param the path does not use to the query string.

local type, pairs, next, tostring, tonumber = type, pairs, next, tostring, tonumber
local find, gsub, lower, upper, char, sub = string.find, string.gsub, string.lower, string.upper,
                                            string.char, string.sub
local concat, sort = table.concat, table.sort

local util = require("rage.router.util")
local misuse, EMPTY = util.misuse, util.EMPTY
util.own()

local _M = {}

---------------------------------------------------------------------------------------------------
-- Percent-encoding. Replacement tables instead of functions keep gsub free of closures.

local ENC, DEC = {}, {}
do
  local hex = "0123456789ABCDEF"
  for b = 0, 255 do
    local h, l = (b - b % 16) / 16 + 1, b % 16 + 1
    local hi, lo = sub(hex, h, h), sub(hex, l, l)
    ENC[char(b)] = "%" .. hi .. lo
    DEC["%" .. hi .. lo] = char(b)
    DEC["%" .. lower(hi) .. lo] = char(b)
    DEC["%" .. hi .. lower(lo)] = char(b)
    DEC["%" .. lower(hi) .. lower(lo)] = char(b)
  end
end

function _M.unescape(s)
  if find(s, "%", 1, true) then return (gsub(s, "%%%x%x", DEC)) end
  return s
end

-- What may stay unescaped in a path segment (RFC 3986 pchar without "%"), in a wildcard value
-- (the same plus "/"), in a literal written in a pattern (the same plus "%", already encoded),
-- and in a query string component (unreserved only).
local SEGMENT_UNSAFE = "[^%w%-%._~!%$&'%(%)%*%+,;=:@]"
local GLOB_UNSAFE = "[^%w%-%._~!%$&'%(%)%*%+,;=:@/]"
local LITERAL_UNSAFE = "[^%w%-%._~!%$&'%*%+,;=:@%%]"
local QUERY_UNSAFE = "[^%w%-%._~]"

local function escape_literal(s)
  return (gsub(gsub(s, LITERAL_UNSAFE, ENC), "%%%x%x", upper))
end
_M.escape_literal = escape_literal

---------------------------------------------------------------------------------------------------
-- Named routes.

local function to_param(v, name, what)
  local t = type(v)
  if t == "string" then return v end
  if t == "number" or t == "boolean" then return tostring(v) end
  if t == "table" then
    if type(v.to_param) == "function" then return tostring(v:to_param()) end
    if v.id ~= nil then return tostring(v.id) end
  end
  misuse(what .. ": param '" .. name .. "' must be a string, a number or a record with an id")
end

local function same(a, b)
  return a == b or tostring(a) == tostring(b)
end

-- Appends the pattern tokens to buf. Inside an optional group a missing parameter (or one equal to
-- its default) drops the group; outside one it is an error.
local function generate(entry, toks, params, used, buf, optional, what)
  local defaults = entry.route.defaults
  for i = 1, #toks do
    local tok = toks[i]
    local t = tok.t
    if t == "sep" then
      buf[#buf + 1] = "/"
    elseif t == "lit" then
      buf[#buf + 1] = escape_literal(tok.s)
    elseif t == "group" then
      local sub_buf, sub_used = {}, {}
      if generate(entry, tok.toks, params, sub_used, sub_buf, true, what) then
        for k = 1, #sub_buf do buf[#buf + 1] = sub_buf[k] end
        for k in pairs(sub_used) do used[k] = true end
      end
    else
      local name = tok.name
      local v = params[name]
      local d = defaults[name]
      if v == nil or (optional and d ~= nil and same(v, d)) then
        if optional then return false end
        v = d
        if v == nil then
          misuse(what .. ": missing required param '" .. name .. "' for " .. entry.route.path)
        end
      end
      v = to_param(v, name, what)
      if v == "" then
        if optional then return false end
        misuse(what .. ": param '" .. name .. "' is empty")
      end
      local pat = entry.cons[name]
      if pat and not find(v, pat) then
        misuse(what .. ": param '" .. name .. "' = '" .. v .. "' does not match its constraint " .. pat)
      end
      local enc
      if t == "glob" then
        enc = gsub(v, GLOB_UNSAFE, ENC)
        if entry.has_format and entry.escape_dot[name] then enc = gsub(enc, "%.", "%%2E") end
      else
        enc = gsub(v, SEGMENT_UNSAFE, ENC)
        if entry.escape_dot[name] then enc = gsub(enc, "%.", "%%2E") end
      end
      buf[#buf + 1] = enc
      used[name] = true
    end
  end
  return true
end

local function query_pairs(out, key, v, what)
  if type(v) == "table" and v.to_param == nil and v.id == nil then
    if #v > 0 or next(v) == nil then
      for i = 1, #v do query_pairs(out, key .. "[]", v[i], what) end
    else
      local keys = {}
      for k in pairs(v) do keys[#keys + 1] = tostring(k) end
      sort(keys)
      for i = 1, #keys do
        local k = keys[i]
        local sv = v[k]
        if sv == nil then sv = v[tonumber(k)] end
        query_pairs(out, key .. "[" .. k .. "]", sv, what)
      end
    end
    return
  end
  out[#out + 1] = gsub(key, QUERY_UNSAFE, ENC) .. "=" .. gsub(to_param(v, key, what), QUERY_UNSAFE, ENC)
end

-- url_for(router, name, params) → path (with a query string for the params the path does not use).
function _M.url_for(router, name, params)
  local entry = router._names[name]
  if entry == nil then misuse("url_for: no route named '" .. tostring(name) .. "'") end
  if params == nil then params = EMPTY
  elseif type(params) ~= "table" then misuse("url_for: params must be a table") end
  local what = "url_for(\"" .. name .. "\")"
  local buf, used = {}, {}
  generate(entry, entry.toks, params, used, buf, false, what)
  local path = concat(buf)
  if path == "" then path = "/" end
  local defaults = entry.route.defaults
  local keys = {}
  for k, v in pairs(params) do
    if not used[k] and not (defaults[k] ~= nil and same(v, defaults[k])) then
      if type(k) ~= "string" then misuse(what .. ": param keys must be strings") end
      keys[#keys + 1] = k
    end
  end
  if #keys == 0 then return path end
  sort(keys)
  local out = {}
  for i = 1, #keys do query_pairs(out, keys[i], params[keys[i]], what) end
  if #out == 0 then return path end
  return path .. "?" .. concat(out, "&")
end

return _M
