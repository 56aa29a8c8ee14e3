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
#include "sdb/ops/par.h"

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static int nearest_idx(int dst, int in, int out)
{
    if (out == in) return dst;
    if (out == 2 * in) return dst >> 1;
    float scale = (float)in / (float)out;
    int64_t s = (int64_t)floorf((float)dst * scale);
    return s < in - 1 ? (int)s : in - 1;
}

static int copy_parallel(size_t n) { return n > 65536; }

void sdb_upsample_nearest_plan(int N, int C, int Ho, int Wo, sdb_par_rec *rec)
{
    sdb_par_op_begin(rec, SDB_PAR_COPY, "upsample %dx%d, %d channels", Ho, Wo, N * C);
    sdb_par_loop_add(rec, SDB_PAR_STATIC, (long)N * C, NULL, 8.0 * Ho * Wo, 1,
                     copy_parallel((size_t)N * C * Ho * Wo));
}

void sdb_upsample_nearest(const float *x, int N, int C, int H, int W, float *y, int Ho, int Wo)
{
    /* source column of every output column (per element for very wide outputs) */
    int xi_stack[4096];
    int *xi = Wo <= 4096 ? xi_stack : NULL;
    if (xi)
        for (int ox = 0; ox < Wo; ox++) xi[ox] = nearest_idx(ox, W, Wo);
#pragma omp parallel for schedule(static) if (copy_parallel((size_t)N * C * Ho * Wo))
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

/* Transposes in tiles of TB rows x TBC columns, one unit each (a static split over all tiles, so
 * that a matrix with few rows, [C, HW] with C = 320, still gives every thread work). */
#define TB 32
#define TBC 256
void sdb_transpose(const float *x, int rows, int cols, float *y)
{
    const int nbr = (rows + TB - 1) / TB, nbc = (cols + TBC - 1) / TBC;
#pragma omp parallel for schedule(static) if (copy_parallel((size_t)rows * cols))
    for (int t = 0; t < nbr * nbc; t++) {
        const int bi = t / nbc, bj = t % nbc;
        const int r0 = bi * TB, r1 = r0 + TB < rows ? r0 + TB : rows;
        const int cend = (bj + 1) * TBC < cols ? (bj + 1) * TBC : cols;
        for (int c0 = bj * TBC; c0 < cend; c0 += TB) {
            int c1 = c0 + TB < cend ? c0 + TB : cend;
            for (int r = r0; r < r1; r++)
                for (int c = c0; c < c1; c++) y[(size_t)c * rows + r] = x[(size_t)r * cols + c];
        }
    }
}

void sdb_transpose_plan(int rows, int cols, sdb_par_rec *rec)
{
    const int nbr = (rows + TB - 1) / TB, nbc = (cols + TBC - 1) / TBC;
    sdb_par_op_begin(rec, SDB_PAR_COPY, "transpose %d x %d", rows, cols);
    double *cost = malloc((size_t)nbr * nbc * sizeof *cost);
    if (!cost) { rec->failed = 1; return; }
    for (int t = 0; t < nbr * nbc; t++) {
        const int bi = t / nbc, bj = t % nbc;
        const int rr = rows - bi * TB < TB ? rows - bi * TB : TB;
        const int cc = cols - bj * TBC < TBC ? cols - bj * TBC : TBC;
        cost[t] = 8.0 * rr * cc;
    }
    sdb_par_loop_add(rec, SDB_PAR_STATIC, (long)nbr * nbc, cost, 0, 1, copy_parallel((size_t)rows * cols));
    free(cost);
}

void sdb_concat_channels(const float *a, int Ca, const float *b, int Cb, int N, int HW, float *y)
{
    const int C = Ca + Cb;
#pragma omp parallel for schedule(static) if (copy_parallel((size_t)N * C * HW))
    for (int t = 0; t < N * C; t++) {
        const int n = t / C, c = t % C;
        const float *src = c < Ca ? a + ((size_t)n * Ca + c) * HW : b + ((size_t)n * Cb + (c - Ca)) * HW;
        memcpy(y + (size_t)t * HW, src, sizeof(float) * HW);
    }
}

void sdb_concat_channels_plan(int Ca, int Cb, int N, int HW, sdb_par_rec *rec)
{
    sdb_par_op_begin(rec, SDB_PAR_COPY, "concat %d+%d channels of %d x%d", Ca, Cb, HW, N);
    sdb_par_loop_add(rec, SDB_PAR_STATIC, (long)N * (Ca + Cb), NULL, 8.0 * HW, 1,
                     copy_parallel((size_t)N * (Ca + Cb) * HW));
}
