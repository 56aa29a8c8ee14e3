/*
 * linear.h — dense layers (torch.nn.Linear) on the thread-count-independent GEMM of conv.h.
 */
#ifndef SDB_OPS_LINEAR_H
#define SDB_OPS_LINEAR_H

#include "sdb/ops/conv.h"

/* torch.nn.Linear on a row-major batch: y[M,N] = x[M,K] · W[N,K]^T (+ bias[N] when not NULL).
 * W is used in its stored [out, in] layout (no transposed copy); a half W is widened into
 * `scratch` for the call. y must not alias x. Returns 0 or an error code (sdb_gemm_linear). */
int sdb_linear(const float *x, int M, int K, sdb_wmat W, const float *bias, int N, float *y,
               sdb_arena *scratch);
/* Same, accumulating: y += x · W^T (+ bias). Used for fused residual adds. */
int sdb_linear_acc(const float *x, int M, int K, sdb_wmat W, const float *bias, int N, float *y,
                   sdb_arena *scratch);

#endif
