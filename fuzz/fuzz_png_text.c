/*
 * fuzz_png_text.c — libFuzzer harness: the text chunks of a PNG (tEXt, zTXt, iTXt: keys, Latin-1
 * and UTF-8 values, compressed values) through sdb_png_read_text_memory, the reader that gives
 * back an output's A1111 `parameters` text and sdbatch's own identity keys; then every
 * `parameters` value through the A1111 parser (sdb_a1111_parse, what `sdbatch info` and
 * `generate --from` run on any PNG they are given) and its lookups.
 *
 * An input that is not a PNG is given to the A1111 parser directly as the text (the mutations
 * then reach the parser without having to keep a PNG valid around it).
 */
#include "sdb/a1111.h"
#include "sdb/image.h"

#include "fuzz_util.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The A1111 parser on one text: a prompt and a negative prompt always come back, every pair has
 * a key of at least two characters (the parser's regex) and a value, the lookups find the last
 * pair of a key. */
static void a1111(const char *text)
{
    sdb_a1111_params p;
    sdb_err err = {0};
    if (sdb_a1111_parse(text, &p, &err) != 0) { FUZZ_CHECK(err.code == SDB_ENOMEM && err.msg[0]); return; }
    FUZZ_CHECK(p.prompt && p.negative_prompt && p.n >= 0);
    FUZZ_CHECK(p.n == 0 || p.n >= 3);   /* a last line of fewer than 3 pairs belongs to the prompt */
    FUZZ_CHECK(p.has_negative || !p.negative_prompt[0]);
    for (int i = 0; i < p.n; i++) {
        FUZZ_CHECK(p.kv[i].key && p.kv[i].value && strlen(p.kv[i].key) >= 2);
        const char *v = sdb_a1111_get(&p, p.kv[i].key);
        FUZZ_CHECK(v != NULL);
        int w, h;
        if (sdb_a1111_size(p.kv[i].value, &w, &h) == 0) FUZZ_CHECK(w > 0 && h > 0);
    }
    sdb_a1111_free(&p);
}

static int one_input(const uint8_t *in, size_t size)
{
    static const uint8_t magic[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (size < 8 || memcmp(in, magic, 8) != 0) {
        char *text = malloc(size + 1);
        if (!text) return 0;
        memcpy(text, in, size);
        text[size] = '\0';
        a1111(text);
        free(text);
        return 0;
    }

    char **keys = NULL, **vals = NULL;
    int n = 0;
    sdb_err err = {0};
    if (sdb_png_read_text_memory(in, size, "fuzz.png", &keys, &vals, &n, &err) != 0) {
        FUZZ_CHECK(err.code != 0 && err.msg[0]);
        return 0;
    }
    for (int i = 0; i < n; i++) {
        FUZZ_CHECK(keys[i] && vals[i]);
        size_t kl = strlen(keys[i]), vl = strlen(vals[i]);
        (void)kl; (void)vl;
        if (strcmp(keys[i], "parameters") == 0) {
            a1111(vals[i]);
        }
    }
    sdb_png_text_free(keys, vals, n);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_png_run(data, size, one_input); }
