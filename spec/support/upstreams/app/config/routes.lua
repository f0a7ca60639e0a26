return function(r)
  r:match("/echo", "upstream#echo", {via = "all"})
  r:get("/sleep", "upstream#sleep")
  r:get("/big", "upstream#big")
  r:get("/chunks", "upstream#chunks")
  r:match("/redirect", "upstream#redirect", {via = "all"})
  r:get("/status", "upstream#status")
  r:get("/hello", "upstream#hello")
end
