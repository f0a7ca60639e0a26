local Proxy = rage.controller("proxy")

local UPSTREAM = os.getenv("RAGE_BENCH_UPSTREAM") or "http://127.0.0.1:8080/wait"

-- One outbound request per request, through the keep-alive pool.
function Proxy:show()
  local res = rage.http.get(UPSTREAM, {timeout = 5})
  self:render{body = res.body, content_type = "application/json", status = res.status}
end

return Proxy
