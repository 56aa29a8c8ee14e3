/*
 * test_model_faults.c — broken model files end in a one-line error that names the file and the
 * tensor, never a crash or a NaN image: a truncated file, a weight of an integer dtype, NaN and
 * infinite weights (F32 and F16), a tensor of the wrong shape, a header whose offsets lie (past
 * the end, overlapping) and a header length of 2 GiB.
 *
 * Each case is a copy of the team's tiny inpainting model (../shared/models/tiny-sd-inpaint) whose
 * U-Net file is rewritten with one fault. One case of each kind (truncated, dtype, NaN, offsets,
 * header length) is given to a real `sdbatch generate` child process, which must exit 1 with one
 * error line and write nothing; the variants are checked through the library (sdb_weights_open +
 * sdb_weights_get of every tensor), which must return one error line naming the file and tensor.
 */
#include "harness.h"
#include "sdb/safetensors.h"
#include "sdb/weights.h"

#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define UNET_FILE "unet/diffusion_pytorch_model.safetensors"

static char out[1 << 16];
static char model_root[512]; /* the temp folder of the last model written */

/* The tiny model's U-Net file: header JSON and data section. */
typedef struct {
    json_t *hdr;
    unsigned char *data;
    size_t data_len;
} st_file;

static int read_unet(st_file *f)
{
    memset(f, 0, sizeof *f);
    FILE *in = fopen(sdb_t_path("models/tiny-sd-inpaint/" UNET_FILE), "rb");
    if (!in) { CHECK(!"tiny model missing"); return -1; }
    unsigned char len8[8];
    uint64_t hl = 0;
    if (fread(len8, 1, 8, in) != 8) { fclose(in); return -1; }
    for (int i = 7; i >= 0; i--) hl = hl << 8 | len8[i];
    char *h = malloc(hl);
    struct stat sb;
    fstat(fileno(in), &sb);
    f->data_len = (size_t)sb.st_size - 8 - hl;
    f->data = malloc(f->data_len);
    int ok = h && f->data && fread(h, 1, hl, in) == hl && fread(f->data, 1, f->data_len, in) == f->data_len;
    fclose(in);
    json_error_t je;
    f->hdr = ok ? json_loadb(h, hl, 0, &je) : NULL;
    free(h);
    CHECK(f->hdr != NULL);
    return f->hdr ? 0 : -1;
}

/* Frees f and removes the last model folder written (13 MB each). */
static void free_unet(st_file *f)
{
    json_decref(f->hdr);
    free(f->data);
    char cmd[1200];
    if (model_root[0]) {
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", model_root);
        (void)sdb_t_shell(cmd, out, sizeof out);
        model_root[0] = '\0';
    }
}

/* A model folder in a fresh temp dir: the tiny model's other components linked, unet/ holding its
 * config and the file written from f (header length hl_override when non-zero), cut to `keep`
 * bytes when keep > 0. Returns the folder (static). */
static const char *write_model(const st_file *f, uint64_t hl_override, long keep)
{
    static char dir[1024];
    if (model_root[0]) {  /* a case writing two models: drop the first */
        snprintf(dir, sizeof dir, "rm -rf '%s'", model_root);
        (void)sdb_t_shell(dir, out, sizeof out);
    }
    snprintf(model_root, sizeof model_root, "%s", sdb_t_tmpdir());
    snprintf(dir, sizeof dir, "%s/model", model_root);
    char cmd[8192];
    const char *src = sdb_t_path("models/tiny-sd-inpaint");
    snprintf(cmd, sizeof cmd,
             "mkdir -p '%s/unet' && for c in text_encoder tokenizer vae scheduler model_index.json; do "
             "ln -s '%s'/$c '%s'/$c; done && cp '%s/unet/config.json' '%s/unet/'",
             dir, src, dir, src, dir);
    CHECK(sdb_t_shell(cmd, out, sizeof out) == 0);
    char path[1200];
    snprintf(path, sizeof path, "%s/" UNET_FILE, dir);
    char *h = json_dumps(f->hdr, JSON_COMPACT);
    uint64_t hl = hl_override ? hl_override : strlen(h);
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)(hl >> (8 * i));
    FILE *o = fopen(path, "wb");
    CHECK(o && fwrite(len8, 1, 8, o) == 8 && fwrite(h, 1, strlen(h), o) == strlen(h) &&
          fwrite(f->data, 1, f->data_len, o) == f->data_len);
    if (o) fclose(o);
    free(h);
    if (keep > 0) CHECK(truncate(path, keep) == 0);
    return dir;
}

static json_t *tensor(st_file *f, const char *name) { return json_object_get(f->hdr, name); }
static size_t offset_of(st_file *f, const char *name)
{
    return (size_t)json_integer_value(json_array_get(json_object_get(tensor(f, name), "data_offsets"), 0));
}

/* Runs generate on the model; checks it fails with exit code 1 and one error line holding every
 * string of want[] (NULL-terminated). */
static void expect_generate_fails(const char *model, const char *case_name, const char *const *want)
{
    const char *tmp = sdb_t_tmpdir();
    char args[8192], png[1100];
    snprintf(png, sizeof png, "%s/out.png", tmp);
    snprintf(args, sizeof args,
             "generate --model '%s' --image '%s' --mask '%s' --prompt 'a cat' --seed 1 --steps 2 "
             "--width 64 --height 64 --output '%s'",
             model, sdb_t_path("refs/pipeline/inputs/scene_128x128.png"),
             sdb_t_path("refs/pipeline/inputs/mask_128x128.png"), png);
    int rc = sdb_t_sdbatch(args, out, sizeof out);
    fprintf(stderr, "  %s: exit %d: %s", case_name, rc, out);
    CHECKF(rc == 1, "%s: exit code %d (1 expected: an error, not a crash)", case_name, rc);
    int lines = 0;
    for (const char *p = out; *p; p++) lines += *p == '\n';
    CHECKF(lines == 1, "%s: %d lines of output, one error line expected", case_name, lines);
    for (int i = 0; want[i]; i++) CHECKF(strstr(out, want[i]) != NULL, "%s: no '%s' in the error", case_name, want[i]);
    CHECKF(access(png, F_OK) != 0, "%s: an output was written", case_name);
}

/* The same file through the library: open, then every tensor as a weight with its own shape. */
static int load_all(const char *model, sdb_err *err)
{
    char path[1200];
    snprintf(path, sizeof path, "%s/" UNET_FILE, model);
    sdb_weights w;
    int rc = sdb_weights_open(&w, path, "unet", err);
    if (rc) return rc;
    for (int i = 0; i < w.st->n && !rc; i++) {
        const sdb_st_tensor *t = &w.st->tensors[i];
        const float *p;
        rc = sdb_weights_get(&w, t->name, t->ndim, t->shape, &p, err);
    }
    sdb_weights_free(&w);
    return rc;
}

/* The library's answer for the same file: an error of one line holding every string of want[]. */
static void expect_load_fails(const char *model, const char *case_name, const char *const *want)
{
    sdb_err err = {0};
    int rc = load_all(model, &err);
    fprintf(stderr, "  %s: %d: %s\n", case_name, rc, err.msg);
    CHECKF(rc < 0 && !strchr(err.msg, '\n'), "%s: rc %d, message '%s'", case_name, rc, err.msg);
    for (int i = 0; want[i]; i++) CHECKF(strstr(err.msg, want[i]) != NULL, "%s: no '%s' in the error", case_name, want[i]);
}

static void test_intact_copy_loads(void)
{
    st_file f;
    if (read_unet(&f)) return;
    const char *model = write_model(&f, 0, 0);
    sdb_err err = {0};
    CHECK_OK(load_all(model, &err), &err);
    free_unet(&f);
}

static void test_truncated_file(void)
{
    st_file f;
    if (read_unet(&f)) return;
    /* the last tensor in the data section loses its last 100 bytes */
    char *h = json_dumps(f.hdr, JSON_COMPACT);
    long full = 8 + (long)strlen(h) + (long)f.data_len;
    free(h);
    const char *model = write_model(&f, 0, full - 100);
    const char *want[] = {UNET_FILE, "up_blocks.3.resnets.2.time_emb_proj.weight", "truncated", NULL};
    expect_generate_fails(model, "truncated", want);
    sdb_err err = {0};
    CHECK(load_all(model, &err) == SDB_EFORMAT && strstr(err.msg, "truncated"));
    free_unet(&f);
}

static void test_integer_dtype(void)
{
    st_file f;
    if (read_unet(&f)) return;
    /* I32 has F32's size, so the table itself is consistent: the loader must refuse the dtype */
    json_object_set_new(tensor(&f, "conv_in.weight"), "dtype", json_string("I32"));
    const char *model = write_model(&f, 0, 0);
    const char *want[] = {UNET_FILE, "conv_in.weight", "dtype I32", NULL};
    expect_generate_fails(model, "wrong dtype", want);
    free_unet(&f);
}

static void test_nan_and_inf_weights(void)
{
    st_file f;
    if (read_unet(&f)) return;
    /* conv_in.weight [32, 9, 3, 3]: element [1, 2, 0, 1] = 1*81 + 2*9 + 0*3 + 1 = 100 */
    float nan = NAN;
    memcpy(f.data + offset_of(&f, "conv_in.weight") + 4 * 100, &nan, 4);
    const char *model = write_model(&f, 0, 0);
    const char *want[] = {UNET_FILE, "conv_in.weight", "[1, 2, 0, 1] is NaN", NULL};
    expect_generate_fails(model, "NaN", want);
    sdb_err err = {0};
    CHECK(load_all(model, &err) == SDB_ENUMERIC && strstr(err.msg, "conv_in.weight"));
    free_unet(&f);

    if (read_unet(&f)) return;
    float inf = -INFINITY;
    memcpy(f.data + offset_of(&f, "conv_in.bias") + 4 * 31, &inf, 4);
    model = write_model(&f, 0, 0);
    const char *want2[] = {UNET_FILE, "conv_in.bias", "[31] is infinite", NULL};
    expect_load_fails(model, "Inf", want2);
    free_unet(&f);
}

static void test_nonfinite_scan_every_dtype(void)
{
    /* sdb_st_check_finite on F16 / BF16 / F64, with the bad element at a block boundary and past it */
    static const struct { const char *dt; size_t sz; uint64_t bad; int is_nan; } cases[] = {
        {"F16", 2, 0x7c00, 0}, {"F16", 2, 0xfe01, 1}, {"BF16", 2, 0x7f80, 0}, {"BF16", 2, 0x7fc1, 1},
        {"F64", 8, 0x7ff0000000000000ull, 0}, {"F64", 8, 0xfff8000000000000ull, 1}, {"F32", 4, 0x7fc00000, 1},
    };
    const size_t n = 3000;
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        for (size_t at = 1023; at < n; at += 977) {
            unsigned char *buf = calloc(1, 4096 + n * 8);
            char hdr[256];
            int hl = snprintf(hdr, sizeof hdr, "{\"t\":{\"dtype\":\"%s\",\"shape\":[%zu],\"data_offsets\":[0,%zu]}}",
                              cases[c].dt, n, n * cases[c].sz);
            for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)hl >> (8 * i));
            memcpy(buf + 8, hdr, (size_t)hl);
            unsigned char *d = buf + 8 + hl;
            /* finite non-zero values everywhere else: the largest finite of each type */
            for (size_t i = 0; i < n; i++) {
                uint64_t v = cases[c].sz == 2 ? (cases[c].dt[0] == 'B' ? 0x7f7f : 0x7bff)
                             : cases[c].sz == 4 ? 0x7f7fffff : 0x7fefffffffffffffull;
                memcpy(d + i * cases[c].sz, &v, cases[c].sz);
            }
            sdb_st *st = NULL;
            sdb_err err = {0};
            CHECK_OK(sdb_st_open_memory(&st, buf, 8 + (size_t)hl + n * cases[c].sz, "mem.safetensors", &err), &err);
            if (st) {
                CHECK_OK(sdb_st_check_finite(st, &st->tensors[0], &err), &err);
                memcpy(d + at * cases[c].sz, &cases[c].bad, cases[c].sz);
                CHECK(sdb_st_check_finite(st, &st->tensors[0], &err) == SDB_ENUMERIC);
                char want[64];
                snprintf(want, sizeof want, "element [%zu] is %s", at, cases[c].is_nan ? "NaN" : "infinite");
                CHECKF(strstr(err.msg, want) && strstr(err.msg, "mem.safetensors"), "%s: %s", cases[c].dt, err.msg);
                sdb_st_close(st);
            }
            free(buf);
        }
    }
}

static void test_wrong_shape(void)
{
    st_file f;
    if (read_unet(&f)) return;
    /* same element count, other shape: [32, 9, 3, 3] -> [9, 32, 3, 3] */
    json_t *sh = json_object_get(tensor(&f, "conv_in.weight"), "shape");
    json_array_set_new(sh, 0, json_integer(9));
    json_array_set_new(sh, 1, json_integer(32));
    const char *model = write_model(&f, 0, 0);
    const char *want[] = {UNET_FILE, "conv_in.weight", "[9, 32, 3, 3]", "expected [32, 9, 3, 3]", NULL};
    expect_generate_fails(model, "wrong shape", want);
    free_unet(&f);
}

static void test_offsets_that_lie(void)
{
    st_file f;
    if (read_unet(&f)) return;
    /* past the end of the data */
    json_t *o = json_object_get(tensor(&f, "conv_in.bias"), "data_offsets");
    json_array_set_new(o, 0, json_integer((json_int_t)f.data_len));
    json_array_set_new(o, 1, json_integer((json_int_t)f.data_len + 128));
    const char *model = write_model(&f, 0, 0);
    const char *want[] = {UNET_FILE, "conv_in.bias", "past the data section", NULL};
    expect_generate_fails(model, "offsets past the end", want);
    free_unet(&f);

    /* overlapping another tensor's bytes */
    if (read_unet(&f)) return;
    o = json_object_get(tensor(&f, "conv_in.bias"), "data_offsets");
    json_array_set_new(o, 0, json_integer(256));
    json_array_set_new(o, 1, json_integer(384));
    model = write_model(&f, 0, 0);
    const char *want2[] = {UNET_FILE, "conv_in.bias", "conv_in.weight", "overlap", NULL};
    expect_load_fails(model, "overlapping offsets", want2);
    free_unet(&f);

    /* a negative offset, and an end before the begin */
    if (read_unet(&f)) return;
    o = json_object_get(tensor(&f, "conv_in.bias"), "data_offsets");
    json_array_set_new(o, 0, json_integer(-128));
    json_array_set_new(o, 1, json_integer(0));
    model = write_model(&f, 0, 0);
    const char *want3[] = {UNET_FILE, "conv_in.bias", "not ordered", NULL};
    expect_load_fails(model, "negative offset", want3);
    free_unet(&f);
}

static void test_header_of_2_gib(void)
{
    st_file f;
    if (read_unet(&f)) return;
    const char *model = write_model(&f, (uint64_t)2 << 30, 0);
    const char *want[] = {UNET_FILE, "header length 2147483648", "limit", NULL};
    expect_generate_fails(model, "2 GiB header", want);
    /* a length that runs past the end of the file, under the limit */
    model = write_model(&f, 50u * 1000 * 1000, 0);
    const char *want2[] = {UNET_FILE, "runs past the end of the file", NULL};
    expect_load_fails(model, "header past the end", want2);
    free_unet(&f);
}

int main(void)
{
    RUN(test_intact_copy_loads);
    RUN(test_truncated_file);
    RUN(test_integer_dtype);
    RUN(test_nan_and_inf_weights);
    RUN(test_nonfinite_scan_every_dtype);
    RUN(test_wrong_shape);
    RUN(test_offsets_that_lie);
    RUN(test_header_of_2_gib);
    return sdb_t_done();
}
