/*
 * groupnorm.h — torch.nn.GroupNorm on NCHW activations, optionally fused with SiLU.
 */
#ifndef SDB_OPS_GROUPNORM_H
#define SDB_OPS_GROUPNORM_H

/* x, y: [N, C, HW]; `groups` divides C; statistics per (n, group) over (C/groups) * HW values,
 * biased variance; y = norm * gamma[c] + beta[c], then SiLU when `silu`. y may equal x. */
void sdb_groupnorm(const float *x, int N, int C, int HW, int groups, const float *gamma,
                   const float *beta, float eps, int silu, float *y);

#endif
