/*
 * error.c - error messages for RAGE_E* codes (one table, RAGE_ERRNO_MAP in rage.h) and the
 * version string. libuv codes pass through to uv_strerror().
 */
#include "rage.h"

const char *rage_strerror(int err) {
  switch (err) {
#define XX(name, value, msg) \
  case RAGE_##name:          \
    return msg;
    RAGE_ERRNO_MAP(XX)
#undef XX
  case 0:
    return "success";
  default:
    return uv_strerror(err);
  }
}

const char *rage_version(void) {
  return RAGE_VERSION_STRING;
}
