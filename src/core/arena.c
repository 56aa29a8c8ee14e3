/*
 * arena.c — the scratch arena (see arena.h). Owns one mmap'd address range.
 */
#include "sdb/arena.h"

#include <assert.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int sdb_arena_init(sdb_arena *a, size_t max_bytes, sdb_err *err)
{
    memset(a, 0, sizeof *a);
    size_t want = max_bytes ? max_bytes : ((size_t)64 << 30);
    for (;;) {
        void *p = mmap(NULL, want, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p != MAP_FAILED) {
            a->base = p;
            a->reserved = want;
            return 0;
        }
        if (max_bytes || want <= ((size_t)64 << 20)) break; /* an explicit size is not negotiable */
        want /= 2;
    }
    return sdb_fail_errno(err, SDB_ENOMEM, "cannot reserve %zu bytes of scratch memory", want);
}

void sdb_arena_free(sdb_arena *a)
{
    if (a->base) munmap(a->base, a->reserved);
    memset(a, 0, sizeof *a);
}

void *sdb_arena_alloc(sdb_arena *a, size_t n)
{
    size_t start = (a->used + 63) & ~(size_t)63;
    if (start > a->reserved || n > a->reserved - start) return NULL;
    a->used = start + n;
    if (a->used > a->peak) a->peak = a->used;
    return a->base + start;
}

float *sdb_arena_floats(sdb_arena *a, size_t count)
{
    return (float *)sdb_arena_alloc(a, count * sizeof(float));
}

void sdb_arena_reset(sdb_arena *a, size_t mark)
{
    assert(mark <= a->used);
    a->used = mark;
}

void sdb_arena_trim(sdb_arena *a)
{
    long pg = sysconf(_SC_PAGESIZE);
    size_t from = (a->used + (size_t)pg - 1) & ~((size_t)pg - 1);
    if (from < a->reserved) madvise(a->base + from, a->reserved - from, MADV_DONTNEED);
}
