/*
 * util.h - helpers shared by the core: allocation that aborts on out-of-memory, a growable
 * byte buffer, a per-request arena, and tests of eight bytes at a time.
 *
 * The core never handles malloc failure case by case: a server that cannot allocate a few
 * hundred bytes cannot answer anyway, so rage__malloc() prints one line and aborts, and the
 * master process starts a fresh worker.
 */
#ifndef RAGE_UTIL_H
#define RAGE_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "config.h"

void *rage__malloc(size_t size);
void *rage__calloc(size_t count, size_t size);
void *rage__realloc(void *ptr, size_t size);
char *rage__strndup(const char *s, size_t len);

#define RAGE_CONTAINER_OF(ptr, type, field) ((type *)((char *)(ptr)-offsetof(type, field)))
#define RAGE_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* A growable byte buffer. Zero-initialize; free with rage__buf_free(). */
typedef struct rage__buf_s {
  char *data;
  size_t len;
  size_t cap;
} rage__buf_t;

void rage__buf_reserve(rage__buf_t *b, size_t extra);
void rage__buf_append(rage__buf_t *b, const void *data, size_t len);
void rage__buf_free(rage__buf_t *b);

/*
 * A bump allocator whose first block is embedded in its owner, so a small request allocates
 * nothing. Blocks past the first come from malloc and are freed by rage__arena_reset().
 */
typedef struct rage__arena_block_s rage__arena_block_t;

typedef struct rage__arena_s {
  char *cur;
  char *end;
  rage__arena_block_t *blocks; /* malloc'd overflow blocks, newest first */
  char first[RAGE_ARENA_BLOCK];
} rage__arena_t;

void rage__arena_init(rage__arena_t *a);
void *rage__arena_alloc(rage__arena_t *a, size_t size);
char *rage__arena_strndup(rage__arena_t *a, const char *s, size_t len);
void rage__arena_reset(rage__arena_t *a);

/* Milliseconds from a monotonic clock, and the wall-clock time in seconds. */
uint64_t rage__now_ms(void);

/* Creates a new file "<$TMPDIR or /tmp>/<prefix>XXXXXX" (mode 0600, close-on-exec) and writes
 * its name into `path`: the descriptor, or a negative errno. */
int rage__mkstemp(const char *prefix, char *path, size_t size);

/* ASCII case-insensitive comparison of two byte strings of equal length. */
int rage__strieq(const char *a, size_t alen, const char *b, size_t blen);

/*
 * Eight bytes at a time. The request path looks for the few bytes it must stop at a word at a
 * time: a test returns the high bit of every byte it flags. A word is loaded little-endian on
 * any machine, so that the borrow of a subtraction runs from a byte to the bytes after it; the
 * first flagged byte is therefore exact, while later ones may be false alarms after a true one.
 * Callers stop at the first and look at the bytes themselves from there.
 */
#define RAGE_SWAR_ONES 0x0101010101010101ULL
#define RAGE_SWAR_HIGH 0x8080808080808080ULL

/* The 8 bytes at s (any alignment), byte i in bits 8i..8i+7. */
static inline uint64_t rage__swar_load(const void *s) {
  uint64_t x;
  memcpy(&x, s, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  x = __builtin_bswap64(x);
#endif
  return x;
}

/* The bytes of x below n (1 <= n <= 128). */
static inline uint64_t rage__swar_below(uint64_t x, unsigned n) {
  return (x - RAGE_SWAR_ONES * n) & ~x & RAGE_SWAR_HIGH;
}

/* The bytes of x equal to c. */
static inline uint64_t rage__swar_eq(uint64_t x, unsigned char c) {
  return rage__swar_below(x ^ (RAGE_SWAR_ONES * c), 1);
}

/* The index of the first byte flagged in m (m != 0). */
static inline size_t rage__swar_first(uint64_t m) {
  return (unsigned)__builtin_ctzll(m) / 8;
}

#endif /* RAGE_UTIL_H */
