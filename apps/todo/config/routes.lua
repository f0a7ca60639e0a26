return function(r)
  r:root("todos#index")
  r:resources("todos", {}, function(r)
    r:member(function(r) r:post("done") end)
  end)
  r:get("/tags", "tags#index")
  r:get("/health", "health#show")
end
