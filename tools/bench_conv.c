/*
 * bench_conv.c — direct (im2col + sgemm) against Winograd F(4x4,3x3), and F(2x2,3x3) where the
 * image is small enough for it, on SD 1.5's 3x3 stride-1 convolution shapes at one image size,
 * side by side in one process, with the same run's sgemm rate (OpenBLAS, 4096²). Prints per shape
 * the median time of each path, the effective rate (direct-convolution FLOPs / time) as a fraction
 * of that sgemm, and the speed-up: the figures the conv dispatch's rule (sdb_conv_path,
 * winograd.c) was read from. Then F(4x4)'s filter transform alone (sdb_winograd_filter: what each
 * call makes unless the filter is kept) with the rate it writes the transformed filter at, and
 * F(2x2)'s time with its filter made in the call and kept, and its effective rate (per call).
 *
 *   sdbatch-bench-conv [image size, default 256] [threads, default 2] [reps, default 3]
 */
#include "sdb/arena.h"
#include "sdb/bench.h"
#include "sdb/ops/conv.h"
#include "sdb/ops/winograd.h"
#include "sdb/profile.h"
#include "sdb/threads.h"

#include <stdio.h>
#include <stdlib.h>

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    int size = argc > 1 ? atoi(argv[1]) : 256, th = argc > 2 ? atoi(argv[2]) : 2;
    int reps = argc > 3 ? atoi(argv[3]) : 3;
    if (size < 64 || size % 64 || th < 1 || reps < 1 || reps > 15) {
        fprintf(stderr, "usage: sdbatch-bench-conv [size (multiple of 64)] [threads] [reps <= 15]\n");
        return 2;
    }
    sdb_threads_set(th);
    const int L = size / 8; /* latent side */
    /* name, batch, cin, cout, side */
    struct { const char *name; int N, cin, cout, side; } shapes[] = {
        {"unet 320 (level 0)", 2, 320, 320, L},        {"unet 640->320 up3", 2, 640, 320, L},
        {"unet 640 (level 1)", 2, 640, 640, L / 2},    {"unet 1280->640 up2", 2, 1280, 640, L / 2},
        {"unet 1280 (level 2)", 2, 1280, 1280, L / 4}, {"unet 2560->1280 up1", 2, 2560, 1280, L / 4},
        {"unet 1280 (level 3)", 2, 1280, 1280, L / 8}, {"unet 2560->1280 up0", 2, 2560, 1280, L / 8},
        {"vae 512 (latent)", 1, 512, 512, L},          {"vae 512 (x2)", 1, 512, 512, 2 * L},
        {"vae 512 (x4)", 1, 512, 512, 4 * L},          {"vae 256 (x4)", 1, 256, 256, 4 * L},
        {"vae 256 (x8)", 1, 256, 256, 8 * L},          {"vae 128 (x8)", 1, 128, 128, 8 * L},
        {"vae 4->512 conv_in", 1, 4, 512, L},          {"vae 128->3 conv_out", 1, 128, 3, 8 * L},
    };
    sdb_arena a;
    sdb_err err;
    if (sdb_arena_init(&a, 0, &err)) return 1;
    double sg = sdb_bench_sgemm_gflops(4096, 3);
    printf("size %d, %d threads, sgemm %.1f GFLOP/s\n", size, th, sg);
    printf("%-22s %5s %5s %4s %10s %10s %8s %8s %7s %17s %9s %9s %8s\n", "shape", "cin", "cout", "side", "direct s",
           "wino s", "dir/sg", "wino/sg", "speedup", "filter s (GB/s)", "F2 s", "F2 kept", "F2/sg");
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int N = shapes[s].N, cin = shapes[s].cin, cout = shapes[s].cout, H = shapes[s].side;
        if (H < 1) continue;
        size_t nw = (size_t)cout * cin * 9, nx = (size_t)N * cin * H * H, ny = (size_t)N * cout * H * H;
        float *w = malloc(sizeof(float) * nw), *b = malloc(sizeof(float) * cout);
        float *x = malloc(sizeof(float) * nx), *y = malloc(sizeof(float) * ny);
        if (!w || !b || !x || !y) return 1;
        unsigned r = 12345;
        for (size_t i = 0; i < nw; i++) { r = r * 1664525u + 1013904223u; w[i] = ((float)(r >> 8) / 16777216.0f - 0.5f) * 0.05f; }
        for (size_t i = 0; i < nx; i++) { r = r * 1664525u + 1013904223u; x[i] = (float)(r >> 8) / 16777216.0f - 0.5f; }
        for (int i = 0; i < cout; i++) b[i] = 0.01f * i;
        sdb_conv2d c = {cin, cout, 3, 1, 1, 1, 1, 1, {w, NULL}, b, NULL, 0};
        double td[16], tw[16], tf[16], tf2[16], tf2k[16];
        const int f2 = (long)N * ((H + 1) / 2) * ((H + 1) / 2) <= SDB_WINO2_MAX_TILES;
        float *U2 = f2 ? malloc(sizeof(float) * sdb_winograd2_filter_floats(&c)) : NULL;
        if (U2) sdb_winograd2_filter(&c, U2);
        float *U = sdb_arena_floats(&a, sdb_winograd_filter_floats(&c));
        if (!U) return 1;
        /* warm-up both, then alternate so that the machine's load hits both alike */
        sdb_conv2d_forward(&c, x, N, H, H, y, NULL, &a);
        sdb_winograd_forward(&c, NULL, x, N, H, H, y, NULL, NULL, &a);
        for (int i = 0; i < reps; i++) {
            double t0 = sdb_prof_now();
            sdb_conv2d_forward(&c, x, N, H, H, y, NULL, &a);
            double t1 = sdb_prof_now();
            sdb_winograd_forward(&c, NULL, x, N, H, H, y, NULL, NULL, &a);
            double t2 = sdb_prof_now();
            sdb_winograd_filter(&c, U);
            td[i] = t1 - t0;
            tw[i] = t2 - t1;
            tf[i] = sdb_prof_now() - t2;
            tf2[i] = tf2k[i] = 0.0;
            if (U2) {
                double t3 = sdb_prof_now();
                sdb_winograd2_forward(&c, NULL, x, N, H, H, y, NULL, NULL, &a);
                double t4 = sdb_prof_now();
                sdb_winograd2_forward(&c, U2, x, N, H, H, y, NULL, NULL, &a);
                tf2[i] = t4 - t3;
                tf2k[i] = sdb_prof_now() - t4;
            }
        }
        qsort(tf2, reps, sizeof tf2[0], cmp_d);
        qsort(tf2k, reps, sizeof tf2k[0], cmp_d);
        free(U2);
        qsort(td, reps, sizeof td[0], cmp_d);
        qsort(tw, reps, sizeof tw[0], cmp_d);
        qsort(tf, reps, sizeof tf[0], cmp_d);
        double d = td[reps / 2], wv = tw[reps / 2], f = tf[reps / 2];
        double gf = 2.0 * N * cout * cin * 9.0 * H * H * 1e-9;
        printf("%-22s %5d %5d %4d %10.4f %10.4f %8.2f %8.2f %7.2f %9.4f (%5.1f)", shapes[s].name, cin, cout, H, d,
               wv, gf / d / sg, gf / wv / sg, d / wv, f, sdb_winograd_filter_floats(&c) * sizeof(float) / f * 1e-9);
        if (f2) printf(" %9.4f %9.4f %8.2f\n", tf2[reps / 2], tf2k[reps / 2], gf / tf2[reps / 2] / sg);
        else printf(" %9s %9s %8s\n", "-", "-", "-");
        fflush(stdout);
        sdb_arena_reset(&a, 0);
        free(w); free(b); free(x); free(y);
    }
    sdb_arena_free(&a);
    return 0;
}
