/*
 * arena.h — scratch memory for forward passes: a bump allocator over one large reserved range.
 *
 * The arena reserves a big virtual range once (physical pages are only committed when touched),
 * so pointers never move and no per-layer malloc happens. A model's forward takes a mark at its
 * start and resets to it at the end; the same pages are reused across steps and jobs. `peak`
 * records the high-water mark for memory reports.
 */
#ifndef SDB_ARENA_H
#define SDB_ARENA_H

#include <stddef.h>
#include "sdb/error.h"

typedef struct sdb_arena {
    unsigned char *base;
    size_t reserved; /* bytes of address space reserved */
    size_t used;     /* bytes handed out now */
    size_t peak;     /* high-water mark of `used` */
} sdb_arena;

/* Reserves up to `max_bytes` of address space (0 = a default of 64 GiB, shrunk if refused). */
int sdb_arena_init(sdb_arena *a, size_t max_bytes, sdb_err *err);
void sdb_arena_free(sdb_arena *a);
/* 64-byte-aligned block of n bytes, or NULL when the reservation is exhausted. */
void *sdb_arena_alloc(sdb_arena *a, size_t n);
/* Same, as floats; NULL when exhausted. */
float *sdb_arena_floats(sdb_arena *a, size_t count);
static inline size_t sdb_arena_mark(const sdb_arena *a) { return a->used; }
void sdb_arena_reset(sdb_arena *a, size_t mark);
/* Returns committed pages above the current use to the OS (between jobs, not between steps). */
void sdb_arena_trim(sdb_arena *a);

#endif
