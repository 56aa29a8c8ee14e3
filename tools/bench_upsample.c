/*
 * bench_upsample.c — the VAE decoder's upsampling (nearest x2, then a 3x3 conv) three ways, side by
 * side in one process on SD 1.x's shapes at one image size (batch 1), to settle whether the
 * sub-pixel form pays (issue 18):
 *   winograd  nearest x2, then the conv by Winograd F(4x4,3x3) on the upsampled image: what
 *             sdbatch runs (`--conv auto`); 2.25 multiply-adds per output and channel pair;
 *   subpixel  the same result as 4 phase convs with 2x2 kernels on the low-resolution input (each
 *             output phase (a, b) sums the 3x3 taps that land on the same input pixel), im2col +
 *             GEMM, then the phases interleaved: 4 multiply-adds per output and channel pair;
 *   direct    nearest x2, then im2col + GEMM: 9.
 * Prints per shape the median wall and CPU time of each and the largest difference between the
 * sub-pixel and the direct outputs relative to the largest value (float rounding, ~1e-6).
 *
 *   sdbatch-bench-upsample [image size, default 512] [threads, default 1] [reps, default 3]
 */
#include "sdb/arena.h"
#include "sdb/bench.h"
#include "sdb/ops/conv.h"
#include "sdb/ops/resample.h"
#include "sdb/ops/winograd.h"
#include "sdb/profile.h"
#include "sdb/threads.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double cpu_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static float *rnd(size_t n, unsigned seed, float scale)
{
    float *v = malloc(n * sizeof(float));
    for (size_t i = 0; v && i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        v[i] = scale * ((float)(seed >> 8) / 16777216.0f - 0.5f);
    }
    return v;
}

int main(int argc, char **argv)
{
    const int size = argc > 1 ? atoi(argv[1]) : 512, th = argc > 2 ? atoi(argv[2]) : 1;
    const int reps = argc > 3 ? atoi(argv[3]) : 3;
    if (size < 64 || size % 64 || th < 1 || reps < 1 || reps > 15) {
        fprintf(stderr, "usage: sdbatch-bench-upsample [size (multiple of 64)] [threads] [reps <= 15]\n");
        return 2;
    }
    sdb_threads_set(th);
    sdb_arena a;
    sdb_err err;
    if (sdb_arena_init(&a, 0, &err)) return 1;
    /* SD 1.x's decoder: up_blocks.0 and .1 upsample 512 channels, up_blocks.2 256 */
    const struct { int C, side; } shapes[] = {{512, size / 8}, {512, size / 4}, {256, size / 2}};
    printf("VAE upsampling (nearest x2 + 3x3 conv), batch 1, %d threads, medians of %d (wall / CPU s)\n", th, reps);
    for (int si = 0; si < 3; si++) {
        const int C = shapes[si].C, H = shapes[si].side, W = H, H2 = 2 * H, W2 = 2 * W;
        const size_t nx = (size_t)C * H * W, ny = 4 * nx;
        float *w = rnd((size_t)C * C * 9, 7, 0.02f), *b = rnd(C, 9, 0.1f), *x = rnd(nx, 11, 1.0f);
        float *up = malloc(ny * sizeof(float)), *yd = malloc(ny * sizeof(float)), *ys = malloc(ny * sizeof(float));
        float *pw = calloc((size_t)4 * C * C * 4, sizeof(float)), *ph = malloc(4 * nx * sizeof(float));
        if (!w || !b || !x || !up || !yd || !ys || !pw || !ph) return 1;
        const sdb_conv2d c = {C, C, 3, 1, 1, 1, 1, 1, sdb_wmat_f32(w), b, NULL, 0};
        /* phase a of the rows: 3x3 tap row ky lands on input row i - 1 + R[a][ky] */
        static const int R[2][3] = {{0, 1, 1}, {0, 0, 1}};
        sdb_conv2d pc[4];
        for (int p = 0; p < 4; p++) {
            const int pa = p / 2, pb = p % 2;
            float *k = pw + (size_t)p * C * C * 4;
            for (size_t o = 0; o < (size_t)C * C; o++)
                for (int ky = 0; ky < 3; ky++)
                    for (int kx = 0; kx < 3; kx++) k[o * 4 + R[pa][ky] * 2 + R[pb][kx]] += w[o * 9 + ky * 3 + kx];
            const sdb_conv2d t = {C, C, 2, 1, 1 - pa, 1 - pb, pa, pb, sdb_wmat_f32(k), b, NULL, 0};
            pc[p] = t;
        }
        double tw[3][15], tc[3][15];
        for (int r = -1; r < reps; r++) { /* one warm-up */
            for (int m = 0; m < 3; m++) {
                const double t0 = sdb_prof_now(), c0 = cpu_now();
                if (m == 1) {
                    for (int p = 0; p < 4; p++) sdb_conv2d_forward_bias(&pc[p], x, 1, H, W, ph + p * nx, NULL, NULL, &a);
                    for (int co = 0; co < C; co++)
                        for (int i = 0; i < H; i++)
                            for (int pa = 0; pa < 2; pa++) {
                                float *d = ys + ((size_t)co * H2 + 2 * i + pa) * W2;
                                const float *s0 = ph + (size_t)(2 * pa) * nx + ((size_t)co * H + i) * W, *s1 = s0 + nx;
                                for (int j = 0; j < W; j++) { d[2 * j] = s0[j]; d[2 * j + 1] = s1[j]; }
                            }
                } else {
                    sdb_upsample_nearest(x, 1, C, H, W, up, H2, W2);
                    if (m == 0) sdb_winograd_forward(&c, NULL, up, 1, H2, W2, yd, NULL, NULL, &a);
                    else sdb_conv2d_forward_bias(&c, up, 1, H2, W2, yd, NULL, NULL, &a);
                }
                if (r >= 0) { tw[m][r] = sdb_prof_now() - t0; tc[m][r] = cpu_now() - c0; }
            }
        }
        double md = 0, mx = 0; /* yd: the last direct run */
        for (size_t i = 0; i < ny; i++) {
            md = fmax(md, fabs((double)yd[i] - ys[i]));
            mx = fmax(mx, fabs((double)yd[i]));
        }
        const char *names[3] = {"winograd", "subpixel", "direct"};
        printf("  %d ch, %dx%d -> %dx%d:", C, H, W, H2, W2);
        for (int m = 0; m < 3; m++)
            printf("  %s %.3f / %.3f", names[m], sdb_bench_median(tw[m], reps), sdb_bench_median(tc[m], reps));
        printf("  (subpixel vs direct: %.1e)\n", md / mx);
        free(w); free(b); free(x); free(up); free(yd); free(ys); free(pw); free(ph);
    }
    sdb_arena_free(&a);
    return 0;
}
