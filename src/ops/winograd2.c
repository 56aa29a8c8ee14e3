/*
 * winograd2.c — F(2x2, 3x3) Winograd convolution for small images (see winograd.h): the U-Net's
 * 1280-channel convolutions at 8x8 latents and below, where F(4x4, 3x3) has too few output tiles
 * (8 per filter at 8x8, batch 2) for its 36 products to run well, and the direct product does 2.25x
 * the multiply-adds. Owns its transforms and its task grid.
 *
 * Transform matrices (interpolation points 0, 1, -1, ∞; every entry 0, ±1 or ±1/2, so the input
 * and output transforms are exact sums and differences):
 *   Bᵀ = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]   G = [1 0 0; ½ ½ ½; ½ -½ ½; 0 0 1]
 *   Aᵀ = [1 1 1 0; 0 1 -1 -1]
 * A 4x4 input tile d becomes V = Bᵀ d B, a filter g becomes U = G g Gᵀ (16 values each); for each
 * of the 16 positions ξ the products over the input channels are one GEMM
 * M[ξ][cout, tiles] = U[ξ][cout, cin] · V[ξ][cin, tiles]; a tile's 2x2 output is Aᵀ M A: 16
 * multiply-adds per 2x2 output tile and channel pair instead of 36. The filter transform runs in
 * float, G's rows as sums and halvings (filter_scalar), 8 filters per AVX2 vector.
 *
 * Work: all tiles of all images at once (callers use it on small images: sdb_conv_path caps the
 * tiles), in one parallel region: the input transform (over input channels), the products, and
 * the output transform (+ bias, + residual; over output channels). The products run in blocks of
 * FB output channels and chunks of KCH input channels: with a kept filter, units of (ξ,
 * WINO2_UNIT_BLOCKS blocks); without one, units of one block that, chunk by chunk, first transform
 * the block's 16 x FB x KCH filter values into the thread's buffer (L2), so the transformed filter
 * (105 MB for 1280 -> 1280) never goes through memory. Either way each (block, chunk) product is
 * the same call (thin_gemm.h on V made into panels where the CPU prefers it, else OpenBLAS; the
 * chunks after the first add to M): results are identical for any thread count, and with or
 * without a kept filter.
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
#include <string.h>

#define XI SDB_WINO2_XI
/* Output channels per product (one of the thin kernel's 6-row blocks): 214 units for 1280 (12
 * were as fast on 2 cores, with half the units: a load-balance bound of 0.946 at 32 threads for a
 * 256x256 step instead of 0.959). */
#define FB 6
/* Blocks per unit with a kept filter: 16 x 54 units for 1280 output channels. */
#define WINO2_UNIT_BLOCKS 4
/* Input channels per product: a block's filters for them, transformed (16 x FB x KCH floats,
 * 96 KiB), stay in L2 for the 16 products that read them. */
#define KCH 256

size_t sdb_winograd2_filter_floats(const sdb_conv2d *c) { return (size_t)XI * c->cout * c->cin; }

static float tap(const sdb_conv2d *c, size_t i)
{
    return c->w.f32 ? c->w.f32[i] : sdb_f16_to_f32(c->w.f16[i]);
}

/* u[ξ·xs + ci - ci0] for the filters ci0 <= ci < ci1 of output channel co, in float:
 * t = G g as t0 = g0, t1 = ((g0 + g1) + g2)·½, t2 = ((g0 - g1) + g2)·½, t3 = g2 (per column), then
 * the same on the rows of t, each operation rounded in that order (no fused multiply-add). */
static void filter_scalar(const sdb_conv2d *c, int co, int ci0, int ci1, float *u0, size_t xs)
{
    for (int ci = ci0; ci < ci1; ci++) {
        const size_t o = ((size_t)co * c->cin + ci) * 9;
        float g[3][3], t[4][3];
        for (int i = 0; i < 9; i++) g[i / 3][i % 3] = tap(c, o + i);
        for (int j = 0; j < 3; j++) {
            t[0][j] = g[0][j];
            t[1][j] = ((g[0][j] + g[1][j]) + g[2][j]) * 0.5f;
            t[2][j] = ((g[0][j] - g[1][j]) + g[2][j]) * 0.5f;
            t[3][j] = g[2][j];
        }
        float *u = u0 + (ci - ci0);
        for (int i = 0; i < 4; i++) {
            u[(size_t)(4 * i + 0) * xs] = t[i][0];
            u[(size_t)(4 * i + 1) * xs] = ((t[i][0] + t[i][1]) + t[i][2]) * 0.5f;
            u[(size_t)(4 * i + 2) * xs] = ((t[i][0] - t[i][1]) + t[i][2]) * 0.5f;
            u[(size_t)(4 * i + 3) * xs] = t[i][2];
        }
    }
}

/* The same for 8 filters at a time, one per lane: the same operations in the same order, so
 * bit-identical to filter_scalar. The 8 filters' taps come as g[tap] (taps9.h). AVX2 without FMA on
 * purpose: no multiply-add may be fused. Returns the filters done (a multiple of 8 from ci0). In
 * float rather than double (rounded once), since the conversions to and from double took most of
 * the time: within 4u·(|G||g||G|ᵀ) of the exact value, u = 2⁻²⁴ (tests/test_winograd.c), against
 * relative errors of ~2e-6 of the convolution's products. */
__attribute__((target("avx2,f16c")))
static int filter_avx2(const sdb_conv2d *c, int co, int ci0, int ci1, float *u0, size_t xs)
{
    const __m256 half = _mm256_set1_ps(0.5f);
    int ci = ci0;
    for (; ci + 8 <= ci1; ci += 8) {
        __m256 g[9];
        sdb_taps9_conv(c, co, ci, g);
        float *u = u0 + (ci - ci0);
        for (int i = 0; i < 4; i++) {
            __m256 t[3];
            for (int j = 0; j < 3; j++) {
                const __m256 a = g[j], b = g[3 + j], d = g[6 + j];
                t[j] = i == 0   ? a
                       : i == 1 ? _mm256_mul_ps(_mm256_add_ps(_mm256_add_ps(a, b), d), half)
                       : i == 2 ? _mm256_mul_ps(_mm256_add_ps(_mm256_sub_ps(a, b), d), half)
                                : d;
            }
            _mm256_storeu_ps(u + (size_t)(4 * i + 0) * xs, t[0]);
            _mm256_storeu_ps(u + (size_t)(4 * i + 1) * xs,
                             _mm256_mul_ps(_mm256_add_ps(_mm256_add_ps(t[0], t[1]), t[2]), half));
            _mm256_storeu_ps(u + (size_t)(4 * i + 2) * xs,
                             _mm256_mul_ps(_mm256_add_ps(_mm256_sub_ps(t[0], t[1]), t[2]), half));
            _mm256_storeu_ps(u + (size_t)(4 * i + 3) * xs, t[2]);
        }
    }
    return ci - ci0;
}

/* u[ξ·xs + ci - ci0] for the input channels ci0 <= ci < ci1 of output channel co */
static void filter_row(const sdb_conv2d *c, int co, int ci0, int ci1, float *u, size_t xs, int avx2)
{
    const int done = avx2 ? filter_avx2(c, co, ci0, ci1, u, xs) : 0;
    filter_scalar(c, co, ci0 + done, ci1, u + done, xs);
}

void sdb_winograd2_filter(const sdb_conv2d *c, float *U)
{
    const size_t xs = (size_t)c->cout * c->cin;
    const int avx2 = sdb_taps9_usable(c); /* filter_avx2 may run */
#pragma omp parallel for schedule(static)
    for (int co = 0; co < c->cout; co++) filter_row(c, co, 0, c->cin, U + (size_t)co * c->cin, xs, avx2);
}

typedef struct {
    int N, cin, H, W, Ho, Wo, pt, pl;
    int tx, ty, T; /* tiles per row, per column, over all images */
    int panels;    /* V as the thin kernel's panels [ξ][T/16][cin][16] (else [ξ][cin][T]) */
    size_t xsV;    /* V's ξ stride */
} w2plan;

/* Where V[ξ][ci][t] lies, from ξ's plane */
static size_t v_at(const w2plan *p, int ci, int t)
{
    const int L = SDB_THIN_GEMM_PANEL;
    return p->panels ? (size_t)(t / L) * p->cin * L + (size_t)ci * L + t % L : (size_t)ci * p->T + t;
}

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
    p->panels = sdb_thin_gemm_preferred();
    p->xsV = p->panels ? sdb_thin_gemm_panels_floats(p->T, p->cin) : (size_t)p->cin * p->T;
    return p->Ho > 0 && p->Wo > 0 && T <= SDB_WINO2_MAX_TILES;
}

/* V[ξ][ci][t] for every tile t of input channel ci (and the panels' zero columns past T) */
static void input_channel(const w2plan *p, const float *x, int ci, float *V)
{
    const size_t xs = p->xsV, img = (size_t)p->cin * p->H * p->W;
    const int tend = p->panels ? (int)sdb_thin_gemm_panels_floats(p->T, 1) : p->T;
    for (int t = 0; t < tend; t++) {
        float *v = V + v_at(p, ci, t);
        if (t >= p->T) {
            for (int k = 0; k < XI; k++) v[(size_t)k * xs] = 0.0f;
            continue;
        }
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
            v[(size_t)(4 * i + 0) * xs] = b[i][0] - b[i][2];
            v[(size_t)(4 * i + 1) * xs] = b[i][1] + b[i][2];
            v[(size_t)(4 * i + 2) * xs] = b[i][2] - b[i][1];
            v[(size_t)(4 * i + 3) * xs] = b[i][1] - b[i][3];
        }
    }
}

/* M[ξ][co0 + i][t] (+)= Σ_ci U[ξ][i][ci] V[ξ][ci][t] over the input channels ci0 .. ci0+kc-1, for
 * the mm <= FB rows of one block (Uk: ξ's rows at ci0, lda; M: ξ stride xsM, rows of T; added when
 * ci0 > 0). The one call every block makes per chunk, kept filter or not. */
static void block_products(const w2plan *p, int k, const float *Uk, int lda, int mm, int ci0, int kc,
                           const float *V, float *M, size_t xsM, int co0)
{
    const int L = SDB_THIN_GEMM_PANEL;
    const float beta = ci0 > 0 ? 1.0f : 0.0f;
    float *Mk = M + k * xsM + (size_t)co0 * p->T;
    if (p->panels) {
        const float *Vk = V + k * p->xsV + (size_t)ci0 * L;
        if (!sdb_thin_gemm_panels(mm, p->T, kc, Uk, lda, Vk, (size_t)p->cin * L, beta, Mk, p->T)) return;
    }
    /* without the thin kernel V is [ξ][ci][T] (plan_of) */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, mm, p->T, kc, 1.0f, Uk, lda,
                V + k * p->xsV + (size_t)ci0 * p->T, p->T, beta, Mk, p->T);
}

/* y[n][co] over every tile: (residual + bias) + Aᵀ M A; M[ξ][co][t] (ξ stride xs) */
static void output_channel(const w2plan *p, const float *M, size_t xs, int co, int ctot,
                           const float *bias, const float *bias_n, const float *res, float *y)
{
    const float *mc = M + (size_t)co * p->T;
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
    const int cin = c->cin, cout = c->cout, nblk = (cout + FB - 1) / FB;
    const size_t xsM = (size_t)cout * p.T, ubuf = (size_t)XI * FB * KCH;
    const size_t mark = sdb_arena_mark(scratch);
    float *V = sdb_arena_floats(scratch, XI * p.xsV);
    float *M = sdb_arena_floats(scratch, XI * xsM);
    float *Ut = U ? NULL : sdb_arena_floats(scratch, (size_t)omp_get_max_threads() * ubuf);
    if (!V || !M || (!U && !Ut)) {
        sdb_arena_reset(scratch, mark);
        return SDB_ENOMEM;
    }
    const int avx2 = sdb_taps9_usable(c); /* filter_avx2 may run */
#pragma omp parallel
    {
#pragma omp for schedule(static)
        for (int ci = 0; ci < cin; ci++) input_channel(&p, x, ci, V);
        /* implicit barrier: V complete */
        if (U) { /* units: (ξ, WINO2_UNIT_BLOCKS blocks of the kept filter) */
            const int per = WINO2_UNIT_BLOCKS, nunit = XI * ((nblk + per - 1) / per);
            const size_t xsU = (size_t)cout * cin;
#pragma omp for schedule(dynamic, 1)
            for (int unit = 0; unit < nunit; unit++) {
                const int k = unit % XI, b0 = unit / XI * per, b1 = b0 + per < nblk ? b0 + per : nblk;
                for (int b = b0; b < b1; b++) {
                    const int co0 = b * FB, mm = cout - co0 < FB ? cout - co0 : FB;
                    for (int ci0 = 0; ci0 < cin; ci0 += KCH)
                        block_products(&p, k, U + k * xsU + (size_t)co0 * cin + ci0, cin, mm, ci0,
                                       cin - ci0 < KCH ? cin - ci0 : KCH, V, M, xsM, co0);
                }
            }
        } else { /* units: one block, its filters transformed into the thread's buffer first, as
                  * [channel][ξ][kc] (one channel's 16 rows together: the transform's stores stay
                  * within 16 KiB), so ξ's rows are XI·kc apart */
            float *Ub = Ut + (size_t)omp_get_thread_num() * ubuf;
#pragma omp for schedule(dynamic, 1)
            for (int b = 0; b < nblk; b++) {
                const int co0 = b * FB, mm = cout - co0 < FB ? cout - co0 : FB;
                for (int ci0 = 0; ci0 < cin; ci0 += KCH) {
                    const int kc = cin - ci0 < KCH ? cin - ci0 : KCH;
                    for (int co = co0; co < co0 + mm; co++) {
                        sdb_prefetch_next_filters(c, co, co0, co0 + mm, ci0, kc);
                        filter_row(c, co, ci0, ci0 + kc, Ub + (size_t)(co - co0) * XI * kc, kc, avx2);
                    }
                    for (int k = 0; k < XI; k++)
                        block_products(&p, k, Ub + (size_t)k * kc, XI * kc, mm, ci0, kc, V, M, xsM, co0);
                }
            }
        }
        /* implicit barrier: M complete */
#pragma omp for schedule(static)
        for (int co = 0; co < cout; co++) output_channel(&p, M, xsM, co, cout, c->b, bias_n, residual, y);
    }
    sdb_arena_reset(scratch, mark);
    return 0;
}

/* FLOP estimates of the transforms as written, for the load-balance record only. */
#define WINO2_IN_FLOP 32.0    /* one 4x4 input tile */
#define WINO2_OUT_FLOP 28.0   /* one 2x2 output tile */
#define WINO2_FILT_FLOP 50.0 /* one 3x3 filter */

void sdb_winograd2_plan(const sdb_conv2d *c, int N, int H, int W, sdb_par_rec *rec)
{
    w2plan p;
    if (!sdb_winograd_applies(c) || N <= 0 || H <= 0 || W <= 0 || !plan_of(c, N, H, W, &p)) return;
    sdb_par_op_begin(rec, SDB_PAR_GEMM, "conv 3x3/1 %d->%d %dx%d x%d winograd F(2x2)", c->cin, c->cout, H, W, N);
    const int nblk = (c->cout + FB - 1) / FB;
    sdb_par_loop_add(rec, SDB_PAR_STATIC, c->cin, NULL, WINO2_IN_FLOP * p.T, 0, 1);
    /* as made per call (a kept filter's units are finer: 16 x blocks / WINO2_UNIT_BLOCKS) */
    double *cost = malloc(sizeof(double) * (size_t)nblk);
    if (!cost) { rec->failed = 1; return; }
    for (int b = 0; b < nblk; b++) {
        const int mm = c->cout - b * FB < FB ? c->cout - b * FB : FB;
        cost[b] = mm * (WINO2_FILT_FLOP * c->cin + 2.0 * XI * c->cin * p.T);
    }
    sdb_par_loop_add(rec, SDB_PAR_DYNAMIC, nblk, cost, 0, 0, 1);
    free(cost);
    sdb_par_loop_add(rec, SDB_PAR_STATIC, c->cout, NULL, WINO2_OUT_FLOP * p.T, 0, 1);
}
