/*
 * resample.h — nearest-neighbour resizing and layout changes of NCHW activations.
 */
#ifndef SDB_OPS_RESAMPLE_H
#define SDB_OPS_RESAMPLE_H

#include "sdb/ops/par.h"

/* F.interpolate(mode="nearest") of x [N, C, H, W] to y [N, C, Ho, Wo] (2x, or to a given size as
 * diffusers' upsample_size does for odd latent sides). */
void sdb_upsample_nearest(const float *x, int N, int C, int H, int W, float *y, int Ho, int Wo);
/* y[cols, rows] = x[rows, cols]ᵀ (e.g. [C, HW] <-> [HW, C] tokens). y must not alias x. */
void sdb_transpose(const float *x, int rows, int cols, float *y);
/* y [N, Ca + Cb, HW] = the channels of a [N, Ca, HW], then those of b [N, Cb, HW] (torch.cat on
 * dim 1). y must not alias a or b. */
void sdb_concat_channels(const float *a, int Ca, const float *b, int Cb, int N, int HW, float *y);
/* Their work units (par.h), recorded without computing. */
void sdb_upsample_nearest_plan(int N, int C, int Ho, int Wo, sdb_par_rec *rec);
void sdb_transpose_plan(int rows, int cols, sdb_par_rec *rec);
void sdb_concat_channels_plan(int Ca, int Cb, int N, int HW, sdb_par_rec *rec);

#endif
