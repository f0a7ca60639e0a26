/*
 * bind.c - the one binding layer between the core and lua/rage: the `rage.core` module and
 * request objects. Only the lua/rage modules uses these directly; apps see the rage.* API built on them.
 *
 * Conventions (as lua-resty-core): functions that can fail return nil, kind, message; misuse
 * (wrong argument types) raises. Suspending functions follow the protocol in sched.h.
 *
 * A request object is a full userdata holding one pointer to its rage__req_t. The core clears
 * that pointer when the request's fiber finishes, so an object kept past its request raises a
 * clear error instead of touching freed memory.
 */
#include <dirent.h>
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "runtime.h"
#include "util.h"
#include "async.h"
#include "httpc.h"
#include "pg_pool.h"
#include "timer.h"

#define RT(L) ((rage_runtime_t *)lua_touserdata((L), lua_upvalueindex(1)))
#define MAX_STACK_HEADERS 64

/* ---- request objects -------------------------------------------------------------------- */

static rage__req_t *check_req(lua_State *L) {
  void **box = luaL_checkudata(L, 1, "rage.request");
  if (*box == NULL) luaL_error(L, "this request has finished; its object is no longer usable");
  return *box;
}

void rage__bind_push_box(rage_runtime_t *rt, lua_State *L, rage__req_t *req) {
  void **box = lua_newuserdata(L, sizeof(void *));
  *box = req;
  req->box = box;
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->box_mt_ref);
  lua_setmetatable(L, -2);
}

static int req_header(lua_State *L) {
  rage__req_t *req = check_req(L);
  size_t len;
  const char *name = luaL_checklstring(L, 2, &len);
  const rage_header_t *h = rage__req_header(req, name, len);
  if (h == NULL) return 0;
  lua_pushlstring(L, h->value, h->value_len);
  return 1;
}

/* All headers as a table keyed by lower-case name; repeated headers are joined with ", "
 * (Cookie with "; "), as Rack and Node do. */
static int req_headers(lua_State *L) {
  rage__req_t *req = check_req(L);
  char name[256];
  lua_createtable(L, 0, (int)req->nheaders);
  for (unsigned i = 0; i < req->nheaders; i++) {
    const rage_header_t *h = &req->headers[i];
    size_t n = h->name_len < sizeof(name) ? h->name_len : sizeof(name) - 1;
    for (size_t j = 0; j < n; j++) {
      char c = h->name[j];
      name[j] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
    }
    lua_pushlstring(L, name, n);
    lua_pushvalue(L, -1);
    lua_rawget(L, -3);
    if (lua_isnil(L, -1)) {
      lua_pop(L, 1);
      lua_pushlstring(L, h->value, h->value_len);
    } else {
      const char *sep = (n == 6 && memcmp(name, "cookie", 6) == 0) ? "; " : ", ";
      lua_pushstring(L, sep);
      lua_pushlstring(L, h->value, h->value_len);
      lua_concat(L, 3);
    }
    lua_rawset(L, -3);
  }
  return 1;
}

static int req_body(lua_State *L) {
  rage__req_t *req = check_req(L);
  if (req->body_fd < 0) {
    lua_pushlstring(L, req->body.data ? req->body.data : "", req->body.len);
    return 1;
  }
  /* The scratch space is a userdata: the Lua heap takes it back, no malloc per call. */
  char *data = lua_newuserdata(L, req->body_len ? req->body_len : 1);
  ssize_t n = rage__req_body_read(req, 0, data, req->body_len);
  if (n >= 0) lua_pushlstring(L, data, (size_t)n);
  if (n < 0) return luaL_error(L, "cannot read the request body: %s", strerror((int)-n));
  return 1;
}

static int req_body_size(lua_State *L) {
  lua_pushnumber(L, (lua_Number)check_req(L)->body_len);
  return 1;
}

/* box:body_read(offset, n): up to n body bytes from a 0-based offset; nil past the end. */
static int req_body_read(lua_State *L) {
  rage__req_t *req = check_req(L);
  lua_Number off = luaL_checknumber(L, 2), want = luaL_checknumber(L, 3);
  if (!(off >= 0) || !(want >= 1)) return luaL_argerror(L, 2, "offset >= 0 and count >= 1 expected");
  if (off >= (lua_Number)req->body_len) return 0;
  size_t n = want > RAGE_BODY_READ_MAX ? RAGE_BODY_READ_MAX : (size_t)want;
  char stack[16 * 1024];
  char *dst = n <= sizeof(stack) ? stack : lua_newuserdata(L, n);
  ssize_t got = rage__req_body_read(req, (size_t)off, dst, n);
  if (got > 0) lua_pushlstring(L, dst, (size_t)got);
  if (got < 0) return luaL_error(L, "cannot read the request body: %s", strerror((int)-got));
  return got > 0 ? 1 : 0;
}

static int req_version(lua_State *L) {
  rage__req_t *req = check_req(L);
  lua_pushfstring(L, "%d.%d", (int)req->http_major, (int)req->http_minor);
  return 1;
}

static int req_peer(lua_State *L) {
  rage__req_t *req = check_req(L);
  char ip[64];
  if (rage__req_peer(req, ip, sizeof(ip)) != 0) return 0;
  lua_pushstring(L, ip);
  return 1;
}

static int req_responded(lua_State *L) {
  rage__req_t *req = check_req(L);
  lua_pushboolean(L, req->responded);
  return 1;
}

static int req_connected(lua_State *L) {
  rage__req_t *req = check_req(L);
  lua_pushboolean(L, req->conn != NULL || req->cb != NULL);
  return 1;
}

/*
 * Collects a Lua header table at `idx` ({name = value} or {name = {v1, v2}}, strings only) into
 * an array. Names and values point into strings the table holds, so they stay valid while the
 * table is on the stack. One traversal fills `stack`; only a table with more headers than fit
 * there is traversed again, into a userdata pushed on the stack.
 */
static size_t collect_into(lua_State *L, int idx, rage_header_t *hs, size_t cap) {
  size_t n = 0;
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {
    if (lua_type(L, -2) != LUA_TSTRING) luaL_error(L, "header names must be strings");
    size_t nlen, vlen;
    const char *name = lua_tolstring(L, -2, &nlen);
    int vt = lua_type(L, -1);
    if (vt == LUA_TSTRING) {
      if (n < cap) {
        hs[n].name = name;
        hs[n].name_len = nlen;
        hs[n].value = lua_tolstring(L, -1, &vlen);
        hs[n].value_len = vlen;
      }
      n++;
    } else if (vt == LUA_TTABLE) {
      size_t m = lua_objlen(L, -1);
      for (size_t i = 1; i <= m; i++) {
        lua_rawgeti(L, -1, (int)i);
        if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "header '%s' has a non-string value", name);
        if (n < cap) {
          hs[n].name = name;
          hs[n].name_len = nlen;
          hs[n].value = lua_tolstring(L, -1, &vlen);
          hs[n].value_len = vlen;
        }
        n++;
        lua_pop(L, 1);
      }
    } else {
      luaL_error(L, "header '%s' has a non-string value", name);
    }
    lua_pop(L, 1);
  }
  return n;
}

static size_t collect_headers(lua_State *L, int idx, rage_header_t **out, rage_header_t *stack) {
  *out = stack;
  if (lua_isnoneornil(L, idx)) return 0;
  luaL_checktype(L, idx, LUA_TTABLE);
  size_t n = collect_into(L, idx, stack, MAX_STACK_HEADERS);
  if (n > MAX_STACK_HEADERS) {
    rage_header_t *hs = lua_newuserdata(L, n * sizeof(*hs));
    n = collect_into(L, idx, hs, n);
    *out = hs;
  }
  return n;
}

static int req_respond(lua_State *L) {
  rage__req_t *req = check_req(L);
  int status = luaL_checkint(L, 2);
  rage_header_t stack[MAX_STACK_HEADERS], *hs;
  int top = lua_gettop(L);
  size_t blen = 0;
  const char *body = lua_isnoneornil(L, 4) ? "" : luaL_checklstring(L, 4, &blen);
  size_t n = collect_headers(L, 3, &hs, stack);
  const char *err = NULL;
  int r = rage__req_respond(req, status, hs, n, body, blen, &err);
  lua_settop(L, top);
  if (r != 0) return luaL_error(L, "%s", err);
  return 0;
}

static int req_stream_start(lua_State *L) {
  rage__req_t *req = check_req(L);
  int status = luaL_checkint(L, 2);
  rage_header_t stack[MAX_STACK_HEADERS], *hs;
  size_t n = collect_headers(L, 3, &hs, stack);
  const char *err = NULL;
  int r = rage__req_stream_start(req, status, hs, n, &err);
  if (r != 0) return luaL_error(L, "%s", err);
  return 0;
}

static int req_write(lua_State *L) {
  rage_runtime_t *rt = RT(L);
  rage__req_t *req = check_req(L);
  size_t len;
  const char *data = luaL_checklstring(L, 2, &len);
  int r = rage__req_stream_write(req, data, len);
  if (r == RAGE_ESTATE) return luaL_error(L, "write called without an open stream");
  if (r == RAGE_ECLOSED) {
    lua_pushnil(L);
    lua_pushliteral(L, "closed");
    lua_pushliteral(L, "the client closed the connection");
    return 3;
  }
  rage__fiber_t *f = rage__fiber_current(rt->sched);
  if (r == 1 && f != NULL && req->conn != NULL) {
    if (f->cancelled) {
      lua_pushnil(L);
      lua_pushliteral(L, "cancelled");
      lua_pushliteral(L, "the fiber was cancelled");
      return 3;
    }
    return rage__req_stream_wait(L, req, f);
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int req_finish(lua_State *L) {
  rage__req_t *req = check_req(L);
  if (rage__req_stream_end(req) != 0) return luaL_error(L, "finish called without an open stream");
  return 0;
}

/* box:send_file(status, headers, path, offset, length) */
static int req_send_file(lua_State *L) {
  rage__req_t *req = check_req(L);
  int status = luaL_checkint(L, 2);
  const char *path = luaL_checkstring(L, 4);
  lua_Number off = luaL_checknumber(L, 5), len = luaL_checknumber(L, 6);
  if (off < 0 || len < 0) return luaL_error(L, "send_file: offset and length must not be negative");
  rage_header_t stack[MAX_STACK_HEADERS], *hs;
  size_t n = collect_headers(L, 3, &hs, stack);
  const char *err = NULL;
  int r = rage__req_send_file(req, status, hs, n, path, (uint64_t)off, (uint64_t)len, &err);
  if (r == RAGE_EINVAL || r == RAGE_ESTATE) return luaL_error(L, "%s", err);
  if (r != 0) {
    lua_pushnil(L);
    lua_pushliteral(L, "fs.error");
    lua_pushfstring(L, "%s: %s (%s)", path, err, rage_strerror(r));
    return 3;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* box:request_id(): the id the response carries (made the first time it is asked for). */
static int req_request_id(lua_State *L) {
  rage__req_t *req = check_req(L);
  size_t len;
  const char *id = rage__req_id(req, &len);
  lua_pushlstring(L, id, len);
  return 1;
}

static int req_tostring(lua_State *L) {
  void **box = luaL_checkudata(L, 1, "rage.request");
  if (*box == NULL) {
    lua_pushliteral(L, "rage.request (finished)");
  } else {
    rage__req_t *req = *box;
    lua_pushfstring(L, "rage.request (%s %s)", req->method, req->target);
  }
  return 1;
}

static const luaL_Reg req_methods[] = {
    {"header", req_header},
    {"headers", req_headers},
    {"body", req_body},
    {"body_size", req_body_size},
    {"body_read", req_body_read},
    {"http_version", req_version},
    {"peer", req_peer},
    {"responded", req_responded},
    {"connected", req_connected},
    {"respond", req_respond},
    {"stream_start", req_stream_start},
    {"write", req_write},
    {"finish", req_finish},
    {"send_file", req_send_file},
    {"request_id", req_request_id},
    {NULL, NULL},
};

/* ---- rage.core -------------------------------------------------------------------------- */

static int core_set_handler(lua_State *L) {
  rage_runtime_t *rt = RT(L);
  luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_pushvalue(L, 1);
  if (rt->handler_ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, rt->handler_ref);
  rt->handler_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return 0;
}

static int core_configure_server(lua_State *L) {
  rage_runtime_t *rt = RT(L);
  luaL_checktype(L, 1, LUA_TTABLE);
  rage__bind_read_server_config(L, 1, &rt->cfg);
  return 0;
}

static int core_log(lua_State *L) {
  int level = luaL_checkint(L, 1);
  size_t len;
  const char *msg = luaL_checklstring(L, 2, &len);
  rage__log_write(level, msg, len);
  return 0;
}

/* core.log_line(line): writes a complete line (the JSON format) with one write(2). */
static int core_log_line(lua_State *L) {
  size_t len;
  const char *line = luaL_checklstring(L, 1, &len);
  char stack[2048];
  char *buf = len + 1 <= sizeof(stack) ? stack : rage__malloc(len + 1);
  memcpy(buf, line, len);
  buf[len] = '\n';
  (void)!write(STDERR_FILENO, buf, len + 1);
  if (buf != stack) free(buf);
  return 0;
}

static int core_log_level(lua_State *L) {
  if (!lua_isnoneornil(L, 1)) rage__log_set_level(luaL_checkint(L, 1));
  lua_pushinteger(L, rage__log_level());
  return 1;
}

static int core_now(lua_State *L) {
  rage_runtime_t *rt = RT(L);
  lua_pushnumber(L, (lua_Number)uv_now(rt->loop) / 1000.0);
  return 1;
}

static int core_clock(lua_State *L) {
  lua_pushnumber(L, (lua_Number)uv_hrtime() / 1e9);
  return 1;
}

static int core_scandir(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  DIR *d = opendir(path);
  if (d == NULL) {
    lua_pushnil(L);
    lua_pushliteral(L, "fs.not_found");
    lua_pushfstring(L, "cannot open directory %s", path);
    return 3;
  }
  lua_newtable(L);
  int i = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    lua_pushstring(L, e->d_name);
    lua_rawseti(L, -2, ++i);
  }
  closedir(d);
  return 1;
}

static int core_stat(lua_State *L) {
  size_t len;
  const char *path = luaL_checklstring(L, 1, &len);
  struct stat st;
  if (strlen(path) != len) return 0; /* an embedded NUL names no file */
  if (stat(path, &st) != 0) return 0;
  lua_pushstring(L, S_ISDIR(st.st_mode) ? "directory" : S_ISREG(st.st_mode) ? "file" : "other");
  /* Nanoseconds count: an edit within the same second must still show (reloading). */
  lua_pushnumber(L, (lua_Number)st.st_mtim.tv_sec + (lua_Number)st.st_mtim.tv_nsec / 1e9);
  lua_pushnumber(L, (lua_Number)st.st_size);
  return 3;
}

/* core.realpath(path): the canonical absolute path (symlinks resolved), or nil. */
static int core_realpath(lua_State *L) {
  size_t len;
  const char *path = luaL_checklstring(L, 1, &len);
  if (strlen(path) != len) return 0; /* an embedded NUL names no file */
  char *real = realpath(path, NULL);
  if (real == NULL) return 0;
  lua_pushstring(L, real);
  free(real);
  return 1;
}

/* core.mktemp(prefix): creates an empty private file in $TMPDIR (else /tmp); its path. */
static int core_mktemp(lua_State *L) {
  const char *prefix = luaL_optstring(L, 1, "rage-");
  char path[4096];
  int fd = rage__mkstemp(prefix, path, sizeof(path));
  if (fd < 0) return luaL_error(L, "cannot create a temporary file: %s", strerror(-fd));
  close(fd);
  lua_pushstring(L, path);
  return 1;
}

static int core_fiber(lua_State *L) {
  rage_runtime_t *rt = RT(L);
  rage__fiber_t *f = rage__fiber_current(rt->sched);
  if (f == NULL) return 0;
  lua_pushlightuserdata(L, f);
  lua_pushboolean(L, f->cancelled);
  return 2;
}

/* ---- leaf functions for the FFI ---------------------------------------------------------
 *
 * The per-request calls that only read core state are also reachable through the FFI: a call
 * through a C function pointer is compiled into the caller's trace, where a classic C function
 * ends the trace and costs a stack of API calls. lua/rage/leaf.lua declares the same struct;
 * keep the two in step. None of these may yield, raise, allocate Lua objects or call back into
 * Lua (DESIGN.md: "FFI only for leaf calls"). A request object arrives as a pointer to its
 * userdata payload, which holds the request pointer (NULL once the request has finished).
 */
typedef struct {
  int version;
  double (*now)(const rage_runtime_t *rt);
  double (*fiber_id)(const rage_runtime_t *rt);
  int (*responded)(void *const *box);
  const char *(*header)(void *const *box, const char *name, size_t len, size_t *value_len);
  int (*respond)(void *const *box, int status, const rage_header_t *headers, size_t nheaders,
                 const char *body, size_t body_len, const char **err);
  size_t (*json_plain)(const char *s, size_t len);
  size_t (*json_quote)(const char *s, size_t len, char *out);
} leaf_api_t;

static double leaf_now(const rage_runtime_t *rt) {
  return (double)uv_now(rt->loop) / 1000.0;
}

/* The running fiber as a number (its address), 0 outside fibers: a table key that costs no
 * allocation, the same value core.fiber() gives as a light userdata. */
static double leaf_fiber_id(const rage_runtime_t *rt) {
  return (double)(uintptr_t)rage__fiber_current(rt->sched);
}

/* 1 responded, 0 not yet, -1 the request has finished. */
static int leaf_responded(void *const *box) {
  const rage__req_t *req = *box;
  return req == NULL ? -1 : req->responded;
}

/* The value of the first header named `name` (any case), or NULL when there is none or the
 * request has finished. The value lives in the request's arena. */
static const char *leaf_header(void *const *box, const char *name, size_t len, size_t *value_len) {
  const rage__req_t *req = *box;
  if (req == NULL) return NULL;
  const rage_header_t *h = rage__req_header(req, name, len);
  if (h == NULL) return NULL;
  *value_len = h->value_len;
  return h->value;
}

/* box:respond() for a request on a connection: 0 when sent, RAGE_E* with `err` set when the
 * response is refused, LEAF_FINISHED when the request has finished, and LEAF_CLASSIC when the
 * call could run Lua code before it returns (a request handed in by a host, whose callback runs
 * during the call; a draining server): those go through the classic binding. */
#define LEAF_FINISHED 1
#define LEAF_CLASSIC 2
static int leaf_respond(void *const *box, int status, const rage_header_t *headers, size_t nheaders,
                        const char *body, size_t body_len, const char **err) {
  rage__req_t *req = *box;
  if (req == NULL) return LEAF_FINISHED;
  if (!rage__req_respond_is_leaf(req)) return LEAF_CLASSIC;
  return rage__req_respond(req, status, headers, nheaders, body, body_len, err);
}

/* JSON strings, for rage.json's encoder: the bytes JSON needs escaped are the control
 * characters, '"', '\\', and, as lua-cjson writes them, '/' and DEL. */
static const unsigned char json_escaped[256] = {
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    ['"'] = 1, ['/'] = 1, ['\\'] = 1, [127] = 1,
};

/* Whether any of the 4 bytes at p needs escaping: one branch for the four. */
static inline int json_escaped4(const unsigned char *p) {
  return json_escaped[p[0]] | json_escaped[p[1]] | json_escaped[p[2]] | json_escaped[p[3]];
}

/* The length of the prefix of s that needs no escaping: len when none of it does. Eight bytes a
 * step (four for a short string), the last step overlapping the one before it, then byte by byte
 * from the step that holds an escaped byte. */
static size_t leaf_json_plain(const char *s, size_t len) {
  const unsigned char *p = (const unsigned char *)s;
  size_t i = 0;
  if (len >= 8) {
    size_t last = len - 8;
    while (i < last && !(json_escaped4(p + i) | json_escaped4(p + i + 4))) i += 8;
    if (i >= last) {
      if (!(json_escaped4(p + last) | json_escaped4(p + last + 4))) return len;
      i = last;
    }
  } else if (len >= 4) {
    if (!(json_escaped4(p) | json_escaped4(p + len - 4))) return len;
  }
  while (i < len && !json_escaped[p[i]]) i++;
  return i;
}

/* Writes s as a quoted JSON string to out (room for 6 * len + 2 bytes); returns its length. */
static size_t leaf_json_quote(const char *s, size_t len, char *out) {
  static const char hex[] = "0123456789abcdef";
  const unsigned char *p = (const unsigned char *)s;
  char *o = out;
  *o++ = '"';
  for (size_t i = 0; i < len; i++) {
    unsigned char c = p[i];
    if (!json_escaped[c]) {
      *o++ = (char)c;
      continue;
    }
    *o++ = '\\';
    switch (c) {
    case '"': case '\\': case '/': *o++ = (char)c; break;
    case '\b': *o++ = 'b'; break;
    case '\f': *o++ = 'f'; break;
    case '\n': *o++ = 'n'; break;
    case '\r': *o++ = 'r'; break;
    case '\t': *o++ = 't'; break;
    default:
      *o++ = 'u';
      *o++ = '0';
      *o++ = '0';
      *o++ = hex[c >> 4];
      *o++ = hex[c & 15];
    }
  }
  *o++ = '"';
  return (size_t)(o - out);
}

static const leaf_api_t leaf_api = {2,           leaf_now,        leaf_fiber_id,  leaf_responded,
                                    leaf_header, leaf_respond,    leaf_json_plain, leaf_json_quote};

/* core.request_id(): the id of the request the calling fiber serves, or nil (outside a
 * request's fiber, or when the server gives requests no ids). */
static int core_request_id(lua_State *L) {
  rage__req_t *req = rage__runtime_current_request(RT(L));
  if (req == NULL || !req->want_id) return 0;
  size_t len;
  const char *id = rage__req_id(req, &len);
  lua_pushlstring(L, id, len);
  return 1;
}

static const luaL_Reg core_funcs[] = {
    {"sleep", rage__timer_lua_sleep},
    {"spawn", rage__async_lua_spawn},
    {"waiter", rage__async_lua_waiter},
    {"timeout", rage__async_lua_timeout},
    {"locals", rage__async_lua_locals},
    {"http_request", rage__httpc_lua_request},
    {"http_configure", rage__httpc_lua_configure},
    {"http_stats", rage__httpc_lua_stats},
    {"http_close_idle", rage__httpc_lua_close_idle},
    {"pg_pool", rage__pg_lua_pool},
    {"set_handler", core_set_handler},
    {"configure_server", core_configure_server},
    {"log", core_log},
    {"log_level", core_log_level},
    {"log_line", core_log_line},
    {"now", core_now},
    {"clock", core_clock},
    {"scandir", core_scandir},
    {"stat", core_stat},
    {"realpath", core_realpath},
    {"mktemp", core_mktemp},
    {"fiber", core_fiber},
    {"request_id", core_request_id},
    {NULL, NULL},
};

int rage__bind_open(lua_State *L) {
  rage_runtime_t *rt = lua_touserdata(L, lua_upvalueindex(1));
  /* Request object metatable. */
  luaL_newmetatable(L, "rage.request");
  lua_newtable(L);
  lua_pushlightuserdata(L, rt);
  luaL_openlib(L, NULL, req_methods, 1);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, req_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pushliteral(L, "rage.request");
  lua_setfield(L, -2, "__metatable");
  rt->box_mt_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  rage__async_open(L, rt);
  rage__pg_open(L, rt);
  rage__httpc_open(L, rt);

  lua_newtable(L);
  lua_pushlightuserdata(L, rt);
  luaL_openlib(L, NULL, core_funcs, 1);
  lua_pushlightuserdata(L, rage__sched_marker());
  lua_setfield(L, -2, "SUSPEND");
  lua_pushlightuserdata(L, rage__sched_idle4_marker());
  lua_setfield(L, -2, "IDLE4");
  lua_pushstring(L, rage_version());
  lua_setfield(L, -2, "version");
  lua_pushstring(L, rt->env);
  lua_setfield(L, -2, "env");
  lua_pushinteger(L, (lua_Integer)getpid());
  lua_setfield(L, -2, "pid");
  lua_pushlightuserdata(L, (void *)&leaf_api);
  lua_setfield(L, -2, "leaf");
  lua_pushlightuserdata(L, rt);
  lua_setfield(L, -2, "runtime");
  lua_pushinteger(L, RAGE_LOG_DEBUG);
  lua_setfield(L, -2, "DEBUG");
  lua_pushinteger(L, RAGE_LOG_INFO);
  lua_setfield(L, -2, "INFO");
  lua_pushinteger(L, RAGE_LOG_WARN);
  lua_setfield(L, -2, "WARN");
  lua_pushinteger(L, RAGE_LOG_ERROR);
  lua_setfield(L, -2, "ERROR");
  return 1;
}

/* ---- server settings -------------------------------------------------------------------- */

typedef struct {
  const char *name;
  size_t offset;
  char kind; /* 's' size in bytes, 'n' count, 't' time in seconds stored as ms, 'b' boolean */
} setting_t;

#define S(field, kind) {#field, offsetof(rage_server_config_t, field), kind}
static const setting_t settings[] = {
    S(max_request_line, 's'), S(max_header_size, 's'), S(max_headers, 'n'),
    S(max_body, 's'),         S(body_buffer, 's'),     S(max_chunk_ext, 's'),   S(header_timeout, 't'),
    S(body_idle_timeout, 't'), S(request_timeout, 't'), S(keepalive_timeout, 't'),
    S(max_requests, 'n'),     S(send_timeout, 't'),    S(output_high_water, 's'),
    S(max_connections, 'n'),  S(drain_timeout, 't'),     S(request_id, 'b'),
};
#undef S

/* The runtime owns body limits read from Lua: the array and each prefix are one allocation. */
void rage__bind_free_body_limits(rage_server_config_t *cfg) {
  if (cfg->body_limits) free((void *)cfg->body_limits);
  cfg->body_limits = NULL;
  cfg->nbody_limits = 0;
}

/* body_limits = {["/uploads"] = 50 * 1024 * 1024, ...} */
static void read_body_limits(lua_State *L, int idx, rage_server_config_t *cfg) {
  size_t n = 0, bytes = 0;
  luaL_checktype(L, idx, LUA_TTABLE);
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {
    size_t len;
    if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TNUMBER)
      luaL_error(L, "server setting 'body_limits' maps path prefixes to byte counts");
    const char *prefix = lua_tolstring(L, -2, &len);
    if (len == 0 || prefix[0] != '/' || strlen(prefix) != len)
      luaL_error(L, "body_limits: '%s' must be a path starting with '/'", prefix);
    if (!(lua_tonumber(L, -1) > 0)) luaL_error(L, "body_limits['%s'] must be a positive number", prefix);
    n++;
    bytes += len + 1;
    lua_pop(L, 1);
  }
  rage_body_limit_t *limits = rage__malloc(n * sizeof(*limits) + bytes + 1);
  char *strings = (char *)(limits + n);
  size_t i = 0;
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {
    size_t len;
    const char *prefix = lua_tolstring(L, -2, &len);
    memcpy(strings, prefix, len + 1);
    limits[i].prefix = strings;
    limits[i].max_body = (size_t)lua_tonumber(L, -1);
    strings += len + 1;
    i++;
    lua_pop(L, 1);
  }
  rage__bind_free_body_limits(cfg);
  cfg->body_limits = limits;
  cfg->nbody_limits = (unsigned)n;
}

void rage__bind_read_server_config(lua_State *L, int idx, rage_server_config_t *cfg) {
  rage_server_config_t next = *cfg;
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {
    const char *key = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
    if (key && strcmp(key, "body_limits") == 0) {
      read_body_limits(L, lua_gettop(L), &next);
      lua_pop(L, 1);
      continue;
    }
    const setting_t *s = NULL;
    for (size_t i = 0; key && i < sizeof(settings) / sizeof(settings[0]); i++)
      if (strcmp(settings[i].name, key) == 0) s = &settings[i];
    if (s == NULL) {
      /* host, port and workers belong to the CLI and the app loader, not to the core. */
      if (key && (!strcmp(key, "host") || !strcmp(key, "port") || !strcmp(key, "workers"))) {
        lua_pop(L, 1);
        continue;
      }
      luaL_error(L, "unknown server setting '%s'", key ? key : "?");
    }
    char *field = (char *)&next + s->offset;
    if (s->kind == 'b') {
      if (lua_type(L, -1) != LUA_TBOOLEAN)
        luaL_error(L, "server setting '%s' must be true or false", key);
      *(int *)(void *)field = lua_toboolean(L, -1);
      lua_pop(L, 1);
      continue;
    }
    if (lua_type(L, -1) != LUA_TNUMBER) luaL_error(L, "server setting '%s' must be a number", key);
    lua_Number v = lua_tonumber(L, -1);
    if (!(v > 0) || v > 1e12) luaL_error(L, "server setting '%s' must be a positive number", key);
    switch (s->kind) {
    case 's':
      *(size_t *)(void *)field = (size_t)v;
      break;
    case 'n':
      if (v > 4e9) luaL_error(L, "server setting '%s' is too large", key);
      *(unsigned *)(void *)field = (unsigned)v;
      break;
    default:
      *(uint64_t *)(void *)field = (uint64_t)(v * 1000.0 + 0.5);
      break;
    }
    lua_pop(L, 1);
  }
  if (next.max_request_line > (1u << 20) || next.max_header_size > (1u << 24) ||
      next.max_headers > 10000)
    luaL_error(L, "server head limits are too large (max_request_line <= 1 MiB, "
                  "max_header_size <= 16 MiB, max_headers <= 10000)");
  *cfg = next;
}
