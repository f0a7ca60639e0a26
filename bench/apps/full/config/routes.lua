-- The benchmark workloads (see bench/RESULTS.md): the same paths on every server.
return function(r)
  r:get("/json", "bench#json")                    -- W1
  r:get("/db", "bench#db")                        -- W2
  r:get("/queries", "bench#queries")              -- W3
  r:get("/wait", "bench#wait")                    -- W4
  r:get("/accounts/:id/items", "items#index")     -- W5
end
