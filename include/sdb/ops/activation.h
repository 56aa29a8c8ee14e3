/*
 * activation.h — element-wise activations and arithmetic on float arrays.
 */
#ifndef SDB_OPS_ACTIVATION_H
#define SDB_OPS_ACTIVATION_H

#include <stddef.h>
#include "sdb/ops/par.h"

void sdb_silu(float *x, size_t n);             /* x * sigmoid(x) */
void sdb_gelu(float *x, size_t n);             /* exact erf GELU (torch's default) */
void sdb_quick_gelu(float *x, size_t n);       /* x * sigmoid(1.702 x) (CLIP) */
/* GEGLU as diffusers: rows of h = [a | b] (2*dim wide) -> out[r] = a * gelu(b) (dim wide). */
void sdb_geglu(const float *h, int rows, int dim, float *out);
void sdb_add(float *y, const float *x, size_t n);           /* y += x */
void sdb_scale(float *y, float s, size_t n);
/* Their work units (par.h), recorded without computing. sdb_silu_plan serves sdb_quick_gelu too. */
void sdb_silu_plan(size_t n, sdb_par_rec *rec);
void sdb_geglu_plan(int rows, int dim, sdb_par_rec *rec);
void sdb_add_plan(size_t n, sdb_par_rec *rec);                /* y *= s */

#endif
