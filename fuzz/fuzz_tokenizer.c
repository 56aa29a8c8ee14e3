/*
 * fuzz_tokenizer.c — libFuzzer harness: any bytes (valid UTF-8 or not, NULs included) as a prompt
 * through the CLIP tokenizer: the cleaning, the BPE ids, the padded and truncated model input and
 * the decoding of the ids. The vocabulary is SD's (49408 entries), loaded once from the test data
 * (../shared/models/tiny-sd/tokenizer, or $SDB_TEST_DATA/models/tiny-sd/tokenizer).
 */
#include "sdb/tokenizer.h"

#include "fuzz_util.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static sdb_tokenizer *tok;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc; (void)argv;
    char dir[4096];
    const char *env = getenv("SDB_TEST_DATA");
    if (env && env[0]) snprintf(dir, sizeof dir, "%s/models/tiny-sd/tokenizer", env);
    else snprintf(dir, sizeof dir, "%s/../shared/models/tiny-sd/tokenizer", SDB_SOURCE_DIR);
    sdb_err err = {0};
    if (sdb_tokenizer_load(&tok, dir, &err) != 0) {
        fprintf(stderr, "fuzz_tokenizer: %s (set SDB_TEST_DATA to the shared/ folder)\n", err.msg);
        abort();
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sdb_err err = {0};
    int32_t *ids = NULL;
    int n = 0;
    if (sdb_tokenizer_tokenize(tok, (const char *)data, (long)size, &ids, &n, &err) == 0) {
        for (int i = 0; i < n; i++) FUZZ_CHECK(ids[i] >= 0 && ids[i] < sdb_tokenizer_vocab_size(tok));
        char *back = sdb_tokenizer_decode(tok, ids, n);
        free(back);
        free(ids);
    }
    /* encode and clean run the same cleaning and BPE again; what is their own (the padding and
     * truncation to 77, the debugging entry point) does not depend on the text's length, so they
     * run on short inputs only: long ones spend the time on the tokenizer once (~1.5x execs/s) */
    if (size > 256) return 0;
    int32_t in[77];
    int nu = 0;
    FUZZ_CHECK(sdb_tokenizer_max_length(tok) == 77);
    if (sdb_tokenizer_encode(tok, (const char *)data, (long)size, in, &nu, NULL, &err) == 0) {
        FUZZ_CHECK(in[0] == sdb_tokenizer_bos(tok));
        FUZZ_CHECK(nu >= 2);
    }
    char *clean = sdb_tokenizer_clean((const char *)data, (long)size);
    free(clean);
    return 0;
}
