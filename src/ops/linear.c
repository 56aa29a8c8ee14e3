/*
 * linear.c — torch.nn.Linear as one cblas_sgemm (see linear.h).
 */
#include "sdb/ops/linear.h"

#include <cblas.h>
#include <stddef.h>

static void add_bias(float *y, int M, int N, const float *bias)
{
    if (!bias) return;
#pragma omp parallel for schedule(static) if ((long)M * N > 65536)
    for (int i = 0; i < M; i++) {
        float *row = y + (size_t)i * N;
        for (int j = 0; j < N; j++) row[j] += bias[j];
    }
}

void sdb_linear(const float *x, int M, int K, const float *W, const float *bias, int N, float *y)
{
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, x, K, W, K, 0.0f, y, N);
    add_bias(y, M, N, bias);
}

void sdb_linear_acc(const float *x, int M, int K, const float *W, const float *bias, int N, float *y)
{
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, x, K, W, K, 1.0f, y, N);
    add_bias(y, M, N, bias);
}
