return function(r)
  r:get("/upstream", "proxy#show")
end
