return function(r)
  r:get("/greet/:name", "host#greet")
  r:get("/wait", "host#wait")
end
