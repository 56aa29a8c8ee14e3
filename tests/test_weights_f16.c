/*
 * test_weights_f16.c — weights kept as IEEE half in memory (sdb_model_opts.weights_f16, the CLI's
 * `--weights f16`).
 *
 * The truths: an F16 model gives bit-identical prompt embeddings, final latents and image in f16
 * mode (its half matrices used in place, widened per layer) and in float32 mode (widened once at
 * load), and the same model identity. An F32 model in f16 mode computes exactly what its copy with
 * every matrix (each 2+-dimensional tensor) rounded to half computes in float32 mode — and its
 * identity differs from the F32 model's in float32 mode, because its numbers do. Underneath:
 * sdb_weights_get_mat per dtype (in place, rounded once, copied, counted), sdb_st_release and the
 * file pages of widened / rounded tensors leaving the RSS, and the CLI options.
 */
#include "harness.h"
#include "sdb/fp16.h"
#include "sdb/fsutil.h"
#include "sdb/image.h"
#include "sdb/pipeline.h"
#include "sdb/safetensors.h"
#include "sdb/threads.h"
#include "sdb/unet.h"
#include "sdb/weights.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---------------------------------------------------------------------------------------------- */
/* model copies                                                                                    */

enum { ALL_F16, MATS_F16 };

/* Writes `src` with its floating tensors as F16: all of them, or (MATS_F16) those of 2+ dims. */
static void convert_file(const char *src, const char *dst, int policy)
{
    sdb_err err = {0};
    sdb_st *st = NULL;
    CHECK_OK(sdb_st_open(&st, src, &err), &err);
    if (!st) return;
    sdb_st_wtensor *wt = calloc((size_t)st->n, sizeof *wt);
    void **bufs = calloc((size_t)st->n, sizeof *bufs);
    for (int i = 0; i < st->n; i++) {
        const sdb_st_tensor *t = &st->tensors[i];
        wt[i].name = t->name;
        wt[i].ndim = t->ndim;
        memcpy(wt[i].shape, t->shape, sizeof t->shape);
        wt[i].dtype = t->dtype;
        wt[i].data = t->data;
        int to_half = t->dtype == SDB_DT_F32 && (policy == ALL_F16 || t->ndim >= 2);
        if (!to_half) continue;
        float *f = malloc((size_t)t->numel * sizeof(float) + 4);
        uint16_t *h = malloc((size_t)t->numel * 2 + 2);
        CHECK_OK(sdb_st_to_f32(t, f, &err), &err);
        for (int64_t k = 0; k < t->numel; k++) h[k] = sdb_f32_to_f16(f[k]);
        free(f);
        bufs[i] = h;
        wt[i].dtype = SDB_DT_F16;
        wt[i].data = h;
    }
    CHECK_OK(sdb_st_write(dst, wt, st->n, NULL, NULL, 0, &err), &err);
    for (int i = 0; i < st->n; i++) free(bufs[i]);
    free(bufs);
    free(wt);
    sdb_st_close(st);
}

static void link_to(const char *target, const char *dir, const char *name)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    CHECKF(symlink(target, p) == 0, "symlink %s", p);
}

/* A copy of the diffusers folder models/<rel> in a fresh folder, its weights converted by
 * `policy` (configs and tokenizer linked). Returns the folder (valid until 8 more tmpdirs). */
static const char *model_copy(const char *rel, int policy)
{
    const char *root = sdb_t_tmpdir();
    char src[4096], dir[4096], a[4096], b[4096];
    snprintf(src, sizeof src, "%s", sdb_t_path(rel));
    snprintf(a, sizeof a, "%s/model_index.json", src);
    link_to(a, root, "model_index.json");
    snprintf(a, sizeof a, "%s/scheduler", src);
    link_to(a, root, "scheduler");
    snprintf(a, sizeof a, "%s/tokenizer", src);
    link_to(a, root, "tokenizer");
    static const char *const parts[3][2] = {{"unet", "diffusion_pytorch_model"}, {"vae", "diffusion_pytorch_model"},
                                            {"text_encoder", "model"}};
    for (int i = 0; i < 3; i++) {
        snprintf(dir, sizeof dir, "%s/%s", root, parts[i][0]);
        CHECK(mkdir(dir, 0755) == 0);
        snprintf(a, sizeof a, "%s/%s/config.json", src, parts[i][0]);
        link_to(a, dir, "config.json");
        snprintf(a, sizeof a, "%s/%s/%s.safetensors", src, parts[i][0], parts[i][1]);
        snprintf(b, sizeof b, "%s/%s.safetensors", dir, parts[i][1]);
        convert_file(a, b, policy);
    }
    return root;
}

/* ---------------------------------------------------------------------------------------------- */
/* generating                                                                                      */

typedef struct { float *embeds, *latents; size_t n_embeds, n_latents; } traces;

static void on_trace(void *ud, const char *name, const float *x, size_t n)
{
    traces *t = ud;
    float **dst = !strcmp(name, "prompt_embeds") ? &t->embeds : !strcmp(name, "final_latents") ? &t->latents : NULL;
    if (!dst || *dst) return;
    *dst = malloc(n * sizeof(float));
    memcpy(*dst, x, n * sizeof(float));
    if (dst == &t->embeds) t->n_embeds = n; else t->n_latents = n;
}

typedef struct { sdb_image img; traces tr; char id[65]; } result;

static void free_result(result *r)
{
    sdb_image_free(&r->img);
    free(r->tr.embeds);
    free(r->tr.latents);
    memset(r, 0, sizeof *r);
}

/* Loads a model (folder or, with single, the tiny single-file checkpoint) in a weight mode and
 * inpaints the reference scene with it. */
static int generate(const char *path, int single, int f16, result *r)
{
    memset(r, 0, sizeof *r);
    sdb_err err = {0};
    sdb_model_opts o = {0};
    o.weights_f16 = f16;
    if (single) {
        o.config_dir = sdb_t_path("models/tiny-sd-inpaint");
        o.tokenizer_dir = sdb_t_path("models/tiny-sd-inpaint/tokenizer");
    }
    sdb_model *m = NULL;
    CHECK_OK(sdb_model_load(&m, path, &o, NULL, &err), &err);
    if (!m) return -1;
    snprintf(r->id, sizeof r->id, "%s", sdb_model_id(m));
    sdb_image img = {0}, mask = {0};
    CHECK_OK(sdb_image_load(sdb_t_path("refs/pipeline/inputs/scene_128x128.png"), &img, 3, 0, &err), &err);
    CHECK_OK(sdb_image_load(sdb_t_path("refs/pipeline/inputs/mask_128x128.png"), &mask, 0, 0, &err), &err);
    sdb_gen_params p;
    sdb_gen_params_default(&p);
    p.prompt = "a red teapot on a wooden table";
    p.negative_prompt = "blurry";
    p.seed = 7;
    p.steps = 3;
    p.image = &img;
    p.mask = &mask;
    int rc = sdb_generate_ex(m, &p, NULL, NULL, on_trace, &r->tr, &r->img, NULL, &err);
    CHECK_OK(rc, &err);
    sdb_image_free(&img);
    sdb_image_free(&mask);
    sdb_model_free(m);
    return rc || !r->tr.embeds || !r->tr.latents || !r->img.px ? -1 : 0;
}

static int same_floats(const float *a, size_t na, const float *b, size_t nb)
{
    return na == nb && na > 0 && memcmp(a, b, na * sizeof(float)) == 0;
}

/* bit-identical embeddings, latents and image */
static void check_identical(const result *a, const result *b, const char *what)
{
    CHECKF(same_floats(a->tr.embeds, a->tr.n_embeds, b->tr.embeds, b->tr.n_embeds), "%s: prompt embeddings differ", what);
    CHECKF(same_floats(a->tr.latents, a->tr.n_latents, b->tr.latents, b->tr.n_latents), "%s: final latents differ", what);
    CHECKF(a->img.w == b->img.w && a->img.h == b->img.h &&
           memcmp(a->img.px, b->img.px, (size_t)a->img.w * a->img.h * 3) == 0, "%s: images differ", what);
}

/* The U-Net of the model folder `dir` on weights opened in a mode. */
static sdb_unet *load_unet(const char *dir, int keep_f16, sdb_weights *w)
{
    char path[4096], cfg[4096];
    snprintf(path, sizeof path, "%s/unet/diffusion_pytorch_model.safetensors", dir);
    snprintf(cfg, sizeof cfg, "%s/unet/config.json", dir);
    sdb_err err = {0};
    sdb_unet *u = NULL;
    memset(w, 0, sizeof *w);
    CHECK_OK(sdb_weights_open(w, path, "unet", &err), &err);
    if (!w->st) return NULL;
    w->keep_f16 = keep_f16;
    CHECK_OK(sdb_unet_load(&u, cfg, w, &err), &err);
    return u;
}

/* An F16 model: the same numbers in both modes, the same identity. */
static void test_f16_model_same_in_both_modes(void)
{
    const char *dir = model_copy("models/tiny-sd-inpaint", ALL_F16);
    result r32, r16;
    if (generate(dir, 0, 0, &r32) == 0 && generate(dir, 0, 1, &r16) == 0) {
        check_identical(&r32, &r16, "F16 files, f32 vs f16 mode");
        CHECKF(strcmp(r32.id, r16.id) == 0, "identity changed: %s vs %s", r32.id, r16.id);
    }
    free_result(&r32);
    free_result(&r16);

    /* the U-Net's matrices are the file's own bytes, nothing is rounded, and they take half the
     * memory of their float32 widening */
    sdb_err err = {0};
    sdb_weights w32, w16;
    sdb_unet *u32 = load_unet(dir, 0, &w32), *u16 = load_unet(dir, 1, &w16);
    if (!u32 || !u16) { sdb_unet_free(u32); sdb_unet_free(u16); sdb_weights_free(&w32); sdb_weights_free(&w16); return; }
    CHECK(w16.rounded == 0 && w32.rounded == 0);
    size_t mats = 0, vecs = 0;
    for (int i = 0; i < w16.st->n; i++) {
        const sdb_st_tensor *t = &w16.st->tensors[i];
        if (t->ndim >= 2) mats += (size_t)t->numel; else vecs += (size_t)t->numel;
    }
    fprintf(stderr, "  U-Net weights: %zu bytes in f32 mode, %zu in f16 mode\n", w32.bytes, w16.bytes);
    CHECK(w32.bytes == 4 * (mats + vecs));
    CHECK(w16.bytes == 2 * mats + 4 * vecs);
    const sdb_st_tensor *t = sdb_weights_find(&w16, "down_blocks.0.resnets.0.conv1.weight");
    sdb_wmat m;
    const int64_t any4[4] = {-1, -1, -1, -1};
    CHECK(t && sdb_weights_get_mat(&w16, "down_blocks.0.resnets.0.conv1.weight", 4, any4, &m, &err) == 0);
    CHECK(t && m.f32 == NULL && (const void *)m.f16 == (const void *)t->data); /* in place */
    sdb_unet_free(u32);
    sdb_unet_free(u16);
    sdb_weights_free(&w32);
    sdb_weights_free(&w16);
}

/* An F32 model in f16 mode = its matrices-rounded copy in f32 mode; a different identity. */
static void test_f32_model_rounded_in_f16_mode(void)
{
    const char *orig = sdb_t_path("models/tiny-sd-inpaint");
    char orig_path[4096];
    snprintf(orig_path, sizeof orig_path, "%s", orig);
    const char *copy = model_copy("models/tiny-sd-inpaint", MATS_F16);
    result plain, rounded, copy32, single16;
    int ok = generate(orig_path, 0, 0, &plain) == 0;
    ok &= generate(orig_path, 0, 1, &rounded) == 0;
    ok &= generate(copy, 0, 0, &copy32) == 0;
    ok &= generate(sdb_t_path("models/tiny-sd-inpaint.safetensors"), 1, 1, &single16) == 0;
    if (ok) {
        check_identical(&rounded, &copy32, "F32 files in f16 mode vs their rounded copy in f32 mode");
        check_identical(&rounded, &single16, "f16 mode: folder vs single-file checkpoint");
        /* and the rounding did change the numbers, so the identity must change too */
        CHECK(!same_floats(plain.tr.latents, plain.tr.n_latents, rounded.tr.latents, rounded.tr.n_latents));
        CHECKF(strcmp(plain.id, rounded.id) != 0, "same identity %s for the F32 model in both modes", plain.id);
    }
    free_result(&plain);
    free_result(&rounded);
    free_result(&copy32);
    free_result(&single16);

    /* every matrix of the U-Net file was rounded, and counted */
    sdb_weights w;
    sdb_unet *u = load_unet(orig_path, 1, &w);
    int mats = 0;
    for (int i = 0; w.st && i < w.st->n; i++) mats += w.st->tensors[i].ndim >= 2;
    CHECKF(w.rounded == mats && mats > 100, "%d rounded, %d matrices in the file", w.rounded, mats);
    sdb_unet_free(u);
    sdb_weights_free(&w);
}

/* ---------------------------------------------------------------------------------------------- */
/* sdb_weights_get_mat                                                                             */

static void test_get_mat_per_dtype(void)
{
    /* "a" F32 [2, 3] (a tie, a value above it, ordinary ones), "b" BF16, "d" F64 with a value that
     * rounding through float32 would get wrong, "h" F16 (2-aligned), "u" one byte then "o" F16 at
     * an odd offset, "v" F32 vector */
    const float a[6] = {1.0f + 0x1p-11f, 1.0f + 0x1p-11f + 0x1p-20f, -3.14159f, 65519.0f, 1e-8f, 0.1f};
    const uint16_t b[2] = {0x3F81, 0xC049}; /* bf16: 1.0078125, -3.140625 */
    const double d[2] = {1.0 + 0x1p-11 + 0x1p-40, -0.3};
    const uint16_t h[4] = {0x3C00, 0xBC01, 0x7BFF, 0x0001};
    const unsigned char u[1] = {7};
    const float v[3] = {0.1f, 0.2f, 0.3f};
    sdb_st_wtensor wt[] = {
        {"a", SDB_DT_F32, 2, {2, 3}, a}, {"b", SDB_DT_BF16, 2, {1, 2}, b}, {"d", SDB_DT_F64, 2, {2, 1}, d},
        {"h", SDB_DT_F16, 2, {2, 2}, h}, {"u", SDB_DT_U8, 1, {1}, u},       {"o", SDB_DT_F16, 2, {2, 2}, h},
        {"v", SDB_DT_F32, 1, {3}, v}};
    char path[1024];
    snprintf(path, sizeof path, "%s/dtypes.safetensors", sdb_t_tmpdir());
    sdb_err err = {0};
    CHECK_OK(sdb_st_write(path, wt, (int)(sizeof wt / sizeof wt[0]), NULL, NULL, 0, &err), &err);

    sdb_weights w;
    CHECK_OK(sdb_weights_open(&w, path, "test", &err), &err);
    if (!w.st) return;
    const int64_t s23[2] = {2, 3}, s12[2] = {1, 2}, s21[2] = {2, 1}, s22[2] = {2, 2}, s3[1] = {3};
    sdb_wmat m;
    /* float32 mode: float32 matrices, half ones widened exactly */
    CHECK_OK(sdb_weights_get_mat(&w, "h", 2, s22, &m, &err), &err);
    CHECK(m.f32 && !m.f16 && m.f32[0] == 1.0f && m.f32[3] == 0x1p-24f);
    CHECK_OK(sdb_weights_get_mat(&w, "a", 2, s23, &m, &err), &err);
    CHECK(m.f32 && !m.f16 && memcmp(m.f32, a, sizeof a) == 0);
    CHECK(w.rounded == 0);
    sdb_weights_free(&w);

    /* f16 mode */
    CHECK_OK(sdb_weights_open(&w, path, "test", &err), &err);
    if (!w.st) return;
    w.keep_f16 = 1;
    CHECK_OK(sdb_weights_get_mat(&w, "a", 2, s23, &m, &err), &err);
    CHECK(m.f16 && !m.f32);
    if (m.f16) {
        /* 1 + 2^-11 is the tie between 1 and 1 + 2^-10 (to even: 1), a little more rounds up */
        CHECK(m.f16[0] == 0x3C00 && m.f16[1] == 0x3C01 && m.f16[3] == 0x7BFF);
        for (int i = 0; i < 6; i++) CHECK(m.f16[i] == sdb_f32_to_f16(a[i]));
    }
    CHECK(w.rounded == 1);
    CHECK_OK(sdb_weights_get_mat(&w, "b", 2, s12, &m, &err), &err);
    CHECK(m.f16 && m.f16[0] == sdb_f32_to_f16(1.0078125f) && m.f16[1] == sdb_f32_to_f16(-3.140625f));
    CHECK_OK(sdb_weights_get_mat(&w, "d", 2, s21, &m, &err), &err);
    CHECK(m.f16 && m.f16[0] == 0x3C01 && m.f16[1] == sdb_f64_to_f16(-0.3)); /* rounded once */
    CHECK(w.rounded == 3);
    const sdb_st_tensor *th = sdb_weights_find(&w, "h"), *to = sdb_weights_find(&w, "o");
    CHECK(th && ((uintptr_t)th->data & 1) == 0 && to && ((uintptr_t)to->data & 1) == 1);
    CHECK_OK(sdb_weights_get_mat(&w, "h", 2, s22, &m, &err), &err);
    CHECK(th && (const void *)m.f16 == (const void *)th->data); /* in place */
    CHECK_OK(sdb_weights_get_mat(&w, "o", 2, s22, &m, &err), &err);
    CHECK(to && m.f16 && (const void *)m.f16 != (const void *)to->data && memcmp(m.f16, h, sizeof h) == 0);
    CHECK(w.rounded == 3); /* copied, not rounded: the same numbers */
    /* vectors stay float32 */
    const float *vp = NULL;
    CHECK_OK(sdb_weights_get(&w, "v", 1, s3, &vp, &err), &err);
    CHECK(vp && memcmp(vp, v, sizeof v) == 0);
    /* shape errors as for float32 */
    CHECK(sdb_weights_get_mat(&w, "a", 2, s22, &m, &err) == SDB_EFORMAT && strstr(err.msg, "[2, 3]"));
    CHECK(sdb_weights_get_mat(&w, "zz", 2, s22, &m, &err) == SDB_ENOTFOUND && strstr(err.msg, "zz"));
    CHECK(w.bytes == 2 * (6 + 2 + 2 + 4 + 4) + sizeof v);
    sdb_weights_free(&w);

    /* the recorder (model generators) still hands out float32 zeros with the shape noted */
    sdb_weights_init_recorder(&w, "test");
    w.keep_f16 = 1;
    CHECK_OK(sdb_weights_get_mat(&w, "x.weight", 2, s23, &m, &err), &err);
    CHECK(m.f32 && !m.f16 && m.f32[5] == 0.0f && w.n_rec == 1 && w.rec_shapes[0][1] == 3);
    sdb_weights_free(&w);
}

/* RssFile of this process, bytes */
static long long rss_file(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "RssFile:", 8)) kb = atoll(line + 8);
    if (f) fclose(f);
    return kb * 1024;
}

/* sdb_st_release gives back exactly the pages inside a tensor (the process's file-backed RSS
 * drops) and the data reads the same afterwards. */
static void test_release_pages(void)
{
    /* a 3-byte tensor first, so the big one starts inside a page */
    enum { N = 4 << 20 };
    float *big = malloc(sizeof(float) * N);
    for (int i = 0; i < N; i++) big[i] = (float)i * 0.25f;
    const unsigned char small[3] = {1, 2, 3};
    sdb_st_wtensor wt[2] = {{"a_small", SDB_DT_U8, 1, {3}, small}, {"b_big", SDB_DT_F32, 1, {N}, big}};
    char path[1024];
    snprintf(path, sizeof path, "%s/release.safetensors", sdb_t_tmpdir());
    sdb_err err = {0};
    CHECK_OK(sdb_st_write(path, wt, 2, NULL, NULL, 0, &err), &err);
    sdb_st *st = NULL;
    CHECK_OK(sdb_st_open(&st, path, &err), &err);
    if (!st) { free(big); return; }
    const sdb_st_tensor *t = sdb_st_find(st, "b_big");
    CHECK(t && ((uintptr_t)t->data & 4095) != 0);
    volatile unsigned sum = 0;
    for (size_t i = 0; i < t->nbytes; i += 1024) sum += t->data[i]; /* map every page in */
    long long before = rss_file();
    size_t rel = sdb_st_release(st, t);
    long long after = rss_file();
    /* the whole pages between the first page boundary at or after the start and the last one at
     * or before the end */
    const uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE), b = (uintptr_t)t->data, e = b + t->nbytes;
    size_t expect = (size_t)((e & ~(pg - 1)) - ((b + pg - 1) & ~(pg - 1)));
    CHECKF(rel == expect, "released %zu, expected %zu", rel, expect);
    fprintf(stderr, "  released %zu bytes: RssFile %lld -> %lld KiB\n", rel, before / 1024, after / 1024);
    CHECK(before - after >= (long long)rel - (1 << 20)); /* they left this process's RSS */
    CHECK(memcmp(t->data, big, t->nbytes) == 0);          /* and read back from the file */
    const sdb_st_tensor *s3 = sdb_st_find(st, "a_small");
    CHECK(s3 && sdb_st_release(st, s3) == 0 && memcmp(s3->data, small, 3) == 0); /* under a page */
    sdb_st_close(st);
    /* an in-memory file is not ours to release */
    char *raw = NULL;
    size_t len = 0;
    CHECK_OK(sdb_read_file(path, &raw, &len, &err), &err);
    CHECK_OK(sdb_st_open_memory(&st, raw, len, "mem", &err), &err);
    if (st) { CHECK(sdb_st_release(st, sdb_st_find(st, "b_big")) == 0); sdb_st_close(st); }
    free(raw);
    free(big);
    (void)sum;
}

/* A tensor widened (float32 mode) or rounded (f16 mode) out of the mapping does not stay resident
 * in it too. */
static void test_copied_tensors_leave_the_mapping(void)
{
    enum { N = 4 << 20 };
    uint16_t *hbuf = malloc(N * 2);
    float *fbuf = malloc(N * 4);
    for (int i = 0; i < N; i++) { hbuf[i] = (uint16_t)(0x3C00 + (i & 0x3FF)); fbuf[i] = (float)i; }
    sdb_st_wtensor wt[2] = {{"h", SDB_DT_F16, 2, {N / 1024, 1024}, hbuf}, {"f", SDB_DT_F32, 2, {N / 1024, 1024}, fbuf}};
    char path[1024];
    snprintf(path, sizeof path, "%s/big.safetensors", sdb_t_tmpdir());
    sdb_err err = {0};
    CHECK_OK(sdb_st_write(path, wt, 2, NULL, NULL, 0, &err), &err);
    const int64_t sh[2] = {N / 1024, 1024};
    for (int mode = 0; mode < 2; mode++) {
        sdb_weights w;
        CHECK_OK(sdb_weights_open(&w, path, "test", &err), &err);
        if (!w.st) break;
        w.keep_f16 = mode;
        const char *name = mode ? "f" : "h"; /* the one that gets copied */
        long long before = rss_file();
        sdb_wmat m;
        CHECK_OK(sdb_weights_get_mat(&w, name, 2, sh, &m, &err), &err);
        long long grew = rss_file() - before;
        fprintf(stderr, "  %s mode, %s tensor copied: RssFile %+lld KiB (its data: %d KiB)\n", mode ? "f16" : "f32",
                name, grew / 1024, mode ? N * 4 / 1024 : N * 2 / 1024);
        CHECK(grew < (1 << 20));
        if (mode) CHECK(m.f16 && m.f16[N - 1] == sdb_f32_to_f16((float)(N - 1)));
        else CHECK(m.f32 && m.f32[N - 1] == sdb_f16_to_f32(hbuf[N - 1]));
        sdb_weights_free(&w);
    }
    free(hbuf);
    free(fbuf);
}

/* ---------------------------------------------------------------------------------------------- */
/* the command line                                                                                */

static char out[1 << 16];

static void test_cli(void)
{
    const char *dir = model_copy("models/tiny-sd-inpaint", ALL_F16);
    const char *tmp = sdb_t_tmpdir();
    sdb_image im[2] = {{0}, {0}};
    for (int k = 0; k < 2; k++) {
        char png[1024], args[8192];
        snprintf(png, sizeof png, "%s/%d.png", tmp, k);
        snprintf(args, sizeof args,
                 "generate --model '%s' --image '%s' --mask '%s' --prompt 'a cat' --seed 3 --steps 2 --weights %s --output '%s'",
                 dir, sdb_t_path("refs/pipeline/inputs/scene_128x128.png"),
                 sdb_t_path("refs/pipeline/inputs/mask_128x128.png"), k ? "f16" : "f32", png);
        int rc = sdb_t_sdbatch(args, out, sizeof out);
        CHECKF(rc == 0, "exit %d: %s", rc, out);
        if (k) CHECKF(strstr(out, "matrices F16 as in the files") != NULL, "%s", out);
        sdb_err err = {0};
        CHECK_OK(sdb_image_load(png, &im[k], 0, 0, &err), &err);
    }
    CHECK(im[0].px && im[1].px && im[0].w == im[1].w && memcmp(im[0].px, im[1].px, (size_t)im[0].w * im[0].h * im[0].c) == 0);
    sdb_image_free(&im[0]);
    sdb_image_free(&im[1]);
    char args[4096];
    snprintf(args, sizeof args, "generate --model '%s' --prompt x --output '%s/x.png' --weights f64", dir, tmp);
    CHECK(sdb_t_sdbatch(args, out, sizeof out) == 2 && strstr(out, "--weights takes f32 or f16"));

    snprintf(args, sizeof args, "bench --model '%s' --size 64 --reps 1 --gemm 256 --only unet --weights f16 --json",
             sdb_t_path("models/tiny-sd-inpaint"));
    int rc = sdb_t_sdbatch(args, out, sizeof out);
    CHECKF(rc == 0 && strstr(out, "\"weights\": \"f16\""), "exit %d: %s", rc, out);
    snprintf(args, sizeof args, "bench --model '%s' --size 64 --reps 1 --gemm 256 --only unet", sdb_t_path("models/tiny-sd-inpaint"));
    rc = sdb_t_sdbatch(args, out, sizeof out);
    CHECKF(rc == 0 && strstr(out, "f32 weights"), "exit %d: %s", rc, out);
    snprintf(args, sizeof args, "bench --model '%s' --weights half", sdb_t_path("models/tiny-sd-inpaint"));
    CHECK(sdb_t_sdbatch(args, out, sizeof out) == 2);
}

int main(void)
{
    sdb_threads_set(1); /* results do not depend on it (test_ops_conv); the machine is shared */
    RUN(test_get_mat_per_dtype);
    RUN(test_release_pages);
    RUN(test_copied_tensors_leave_the_mapping);
    RUN(test_f16_model_same_in_both_modes);
    RUN(test_f32_model_rounded_in_f16_mode);
    RUN(test_cli);
    return sdb_t_done();
}
