/*
 * runner.h — runs a manifest's jobs against its state database (the engine of `sdbatch run`).
 *
 * The runner knows jobs, the store and files; the compute behind a job is an executor: a small
 * table of functions (load a model, turn one job into PNG bytes, free). The real one
 * (sdb_executor_pipeline) is built on pipeline.h; keeping it behind this interface lets the
 * runner's crash-safety logic stay independent of the model code.
 *
 * One job, in order (store.c draws the state machine and lists the invariants):
 *   claim (BEGIN IMMEDIATE) -> generate (step callback: progress, lease heartbeat, stop flag)
 *   -> encode PNG -> record its SHA-256 (prepare) -> temp file + fsync -> rename + fsync folder
 *   -> complete (done).
 * Test kill points (sdb_kill_point, env SDB_TEST_KILL_AT=<name>[@n]): startup, load_start,
 * loaded, synced, claimed, claim_txn, step, generated, prepared, png_written, renamed,
 * complete_txn, done, recover_txn.
 */
#ifndef SDB_RUNNER_H
#define SDB_RUNNER_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include "sdb/error.h"
#include "sdb/log.h"
#include "sdb/manifest.h"
#include "sdb/store.h"

/* Called after each denoising step; nonzero cancels (the executor then returns SDB_EINTERRUPTED). */
typedef int (*sdb_run_step_fn)(void *ud, int step, int total);

typedef struct sdb_executor {
    void *ud;
    /* Loads the model once; *model_id receives a stable hex id of the weights (owned by the model).
     * config_dir / tokenizer_dir: for single-file checkpoints (NULL = beside the file).
     * weights_f16: keep the weight matrices as IEEE half (sdb_model_opts.weights_f16). */
    int (*load)(void *ud, const char *model_path, const char *config_dir, const char *tokenizer_dir,
                int threads, int weights_f16, void **model, const char **model_id, const sdb_log *log,
                sdb_err *err);
    /* Runs one job; *png receives the encoded PNG (malloc'd), with its `parameters` text chunk. */
    int (*run)(void *ud, void *model, const sdb_job_spec *job, sdb_run_step_fn on_step, void *step_ud,
               uint8_t **png, size_t *png_len, const sdb_log *log, sdb_err *err);
    void (*unload)(void *ud, void *model);
    /* Optional (NULL: no memory check): what the job would hold at its peak, in MiB (weights and
     * scratch, sdb_gen_memory_estimate) and its working size. Nonzero: the inputs cannot be read
     * (the job then fails when it runs, as it would without this). */
    int (*mem_estimate)(void *ud, void *model, const sdb_job_spec *job, double *weights_mib,
                        double *scratch_mib, int *w, int *h, sdb_err *err);
} sdb_executor;

/* What the default --max-memory leaves free for the rest of the machine. */
#define SDB_MEM_MARGIN_MIB 512.0

/* The real executor (pipeline.h). A copy whose ud points to an sdb_pipeline_exec_opts loads its
 * models with those options too (ud NULL: none). */
const sdb_executor *sdb_executor_pipeline(void);
typedef struct {
    size_t keep_filters; /* sdb_model_opts.keep_filters: bytes of kept weights (--keep-filters) */
} sdb_pipeline_exec_opts;

/* What became of one job this process ran (sdb_run_opts.on_job), told once the state database
 * has recorded it. The strings are valid during the call only. */
typedef struct sdb_job_event {
    const char *id;
    sdb_job_state state;   /* SDB_JOB_DONE; SDB_JOB_FAILED (an input, the executor or writing
                              the output failed); SDB_JOB_PENDING: stopped by *stop, released
                              (the attempt is not counted) */
    const char *output;    /* DONE: the file written; else NULL */
    double seconds;        /* the attempt's wall time: claim to done / failure / stop */
    const char *error;     /* FAILED: why; else NULL */
    int step, steps;       /* PENDING: the denoising step it stopped at, of steps; else 0 */
    long long run_id;      /* its row in the database's `runs` table */
} sdb_job_event;

/* Called once for each job this process claimed and saw through to an outcome (not for jobs
 * skipped as done or as someone else's, nor for one whose lease was lost to another process:
 * its outcome is that process's). */
typedef void (*sdb_run_job_fn)(void *ud, const sdb_job_event *ev);

typedef struct sdb_run_opts {
    const char *state_path;   /* NULL: <output_dir>/.sdbatch/state.db (or the shard's file) */
    int threads;              /* 0 = leave as is */
    int workers;              /* > 1: run the jobs in this many processes forked after the model is
                                 loaded (sharing its weights), each with threads/workers threads and
                                 one line per job (no bar); on_job is then called in the workers.
                                 At most one per selected job. 0 or 1: in this process */
    int weights_f16;          /* load the model with its matrices kept as IEEE half (--weights f16) */
    int max_attempts;         /* default 2 */
    int retry_failed;
    const char *const *only;  /* job ids to run (NULL = all) */
    int n_only;
    int dry_run;              /* report what would run; no model, no state written */
    double lease_seconds;     /* default 600 (env SDB_LEASE_SECONDS overrides) */
    int shard, n_shards;      /* n_shards 0 = not sharded. Sharded: the state file is
                                 state.<shard>-of-<n_shards>.db, written by this task only, so at
                                 start every row it left running is orphaned (a requeued task) */
    const unsigned char *job_mask; /* m->n_jobs flags, 1 = this process's job (its shard's);
                                      NULL = every job */
    int progress;             /* 1: redraw a progress bar on `progress_fp` (a TTY) */
    FILE *progress_fp;        /* default stderr */
    FILE *lines_fp;           /* one line per finished job, for people (`done ID (S s) -> OUT`,
                                 `failed ID (S s): ERR`, ...); NULL = silent (a dry run's
                                 list: stdout). Programs use on_job, not this text */
    sdb_run_job_fn on_job;    /* per-job outcome callback (NULL = none) */
    void *on_job_ud;
    volatile sig_atomic_t *stop; /* nonzero (the signal number) = stop at the next step boundary */
    double max_memory_mib;    /* a job whose estimate (executor's mem_estimate) exceeds this is
                                 failed before it starts. 0: what the machine can give now
                                 (MemAvailable + this process's RSS - SDB_MEM_MARGIN_MIB); < 0: no check */
    const char *confine_root; /* NULL, or a resolved folder holding output_dir (the daemon's
                                 --allow-root): outputs and the state folder are then reached from
                                 it down with no symlink followed, output_dir's own path included;
                                 an output_dir that does not resolve below it is a fatal error */
} sdb_run_opts;

typedef struct sdb_run_result {
    int total;        /* selected jobs */
    int done, failed, pending, running; /* their states at the end (running = other processes) */
    int ran, ran_ok, ran_failed;        /* what this process did */
    int skipped;      /* already done (here or in another state file of the folder) */
    int recovered;    /* orphaned rows put back at start */
    int interrupted;  /* the signal that stopped it, or 0 */
} sdb_run_result;

/* Runs the (already loaded and checked) manifest. Returns 0 when it ran to its end (look at the
 * result for failures), SDB_EINTERRUPTED when stopped by *stop, another code on a fatal error
 * (state database, model load). */
int sdb_run_manifest(const sdb_manifest *m, const sdb_executor *ex, const sdb_run_opts *o,
                     sdb_run_result *res, const sdb_log *log, sdb_err *err);

/* Removes `.<name>.png.tmp.<pid>.<n>` files in `dir` whose pid is not a live process on this
 * host and that are at least min_age_seconds old (0 = any age: right when one host owns the
 * folder; shards on a shared folder pass a multiple of the lease, since a pid dead here may be
 * alive on another node); returns how many. */
int sdb_clean_temp_files(const char *dir, double min_age_seconds);

#endif
