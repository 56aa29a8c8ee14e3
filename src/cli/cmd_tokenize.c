/*
 * cmd_tokenize.c — `sdbatch tokenize --model PATH [--pieces] TEXT...`: the CLIP input ids of each
 * text, one line of max_length (77) space-separated ids per text; with --pieces a second line
 * with the BPE token strings (bos, the kept tokens, eos; padding left out).
 */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sdb/fsutil.h"
#include "sdb/tokenizer.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: sdbatch tokenize --model PATH [--pieces] TEXT...\n\n"
               "Prints the CLIP token ids the text encoder gets for each TEXT (one line of 77 ids,\n"
               "space separated, padded with the pad token; longer texts are truncated with a warning).\n\n"
               "options:\n"
               "  --model PATH  a diffusers model folder (its tokenizer/ is used) or a tokenizer folder\n"
               "  --pieces      also print each text's token strings on a second line\n");
}

int cmd_tokenize(int argc, char **argv)
{
    const char *model = NULL;
    int pieces = 0, n_texts = 0, opts_done = 0;
    char **texts = calloc((size_t)argc, sizeof *texts);
    if (!texts) return EXIT_FAILURE_RUN;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!opts_done && (!strcmp(a, "--help") || !strcmp(a, "-h"))) { usage(stdout); free(texts); return 0; }
        if (!opts_done && !strcmp(a, "--model")) {
            if (i + 1 >= argc) { free(texts); return cli_usage_error("tokenize", "--model needs a value"); }
            model = argv[++i];
        } else if (!opts_done && !strncmp(a, "--model=", 8)) {
            model = a + 8;
        } else if (!opts_done && !strcmp(a, "--pieces")) {
            pieces = 1;
        } else if (!opts_done && !strcmp(a, "--")) {
            opts_done = 1;
        } else if (!opts_done && a[0] == '-' && a[1] == '-') {
            free(texts);
            return cli_usage_error("tokenize", "unknown option '%s' (put '--' before a text starting with '--')", a);
        } else {
            texts[n_texts++] = argv[i];
        }
    }
    if (!model) { free(texts); return cli_usage_error("tokenize", "--model PATH is required"); }
    if (!n_texts) { free(texts); return cli_usage_error("tokenize", "no TEXT given"); }

    /* a diffusers folder (its tokenizer/), or a tokenizer folder itself */
    sdb_err err = {0};
    char *direct = sdb_path_join(model, "vocab.json");
    char *dir = (direct && sdb_file_exists(direct)) ? strdup(model) : sdb_path_join(model, "tokenizer");
    free(direct);
    sdb_tokenizer *tok = NULL;
    int rc = dir ? sdb_tokenizer_load(&tok, dir, &err) : sdb_fail(&err, SDB_ENOMEM, "out of memory");
    free(dir);
    if (rc) { free(texts); return cli_error("tokenize", &err); }

    sdb_log log = cli_logger();
    int L = sdb_tokenizer_max_length(tok);
    int32_t *ids = malloc((size_t)L * sizeof *ids);
    if (!ids) { free(texts); sdb_tokenizer_free(tok); sdb_fail(&err, SDB_ENOMEM, "out of memory"); return cli_error("tokenize", &err); }
    for (int i = 0; i < n_texts; i++) {
        int nu = 0;
        rc = sdb_tokenizer_encode(tok, texts[i], -1, ids, &nu, &log, &err);
        if (rc) break;
        for (int j = 0; j < L; j++) printf(j ? " %d" : "%d", ids[j]);
        putchar('\n');
        if (pieces) {
            int kept = nu < L ? nu : L;
            for (int j = 0; j < kept; j++) printf(j ? " %s" : "%s", sdb_tokenizer_piece(tok, ids[j]));
            putchar('\n');
        }
    }
    free(ids);
    free(texts);
    sdb_tokenizer_free(tok);
    if (fflush(stdout) != 0) { sdb_fail(&err, SDB_EIO, "cannot write to stdout"); return cli_error("tokenize", &err); }
    return rc ? cli_error("tokenize", &err) : 0;
}
