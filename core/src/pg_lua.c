/*
 * pg_lua.c - the Lua methods of PostgreSQL pools and leases (see pg_pool.h for what they do).
 *
 * This file reads and checks arguments, raises on misuse at the caller's line, builds the pool
 * and lease objects and reports their state; everything that moves a connection or suspends a
 * fiber is done by the pool mechanics in pg_pool.c through the functions of pg_internal.h.
 * Upvalue 1 of every method is the runtime.
 */
#include "pg_internal.h"

#include <lauxlib.h>
#include <string.h>

#include "runtime.h"
#include "util.h"

#define POOL_MT "rage.pg.pool"
#define LEASE_MT "rage.pg.lease"
#define RT(L) ((rage_runtime_t *)lua_touserdata((L), lua_upvalueindex(1)))

typedef rage__pg_pool_t pool_t;
typedef rage__pg_lease_t lease_t;

/* ---- Lua: shared argument handling ------------------------------------------------------ */

static rage__fiber_t *current(lua_State *L) {
  rage__fiber_t *f = rage__fiber_current(RT(L)->sched);
  if (f == NULL) luaL_error(L, "rage.db can only be used inside a fiber");
  return f;
}

static int push_cancelled(lua_State *L) {
  lua_pushnil(L);
  lua_pushliteral(L, "cancelled");
  lua_pushliteral(L, "the fiber was cancelled");
  return 3;
}

#define STACK_PARAMS 16

/* Reads the statement at `idx` (sql, n, values...) into `a`. Values must be strings or nil,
 * without NUL bytes (text parameters are C strings). */
static void read_statement(lua_State *L, int idx, rage__pg_args_t *a, const char **stack) {
  size_t len;
  const char *sql = luaL_checklstring(L, idx, &len);
  if (strlen(sql) != len) luaL_argerror(L, idx, "the SQL text contains a NUL byte");
  int n = lua_isnoneornil(L, idx + 1) ? 0 : luaL_checkint(L, idx + 1);
  if (n < 0 || n > 65535) luaL_argerror(L, idx + 1, "between 0 and 65535 parameters");
  const char **vals = n <= STACK_PARAMS ? stack : lua_newuserdata(L, (size_t)n * sizeof(char *));
  for (int i = 0; i < n; i++) {
    int at = idx + 2 + i;
    int t = lua_type(L, at);
    if (t == LUA_TNIL || t == LUA_TNONE) {
      vals[i] = NULL;
    } else if (t == LUA_TSTRING) {
      vals[i] = lua_tolstring(L, at, &len);
      if (strlen(vals[i]) != len)
        luaL_error(L, "parameter $%d contains a NUL byte (binary data goes through rage.db.bytea)", i + 1);
    } else {
      luaL_error(L, "parameter $%d must be encoded as a string or nil, not a %s", i + 1, lua_typename(L, t));
    }
  }
  a->sql = sql;
  a->nparams = n;
  a->values = vals;
}

/* ---- Lua: pools ------------------------------------------------------------------------- */

static pool_t *check_pool(lua_State *L) {
  pool_t **box = luaL_checkudata(L, 1, POOL_MT);
  return *box;
}

static uint64_t opt_ms(lua_State *L, int idx, const char *name, uint64_t def) {
  lua_getfield(L, idx, name);
  uint64_t v = def;
  if (!lua_isnil(L, -1)) {
    lua_Number s = lua_tonumber(L, -1);
    if (!lua_isnumber(L, -1) || !(s >= 0) || s > 1e7) luaL_error(L, "%s must be a number of seconds", name);
    v = (uint64_t)(s * 1000.0 + 0.5);
  }
  lua_pop(L, 1);
  return v;
}

static unsigned opt_count(lua_State *L, int idx, const char *name, unsigned def) {
  lua_getfield(L, idx, name);
  unsigned v = def;
  if (!lua_isnil(L, -1)) {
    lua_Number n = lua_tonumber(L, -1);
    if (!lua_isnumber(L, -1) || !(n >= 1) || n > 100000 || n != (lua_Number)(unsigned)n)
      luaL_error(L, "%s must be a whole number from 1 to 100000", name);
    v = (unsigned)n;
  }
  lua_pop(L, 1);
  return v;
}

static char **string_array(lua_State *L, int idx, size_t n) {
  char **out = rage__calloc(n + 1, sizeof(char *));
  for (size_t i = 0; i < n; i++) {
    lua_rawgeti(L, idx, (int)i + 1);
    const char *s = lua_tostring(L, -1);
    out[i] = rage__strndup(s ? s : "", s ? strlen(s) : 0);
    lua_pop(L, 1);
  }
  return out;
}

int rage__pg_lua_pool(lua_State *L) {
  rage_runtime_t *rt = RT(L);
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checktype(L, 2, LUA_TTABLE);
  if (lua_isnoneornil(L, 3)) {
    lua_settop(L, 2);
    lua_newtable(L);
  }
  luaL_checktype(L, 3, LUA_TTABLE);
  size_t n = lua_objlen(L, 1);
  if (n == 0 || n != lua_objlen(L, 2)) return luaL_error(L, "connection keys and values must match");
  for (size_t i = 1; i <= n; i++) {
    lua_rawgeti(L, 1, (int)i);
    lua_rawgeti(L, 2, (int)i);
    if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
      return luaL_error(L, "connection parameters must be strings");
    lua_pop(L, 2);
  }
  unsigned max = opt_count(L, 3, "size", RAGE_PG_POOL_SIZE);
  unsigned max_waiters = opt_count(L, 3, "max_waiters", RAGE_PG_MAX_WAITERS);
  uint64_t checkout = opt_ms(L, 3, "checkout_timeout", RAGE_PG_CHECKOUT_TIMEOUT);
  uint64_t connect = opt_ms(L, 3, "connect_timeout", RAGE_PG_CONNECT_TIMEOUT);
  uint64_t statement = opt_ms(L, 3, "statement_timeout", RAGE_PG_STATEMENT_TIMEOUT);
  unsigned pipeline = opt_count(L, 3, "pipeline", RAGE_PG_PIPELINE);
  lua_getfield(L, 3, "statement_cache");
  unsigned stmt_cache = RAGE_PG_STATEMENT_CACHE;
  if (!lua_isnil(L, -1)) {
    lua_Number v = lua_tonumber(L, -1);
    if (!lua_isnumber(L, -1) || !(v >= 0) || v > 100000 || v != (lua_Number)(unsigned)v)
      return luaL_error(L, "statement_cache must be a whole number from 0 to 100000");
    stmt_cache = (unsigned)v;
  }
  lua_pop(L, 1);
  pool_t **box = lua_newuserdata(L, sizeof(*box));
  *box = NULL;
  luaL_getmetatable(L, POOL_MT);
  lua_setmetatable(L, -2);
  pool_t *p = rage__calloc(1, sizeof(*p));
  p->loop = rt->loop;
  p->sched = rt->sched;
  p->refs = 1;
  p->keys = string_array(L, 1, n);
  p->values = string_array(L, 2, n);
  p->max = max;
  p->max_waiters = max_waiters;
  p->checkout_ms = checkout ? checkout : 1;
  p->connect_ms = connect ? connect : 1;
  p->statement_ms = statement;
  p->stmt_cache = stmt_cache;
  p->pipeline = pipeline;
  *box = p;
  return 1;
}

/* Reads the statement at argument 2: SQL text alone (simple: several statements, no parameters)
 * or SQL and its parameters. The parameter strings stay on the Lua stack; `stack` must outlive
 * the statement's start, where the pool keeps copies. */
static void read_args(lua_State *L, int simple, rage__pg_args_t *tmp, const char **stack) {
  memset(tmp, 0, sizeof(*tmp));
  if (simple) {
    size_t len;
    tmp->sql = luaL_checklstring(L, 2, &len);
    if (strlen(tmp->sql) != len) luaL_argerror(L, 2, "the SQL text contains a NUL byte");
  } else {
    read_statement(L, 2, tmp, stack);
  }
}

static int pool_statement(lua_State *L, int simple) {
  pool_t *p = check_pool(L);
  rage__fiber_t *f = current(L);
  const char *stack[STACK_PARAMS];
  rage__pg_args_t tmp;
  read_args(L, simple, &tmp, stack);
  if (f->cancelled) return push_cancelled(L);
  if (p->closed) return rage__pg_push_client_error(L, "db.connection", "the database pool is closed");
  return rage__pg_pool_statement(L, p, NULL, f, &tmp, simple);
}

static int pool_query(lua_State *L) {
  return pool_statement(L, 0);
}

static int pool_script(lua_State *L) {
  return pool_statement(L, 1);
}

static int pool_lease(lua_State *L) {
  pool_t *p = check_pool(L);
  lease_t *ls = lua_newuserdata(L, sizeof(*ls));
  memset(ls, 0, sizeof(*ls));
  ls->pool = p;
  p->refs++;
  luaL_getmetatable(L, LEASE_MT);
  lua_setmetatable(L, -2);
  return 1;
}

static void set_num(lua_State *L, const char *name, double v) {
  lua_pushnumber(L, v);
  lua_setfield(L, -2, name);
}

static int pool_stats(lua_State *L) {
  pool_t *p = check_pool(L);
  lua_createtable(L, 0, 16);
  set_num(L, "size", p->size);
  set_num(L, "busy", p->size - p->nidle - p->connecting);
  set_num(L, "idle", p->nidle);
  set_num(L, "connecting", p->connecting);
  set_num(L, "waiting", p->nwaiting);
  set_num(L, "max", p->max);
  set_num(L, "max_waiters", p->max_waiters);
  set_num(L, "opened", (double)p->opened);
  set_num(L, "closed", (double)p->closed_conns);
  set_num(L, "statements", (double)p->statements);
  set_num(L, "prepared", (double)p->prepared);
  set_num(L, "pipeline", p->pipeline);
  set_num(L, "pipelined", (double)p->pipelined);
  set_num(L, "resolved", (double)p->resolved);
  set_num(L, "timeouts", (double)p->timeouts);
  set_num(L, "pool_timeouts", (double)p->pool_timeouts);
  set_num(L, "resets", (double)p->resets);
  set_num(L, "connect_failures", (double)p->connect_failures);
  uint64_t now = uv_now(p->loop);
  set_num(L, "backoff_ms", p->retry_at > now ? (double)(p->retry_at - now) : 0);
  if (p->last_error[0]) {
    lua_pushstring(L, p->last_error);
    lua_setfield(L, -2, "last_error");
  }
  return 1;
}

static int pool_close(lua_State *L) {
  pool_t *p = check_pool(L);
  if (p == NULL || p->closed) return 0;
  rage__pg_pool_close(p);
  rage__pg_pool_grant(p); /* fails the waiters */
  return 0;
}

static int pool_gc(lua_State *L) {
  pool_t **box = luaL_checkudata(L, 1, POOL_MT);
  pool_t *p = *box;
  if (p == NULL) return 0;
  *box = NULL;
  /* Waiters anchor the pool object, so none are left; only idle connections are. */
  rage__pg_pool_close(p);
  rage__pg_pool_unref(p);
  return 0;
}

/* ---- Lua: leases ------------------------------------------------------------------------ */

static lease_t *check_lease(lua_State *L) {
  return luaL_checkudata(L, 1, LEASE_MT);
}

static int lease_acquire(lua_State *L) {
  lease_t *ls = check_lease(L);
  pool_t *p = ls->pool;
  rage__fiber_t *f = current(L);
  if (ls->conn || ls->op) return luaL_error(L, "this lease already holds a connection");
  if (f->cancelled) return push_cancelled(L);
  if (p->closed) return rage__pg_push_client_error(L, "db.connection", "the database pool is closed");
  return rage__pg_lease_acquire(L, ls, f);
}

static int lease_statement(lua_State *L, int simple) {
  lease_t *ls = check_lease(L);
  pool_t *p = ls->pool;
  rage__fiber_t *f = current(L);
  const char *stack[STACK_PARAMS];
  rage__pg_args_t tmp;
  read_args(L, simple, &tmp, stack);
  if (ls->op) return luaL_error(L, "this connection is busy with another statement");
  if (ls->conn && ls->owner != f)
    return luaL_error(L, "a transaction's connection can only be used by the fiber that holds it");
  if (f->cancelled) return push_cancelled(L);
  if (ls->conn == NULL)
    return rage__pg_push_client_error(L, "db.connection", "the connection of this transaction was lost");
  return rage__pg_pool_statement(L, p, ls, f, &tmp, simple);
}

static int lease_query(lua_State *L) {
  return lease_statement(L, 0);
}

static int lease_script(lua_State *L) {
  return lease_statement(L, 1);
}

static int lease_release(lua_State *L) {
  lease_t *ls = check_lease(L);
  if (ls->op) return luaL_error(L, "this connection is busy with another statement");
  return rage__pg_lease_release(L, ls);
}

/* lease:wait_notify() -> channel, payload, pid | nil, kind, message, fields. Returns a
 * notification that already arrived without waiting. */
static int lease_wait_notify(lua_State *L) {
  lease_t *ls = check_lease(L);
  rage__fiber_t *f = current(L);
  if (ls->op) return luaL_error(L, "this connection is busy with another statement");
  if (ls->conn && ls->owner != f)
    return luaL_error(L, "a listening connection can only be used by the fiber that holds it");
  if (f->cancelled) return push_cancelled(L);
  if (ls->conn == NULL)
    return rage__pg_push_client_error(L, "db.connection", "the listening connection was lost");
  return rage__pg_lease_wait_notify(L, ls, f);
}

static int lease_status(lua_State *L) {
  lease_t *ls = check_lease(L);
  if (ls->conn == NULL) {
    lua_pushliteral(L, "none");
    return 1;
  }
  switch (PQtransactionStatus(ls->conn->pg)) {
  case PQTRANS_IDLE: lua_pushliteral(L, "idle"); break;
  case PQTRANS_INTRANS: lua_pushliteral(L, "transaction"); break;
  case PQTRANS_INERROR: lua_pushliteral(L, "failed"); break;
  case PQTRANS_ACTIVE: lua_pushliteral(L, "active"); break;
  default: lua_pushliteral(L, "unknown"); break;
  }
  return 1;
}

static int lease_gc(lua_State *L) {
  lease_t *ls = check_lease(L);
  if (ls->pool == NULL) return 0;
  rage__pg_lease_drop(ls);
  return 0;
}

/* ---- registration ----------------------------------------------------------------------- */

static void add_methods(lua_State *L, void *rt, const char *name, const luaL_Reg *methods,
                        lua_CFunction gc) {
  luaL_newmetatable(L, name);
  lua_newtable(L);
  lua_pushlightuserdata(L, rt);
  luaL_openlib(L, NULL, methods, 1);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
}

void rage__pg_pool_open(lua_State *L, void *rt) {
  static const luaL_Reg pool_methods[] = {
      {"query", pool_query}, {"script", pool_script}, {"lease", pool_lease},
      {"stats", pool_stats}, {"close", pool_close},   {NULL, NULL}};
  static const luaL_Reg lease_methods[] = {
      {"acquire", lease_acquire}, {"query", lease_query},   {"script", lease_script},
      {"release", lease_release}, {"status", lease_status}, {"wait_notify", lease_wait_notify},
      {NULL, NULL}};
  add_methods(L, rt, POOL_MT, pool_methods, pool_gc);
  add_methods(L, rt, LEASE_MT, lease_methods, lease_gc);
}

