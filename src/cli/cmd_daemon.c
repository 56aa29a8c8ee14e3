/*
 * cmd_daemon.c — `sdbatch daemon --spool DIR`: run the manifests dropped into a spool folder, one
 * after another, as a service (the work is in src/jobs/daemon.c).
 */
#include "cli.h"
#include "sdb/daemon.h"
#include "sdb/threads.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Exit status when another daemon holds the spool (the unit file does not restart on it). */
#define EXIT_SPOOL_BUSY 4

static volatile sig_atomic_t hup_flag;

static void on_hup(int sig) { (void)sig; hup_flag = 1; }

static void usage(FILE *f)
{
    fprintf(f,
        "usage: sdbatch daemon --spool DIR [options]\n\n"
        "Works through the batch manifests dropped into DIR/incoming/ (see 'sdbatch submit'), one\n"
        "at a time, keeping the model loaded between them. A manifest moves by rename from\n"
        "incoming/ to active/ while it runs, then to done/ (its jobs ran; a bad job fails alone) or\n"
        "failed/ (invalid: its errors are written beside it as <name>.errors.txt). Manifests run\n"
        "in order of their top-level 'priority:' (higher first, default 0), then oldest first.\n"
        "Jobs are recorded in the same state database 'sdbatch run' uses, so 'sdbatch status\n"
        "MANIFEST' works on a running manifest, and 'sdbatch status --spool DIR' lists the spool.\n"
        "A restarted daemon resumes exactly where the last one stopped (or was killed).\n\n"
        "  --spool DIR          the spool folder (created if missing)\n"
        "  --allow-root DIR     a folder the manifests' output_dir may be in (itself or below;\n"
        "                       repeatable; at least one is required). A manifest whose output_dir\n"
        "                       is elsewhere, or that sets allow_outputs_outside, goes to failed/;\n"
        "                       outputs are written from DIR down without following symlinks\n"
        "  --log FILE           append the event log to FILE (default: stderr)\n"
        "  --log-format F       text (default) or json (one JSON object a line)\n"
        "  --max-models N       models kept loaded, least recently used dropped first (default 1)\n"
        "  --min-free-memory MB before loading a model, drop cached ones while the system has less\n"
        "                       than MB MiB available (MemAvailable, or its memory cgroup's room when\n"
        "                       smaller; default 0: off)\n"
        "  --threads N          compute threads (default: $OMP_NUM_THREADS, else the CPUs it may use:\n"
        "                       its affinity mask, or its cgroups' CPU quota when smaller)\n"
        "  --weights f32|f16    f16: keep the models' weight matrices as IEEE half in memory\n"
        "  --keep-filters MIB   keep each model's U-Net weights as its kernels use them (Winograd\n"
        "                       filters, linear panels) in up to MIB MiB\n"
        "                       (faster steps, the same images; see 'sdbatch run')\n"
        "  --max-attempts N     as for 'sdbatch run' (default 2)\n"
        "  --rescan SECONDS     rescan incoming/ this often besides inotify (default 10)\n"
        "  --max-crashes N      give a manifest up (to failed/) when the daemon stopped N times in a\n"
        "                       row while running it without finishing a job: it crashed, was\n"
        "                       killed or ran out of memory (default 3; 0 = never)\n"
        "  --once               exit when there is nothing left to do instead of waiting\n\n"
        "Signals: SIGTERM/SIGINT stop at the next denoising step, leave the job pending and the\n"
        "manifest in active/, and exit 0 (a second one ends at once; still resumable). SIGHUP\n"
        "reopens the log file (after logrotate).\n\n"
        "One daemon per spool: DIR/daemon.pid holds the pid of the daemon and is locked (flock)\n"
        "while it runs; a second daemon on the same spool refuses to start.\n\n"
        "Exit status: 0 stopped by a signal or idle with --once, 1 error (spool, state),\n"
        "2 usage, 4 another daemon is running on this spool.\n");
}

int cmd_daemon(int argc, char **argv)
{
    sdb_daemon_opts o;
    memset(&o, 0, sizeof o);
    sdb_pipeline_exec_opts po = {0};
    o.max_models = 1;
    o.max_attempts = 2;
    o.rescan_seconds = 10;
    o.max_crashes = 3;
    const char *log_path = NULL;
    int json = 0;
    const char *roots[64];
    long long v;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); return EXIT_OK; }
        else if (!strcmp(a, "--spool") && i + 1 < argc) o.spool = argv[++i];
        else if (!strcmp(a, "--allow-root") && i + 1 < argc) {
            if (o.n_allow_roots == 64) return cli_usage_error("daemon", "at most 64 --allow-root folders");
            roots[o.n_allow_roots++] = argv[++i];
        }
        else if (!strcmp(a, "--log") && i + 1 < argc) log_path = argv[++i];
        else if (!strcmp(a, "--log-format") && i + 1 < argc) {
            const char *f = argv[++i];
            if (!strcmp(f, "json")) json = 1;
            else if (!strcmp(f, "text")) json = 0;
            else return cli_usage_error("daemon", "--log-format is text or json, got '%s'", f);
        } else if (!strcmp(a, "--max-models") && i + 1 < argc) {
            if (cli_parse_int("daemon", "--max-models", argv[++i], 1, 64, &v)) return EXIT_USAGE;
            o.max_models = (int)v;
        } else if (!strcmp(a, "--weights") && i + 1 < argc) {
            if (cli_parse_weights("daemon", argv[++i], &o.weights_f16)) return EXIT_USAGE;
        } else if (!strcmp(a, "--keep-filters") && i + 1 < argc) {
            if (cli_parse_keep_filters("daemon", argv[++i], &po.keep_filters)) return EXIT_USAGE;
        } else if (!strcmp(a, "--threads") && i + 1 < argc) {
            if (cli_parse_int("daemon", "--threads", argv[++i], 1, 4096, &v)) return EXIT_USAGE;
            o.threads = (int)v;
        } else if (!strcmp(a, "--max-attempts") && i + 1 < argc) {
            if (cli_parse_int("daemon", "--max-attempts", argv[++i], 1, 1000, &v)) return EXIT_USAGE;
            o.max_attempts = (int)v;
        } else if (!strcmp(a, "--rescan") && i + 1 < argc) {
            double d;
            if (cli_parse_double("daemon", "--rescan", argv[++i], &d)) return EXIT_USAGE;
            if (!(d >= 0.1 && d <= 86400)) return cli_usage_error("daemon", "--rescan expects 0.1 to 86400 seconds");
            o.rescan_seconds = d;
        } else if (!strcmp(a, "--max-crashes") && i + 1 < argc) {
            if (cli_parse_int("daemon", "--max-crashes", argv[++i], 0, 1000000, &v)) return EXIT_USAGE;
            o.max_crashes = (int)v;
        } else if (!strcmp(a, "--min-free-memory") && i + 1 < argc) {
            double d;
            if (cli_parse_double("daemon", "--min-free-memory", argv[++i], &d)) return EXIT_USAGE;
            if (!(d >= 0 && d < 1e9)) return cli_usage_error("daemon", "--min-free-memory expects MiB >= 0");
            o.min_free_mb = d;
        } else if (!strcmp(a, "--once")) o.once = 1;
        else if (a[0] == '-' && a[1]) return cli_usage_error("daemon", "unknown option '%s'", a);
        else return cli_usage_error("daemon", "unexpected argument '%s' (the spool is given with --spool)", a);
    }
    if (!o.spool) return cli_usage_error("daemon", "missing --spool DIR");
    if (!o.n_allow_roots)
        return cli_usage_error("daemon", "missing --allow-root DIR: the folder(s) the manifests' output_dir may be in "
                               "(the daemon writes nowhere else)");
    o.allow_roots = roots;

    sdb_err err;
    sdb_err_clear(&err);
    sdb_dlog log;
    if (sdb_dlog_open(&log, log_path, json, &err)) { fprintf(stderr, "sdbatch daemon: error: %s\n", err.msg); return EXIT_FAILURE_RUN; }
    log.reopen = &hup_flag;
    o.log = &log;
    static const int stop_signals[] = {SIGTERM, SIGINT, 0};
    o.stop = cli_catch_stop_signals(stop_signals, SA_RESTART);
    cli_handle_signal(SIGHUP, on_hup, SA_RESTART);
    signal(SIGPIPE, SIG_IGN);

    /* OpenMP's own default is the affinity mask, blind to a CPU quota (a systemd CPUQuota=) */
    if (!o.threads && !getenv("OMP_NUM_THREADS")) o.threads = sdb_threads_available();
    sdb_executor ex = *sdb_executor_pipeline();
    ex.ud = &po;
    o.executor = &ex;
    int rc = sdb_daemon_run(&o, &err);
    int code = EXIT_OK;
    if (rc) {
        fprintf(stderr, "sdbatch daemon: error: %s\n", err.msg);
        code = rc == SDB_ESTATE && strstr(err.msg, "already running") ? EXIT_SPOOL_BUSY
             : rc == SDB_EINVAL && strstr(err.msg, "--allow-root") ? EXIT_USAGE : EXIT_FAILURE_RUN;
    }
    sdb_dlog_close(&log);
    return code;
}
