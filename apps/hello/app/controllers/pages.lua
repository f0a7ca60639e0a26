local Pages = rage.controller("pages")

function Pages:home()
  self:render{plain = "Hello from rage-lua!\n"}
end

function Pages:json()
  self:render{json = {message = "Hello, World!"}}
end

-- /sleep?ms=N waits N milliseconds without blocking other requests.
function Pages:sleep()
  local ms = tonumber(self.params.ms) or 100
  if ms < 0 or ms > 60000 then
    return self:render{json = {error = "ms must be between 0 and 60000"}, status = "bad_request"}
  end
  rage.sleep(ms / 1000)
  self:render{json = {slept_ms = ms}}
end

function Pages:error()
  error("this action fails on purpose")
end

-- POST /echo returns what it was sent: the body and its length.
function Pages:echo()
  local body = self.request:body()
  self:render{json = {length = #body, body = body}}
end

-- /stream?n=N sends N chunks, one every 10 ms.
function Pages:chunks()
  local n = tonumber(self.params.n) or 3
  self:stream(function(write)
    for i = 1, n do
      write("chunk " .. i .. "\n")
      rage.sleep(0.01)
    end
  end)
end

-- A permanent redirect to a path on this host.
function Pages:moved()
  self:redirect_to("/", {status = "moved_permanently"})
end

return Pages
