-- rage.crypto: the few primitives signed and encrypted cookies need, over OpenSSL's libcrypto.
--
--   local crypto = require("rage.crypto")
--   local key = crypto.key_generator(secret_key_base):generate("authenticated encrypted cookie", 32)
--   local box = crypto.encrypt(key, "payload")          -- iv .. ciphertext .. tag
--   crypto.decrypt(key, box)                            --> "payload", or nil when tampered with
--
-- Every call is a leaf FFI call into libcrypto: nothing here yields, so the scratch buffers
-- below may be shared by all fibers. Strings in and out are binary; hex() and the base64
-- helpers make them printable. Misuse (a wrong argument type or size) raises at the caller's
-- line; a failure inside OpenSSL, which only a broken installation gives, raises a
-- crypto.openssl error. Decryption and decoding of untrusted input return nil instead.

local ffi = require("ffi")
local errors = require("rage.errors")

local type, error, tostring, setmetatable, pcall, floor = type, error, tostring, setmetatable, pcall, math.floor
local byte, format, gsub, find, sub, rep = string.byte, string.format, string.gsub, string.find, string.sub, string.rep
local ffi_new, ffi_string, ffi_gc = ffi.new, ffi.string, ffi.gc

local _M = {}

ffi.cdef [[
typedef struct evp_md_st EVP_MD;
typedef struct evp_cipher_st EVP_CIPHER;
typedef struct evp_cipher_ctx_st EVP_CIPHER_CTX;

int RAND_bytes(unsigned char *buf, int num);
void ERR_clear_error(void);
int CRYPTO_memcmp(const void *a, const void *b, size_t len);

const EVP_MD *EVP_sha256(void);
int EVP_Digest(const void *data, size_t count, unsigned char *md, unsigned int *size,
               const EVP_MD *type, void *impl);
unsigned char *HMAC(const EVP_MD *evp_md, const void *key, int key_len, const unsigned char *d,
                    size_t n, unsigned char *md, unsigned int *md_len);
int PKCS5_PBKDF2_HMAC(const char *pass, int passlen, const unsigned char *salt, int saltlen,
                      int iter, const EVP_MD *digest, int keylen, unsigned char *out);

const EVP_CIPHER *EVP_aes_256_gcm(void);
EVP_CIPHER_CTX *EVP_CIPHER_CTX_new(void);
void EVP_CIPHER_CTX_free(EVP_CIPHER_CTX *ctx);
int EVP_CIPHER_CTX_reset(EVP_CIPHER_CTX *ctx);
int EVP_CIPHER_CTX_ctrl(EVP_CIPHER_CTX *ctx, int type, int arg, void *ptr);
int EVP_EncryptInit_ex(EVP_CIPHER_CTX *ctx, const EVP_CIPHER *type, void *impl,
                       const unsigned char *key, const unsigned char *iv);
int EVP_EncryptUpdate(EVP_CIPHER_CTX *ctx, unsigned char *out, int *outl,
                      const unsigned char *in, int inl);
int EVP_EncryptFinal_ex(EVP_CIPHER_CTX *ctx, unsigned char *out, int *outl);
int EVP_DecryptInit_ex(EVP_CIPHER_CTX *ctx, const EVP_CIPHER *type, void *impl,
                       const unsigned char *key, const unsigned char *iv);
int EVP_DecryptUpdate(EVP_CIPHER_CTX *ctx, unsigned char *out, int *outl,
                      const unsigned char *in, int inl);
int EVP_DecryptFinal_ex(EVP_CIPHER_CTX *ctx, unsigned char *out, int *outl);

int EVP_EncodeBlock(unsigned char *t, const unsigned char *f, int n);
int EVP_DecodeBlock(unsigned char *t, const unsigned char *f, int n);
]]

-- The runtime links libcrypto already (TLS for rage.http); loading it by name finds that copy.
local C
do
  local ok, lib = pcall(ffi.load, "crypto")
  if not ok then ok, lib = pcall(ffi.load, "libcrypto.so.3") end
  if not ok then error("rage.crypto: cannot load OpenSSL's libcrypto: " .. tostring(lib), 0) end
  C = lib
end

local EVP_CTRL_GCM_GET_TAG, EVP_CTRL_GCM_SET_TAG = 0x10, 0x11
local IV_LEN, TAG_LEN, KEY_LEN = 12, 16, 32
local MAX_INT = 2147483647

_M.IV_LEN, _M.TAG_LEN, _M.KEY_LEN = IV_LEN, TAG_LEN, KEY_LEN

local SHA256 = C.EVP_sha256()
local AES_256_GCM = C.EVP_aes_256_gcm()

-- Shared output buffers. No call below yields between filling one and copying it out.
local digest_buf = ffi_new("unsigned char[64]")
local len_buf = ffi_new("unsigned int[1]")
local int_buf = ffi_new("int[1]")
local scratch_buf, scratch_size = nil, 0

local function scratch(n)
  if n > scratch_size then
    scratch_size = n < 4096 and 4096 or n
    scratch_buf = ffi_new("unsigned char[?]", scratch_size)
  end
  return scratch_buf
end

local cipher_ctx
local function ctx()
  if not cipher_ctx then
    local c = C.EVP_CIPHER_CTX_new()
    if c == nil then errors.raise("crypto.openssl", "EVP_CIPHER_CTX_new failed") end
    cipher_ctx = ffi_gc(c, C.EVP_CIPHER_CTX_free)
  end
  C.EVP_CIPHER_CTX_reset(cipher_ctx)
  return cipher_ctx
end

local function openssl_failed(what)
  C.ERR_clear_error()
  errors.raise("crypto.openssl", what .. " failed in OpenSSL", nil, 3)
end

local function check_string(v, fname, what, level)
  if type(v) ~= "string" then
    error(("crypto.%s: %s must be a string, not %s"):format(fname, what, type(v)), level + 1)
  end
  if #v > MAX_INT then error(("crypto.%s: %s is too large"):format(fname, what), level + 1) end
end

-- ---- random bytes and digests ---------------------------------------------------------------

-- random_bytes(n): n bytes from OpenSSL's CSPRNG.
function _M.random_bytes(n)
  if type(n) ~= "number" or n < 0 or n % 1 ~= 0 or n > MAX_INT then
    error("crypto.random_bytes: expects a byte count, not " .. tostring(n), 2)
  end
  if n == 0 then return "" end
  local buf = scratch(n)
  if C.RAND_bytes(buf, n) ~= 1 then openssl_failed("RAND_bytes") end
  return ffi_string(buf, n)
end

-- sha256(data): the 32-byte SHA-256 digest of data.
function _M.sha256(data)
  check_string(data, "sha256", "data", 2)
  if C.EVP_Digest(data, #data, digest_buf, len_buf, SHA256, nil) ~= 1 then openssl_failed("EVP_Digest") end
  return ffi_string(digest_buf, len_buf[0])
end

-- hmac_sha256(key, data): the 32-byte HMAC-SHA256 of data under key.
function _M.hmac_sha256(key, data)
  check_string(key, "hmac_sha256", "the key", 2)
  check_string(data, "hmac_sha256", "data", 2)
  if C.HMAC(SHA256, key, #key, data, #data, digest_buf, len_buf) == nil then openssl_failed("HMAC") end
  return ffi_string(digest_buf, len_buf[0])
end

-- pbkdf2_sha256(password, salt, iterations, length): PBKDF2-HMAC-SHA256 (RFC 8018) output of
-- `length` bytes.
function _M.pbkdf2_sha256(password, salt, iterations, length)
  check_string(password, "pbkdf2_sha256", "the password", 2)
  check_string(salt, "pbkdf2_sha256", "the salt", 2)
  if type(iterations) ~= "number" or iterations < 1 or iterations % 1 ~= 0 or iterations > MAX_INT then
    error("crypto.pbkdf2_sha256: iterations must be a positive integer", 2)
  end
  if type(length) ~= "number" or length < 1 or length % 1 ~= 0 or length > 1024 then
    error("crypto.pbkdf2_sha256: length must be an integer from 1 to 1024", 2)
  end
  local out = scratch(length)
  if C.PKCS5_PBKDF2_HMAC(password, #password, salt, #salt, iterations, SHA256, length, out) ~= 1 then
    openssl_failed("PKCS5_PBKDF2_HMAC")
  end
  return ffi_string(out, length)
end

-- ---- key derivation -------------------------------------------------------------------------

-- key_generator(secret, iterations = 1000): derives independent keys from one secret, one per
-- purpose (the salt), as Rails' KeyGenerator does with secret_key_base. A key for a given salt
-- and length is derived once and cached.
local KeyGenerator = {}
KeyGenerator.__index = KeyGenerator

function _M.key_generator(secret, iterations)
  check_string(secret, "key_generator", "the secret", 2)
  if secret == "" then error("crypto.key_generator: the secret is empty", 2) end
  iterations = iterations or 1000
  if type(iterations) ~= "number" or iterations < 1 or iterations % 1 ~= 0 then
    error("crypto.key_generator: iterations must be a positive integer", 2)
  end
  return setmetatable({secret = secret, iterations = iterations, cache = {}}, KeyGenerator)
end

-- generator:generate(salt, length = 64): the key for `salt` (a purpose such as
-- "signed cookie"); different salts give unrelated keys.
function KeyGenerator:generate(salt, length)
  check_string(salt, "generate", "the salt", 2)
  length = length or 64
  if type(length) ~= "number" or length < 1 or length % 1 ~= 0 or length > 1024 then
    error("crypto.generate: length must be an integer from 1 to 1024", 2)
  end
  local id = length .. ":" .. salt
  local key = self.cache[id]
  if not key then
    key = _M.pbkdf2_sha256(self.secret, salt, self.iterations, length)
    self.cache[id] = key
  end
  return key
end

-- ---- AES-256-GCM ----------------------------------------------------------------------------

local function check_key(key, fname)
  if type(key) ~= "string" or #key ~= KEY_LEN then
    error(("crypto.%s: the key must be a %d-byte string"):format(fname, KEY_LEN), 3)
  end
end

-- encrypt(key, plaintext, aad): AES-256-GCM under a 32-byte key with a fresh random 12-byte IV.
-- Returns one string: iv (12 bytes) .. ciphertext (as long as the plaintext) .. tag (16 bytes).
-- `aad`, optional, is authenticated but not encrypted: decrypt() needs the same.
function _M.encrypt(key, plaintext, aad)
  check_key(key, "encrypt")
  check_string(plaintext, "encrypt", "the plaintext", 2)
  if aad ~= nil then check_string(aad, "encrypt", "aad", 2) end
  local n = #plaintext
  if n > MAX_INT - IV_LEN - TAG_LEN then error("crypto.encrypt: the plaintext is too large", 2) end
  local out = scratch(IV_LEN + n + TAG_LEN)
  if C.RAND_bytes(out, IV_LEN) ~= 1 then openssl_failed("RAND_bytes") end
  local c = ctx()
  if C.EVP_EncryptInit_ex(c, AES_256_GCM, nil, key, out) ~= 1 then openssl_failed("EVP_EncryptInit_ex") end
  if aad and C.EVP_EncryptUpdate(c, nil, int_buf, aad, #aad) ~= 1 then openssl_failed("EVP_EncryptUpdate") end
  local body = out + IV_LEN
  if n > 0 and C.EVP_EncryptUpdate(c, body, int_buf, plaintext, n) ~= 1 then
    openssl_failed("EVP_EncryptUpdate")
  end
  if C.EVP_EncryptFinal_ex(c, body + n, int_buf) ~= 1 then openssl_failed("EVP_EncryptFinal_ex") end
  if C.EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, TAG_LEN, body + n) ~= 1 then
    openssl_failed("EVP_CTRL_GCM_GET_TAG")
  end
  return ffi_string(out, IV_LEN + n + TAG_LEN)
end

-- decrypt(key, box, aad): the plaintext of a string made by encrypt(), or nil when it was
-- altered in any way, cut short, made under another key or with another aad.
function _M.decrypt(key, box, aad)
  check_key(key, "decrypt")
  if aad ~= nil then check_string(aad, "decrypt", "aad", 2) end
  if type(box) ~= "string" or #box < IV_LEN + TAG_LEN or #box > MAX_INT then return nil end
  local n = #box - IV_LEN - TAG_LEN
  local out = scratch(n + TAG_LEN)
  local c = ctx()
  local ok = C.EVP_DecryptInit_ex(c, AES_256_GCM, nil, key, box) == 1
    and (not aad or C.EVP_DecryptUpdate(c, nil, int_buf, aad, #aad) == 1)
    and (n == 0 or C.EVP_DecryptUpdate(c, out, int_buf, ffi.cast("const unsigned char *", box) + IV_LEN, n) == 1)
  if ok then
    -- The tag is copied out first: SET_TAG takes a mutable pointer and a Lua string is not one.
    ffi.copy(out + n, sub(box, -TAG_LEN), TAG_LEN)
    ok = C.EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, TAG_LEN, out + n) == 1
      and C.EVP_DecryptFinal_ex(c, out + n, int_buf) == 1
  end
  if not ok then
    C.ERR_clear_error()
    return nil
  end
  return ffi_string(out, n)
end

-- ---- comparison and encodings ---------------------------------------------------------------

-- secure_compare(a, b): true when the strings are equal, in a time that depends only on their
-- length (for MACs and tokens an attacker may probe).
function _M.secure_compare(a, b)
  if type(a) ~= "string" or type(b) ~= "string" then
    error("crypto.secure_compare expects two strings", 2)
  end
  if #a ~= #b then return false end
  return C.CRYPTO_memcmp(a, b, #a) == 0
end

-- hex(s): lower-case hexadecimal.
function _M.hex(s)
  check_string(s, "hex", "the argument", 2)
  return (gsub(s, ".", function(c) return format("%02x", byte(c)) end))
end

-- base64_encode(s): standard base64 with padding.
function _M.base64_encode(s)
  check_string(s, "base64_encode", "the argument", 2)
  local n = #s
  if n == 0 then return "" end
  local out = scratch(4 * floor((n + 2) / 3) + 1)
  local len = C.EVP_EncodeBlock(out, s, n)
  return ffi_string(out, len)
end

-- base64_decode(s): the bytes of standard, padded base64, or nil when `s` is not exactly that:
-- no whitespace, no missing or misplaced padding, and only the canonical spelling (the unused
-- low bits of the last character zero), so one value has one encoding.
function _M.base64_decode(s)
  if type(s) ~= "string" then error("crypto.base64_decode expects a string", 2) end
  local n = #s
  if n == 0 then return "" end
  if n % 4 ~= 0 or n > MAX_INT or not find(s, "^[%w+/]+=?=?$") then return nil end
  local out = scratch(n / 4 * 3)
  local len = C.EVP_DecodeBlock(out, s, n)
  if len < 0 then return nil end
  local pad = byte(s, n) == 61 and (byte(s, n - 1) == 61 and 2 or 1) or 0
  local bytes = ffi_string(out, len - pad)
  if pad > 0 and _M.base64_encode(bytes) ~= s then return nil end
  return bytes
end

-- base64url_encode(s): URL- and cookie-safe base64 (RFC 4648 §5) without padding.
function _M.base64url_encode(s)
  check_string(s, "base64url_encode", "the argument", 2)
  local b = _M.base64_encode(s)
  return (gsub(gsub(b, "[+/]", {["+"] = "-", ["/"] = "_"}), "=+$", ""))
end

-- base64url_decode(s): the bytes of unpadded base64url, or nil when `s` is not that.
function _M.base64url_decode(s)
  if type(s) ~= "string" then error("crypto.base64url_decode expects a string", 2) end
  if not find(s, "^[%w%-_]*$") or #s % 4 == 1 then return nil end
  local b = gsub(s, "[-_]", {["-"] = "+", ["_"] = "/"})
  return _M.base64_decode(b .. rep("=", (4 - #b % 4) % 4))
end

return _M
