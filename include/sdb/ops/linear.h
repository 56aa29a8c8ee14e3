/*
 * linear.h — dense layers on OpenBLAS.
 */
#ifndef SDB_OPS_LINEAR_H
#define SDB_OPS_LINEAR_H

/* torch.nn.Linear on a row-major batch: y[M,N] = x[M,K] · W[N,K]^T (+ bias[N] when not NULL).
 * W is used in its stored [out, in] layout (no transposed copy). y must not alias x. */
void sdb_linear(const float *x, int M, int K, const float *W, const float *bias, int N, float *y);
/* Same, accumulating: y += x · W^T (+ bias). Used for fused residual adds. */
void sdb_linear_acc(const float *x, int M, int K, const float *W, const float *bias, int N, float *y);

#endif
