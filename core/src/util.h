/*
 * util.h - memory helpers shared by the core: allocation that aborts on out-of-memory, a
 * growable byte buffer, and a per-request arena.
 *
 * The core never handles malloc failure case by case: a server that cannot allocate a few
 * hundred bytes cannot answer anyway, so rage__malloc() prints one line and aborts, and the
 * master process starts a fresh worker.
 */
#ifndef RAGE_UTIL_H
#define RAGE_UTIL_H

#include <stddef.h>
#include <stdint.h>

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

/* ASCII case-insensitive comparison of two byte strings of equal length. */
/* Creates a new file "<$TMPDIR or /tmp>/<prefix>XXXXXX" (mode 0600, close-on-exec) and writes
 * its name into `path`: the descriptor, or a negative errno. */
int rage__mkstemp(const char *prefix, char *path, size_t size);

int rage__strieq(const char *a, size_t alen, const char *b, size_t blen);

#endif /* RAGE_UTIL_H */
