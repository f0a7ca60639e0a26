-- apps/hello: a tour of routing and controllers.
return function(r)
  r:root("pages#home")
  r:get("/json", "pages#json")
  r:get("/hello/:name", "greetings#show", {as = "greeting"})
  r:get("/sleep", "pages#sleep")
  r:get("/error", "pages#error")
  r:post("/echo", "pages#echo")
  r:get("/stream", "pages#chunks")
  r:get("/old-home", "pages#moved")

  -- In-memory notes: index/show/create/update/destroy, plus a member route.
  r:resources("notes", {}, function(r)
    r:member(function(r) r:post("pin") end)
  end)

  r:namespace("api", function(r)
    r:namespace("v1", function(r)
      r:get("/status", "status#show")
    end)
  end)
end
