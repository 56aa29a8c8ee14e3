/*
 * bench_attention.c — speed of sdb_attention on the U-Net's shapes (SD 1.x at 512x512: 4096
 * tokens x 8 heads of 40, 1024 x 8 x 80, 256 x 8 x 160, and cross-attention on 77 text tokens; at
 * 256x256: 1024 x 8 x 40),
 * and a check that 1 and 2 threads give bit-identical outputs.
 *
 *   sdbatch-bench-attention [threads] [repeats]
 */
#include "sdb/arena.h"
#include "sdb/ops/attention.h"
#include "sdb/threads.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    int th = argc > 1 ? atoi(argv[1]) : 2, reps = argc > 2 ? atoi(argv[2]) : 3;
    struct { int nq, nk, heads, hd; } shapes[] = {
        {4096, 4096, 8, 40}, {1024, 1024, 8, 40}, {1024, 1024, 8, 80}, {256, 256, 8, 160}, {4096, 77, 8, 40},
        {1024, 1024, 1, 512}};
    sdb_arena a;
    sdb_err err;
    if (sdb_arena_init(&a, 0, &err)) return 1;
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        int nq = shapes[si].nq, nk = shapes[si].nk, H = shapes[si].heads, hd = shapes[si].hd, C = H * hd;
        float *q = malloc(sizeof(float) * nq * C), *k = malloc(sizeof(float) * nk * C);
        float *v = malloc(sizeof(float) * nk * C), *o1 = malloc(sizeof(float) * nq * C), *o2 = malloc(sizeof(float) * nq * C);
        unsigned s = 12345;
        for (long i = 0; i < (long)nq * C; i++) { s = s * 1664525u + 1013904223u; q[i] = (float)(s >> 8) / 16777216.0f - 0.5f; }
        for (long i = 0; i < (long)nk * C; i++) { s = s * 1664525u + 1013904223u; k[i] = (float)(s >> 8) / 16777216.0f - 0.5f; }
        for (long i = 0; i < (long)nk * C; i++) { s = s * 1664525u + 1013904223u; v[i] = (float)(s >> 8) / 16777216.0f - 0.5f; }
        sdb_threads_set(1);
        sdb_attention(q, C, k, C, v, C, o1, C, nq, nk, H, hd, 0.158f, 0, &a);
        sdb_threads_set(th);
        sdb_attention(q, C, k, C, v, C, o2, C, nq, nk, H, hd, 0.158f, 0, &a);
        int same = !memcmp(o1, o2, sizeof(float) * nq * C);
        double best = 1e30;
        for (int r = 0; r < reps; r++) {
            double t0 = now();
            sdb_attention(q, C, k, C, v, C, o2, C, nq, nk, H, hd, 0.158f, 0, &a);
            double t = now() - t0;
            if (t < best) best = t;
        }
        double gf = 4.0 * nq * (double)nk * C / 1e9;
        printf("attention %5d x %5d, %d heads of %3d: %.4f s, %.1f GFLOP/s (%d threads), 1 vs %d threads %s\n", nq, nk,
               H, hd, best, gf / best, th, th, same ? "identical" : "DIFFER");
        free(q); free(k); free(v); free(o1); free(o2);
    }
    sdb_arena_free(&a);
    return 0;
}
