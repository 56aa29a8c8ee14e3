/*
 * conv.c — 2-D convolution as im2col tiles + cblas_sgemm (see conv.h).
 *
 * For each image n: y[cout, Ho*Wo] = W[cout, cin*k*k] · col[cin*k*k, Ho*Wo] (+ bias, + residual),
 * with W used in torch's [cout, cin, k, k] layout as it is (no repacked copy). col is built in
 * tiles of whole output rows so the scratch stays bounded (SDB_CONV_TILE_BYTES); each tile's GEMM
 * writes its column range of y directly (ldc = Ho*Wo). 1x1 stride-1 unpadded convs skip im2col.
 *
 * Parallelism and determinism: OpenBLAS's own threading is NOT bit-reproducible across thread
 * counts (its M/N split changes which micro-kernel edge path an element goes through), so each
 * tile's GEMM is cut into a fixed grid of blocks (grid_of: chosen from the shapes only) that run as OpenMP tasks, each a single-threaded sgemm (OpenBLAS's OpenMP build
 * runs single-threaded inside an active parallel region). im2col is a parallel pure copy. Results
 * are therefore identical for any thread count (tests/test_ops_conv.c checks 1 vs 2 threads).
 *
 * Half weight matrices (sdb_wmat.f16) are widened into the arena once per call (sdb_wmat_widen: an
 * exact conversion, split over the threads) and then used exactly like float32 ones.
 */
#include "sdb/ops/conv.h"
#include "sdb/error.h"
#include "sdb/fp16.h"

#include <cblas.h>
#include <stddef.h>
#include <string.h>

/* im2col tile budget: big enough that the weight matrix (packed by OpenBLAS once per GEMM call)
 * is amortised over many output columns, small enough to stay a bounded scratch. */
#define SDB_CONV_TILE_BYTES ((size_t)32 << 20)
/* Lower bound on a tile's output columns (whole rows are taken anyway), so that very deep convs
 * (K = 2560*9) still run GEMMs with a reasonable N. */
#define SDB_CONV_MIN_COLS 512

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

/* col[(ci*k+ky)*k+kx][(r-r0)*Wo + ox] (row stride ldcol) for output rows r0..r1-1 of image
 * x [cin, H, W].
 * Called inside a parallel region (orphaned omp for). */
static void im2col_tile(const sdb_conv2d *c, const float *x, int H, int W, int Wo, int r0, int r1,
                        float *col, int ldcol)
{
    const int k = c->k, s = c->stride, kk = k * k;
    const int K = c->cin * kk;
#pragma omp for schedule(static)
    for (int row = 0; row < K; row++) {
        int ci = row / kk, ky = (row % kk) / k, kx = row % k;
        const float *xc = x + (size_t)ci * H * W;
        float *dst = col + (size_t)row * ldcol;
        /* valid ox range: 0 <= ox*s + kx - pad_l < W */
        int off = kx - c->pad_l;
        int ox_lo = off >= 0 ? 0 : (-off + s - 1) / s;
        int ox_hi = (W - 1 - off) >= 0 ? (W - 1 - off) / s + 1 : 0; /* exclusive */
        if (ox_hi > Wo) ox_hi = Wo;
        if (ox_lo > ox_hi) ox_lo = ox_hi;
        for (int r = r0; r < r1; r++) {
            float *d = dst + (size_t)(r - r0) * Wo;
            int iy = r * s + ky - c->pad_t;
            if (iy < 0 || iy >= H) {
                memset(d, 0, sizeof(float) * Wo);
                continue;
            }
            const float *xr = xc + (size_t)iy * W;
            for (int ox = 0; ox < ox_lo; ox++) d[ox] = 0.0f;
            if (s == 1) {
                if (ox_hi > ox_lo) memcpy(d + ox_lo, xr + ox_lo + off, sizeof(float) * (ox_hi - ox_lo));
            } else {
                for (int ox = ox_lo; ox < ox_hi; ox++) d[ox] = xr[ox * s + off];
            }
            for (int ox = ox_hi; ox < Wo; ox++) d[ox] = 0.0f;
        }
    }
}

/* y = bias (+ residual), so that the GEMMs accumulate with beta = 1. */
static void init_out(const sdb_conv2d *c, float *y, const float *res, size_t HWo)
{
    const int cout = c->cout;
#pragma omp parallel for schedule(static) if ((size_t)cout * HWo > 65536)
    for (int co = 0; co < cout; co++) {
        float *d = y + (size_t)co * HWo;
        float b = c->b ? c->b[co] : 0.0f;
        if (res) {
            const float *r = res + (size_t)co * HWo;
            for (size_t i = 0; i < HWo; i++) d[i] = r[i] + b;
        } else {
            for (size_t i = 0; i < HWo; i++) d[i] = b;
        }
    }
}

/* The fixed block grid of an M x N product, depending on the shapes only. OpenBLAS re-packs both
 * operand blocks of every call (a block of A: mb x K, of B: K x nb), so blocks are made as large and
 * as square as possible (packing cost ~ K (mb + nb) per 2 mb nb K flops): start from chunks of at
 * most SDB_GEMM_BLOCK_MAX along each dimension, then halve the larger block side until there are
 * at least SDB_GEMM_MIN_TASKS blocks (an even count keeps 2 threads balanced) or the sides reach
 * SDB_GEMM_BLOCK_MIN. */
#define SDB_GEMM_BLOCK_MAX 1024
#define SDB_GEMM_BLOCK_MIN 96
#define SDB_GEMM_MIN_TASKS 4
static int chunk_of(int dim, int parts)
{
    int c = (dim + parts - 1) / parts;
    c = (c + 15) & ~15;
    return c < dim ? c : dim;
}
static void grid_of(int M, int N, int *mb, int *nb)
{
    int pm = (M + SDB_GEMM_BLOCK_MAX - 1) / SDB_GEMM_BLOCK_MAX;
    int pn = (N + SDB_GEMM_BLOCK_MAX - 1) / SDB_GEMM_BLOCK_MAX;
    for (;;) {
        int cm = chunk_of(M, pm), cn = chunk_of(N, pn);
        int tm = (M + cm - 1) / cm, tn = (N + cn - 1) / cn;
        if (tm * tn >= SDB_GEMM_MIN_TASKS) break;
        if (cm >= cn && cm >= 2 * SDB_GEMM_BLOCK_MIN) pm *= 2;
        else if (cn >= 2 * SDB_GEMM_BLOCK_MIN) pn *= 2;
        else if (cm >= 2 * SDB_GEMM_BLOCK_MIN) pm *= 2;
        else break;
    }
    *mb = chunk_of(M, pm);
    *nb = chunk_of(N, pn);
    if (*mb < 1) *mb = 1;
    if (*nb < 1) *nb = 1;
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

/* C (+)= A · op(B) over the block grid; each block a single-threaded sgemm. Called inside a
 * parallel region (orphaned omp for) — or, for small products (gemm_is_small), outside any, where
 * it runs gemm_small on the calling thread. */
static void gemm_grid_body(int transB, int M, int N, int K, const float *A, int lda, const float *B,
                           int ldb, float beta, float *C, int ldc)
{
    if (gemm_is_small(M, N, K)) {
#pragma omp single
        gemm_small(transB, M, N, K, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    int mb, nb;
    grid_of(M, N, &mb, &nb);
    const int nmc = (M + mb - 1) / mb, ncc = (N + nb - 1) / nb;
    const int ntasks = nmc * ncc;
#pragma omp for schedule(dynamic, 1)
    for (int t = 0; t < ntasks; t++) {
        int jc = t / nmc, im = t % nmc;
        int n0 = jc * nb, nn = N - n0 < nb ? N - n0 : nb;
        int m0 = im * mb, mm = M - m0 < mb ? M - m0 : mb;
        const float *Bp = transB ? B + (size_t)n0 * ldb : B + n0;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, transB ? CblasTrans : CblasNoTrans, mm, nn, K, 1.0f,
                    A + (size_t)m0 * lda, lda, Bp, ldb, beta, C + (size_t)m0 * ldc + n0, ldc);
    }
}

void sdb_gemm(int transB, int M, int N, int K, const float *A, int lda, const float *B, int ldb,
              float beta, float *C, int ldc)
{
    if (M <= 0 || N <= 0) return;
    if (gemm_is_small(M, N, K)) {
        gemm_small(transB, M, N, K, A, lda, B, ldb, beta, C, ldc);
        return;
    }
#pragma omp parallel
    gemm_grid_body(transB, M, N, K, A, lda, B, ldb, beta, C, ldc);
}

int sdb_gemm_linear(const float *x, int M, int K, sdb_wmat W, const float *bias, int N, float *y,
                    int accumulate, sdb_arena *scratch)
{
    if (!W.f32 && !scratch) return SDB_EINVAL;
    size_t mark = W.f32 ? 0 : sdb_arena_mark(scratch);
    const float *w = sdb_wmat_widen(W, (size_t)N * K, scratch);
    if (!w) return SDB_ENOMEM;
    if (bias || !accumulate) {
#pragma omp parallel for schedule(static) if ((size_t)M * N > 65536)
        for (int i = 0; i < M; i++) {
            float *row = y + (size_t)i * N;
            if (accumulate) {
                for (int j = 0; j < N; j++) row[j] += bias[j];
            } else if (bias) {
                for (int j = 0; j < N; j++) row[j] = bias[j];
            } else {
                for (int j = 0; j < N; j++) row[j] = 0.0f;
            }
        }
    }
    sdb_gemm(1, M, N, K, x, K, w, K, 1.0f, y, N);
    if (!W.f32) sdb_arena_reset(scratch, mark);
    return 0;
}

/* Small images (low-resolution U-Net levels: 8x8, 16x16 latents): the GEMM of one image has so
 * few columns that packing the weights dominates, so all images go into one im2col matrix
 * [K, N*HWo] and one GEMM into a scratch [cout, N*HWo], scattered to NCHW with bias/residual. */
#define SDB_CONV_BATCH_MAX_HW 1024
/* im2col budget of that path (batches of 2+ images only: the U-Net's guidance pair, never the
 * batch-1 VAE): covers every SD 1.x conv at 8x8 and 16x16 and the 1280-channel ones at 32x32. */
#define SDB_CONV_BATCH_BYTES ((size_t)96 << 20)
static int conv_batched(const sdb_conv2d *c, const float *w, const float *x, int N, int H, int W,
                        int Ho, int Wo, float *y, const float *residual, sdb_arena *scratch)
{
    const size_t HW = (size_t)H * W, HWo = (size_t)Ho * Wo;
    const int K = c->cin * c->k * c->k, ncols = (int)(N * HWo), cout = c->cout;
    float *col = sdb_arena_floats(scratch, (size_t)K * ncols);
    float *tmp = sdb_arena_floats(scratch, (size_t)cout * ncols);
    if (!col || !tmp) return SDB_ENOMEM;
#pragma omp parallel if (!gemm_is_small(cout, ncols, K))
    {
        for (int n = 0; n < N; n++) /* each an omp for ending with a barrier */
            im2col_tile(c, x + (size_t)n * c->cin * HW, H, W, Wo, 0, Ho, col + (size_t)n * HWo, ncols);
        gemm_grid_body(0, cout, ncols, K, w, K, col, ncols, 0.0f, tmp, ncols);
#pragma omp for schedule(static)
        for (int t = 0; t < N * cout; t++) {
            int n = t / cout, co = t % cout;
            const float *src = tmp + (size_t)co * ncols + (size_t)n * HWo;
            float *dst = y + ((size_t)n * cout + co) * HWo;
            const float *r = residual ? residual + ((size_t)n * cout + co) * HWo : NULL;
            float b = c->b ? c->b[co] : 0.0f;
            /* same association as the unbatched path: (residual + bias) + product */
            for (size_t i = 0; i < HWo; i++) dst[i] = ((r ? r[i] : 0.0f) + b) + src[i];
        }
    }
    return 0;
}

int sdb_conv2d_forward(const sdb_conv2d *c, const float *x, int N, int H, int W, float *y,
                       const float *residual, sdb_arena *scratch)
{
    int Ho, Wo;
    sdb_conv2d_out_size(c, H, W, &Ho, &Wo);
    if (Ho <= 0 || Wo <= 0) return SDB_EINVAL;
    const size_t HW = (size_t)H * W, HWo = (size_t)Ho * Wo;
    const int K = c->cin * c->k * c->k;
    const int direct = c->k == 1 && c->stride == 1 && !c->pad_t && !c->pad_l && !c->pad_b && !c->pad_r;
    size_t mark = sdb_arena_mark(scratch);
    const float *w = sdb_wmat_widen(c->w, (size_t)c->cout * K, scratch);
    if (!w) return SDB_ENOMEM;
    if (N > 1 && HWo <= SDB_CONV_BATCH_MAX_HW &&
        (size_t)K * N * HWo * sizeof(float) <= SDB_CONV_BATCH_BYTES) {
        int rc = conv_batched(c, w, x, N, H, W, Ho, Wo, y, residual, scratch);
        sdb_arena_reset(scratch, mark);
        return rc;
    }

    int rows_per_tile = Ho;
    float *col = NULL;
    if (!direct) {
        size_t cols = SDB_CONV_TILE_BYTES / ((size_t)K * sizeof(float));
        if (cols < SDB_CONV_MIN_COLS) cols = SDB_CONV_MIN_COLS;
        rows_per_tile = (int)(cols / (size_t)Wo);
        if (rows_per_tile < 1) rows_per_tile = 1;
        if (rows_per_tile > Ho) rows_per_tile = Ho;
        col = sdb_arena_floats(scratch, (size_t)K * rows_per_tile * Wo);
        if (!col) { sdb_arena_reset(scratch, mark); return SDB_ENOMEM; }
    }

    for (int n = 0; n < N; n++) {
        const float *xn = x + (size_t)n * c->cin * HW;
        float *yn = y + (size_t)n * c->cout * HWo;
        const float *rn = residual ? residual + (size_t)n * c->cout * HWo : NULL;
        init_out(c, yn, rn, HWo);
        if (direct) {
            sdb_gemm(0, c->cout, (int)HW, K, w, K, xn, (int)HW, 1.0f, yn, (int)HWo);
            continue;
        }
        for (int r0 = 0; r0 < Ho; r0 += rows_per_tile) {
            int r1 = r0 + rows_per_tile < Ho ? r0 + rows_per_tile : Ho;
            int ncols = (r1 - r0) * Wo;
#pragma omp parallel if (!gemm_is_small(c->cout, ncols, K))
            {
                im2col_tile(c, xn, H, W, Wo, r0, r1, col, ncols); /* ends with a barrier */
                gemm_grid_body(0, c->cout, ncols, K, w, K, col, ncols, 1.0f, yn + (size_t)r0 * Wo,
                               (int)HWo);
            }
        }
    }
    sdb_arena_reset(scratch, mark);
    return 0;
}
