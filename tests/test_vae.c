/*
 * test_vae.c — the AutoencoderKL against refs/vae.safetensors (diffusers 0.30.3 / torch 1.13):
 * every encode (mean, std, logvar) and decode case incl. non-square and odd latent sizes, the
 * debug intermediates, weights from the diffusers folder, an F16 ".fp16" variant and the
 * single-file LDM checkpoint, 1 vs 2 threads bit-identical, the strip-wise upsampler, config
 * validation, the real SD 1.5 tensor list (names + shapes, both layouts) and peak arena use; the
 * tiled passes against the untiled ones (exact with exact statistics, within 2/255 by default).
 */
#include "harness.h"
#include "sdb/arena.h"
#include "sdb/ldm_names.h"
#include "sdb/rng.h"
#include "sdb/safetensors.h"
#include "sdb/threads.h"
#include "sdb/ops/winograd.h"
#include "sdb/vae.h"
#include "sdb/weights.h"

#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static sdb_arena arena;
static sdb_st *refs;

#define TINY_VAE "models/tiny-sd-inpaint/vae"

/* ------------------------------------------------------------------------------------------ */

static float *ref_f32(const char *name, int64_t *numel)
{
    sdb_err err;
    float *p = NULL;
    if (sdb_st_load_f32(refs, name, &p, numel, &err)) {
        fprintf(stderr, "  missing reference %s: %s\n", name, err.msg);
        sdb_t_checks_failed++;
        return NULL;
    }
    return p;
}

static const sdb_st_tensor *ref_t(const char *name)
{
    const sdb_st_tensor *t = sdb_st_find(refs, name);
    CHECKF(t != NULL, "reference tensor %s", name);
    return t;
}

/* Debug hook: compares each named intermediate that the references hold for `prefix`. */
typedef struct {
    const char *prefix; /* "enc_64x64" */
    int seen;
    double atol;
} dbg_ctx;

static void dbg_cb(void *ud, const char *name, const float *x, int C, int H, int W)
{
    dbg_ctx *d = ud;
    char full[256];
    snprintf(full, sizeof full, "%s/debug/%s", d->prefix, name);
    const sdb_st_tensor *t = sdb_st_find(refs, full);
    if (!t) return;
    d->seen++;
    CHECKF(t->ndim == 4 && t->shape[1] == C && t->shape[2] == H && t->shape[3] == W,
           "%s: got [1,%d,%d,%d]", full, C, H, W);
    if (t->numel != (int64_t)C * H * W) return;
    float *ref = ref_f32(full, NULL);
    if (ref) sdb_t_close(x, ref, (size_t)t->numel, d->atol, 0, full);
    free(ref);
}

static sdb_vae *load_folder(sdb_weights *w, const char *dir)
{
    sdb_err err;
    char cfg[4200], wp[4200];
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    sdb_vae *v = NULL;
    if (sdb_vae_weights_path(dir, 0, wp, sizeof wp, &err)) { CHECK_OK(-1, &err); return NULL; }
    int rc = sdb_weights_open(w, wp, "vae", &err);
    CHECK_OK(rc, &err);
    if (rc) return NULL;
    rc = sdb_vae_load(&v, cfg, w, &err);
    CHECK_OK(rc, &err);
    if (rc) { sdb_weights_free(w); return NULL; }
    return v;
}

/* Encodes refs case `cs` and compares mean/std/logvar; returns max|mean diff| (or -1). */
static void run_encode(sdb_vae *v, const char *cs, double atol, int with_debug)
{
    sdb_err err;
    char nm[128];
    snprintf(nm, sizeof nm, "%s/image", cs);
    const sdb_st_tensor *ti = ref_t(nm);
    if (!ti) return;
    int H = (int)ti->shape[2], W = (int)ti->shape[3];
    float *img = ref_f32(nm, NULL);
    int h, w;
    sdb_vae_latent_size(v, H, W, &h, &w);
    snprintf(nm, sizeof nm, "%s/mean", cs);
    const sdb_st_tensor *tm = ref_t(nm);
    if (!tm || !img) { free(img); return; }
    CHECKF(tm->shape[2] == h && tm->shape[3] == w, "%s latent size %dx%d", cs, h, w);
    size_t n = (size_t)tm->numel;
    float *mean = malloc(n * sizeof(float)), *std = malloc(n * sizeof(float)),
          *lv = malloc(n * sizeof(float));
    dbg_ctx d = {cs, 0, 1e-4};
    if (with_debug) sdb_vae_set_debug(v, dbg_cb, &d);
    int rc = sdb_vae_encode(v, img, H, W, mean, std, lv, &arena, &err);
    sdb_vae_set_debug(v, NULL, NULL);
    CHECK_OK(rc, &err);
    if (!rc) {
        float *rm = ref_f32(nm, NULL);
        snprintf(nm, sizeof nm, "%s/std", cs);
        float *rs = ref_f32(nm, NULL);
        snprintf(nm, sizeof nm, "%s/logvar", cs);
        float *rl = ref_f32(nm, NULL);
        snprintf(nm, sizeof nm, "%s mean", cs);
        if (rm) sdb_t_close(mean, rm, n, atol, 0, nm);
        snprintf(nm, sizeof nm, "%s std", cs);
        if (rs) sdb_t_close(std, rs, n, atol, 0, nm);
        snprintf(nm, sizeof nm, "%s logvar", cs);
        if (rl) sdb_t_close(lv, rl, n, atol * 10, 0, nm);
        /* latent_dist.sample(Generator().manual_seed(0)) = mean + std * randn(shape) */
        snprintf(nm, sizeof nm, "%s/sample_seed0", cs);
        float *smp = ref_f32(nm, NULL);
        if (smp && rm && rs) {
            float *noise = malloc(n * sizeof(float)), *out = malloc(n * sizeof(float));
            sdb_rng g;
            sdb_rng_seed(&g, 0);
            sdb_rng_randn(&g, noise, n);
            sdb_vae_sample(rm, rs, noise, n, out); /* reference posterior: the formula alone */
            snprintf(nm, sizeof nm, "%s sample (ref mean/std)", cs);
            sdb_t_close(out, smp, n, 1e-6, 0, nm);
            sdb_vae_sample(mean, std, noise, n, out);
            snprintf(nm, sizeof nm, "%s sample_seed0", cs);
            sdb_t_close(out, smp, n, atol, 0, nm);
            free(noise);
            free(out);
        }
        free(smp);
        free(rm);
        free(rs);
        free(rl);
        fprintf(stderr, "  %s: encode %dx%d peak arena %.2f MiB\n", cs, H, W,
                sdb_vae_peak_bytes(v) / 1048576.0);
    }
    if (with_debug) CHECKF(d.seen == 5, "%s: %d debug tensors compared", cs, d.seen);
    free(img);
    free(mean);
    free(std);
    free(lv);
}

/* dbg_atol: compare the intermediates too, within this (0: not) */
static void run_decode(sdb_vae *v, const char *cs, double atol, double dbg_atol)
{
    const int with_debug = dbg_atol > 0;
    sdb_err err;
    char nm[128];
    snprintf(nm, sizeof nm, "%s/z", cs);
    const sdb_st_tensor *tz = ref_t(nm);
    float *z = ref_f32(nm, NULL);
    snprintf(nm, sizeof nm, "%s/image", cs);
    const sdb_st_tensor *ti = ref_t(nm);
    float *ref = ref_f32(nm, NULL);
    if (!tz || !ti || !z || !ref) { free(z); free(ref); return; }
    int h = (int)tz->shape[2], w = (int)tz->shape[3], H, W;
    sdb_vae_image_size(v, h, w, &H, &W);
    CHECKF(ti->shape[2] == H && ti->shape[3] == W, "%s image size %dx%d", cs, H, W);
    float *img = malloc((size_t)ti->numel * sizeof(float));
    dbg_ctx d = {cs, 0, dbg_atol};
    if (with_debug) sdb_vae_set_debug(v, dbg_cb, &d);
    int rc = sdb_vae_decode(v, z, h, w, img, &arena, &err);
    sdb_vae_set_debug(v, NULL, NULL);
    CHECK_OK(rc, &err);
    if (!rc) {
        snprintf(nm, sizeof nm, "%s image", cs);
        sdb_t_close(img, ref, (size_t)ti->numel, atol, 0, nm);
        fprintf(stderr, "  %s: decode %dx%d -> %dx%d peak arena %.2f MiB\n", cs, h, w, H, W,
                sdb_vae_peak_bytes(v) / 1048576.0);
    }
    if (with_debug) CHECKF(d.seen == 6, "%s: %d debug tensors compared", cs, d.seen);
    free(z);
    free(ref);
    free(img);
}

/* ------------------------------------------------------------------------------------------ */

static void test_config(void)
{
    sdb_err err;
    sdb_vae_config c;
    CHECK_OK(sdb_vae_config_load(&c, sdb_t_path(TINY_VAE "/config.json"), &err), &err);
    CHECK(c.n_blocks == 4 && c.block_out_channels[0] == 32 && c.block_out_channels[3] == 64);
    CHECK(c.layers_per_block == 2 && c.norm_num_groups == 8 && c.latent_channels == 4);
    CHECK(c.in_channels == 3 && c.out_channels == 3);
    CHECK(fabs(c.scaling_factor - 0.18215) < 1e-12);
    CHECK(c.use_quant_conv && c.use_post_quant_conv && c.mid_block_add_attention);

    sdb_vae_config real, sd15;
    CHECK_OK(sdb_vae_config_load(&real, sdb_t_path("models/sd15-inpaint-layout/vae/config.json"), &err), &err);
    sdb_vae_config_sd15(&sd15);
    CHECK(memcmp(&real, &sd15, sizeof real) == 0);

    /* refused configurations name the file and field */
    const char *dir = sdb_t_tmpdir();
    char path[600];
    snprintf(path, sizeof path, "%s/config.json", dir);
    struct { const char *json; int code; const char *needle; } bad[] = {
        {"{\"_class_name\":\"AutoencoderKL\",\"block_out_channels\":[32,64],\"down_block_types\":"
         "[\"DownEncoderBlock2D\",\"AttnDownEncoderBlock2D\"],\"up_block_types\":[\"UpDecoderBlock2D\","
         "\"UpDecoderBlock2D\"],\"norm_num_groups\":8}", SDB_EUNSUPPORTED, "AttnDownEncoderBlock2D"},
        {"{\"block_out_channels\":[32,64],\"down_block_types\":[\"DownEncoderBlock2D\",\"DownEncoderBlock2D\"],"
         "\"up_block_types\":[\"UpDecoderBlock2D\",\"AttnUpDecoderBlock2D\"],\"norm_num_groups\":8}",
         SDB_EUNSUPPORTED, "up_block_types"},
        {"{\"block_out_channels\":[32,64],\"down_block_types\":[\"DownEncoderBlock2D\"],"
         "\"up_block_types\":[\"UpDecoderBlock2D\",\"UpDecoderBlock2D\"],\"norm_num_groups\":8}",
         SDB_EINVAL, "down_block_types"},
        {"{\"block_out_channels\":[30],\"norm_num_groups\":8}", SDB_EINVAL, "norm_num_groups"},
        {"{\"block_out_channels\":[32],\"norm_num_groups\":8,\"act_fn\":\"gelu\"}", SDB_EUNSUPPORTED, "act_fn"},
        {"{\"_class_name\":\"AsymmetricAutoencoderKL\"}", SDB_EUNSUPPORTED, "AsymmetricAutoencoderKL"},
        {"{\"block_out_channels\":[32],\"norm_num_groups\":8,\"scaling_factor\":\"x\"}", SDB_EINVAL, "scaling_factor"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        FILE *f = fopen(path, "w");
        fputs(bad[i].json, f);
        fclose(f);
        sdb_err_clear(&err);
        int rc = sdb_vae_config_load(&c, path, &err);
        CHECKF(rc != 0 && strstr(err.msg, bad[i].needle) && strstr(err.msg, "config.json"),
               "bad config %zu: rc %d msg '%s'", i, rc, err.msg);
        if (bad[i].code != SDB_EINVAL) CHECKF(rc == bad[i].code, "bad config %zu: rc %d", i, rc);
    }
}

/* Mismatched weights / configs fail with the tensor's name and shapes. */
static void test_errors(void)
{
    sdb_err err;
    sdb_weights w;
    sdb_vae *v = NULL;
    /* text-encoder weights given as a VAE */
    CHECK_OK(sdb_weights_open(&w, sdb_t_path("models/tiny-sd-inpaint/text_encoder/model.safetensors"), "vae", &err), &err);
    sdb_err_clear(&err);
    CHECK(sdb_vae_load(&v, sdb_t_path(TINY_VAE "/config.json"), &w, &err) == SDB_ENOTFOUND && v == NULL);
    CHECKF(strstr(err.msg, "encoder.conv_in.weight") && strstr(err.msg, "VAE"), "%s", err.msg);
    sdb_weights_free(&w);
    /* the real SD 1.5 config on the tiny weights: a shape mismatch */
    CHECK_OK(sdb_weights_open(&w, sdb_t_path(TINY_VAE "/diffusion_pytorch_model.safetensors"), "vae", &err), &err);
    sdb_err_clear(&err);
    CHECK(sdb_vae_load(&v, sdb_t_path("models/sd15-inpaint-layout/vae/config.json"), &w, &err) == SDB_EFORMAT);
    CHECKF(strstr(err.msg, "encoder.conv_in.weight") && strstr(err.msg, "[32, 3, 3, 3]") &&
           strstr(err.msg, "[128, 3, 3, 3]"), "%s", err.msg);
    sdb_weights_free(&w);
    /* a scratch arena too small fails cleanly and leaves the arena as it was */
    v = load_folder(&w, sdb_t_path(TINY_VAE));
    if (!v) return;
    sdb_arena small;
    CHECK_OK(sdb_arena_init(&small, (size_t)64 << 20, &err), &err);
    float *big = sdb_arena_floats(&small, ((size_t)64 << 20) / 4 - (1 << 18)); /* leave 1 MiB */
    CHECK(big != NULL);
    size_t used = small.used;
    float *z = calloc(4 * 12 * 17, sizeof(float)), *img = malloc(sizeof(float) * 3 * 96 * 136);
    sdb_err_clear(&err);
    CHECK(sdb_vae_decode(v, z, 12, 17, img, &small, &err) == SDB_ENOMEM);
    CHECKF(strstr(err.msg, "scratch") != NULL, "%s", err.msg);
    CHECK(small.used == used);
    free(z);
    free(img);
    sdb_arena_free(&small);
    sdb_vae_free(v);
    sdb_weights_free(&w);
}

static void test_encode_folder(void)
{
    sdb_weights w;
    sdb_vae *v = load_folder(&w, sdb_t_path(TINY_VAE));
    if (!v) return;
    CHECK(fabsf(sdb_vae_scaling_factor(v) - 0.18215f) < 1e-9f);
    /* the default --conv auto and winograd (every 3x3 stride-1 conv): the same references and
     * tolerances (direct: test_strips, test_threads) */
    static const int algos[2] = {SDB_CONV_AUTO, SDB_CONV_WINOGRAD};
    for (int i = 0; i < 2; i++) {
        const int algo = algos[i];
        fprintf(stderr, "  --conv %s\n", sdb_conv_algo_name(algo));
        sdb_vae_set_conv(v, algo);
        run_encode(v, "enc_64x64", 2e-4, 1);
        run_encode(v, "enc_h96w136", 2e-4, 0);
    }
    fprintf(stderr, "  weights: %.2f MiB\n", sdb_vae_weight_bytes(v) / 1048576.0);
    sdb_vae_free(v);
    sdb_weights_free(&w);
}

static void test_decode_folder(void)
{
    sdb_weights w;
    sdb_vae *v = load_folder(&w, sdb_t_path(TINY_VAE));
    if (!v) return;
    static const int algos[2] = {SDB_CONV_AUTO, SDB_CONV_WINOGRAD};
    for (int i = 0; i < 2; i++) {
        const int algo = algos[i];
        fprintf(stderr, "  --conv %s\n", sdb_conv_algo_name(algo));
        sdb_vae_set_conv(v, algo);
        /* intermediates up to 40: Winograd's 1e-5 relative error is 4e-4 there */
        run_decode(v, "dec_8x8", 1e-4, algo == SDB_CONV_WINOGRAD ? 4e-4 : 1e-4);
        run_decode(v, "dec_h12w17", 1e-4, 0);
        run_decode(v, "dec_h5w7", 1e-4, 0);
    }
    sdb_vae_free(v);
    sdb_weights_free(&w);
}

/* Odd image sizes: the latent size follows the stride-2 convs; the encoder runs. */
static void test_odd_sizes(void)
{
    sdb_weights w;
    sdb_vae *v = load_folder(&w, sdb_t_path(TINY_VAE));
    if (!v) return;
    /* each downsampler: floor(n / 2) (pad right/bottom 1, k3, stride 2); 0 = too small */
    static const int cases[][4] = {{64, 64, 8, 8}, {96, 136, 12, 17}, {17, 12, 2, 1}, {65, 63, 8, 7},
                                   {8, 8, 1, 1}, {16, 23, 2, 2}, {9, 2, 1, 0}, {2, 2, 0, 0}};
    sdb_err err;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int h, wd;
        sdb_vae_latent_size(v, cases[i][0], cases[i][1], &h, &wd);
        CHECKF(h == cases[i][2] && wd == cases[i][3], "%dx%d -> %dx%d", cases[i][0], cases[i][1], h, wd);
    }
    int H = 17, W = 12, h, wd;
    sdb_vae_latent_size(v, H, W, &h, &wd);
    float *img = calloc((size_t)3 * H * W, sizeof(float));
    for (int i = 0; i < 3 * H * W; i++) img[i] = sinf(0.1f * i);
    float *m = malloc(sizeof(float) * 4 * h * wd), *s = malloc(sizeof(float) * 4 * h * wd);
    CHECK_OK(sdb_vae_encode(v, img, H, W, m, s, NULL, &arena, &err), &err);
    int bad = 0;
    for (int i = 0; i < 4 * h * wd; i++) bad += !isfinite(m[i]) || !(s[i] > 0);
    CHECK(bad == 0);
    sdb_err_clear(&err);
    CHECK(sdb_vae_encode(v, img, 1, 1, m, s, NULL, &arena, &err) == SDB_EINVAL);
    CHECK(sdb_vae_encode(v, img, 9, 4, m, s, NULL, &arena, &err) == SDB_EINVAL);
    CHECK(strstr(err.msg, "too small") != NULL);
    CHECK(arena.used == 0);
    free(img);
    free(m);
    free(s);
    sdb_vae_free(v);
    sdb_weights_free(&w);
}

/* The upsampler's strip path (forced with tiny strips) against the one-piece path: with direct
 * convolutions within float rounding of the sums' order (2e-6); by Winograd, whose tiles start at
 * each strip's top, within its own error (1e-4 of values up to 2). */
static void strips_case(int algo, double tol)
{
    sdb_weights w;
    sdb_vae *v = load_folder(&w, sdb_t_path(TINY_VAE));
    if (!v) return;
    sdb_vae_set_conv(v, algo);
    sdb_err err;
    int64_t nz;
    float *z = ref_f32("dec_h12w17/z", &nz);
    float *ref = ref_f32("dec_h12w17/image", NULL);
    if (!z || !ref) { free(z); free(ref); sdb_vae_free(v); sdb_weights_free(&w); return; }
    size_t n = (size_t)3 * 96 * 136;
    float *a = malloc(n * sizeof(float)), *b = malloc(n * sizeof(float));
    CHECK_OK(sdb_vae_decode(v, z, 12, 17, a, &arena, &err), &err);
    size_t peak_full = sdb_vae_peak_bytes(v);
    /* 64 channels x 136 columns per upsampled row: strips of 2, 3 and 7 rows */
    static const size_t budgets[] = {64 * 272 * 4, 64 * 272 * 5, 64 * 272 * 9};
    for (int k = 0; k < 3; k++) {
        sdb_vae_set_strip_floats(v, budgets[k]);
        CHECK_OK(sdb_vae_decode(v, z, 12, 17, b, &arena, &err), &err);
        size_t diff = 0;
        for (size_t i = 0; i < n; i++) diff += a[i] != b[i];
        fprintf(stderr, "  strips budget %zu floats: %zu values differ from one-piece, peak %.2f MiB (one-piece %.2f)\n",
                budgets[k], diff, sdb_vae_peak_bytes(v) / 1048576.0, peak_full / 1048576.0);
        sdb_t_close(b, ref, n, 1e-4, 0, "strip decode vs reference");
        sdb_t_close(b, a, n, tol, 0, "strip decode vs one-piece");
        CHECK(sdb_vae_peak_bytes(v) < peak_full);
    }
    free(z);
    free(ref);
    free(a);
    free(b);
    sdb_vae_free(v);
    sdb_weights_free(&w);
}

/* An F16 ".fp16.safetensors" variant (written here from the F32 weights). */
static void test_fp16_variant(void)
{
    sdb_err err;
    const char *dir = sdb_t_tmpdir();
    char path[700], cfg_src[700];
    snprintf(path, sizeof path, "%s/diffusion_pytorch_model.fp16.safetensors", dir);
    if (sdb_t_write_f16_copy(sdb_t_path(TINY_VAE "/diffusion_pytorch_model.safetensors"), path, 1)) return;
    snprintf(cfg_src, sizeof cfg_src, "%s", sdb_t_path(TINY_VAE "/config.json"));
    char *text = NULL;
    size_t len = 0;
    FILE *f = fopen(cfg_src, "rb");
    if (f) {
        text = malloc(1 << 16);
        len = fread(text, 1, 1 << 16, f);
        fclose(f);
        snprintf(path, sizeof path, "%s/config.json", dir);
        f = fopen(path, "wb");
        fwrite(text, 1, len, f);
        fclose(f);
        free(text);
    }
    char wp[800];
    CHECK_OK(sdb_vae_weights_path(dir, 0, wp, sizeof wp, &err), &err);
    CHECK(strstr(wp, ".fp16.safetensors") != NULL);
    sdb_weights w;
    sdb_vae *v = load_folder(&w, dir);
    if (!v) return;
    /* F16 weights: compare loosely with the F32 reference (the rounding of 1.7M parameters) */
    run_decode(v, "dec_8x8", 2e-2, 0);
    run_encode(v, "enc_64x64", 5e-2, 0);
    sdb_vae_free(v);
    sdb_weights_free(&w);
    /* a folder without weights names both file names */
    sdb_err_clear(&err);
    CHECK(sdb_vae_weights_path(sdb_t_tmpdir(), 0, wp, sizeof wp, &err) == SDB_ENOTFOUND &&
          strstr(err.msg, "diffusion_pytorch_model.fp16.safetensors"));
}

/* The single-file LDM checkpoint: prefix first_stage_model. + the LDM name map. */
static void test_single_file(void)
{
    sdb_err err;
    sdb_st *st = NULL;
    CHECK_OK(sdb_st_open(&st, sdb_t_path("models/tiny-sd-inpaint.safetensors"), &err), &err);
    if (!st) return;
    /* the plain SD map (sdb_name_map_fn) */
    sdb_weights w;
    sdb_weights_wrap(&w, st, "vae", SDB_LDM_VAE_PREFIX, sdb_ldm_vae_name);
    sdb_vae *v = NULL;
    CHECK_OK(sdb_vae_load(&v, sdb_t_path(TINY_VAE "/config.json"), &w, &err), &err);
    if (v) {
        run_encode(v, "enc_64x64", 2e-4, 1);
        run_decode(v, "dec_8x8", 1e-4, 1e-4);
        run_decode(v, "dec_h5w7", 1e-4, 0);
        sdb_vae_free(v);
    }
    sdb_weights_free(&w);

    /* the config-driven wrapper; the single file gives exactly the folder's results */
    sdb_vae_config cfg;
    CHECK_OK(sdb_vae_config_load(&cfg, sdb_t_path(TINY_VAE "/config.json"), &err), &err);
    sdb_weights wl, wf;
    CHECK_OK(sdb_ldm_vae_weights(&wl, st, &cfg, &err), &err);
    sdb_vae *vl = NULL, *vf = load_folder(&wf, sdb_t_path(TINY_VAE));
    CHECK_OK(sdb_vae_create(&vl, &cfg, &wl, &err), &err);
    float *z = ref_f32("dec_h12w17/z", NULL), *img = ref_f32("enc_h96w136/image", NULL);
    if (vl && vf && z && img) {
        size_t ni = (size_t)3 * 96 * 136, nl = (size_t)4 * 12 * 17;
        float *a = malloc(ni * sizeof(float)), *b = malloc(ni * sizeof(float));
        float *ma = malloc(nl * sizeof(float)), *mb = malloc(nl * sizeof(float));
        float *sa = malloc(nl * sizeof(float)), *sb = malloc(nl * sizeof(float));
        CHECK_OK(sdb_vae_decode(vl, z, 12, 17, a, &arena, &err), &err);
        CHECK_OK(sdb_vae_decode(vf, z, 12, 17, b, &arena, &err), &err);
        CHECK(memcmp(a, b, ni * sizeof(float)) == 0);
        CHECK_OK(sdb_vae_encode(vl, img, 96, 136, ma, sa, NULL, &arena, &err), &err);
        CHECK_OK(sdb_vae_encode(vf, img, 96, 136, mb, sb, NULL, &arena, &err), &err);
        CHECK(memcmp(ma, mb, nl * sizeof(float)) == 0 && memcmp(sa, sb, nl * sizeof(float)) == 0);
        free(a); free(b); free(ma); free(mb); free(sa); free(sb);
    }
    free(z);
    free(img);
    sdb_vae_free(vl);
    sdb_vae_free(vf);
    sdb_weights_free(&wl);
    if (vf) sdb_weights_free(&wf);
    sdb_st_close(st);
}

/* 1 vs 2 threads: bit-identical encode and decode, plain and tiled. */
static void threads_case(int algo, int tiled)
{
    sdb_weights w;
    sdb_vae *v = load_folder(&w, sdb_t_path(TINY_VAE));
    if (!v) return;
    sdb_vae_set_conv(v, algo);
    sdb_err err;
    float *img = ref_f32("enc_h96w136/image", NULL);
    float *z = ref_f32("dec_h12w17/z", NULL);
    if (!img || !z) { free(img); free(z); sdb_vae_free(v); sdb_weights_free(&w); return; }
    size_t nl = (size_t)4 * 12 * 17, ni = (size_t)3 * 96 * 136;
    float *m[2], *s[2], *im[2], *tm[2], *ti[2];
    int saved = sdb_threads_get();
    for (int k = 0; k < 2; k++) {
        sdb_threads_set(k + 1);
        m[k] = malloc(nl * sizeof(float));
        s[k] = malloc(nl * sizeof(float));
        im[k] = malloc(ni * sizeof(float));
        tm[k] = malloc(nl * sizeof(float));
        ti[k] = malloc(ni * sizeof(float));
        CHECK_OK(sdb_vae_encode(v, img, 96, 136, m[k], s[k], NULL, &arena, &err), &err);
        CHECK_OK(sdb_vae_decode(v, z, 12, 17, im[k], &arena, &err), &err);
        /* the tiled passes too (64-pixel tiles: 2 x 3 of them), or the untiled ones again */
        memset(tm[k], 0, nl * sizeof(float));
        memset(ti[k], 0, ni * sizeof(float));
        if (tiled) {
            sdb_vae_set_tile_size(v, 64);
            CHECK_OK(sdb_vae_encode_tiled(v, img, 96, 136, tm[k], s[k], NULL, &arena, &err), &err);
            CHECK_OK(sdb_vae_decode_tiled(v, z, 12, 17, ti[k], &arena, &err), &err);
            sdb_vae_set_tile_size(v, 0);
        }
    }
    sdb_threads_set(saved);
    CHECK(memcmp(m[0], m[1], nl * sizeof(float)) == 0);
    CHECK(memcmp(s[0], s[1], nl * sizeof(float)) == 0);
    CHECK(memcmp(im[0], im[1], ni * sizeof(float)) == 0);
    CHECK(memcmp(tm[0], tm[1], nl * sizeof(float)) == 0);
    CHECK(memcmp(ti[0], ti[1], ni * sizeof(float)) == 0);
    for (int k = 0; k < 2; k++) { free(m[k]); free(s[k]); free(im[k]); free(tm[k]); free(ti[k]); }
    free(img);
    free(z);
    sdb_vae_free(v);
    sdb_weights_free(&w);
}

static void test_threads(void)
{
    for (int algo = 0; algo < 3; algo++) threads_case(algo, 0);
}

/* The tiled passes run the tiles once per GroupNorm (about 11 runs), so they and their thread
 * check are the `tiled` half of this test (test_vae_tiled_slow, Release only: under the
 * sanitizers they alone take over 10 minutes). */
static void test_threads_tiled(void)
{
    for (int algo = 0; algo < 3; algo++) threads_case(algo, 1);
}

static void test_strips(void)
{
    strips_case(SDB_CONV_DIRECT, 2e-6);
    strips_case(SDB_CONV_WINOGRAD, 1e-4);
}

/* Shapes of a json {name: [dims]} object against a recorder's list. */
static int shapes_match(json_t *obj, const char *name, int ndim, const int64_t *shape)
{
    json_t *a = json_object_get(obj, name);
    if (!json_is_array(a) || (int)json_array_size(a) != ndim) return 0;
    for (int d = 0; d < ndim; d++)
        if (json_integer_value(json_array_get(a, d)) != shape[d]) return 0;
    return 1;
}

/* The loader on SD 1.5's config requests exactly the real model's tensors (diffusers names and
 * shapes from sd15-inpaint-layout/tensors.json; their LDM names from tensors-ldm.json), and the
 * real-size network's peak memory at a small resolution follows the expected formula. */
static void test_sd15_layout(void)
{
    sdb_err err;
    sdb_weights rec;
    sdb_weights_init_recorder(&rec, "vae");
    sdb_vae_config cfg;
    CHECK_OK(sdb_vae_config_load(&cfg, sdb_t_path("models/sd15-inpaint-layout/vae/config.json"), &err), &err);
    sdb_vae *v = NULL;
    CHECK_OK(sdb_vae_create(&v, &cfg, &rec, &err), &err);
    if (!v) { sdb_weights_free(&rec); return; }
    json_error_t je;
    json_t *dj = json_load_file(sdb_t_path("models/sd15-inpaint-layout/tensors.json"), 0, &je);
    json_t *lj = json_load_file(sdb_t_path("models/sd15-inpaint-layout/tensors-ldm.json"), 0, &je);
    CHECK(dj && lj);
    if (dj && lj) {
        json_t *dv = json_object_get(json_object_get(dj, "components"), "vae");
        json_t *lt = json_object_get(lj, "tensors");
        CHECK(json_is_object(dv) && json_is_object(lt));
        CHECKF(rec.n_rec == (int)json_object_size(dv), "%d tensors requested, %zu in the real VAE",
               rec.n_rec, json_object_size(dv));
        int bad_d = 0, bad_l = 0;
        for (int i = 0; i < rec.n_rec; i++) {
            if (!shapes_match(dv, rec.rec_names[i], rec.rec_ndim[i], rec.rec_shapes[i])) {
                if (bad_d++ < 5) fprintf(stderr, "  diffusers layout: %s not as requested\n", rec.rec_names[i]);
            }
            char ln[512] = "first_stage_model.";
            size_t pl = strlen(ln);
            int ok = sdb_ldm_vae_name(rec.rec_names[i], ln + pl, sizeof ln - pl) == 0;
            if (ok) {
                int64_t s4[4] = {rec.rec_shapes[i][0], rec.rec_shapes[i][1], 1, 1};
                ok = shapes_match(lt, ln, rec.rec_ndim[i], rec.rec_shapes[i]) ||
                     (rec.rec_ndim[i] == 2 && shapes_match(lt, ln, 4, s4));
            }
            if (!ok && bad_l++ < 5) fprintf(stderr, "  LDM layout: %s -> %s not found\n", rec.rec_names[i], ln);
        }
        CHECK(bad_d == 0);
        CHECK(bad_l == 0);
    }
    json_decref(dj);
    json_decref(lj);

    /* memory of the real-size network (zero weights) at 128x128: 4 x 128ch x 128^2 activations
     * decoding, 3 encoding, plus bounded conv scratch */
    const int S = 128;
    float *img = calloc((size_t)3 * S * S, sizeof(float));
    float *z = calloc((size_t)4 * (S / 8) * (S / 8), sizeof(float));
    float *m = malloc(sizeof(float) * 4 * (S / 8) * (S / 8)), *s = malloc(sizeof(float) * 4 * (S / 8) * (S / 8));
    double act = 128.0 * S * S * 4;
    CHECK_OK(sdb_vae_decode(v, z, S / 8, S / 8, img, &arena, &err), &err);
    double pd = (double)sdb_vae_peak_bytes(v);
    CHECK_OK(sdb_vae_encode(v, img, S, S, m, s, NULL, &arena, &err), &err);
    double pe = (double)sdb_vae_peak_bytes(v);
    fprintf(stderr, "  SD 1.5 VAE at %dx%d: decode peak %.1f MiB (%.2f activations), encode peak %.1f MiB (%.2f); "
            "at 512x512 the activations alone are %.0f / %.0f MiB\n", S, S, pd / 1048576.0, pd / act,
            pe / 1048576.0, pe / act, 4 * 128.0 * 512 * 512 * 4 / 1048576.0, 3 * 128.0 * 512 * 512 * 4 / 1048576.0);
    CHECK(pd < act * 4 + (64 << 20));
    CHECK(pe < act * 3 + (64 << 20));
    free(img);
    free(z);
    free(m);
    free(s);
    sdb_vae_free(v);
    sdb_weights_free(&rec);
}

/* ---- tiled VAE (vae.h): the whole-latent part plus tiles with margins, whole-image GroupNorm
 * statistics over passes. Truth: the untiled passes (checked against diffusers above). */

/* The pipeline's float -> 8-bit conversion; the largest level difference of two images. */
static int max_levels(const float *a, const float *b, size_t n)
{
    int m = 0;
    for (size_t i = 0; i < n; i++) {
        float x = a[i] / 2.0f + 0.5f, y = b[i] / 2.0f + 0.5f;
        x = x < 0 ? 0 : x > 1 ? 1 : x;
        y = y < 0 ? 0 : y > 1 ? 1 : y;
        int d = abs((int)nearbyintf(x * 255.0f) - (int)nearbyintf(y * 255.0f));
        if (d > m) m = d;
    }
    return m;
}

static double max_abs(const float *a, const float *b, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i] - b[i]));
    return m;
}

/* Margins: a 40 x 36 latent (320 x 288 pixels) in 80-pixel tiles (4 x 4; the interior tiles' cores
 * have margins inside the image on every side), every GroupNorm normalised with the untiled pass's
 * statistics (the first run is one untiled statistics pass). Exact statistics (the default, run by
 * run): 2 x 2 tiles of a 16 x 16 latent (128 x 128 pixels), cheaper. */
static void test_tiled_decode(void)
{
    sdb_weights w;
    sdb_vae *v = load_folder(&w, sdb_t_path(TINY_VAE));
    if (!v) return;
    sdb_err err;
    CHECK(sdb_vae_get_config(v)->sample_size == 128);
    CHECK(sdb_vae_tile_size(v) == 128);
    CHECK(!sdb_vae_tiles_image(v, 128, 128) && sdb_vae_tiles_image(v, 128, 136));
    /* the decoder's receptive field past the mid block, by hand (4 blocks of 3 resnets, 2 convs
     * each): 6 latents; x2 + the upsampler's conv = 13; + 6 = 19; 39; 45; 91; 97 pixels; + conv_out
     * = 98 pixels = 12.25 -> 13 latents. The encoder's: conv_in 1 + 4 = 5 pixels; each downsampler
     * (e + 1) / 2 + 1: 4, + 4 = 8 -> 5, 9 -> 6, + 4 = 10 latents. */
    CHECK(sdb_vae_decode_margin(v) == 13 && sdb_vae_encode_margin(v) == 10);
    const int h = 40, wd = 36, H = 8 * h, W = 8 * wd;
    size_t nz = (size_t)4 * h * wd, n = (size_t)3 * H * W;
    float *z = malloc(nz * sizeof(float)), *a = malloc(n * sizeof(float)), *b = malloc(n * sizeof(float));
    sdb_rng g;
    sdb_rng_seed(&g, 7);
    sdb_rng_randn(&g, z, nz);
    for (size_t i = 0; i < nz; i++) z[i] *= 2.0f;
    CHECK_OK(sdb_vae_decode(v, z, h, wd, b, &arena, &err), &err);
    size_t peak_full = sdb_vae_peak_bytes(v);
    sdb_vae_set_tile_size(v, 80);
    sdb_vae_tile_opts o = {2, -1, 0, 1, 0, NULL};
    sdb_vae_set_tiling(v, &o);
    CHECK_OK(sdb_vae_decode_tiled(v, z, h, wd, a, &arena, &err), &err);
    double exact = max_abs(a, b, n);
    o.margin = 4; /* less than the receptive field: the cores' edges are off */
    sdb_vae_set_tiling(v, &o);
    CHECK_OK(sdb_vae_decode_tiled(v, z, h, wd, a, &arena, &err), &err);
    double short_margin = max_abs(a, b, n);
    /* one run with each tile's own statistics is far off (what the runs are for); its scratch is
     * one tile's, less than the untiled decode's */
    sdb_vae_tile_opts one = {1, -1, 0, 0, 0, NULL};
    sdb_vae_set_tiling(v, &one);
    CHECK_OK(sdb_vae_decode_tiled(v, z, h, wd, a, &arena, &err), &err);
    size_t peak_tiled = sdb_vae_peak_bytes(v);
    double d1 = max_abs(a, b, n);
    fprintf(stderr, "  tiled decode 40x36, 80-px tiles, untiled statistics: %.2g off (margin 4: %.2g); own statistics %.2g "
                    "off; peak %.2f MiB (untiled %.2f)\n", exact, short_margin, d1, peak_tiled / 1048576.0, peak_full / 1048576.0);
    CHECK(d1 > 1e-2);
    CHECKF(exact < 2e-4, "tiled decode with the untiled statistics %.3g off", exact);
    CHECK(short_margin > 1e-3);
    CHECK(peak_tiled < peak_full);
    /* the defaults: the statistics made exact run by run */
    sdb_vae_set_tiling(v, NULL);
    sdb_vae_set_tile_size(v, 64);
    CHECK_OK(sdb_vae_decode(v, z, 16, 16, b, &arena, &err), &err);
    CHECK_OK(sdb_vae_decode_tiled(v, z, 16, 16, a, &arena, &err), &err);
    size_t n16 = (size_t)3 * 128 * 128;
    int ld = max_levels(a, b, n16);
    double dd = max_abs(a, b, n16);
    fprintf(stderr, "  tiled decode 16x16, 64-px tiles, exact statistics: %.2g off (%d/255)\n", dd, ld);
    CHECKF(ld <= 2 && dd < 2e-4, "tiled decode %d/255 (%.3g) off the untiled one", ld, dd);
    /* a latent of one tile or less: exactly the plain decode */
    CHECK_OK(sdb_vae_decode_tiled(v, z, 8, 8, a, &arena, &err), &err);
    CHECK_OK(sdb_vae_decode(v, z, 8, 8, b, &arena, &err), &err);
    CHECK(memcmp(a, b, (size_t)3 * 64 * 64 * sizeof(float)) == 0);
    CHECK(arena.used == 0);
    free(z); free(a); free(b);
    sdb_vae_free(v);
    sdb_weights_free(&w);
}

static void encode_case(sdb_vae *v, int H, int W, const sdb_vae_tile_opts *o, const char *what)
{
    sdb_err err;
    const int h = H / 8, wd = W / 8;
    size_t ni = (size_t)3 * H * W, nl = (size_t)4 * h * wd;
    float *img = malloc(ni * sizeof(float)), *d0 = malloc(ni * sizeof(float)), *d1 = malloc(ni * sizeof(float));
    for (int c = 0; c < 3; c++)
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++)
                img[((size_t)c * H + y) * W + x] = 0.8f * sinf(0.05f * x + 0.7f * c) * cosf(0.031f * y) + 0.1f * sinf(0.9f * (x + y));
    float *m = malloc(nl * sizeof(float)), *s = malloc(nl * sizeof(float)), *lv = malloc(nl * sizeof(float));
    float *um = malloc(nl * sizeof(float)), *us = malloc(nl * sizeof(float)), *ul = malloc(nl * sizeof(float));
    CHECK_OK(sdb_vae_encode(v, img, H, W, um, us, ul, &arena, &err), &err);
    sdb_vae_set_tiling(v, o);
    CHECK_OK(sdb_vae_encode_tiled(v, img, H, W, m, s, lv, &arena, &err), &err);
    sdb_vae_set_tiling(v, NULL);
    for (size_t q = 0; q < nl; q++) CHECK(s[q] == expf(0.5f * (lv[q] < -30 ? -30 : lv[q] > 20 ? 20 : lv[q])));
    double de = fmax(max_abs(m, um, nl), max_abs(lv, ul, nl));
    /* the two latents decoded (untiled) */
    CHECK_OK(sdb_vae_decode(v, um, h, wd, d0, &arena, &err), &err);
    CHECK_OK(sdb_vae_decode(v, m, h, wd, d1, &arena, &err), &err);
    int le = max_levels(d0, d1, ni);
    fprintf(stderr, "  tiled encode %dx%d, %d-px tiles, %s: moments %.2g off, decoded %d/255\n", W, H, sdb_vae_tile_size(v),
            what, de, le);
    CHECKF(de < 2e-4 && le <= 2, "tiled encode %.3g off, decoded %d/255", de, le);
    free(img); free(d0); free(d1); free(m); free(s); free(lv); free(um); free(us); free(ul);
}

static void test_tiled_encode(void)
{
    sdb_weights w;
    sdb_vae *v = load_folder(&w, sdb_t_path(TINY_VAE));
    if (!v) return;
    sdb_err err;
    sdb_vae_tile_opts o = {2, -1, 0, 1, 0, NULL};
    sdb_vae_set_tile_size(v, 80);
    encode_case(v, 320, 288, &o, "untiled statistics");
    sdb_vae_set_tile_size(v, 64);
    encode_case(v, 128, 120, NULL, "exact statistics");
    /* one tile or less: the plain encode */
    float img[3 * 64 * 56], m[4 * 8 * 7], s[4 * 8 * 7], um[4 * 8 * 7];
    for (size_t i = 0; i < sizeof img / sizeof img[0]; i++) img[i] = sinf(0.01f * (float)i);
    CHECK_OK(sdb_vae_encode_tiled(v, img, 64, 56, m, s, NULL, &arena, &err), &err);
    CHECK_OK(sdb_vae_encode(v, img, 64, 56, um, s, NULL, &arena, &err), &err);
    CHECK(memcmp(m, um, sizeof m) == 0);
    CHECK(sdb_vae_encode_tiled(v, img, 68, 56, m, s, NULL, &arena, &err) == SDB_EINVAL);
    CHECK(arena.used == 0);
    sdb_vae_free(v);
    sdb_weights_free(&w);
}

/* Open descriptors of this process (a scratch file left open would show). */
static int open_fds(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    if (!d) return -1;
    while (readdir(d)) n++;
    closedir(d);
    return n;
}

/* The default exact tiled passes park each tile at the GroupNorm where its run stops and resume
 * it in the next run: bit-identical to recomputing every tile from its input in every run (the
 * `recompute` mode), encode and decode. The scratch file's size, by hand for the tiny VAE (up blocks
 * 64, 64, 64, 32 channels): the largest parked state is in the last up block, at 8x the latent
 * resolution: its first resnet's 64-channel input, or conv1's output and the residual (2 x 32
 * channels) = 64 channels x 64 pixels = 4096 floats per latent of a tile's extent. The encoder's
 * (down blocks 32, 64, 64, 64 at 8x, 4x, 2x, 1x) too: its first block at 8x, 2 x 32 channels x 64.
 * A 12 x 12 latent (96 x 96 pixels) in 32-pixel tiles (4 latents) is 3 x 3 tiles; with margins of
 * 2 latents (shorter than the receptive field: cheaper, and the comparison is between two ways of
 * computing the same tiles) their extents are 6, 8, 6 latents each way: 20 x 20 latents in all,
 * the middle tile with margins on every side.
 * A scratch folder that cannot be written, or a disk without room, fails with a clear error
 * before any tile runs, leaving nothing behind. */
static void test_parked_tiles(void)
{
    sdb_weights w;
    sdb_vae *v = load_folder(&w, sdb_t_path(TINY_VAE));
    if (!v) return;
    sdb_err err;
    const int h = 12, wd = 12, H = 8 * h, W = 8 * wd;
    const size_t nz = (size_t)4 * h * wd, ni = (size_t)3 * H * W;
    float *z = malloc(nz * sizeof(float)), *a = malloc(ni * sizeof(float)), *b = malloc(ni * sizeof(float));
    float *ma = malloc(nz * sizeof(float)), *sa = malloc(nz * sizeof(float));
    float *mb = malloc(nz * sizeof(float)), *sb = malloc(nz * sizeof(float));
    sdb_rng g;
    sdb_rng_seed(&g, 11);
    sdb_rng_randn(&g, z, nz);
    for (size_t i = 0; i < nz; i++) z[i] *= 2.0f;
    float *img = sdb_t_rand_floats(&(uint64_t){5}, ni, 0.9f);
    const uint64_t want_dec = 20ull * 20 * 4096 * sizeof(float), want_enc = want_dec;
    sdb_vae_set_tile_size(v, 32);
    sdb_vae_tile_opts o = {0, 2, 0, 0, 1, NULL}, parked = {0, 2, 0, 0, 0, NULL};
    sdb_vae_set_tiling(v, &o);
    CHECK_OK(sdb_vae_decode_tiled(v, z, h, wd, a, &arena, &err), &err);
    CHECK(sdb_vae_park_bytes(v) == 0);
    CHECK_OK(sdb_vae_encode_tiled(v, img, H, W, ma, sa, NULL, &arena, &err), &err);
    sdb_vae_set_tiling(v, &parked);
    const int fds = open_fds();
    CHECK_OK(sdb_vae_decode_tiled(v, z, h, wd, b, &arena, &err), &err);
    CHECKF(sdb_vae_park_bytes(v) == want_dec, "decode parked %llu bytes, want %llu",
           (unsigned long long)sdb_vae_park_bytes(v), (unsigned long long)want_dec);
    CHECK(memcmp(a, b, ni * sizeof(float)) == 0);
    CHECK_OK(sdb_vae_encode_tiled(v, img, H, W, mb, sb, NULL, &arena, &err), &err);
    CHECKF(sdb_vae_park_bytes(v) == want_enc, "encode parked %llu bytes, want %llu",
           (unsigned long long)sdb_vae_park_bytes(v), (unsigned long long)want_enc);
    CHECK(memcmp(ma, mb, nz * sizeof(float)) == 0 && memcmp(sa, sb, nz * sizeof(float)) == 0);
    CHECK(open_fds() == fds);

    /* a scratch folder that does not exist (root may write anywhere, so not a permission test) */
    sdb_vae_tile_opts bad = {0, 2, 0, 0, 0, "/nonexistent-sdb-scratch/dir"};
    sdb_vae_set_tiling(v, &bad);
    int rc = sdb_vae_decode_tiled(v, z, h, wd, b, &arena, &err);
    CHECK(rc == SDB_EIO);
    CHECKF(strstr(err.msg, "tiled VAE decode") && strstr(err.msg, "scratch file in /nonexistent-sdb-scratch/dir") &&
           strstr(err.msg, "TMPDIR"), "message: %s", err.msg);
    rc = sdb_vae_encode_tiled(v, img, H, W, mb, sb, NULL, &arena, &err);
    CHECK(rc == SDB_EIO && strstr(err.msg, "tiled VAE encode") && strstr(err.msg, "/nonexistent-sdb-scratch/dir"));
    /* no room: a file-size limit of 1 MiB stands in for a full disk (EFBIG, reported as no space) */
    sdb_vae_tile_opts here = {0, 2, 0, 0, 0, sdb_t_tmpdir()};
    sdb_vae_set_tiling(v, &here);
    CHECK(sdb_t_limit_file_size(1 << 20) == 0);
    rc = sdb_vae_decode_tiled(v, z, h, wd, b, &arena, &err);
    CHECK(sdb_t_limit_file_size(0) == 0);
    CHECK(rc == SDB_EIO);
    CHECKF(strstr(err.msg, "no space left for the scratch file in") && strstr(err.msg, "needs 6 MiB"), "message: %s", err.msg);
    CHECK(open_fds() == fds);
    CHECK(arena.used == 0);
    sdb_vae_set_tiling(v, NULL);
    free(z); free(a); free(b); free(ma); free(sa); free(mb); free(sb); free(img);
    sdb_vae_free(v);
    sdb_weights_free(&w);
}

int main(int argc, char **argv)
{
    const int tiled = argc > 1 && !strcmp(argv[1], "tiled");
    sdb_err err;
    if (sdb_arena_init(&arena, (size_t)8 << 30, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
    if (sdb_t_data() && sdb_st_open(&refs, sdb_t_path("refs/vae.safetensors"), &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    if (!refs) return 1;
    if (tiled) {
        RUN(test_threads_tiled);
        RUN(test_tiled_decode);
        RUN(test_tiled_encode);
    } else {
        RUN(test_config);
        RUN(test_errors);
        RUN(test_encode_folder);
        RUN(test_decode_folder);
        RUN(test_odd_sizes);
        RUN(test_strips);
        RUN(test_fp16_variant);
        RUN(test_single_file);
        RUN(test_threads);
        RUN(test_sd15_layout);
        RUN(test_parked_tiles);
    }
    sdb_st_close(refs);
    sdb_arena_free(&arena);
    return sdb_t_done();
}
