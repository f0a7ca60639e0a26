/*
 * util.c - allocation, buffers and the per-request arena (see util.h).
 */
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void out_of_memory(size_t size) {
  fprintf(stderr, "rage-lua: out of memory allocating %zu bytes\n", size);
  abort();
}

void *rage__malloc(size_t size) {
  void *p = malloc(size ? size : 1);
  if (p == NULL) out_of_memory(size);
  return p;
}

void *rage__calloc(size_t count, size_t size) {
  void *p = calloc(count ? count : 1, size ? size : 1);
  if (p == NULL) out_of_memory(count * size);
  return p;
}

void *rage__realloc(void *ptr, size_t size) {
  void *p = realloc(ptr, size ? size : 1);
  if (p == NULL) out_of_memory(size);
  return p;
}

char *rage__strndup(const char *s, size_t len) {
  char *p = rage__malloc(len + 1);
  memcpy(p, s, len);
  p[len] = '\0';
  return p;
}

void rage__buf_reserve(rage__buf_t *b, size_t extra) {
  if (b->cap - b->len >= extra) return;
  size_t cap = b->cap ? b->cap : 256;
  while (cap - b->len < extra) cap *= 2;
  b->data = rage__realloc(b->data, cap);
  b->cap = cap;
}

void rage__buf_append(rage__buf_t *b, const void *data, size_t len) {
  rage__buf_reserve(b, len);
  memcpy(b->data + b->len, data, len);
  b->len += len;
}

void rage__buf_free(rage__buf_t *b) {
  free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}

struct rage__arena_block_s {
  rage__arena_block_t *next;
  char data[];
};

void rage__arena_init(rage__arena_t *a) {
  a->cur = a->first;
  a->end = a->first + sizeof(a->first);
  a->blocks = NULL;
}

void *rage__arena_alloc(rage__arena_t *a, size_t size) {
  size = (size + 15) & ~(size_t)15;
  if ((size_t)(a->end - a->cur) < size) {
    size_t bsize = size > RAGE_ARENA_BLOCK * 4 ? size : RAGE_ARENA_BLOCK * 4;
    rage__arena_block_t *blk = rage__malloc(sizeof(*blk) + bsize);
    blk->next = a->blocks;
    a->blocks = blk;
    a->cur = blk->data;
    a->end = blk->data + bsize;
  }
  void *p = a->cur;
  a->cur += size;
  return p;
}

char *rage__arena_strndup(rage__arena_t *a, const char *s, size_t len) {
  char *p = rage__arena_alloc(a, len + 1);
  memcpy(p, s, len);
  p[len] = '\0';
  return p;
}

void rage__arena_reset(rage__arena_t *a) {
  while (a->blocks) {
    rage__arena_block_t *next = a->blocks->next;
    free(a->blocks);
    a->blocks = next;
  }
  rage__arena_init(a);
}

uint64_t rage__now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int rage__strieq(const char *a, size_t alen, const char *b, size_t blen) {
  if (alen != blen) return 0;
  for (size_t i = 0; i < alen; i++) {
    unsigned char x = (unsigned char)a[i], y = (unsigned char)b[i];
    if (x >= 'A' && x <= 'Z') x += 32;
    if (y >= 'A' && y <= 'Z') y += 32;
    if (x != y) return 0;
  }
  return 1;
}

int rage__mkstemp(const char *prefix, char *path, size_t size) {
  const char *dir = getenv("TMPDIR");
  if (dir == NULL || *dir == '\0') dir = "/tmp";
  int n = snprintf(path, size, "%s/%sXXXXXX", dir, prefix);
  if (n < 0 || (size_t)n >= size) return -ENAMETOOLONG;
  int fd = mkstemp(path);
  if (fd < 0) return -errno;
  (void)fcntl(fd, F_SETFD, FD_CLOEXEC);
  return fd;
}
