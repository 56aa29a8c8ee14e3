/*
 * test_single_file.c — single-file checkpoints as users have them: configs inferred from the
 * tensors (checked on a zero-filled, sparse, full-size SD 1.5 inpainting file built here from the
 * real tensor list, against the real config files), the tiny checkpoint with its configs given,
 * F32/F16/BF16 mixed in one file, ignored extra tensors, errors naming the tensor, separate VAEs
 * (file and folder; identity, decode and the A1111 VAE hash), the tokenizer search and bare model
 * names in models/ folders.
 *
 * Truths: diffusers' own conversion of the tiny model (shared/models/tiny-sd-inpaint.safetensors)
 * and its folder; shared/models/sd15-inpaint-layout (tensors-ldm.json, the real configs); files
 * written here with other dtypes (an F32 file holding exactly a BF16 file's values must give the
 * same image bit for bit); sha256sum (a child process) for the A1111 hashes.
 */
#include "harness.h"

#include "sdb/fsutil.h"
#include "sdb/image.h"
#include "sdb/ldm_infer.h"
#include "sdb/model_find.h"
#include "sdb/pipeline.h"
#include "sdb/safetensors.h"
#include "sdb/threads.h"

#define TO_SINGLE_FILE_NO_MAIN
#include "../tools/to_single_file.c"

#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TINY "models/tiny-sd-inpaint"
#define TINY_FILE "models/tiny-sd-inpaint.safetensors"
#define LAYOUT "models/sd15-inpaint-layout"

/* ---- helpers -------------------------------------------------------------------------------- */

static sdb_image g_img, g_mask;

static int load_inputs(void)
{
    sdb_err err = {0};
    if (g_img.px) return 0;
    CHECK_OK(sdb_image_load(sdb_t_path("refs/pipeline/inputs/scene_128x128.png"), &g_img, 3, 0, &err), &err);
    CHECK_OK(sdb_image_load(sdb_t_path("refs/pipeline/inputs/mask_128x128.png"), &g_mask, 1, 0, &err), &err);
    return g_img.px && g_mask.px ? 0 : -1;
}

/* Loads `path` with `o` (NULL = defaults) and inpaints the scene at 64x64, 2 steps; 0 or -1. */
static int gen(const char *path, const sdb_model_opts *o, sdb_image *out, char id[65], char **params)
{
    sdb_err err = {0};
    memset(out, 0, sizeof *out);
    if (load_inputs()) return -1;
    sdb_model *m = NULL;
    CHECK_OK(sdb_model_load(&m, path, o, NULL, &err), &err);
    if (!m) return -1;
    sdb_gen_params p;
    sdb_gen_params_default(&p);
    p.prompt = "a garden";
    p.seed = 7;
    p.steps = 1;
    p.guidance_scale = 1.0; /* one U-Net pass: cheap, and the same code paths */
    p.width = p.height = 64;
    p.image = &g_img;
    p.mask = &g_mask;
    int rc = sdb_generate(m, &p, NULL, NULL, out, NULL, &err);
    CHECK_OK(rc, &err);
    if (id) snprintf(id, 65, "%s", sdb_model_id(m));
    if (params) *params = sdb_gen_params_a1111(m, &p, out->w, out->h);
    sdb_model_free(m);
    return rc ? -1 : 0;
}

/* The tiny single file's image with its configs given (test_pipeline checks that it is the
 * folder's), made once: the reference the copies below are compared with. */
static sdb_image g_ref;
static char g_ref_id[65], *g_ref_params;
static sdb_model_opts tiny_opts(void);
static const sdb_image *ref_image(void)
{
    if (g_ref.px) return &g_ref;
    sdb_model_opts o = tiny_opts();
    return gen(sdb_t_path(TINY_FILE), &o, &g_ref, g_ref_id, &g_ref_params) ? NULL : &g_ref;
}

static int same_image(const sdb_image *a, const sdb_image *b)
{
    return a->px && b->px && a->w == b->w && a->h == b->h && a->c == b->c &&
           memcmp(a->px, b->px, (size_t)a->w * a->h * a->c) == 0;
}

static int max_pixel_diff(const sdb_image *a, const sdb_image *b)
{
    if (!a->px || !b->px || a->w != b->w || a->h != b->h) return 999;
    int m = 0;
    for (size_t i = 0; i < (size_t)a->w * a->h * a->c; i++) {
        int d = abs((int)a->px[i] - (int)b->px[i]);
        if (d > m) m = d;
    }
    return m;
}

/* The tiny model's configs given through the override, tokenizer too. */
static sdb_model_opts tiny_opts(void)
{
    sdb_model_opts o;
    memset(&o, 0, sizeof o);
    o.config_dir = sdb_t_path(TINY);
    return o;
}

static const char *tmp_path(const char *dir, const char *name)
{
    static char buf[8][4096];
    static int k;
    char *b = buf[k++ % 8];
    snprintf(b, 4096, "%s/%s", dir, name);
    return b;
}

static int convert(const char *src, const char *dst, ts_dtype dt, int vae_only, const char *prefix)
{
    sdb_err err = {0};
    ts_opts o = {dt, vae_only, prefix};
    int rc = ts_convert(src, dst, &o, &err);
    CHECK_OK(rc, &err);
    return rc;
}

/* ---- the converter reproduces diffusers' own conversion ------------------------------------- */

static void test_converter_matches_diffusers(void)
{
    const char *dir = sdb_t_tmpdir();
    const char *out = tmp_path(dir, "tiny.safetensors");
    if (convert(sdb_t_path(TINY), out, TS_KEEP, 0, NULL)) return;
    sdb_st *a = NULL, *b = NULL;
    sdb_err err = {0};
    CHECK_OK(sdb_st_open(&a, out, &err), &err);
    CHECK_OK(sdb_st_open(&b, sdb_t_path(TINY_FILE), &err), &err);
    if (!a || !b) { sdb_st_close(a); sdb_st_close(b); return; }
    CHECKF(a->n == b->n, "%d tensors written, diffusers wrote %d", a->n, b->n);
    int differ = 0;
    for (int i = 0; i < b->n; i++) {
        const sdb_st_tensor *t = &b->tensors[i], *u = sdb_st_find(a, t->name);
        if (!u || u->dtype != t->dtype || u->ndim != t->ndim || u->nbytes != t->nbytes ||
            memcmp(u->shape, t->shape, sizeof t->shape) != 0 || memcmp(u->data, t->data, t->nbytes) != 0) {
            if (differ++ < 5) fprintf(stderr, "  differs: %s\n", t->name);
        }
    }
    CHECKF(differ == 0, "%d tensors differ from diffusers' conversion", differ);
    sdb_st_close(a);
    sdb_st_close(b);
}

/* ---- inference on the real full-size layout ---------------------------------------------------- */

/* Writes a sparse F32 safetensors file of every tensor of `tensors` (name -> shape): zeros, free. */
static int write_sparse(const char *path, json_t *tensors)
{
    json_t *hdr = json_object();
    size_t off = 0;
    const char *name;
    json_t *shape;
    json_object_foreach(tensors, name, shape) {
        size_t numel = 1;
        for (size_t d = 0; d < json_array_size(shape); d++) numel *= (size_t)json_integer_value(json_array_get(shape, d));
        json_t *e = json_object();
        json_object_set_new(e, "dtype", json_string("F32"));
        json_object_set(e, "shape", shape);
        json_t *offs = json_array();
        json_array_append_new(offs, json_integer((json_int_t)off));
        json_array_append_new(offs, json_integer((json_int_t)(off + 4 * numel)));
        json_object_set_new(e, "data_offsets", offs);
        json_object_set_new(hdr, name, e);
        off += 4 * numel;
    }
    char *text = json_dumps(hdr, JSON_COMPACT);
    json_decref(hdr);
    if (!text) return -1;
    size_t hl = strlen(text), padded = (hl + 7) & ~(size_t)7;
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int rc = fd < 0 ? -1 : 0;
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    if (!rc && write(fd, len8, 8) != 8) rc = -1;
    if (!rc && write(fd, text, hl) != (ssize_t)hl) rc = -1;
    for (size_t i = hl; !rc && i < padded; i++) if (write(fd, " ", 1) != 1) rc = -1;
    if (!rc && ftruncate(fd, (off_t)(8 + padded + off)) != 0) rc = -1;
    if (fd >= 0) close(fd);
    free(text);
    CHECKF(rc == 0, "writing %s", path);
    return rc;
}

/* Writes `tensors` as a sparse file `name` in a temp folder and infers its configs (*st stays open). */
static int infer_sparse(json_t *tensors, const char *name, sdb_st **st, sdb_ldm_configs *c, const char **path)
{
    *path = tmp_path(sdb_t_tmpdir(), name);
    *st = NULL;
    memset(c, 0, sizeof *c);
    if (write_sparse(*path, tensors)) return -1;
    sdb_err err = {0};
    CHECK_OK(sdb_st_open(st, *path, &err), &err);
    if (!*st) return -1;
    int rc = sdb_ldm_infer_configs(*st, c, &err);
    CHECK_OK(rc, &err);
    return rc;
}

static json_t *layout_tensors(void)
{
    json_error_t je;
    json_t *root = json_load_file(sdb_t_path(LAYOUT "/tensors-ldm.json"), 0, &je);
    CHECKF(root != NULL, "tensors-ldm.json: %s", je.text);
    if (!root) return NULL;
    json_t *t = json_deep_copy(json_object_get(root, "tensors"));
    json_decref(root);
    return t;
}

/* Every key of the real config (but version stamps) has the same value in the inferred one. */
static void check_config_equal(const sdb_config *inferred, const char *real_rel)
{
    sdb_config real;
    sdb_err err = {0};
    CHECK_OK(sdb_config_load(&real, sdb_t_path(real_rel), &err), &err);
    if (!real.root || !inferred->root) return;
    const char *k;
    json_t *v;
    int n = 0;
    json_object_foreach(real.root, k, v) {
        if (!strcmp(k, "_diffusers_version") || !strcmp(k, "transformers_version") || !strcmp(k, "torch_dtype") ||
            !strcmp(k, "_name_or_path"))
            continue;
        json_t *w = json_object_get(inferred->root, k);
        char *a = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT), *b = w ? json_dumps(w, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;
        int same = w && (json_equal(v, w) || (json_is_number(v) && json_is_number(w) &&
                                                json_number_value(v) == json_number_value(w)));
        CHECKF(same, "%s: '%s' is %s in the real config, %s inferred", real_rel, k, a, b ? b : "(absent)");
        free(a);
        free(b);
        n++;
    }
    CHECKF(n >= 10, "%s: only %d keys compared", real_rel, n);
    sdb_config_free(&real);
}

static void test_infer_full_size(void)
{
    json_t *t = layout_tensors();
    if (!t) return;
    /* what real downloads carry besides: all ignored */
    static const char *extra[] = {"model_ema.decay", "model_ema.num_updates", "model_ema.diffusion_modelinput_blocks00weight",
                                  "cond_stage_model.transformer.text_model.embeddings.position_ids", "alphas_cumprod",
                                  "first_stage_model.loss.logvar", "logit_scale", "optimizer.state.0.exp_avg"};
    for (size_t i = 0; i < sizeof extra / sizeof extra[0]; i++) json_object_set_new(t, extra[i], json_pack("[i]", 4));
    sdb_st *st;
    sdb_ldm_configs c;
    const char *path;
    int rc = infer_sparse(t, "sd15-zero.safetensors", &st, &c, &path);
    json_decref(t);
    sdb_err err = {0};
    if (rc) { sdb_ldm_configs_free(&c); sdb_st_close(st); return; }
    check_config_equal(&c.unet, LAYOUT "/unet/config.json");
    check_config_equal(&c.vae, LAYOUT "/vae/config.json");
    check_config_equal(&c.text_encoder, LAYOUT "/text_encoder/config.json");
    check_config_equal(&c.scheduler, LAYOUT "/scheduler/scheduler_config.json");
    sdb_ldm_configs_free(&c);
    sdb_st_close(st);

    /* and the whole model loads on them (F32 zeros used in place: nothing is read or copied) */
    sdb_model_opts o;
    memset(&o, 0, sizeof o);
    o.tokenizer_dir = sdb_t_path(LAYOUT "/tokenizer");
    sdb_model *m = NULL;
    CHECK_OK(sdb_model_load(&m, path, &o, NULL, &err), &err);
    CHECK(m && sdb_model_unet_channels(m) == 9);
    CHECK(m && sdb_model_default_scheduler(m) && !strcmp(sdb_model_default_scheduler(m), "pndm"));
    sdb_model_free(m);
}

/* A changed tensor list: the inference (or the loader) refuses it naming `tensor`. */
static void expect_error(const char *what, const char *set_name, const char *shape_json, const char *remove,
                         const char *tensor, const char *also)
{
    json_t *t = layout_tensors();
    if (!t) return;
    if (set_name) {
        json_error_t je;
        json_object_set_new(t, set_name, json_loads(shape_json, 0, &je));
    }
    if (remove) json_object_del(t, remove);
    const char *path = tmp_path(sdb_t_tmpdir(), "bad.safetensors");
    int rc = write_sparse(path, t);
    json_decref(t);
    if (rc) return;
    sdb_model_opts o;
    memset(&o, 0, sizeof o);
    o.tokenizer_dir = sdb_t_path(LAYOUT "/tokenizer");
    sdb_model *m = NULL;
    sdb_err err = {0};
    rc = sdb_model_load(&m, path, &o, NULL, &err);
    CHECKF(rc != 0 && strstr(err.msg, tensor) && (!also || strstr(err.msg, also)), "%s: rc %d, message: %s", what, rc, err.msg);
    sdb_model_free(m);
}

static void test_infer_errors_name_the_tensor(void)
{
    expect_error("narrow text encoder", "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",
                 "[49408, 700]", NULL, "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight", "[49408, 700]");
    expect_error("width not a multiple of 32", "model.diffusion_model.input_blocks.4.0.out_layers.3.weight",
                 "[650, 640, 3, 3]", NULL, "model.diffusion_model.input_blocks.4.0.out_layers.3.weight", "650");
    expect_error("SD 2.x cross-attention", "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight",
                 "[320, 1024]", NULL, "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight", "SD 2.x");
    expect_error("8 input channels", "model.diffusion_model.input_blocks.0.0.weight", "[320, 8, 3, 3]", NULL,
                 "model.diffusion_model.input_blocks.0.0.weight", "8 input channels");
    expect_error("missing VAE tensor", NULL, NULL, "first_stage_model.encoder.conv_out.weight",
                 "first_stage_model.encoder.conv_out.weight", NULL);
    expect_error("U-Net / text width mismatch", "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight",
                 "[320, 512]", NULL, "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight", "768");
    /* a shape the inference does not read: the loader names it */
    expect_error("bad resnet conv", "model.diffusion_model.input_blocks.2.0.in_layers.2.weight", "[320, 321, 3, 3]", NULL,
                 "model.diffusion_model.input_blocks.2.0.in_layers.2.weight", "[320, 321, 3, 3]");
}

static void test_infer_plain_unet(void)
{
    json_t *t = layout_tensors();
    if (!t) return;
    json_error_t je;
    json_object_set_new(t, "model.diffusion_model.input_blocks.0.0.weight", json_loads("[320, 4, 3, 3]", 0, &je));
    sdb_st *st;
    sdb_ldm_configs c;
    const char *path;
    int rc = infer_sparse(t, "plain.safetensors", &st, &c, &path);
    json_decref(t);
    long long in = 0;
    sdb_err err = {0};
    if (!rc) CHECK_OK(sdb_config_int(&c.unet, "in_channels", 0, &in, &err), &err);
    CHECK(in == 4);
    sdb_ldm_configs_free(&c);
    sdb_st_close(st);
}

/* ---- the tiny checkpoint with its configs given ---------------------------------------------- */

/* Without the override the tiny's configs cannot be inferred (they are not SD 1.x's): said so. */
static void test_tiny_needs_override(void)
{
    sdb_model *m = NULL;
    sdb_err err = {0};
    sdb_model_opts t;
    memset(&t, 0, sizeof t);
    t.tokenizer_dir = sdb_t_path(TINY "/tokenizer");
    CHECK(sdb_model_load(&m, sdb_t_path(TINY_FILE), &t, NULL, &err) != 0 &&
          strstr(err.msg, "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight") &&
          strstr(err.msg, "--config"));
    sdb_model_free(m);
}

/* Extra tensors real downloads carry are ignored: same image, no error. */
static void test_extra_tensors_ignored(void)
{
    sdb_st *st = NULL;
    sdb_err err = {0};
    CHECK_OK(sdb_st_open(&st, sdb_t_path(TINY_FILE), &err), &err);
    if (!st) return;
    sdb_st_wtensor *w = calloc((size_t)st->n + 8, sizeof *w);
    int n = 0;
    for (int i = 0; i < st->n; i++) {
        const sdb_st_tensor *t = &st->tensors[i];
        w[n++] = (sdb_st_wtensor){t->name, t->dtype, t->ndim, {0}, t->data};
        memcpy(w[n - 1].shape, t->shape, sizeof t->shape);
    }
    static const float f[4] = {4.6f, 0.9999f, 1, 2};
    static const int64_t ids[4] = {0, 1, 2, 3};
    const sdb_st_tensor *cin = sdb_st_find(st, "model.diffusion_model.input_blocks.0.0.weight");
    w[n++] = (sdb_st_wtensor){"logit_scale", SDB_DT_F32, 0, {0}, f};
    w[n++] = (sdb_st_wtensor){"model_ema.decay", SDB_DT_F32, 0, {0}, f + 1};
    w[n++] = (sdb_st_wtensor){"model_ema.diffusion_modelinput_blocks00weight", SDB_DT_F32, 4, {0}, cin->data};
    memcpy(w[n - 1].shape, cin->shape, sizeof cin->shape);
    w[n++] = (sdb_st_wtensor){"cond_stage_model.transformer.text_model.embeddings.position_ids", SDB_DT_I64, 2, {1, 4}, ids};
    w[n++] = (sdb_st_wtensor){"optimizer.state.0.exp_avg", SDB_DT_F32, 1, {4}, f};
    w[n++] = (sdb_st_wtensor){"first_stage_model.loss.logvar", SDB_DT_F32, 0, {0}, f + 2};
    const char *path = tmp_path(sdb_t_tmpdir(), "extras.safetensors");
    CHECK_OK(sdb_st_write(path, w, n, NULL, NULL, 0, &err), &err);
    free(w);
    sdb_st_close(st);
    sdb_image b;
    sdb_model_opts o = tiny_opts();
    const sdb_image *ref = ref_image();
    if (ref && !gen(path, &o, &b, NULL, NULL)) CHECK(same_image(ref, &b));
    sdb_image_free(&b);
}

/* A shape the given configs do not expect: the loader names the tensor. */
static void test_tiny_bad_shape_named(void)
{
    const char *dir = sdb_t_tmpdir();
    sdb_st *st = NULL;
    sdb_err err = {0};
    CHECK_OK(sdb_st_open(&st, sdb_t_path(TINY_FILE), &err), &err);
    if (!st) return;
    sdb_st_wtensor *w = calloc((size_t)st->n, sizeof *w);
    const char *victim = "first_stage_model.decoder.up.0.block.0.conv1.weight";
    for (int i = 0; i < st->n; i++) {
        const sdb_st_tensor *t = &st->tensors[i];
        w[i] = (sdb_st_wtensor){t->name, t->dtype, t->ndim, {0}, t->data};
        memcpy(w[i].shape, t->shape, sizeof t->shape);
        if (!strcmp(t->name, victim)) { w[i].shape[0] = t->shape[1]; w[i].shape[1] = t->shape[0]; } /* transposed */
    }
    const char *path = tmp_path(dir, "bad.safetensors");
    CHECK_OK(sdb_st_write(path, w, st->n, NULL, NULL, 0, &err), &err);
    const sdb_st_tensor *vt = sdb_st_find(st, victim);
    CHECK(vt && vt->shape[0] != vt->shape[1]);
    free(w);
    sdb_st_close(st);
    sdb_model *m = NULL;
    sdb_model_opts o = tiny_opts();
    CHECK(sdb_model_load(&m, path, &o, NULL, &err) != 0 && strstr(err.msg, victim));
    sdb_model_free(m);
}

/* ---- dtypes ------------------------------------------------------------------------------------ */

static void test_bf16_and_mixed(void)
{
    const char *dir = sdb_t_tmpdir();
    const char *bf = tmp_path(dir, "bf16.safetensors"), *bf32 = tmp_path(dir, "bf16-as-f32.safetensors");
    const char *mx = tmp_path(dir, "mixed.safetensors"), *mx32 = tmp_path(dir, "mixed-as-f32.safetensors");
    if (convert(sdb_t_path(TINY_FILE), bf, TS_BF16, 0, NULL) || convert(bf, bf32, TS_F32, 0, NULL) ||
        convert(sdb_t_path(TINY_FILE), mx, TS_MIXED, 0, NULL) || convert(mx, mx32, TS_F32, 0, NULL))
        return;
    /* the copies really hold those dtypes */
    sdb_st *st = NULL;
    sdb_err err = {0};
    int counts[SDB_DT_COUNT] = {0};
    CHECK_OK(sdb_st_open(&st, mx, &err), &err);
    for (int i = 0; st && i < st->n; i++) counts[st->tensors[i].dtype]++;
    CHECKF(counts[SDB_DT_F32] > 100 && counts[SDB_DT_F16] > 100 && counts[SDB_DT_BF16] > 100, "mixed: %d F32, %d F16, %d BF16",
           counts[SDB_DT_F32], counts[SDB_DT_F16], counts[SDB_DT_BF16]);
    sdb_st_close(st);

    sdb_model_opts o = tiny_opts();
    sdb_image a, a32, b, b32;
    const sdb_image *ref = ref_image();
    if (!ref || gen(bf, &o, &a, NULL, NULL) || gen(bf32, &o, &a32, NULL, NULL) || gen(mx, &o, &b, NULL, NULL) ||
        gen(mx32, &o, &b32, NULL, NULL))
        return;
    /* widening is exact: the same numbers in F32 give the same image, bit for bit */
    CHECK(same_image(&a, &a32));
    CHECK(same_image(&b, &b32));
    /* and within the rounding of the F32 original (the tiny random U-Net amplifies: a few levels) */
    int da = max_pixel_diff(&a, ref), db = max_pixel_diff(&b, ref);
    fprintf(stderr, "  max pixel difference to the F32 file: BF16 %d, mixed %d\n", da, db);
    CHECK(da <= 8 && db <= 8);
    CHECK(!same_image(&a, ref)); /* the copy really is another one */
    /* f16 mode copes with BF16 too (rounded to half; the mode's own tests check its numbers) */
    sdb_model *m = NULL;
    sdb_err e16 = {0};
    o.weights_f16 = 1;
    CHECK_OK(sdb_model_load(&m, bf, &o, NULL, &e16), &e16);
    sdb_model_free(m);
    sdb_image_free(&a); sdb_image_free(&a32); sdb_image_free(&b); sdb_image_free(&b32);
}

/* ---- separate VAEs ------------------------------------------------------------------------------ */

/* A copy of the tiny pipeline folder (links) whose vae/ holds `vae_weights` with `norm_groups`. */
static void make_model_with_vae(const char *dst, const char *vae_weights, int norm_groups)
{
    char cmd[8192], out[256];
    const char *t = sdb_t_path(TINY);
    snprintf(cmd, sizeof cmd, "mkdir -p %s/vae && for d in unet text_encoder tokenizer scheduler; do ln -s %s/$d %s/$d; done && "
             "ln -s %s/model_index.json %s/ && ln -s %s %s/vae/diffusion_pytorch_model.safetensors && "
             "sed 's/\"norm_num_groups\": [0-9]*/\"norm_num_groups\": %d/' %s/vae/config.json > %s/vae/config.json",
             dst, t, dst, t, dst, vae_weights, dst, norm_groups, t, dst);
    CHECKF(sdb_t_shell(cmd, out, sizeof out) == 0, "%s", cmd);
}

/* The tiny VAE with decoder.conv_out scaled: another VAE of the same structure (diffusers names). */
static int write_other_vae(const char *path)
{
    sdb_st *st = NULL;
    sdb_err err = {0};
    CHECK_OK(sdb_st_open(&st, sdb_t_path(TINY "/vae/diffusion_pytorch_model.safetensors"), &err), &err);
    if (!st) return -1;
    sdb_st_wtensor *w = calloc((size_t)st->n, sizeof *w);
    float *scaled = NULL;
    for (int i = 0; i < st->n; i++) {
        const sdb_st_tensor *t = &st->tensors[i];
        w[i] = (sdb_st_wtensor){t->name, t->dtype, t->ndim, {0}, t->data};
        memcpy(w[i].shape, t->shape, sizeof t->shape);
        if (!strcmp(t->name, "decoder.conv_out.weight")) {
            scaled = malloc((size_t)t->numel * sizeof(float));
            sdb_st_to_f32(t, scaled, &err);
            for (int64_t k = 0; k < t->numel; k++) scaled[k] *= 0.75f;
            w[i].data = scaled;
        }
    }
    CHECK(scaled != NULL);
    int rc = sdb_st_write(path, w, st->n, NULL, NULL, 0, &err);
    CHECK_OK(rc, &err);
    free(scaled);
    free(w);
    sdb_st_close(st);
    return rc;
}

static void sha10(const char *path, char out[11])
{
    char cmd[4200], buf[256] = "";
    snprintf(cmd, sizeof cmd, "sha256sum '%s'", path);
    CHECK(sdb_t_shell(cmd, buf, sizeof buf) == 0);
    snprintf(out, 11, "%s", buf);
}

static void test_separate_vae(void)
{
    const char *dir = sdb_t_tmpdir();
    const char *vw = tmp_path(dir, "other-vae.safetensors");
    if (write_other_vae(vw)) return;
    const char *folder_x = tmp_path(dir, "vaeX"), *model_x = tmp_path(dir, "modelX"), *model_y = tmp_path(dir, "modelY");
    make_model_with_vae(model_x, vw, 8);   /* the tiny VAE's own config */
    make_model_with_vae(model_y, vw, 32);  /* SD 1.x's norm groups: what a single file infers */
    char cmd[8192], out[256];
    snprintf(cmd, sizeof cmd, "mkdir -p %s && ln -s %s/vae/config.json %s/vae/diffusion_pytorch_model.safetensors %s/",
             folder_x, model_x, model_x, folder_x);
    CHECK(sdb_t_shell(cmd, out, sizeof out) == 0);
    /* the LDM single-file VAE, bare and with the checkpoint prefix */
    const char *file_bare = tmp_path(dir, "vae-ldm.safetensors"), *file_pfx = tmp_path(dir, "vae-ldm-prefixed.safetensors");
    if (convert(model_x, file_bare, TS_KEEP, 1, NULL) || convert(model_x, file_pfx, TS_KEEP, 1, "first_stage_model."))
        return;

    sdb_model_opts o = tiny_opts();
    sdb_image withx, truth_x, bare, pfx, truth_y, switched;
    char id_x[65], id_bare[65], id_pfx[65];
    char *params = NULL;
    const sdb_image *ownp = ref_image();
    if (!ownp) return;
    const sdb_image own = *ownp;
    const char *id_own = g_ref_id, *params_own = g_ref_params;
    o.vae_path = folder_x;
    if (gen(sdb_t_path(TINY_FILE), &o, &withx, id_x, NULL) || gen(model_x, NULL, &truth_x, NULL, NULL)) return;
    CHECK(same_image(&withx, &truth_x));   /* decodes as the model whose own VAE it is */
    CHECK(!same_image(&withx, &own));      /* and not as the model's own */
    CHECK(strcmp(id_x, id_own) != 0);      /* another identity: jobs are redone */
    o.vae_path = file_bare;
    if (gen(sdb_t_path(TINY_FILE), &o, &bare, id_bare, &params) || gen(model_y, NULL, &truth_y, NULL, NULL)) return;
    CHECK(same_image(&bare, &truth_y));    /* inferred config = SD 1.x's, as the folder that says so */
    CHECK(strcmp(id_bare, id_own) != 0 && strcmp(id_bare, id_x) != 0);
    o.vae_path = file_pfx;
    if (gen(sdb_t_path(TINY_FILE), &o, &pfx, id_pfx, NULL)) return;
    CHECK(same_image(&pfx, &truth_y));
    /* A1111's hashes: sha256 of the whole file, first 10 hex digits */
    char h_model[11], h_vae[11], want[128];
    sha10(sdb_t_path(TINY_FILE), h_model);
    sha10(file_bare, h_vae);
    snprintf(want, sizeof want, "Model hash: %s, VAE hash: %s, VAE: vae-ldm.safetensors", h_model, h_vae);
    CHECKF(params && strstr(params, want), "parameters: %s (want '%s')", params ? params : "(none)", want);
    CHECK(params_own && !strstr(params_own, "VAE hash") && strstr(params_own, h_model));
    /* the VAE's id without loading it differs between VAEs and is stable */
    char v1[65], v2[65], v3[65];
    sdb_err err = {0};
    CHECK_OK(sdb_vae_source_id(file_bare, v1, &err), &err);
    CHECK_OK(sdb_vae_source_id(folder_x, v2, &err), &err);
    CHECK_OK(sdb_vae_source_id(file_bare, v3, &err), &err);
    CHECK(strcmp(v1, v2) != 0 && strcmp(v1, v3) == 0);
    /* a diffusers-layout file given alone is told to be given as its folder */
    sdb_model *m = NULL;
    o.vae_path = vw;
    CHECK(sdb_model_load(&m, sdb_t_path(TINY_FILE), &o, NULL, &err) != 0 && strstr(err.msg, "folder"));
    sdb_model_free(m);
    m = NULL;
    /* switching the VAE of a loaded model (per job) gives what loading with it gives */
    o.vae_path = NULL;
    CHECK_OK(sdb_model_load(&m, sdb_t_path(TINY_FILE), &o, NULL, &err), &err);
    if (m) {
        char id0[65];
        snprintf(id0, sizeof id0, "%s", sdb_model_id(m));
        CHECK_OK(sdb_model_set_vae(m, folder_x, NULL, &err), &err);
        sdb_gen_params p;
        sdb_gen_params_default(&p);
        p.prompt = "a garden"; p.seed = 7; p.steps = 1; p.guidance_scale = 1.0; p.width = p.height = 64;
        p.image = &g_img; p.mask = &g_mask;
        memset(&switched, 0, sizeof switched);
        CHECK_OK(sdb_generate(m, &p, NULL, NULL, &switched, NULL, &err), &err);
        CHECK(same_image(&switched, &withx));
        CHECK(!strcmp(id0, sdb_model_id(m)));   /* the id of the model as loaded */
        CHECK_OK(sdb_model_set_vae(m, NULL, NULL, &err), &err);
        CHECK(sdb_model_vae_short_hash(m) == NULL);
        sdb_model_free(m);
        sdb_image_free(&switched);
    }
    free(params);
    sdb_image_free(&withx); sdb_image_free(&truth_x); sdb_image_free(&bare);
    sdb_image_free(&pfx); sdb_image_free(&truth_y);
}

/* ---- where things are found ---------------------------------------------------------------------- */

static void test_tokenizer_search(void)
{
    const char *dir = sdb_t_tmpdir();
    char cmd[8192], out[256];
    const char *tok = sdb_t_path(TINY "/tokenizer");
    /* a: the file alone; b: a tokenizer beside it; base/models/tokenizer; env */
    snprintf(cmd, sizeof cmd, "mkdir -p %s/a %s/b %s/base/models %s/env && ln -s %s %s/a/m.safetensors && "
             "ln -s %s %s/b/m.safetensors && ln -s %s %s/b/tokenizer && ln -s %s %s/base/models/tokenizer && ln -s %s %s/env/tok",
             dir, dir, dir, dir, sdb_t_path(TINY_FILE), dir, sdb_t_path(TINY_FILE), dir, tok, dir, tok, dir, tok, dir);
    CHECK(sdb_t_shell(cmd, out, sizeof out) == 0);
    char *found = NULL, want[4200];
    sdb_err err = {0};
    CHECK_OK(sdb_tokenizer_find(tmp_path(dir, "b/m.safetensors"), NULL, NULL, NULL, &found, &err), &err);
    snprintf(want, sizeof want, "%s/b/tokenizer", dir);
    CHECK(found && !strcmp(found, want));
    free(found); found = NULL;
    snprintf(want, sizeof want, "%s/base", dir);
    CHECK_OK(sdb_tokenizer_find(tmp_path(dir, "a/m.safetensors"), want, NULL, NULL, &found, &err), &err);
    CHECK(found && strstr(found, "/base/models/tokenizer"));
    free(found); found = NULL;
    char envv[4200];
    snprintf(envv, sizeof envv, "%s/env/tok", dir);
    CHECK_OK(sdb_tokenizer_find(tmp_path(dir, "a/m.safetensors"), NULL, NULL, envv, &found, &err), &err);
    CHECK(found && !strcmp(found, envv));
    free(found); found = NULL;
    /* nowhere: the message says where it looked and how to fetch one */
    CHECK(sdb_tokenizer_find(tmp_path(dir, "a/m.safetensors"), NULL, NULL, NULL, &found, &err) != 0);
    snprintf(want, sizeof want, "%s/a/tokenizer", dir);
    CHECKF(strstr(err.msg, want) && strstr(err.msg, "models/tokenizer") && strstr(err.msg, "$SDB_TOKENIZER") &&
           strstr(err.msg, "tools/fetch-model.sh --tokenizer"), "%s", err.msg);
    /* the model loads with the tokenizer beside it */
    sdb_model *m = NULL;
    sdb_model_opts o;
    memset(&o, 0, sizeof o);
    o.config_dir = sdb_t_path(TINY);
    o.tokenizer_dir = NULL;
    CHECK_OK(sdb_model_load(&m, tmp_path(dir, "b/m.safetensors"), &o, NULL, &err), &err);
    sdb_model_free(m);
}

static void test_bare_names(void)
{
    const char *dir = sdb_t_tmpdir();
    char cmd[8192], out[256];
    snprintf(cmd, sizeof cmd, "mkdir -p %s/proj/models/folder-model %s/m1 %s/m2 && touch %s/proj/models/file-model.safetensors "
             "%s/m2/other.safetensors && mkdir %s/m1/other-folder", dir, dir, dir, dir, dir, dir);
    CHECK(sdb_t_shell(cmd, out, sizeof out) == 0);
    char base[4200], path[4200], want[4200];
    snprintf(base, sizeof base, "%s/proj", dir);
    snprintf(path, sizeof path, "%s/m1:%s/m2", dir, dir);
    char *r = NULL;
    sdb_err err = {0};
    CHECK_OK(sdb_model_resolve("folder-model", base, path, "model", &r, &err), &err);
    snprintf(want, sizeof want, "%s/models/folder-model", base);
    CHECK(r && !strcmp(r, want));
    free(r); r = NULL;
    CHECK_OK(sdb_model_resolve("file-model", base, path, "model", &r, &err), &err);
    snprintf(want, sizeof want, "%s/models/file-model.safetensors", base);
    CHECK(r && !strcmp(r, want));
    free(r); r = NULL;
    CHECK_OK(sdb_model_resolve("other", base, path, "model", &r, &err), &err);
    snprintf(want, sizeof want, "%s/m2/other.safetensors", dir);
    CHECK(r && !strcmp(r, want));
    free(r); r = NULL;
    CHECK_OK(sdb_model_resolve("other-folder", base, path, "vae", &r, &err), &err);
    CHECK(r && strstr(r, "/m1/other-folder"));
    free(r); r = NULL;
    /* not found: every place looked at is listed */
    CHECK(sdb_model_resolve("nothing", base, path, "model", &r, &err) != 0);
    snprintf(want, sizeof want, "%s/m2/nothing.safetensors", dir);
    CHECKF(strstr(err.msg, "models/nothing.safetensors") && strstr(err.msg, want), "%s", err.msg);
    /* a path with a folder in it is taken as it is */
    CHECK(sdb_model_resolve("models/nothing", base, path, "model", &r, &err) != 0 && strstr(err.msg, "does not exist"));
}

/* The command line: bare names in ./models, a tokenizer in models/tokenizer, --vae, and the PNG's
 * A1111 parameters with both hashes. */
static void test_cli_bare_names_and_vae(void)
{
    const char *dir = sdb_t_tmpdir();
    char cmd[8192], out[4096];
    const char *in = sdb_t_path("refs/pipeline/inputs/scene_128x128.png"), *mk = sdb_t_path("refs/pipeline/inputs/mask_128x128.png");
    const char *vfile = tmp_path(dir, "models/my-vae.safetensors");
    snprintf(cmd, sizeof cmd, "mkdir -p %s/models && ln -s %s %s/models/tiny.safetensors && ln -s %s %s/models/tokenizer",
             dir, sdb_t_path(TINY_FILE), dir, sdb_t_path(TINY "/tokenizer"), dir);
    CHECK(sdb_t_shell(cmd, out, sizeof out) == 0);
    if (convert(sdb_t_path(TINY), vfile, TS_KEEP, 1, NULL)) return;
    sdb_err err = {0};
    /* the single file by a bare name, its tokenizer in ./models/tokenizer, a VAE by a bare name */
    snprintf(cmd, sizeof cmd, "cd %s && SDB_MODELS= SDB_TOKENIZER= %s generate --model tiny --config %s --vae my-vae --image %s "
             "--mask %s --prompt 'a garden' --seed 7 --steps 1 --guidance-scale 1 --width 64 --height 64 -q --output out.png 2>&1",
             dir, sdb_t_binary(), sdb_t_path(TINY), in, mk);
    CHECKF(sdb_t_shell(cmd, out, sizeof out) == 0, "%s", out);
    /* the same pixels as the library gives with that VAE */
    sdb_model_opts o = tiny_opts();
    o.vae_path = vfile;
    sdb_image lib = {0}, cli = {0};
    if (!gen(sdb_t_path(TINY_FILE), &o, &lib, NULL, NULL)) {
        CHECK_OK(sdb_image_load(tmp_path(dir, "out.png"), &cli, 3, 0, &err), &err);
        CHECK(same_image(&lib, &cli));
    }
    sdb_image_free(&lib);
    sdb_image_free(&cli);
    char h_model[11], h_vae[11], want[128];
    sha10(sdb_t_path(TINY_FILE), h_model);
    sha10(vfile, h_vae);
    snprintf(want, sizeof want, "Model hash: %s, VAE hash: %s, VAE: my-vae.safetensors", h_model, h_vae);
    char **keys = NULL, **vals = NULL;
    int nt = 0, found = 0;
    CHECK_OK(sdb_png_read_text(tmp_path(dir, "out.png"), &keys, &vals, &nt, &err), &err);
    for (int i = 0; i < nt; i++) if (!strcmp(keys[i], "parameters") && strstr(vals[i], want)) found = 1;
    CHECKF(found, "no '%s' in the PNG's parameters", want);
    sdb_png_text_free(keys, vals, nt);
    /* a bare name found nowhere: the places looked at */
    snprintf(cmd, sizeof cmd, "cd %s && SDB_MODELS=%s/nowhere %s generate --model nope --prompt x --output o.png 2>&1",
             dir, dir, sdb_t_binary());
    CHECK(sdb_t_shell(cmd, out, sizeof out) != 0);
    CHECKF(strstr(out, "./models/nope.safetensors") && strstr(out, "/nowhere/nope.safetensors"), "%s", out);
}

/* `sdbatch run`: a single file by bare name, a VAE for one job; changing that VAE redoes that job only. */
static void test_run_with_vae(void)
{
    const char *dir = sdb_t_tmpdir();
    char cmd[8192], out[4096], text[4096];
    const char *vae_file = tmp_path(dir, "models/vae-a.safetensors");
    snprintf(cmd, sizeof cmd, "mkdir -p %s/models && ln -s %s %s/models/tiny.safetensors && ln -s %s %s/models/tokenizer",
             dir, sdb_t_path(TINY_FILE), dir, sdb_t_path(TINY "/tokenizer"), dir);
    CHECK(sdb_t_shell(cmd, out, sizeof out) == 0);
    if (convert(sdb_t_path(TINY), vae_file, TS_KEEP, 1, NULL)) return;
    const char *fmt = "version: 1\nmodel: tiny\nmodel_config: %s\noutput_dir: out\n"
                      "defaults:\n  image: %s\n  mask: %s\n  prompt: x\n  steps: 1\n  guidance_scale: 1\n  width: 64\n  height: 64\n"
                      "jobs:\n  - id: a\n  - id: b\n    vae: %s\n";
    snprintf(text, sizeof text, fmt, sdb_t_path(TINY), sdb_t_path("refs/pipeline/inputs/scene_128x128.png"),
             sdb_t_path("refs/pipeline/inputs/mask_128x128.png"), "vae-a");
    sdb_err err = {0};
    const char *mpath = tmp_path(dir, "m.yaml");
    CHECK_OK(sdb_write_file_atomic(mpath, text, strlen(text), &err), &err);
    snprintf(cmd, sizeof cmd, "run %s", mpath);
    CHECKF(sdb_t_sdbatch(cmd, out, sizeof out) == 0 && strstr(out, "2/2 job(s) done (2 run now"), "%s", out);
    char **keys = NULL, **vals = NULL;
    int nt = 0, vae_a = 0, vae_none = 0;
    CHECK_OK(sdb_png_read_text(tmp_path(dir, "out/b.png"), &keys, &vals, &nt, &err), &err);
    for (int i = 0; i < nt; i++) if (strstr(vals[i], "VAE: vae-a.safetensors")) vae_a = 1;
    sdb_png_text_free(keys, vals, nt);
    CHECK_OK(sdb_png_read_text(tmp_path(dir, "out/a.png"), &keys, &vals, &nt, &err), &err);
    for (int i = 0; i < nt; i++) if (!strcmp(keys[i], "parameters") && !strstr(vals[i], "VAE")) vae_none = 1;
    sdb_png_text_free(keys, vals, nt);
    CHECK(vae_a && vae_none);
    /* b's VAE becomes the tiny folder's own vae/: b is redone, a is not */
    snprintf(text, sizeof text, fmt, sdb_t_path(TINY), sdb_t_path("refs/pipeline/inputs/scene_128x128.png"),
             sdb_t_path("refs/pipeline/inputs/mask_128x128.png"), sdb_t_path(TINY "/vae"));
    CHECK_OK(sdb_write_file_atomic(mpath, text, strlen(text), &err), &err);
    CHECKF(sdb_t_sdbatch(cmd, out, sizeof out) == 0 && strstr(out, "2/2 job(s) done (1 run now, 1 skipped"), "%s", out);
}

int main(void)
{
    sdb_threads_set(1);
    RUN(test_converter_matches_diffusers);
    RUN(test_infer_full_size);
    RUN(test_infer_errors_name_the_tensor);
    RUN(test_infer_plain_unet);
    RUN(test_tiny_needs_override);
    RUN(test_extra_tensors_ignored);
    RUN(test_tiny_bad_shape_named);
    RUN(test_bf16_and_mixed);
    RUN(test_separate_vae);
    RUN(test_tokenizer_search);
    RUN(test_bare_names);
    RUN(test_cli_bare_names_and_vae);
    RUN(test_run_with_vae);
    sdb_image_free(&g_img);
    sdb_image_free(&g_mask);
    sdb_image_free(&g_ref);
    free(g_ref_params);
    return sdb_t_done();
}
