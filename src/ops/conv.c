/*
 * conv.c — 2-D convolution as im2col panels + cblas_sgemm, and the thread-count-independent GEMMs
 * (see conv.h).
 *
 * y[n][cout, Ho*Wo] = W[cout, cin*k*k] · col[cin*k*k, Ho*Wo] (+ bias, + residual), with W used in
 * torch's [cout, cin, k, k] layout as it is (no repacked copy). The product runs over the output
 * pixels of all images at once, cut into the tiles of par.h's GEMM grid; each tile's task builds
 * the im2col panel of its own columns in its thread's buffer (see "convolution" below).
 *
 * Parallelism and determinism: OpenBLAS's own threading is NOT bit-reproducible across thread
 * counts (its M/N split changes which micro-kernel edge path an element goes through), so every
 * product is cut into a fixed grid of tiles (sdb_gemm_grid_of: chosen from the shapes only) that
 * run in a dynamic OpenMP loop, each a single-threaded sgemm (OpenBLAS's OpenMP build runs
 * single-threaded inside an active parallel region). Each tile's arithmetic is fixed by the shapes,
 * so results are identical for any thread count and any order the tiles run in
 * (tests/test_ops_conv.c checks 1 vs 2 vs 4 threads). Each op has a _plan twin that records the
 * same tiles for `sdbatch bench --balance` (par.h).
 *
 * Half weight matrices (sdb_wmat.f16) are widened into the arena once per call (sdb_wmat_widen: an
 * exact conversion, split over the threads) and then used exactly like float32 ones.
 */
#include "sdb/ops/conv.h"
#include "sdb/error.h"
#include "sdb/fp16.h"

#include "sdb/ops/par.h"

#include <cblas.h>
#include <omp.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define SDB_WIDEN_CHUNK ((size_t)1 << 16)
const float *sdb_wmat_widen(sdb_wmat w, size_t n, sdb_arena *scratch)
{
    if (w.f32) return w.f32;
    if (!w.f16 || !scratch) return NULL;
    float *dst = sdb_arena_floats(scratch, n);
    if (!dst) return NULL;
    const long chunks = (long)((n + SDB_WIDEN_CHUNK - 1) / SDB_WIDEN_CHUNK);
#pragma omp parallel for schedule(static) if (chunks > 1)
    for (long c = 0; c < chunks; c++) {
        size_t i0 = (size_t)c * SDB_WIDEN_CHUNK, len = n - i0 < SDB_WIDEN_CHUNK ? n - i0 : SDB_WIDEN_CHUNK;
        sdb_f16_to_f32_array(w.f16 + i0, dst + i0, len);
    }
    return dst;
}

void sdb_conv2d_out_size(const sdb_conv2d *c, int H, int W, int *Ho, int *Wo)
{
    *Ho = (H + c->pad_t + c->pad_b - c->k) / c->stride + 1;
    *Wo = (W + c->pad_l + c->pad_r - c->k) / c->stride + 1;
}

/* Small products (at most SDB_GEMM_SMALL multiply-adds: the tiny test models, time embeddings)
 * run on the calling thread without opening a parallel region — waking the team costs more than
 * the product, especially with OMP_WAIT_POLICY=passive — and without OpenBLAS, which outside a
 * parallel region may thread (not reproducible across thread counts). The plain kernel below sums
 * in a fixed order, so results do not depend on the thread count either. */
#define SDB_GEMM_SMALL (1L << 19)
static int gemm_is_small(int M, int N, int K) { return (long)M * N * K <= SDB_GEMM_SMALL; }

static float dot_fixed(const float *a, const float *b, int K)
{
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int k = 0;
    for (; k + 8 <= K; k += 8)
        for (int l = 0; l < 8; l++) acc[l] += a[k + l] * b[k + l];
    float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (; k < K; k++) s += a[k] * b[k];
    return s;
}

static void gemm_small(int transB, int M, int N, int K, const float *A, int lda, const float *B,
                       int ldb, float beta, float *C, int ldc)
{
    for (int i = 0; i < M; i++) {
        float *c = C + (size_t)i * ldc;
        const float *a = A + (size_t)i * lda;
        if (beta == 0.0f) memset(c, 0, sizeof(float) * N);
        else if (beta != 1.0f) for (int j = 0; j < N; j++) c[j] *= beta;
        if (transB) {
            for (int j = 0; j < N; j++) c[j] += dot_fixed(a, B + (size_t)j * ldb, K);
        } else {
            for (int k = 0; k < K; k++) {
                const float av = a[k], *b = B + (size_t)k * ldb;
                for (int j = 0; j < N; j++) c[j] += av * b[j];
            }
        }
    }
}

/* One product of the fixed arithmetic of a tile: gemm_small for small products, else a
 * single-threaded OpenBLAS sgemm (inside an active parallel region). */
static void tile_gemm(int small, int transB, int M, int N, int K, const float *A, int lda,
                      const float *B, int ldb, float beta, float *C, int ldc)
{
    if (small) gemm_small(transB, M, N, K, A, lda, B, ldb, beta, C, ldc);
    else cblas_sgemm(CblasRowMajor, CblasNoTrans, transB ? CblasTrans : CblasNoTrans, M, N, K, 1.0f,
                     A, lda, B, ldb, beta, C, ldc);
}

/* What a linear layer's tile writes before its product is added (beta = 1): nothing (plain
 * sdb_gemm, beta as given), the bias or 0, or the bias added to what y holds. */
enum { INIT_NONE, INIT_SET, INIT_ADD };

/* C (+)= A · op(B) over the grid of sdb_gemm_grid_of (tiles in a dynamic loop). */
static void gemm_tiles(int transB, int M, int N, int K, const float *A, int lda, const float *B,
                       int ldb, float beta, float *C, int ldc, int init, const float *bias)
{
    const int small = gemm_is_small(M, N, K);
    const sdb_gemm_grid g = sdb_gemm_grid_of(M, N, 0);
    const int ntiles = sdb_gemm_grid_tiles(&g);
#pragma omp parallel for schedule(dynamic, 1) if (!small && ntiles > 1)
    for (int t = 0; t < ntiles; t++) {
        int m0, mm, n0, nn;
        sdb_gemm_grid_tile(&g, t, &m0, &mm, &n0, &nn);
        float *Ct = C + (size_t)m0 * ldc + n0;
        float b = beta;
        if (init != INIT_NONE) {
            for (int i = 0; i < mm; i++) {
                float *row = Ct + (size_t)i * ldc;
                if (init == INIT_ADD) for (int j = 0; j < nn; j++) row[j] += bias[n0 + j];
                else if (bias) for (int j = 0; j < nn; j++) row[j] = bias[n0 + j];
                else for (int j = 0; j < nn; j++) row[j] = 0.0f;
            }
            b = 1.0f;
        }
        const float *Bp = transB ? B + (size_t)n0 * ldb : B + n0;
        tile_gemm(small, transB, mm, nn, K, A + (size_t)m0 * lda, lda, Bp, ldb, b, Ct, ldc);
    }
}

static void gemm_plan(sdb_par_rec *rec, int M, int N, int K)
{
    const sdb_gemm_grid g = sdb_gemm_grid_of(M, N, 0);
    const int ntiles = sdb_gemm_grid_tiles(&g);
    double *cost = malloc((size_t)ntiles * sizeof *cost);
    if (!cost) { rec->failed = 1; return; }
    for (int t = 0; t < ntiles; t++) {
        int m0, mm, n0, nn;
        sdb_gemm_grid_tile(&g, t, &m0, &mm, &n0, &nn);
        cost[t] = 2.0 * mm * nn * K;
    }
    sdb_par_loop_add(rec, SDB_PAR_DYNAMIC, ntiles, cost, 0, 0, !gemm_is_small(M, N, K) && ntiles > 1);
    free(cost);
}

void sdb_gemm(int transB, int M, int N, int K, const float *A, int lda, const float *B, int ldb,
              float beta, float *C, int ldc)
{
    if (M <= 0 || N <= 0) return;
    gemm_tiles(transB, M, N, K, A, lda, B, ldb, beta, C, ldc, INIT_NONE, NULL);
}

void sdb_gemm_plan(int M, int N, int K, sdb_par_rec *rec)
{
    if (M <= 0 || N <= 0) return;
    sdb_par_op_begin(rec, SDB_PAR_GEMM, "gemm %dx%dx%d", M, N, K);
    gemm_plan(rec, M, N, K);
}

int sdb_gemm_linear(const float *x, int M, int K, sdb_wmat W, const float *bias, int N, float *y,
                    int accumulate, sdb_arena *scratch)
{
    if (!W.f32 && !scratch) return SDB_EINVAL;
    if (M <= 0 || N <= 0) return 0;
    size_t mark = W.f32 ? 0 : sdb_arena_mark(scratch);
    const float *w = sdb_wmat_widen(W, (size_t)N * K, scratch);
    if (!w) return SDB_ENOMEM;
    /* each tile first writes y = bias (or 0), or adds the bias, then adds its product */
    const int init = accumulate ? (bias ? INIT_ADD : INIT_NONE) : INIT_SET;
    gemm_tiles(1, M, N, K, x, K, w, K, 1.0f, y, N, init, bias);
    if (!W.f32) sdb_arena_reset(scratch, mark);
    return 0;
}

void sdb_gemm_linear_plan(int M, int K, int N, sdb_par_rec *rec)
{
    if (M <= 0 || N <= 0) return;
    sdb_par_op_begin(rec, SDB_PAR_GEMM, "linear %d->%d, %d rows", K, N, M);
    gemm_plan(rec, M, N, K);
}

/* ---- convolution ----
 * The product y[n][cout, pixel] = W[cout, K] · col[K, column] over the columns of every image's
 * output pixels one after the other (column j: image j / HWo, pixel j % HWo), cut by the GEMM grid
 * with at most CONV_NB_MAX columns per tile. A tile's task builds its own im2col panel (its columns,
 * K in chunks of at most CONV_KC_MAX rows) in the thread's buffer, runs the chunks' products into
 * the thread's tile buffer, then writes y = (residual + bias) + product. No shared im2col, no
 * barrier between copy and product, bounded scratch (per thread: CONV_KC_MAX x CONV_NB_MAX +
 * the tile) for any image size. */
#define CONV_NB_MAX 256
#define CONV_KC_MAX 2304

typedef struct conv_layout {
    int Ho, Wo, HWo, K, ncols;
    int nkc, kc;          /* K chunks: nkc of kc rows (the last one shorter) */
    int small;            /* the whole product is small: serial, gemm_small */
    sdb_gemm_grid g;      /* over cout x ncols */
} conv_layout;

static int conv_layout_of(const sdb_conv2d *c, int N, int H, int W, conv_layout *L)
{
    sdb_conv2d_out_size(c, H, W, &L->Ho, &L->Wo);
    if (L->Ho <= 0 || L->Wo <= 0 || N <= 0) return SDB_EINVAL;
    L->HWo = L->Ho * L->Wo;
    L->K = c->cin * c->k * c->k;
    L->ncols = N * L->HWo;
    L->nkc = (L->K + CONV_KC_MAX - 1) / CONV_KC_MAX;
    L->kc = (L->K + L->nkc - 1) / L->nkc;
    L->small = gemm_is_small(c->cout, L->ncols, L->K);
    L->g = sdb_gemm_grid_of(c->cout, L->ncols, CONV_NB_MAX);
    return 0;
}

/* col[(row - k0) * nn + (j - n0)] for K rows k0 .. k1-1 and columns n0 .. n0+nn-1 */
static void im2col_cols(const sdb_conv2d *c, const float *x, int H, int W, const conv_layout *L,
                        int k0, int k1, int n0, int nn, float *col)
{
    const int k = c->k, s = c->stride, kk = k * k, Wo = L->Wo, HWo = L->HWo;
    const size_t HW = (size_t)H * W;
    for (int row = k0; row < k1; row++) {
        const int ci = row / kk, ky = (row % kk) / k, kx = row % k;
        /* valid ox range: 0 <= ox*s + kx - pad_l < W */
        const int off = kx - c->pad_l;
        int ox_lo = off >= 0 ? 0 : (-off + s - 1) / s;
        int ox_hi = (W - 1 - off) >= 0 ? (W - 1 - off) / s + 1 : 0; /* exclusive */
        if (ox_hi > Wo) ox_hi = Wo;
        if (ox_lo > ox_hi) ox_lo = ox_hi;
        float *dst = col + (size_t)(row - k0) * nn;
        for (int j = n0; j < n0 + nn;) {
            const int n = j / HWo, p = j % HWo, oy = p / Wo, a = p % Wo;
            const int len = Wo - a < n0 + nn - j ? Wo - a : n0 + nn - j, b = a + len;
            float *d = dst + (j - n0) - a; /* indexed by ox */
            const int iy = oy * s + ky - c->pad_t;
            if (iy < 0 || iy >= H) {
                memset(d + a, 0, sizeof(float) * len);
            } else {
                const float *xr = x + ((size_t)n * c->cin + ci) * HW + (size_t)iy * W;
                const int lo = ox_lo > a ? ox_lo : a, hi = ox_hi < b ? ox_hi : b;
                if (hi <= lo) {
                    memset(d + a, 0, sizeof(float) * len);
                } else {
                    for (int ox = a; ox < lo; ox++) d[ox] = 0.0f;
                    if (s == 1) memcpy(d + lo, xr + lo + off, sizeof(float) * (hi - lo));
                    else for (int ox = lo; ox < hi; ox++) d[ox] = xr[ox * s + off];
                    for (int ox = hi; ox < b; ox++) d[ox] = 0.0f;
                }
            }
            j += len;
        }
    }
}

static void conv_tile(const sdb_conv2d *c, const float *w, const float *x, int H, int W,
                      const conv_layout *L, int t, float *y, const float *res, const float *bias_n,
                      float *colbuf, float *cbuf)
{
    int m0, mm, n0, nn;
    sdb_gemm_grid_tile(&L->g, t, &m0, &mm, &n0, &nn);
    for (int q = 0; q < L->nkc; q++) {
        const int k0 = q * L->kc, k1 = k0 + L->kc < L->K ? k0 + L->kc : L->K;
        im2col_cols(c, x, H, W, L, k0, k1, n0, nn, colbuf);
        tile_gemm(L->small, 0, mm, nn, k1 - k0, w + (size_t)m0 * L->K + k0, L->K, colbuf, nn,
                  q ? 1.0f : 0.0f, cbuf, nn);
    }
    const int HWo = L->HWo, cout = c->cout;
    for (int i = 0; i < mm; i++) {
        const int co = m0 + i;
        const float *src = cbuf + (size_t)i * nn;
        for (int j = n0; j < n0 + nn;) {
            const int n = j / HWo, p = j % HWo, len = HWo - p < n0 + nn - j ? HWo - p : n0 + nn - j;
            const float b = bias_n ? bias_n[(size_t)n * cout + co] : c->b ? c->b[co] : 0.0f;
            const size_t o = ((size_t)n * cout + co) * HWo + p;
            float *d = y + o;
            const float *s = src + (j - n0);
            if (res) {
                const float *r = res + o;
                for (int e = 0; e < len; e++) d[e] = (r[e] + b) + s[e];
            } else {
                for (int e = 0; e < len; e++) d[e] = b + s[e];
            }
            j += len;
        }
    }
}

int sdb_conv2d_forward(const sdb_conv2d *c, const float *x, int N, int H, int W, float *y,
                       const float *residual, sdb_arena *scratch)
{
    return sdb_conv2d_forward_bias(c, x, N, H, W, y, residual, NULL, scratch);
}

int sdb_conv2d_forward_bias(const sdb_conv2d *c, const float *x, int N, int H, int W, float *y,
                            const float *residual, const float *bias_n, sdb_arena *scratch)
{
    conv_layout L;
    if (conv_layout_of(c, N, H, W, &L)) return SDB_EINVAL;
    size_t mark = sdb_arena_mark(scratch);
    const float *w = sdb_wmat_widen(c->w, (size_t)c->cout * L.K, scratch);
    if (!w) return SDB_ENOMEM;
    const int ntiles = sdb_gemm_grid_tiles(&L.g);
    const int par = !L.small && ntiles > 1;
    const int nthreads = par ? omp_get_max_threads() : 1;
    const size_t colsz = (size_t)L.kc * L.g.nb, csz = (size_t)L.g.mb * L.g.nb;
    float *bufs = sdb_arena_floats(scratch, (size_t)nthreads * (colsz + csz));
    if (!bufs) { sdb_arena_reset(scratch, mark); return SDB_ENOMEM; }
#pragma omp parallel for schedule(dynamic, 1) if (par)
    for (int t = 0; t < ntiles; t++) {
        float *own = bufs + (size_t)omp_get_thread_num() * (colsz + csz);
        conv_tile(c, w, x, H, W, &L, t, y, residual, bias_n, own, own + colsz);
    }
    sdb_arena_reset(scratch, mark);
    return 0;
}

void sdb_conv2d_plan(const sdb_conv2d *c, int N, int H, int W, sdb_par_rec *rec)
{
    conv_layout L;
    if (conv_layout_of(c, N, H, W, &L)) return;
    sdb_par_op_begin(rec, SDB_PAR_GEMM, "conv %dx%d/%d %d->%d %dx%d x%d", c->k, c->k, c->stride,
                     c->cin, c->cout, H, W, N);
    const int ntiles = sdb_gemm_grid_tiles(&L.g);
    double *cost = malloc((size_t)ntiles * sizeof *cost);
    if (!cost) { rec->failed = 1; return; }
    for (int t = 0; t < ntiles; t++) {
        int m0, mm, n0, nn;
        sdb_gemm_grid_tile(&L.g, t, &m0, &mm, &n0, &nn);
        cost[t] = 2.0 * mm * nn * L.K;
    }
    sdb_par_loop_add(rec, SDB_PAR_DYNAMIC, ntiles, cost, 0, 0, !L.small && ntiles > 1);
    free(cost);
}
