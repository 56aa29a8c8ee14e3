/*
 * conv.h — 2-D convolution on OpenBLAS GEMMs (NCHW activations, torch weight layout), and the
 * thread-count-independent GEMMs it runs on.
 *
 * Weight matrices come as an sdb_wmat: float32, or IEEE half (a model kept as F16 in memory). A
 * half matrix is widened to float32 (exactly) into the arena at the start of each call and the
 * float32 GEMM runs on that, so its results are bit-identical to passing the widened matrix.
 */
#ifndef SDB_OPS_CONV_H
#define SDB_OPS_CONV_H

#include <stdint.h>
#include "sdb/arena.h"
#include "sdb/ops/par.h"

/* A weight matrix: exactly one of the two is set. */
typedef struct sdb_wmat {
    const float *f32;
    const uint16_t *f16; /* IEEE half bits */
} sdb_wmat;

static inline sdb_wmat sdb_wmat_f32(const float *w) { sdb_wmat m = {w, 0}; return m; }
static inline sdb_wmat sdb_wmat_f16(const uint16_t *w) { sdb_wmat m = {0, w}; return m; }
/* float32 view of a weight matrix of n elements: the matrix itself, or (half) an exactly widened
 * copy in the arena (the caller releases it with its other scratch). NULL when the arena is
 * exhausted. For a caller that runs one matrix several times: widen once, pass sdb_wmat_f32. */
const float *sdb_wmat_widen(sdb_wmat w, size_t n, sdb_arena *scratch);

typedef struct sdb_conv2d {
    int cin, cout;
    int k;                          /* square kernel: 1 or 3 */
    int stride;                     /* 1 or 2 */
    int pad_t, pad_l, pad_b, pad_r; /* zero padding per side */
    sdb_wmat w;                     /* [cout, cin, k, k], as torch stores it */
    const float *b;                 /* [cout] or NULL */
    const float *U;                 /* its Winograd-transformed filter (sdb_winograd_filter) when
                                     * its owner keeps one, else NULL: made per call */
    int U_tile;                     /* the transform U holds: 0 or 4 F(4x4, 3x3), 2 F(2x2, 3x3)
                                     * (sdb_winograd2_filter); a call on the other path makes its own */
} sdb_conv2d;

/* Output size for an H x W input. */
void sdb_conv2d_out_size(const sdb_conv2d *c, int H, int W, int *Ho, int *Wo);
/* y = conv(x) (+ residual when not NULL, same shape as y): x [N, cin, H, W] -> y [N, cout, Ho, Wo].
 * y must not alias x. Scratch (per thread an im2col panel and an output tile, together under
 * 3 MiB; a half weight matrix widened) comes from the arena and is released before returning.
 * Results are identical for any thread count. Returns 0 or SDB_ENOMEM. */
int sdb_conv2d_forward(const sdb_conv2d *c, const float *x, int N, int H, int W, float *y,
                       const float *residual, sdb_arena *scratch);

/* Same, with a bias per image: bias_n [N, cout] in place of c->b (a resnet's conv1, whose bias
 * carries each image's time embedding); NULL = c->b. */
int sdb_conv2d_forward_bias(const sdb_conv2d *c, const float *x, int N, int H, int W, float *y,
                            const float *residual, const float *bias_n, sdb_arena *scratch);
/* Records the work units of that call into `rec` (par.h) without computing. */
void sdb_conv2d_plan(const sdb_conv2d *c, int N, int H, int W, sdb_par_rec *rec);

/* Thread-count-independent GEMMs (OpenBLAS's own threading is not bit-reproducible across thread
 * counts): the product is cut into a block grid that depends only on the shapes, blocks run in an
 * OpenMP loop, each a single-threaded sgemm. Row-major:
 *   C[M,N] = A[M,K] · op(B) + beta * C, op(B) = B [K,N] (transB 0) or Bᵀ with B [N,K] (transB 1).
 * Call outside OpenMP parallel regions (it opens its own). Bit-identity across thread counts holds
 * when the counts are set with sdb_threads_set (OpenBLAS single-threaded inside the blocks relies
 * on its OpenMP build seeing an active parallel region, or on its own count being 1). */
void sdb_gemm(int transB, int M, int N, int K, const float *A, int lda, const float *B, int ldb,
              float beta, float *C, int ldc);
/* torch.nn.Linear on sdb_gemm: y[M,N] = x[M,K] · W[N,K]ᵀ + bias (bias may be NULL); with
 * `accumulate`, y += x · Wᵀ + bias. Bit-identical for any thread count. y must not alias x.
 * `scratch` holds a half W widened and the partial sums of a product whose K the grid slices
 * (may be NULL for a float32 W: those are then allocated for the call; results are the same). Returns 0, SDB_ENOMEM when the
 * scratch is exhausted, or SDB_EINVAL for a half W without scratch. */
int sdb_gemm_linear(const float *x, int M, int K, sdb_wmat W, const float *bias, int N, float *y,
                    int accumulate, sdb_arena *scratch);
/* n bias-free linear layers of one input as one product: y [M, n·N] (row i: x_i·W_0ᵀ, then
 * x_i·W_1ᵀ, ...) = x[M,K] · [W_0; ...; W_{n-1}]ᵀ, each W_s [N,K]; 1 <= n <= 8. The matrices are
 * used where they lie (no concatenated copy): one block grid over the n·N output columns, a block
 * whose columns span two matrices running one sgemm per piece. Otherwise as sdb_gemm_linear
 * (bit-identical for any thread count, the same errors); its plan is sdb_gemm_linear_plan(M, K, n·N). */
int sdb_gemm_linear_cat(const float *x, int M, int K, const sdb_wmat *W, int n, int N, float *y,
                        sdb_arena *scratch);
/* Kept weights for the thin-product kernel (thin_gemm.h): where the CPU prefers it, a linear
 * layer's tiles each make their piece of Wᵀ into panels; an owner that runs a W in many calls can
 * keep them made whole instead (sdb_linear_make_panels into sdb_linear_panels_floats(N, K) floats;
 * 0 where the kernel does not run: nothing to keep) and pass them with W (NULL: made per tile).
 * The results are the same bits either way. */
size_t sdb_linear_panels_floats(int N, int K);
int sdb_linear_make_panels(sdb_wmat W, int N, int K, float *panels);
int sdb_gemm_linear_kept(const float *x, int M, int K, sdb_wmat W, const float *panels, const float *bias, int N,
                         float *y, int accumulate, sdb_arena *scratch);
int sdb_gemm_linear_cat_kept(const float *x, int M, int K, const sdb_wmat *W, const float *const *panels, int n,
                             int N, float *y, sdb_arena *scratch);
/* The work units of sdb_gemm / sdb_gemm_linear with these shapes, recorded into `rec`. */
void sdb_gemm_plan(int M, int N, int K, sdb_par_rec *rec);
void sdb_gemm_linear_plan(int M, int K, int N, sdb_par_rec *rec);

#endif
