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
#include "sdb/ops/thin_gemm.h"

#include <assert.h>
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

/* One product of the fixed arithmetic of a tile: gemm_small for small products, the thin-product
 * kernel for tiles of at most SDB_THIN_GEMM_MAX_N columns when the caller gives it a packing
 * buffer (only where sdb_thin_gemm_preferred()), else a single-threaded OpenBLAS sgemm (inside an
 * active parallel region). Which one runs depends on the tile's shape only. */
static void tile_gemm(int small, int transB, int M, int N, int K, const float *A, int lda,
                      const float *B, int ldb, float beta, float *C, int ldc, float *pack)
{
    if (small) gemm_small(transB, M, N, K, A, lda, B, ldb, beta, C, ldc);
    else if (pack && !transB && N <= SDB_THIN_GEMM_MAX_N && (beta == 0.0f || beta == 1.0f) &&
             sdb_thin_gemm(M, N, K, A, lda, B, ldb, beta, C, ldc, pack) == 0)
        return;
    else cblas_sgemm(CblasRowMajor, CblasNoTrans, transB ? CblasTrans : CblasNoTrans, M, N, K, 1.0f,
                     A, lda, B, ldb, beta, C, ldc);
}

/* What a linear layer's tile writes before its product is added (beta = 1): nothing (plain
 * sdb_gemm, beta as given), the bias or 0, or the bias added to what y holds. */
enum { INIT_NONE, INIT_SET, INIT_ADD };

static sdb_gemm_grid gemm_grid(int M, int N, int K, int can_split)
{
    return sdb_gemm_grid_of(M, N, K, 0, can_split && !gemm_is_small(M, N, K));
}

/* C (+)= A · op(B) over grid g (units in a dynamic loop). With g.ks > 1 each unit's product goes to
 * its K slice's partial sums part[s] [M, N] and a second loop adds them in slice order into C.
 * op(B)'s columns come in segments of segN: columns [s·segN, (s+1)·segN) from Bs[s] (all with
 * leading dimension ldb); a unit whose columns straddle segments runs one product per piece. */
static void gemm_tiles(const sdb_gemm_grid *g, int transB, const float *A, int lda, const float *const *Bs,
                       int segN, int ldb, float beta, float *C, int ldc, int init, const float *bias, float *part,
                       float *panels, size_t panels_per_thread, const float *const *kept)
{
    const int M = g->M, N = g->N, small = gemm_is_small(M, N, g->K), nunits = sdb_gemm_grid_tiles(g);
    const size_t MN = (size_t)M * N;
#pragma omp parallel if (!small && nunits > 1)
    {
#pragma omp for schedule(dynamic, 1)
        for (int t = 0; t < nunits; t++) {
            int m0, mm, n0, nn, k0, kk;
            sdb_gemm_grid_tile(g, t, &m0, &mm, &n0, &nn, &k0, &kk);
            const float *Ap = A + (size_t)m0 * lda + k0;
            float *dst;
            int ldd;
            float b = beta;
            if (g->ks > 1) {
                dst = part + (size_t)(k0 / g->kb) * MN + (size_t)m0 * N + n0;
                ldd = N;
                b = 0.0f;
            } else {
                dst = C + (size_t)m0 * ldc + n0;
                ldd = ldc;
                if (init != INIT_NONE) {
                    for (int i = 0; i < mm; i++) {
                        float *row = dst + (size_t)i * ldc;
                        if (init == INIT_ADD) for (int j = 0; j < nn; j++) row[j] += bias[n0 + j];
                        else if (bias) for (int j = 0; j < nn; j++) row[j] = bias[n0 + j];
                        else for (int j = 0; j < nn; j++) row[j] = 0.0f;
                    }
                    b = 1.0f;
                }
            }
            for (int p0 = n0; p0 < n0 + nn;) {
                const int sg = p0 / segN, p1 = n0 + nn < (sg + 1) * segN ? n0 + nn : (sg + 1) * segN;
                const int off = p0 - sg * segN;
                if (kept && kept[sg]) { /* the thin kernel on the kept panels of this piece of Wᵀ */
                    const int L = SDB_THIN_GEMM_PANEL;
                    assert(panels && transB && off % L == 0); /* tiles start at multiples of 16 */
                    sdb_thin_gemm_panels(mm, p1 - p0, kk, Ap, lda, kept[sg] + (size_t)(off / L) * ldb * L + (size_t)k0 * L,
                                         (size_t)ldb * L, b, dst + (p0 - n0), ldd);
                    p0 = p1;
                    continue;
                }
                const float *Bp = transB ? Bs[sg] + (size_t)off * ldb + k0 : Bs[sg] + (size_t)k0 * ldb + off;
                if (panels && transB && !small) { /* the thin kernel on this piece of Wᵀ made into panels */
                    float *own = panels + (size_t)omp_get_thread_num() * panels_per_thread;
                    sdb_thin_gemm_make_panels_t(p1 - p0, kk, Bp, ldb, own);
                    sdb_thin_gemm_panels(mm, p1 - p0, kk, Ap, lda, own, (size_t)kk * SDB_THIN_GEMM_PANEL, b,
                                         dst + (p0 - n0), ldd);
                } else {
                    tile_gemm(small, transB, mm, p1 - p0, kk, Ap, lda, Bp, ldb, b, dst + (p0 - n0), ldd, NULL);
                }
                p0 = p1;
            }
        }
        if (g->ks > 1) {
#pragma omp for schedule(static)
            for (int i = 0; i < M; i++) {
                float *c = C + (size_t)i * ldc, *v = part + (size_t)i * N;
                for (int s = 1; s < g->ks; s++) { /* v = ((P0 + P1) + P2) + ... */
                    const float *ps = part + s * MN + (size_t)i * N;
                    for (int j = 0; j < N; j++) v[j] += ps[j];
                }
                if (init == INIT_SET) for (int j = 0; j < N; j++) c[j] = (bias ? bias[j] : 0.0f) + v[j];
                else if (init == INIT_ADD) for (int j = 0; j < N; j++) c[j] = (c[j] + bias[j]) + v[j];
                else for (int j = 0; j < N; j++) c[j] = beta == 0.0f ? v[j] : beta * c[j] + v[j];
            }
        }
    }
}

static void gemm_plan(sdb_par_rec *rec, const sdb_gemm_grid *g)
{
    const int nunits = sdb_gemm_grid_tiles(g), par = !gemm_is_small(g->M, g->N, g->K) && nunits > 1;
    double *cost = malloc((size_t)nunits * sizeof *cost);
    if (!cost) { rec->failed = 1; return; }
    for (int t = 0; t < nunits; t++) {
        int m0, mm, n0, nn, k0, kk;
        sdb_gemm_grid_tile(g, t, &m0, &mm, &n0, &nn, &k0, &kk);
        cost[t] = 2.0 * mm * nn * kk;
    }
    sdb_par_loop_add(rec, SDB_PAR_DYNAMIC, nunits, cost, 0, 0, par);
    free(cost);
    if (g->ks > 1) /* the partial sums' pass: one unit per row */
        sdb_par_loop_add(rec, SDB_PAR_STATIC, g->M, NULL, 4.0 * (g->ks + 2) * g->N, 1, par);
}

void sdb_gemm(int transB, int M, int N, int K, const float *A, int lda, const float *B, int ldb,
              float beta, float *C, int ldc)
{
    if (M <= 0 || N <= 0) return;
    const sdb_gemm_grid g = gemm_grid(M, N, K, 0);
    gemm_tiles(&g, transB, A, lda, &B, N, ldb, beta, C, ldc, INIT_NONE, NULL, NULL, NULL, 0, NULL);
}

void sdb_gemm_plan(int M, int N, int K, sdb_par_rec *rec)
{
    if (M <= 0 || N <= 0) return;
    sdb_par_op_begin(rec, SDB_PAR_GEMM, "gemm %dx%dx%d", M, N, K);
    const sdb_gemm_grid g = gemm_grid(M, N, K, 0);
    gemm_plan(rec, &g);
}

/* y [M, n·N] = x · [W_0; ...; W_{n-1}]ᵀ + bias (bias: n·N values or NULL), or += with accumulate:
 * one grid over the n·N columns, the n matrices as the segments of op(B). */
static int linear_segments(const float *x, int M, int K, const sdb_wmat *W, int n, const float *bias, int N,
                           float *y, int accumulate, sdb_arena *scratch, const float *const *kept)
{
    for (int s = 0; s < n; s++)
        if (!W[s].f32 && !scratch) return SDB_EINVAL;
    if (M <= 0 || N <= 0) return 0;
    enum { MAX_SEG = 8 };
    if (n < 1 || n > MAX_SEG) return SDB_EINVAL;
    size_t mark = scratch ? sdb_arena_mark(scratch) : 0;
    const int Nt = n * N;
    /* where the CPU prefers the thin-product kernel, each tile makes its piece of Wᵀ into panels
     * in its thread's buffer (the same arithmetic with or without scratch), or reads the panels
     * its owner keeps (whole panels: N a multiple of their width); a kept matrix is not widened */
    const int thin = !gemm_is_small(M, Nt, K) && sdb_thin_gemm_preferred();
    const float *kp[MAX_SEG], *w[MAX_SEG];
    for (int s = 0; s < n; s++) {
        kp[s] = thin && kept && N % SDB_THIN_GEMM_PANEL == 0 ? kept[s] : NULL;
        w[s] = kp[s] ? NULL : sdb_wmat_widen(W[s], (size_t)N * K, scratch);
        if (!kp[s] && !w[s]) {
            if (scratch) sdb_arena_reset(scratch, mark);
            return SDB_ENOMEM;
        }
    }
    /* the grid (and so the result) does not depend on whether there is scratch: without it, the
     * partial sums of a K-split product are allocated for the call */
    const sdb_gemm_grid g = gemm_grid(M, Nt, K, 1);
    float *part = NULL, *owned = NULL, *panels = NULL, *owned_panels = NULL;
    if (g.ks > 1) {
        const size_t np = (size_t)g.ks * M * Nt;
        part = scratch ? sdb_arena_floats(scratch, np) : (owned = malloc(np * sizeof(float)));
        if (!part) {
            if (scratch) sdb_arena_reset(scratch, mark);
            return SDB_ENOMEM;
        }
    }
    const size_t ppt = thin ? sdb_thin_gemm_panels_floats(g.nb, g.kb) : 0;
    if (thin) {
        const size_t np = (size_t)omp_get_max_threads() * ppt;
        panels = scratch ? sdb_arena_floats(scratch, np) : (owned_panels = malloc(np * sizeof(float)));
        if (!panels) {
            free(owned);
            if (scratch) sdb_arena_reset(scratch, mark);
            return SDB_ENOMEM;
        }
    }
    /* each tile first writes y = bias (or 0), or adds the bias, then adds its product (or the
     * partial sums' pass does, in that order) */
    const int init = accumulate ? (bias ? INIT_ADD : INIT_NONE) : INIT_SET;
    gemm_tiles(&g, 1, x, K, w, N, K, 1.0f, y, Nt, init, bias, part, panels, ppt, kp);
    free(owned);
    free(owned_panels);
    if (scratch) sdb_arena_reset(scratch, mark);
    return 0;
}

int sdb_gemm_linear(const float *x, int M, int K, sdb_wmat W, const float *bias, int N, float *y,
                    int accumulate, sdb_arena *scratch)
{
    return linear_segments(x, M, K, &W, 1, bias, N, y, accumulate, scratch, NULL);
}

int sdb_gemm_linear_kept(const float *x, int M, int K, sdb_wmat W, const float *panels, const float *bias, int N,
                         float *y, int accumulate, sdb_arena *scratch)
{
    return linear_segments(x, M, K, &W, 1, bias, N, y, accumulate, scratch, &panels);
}

int sdb_gemm_linear_cat_kept(const float *x, int M, int K, const sdb_wmat *W, const float *const *panels, int n,
                             int N, float *y, sdb_arena *scratch)
{
    return linear_segments(x, M, K, W, n, NULL, N, y, 0, scratch, panels);
}

size_t sdb_linear_panels_floats(int N, int K)
{
    if (!sdb_thin_gemm_preferred()) return 0;
    return sdb_thin_gemm_panels_floats(N, K);
}

int sdb_linear_make_panels(sdb_wmat W, int N, int K, float *panels)
{
    float *wide = NULL;
    const float *w = W.f32;
    if (!w) {
        if (!W.f16 || !(wide = malloc(sizeof(float) * (size_t)N * K))) return SDB_ENOMEM;
        sdb_f16_to_f32_array(W.f16, wide, (size_t)N * K);
        w = wide;
    }
    sdb_thin_gemm_make_panels_t(N, K, w, K, panels);
    free(wide);
    return 0;
}

int sdb_gemm_linear_cat(const float *x, int M, int K, const sdb_wmat *W, int n, int N, float *y,
                        sdb_arena *scratch)
{
    return linear_segments(x, M, K, W, n, NULL, N, y, 0, scratch, NULL);
}

void sdb_gemm_linear_plan(int M, int K, int N, sdb_par_rec *rec)
{
    if (M <= 0 || N <= 0) return;
    sdb_par_op_begin(rec, SDB_PAR_GEMM, "linear %d->%d, %d rows", K, N, M);
    const sdb_gemm_grid g = gemm_grid(M, N, K, 1);
    gemm_plan(rec, &g);
}

/* ---- convolution ----
 * The product y[n][cout, pixel] = W[cout, K] · col[K, column] over the columns of every image's
 * output pixels one after the other (column j: image j / HWo, pixel j % HWo), cut by the GEMM grid
 * (at most CONV_NB_MAX columns per tile, K slices when that balances better). Without a shared
 * im2col, a unit's task builds the im2col panel of its own columns and K slice (in chunks of at
 * most CONV_KC_MAX rows) in its thread's buffer: no shared im2col, no barrier between copy and
 * product, bounded scratch for any image size. When the grid cuts cout (several tiles share a
 * column block: the small latents) and the whole im2col matrix fits CONV_SHARED_BYTES, it is built
 * once instead, in a parallel pass before the units, which read it in place.
 * Unsplit, a unit runs its product into the thread's tile buffer and writes y = (residual + bias)
 * + product; with K slices, units write their slice's partial sums and a last pass writes
 * y = (residual + bias) + (slice 0 + slice 1 + ...), in slice order. */
#define CONV_NB_MAX 256
#define CONV_KC_MAX 2304
#define CONV_SHARED_BYTES ((size_t)96 << 20)

typedef struct conv_layout {
    int Ho, Wo, HWo, K, ncols;
    int small;            /* the whole product is small: serial, gemm_small */
    int shared;           /* one im2col matrix [K, ncols] for all units */
    sdb_gemm_grid g;      /* over cout x ncols x K */
} conv_layout;

static int conv_layout_of(const sdb_conv2d *c, int N, int H, int W, conv_layout *L)
{
    sdb_conv2d_out_size(c, H, W, &L->Ho, &L->Wo);
    if (L->Ho <= 0 || L->Wo <= 0 || N <= 0) return SDB_EINVAL;
    L->HWo = L->Ho * L->Wo;
    L->K = c->cin * c->k * c->k;
    L->ncols = N * L->HWo;
    L->small = gemm_is_small(c->cout, L->ncols, L->K);
    L->g = sdb_gemm_grid_of(c->cout, L->ncols, L->K, CONV_NB_MAX, !L->small);
    L->shared = L->g.nmc > 1 && (size_t)L->K * L->ncols * sizeof(float) <= CONV_SHARED_BYTES;
    return 0;
}

/* Rows per im2col chunk of a K slice of kk rows: equal chunks of at most CONV_KC_MAX. */
static int conv_chunk(int kk)
{
    const int n = (kk + CONV_KC_MAX - 1) / CONV_KC_MAX;
    return (kk + n - 1) / n;
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

/* y[n][co][p] = (residual + bias) + v for output rows co of columns n0 .. n0+nn-1 */
static void conv_store(const sdb_conv2d *c, const conv_layout *L, int co, int n0, int nn,
                       const float *v, float *y, const float *res, const float *bias_n)
{
    const int HWo = L->HWo, cout = c->cout;
    for (int j = n0; j < n0 + nn;) {
        const int n = j / HWo, p = j % HWo, len = HWo - p < n0 + nn - j ? HWo - p : n0 + nn - j;
        const float b = bias_n ? bias_n[(size_t)n * cout + co] : c->b ? c->b[co] : 0.0f;
        const size_t o = ((size_t)n * cout + co) * HWo + p;
        float *d = y + o;
        const float *s = v + (j - n0);
        if (res) {
            const float *r = res + o;
            for (int e = 0; e < len; e++) d[e] = (r[e] + b) + s[e];
        } else {
            for (int e = 0; e < len; e++) d[e] = b + s[e];
        }
        j += len;
    }
}

static void conv_unit(const sdb_conv2d *c, const float *w, const float *x, int H, int W,
                      const conv_layout *L, int t, float *y, const float *res, const float *bias_n,
                      const float *shared_col, float *colbuf, float *cbuf, float *part, float *pack)
{
    int m0, mm, n0, nn, k0, kk;
    sdb_gemm_grid_tile(&L->g, t, &m0, &mm, &n0, &nn, &k0, &kk);
    const int split = L->g.ks > 1;
    /* the product's destination: the slice's partial sums, or the thread's tile buffer */
    float *dst = split ? part + (size_t)(k0 / L->g.kb) * c->cout * L->ncols + (size_t)m0 * L->ncols + n0 : cbuf;
    const int ldd = split ? L->ncols : nn;
    if (shared_col) {
        tile_gemm(L->small, 0, mm, nn, kk, w + (size_t)m0 * L->K + k0, L->K,
                  shared_col + (size_t)k0 * L->ncols + n0, L->ncols, 0.0f, dst, ldd, pack);
    } else {
        const int kc = conv_chunk(kk);
        for (int q0 = k0; q0 < k0 + kk; q0 += kc) {
            const int q1 = q0 + kc < k0 + kk ? q0 + kc : k0 + kk;
            im2col_cols(c, x, H, W, L, q0, q1, n0, nn, colbuf);
            tile_gemm(L->small, 0, mm, nn, q1 - q0, w + (size_t)m0 * L->K + q0, L->K, colbuf, nn,
                      q0 > k0 ? 1.0f : 0.0f, dst, ldd, pack);
        }
    }
    if (!split)
        for (int i = 0; i < mm; i++) conv_store(c, L, m0 + i, n0, nn, cbuf + (size_t)i * nn, y, res, bias_n);
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
    const int nunits = sdb_gemm_grid_tiles(&L.g), ks = L.g.ks;
    const int par = !L.small && nunits > 1;
    const int nthreads = par ? omp_get_max_threads() : 1;
    const size_t colsz = L.shared ? 0 : (size_t)conv_chunk(L.g.kb) * L.g.nb;
    const size_t csz = ks > 1 ? 0 : (size_t)L.g.mb * L.g.nb;
    const size_t packsz = !L.small && sdb_thin_gemm_preferred() ? sdb_thin_gemm_pack_floats() : 0;
    const size_t MN = (size_t)c->cout * L.ncols;
    float *bufs = sdb_arena_floats(scratch, (size_t)nthreads * (colsz + csz + packsz) + 1);
    float *col = L.shared ? sdb_arena_floats(scratch, (size_t)L.K * L.ncols) : NULL;
    float *part = ks > 1 ? sdb_arena_floats(scratch, (size_t)ks * MN) : NULL;
    if (!bufs || (L.shared && !col) || (ks > 1 && !part)) { sdb_arena_reset(scratch, mark); return SDB_ENOMEM; }
#pragma omp parallel if (par)
    {
        if (L.shared) {
#pragma omp for schedule(static)
            for (int row = 0; row < L.K; row++)
                im2col_cols(c, x, H, W, &L, row, row + 1, 0, L.ncols, col + (size_t)row * L.ncols);
        }
#pragma omp for schedule(dynamic, 1)
        for (int t = 0; t < nunits; t++) {
            float *own = bufs + (size_t)omp_get_thread_num() * (colsz + csz + packsz);
            conv_unit(c, w, x, H, W, &L, t, y, residual, bias_n, col, own, own + colsz, part,
                      packsz ? own + colsz + csz : NULL);
        }
        if (ks > 1) {
#pragma omp for schedule(static)
            for (int co = 0; co < c->cout; co++) {
                float *p0 = part + (size_t)co * L.ncols;
                for (int s = 1; s < ks; s++) {
                    const float *ps = part + s * MN + (size_t)co * L.ncols;
                    for (int j = 0; j < L.ncols; j++) p0[j] += ps[j];
                }
                conv_store(c, &L, co, 0, L.ncols, p0, y, residual, bias_n);
            }
        }
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
    const int nunits = sdb_gemm_grid_tiles(&L.g), par = !L.small && nunits > 1;
    if (L.shared) /* the im2col pass: one unit per row of K */
        sdb_par_loop_add(rec, SDB_PAR_STATIC, L.K, NULL, 8.0 * L.ncols, 1, par);
    double *cost = malloc((size_t)nunits * sizeof *cost);
    if (!cost) { rec->failed = 1; return; }
    for (int t = 0; t < nunits; t++) {
        int m0, mm, n0, nn, k0, kk;
        sdb_gemm_grid_tile(&L.g, t, &m0, &mm, &n0, &nn, &k0, &kk);
        cost[t] = 2.0 * mm * nn * kk;
    }
    sdb_par_loop_add(rec, SDB_PAR_DYNAMIC, nunits, cost, 0, 0, par);
    free(cost);
    if (L.g.ks > 1) /* the slices' sums and the store: one unit per output channel */
        sdb_par_loop_add(rec, SDB_PAR_STATIC, c->cout, NULL, 4.0 * (L.g.ks + 2) * L.ncols, 1, par);
}
