/*
 * bench_linear.c — sdbatch's linear layers (sdb_gemm_linear: the fixed, thread-count-independent
 * tile grid of ops/par.c) against OpenBLAS's own sgemm on the same shapes, for the linear layers of
 * one SD 1.5 U-Net step at one image size. The shapes and how often a step runs each come from the
 * U-Net's own plan (sdb_balance_unet on the built-in SD 1.5 inpainting config: no weights needed).
 *
 * Per shape: the grid (tile rows x columns x K slices, units), its load-balance bound (the minimum
 * over 2..64 threads), the median rate of sdb_gemm_linear and of OpenBLAS's threaded sgemm on the
 * same product at `threads`, both interleaved rep by rep, then the same pair on one thread in CPU
 * time (the steadier figure on a shared machine). The last line weights the shapes by their count
 * in a step: the step's linear time of each side.
 *
 *   sdbatch-bench-linear [image size, default 256] [threads, default 2] [reps, default 5]
 */
#include "sdb/arena.h"
#include "sdb/balance.h"
#include "sdb/bench.h"
#include "sdb/ops/conv.h"
#include "sdb/ops/par.h"
#include "sdb/ops/winograd.h"
#include "sdb/threads.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define MAX_REPS 15

static double wall_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static double cpu_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* The grid's load-balance bound, its minimum over 2..64 threads (dynamic schedule of its units). */
static double grid_bound_min(const sdb_gemm_grid *g)
{
    const int n = sdb_gemm_grid_tiles(g);
    double *cost = malloc((size_t)n * sizeof *cost), total = 0.0, bmin = 1.0;
    if (!cost) return 0.0;
    for (int t = 0; t < n; t++) {
        int m0, mm, n0, nn, k0, kk;
        sdb_gemm_grid_tile(g, t, &m0, &mm, &n0, &nn, &k0, &kk);
        cost[t] = (double)mm * nn * kk;
        total += cost[t];
    }
    for (int T = 2; T <= 64; T *= 2) {
        const double b = total / T / sdb_par_makespan(SDB_PAR_DYNAMIC, n, cost, 0, T);
        bmin = b < bmin ? b : bmin;
    }
    free(cost);
    return bmin;
}

typedef struct { int M, N, K, count; } shape;

/* The U-Net step's linear layers with at least 16 rows (those with fewer, the time embedding's,
 * run on the calling thread), in order of first appearance; returns how many. */
static int unet_linears(int size, shape *out, int cap)
{
    sdb_balance b;
    sdb_err err;
    const int T = 2;
    if (sdb_balance_unet(NULL, size, SDB_CONV_AUTO, &T, 1, &b, &err)) {
        fprintf(stderr, "bench-linear: %s\n", err.msg);
        return -1;
    }
    int n = 0;
    for (int i = 0; i < b.nrows && n < cap; i++) {
        int K, N, M;
        if (sscanf(b.rows[i].label, "linear %d->%d, %d rows", &K, &N, &M) != 3 || M < 16) continue;
        out[n++] = (shape){M, N, K, b.rows[i].count};
    }
    sdb_balance_free(&b);
    return n;
}

int main(int argc, char **argv)
{
    const int size = argc > 1 ? atoi(argv[1]) : 256, th = argc > 2 ? atoi(argv[2]) : 2;
    const int reps = argc > 3 ? atoi(argv[3]) : 5;
    if (size < 64 || size % 64 || th < 1 || reps < 1 || reps > MAX_REPS) {
        fprintf(stderr, "usage: sdbatch-bench-linear [size (multiple of 64)] [threads] [reps <= %d]\n", MAX_REPS);
        return 2;
    }
    shape sh[64];
    const int ns = unet_linears(size, sh, 64);
    if (ns < 0) return 1;
    size_t maxA = 0, maxB = 0, maxC = 0;
    for (int s = 0; s < ns; s++) {
        const size_t a = (size_t)sh[s].M * sh[s].K, w = (size_t)sh[s].N * sh[s].K, c = (size_t)sh[s].M * sh[s].N;
        maxA = a > maxA ? a : maxA;
        maxB = w > maxB ? w : maxB;
        maxC = c > maxC ? c : maxC;
    }
    float *x = malloc(maxA * sizeof *x), *w = malloc(maxB * sizeof *w), *y = malloc(maxC * sizeof *y);
    float *bias = calloc(16384, sizeof *bias);
    sdb_arena a;
    sdb_err err;
    if (!x || !w || !y || !bias || sdb_arena_init(&a, 0, &err)) return 1;
    unsigned r = 12345;
    for (size_t i = 0; i < maxA; i++) { r = r * 1664525u + 1013904223u; x[i] = (float)(r >> 8) / 16777216.0f - 0.5f; }
    for (size_t i = 0; i < maxB; i++) { r = r * 1664525u + 1013904223u; w[i] = ((float)(r >> 8) / 16777216.0f - 0.5f) * 0.05f; }

    sdb_threads_set(th);
    const double sg = sdb_bench_sgemm_gflops(4096, 3);
    printf("size %d, %d threads, %d reps (medians), sgemm 4096^2 %.1f GFLOP/s\n", size, th, reps, sg);
    printf("%-16s %5s %-13s %5s %6s | %7s %7s %5s | %7s %7s %5s\n", "M x N x K", "count", "grid", "units",
           "bound", "sdb", "blas", "ratio", "sdb 1T", "blas 1T", "ratio");
    printf("%-16s %5s %-13s %5s %6s | %7s %7s %5s | %7s %7s %5s\n", "", "", "mb x nb x ks", "", "2..64",
           "GF/s", "GF/s", "", "GF/s cpu", "GF/s cpu", "");
    double tot[4] = {0, 0, 0, 0}; /* the step's seconds: sdb, blas (threads); sdb, blas (1 thread, CPU) */
    for (int s = 0; s < ns; s++) {
        const int M = sh[s].M, N = sh[s].N, K = sh[s].K;
        const sdb_gemm_grid g = sdb_gemm_grid_of(M, N, K, 0, 1);
        double t[4][MAX_REPS];
        /* warm-up, then each rep: sdb then OpenBLAS at th threads, then both on one thread */
        sdb_threads_set(th);
        if (sdb_gemm_linear(x, M, K, sdb_wmat_f32(w), bias, N, y, 0, &a)) return 1;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, x, K, w, K, 0.0f, y, N);
        for (int i = 0; i < reps; i++) {
            sdb_threads_set(th);
            double t0 = wall_now();
            sdb_gemm_linear(x, M, K, sdb_wmat_f32(w), bias, N, y, 0, &a);
            double t1 = wall_now();
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, x, K, w, K, 0.0f, y, N);
            double t2 = wall_now();
            t[0][i] = t1 - t0;
            t[1][i] = t2 - t1;
            sdb_threads_set(1);
            t0 = cpu_now();
            sdb_gemm_linear(x, M, K, sdb_wmat_f32(w), bias, N, y, 0, &a);
            t1 = cpu_now();
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, x, K, w, K, 0.0f, y, N);
            t2 = cpu_now();
            t[2][i] = t1 - t0;
            t[3][i] = t2 - t1;
        }
        double med[4];
        for (int k = 0; k < 4; k++) {
            med[k] = sdb_bench_median(t[k], reps);
            tot[k] += sh[s].count * med[k];
        }
        const double gf = 2e-9 * M * N * K;
        char grid[32];
        snprintf(grid, sizeof grid, "%dx%dx%d", g.mb, g.nb, g.ks);
        char dims[32];
        snprintf(dims, sizeof dims, "%dx%dx%d", M, N, K);
        printf("%-16s %5d %-13s %5d %6.3f | %7.1f %7.1f %5.2f | %7.1f %7.1f %5.2f\n", dims, sh[s].count, grid,
               sdb_gemm_grid_tiles(&g), grid_bound_min(&g), gf / med[0], gf / med[1], med[1] / med[0],
               gf / med[2], gf / med[3], med[3] / med[2]);
        fflush(stdout);
    }
    printf("step's linears (s): sdb %.4f, blas %.4f (ratio %.3f); 1 thread CPU: sdb %.4f, blas %.4f (ratio %.3f)\n",
           tot[0], tot[1], tot[1] / tot[0], tot[2], tot[3], tot[3] / tot[2]);
    sdb_threads_set(th);
    printf("sgemm 4096^2 after: %.1f GFLOP/s\n", sdb_bench_sgemm_gflops(4096, 3));
    sdb_arena_free(&a);
    free(x); free(w); free(y); free(bias);
    return 0;
}
