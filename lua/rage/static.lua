-- rage.static: files from a directory (an app's public/), served by the core.
--
-- This module decides what to send: the file (never outside the root: decoded "..", NUL and
-- symlinks that leave the root are refused), a precompressed .gz twin when the client accepts
-- gzip, 304 for If-None-Match / If-Modified-Since, a single byte range (206, or 416 when it
-- cannot be satisfied). The core then sends the bytes with sendfile(2): box:send_file().

local core = require("rage.core")
local params = require("rage.params")
local trim = require("rage.text").trim

local find, sub, lower, match, format, gmatch = string.find, string.sub, string.lower, string.match, string.format, string.gmatch
local tonumber, type, date, floor, ipairs, byte = tonumber, type, os.date, math.floor, ipairs, string.byte
local realpath, stat = core.realpath, core.stat
local leaf_now = require("rage.leaf").now

local _M = {}

local SLASH = 47   -- "/"

local TYPES = {
  html = "text/html; charset=utf-8", htm = "text/html; charset=utf-8",
  css = "text/css; charset=utf-8", js = "text/javascript; charset=utf-8",
  mjs = "text/javascript; charset=utf-8", json = "application/json", map = "application/json",
  txt = "text/plain; charset=utf-8", csv = "text/csv; charset=utf-8", xml = "application/xml",
  svg = "image/svg+xml", png = "image/png", jpg = "image/jpeg", jpeg = "image/jpeg",
  gif = "image/gif", webp = "image/webp", avif = "image/avif", ico = "image/x-icon",
  woff = "font/woff", woff2 = "font/woff2", ttf = "font/ttf", otf = "font/otf",
  pdf = "application/pdf", wasm = "application/wasm", zip = "application/zip",
  gz = "application/gzip", mp4 = "video/mp4", webm = "video/webm", mp3 = "audio/mpeg",
  wav = "audio/wav", ogg = "audio/ogg",
}
_M.TYPES = TYPES

function _M.content_type(path)
  local ext = match(path, "%.([%w]+)$")
  return ext and TYPES[lower(ext)] or "application/octet-stream"
end

local function http_date(t)
  return date("!%a, %d %b %Y %H:%M:%S GMT", t)
end
_M.http_date = http_date

-- Resolves a request path to a file inside `root` (an absolute, canonical directory), or nil.
function _M.resolve(root, path)
  local decoded = params.unescape(path)
  if find(decoded, "%z") or find(decoded, "\\", 1, true) then return nil end
  for seg in gmatch(decoded, "[^/]+") do
    if seg == ".." or seg == "." then return nil end
  end
  local full = root .. decoded
  if sub(full, -1) == "/" then full = full .. "index.html" end
  local real = realpath(full)
  if not real or sub(real, 1, #root + 1) ~= root .. "/" then return nil end
  local kind = stat(real)
  if kind == "directory" then
    real = realpath(real .. "/index.html")
    if not real or sub(real, 1, #root + 1) ~= root .. "/" then return nil end
    kind = stat(real)
  end
  if kind ~= "file" then return nil end
  return real
end

-- Parses a single "bytes=" range against `size`: returns offset, length; or false when it
-- cannot be satisfied; or nil to ignore it (absent, malformed or several ranges).
function _M.parse_range(h, size)
  if not h then return nil end
  local a, b = match(h, "^%s*bytes%s*=%s*(%d*)%s*%-%s*(%d*)%s*$")
  if not a or (a == "" and b == "") then return nil end
  if a == "" then
    local n = tonumber(b)
    if n == 0 then return false end
    if n > size then n = size end
    return size - n, n
  end
  local first = tonumber(a)
  local last = b ~= "" and tonumber(b) or size - 1
  if first >= size then return false end
  if last < first then return nil end
  if last >= size then last = size - 1 end
  return first, last - first + 1
end

local function etag_matches(list, etag)
  if not list then return false end
  if match(list, "^%s*%*%s*$") then return true end
  local weakless = etag:gsub("^W/", "")
  for tag in gmatch(list, "[^,]+") do
    tag = trim(tag):gsub("^W/", "")
    if tag == weakless then return true end
  end
  return false
end

-- Sends `file` (resolved, inside its root) for `req` with conditional and range handling.
-- `headers` is the response header table to complete and send.
function _M.send(req, file, headers)
  local box = req.box
  headers["accept-ranges"] = "bytes"
  local ae = box:header("accept-encoding")
  if ae and find(lower(ae), "gzip", 1, true) and not headers["content-encoding"] then
    local gz = realpath(file .. ".gz")
    local dir = match(file, "^(.*)/[^/]*$")
    if gz and sub(gz, 1, #dir + 1) == dir .. "/" and stat(gz) == "file" then
      file = gz
      headers["content-encoding"] = "gzip"
    end
  end
  headers["vary"] = "Accept-Encoding"
  local _, mtime, size = stat(file)
  mtime = floor(mtime)
  local etag = format('"%x-%x%s"', size, mtime, headers["content-encoding"] and "-gz" or "")
  local modified = http_date(mtime)
  headers["etag"] = etag
  headers["last-modified"] = modified
  if req.with_headers then req:with_headers(headers) end
  local inm = box:header("if-none-match")
  if (inm and etag_matches(inm, etag)) or (not inm and box:header("if-modified-since") == modified) then
    req.status = 304
    box:respond(304, headers, "")
    return true
  end
  local status, off, len = 200, 0, size
  local range = box:header("range")
  local if_range = box:header("if-range")
  if range and (not if_range or if_range == etag or if_range == modified) then
    local o, l = _M.parse_range(range, size)
    if o == false then
      headers["content-range"] = "bytes */" .. size
      req.status = 416
      box:respond(416, headers, "")
      return true
    elseif o then
      status, off, len = 206, o, l
      headers["content-range"] = format("bytes %d-%d/%d", o, o + l - 1, size)
    end
  end
  req.status = status
  local ok, _, msg = box:send_file(status, headers, file, off, len)
  if not ok then error(msg, 0) end
  return true
end

-- Answers a GET or HEAD for `req` from `root` if a file matches; returns true when it did.
function _M.serve(req, box, root, opts)
  local method = req.method
  if method ~= "GET" and method ~= "HEAD" then return false end
  local file = _M.resolve(root, req.path)
  if not file then return false end
  local headers = {["content-type"] = _M.content_type(file)}
  if opts and opts.cache_control then headers["cache-control"] = opts.cache_control end
  return _M.send(req, file, headers)
end

-- A middleware serving `dir` (made absolute and canonical once). To keep requests for dynamic
-- routes free of file system calls, it remembers the names at the top of the folder (read again
-- at most once a second) and looks for a file only when the path's first segment is one of them.
function _M.middleware(dir, opts)
  local root = realpath(dir)
  if not root then return nil end
  local names, checked = {}, -1   -- "/" .. name for each name at the top of the folder
  local function refresh()
    local now = leaf_now()
    if now - checked < 1 then return end
    checked = now
    names = {}
    for _, n in ipairs(core.scandir(root) or {}) do names["/" .. n] = true end
  end
  return function(req, nxt)
    local method = req.method
    if method ~= "GET" and method ~= "HEAD" then return nxt(req) end
    refresh()
    -- The path's first segment with its slash, cut with find and sub (compiled, unlike a pattern
    -- capture); a path of one segment is looked up as it is, without making a string.
    local path = req.path
    if byte(path, 1) == SLASH then
      local slash = find(path, "/", 2, true)
      local first = slash and sub(path, 1, slash - 1) or path
      if first ~= "/" and not names[first] and not find(first, "%", 1, true) then
        return nxt(req)
      end
    end
    if _M.serve(req, req.box, root, opts) then
      req.status = req.status or 200
      return
    end
    return nxt(req)
  end
end

return _M
