/*
 * test_winograd.c — F(4x4,3x3) Winograd convolution (sdb_winograd_forward) against a
 * double-precision direct convolution written here, on SD 1.5's 3x3 layer shapes (U-Net 320/640/
 * 1280/2560 input channels, VAE 128/256/512, the 4/9-channel conv_in and 3/4-channel conv_out) at
 * small odd spatial sizes, batch 2, float32 and half weights. Bit-identical at 1, 2 and 4 threads,
 * with a transformed filter passed in or made per call; edge cases (images under one tile, several
 * chunks of tiles, partial lanes); the filter transform bit-exactly as documented; the arena is
 * left as it was.
 *
 * Measured relative max errors (max|y - ref| / max|ref|) are printed per shape; the bound asserted
 * (SDB_WINO_REL_BOUND) is the worst measured with margin, and the float32 direct (im2col) path's
 * own error on the same case is printed beside it for scale.
 */
#include "harness.h"
#include "sdb/arena.h"
#include "sdb/fp16.h"
#include "sdb/ops/conv.h"
#include "sdb/ops/thin_gemm.h"
#include "sdb/ops/winograd.h"
#include "sdb/threads.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Worst relative max error measured over the shapes below: 1.1e-5 with float32 weights, 1.05e-5
 * with half weights (points 0, ±1, ±1/2, ∞; the ±2 set measured 1.3e-5 and 1.2e-5). The bound
 * leaves 4.5x margin. The float32 direct (im2col) path measures 1.6e-7..4.6e-7 on the same cases. */
#define SDB_WINO_REL_BOUND 5e-5
/* F(2x2, 3x3) (points 0, ±1, ∞): worst measured 2.1e-6 with float32 weights, 1.7e-6 with half
 * ones (2560 input channels), about twice the direct path's; the bound leaves 4.7x margin. */
#define SDB_WINO2_REL_BOUND 1e-5

static sdb_arena arena;
static uint64_t rng = 0x9e3779b97f4a7c15ULL;
static float *rand_buf(size_t n, float scale) { return sdb_t_rand_floats(&rng, n, scale); }

/* Direct 3x3 pad-1 convolution in double of output channels co0, co0+cstep, ... (weights wd, the
 * exact values the convolution stands for): ref[n][j][oy][ox] for the j-th checked channel. */
static void ref_conv(const float *wd, const float *b, int cin, int cout, const float *x, int N, int H,
                     int W, const float *res, int cstep, double *ref)
{
    int nco = (cout + cstep - 1) / cstep;
    for (int n = 0; n < N; n++)
        for (int j = 0; j < nco; j++) {
            int co = j * cstep;
            for (int oy = 0; oy < H; oy++)
                for (int ox = 0; ox < W; ox++) {
                    double acc = 0;
                    for (int ci = 0; ci < cin; ci++) {
                        const float *xc = x + ((size_t)n * cin + ci) * H * W;
                        const float *g = wd + ((size_t)co * cin + ci) * 9;
                        for (int ky = 0; ky < 3; ky++) {
                            int iy = oy + ky - 1;
                            if (iy < 0 || iy >= H) continue;
                            for (int kx = 0; kx < 3; kx++) {
                                int ix = ox + kx - 1;
                                if (ix < 0 || ix >= W) continue;
                                acc += (double)g[ky * 3 + kx] * xc[(size_t)iy * W + ix];
                            }
                        }
                    }
                    size_t o = (((size_t)n * cout + co) * H + oy) * W + ox;
                    acc += (b ? b[co] : 0.0) + (res ? res[o] : 0.0);
                    ref[(((size_t)n * nco + j) * H + oy) * W + ox] = acc;
                }
        }
}

/* max |y - ref| / max |ref| over the checked channels */
static double rel_err(const float *y, const double *ref, int N, int cout, int cstep, int HW)
{
    int nco = (cout + cstep - 1) / cstep;
    double emax = 0, rmax = 0;
    for (int n = 0; n < N; n++)
        for (int j = 0; j < nco; j++)
            for (int i = 0; i < HW; i++) {
                double r = ref[((size_t)n * nco + j) * HW + i];
                double v = y[((size_t)n * cout + (size_t)j * cstep) * HW + i];
                if (fabs(v - r) > emax || v != v) emax = v != v ? INFINITY : fabs(v - r);
                if (fabs(r) > rmax) rmax = fabs(r);
            }
    return rmax > 0 ? emax / rmax : emax;
}

static double worst_f32, worst_f16;

/* The Winograd form under test: F(4x4, 3x3) or F(2x2, 3x3) (SDB_CONV_PATH_WINO4 / _WINO2). */
static int wino_fw(int path, const sdb_conv2d *c, const float *U, const float *x, int N, int H, int W,
                   float *y, const float *res, const float *bias_n)
{
    if (path == SDB_CONV_PATH_WINO2) return sdb_winograd2_forward(c, U, x, N, H, W, y, res, bias_n, &arena);
    return sdb_winograd_forward(c, U, x, N, H, W, y, res, bias_n, &arena);
}
static const char *form(int path) { return path == SDB_CONV_PATH_WINO2 ? "F(2x2)" : "F(4x4)"; }

/* One layer shape: weights ~ U(-1,1)/sqrt(9 cin) (the scale of trained convs), inputs U(-1,1)
 * (a GroupNorm+SiLU output's range), bias, and a residual when `resid`. */
static void accuracy_case(int path, const char *name, int N, int cin, int cout, int H, int W, int resid, int cstep)
{
    const double bound = path == SDB_CONV_PATH_WINO2 ? SDB_WINO2_REL_BOUND : SDB_WINO_REL_BOUND;
    sdb_conv2d c = {cin, cout, 3, 1, 1, 1, 1, 1, {NULL, NULL}, NULL, NULL, 0};
    const size_t nw = (size_t)cout * cin * 9, ny = (size_t)N * cout * H * W;
    float *w = rand_buf(nw, (float)(1.0 / sqrt(9.0 * cin)));
    float *b = rand_buf(cout, 0.1f);
    float *x = rand_buf((size_t)N * cin * H * W, 1.0f);
    float *r = resid ? rand_buf(ny, 1.0f) : NULL;
    float *y = malloc(sizeof(float) * ny), *yd = malloc(sizeof(float) * ny);
    int nco = (cout + cstep - 1) / cstep;
    double *ref = malloc(sizeof(double) * N * nco * H * W);
    c.w = sdb_wmat_f32(w);
    c.b = b;
    size_t mark = sdb_arena_mark(&arena);
    sdb_threads_set(2);
    ref_conv(w, b, cin, cout, x, N, H, W, r, cstep, ref);
    CHECK(wino_fw(path, &c, NULL, x, N, H, W, y, r, NULL) == 0);
    CHECK(sdb_conv2d_forward(&c, x, N, H, W, yd, r, &arena) == 0);
    CHECK(sdb_arena_mark(&arena) == mark);
    double e = rel_err(y, ref, N, cout, cstep, H * W), ed = rel_err(yd, ref, N, cout, cstep, H * W);
    printf("  %-22s N%d %4d->%4d %2dx%-2d f32: winograd %s %.2e  direct %.2e\n", name, N, cin, cout, H,
           W, form(path), e, ed);
    CHECKF(e <= bound, "%s %s f32: relative max error %.3e", name, form(path), e);
    if (e > worst_f32) worst_f32 = e;

    /* half weights: the reference is the conv of their exact (widened) values */
    uint16_t *wh = malloc(sizeof(uint16_t) * nw);
    float *ww = malloc(sizeof(float) * nw);
    sdb_f32_to_f16_array(w, wh, nw);
    sdb_f16_to_f32_array(wh, ww, nw);
    c.w = sdb_wmat_f16(wh);
    ref_conv(ww, b, cin, cout, x, N, H, W, r, cstep, ref);
    CHECK(wino_fw(path, &c, NULL, x, N, H, W, y, r, NULL) == 0);
    e = rel_err(y, ref, N, cout, cstep, H * W);
    printf("  %-22s N%d %4d->%4d %2dx%-2d f16: winograd %s %.2e\n", name, N, cin, cout, H, W, form(path), e);
    CHECKF(e <= bound, "%s %s f16: relative max error %.3e", name, form(path), e);
    if (e > worst_f16) worst_f16 = e;
    /* the half filter transformed is the widened float32 filter transformed */
    sdb_conv2d cw = c;
    cw.w = sdb_wmat_f32(ww);
    CHECK(wino_fw(path, &cw, NULL, x, N, H, W, yd, r, NULL) == 0);
    CHECKF(memcmp(y, yd, sizeof(float) * ny) == 0, "%s %s: half weights differ from their widening", name, form(path));
    CHECK(sdb_arena_mark(&arena) == mark);
    free(wh); free(ww); free(w); free(b); free(x); free(r); free(y); free(yd); free(ref);
}

/* SD 1.5's 3x3 stride-1 convolutions (in -> out channels). Output channels beyond 320 are cut to
 * keep the test fast (the error of an output depends on the input channels it sums, not on how many
 * outputs there are); every 3rd..8th output channel is checked against the double reference. */
static void test_accuracy_sd15_shapes(void)
{
    worst_f32 = worst_f16 = 0;
    /* U-Net (batch 2: the guidance pair) */
    accuracy_case(SDB_CONV_PATH_WINO4, "unet conv_in", 2, 9, 320, 9, 11, 0, 4);
    accuracy_case(SDB_CONV_PATH_WINO4, "unet 320", 2, 320, 320, 9, 11, 1, 8);
    accuracy_case(SDB_CONV_PATH_WINO4, "unet 320->640", 2, 320, 640, 7, 9, 0, 16);
    accuracy_case(SDB_CONV_PATH_WINO4, "unet 640", 2, 640, 320, 7, 9, 1, 8);
    accuracy_case(SDB_CONV_PATH_WINO4, "unet 1280", 2, 1280, 160, 5, 7, 1, 4);
    accuracy_case(SDB_CONV_PATH_WINO4, "unet up 2560->1280", 2, 2560, 96, 5, 7, 0, 3);
    accuracy_case(SDB_CONV_PATH_WINO4, "unet up 1920->640", 2, 1920, 96, 7, 5, 0, 3);
    accuracy_case(SDB_CONV_PATH_WINO4, "unet conv_out", 2, 320, 4, 9, 11, 0, 1);
    /* VAE (batch 2 here too, to cover the batch path) */
    accuracy_case(SDB_CONV_PATH_WINO4, "vae dec conv_in", 2, 4, 512, 9, 7, 0, 8);
    accuracy_case(SDB_CONV_PATH_WINO4, "vae 512", 2, 512, 256, 9, 7, 1, 8);
    accuracy_case(SDB_CONV_PATH_WINO4, "vae 256", 2, 256, 256, 13, 11, 1, 8);
    accuracy_case(SDB_CONV_PATH_WINO4, "vae 128", 2, 128, 128, 17, 15, 1, 4);
    accuracy_case(SDB_CONV_PATH_WINO4, "vae conv_out", 2, 128, 3, 17, 15, 0, 1);
    printf("  worst relative max error: f32 weights %.2e, f16 weights %.2e (bound %.0e)\n", worst_f32,
           worst_f16, SDB_WINO_REL_BOUND);
    /* F(2x2, 3x3) on the shapes it runs (the U-Net's 1280-channel convs at 8x8 and 4x4, batch 2)
     * and a few more input channel counts and odd sizes */
    worst_f32 = worst_f16 = 0;
    accuracy_case(SDB_CONV_PATH_WINO2, "unet 1280 8x8", 2, 1280, 160, 8, 8, 1, 4);
    accuracy_case(SDB_CONV_PATH_WINO2, "unet 1280 4x4", 2, 1280, 160, 4, 4, 1, 4);
    accuracy_case(SDB_CONV_PATH_WINO2, "unet up 2560->1280", 2, 2560, 96, 8, 8, 0, 3);
    accuracy_case(SDB_CONV_PATH_WINO2, "unet up 1920->1280", 2, 1920, 96, 7, 5, 0, 3);
    accuracy_case(SDB_CONV_PATH_WINO2, "unet 640->1280", 2, 640, 128, 8, 8, 1, 4);
    accuracy_case(SDB_CONV_PATH_WINO2, "unet 320", 2, 320, 320, 9, 11, 1, 8);
    accuracy_case(SDB_CONV_PATH_WINO2, "vae 512", 1, 512, 256, 9, 7, 1, 8);
    printf("  F(2x2): worst relative max error: f32 weights %.2e, f16 weights %.2e (bound %.0e)\n", worst_f32,
           worst_f16, SDB_WINO2_REL_BOUND);
}

/* Same outputs at 1, 2 and 4 threads, with U passed or made per call (per slab of output channels
 * when it is large). */
static void identity_case(int path, int N, int cin, int cout, int H, int W, int half)
{
    sdb_conv2d c = {cin, cout, 3, 1, 1, 1, 1, 1, {NULL, NULL}, NULL, NULL, 0};
    const size_t nw = (size_t)cout * cin * 9, ny = (size_t)N * cout * H * W;
    float *w = rand_buf(nw, 0.2f), *b = rand_buf(cout, 0.5f);
    float *x = rand_buf((size_t)N * cin * H * W, 1.0f), *r = rand_buf(ny, 1.0f);
    uint16_t *wh = malloc(sizeof(uint16_t) * nw);
    sdb_f32_to_f16_array(w, wh, nw);
    c.w = half ? sdb_wmat_f16(wh) : sdb_wmat_f32(w);
    c.b = b;
    float *y[4];
    float *U = malloc(sizeof(float) * sdb_conv_path_filter_floats(&c, path));
    const int threads[3] = {1, 2, 4};
    for (int t = 0; t < 3; t++) {
        y[t] = malloc(sizeof(float) * ny);
        sdb_threads_set(threads[t]);
        CHECK(wino_fw(path, &c, NULL, x, N, H, W, y[t], r, NULL) == 0);
    }
    sdb_threads_set(2);
    sdb_conv_path_filter(&c, path, U);
    y[3] = malloc(sizeof(float) * ny);
    CHECK(wino_fw(path, &c, U, x, N, H, W, y[3], r, NULL) == 0);
    for (int t = 1; t < 4; t++)
        CHECKF(memcmp(y[0], y[t], sizeof(float) * ny) == 0,
               "%s N%d %d->%d %dx%d%s: run %d differs from 1 thread", form(path), N, cin, cout, H, W,
               half ? " f16" : "", t);
    /* and it is the convolution (guards against identical garbage) */
    double *ref = malloc(sizeof(double) * ny);
    float *wd = malloc(sizeof(float) * nw);
    if (half) sdb_f16_to_f32_array(wh, wd, nw);
    else memcpy(wd, w, sizeof(float) * nw);
    ref_conv(wd, b, cin, cout, x, N, H, W, r, 1, ref);
    double e = rel_err(y[0], ref, N, cout, 1, H * W);
    CHECKF(e <= (path == SDB_CONV_PATH_WINO2 ? SDB_WINO2_REL_BOUND : SDB_WINO_REL_BOUND),
           "%s N%d %d->%d %dx%d: error %.3e", form(path), N, cin, cout, H, W, e);
    for (int t = 0; t < 4; t++) free(y[t]);
    free(U); free(w); free(wh); free(wd); free(b); free(x); free(r); free(ref);
}

/* The filter transform bit-exactly as documented in winograd.c: u = G g Gᵀ in float with G built
 * here from the points 0, 1, -1, 1/2, -1/2, ∞ and rounded to float, each sum over G's nonzero
 * entries in order, every product and sum rounded; and within the forward error bound of the two
 * passes, 8u·(|G| |g| |G|ᵀ) (u = 2⁻²⁴: per pass G's rounding, the products' and two sums'), of
 * G g Gᵀ worked out in long double with the exact G. Channel counts with tails of the 8-filter
 * vector form and of the 64-channel runs, float32 and half weights. */
static void test_filter_transform(void)
{
    const long double pts[5] = {0, 1, -1, 0.5L, -0.5L};
    long double G[6][3];
    float Gf[6][3];
    for (int j = 0; j < 5; j++) {
        long double den = 1;
        for (int l = 0; l < 5; l++)
            if (l != j) den *= pts[j] - pts[l];
        for (int k = 0; k < 3; k++) G[j][k] = powl(pts[j], k) / den;
    }
    G[5][0] = 0; G[5][1] = 0; G[5][2] = 1;
    for (int i = 0; i < 6; i++)
        for (int k = 0; k < 3; k++) Gf[i][k] = (float)G[i][k];
    const int shapes[][2] = {{3, 5}, {2, 64}, {3, 67}, {2, 130}, {1, 320}, {2, 21}};
    long bad = 0, n = 0;
    double worst = 0;
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
        for (int half = 0; half < 2; half++) {
            const int cout = shapes[si][0], cin = shapes[si][1];
            sdb_conv2d c = {cin, cout, 3, 1, 1, 1, 1, 1, {NULL, NULL}, NULL, NULL, 0};
            const size_t nw = (size_t)cout * cin * 9;
            /* U 64-byte aligned, as the arena gives it: the runs of 64 input channels whose rows are
             * 32-byte aligned ({2, 64}, {1, 320}) take the non-temporal stores, the rest memcpy */
            const size_t ub = (sizeof(float) * sdb_winograd_filter_floats(&c) + 63) / 64 * 64;
            float *w = rand_buf(nw, 0.3f), *U = aligned_alloc(64, ub);
            uint16_t *wh = malloc(sizeof(uint16_t) * nw);
            sdb_f32_to_f16_array(w, wh, nw);
            if (half) sdb_f16_to_f32_array(wh, w, nw);
            c.w = half ? sdb_wmat_f16(wh) : sdb_wmat_f32(w);
            sdb_threads_set(2);
            sdb_winograd_filter(&c, U);
            for (int co = 0; co < cout; co++)
                for (int ci = 0; ci < cin; ci++) {
                    const float *g = w + ((size_t)co * cin + ci) * 9;
                    float t[6][3];
                    long double te[6][3], ta[6][3]; /* exact G g, and |G| |g| */
                    for (int i = 0; i < 6; i++)
                        for (int j = 0; j < 3; j++) {
                            volatile float a = -0.0f;
                            te[i][j] = ta[i][j] = 0;
                            for (int k = 0; k < 3; k++) {
                                te[i][j] += G[i][k] * g[3 * k + j];
                                ta[i][j] += fabsl(G[i][k] * g[3 * k + j]);
                                if (Gf[i][k] == 0) continue;
                                volatile float p = Gf[i][k] * g[3 * k + j];
                                a = a + p;
                            }
                            t[i][j] = a;
                        }
                    for (int i = 0; i < 6; i++)
                        for (int j = 0; j < 6; j++) {
                            volatile float a = -0.0f;
                            long double exact = 0, mag = 0;
                            for (int k = 0; k < 3; k++) {
                                exact += te[i][k] * G[j][k];
                                mag += ta[i][k] * fabsl(G[j][k]);
                                if (Gf[j][k] == 0) continue;
                                volatile float p = t[i][k] * Gf[j][k];
                                a = a + p;
                            }
                            const float want = a;
                            const float got = U[(size_t)(i * 6 + j) * cout * cin + (size_t)co * cin + ci];
                            n++;
                            if (memcmp(&want, &got, 4)) bad++;
                            if (mag > 0) {
                                const double e = (double)(fabsl((long double)got - exact) / ldexpl(mag, -24));
                                if (e > worst) worst = e;
                            }
                        }
                }
            free(w); free(U); free(wh);
        }
    printf("  filter transform: %ld of %ld values differ from the documented formula, worst error %.3f u·(|G||g||G|ᵀ)\n",
           bad, n, worst);
    CHECKF(bad == 0, "%ld of %ld transformed filter values differ from the documented formula", bad, n);
    CHECKF(worst <= 8.0, "transformed filter off the exact value by %.3f u·(|G||g||G|ᵀ) (bound 8)", worst);
}

/* F(2x2, 3x3)'s filter transform bit-exactly as documented in winograd2.c: in float, per column
 * t0 = g0, t1 = ((g0 + g1) + g2)·½, t2 = ((g0 - g1) + g2)·½, t3 = g2, then the same on the rows
 * of t, each operation rounded; and its error against G g Gᵀ worked out in long double within the
 * forward bound of two such passes, 4u·(|G| |g| |G|ᵀ) (u = 2⁻²⁴: each pass adds at most two roundings
 * of sums of its magnitudes). Input channel counts with tails of the 8-filter vector form; float32
 * and half weights. */
static void test_filter2_transform(void)
{
    static const long double G[4][3] = {{1, 0, 0}, {0.5L, 0.5L, 0.5L}, {0.5L, -0.5L, 0.5L}, {0, 0, 1}};
    const int shapes[][2] = {{3, 5}, {2, 64}, {3, 67}, {1, 2}, {2, 21}};
    long bad = 0, n = 0;
    double worst = 0;
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
        for (int half = 0; half < 2; half++) {
            const int cout = shapes[si][0], cin = shapes[si][1];
            sdb_conv2d c = {cin, cout, 3, 1, 1, 1, 1, 1, {NULL, NULL}, NULL, NULL, 0};
            const size_t nw = (size_t)cout * cin * 9;
            float *w = rand_buf(nw, 0.3f), *U = malloc(sizeof(float) * sdb_winograd2_filter_floats(&c));
            uint16_t *wh = malloc(sizeof(uint16_t) * nw);
            sdb_f32_to_f16_array(w, wh, nw);
            if (half) sdb_f16_to_f32_array(wh, w, nw);
            c.w = half ? sdb_wmat_f16(wh) : sdb_wmat_f32(w);
            sdb_winograd2_filter(&c, U);
            for (int co = 0; co < cout; co++)
                for (int ci = 0; ci < cin; ci++) {
                    const float *g = w + ((size_t)co * cin + ci) * 9;
                    volatile float t[4][3];
                    long double te[4][3], ta[4][3]; /* exact G g, and |G| |g| */
                    for (int j = 0; j < 3; j++) {
                        volatile float s01 = g[j] + g[3 + j], d01 = g[j] - g[3 + j];
                        volatile float s = s01 + g[6 + j], d = d01 + g[6 + j];
                        t[0][j] = g[j];
                        t[1][j] = s * 0.5f;
                        t[2][j] = d * 0.5f;
                        t[3][j] = g[6 + j];
                        for (int i = 0; i < 4; i++) {
                            te[i][j] = G[i][0] * g[j] + G[i][1] * g[3 + j] + G[i][2] * g[6 + j];
                            ta[i][j] = fabsl(G[i][0] * g[j]) + fabsl(G[i][1] * g[3 + j]) + fabsl(G[i][2] * g[6 + j]);
                        }
                    }
                    for (int i = 0; i < 4; i++) {
                        volatile float s01 = t[i][0] + t[i][1], d01 = t[i][0] - t[i][1];
                        volatile float s = s01 + t[i][2], d = d01 + t[i][2];
                        const float want[4] = {t[i][0], s * 0.5f, d * 0.5f, t[i][2]};
                        for (int j = 0; j < 4; j++) {
                            const float got = U[(size_t)(i * 4 + j) * cout * cin + (size_t)co * cin + ci];
                            const long double exact = te[i][0] * G[j][0] + te[i][1] * G[j][1] + te[i][2] * G[j][2];
                            const long double mag = ta[i][0] * fabsl(G[j][0]) + ta[i][1] * fabsl(G[j][1]) +
                                                    ta[i][2] * fabsl(G[j][2]);
                            if (mag > 0) {
                                const double e = (double)(fabsl((long double)got - exact) / (ldexpl(mag, -24)));
                                if (e > worst) worst = e;
                            }
                            n++;
                            bad += memcmp(&want[j], &got, 4) != 0;
                        }
                    }
                }
            free(w); free(U); free(wh);
        }
    printf("  F(2x2) filter transform: %ld of %ld values differ from the documented formula, worst error %.3f u·(|G||g||G|ᵀ)\n",
           bad, n, worst);
    CHECKF(bad == 0, "%ld of %ld F(2x2) transformed filter values differ from the documented formula", bad, n);
    CHECKF(worst <= 4.0, "F(2x2) transformed filter off the exact value by %.3f u·(|G||g||G|ᵀ) (bound 4)", worst);
}

static void test_thread_identity(void)
{
    const int F4 = SDB_CONV_PATH_WINO4, F2 = SDB_CONV_PATH_WINO2;
    identity_case(F4, 2, 64, 96, 19, 13, 0);  /* partial tiles both ways, several tasks */
    identity_case(F4, 2, 24, 40, 70, 66, 0);  /* 2*18*17 = 612 tiles: several chunks */
    identity_case(F4, 1, 130, 70, 23, 9, 1);  /* odd channel counts, half weights */
    identity_case(F4, 1, 2560, 1040, 3, 2, 0); /* filter over 192 MiB: output-channel slabs (2 x 528 - 16) */
    identity_case(F4, 2, 640, 100, 16, 16, 1); /* the U-Net's 16x16 level: filter made in the products */
    identity_case(F4, 2, 1000, 30, 13, 9, 0); /* the same with a partial chunk of input channels */
    identity_case(F4, 1, 320, 20, 20, 20, 1); /* 320 input channels (made in the products), half weights */
    identity_case(F4, 2, 640, 32, 33, 35, 0); /* 162 tiles: two chunks, the filter made in each */
    identity_case(F4, 3, 5, 3, 2, 3, 0);      /* images smaller than one tile */
    identity_case(F4, 1, 3, 2, 1, 1, 0);
    identity_case(F2, 2, 64, 96, 9, 7, 0);    /* partial tiles both ways */
    identity_case(F2, 2, 1280, 200, 8, 8, 1); /* the 8x8 level's shape, half weights */
    identity_case(F2, 1, 130, 70, 23, 9, 0);  /* odd channel counts, 12 x 5 tiles */
    identity_case(F2, 1, 2560, 1360, 2, 2, 0); /* the largest filter: 223 MB transformed if kept */
    identity_case(F2, 3, 5, 3, 1, 1, 0);      /* images smaller than one tile */
}

/* Where the thin-product kernel runs the GEMMs (AVX2 without AVX-512), the same checks on the
 * OpenBLAS path other CPUs take (SDB_THIN_GEMM=0): F(2x2)'s V in the other layout, its products
 * by sgemm, kept filter or not, 1/2/4 threads; and its accuracy. */
static void test_openblas_path(void)
{
    setenv("SDB_THIN_GEMM", "0", 1);
    CHECK(!sdb_thin_gemm_preferred());
    identity_case(SDB_CONV_PATH_WINO2, 2, 64, 96, 9, 7, 0);
    identity_case(SDB_CONV_PATH_WINO2, 2, 1280, 200, 8, 8, 1);
    identity_case(SDB_CONV_PATH_WINO4, 2, 64, 96, 19, 13, 0);
    accuracy_case(SDB_CONV_PATH_WINO2, "unet 1280 8x8 (sgemm)", 2, 1280, 160, 8, 8, 1, 4);
    unsetenv("SDB_THIN_GEMM");
}

/* Padding 0 on some sides (the VAE's upsampling strips) and a bias per image (a resnet's conv1):
 * against the direct path's own result, which test_ops_conv checks against its double reference. */
static void pad_bias_case(int path, int N, int cin, int cout, int H, int W, int pt, int pl, int pb, int pr)
{
    sdb_conv2d c = {cin, cout, 3, 1, pt, pl, pb, pr, {NULL, NULL}, NULL, NULL, 0};
    int Ho, Wo;
    sdb_conv2d_out_size(&c, H, W, &Ho, &Wo);
    const size_t nw = (size_t)cout * cin * 9, ny = (size_t)N * cout * Ho * Wo;
    float *w = rand_buf(nw, 0.2f), *bn = rand_buf((size_t)N * cout, 0.5f);
    float *x = rand_buf((size_t)N * cin * H * W, 1.0f), *r = rand_buf(ny, 1.0f);
    float *yw = malloc(sizeof(float) * ny), *yd = malloc(sizeof(float) * ny);
    c.w = sdb_wmat_f32(w);
    CHECK(sdb_winograd_applies(&c));
    for (int withres = 0; withres < 2; withres++) {
        const float *res = withres ? r : NULL;
        CHECK(wino_fw(path, &c, NULL, x, N, H, W, yw, res, bn) == 0);
        CHECK(sdb_conv2d_forward_bias(&c, x, N, H, W, yd, res, bn, &arena) == 0);
        double emax = 0, rmax = 0;
        for (size_t i = 0; i < ny; i++) {
            if (fabs((double)yw[i] - yd[i]) > emax) emax = fabs((double)yw[i] - yd[i]);
            if (fabs(yd[i]) > rmax) rmax = fabs(yd[i]);
        }
        CHECKF(emax <= SDB_WINO_REL_BOUND * rmax, "%s pad (%d,%d,%d,%d) %dx%d%s: max error %.3e of %.3e",
               form(path), pt, pl, pb, pr, H, W, withres ? " resid" : "", emax, rmax);
    }
    free(w); free(bn); free(x); free(r); free(yw); free(yd);
}

static void test_padding_and_bias_per_image(void)
{
    for (int path = SDB_CONV_PATH_WINO2; path <= SDB_CONV_PATH_WINO4; path += 2) {
        pad_bias_case(path, 1, 16, 24, 10, 13, 0, 1, 0, 1); /* an interior strip */
        pad_bias_case(path, 1, 16, 24, 10, 13, 1, 1, 0, 1); /* the first strip */
        pad_bias_case(path, 1, 16, 24, 9, 13, 0, 1, 1, 1);  /* the last strip */
        pad_bias_case(path, 2, 12, 20, 11, 7, 0, 0, 0, 0);  /* no padding */
        pad_bias_case(path, 2, 12, 20, 3, 3, 0, 0, 0, 0);   /* a single output pixel */
        pad_bias_case(path, 2, 12, 20, 14, 9, 1, 1, 1, 1);
    }
}

/* The --conv names and the dispatch: direct never, winograd always (where it applies), auto by
 * the shape; sdb_conv2d_forward_algo gives exactly the path it names. */
static void test_dispatch(void)
{
    CHECK(sdb_conv_algo_of("auto") == SDB_CONV_AUTO);
    CHECK(sdb_conv_algo_of("direct") == SDB_CONV_DIRECT);
    CHECK(sdb_conv_algo_of("winograd") == SDB_CONV_WINOGRAD);
    CHECK(sdb_conv_algo_of("Winograd") == -1 && sdb_conv_algo_of("") == -1 && sdb_conv_algo_of(NULL) == -1);
    for (int a = 0; a < 3; a++) CHECK(sdb_conv_algo_of(sdb_conv_algo_name(a)) == a);
    sdb_conv2d c = {320, 320, 3, 1, 1, 1, 1, 1, {NULL, NULL}, NULL, NULL, 0};
    CHECK(sdb_conv_uses_winograd(&c, SDB_CONV_AUTO, 2, 64, 64));   /* U-Net level 0 at 512² */
    CHECK(sdb_conv_path(&c, SDB_CONV_AUTO, 2, 16, 16) == SDB_CONV_PATH_WINO4); /* 2 x 16 tiles */
    CHECK(sdb_conv_path(&c, SDB_CONV_AUTO, 2, 8, 8) == SDB_CONV_PATH_WINO2);   /* 2 x 4; F(2x2): 2 x 16 */
    CHECK(sdb_conv_path(&c, SDB_CONV_AUTO, 2, 4, 4) == SDB_CONV_PATH_DIRECT);  /* F(2x2): 2 x 4 tiles */
    CHECK(sdb_conv_path(&c, SDB_CONV_AUTO, 1, 8, 8) == SDB_CONV_PATH_DIRECT);  /* F(2x2): 16 tiles */
    CHECK(sdb_conv_path(&c, SDB_CONV_AUTO, 1, 40, 5) == SDB_CONV_PATH_WINO2);  /* 20 tiles; F(2x2): 60 */
    CHECK(sdb_conv_path(&c, SDB_CONV_AUTO, 2, 40, 5) == SDB_CONV_PATH_WINO4);  /* 40 tiles */
    CHECK(sdb_conv_path(&c, SDB_CONV_AUTO, 2, 34, 30) == SDB_CONV_PATH_WINO4);
    CHECK(sdb_conv_path(&c, SDB_CONV_WINOGRAD, 2, 8, 8) == SDB_CONV_PATH_WINO4); /* --conv winograd: F(4x4) */
    CHECK(sdb_conv_uses_winograd(&c, SDB_CONV_WINOGRAD, 1, 1, 1));
    CHECK(!sdb_conv_uses_winograd(&c, SDB_CONV_DIRECT, 2, 64, 64));
    c.cin = 1280;
    c.cout = 640;                                                  /* filter 118 MB transformed */
    CHECK(sdb_conv_uses_winograd(&c, SDB_CONV_AUTO, 2, 32, 32));
    c.cout = 1280;                                                 /* 236 MB: in slabs, by the tiles */
    CHECK(sdb_conv_uses_winograd(&c, SDB_CONV_AUTO, 2, 32, 32));
    CHECK(sdb_conv_path(&c, SDB_CONV_AUTO, 2, 16, 16) == SDB_CONV_PATH_WINO4); /* 2 x 16 tiles */
    CHECK(sdb_conv_path(&c, SDB_CONV_AUTO, 2, 8, 8) == SDB_CONV_PATH_WINO2);   /* the 8x8 level */
    CHECK(sdb_conv_path(&c, SDB_CONV_AUTO, 1, 16, 16) == SDB_CONV_PATH_WINO2); /* 16 tiles; F(2x2): 64 */
    CHECK(sdb_conv_path(&c, SDB_CONV_AUTO, 2, 4, 4) == SDB_CONV_PATH_DIRECT);  /* the 4x4 level */
    c.cin = 2560;                                                  /* 472 MB: the up path's 2560 -> 1280 */
    CHECK(sdb_conv_uses_winograd(&c, SDB_CONV_AUTO, 2, 16, 16));
    c.cout = 320;
    c.cin = 9;                                                     /* the U-Net's conv_in */
    CHECK(!sdb_conv_uses_winograd(&c, SDB_CONV_AUTO, 2, 64, 64));
    CHECK(sdb_conv_uses_winograd(&c, SDB_CONV_WINOGRAD, 2, 64, 64));
    c.cin = 320;
    c.cout = 4;                                                    /* the U-Net's conv_out */
    CHECK(!sdb_conv_uses_winograd(&c, SDB_CONV_AUTO, 2, 64, 64));
    c.cout = 320;
    c.stride = 2;                                                  /* a downsampler */
    CHECK(!sdb_conv_uses_winograd(&c, SDB_CONV_WINOGRAD, 2, 64, 64));
    c.stride = 1;
    c.cin = c.cout = 40;
    const int N = 2, H = 9, W = 11;
    const size_t ny = (size_t)N * 40 * H * W;
    float *w = rand_buf((size_t)40 * 40 * 9, 0.2f), *x = rand_buf(ny, 1.0f);
    float *y1 = malloc(sizeof(float) * ny), *y2 = malloc(sizeof(float) * ny);
    c.w = sdb_wmat_f32(w);
    CHECK(sdb_conv2d_forward_algo(&c, SDB_CONV_WINOGRAD, x, N, H, W, y1, NULL, NULL, &arena) == 0);
    CHECK(sdb_winograd_forward(&c, NULL, x, N, H, W, y2, NULL, NULL, &arena) == 0);
    CHECK(memcmp(y1, y2, sizeof(float) * ny) == 0);
    CHECK(sdb_conv2d_forward_algo(&c, SDB_CONV_DIRECT, x, N, H, W, y1, NULL, NULL, &arena) == 0);
    CHECK(sdb_conv2d_forward(&c, x, N, H, W, y2, NULL, &arena) == 0);
    CHECK(memcmp(y1, y2, sizeof(float) * ny) == 0);
    /* auto at 8x8, batch 2: F(2x2), with its kept filter or without; and a kept filter of the
     * other form is not used (the call makes its own) */
    CHECK(sdb_conv_path(&c, SDB_CONV_AUTO, N, 8, 8) == SDB_CONV_PATH_WINO2);
    CHECK(sdb_conv2d_forward_algo(&c, SDB_CONV_AUTO, x, N, 8, 8, y1, NULL, NULL, &arena) == 0);
    CHECK(sdb_winograd2_forward(&c, NULL, x, N, 8, 8, y2, NULL, NULL, &arena) == 0);
    CHECK(memcmp(y1, y2, sizeof(float) * N * 40 * 64) == 0);
    float *U2 = malloc(sizeof(float) * sdb_winograd2_filter_floats(&c));
    float *U4 = malloc(sizeof(float) * sdb_winograd_filter_floats(&c));
    sdb_winograd2_filter(&c, U2);
    sdb_winograd_filter(&c, U4);
    c.U = U2;
    c.U_tile = SDB_CONV_PATH_WINO2;
    CHECK(sdb_conv2d_forward_algo(&c, SDB_CONV_AUTO, x, N, 8, 8, y2, NULL, NULL, &arena) == 0);
    CHECK(memcmp(y1, y2, sizeof(float) * N * 40 * 64) == 0);
    c.U = U4; /* F(4x4)'s filter: the F(2x2) call must not read it */
    c.U_tile = SDB_CONV_PATH_WINO4;
    CHECK(sdb_conv2d_forward_algo(&c, SDB_CONV_AUTO, x, N, 8, 8, y2, NULL, NULL, &arena) == 0);
    CHECK(memcmp(y1, y2, sizeof(float) * N * 40 * 64) == 0);
    CHECK(sdb_conv2d_forward_algo(&c, SDB_CONV_WINOGRAD, x, N, H, W, y1, NULL, NULL, &arena) == 0);
    CHECK(sdb_winograd_forward(&c, NULL, x, N, H, W, y2, NULL, NULL, &arena) == 0);
    CHECK(memcmp(y1, y2, sizeof(float) * ny) == 0);
    c.U = U2; /* and the other way round */
    c.U_tile = SDB_CONV_PATH_WINO2;
    CHECK(sdb_conv2d_forward_algo(&c, SDB_CONV_WINOGRAD, x, N, H, W, y1, NULL, NULL, &arena) == 0);
    CHECK(memcmp(y1, y2, sizeof(float) * ny) == 0);
    free(U2); free(U4);
    free(w); free(x); free(y1); free(y2);
}

static void test_refuses(void)
{
    float w[2 * 2 * 9] = {0}, x[2 * 16] = {0}, y[2 * 16];
    sdb_conv2d c = {2, 2, 3, 2, 1, 1, 1, 1, {w, NULL}, NULL, NULL, 0};
    CHECK(!sdb_winograd_applies(&c));
    CHECK(sdb_winograd_forward(&c, NULL, x, 1, 4, 4, y, NULL, NULL, &arena) == SDB_EINVAL);
    c.stride = 1;
    c.pad_b = 2;
    CHECK(!sdb_winograd_applies(&c));
    c.pad_b = 0;
    CHECK(sdb_winograd_applies(&c));
    c.pad_b = 1;
    CHECK(sdb_winograd_applies(&c));
    c.k = 1;
    CHECK(!sdb_winograd_applies(&c));
    c.k = 3;
    CHECK(sdb_winograd_forward(&c, NULL, x, 1, 0, 4, y, NULL, NULL, &arena) == SDB_EINVAL);
    CHECK(sdb_winograd_forward(&c, NULL, x, 1, 4, 4, y, NULL, NULL, &arena) == 0);
    CHECK(sdb_winograd2_forward(&c, NULL, x, 1, 4, 4, y, NULL, NULL, &arena) == 0);
    CHECK(sdb_winograd2_forward(&c, NULL, x, 1, 0, 4, y, NULL, NULL, &arena) == SDB_EINVAL);
    c.stride = 2;
    CHECK(sdb_winograd2_forward(&c, NULL, x, 1, 4, 4, y, NULL, NULL, &arena) == SDB_EINVAL);
    c.stride = 1;
    float *big = calloc((size_t)2 * 40 * 40, sizeof(float)), *ybig = malloc(sizeof(float) * 2 * 40 * 40);
    CHECK(sdb_winograd2_forward(&c, NULL, big, 1, 40, 40, ybig, NULL, NULL, &arena) == SDB_EINVAL); /* 400 tiles */
    free(big); free(ybig);
}

int main(void)
{
    sdb_err err;
    if (sdb_arena_init(&arena, (size_t)2 << 30, &err) != 0) {
        fprintf(stderr, "arena: %s\n", err.msg);
        return 1;
    }
    RUN(test_refuses);
    RUN(test_filter_transform);
    RUN(test_filter2_transform);
    RUN(test_thread_identity);
    RUN(test_padding_and_bias_per_image);
    RUN(test_dispatch);
    RUN(test_openblas_path);
    RUN(test_accuracy_sd15_shapes);
    sdb_arena_free(&arena);
    return sdb_t_done();
}
