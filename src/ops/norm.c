/*
 * norm.c — LayerNorm (see norm.h).
 */
#include "sdb/ops/norm.h"

#include <math.h>
#include <stddef.h>

void sdb_layernorm(const float *x, int rows, int dim, const float *gamma, const float *beta,
                   float eps, float *y)
{
#pragma omp parallel for schedule(static) if ((long)rows * dim > 32768)
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * dim;
        float *yr = y + (size_t)r * dim;
        double s = 0.0;
        for (int i = 0; i < dim; i++) s += xr[i];
        double mean = s / dim, v = 0.0;
        for (int i = 0; i < dim; i++) { double d = xr[i] - mean; v += d * d; }
        float rstd = (float)(1.0 / sqrt(v / dim + (double)eps));
        float m = (float)mean;
        for (int i = 0; i < dim; i++) {
            float n = (xr[i] - m) * rstd;
            yr[i] = n * (gamma ? gamma[i] : 1.0f) + (beta ? beta[i] : 0.0f);
        }
    }
}
