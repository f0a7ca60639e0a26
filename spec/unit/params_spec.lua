-- Specs for rage.params: percent-decoding and query-string / form parsing with Rails nested keys.

local params = require("rage.params")

describe("rage.params", function()

  describe("unescape", function()
    it("decodes %XX escapes in either case", function()
      assert.equal("a b/c", params.unescape("a%20b%2Fc"))
      assert.equal("a b/c", params.unescape("a%20b%2fc"))
      assert.equal("\0\255", params.unescape("%00%FF"))
    end)

    it("decodes UTF-8 byte by byte", function()
      assert.equal("caf\195\169", params.unescape("caf%C3%A9"))
    end)

    it("keeps '+' unless decoding a form", function()
      assert.equal("a+b", params.unescape("a+b"))
      assert.equal("a b", params.unescape("a+b", true))
    end)

    it("turns %2B into a literal '+' even in forms", function()
      assert.equal("1+1 = 2", params.unescape("1%2B1+%3D+2", true))
    end)

    it("leaves malformed escapes as they are", function()
      assert.equal("100%", params.unescape("100%"))
      assert.equal("%zz", params.unescape("%zz"))
      assert.equal("%4", params.unescape("%4"))
      assert.equal("%A", params.unescape("%%41"))
      assert.equal("%G1x", params.unescape("%G1%78"))
    end)
  end)

  describe("escape", function()
    it("keeps RFC 3986 unreserved characters", function()
      assert.equal("AZaz09-._~", params.escape("AZaz09-._~"))
    end)

    it("encodes everything else in upper-case hex", function()
      assert.equal("a%20b%2Bc%26d%3De%2Ff%3F%25", params.escape("a b+c&d=e/f?%"))
      assert.equal("%C3%A9%00%0D%0A", params.escape("\195\169\0\r\n"))
    end)

    it("round-trips through unescape", function()
      local s = "x=1&y=a b+c/é%\0"
      assert.equal(s, params.unescape(params.escape(s)))
      assert.equal(s, params.unescape(params.escape(s), true))
    end)
  end)

  describe("parse", function()
    it("parses flat pairs", function()
      assert.same({a = "1", b = "two"}, params.parse("a=1&b=two"))
    end)

    it("decodes keys and values, with '+' as a space", function()
      assert.same({["first name"] = "Al Smith", q = "a+b"}, params.parse("first+name=Al+Smith&q=a%2Bb"))
    end)

    it("gives an empty string to a key without '=' or without a value", function()
      assert.same({flag = "", empty = ""}, params.parse("flag&empty="))
    end)

    it("keeps everything after the first '=' in the value", function()
      assert.same({expr = "a=b=c"}, params.parse("expr=a=b=c"))
    end)

    it("skips empty pairs and empty keys", function()
      assert.same({a = "1", b = "2"}, params.parse("&&a=1&&=x&b=2&"))
    end)

    it("lets a later value win", function()
      assert.same({a = "2"}, params.parse("a=1&a=2"))
    end)

    it("returns an empty table for nil and the empty string", function()
      assert.same({}, params.parse(nil))
      assert.same({}, params.parse(""))
    end)

    it("parses into a given table", function()
      local t = {id = "7"}
      assert.equal(t, params.parse("q=x", t))
      assert.same({id = "7", q = "x"}, t)
    end)

    describe("nested keys", function()
      it("builds tables from brackets", function()
        assert.same({user = {name = "Al", address = {city = "Oslo"}}},
          params.parse("user[name]=Al&user[address][city]=Oslo"))
      end)

      it("decodes escaped brackets in keys", function()
        assert.same({user = {name = "Al"}}, params.parse("user%5Bname%5D=Al"))
      end)

      it("collects a[] into an array in order", function()
        assert.same({tags = {"x", "y", "z"}}, params.parse("tags[]=x&tags[]=y&tags[]=z"))
      end)

      it("groups a[][k] into one table per item, as Rails does", function()
        assert.same({items = {{name = "pen", qty = "2"}, {name = "ink", qty = "1"}}},
          params.parse("items[][name]=pen&items[][qty]=2&items[][name]=ink&items[][qty]=1"))
      end)

      it("starts a new item when a nested key repeats", function()
        assert.same({items = {{tag = {id = "1"}}, {tag = {id = "2"}}}},
          params.parse("items[][tag][id]=1&items[][tag][id]=2"))
      end)

      it("fills a list inside an item instead of starting a new item", function()
        assert.same({items = {{name = "pen", tags = {"red", "cheap"}}}},
          params.parse("items[][name]=pen&items[][tags][]=red&items[][tags][]=cheap"))
      end)

      it("uses numbers for numeric indexes", function()
        local t = params.parse("pos[0]=a&pos[1]=b")
        assert.equal("a", t.pos[0])
        assert.equal("b", t.pos[1])
      end)

      it("replaces a scalar with a table when a nested key follows", function()
        assert.same({a = {b = "2"}}, params.parse("a=1&a[b]=2"))
      end)

      it("treats a key that starts with '[' as a plain key", function()
        assert.same({["[x]"] = "1"}, params.parse("[x]=1"))
      end)
    end)

    describe("limits", function()
      local saved_params, saved_depth

      before_each(function()
        saved_params, saved_depth = params.max_params, params.max_depth
      end)

      after_each(function()
        params.max_params, params.max_depth = saved_params, saved_depth
      end)

      it("stops after max_params pairs", function()
        params.max_params = 3
        local t = params.parse("a=1&b=2&c=3&d=4&e=5")
        assert.same({a = "1", b = "2", c = "3"}, t)
      end)

      it("bounds the default pair count", function()
        local parts = {}
        for i = 1, 5000 do parts[i] = "k" .. i .. "=v" end
        local t = params.parse(table.concat(parts, "&"))
        local n = 0
        for _ in pairs(t) do n = n + 1 end
        assert.equal(params.max_params, n)
        assert.equal(1000, n)
      end)

      it("stops nesting at max_depth", function()
        params.max_depth = 2
        local t = params.parse("a[b][c][d][e]=1")
        assert.same({a = {b = {c = "1"}}}, t)
      end)

      it("keeps a hostile key with thousands of brackets shallow", function()
        local t = params.parse("a" .. string.rep("[x]", 10000) .. "=1")
        local depth, node = 0, t.a
        while type(node) == "table" do
          depth = depth + 1
          node = node.x
        end
        assert.equal(params.max_depth, depth)
        assert.equal("1", node)
      end)
    end)
  end)
end)
