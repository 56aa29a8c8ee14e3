/*
 * winograd2.c — F(2x2, 3x3) Winograd convolution for small images (see winograd.h): the U-Net's
 * 1280-channel convolutions at 8x8 latents and below, where F(4x4, 3x3) has too few output tiles
 * (8 per filter at 8x8, batch 2) for its 36 products to run well, and the direct product does 2.25x
 * the multiply-adds. Owns its transforms, its task grid and its per-call filter slabs.
 *
 * Transform matrices (interpolation points 0, 1, -1, ∞; every entry 0, ±1 or ±1/2, so the input
 * and output transforms are exact sums and differences, and the filter transform, run in double,
 * is rounded once):
 *   Bᵀ = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]   G = [1 0 0; ½ ½ ½; ½ -½ ½; 0 0 1]
 *   Aᵀ = [1 1 1 0; 0 1 -1 -1]
 * A 4x4 input tile d becomes V = Bᵀ d B, a filter g becomes U = G g Gᵀ (16 values each); for each
 * of the 16 positions ξ the products over the input channels are one GEMM
 * M[ξ][cout, tiles] = U[ξ][cout, cin] · V[ξ][cin, tiles]; a tile's 2x2 output is Aᵀ M A: 16
 * multiply-adds per 2x2 output tile and channel pair instead of 36.
 *
 * Work: all tiles of all images at once (callers use it on small images: sdb_conv_path caps the
 * tiles), in one parallel region: the input transform (over input channels), then per slab of
 * output channels the filter transform when no kept filter is passed (over output channels), a
 * fixed grid of 16 x WINO2_MBLOCKS single-threaded GEMMs (thin_gemm.h where the CPU prefers it,
 * else OpenBLAS), and the output transform (+ bias, + residual; over output channels). Every value
 * is computed by one unit in an order fixed by the shapes: results are identical for any thread
 * count, and with or without a kept filter.
 */
#include "sdb/ops/winograd.h"
#include "sdb/error.h"
#include "sdb/fp16.h"
#include "sdb/ops/thin_gemm.h"
#include "vexp.h"

#include <assert.h>
#include <cblas.h>
#include <immintrin.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#define XI SDB_WINO2_XI
/* Output channel blocks per ξ (x 16 = the GEMM units: enough for 64 threads), of at least 16. */
#define WINO2_MBLOCKS 4
/* Per-call transformed filter at most this per slab of output channels (as F(4x4, 3x3)'s). */
#define WINO2_SLAB_BYTES ((size_t)192 << 20)

size_t sdb_winograd2_filter_floats(const sdb_conv2d *c) { return (size_t)XI * c->cout * c->cin; }

static double tap(const sdb_conv2d *c, size_t i)
{
    return c->w.f32 ? (double)c->w.f32[i] : (double)sdb_f16_to_f32(c->w.f16[i]);
}

static const double G2[4][3] = {{1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, -0.5, 0.5}, {0, 0, 1}};

/* U[ξ][co - co0][ci] (ξ stride xs) for the filters ci0 <= ci < ci1 of output channel co: G g Gᵀ in
 * double, every product and sum rounded in the order written (G's zero and unit entries
 * included), then rounded once to float. */
static void filter_scalar(const sdb_conv2d *c, int co, int co0, int ci0, int ci1, float *U, size_t xs)
{
    for (int ci = ci0; ci < ci1; ci++) {
        const size_t o = ((size_t)co * c->cin + ci) * 9;
        double g[3][3], t[4][3];
        for (int i = 0; i < 9; i++) g[i / 3][i % 3] = tap(c, o + i);
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 3; j++) t[i][j] = G2[i][0] * g[0][j] + G2[i][1] * g[1][j] + G2[i][2] * g[2][j];
        float *u = U + (size_t)(co - co0) * c->cin + ci;
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 4; j++)
                u[(size_t)(4 * i + j) * xs] = (float)(t[i][0] * G2[j][0] + t[i][1] * G2[j][1] + t[i][2] * G2[j][2]);
    }
}

/* The same for 4 filters at a time (one per double lane): the same operations in the same order,
 * so bit-identical to filter_scalar. AVX2 without FMA on purpose: no multiply-add may be fused.
 * Returns the filters done (a multiple of 4 from ci0). */
__attribute__((target("avx2")))
static int filter_avx2(const sdb_conv2d *c, int co, int co0, int ci0, int ci1, float *U, size_t xs)
{
    int ci = ci0;
    for (; ci + 4 <= ci1; ci += 4) {
        const size_t o = ((size_t)co * c->cin + ci) * 9;
        __m256d g[3][3], t[4][3];
        for (int k = 0; k < 9; k++)
            g[k / 3][k % 3] = _mm256_set_pd(tap(c, o + 27 + k), tap(c, o + 18 + k), tap(c, o + 9 + k), tap(c, o + k));
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 3; j++) {
                const __m256d a = _mm256_mul_pd(_mm256_set1_pd(G2[i][0]), g[0][j]);
                const __m256d b = _mm256_mul_pd(_mm256_set1_pd(G2[i][1]), g[1][j]);
                const __m256d d = _mm256_mul_pd(_mm256_set1_pd(G2[i][2]), g[2][j]);
                t[i][j] = _mm256_add_pd(_mm256_add_pd(a, b), d);
            }
        float *u = U + (size_t)(co - co0) * c->cin + ci;
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 4; j++) {
                const __m256d a = _mm256_mul_pd(t[i][0], _mm256_set1_pd(G2[j][0]));
                const __m256d b = _mm256_mul_pd(t[i][1], _mm256_set1_pd(G2[j][1]));
                const __m256d d = _mm256_mul_pd(t[i][2], _mm256_set1_pd(G2[j][2]));
                _mm_storeu_ps(u + (size_t)(4 * i + j) * xs, _mm256_cvtpd_ps(_mm256_add_pd(_mm256_add_pd(a, b), d)));
            }
    }
    return ci - ci0;
}

/* U[ξ][co - co0][ci] (ξ stride xs) for every input channel of output channel co */
static void filter_one(const sdb_conv2d *c, int co, int co0, float *U, size_t xs, int avx2)
{
    const int done = avx2 ? filter_avx2(c, co, co0, 0, c->cin, U, xs) : 0;
    filter_scalar(c, co, co0, done, c->cin, U, xs);
}

void sdb_winograd2_filter(const sdb_conv2d *c, float *U)
{
    const size_t xs = (size_t)c->cout * c->cin;
    const int avx2 = sdb_vexp_have_avx2();
#pragma omp parallel for schedule(static)
    for (int co = 0; co < c->cout; co++) filter_one(c, co, 0, U, xs, avx2);
}

/* Output channels per slab when the filter is made per call (a multiple of 16, or all). */
static int slab_channels(const sdb_conv2d *c)
{
    const size_t per = (size_t)XI * c->cin * sizeof(float);
    if (per * c->cout <= WINO2_SLAB_BYTES) return c->cout;
    const int nslab = (int)((per * c->cout + WINO2_SLAB_BYTES - 1) / WINO2_SLAB_BYTES);
    int cs = ((c->cout + nslab - 1) / nslab + 15) / 16 * 16;
    return cs < c->cout ? cs : c->cout;
}

typedef struct {
    int N, cin, H, W, Ho, Wo, pt, pl;
    int tx, ty, T; /* tiles per row, per column, over all images */
} w2plan;

static int plan_of(const sdb_conv2d *c, int N, int H, int W, w2plan *p)
{
    p->N = N;
    p->cin = c->cin;
    p->H = H;
    p->W = W;
    sdb_conv2d_out_size(c, H, W, &p->Ho, &p->Wo);
    p->pt = c->pad_t;
    p->pl = c->pad_l;
    p->tx = (p->Wo + 1) / 2;
    p->ty = (p->Ho + 1) / 2;
    const long T = (long)N * p->tx * p->ty;
    p->T = (int)T;
    return p->Ho > 0 && p->Wo > 0 && T <= SDB_WINO2_MAX_TILES;
}

/* The GEMM block of output channels of a slab of cout: a multiple of 16 (or all). */
static int block_rows(int cout)
{
    int mb = ((cout + WINO2_MBLOCKS - 1) / WINO2_MBLOCKS + 15) / 16 * 16;
    return mb < cout ? mb : cout;
}

/* V[ξ][ci][t] (ξ stride cin·T) for every tile t of input channel ci */
static void input_channel(const w2plan *p, const float *x, int ci, float *V)
{
    const size_t xs = (size_t)p->cin * p->T, img = (size_t)p->cin * p->H * p->W;
    float *v = V + (size_t)ci * p->T;
    for (int t = 0; t < p->T; t++) {
        const int n = t / (p->tx * p->ty), r = t % (p->tx * p->ty);
        const int y0 = r / p->tx * 2 - p->pt, x0 = r % p->tx * 2 - p->pl;
        const float *xc = x + (size_t)n * img + (size_t)ci * p->H * p->W;
        float d[4][4], b[4][4];
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 4; j++) {
                const int iy = y0 + i, ix = x0 + j;
                d[i][j] = iy >= 0 && iy < p->H && ix >= 0 && ix < p->W ? xc[(size_t)iy * p->W + ix] : 0.0f;
            }
        for (int j = 0; j < 4; j++) { /* Bᵀ d */
            b[0][j] = d[0][j] - d[2][j];
            b[1][j] = d[1][j] + d[2][j];
            b[2][j] = d[2][j] - d[1][j];
            b[3][j] = d[1][j] - d[3][j];
        }
        for (int i = 0; i < 4; i++) { /* (Bᵀ d) B */
            v[(size_t)(4 * i + 0) * xs + t] = b[i][0] - b[i][2];
            v[(size_t)(4 * i + 1) * xs + t] = b[i][1] + b[i][2];
            v[(size_t)(4 * i + 2) * xs + t] = b[i][2] - b[i][1];
            v[(size_t)(4 * i + 3) * xs + t] = b[i][1] - b[i][3];
        }
    }
}

/* y[n][co] over every tile: (residual + bias) + Aᵀ M A; M[ξ][co - cbase][t] (ξ stride xs) */
static void output_channel(const w2plan *p, const float *M, size_t xs, int co, int cbase, int ctot,
                           const float *bias, const float *bias_n, const float *res, float *y)
{
    const float *mc = M + (size_t)(co - cbase) * p->T;
    const size_t img = (size_t)ctot * p->Ho * p->Wo;
    for (int t = 0; t < p->T; t++) {
        const int n = t / (p->tx * p->ty), r = t % (p->tx * p->ty);
        const int y0 = r / p->tx * 2, x0 = r % p->tx * 2;
        float m[4][4], s[2][4], o[2][2];
        for (int k = 0; k < XI; k++) m[k / 4][k % 4] = mc[(size_t)k * xs + t];
        for (int j = 0; j < 4; j++) { /* Aᵀ M */
            s[0][j] = (m[0][j] + m[1][j]) + m[2][j];
            s[1][j] = (m[1][j] - m[2][j]) - m[3][j];
        }
        for (int i = 0; i < 2; i++) { /* (Aᵀ M) A */
            o[i][0] = (s[i][0] + s[i][1]) + s[i][2];
            o[i][1] = (s[i][1] - s[i][2]) - s[i][3];
        }
        const float b = bias_n ? bias_n[(size_t)n * ctot + co] : bias ? bias[co] : 0.0f;
        for (int i = 0; i < 2 && y0 + i < p->Ho; i++)
            for (int j = 0; j < 2 && x0 + j < p->Wo; j++) {
                const size_t at = (size_t)n * img + ((size_t)co * p->Ho + y0 + i) * p->Wo + x0 + j;
                y[at] = ((res ? res[at] : 0.0f) + b) + o[i][j];
            }
    }
}

int sdb_winograd2_forward(const sdb_conv2d *c, const float *U, const float *x, int N, int H, int W,
                          float *y, const float *residual, const float *bias_n, sdb_arena *scratch)
{
    if (!sdb_winograd_applies(c) || N <= 0 || H <= 0 || W <= 0) return SDB_EINVAL;
    if (!c->w.f32 && !c->w.f16) return SDB_EINVAL;
    w2plan p;
    if (!plan_of(c, N, H, W, &p)) return SDB_EINVAL;
    /* slabs of output channels from the shape only, whether U is passed or not: the same products
     * either way (a kept filter gives the same bits on any GEMM kernel) */
    const int cin = c->cin, cs = slab_channels(c), T = p.T;
    const size_t mark = sdb_arena_mark(scratch);
    const size_t xsV = (size_t)cin * T;
    float *V = sdb_arena_floats(scratch, XI * xsV);
    float *M = sdb_arena_floats(scratch, (size_t)XI * cs * T);
    float *Us = U ? NULL : sdb_arena_floats(scratch, (size_t)XI * cs * cin);
    const int avx2 = sdb_vexp_have_avx2();
    const size_t packsz = sdb_thin_gemm_preferred() ? sdb_thin_gemm_pack_floats() : 0;
    float *packs = packsz ? sdb_arena_floats(scratch, (size_t)omp_get_max_threads() * packsz) : NULL;
    if (!V || !M || (!U && !Us) || (packsz && !packs)) {
        sdb_arena_reset(scratch, mark);
        return SDB_ENOMEM;
    }
#pragma omp parallel
    {
#pragma omp for schedule(static)
        for (int ci = 0; ci < cin; ci++) input_channel(&p, x, ci, V);
        /* implicit barrier: V complete */
        for (int cb = 0; cb < c->cout; cb += cs) {
            const int cout = c->cout - cb < cs ? c->cout - cb : cs, mb = block_rows(cout);
            const int pm = (cout + mb - 1) / mb, ntask = XI * pm;
            const size_t xsU = U ? (size_t)c->cout * cin : (size_t)cout * cin, xsM = (size_t)cout * T;
            const float *Ub = U ? U + (size_t)cb * cin : Us;
            if (!U) {
#pragma omp for schedule(static)
                for (int co = cb; co < cb + cout; co++) filter_one(c, co, cb, Us, xsU, avx2);
            }
#pragma omp for schedule(dynamic, 1)
            for (int task = 0; task < ntask; task++) {
                const int k = task % XI, co0 = task / XI * mb, mm = cout - co0 < mb ? cout - co0 : mb;
                const float *Uk = Ub + k * xsU + (size_t)co0 * cin, *Vk = V + k * xsV;
                float *Mk = M + k * xsM + (size_t)co0 * T;
                if (!packs || sdb_thin_gemm(mm, T, cin, Uk, cin, Vk, T, 0.0f, Mk, T,
                                            packs + (size_t)omp_get_thread_num() * packsz))
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, mm, T, cin, 1.0f, Uk, cin, Vk, T,
                                0.0f, Mk, T);
            }
            /* implicit barrier: M complete */
#pragma omp for schedule(static)
            for (int co = cb; co < cb + cout; co++)
                output_channel(&p, M, xsM, co, cb, c->cout, c->b, bias_n, residual, y);
            /* implicit barrier: Us and M may be overwritten by the next slab */
        }
    }
    sdb_arena_reset(scratch, mark);
    return 0;
}

/* FLOP estimates of the transforms as written, for the load-balance record only. */
#define WINO2_IN_FLOP 32.0    /* one 4x4 input tile */
#define WINO2_OUT_FLOP 28.0   /* one 2x2 output tile */
#define WINO2_FILT_FLOP 120.0 /* one 3x3 filter */

void sdb_winograd2_plan(const sdb_conv2d *c, int N, int H, int W, sdb_par_rec *rec)
{
    w2plan p;
    if (!sdb_winograd_applies(c) || N <= 0 || H <= 0 || W <= 0 || !plan_of(c, N, H, W, &p)) return;
    sdb_par_op_begin(rec, SDB_PAR_GEMM, "conv 3x3/1 %d->%d %dx%d x%d winograd F(2x2)", c->cin, c->cout, H, W, N);
    const int cs = slab_channels(c); /* a kept filter skips the filter loops */
    sdb_par_loop_add(rec, SDB_PAR_STATIC, c->cin, NULL, WINO2_IN_FLOP * p.T, 0, 1);
    for (int cb = 0; cb < c->cout; cb += cs) {
        const int cout = c->cout - cb < cs ? c->cout - cb : cs, mb = block_rows(cout);
        const int pm = (cout + mb - 1) / mb, ntask = XI * pm;
        sdb_par_loop_add(rec, SDB_PAR_STATIC, cout, NULL, WINO2_FILT_FLOP * c->cin, 0, 1);
        double *cost = malloc(sizeof(double) * (size_t)ntask);
        if (!cost) { rec->failed = 1; return; }
        for (int task = 0; task < ntask; task++) {
            const int co0 = task / XI * mb, mm = cout - co0 < mb ? cout - co0 : mb;
            cost[task] = 2.0 * c->cin * mm * p.T;
        }
        sdb_par_loop_add(rec, SDB_PAR_DYNAMIC, ntask, cost, 0, 0, 1);
        free(cost);
        sdb_par_loop_add(rec, SDB_PAR_STATIC, cout, NULL, WINO2_OUT_FLOP * p.T, 0, 1);
    }
}
