/*
 * test_par.c — the work partitions of ops/par.h and the bound computed from them: the GEMM grid
 * covers every (row, column, K) of a product exactly once for a range of shapes (the U-Net's and
 * odd ones); its policy keeps 2..64 threads busy (bound >= 0.93 on the U-Net's products) and leaves
 * a cache-resident operand uncut; makespans and bounds on hand-computed cases for both schedules; an op's plan records
 * the units its kernel runs (count and FLOPs); and the ops whose schedules this partition changed
 * (conv with per-unit im2col, with a shared im2col, with K slices, per-image bias and residual;
 * linear with K slices in every init mode; attention with short row blocks; transpose; channel
 * concat) give bit-identical results on 1, 2 and 4 threads (4 oversubscribes a 2-core machine)
 * and match naive double-precision references.
 */
#include "harness.h"
#include "sdb/arena.h"
#include "sdb/ops/attention.h"
#include "sdb/ops/conv.h"
#include "sdb/ops/par.h"
#include "sdb/ops/resample.h"
#include "sdb/threads.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static sdb_arena arena;
static uint64_t rng = 0x9e3779b97f4a7c15ULL;
static float frand(void)
{
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (float)((double)(rng >> 11) / (double)(1ULL << 53) * 2.0 - 1.0);
}
static float *rand_buf(size_t n, float scale)
{
    float *p = malloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) p[i] = frand() * scale;
    return p;
}

/* Every (m, n) of every K slice covered once; the slices tile [0, K) in order. */
static void grid_case(int M, int N, int K, int nb_max, int split)
{
    const sdb_gemm_grid g = sdb_gemm_grid_of(M, N, K, nb_max, split);
    char what[128];
    snprintf(what, sizeof what, "grid %dx%dx%d nb_max %d split %d -> %dx%d x%d", M, N, K, nb_max, split,
             g.mb, g.nb, g.ks);
    CHECKF(g.M == M && g.N == N && g.K == K, "%s: shapes", what);
    CHECKF(g.mb >= 1 && g.nb >= 1 && g.ks >= 1, "%s: sizes", what);
    CHECKF(g.mb == M || g.mb % 16 == 0, "%s: mb not a multiple of 16", what);
    CHECKF(g.nb == N || g.nb % 16 == 0, "%s: nb not a multiple of 16", what);
    CHECKF(nb_max <= 0 || g.nb <= nb_max, "%s: nb over nb_max", what);
    CHECKF(split || g.ks == 1, "%s: K split without leave", what);
    const int n = sdb_gemm_grid_tiles(&g);
    CHECKF(n == g.nmc * g.ncc * g.ks && n <= 1024, "%s: %d units", what, n);
    unsigned char *cnt = calloc((size_t)g.ks * M * N, 1);
    int *kstart = malloc(sizeof(int) * g.ks), *klen = malloc(sizeof(int) * g.ks);
    for (int s = 0; s < g.ks; s++) kstart[s] = klen[s] = -1;
    int bad = 0;
    for (int t = 0; t < n; t++) {
        int m0, mm, n0, nn, k0, kk;
        sdb_gemm_grid_tile(&g, t, &m0, &mm, &n0, &nn, &k0, &kk);
        if (m0 < 0 || mm < 1 || m0 + mm > M || n0 < 0 || nn < 1 || n0 + nn > N || k0 < 0 || kk < 1 || k0 + kk > K) { bad++; continue; }
        const int s = k0 / g.kb;
        if (kstart[s] < 0) { kstart[s] = k0; klen[s] = kk; }
        else if (kstart[s] != k0 || klen[s] != kk) bad++;
        for (int i = m0; i < m0 + mm; i++)
            for (int j = n0; j < n0 + nn; j++) cnt[((size_t)s * M + i) * N + j]++;
    }
    CHECKF(!bad, "%s: %d units out of range or with another K slice", what, bad);
    size_t wrong = 0;
    for (size_t i = 0; i < (size_t)g.ks * M * N; i++) wrong += cnt[i] != 1;
    CHECKF(!wrong, "%s: %zu elements not covered exactly once", what, wrong);
    int k = 0;
    for (int s = 0; s < g.ks; s++) {
        CHECKF(kstart[s] == k, "%s: slice %d starts at %d, not %d", what, s, kstart[s], k);
        k += klen[s] > 0 ? klen[s] : 0;
    }
    CHECKF(k == K, "%s: slices cover %d of K %d", what, k, K);
    free(cnt); free(kstart); free(klen);
}

static void test_grid_covers(void)
{
    /* the U-Net's products at 512x512 (convs: cout x pixels of both images x cin*9; linears) */
    const int shapes[][4] = {{320, 8192, 2880, 256}, {320, 8192, 8640, 256}, {640, 2048, 5760, 256},
                             {1280, 512, 11520, 256}, {1280, 128, 11520, 256}, {1280, 128, 23040, 256},
                             {8192, 320, 320, 0}, {1024, 2560, 320, 0}, {512, 1280, 5120, 0},
                             {128, 1280, 1280, 0}, {4, 8192, 2880, 256}, {1, 1, 1, 0}, {3, 5, 7, 0},
                             {77, 768, 3072, 0}, {513, 1000, 4097, 256}, {17, 33, 100000, 0}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        for (int split = 0; split < 2; split++)
            grid_case(shapes[i][0], shapes[i][1], shapes[i][2], shapes[i][3], split);
    for (int r = 0; r < 20; r++) {
        uint64_t v = rng;
        frand();
        grid_case(1 + (int)(v % 700), 1 + (int)((v >> 16) % 3000), 1 + (int)((v >> 32) % 20000),
                  (v >> 60) & 1 ? 256 : 0, (int)((v >> 61) & 1));
    }
    /* the U-Net's big products get enough units for 64 threads */
    const sdb_gemm_grid g = sdb_gemm_grid_of(640, 2048, 5760, 256, 1);
    CHECKF(sdb_gemm_grid_tiles(&g) % 64 == 0, "640x2048x5760: %d units", sdb_gemm_grid_tiles(&g));
}

/* The grid policy's two properties, checked on the tiles themselves: (1) every product of a 512x512
 * U-Net step big enough to qualify keeps 2..64 threads busy: the dynamic schedule's bound over the
 * tiles' real FLOPs (edge tiles smaller) is at least 0.93 at each count; (2) a product whose one
 * operand is small enough to stay in cache (a linear layer's 320 x 320 weights against 8192 rows)
 * is cut along the other operand only, so the big operand is packed once per tile row, not twice. */
static void test_grid_policy(void)
{
    /* M, N, K, nb_max, split: convs (cout x pixels of 2 images x cin*9) and linears (rows x out x in) */
    const int shapes[][5] = {{320, 8192, 2880, 256, 1}, {320, 8192, 8640, 256, 1}, {320, 2048, 2880, 256, 1},
                             {640, 2048, 5760, 256, 1}, {1280, 512, 11520, 256, 1}, {1280, 128, 11520, 256, 1},
                             {1280, 128, 23040, 256, 1}, {8192, 320, 320, 0, 1}, {8192, 2560, 320, 0, 1},
                             {8192, 320, 1280, 0, 1}, {2048, 640, 640, 0, 1}, {512, 1280, 1280, 0, 1},
                             {2048, 5120, 640, 0, 1}, {512, 1280, 5120, 0, 1}, {2048, 960, 320, 0, 1},
                             {1024, 320, 1280, 0, 1}, {512, 640, 640, 0, 1}, {128, 1280, 1280, 0, 1},
                             {154, 320, 768, 0, 1}, {154, 640, 768, 0, 1}, {154, 1280, 768, 0, 1}};
    const int T[] = {2, 4, 8, 16, 32, 64};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        const int M = shapes[i][0], N = shapes[i][1], K = shapes[i][2];
        const sdb_gemm_grid g = sdb_gemm_grid_of(M, N, K, shapes[i][3], shapes[i][4]);
        const int n = sdb_gemm_grid_tiles(&g);
        double *cost = malloc(sizeof(double) * n), total = 0;
        for (int t = 0; t < n; t++) {
            int m0, mm, n0, nn, k0, kk;
            sdb_gemm_grid_tile(&g, t, &m0, &mm, &n0, &nn, &k0, &kk);
            cost[t] = 2.0 * mm * nn * kk;
            total += cost[t];
        }
        CHECKF(total == 2.0 * M * N * K, "%dx%dx%d: tiles hold %.0f FLOP", M, N, K, total);
        for (size_t j = 0; j < sizeof T / sizeof T[0]; j++) {
            const double b = total / T[j] / sdb_par_makespan(SDB_PAR_DYNAMIC, n, cost, 0, T[j]);
            CHECKF(b >= 0.93, "%dx%dx%d grid %dx%d x%d (%d units): bound %.3f at %d threads", M, N, K, g.mb, g.nb,
                   g.ks, n, b, T[j]);
        }
        free(cost);
    }
    /* 8192 x 320 x 320: the weights (K x N, 400 KB) stay whole, the rows are cut */
    const sdb_gemm_grid l = sdb_gemm_grid_of(8192, 320, 320, 0, 1);
    CHECKF(l.nb == 320 && l.ks == 1 && l.nmc >= 58, "linear 8192x320x320: grid %dx%d x%d", l.mb, l.nb, l.ks);
}

static void test_makespan(void)
{
    const double c5[5] = {1, 2, 3, 4, 5};
    /* static, 5 over 2: thread 0 takes units 0..2 (6), thread 1 units 3..4 (9) */
    CHECK(sdb_par_makespan(SDB_PAR_STATIC, 5, c5, 0, 2) == 9.0);
    /* dynamic: 1 -> t0, 2 -> t1, 3 -> t0 (free at 1: 4), 4 -> t1 (free at 2: 6), 5 -> t0 (4: 9) */
    CHECK(sdb_par_makespan(SDB_PAR_DYNAMIC, 5, c5, 0, 2) == 9.0);
    const double c41[5] = {4, 1, 1, 1, 1};
    CHECK(sdb_par_makespan(SDB_PAR_STATIC, 5, c41, 0, 2) == 6.0);  /* {4,1,1} | {1,1} */
    CHECK(sdb_par_makespan(SDB_PAR_DYNAMIC, 5, c41, 0, 2) == 4.0); /* 4 | 1+1+1+1 */
    CHECK(sdb_par_makespan(SDB_PAR_STATIC, 10, NULL, 1.5, 4) == 4.5);  /* ceil(10/4) = 3 units */
    CHECK(sdb_par_makespan(SDB_PAR_DYNAMIC, 3, NULL, 2.0, 8) == 2.0);  /* fewer units than threads */
    CHECK(sdb_par_makespan(SDB_PAR_STATIC, 5, c5, 0, 1) == 15.0);  /* one thread: the sum */
    long lo, hi;
    sdb_par_static_range(10, 4, 0, &lo, &hi); CHECK(lo == 0 && hi == 3);
    sdb_par_static_range(10, 4, 1, &lo, &hi); CHECK(lo == 3 && hi == 6);
    sdb_par_static_range(10, 4, 2, &lo, &hi); CHECK(lo == 6 && hi == 8);
    sdb_par_static_range(10, 4, 3, &lo, &hi); CHECK(lo == 8 && hi == 10);
    sdb_par_static_range(2, 4, 3, &lo, &hi); CHECK(lo == 2 && hi == 2);
}

static void test_rec_bound(void)
{
    sdb_par_rec r;
    sdb_par_rec_init(&r);
    sdb_par_op_begin(&r, SDB_PAR_GEMM, "a");
    sdb_par_loop_add(&r, SDB_PAR_DYNAMIC, 48, NULL, 1.0, 0, 1);
    CHECK(sdb_par_rec_bound(&r, 16) == 1.0);  /* 3 units each */
    CHECK(sdb_par_rec_bound(&r, 32) == 0.75); /* 1.5 ideal, 2 units on the busiest */
    CHECK(sdb_par_rec_bound(&r, 64) == 0.75); /* 0.75 ideal, 1 unit */
    /* a serial loop of 10 units of 1 byte (8 FLOP each): one thread does 80 */
    sdb_par_op_begin(&r, SDB_PAR_COPY, "b");
    sdb_par_loop_add(&r, SDB_PAR_STATIC, 10, NULL, 1.0, 1, 0);
    CHECK(r.nops == 2 && r.nloops == 2 && r.loops[1].n == 1);
    /* T = 16: ideal (48 + 80) / 16 = 8, makespans 3 + 80 = 83 */
    CHECK(fabs(sdb_par_rec_bound(&r, 16) - 8.0 / 83.0) < 1e-12);
    CHECK(sdb_par_rec_bound(&r, 1) == 1.0);
    sdb_par_rec_free(&r);
}

/* sdb_conv2d_plan records the grid's units and the conv's FLOPs. */
static void test_plan_matches(void)
{
    float w = 0;
    sdb_conv2d c = {640, 640, 3, 1, 1, 1, 1, 1, sdb_wmat_f32(&w), NULL, NULL, 0};
    sdb_par_rec r;
    sdb_par_rec_init(&r);
    sdb_conv2d_plan(&c, 2, 32, 32, &r);
    const sdb_gemm_grid g = sdb_gemm_grid_of(640, 2048, 5760, 256, 1);
    double flops = 0;
    long dyn = 0;
    for (int i = 0; i < r.nloops; i++)
        if (r.loops[i].sched == SDB_PAR_DYNAMIC) { dyn += r.loops[i].n; flops += sdb_par_loop_work(&r.loops[i]); }
    CHECK(r.nops == 1 && !r.failed);
    CHECKF(dyn == sdb_gemm_grid_tiles(&g), "%ld units recorded, grid has %d", dyn, sdb_gemm_grid_tiles(&g));
    CHECKF(flops == 2.0 * 640 * 2048 * 5760, "%.0f FLOP recorded", flops);
    sdb_par_rec_free(&r);
}

/* naive conv in double: y = conv(x) + bias_n[n] (or b) + residual */
static void conv_naive(const sdb_conv2d *c, const float *w, const float *x, int N, int H, int W,
                       const float *bias_n, const float *res, float *y)
{
    int Ho, Wo;
    sdb_conv2d_out_size(c, H, W, &Ho, &Wo);
    for (int n = 0; n < N; n++)
        for (int co = 0; co < c->cout; co++)
            for (int oy = 0; oy < Ho; oy++)
                for (int ox = 0; ox < Wo; ox++) {
                    double s = bias_n ? bias_n[n * c->cout + co] : c->b ? c->b[co] : 0.0;
                    size_t o = (((size_t)n * c->cout + co) * Ho + oy) * Wo + ox;
                    if (res) s += res[o];
                    for (int ci = 0; ci < c->cin; ci++)
                        for (int ky = 0; ky < c->k; ky++)
                            for (int kx = 0; kx < c->k; kx++) {
                                int iy = oy * c->stride + ky - c->pad_t, ix = ox * c->stride + kx - c->pad_l;
                                if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                                s += (double)w[((size_t)(co * c->cin + ci) * c->k + ky) * c->k + kx] *
                                     x[(((size_t)n * c->cin + ci) * H + iy) * W + ix];
                            }
                    y[o] = (float)s;
                }
}

static void conv_threads_case(int N, int cin, int cout, int k, int stride, int H, int W, int per_image_bias, int resid)
{
    const int pad = k / 2;
    size_t nw = (size_t)cout * cin * k * k;
    float *w = rand_buf(nw, 0.1f), *b = rand_buf(cout, 0.5f), *bn = rand_buf((size_t)N * cout, 0.5f);
    sdb_conv2d c = {cin, cout, k, stride, pad, pad, pad, pad, sdb_wmat_f32(w), b, NULL, 0};
    int Ho, Wo;
    sdb_conv2d_out_size(&c, H, W, &Ho, &Wo);
    const size_t ny = (size_t)N * cout * Ho * Wo;
    float *x = rand_buf((size_t)N * cin * H * W, 1.0f), *r = resid ? rand_buf(ny, 1.0f) : NULL;
    float *ref = malloc(sizeof(float) * ny), *y[3];
    conv_naive(&c, w, x, N, H, W, per_image_bias ? bn : NULL, r, ref);
    const int threads[3] = {1, 2, 4};
    for (int i = 0; i < 3; i++) {
        y[i] = malloc(sizeof(float) * ny);
        sdb_threads_set(threads[i]);
        CHECK(sdb_conv2d_forward_bias(&c, x, N, H, W, y[i], r, per_image_bias ? bn : NULL, &arena) == 0);
    }
    sdb_threads_set(1);
    const sdb_gemm_grid g = sdb_gemm_grid_of(cout, N * Ho * Wo, cin * k * k, 256, 1);
    char what[160];
    snprintf(what, sizeof what, "conv N%d %d->%d k%d s%d %dx%d%s%s (grid %dx%d x%d slices)", N, cin, cout, k,
             stride, H, W, per_image_bias ? " bias/image" : "", resid ? " resid" : "", g.mb, g.nb, g.ks);
    CHECKF(sdb_t_close(y[0], ref, ny, 1e-4, 1e-4, what), "%s", what);
    CHECKF(memcmp(y[0], y[1], sizeof(float) * ny) == 0, "%s: 1 vs 2 threads differ", what);
    CHECKF(memcmp(y[0], y[2], sizeof(float) * ny) == 0, "%s: 1 vs 4 threads differ", what);
    for (int i = 0; i < 3; i++) free(y[i]);
    free(w); free(b); free(bn); free(x); free(r); free(ref);
}

static void test_conv_threads(void)
{
    /* many columns, few output channels: one tile row, im2col per unit, K in chunks */
    conv_threads_case(2, 96, 32, 3, 1, 40, 36, 0, 1);
    /* small latents, wide channels: tiles share column blocks (shared im2col) and K slices */
    conv_threads_case(2, 256, 320, 3, 1, 8, 8, 1, 0);
    conv_threads_case(2, 160, 256, 3, 2, 16, 12, 0, 1);
    /* 1x1 and batch 1 */
    conv_threads_case(1, 640, 128, 1, 1, 16, 16, 0, 1);
}

static void test_linear_threads(void)
{
    const int M = 96, K = 4096, N = 160; /* long K: sliced */
    const sdb_gemm_grid g = sdb_gemm_grid_of(M, N, K, 0, 1);
    CHECKF(g.ks > 1, "linear %dx%dx%d is not sliced (%d): the case tests nothing", M, N, K, g.ks);
    float *x = rand_buf((size_t)M * K, 1.0f), *W = rand_buf((size_t)N * K, 0.05f), *b = rand_buf(N, 1.0f);
    float *y0 = rand_buf((size_t)M * N, 1.0f), *ref = malloc(sizeof(float) * M * N), *y[4];
    for (int i = 0; i < 4; i++) y[i] = malloc(sizeof(float) * M * N);
    for (int mode = 0; mode < 3; mode++) { /* set with bias, accumulate with bias, accumulate without */
        const int acc = mode > 0;
        const float *bias = mode < 2 ? b : NULL;
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) {
                double s = (bias ? bias[j] : 0.0) + (acc ? y0[(size_t)i * N + j] : 0.0);
                for (int k = 0; k < K; k++) s += (double)x[(size_t)i * K + k] * W[(size_t)j * K + k];
                ref[(size_t)i * N + j] = (float)s;
            }
        const int threads[4] = {1, 2, 4, 2};
        for (int i = 0; i < 4; i++) {
            memcpy(y[i], y0, sizeof(float) * M * N);
            sdb_threads_set(threads[i]);
            /* the last run without scratch: the partial sums are allocated, same result */
            CHECK(sdb_gemm_linear(x, M, K, sdb_wmat_f32(W), bias, N, y[i], acc, i == 3 ? NULL : &arena) == 0);
        }
        sdb_threads_set(1);
        char what[64];
        snprintf(what, sizeof what, "linear mode %d", mode);
        CHECKF(sdb_t_close(y[0], ref, (size_t)M * N, 1e-4, 1e-4, what), "%s", what);
        CHECKF(memcmp(y[0], y[1], sizeof(float) * M * N) == 0, "%s: 1 vs 2 threads differ", what);
        CHECKF(memcmp(y[0], y[2], sizeof(float) * M * N) == 0, "%s: 1 vs 4 threads differ", what);
        CHECKF(memcmp(y[0], y[3], sizeof(float) * M * N) == 0, "%s: without scratch differs", what);
    }
    for (int i = 0; i < 4; i++) free(y[i]);
    free(x); free(W); free(b); free(y0); free(ref);
}

/* attention with few query rows (short row blocks), and the copies: 1, 2, 4 threads */
static void test_attention_copies_threads(void)
{
    const int nq = 64, nk = 77, heads = 8, hd = 40, ld = heads * hd;
    float *q = rand_buf((size_t)nq * ld, 1.0f), *k = rand_buf((size_t)nk * ld, 1.0f), *v = rand_buf((size_t)nk * ld, 1.0f);
    float *o[3];
    const int threads[3] = {1, 2, 4};
    for (int i = 0; i < 3; i++) {
        o[i] = malloc(sizeof(float) * nq * ld);
        sdb_threads_set(threads[i]);
        CHECK(sdb_attention(q, ld, k, ld, v, ld, o[i], ld, nq, nk, heads, hd, 0.158f, 0, &arena) == 0);
    }
    /* one output row against a direct softmax in double */
    for (int h = 0; h < heads; h++) {
        double sc[77], mx = -1e300, sum = 0;
        for (int j = 0; j < nk; j++) {
            double s = 0;
            for (int d = 0; d < hd; d++) s += (double)q[5 * ld + h * hd + d] * k[(size_t)j * ld + h * hd + d];
            sc[j] = 0.158 * s;
            mx = sc[j] > mx ? sc[j] : mx;
        }
        for (int j = 0; j < nk; j++) { sc[j] = exp(sc[j] - mx); sum += sc[j]; }
        for (int d = 0; d < hd; d++) {
            double a = 0;
            for (int j = 0; j < nk; j++) a += sc[j] / sum * v[(size_t)j * ld + h * hd + d];
            CHECKF(fabs(a - o[0][5 * ld + h * hd + d]) < 1e-4, "attention row 5 head %d dim %d: %g vs %g", h, d,
                   o[0][5 * ld + h * hd + d], a);
        }
    }
    CHECK(memcmp(o[0], o[1], sizeof(float) * nq * ld) == 0);
    CHECK(memcmp(o[0], o[2], sizeof(float) * nq * ld) == 0);
    for (int i = 0; i < 3; i++) free(o[i]);
    free(q); free(k); free(v);

    /* transpose [320, 700] and concat of 2 x (3 + 5) channels of 9000 pixels */
    const int R = 320, C = 700;
    float *a = rand_buf((size_t)R * C, 1.0f), *t[3];
    for (int i = 0; i < 3; i++) {
        t[i] = malloc(sizeof(float) * R * C);
        sdb_threads_set(threads[i]);
        sdb_transpose(a, R, C, t[i]);
    }
    size_t bad = 0;
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) bad += t[0][(size_t)c * R + r] != a[(size_t)r * C + c];
    CHECKF(!bad, "transpose: %zu elements wrong", bad);
    CHECK(memcmp(t[0], t[1], sizeof(float) * R * C) == 0 && memcmp(t[0], t[2], sizeof(float) * R * C) == 0);
    for (int i = 0; i < 3; i++) free(t[i]);
    free(a);
    const int HW = 9000;
    float *ca = rand_buf((size_t)2 * 3 * HW, 1.0f), *cb = rand_buf((size_t)2 * 5 * HW, 1.0f);
    float *cy = malloc(sizeof(float) * 2 * 8 * HW);
    sdb_threads_set(4);
    sdb_concat_channels(ca, 3, cb, 5, 2, HW, cy);
    bad = 0;
    for (int n = 0; n < 2; n++)
        for (int c = 0; c < 8; c++)
            for (int p = 0; p < HW; p++) {
                float want = c < 3 ? ca[((size_t)n * 3 + c) * HW + p] : cb[((size_t)n * 5 + c - 3) * HW + p];
                bad += cy[((size_t)n * 8 + c) * HW + p] != want;
            }
    CHECKF(!bad, "concat: %zu elements wrong", bad);
    sdb_threads_set(1);
    free(ca); free(cb); free(cy);
}

int main(void)
{
    sdb_err err;
    sdb_err_clear(&err);
    if (sdb_arena_init(&arena, (size_t)1 << 30, &err) != 0) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    RUN(test_grid_covers);
    RUN(test_grid_policy);
    RUN(test_makespan);
    RUN(test_rec_bound);
    RUN(test_plan_matches);
    RUN(test_conv_threads);
    RUN(test_linear_threads);
    RUN(test_attention_copies_threads);
    sdb_arena_free(&arena);
    return sdb_t_done();
}
