/*
 * test.h - a minimal test harness in the style of libuv's: each TEST(name) is a function; the
 * executable runs the one named on its command line, so ctest gives every test its own process
 * and timeout. Assertions abort, which fails the test with a core-dump-free message.
 */
#ifndef RAGE_TEST_H
#define RAGE_TEST_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define TEST(name) static void test_##name(void)

#define ASSERT(cond)                                                                   \
  do {                                                                                 \
    if (!(cond)) {                                                                     \
      fprintf(stderr, "%s:%d: assertion failed: %s\n", __FILE__, __LINE__, #cond);     \
      exit(1);                                                                         \
    }                                                                                  \
  } while (0)

#define ASSERT_EQ(a, b)                                                                \
  do {                                                                                 \
    long long a_ = (long long)(a), b_ = (long long)(b);                                \
    if (a_ != b_) {                                                                    \
      fprintf(stderr, "%s:%d: %s == %s failed: %lld != %lld\n", __FILE__, __LINE__, #a, \
              #b, a_, b_);                                                             \
      exit(1);                                                                         \
    }                                                                                  \
  } while (0)

#define ASSERT_STR(a, b)                                                               \
  do {                                                                                 \
    const char *a_ = (a), *b_ = (b);                                                   \
    if (a_ == NULL || b_ == NULL || strcmp(a_, b_) != 0) {                             \
      fprintf(stderr, "%s:%d: %s == %s failed:\n  [%s]\n  [%s]\n", __FILE__, __LINE__, #a, \
              #b, a_ ? a_ : "(null)", b_ ? b_ : "(null)");                             \
      exit(1);                                                                         \
    }                                                                                  \
  } while (0)

/* Proves the loop has no handle left: run pending close callbacks, then close it. */
#define ASSERT_LOOP_CLOSES(loop)                                                       \
  do {                                                                                 \
    uv_run((loop), UV_RUN_NOWAIT);                                                     \
    ASSERT_EQ(uv_loop_close(loop), 0);                                                 \
  } while (0)

typedef struct {
  const char *name;
  void (*fn)(void);
} test_entry_t;

#define TEST_ENTRY(name) {#name, test_##name}

static inline int test_main(int argc, char **argv, const test_entry_t *tests) {
  if (argc < 2) {
    for (const test_entry_t *t = tests; t->name; t++) printf("%s\n", t->name);
    return 0;
  }
  for (const test_entry_t *t = tests; t->name; t++) {
    if (strcmp(t->name, argv[1]) == 0) {
      t->fn();
      printf("ok %s\n", t->name);
      return 0;
    }
  }
  fprintf(stderr, "no test named %s\n", argv[1]);
  return 2;
}

#endif /* RAGE_TEST_H */
