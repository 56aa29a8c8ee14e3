/*
 * activation.c — element-wise activations (see activation.h). libm expf/erff: deterministic and
 * independent of the thread split.
 */
#include "sdb/ops/activation.h"

#include <math.h>

#define PAR_IF(n) if ((n) > 65536)

void sdb_silu(float *x, size_t n)
{
#pragma omp parallel for schedule(static) PAR_IF(n)
    for (size_t i = 0; i < n; i++) x[i] = x[i] / (1.0f + expf(-x[i]));
}

static inline float gelu1(float v) { return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f)); }

void sdb_gelu(float *x, size_t n)
{
#pragma omp parallel for schedule(static) PAR_IF(n)
    for (size_t i = 0; i < n; i++) x[i] = gelu1(x[i]);
}

void sdb_quick_gelu(float *x, size_t n)
{
#pragma omp parallel for schedule(static) PAR_IF(n)
    for (size_t i = 0; i < n; i++) x[i] = x[i] / (1.0f + expf(-1.702f * x[i]));
}

void sdb_geglu(const float *h, int rows, int dim, float *out)
{
#pragma omp parallel for schedule(static) PAR_IF((size_t)rows * dim)
    for (int r = 0; r < rows; r++) {
        const float *a = h + (size_t)r * 2 * dim, *b = a + dim;
        float *o = out + (size_t)r * dim;
        for (int i = 0; i < dim; i++) o[i] = a[i] * gelu1(b[i]);
    }
}

void sdb_add(float *y, const float *x, size_t n)
{
#pragma omp parallel for schedule(static) PAR_IF(n)
    for (size_t i = 0; i < n; i++) y[i] += x[i];
}

void sdb_scale(float *y, float s, size_t n)
{
#pragma omp parallel for schedule(static) PAR_IF(n)
    for (size_t i = 0; i < n; i++) y[i] *= s;
}
