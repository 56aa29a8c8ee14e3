/*
 * bench.h — speed and memory of a loaded model on this machine (`sdbatch bench`).
 *
 * Every figure is a median over `reps` timed runs after one warm-up run, measured in one process
 * together with OpenBLAS's own sgemm rate on a 4096² product (this machine's GEMM "peak"), so the
 * model's effective GFLOP/s can be read as a fraction of it even on a noisy, shared machine.
 */
#ifndef SDB_BENCH_H
#define SDB_BENCH_H

#include "sdb/error.h"
#include "sdb/log.h"
#include "sdb/pipeline.h"
#include "sdb/profile.h"

typedef struct sdb_bench_opts {
    int size;     /* image side in pixels (multiple of 8), default 512 */
    int steps;    /* denoising steps of the timed whole inpainting run, default 4 (0 = skip it) */
    int reps;     /* timed repetitions per figure (medians), default 3 */
    int profile;  /* break the U-Net step down by op kind */
    int gemm_n;   /* side of the reference sgemm, default 4096 */
    unsigned stages; /* SDB_BENCH_* bits, default all */
} sdb_bench_opts;

enum { SDB_BENCH_TEXT = 1, SDB_BENCH_UNET = 2, SDB_BENCH_ENCODE = 4, SDB_BENCH_DECODE = 8, SDB_BENCH_RUN = 16,
       SDB_BENCH_ALL = 31 };

typedef struct sdb_bench_result {
    int size, latent, threads, steps, reps;
    double sgemm_gflops;   /* median of every sgemm sample of the run (sgemm_samples of them) */
    int sgemm_samples;
    double unet_sgemm_gflops, vae_encode_sgemm_gflops, vae_decode_sgemm_gflops; /* sampled between
                              the stage's own repetitions (0 when the stage did not run) */
    double text_encode_s, unet_step_s, vae_encode_s, vae_decode_s, run_s;
    double text_gflop, unet_gflop, vae_encode_gflop, vae_decode_gflop; /* counted work (GFLOP) */
    double unet_step_min_s, unet_step_max_s;
    double unet_step_cpu_s; /* median CPU time (user + system, all threads) of a U-Net step: on a
                              shared machine, the steadier figure of a 1-thread run */
    double peak_rss_mib, weights_mib;
    int weights_f16;       /* the model keeps its matrices as half (sdb_model_opts.weights_f16) */
    int conv;              /* sdb_model_opts.conv: SDB_CONV_* */
    double kept_filters_mib; /* weights the U-Net kept as its kernels use them (--keep-filters) */
    int peak_rss_run;      /* peak_rss_mib is the whole run's own peak (VmHWM reset before it) */
    sdb_profile unet_prof; /* one U-Net step (averaged over the timed reps) when opts.profile */
    sdb_profile vae_decode_prof; /* one VAE decode (convolution and attention only), same */
    int have_prof;
} sdb_bench_result;

void sdb_bench_opts_default(sdb_bench_opts *o);
/* OpenBLAS's own (threaded) sgemm rate in GFLOP/s on an n x n product: the median of `reps`
 * timings (at most 16) after a warm-up; 0 when out of memory. */
double sdb_bench_sgemm_gflops(int n, int reps);
/* The median of v[0..n) (n >= 1), sorting v in place (ascending). */
double sdb_bench_median(double *v, int n);
/* This process's peak resident set (VmHWM) in MiB; 0 when /proc does not tell. */
double sdb_bench_peak_rss_mib(void);
/* Runs the benchmark on a loaded model (inpainting or not: the U-Net gets its own channel count). */
int sdb_bench_run(sdb_model *m, const sdb_bench_opts *o, sdb_bench_result *r, const sdb_log *log,
                  sdb_err *err);

#endif
