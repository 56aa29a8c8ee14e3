/*
 * fuzz_png_text.c — libFuzzer harness: the text chunks of a PNG (tEXt, zTXt, iTXt: keys, Latin-1
 * and UTF-8 values, compressed values) through sdb_png_read_text_memory, the reader that gives
 * back an output's A1111 `parameters` text and sdbatch's own identity keys.
 *
 * Hook for the A1111 `parameters` parser: sdbatch has none yet (issue 17 adds `sdbatch info`).
 * When it lands, call it on the value of every key "parameters" below (marked HOOK), so the text
 * read from any PNG, however mangled, goes through it here too.
 */
#include "sdb/image.h"

#include "fuzz_util.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int one_input(const uint8_t *in, size_t size)
{
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
            /* HOOK: the A1111 parameters parser goes here, on vals[i]. */
        }
    }
    sdb_png_text_free(keys, vals, n);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_png_run(data, size, one_input); }
