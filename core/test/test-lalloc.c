/*
 * test-lalloc.c - the Lua state's allocator: blocks of every small class and large ones, moves
 * between classes keep their bytes, freed blocks are reused, and a Lua state runs on it.
 */
#include <lauxlib.h>
#include <lualib.h>
#include <stdint.h>

#include "lalloc.h"
#include "test.h"

TEST(sizes_and_moves) {
  rage__lalloc_t *a = rage__lalloc_new();
  ASSERT(a != NULL);
  /* Every size up to 2 KiB: aligned, writable, and grown or shrunk with its bytes kept. */
  for (size_t n = 1; n <= 2048; n++) {
    unsigned char *p = rage__lalloc(a, NULL, 0, n);
    ASSERT(p != NULL);
    ASSERT_EQ((uintptr_t)p % 16, 0);
    memset(p, (int)(n & 0xff), n);
    size_t m = n * 3 / 2 + 1;
    unsigned char *q = rage__lalloc(a, p, n, m);
    ASSERT(q != NULL);
    for (size_t i = 0; i < n; i++) ASSERT_EQ(q[i], (unsigned char)(n & 0xff));
    unsigned char *r = rage__lalloc(a, q, m, n / 2 + 1);
    ASSERT(r != NULL);
    for (size_t i = 0; i < n / 2 + 1 && i < n; i++) ASSERT_EQ(r[i], (unsigned char)(n & 0xff));
    ASSERT(rage__lalloc(a, r, n / 2 + 1, 0) == NULL);
  }
  /* A freed small block is the next one of its class. */
  void *x = rage__lalloc(a, NULL, 0, 40);
  rage__lalloc(a, x, 40, 0);
  ASSERT(rage__lalloc(a, NULL, 0, 48) == x);
  rage__lalloc_free(a);
}

TEST(lua_state) {
  rage__lalloc_t *a = rage__lalloc_new();
  lua_State *L = lua_newstate(rage__lalloc, a);
  ASSERT(L != NULL);
  luaL_openlibs(L);
  const char *src =
      "local t = {}\n"
      "for i = 1, 200000 do t[i % 5000] = {i, tostring(i), string.rep('x', i % 700)} end\n"
      "collectgarbage()\n"
      "return #t[4999][3]";
  ASSERT_EQ(luaL_dostring(L, src), 0);
  ASSERT_EQ((int)lua_tointeger(L, -1), 199999 % 700);
  lua_close(L);
  rage__lalloc_free(a);
}

int main(int argc, char **argv) {
  static const test_entry_t tests[] = {TEST_ENTRY(sizes_and_moves), TEST_ENTRY(lua_state),
                                       {NULL, NULL}};
  return test_main(argc, argv, tests);
}
