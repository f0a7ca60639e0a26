-- Specs for rage.crypto: published test vectors for every primitive, AES-256-GCM refusing any
-- alteration, strict base64 decoding, and misuse raising at the caller's line.

local crypto = require("rage.crypto")

local function unhex(s)
  return (s:gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end))
end

describe("rage.crypto", function()
  describe("digests", function()
    it("computes SHA-256 (FIPS 180-4 examples)", function()
      assert.equal("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", crypto.hex(crypto.sha256("")))
      assert.equal("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", crypto.hex(crypto.sha256("abc")))
      assert.equal("248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
        crypto.hex(crypto.sha256("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")))
    end)

    it("computes HMAC-SHA256 (RFC 4231 cases 1 and 2)", function()
      assert.equal("b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
        crypto.hex(crypto.hmac_sha256(string.rep("\11", 20), "Hi There")))
      assert.equal("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
        crypto.hex(crypto.hmac_sha256("Jefe", "what do ya want for nothing?")))
    end)

    it("derives keys with PBKDF2-HMAC-SHA256 (RFC 7914 §11)", function()
      assert.equal("55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc" ..
                   "49ca9cccf179b645991664b39d77ef317c71b845b1e30bd509112041d3a19783",
        crypto.hex(crypto.pbkdf2_sha256("passwd", "salt", 1, 64)))
    end)

    it("gives a key generator whose keys depend on secret, salt and length, derived once", function()
      local gen = crypto.key_generator(string.rep("s", 64))
      local signed = gen:generate("signed cookie")
      assert.equal(64, #signed)
      assert.equal(crypto.pbkdf2_sha256(string.rep("s", 64), "signed cookie", 1000, 64), signed)
      assert.equal(signed, gen:generate("signed cookie", 64))
      assert.are_not.equal(signed:sub(1, 32), gen:generate("authenticated encrypted cookie", 32))
      assert.are_not.equal(signed, crypto.key_generator(string.rep("t", 64)):generate("signed cookie"))
      assert.equal(gen.cache["64:signed cookie"], signed)
    end)
  end)

  describe("random bytes", function()
    it("gives the length asked for, different every time", function()
      assert.equal("", crypto.random_bytes(0))
      local a, b = crypto.random_bytes(32), crypto.random_bytes(32)
      assert.equal(32, #a)
      assert.are_not.equal(a, b)
      assert.equal(100000, #crypto.random_bytes(100000))
    end)
  end)

  describe("AES-256-GCM", function()
    local key = unhex("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308")

    it("decrypts the GCM specification's test case 16", function()
      local iv = unhex("cafebabefacedbaddecaf888")
      local aad = unhex("feedfacedeadbeeffeedfacedeadbeefabaddad2")
      local ct = unhex("522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa" ..
                       "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662")
      local tag = unhex("76fc6ece0f4e1768cddf8853bb2d551b")
      local pt = unhex("d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72" ..
                       "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39")
      assert.equal(pt, crypto.decrypt(key, iv .. ct .. tag, aad))
      assert.is_nil(crypto.decrypt(key, iv .. ct .. tag))
      assert.is_nil(crypto.decrypt(key, iv .. ct .. tag, aad .. "x"))
    end)

    it("round-trips with a random IV and a 16-byte tag", function()
      for _, msg in ipairs({"", "x", string.rep("long message ", 1000), "\0\1\2\255"}) do
        local box = crypto.encrypt(key, msg)
        assert.equal(12 + #msg + 16, #box)
        assert.equal(msg, crypto.decrypt(key, box))
        assert.are_not.equal(box:sub(1, 12), crypto.encrypt(key, msg):sub(1, 12))
      end
      local box = crypto.encrypt(key, "with aad", "context")
      assert.equal("with aad", crypto.decrypt(key, box, "context"))
      assert.is_nil(crypto.decrypt(key, box, "other"))
    end)

    it("returns nil for any flipped bit, a cut or longer box, or another key", function()
      local box = crypto.encrypt(key, "attack at dawn")
      for i = 1, #box do
        for _, bitv in ipairs({1, 128}) do
          local forged = box:sub(1, i - 1) .. string.char(bit.bxor(box:byte(i), bitv)) .. box:sub(i + 1)
          assert.is_nil(crypto.decrypt(key, forged), "byte " .. i)
        end
      end
      assert.is_nil(crypto.decrypt(key, box:sub(1, -2)))
      assert.is_nil(crypto.decrypt(key, box .. "\0"))
      assert.is_nil(crypto.decrypt(key, box:sub(1, 27)))
      assert.is_nil(crypto.decrypt(key, ""))
      assert.is_nil(crypto.decrypt(key, nil))
      assert.is_nil(crypto.decrypt(string.rep("k", 32), box))
      -- A failure leaves nothing behind for the next call.
      assert.equal("attack at dawn", crypto.decrypt(key, box))
    end)
  end)

  describe("comparison and encodings", function()
    it("compares in constant time, refusing different lengths", function()
      assert.is_true(crypto.secure_compare("abc", "abc"))
      assert.is_true(crypto.secure_compare("", ""))
      assert.is_false(crypto.secure_compare("abc", "abd"))
      assert.is_false(crypto.secure_compare("abc", "abcd"))
      assert.is_false(crypto.secure_compare("a\0", "a\1"))
    end)

    it("encodes base64 (RFC 4648 §10)", function()
      local cases = {[""] = "", f = "Zg==", fo = "Zm8=", foo = "Zm9v", foob = "Zm9vYg==", fooba = "Zm9vYmE=",
                     foobar = "Zm9vYmFy"}
      for plain, encoded in pairs(cases) do
        assert.equal(encoded, crypto.base64_encode(plain))
        assert.equal(plain, crypto.base64_decode(encoded))
        assert.equal((encoded:gsub("=", "")), crypto.base64url_encode(plain))
        assert.equal(plain, crypto.base64url_decode((encoded:gsub("=", ""))))
      end
      assert.equal("-_8", crypto.base64url_encode("\251\255"))
      assert.equal("+/8=", crypto.base64_encode("\251\255"))
      assert.equal("\251\255", crypto.base64url_decode("-_8"))
    end)

    it("refuses anything but canonical base64", function()
      for _, bad in ipairs({"Zg=", "Zg", "Z===", "Zm9v\n", " Zm9v", "Zm 9v", "Zh==", "Zm9=", "Zm9v!", "=Zm9"}) do
        assert.is_nil(crypto.base64_decode(bad), bad)
      end
      for _, bad in ipairs({"Zg==", "Z", "Zh", "+/8", "a.b"}) do
        assert.is_nil(crypto.base64url_decode(bad), bad)
      end
    end)
  end)

  describe("misuse", function()
    -- The message of the error fn raises.
    local function raised(fn)
      local ok, err = pcall(fn)
      assert.is_false(ok)
      return err
    end

    it("raises at the caller's line", function()
      local here = "crypto_spec.lua:%d+: "
      assert.matches(here .. "crypto.sha256: data must be a string", raised(function() crypto.sha256(1) end))
      assert.matches(here .. "crypto.hmac_sha256: the key must be a string",
        raised(function() crypto.hmac_sha256(nil, "x") end))
      assert.matches(here .. "crypto.encrypt: the key must be a 32%-byte string",
        raised(function() crypto.encrypt("short", "x") end))
      assert.matches(here .. "crypto.decrypt: the key must be a 32%-byte string",
        raised(function() crypto.decrypt(nil, "x") end))
      assert.matches(here .. "crypto.random_bytes: expects a byte count",
        raised(function() crypto.random_bytes(-1) end))
      assert.matches(here .. "crypto.pbkdf2_sha256: iterations must be a positive integer",
        raised(function() crypto.pbkdf2_sha256("p", "s", 0, 32) end))
      assert.matches(here .. "crypto.key_generator: the secret is empty",
        raised(function() crypto.key_generator("") end))
      assert.matches(here .. "crypto.secure_compare expects two strings",
        raised(function() crypto.secure_compare("a", nil) end))
      assert.matches(here .. "crypto.base64url_decode expects a string",
        raised(function() crypto.base64url_decode(1) end))
    end)
  end)
end)
