/*
 * linear.c — torch.nn.Linear (see linear.h), on the thread-count-independent block GEMM of
 * conv.h: OpenBLAS's own threading splits products differently for 1 and 2 threads and so does not
 * give bit-identical results; sdb_gemm's block grid depends only on the shapes.
 */
#include "sdb/ops/linear.h"
#include "sdb/ops/conv.h"

int sdb_linear(const float *x, int M, int K, sdb_wmat W, const float *bias, int N, float *y,
               sdb_arena *scratch)
{
    return sdb_gemm_linear(x, M, K, W, bias, N, y, 0, scratch);
}

int sdb_linear_acc(const float *x, int M, int K, sdb_wmat W, const float *bias, int N, float *y,
                   sdb_arena *scratch)
{
    return sdb_gemm_linear(x, M, K, W, bias, N, y, 1, scratch);
}
