/*
 * norm.c — LayerNorm (see norm.h).
 */
#include "sdb/ops/norm.h"
#include "sdb/ops/par.h"

#include <math.h>
#include <stddef.h>

static int layernorm_parallel(int rows, int dim) { return (long)rows * dim > 32768; }

void sdb_layernorm_plan(int rows, int dim, sdb_par_rec *rec)
{
    sdb_par_op_begin(rec, SDB_PAR_NORM, "layernorm %d x %d", rows, dim);
    sdb_par_loop_add(rec, SDB_PAR_STATIC, rows, NULL, 16.0 * dim, 1, layernorm_parallel(rows, dim));
}

void sdb_layernorm(const float *x, int rows, int dim, const float *gamma, const float *beta,
                   float eps, float *y)
{
#pragma omp parallel for schedule(static) if (layernorm_parallel(rows, dim))
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
