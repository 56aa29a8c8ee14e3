/*
 * norm.h — LayerNorm (rows of a matrix). GroupNorm lives in groupnorm.h.
 */
#ifndef SDB_OPS_NORM_H
#define SDB_OPS_NORM_H

#include "sdb/ops/par.h"

/* torch.nn.LayerNorm over the last dim: y[r] = (x[r] - mean) / sqrt(var + eps) * gamma + beta,
 * biased variance, statistics accumulated in double. y may equal x. */
void sdb_layernorm(const float *x, int rows, int dim, const float *gamma, const float *beta,
                   float eps, float *y);
/* Its work units (par.h), recorded without computing. */
void sdb_layernorm_plan(int rows, int dim, sdb_par_rec *rec);

#endif
