/*
 * norm.c — LayerNorm (see norm.h).
 *
 * Per row: the mean and biased variance of sdb_groupnorm_stats (double sums in 4 interleaved
 * partial sums, two passes: vectorised on AVX2 CPUs, bit-exact on every path), then
 * y = ((x - mean) * rstd) * gamma + beta in float with each operation rounded (no fused
 * multiply-add), 8 lanes at a time on AVX2 CPUs (the same operations as the scalar loop, so the
 * same bits). Rows are independent: the result never depends on the thread count.
 */
#include "sdb/ops/norm.h"
#include "sdb/ops/groupnorm.h"
#include "sdb/ops/par.h"
#include "vexp.h"

#include <immintrin.h>
#include <math.h>
#include <stddef.h>

static int layernorm_parallel(int rows, int dim) { return (long)rows * dim > 32768; }

void sdb_layernorm_plan(int rows, int dim, sdb_par_rec *rec)
{
    sdb_par_op_begin(rec, SDB_PAR_NORM, "layernorm %d x %d", rows, dim);
    sdb_par_loop_add(rec, SDB_PAR_STATIC, rows, NULL, 16.0 * dim, 1, layernorm_parallel(rows, dim));
}

/* yr[i] = ((xr[i] - m) * rstd) * gamma[i] + beta[i] for i0 <= i < dim */
static void ln_row_tail(const float *xr, float *yr, int i0, int dim, float m, float rstd,
                        const float *gamma, const float *beta)
{
    for (int i = i0; i < dim; i++) {
        float n = (xr[i] - m) * rstd;
        yr[i] = n * (gamma ? gamma[i] : 1.0f) + (beta ? beta[i] : 0.0f);
    }
}

__attribute__((target("avx2")))
static void ln_row_avx2(const float *xr, float *yr, int dim, float m, float rstd, const float *gamma,
                        const float *beta)
{
    const __m256 vm = _mm256_set1_ps(m), vr = _mm256_set1_ps(rstd), one = _mm256_set1_ps(1.0f);
    const __m256 zero = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= dim; i += 8) {
        __m256 n = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(xr + i), vm), vr);
        __m256 g = gamma ? _mm256_loadu_ps(gamma + i) : one, b = beta ? _mm256_loadu_ps(beta + i) : zero;
        _mm256_storeu_ps(yr + i, _mm256_add_ps(_mm256_mul_ps(n, g), b));
    }
    ln_row_tail(xr, yr, i, dim, m, rstd, gamma, beta);
}

void sdb_layernorm(const float *x, int rows, int dim, const float *gamma, const float *beta,
                   float eps, float *y)
{
    const int avx2 = sdb_vexp_have_avx2();
#pragma omp parallel for schedule(static) if (layernorm_parallel(rows, dim))
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * dim;
        float *yr = y + (size_t)r * dim;
        double mean, var;
        sdb_groupnorm_stats(xr, (size_t)dim, &mean, &var);
        const float rstd = (float)(1.0 / sqrt(var + (double)eps)), m = (float)mean;
        if (avx2) ln_row_avx2(xr, yr, dim, m, rstd, gamma, beta);
        else ln_row_tail(xr, yr, 0, dim, m, rstd, gamma, beta);
    }
}
