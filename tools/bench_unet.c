/*
 * bench_unet.c — speed and memory of one U-Net forward at full size, without any weight file.
 *
 *   bench_unet [unet/config.json] [threads] [latent side] [repeats] [check]
 *   (defaults: shared/models/sd15-inpaint-layout/unet/config.json, 2, 64, 2; with a fifth
 *   argument "check", the forward is run once more on 1 thread and its output compared bit for bit
 *   with the multi-threaded one)
 *
 * The weights come from sdb_weights' recording mode (every tensor the config needs, as the real
 * loader requests it), filled with small random values. Batch 2 (classifier-free guidance), 77
 * context tokens ($SDB_BENCH_UNET_BATCH sets another batch, e.g. 1 as the pipeline runs big
 * latents). Prints the OpenBLAS sgemm rate on a 2048² product (the "peak"), the forward's
 * wall and CPU time, its GFLOP count (as the forward counts it for `sdbatch bench`: convolutions,
 * linears, attention products) and rate relative to that peak, the arena peak and VmHWM.
 */
#include "sdb/arena.h"
#include "sdb/bench.h"
#include "sdb/profile.h"
#include "sdb/threads.h"
#include "sdb/unet.h"
#include "sdb/weights.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}
static double cpu(void)
{
    struct rusage r;
    getrusage(RUSAGE_SELF, &r);
    return r.ru_utime.tv_sec + r.ru_utime.tv_usec * 1e-6 + r.ru_stime.tv_sec + r.ru_stime.tv_usec * 1e-6;
}
static unsigned long long rng = 88172645463325252ULL;
static float frand(void)
{
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (float)((rng >> 11) * (1.0 / 9007199254740992.0) * 2 - 1);
}

int main(int argc, char **argv)
{
    const char *cfg = argc > 1 ? argv[1] : "../shared/models/sd15-inpaint-layout/unet/config.json";
    int th = argc > 2 ? atoi(argv[2]) : 2, S = argc > 3 ? atoi(argv[3]) : 64, reps = argc > 4 ? atoi(argv[4]) : 2;
    sdb_threads_set(th);
    sdb_err err;
    sdb_err_clear(&err);

    double peak = sdb_bench_sgemm_gflops(2048, 3);
    printf("OpenBLAS sgemm 2048^3, %d threads: %.1f GFLOPS\n", th, peak);

    sdb_weights w;
    sdb_weights_init_recorder(&w, "unet");
    sdb_unet *u = NULL;
    if (sdb_unet_load(&u, cfg, &w, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
    const char *bs = getenv("SDB_BENCH_UNET_BATCH");
    const int Bt = bs && atoi(bs) > 0 ? atoi(bs) : 2, L = 77;
    for (int i = 0; i < w.n_rec; i++) {
        long long ne = 1;
        for (int d = 0; d < w.rec_ndim[i]; d++) ne *= w.rec_shapes[i][d];
        long long fan = w.rec_ndim[i] > 1 ? ne / w.rec_shapes[i][0] : 0;
        float sc = fan ? 1.7f / sqrtf((float)fan) : 0.1f;
        const char *nm = w.rec_names[i];
        float *p = (float *)w.owned[i];
        int is_norm_w = strstr(nm, "norm") && strstr(nm, "weight");
        for (long long k = 0; k < ne; k++) p[k] = fan ? frand() * sc : (is_norm_w ? 1 + 0.1f * frand() : 0.1f * frand());
    }
    printf("weights: %d tensors, %.1f MiB float32 (batch %d, %dx%d latents)\n", w.n_rec, w.bytes / 1048576.0, Bt, S, S);

    sdb_arena a;
    if (sdb_arena_init(&a, 0, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
    int cin = sdb_unet_in_channels(u), cd = sdb_unet_cross_attention_dim(u);
    float *x = malloc(sizeof(float) * Bt * cin * S * S), *o = malloc(sizeof(float) * Bt * sdb_unet_out_channels(u) * S * S);
    float *ctx = malloc(sizeof(float) * Bt * L * cd);
    for (long i = 0; i < (long)Bt * cin * S * S; i++) x[i] = frand();
    for (long i = 0; i < (long)Bt * L * cd; i++) ctx[i] = frand();
    double ts[2] = {981, 981};
    sdb_profile count = {0}; /* the first forward counts the FLOPs (every forward does the same work) */
    double flops = 0;
    for (int r = 0; r < reps; r++) {
        sdb_unet_set_profile(u, r == 0 ? &count : NULL);
        double c0 = cpu(), t0 = now();
        if (sdb_unet_forward(u, x, Bt, S, S, ts, ctx, L, o, &a, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
        double t = now() - t0, c = cpu() - c0;
        if (r == 0) {
            flops = sdb_prof_total_flops(&count);
            printf("%.1f GFLOP per forward\n", flops / 1e9);
        }
        printf("forward %d: %.2f s wall (%.2f s CPU), %.1f GFLOPS = %.0f%% of the sgemm rate; arena peak %.1f MiB\n",
               r + 1, t, c, flops / t / 1e9, 100.0 * flops / t / 1e9 / peak, sdb_unet_last_peak(u) / 1048576.0);
    }
    if (argc > 5 && !strcmp(argv[5], "check")) {
        size_t no = (size_t)Bt * sdb_unet_out_channels(u) * S * S;
        float *o1 = malloc(sizeof(float) * no);
        sdb_threads_set(1);
        if (sdb_unet_forward(u, x, Bt, S, S, ts, ctx, L, o1, &a, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
        sdb_threads_set(th);
        int same = !memcmp(o1, o, sizeof(float) * no);
        printf("1 thread vs %d threads: %s\n", th, same ? "bit-identical" : "DIFFERENT");
        free(o1);
        if (!same) return 1;
    }
    printf("VmHWM: %.0f MiB\n", sdb_bench_peak_rss_mib());
    sdb_unet_free(u);
    sdb_weights_free(&w);
    sdb_arena_free(&a);
    free(x); free(o); free(ctx);
    return 0;
}
