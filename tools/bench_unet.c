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
 * context tokens. Prints the OpenBLAS sgemm rate on a large square product (the "peak"), the
 * forward's wall and CPU time, its approximate GFLOP count (convolutions, linears and attention
 * products from the tensor shapes) and rate relative to that peak, the arena peak and VmHWM.
 */
#include "sdb/arena.h"
#include "sdb/threads.h"
#include "sdb/unet.h"
#include "sdb/weights.h"

#include <cblas.h>
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

/* spatial side of the activation a tensor is applied to (SD layout: level i = side >> i) */
static int side_of(const char *name, int S)
{
    int i;
    if (sscanf(name, "down_blocks.%d", &i) == 1) return strstr(name, "downsamplers") ? (S >> i) >> 1 : S >> i;
    if (sscanf(name, "up_blocks.%d", &i) == 1) {
        /* up block i works at level (n-1-i); its upsampler conv at the next finer level */
        return -i - 1; /* resolved by the caller, which knows the number of blocks */
    }
    if (!strncmp(name, "mid_block", 9)) return -100;
    return S;
}

int main(int argc, char **argv)
{
    const char *cfg = argc > 1 ? argv[1] : "../shared/models/sd15-inpaint-layout/unet/config.json";
    int th = argc > 2 ? atoi(argv[2]) : 2, S = argc > 3 ? atoi(argv[3]) : 64, reps = argc > 4 ? atoi(argv[4]) : 2;
    sdb_threads_set(th);
    sdb_err err;
    sdb_err_clear(&err);

    int n = 2048;
    float *A = malloc(sizeof(float) * n * n), *B = malloc(sizeof(float) * n * n), *C = malloc(sizeof(float) * n * n);
    for (long i = 0; i < (long)n * n; i++) { A[i] = frand(); B[i] = frand(); }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, A, n, B, n, 0, C, n);
    double best = 1e30;
    for (int r = 0; r < 3; r++) {
        double t0 = now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, A, n, B, n, 0, C, n);
        double t = now() - t0;
        if (t < best) best = t;
    }
    double peak = 2.0 * n * n * (double)n / best / 1e9;
    printf("OpenBLAS sgemm %d^3, %d threads: %.1f GFLOPS\n", n, th, peak);
    free(A); free(B); free(C);

    sdb_weights w;
    sdb_weights_init_recorder(&w, "unet");
    sdb_unet *u = NULL;
    if (sdb_unet_load(&u, cfg, &w, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
    int nblocks = 0;
    for (int i = 0; i < w.n_rec; i++) {
        int b;
        if (sscanf(w.rec_names[i], "down_blocks.%d", &b) == 1 && b + 1 > nblocks) nblocks = b + 1;
    }
    double flops = 0;
    const int Bt = 2, L = 77;
    for (int i = 0; i < w.n_rec; i++) {
        long long ne = 1;
        for (int d = 0; d < w.rec_ndim[i]; d++) ne *= w.rec_shapes[i][d];
        long long fan = w.rec_ndim[i] > 1 ? ne / w.rec_shapes[i][0] : 0;
        float sc = fan ? 1.7f / sqrtf((float)fan) : 0.1f;
        const char *nm = w.rec_names[i];
        float *p = (float *)w.owned[i];
        int is_norm_w = strstr(nm, "norm") && strstr(nm, "weight");
        for (long long k = 0; k < ne; k++) p[k] = fan ? frand() * sc : (is_norm_w ? 1 + 0.1f * frand() : 0.1f * frand());
        size_t ln = strlen(nm);
        int is_weight = ln > 6 && !strcmp(nm + ln - 6, "weight");
        if (!fan || !is_weight || strstr(nm, "time_emb")) continue; /* norms, biases, per-row temb */
        int s = side_of(nm, S);
        if (s == -100) s = S >> (nblocks - 1);
        else if (s < 0) {
            int ub = -s - 1;
            s = S >> (nblocks - 1 - ub);
            if (strstr(nm, "upsamplers")) s *= 2;
        }
        double T = (double)s * s;
        if (strstr(nm, "attn2.to_k") || strstr(nm, "attn2.to_v")) T = L;
        flops += 2.0 * ne * T * Bt;
        if (strstr(nm, "attn1.to_q.weight")) {
            double Cc = (double)w.rec_shapes[i][0], Ts = (double)s * s;
            flops += Bt * (4.0 * Ts * Ts * Cc + 4.0 * Ts * L * Cc);
        }
    }
    printf("weights: %d tensors, %.1f MiB float32; ~%.1f GFLOP per forward (batch %d, %dx%d latents)\n",
           w.n_rec, w.bytes / 1048576.0, flops / 1e9, Bt, S, S);

    sdb_arena a;
    if (sdb_arena_init(&a, 0, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
    int cin = sdb_unet_in_channels(u), cd = sdb_unet_cross_attention_dim(u);
    float *x = malloc(sizeof(float) * Bt * cin * S * S), *o = malloc(sizeof(float) * Bt * sdb_unet_out_channels(u) * S * S);
    float *ctx = malloc(sizeof(float) * Bt * L * cd);
    for (long i = 0; i < (long)Bt * cin * S * S; i++) x[i] = frand();
    for (long i = 0; i < (long)Bt * L * cd; i++) ctx[i] = frand();
    double ts[2] = {981, 981};
    for (int r = 0; r < reps; r++) {
        double c0 = cpu(), t0 = now();
        if (sdb_unet_forward(u, x, Bt, S, S, ts, ctx, L, o, &a, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
        double t = now() - t0, c = cpu() - c0;
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
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmHWM", 5)) printf("%s", line);
    if (f) fclose(f);
    sdb_unet_free(u);
    sdb_weights_free(&w);
    sdb_arena_free(&a);
    free(x); free(o); free(ctx);
    return 0;
}
