/*
 * profile.h — per-operation-kind time and FLOP counters for a model's forward (sdbatch bench
 * --profile, SDB_PROFILE=1).
 *
 * No global state: a caller owns an sdb_profile and hands it to a model (sdb_unet_set_profile,
 * sdb_vae_set_profile); the model's forward adds to it. With no profile attached the hooks are one
 * predictable branch on a NULL pointer (no clock reads). FLOPs are counted for every op kind with
 * GEMM work whether or not time is wanted (a multiply-add = 2 FLOP).
 */
#ifndef SDB_PROFILE_H
#define SDB_PROFILE_H

#include <time.h>

typedef enum {
    SDB_PROF_CONV,        /* convolutions (im2col + GEMM, bias, fused residual) */
    SDB_PROF_WINOGRAD,    /* 3x3 convolutions by Winograd (transforms + GEMMs); FLOPs counted as
                             the direct convolution's, so GFLOP/s is the effective rate */
    SDB_PROF_LINEAR,      /* dense layers (projections, feed-forward, time embedding) */
    SDB_PROF_ATTENTION,   /* scores, softmax, weighted sum (not the q/k/v projections) */
    SDB_PROF_NORM,        /* GroupNorm (+ fused SiLU), LayerNorm */
    SDB_PROF_ELEMENTWISE, /* activations, GEGLU, residual adds */
    SDB_PROF_COPY,        /* transposes, concatenations, upsampling copies */
    SDB_PROF_KINDS
} sdb_prof_kind;

typedef struct sdb_profile {
    double seconds[SDB_PROF_KINDS];
    double flops[SDB_PROF_KINDS];
    long calls[SDB_PROF_KINDS];
} sdb_profile;

static inline const char *sdb_prof_kind_name(int k)
{
    static const char *const names[SDB_PROF_KINDS] = {"convolution", "winograd", "linear", "attention",
                                                      "norm", "elementwise", "copies"};
    return k >= 0 && k < SDB_PROF_KINDS ? names[k] : "?";
}

static inline double sdb_prof_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* t0 = sdb_prof_begin(p); ...op...; sdb_prof_end(p, kind, t0, flops): nothing when p is NULL. */
static inline double sdb_prof_begin(const sdb_profile *p) { return p ? sdb_prof_now() : 0.0; }
static inline void sdb_prof_end(sdb_profile *p, int kind, double t0, double flops)
{
    if (!p) return;
    p->seconds[kind] += sdb_prof_now() - t0;
    p->flops[kind] += flops;
    p->calls[kind]++;
}

/* All kinds' counted FLOPs. */
static inline double sdb_prof_total_flops(const sdb_profile *p)
{
    double f = 0;
    for (int k = 0; k < SDB_PROF_KINDS; k++) f += p->flops[k];
    return f;
}

/* Divides every counter by n (n runs accumulated -> one run's mean). */
static inline void sdb_prof_div(sdb_profile *p, int n)
{
    for (int k = 0; n > 0 && k < SDB_PROF_KINDS; k++) {
        p->seconds[k] /= n;
        p->flops[k] /= n;
        p->calls[k] /= n;
    }
}

#endif
