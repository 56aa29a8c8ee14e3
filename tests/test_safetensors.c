/*
 * test_safetensors.c — the safetensors reader against every real file of the test data (values
 * checked against the file's own bytes and known entries) and against malformed files, each of
 * which must fail with a message naming the problem.
 */
#include "harness.h"
#include "sdb/safetensors.h"
#include "sdb/fsutil.h"

#include <dirent.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Checks one file: every tensor converts, and F32/I64 values equal the raw bytes read with stdio. */
static int check_file(const char *path)
{
    sdb_err err = {0};
    sdb_st *st = NULL;
    if (sdb_st_open(&st, path, &err) != 0) { CHECKF(0, "%s", err.msg); return 0; }
    char *raw = NULL;
    size_t len = 0;
    CHECK_OK(sdb_read_file(path, &raw, &len, &err), &err);
    CHECK(len == st->map_size);
    int n = st->n;
    for (int i = 0; i < st->n && raw; i++) {
        const sdb_st_tensor *t = &st->tensors[i];
        CHECK(sdb_st_find(st, t->name) == t);
        size_t off = (size_t)(t->data - st->map);
        CHECK(off >= st->data_start && off + t->nbytes <= len);
        CHECK(memcmp(raw + off, t->data, t->nbytes) == 0);
        float *f = malloc((size_t)t->numel * 4 + 4);
        CHECK_OK(sdb_st_to_f32(t, f, &err), &err);
        if (t->dtype == SDB_DT_F32) CHECK(memcmp(f, raw + off, t->nbytes) == 0);
        if (t->dtype == SDB_DT_U8) for (int64_t k = 0; k < t->numel; k++) CHECK(f[k] == (unsigned char)raw[off + k]);
        free(f);
    }
    free(raw);
    sdb_st_close(st);
    return n;
}

static void test_all_reference_files_load(void)
{
    const char *dirs[] = {"refs", "refs/pipeline", "models/tiny-sd-inpaint/unet", "models/tiny-sd-inpaint/vae",
                          "models/tiny-sd-inpaint/text_encoder", "models/tiny-sd/unet", "models/tiny-sd/vae", "models/tiny-sd/text_encoder", "models", NULL};
    int files = 0, tensors = 0;
    for (int d = 0; dirs[d]; d++) {
        DIR *dir = opendir(sdb_t_path(dirs[d]));
        CHECKF(dir != NULL, "cannot open %s", sdb_t_path(dirs[d]));
        if (!dir) continue;
        struct dirent *e;
        while ((e = readdir(dir))) {
            size_t l = strlen(e->d_name);
            if (l < 12 || strcmp(e->d_name + l - 12, ".safetensors") != 0) continue;
            char rel[512];
            snprintf(rel, sizeof rel, "%s/%s", dirs[d], e->d_name);
            tensors += check_file(sdb_t_path(rel));
            files++;
        }
        closedir(dir);
    }
    fprintf(stderr, "  %d files, %d tensors checked\n", files, tensors);
    CHECK(files >= 27);
    CHECK(tensors > 3000);
}

static void test_known_entries(void)
{
    sdb_err err = {0};
    sdb_st *st = NULL;
    CHECK_OK(sdb_st_open(&st, sdb_t_path("refs/randn.safetensors"), &err), &err);
    if (!st) return;
    /* refs/README.md: seed 0's first MT19937 output is 2357136044, seed 42's 1608637542 */
    const sdb_st_tensor *t = sdb_st_find(st, "mt19937_seed0_first16");
    CHECK(t && t->dtype == SDB_DT_I64 && t->ndim == 1 && t->shape[0] == 16);
    int64_t v[16];
    if (t) { CHECK_OK(sdb_st_to_i64(t, v, &err), &err); CHECK(v[0] == 2357136044LL); }
    t = sdb_st_find(st, "mt19937_seed42_first16");
    if (t) { CHECK_OK(sdb_st_to_i64(t, v, &err), &err); CHECK(v[0] == 1608637542LL); }
    t = sdb_st_find(st, "seed42_shape1x4x64x64");
    CHECK(t && t->ndim == 4 && t->shape[1] == 4 && t->shape[3] == 64 && t->numel == 16384);
    CHECK(sdb_st_find(st, "no_such_tensor") == NULL);
    CHECK(sdb_st_meta(st, "topic") != NULL);
    sdb_st_close(st);

    CHECK_OK(sdb_st_open(&st, sdb_t_path("models/tiny-sd-inpaint/unet/diffusion_pytorch_model.safetensors"), &err), &err);
    if (!st) return;
    t = sdb_st_find(st, "conv_in.weight");
    CHECK(t && t->dtype == SDB_DT_F32 && t->ndim == 4 && t->shape[0] == 32 && t->shape[1] == 9 && t->shape[2] == 3);
    CHECK(st->n == 684); /* shared/README.md: 684 tensors */
    const char *fmt = sdb_st_meta(st, "format");
    CHECK(fmt && strcmp(fmt, "pt") == 0);
    sdb_st_close(st);

    CHECK_OK(sdb_st_open(&st, sdb_t_path("models/tiny-sd-inpaint.safetensors"), &err), &err);
    if (st) { CHECK(st->n == 980); sdb_st_close(st); }
}

/* --- malformed files ---------------------------------------------------------------------- */

static const char *write_raw(const char *dir, const char *name, const void *hdr, size_t hlen_field,
                             size_t hlen_actual, const void *data, size_t dlen)
{
    static char path[16][1024];
    static int at;
    char *p = path[at++ % 16];
    snprintf(p, 1024, "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)hlen_field >> (8 * i));
    fwrite(len8, 1, 8, f);
    if (hlen_actual) fwrite(hdr, 1, hlen_actual, f);
    if (dlen) fwrite(data, 1, dlen, f);
    fclose(f);
    return p;
}

static const char *write_case(const char *dir, const char *name, const char *json, size_t dlen)
{
    static unsigned char zeros[4096];
    return write_raw(dir, name, json, strlen(json), strlen(json), zeros, dlen);
}

static void expect_fail(const char *path, const char *needle)
{
    sdb_err err = {0};
    sdb_st *st = NULL;
    int rc = sdb_st_open(&st, path, &err);
    CHECKF(rc != 0 && st == NULL, "%s opened but should not", path);
    CHECKF(strstr(err.msg, needle) != NULL, "message '%s' lacks '%s'", err.msg, needle);
    CHECKF(strstr(err.msg, path) != NULL, "message '%s' does not name the file", err.msg);
    if (st) sdb_st_close(st);
}

static void test_malformed(void)
{
    const char *d = sdb_t_tmpdir();
    const char *ok = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}";
    /* the well-formed baseline opens */
    sdb_err err = {0};
    sdb_st *st = NULL;
    CHECK_OK(sdb_st_open(&st, write_case(d, "ok.st", ok, 16), &err), &err);
    sdb_st_close(st);

    /* 1 truncated data section */
    expect_fail(write_case(d, "trunc.st", ok, 8), "past the data section");
    /* 2 header length beyond EOF */
    expect_fail(write_raw(d, "hlen.st", ok, 5000, strlen(ok), NULL, 0), "past the end of the file");
    /* 3 bad JSON */
    expect_fail(write_case(d, "json.st", "{\"a\": {\"dtype\": ", 0), "not valid JSON");
    /* 4 unknown dtype */
    expect_fail(write_case(d, "dtype.st", "{\"a\":{\"dtype\":\"F8\",\"shape\":[2],\"data_offsets\":[0,2]}}", 2), "unknown dtype 'F8'");
    /* 5 offsets past the end */
    expect_fail(write_case(d, "offs.st", "{\"a\":{\"dtype\":\"U8\",\"shape\":[64],\"data_offsets\":[0,64]}}", 16), "past the data section");
    /* 6 overlapping tensors */
    expect_fail(write_case(d, "overlap.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                                           "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 16), "overlap");
    /* 7 size / shape mismatch */
    expect_fail(write_case(d, "size.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8), "needs 12");
    /* 8 zero-length header */
    expect_fail(write_raw(d, "zero.st", "", 0, 0, NULL, 0), "header length is 0");
    /* 9 duplicated names */
    expect_fail(write_case(d, "dup.st", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                                       "\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}", 2), "duplicate");
    /* 10 non-object header */
    expect_fail(write_case(d, "array.st", "[1, 2, 3]", 0), "not a JSON object");
    /* 11 header over the 100 MB limit */
    expect_fail(write_raw(d, "huge.st", ok, (size_t)200 << 20, strlen(ok), NULL, 0), "exceeds");
    /* 12 file shorter than the length field */
    {
        char p[1024];
        snprintf(p, sizeof p, "%s/short.st", d);
        FILE *f = fopen(p, "wb"); fwrite("abc", 1, 3, f); fclose(f);
        expect_fail(p, "too short");
    }
    /* 13 negative dimension */
    expect_fail(write_case(d, "neg.st", "{\"a\":{\"dtype\":\"U8\",\"shape\":[-1],\"data_offsets\":[0,0]}}", 0), "non-negative");
    /* 14 data_offsets of the wrong form */
    expect_fail(write_case(d, "form.st", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0]}}", 1), "data_offsets");
    /* 15 reversed offsets */
    expect_fail(write_case(d, "rev.st", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[2,1]}}", 2), "not ordered");
    /* 16 non-string metadata value */
    expect_fail(write_case(d, "meta.st", "{\"__metadata__\":{\"k\":1}}", 0), "not a string");
    /* 17 missing shape */
    expect_fail(write_case(d, "noshape.st", "{\"a\":{\"dtype\":\"U8\",\"data_offsets\":[0,1]}}", 1), "shape");
    /* 18 a folder is not a file; a missing file */
    expect_fail(d, "not a regular file");
    char missing[1024];
    snprintf(missing, sizeof missing, "%s/missing.st", d);
    expect_fail(missing, "cannot open");
}

static void test_write_roundtrip(void)
{
    const char *d = sdb_t_tmpdir();
    char path[1024];
    snprintf(path, sizeof path, "%s/rt.safetensors", d);
    float a[6] = {1, -2, 3.5f, 1e-30f, -0.0f, 7};
    uint16_t h[3] = {0x3C00, 0xC000, 0x0001}; /* 1, -2, smallest subnormal */
    int64_t ids[2] = {49406, -5};
    sdb_st_wtensor t[3] = {
        {"x/a", SDB_DT_F32, 2, {2, 3}, a},
        {"half", SDB_DT_F16, 1, {3}, h},
        {"ids", SDB_DT_I64, 1, {2}, ids},
    };
    const char *mk[1] = {"format"}, *mv[1] = {"pt"};
    sdb_err err = {0};
    CHECK_OK(sdb_st_write(path, t, 3, mk, mv, 1, &err), &err);
    sdb_st *st = NULL;
    CHECK_OK(sdb_st_open(&st, path, &err), &err);
    if (!st) return;
    CHECK(st->n == 3);
    CHECK((st->data_start % 8) == 0);
    CHECK(strcmp(sdb_st_meta(st, "format"), "pt") == 0);
    float f[6];
    CHECK_OK(sdb_st_to_f32(sdb_st_find(st, "x/a"), f, &err), &err);
    CHECK(memcmp(f, a, sizeof a) == 0);
    CHECK_OK(sdb_st_to_f32(sdb_st_find(st, "half"), f, &err), &err);
    CHECK(f[0] == 1.0f && f[1] == -2.0f && f[2] == 5.9604644775390625e-8f);
    int64_t got[2];
    CHECK_OK(sdb_st_to_i64(sdb_st_find(st, "ids"), got, &err), &err);
    CHECK(got[0] == 49406 && got[1] == -5);
    sdb_st_close(st);
}

int main(void)
{
    RUN(test_all_reference_files_load);
    RUN(test_known_entries);
    RUN(test_malformed);
    RUN(test_write_roundtrip);
    return sdb_t_done();
}
