-- Specs for rage.router: the DSL, the matcher and url_for.

local router = require("rage.router")

local function draw(fn)
  local r = router.new()
  r:draw(fn)
  r:compile()
  return r
end

-- "controller#action" of what matched, or nil.
local function target(r, method, path, host)
  local route = r:match(method, path, host)
  if route == nil then return nil end
  return route.controller and (route.controller .. "#" .. route.action) or route
end

-- A route's params; match gives nil for a route without any (no table to make).
local function params_of(r, method, path, host)
  local _, params = r:match(method, path, host)
  return params or {}
end

local function by_name(r, name)
  for _, route in ipairs(r:routes()) do
    if route.name == name then return route end
  end
end

-- Runs fn, which must raise; returns the message and the line fn reported as its own.
local function raises(fn)
  local line
  local ok, err = pcall(fn, function() line = debug.getinfo(2, "l").currentline end)
  assert.is_false(ok, "expected an error")
  return tostring(err), line
end

local SPEC = "router_spec.lua"

describe("rage.router", function()

  describe("resources", function()
    local r = draw(function(r) r:resources("photos") end)

    it("maps the five API actions with Rails names", function()
      assert.equal("photos#index", target(r, "GET", "/photos"))
      assert.equal("photos#create", target(r, "POST", "/photos"))
      assert.equal("photos#show", target(r, "GET", "/photos/1"))
      assert.equal("photos#update", target(r, "PATCH", "/photos/1"))
      assert.equal("photos#update", target(r, "PUT", "/photos/1"))
      assert.equal("photos#destroy", target(r, "DELETE", "/photos/1"))
      assert.same({id = "1"}, params_of(r, "GET", "/photos/1"))
      assert.equal("/photos(.:format)", by_name(r, "photos").path)
      assert.equal("/photos/:id(.:format)", by_name(r, "photo").path)
      assert.equal("GET", by_name(r, "photo").verb)
    end)

    it("has no new or edit by default, so /photos/new is a show", function()
      assert.is_nil(by_name(r, "new_photo"))
      assert.is_nil(by_name(r, "edit_photo"))
      assert.same({id = "new"}, params_of(r, "GET", "/photos/new"))
    end)

    it("gives only one route each name", function()
      local named = {}
      for _, route in ipairs(r:routes()) do
        if route.name then
          assert.is_nil(named[route.name])
          named[route.name] = true
        end
      end
      assert.same({photos = true, photo = true}, named)
    end)

    it("adds new and edit when only lists them, before show", function()
      local r2 = draw(function(r) r:resources("photos", {only = {"new", "edit", "show"}}) end)
      assert.equal("photos#new", target(r2, "GET", "/photos/new"))
      assert.equal("photos#edit", target(r2, "GET", "/photos/3/edit"))
      assert.equal("/photos/new(.:format)", by_name(r2, "new_photo").path)
      assert.equal("/photos/:id/edit(.:format)", by_name(r2, "edit_photo").path)
      assert.same({nil, {"GET", "HEAD"}}, {r2:match("POST", "/photos/3")})
      assert.same({nil, nil}, {r2:match("GET", "/photos")})
    end)

    it("honours except", function()
      local r2 = draw(function(r) r:resources("photos", {except = {"destroy", "create"}}) end)
      assert.same({"GET", "HEAD", "PATCH", "PUT"}, select(2, r2:match("DELETE", "/photos/1")))
      assert.same({"GET", "HEAD"}, select(2, r2:match("POST", "/photos")))
    end)

    it("renames the id with param, the URL with path, the controller and the names", function()
      local r2 = draw(function(r)
        r:resources("photos", {param = "slug", path = "pics", controller = "images", as = "pictures"},
          function(r) r:resources("tags", {only = {"index"}}) end)
      end)
      assert.equal("images#show", target(r2, "GET", "/pics/sunset"))
      assert.same({slug = "sunset"}, params_of(r2, "GET", "/pics/sunset"))
      assert.equal("/pics/:slug(.:format)", by_name(r2, "picture").path)
      assert.equal("/pics(.:format)", by_name(r2, "pictures").path)
      assert.equal("/pics/:picture_slug/tags(.:format)", by_name(r2, "picture_tags").path)
      assert.same({picture_slug = "sunset"}, params_of(r2, "GET", "/pics/sunset/tags"))
    end)

    it("puts the controller in a module with module", function()
      local r2 = draw(function(r) r:resources("photos", {module = "admin", only = {"index"}}) end)
      assert.equal("admin/photos#index", target(r2, "GET", "/photos"))
      assert.equal("photos", r2:routes()[1].name)
    end)

    it("parses an optional format", function()
      assert.same({id = "1", format = "json"}, params_of(r, "GET", "/photos/1.json"))
      assert.same({format = "xml"}, params_of(r, "GET", "/photos.xml"))
      assert.equal("photos#index", target(r, "GET", "/photos.xml"))
    end)

    it("uses the singular option and a small inflector", function()
      local r2 = draw(function(r)
        r:resources("categories", {only = {"show"}})
        r:resources("addresses", {only = {"show"}})
        r:resources("boxes", {only = {"show"}})
        r:resources("people", {only = {"show"}})
        r:resources("news", {only = {"index", "show"}})
        r:resources("octopi", {only = {"show"}, singular = "octopus"})
      end)
      for _, name in ipairs({"category", "address", "box", "person", "news", "news_index", "octopus"}) do
        assert.is_table(by_name(r2, name), name)
      end
    end)
  end)

  describe("nested resources", function()
    local r = draw(function(r)
      r:resources("photos", {only = {"index", "show"}}, function(r)
        r:member(function(r) r:post("like") end)
        r:collection(function(r) r:get("search") end)
        r:resources("comments", function(r)
          r:member(function(r) r:put("approve") end)
        end)
        r:get("preview")
      end)
    end)

    it("nests under /photos/:photo_id with prefixed names", function()
      assert.equal("comments#show", target(r, "GET", "/photos/7/comments/42"))
      assert.same({photo_id = "7", id = "42"}, params_of(r, "GET", "/photos/7/comments/42"))
      assert.equal("/photos/:photo_id/comments/:id(.:format)", by_name(r, "photo_comment").path)
      assert.equal("/photos/:photo_id/comments(.:format)", by_name(r, "photo_comments").path)
      assert.equal("comments#create", target(r, "POST", "/photos/7/comments"))
    end)

    it("maps member and collection routes with Rails names", function()
      assert.equal("photos#like", target(r, "POST", "/photos/7/like"))
      assert.same({id = "7"}, params_of(r, "POST", "/photos/7/like"))
      assert.equal("/photos/:id/like(.:format)", by_name(r, "like_photo").path)
      assert.equal("photos#search", target(r, "GET", "/photos/search"))
      assert.equal("/photos/search(.:format)", by_name(r, "search_photos").path)
      assert.equal("comments#approve", target(r, "PUT", "/photos/1/comments/2/approve"))
      assert.is_table(by_name(r, "approve_photo_comment"))
    end)

    it("nests a bare verb in a resources block", function()
      assert.equal("photos#preview", target(r, "GET", "/photos/7/preview"))
      assert.same({photo_id = "7"}, params_of(r, "GET", "/photos/7/preview"))
      assert.is_table(by_name(r, "photo_preview"))
    end)

    it("defines the block's routes before the resource's own, as Rails does", function()
      local names = {}
      for _, route in ipairs(r:routes()) do names[#names + 1] = route.name or "-" end
      assert.equal("like_photo", names[1])
      assert.equal("photos", names[#names - 1])
      assert.equal("photo", names[#names])
    end)

    it("supports on = member / collection", function()
      local r2 = draw(function(r)
        r:resources("photos", {only = {}}, function(r)
          r:get("stats", {on = "collection"})
          r:get("thumb", {on = "member"})
        end)
      end)
      assert.equal("/photos/stats(.:format)", by_name(r2, "stats_photos").path)
      assert.equal("/photos/:id/thumb(.:format)", by_name(r2, "thumb_photo").path)
    end)

    it("carries the id constraint over to the nested param", function()
      local r2 = draw(function(r)
        r:resources("photos", {only = {"show"}, constraints = {id = "%d+"}}, function(r)
          r:resources("tags", {only = {"index"}})
        end)
      end)
      assert.equal("tags#index", target(r2, "GET", "/photos/12/tags"))
      assert.is_nil(r2:match("GET", "/photos/ab/tags"))
      assert.is_nil(r2:match("GET", "/photos/ab"))
    end)
  end)

  describe("singular resource", function()
    local r = draw(function(r)
      r:resource("profile", function(r)
        r:member(function(r) r:post("activate") end)
        r:resources("photos", {only = {"index"}})
      end)
      r:resource("address", {only = {"show", "new", "edit"}})
      r:resource("account", {controller = "users", only = {"show"}})
    end)

    it("has no id and a pluralized controller", function()
      assert.equal("profiles#show", target(r, "GET", "/profile"))
      assert.equal("profiles#create", target(r, "POST", "/profile"))
      assert.equal("profiles#update", target(r, "PATCH", "/profile"))
      assert.equal("profiles#update", target(r, "PUT", "/profile"))
      assert.equal("profiles#destroy", target(r, "DELETE", "/profile"))
      assert.same({}, params_of(r, "GET", "/profile"))
      assert.equal("/profile(.:format)", by_name(r, "profile").path)
      assert.equal("addresses#new", target(r, "GET", "/address/new"))
      assert.equal("/address/edit(.:format)", by_name(r, "edit_address").path)
      assert.equal("/address/new(.:format)", by_name(r, "new_address").path)
      assert.equal("users#show", target(r, "GET", "/account"))
    end)

    it("nests without a param", function()
      assert.equal("profiles#activate", target(r, "POST", "/profile/activate"))
      assert.is_table(by_name(r, "activate_profile"))
      assert.equal("photos#index", target(r, "GET", "/profile/photos"))
      assert.is_table(by_name(r, "profile_photos"))
    end)
  end)

  describe("namespace and scope", function()
    local r = draw(function(r)
      r:namespace("api", function(r)
        r:namespace("v1", function(r)
          r:resources("users", {only = {"index", "show"}})
          r:root("home#index")
        end)
        r:get("status", "status#show")
      end)
      r:namespace("admin", {path = "backstage", as = "bs"}, function(r)
        r:resources("reports", {only = {"index"}})
      end)
      r:scope("/shop", function(r) r:get("cart", "carts#show") end)
      r:scope({module = "legacy"}, function(r) r:get("/old", "pages#old") end)
      r:scope({as = "v2"}, function(r) r:get("/ping", "ping#show") end)
      r:scope({path = "/:locale", controller = "pages"}, function(r)
        r:get("about")
        r:get("/contact-us")
      end)
      r:scope({path = "/x", module = "xm", as = "xa", controller = "things"}, function(r)
        r:get("one")
        r:get("two", "/top#two")
      end)
      r:controller("sessions", function(r) r:post("/login", {action = "create"}) end)
    end)

    it("prefixes path, controller module and name", function()
      assert.equal("api/v1/users#show", target(r, "GET", "/api/v1/users/5"))
      assert.equal("/api/v1/users/:id(.:format)", by_name(r, "api_v1_user").path)
      assert.equal("api/v1/users", by_name(r, "api_v1_users").controller)
      assert.equal("api/v1/home#index", target(r, "GET", "/api/v1"))
      assert.equal("/api/v1", by_name(r, "api_v1_root").path)
      assert.equal("api/status#show", target(r, "GET", "/api/status"))
      assert.is_table(by_name(r, "api_status"))
    end)

    it("lets a namespace override path and name prefix", function()
      assert.equal("admin/reports#index", target(r, "GET", "/backstage/reports"))
      assert.is_table(by_name(r, "bs_reports"))
      assert.is_nil(r:match("GET", "/admin/reports"))
    end)

    it("applies each scope option alone", function()
      assert.equal("carts#show", target(r, "GET", "/shop/cart"))
      assert.is_table(by_name(r, "cart"))
      assert.equal("legacy/pages#old", target(r, "GET", "/old"))
      assert.equal("ping#show", target(r, "GET", "/ping"))
      assert.is_table(by_name(r, "v2_ping"))
    end)

    it("derives the action from a bare path under a scope controller", function()
      assert.equal("pages#about", target(r, "GET", "/en/about"))
      assert.same({locale = "en"}, params_of(r, "GET", "/en/about"))
      assert.equal("pages#contact_us", target(r, "GET", "/fr/contact-us"))
      assert.is_table(by_name(r, "contact_us"))
      assert.equal("xm/things#one", target(r, "GET", "/x/one"))
      assert.is_table(by_name(r, "xa_one"))
      assert.equal("top#two", target(r, "GET", "/x/two"))
      assert.equal("sessions#create", target(r, "POST", "/login"))
    end)
  end)

  describe("verbs and targets", function()
    local handler = function() end
    local app = {call = function() end}
    local r = draw(function(r)
      r:root("pages#home")
      r:get("/health", "health#show")
      r:post("/hooks", {to = "hooks#receive", as = "webhook"})
      r:get("/fn", handler)
      r:get("/obj", app, {as = "obj"})
      r:patch("/p", {controller = "things", action = "touch"})
      r:delete("/d", "things#remove")
      r:options("/o", "things#opts")
      r:match("/both", {via = {"get", "post"}, to = "both#handle"})
      r:match("/any", "any#handle", {via = "all"})
    end)

    it("maps the targets", function()
      assert.equal("pages#home", target(r, "GET", "/"))
      assert.equal("root", r:routes()[1].name)
      assert.equal("/", r:routes()[1].path)
      assert.equal("health#show", target(r, "GET", "/health"))
      assert.equal("/health(.:format)", by_name(r, "health").path)
      assert.equal("/hooks(.:format)", by_name(r, "webhook").path)
      assert.equal("things#touch", target(r, "PATCH", "/p"))
      assert.equal("things#remove", target(r, "DELETE", "/d"))
      assert.equal("things#opts", target(r, "OPTIONS", "/o"))
    end)

    it("keeps function and object handlers", function()
      local route = r:match("GET", "/fn")
      assert.equal(handler, route.handler)
      assert.is_nil(route.controller)
      assert.equal(app, r:match("GET", "/obj").handler)
    end)

    it("matches via lists and all", function()
      assert.equal("GET|POST", by_name(r, "both").verb)
      assert.equal("both#handle", target(r, "POST", "/both"))
      assert.same({"GET", "HEAD", "POST"}, select(2, r:match("PUT", "/both")))
      assert.equal("ANY", by_name(r, "any").verb)
      for _, m in ipairs({"GET", "HEAD", "POST", "DELETE", "PROPFIND"}) do
        assert.equal("any#handle", target(r, m, "/any"))
      end
    end)
  end)

  describe("precedence", function()
    it("lets the first matching route win, static or not", function()
      local r = draw(function(r)
        r:get("/photos/:id", "photos#show")
        r:get("/photos/new", "photos#new")
        r:get("/books/new", "books#new")
        r:get("/books/:id", "books#show")
      end)
      assert.equal("photos#show", target(r, "GET", "/photos/new"))
      assert.same({id = "new"}, params_of(r, "GET", "/photos/new"))
      assert.equal("books#new", target(r, "GET", "/books/new"))
      assert.equal("books#show", target(r, "GET", "/books/1"))
    end)

    it("falls through to a later route when a constraint fails", function()
      local r = draw(function(r)
        r:get("/items/:id", "items#by_id", {constraints = {id = "%d+"}})
        r:get("/items/:slug", "items#by_slug")
      end)
      assert.equal("items#by_id", target(r, "GET", "/items/12"))
      assert.equal("items#by_slug", target(r, "GET", "/items/twelve"))
      assert.same({slug = "twelve"}, params_of(r, "GET", "/items/twelve"))
    end)

    it("orders wildcards, params and statics by definition", function()
      local r = draw(function(r)
        r:get("/a/*rest", "a#glob", {format = false})
        r:get("/a/b", "a#b")
        r:get("/c/:x", "c#param")
        r:get("/c/*rest", "c#glob")
      end)
      assert.equal("a#glob", target(r, "GET", "/a/b"))
      assert.equal("c#param", target(r, "GET", "/c/d"))
      assert.equal("c#glob", target(r, "GET", "/c/d/e"))
    end)

    it("backtracks out of a static branch that fails deeper", function()
      local r = draw(function(r)
        r:get("/users/new/avatar", "avatars#new")
        r:get("/users/:id/edit", "users#edit")
      end)
      assert.equal("users#edit", target(r, "GET", "/users/new/edit"))
      assert.same({id = "new"}, params_of(r, "GET", "/users/new/edit"))
    end)

    it("serves a static path from the hash only when no earlier route could take it", function()
      local r = draw(function(r)
        r:get("/x", "x#api", {constraints = {host = "api.example.com"}})
        r:get("/x", "x#www")
      end)
      assert.equal("x#api", target(r, "GET", "/x", "api.example.com"))
      assert.equal("x#www", target(r, "GET", "/x", "www.example.com"))
      assert.equal("x#www", target(r, "GET", "/x"))
    end)
  end)

  describe("against a linear scan", function()
    -- A reference matcher written the slow, obvious way: every route in definition order, every
    -- optional-group variant in order, each as one whole-path Lua pattern.
    local function variants(path)
      local open = path:find("(", 1, true)
      if not open then return {path} end
      local depth, close = 0, nil
      for i = open, #path do
        local c = path:sub(i, i)
        if c == "(" then depth = depth + 1 elseif c == ")" then depth = depth - 1 end
        if depth == 0 then close = i; break end
      end
      local before, inner, after = path:sub(1, open - 1), path:sub(open + 1, close - 1), path:sub(close + 1)
      local without, with = variants(before .. after), {}
      for _, iv in ipairs(variants(inner)) do
        for _, v in ipairs(variants(before .. iv .. after)) do with[#with + 1] = v end
      end
      local first, second = without, with
      if before:find("%*[%a_][%w_]*$") then first, second = with, without end
      local out = {}
      for _, v in ipairs(first) do out[#out + 1] = v end
      for _, v in ipairs(second) do out[#out + 1] = v end
      return out
    end

    local function to_pattern(v, cons)
      local out, names, i = {"^"}, {}, 1
      while i <= #v do
        local c = v:sub(i, i)
        if c == ":" or c == "*" then
          local name = v:match("^[%a_][%w_]*", i + 1)
          names[#names + 1] = name
          if c == "*" then out[#out + 1] = "(..-)"
          elseif cons[name] then out[#out + 1] = "([^/]+)"
          else out[#out + 1] = "([^/.]+)" end
          i = i + 1 + #name
        else
          out[#out + 1] = c:gsub("%p", "%%%0")
          i = i + 1
        end
      end
      out[#out + 1] = "$"
      return table.concat(out), names
    end

    local function compile_reference(routes)
      local list = {}
      for _, route in ipairs(routes) do
        local cons = route.constraints or {}
        for _, v in ipairs(variants(route.path)) do
          local pat, names = to_pattern(v, cons)
          list[#list + 1] = {route = route, pat = pat, names = names, cons = cons,
                             verbs = "|" .. route.verb .. "|"}
        end
      end
      return list
    end

    local function reference(list, method, path)
      local allowed = {}
      for _, e in ipairs(list) do
        local caps = {path:match(e.pat)}
        local ok = caps[1] ~= nil
        for k, name in ipairs(e.names) do
          if ok and e.cons[name] and not caps[k]:find(e.cons[name]) then ok = false end
        end
        if ok then
          local route = e.route
          if route.verb == "ANY" or e.verbs:find("|" .. method .. "|", 1, true) then
            local params = {}
            for k, d in pairs(route.defaults) do params[k] = d end
            for k, name in ipairs(e.names) do params[name] = caps[k] end
            return route, params
          end
          for m in route.verb:gmatch("[A-Z]+") do
            allowed[m] = true
            if m == "GET" then allowed.HEAD = true end
          end
        end
      end
      local sorted = {}
      for m in pairs(allowed) do sorted[#sorted + 1] = m end
      table.sort(sorted)
      if #sorted == 0 then return nil, nil end
      return nil, sorted
    end

    it("picks the same route, params and allowed list for every path", function()
      local r = draw(function(r)
        r:get("/photos/:id", "p#show")
        r:get("/photos/new", "p#new")
        r:resources("photos", function(r)
          r:resources("comments", {only = {"index", "show"}})
          r:collection(function(r) r:get("search") end)
        end)
        r:get("/files/*path", "f#show")
        r:get("/files/new", "f#new")
        r:get("/x(/:a(/:b))", "x#opt", {defaults = {a = "0"}})
        r:get("/n/:id", "n#show", {constraints = {id = "%d+"}})
        r:get("/n/:name", "n#name")
        r:get("/v:version/:id", "v#show", {format = false})
        r:match("/photos/:id/x", "m#x", {via = {"get", "post"}})
        r:get("/:slug", "s#show", {constraints = {slug = "[%w.]+"}})
        r:delete("/*all", "catch#all", {format = false})
      end)
      local list = compile_reference(r:routes())
      local words = {"photos", "new", "1", "1.json", "a.b.c", "comments", "search", "search.xml",
                     "files", "x", "n", "42", "v2", "z.json"}
      local paths = {"/"}
      for _, a in ipairs(words) do
        paths[#paths + 1] = "/" .. a
        for _, b in ipairs(words) do
          paths[#paths + 1] = "/" .. a .. "/" .. b
          for _, c in ipairs(words) do paths[#paths + 1] = "/" .. a .. "/" .. b .. "/" .. c end
        end
      end
      local checked = 0
      for _, path in ipairs(paths) do
        for _, method in ipairs({"GET", "POST", "DELETE"}) do
          local want_route, want = reference(list, method, path)
          local got_route, got = r:match(method, path)
          assert.equal(want_route, got_route, method .. " " .. path)
          assert.same(want, got_route and (got or {}) or got, method .. " " .. path)
          checked = checked + 1
        end
      end
      assert.is_true(checked > 8000)
    end)
  end)

  describe("optional segments and format", function()
    local r = draw(function(r)
      r:get("/posts(/:page)", "posts#index", {defaults = {page = "1"}})
      r:get("(/:locale)/about", "pages#about")
      r:get("/archive(/:year(/:month))", "archive#show")
      r:get("/raw/:name", "raw#show", {format = false})
      r:get("/api/:id", "api#show", {format = true})
      r:get("/users/:id", "users#show", {constraints = {id = "[%w.]+"}})
    end)

    it("matches with and without the optional part, filling defaults", function()
      assert.same({page = "1"}, params_of(r, "GET", "/posts"))
      assert.same({page = "3"}, params_of(r, "GET", "/posts/3"))
      assert.same({page = "3", format = "json"}, params_of(r, "GET", "/posts/3.json"))
      assert.same({}, params_of(r, "GET", "/about"))
      assert.same({locale = "de"}, params_of(r, "GET", "/de/about"))
      assert.same({}, params_of(r, "GET", "/archive"))
      assert.same({year = "2024"}, params_of(r, "GET", "/archive/2024"))
      assert.same({year = "2024", month = "05"}, params_of(r, "GET", "/archive/2024/05"))
      assert.is_nil(r:match("GET", "/archive/2024/05/01"))
    end)

    it("keeps dots out of params unless a constraint lets them in", function()
      assert.same({name = "a"}, params_of(r, "GET", "/raw/a"))
      assert.is_nil(r:match("GET", "/raw/a.txt"))
      assert.same({id = "7", format = "xml"}, params_of(r, "GET", "/api/7.xml"))
      assert.is_nil(r:match("GET", "/api/7"))
      assert.same({id = "john.smith"}, params_of(r, "GET", "/users/john.smith"))
    end)
  end)

  describe("wildcards", function()
    local r = draw(function(r)
      r:get("/files/*path", "files#show")
      r:get("/books/*section/:title", "books#show", {format = false})
      r:get("/plain/*rest", "plain#show", {format = false})
    end)

    it("captures the rest of the path, slashes included", function()
      assert.same({path = "a/b/c"}, params_of(r, "GET", "/files/a/b/c"))
      assert.same({path = "a/b", format = "txt"}, params_of(r, "GET", "/files/a/b.txt"))
      assert.same({rest = "a/b.txt"}, params_of(r, "GET", "/plain/a/b.txt"))
      assert.same({rest = "x y/z"}, params_of(r, "GET", "/plain/x%20y/z"))
    end)

    it("needs at least one segment", function()
      assert.is_nil(r:match("GET", "/files"))
      assert.is_nil(r:match("GET", "/files/"))
    end)

    it("can sit in the middle of a pattern", function()
      assert.same({section = "fiction/classic", title = "dune"},
                  params_of(r, "GET", "/books/fiction/classic/dune"))
      assert.same({section = "sf", title = "dune"}, params_of(r, "GET", "/books/sf/dune"))
      assert.is_nil(r:match("GET", "/books/dune"))
    end)
  end)

  describe("constraints", function()
    local r = draw(function(r)
      r:get("/api-only", "api#only", {constraints = {host = "api.example.com"}})
      r:get("/any-api", "api#any", {constraints = {host = "^api%."}})
      r:get("/sub", "sub#show", {constraints = {subdomain = "admin"}})
      r:constraints({host = "shop.example.com"}, function(r)
        r:get("/shop", "shop#show")
      end)
      r:get("/v/:version", "v#show", {constraints = {version = "v%d+"}})
      r:scope({constraints = {id = "%d+"}}, function(r)
        r:get("/n/:id", "n#show")
        r:get("/m/:slug", "m#show")
      end)
    end)

    it("matches the host exactly, ignoring case and port", function()
      assert.equal("api#only", target(r, "GET", "/api-only", "api.example.com"))
      assert.equal("api#only", target(r, "GET", "/api-only", "API.Example.com:8080"))
      assert.is_nil(r:match("GET", "/api-only", "www.example.com"))
      assert.is_nil(r:match("GET", "/api-only", nil))
    end)

    it("matches the host with a Lua pattern", function()
      assert.equal("api#any", target(r, "GET", "/any-api", "api.foo.org"))
      assert.is_nil(r:match("GET", "/any-api", "www.api.org"))
    end)

    it("matches the subdomain and scoped host constraints", function()
      assert.equal("sub#show", target(r, "GET", "/sub", "admin.example.com"))
      assert.is_nil(r:match("GET", "/sub", "example.com"))
      assert.equal("shop#show", target(r, "GET", "/shop", "shop.example.com"))
      assert.is_nil(r:match("GET", "/shop", "example.com"))
    end)

    it("anchors per-param patterns to the whole value", function()
      assert.same({version = "v2"}, params_of(r, "GET", "/v/v2"))
      assert.is_nil(r:match("GET", "/v/v2beta"))
      assert.is_nil(r:match("GET", "/v/xv2"))
    end)

    it("applies scope constraints only to params a route has", function()
      assert.equal("n#show", target(r, "GET", "/n/5"))
      assert.is_nil(r:match("GET", "/n/five"))
      assert.equal("m#show", target(r, "GET", "/m/five"))
    end)
  end)

  describe("405 and HEAD", function()
    local r = draw(function(r)
      r:resources("photos", {only = {"index", "create", "show"}})
      r:get("/page", "pages#get")
      r:head("/page", "pages#head")
      r:get("/late", "late#get")
      r:get("/x/:id", "x#get")
      r:head("/x/:id", "x#head")
    end)

    it("returns the sorted allowed methods when only the method is wrong", function()
      assert.same({nil, {"GET", "HEAD", "POST"}}, {r:match("DELETE", "/photos")})
      assert.same({nil, {"GET", "HEAD"}}, {r:match("PUT", "/photos/1")})
      assert.same({nil, {"GET", "HEAD"}}, {r:match("POST", "/page")})
    end)

    it("returns nil, nil for an unknown path", function()
      assert.same({nil, nil}, {r:match("GET", "/nope")})
      assert.same({nil, nil}, {r:match("GET", "/photos/1/2")})
      assert.same({nil, nil}, {r:match("GET", "photos")})
    end)

    it("serves HEAD with GET routes", function()
      assert.equal("photos#index", target(r, "HEAD", "/photos"))
      assert.equal("photos#show", target(r, "HEAD", "/photos/9"))
      assert.same({id = "9"}, params_of(r, "HEAD", "/photos/9"))
      assert.equal("late#get", target(r, "HEAD", "/late"))
    end)

    it("prefers an explicit HEAD route", function()
      assert.equal("pages#head", target(r, "HEAD", "/page"))
      assert.equal("pages#get", target(r, "GET", "/page"))
      assert.equal("x#head", target(r, "HEAD", "/x/1"))
      assert.equal("x#get", target(r, "GET", "/x/1"))
    end)
  end)

  describe("mount", function()
    local cable = {call = function() end, name = "Cable"}
    local admin = function() end
    local r = draw(function(r)
      r:get("/cable/info", "cable#info")
      r:mount("/cable", cable, {as = "cable"})
      r:mount("/:tenant/admin", admin)
    end)

    it("matches the path and everything under it, any method", function()
      local route, params = r:match("POST", "/cable")
      assert.equal(cable, route.handler)
      assert.same({path_info = "/", script_name = "/cable"}, params)
      route, params = r:match("GET", "/cable/a/b%20c")
      assert.equal(cable, route.handler)
      assert.equal("/a/b%20c", params.path_info)
      assert.equal("/a/", params_of(r, "DELETE", "/cable/a/").path_info)
      assert.equal("cable#info", target(r, "GET", "/cable/info"))
    end)

    it("matches on segment boundaries only", function()
      assert.is_nil(r:match("GET", "/cables"))
    end)

    it("takes params in the mount path", function()
      local route, params = r:match("GET", "/acme/admin/users")
      assert.equal(admin, route.handler)
      assert.same({tenant = "acme", path_info = "/users", script_name = "/acme/admin"}, params)
    end)
  end)

  describe("path handling", function()
    local r = draw(function(r)
      r:resources("photos", {only = {"index", "show"}})
      r:get("/caf%c3%a9", "cafe#show")
      r:get("/q/:q", "q#show")
    end)

    it("treats a trailing slash and repeated slashes like the plain path", function()
      assert.equal("photos#index", target(r, "GET", "/photos/"))
      assert.equal("photos#index", target(r, "GET", "//photos//"))
      assert.same({id = "3"}, params_of(r, "GET", "/photos/3/"))
      assert.equal(nil, r:match("GET", "/photos/3/x"))
    end)

    it("percent-decodes params", function()
      assert.same({q = "a b"}, params_of(r, "GET", "/q/a%20b"))
      assert.same({q = "é"}, params_of(r, "GET", "/q/%C3%A9"))
      assert.same({q = "a+b"}, params_of(r, "GET", "/q/a+b"))
      assert.same({q = "100%"}, params_of(r, "GET", "/q/100%25"))
      assert.same({q = "%zz"}, params_of(r, "GET", "/q/%zz"))
    end)

    it("does not split a segment at %2F", function()
      assert.same({q = "a/b"}, params_of(r, "GET", "/q/a%2Fb"))
      assert.same({q = "a/b"}, params_of(r, "GET", "/q/a%2fb"))
      assert.same({id = "1/2"}, params_of(r, "GET", "/photos/1%2F2"))
    end)

    it("keeps an encoded dot out of the format", function()
      assert.same({id = "1.5"}, params_of(r, "GET", "/photos/1%2E5"))
      assert.same({id = "1", format = "5"}, params_of(r, "GET", "/photos/1.5"))
    end)

    it("compares escapes in static segments case-insensitively", function()
      assert.equal("cafe#show", target(r, "GET", "/caf%C3%A9"))
      assert.equal("cafe#show", target(r, "GET", "/caf%c3%a9"))
    end)

    it("returns a new params table every time, and none for a route without params", function()
      local route, none = r:match("GET", "/photos")
      assert.is_table(route)
      assert.is_nil(none)
      local b = params_of(r, "GET", "/photos/1")
      b.id = "changed"
      assert.same({id = "1"}, params_of(r, "GET", "/photos/1"))
    end)
  end)

  describe("defaults", function()
    local r = draw(function(r)
      r:defaults({format = "json"}, function(r)
        r:get("/feed", "feed#show")
        r:get("/feed/:id", "feed#item", {defaults = {kind = "post"}})
      end)
    end)

    it("merges block and route defaults under path params", function()
      assert.same({format = "json"}, params_of(r, "GET", "/feed"))
      assert.same({format = "xml"}, params_of(r, "GET", "/feed.xml"))
      assert.same({format = "json", kind = "post", id = "4"}, params_of(r, "GET", "/feed/4"))
      assert.same({format = "json"}, r:routes()[1].defaults)
    end)

    it("does not let a caller change the route's defaults", function()
      local p = params_of(r, "GET", "/feed")
      p.format = "html"
      assert.same({format = "json"}, params_of(r, "GET", "/feed"))
    end)
  end)

  describe("url_for", function()
    local r = draw(function(r)
      r:root("pages#home")
      r:get("/health", "health#show")
      local all = {"index", "show", "new", "edit", "create", "update", "destroy"}
      r:resources("photos", {only = all}, function(r)
        r:member(function(r) r:post("like") end)
        r:collection(function(r) r:get("search") end)
        r:resources("comments")
      end)
      r:resource("profile", {only = {"show", "edit"}})
      r:namespace("api", function(r)
        r:namespace("v1", function(r) r:resources("users", {param = "uid"}) end)
      end)
      r:get("/files/*path", "files#show", {as = "file"})
      r:get("/posts(/:page)", "posts#index", {as = "posts_page", defaults = {page = "1"}})
      r:get("(/:locale)/about", "pages#about", {as = "about"})
      r:get("/items/:id", "items#show", {as = "item", constraints = {id = "%d+"}})
      r:get("/admin", "admin#show", {as = "admin", constraints = {host = "admin.example.com"}})
      r:mount("/cable", {call = function() end}, {as = "cable"})
    end)

    it("builds paths", function()
      assert.equal("/", r:url_for("root"))
      assert.equal("/photos/1", r:url_for("photo", {id = 1}))
      assert.equal("/photos/1.json", r:url_for("photo", {id = 1, format = "json"}))
      assert.equal("/photos/3/comments/4", r:url_for("photo_comment", {photo_id = 3, id = 4}))
      assert.equal("/photos/new", r:url_for("new_photo"))
      assert.equal("/api/v1/users/9", r:url_for("api_v1_user", {uid = 9}))
      assert.equal("/files/a/b", r:url_for("file", {path = "a/b"}))
      assert.equal("/posts", r:url_for("posts_page"))
      assert.equal("/posts", r:url_for("posts_page", {page = 1}))
      assert.equal("/posts/2", r:url_for("posts_page", {page = 2}))
      assert.equal("/about", r:url_for("about"))
      assert.equal("/fr/about", r:url_for("about", {locale = "fr"}))
      assert.equal("/cable", r:url_for("cable"))
    end)

    it("accepts records with an id or to_param", function()
      assert.equal("/photos/5", r:url_for("photo", {id = {id = 5, title = "x"}}))
      local rec = {to_param = function() return "5-sunset" end}
      assert.equal("/photos/5-sunset", r:url_for("photo", {id = rec}))
    end)

    it("escapes params so they come back whole", function()
      assert.equal("/photos/a%20b%2Fc", r:url_for("photo", {id = "a b/c"}))
      assert.equal("/photos/1%2E5", r:url_for("photo", {id = "1.5"}))
      assert.equal("/files/a%20b/c%2Ed", r:url_for("file", {path = "a b/c.d"}))
    end)

    it("puts extra params in a sorted, encoded query string", function()
      assert.equal("/photos?a=1&b=x%20y&z=%26", r:url_for("photos", {z = "&", b = "x y", a = 1}))
      assert.equal("/photos?tag%5B%5D=a&tag%5B%5D=b", r:url_for("photos", {tag = {"a", "b"}}))
      assert.equal("/photos?f%5Bx%5D=1&f%5By%5D=2", r:url_for("photos", {f = {y = 2, x = 1}}))
      assert.equal("/photos/1?page=2", r:url_for("photo", {id = 1, page = 2}))
    end)

    it("raises at the caller's line for misuse", function()
      local err, line = raises(function(mark) mark(); r:url_for("photo", {}) end)
      assert.matches(SPEC .. ":" .. line
                     .. ": rage.router: url_for%(\"photo\"%): missing required param 'id'", err)
      err, line = raises(function(mark) mark(); r:url_for("nope") end)
      assert.matches(SPEC .. ":" .. line .. ": .*no route named 'nope'", err)
      err = raises(function() r:url_for("item", {id = "abc"}) end)
      assert.matches("does not match its constraint", err)
    end)

    it("round-trips every generated name through match", function()
      local count = 0
      for _, route in ipairs(r:routes()) do
        if route.name then
          local params, host = {}, nil
          for kind, pname in route.path:gmatch("([:*])([%a_][%w_]*)") do
            if pname == "format" then
              params.format = "json"
            elseif route.constraints and route.constraints[pname] then
              params[pname] = "42"
            elseif kind == "*" then
              params[pname] = "dir one/file.tar.gz"
            else
              params[pname] = "v.1 " .. pname .. "/%?#"
            end
          end
          if route.constraints and route.constraints.host then host = route.constraints.host end
          local url = r:url_for(route.name, params)
          local method = route.verb == "ANY" and "GET" or route.verb:match("^[A-Z]+")
          local back, got = r:match(method, url, host)
          assert.equal(route, back, route.name .. " " .. url)
          for k, v in pairs(params) do assert.equal(v, got[k], route.name .. " " .. k) end
          count = count + 1
        end
      end
      assert.is_true(count >= 20)
    end)
  end)

  describe("routes and format", function()
    local r = draw(function(r)
      r:resources("photos", {only = {"index", "show"}})
      r:get("/fn", function() end)
      r:mount("/cable", {call = function() end, name = "Cable"})
      r:get("/n/:id", "n#show", {constraints = {id = "%d+"}})
    end)

    it("lists routes in definition order", function()
      local routes = r:routes()
      assert.equal(5, #routes)
      assert.equal("photos#index", routes[1].controller .. "#" .. routes[1].action)
      assert.equal("/cable", routes[4].path)
      routes[1] = nil
      assert.equal(5, #r:routes())
    end)

    it("prints an aligned table like rails routes", function()
      local expected = table.concat({
        "Prefix Verb URI Pattern           Controller#Action",
        "photos GET  /photos(.:format)     photos#index",
        " photo GET  /photos/:id(.:format) photos#show",
        "    fn GET  /fn(.:format)         <function>",
        "       ANY  /cable                Cable",
        "       GET  /n/:id(.:format)      n#show {id = \"^%d+$\"}",
      }, "\n") .. "\n"
      assert.equal(expected, router.format(r:routes()))
      assert.equal("No routes defined.\n", router.format({}))
    end)
  end)

  describe("compile", function()
    it("compiles on first match and only once", function()
      local r = router.new()
      r:draw(function(r) r:get("/a", "a#show") end)
      r:draw(function(r) r:get("/b", "b#show") end)
      assert.equal("b#show", target(r, "GET", "/b"))
      r:compile()
      assert.equal("a#show", target(r, "GET", "/a"))
    end)

    it("says whether any route looks at the host", function()
      assert.is_false(draw(function(r) r:get("/a", "a#b") end).uses_host)
      assert.is_true(draw(function(r)
        r:scope({constraints = {subdomain = "api"}}, function(r) r:get("/a", "a#b") end)
      end).uses_host)
    end)

    it("matches an empty router with nothing", function()
      local r = draw(function() end)
      assert.same({nil, nil}, {r:match("GET", "/")})
    end)
  end)

  describe("misuse", function()
    local function check(pattern, body)
      local err, line = raises(function(mark)
        local r = router.new()
        r:draw(function(r) body(r, mark) end)
      end)
      assert.matches(SPEC .. ":" .. line .. ": rage.router: " .. pattern, err)
    end

    it("reports errors at the caller's line", function()
      check("get: path must be a string", function(r, mark) mark(); r:get(42, "a#b") end)
      check("get: unknown option 'bogus'", function(r, mark) mark(); r:get("/a", "a#b", {bogus = 1}) end)
      check("resources: unknown option 'shallow'", function(r, mark)
        mark(); r:resources("a", {shallow = true})
      end)
      check("resources: unknown action 'list' in only", function(r, mark)
        mark(); r:resources("a", {only = {"list"}})
      end)
      check("get: route name 'x' is already in use", function(r, mark)
        r:get("/a", "a#b", {as = "x"})
        mark(); r:get("/b", "a#b", {as = "x"})
      end)
      check("root: route name 'root' is already in use", function(r, mark)
        r:root("a#b")
        mark(); r:root("a#c")
      end)
      check("get: target 'nohash' is not \"controller#action\"", function(r, mark)
        mark(); r:get("/a", "nohash")
      end)
      check("get: no controller for /a", function(r, mark) mark(); r:get("/a") end)
      check("get: no action for /:id", function(r, mark) mark(); r:get("/:id", {controller = "a"}) end)
      check("member can only be used inside a resources or resource block", function(r, mark)
        mark(); r:member(function() end)
      end)
      check("match: via is required", function(r, mark) mark(); r:match("/a", "a#b") end)
      check("match: unknown HTTP method 'fetch' in via", function(r, mark)
        mark(); r:match("/a", "a#b", {via = "fetch"})
      end)
      check("bad pattern /a%(/:b%(%.:format%): unbalanced '%('", function(r, mark)
        mark(); r:get("/a(/:b", "a#b")
      end)
      check("bad pattern /a/x%*rest%(%.:format%): a wildcard must start a path segment", function(r, mark)
        mark(); r:get("/a/x*rest", "a#b")
      end)
      check("bad pattern /a/:id/b/:id%(%.:format%): parameter 'id' appears twice", function(r, mark)
        mark(); r:get("/a/:id/b/:id", "a#b")
      end)
      check("get: path /a b must not hold spaces", function(r, mark) mark(); r:get("/a b", "a#b") end)
      check("bad pattern /a/:%(%.:format%): ':' must be followed by a name", function(r, mark)
        mark(); r:get("/a/:", "a#b")
      end)
      check("get: on must be \"member\" or \"collection\"", function(r, mark)
        r:resources("p", function(r) mark(); r:get("x", {on = "elsewhere"}) end)
      end)
      check("get: constraint 'slug' names no parameter", function(r, mark)
        mark(); r:get("/a/:id", "a#b", {constraints = {slug = "x"}})
      end)
      check("get: constraint 'id' must be a string", function(r, mark)
        mark(); r:get("/a/:id", "a#b", {constraints = {id = 5}})
      end)
      check("mount: handler must be a function", function(r, mark) mark(); r:mount("/m", "nope") end)
      check("get: call it with ':'", function(r, mark) mark(); r.get("/a", "a#b") end)
      check("scope: a block function", function(r, mark) mark(); r:scope("/a") end)
      check("namespace: name must be a word", function(r, mark)
        mark(); r:namespace("a/b", function() end)
      end)
    end)

    it("refuses new routes after compile", function()
      local saved
      local r = router.new()
      r:draw(function(r) saved = r; r:get("/a", "a#b") end)
      r:compile()
      local err, line = raises(function(mark) mark(); saved:get("/b", "b#c") end)
      assert.matches(SPEC .. ":" .. line .. ": rage.router: get: routes are compiled", err)
      err, line = raises(function(mark) mark(); r:draw(function() end) end)
      assert.matches(SPEC .. ":" .. line .. ": rage.router: draw: routes are compiled", err)
    end)
  end)
end)
