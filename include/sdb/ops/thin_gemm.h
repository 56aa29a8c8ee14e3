/*
 * thin_gemm.h — sdbatch's own single-threaded GEMM for the products of one grid tile:
 * C[M,N] (+)= A[M,K] · B[K,N], with A read in place (no packed copy: a convolution's weights, or a
 * linear layer's input rows) and B in 16-column panels (a conv tile's im2col columns or Winograd
 * tiles, packed per call; or a linear layer's Wᵀ, made per tile or kept by the model).
 *
 * Why: OpenBLAS packs A on every call. A convolution's weights are large and each of its tiles
 * is called with few columns, so that packing is a large share of the work (1280 x 32 x 11520,
 * the 4x4 level of a 256x256 U-Net: 58 GFLOP/s on one Zen 3 core against 92 for a square sgemm).
 * Here each element of A is broadcast from where it lies into a 6 x 16 block of accumulators, and
 * only B is read from 16-column panels.
 *
 * Arithmetic: every element of C is one chain of fused multiply-adds over k = 0 .. K-1 in order,
 * started from 0 (beta = 0) or from C (beta = 1). So the result does not depend on how a product
 * is cut into calls along M or N, nor on the blocking inside a call, nor on the thread count.
 *
 * Where: AVX2 with FMA. sdb_thin_gemm_preferred() says whether callers should use it on this CPU:
 * not where AVX-512 is (OpenBLAS's SkylakeX kernels are twice as wide), nor without AVX2 (no
 * kernel); callers then use cblas_sgemm.
 */
#ifndef SDB_OPS_THIN_GEMM_H
#define SDB_OPS_THIN_GEMM_H

#include <stddef.h>

/* 1 when this CPU can run sdb_thin_gemm (AVX2 and FMA). */
int sdb_thin_gemm_available(void);
/* 1 when callers should use it for thin products on this CPU (available, and no AVX-512), unless
 * the environment says SDB_THIN_GEMM=0 (OpenBLAS everywhere: for tests of that path and for
 * side-by-side timing; read on every call). */
int sdb_thin_gemm_preferred(void);
/* The widest tile (columns) callers give it: measured faster than OpenBLAS up to here. */
#define SDB_THIN_GEMM_MAX_N 128
/* Floats of packing scratch one call needs (any M, N, K): a thread's buffer. */
size_t sdb_thin_gemm_pack_floats(void);

/* C = (beta ? C : 0) + A · B; beta is 0 or 1. Row-major, leading dimensions lda, ldb, ldc;
 * pack: sdb_thin_gemm_pack_floats() floats. Returns 0, or -1 when not available (nothing done). */
int sdb_thin_gemm(int M, int N, int K, const float *A, int lda, const float *B, int ldb, float beta,
                  float *C, int ldc, float *pack);

/* B's columns as the kernel reads them, made once by a caller that runs several products on the
 * same B: panels[p][k][16] = B[k][16p + j] (zeros past N), ceil(N/16) x K x 16 floats. */
#define SDB_THIN_GEMM_PANEL 16
static inline size_t sdb_thin_gemm_panels_floats(int N, int K)
{
    return (size_t)(N + SDB_THIN_GEMM_PANEL - 1) / SDB_THIN_GEMM_PANEL * SDB_THIN_GEMM_PANEL * (size_t)K;
}
void sdb_thin_gemm_make_panels(int N, int K, const float *B, int ldb, float *panels);
/* The same panels from Bᵀ [N, K] (row stride ldbt): a linear layer's weights as they are stored. */
void sdb_thin_gemm_make_panels_t(int N, int K, const float *Bt, int ldbt, float *panels);
/* sdb_thin_gemm on B given as panels (no packing scratch): the same arithmetic, the same bits.
 * pstride: floats from one panel to the next (K x 16 as made above; more when B's rows are a part
 * of longer panels: panels + 16·k0 with the full panels' stride is rows k0 .. of B). */
int sdb_thin_gemm_panels(int M, int N, int K, const float *A, int lda, const float *panels, size_t pstride,
                         float beta, float *C, int ldc);

#endif
