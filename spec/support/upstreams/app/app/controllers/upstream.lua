local Upstream = rage.controller("upstream")

-- Everything the client sent: method, path, raw query, headers and body.
function Upstream:echo()
  local req = self.request
  self:render{json = {
    method = req.method,
    path = req.path,
    query = req.query_string or "",
    headers = req:headers(),
    body = req:body(),
  }, headers = {["x-echo"] = "1"}}
end

-- /sleep?ms=N answers after N milliseconds.
function Upstream:sleep()
  local ms = tonumber(self.params.ms) or 100
  rage.sleep(ms / 1000)
  self:render{json = {slept_ms = ms}}
end

-- /big?n=N answers N bytes with a Content-Length.
function Upstream:big()
  local n = tonumber(self.params.n) or 1024
  self:render{plain = string.rep("x", n)}
end

-- /chunks?n=N&ms=M streams N chunks ("chunk 1\n", ...) M milliseconds apart.
function Upstream:chunks()
  local n = tonumber(self.params.n) or 3
  local ms = tonumber(self.params.ms) or 10
  self:stream(function(write)
    for i = 1, n do
      write("chunk " .. i .. "\n")
      if ms > 0 then rage.sleep(ms / 1000) end
    end
  end)
end

-- /redirect?to=URL&status=S&hops=N: N redirects to itself, then one to `to`.
function Upstream:redirect()
  local hops = tonumber(self.params.hops) or 0
  local status = tonumber(self.params.status) or 302
  local to = self.params.to or "/echo"
  local loc = to
  if hops > 0 then
    loc = "/redirect?status=" .. status .. "&hops=" .. (hops - 1) .. "&to=" .. rage.http.encode_component(to)
  end
  self:head(status, {location = loc})
end

function Upstream:status()
  self:render{plain = "status", status = tonumber(self.params.code) or 200}
end

-- /fanout: a controller that calls this same app twice at once (/sleep?ms=100 each) through
-- rage.await and reports how long the pair took.
function Upstream:fanout()
  local base = "http://" .. self.request:host()
  local t0 = rage.clock()
  local a, b = rage.await(
    function() return rage.http.get(base .. "/sleep?ms=100"):json() end,
    function() return rage.http.get(base .. "/sleep?ms=100"):json() end)
  self:render{json = {a = a.slept_ms, b = b.slept_ms, elapsed_ms = (rage.clock() - t0) * 1000}}
end

function Upstream:hello()
  self:render{plain = "hello"}
end

return Upstream
