/*
 * cmd_validate.c — `sdbatch validate MANIFEST`: every check `run` makes before computing.
 */
#include "cli.h"
#include "sdb/manifest.h"

#include <stdio.h>
#include <string.h>

int cmd_validate(int argc, char **argv)
{
    const char *path = NULL;
    int quiet = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: sdbatch validate MANIFEST [--quiet]\n\n"
                   "Checks a batch manifest without any compute: the schema (keys, types, ranges;\n"
                   "schemas/manifest.schema.json), unique ids and outputs, glob expansion, that every\n"
                   "input image and mask exists and decodes, image/mask sizes, and that the model's\n"
                   "configs load. Every problem is printed as FILE:LINE:COLUMN: message.\n\n"
                   "  --quiet   print only the problems\n\n"
                   "Exit status: 0 valid (warnings allowed), 2 invalid or usage error.\n");
            return EXIT_OK;
        }
        if (!strcmp(argv[i], "--quiet") || !strcmp(argv[i], "-q")) quiet = 1;
        else if (argv[i][0] == '-' && argv[i][1]) return cli_usage_error("validate", "unknown option '%s'", argv[i]);
        else if (path) return cli_usage_error("validate", "one manifest at a time (got '%s' and '%s')", path, argv[i]);
        else path = argv[i];
    }
    if (!path) return cli_usage_error("validate", "missing MANIFEST");
    sdb_manifest m;
    sdb_err err;
    sdb_err_clear(&err);
    int rc = sdb_manifest_load(&m, path, &err);
    if (rc == SDB_EIO || rc == SDB_ENOMEM) {
        sdb_manifest_free(&m);
        fprintf(stderr, "sdbatch validate: error: %s\n", err.msg);
        return EXIT_USAGE;
    }
    /* file checks only when the structure is sound (else they would mostly repeat the problem) */
    if (m.n_errors == m.n_input_errors) sdb_manifest_check(&m, &err);   /* job-only errors: still check the rest */
    sdb_manifest_print_diags(&m, stderr);
    int bad = m.n_errors > 0;
    if (!quiet) {
        if (bad) printf("%s: invalid: %d error(s), %d warning(s)\n", path, m.n_errors, m.n_warnings);
        else printf("%s: ok: %d job(s), model %s, output %s%s\n", path, m.n_jobs, m.model, m.output_dir,
                    m.n_warnings ? " (with warnings)" : "");
    }
    sdb_manifest_free(&m);
    return bad ? EXIT_USAGE : EXIT_OK;
}
