-- rage.multipart: multipart/form-data bodies (RFC 7578) into params.
--
-- Fields become strings under their (Rails-style, possibly nested) names; file fields become
-- {filename =, content_type =, path =, size =} with the bytes in a temporary file that is removed
-- when the request ends. The body is already bounded by the server's max_body; the number of
-- parts is bounded here too.

local params = require("rage.params")
local errors = require("rage.errors")

local find, sub, match, lower, gsub = string.find, string.sub, string.match, string.lower, string.gsub
local open, tmpname, remove = io.open, os.tmpname, os.remove

local _M = {}

_M.max_parts = 1000

local function bad(msg)
  errors.raise("request.invalid_multipart", msg, {status = 400}, 3)
end

local function boundary_of(ct)
  local b = match(ct, ';%s*[Bb][Oo][Uu][Nn][Dd][Aa][Rr][Yy]="([^"]+)"') or match(ct, ";%s*[Bb][Oo][Uu][Nn][Dd][Aa][Rr][Yy]=([^;%s]+)")
  if not b or #b > 70 then return nil end
  return b
end

local function header_param(value, name)
  return match(value, ";%s*" .. name .. '="([^"]*)"') or match(value, ";%s*" .. name .. "=([^;%s]+)")
end

-- Parses the request's body; returns the params table.
function _M.parse(req)
  local ct = req.box:header("content-type") or ""
  local boundary = boundary_of(ct)
  if not boundary then bad("multipart/form-data without a usable boundary") end
  local body = req.box:body()
  local delim = "--" .. boundary
  local out = {}
  local pos = find(body, delim, 1, true)
  if not pos then bad("multipart body without its boundary") end
  pos = pos + #delim
  local parts = 0
  while true do
    if sub(body, pos, pos + 1) == "--" then break end          -- closing delimiter
    if sub(body, pos, pos + 1) ~= "\r\n" then bad("malformed multipart delimiter line") end
    pos = pos + 2
    parts = parts + 1
    if parts > _M.max_parts then bad("too many multipart parts") end
    local head_end = find(body, "\r\n\r\n", pos, true)
    if not head_end then bad("multipart part without the end of its headers") end
    local name, filename, ctype
    for line in (sub(body, pos, head_end - 1) .. "\r\n"):gmatch("(.-)\r\n") do
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
    local data_start = head_end + 4
    local next_delim = find(body, "\r\n" .. delim, data_start, true)
    if not next_delim then bad("multipart part without a closing boundary") end
    local data = sub(body, data_start, next_delim - 1)
    pos = next_delim + 2 + #delim
    if name and name ~= "" then
      if filename then
        local path = tmpname()
        local f = open(path, "wb")
        if not f then errors.raise("request.upload", "cannot write an upload to " .. path) end
        f:write(data)
        f:close()
        req:on_cleanup(function() remove(path) end)
        local file = {filename = gsub(filename, "[%c/\\]", "_"), content_type = ctype or "application/octet-stream",
                      path = path, size = #data}
        params.store(out, name, file)
      else
        params.store(out, name, data)
      end
    end
  end
  return out
end

return _M
