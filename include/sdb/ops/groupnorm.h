/*
 * groupnorm.h — torch.nn.GroupNorm on NCHW activations, optionally fused with SiLU.
 */
#ifndef SDB_OPS_GROUPNORM_H
#define SDB_OPS_GROUPNORM_H

#include <stddef.h>
#include "sdb/ops/par.h"

/* x, y: [N, C, HW]; `groups` divides C; statistics per (n, group) over (C/groups) * HW values,
 * biased variance; y = norm * gamma[c] + beta[c], then SiLU when `silu`. y may equal x.
 * Computed per channel as y = x * sc + sh (one fused multiply-add on CPUs with AVX2+FMA), with the
 * floats sc = rstd * gamma[c] and sh = beta[c] - mean * (rstd * gamma[c]) rounded from double,
 * rstd = 1 / sqrt(var + eps); gamma / beta NULL mean 1 / 0. The same on any thread count. */
void sdb_groupnorm(const float *x, int N, int C, int HW, int groups, const float *gamma,
                   const float *beta, float eps, int silu, float *y);

/* The statistics sdb_groupnorm computes for one group of n >= 1 values: the mean, then the biased
 * variance as the mean of squared deviations from it, each summed in double in 4 interleaved
 * partial sums a_k (value i goes to a_(i mod 4) while a whole 4 remain, the rest to a_0),
 * combined as (a0 + a1) + (a2 + a3); each square rounded before it is added. Bit-exact on every
 * CPU path. */
/* Its work units (par.h), recorded without computing. */
void sdb_groupnorm_plan(int N, int C, int HW, int groups, sdb_par_rec *rec);

void sdb_groupnorm_stats(const float *x, size_t n, double *mean, double *var);

#endif
