/*
 * lalloc.h - the allocator behind the runtime's Lua state: per-size-class free lists for the
 * small objects requests make and the GC frees, malloc for the rest.
 */
#ifndef RAGE_LALLOC_H
#define RAGE_LALLOC_H

#include <stddef.h>

typedef struct rage__lalloc_s rage__lalloc_t;

rage__lalloc_t *rage__lalloc_new(void);
/* Frees every block at once; call after lua_close(). */
void rage__lalloc_free(rage__lalloc_t *a);
/* A lua_Alloc: pass the rage__lalloc_t as its ud. */
void *rage__lalloc(void *ud, void *ptr, size_t osize, size_t nsize);

#endif /* RAGE_LALLOC_H */
