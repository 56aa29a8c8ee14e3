/*
 * conv.h — 2-D convolution on OpenBLAS GEMMs (NCHW activations, torch weight layout).
 */
#ifndef SDB_OPS_CONV_H
#define SDB_OPS_CONV_H

#include "sdb/arena.h"

typedef struct sdb_conv2d {
    int cin, cout;
    int k;                          /* square kernel: 1 or 3 */
    int stride;                     /* 1 or 2 */
    int pad_t, pad_l, pad_b, pad_r; /* zero padding per side */
    const float *w;                 /* [cout, cin, k, k], as torch stores it */
    const float *b;                 /* [cout] or NULL */
} sdb_conv2d;

/* Output size for an H x W input. */
void sdb_conv2d_out_size(const sdb_conv2d *c, int H, int W, int *Ho, int *Wo);
/* y = conv(x) (+ residual when not NULL, same shape as y): x [N, cin, H, W] -> y [N, cout, Ho, Wo].
 * y must not alias x. Scratch (e.g. im2col tiles) comes from the arena and is released before
 * returning; its size stays bounded for large images. Returns 0 or SDB_ENOMEM. */
int sdb_conv2d_forward(const sdb_conv2d *c, const float *x, int N, int H, int W, float *y,
                       const float *residual, sdb_arena *scratch);

#endif
