-- rage.multipart: multipart/form-data bodies (RFC 7578) into params.
--
-- Fields become strings under their (Rails-style, possibly nested) names; file fields become
-- {filename =, content_type =, path =, size =} with the bytes in a temporary file in $TMPDIR
-- (else /tmp) that is removed when the request ends.
--
-- The parser streams: it reads the body in chunks (from memory, or from the temporary file the
-- core wrote a large body to while it arrived) and copies each file part to its own file piece by
-- piece, so an upload never has to fit in memory. The body is bounded by the server's max_body
-- (or body_limits); the number of parts, a part's headers and a non-file field are bounded here.

local params = require("rage.params")
local errors = require("rage.errors")
local core = require("rage.core")

local find, sub, match, lower, gsub = string.find, string.sub, string.match, string.lower, string.gsub
local open, remove, concat = io.open, os.remove, table.concat

local _M = {}

_M.max_parts = 1000
_M.max_part_header = 16 * 1024       -- bytes of headers per part
_M.max_field_size = 1024 * 1024      -- a field that is not a file is kept in memory
_M.chunk_size = 64 * 1024            -- bytes read from the body at a time

local function bad(msg, status)
  errors.raise("request.invalid_multipart", msg, {status = status or 400}, 3)
end

local function boundary_of(ct)
  local b = match(ct, ';%s*[Bb][Oo][Uu][Nn][Dd][Aa][Rr][Yy]="([^"]+)"') or match(ct, ";%s*[Bb][Oo][Uu][Nn][Dd][Aa][Rr][Yy]=([^;%s]+)")
  if not b or #b > 70 then return nil end
  return b
end

local function header_param(value, name)
  return match(value, ";%s*" .. name .. '="([^"]*)"') or match(value, ";%s*" .. name .. "=([^;%s]+)")
end

-- A window over the body: `buf` holds the unconsumed bytes; more() appends the next chunk.
local function reader(req)
  local r = {buf = ""}
  local next_chunk = req:each_body_chunk(_M.chunk_size)
  function r.more()
    local chunk = next_chunk()
    if not chunk then return false end
    r.buf = r.buf .. chunk
    return true
  end
  return r
end

-- Parses a part's header block into name, filename and content type.
local function part_head(block)
  local name, filename, ctype
  for line in (block .. "\r\n"):gmatch("(.-)\r\n") do
    local k, v = match(line, "^([^:]+):%s*(.*)$")
    if not k then bad("malformed multipart part header") end
    k = lower(k)
    if k == "content-disposition" then
      name = header_param(v, "name")
      filename = header_param(v, "filename")
    elseif k == "content-type" then
      ctype = v
    end
  end
  return name, filename, ctype
end

-- A sink for one part's data: a temporary file for uploads, a bounded list of pieces for fields.
local function file_sink(req)
  local path = core.mktemp("rage-upload-")
  req:on_cleanup(function() remove(path) end)
  local f = open(path, "wb")
  if not f then errors.raise("request.upload", "cannot write an upload to " .. path) end
  local s = {path = path, size = 0}
  function s.write(data)
    s.size = s.size + #data
    if not f:write(data) then
      f:close()
      errors.raise("request.upload", "cannot write an upload to " .. path)
    end
  end
  function s.close() f:close() end
  return s
end

local function field_sink(name)
  local s = {size = 0, pieces = {}}
  function s.write(data)
    s.size = s.size + #data
    if s.size > _M.max_field_size then
      bad("multipart field '" .. name .. "' is larger than " .. _M.max_field_size .. " bytes", 413)
    end
    s.pieces[#s.pieces + 1] = data
  end
  function s.close() s.value = concat(s.pieces) end
  return s
end

-- Parses the request's body; returns the params table.
function _M.parse(req)
  local boundary = boundary_of(req.box:header("content-type") or "")
  if not boundary then bad("multipart/form-data without a usable boundary") end
  local delim = "--" .. boundary
  local sep = "\r\n" .. delim           -- ends every part's data
  local r = reader(req)
  local out = {}

  -- The preamble, up to the first delimiter (kept short: only a tail that could start it).
  local pos
  while true do
    pos = find(r.buf, delim, 1, true)
    if pos then break end
    if #r.buf > #delim then r.buf = sub(r.buf, -#delim) end
    if not r.more() then bad("multipart body without its boundary") end
  end
  r.buf = sub(r.buf, pos + #delim)

  local parts = 0
  while true do
    while #r.buf < 2 and r.more() do end
    local after = sub(r.buf, 1, 2)
    if after == "--" then break end                                 -- closing delimiter
    if after ~= "\r\n" then bad("malformed multipart delimiter line") end
    parts = parts + 1
    if parts > _M.max_parts then bad("too many multipart parts") end

    local head_end
    while true do
      head_end = find(r.buf, "\r\n\r\n", 3, true)
      if head_end then break end
      if #r.buf > _M.max_part_header then bad("multipart part headers are too large") end
      if not r.more() then bad("multipart part without the end of its headers") end
    end
    local name, filename, ctype = part_head(sub(r.buf, 3, head_end - 1))
    r.buf = sub(r.buf, head_end + 4)

    local keep = name and name ~= ""
    local sink = keep and (filename and file_sink(req) or field_sink(name)) or nil
    -- Copy data up to the separator; keep back a tail that could be the separator's start.
    while true do
      local at = find(r.buf, sep, 1, true)
      if at then
        if sink then sink.write(sub(r.buf, 1, at - 1)) end
        r.buf = sub(r.buf, at + #sep)
        break
      end
      local safe = #r.buf - #sep + 1
      if safe > 0 then
        if sink then sink.write(sub(r.buf, 1, safe)) end
        r.buf = sub(r.buf, safe + 1)
      end
      if not r.more() then
        if sink and sink.path then sink.close() end
        bad("multipart part without a closing boundary")
      end
    end
    if sink then
      sink.close()
      if sink.path then
        params.store(out, name, {filename = gsub(filename, "[%c/\\]", "_"),
                                 content_type = ctype or "application/octet-stream",
                                 path = sink.path, size = sink.size})
      else
        params.store(out, name, sink.value)
      end
    end
  end
  return out
end

return _M
