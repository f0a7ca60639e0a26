-- spec/support/client.lua: raw HTTP/1.x over luasocket for end-to-end specs, and curl.
--
--   local client = require("spec.support.client")
--   local c = assert(client.connect(port))
--   c:send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")          -- exact bytes
--   c:send_split(bytes, 1)                              -- byte by byte, with small pauses
--   local res = c:read_response()                       -- {status, headers, body, ...}
--   assert.is_true(c:wait_closed())                     -- the server closed the connection
--
-- Nothing here is lenient on purpose: a response is parsed from the exact bytes received.

local socket = require("socket")

local _M = {}

local DEFAULT_TIMEOUT = 5

local Conn = {}
Conn.__index = Conn

-- connect(port, host?, timeout?) -> conn, or nil and an error
function _M.connect(port, host, timeout)
  host = host or "127.0.0.1"
  local sock, err
  if host:find(":", 1, true) then
    sock, err = socket.tcp6()
  else
    sock, err = socket.tcp()
  end
  if not sock then return nil, err end
  sock:settimeout(timeout or DEFAULT_TIMEOUT)
  local ok
  ok, err = sock:connect(host, port)
  if not ok then
    sock:close()
    return nil, err
  end
  sock:setoption("tcp-nodelay", true)
  return setmetatable({sock = sock, buf = "", closed = false, sent = 0}, Conn)
end

-- Sends all of `data`; returns true, or nil and the error (the peer may have closed).
function Conn:send(data)
  self.sock:settimeout(DEFAULT_TIMEOUT)
  local i = 1
  while i <= #data do
    local last, err, partial = self.sock:send(data, i)
    if not last then
      self.sent = self.sent + ((partial or i - 1) - i + 1)
      self.send_error = err
      return nil, err
    end
    self.sent = self.sent + (last - i + 1)
    i = last + 1
  end
  return true
end

-- Sends `data` in pieces: `at` is a step (1 = byte by byte) or a list of offsets to cut after;
-- `pause` seconds between pieces (default 2 ms). Stops at the first send error (the server may
-- close the connection early on purpose) and returns nil, err then. With opts.until_answered,
-- sending stops as soon as the server has sent something (returns nil, "answered"), as a
-- client that reads while it writes would.
function Conn:send_split(data, at, pause, opts)
  pause = pause or 0.002
  opts = opts or {}
  local cuts = {}
  if type(at) == "number" then
    for i = at, #data - 1, at do cuts[#cuts + 1] = i end
  else
    for _, v in ipairs(at or {}) do
      if v > 0 and v < #data then cuts[#cuts + 1] = v end
    end
    table.sort(cuts)
  end
  local prev = 0
  cuts[#cuts + 1] = #data
  for _, cut in ipairs(cuts) do
    if opts.until_answered and prev > 0 and (self.buf ~= "" or self.sock:dirty()
        or (socket.select({self.sock}, nil, 0))[1]) then
      return nil, "answered"
    end
    if cut > prev then
      local ok, err = self:send(data:sub(prev + 1, cut))
      if not ok then return nil, err end
      prev = cut
      if cut < #data and pause > 0 then socket.sleep(pause) end
    end
  end
  return true
end

-- Reads whatever arrives before `deadline` (absolute time): true when bytes were added, false
-- on timeout, nil once the peer has closed (or reset) the connection.
function Conn:fill(deadline)
  if self.closed then return nil end
  local remaining = deadline - socket.gettime()
  if not self.sock:dirty() then
    if remaining <= 0 then return false end
    local r = socket.select({self.sock}, nil, remaining)
    if not r or #r == 0 then return false end
  end
  self.sock:settimeout(0)
  local data, err, partial = self.sock:receive(65536)
  data = data or partial
  if data and #data > 0 then self.buf = self.buf .. data end
  if err and err ~= "timeout" then
    self.closed = true
    self.close_reason = err
    if data and #data > 0 then return true end
    return nil
  end
  return data ~= nil and #data > 0
end

-- Returns the next `n` bytes, or nil, "timeout"/"closed".
function Conn:read_bytes(n, timeout)
  local deadline = socket.gettime() + (timeout or DEFAULT_TIMEOUT)
  while #self.buf < n do
    local r = self:fill(deadline)
    if r == false then return nil, "timeout" end
    if r == nil then return nil, "closed" end
  end
  local s = self.buf:sub(1, n)
  self.buf = self.buf:sub(n + 1)
  return s
end

-- Returns the bytes up to and including `delim`, or nil, "timeout"/"closed".
function Conn:read_until(delim, timeout)
  local deadline = socket.gettime() + (timeout or DEFAULT_TIMEOUT)
  while true do
    local e = select(2, self.buf:find(delim, 1, true))
    if e then
      local s = self.buf:sub(1, e)
      self.buf = self.buf:sub(e + 1)
      return s
    end
    local r = self:fill(deadline)
    if r == false then return nil, "timeout" end
    if r == nil then return nil, "closed" end
  end
end

-- Everything until the peer closes (or the timeout).
function Conn:read_all(timeout)
  local deadline = socket.gettime() + (timeout or DEFAULT_TIMEOUT)
  while true do
    local r = self:fill(deadline)
    if r == false then return self:take(), "timeout" end
    if r == nil then return self:take(), "closed" end
  end
end

function Conn:take()
  local s = self.buf
  self.buf = ""
  return s
end

local function parse_head(head)
  local res = {headers = {}, header_list = {}, head = head}
  local first, rest = head:match("^([^\r\n]*)\r\n(.*)$")
  if not first then return nil, "malformed status line: " .. head end
  local version, status, reason = first:match("^HTTP/(%d%.%d) (%d%d%d) ?(.*)$")
  if not version then return nil, "malformed status line: " .. first end
  res.version, res.status, res.reason = version, tonumber(status), reason
  for line in rest:gmatch("([^\r\n]*)\r\n") do
    if line ~= "" then
      local name, value = line:match("^([^:]+):[ \t]*(.-)[ \t]*$")
      if not name then return nil, "malformed header line: " .. line end
      local lname = name:lower()
      res.header_list[#res.header_list + 1] = {name, value}
      if res.headers[lname] then
        res.headers[lname] = res.headers[lname] .. ", " .. value
      else
        res.headers[lname] = value
      end
    end
  end
  return res
end

-- Reads one response. opts: head = true (answer to HEAD: no body), timeout (seconds).
-- Returns the response {status, reason, version, headers (lower-case names), header_list,
-- body, chunked, raw} or nil, "timeout"/"closed"/"malformed ...", and the bytes received.
function Conn:read_response(opts)
  opts = opts or {}
  local timeout = opts.timeout or DEFAULT_TIMEOUT
  local start_buf = self.buf
  local head, err = self:read_until("\r\n\r\n", timeout)
  if not head then return nil, err, start_buf .. self.buf end
  local res, perr = parse_head(head)
  if not res then return nil, perr, head end
  local raw = {head}
  local st = res.status
  local te, cl = res.headers["transfer-encoding"], res.headers["content-length"]
  if opts.head or (st >= 100 and st < 200) or st == 204 or st == 304 then
    res.body = ""
  elseif te and te:lower():find("chunked") then
    res.chunked = true
    local parts, trailers = {}, {}
    while true do
      local line = self:read_until("\r\n", timeout)
      if not line then return nil, "incomplete chunked body", table.concat(raw) end
      raw[#raw + 1] = line
      local size = tonumber(line:match("^(%x+)"), 16)
      if not size then return nil, "malformed chunk size: " .. line, table.concat(raw) end
      if size == 0 then
        while true do
          local t = self:read_until("\r\n", timeout)
          if not t then return nil, "incomplete chunked trailer", table.concat(raw) end
          raw[#raw + 1] = t
          if t == "\r\n" then break end
          trailers[#trailers + 1] = t
        end
        break
      end
      local data = self:read_bytes(size + 2, timeout)
      if not data then return nil, "incomplete chunk", table.concat(raw) end
      raw[#raw + 1] = data
      if data:sub(-2) ~= "\r\n" then return nil, "chunk not followed by CRLF", table.concat(raw) end
      parts[#parts + 1] = data:sub(1, -3)
    end
    res.body = table.concat(parts)
    res.chunks = #parts
    res.trailers = trailers
  elseif cl then
    local n = tonumber(cl)
    if not n then return nil, "malformed Content-Length: " .. cl, head end
    local data = ""
    if n > 0 then
      data = self:read_bytes(n, timeout)
      if not data then return nil, "incomplete body", head .. self.buf end
    end
    raw[#raw + 1] = data
    res.body = data
  else
    -- No framing: the body runs until the server closes.
    local data, why = self:read_all(timeout)
    if why ~= "closed" then return nil, "body without framing did not end", head .. data end
    raw[#raw + 1] = data
    res.body = data
  end
  res.raw = table.concat(raw)
  res.close = (res.headers.connection or ""):lower():find("close") ~= nil
  return res
end

-- Reads `n` responses in a row (stops at the first failure).
function Conn:read_responses(n, opts)
  local list = {}
  for i = 1, n do
    local res, err, raw = self:read_response(opts)
    if not res then return list, err, raw end
    list[i] = res
  end
  return list
end

-- Waits up to `timeout` seconds for the server to close the connection. Returns true once it
-- has (bytes that arrived before the close are kept in self.buf), false if it stays open.
function Conn:wait_closed(timeout)
  local deadline = socket.gettime() + (timeout or DEFAULT_TIMEOUT)
  while true do
    local r = self:fill(deadline)
    if r == nil then return true end
    if r == false then return false end
  end
end

-- True if the connection is still open after `seconds` without the server saying anything.
function Conn:still_open(seconds)
  return not self:wait_closed(seconds) and self.buf == ""
end

function Conn:close()
  if self.sock then self.sock:close() end
  self.closed = true
end

-- Builds a request. headers: list of {name, value} (order kept) or a map.
function _M.build(method, target, headers, body, version)
  local lines = {(method or "GET") .. " " .. target .. " HTTP/" .. (version or "1.1")}
  local list = {}
  if headers and headers[1] then
    list = headers
  elseif headers then
    local names = {}
    for k in pairs(headers) do names[#names + 1] = k end
    table.sort(names)
    for _, k in ipairs(names) do list[#list + 1] = {k, headers[k]} end
  end
  local has_host = false
  for _, h in ipairs(list) do
    if h[1]:lower() == "host" then has_host = true end
  end
  if not has_host and (version or "1.1") == "1.1" then table.insert(list, 1, {"Host", "localhost"}) end
  for _, h in ipairs(list) do lines[#lines + 1] = h[1] .. ": " .. h[2] end
  return table.concat(lines, "\r\n") .. "\r\n\r\n" .. (body or "")
end

-- Encodes `body` as chunks of `size` bytes (default: one chunk), with the final 0 chunk.
function _M.chunked(body, size)
  size = size or math.max(#body, 1)
  local out = {}
  for i = 1, #body, size do
    local piece = body:sub(i, i + size - 1)
    out[#out + 1] = string.format("%x\r\n%s\r\n", #piece, piece)
  end
  out[#out + 1] = "0\r\n\r\n"
  return table.concat(out)
end

-- One request on a fresh connection: request(port, method, target, headers, body, opts), or
-- request(port, raw_bytes). Returns the response, or nil, err, raw.
function _M.request(port, method, target, headers, body, opts)
  opts = opts or {}
  local c, err = _M.connect(port, opts.host)
  if not c then return nil, err end
  local bytes = target and _M.build(method, target, headers, body) or method
  c:send(bytes)
  local res, rerr, raw = c:read_response({head = method == "HEAD", timeout = opts.timeout})
  c:close()
  return res, rerr, raw
end

-- Decodes a JSON body; nil when it is not JSON.
function _M.json(body)
  local ok, v = pcall(require("cjson").decode, body)
  if ok then return v end
  return nil
end

-- curl(args) runs curl with the given argument list and returns status, body, headers.
function _M.curl(args)
  local quote = require("spec.support.server").quote
  local dir = io.popen("mktemp -d /tmp/rage-e2e-curl.XXXXXX"):read("*l")
  local parts = {"curl", "-sS", "--max-time", "10", "-o", quote(dir .. "/body"), "-D", quote(dir .. "/head"),
                 "-w", quote("%{http_code}")}
  for _, a in ipairs(args) do parts[#parts + 1] = quote(a) end
  local f = io.popen(table.concat(parts, " ") .. " 2>" .. quote(dir .. "/err"))
  local code = f:read("*a")
  f:close()
  local function slurp(name)
    local h = io.open(dir .. "/" .. name, "rb")
    if not h then return "" end
    local s = h:read("*a")
    h:close()
    return s
  end
  local body, head, err = slurp("body"), slurp("head"), slurp("err")
  os.execute("rm -rf " .. quote(dir))
  local headers = {}
  for line in head:gmatch("([^\r\n]+)") do
    local k, v = line:match("^([^:]+):%s*(.-)%s*$")
    if k then headers[k:lower()] = v end
  end
  return tonumber(code), body, headers, err
end

return _M
