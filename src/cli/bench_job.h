/*
 * bench_job.h — `sdbatch bench --job`: a whole inpainting job in a child process, process start to
 * PNG written, as images/hour (bench_job.c).
 */
#ifndef SDB_CLI_BENCH_JOB_H
#define SDB_CLI_BENCH_JOB_H

#include "cli.h"

typedef struct {
    const char *model, *vae; /* as given on the command line (the child resolves them) */
    const char *scheduler;   /* a scheduler name (sdb_sched_names()) */
    int size, steps, reps, gemm_n;
    int weights_f16, conv;   /* passed on as --weights and --conv */
    long long keep_filters_mib; /* passed on as --keep-filters when not 0 */
    int json;
} bench_job_opts;

/* Runs the jobs (threads: sdb_threads_get(), passed on as --threads) and prints the figures;
 * returns the exit code. */
int bench_job(const bench_job_opts *o);

#endif
