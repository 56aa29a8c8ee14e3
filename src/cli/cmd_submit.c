/*
 * cmd_submit.c — `sdbatch submit MANIFEST --spool DIR`: hand a manifest to the daemon.
 */
#include "cli.h"
#include "sdb/daemon.h"
#include "sdb/manifest.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
    fprintf(f,
        "usage: sdbatch submit MANIFEST... --spool DIR\n\n"
        "Copies each manifest into DIR/incoming/ for 'sdbatch daemon', atomically (a temp name,\n"
        "then a rename: the daemon never reads a half-written file), with its relative paths\n"
        "(model, model_config, tokenizer, output_dir, image, mask, glob, vae; bare model and vae\n"
        "names resolved in models/ beside it and $SDB_MODELS) made absolute so they\n"
        "still resolve from the spool; comments and layout are kept. A name already waiting or\n"
        "running gets -2, -3... Prints the path of each copy. The manifest is checked against the schema first: problems\n"
        "are reported (as 'sdbatch validate' would), but it is submitted anyway and the daemon\n"
        "moves an invalid one to DIR/failed/ with its errors beside it.\n\n"
        "  --spool DIR   the daemon's spool folder (created if missing)\n\n"
        "Exit status: 0 submitted, 1 could not be copied, 2 usage.\n");
}

int cmd_submit(int argc, char **argv)
{
    const char *spool = NULL;
    const char **paths = calloc((size_t)argc + 1, sizeof *paths);
    int n = 0;
    if (!paths) return EXIT_FAILURE_RUN;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); free(paths); return EXIT_OK; }
        else if (!strcmp(a, "--spool") && i + 1 < argc) spool = argv[++i];
        else if (a[0] == '-' && a[1]) { free(paths); return cli_usage_error("submit", "unknown option '%s'", a); }
        else paths[n++] = a;
    }
    if (!n) { free(paths); return cli_usage_error("submit", "missing MANIFEST"); }
    if (!spool) { free(paths); return cli_usage_error("submit", "missing --spool DIR"); }
    int code = EXIT_OK;
    for (int i = 0; i < n; i++) {
        sdb_err err;
        sdb_err_clear(&err);
        sdb_manifest m;
        int prio = 0;
        int rc = sdb_spool_load_manifest(&m, paths[i], &prio, &err);
        if (rc == SDB_EIO) {
            fprintf(stderr, "sdbatch submit: error: %s\n", err.msg);
            sdb_manifest_free(&m);
            code = EXIT_FAILURE_RUN;
            continue;
        }
        if (m.n_errors) {
            sdb_manifest_print_diags(&m, stderr);
            fprintf(stderr, "sdbatch submit: warning: %s has %d error(s): the daemon will move it to failed/\n",
                    paths[i], m.n_errors);
        }
        sdb_manifest_free(&m);
        char *dest = NULL;
        if (sdb_spool_submit(paths[i], spool, &dest, &err)) {
            fprintf(stderr, "sdbatch submit: error: %s\n", err.msg);
            code = EXIT_FAILURE_RUN;
            continue;
        }
        printf("%s\n", dest);
        free(dest);
    }
    free(paths);
    return code;
}
