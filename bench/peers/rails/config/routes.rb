Rails.application.routes.draw do
  get "/json", to: "bench#json"                   # W1
  get "/db", to: "bench#db"                       # W2
  get "/queries", to: "bench#queries"             # W3
  get "/wait", to: "bench#wait"                   # W4
  get "/accounts/:id/items", to: "items#index"    # W5
end
