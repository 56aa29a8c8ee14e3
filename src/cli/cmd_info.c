/*
 * cmd_info.c — `sdbatch info IMAGE.png`: prints the image's `parameters` text chunk (what sdbatch,
 * AUTOMATIC1111 and compatible tools store there) as it is, or parsed as JSON with --json.
 */
#include "cli.h"

#include "sdb/a1111.h"
#include "sdb/image.h"

#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
    fprintf(f,
"usage: sdbatch info IMAGE.png [--json]\n"
"\n"
"Prints the generation parameters stored in a PNG's `parameters` text chunk (sdbatch's output,\n"
"or AUTOMATIC1111's and compatible tools'): the prompt, the negative prompt and the settings line.\n"
"\n"
"  --json      the parsed parameters as one JSON object: file, prompt, negative_prompt, the settings\n"
"              as \"parameters\" (every key, known or not, as a string, in order), and the common\n"
"              ones typed: steps, seed, cfg_scale, sampler, width, height, denoising_strength,\n"
"              model_hash\n"
"\n"
"Exit status: 0, 1 when the file cannot be read or has no parameters, 2 for usage errors.\n");
}

char *cli_read_parameters(const char *cmd, const char *path)
{
    char **keys = NULL, **vals = NULL;
    int n = 0;
    sdb_err err = {0};
    if (sdb_png_read_text(path, &keys, &vals, &n, &err)) {
        cli_error(cmd, &err);
        return NULL;
    }
    char *out = NULL;
    for (int i = 0; i < n; i++)
        if (!strcmp(keys[i], "parameters")) { free(out); out = strdup(vals[i]); }
    sdb_png_text_free(keys, vals, n);
    if (!out) fprintf(stderr, "sdbatch %s: error: %s: no 'parameters' text chunk\n", cmd, path);
    return out;
}

static void set_int(json_t *o, const char *name, const char *v)
{
    if (!v) return;
    char *end;
    long long x = strtoll(v, &end, 10);
    if (end != v && !*end) json_object_set_new(o, name, json_integer(x));
}

static void set_real(json_t *o, const char *name, const char *v)
{
    if (!v) return;
    char *end;
    double x = strtod(v, &end);
    if (end != v && !*end) json_object_set_new(o, name, json_real(x));
}

int cmd_info(int argc, char **argv)
{
    static const struct option opts[] = {{"json", no_argument, 0, 'j'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int as_json = 0, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c == 'j') as_json = 1;
        else if (c == 'h') { usage(stdout); return EXIT_OK; }
        else return cli_usage_error("info", "unknown option");
    }
    if (optind != argc - 1) return cli_usage_error("info", "give exactly one image (see --help)");
    const char *path = argv[optind];
    char *text = cli_read_parameters("info", path);
    if (!text) return EXIT_FAILURE_RUN;
    if (!as_json) {
        fputs(text, stdout);
        if (!text[0] || text[strlen(text) - 1] != '\n') fputc('\n', stdout);
        free(text);
        return EXIT_OK;
    }
    sdb_a1111_params a;
    sdb_err err = {0};
    if (sdb_a1111_parse(text, &a, &err)) { free(text); return cli_error("info", &err); }
    json_t *o = json_object(), *kv = json_object();
    json_object_set_new(o, "file", json_string(path));
    json_object_set_new(o, "prompt", json_string(a.prompt));
    json_object_set_new(o, "negative_prompt", json_string(a.negative_prompt));
    for (int i = 0; i < a.n; i++) json_object_set_new(kv, a.kv[i].key, json_string(a.kv[i].value));
    json_object_set_new(o, "parameters", kv);
    set_int(o, "steps", sdb_a1111_get(&a, "Steps"));
    set_int(o, "seed", sdb_a1111_get(&a, "Seed"));
    set_real(o, "cfg_scale", sdb_a1111_get(&a, "CFG scale"));
    set_real(o, "denoising_strength", sdb_a1111_get(&a, "Denoising strength"));
    const char *v;
    if ((v = sdb_a1111_get(&a, "Sampler"))) json_object_set_new(o, "sampler", json_string(v));
    if ((v = sdb_a1111_get(&a, "Model hash"))) json_object_set_new(o, "model_hash", json_string(v));
    int w, h;
    if (sdb_a1111_size(sdb_a1111_get(&a, "Size"), &w, &h) == 0) {
        json_object_set_new(o, "width", json_integer(w));
        json_object_set_new(o, "height", json_integer(h));
    }
    char *s = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII | JSON_REAL_PRECISION(15));
    if (s) { puts(s); free(s); }
    json_decref(o);
    sdb_a1111_free(&a);
    free(text);
    return EXIT_OK;
}
