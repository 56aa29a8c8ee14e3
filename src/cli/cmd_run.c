/*
 * cmd_run.c — `sdbatch run MANIFEST`: validate, load the model once, run the pending jobs.
 */
#include "cli.h"
#include "sdb/manifest.h"
#include "sdb/runner.h"
#include "shard_cli.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void usage(FILE *f)
{
    fprintf(f,
        "usage: sdbatch run MANIFEST [options]\n\n"
        "Validates the manifest (as 'sdbatch validate'), loads the model once and runs every job\n"
        "that is not done yet, recording each job in <output_dir>/.sdbatch/state.db. Run it again\n"
        "after a crash, a kill or an edit: finished jobs are skipped, edited ones redone. Several\n"
        "processes may run one manifest at once on one host; each job runs exactly once.\n\n"
        "  --threads N        compute threads (default: SLURM_CPUS_PER_TASK, else OMP_NUM_THREADS,\n"
        "                     else the CPUs this process may run on: its affinity mask, or its\n"
        "                     cgroups' CPU quota when smaller)\n"
        "  --workers K        run K jobs at once: K processes forked after the model is loaded (they\n"
        "                     share its weights), each with 1/K of the threads; one line per job,\n"
        "                     no bar. Pays for small images and many cores (README: Benchmarks)\n"
        "  --weights f32|f16  f16: keep the weight matrices as IEEE half in memory (about half the\n"
        "                     weights' RAM; an F16 model gives the same images, an F32 one is rounded\n"
        "                     once at load, and counts as another model: its jobs are redone)\n"
        "  --keep-filters MIB keep each model's U-Net weights in the form its kernels use (Winograd\n"
        "                     filters, linear panels) in up to MIB MiB instead of making them every\n"
        "                     step: faster steps, the same images (SD 1.5: 3634 MiB covers 256x256,\n"
        "                     6959 MiB 512x512; default 0)\n"
        "  --shard I/N|auto   run only shard I of N (0-based; see README: the split is by expected cost\n"
        "                     and stable when jobs are appended); state in state.<I>-of-<N>.db. auto\n"
        "                     (the default inside a Slurm array) takes it from SLURM_ARRAY_TASK_*\n"
        "  --max-memory MiB   a job whose estimated peak (weights + scratch for its size) is above MiB\n"
        "                     fails before it starts, instead of meeting the OOM killer (default: what\n"
        "                     the machine, or its memory cgroup if tighter, can give: MemAvailable (or\n"
        "                     the cgroup's limit less what is in use there) + this process's RSS\n"
        "                     - 512 MiB; 0: off)\n"
        "  --max-attempts N   a failed job is retried by later runs until it failed N times (default 2)\n"
        "  --retry-failed     retry failed jobs whatever their attempts\n"
        "  --only ID...       run only these jobs (ids, space or comma separated)\n"
        "  --dry-run          list what would run; compute and write nothing\n"
        "  --state PATH       the state database (default <output_dir>/.sdbatch/state.db)\n"
        "  --no-progress      one line per finished job even on a terminal\n\n"
        "On a terminal a progress bar shows jobs done/total, the current job's step, images/min and\n"
        "the ETA; otherwise one line per finished job. SIGINT/SIGTERM/SIGUSR1 stop at the next denoising\n"
        "step and return the job to pending (a second signal ends at once); SIGUSR1 is what\n"
        "`sbatch --signal=B:USR1@120` sends (via tools/slurm/sdbatch-array.sbatch) before a time limit.\n\n"
        "Exit status: 0 all selected jobs done, 3 some failed, 2 bad manifest or usage,\n"
        "130 / 143 / 138 interrupted by SIGINT / SIGTERM / SIGUSR1, 1 other errors (state database, model).\n");
}

int cmd_run(int argc, char **argv)
{
    sdb_run_opts o;
    memset(&o, 0, sizeof o);
    o.max_attempts = 2;
    const char *path = NULL;
    const char **only = calloc(argc + 1, sizeof *only);
    int n_only = 0, no_progress = 0;
    const char *shard_arg = NULL;
    unsigned char *shard_mask = NULL;
    char *only_buf[64];
    int n_only_buf = 0;
    long long v;
    sdb_pipeline_exec_opts po = {0};
    if (!only) return EXIT_FAILURE_RUN;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); free(only); return EXIT_OK; }
        else if (!strcmp(a, "--threads") && i + 1 < argc) {
            if (cli_parse_int("run", "--threads", argv[++i], 1, 4096, &v)) { free(only); return EXIT_USAGE; }
            o.threads = (int)v;
        } else if (!strcmp(a, "--workers") && i + 1 < argc) {
            if (cli_parse_int("run", "--workers", argv[++i], 1, 256, &v)) { free(only); return EXIT_USAGE; }
            o.workers = (int)v;
        } else if (!strcmp(a, "--weights") && i + 1 < argc) {
            if (cli_parse_weights("run", argv[++i], &o.weights_f16)) { free(only); return EXIT_USAGE; }
        } else if (!strcmp(a, "--keep-filters") && i + 1 < argc) {
            if (cli_parse_keep_filters("run", argv[++i], &po.keep_filters)) { free(only); return EXIT_USAGE; }
        } else if (!strcmp(a, "--max-memory") && i + 1 < argc) {
            double d;
            if (cli_parse_double("run", "--max-memory", argv[++i], &d)) { free(only); return EXIT_USAGE; }
            if (!(d >= 0 && d < 1e9)) { free(only); return cli_usage_error("run", "--max-memory expects MiB >= 0"); }
            o.max_memory_mib = d > 0 ? d : -1;   /* 0 on the command line: no check */
        } else if (!strcmp(a, "--max-attempts") && i + 1 < argc) {
            if (cli_parse_int("run", "--max-attempts", argv[++i], 1, 1000, &v)) { free(only); return EXIT_USAGE; }
            o.max_attempts = (int)v;
        } else if (!strcmp(a, "--retry-failed")) o.retry_failed = 1;
        else if (!strcmp(a, "--dry-run")) o.dry_run = 1;
        else if (!strcmp(a, "--no-progress")) no_progress = 1;
        else if (!strcmp(a, "--state") && i + 1 < argc) o.state_path = argv[++i];
        else if (!strcmp(a, "--shard") && i + 1 < argc) shard_arg = argv[++i];
        else if (!strcmp(a, "--only")) {
            int got = 0;
            while (i + 1 < argc && argv[i + 1][0] != '-') {
                char *s = argv[++i];
                if (strchr(s, ',') && n_only_buf < 64) {
                    char *copy = strdup(s);
                    only_buf[n_only_buf++] = copy;
                    for (char *t = strtok(copy, ","); t; t = strtok(NULL, ",")) only[n_only++] = t;
                } else only[n_only++] = s;
                got++;
                if (!path && i + 1 >= argc) break;
            }
            if (!got) { free(only); return cli_usage_error("run", "--only needs at least one job id"); }
        } else if (a[0] == '-' && a[1]) { free(only); return cli_usage_error("run", "unknown option '%s'", a); }
        else if (!path) path = a;
        else { free(only); return cli_usage_error("run", "unexpected argument '%s'", a); }
    }
    int code = EXIT_OK;
    if (!path && n_only > 0) { path = only[--n_only]; }   /* `--only a b MANIFEST` */
    if (!path) { free(only); return cli_usage_error("run", "missing MANIFEST"); }

    sdb_log log = cli_logger();
    sdb_manifest m;
    sdb_err err;
    sdb_err_clear(&err);
    int rc = sdb_manifest_load(&m, path, &err);
    if (rc == SDB_EIO || rc == SDB_ENOMEM) {
        fprintf(stderr, "sdbatch run: error: %s\n", err.msg);
        code = EXIT_USAGE;
        goto out;
    }
    if (m.n_errors == m.n_input_errors) sdb_manifest_check(&m, &err);   /* job-only errors: still check the rest */
    sdb_manifest_print_diags(&m, stderr);
    if (m.n_errors > m.n_input_errors) {
        fprintf(stderr, "sdbatch run: %s is invalid (%d error(s)); nothing was run\n", path, m.n_errors);
        code = EXIT_USAGE;
        goto out;
    }
    if (m.n_input_errors)
        fprintf(stderr, "sdbatch run: %d job(s) have unusable inputs or outputs and will fail; the others run\n", m.n_input_errors);
    for (int i = 0; i < n_only; i++)
        if (sdb_manifest_find(&m, only[i]) < 0) {
            code = cli_usage_error("run", "--only: no job '%s' in %s", only[i], path);
            goto out;
        }
    if ((code = cli_shard_setup(&m, shard_arg, &o, &shard_mask)) != EXIT_OK) goto out;
    o.only = only;
    o.n_only = n_only;
    o.progress = !no_progress && o.workers <= 1 && isatty(STDERR_FILENO);
    o.progress_fp = stderr;
    o.lines_fp = stdout;
    static const int stop_signals[] = {SIGINT, SIGTERM, SIGUSR1, 0};
    o.stop = cli_catch_stop_signals(stop_signals, 0);

    sdb_run_result res;
    sdb_executor ex = *sdb_executor_pipeline();
    ex.ud = &po;
    rc = sdb_run_manifest(&m, &ex, &o, &res, &log, &err);
    if (rc == SDB_EINTERRUPTED || res.interrupted) {
        int sig = res.interrupted ? res.interrupted : (int)*o.stop;
        fprintf(stderr, "sdbatch run: interrupted by signal %d: %d done, %d pending; run again to resume\n",
                sig, res.done, res.total - res.done - res.failed);
        code = sig == SIGTERM ? EXIT_SIGTERM : sig == SIGUSR1 ? EXIT_SIGUSR1 : EXIT_SIGINT;
        goto out;
    }
    if (rc) { code = cli_error("run", &err); if (code == EXIT_USAGE) code = EXIT_FAILURE_RUN; goto out; }
    if (o.dry_run) {
        printf("dry run: %d job(s): %d to run, %d done, %d failed for good\n", res.total, res.pending, res.done, res.failed);
        goto out;
    }
    printf("%d/%d job(s) done (%d run now, %d skipped as done), %d failed, %d pending, %d running elsewhere\n",
           res.done, res.total, res.ran_ok, res.done - res.ran_ok, res.failed, res.pending, res.running);
    code = res.failed ? EXIT_JOBS_FAILED : EXIT_OK;
out:
    sdb_manifest_free(&m);
    free(shard_mask);
    for (int i = 0; i < n_only_buf; i++) free(only_buf[i]);
    free(only);
    return code;
}
