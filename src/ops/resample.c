/*
 * resample.c — nearest-neighbour upsampling and transposes (see resample.h).
 *
 * Source index exactly as torch 1.13's nearest_idx (aten/src/ATen/native/UpSample.h):
 *   out == in      -> dst
 *   out == 2 * in  -> dst >> 1
 *   otherwise      -> min(floorf(dst * (float)in / out), in - 1), in float arithmetic
 * (F.interpolate(size=...) passes no scale factor, so the scale is (float)in / out).
 */
#include "sdb/ops/resample.h"

#include <math.h>
#include <stddef.h>
#include <stdint.h>

static int nearest_idx(int dst, int in, int out)
{
    if (out == in) return dst;
    if (out == 2 * in) return dst >> 1;
    float scale = (float)in / (float)out;
    int64_t s = (int64_t)floorf((float)dst * scale);
    return s < in - 1 ? (int)s : in - 1;
}

void sdb_upsample_nearest(const float *x, int N, int C, int H, int W, float *y, int Ho, int Wo)
{
    /* source column of every output column (per element for very wide outputs) */
    int xi_stack[4096];
    int *xi = Wo <= 4096 ? xi_stack : NULL;
    if (xi)
        for (int ox = 0; ox < Wo; ox++) xi[ox] = nearest_idx(ox, W, Wo);
#pragma omp parallel for schedule(static) if ((size_t)N * C * Ho * Wo > 65536)
    for (int nc = 0; nc < N * C; nc++) {
        const float *src = x + (size_t)nc * H * W;
        float *dst = y + (size_t)nc * Ho * Wo;
        for (int oy = 0; oy < Ho; oy++) {
            const float *sr = src + (size_t)nearest_idx(oy, H, Ho) * W;
            float *dr = dst + (size_t)oy * Wo;
            if (xi) {
                for (int ox = 0; ox < Wo; ox++) dr[ox] = sr[xi[ox]];
            } else {
                for (int ox = 0; ox < Wo; ox++) dr[ox] = sr[nearest_idx(ox, W, Wo)];
            }
        }
    }
}

#define TB 32
void sdb_transpose(const float *x, int rows, int cols, float *y)
{
    int nbr = (rows + TB - 1) / TB;
#pragma omp parallel for schedule(static) if ((size_t)rows * cols > 65536)
    for (int bi = 0; bi < nbr; bi++) {
        int r0 = bi * TB, r1 = r0 + TB < rows ? r0 + TB : rows;
        for (int c0 = 0; c0 < cols; c0 += TB) {
            int c1 = c0 + TB < cols ? c0 + TB : cols;
            for (int r = r0; r < r1; r++)
                for (int c = c0; c < c1; c++) y[(size_t)c * rows + r] = x[(size_t)r * cols + c];
        }
    }
}
