/*
 * lalloc.c - the allocator of the runtime's Lua state (see lalloc.h).
 *
 * A request allocates a handful of small objects (its request table, a controller instance, the
 * tables and strings its action builds) that the GC frees a few thousand requests later. Small
 * sizes come from one free list per 16-byte size class, carved out of 64 KiB chunks: LuaJIT
 * always passes the old size when it frees or resizes a block, so the class is known and blocks
 * carry no header. Allocating or freeing a small block is a push or a pop. Chunks are returned
 * to the system only when the state closes; the free lists keep what a peak of load needed.
 */
#include "lalloc.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"

#define CLASS_SHIFT 4
#define SMALL_MAX 512
#define NCLASSES (SMALL_MAX >> CLASS_SHIFT)
#define CHUNK_SIZE (64 * 1024)

typedef struct chunk_s {
  struct chunk_s *next;
} chunk_t;

struct rage__lalloc_s {
  void *free[NCLASSES + 1]; /* by class: 1 is 16 bytes, NCLASSES is SMALL_MAX */
  char *cur, *end;          /* the unused rest of the newest chunk */
  chunk_t *chunks;
};

static inline size_t class_of(size_t size) {
  return (size + (1u << CLASS_SHIFT) - 1) >> CLASS_SHIFT;
}

/* A block of `size` bytes from a new chunk, when the newest one has less left. The rest of the old
 * chunk goes to the free lists it fits, largest first. Out of line, like resize(): the common
 * calls then save no registers. */
__attribute__((noinline)) static void *take_from_new_chunk(rage__lalloc_t *a, size_t size) {
  while ((size_t)(a->end - a->cur) >= (1u << CLASS_SHIFT)) {
    size_t rest = (size_t)(a->end - a->cur) >> CLASS_SHIFT;
    if (rest > NCLASSES) rest = NCLASSES;
    *(void **)a->cur = a->free[rest];
    a->free[rest] = a->cur;
    a->cur += rest << CLASS_SHIFT;
  }
  chunk_t *c = malloc(CHUNK_SIZE);
  if (c == NULL) return NULL;
  c->next = a->chunks;
  a->chunks = c;
  a->cur = (char *)c + 16; /* blocks stay 16-byte aligned */
  a->end = (char *)c + CHUNK_SIZE;
  void *p = a->cur;
  a->cur += size;
  return p;
}

/* Popping a block reads its link, in memory the collector freed long ago: the prefetch of the
 * next block of the class lets the next pop (and the code that fills that block) find it in the
 * cache instead of waiting for it, as tcmalloc's free lists do. */
static inline void *take(rage__lalloc_t *a, size_t cls) {
  void *p = a->free[cls];
  if (p != NULL) {
    void *next = *(void **)p;
    a->free[cls] = next;
    __builtin_prefetch(next, 1, 3);
    return p;
  }
  size_t size = cls << CLASS_SHIFT;
  if ((size_t)(a->end - a->cur) < size) return take_from_new_chunk(a, size);
  p = a->cur;
  a->cur += size;
  return p;
}

static inline void give(rage__lalloc_t *a, void *p, size_t cls) {
  *(void **)p = a->free[cls];
  a->free[cls] = p;
}

/* A block that changes size: rarer than a new block or a freed one, and kept out of line so that
 * those two stay a few instructions. */
__attribute__((noinline)) static void *resize(rage__lalloc_t *a, void *ptr, size_t osize,
                                              size_t nsize) {
  if (osize <= SMALL_MAX && nsize <= SMALL_MAX && class_of(osize) == class_of(nsize)) return ptr;
  if (osize > SMALL_MAX && nsize > SMALL_MAX) return realloc(ptr, nsize);
  void *n = nsize <= SMALL_MAX ? take(a, class_of(nsize)) : malloc(nsize);
  if (n == NULL) return NULL;
  memcpy(n, ptr, osize < nsize ? osize : nsize);
  if (osize <= SMALL_MAX) give(a, ptr, class_of(osize));
  else free(ptr);
  return n;
}

void *rage__lalloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  rage__lalloc_t *a = ud;
  if (ptr == NULL) { /* a new block: osize is not a size then */
    if (nsize == 0) return NULL;
    return nsize <= SMALL_MAX ? take(a, class_of(nsize)) : malloc(nsize);
  }
  if (nsize == 0) {
    if (osize <= SMALL_MAX) give(a, ptr, class_of(osize));
    else free(ptr);
    return NULL;
  }
  return resize(a, ptr, osize, nsize);
}

rage__lalloc_t *rage__lalloc_new(void) {
  rage__lalloc_t *a = calloc(1, sizeof(*a));
  return a;
}

void rage__lalloc_free(rage__lalloc_t *a) {
  if (a == NULL) return;
  for (chunk_t *c = a->chunks, *next; c; c = next) {
    next = c->next;
    free(c);
  }
  free(a);
}
