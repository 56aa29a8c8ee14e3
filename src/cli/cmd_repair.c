/*
 * cmd_repair.c — `sdbatch repair MANIFEST`: rebuild a batch's state database from the outputs on
 * disk and say what was done (the work is in src/jobs/repair.c).
 */
#include "cli.h"
#include "sdb/manifest.h"
#include "sdb/repair.h"

#include <stdio.h>
#include <string.h>

static void usage(FILE *f)
{
    fprintf(f,
        "usage: sdbatch repair MANIFEST [--state PATH] [--weights f32|f16] [--threads N] [--quiet]\n\n"
        "Rebuilds the state database of a batch whose state.db is damaged (corrupt, truncated, a\n"
        "-wal file it cannot use) or lost, from what is on disk. Every state*.db of the output\n"
        "folder is checked; a damaged one is read where it still answers, then moved aside as\n"
        "<name>.damaged-<time>. A job counts as done when a readable database records its output\n"
        "with the SHA-256 the file still has, or when its output PNG carries this job's identity\n"
        "(written by 'sdbatch run'); every other job is left pending for the next run. The model\n"
        "is loaded to compute the jobs' identities (give the --weights the runs used). Run it\n"
        "while no 'sdbatch run' uses the folder.\n\n"
        "  --state PATH       the state database to rebuild (default <output_dir>/.sdbatch/state.db)\n"
        "  --weights f32|f16  as for 'sdbatch run' (the identity depends on it)\n"
        "  --threads N        threads for loading the model\n"
        "  --quiet            no line per job\n\n"
        "Exit status: 0 repaired (some jobs may be pending), 1 error, 2 bad manifest or usage.\n");
}

typedef struct { int quiet; } report;

static void on_job(void *ud, const char *id, int done, const char *why)
{
    const report *r = ud;
    if (!r->quiet) printf("  %-8s %s: %s\n", done ? "done" : "pending", id, why);
}

static void on_file(void *ud, const char *path, const char *problem, const char *moved_to)
{
    (void)ud;
    printf("damaged: %s\n  %s\n", path, problem);
    if (moved_to) printf("  moved aside to %s\n", moved_to);
    else printf("  could not be moved aside\n");
}

int cmd_repair(int argc, char **argv)
{
    sdb_repair_opts o;
    memset(&o, 0, sizeof o);
    report rep = {0};
    const char *path = NULL;
    long long v;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); return EXIT_OK; }
        else if (!strcmp(a, "--state") && i + 1 < argc) o.state_path = argv[++i];
        else if (!strcmp(a, "--weights") && i + 1 < argc) {
            if (cli_parse_weights("repair", argv[++i], &o.weights_f16)) return EXIT_USAGE;
        } else if (!strcmp(a, "--threads") && i + 1 < argc) {
            if (cli_parse_int("repair", "--threads", argv[++i], 1, 4096, &v)) return EXIT_USAGE;
            o.threads = (int)v;
        } else if (!strcmp(a, "--quiet") || !strcmp(a, "-q")) rep.quiet = 1;
        else if (a[0] == '-' && a[1]) return cli_usage_error("repair", "unknown option '%s'", a);
        else if (!path) path = a;
        else return cli_usage_error("repair", "unexpected argument '%s'", a);
    }
    if (!path) return cli_usage_error("repair", "missing MANIFEST");
    sdb_manifest m;
    sdb_err err;
    sdb_err_clear(&err);
    int rc = sdb_manifest_load(&m, path, &err);
    if (rc == SDB_EIO || rc == SDB_ENOMEM || m.n_errors > m.n_input_errors) {
        if (m.n_diags) sdb_manifest_print_diags(&m, stderr);
        else fprintf(stderr, "sdbatch repair: error: %s\n", err.msg);
        sdb_manifest_free(&m);
        return EXIT_USAGE;
    }
    sdb_manifest_hash_inputs(&m, &err);
    o.on_job = on_job;
    o.on_file = on_file;
    o.ud = &rep;
    sdb_log log = cli_logger();
    sdb_repair_result res;
    printf("repairing the state of %s (%d job(s))\n", path, m.n_jobs);
    rc = sdb_repair_manifest(&m, sdb_executor_pipeline(), &o, &res, &log, &err);
    int code = EXIT_OK;
    if (rc) code = cli_error("repair", &err) == EXIT_USAGE ? EXIT_USAGE : EXIT_FAILURE_RUN;
    else
        printf("%s: %s; %d job(s): %d done (%d recorded in a readable database, %d known by their PNG's identity; "
               "%d already recorded as done), %d pending (the next 'sdbatch run' does them)\n",
               path, res.rebuilt ? "state database rebuilt" : "state database kept and completed", res.total,
               res.done_db + res.done_png, res.done_db, res.done_png, res.already, res.pending);
    sdb_manifest_free(&m);
    return code;
}
