/*
 * cmd_sheet.c — `sdbatch sheet MANIFEST -o sheet.png`: a contact sheet of a batch (one row per
 * job: input with the mask outlined, output, caption; failed jobs with their error), as PNG pages
 * or one HTML page (src/jobs/sheet.c draws them).
 */
#include "cli.h"

#include "sdb/batch_state.h"
#include "sdb/fsutil.h"
#include "sdb/image.h"
#include "sdb/manifest.h"
#include "sdb/sheet.h"

#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
    fprintf(f,
"usage: sdbatch sheet MANIFEST [-o sheet.png] [--per-page N] [--thumb N] [--html] [--state PATH]\n"
"\n"
"Draws a contact sheet of a batch for review: one row per job with its input (the mask's outline\n"
"in red), its output and a caption (id, state, seed, steps, guidance, strength, scheduler, prompt;\n"
"a failed job shows its error). The jobs' states come from the batch's state databases, as\n"
"`sdbatch status` reads them.\n"
"\n"
"  -o, --output PATH   the PNG to write (default sheet.png). A batch with more jobs than one page\n"
"                      holds is written as PATH's name + -001, -002, ... (sheet-001.png, ...)\n"
"  --per-page N        rows per page (default 25)\n"
"  --thumb N           size of the picture boxes in pixels (default 160)\n"
"  --html              write one HTML page instead (default sheet.html) that shows the input, mask\n"
"                      and output files themselves, with the same captions\n"
"  --state PATH        read this state database only\n"
"\n"
"Exit status: 0, 1 when a file cannot be written or a state database read, 2 for a bad manifest\n"
"or usage.\n");
}

/* PATH with "-NNN" inserted before its extension. */
static char *page_path(const char *path, int page)
{
    const char *slash = strrchr(path, '/'), *dot = strrchr(path, '.');
    if (!dot || (slash && dot < slash)) dot = path + strlen(path);
    size_t n = strlen(path) + 16;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%.*s-%03d%s", (int)(dot - path), path, page, dot);
    return p;
}

int cmd_sheet(int argc, char **argv)
{
    static const struct option opts[] = {
        {"output", required_argument, 0, 'o'}, {"per-page", required_argument, 0, 'p'},
        {"thumb", required_argument, 0, 't'}, {"html", no_argument, 0, 'H'},
        {"state", required_argument, 0, 's'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    const char *output = NULL, *state = NULL;
    int html = 0, c;
    long long v;
    sdb_sheet_opts so = {0, 0};
    optind = 1;
    while ((c = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
        switch (c) {
        case 'o': output = optarg; break;
        case 'p': if (cli_parse_int("sheet", "--per-page", optarg, 1, 10000, &v)) return EXIT_USAGE; so.per_page = (int)v; break;
        case 't': if (cli_parse_int("sheet", "--thumb", optarg, 32, 2048, &v)) return EXIT_USAGE; so.thumb = (int)v; break;
        case 'H': html = 1; break;
        case 's': state = optarg; break;
        case 'h': usage(stdout); return EXIT_OK;
        default: return cli_usage_error("sheet", "unknown option");
        }
    }
    if (optind != argc - 1) return cli_usage_error("sheet", "give exactly one MANIFEST (see --help)");
    if (!output) output = html ? "sheet.html" : "sheet.png";
    sdb_manifest m;
    sdb_err err = {0};
    if (sdb_manifest_load(&m, argv[optind], &err)) {
        if (m.n_diags) sdb_manifest_print_diags(&m, stderr);
        else fprintf(stderr, "sdbatch sheet: error: %s\n", err.msg);
        sdb_manifest_free(&m);
        return EXIT_USAGE;
    }
    sdb_manifest_hash_inputs(&m, &err);
    sdb_batch_state bs;
    int code = EXIT_OK;
    if (sdb_batch_state_read(&bs, &m, state, &err)) { code = cli_error("sheet", &err); goto out; }
    for (int i = 0; i < bs.n_notes; i++) fprintf(stderr, "sdbatch sheet: %s\n", bs.notes[i]);
    if (html) {
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);
        char *dir = sdb_path_dirname(output), absdir[PATH_MAX];
        if (!f || !dir || !realpath(dir, absdir)) {
            fprintf(stderr, "sdbatch sheet: error: %s: the folder does not exist\n", output);
            if (f) fclose(f);
            free(buf);
            free(dir);
            code = EXIT_FAILURE_RUN;
            goto out;
        }
        free(dir);
        int rc = sdb_sheet_html(&m, &bs, absdir, f, &err);
        fclose(f);
        if (!rc) rc = sdb_write_file_atomic(output, buf, len, &err);
        free(buf);
        if (rc) code = cli_error("sheet", &err);
        else printf("wrote %s (%d jobs)\n", output, m.n_jobs);
        goto out;
    }
    int pages = sdb_sheet_pages(&m, &so);
    for (int p = 0; p < pages && !code; p++) {
        sdb_image page = {0};
        char *path = pages == 1 ? strdup(output) : page_path(output, p + 1);
        if (!path || sdb_sheet_render(&m, &bs, &so, p, &page, &err) || sdb_png_write(path, &page, NULL, NULL, 0, &err))
            code = cli_error("sheet", &err);
        else printf("wrote %s (%dx%d)\n", path, page.w, page.h);
        free(path);
        sdb_image_free(&page);
    }
out:
    sdb_batch_state_free(&bs);
    sdb_manifest_free(&m);
    return code;
}
