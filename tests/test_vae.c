/*
 * test_vae.c — the AutoencoderKL against refs/vae.safetensors (diffusers 0.30.3 / torch 1.13):
 * every encode (mean, std, logvar) and decode case incl. non-square and odd latent sizes, the
 * debug intermediates, weights from the diffusers folder, an F16 ".fp16" variant and the
 * single-file LDM checkpoint, 1 vs 2 threads bit-identical, the strip-wise upsampler, config
 * validation, the real SD 1.5 tensor list (names + shapes, both layouts) and peak arena use.
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

/* 1 vs 2 threads: bit-identical encode and decode. */
static void threads_case(int algo)
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
    float *m[2], *s[2], *im[2];
    int saved = sdb_threads_get();
    for (int k = 0; k < 2; k++) {
        sdb_threads_set(k + 1);
        m[k] = malloc(nl * sizeof(float));
        s[k] = malloc(nl * sizeof(float));
        im[k] = malloc(ni * sizeof(float));
        CHECK_OK(sdb_vae_encode(v, img, 96, 136, m[k], s[k], NULL, &arena, &err), &err);
        CHECK_OK(sdb_vae_decode(v, z, 12, 17, im[k], &arena, &err), &err);
    }
    sdb_threads_set(saved);
    CHECK(memcmp(m[0], m[1], nl * sizeof(float)) == 0);
    CHECK(memcmp(s[0], s[1], nl * sizeof(float)) == 0);
    CHECK(memcmp(im[0], im[1], ni * sizeof(float)) == 0);
    for (int k = 0; k < 2; k++) { free(m[k]); free(s[k]); free(im[k]); }
    free(img);
    free(z);
    sdb_vae_free(v);
    sdb_weights_free(&w);
}

static void test_threads(void)
{
    for (int algo = 0; algo < 3; algo++) threads_case(algo);
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

/* ---- tiled VAE: diffusers' tiled_decode / tiled_encode written out literally here, on tiles
 * that the plain (untiled) passes compute: every full tile kept, blend_v then blend_h in place in
 * diffusers' loop order, then the kept top-left parts concatenated. */

typedef struct { float *t; int h, w; } dtile;

static void ref_blend_v(const dtile *a, dtile *b, int C, int extent)
{
    int e = extent;
    if (a->h < e) e = a->h;
    if (b->h < e) e = b->h;
    for (int y = 0; y < e; y++)
        for (int c = 0; c < C; c++)
            for (int x = 0; x < b->w; x++) {
                float *pb = &b->t[((size_t)c * b->h + y) * b->w + x];
                float av = a->t[((size_t)c * a->h + a->h - e + y) * a->w + x];
                float pa = av * (float)(1.0 - (double)y / e), pbv = *pb * (float)((double)y / e);
                *pb = pa + pbv;
            }
}

static void ref_blend_h(const dtile *a, dtile *b, int C, int extent)
{
    int e = extent;
    if (a->w < e) e = a->w;
    if (b->w < e) e = b->w;
    for (int x = 0; x < e; x++)
        for (int c = 0; c < C; c++)
            for (int y = 0; y < b->h; y++) {
                float *pb = &b->t[((size_t)c * b->h + y) * b->w + x];
                float av = a->t[((size_t)c * a->h + y) * a->w + a->w - e + x];
                float pa = av * (float)(1.0 - (double)x / e), pbv = *pb * (float)((double)x / e);
                *pb = pa + pbv;
            }
}

/* Blends a grid of tiles (row-major, nr x nc) and concatenates the top-left `limit` of each. */
static void ref_assemble(dtile *tl, int nr, int nc, int C, int extent, int limit, float *out, int OH, int OW)
{
    int oy = 0;
    for (int i = 0; i < nr; i++) {
        int ox = 0, kh = 0;
        for (int j = 0; j < nc; j++) {
            dtile *b = &tl[i * nc + j];
            if (i > 0) ref_blend_v(&tl[(i - 1) * nc + j], b, C, extent);
            if (j > 0) ref_blend_h(&tl[i * nc + j - 1], b, C, extent);
            int kw = b->w < limit ? b->w : limit;
            kh = b->h < limit ? b->h : limit;
            for (int c = 0; c < C; c++)
                for (int y = 0; y < kh; y++)
                    memcpy(out + ((size_t)c * OH + oy + y) * OW + ox, b->t + ((size_t)c * b->h + y) * b->w, kw * sizeof(float));
            ox += kw;
        }
        CHECK(ox == OW);
        oy += kh;
    }
    CHECK(oy == OH);
}

static void test_tiled_decode(void)
{
    sdb_weights w;
    sdb_vae *v = load_folder(&w, sdb_t_path(TINY_VAE));
    if (!v) return;
    sdb_err err;
    /* tiny VAE: sample_size 128 -> tiles of 16 latents every 12, blended over 32 pixels, 96 kept */
    CHECK(sdb_vae_get_config(v)->sample_size == 128);
    CHECK(sdb_vae_tile_size(v) == 128);
    CHECK(!sdb_vae_tiles_image(v, 128, 128) && sdb_vae_tiles_image(v, 128, 136));
    const int h = 30, wd = 41, H = 240, W = 328, C = 3; /* 3 x 4 tiles, the last ones cut short */
    size_t nz = (size_t)4 * h * wd, n = (size_t)C * H * W;
    float *z = malloc(nz * sizeof(float)), *a = malloc(n * sizeof(float)), *b = malloc(n * sizeof(float));
    float *ref = malloc(n * sizeof(float));
    sdb_rng g;
    sdb_rng_seed(&g, 7);
    sdb_rng_randn(&g, z, nz);
    for (size_t i = 0; i < nz; i++) z[i] *= 2.0f;
    CHECK_OK(sdb_vae_decode_tiled(v, z, h, wd, a, &arena, &err), &err);
    size_t peak_tiled = sdb_vae_peak_bytes(v);
    CHECK_OK(sdb_vae_decode(v, z, h, wd, b, &arena, &err), &err);
    size_t peak_full = sdb_vae_peak_bytes(v);
    /* the reference: each tile decoded alone, blended and assembled by the definition */
    const int tl = 16, step = 12, nr = 3, nc = 4;
    dtile tiles[12];
    for (int i = 0; i < nr; i++)
        for (int j = 0; j < nc; j++) {
            int th = h - i * step < tl ? h - i * step : tl, tw = wd - j * step < tl ? wd - j * step : tl;
            float *zt = malloc((size_t)4 * th * tw * sizeof(float));
            for (int c = 0; c < 4; c++)
                for (int y = 0; y < th; y++)
                    memcpy(zt + ((size_t)c * th + y) * tw, z + ((size_t)c * h + i * step + y) * wd + j * step, tw * sizeof(float));
            dtile *t = &tiles[i * nc + j];
            t->h = th * 8; t->w = tw * 8;
            t->t = malloc((size_t)C * t->h * t->w * sizeof(float));
            CHECK_OK(sdb_vae_decode(v, zt, th, tw, t->t, &arena, &err), &err);
            free(zt);
        }
    CHECK(tiles[11].h == 48 && tiles[11].w == 40); /* last row/column: 6 and 5 latents */
    ref_assemble(tiles, nr, nc, C, 32, 96, ref, H, W);
    size_t diff = 0, dfull = 0;
    double maxd = 0;
    for (size_t i = 0; i < n; i++) {
        diff += a[i] != ref[i];
        dfull += a[i] != b[i];
        double d = fabs((double)a[i] - b[i]);
        if (d > maxd) maxd = d;
    }
    CHECKF(diff == 0, "%zu of %zu values differ from the blend's definition", diff, n);
    /* tiling really happened (the mid-block attention sees less), and stays near the untiled pass */
    fprintf(stderr, "  tiled decode 30x41: %zu values differ from untiled, max %.3g; peak %.2f MiB (untiled %.2f)\n",
            dfull, maxd, peak_tiled / 1048576.0, peak_full / 1048576.0);
    CHECK(dfull > n / 4);
    CHECK(peak_tiled < peak_full);
    /* a latent of one tile or less: exactly the plain decode */
    CHECK_OK(sdb_vae_decode_tiled(v, z, 16, 16, a, &arena, &err), &err);
    CHECK_OK(sdb_vae_decode(v, z, 16, 16, b, &arena, &err), &err);
    CHECK(memcmp(a, b, (size_t)3 * 128 * 128 * sizeof(float)) == 0);
    /* bounded: 4x the pixels, nearly the same peak */
    float *z2 = malloc(nz * 4 * sizeof(float)), *big = malloc(n * 4 * sizeof(float));
    sdb_rng_randn(&g, z2, nz * 4);
    CHECK_OK(sdb_vae_decode_tiled(v, z2, 2 * h, 2 * wd, big, &arena, &err), &err);
    fprintf(stderr, "  tiled decode 60x82: peak %.2f MiB\n", sdb_vae_peak_bytes(v) / 1048576.0);
    CHECK(sdb_vae_peak_bytes(v) < peak_tiled + (peak_tiled >> 2));
    CHECK(arena.used == 0);
    for (int i = 0; i < 12; i++) free(tiles[i].t);
    free(z); free(z2); free(big); free(a); free(b); free(ref);
    sdb_vae_free(v);
    sdb_weights_free(&w);
}

static void test_tiled_encode(void)
{
    sdb_weights w;
    sdb_vae *v = load_folder(&w, sdb_t_path(TINY_VAE));
    if (!v) return;
    sdb_err err;
    /* 200 x 264 pixels: tiles of 128 every 96 pixels (3 x 3), blended over 4 latents, 12 kept */
    const int H = 200, W = 264, h = 25, wd = 33;
    size_t ni = (size_t)3 * H * W, nl = (size_t)4 * h * wd;
    float *img = malloc(ni * sizeof(float));
    for (int c = 0; c < 3; c++)
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++)
                img[((size_t)c * H + y) * W + x] = 0.8f * sinf(0.05f * x + 0.7f * c) * cosf(0.031f * y) + 0.1f * sinf(0.9f * (x + y));
    float *m = malloc(nl * sizeof(float)), *s = malloc(nl * sizeof(float)), *lv = malloc(nl * sizeof(float));
    float *rm = malloc(nl * sizeof(float)), *rl = malloc(nl * sizeof(float)), *um = malloc(nl * sizeof(float));
    CHECK_OK(sdb_vae_encode_tiled(v, img, H, W, m, s, lv, &arena, &err), &err);
    CHECK_OK(sdb_vae_encode(v, img, H, W, um, s + 0, NULL, &arena, &err), &err);
    CHECK_OK(sdb_vae_encode_tiled(v, img, H, W, m, s, lv, &arena, &err), &err); /* s again */
    const int ts = 128, step = 96, nr = 3, nc = 3;
    dtile tm[9], tv[9];
    for (int i = 0; i < nr; i++)
        for (int j = 0; j < nc; j++) {
            int th = H - i * step < ts ? H - i * step : ts, tw = W - j * step < ts ? W - j * step : ts;
            float *xt = malloc((size_t)3 * th * tw * sizeof(float));
            for (int c = 0; c < 3; c++)
                for (int y = 0; y < th; y++)
                    memcpy(xt + ((size_t)c * th + y) * tw, img + ((size_t)c * H + i * step + y) * W + j * step, tw * sizeof(float));
            dtile *a = &tm[i * nc + j], *b = &tv[i * nc + j];
            a->h = b->h = th / 8; a->w = b->w = tw / 8;
            size_t k = (size_t)4 * a->h * a->w;
            a->t = malloc(k * sizeof(float)); b->t = malloc(k * sizeof(float));
            float *sd = malloc(k * sizeof(float));
            CHECK_OK(sdb_vae_encode(v, xt, th, tw, a->t, sd, b->t, &arena, &err), &err);
            /* the random VAE's log-variance is far from the clamp: logvar = quant_conv's output */
            for (size_t q = 0; q < k; q++) CHECK(b->t[q] > -30 && b->t[q] < 20);
            free(sd); free(xt);
        }
    ref_assemble(tm, nr, nc, 4, 4, 12, rm, h, wd);
    ref_assemble(tv, nr, nc, 4, 4, 12, rl, h, wd);
    size_t dm = 0, dl = 0, du = 0;
    for (size_t q = 0; q < nl; q++) {
        dm += m[q] != rm[q];
        dl += lv[q] != rl[q];
        du += m[q] != um[q];
        CHECK(s[q] == expf(0.5f * rl[q]));
    }
    CHECKF(dm == 0 && dl == 0, "mean: %zu, logvar: %zu of %zu values differ from the definition", dm, dl, nl);
    fprintf(stderr, "  tiled encode 200x264: %zu of %zu mean values differ from untiled\n", du, nl);
    CHECK(du > nl / 4);
    /* one tile or less: the plain encode */
    CHECK_OK(sdb_vae_encode_tiled(v, img, 128, 96, m, s, NULL, &arena, &err), &err);
    CHECK_OK(sdb_vae_encode(v, img, 128, 96, um, s, NULL, &arena, &err), &err);
    CHECK(memcmp(m, um, (size_t)4 * 16 * 12 * sizeof(float)) == 0);
    CHECK(sdb_vae_encode_tiled(v, img, 204, 264, m, s, NULL, &arena, &err) == SDB_EINVAL);
    CHECK(arena.used == 0);
    for (int i = 0; i < 9; i++) { free(tm[i].t); free(tv[i].t); }
    free(img); free(m); free(s); free(lv); free(rm); free(rl); free(um);
    sdb_vae_free(v);
    sdb_weights_free(&w);
}

int main(void)
{
    sdb_err err;
    if (sdb_arena_init(&arena, (size_t)8 << 30, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
    if (sdb_t_data() && sdb_st_open(&refs, sdb_t_path("refs/vae.safetensors"), &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    if (!refs) return 1;
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
    RUN(test_tiled_decode);
    RUN(test_tiled_encode);
    sdb_st_close(refs);
    sdb_arena_free(&arena);
    return sdb_t_done();
}
