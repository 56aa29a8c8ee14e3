/*
 * fuzz_safetensors.c — libFuzzer harness: a safetensors file (8-byte length, JSON header, tensor
 * table, data) through sdb_st_open_memory, and for every tensor it accepts the lookups and the
 * conversions the model loaders use (to float32, to int64, to half through sdb_weights in f16
 * mode) and the non-finite scan. Whatever the bytes, the result is either an error with a message
 * or a table whose every tensor lies inside the input.
 */
#include "sdb/safetensors.h"
#include "sdb/weights.h"

#include "fuzz_util.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sdb_st *st;
    sdb_err err = {0};
    if (sdb_st_open_memory(&st, data, size, "fuzz.safetensors", &err) != 0) {
        FUZZ_CHECK(err.code != 0 && err.msg[0]);
        return 0;
    }
    FUZZ_CHECK(st->n <= SDB_ST_MAX_TENSORS);
    for (int i = 0; i < st->n; i++) {
        const sdb_st_tensor *t = &st->tensors[i];
        FUZZ_CHECK(t->data >= data && t->data + t->nbytes <= data + size);
        FUZZ_CHECK(sdb_st_find(st, t->name) == t || strcmp(sdb_st_find(st, t->name)->name, t->name) == 0);
        if (t->numel > (1 << 16)) continue; /* the conversions are linear: small ones cover them */
        float *f = malloc((size_t)t->numel * sizeof(float) + 1);
        int64_t *iv = malloc((size_t)t->numel * sizeof(int64_t) + 1);
        if (f && iv) {
            (void)sdb_st_to_f32(t, f, &err);
            (void)sdb_st_to_i64(t, iv, &err);
            (void)sdb_st_check_finite(st, t, &err);
        }
        free(f);
        free(iv);
        char sh[128];
        sdb_shape_str(t->shape, t->ndim, sh, sizeof sh);
    }
    for (int i = 0; i < st->n_meta; i++) FUZZ_CHECK(sdb_st_meta(st, st->meta_keys[i]) != NULL);
    /* the loaders' path: a weight looked up by name with a shape check, f32 and f16 modes */
    if (st->n > 0 && st->tensors[0].numel <= (1 << 16)) {
        for (int mode = 0; mode < 2; mode++) {
            sdb_weights w;
            memset(&w, 0, sizeof w);
            sdb_weights_wrap(&w, st, "fuzz", "", NULL);
            w.keep_f16 = mode;
            const sdb_st_tensor *t = &st->tensors[0];
            sdb_wmat m;
            (void)sdb_weights_get_mat(&w, t->name, t->ndim, t->shape, &m, &err);
            const float *v;
            (void)sdb_weights_get(&w, t->name, t->ndim, t->shape, &v, &err);
            sdb_weights_free(&w);
        }
    }
    sdb_st_close(st);
    return 0;
}
