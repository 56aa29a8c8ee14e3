/*
 * resample.h — nearest-neighbour resizing and layout changes of NCHW activations.
 */
#ifndef SDB_OPS_RESAMPLE_H
#define SDB_OPS_RESAMPLE_H

/* F.interpolate(mode="nearest") of x [N, C, H, W] to y [N, C, Ho, Wo] (2x, or to a given size as
 * diffusers' upsample_size does for odd latent sides). */
void sdb_upsample_nearest(const float *x, int N, int C, int H, int W, float *y, int Ho, int Wo);
/* y[cols, rows] = x[rows, cols]ᵀ (e.g. [C, HW] <-> [HW, C] tokens). y must not alias x. */
void sdb_transpose(const float *x, int rows, int cols, float *y);

#endif
