return function(r)
  r:root("pages#home")
  r:get("/json", "pages#json")
  r:get("/hello/:name", "greetings#show")
  r:get("/sleep", "pages#sleep")
  r:get("/error", "pages#error")
  r:post("/echo", "pages#echo")
  r:get("/stream", "pages#chunks")
end
