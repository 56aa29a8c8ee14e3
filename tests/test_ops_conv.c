/*
 * test_ops_conv.c — conv2d, linear_cat, GroupNorm(+SiLU), nearest upsampling and transpose
 * against naive double-precision references written here; 1 vs 2 threads bit-identical; conv and linear with a
 * half (F16) weight matrix bit-identical to the same matrix widened to float32 and passed as such.
 */
#include "harness.h"
#include "sdb/arena.h"
#include "sdb/fp16.h"
#include "sdb/ops/conv.h"
#include "sdb/ops/groupnorm.h"
#include "sdb/ops/resample.h"
#include "sdb/ops/thin_gemm.h"
#include "sdb/threads.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng = 0x12345678abcdefULL;
static float *rand_buf(size_t n, float scale) { return sdb_t_rand_floats(&rng, n, scale); }

static void conv_ref(const sdb_conv2d *c, const float *x, int N, int H, int W, float *y,
                     const float *res)
{
    int Ho, Wo;
    sdb_conv2d_out_size(c, H, W, &Ho, &Wo);
    for (int n = 0; n < N; n++)
        for (int co = 0; co < c->cout; co++)
            for (int oy = 0; oy < Ho; oy++)
                for (int ox = 0; ox < Wo; ox++) {
                    double acc = c->b ? c->b[co] : 0.0;
                    for (int ci = 0; ci < c->cin; ci++)
                        for (int ky = 0; ky < c->k; ky++)
                            for (int kx = 0; kx < c->k; kx++) {
                                int iy = oy * c->stride + ky - c->pad_t;
                                int ix = ox * c->stride + kx - c->pad_l;
                                if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                                acc += (double)c->w.f32[((co * c->cin + ci) * c->k + ky) * c->k + kx] *
                                       x[(((size_t)n * c->cin + ci) * H + iy) * W + ix];
                            }
                    size_t o = (((size_t)n * c->cout + co) * Ho + oy) * Wo + ox;
                    if (res) acc += res[o];
                    y[o] = (float)acc;
                }
}

static sdb_arena arena;

/* w rounded to half (the F16 matrix) and that half widened back (what it stands for) */
static uint16_t *half_of(const float *w, size_t n, float **widened)
{
    uint16_t *h = malloc(sizeof(uint16_t) * (n ? n : 1));
    *widened = malloc(sizeof(float) * (n ? n : 1));
    sdb_f32_to_f16_array(w, h, n);
    sdb_f16_to_f32_array(h, *widened, n);
    return h;
}

static void conv_case(int N, int cin, int cout, int k, int stride, int pt, int pl, int pb, int pr,
                      int H, int W, int bias, int resid)
{
    sdb_conv2d c = {cin, cout, k, stride, pt, pl, pb, pr, {NULL, NULL}, NULL, NULL, 0};
    const size_t nw = (size_t)cout * cin * k * k;
    float *w = rand_buf(nw, 0.3f);
    float *b = bias ? rand_buf(cout, 0.5f) : NULL;
    c.w = sdb_wmat_f32(w); c.b = b;
    int Ho, Wo;
    sdb_conv2d_out_size(&c, H, W, &Ho, &Wo);
    size_t nx = (size_t)N * cin * H * W, ny = (size_t)N * cout * Ho * Wo;
    float *x = rand_buf(nx, 1.0f);
    float *r = resid ? rand_buf(ny, 1.0f) : NULL;
    float *ref = malloc(sizeof(float) * ny), *y1 = malloc(sizeof(float) * ny), *y2 = malloc(sizeof(float) * ny);
    conv_ref(&c, x, N, H, W, ref, r);
    sdb_threads_set(1);
    size_t mark = sdb_arena_mark(&arena);
    CHECK(sdb_conv2d_forward(&c, x, N, H, W, y1, r, &arena) == 0);
    CHECK(sdb_arena_mark(&arena) == mark);
    sdb_threads_set(2);
    CHECK(sdb_conv2d_forward(&c, x, N, H, W, y2, r, &arena) == 0);
    char what[160];
    snprintf(what, sizeof what, "conv N%d %d->%d k%d s%d pad(%d,%d,%d,%d) %dx%d%s%s", N, cin, cout, k,
             stride, pt, pl, pb, pr, H, W, bias ? " bias" : "", resid ? " resid" : "");
    CHECKF(sdb_t_close(y1, ref, ny, 1e-5, 1e-5, what), "%s", what);
    CHECKF(memcmp(y1, y2, sizeof(float) * ny) == 0, "%s: 1 vs 2 threads differ", what);
    /* the weights as an F16 matrix: exactly the conv of the widened float32 matrix */
    float *ww;
    uint16_t *wh = half_of(w, nw, &ww);
    sdb_conv2d c16 = c, cw = c;
    c16.w = sdb_wmat_f16(wh);
    cw.w = sdb_wmat_f32(ww);
    sdb_threads_set(1);
    CHECK(sdb_conv2d_forward(&cw, x, N, H, W, ref, r, &arena) == 0);
    CHECK(sdb_conv2d_forward(&c16, x, N, H, W, y1, r, &arena) == 0);
    CHECK(sdb_arena_mark(&arena) == mark);
    sdb_threads_set(2);
    CHECK(sdb_conv2d_forward(&c16, x, N, H, W, y2, r, &arena) == 0);
    CHECKF(memcmp(y1, ref, sizeof(float) * ny) == 0, "%s: F16 weights differ from their float32 widening", what);
    CHECKF(memcmp(y2, ref, sizeof(float) * ny) == 0, "%s: F16 weights, 2 threads differ", what);
    free(wh); free(ww);
    free(w); free(b); free(x); free(r); free(ref); free(y1); free(y2);
}

static void test_conv(void)
{
    conv_case(2, 5, 7, 3, 1, 1, 1, 1, 1, 9, 11, 1, 0);
    conv_case(1, 3, 4, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1);
    conv_case(2, 6, 5, 3, 2, 1, 1, 1, 1, 17, 12, 1, 0);   /* 17x12 -> 9x6 */
    conv_case(1, 6, 5, 3, 2, 1, 1, 1, 1, 5, 3, 0, 1);
    conv_case(2, 4, 6, 3, 2, 0, 0, 1, 1, 16, 13, 1, 0);   /* VAE encoder downsample */
    conv_case(1, 8, 3, 1, 1, 0, 0, 0, 0, 7, 5, 1, 1);     /* 1x1 direct */
    conv_case(2, 8, 16, 1, 1, 0, 0, 0, 0, 13, 9, 0, 0);
    conv_case(1, 4, 3, 1, 2, 0, 0, 0, 0, 9, 9, 1, 0);     /* 1x1 stride 2 (im2col path) */
    conv_case(1, 3, 2, 3, 1, 0, 0, 0, 0, 6, 8, 1, 0);     /* no padding */
    conv_case(1, 2, 3, 3, 1, 2, 0, 1, 3, 5, 4, 1, 1);     /* odd asymmetric padding */
    /* deep enough that the im2col is split into several tiles (K*Ho*Wo*4 > tile budget) */
    conv_case(1, 512, 8, 3, 1, 1, 1, 1, 1, 70, 60, 1, 1);   /* 2 tiles: 60 + 10 rows */
    conv_case(1, 320, 40, 3, 1, 1, 1, 1, 1, 24, 40, 1, 1);
    conv_case(2, 96, 8, 3, 2, 0, 0, 1, 1, 130, 66, 1, 0);
    /* the U-Net's low levels at 256x256 (tiles of 32 and 128 columns: the thin-product kernel
     * where the CPU prefers it), fewer output channels */
    conv_case(2, 1280, 40, 3, 1, 1, 1, 1, 1, 4, 4, 1, 1);
    conv_case(2, 640, 52, 3, 1, 1, 1, 1, 1, 8, 8, 1, 0);
}

static void gn_ref(const float *x, int N, int C, int HW, int G, const float *g, const float *b,
                   float eps, int silu, float *y)
{
    int cpg = C / G;
    for (int n = 0; n < N; n++)
        for (int gi = 0; gi < G; gi++) {
            const float *xg = x + ((size_t)n * C + gi * cpg) * HW;
            size_t m = (size_t)cpg * HW;
            double s = 0, ss = 0;
            for (size_t i = 0; i < m; i++) s += xg[i];
            double mean = s / m;
            for (size_t i = 0; i < m; i++) ss += (xg[i] - mean) * (xg[i] - mean);
            double rstd = 1.0 / sqrt(ss / m + eps);
            for (int cc = 0; cc < cpg; cc++) {
                int c = gi * cpg + cc;
                for (int i = 0; i < HW; i++) {
                    double v = (xg[(size_t)cc * HW + i] - mean) * rstd * g[c] + b[c];
                    if (silu) v = v / (1.0 + exp(-v));
                    y[((size_t)n * C + c) * HW + i] = (float)v;
                }
            }
        }
}

static void gn_case(int N, int C, int HW, int G, float eps, int silu, float offset)
{
    size_t n = (size_t)N * C * HW;
    float *x = rand_buf(n, 2.0f), *g = rand_buf(C, 1.0f), *b = rand_buf(C, 1.0f);
    for (size_t i = 0; i < n; i++) x[i] += offset;
    float *ref = malloc(sizeof(float) * n), *y1 = malloc(sizeof(float) * n), *y2 = malloc(sizeof(float) * n);
    gn_ref(x, N, C, HW, G, g, b, eps, silu, ref);
    sdb_threads_set(1);
    sdb_groupnorm(x, N, C, HW, G, g, b, eps, silu, y1);
    sdb_threads_set(2);
    sdb_groupnorm(x, N, C, HW, G, g, b, eps, silu, y2);
    char what[128];
    snprintf(what, sizeof what, "groupnorm N%d C%d HW%d G%d silu%d", N, C, HW, G, silu);
    CHECKF(sdb_t_close(y1, ref, n, 1e-5, 1e-5, what), "%s", what);
    CHECKF(memcmp(y1, y2, sizeof(float) * n) == 0, "%s: 1 vs 2 threads differ", what);
    /* in place */
    memcpy(y2, x, sizeof(float) * n);
    sdb_groupnorm(y2, N, C, HW, G, g, b, eps, silu, y2);
    CHECKF(memcmp(y1, y2, sizeof(float) * n) == 0, "%s: in place differs", what);
    free(x); free(g); free(b); free(ref); free(y1); free(y2);
}

static void test_groupnorm(void)
{
    gn_case(2, 32, 256, 8, 1e-5f, 0, 0.0f);
    gn_case(2, 32, 256, 8, 1e-6f, 1, 0.0f);
    gn_case(1, 64, 17 * 12, 32, 1e-5f, 1, 3.0f);
    gn_case(3, 6, 7, 3, 1e-5f, 1, 0.0f);
    gn_case(2, 128, 4096, 32, 1e-6f, 1, 10.0f);
}

static void test_upsample(void)
{
    /* 2x, identity, and to arbitrary sizes: source index = min(floorf(dst * (float)in/out), in-1) */
    int sizes[][4] = {{4, 4, 8, 8}, {3, 2, 5, 3}, {9, 6, 17, 12}, {5, 3, 9, 6}, {3, 2, 5, 3},
                      {2, 2, 2, 2}, {7, 5, 15, 11}, {3, 3, 7, 10}, {6, 4, 3, 2}};
    for (size_t t = 0; t < sizeof sizes / sizeof sizes[0]; t++) {
        int H = sizes[t][0], W = sizes[t][1], Ho = sizes[t][2], Wo = sizes[t][3];
        int N = 2, C = 3;
        float *x = rand_buf((size_t)N * C * H * W, 1.0f);
        float *y = malloc(sizeof(float) * N * C * Ho * Wo);
        sdb_upsample_nearest(x, N, C, H, W, y, Ho, Wo);
        int bad = 0;
        for (int nc = 0; nc < N * C; nc++)
            for (int oy = 0; oy < Ho; oy++)
                for (int ox = 0; ox < Wo; ox++) {
                    /* torch: scale = (float)in/out (no scale factor given); 2x uses >> 1 */
                    int sy = (int)floorf((float)oy * ((float)H / (float)Ho));
                    int sx = (int)floorf((float)ox * ((float)W / (float)Wo));
                    if (sy > H - 1) sy = H - 1;
                    if (sx > W - 1) sx = W - 1;
                    if (Ho == 2 * H) sy = oy / 2;
                    if (Wo == 2 * W) sx = ox / 2;
                    if (y[((size_t)nc * Ho + oy) * Wo + ox] != x[((size_t)nc * H + sy) * W + sx]) bad++;
                }
        CHECKF(bad == 0, "upsample %dx%d -> %dx%d: %d wrong", H, W, Ho, Wo, bad);
        free(x); free(y);
    }
    /* the known torch result for 9 -> 17 rows (interpolate(size=17) of arange(9)) */
    float x9[9], y17[17];
    for (int i = 0; i < 9; i++) x9[i] = (float)i;
    sdb_upsample_nearest(x9, 1, 1, 9, 1, y17, 17, 1);
    const float expect[17] = {0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8};
    CHECK(memcmp(y17, expect, sizeof expect) == 0);
}

static void test_transpose(void)
{
    int shapes[][2] = {{1, 1}, {3, 5}, {33, 65}, {256, 320}, {77, 31}};
    for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++) {
        int r = shapes[t][0], c = shapes[t][1];
        float *x = rand_buf((size_t)r * c, 1.0f), *y = malloc(sizeof(float) * r * c);
        sdb_transpose(x, r, c, y);
        int bad = 0;
        for (int i = 0; i < r; i++)
            for (int j = 0; j < c; j++)
                if (y[(size_t)j * r + i] != x[(size_t)i * c + j]) bad++;
        CHECKF(bad == 0, "transpose %dx%d", r, c);
        free(x); free(y);
    }
}

static void test_gemm_linear(void)
{
    int shapes[][3] = {{1, 3, 2}, {77, 32, 64}, {512, 320, 96}, {130, 700, 40}, {33, 17, 1000}, {64, 300, 260}};
    for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++) {
        int M = shapes[t][0], K = shapes[t][1], N = shapes[t][2];
        float *x = rand_buf((size_t)M * K, 1.0f), *W = rand_buf((size_t)N * K, 0.2f), *b = rand_buf(N, 1.0f);
        float *y0 = rand_buf((size_t)M * N, 1.0f);
        float *ref = malloc(sizeof(float) * M * N), *y1 = malloc(sizeof(float) * M * N), *y2 = malloc(sizeof(float) * M * N);
        float *Ww;
        uint16_t *Wh = half_of(W, (size_t)N * K, &Ww);
        for (int acc = 0; acc < 2; acc++) {
            for (int i = 0; i < M; i++)
                for (int j = 0; j < N; j++) {
                    double s = b[j] + (acc ? y0[(size_t)i * N + j] : 0.0);
                    for (int k = 0; k < K; k++) s += (double)x[(size_t)i * K + k] * W[(size_t)j * K + k];
                    ref[(size_t)i * N + j] = (float)s;
                }
            memcpy(y1, y0, sizeof(float) * M * N);
            memcpy(y2, y0, sizeof(float) * M * N);
            sdb_threads_set(1);
            CHECK(sdb_gemm_linear(x, M, K, sdb_wmat_f32(W), b, N, y1, acc, NULL) == 0);
            sdb_threads_set(2);
            CHECK(sdb_gemm_linear(x, M, K, sdb_wmat_f32(W), b, N, y2, acc, NULL) == 0);
            char what[96];
            snprintf(what, sizeof what, "linear %dx%d -> %d acc%d", M, K, N, acc);
            CHECKF(sdb_t_close(y1, ref, (size_t)M * N, 1e-5, 1e-5, what), "%s", what);
            CHECKF(memcmp(y1, y2, sizeof(float) * M * N) == 0, "%s: 1 vs 2 threads differ", what);
            /* F16 W: exactly the linear of its float32 widening, for 1 and 2 threads */
            const sdb_wmat w16 = sdb_wmat_f16(Wh);
            size_t mark = sdb_arena_mark(&arena);
            memcpy(ref, y0, sizeof(float) * M * N);
            memcpy(y1, y0, sizeof(float) * M * N);
            memcpy(y2, y0, sizeof(float) * M * N);
            sdb_threads_set(1);
            CHECK(sdb_gemm_linear(x, M, K, sdb_wmat_f32(Ww), b, N, ref, acc, NULL) == 0);
            CHECK(sdb_gemm_linear(x, M, K, w16, b, N, y1, acc, &arena) == 0);
            sdb_threads_set(2);
            CHECK(sdb_gemm_linear(x, M, K, w16, b, N, y2, acc, &arena) == 0);
            CHECK(sdb_arena_mark(&arena) == mark);
            CHECKF(memcmp(y1, ref, sizeof(float) * M * N) == 0, "%s: F16 W differs from its float32 widening", what);
            CHECKF(memcmp(y2, ref, sizeof(float) * M * N) == 0, "%s: F16 W, 2 threads differ", what);
            CHECK(sdb_gemm_linear(x, M, K, w16, b, N, y2, acc, NULL) == SDB_EINVAL); /* half needs scratch */
        }
        free(Wh); free(Ww);
        free(x); free(W); free(b); free(y0); free(ref); free(y1); free(y2);
    }
}

/* sdb_gemm_linear_cat: three matrices (one in half) as one product, against a double-precision
 * x·Wᵀ per matrix; the column blocks of the grid straddle the matrices; 1 and 2 threads
 * bit-identical; a K long enough to be sliced too. */
static void test_gemm_linear_cat(void)
{
    const int shapes[][3] = {{300, 64, 40}, {517, 1280, 96}, {9, 33, 7}};
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const int M = shapes[si][0], K = shapes[si][1], N = shapes[si][2];
        float *x = rand_buf((size_t)M * K, 1.0f), *w[3], *wf = NULL;
        for (int s = 0; s < 3; s++) w[s] = rand_buf((size_t)N * K, 0.2f);
        uint16_t *wh = half_of(w[1], (size_t)N * K, &wf);
        const sdb_wmat W[3] = {sdb_wmat_f32(w[0]), sdb_wmat_f16(wh), sdb_wmat_f32(w[2])};
        const float *wd[3] = {w[0], wf, w[2]};
        float *y1 = malloc(sizeof(float) * M * 3 * N), *y2 = malloc(sizeof(float) * M * 3 * N);
        sdb_threads_set(1);
        CHECK(sdb_gemm_linear_cat(x, M, K, W, 3, N, y1, &arena) == 0);
        sdb_threads_set(2);
        CHECK(sdb_gemm_linear_cat(x, M, K, W, 3, N, y2, &arena) == 0);
        CHECKF(memcmp(y1, y2, sizeof(float) * M * 3 * N) == 0, "linear_cat %dx%dx%d: 1 vs 2 threads differ", M, K, N);
        double worst = 0;
        for (int i = 0; i < M; i++)
            for (int s = 0; s < 3; s++)
                for (int j = 0; j < N; j++) {
                    double r = 0, mag = 0;
                    for (int k = 0; k < K; k++) {
                        r += (double)x[(size_t)i * K + k] * wd[s][(size_t)j * K + k];
                        mag += fabs((double)x[(size_t)i * K + k] * wd[s][(size_t)j * K + k]);
                    }
                    const double e = fabs(y1[(size_t)i * 3 * N + s * N + j] - r) / (mag * 1e-6 + 1e-30);
                    if (e > worst) worst = e;
                }
        CHECKF(worst <= 1.0, "linear_cat %dx%dx%d: error %.2f of 1e-6 of the magnitude", M, K, N, worst);
        /* with the weights kept as panels (where the thin kernel runs; else there is nothing to
         * keep): the same bits, one matrix or the three */
        const size_t np = sdb_linear_panels_floats(N, K);
        CHECK(np == 0 || np >= (size_t)N * K);
        if (np) {
            float *kp[3];
            for (int s = 0; s < 3; s++) {
                kp[s] = malloc(sizeof(float) * np);
                CHECK(sdb_linear_make_panels(W[s], N, K, kp[s]) == 0);
            }
            const float *kc[3] = {kp[0], NULL, kp[2]}; /* some kept, one made per tile */
            CHECK(sdb_gemm_linear_cat_kept(x, M, K, W, kc, 3, N, y2, &arena) == 0);
            CHECKF(memcmp(y1, y2, sizeof(float) * M * 3 * N) == 0, "linear_cat %dx%dx%d: kept panels differ", M, K, N);
            kc[1] = kp[1];
            CHECK(sdb_gemm_linear_cat_kept(x, M, K, W, kc, 3, N, y2, &arena) == 0);
            CHECKF(memcmp(y1, y2, sizeof(float) * M * 3 * N) == 0, "linear_cat %dx%dx%d: kept panels differ", M, K, N);
            float *z1 = malloc(sizeof(float) * M * N), *z2 = malloc(sizeof(float) * M * N);
            CHECK(sdb_gemm_linear(x, M, K, W[1], w[0], N, z1, 0, &arena) == 0);
            CHECK(sdb_gemm_linear_kept(x, M, K, W[1], kp[1], w[0], N, z2, 0, &arena) == 0);
            CHECKF(memcmp(z1, z2, sizeof(float) * M * N) == 0, "linear %dx%dx%d: kept panels differ", M, K, N);
            free(z1); free(z2);
            for (int s = 0; s < 3; s++) free(kp[s]);
        }
        for (int s = 0; s < 3; s++) free(w[s]);
        free(x); free(wh); free(wf); free(y1); free(y2);
    }
}

/* The convolutions and linear layers again on OpenBLAS alone (SDB_THIN_GEMM=0): the path CPUs take
 * where the thin-product kernel does not run (AVX-512, no AVX2). */
static void test_openblas_path(void)
{
    setenv("SDB_THIN_GEMM", "0", 1);
    CHECK(!sdb_thin_gemm_preferred());
    test_conv();
    test_gemm_linear();
    test_gemm_linear_cat();
    unsetenv("SDB_THIN_GEMM");
}

int main(void)
{
    sdb_err err;
    sdb_err_clear(&err);
    if (sdb_arena_init(&arena, (size_t)1 << 30, &err) != 0) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    RUN(test_conv);
    RUN(test_gemm_linear);
    RUN(test_gemm_linear_cat);
    RUN(test_groupnorm);
    RUN(test_upsample);
    RUN(test_transpose);
    RUN(test_openblas_path);
    sdb_arena_free(&arena);
    return sdb_t_done();
}
