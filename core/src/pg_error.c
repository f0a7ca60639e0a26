/*
 * pg_error.c - SQLSTATEs to stable error kinds, and the error objects raised to Lua (see pg.h).
 */
#include "pg.h"

#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#include "rage.h"

/* ---- errors ----------------------------------------------------------------------------- */

const char *rage__pg_error_kind(const char *s, int lost) {
  if (s == NULL || strlen(s) != 5) return lost ? "db.connection" : "db.error";
  if (strcmp(s, "23505") == 0) return "db.unique_violation";
  if (strcmp(s, "23503") == 0) return "db.foreign_key_violation";
  if (strcmp(s, "23502") == 0) return "db.not_null_violation";
  if (strcmp(s, "23514") == 0) return "db.check_violation";
  if (strcmp(s, "40001") == 0) return "db.serialization_failure";
  if (strcmp(s, "40P01") == 0) return "db.deadlock";
  if (strcmp(s, "57014") == 0) return "db.timeout";
  /* admin_shutdown, crash_shutdown, cannot_connect_now, too_many_connections: the connection
   * is gone or could not be had. */
  if (strcmp(s, "57P01") == 0 || strcmp(s, "57P02") == 0 || strcmp(s, "57P03") == 0 ||
      strcmp(s, "53300") == 0)
    return "db.connection";
  /* protocol_violation: the parameters do not match the statement's (a caller's mistake). */
  if (strcmp(s, "08P01") == 0) return "db.syntax";
  if (strncmp(s, "08", 2) == 0) return "db.connection";
  if (strncmp(s, "42", 2) == 0) return "db.syntax";
  if (strncmp(s, "23", 2) == 0) return "db.integrity";
  if (strncmp(s, "22", 2) == 0) return "db.data";
  if (strncmp(s, "25", 2) == 0) return "db.transaction_state";
  if (strncmp(s, "28", 2) == 0) return "db.connection"; /* authentication */
  if (strncmp(s, "3D", 2) == 0) return "db.connection"; /* no such database */
  return lost ? "db.connection" : "db.error";
}

/* Errors after which a request should answer 503: the database, not the request, is at fault. */
static int unavailable(const char *kind) {
  return strcmp(kind, "db.connection") == 0 || strcmp(kind, "db.pool_timeout") == 0 ||
         strcmp(kind, "db.timeout") == 0;
}

static void set_field(lua_State *L, const PGresult *res, int code, const char *name) {
  const char *v = PQresultErrorField(res, code);
  if (v == NULL) return;
  lua_pushstring(L, v);
  lua_setfield(L, -2, name);
}

static void push_trimmed(lua_State *L, const char *s) {
  size_t n = strlen(s);
  while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == ' ')) n--;
  lua_pushlstring(L, s, n);
}

int rage__pg_push_error(lua_State *L, const PGresult *res, int lost) {
  const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
  const char *kind = rage__pg_error_kind(state, lost);
  const char *primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
  lua_pushnil(L);
  lua_pushstring(L, kind);
  if (primary) push_trimmed(L, primary);
  else push_trimmed(L, *PQresultErrorMessage(res) ? PQresultErrorMessage(res) : "the database connection failed");
  lua_createtable(L, 0, 8);
  set_field(L, res, PG_DIAG_SQLSTATE, "sqlstate");
  set_field(L, res, PG_DIAG_MESSAGE_DETAIL, "detail");
  set_field(L, res, PG_DIAG_MESSAGE_HINT, "hint");
  set_field(L, res, PG_DIAG_CONSTRAINT_NAME, "constraint");
  set_field(L, res, PG_DIAG_TABLE_NAME, "table");
  set_field(L, res, PG_DIAG_COLUMN_NAME, "column");
  set_field(L, res, PG_DIAG_SCHEMA_NAME, "schema");
  set_field(L, res, PG_DIAG_SEVERITY_NONLOCALIZED, "severity");
  const char *pos = PQresultErrorField(res, PG_DIAG_STATEMENT_POSITION);
  if (pos) {
    lua_pushinteger(L, atoi(pos));
    lua_setfield(L, -2, "position");
  }
  if (unavailable(kind)) {
    lua_pushinteger(L, 503);
    lua_setfield(L, -2, "status");
  }
  return 4;
}

int rage__pg_push_client_error(lua_State *L, const char *kind, const char *message) {
  lua_pushnil(L);
  lua_pushstring(L, kind);
  push_trimmed(L, message);
  lua_createtable(L, 0, 1);
  if (unavailable(kind)) {
    lua_pushinteger(L, 503);
    lua_setfield(L, -2, "status");
  }
  return 4;
}
