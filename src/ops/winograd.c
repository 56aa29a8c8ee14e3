/*
 * winograd.c — F(4x4, 3x3) Winograd convolution on OpenBLAS GEMMs (see winograd.h). Owns the
 * transform matrices, the tile/chunk grid and the three transforms; the GEMMs are OpenBLAS's.
 *
 * Transform matrices: Toom-Cook at the points 0, 1, -1, 1/2, -1/2 and ∞ (Aᵀ[i][j] = p_j^i,
 * G[j][k] = p_j^k / ∏_{l≠j}(p_j - p_l), Bᵀ row j = the coefficients of ∏_{l≠j}(x - p_l), the last
 * row/column standing for ∞). Measured on the SD 1.5 layer shapes (tests/test_winograd.c), their
 * float error is below that of the usual 0, ±1, ±2, ∞ set (SDB_WINO_PM2 builds that one, for the
 * comparison). The filter transform runs in float with G rounded to float (filter_xform), 8
 * filters per AVX2 vector.
 *
 * Work: the output tiles (4x4, over all images) are taken in chunks of Tb tiles (Tb from the
 * channel counts only, so that a chunk's transformed inputs V [36][cin][Tb] and products
 * M [36][cout][Tb] stay about SDB_WINO_CHUNK_BYTES). Per chunk, three parallel loops: the input
 * transform (over the input channels), a fixed grid of (ξ x output-channel block x tile block)
 * single-threaded sgemms (36 x 2..8 units, enough for 64 threads), and the output transform
 * (+ bias, + residual; over the output channels). Every value is computed by one unit whatever the
 * thread count, in an order that depends only on the shapes: results are identical for any thread
 * count.
 *
 * Without a kept filter the transformed filter is made per call: into the scratch (in slabs of
 * output channels, written around the caches) before the products; or, where the thin kernel runs
 * the products and the tiles are at most two chunks (the U-Net's convolutions at 32x32 and 16x16
 * latents, fused_applies), inside them, per chunk: units of SDB_WINO_FB output channels transform their
 * filters SDB_WINO_KCH input channels at a time into the thread's buffer right before the 36
 * products that read them, with V made as the kernel's panels. Each element's product is the same
 * chain of multiply-adds either way, so the bits do not depend on which.
 *
 * The transforms work on SDB_WINO_LANES tiles at a time (one SIMD lane per tile) with the matrix
 * entries as compile-time constants, so zero entries cost nothing and ±1 entries no multiply;
 * they are built twice, for AVX2+FMA and for the baseline ISA, chosen once per call.
 */
#include "sdb/ops/winograd.h"
#include "sdb/error.h"
#include "sdb/fp16.h"
#include "sdb/ops/thin_gemm.h"
#include "taps9.h"
#include "vexp.h"

#include <assert.h>
#include <cblas.h>
#include <immintrin.h>
#include <omp.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>

#define AI static inline __attribute__((always_inline))
#define UNROLL _Pragma("GCC unroll 8")

#if SDB_WINO_PM2
static const float AT[4][6] = {
    {1, 1, 1, 1, 1, 0}, {0, 1, -1, 2, -2, 0}, {0, 1, 1, 4, 4, 0}, {0, 1, -1, 8, -8, 1}};
static const float BT[6][6] = {
    {4, 0, -5, 0, 1, 0},  {0, -4, -4, 1, 1, 0}, {0, 4, -4, -1, 1, 0},
    {0, -2, -1, 2, 1, 0}, {0, 2, -1, -2, 1, 0}, {0, 4, 0, -5, 0, 1}};
static const double GD[6][3] = {{1.0 / 4, 0, 0},
                                {-1.0 / 6, -1.0 / 6, -1.0 / 6},
                                {-1.0 / 6, 1.0 / 6, -1.0 / 6},
                                {1.0 / 24, 1.0 / 12, 1.0 / 6},
                                {1.0 / 24, -1.0 / 12, 1.0 / 6},
                                {0, 0, 1}};
#else
static const float AT[4][6] = {{1, 1, 1, 1, 1, 0},
                               {0, 1, -1, 0.5f, -0.5f, 0},
                               {0, 1, 1, 0.25f, 0.25f, 0},
                               {0, 1, -1, 0.125f, -0.125f, 1}};
static const float BT[6][6] = {{0.25f, 0, -1.25f, 0, 1, 0},   {0, -0.25f, -0.25f, 1, 1, 0},
                               {0, 0.25f, -0.25f, -1, 1, 0},  {0, -0.5f, -1, 0.5f, 1, 0},
                               {0, 0.5f, -1, -0.5f, 1, 0},    {0, 0.25f, 0, -1.25f, 0, 1}};
static const double GD[6][3] = {{4, 0, 0},
                                {2.0 / 3, 2.0 / 3, 2.0 / 3},
                                {2.0 / 3, -2.0 / 3, 2.0 / 3},
                                {-8.0 / 3, -4.0 / 3, -2.0 / 3},
                                {-8.0 / 3, 4.0 / 3, -2.0 / 3},
                                {0, 0, 1}};
#endif

#define LN 8 /* SDB_WINO_LANES: tiles per transform step */
/* Chunk budget: transformed inputs + products of one chunk of tiles (L3-resident on 2-core parts,
 * a few MiB per core elsewhere). */
#define SDB_WINO_CHUNK_BYTES ((size_t)12 << 20)
#define SDB_WINO_TB_MIN 64
#define SDB_WINO_TB_MAX 512
/* Blocks of each ξ's product the grid aims at (x 36 = the sgemm units of a chunk). */
#define SDB_WINO_TASKS 4
#define SDB_WINO_NB_MIN 48
#define SDB_WINO_MB_MIN 32
/* SDB_CONV_AUTO's rule, read from tools/bench_conv.c on SD 1.5's shapes (2-core AVX2 EPYC, same-run
 * medians): Winograd won from 32 output tiles over the batch (U-Net 640 channels at 16x16, batch 2:
 * 1.1x; at 32x32: 1.55-1.75x; VAE 512 channels at 64..128 px: 2.0-2.2x) and lost below (8x8, batch
 * 2: 0.4x, mostly the per-call filter transform) and with few input channels (4 -> 512: 0.1x). */
#define SDB_WINO_AUTO_MIN_TILES 32
#define SDB_WINO_AUTO_MIN_CIN 32
/* ... and output channels (the VAE's 128 -> 3 conv_out at 256 px: 0.76x) */
#define SDB_WINO_AUTO_MIN_COUT 32
/* Below SDB_WINO_AUTO_MIN_TILES, F(2x2, 3x3) (winograd2.c) from this many of its tiles: the U-Net's
 * 1280-channel convs at 8x8, batch 2 (32 tiles). tools/bench_conv.c at 256, 2 threads, AVX2 EPYC:
 * 1280 -> 1280 direct 0.026-0.027 s, F(2x2) 0.022-0.023 s with its filter made in the call
 * (0.013 kept), 2560 -> 1280 0.049-0.053 / 0.043-0.046 / 0.023-0.026 s; at 4x4 (8 tiles) F(2x2)
 * 0.016-0.017 s per call against 0.008 direct, so not there. */
#define SDB_WINO2_AUTO_MIN_TILES 32
/* Filters of any size: the U-Net's 1280-output-channel convs (236..472 MB transformed) run in
 * slabs of output channels (below). Measured in CPU time of one thread (2-core AVX2 EPYC, SD 1.5
 * shapes, batch 2, filter transformed per call): 1280 -> 1280 at 16x16 (32 tiles) 0.110 s against
 * 0.193 s direct, 2560 -> 1280 at 16x16 0.231 s against 0.384 s, 1280 -> 1280 at 32x32 0.296 s
 * against 0.772 s; and at 8x8 (8 tiles) 0.079 s against 0.054 s, below the tile rule above.
 * (An earlier rule kept them direct, from perf samples of a whole step on a loaded machine.) */

/* The thin-product kernel (thin_gemm.h) runs the products of layers with at least this many input
 * channels, OpenBLAS the others. Measured with kept filters (the products alone), one process
 * alternating the two, 1 thread, AVX2 EPYC, medians of 9, thin / OpenBLAS: U-Net 1280 -> 1280 at
 * 16x16 batch 2 0.88, 640 -> 640 0.85, 320 -> 320 at 32x32 1.02; VAE 512 ch at 64 and 128 px 0.98
 * and 1.01, 256 ch at 256 px 1.07, 128 ch 0.95. From 320 (was 640): the U-Net's 320-channel layers
 * then make their filters inside the products (fused_applies), which the thin kernel needs. */
#define SDB_WINO_THIN_MIN_CIN 320

/* Made per call where fused_applies (below): blocks of FB output channels, their filters transformed
 * KCH input channels at a time into the thread's buffer (36 x FB x KCH floats, 216 KiB: L2) right
 * before the 36 products that read them, so the transformed filter never goes through memory
 * (written and read back it took a third of a 640 -> 640 call at 16x16). One 6-row block of the
 * thin kernel per unit: 107 units for 640 channels. Blocks of 12 and 24 were no faster on 2
 * cores (each block reads all of V once, so fewer blocks read less, but the difference was within
 * the noise) and their fewer units took the 64-thread load-balance bound of a 256x256 step from
 * 0.914 to 0.848 (24). */
#define SDB_WINO_FB 6
#define SDB_WINO_KCH 256

/* Transformed filter per slab of output channels when made per call (so the U-Net's 2560 -> 1280
 * convs take 159 MB of scratch, not 472; the input transform is repeated per slab). Smaller slabs
 * cost more than they save in memory: 64 MB slabs took 1280 -> 1280 at 16x16 from 0.110 s to 0.120
 * s and 2560 -> 1280 from 0.231 to 0.270 (16 MB: 0.142 and 0.338), in the measurement above. */
#define SDB_WINO_SLAB_BYTES ((size_t)192 << 20)

static int pad01(int p) { return p == 0 || p == 1; }
int sdb_winograd_applies(const sdb_conv2d *c)
{
    return c->k == 3 && c->stride == 1 && pad01(c->pad_t) && pad01(c->pad_l) && pad01(c->pad_b) &&
           pad01(c->pad_r);
}

size_t sdb_winograd_filter_floats(const sdb_conv2d *c)
{
    return (size_t)SDB_WINO_XI * c->cout * c->cin;
}

/* Input channels transformed together, so that each of the 36 planes of U gets a contiguous run. */
#define SDB_WINO_FILTER_RUN 64

/* u[ξ = 6i + j][l] = (G g Gᵀ)[i][j] for the filters g[tap][l] of LN lanes, in float with G rounded
 * to float: each sum over k in order of the products of G's nonzero entries, every product and sum
 * rounded (a = -0 + p is p exactly, so the first term starts the sum). Built for AVX2 without FMA
 * and for the baseline ISA: no multiply-add can be fused in either, so both give the same bits. In
 * float rather than double (rounded once) since the conversions to and from double took most of
 * its time: within 8u (|G| |g| |G|ᵀ) of the exact value, u = 2⁻²⁴ (tests/test_winograd.c), where
 * the products' rounding alone is ~2e-5 of the outputs. */
AI void filter_xform(float g[9][LN], float u[SDB_WINO_XI][LN])
{
    float t[6][3][LN];
    UNROLL for (int i = 0; i < 6; i++) UNROLL for (int j = 0; j < 3; j++) {
        float a[LN];
        for (int l = 0; l < LN; l++) a[l] = -0.0f;
        UNROLL for (int k = 0; k < 3; k++) {
            if (GD[i][k] == 0) continue;
            const float f = (float)GD[i][k];
            for (int l = 0; l < LN; l++) a[l] += f * g[3 * k + j][l];
        }
        for (int l = 0; l < LN; l++) t[i][j][l] = a[l];
    }
    UNROLL for (int i = 0; i < 6; i++) UNROLL for (int j = 0; j < 6; j++) {
        float a[LN];
        for (int l = 0; l < LN; l++) a[l] = -0.0f;
        UNROLL for (int k = 0; k < 3; k++) {
            if (GD[j][k] == 0) continue;
            const float f = (float)GD[j][k];
            for (int l = 0; l < LN; l++) a[l] += t[i][k][l] * f;
        }
        for (int l = 0; l < LN; l++) u[i * 6 + j][l] = a[l];
    }
}

/* g[k][l] = tap k of the filters (co, ci + l), l < n; zeros in the other lanes */
static void taps_scalar(const sdb_conv2d *c, int co, int ci, int n, float g[9][LN])
{
    const size_t o = ((size_t)co * c->cin + ci) * 9;
    for (int l = 0; l < LN; l++)
        for (int k = 0; k < 9; k++)
            g[k][l] = l >= n ? 0.0f : c->w.f32 ? c->w.f32[o + 9 * l + k] : sdb_f16_to_f32(c->w.f16[o + 9 * l + k]);
}

/* The same for n = LN filters from plain loads and shuffles (taps9.h), f16 with F16C. */
__attribute__((target("avx2,f16c")))
static void taps_avx2(const sdb_conv2d *c, int co, int ci, float g[9][LN])
{
    __m256 v[9];
    sdb_taps9_conv(c, co, ci, v);
    for (int k = 0; k < 9; k++) _mm256_storeu_ps(g[k], v[k]);
}

/* u[ξ·xs + r] for the filters r < nr of the run (co, ci0 .. ci0 + nr - 1) */
AI void filter_run(const sdb_conv2d *c, int co, int ci0, int nr, float *u, size_t xs, int vec)
{
    for (int r = 0; r < nr; r += LN) {
        float g[9][LN], o[SDB_WINO_XI][LN];
        const int n = nr - r < LN ? nr - r : LN;
        if (vec && n == LN) taps_avx2(c, co, ci0 + r, g);
        else taps_scalar(c, co, ci0 + r, n, g);
        filter_xform(g, o);
        if (n == LN)
            for (int k = 0; k < SDB_WINO_XI; k++)
                for (int l = 0; l < LN; l++) u[k * xs + r + l] = o[k][l];
        else
            for (int k = 0; k < SDB_WINO_XI; k++)
                for (int l = 0; l < n; l++) u[k * xs + r + l] = o[k][l];
    }
}

__attribute__((target("avx2,f16c")))
static void filter_run_avx2(const sdb_conv2d *c, int co, int ci0, int nr, float *u, size_t xs)
{
    filter_run(c, co, ci0, nr, u, xs, 1);
}
static void filter_run_base(const sdb_conv2d *c, int co, int ci0, int nr, float *u, size_t xs)
{
    filter_run(c, co, ci0, nr, u, xs, 0);
}
static void filter_run_isa(const sdb_conv2d *c, int co, int ci0, int nr, float *u, size_t xs, int avx2)
{
    if (avx2) filter_run_avx2(c, co, ci0, nr, u, xs);
    else filter_run_base(c, co, ci0, nr, u, xs);
}

/* The 36 rows of a run into U with non-temporal stores (dst and the row stride 32-byte aligned, nr a
 * multiple of 8): U is far larger than any cache and read only later, by the GEMMs, so writing
 * around the caches saves reading each line in before it is overwritten. */
__attribute__((target("avx2")))
static void stream_rows(float *dst, size_t xs, float u[SDB_WINO_XI][SDB_WINO_FILTER_RUN], int nr)
{
    for (int k = 0; k < SDB_WINO_XI; k++)
        for (int r = 0; r < nr; r += 8) _mm256_stream_ps(dst + (size_t)k * xs + r, _mm256_loadu_ps(&u[k][r]));
}

/* U[ξ][co - co0][ci] (ξ stride (co1 - co0)·cin) for the output channels co0 <= co < co1. */
static void filter_range(const sdb_conv2d *c, int co0, int co1, float *U)
{
    const int cin = c->cin;
    const size_t xs = (size_t)(co1 - co0) * cin;
    const int runs = (cin + SDB_WINO_FILTER_RUN - 1) / SDB_WINO_FILTER_RUN;
    const int avx2 = sdb_taps9_usable(c);
#pragma omp parallel for schedule(static)
    for (long task = 0; task < (long)(co1 - co0) * runs; task++) {
        const int co = co0 + (int)(task / runs), ci0 = (int)(task % runs) * SDB_WINO_FILTER_RUN;
        const int nr = cin - ci0 < SDB_WINO_FILTER_RUN ? cin - ci0 : SDB_WINO_FILTER_RUN;
        float u[SDB_WINO_XI][SDB_WINO_FILTER_RUN];
        filter_run_isa(c, co, ci0, nr, &u[0][0], SDB_WINO_FILTER_RUN, avx2);
        float *dst = U + (size_t)(co - co0) * cin + ci0;
        if (avx2 && nr % 8 == 0 && ((uintptr_t)dst | xs * sizeof(float)) % 32 == 0) stream_rows(dst, xs, u, nr);
        else for (int k = 0; k < SDB_WINO_XI; k++) memcpy(dst + (size_t)k * xs, u[k], sizeof(float) * nr);
    }
    if (avx2) _mm_sfence();
}

void sdb_winograd_filter(const sdb_conv2d *c, float *U) { filter_range(c, 0, c->cout, U); }

/* Output channels per slab when the filter is transformed per call: all of them, or (a multiple of
 * 16) as many as keep the slab's transformed filter within SDB_WINO_SLAB_BYTES. */
static int slab_channels(const sdb_conv2d *c)
{
    const size_t per = (size_t)SDB_WINO_XI * c->cin * sizeof(float);
    if (per * c->cout <= SDB_WINO_SLAB_BYTES) return c->cout;
    const int nslab = (int)((per * c->cout + SDB_WINO_SLAB_BYTES - 1) / SDB_WINO_SLAB_BYTES);
    int cs = (c->cout + nslab - 1) / nslab;
    cs = (cs + 15) / 16 * 16;
    return cs < c->cout ? cs : c->cout;
}

/* The shapes of one call: images, tiles, chunk capacity. */
typedef struct {
    int cin, cout, H, W; /* cout: the channels of this slab */
    int ctot, cbase;     /* all output channels; the slab's first (set by the caller) */
    int Ho, Wo;        /* output size */
    int pt, pl;        /* top and left padding */
    int tx, ty;        /* tiles per row, per column of one image */
    long T;            /* tiles over all images */
    int tb;            /* chunk capacity (tiles), the row stride of V and M */
    int mb, nb;        /* task block: output channels x tiles */
    int pm, pn;        /* task grid of a full chunk */
    int fused;         /* the filter made per block in the products (fused_applies): V as the thin
                        * kernel's panels [ξ][tb/16][cin][16], else [ξ][cin][tb] */
} wplan;

static int round_up(int v, int m) { return (v + m - 1) / m * m; }

/* The shapes of a call over `cout` output channels (a slab's, or all). */
static void plan_of(const sdb_conv2d *c, int cout, int N, int H, int W, wplan *p)
{
    p->cin = c->cin;
    p->cout = cout;
    p->H = H;
    p->W = W;
    sdb_conv2d_out_size(c, H, W, &p->Ho, &p->Wo);
    p->pt = c->pad_t;
    p->pl = c->pad_l;
    p->tx = (p->Wo + SDB_WINO_TILE - 1) / SDB_WINO_TILE;
    p->ty = (p->Ho + SDB_WINO_TILE - 1) / SDB_WINO_TILE;
    p->T = (long)N * p->tx * p->ty;
    long tb = (long)(SDB_WINO_CHUNK_BYTES / ((size_t)SDB_WINO_XI * sizeof(float) * (size_t)(c->cin + cout)));
    tb = tb / LN * LN;
    if (tb < SDB_WINO_TB_MIN) tb = SDB_WINO_TB_MIN;
    if (tb > SDB_WINO_TB_MAX) tb = SDB_WINO_TB_MAX;
    long nchunks = (p->T + tb - 1) / tb;
    p->tb = round_up((int)((p->T + nchunks - 1) / nchunks), LN); /* balanced chunks */
    int pm = 1, pn = 1;
    while (pm * pn < SDB_WINO_TASKS) {
        if (p->tb / (2 * pn) >= SDB_WINO_NB_MIN) pn *= 2;
        else if (cout / (2 * pm) >= SDB_WINO_MB_MIN) pm *= 2;
        else break;
    }
    p->mb = round_up((cout + pm - 1) / pm, 16);
    if (p->mb > cout) p->mb = cout;
    p->nb = round_up((p->tb + pn - 1) / pn, LN);
    p->pm = (cout + p->mb - 1) / p->mb;
    p->pn = (p->tb + p->nb - 1) / p->nb;
    p->fused = 0; /* the caller's to set */
}

/* ---- transforms on LN tiles (lane l = tile l) ------------------------------------------------ */

/* out[ξ = 6i + j][l] = (Bᵀ d B)[i][j] */
AI void input_xform(float d[6][6][LN], float out[36][LN])
{
    float t[6][6][LN];
    UNROLL for (int i = 0; i < 6; i++) UNROLL for (int j = 0; j < 6; j++) {
        float a[LN];
        for (int l = 0; l < LN; l++) a[l] = -0.0f;
        UNROLL for (int k = 0; k < 6; k++) {
            if (BT[i][k] == 0.0f) continue;
            for (int l = 0; l < LN; l++) a[l] += BT[i][k] * d[k][j][l];
        }
        for (int l = 0; l < LN; l++) t[i][j][l] = a[l];
    }
    UNROLL for (int i = 0; i < 6; i++) UNROLL for (int j = 0; j < 6; j++) {
        float a[LN];
        for (int l = 0; l < LN; l++) a[l] = -0.0f;
        UNROLL for (int k = 0; k < 6; k++) {
            if (BT[j][k] == 0.0f) continue;
            for (int l = 0; l < LN; l++) a[l] += t[i][k][l] * BT[j][k];
        }
        for (int l = 0; l < LN; l++) out[i * 6 + j][l] = a[l];
    }
}

/* o[i][j][l] = (Aᵀ m A)[i][j] */
AI void output_xform(float m[36][LN], float o[4][4][LN])
{
    float t[4][6][LN];
    UNROLL for (int i = 0; i < 4; i++) UNROLL for (int j = 0; j < 6; j++) {
        float a[LN];
        for (int l = 0; l < LN; l++) a[l] = -0.0f;
        UNROLL for (int k = 0; k < 6; k++) {
            if (AT[i][k] == 0.0f) continue;
            for (int l = 0; l < LN; l++) a[l] += AT[i][k] * m[k * 6 + j][l];
        }
        for (int l = 0; l < LN; l++) t[i][j][l] = a[l];
    }
    UNROLL for (int i = 0; i < 4; i++) UNROLL for (int j = 0; j < 4; j++) {
        float a[LN];
        for (int l = 0; l < LN; l++) a[l] = -0.0f;
        UNROLL for (int k = 0; k < 6; k++) {
            if (AT[j][k] == 0.0f) continue;
            for (int l = 0; l < LN; l++) a[l] += t[i][k][l] * AT[j][k];
        }
        for (int l = 0; l < LN; l++) o[i][j][l] = a[l];
    }
}

/* V[ξ][ci][t] (ξ stride xs, t < nt) for the tiles t0.. of input channel ci, in the plan's layout;
 * x: the whole batch. */
AI void input_channel(const wplan *p, const float *x, int ci, long t0, int nt, float *V, size_t xs)
{
    const int H = p->H, W = p->W, tpi = p->tx * p->ty;
    const size_t img = (size_t)p->cin * H * W;
    const int P = SDB_THIN_GEMM_PANEL;
    /* panels: the zero columns up to the panel's end too (the lanes past nl transform zeros) */
    const int tend = p->fused ? (nt + P - 1) / P * P : nt;
    for (int t = 0; t < tend; t += LN) {
        float d[6][6][LN], o[36][LN];
        const int nl = nt - t < LN ? (nt - t > 0 ? nt - t : 0) : LN;
        const int nw = p->fused ? LN : nl; /* lanes written */
        float *v = p->fused ? V + (size_t)(t / P) * p->cin * P + (size_t)ci * P + t % P
                            : V + (size_t)ci * p->tb + t;
        for (int l = 0; l < LN; l++) {
            if (l >= nl) {
                for (int i = 0; i < 6; i++)
                    for (int j = 0; j < 6; j++) d[i][j][l] = 0.0f;
                continue;
            }
            long g = t0 + t + l;
            int n = (int)(g / tpi), r = (int)(g % tpi);
            int y0 = r / p->tx * SDB_WINO_TILE - p->pt, x0 = r % p->tx * SDB_WINO_TILE - p->pl;
            const float *xc = x + (size_t)n * img + (size_t)ci * H * W;
            if (y0 >= 0 && x0 >= 0 && y0 + 6 <= H && x0 + 6 <= W) {
                for (int i = 0; i < 6; i++) {
                    const float *row = xc + (size_t)(y0 + i) * W + x0;
                    for (int j = 0; j < 6; j++) d[i][j][l] = row[j];
                }
            } else {
                for (int i = 0; i < 6; i++) {
                    int iy = y0 + i;
                    for (int j = 0; j < 6; j++) {
                        int ix = x0 + j;
                        d[i][j][l] = iy >= 0 && iy < H && ix >= 0 && ix < W ? xc[(size_t)iy * W + ix] : 0.0f;
                    }
                }
            }
        }
        input_xform(d, o);
        for (int k = 0; k < 36; k++)
            for (int l = 0; l < nw; l++) v[(size_t)k * xs + l] = o[k][l];
    }
}

/* Output transform of the products M[ξ][co][t - t0] (ξ stride xs) for channels co0..co1-1 and the
 * chunk's tiles tb0..tb1-1 (relative to t0): y = (residual + bias) + Aᵀ M A, the bias bias_n
 * [N, cout] when given, else bias [cout] (or none). */
AI void output_block(const wplan *p, const float *M, size_t xs, long t0, int co0, int co1, int tb0,
                     int tb1, const float *bias, const float *bias_n, const float *res, float *y)
{
    const int H = p->Ho, W = p->Wo, tpi = p->tx * p->ty;
    const size_t img = (size_t)p->ctot * H * W;
    for (int co = co0; co < co1; co++) {
        const float *mc = M + (size_t)(co - p->cbase) * p->tb;
        const float b0 = bias ? bias[co] : 0.0f;
        for (int t = tb0; t < tb1; t += LN) {
            float m[36][LN], o[4][4][LN];
            const int nl = tb1 - t < LN ? tb1 - t : LN;
            for (int k = 0; k < 36; k++)
                for (int l = 0; l < LN; l++) m[k][l] = l < nl ? mc[(size_t)k * xs + t + l] : 0.0f;
            output_xform(m, o);
            for (int l = 0; l < nl; l++) {
                long g = t0 + t + l;
                int n = (int)(g / tpi), r = (int)(g % tpi);
                int y0 = r / p->tx * SDB_WINO_TILE, x0 = r % p->tx * SDB_WINO_TILE;
                int hi = H - y0 < SDB_WINO_TILE ? H - y0 : SDB_WINO_TILE;
                int wi = W - x0 < SDB_WINO_TILE ? W - x0 : SDB_WINO_TILE;
                size_t base = (size_t)n * img + (size_t)co * H * W + (size_t)y0 * W + x0;
                const float b = bias_n ? bias_n[(size_t)n * p->ctot + co] : b0;
                for (int i = 0; i < hi; i++)
                    for (int j = 0; j < wi; j++) {
                        size_t at = base + (size_t)i * W + j;
                        y[at] = ((res ? res[at] : 0.0f) + b) + o[i][j][l];
                    }
            }
        }
    }
}

__attribute__((target("avx2,fma")))
static void input_channel_avx2(const wplan *p, const float *x, int ci, long t0, int nt, float *V, size_t xs)
{
    input_channel(p, x, ci, t0, nt, V, xs);
}
static void input_channel_base(const wplan *p, const float *x, int ci, long t0, int nt, float *V, size_t xs)
{
    input_channel(p, x, ci, t0, nt, V, xs);
}
__attribute__((target("avx2,fma")))
static void output_block_avx2(const wplan *p, const float *M, size_t xs, long t0, int co0, int co1,
                              int tb0, int tb1, const float *bias, const float *bias_n, const float *res,
                              float *y)
{
    output_block(p, M, xs, t0, co0, co1, tb0, tb1, bias, bias_n, res, y);
}
static void output_block_base(const wplan *p, const float *M, size_t xs, long t0, int co0, int co1,
                              int tb0, int tb1, const float *bias, const float *bias_n, const float *res,
                              float *y)
{
    output_block(p, M, xs, t0, co0, co1, tb0, tb1, bias, bias_n, res, y);
}

/* Whether a call without a kept filter makes it inside the products (see the top of the file):
 * where the thin kernel runs them and the tiles are at most two chunks (each chunk transforms the
 * filter again: 6 ns a filter against writing 144 bytes and reading them back; 2 threads, U-Net
 * shapes at 32x32, batch 2, per call: 320 -> 320 8.4 ms against 10.2 through the scratch, 640 ->
 * 320 16.8 against 21.2, 640 -> 640 (two chunks) 30.9 against 36.2). The kept filter's products are
 * the same kernel over the same chains as long as its grid's tile blocks are all the thin
 * kernel's (at most SDB_THIN_GEMM_MAX_N tiles), so the bits agree. */
static int fused_applies(const sdb_conv2d *c, const wplan *p)
{
    return sdb_thin_gemm_preferred() && c->cin >= SDB_WINO_THIN_MIN_CIN && p->T <= 2L * p->tb &&
           p->nb <= SDB_THIN_GEMM_MAX_N;
}

/* Ub[i][ξ][ci - ci0] for the output channels co0 .. co0+mm-1 and input channels ci0 .. ci0+kc-1:
 * filter_range's values, into a thread's buffer. ξ's matrix is Ub + ξ·kc with rows 36·kc apart:
 * one channel's 36 rows lie together, so the transform's stores stay within 9 KiB (with the rows
 * of each ξ together, its 36 stores went to 36 lines far apart and took 40% of its time). */
static void filter_block(const sdb_conv2d *c, int co0, int mm, int ci0, int kc, float *Ub, int avx2)
{
    for (int i = 0; i < mm; i++) {
        sdb_prefetch_next_filters(c, co0 + i, co0, co0 + mm, ci0, kc);
        filter_run_isa(c, co0 + i, ci0, kc, Ub + (size_t)i * SDB_WINO_XI * kc, kc, avx2);
    }
}

int sdb_winograd_forward(const sdb_conv2d *c, const float *U, const float *x, int N, int H, int W,
                         float *y, const float *residual, const float *bias_n, sdb_arena *scratch)
{
    if (!sdb_winograd_applies(c) || N <= 0 || H <= 0 || W <= 0) return SDB_EINVAL;
    if (!c->w.f32 && !c->w.f16) return SDB_EINVAL;
    /* output channels in slabs of cs (from the shape only, whether U is passed or not: the same
     * products either way): the transformed filter made per slab when not passed (bounded scratch) */
    const int cs = slab_channels(c);
    wplan p;
    plan_of(c, cs, N, H, W, &p);
    if (p.Ho <= 0 || p.Wo <= 0) return SDB_EINVAL;
    p.ctot = c->cout;
    p.fused = !U && fused_applies(c, &p);
    const int avx2 = sdb_vexp_have_avx2();
    const int favx2 = sdb_taps9_usable(c);
    const size_t mark = sdb_arena_mark(scratch);
    float *Us = U || p.fused ? NULL : sdb_arena_floats(scratch, (size_t)SDB_WINO_XI * cs * c->cin);
    const size_t xsV = p.fused ? sdb_thin_gemm_panels_floats(p.tb, p.cin) : (size_t)p.cin * p.tb;
    const size_t xsM = (size_t)cs * p.tb;
    float *V = sdb_arena_floats(scratch, SDB_WINO_XI * xsV);
    float *M = sdb_arena_floats(scratch, SDB_WINO_XI * xsM);
    /* the thin-product kernel's packing buffers, one per thread, where it runs the GEMMs on V's rows;
     * fused, the threads' filter buffers instead */
    const size_t packsz = p.fused ? (size_t)SDB_WINO_XI * SDB_WINO_FB * SDB_WINO_KCH
                          : sdb_thin_gemm_preferred() && c->cin >= SDB_WINO_THIN_MIN_CIN ? sdb_thin_gemm_pack_floats() : 0;
    float *packs = packsz ? sdb_arena_floats(scratch, (size_t)omp_get_max_threads() * packsz) : NULL;
    if ((!U && !p.fused && !Us) || !V || !M || (packsz && !packs)) {
        sdb_arena_reset(scratch, mark);
        return SDB_ENOMEM;
    }
    const int cin = p.cin;
    for (int cb = 0; cb < c->cout; cb += cs) {
        const int cout = c->cout - cb < cs ? c->cout - cb : cs; /* this slab's channels */
        const float *Ub = U ? U + (size_t)cb * cin : Us;
        const size_t xsU = U ? (size_t)c->cout * cin : (size_t)cout * cin;
        if (Us) filter_range(c, cb, cb + cout, Us);
        p.cbase = cb;
        const int pm = (cout + p.mb - 1) / p.mb;
#pragma omp parallel
        for (long t0 = 0; t0 < p.T; t0 += p.tb) {
            const int nt = p.T - t0 < p.tb ? (int)(p.T - t0) : p.tb;
#pragma omp for schedule(static)
            for (int ci = 0; ci < cin; ci++) {
                if (avx2) input_channel_avx2(&p, x, ci, t0, nt, V, xsV);
                else input_channel_base(&p, x, ci, t0, nt, V, xsV);
            }
            /* implicit barrier: V complete */
            if (p.fused) { /* units: blocks of FB output channels, their filters made chunk by chunk */
                float *Ut = packs + (size_t)omp_get_thread_num() * packsz;
                const int P = SDB_THIN_GEMM_PANEL, nblk = (cout + SDB_WINO_FB - 1) / SDB_WINO_FB;
#pragma omp for schedule(dynamic, 1)
                for (int b = 0; b < nblk; b++) {
                    const int co0 = b * SDB_WINO_FB, mm = cout - co0 < SDB_WINO_FB ? cout - co0 : SDB_WINO_FB;
                    for (int ci0 = 0; ci0 < cin; ci0 += SDB_WINO_KCH) {
                        const int kc = cin - ci0 < SDB_WINO_KCH ? cin - ci0 : SDB_WINO_KCH;
                        filter_block(c, cb + co0, mm, ci0, kc, Ut, favx2);
                        for (int k = 0; k < SDB_WINO_XI; k++) {
                            const int rc = sdb_thin_gemm_panels(mm, nt, kc, Ut + (size_t)k * kc, SDB_WINO_XI * kc,
                                                                V + k * xsV + (size_t)ci0 * P, (size_t)cin * P,
                                                                ci0 > 0 ? 1.0f : 0.0f, M + k * xsM + (size_t)co0 * p.tb, p.tb);
                            assert(rc == 0);
                            (void)rc;
                        }
                    }
                }
            } else { /* units: (ξ, block of output channels, block of tiles) of the whole filter */
                const int pn = (nt + p.nb - 1) / p.nb, ntask = SDB_WINO_XI * pm * pn;
#pragma omp for schedule(dynamic, 1)
                for (int task = 0; task < ntask; task++) {
                    const int k = task % SDB_WINO_XI, blk = task / SDB_WINO_XI;
                    const int im = blk % pm, jn = blk / pm;
                    const int co0 = im * p.mb, mm = cout - co0 < p.mb ? cout - co0 : p.mb;
                    const int tb0 = jn * p.nb, nn = nt - tb0 < p.nb ? nt - tb0 : p.nb;
                    assert(mm > 0 && nn > 0);
                    const float *Uk = Ub + k * xsU + (size_t)co0 * cin, *Vk = V + k * xsV + tb0;
                    float *Mk = M + k * xsM + (size_t)co0 * p.tb + tb0;
                    if (!packs || nn > SDB_THIN_GEMM_MAX_N ||
                        sdb_thin_gemm(mm, nn, cin, Uk, cin, Vk, p.tb, 0.0f, Mk, p.tb,
                                      packs + (size_t)omp_get_thread_num() * packsz))
                        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, mm, nn, cin, 1.0f, Uk, cin, Vk,
                                    p.tb, 0.0f, Mk, p.tb);
                }
            }
            /* implicit barrier: M complete */
#pragma omp for schedule(static)
            for (int co = cb; co < cb + cout; co++) {
                if (avx2) output_block_avx2(&p, M, xsM, t0, co, co + 1, 0, nt, c->b, bias_n, residual, y);
                else output_block_base(&p, M, xsM, t0, co, co + 1, 0, nt, c->b, bias_n, residual, y);
            }
            /* implicit barrier: V and M may be overwritten by the next chunk */
        }
    }
    sdb_arena_reset(scratch, mark);
    return 0;
}

/* FLOPs of one transform as written (the nonzero entries of Bᵀ, Aᵀ and G, two passes each):
 * estimates for the load-balance record only. */
#define SDB_WINO_IN_FLOP 300.0   /* one 6x6 input tile */
#define SDB_WINO_OUT_FLOP 320.0  /* one 4x4 output tile */
#define SDB_WINO_FILT_FLOP 324.0 /* one 3x3 filter */

void sdb_winograd_plan(const sdb_conv2d *c, int N, int H, int W, sdb_par_rec *rec)
{
    if (!sdb_winograd_applies(c) || N <= 0 || H <= 0 || W <= 0) return;
    const int cs = slab_channels(c);
    wplan p;
    plan_of(c, cs, N, H, W, &p);
    if (p.Ho <= 0 || p.Wo <= 0) return;
    sdb_par_op_begin(rec, SDB_PAR_GEMM, "conv 3x3/1 %d->%d %dx%d x%d winograd", c->cin, c->cout, H, W, N);
    if (fused_applies(c, &p)) { /* as made per call: per slab and chunk, the input loop, the blocks, the output loop */
        const int nblk = (cs + SDB_WINO_FB - 1) / SDB_WINO_FB;
        double *bc = malloc(sizeof(double) * (size_t)nblk);
        if (!bc) { rec->failed = 1; return; }
        for (int cb = 0; cb < c->cout; cb += cs)
            for (long t0 = 0; t0 < p.T; t0 += p.tb) {
                const int cout = c->cout - cb < cs ? c->cout - cb : cs, nb = (cout + SDB_WINO_FB - 1) / SDB_WINO_FB;
                const int nt = p.T - t0 < p.tb ? (int)(p.T - t0) : p.tb;
                sdb_par_loop_add(rec, SDB_PAR_STATIC, p.cin, NULL, SDB_WINO_IN_FLOP * nt, 0, 1);
                for (int b = 0; b < nb; b++) {
                    const int mm = cout - b * SDB_WINO_FB < SDB_WINO_FB ? cout - b * SDB_WINO_FB : SDB_WINO_FB;
                    bc[b] = mm * (SDB_WINO_FILT_FLOP * p.cin + 2.0 * SDB_WINO_XI * p.cin * nt);
                }
                sdb_par_loop_add(rec, SDB_PAR_DYNAMIC, nb, bc, 0, 0, 1);
                sdb_par_loop_add(rec, SDB_PAR_STATIC, cout, NULL, SDB_WINO_OUT_FLOP * nt, 0, 1);
            }
        free(bc);
        return;
    }
    const int runs = (c->cin + SDB_WINO_FILTER_RUN - 1) / SDB_WINO_FILTER_RUN;
    double *cost = malloc(sizeof(double) * (size_t)SDB_WINO_XI * p.pm * p.pn);
    if (!cost) { rec->failed = 1; return; }
    for (int cb = 0; cb < c->cout; cb += cs) {
        const int cout = c->cout - cb < cs ? c->cout - cb : cs, pm = (cout + p.mb - 1) / p.mb;
        sdb_par_loop_add(rec, SDB_PAR_STATIC, (long)cout * runs, NULL,
                         SDB_WINO_FILT_FLOP * (c->cin < SDB_WINO_FILTER_RUN ? c->cin : SDB_WINO_FILTER_RUN), 0, 1);
        for (long t0 = 0; t0 < p.T; t0 += p.tb) {
            const int nt = p.T - t0 < p.tb ? (int)(p.T - t0) : p.tb;
            sdb_par_loop_add(rec, SDB_PAR_STATIC, p.cin, NULL, SDB_WINO_IN_FLOP * nt, 0, 1);
            const int pn = (nt + p.nb - 1) / p.nb, ntask = SDB_WINO_XI * pm * pn;
            for (int task = 0; task < ntask; task++) {
                const int blk = task / SDB_WINO_XI, im = blk % pm, jn = blk / pm;
                const int mm = cout - im * p.mb < p.mb ? cout - im * p.mb : p.mb;
                const int nn = nt - jn * p.nb < p.nb ? nt - jn * p.nb : p.nb;
                cost[task] = 2.0 * p.cin * mm * nn;
            }
            sdb_par_loop_add(rec, SDB_PAR_DYNAMIC, ntask, cost, 0, 0, 1);
            sdb_par_loop_add(rec, SDB_PAR_STATIC, cout, NULL, SDB_WINO_OUT_FLOP * nt, 0, 1);
        }
    }
    free(cost);
}

void sdb_conv2d_plan_algo(const sdb_conv2d *c, int algo, int N, int H, int W, sdb_par_rec *rec)
{
    const int path = sdb_conv_path(c, algo, N, H, W);
    if (path == SDB_CONV_PATH_WINO4) sdb_winograd_plan(c, N, H, W, rec);
    else if (path == SDB_CONV_PATH_WINO2) sdb_winograd2_plan(c, N, H, W, rec);
    else sdb_conv2d_plan(c, N, H, W, rec);
}

/* ---- the dispatch ------------------------------------------------------------------------------ */

int sdb_conv_algo_of(const char *name)
{
    if (!name) return -1;
    if (!strcmp(name, "auto")) return SDB_CONV_AUTO;
    if (!strcmp(name, "direct")) return SDB_CONV_DIRECT;
    if (!strcmp(name, "winograd")) return SDB_CONV_WINOGRAD;
    return -1;
}

const char *sdb_conv_algo_name(int algo)
{
    return algo == SDB_CONV_DIRECT ? "direct" : algo == SDB_CONV_WINOGRAD ? "winograd" : "auto";
}

int sdb_conv_path(const sdb_conv2d *c, int algo, int N, int H, int W)
{
    if (algo == SDB_CONV_DIRECT || !sdb_winograd_applies(c)) return SDB_CONV_PATH_DIRECT;
    if (algo == SDB_CONV_WINOGRAD) return SDB_CONV_PATH_WINO4;
    int Ho, Wo;
    sdb_conv2d_out_size(c, H, W, &Ho, &Wo);
    if (c->cin < SDB_WINO_AUTO_MIN_CIN || c->cout < SDB_WINO_AUTO_MIN_COUT || Ho <= 0 || Wo <= 0)
        return SDB_CONV_PATH_DIRECT;
    const long tiles4 = (long)N * ((Ho + SDB_WINO_TILE - 1) / SDB_WINO_TILE) * ((Wo + SDB_WINO_TILE - 1) / SDB_WINO_TILE);
    if (tiles4 >= SDB_WINO_AUTO_MIN_TILES) return SDB_CONV_PATH_WINO4;
    const long tiles2 = (long)N * ((Ho + 1) / 2) * ((Wo + 1) / 2);
    if (tiles2 >= SDB_WINO2_AUTO_MIN_TILES && tiles2 <= SDB_WINO2_MAX_TILES) return SDB_CONV_PATH_WINO2;
    return SDB_CONV_PATH_DIRECT;
}

int sdb_conv_uses_winograd(const sdb_conv2d *c, int algo, int N, int H, int W)
{
    return sdb_conv_path(c, algo, N, H, W) != SDB_CONV_PATH_DIRECT;
}

size_t sdb_conv_path_filter_floats(const sdb_conv2d *c, int path)
{
    return path == SDB_CONV_PATH_WINO4 ? sdb_winograd_filter_floats(c)
           : path == SDB_CONV_PATH_WINO2 ? sdb_winograd2_filter_floats(c) : 0;
}

void sdb_conv_path_filter(const sdb_conv2d *c, int path, float *U)
{
    if (path == SDB_CONV_PATH_WINO4) sdb_winograd_filter(c, U);
    else if (path == SDB_CONV_PATH_WINO2) sdb_winograd2_filter(c, U);
}

/* c's kept filter when it holds the transform of `path`, else NULL (made per call) */
static const float *kept_filter(const sdb_conv2d *c, int path)
{
    const int tile = c->U_tile ? c->U_tile : SDB_CONV_PATH_WINO4;
    return c->U && tile == path ? c->U : NULL;
}

int sdb_conv2d_forward_algo(const sdb_conv2d *c, int algo, const float *x, int N, int H, int W, float *y,
                            const float *residual, const float *bias_n, sdb_arena *scratch)
{
    const int path = sdb_conv_path(c, algo, N, H, W);
    if (path == SDB_CONV_PATH_WINO4)
        return sdb_winograd_forward(c, kept_filter(c, path), x, N, H, W, y, residual, bias_n, scratch);
    if (path == SDB_CONV_PATH_WINO2)
        return sdb_winograd2_forward(c, kept_filter(c, path), x, N, H, W, y, residual, bias_n, scratch);
    return sdb_conv2d_forward_bias(c, x, N, H, W, y, residual, bias_n, scratch);
}
