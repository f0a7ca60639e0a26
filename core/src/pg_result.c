/*
 * pg_result.c - PostgreSQL result objects (see pg.h): the userdata that owns a PGresult, and
 * result:decode(), which turns its rows into Lua tables of Lua values by column type (numbers,
 * booleans, bytea, timestamps, arrays, JSON through the caller's decoder; the rest as text).
 * Also registers the result metatable, then the pool's (rage__pg_open).
 */
#include "pg_pool.h"

#include <errno.h>
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "util.h"

/* ---- decoding results ------------------------------------------------------------------- */

#define RESULT_MT "rage.pg.result"

enum {
  OID_BOOL = 16, OID_BYTEA = 17, OID_CHAR = 18, OID_NAME = 19, OID_INT8 = 20, OID_INT2 = 21,
  OID_INT4 = 23, OID_TEXT = 25, OID_OID = 26, OID_JSON = 114, OID_FLOAT4 = 700, OID_FLOAT8 = 701,
  OID_BPCHAR = 1042, OID_VARCHAR = 1043, OID_DATE = 1082, OID_TIME = 1083, OID_TIMESTAMP = 1114,
  OID_TIMESTAMPTZ = 1184, OID_INTERVAL = 1186, OID_TIMETZ = 1266, OID_NUMERIC = 1700,
  OID_UUID = 2950, OID_JSONB = 3802,
};

/* Array type -> element type, for the element types decoded here. */
static const struct {
  unsigned array, elem;
} array_types[] = {
    {1000, OID_BOOL},      {1001, OID_BYTEA},       {1002, OID_CHAR},      {1003, OID_NAME},
    {1016, OID_INT8},      {1005, OID_INT2},        {1007, OID_INT4},      {1009, OID_TEXT},
    {1028, OID_OID},       {199, OID_JSON},         {1021, OID_FLOAT4},    {1022, OID_FLOAT8},
    {1014, OID_BPCHAR},    {1015, OID_VARCHAR},     {1182, OID_DATE},      {1183, OID_TIME},
    {1115, OID_TIMESTAMP}, {1185, OID_TIMESTAMPTZ}, {1187, OID_INTERVAL},  {1270, OID_TIMETZ},
    {1231, OID_NUMERIC},   {2951, OID_UUID},        {3807, OID_JSONB},
};

static unsigned element_type(unsigned oid) {
  for (size_t i = 0; i < RAGE_ARRAY_SIZE(array_types); i++)
    if (array_types[i].array == oid) return array_types[i].elem;
  return 0;
}

typedef struct {
  int null;  /* stack index of the value standing for NULL */
  int array; /* stack index of the array metatable, or 0 */
  int json;  /* stack index of the JSON decoder, or 0 */
} decode_ctx_t;

/* Integers beyond 2^53 do not fit a double exactly: they stay strings. */
static const long long MAX_SAFE_INTEGER = 9007199254740992LL;

static int hexval(char ch) {
  if (ch >= '0' && ch <= '9') return ch - '0';
  if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
  return -1;
}

/* bytea in hex output ("\x0a1b"); the escape format is left as text. */
static void push_bytea(lua_State *L, const char *s, size_t len) {
  if (len < 2 || s[0] != '\\' || s[1] != 'x' || (len - 2) % 2 != 0) {
    lua_pushlstring(L, s, len);
    return;
  }
  size_t n = (len - 2) / 2;
  char *out = lua_newuserdata(L, n ? n : 1);
  for (size_t i = 0; i < n; i++) {
    int hi = hexval(s[2 + 2 * i]), lo = hexval(s[3 + 2 * i]);
    if (hi < 0 || lo < 0) {
      lua_pop(L, 1);
      lua_pushlstring(L, s, len);
      return;
    }
    out[i] = (char)(hi << 4 | lo);
  }
  lua_pushlstring(L, out, n);
  lua_remove(L, -2);
}

/* PostgreSQL's ISO output ("2024-01-02 03:04:05.5+00") as ISO 8601 / RFC 3339
 * ("2024-01-02T03:04:05.5+00:00"). Anything else (infinity, BC dates) is left as it is. */
static void push_timestamp(lua_State *L, const char *s, size_t len, int tz) {
  char buf[64];
  if (len < 19 || len + 3 >= sizeof(buf) || s[10] != ' ' || s[13] != ':' || memchr(s, 'B', len)) {
    lua_pushlstring(L, s, len);
    return;
  }
  memcpy(buf, s, len);
  buf[10] = 'T';
  size_t n = len;
  if (tz) {
    /* The offset is the last + or - after the time; "+00" gets its minutes. */
    size_t i = len;
    while (i > 19 && buf[i - 1] != '+' && buf[i - 1] != '-') i--;
    if (i > 19 && n - i == 2) {
      buf[n++] = ':';
      buf[n++] = '0';
      buf[n++] = '0';
    }
  }
  lua_pushlstring(L, buf, n);
}

static int parse_array(lua_State *L, const char **pp, const char *end, unsigned elem,
                       const decode_ctx_t *cx, char *scratch, int depth);

static void push_value(lua_State *L, unsigned oid, const char *s, size_t len, const decode_ctx_t *cx) {
  char num[64];
  switch (oid) {
  case OID_BOOL:
    lua_pushboolean(L, len > 0 && s[0] == 't');
    return;
  case OID_INT2:
  case OID_INT4:
  case OID_OID:
  case OID_INT8:
  case OID_FLOAT4:
  case OID_FLOAT8: {
    if (len >= sizeof(num)) break;
    memcpy(num, s, len);
    num[len] = '\0';
    char *endp;
    if (oid == OID_FLOAT4 || oid == OID_FLOAT8) {
      double d = strtod(num, &endp);
      if (endp == num) break;
      lua_pushnumber(L, d);
      return;
    }
    errno = 0;
    long long v = strtoll(num, &endp, 10);
    if (endp == num || errno != 0) break;
    if (v > MAX_SAFE_INTEGER || v < -MAX_SAFE_INTEGER) break; /* kept as a string */
    lua_pushnumber(L, (lua_Number)v);
    return;
  }
  case OID_JSON:
  case OID_JSONB:
    if (cx->json == 0) break;
    lua_pushvalue(L, cx->json);
    lua_pushlstring(L, s, len);
    lua_call(L, 1, 1);
    if (lua_isnil(L, -1)) {
      lua_pop(L, 1);
      break;
    }
    return;
  case OID_BYTEA:
    push_bytea(L, s, len);
    return;
  case OID_TIMESTAMP:
    push_timestamp(L, s, len, 0);
    return;
  case OID_TIMESTAMPTZ:
    push_timestamp(L, s, len, 1);
    return;
  default: {
    unsigned elem = element_type(oid);
    if (elem == 0) break;
    const char *p = s, *end = s + len;
    /* Arrays whose lower bound is not 1 start with their dimensions: "[0:2]={...}". */
    if (p < end && *p == '[') {
      const char *eq = memchr(p, '=', len);
      if (eq == NULL) break;
      p = eq + 1;
    }
    char *scratch = lua_newuserdata(L, len + 1);
    int top = lua_gettop(L);
    if (parse_array(L, &p, end, elem, cx, scratch, 0) == 0 && p == end) {
      lua_remove(L, top);
      return;
    }
    lua_settop(L, top - 1);
    break;
  }
  }
  lua_pushlstring(L, s, len);
}

/* Parses one level of an array literal at *pp ("{...}") and pushes it as a Lua array; NULL
 * elements become the NULL value. Returns 0, or -1 when the text is not an array literal. */
static int parse_array(lua_State *L, const char **pp, const char *end, unsigned elem,
                       const decode_ctx_t *cx, char *scratch, int depth) {
  const char *p = *pp;
  if (p >= end || *p != '{' || depth > 6) return -1;
  p++;
  lua_newtable(L);
  if (cx->array) {
    lua_pushvalue(L, cx->array);
    lua_setmetatable(L, -2);
  }
  if (p < end && *p == '}') {
    *pp = p + 1;
    return 0;
  }
  int n = 0;
  for (;;) {
    if (p >= end) return -1;
    if (*p == '{') {
      if (parse_array(L, &p, end, elem, cx, scratch, depth + 1) != 0) return -1;
    } else if (*p == '"') {
      size_t k = 0;
      p++;
      while (p < end && *p != '"') {
        if (*p == '\\' && p + 1 < end) p++;
        scratch[k++] = *p++;
      }
      if (p >= end) return -1;
      p++;
      push_value(L, elem, scratch, k, cx);
    } else {
      const char *s = p;
      while (p < end && *p != ',' && *p != '}') p++;
      size_t k = (size_t)(p - s);
      if (k == 4 && strncasecmp(s, "NULL", 4) == 0) lua_pushvalue(L, cx->null);
      else push_value(L, elem, s, k, cx);
    }
    lua_rawseti(L, -2, ++n);
    if (p >= end) return -1;
    if (*p == ',') {
      p++;
      continue;
    }
    if (*p == '}') {
      p++;
      break;
    }
    return -1;
  }
  *pp = p;
  return 0;
}

static PGresult **check_result(lua_State *L) {
  return luaL_checkudata(L, 1, RESULT_MT);
}

void rage__pg_push_result(lua_State *L, PGresult *res) {
  PGresult **box = lua_newuserdata(L, sizeof(*box));
  *box = res;
  luaL_getmetatable(L, RESULT_MT);
  lua_setmetatable(L, -2);
}

/* result:decode(null, array_mt, json_decode) -> rows, columns, affected, tag. Frees the result:
 * a result decodes once. */
static int result_decode(lua_State *L) {
  PGresult **box = check_result(L);
  PGresult *res = *box;
  if (res == NULL) return luaL_error(L, "this result was already decoded");
  decode_ctx_t cx = {2, lua_istable(L, 3) ? 3 : 0, lua_isfunction(L, 4) ? 4 : 0};
  lua_settop(L, 4);
  int nrows = PQntuples(res), ncols = PQnfields(res);
  luaL_checkstack(L, ncols + 8, "too many columns");
  lua_createtable(L, nrows, 0); /* 5: rows */
  if (cx.array) {
    lua_pushvalue(L, cx.array);
    lua_setmetatable(L, -2);
  }
  lua_createtable(L, ncols, 0); /* 6: columns */
  int names = lua_gettop(L) + 1;
  for (int j = 0; j < ncols; j++) {
    lua_pushstring(L, PQfname(res, j));
    lua_pushvalue(L, -1);
    lua_rawseti(L, 6, j + 1);
  }
  unsigned *types = ncols ? lua_newuserdata(L, (size_t)ncols * sizeof(unsigned)) : NULL;
  for (int j = 0; j < ncols; j++) types[j] = (unsigned)PQftype(res, j);
  for (int i = 0; i < nrows; i++) {
    lua_createtable(L, 0, ncols);
    for (int j = 0; j < ncols; j++) {
      lua_pushvalue(L, names + j);
      if (PQgetisnull(res, i, j)) lua_pushvalue(L, cx.null);
      else push_value(L, types[j], PQgetvalue(res, i, j), (size_t)PQgetlength(res, i, j), &cx);
      lua_rawset(L, -3);
    }
    lua_rawseti(L, 5, i + 1);
  }
  const char *affected = PQcmdTuples(res);
  const char *tag = PQcmdStatus(res);
  lua_settop(L, 6);
  if (affected && *affected) lua_pushnumber(L, strtod(affected, NULL));
  else lua_pushnil(L);
  lua_pushstring(L, tag ? tag : "");
  *box = NULL;
  PQclear(res);
  return 4;
}

static int result_gc(lua_State *L) {
  PGresult **box = check_result(L);
  if (*box) PQclear(*box);
  *box = NULL;
  return 0;
}

void rage__pg_open(lua_State *L, void *rt) {
  static const luaL_Reg methods[] = {{"decode", result_decode}, {"free", result_gc}, {NULL, NULL}};
  luaL_newmetatable(L, RESULT_MT);
  lua_newtable(L);
  luaL_register(L, NULL, methods);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, result_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  rage__pg_pool_open(L, rt);
}
