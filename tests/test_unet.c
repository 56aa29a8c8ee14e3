/*
 * test_unet.c — the U-Net against every case of refs/unet.safetensors (diffusers 0.30.3 outputs),
 * the inpaint_t981 debug intermediates, 1 vs 2 threads bit-identical, the diffusers folder vs the
 * single-file LDM checkpoint (identical outputs), an fp16 copy of the weights, and config refusals.
 */
#include "harness.h"
#include "sdb/arena.h"
#include "sdb/config.h"
#include "sdb/ldm_names.h"
#include "sdb/safetensors.h"
#include "sdb/threads.h"
#include "sdb/ops/winograd.h"
#include "sdb/unet.h"
#include "sdb/weights.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static sdb_st *refs;
static sdb_arena arena;

static const float *ref_f32(const char *name, const sdb_st_tensor **tp)
{
    const sdb_st_tensor *t = sdb_st_find(refs, name);
    if (!t || t->dtype != SDB_DT_F32) {
        fprintf(stderr, "missing reference %s\n", name);
        return NULL;
    }
    if (tp) *tp = t;
    return (const float *)(const void *)t->data;
}

typedef struct {
    const char *name, *model;
} ucase;

static const ucase cases[] = {
    {"inpaint_t981", "tiny-sd-inpaint"},
    {"inpaint_t1", "tiny-sd-inpaint"},
    {"inpaint_t500_h17w12", "tiny-sd-inpaint"},
    {"inpaint_tvec_981_1", "tiny-sd-inpaint"},
    {"sd_t981", "tiny-sd"},
    {"sd_t1_h12w17", "tiny-sd"},
};

typedef struct {
    sdb_weights w;
    sdb_unet *u;
    sdb_config cfg;
} model_t;

static int open_model(model_t *m, const char *model)
{
    sdb_err err;
    sdb_err_clear(&err);
    char p[1024];
    memset(m, 0, sizeof *m);
    snprintf(p, sizeof p, "models/%s/unet/diffusion_pytorch_model.safetensors", model);
    int rc = sdb_weights_open(&m->w, sdb_t_path(p), "unet", &err);
    CHECKF(rc == 0, "%s", err.msg);
    if (rc) return rc;
    snprintf(p, sizeof p, "models/%s/unet/config.json", model);
    rc = sdb_unet_load(&m->u, sdb_t_path(p), &m->w, &err);
    CHECKF(rc == 0, "%s", err.msg);
    return rc;
}

static void close_model(model_t *m)
{
    sdb_unet_free(m->u);
    sdb_weights_free(&m->w);
}

/* runs one case; returns a malloc'd output (caller frees) */
static float *run_case(sdb_unet *u, const char *cname, int *n_out)
{
    char nm[256];
    const sdb_st_tensor *ts = NULL, *tt;
    snprintf(nm, sizeof nm, "%s/sample", cname);
    const float *sample = ref_f32(nm, &ts);
    snprintf(nm, sizeof nm, "%s/timestep", cname);
    tt = sdb_st_find(refs, nm);
    const float *ehs = ref_f32("encoder_hidden_states", NULL);
    if (!sample || !ts || !tt || !ehs) { CHECK(0); return NULL; }
    int B = (int)ts->shape[0], H = (int)ts->shape[2], W = (int)ts->shape[3];
    int64_t tv[2] = {0, 0};
    sdb_err err;
    sdb_err_clear(&err);
    CHECK_OK(sdb_st_to_i64(tt, tv, &err), &err);
    double steps[2];
    for (int n = 0; n < B; n++) steps[n] = (double)(tt->numel == 1 ? tv[0] : tv[n]);
    const float *ctx = B == 2 ? ehs : ehs + 77 * 32; /* batch-1 cases use row 1 */
    size_t n = (size_t)B * sdb_unet_out_channels(u) * H * W;
    float *out = malloc(n * sizeof(float));
    int rc = sdb_unet_forward(u, sample, B, H, W, steps, ctx, 77, out, &arena, &err);
    CHECKF(rc == 0, "%s: %s", cname, err.msg);
    *n_out = (int)n;
    return out;
}

/* Loads the U-Net from `weights` and `config`, runs case inpaint_t981 and compares the output with
 * the reference (atol = rtol = tol). */
static void check_t981(const char *weights, const char *config, double tol, const char *what)
{
    sdb_err err;
    sdb_err_clear(&err);
    sdb_weights w;
    CHECK_OK(sdb_weights_open(&w, weights, "unet", &err), &err);
    sdb_unet *u = NULL;
    CHECK_OK(sdb_unet_load(&u, config, &w, &err), &err);
    if (u) {
        int n = 0;
        float *out = run_case(u, "inpaint_t981", &n);
        const float *ref = ref_f32("inpaint_t981/out", NULL);
        if (out && ref) CHECK(sdb_t_close(out, ref, (size_t)n, tol, tol, what));
        free(out);
        sdb_unet_free(u);
    }
    sdb_weights_free(&w);
}

static void test_cases(void)
{
    if (!sdb_t_data()) return;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        model_t m;
        if (open_model(&m, cases[i].model)) continue;
        for (int algo = 0; algo < 3; algo++) { /* every --conv: the same references, tolerances */
            sdb_unet_set_conv(m.u, algo);
            sdb_threads_set(2);
            int n = 0;
            float *out = run_case(m.u, cases[i].name, &n);
            char nm[256], what[300];
            snprintf(nm, sizeof nm, "%s/out", cases[i].name);
            snprintf(what, sizeof what, "%s --conv %s", cases[i].name, sdb_conv_algo_name(algo));
            const float *ref = ref_f32(nm, NULL);
            if (out && ref) CHECK(sdb_t_close(out, ref, (size_t)n, 1e-4, 1e-4, what));
            if (!algo)
                fprintf(stderr, "  %s: arena peak of the forward %.2f MiB\n", cases[i].name,
                        sdb_unet_last_peak(m.u) / 1048576.0);
            /* 1 vs 2 threads */
            sdb_threads_set(1);
            int n1 = 0;
            float *out1 = run_case(m.u, cases[i].name, &n1);
            if (out && out1) CHECKF(memcmp(out, out1, sizeof(float) * n) == 0, "%s: 1 vs 2 threads differ", what);
            sdb_threads_set(2);
            free(out);
            free(out1);
        }
        close_model(&m);
    }
}

static void dbg_cb(void *ctx, const char *name, const float *data, int B, int C, int H, int W)
{
    int *seen = ctx;
    char nm[256];
    snprintf(nm, sizeof nm, "inpaint_t981/debug/%s", name);
    const sdb_st_tensor *t;
    const float *ref = ref_f32(nm, &t);
    if (!ref) { CHECKF(0, "no reference for %s", name); return; }
    size_t n = (size_t)B * C * H * W;
    CHECKF((size_t)t->numel == n, "%s: %zu values, reference %lld", name, n, (long long)t->numel);
    if ((size_t)t->numel == n) CHECKF(sdb_t_close(data, ref, n, 1e-4, 1e-4, name), "%s", name);
    (*seen)++;
}

/* The cross-attention k/v kept from the last context: a forward after one with another context
 * (other bytes, another batch) gives exactly what a freshly loaded U-Net gives. */
static void test_context_cache(void)
{
    if (!sdb_t_data()) return;
    const sdb_st_tensor *ts = NULL;
    const float *sample = ref_f32("inpaint_t981/sample", &ts), *ehs = ref_f32("encoder_hidden_states", NULL);
    if (!sample || !ehs || !ts) { CHECK(0); return; }
    CHECK(ts->shape[0] == 2 && ts->shape[1] == 9);
    const int B = 2, H = (int)ts->shape[2], W = (int)ts->shape[3], L = 77, D = 32;
    const size_t nctx = (size_t)B * L * D, nout = (size_t)B * 4 * H * W;
    float *ctx2 = malloc(sizeof(float) * nctx);
    memcpy(ctx2, ehs, sizeof(float) * nctx);
    ctx2[nctx - 1] += 0.25f; /* one value of the second row's last token */
    const double steps[2] = {981, 981};
    float *o[6];
    for (int i = 0; i < 6; i++) o[i] = malloc(sizeof(float) * nout);
    sdb_err err;
    sdb_err_clear(&err);
    model_t m, f;
    if (open_model(&m, "tiny-sd-inpaint") || open_model(&f, "tiny-sd-inpaint")) { CHECK(0); return; }
    CHECK(sdb_unet_in_channels(m.u) == 9 && sdb_unet_cross_attention_dim(m.u) == D);
    CHECK_OK(sdb_unet_forward(m.u, sample, B, H, W, steps, ehs, L, o[0], &arena, &err), &err);
    CHECK_OK(sdb_unet_forward(m.u, sample, B, H, W, steps, ehs, L, o[1], &arena, &err), &err);  /* cached */
    CHECK_OK(sdb_unet_forward(m.u, sample, B, H, W, steps, ctx2, L, o[2], &arena, &err), &err); /* changed */
    CHECK_OK(sdb_unet_forward(f.u, sample, B, H, W, steps, ctx2, L, o[3], &arena, &err), &err); /* fresh */
    CHECK_OK(sdb_unet_forward(m.u, sample + (size_t)9 * H * W, 1, H, W, steps, ctx2 + nctx / 2, L, o[4], &arena, &err), &err);
    sdb_unet_free(f.u);
    CHECK_OK(sdb_unet_load(&f.u, sdb_t_path("models/tiny-sd-inpaint/unet/config.json"), &f.w, &err), &err);
    CHECK_OK(sdb_unet_forward(f.u, sample + (size_t)9 * H * W, 1, H, W, steps, ctx2 + nctx / 2, L, o[5], &arena, &err), &err);
    CHECK(memcmp(o[0], o[1], sizeof(float) * nout) == 0);
    CHECK(memcmp(o[2], o[3], sizeof(float) * nout) == 0);
    CHECK(memcmp(o[0], o[2], sizeof(float) * nout) != 0); /* the change reached the output */
    CHECK(memcmp(o[4], o[5], sizeof(float) * nout / 2) == 0);
    const float *ref = ref_f32("inpaint_t981/out", NULL);
    if (ref) CHECK(sdb_t_close(o[1], ref, nout, 1e-4, 1e-4, "inpaint_t981 from the cached k/v"));
    for (int i = 0; i < 6; i++) free(o[i]);
    free(ctx2);
    close_model(&m);
    close_model(&f);
}

static void test_debug_intermediates(void)
{
    if (!sdb_t_data()) return;
    model_t m;
    if (open_model(&m, "tiny-sd-inpaint")) return;
    int seen = 0;
    sdb_unet_set_debug(m.u, dbg_cb, &seen);
    int n = 0;
    free(run_case(m.u, "inpaint_t981", &n));
    CHECKF(seen == 13, "%d intermediates checked", seen);
    close_model(&m);
}

/* the single-file checkpoint through the LDM name map gives bit-identical outputs */
static void test_single_file(void)
{
    if (!sdb_t_data()) return;
    model_t m;
    if (open_model(&m, "tiny-sd-inpaint")) return;
    sdb_err err;
    sdb_err_clear(&err);
    sdb_st *st = NULL;
    CHECK_OK(sdb_st_open(&st, sdb_t_path("models/tiny-sd-inpaint.safetensors"), &err), &err);
    if (!st) { close_model(&m); return; }
    sdb_config cfg;
    CHECK_OK(sdb_config_load(&cfg, sdb_t_path("models/tiny-sd-inpaint/unet/config.json"), &err), &err);
    sdb_weights w2;
    CHECK_OK(sdb_ldm_unet_weights(&w2, st, &cfg, &err), &err);
    sdb_unet *u2 = NULL;
    CHECK_OK(sdb_unet_load_config(&u2, &cfg, &w2, &err), &err);
    if (u2) {
        for (int c = 0; c < 3; c++) {
            int n1 = 0, n2 = 0;
            float *a = run_case(m.u, cases[c].name, &n1);
            float *b = run_case(u2, cases[c].name, &n2);
            CHECKF(a && b && n1 == n2 && memcmp(a, b, sizeof(float) * n1) == 0,
                   "%s: single-file output differs from the diffusers folder", cases[c].name);
            free(a);
            free(b);
        }
        sdb_unet_free(u2);
    }
    sdb_weights_free(&w2);
    sdb_config_free(&cfg);
    sdb_st_close(st);
    close_model(&m);
}

/* an F16 copy of the weights, saved as the .fp16.safetensors variant name */
static void test_fp16_weights(void)
{
    if (!sdb_t_data()) return;
    char path[1024];
    snprintf(path, sizeof path, "%s/diffusion_pytorch_model.fp16.safetensors", sdb_t_tmpdir());
    if (sdb_t_write_f16_copy(sdb_t_path("models/tiny-sd-inpaint/unet/diffusion_pytorch_model.safetensors"), path, 1)) return;
    /* fp16 rounding of every weight: ~1e-3 relative */
    check_t981(path, sdb_t_path("models/tiny-sd-inpaint/unet/config.json"), 3e-2, "fp16 weights");
}

/* replaces the first occurrence of `from` in s (in place, s has room) */
static int replace1(char *s, size_t cap, const char *from, const char *to)
{
    char *p = strstr(s, from);
    if (!p) return -1;
    size_t fl = strlen(from), tl = strlen(to), rest = strlen(p + fl);
    if (strlen(s) - fl + tl + 1 > cap) return -1;
    memmove(p + tl, p + fl, rest + 1);
    memcpy(p, to, tl);
    return 0;
}

/* SD 2.x-style config forms: use_linear_projection (proj_in/proj_out as [C, C] linears) and the
 * per-block list form of attention_head_dim. With the tiny weights' 1x1 convs stored as [C, C]
 * and the list [8, 8, 8, 8], the model is the same function: the output must equal the reference. */
static void test_sd2_style_config(void)
{
    if (!sdb_t_data()) return;
    sdb_err err;
    sdb_err_clear(&err);
    const char *dir = sdb_t_tmpdir();
    sdb_st *st = NULL;
    CHECK_OK(sdb_st_open(&st, sdb_t_path("models/tiny-sd-inpaint/unet/diffusion_pytorch_model.safetensors"), &err), &err);
    if (!st) return;
    sdb_st_wtensor *wt = calloc((size_t)st->n, sizeof *wt);
    int nproj = 0;
    for (int i = 0; i < st->n; i++) {
        const sdb_st_tensor *t = &st->tensors[i];
        wt[i].name = t->name;
        wt[i].dtype = t->dtype;
        wt[i].ndim = t->ndim;
        memcpy(wt[i].shape, t->shape, sizeof t->shape);
        wt[i].data = t->data;
        size_t L = strlen(t->name);
        if (t->ndim == 4 && L > 15 && (strstr(t->name, ".proj_in.weight") || strstr(t->name, ".proj_out.weight"))) {
            wt[i].ndim = 2;
            nproj++;
        }
    }
    CHECK(nproj == 2 * 16); /* 6 down + 1 mid + 9 up transformers */
    char wpath[1024], cpath[1024];
    snprintf(wpath, sizeof wpath, "%s/diffusion_pytorch_model.safetensors", dir);
    snprintf(cpath, sizeof cpath, "%s/config.json", dir);
    CHECK_OK(sdb_st_write(wpath, wt, st->n, NULL, NULL, 0, &err), &err);
    free(wt);
    sdb_st_close(st);
    FILE *f = fopen(sdb_t_path("models/tiny-sd-inpaint/unet/config.json"), "rb");
    char text[8192];
    size_t len = f ? fread(text, 1, sizeof text - 64, f) : 0;
    if (f) fclose(f);
    text[len] = 0;
    CHECK(replace1(text, sizeof text, "\"use_linear_projection\": false", "\"use_linear_projection\": true") == 0);
    CHECK(replace1(text, sizeof text, "\"attention_head_dim\": 8", "\"attention_head_dim\": [8, 8, 8, 8]") == 0);
    f = fopen(cpath, "wb");
    if (f) { fputs(text, f); fclose(f); }
    check_t981(wpath, cpath, 1e-4, "linear projections + list heads");
    /* the shape check: the 4-D conv weights are refused when linear projections are configured */
    sdb_weights w2;
    CHECK_OK(sdb_weights_open(&w2, sdb_t_path("models/tiny-sd-inpaint/unet/diffusion_pytorch_model.safetensors"), "unet", &err), &err);
    sdb_config cfg;
    CHECK_OK(sdb_config_parse(&cfg, text, "config.json", &err), &err);
    sdb_unet *u = NULL;
    int rc = sdb_unet_load_config(&u, &cfg, &w2, &err);
    CHECKF(rc == SDB_EFORMAT && strstr(err.msg, "proj_in"), "rc %d: %s", rc, err.msg);
    sdb_unet_free(u);
    sdb_config_free(&cfg);
    sdb_weights_free(&w2);
}

static void test_config_refusals(void)
{
    if (!sdb_t_data()) return;
    static const char *bad[][2] = {
        {"\"act_fn\": \"gelu\"", "act_fn"},
        {"\"down_block_types\": [\"CrossAttnDownBlock2D\", \"CrossAttnDownBlock2D\", \"SimpleDownBlock\", \"DownBlock2D\"]", "down_block_types"},
        {"\"num_attention_heads\": 8", "num_attention_heads"},
        {"\"class_embed_type\": \"timestep\"", "class_embed_type"},
        {"\"resnet_time_scale_shift\": \"scale_shift\"", "resnet_time_scale_shift"},
        {"\"mid_block_type\": \"UNetMidBlock2DSimpleCrossAttn\"", "mid_block_type"},
        {"\"addition_embed_type\": \"text_time\"", "addition_embed_type"},
        {"\"mid_block_type\": null", "mid_block_type"},
        {"\"transformer_layers_per_block\": 9", "transformer_layers_per_block"},
        {"\"cross_attention_dim\": [32, 32, 32, 32]", "cross_attention_dim"},
        {"\"attention_head_dim\": [8, 8]", "attention_head_dim"},
    };
    FILE *f = fopen(sdb_t_path("models/tiny-sd-inpaint/unet/config.json"), "rb");
    if (!f) { CHECK(0); return; }
    char base[8192];
    size_t len = fread(base, 1, sizeof base - 1, f);
    fclose(f);
    base[len] = 0;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        /* replace the field (or add it) by splicing after the opening brace: JSON objects with a
         * duplicate key are rejected, so remove the original line first */
        char text[9000], key[64];
        snprintf(key, sizeof key, "\"%s\"", bad[i][1]);
        char *k = strstr(base, key);
        size_t pre = k ? (size_t)(k - base) : 0;
        const char *rest = base;
        if (k) {
            const char *e = k;
            int depth = 0;
            while (*e && !(depth == 0 && (*e == ',' || *e == '\n'))) {
                if (*e == '[') depth++;
                if (*e == ']') depth--;
                e++;
            }
            if (*e == ',') e++;
            rest = e;
        }
        snprintf(text, sizeof text, "%.*s%s,%s", (int)pre, base, bad[i][0], rest);
        if (!k) snprintf(text, sizeof text, "{%s,%s", bad[i][0], base + 1);
        sdb_config cfg;
        sdb_err err;
        sdb_err_clear(&err);
        if (sdb_config_parse(&cfg, text, "config.json", &err) != 0) {
            CHECKF(0, "%s: test config does not parse: %s", bad[i][1], err.msg);
            continue;
        }
        sdb_weights w;
        sdb_weights_init_recorder(&w, "unet");
        sdb_unet *u = NULL;
        int rc = sdb_unet_load_config(&u, &cfg, &w, &err);
        CHECKF(rc == SDB_EUNSUPPORTED && strstr(err.msg, bad[i][1]), "%s: rc %d, message '%s'", bad[i][1], rc, err.msg);
        sdb_unet_free(u);
        sdb_weights_free(&w);
        sdb_config_free(&cfg);
    }
}

/* SD 2.x style list attention_head_dim + linear projections load (recording mode) with the right
 * shapes, and the full-size SD 1.5 inpainting config requests exactly tensors.json's unet set */
static void test_sd15_layout(void)
{
    if (!sdb_t_data()) return;
    sdb_err err;
    sdb_err_clear(&err);
    sdb_weights w;
    sdb_weights_init_recorder(&w, "unet");
    sdb_unet *u = NULL;
    CHECK_OK(sdb_unet_load(&u, sdb_t_path("models/sd15-inpaint-layout/unet/config.json"), &w, &err), &err);
    json_error_t je;
    json_t *root = json_load_file(sdb_t_path("models/sd15-inpaint-layout/tensors.json"), 0, &je);
    json_t *tens = json_object_get(json_object_get(root, "components"), "unet");
    CHECK(tens != NULL);
    if (tens && u) {
        CHECKF((size_t)w.n_rec == json_object_size(tens), "requested %d tensors, tensors.json has %zu",
               w.n_rec, json_object_size(tens));
        int bad = 0;
        for (int i = 0; i < w.n_rec; i++) {
            json_t *s = json_object_get(tens, w.rec_names[i]);
            int ok = s && (int)json_array_size(s) == w.rec_ndim[i];
            for (int d = 0; ok && d < w.rec_ndim[i]; d++)
                ok = json_integer_value(json_array_get(s, d)) == w.rec_shapes[i][d];
            if (!ok && bad++ < 5) fprintf(stderr, "  requested %s: not in tensors.json with that shape\n", w.rec_names[i]);
        }
        CHECK(bad == 0);
    }
    json_decref(root);
    sdb_unet_free(u);
    sdb_weights_free(&w);
}

/* The tiny inpainting U-Net and a reference case's sample and text states (batch 2): 0, or 1 (and
 * the model closed, a failed check) when any is missing. */
static int open_case(model_t *m, const char *sample_name, const float **sample, const sdb_st_tensor **ts,
                     const float **ehs)
{
    if (open_model(m, "tiny-sd-inpaint")) return 1;
    *sample = ref_f32(sample_name, ts);
    *ehs = ref_f32("encoder_hidden_states", NULL);
    if (*sample && *ehs && (*ts)->shape[0] == 2) return 0;
    CHECK(0);
    close_model(m);
    return 1;
}

/* A batch of 2 equals two forwards of batch 1 up to float rounding (the GEMMs' row blocking
 * differs with the batch): the pipeline runs the guidance batch one image at a time for big
 * latents (issue 17). */
static void test_batch_split(void)
{
    model_t m;
    const sdb_st_tensor *ts = NULL;
    const float *sample, *ehs;
    if (open_case(&m, "inpaint_tvec_981_1/sample", &sample, &ts, &ehs)) return;
    int H = (int)ts->shape[2], W = (int)ts->shape[3], C = (int)ts->shape[1];
    size_t n1 = (size_t)4 * H * W;
    float *both = malloc(2 * n1 * sizeof(float)), *one = malloc(2 * n1 * sizeof(float));
    double steps[2] = {981, 1};
    sdb_err err;
    sdb_err_clear(&err);
    CHECK_OK(sdb_unet_forward(m.u, sample, 2, H, W, steps, ehs, 77, both, &arena, &err), &err);
    for (int b = 0; b < 2; b++)
        CHECK_OK(sdb_unet_forward(m.u, sample + (size_t)b * C * H * W, 1, H, W, steps + b, ehs + (size_t)b * 77 * 32, 77,
                                  one + b * n1, &arena, &err), &err);
    sdb_t_close(one, both, 2 * n1, 0, 1e-5, "two batch-1 forwards vs one batch-2 forward");
    free(both);
    free(one);
    close_model(&m);
}

/* Guidance's batch: one image twice at one t, two text states. The part before the first
 * cross-attention then runs once (the self-attention of the first transformer is called for one
 * image, not two; the counted FLOPs stay those of the whole batch), and the result equals two
 * batch-1 forwards, each with its own text states, up to float rounding. */
static void test_shared_prefix(void)
{
    model_t m;
    const sdb_st_tensor *ts = NULL;
    const float *ref, *ehs;
    if (open_case(&m, "inpaint_t981/sample", &ref, &ts, &ehs)) return;
    const int C = (int)ts->shape[1], H = (int)ts->shape[2], W = (int)ts->shape[3];
    const size_t in1 = (size_t)C * H * W, n1 = (size_t)4 * H * W;
    float *same = malloc(2 * in1 * sizeof(float)), *diff = malloc(2 * in1 * sizeof(float));
    float *both = malloc(2 * n1 * sizeof(float)), *one = malloc(2 * n1 * sizeof(float)), *o2 = malloc(2 * n1 * sizeof(float));
    memcpy(same, ref, in1 * sizeof(float));
    memcpy(same + in1, ref, in1 * sizeof(float));
    memcpy(diff, same, 2 * in1 * sizeof(float));
    diff[in1 + 5] += 0.25f; /* one value of the second image */
    double steps[2] = {981, 981};
    sdb_err err;
    sdb_err_clear(&err);
    sdb_profile ps = {0}, pd = {0};
    /* both counted runs read the cross-attention k/v cache */
    CHECK_OK(sdb_unet_forward(m.u, diff, 2, H, W, steps, ehs, 77, o2, &arena, &err), &err);
    sdb_unet_set_profile(m.u, &ps);
    CHECK_OK(sdb_unet_forward(m.u, same, 2, H, W, steps, ehs, 77, both, &arena, &err), &err);
    sdb_unet_set_profile(m.u, &pd);
    CHECK_OK(sdb_unet_forward(m.u, diff, 2, H, W, steps, ehs, 77, o2, &arena, &err), &err);
    sdb_unet_set_profile(m.u, NULL);
    CHECKF(ps.calls[SDB_PROF_ATTENTION] == pd.calls[SDB_PROF_ATTENTION] - 1,
           "attention calls: %ld for one image twice, %ld for two images", ps.calls[SDB_PROF_ATTENTION],
           pd.calls[SDB_PROF_ATTENTION]);
    CHECKF(fabs(sdb_prof_total_flops(&ps) - sdb_prof_total_flops(&pd)) <= 1e-9 * sdb_prof_total_flops(&pd),
           "%.0f FLOPs counted for one image twice, %.0f for two", sdb_prof_total_flops(&ps), sdb_prof_total_flops(&pd));
    for (int b = 0; b < 2; b++)
        CHECK_OK(sdb_unet_forward(m.u, same + b * in1, 1, H, W, steps + b, ehs + (size_t)b * 77 * 32, 77, one + b * n1,
                                  &arena, &err), &err);
    sdb_t_close(one, both, 2 * n1, 0, 1e-5, "one image twice, batch 2, vs two batch-1 forwards");
    CHECK(memcmp(both, both + n1, n1 * sizeof(float)) != 0); /* the text states made them differ */
    free(same); free(diff); free(both); free(one); free(o2);
    close_model(&m);
}

/* Kept Winograd filters (sdb_unet_set_filter_memory) give the same outputs as filters made per
 * call, bit for bit, when made and when reused; the memory kept stays within the budget, a
 * smaller budget frees them, and 0 keeps none. */
static void test_kept_filters(void)
{
    model_t m;
    const sdb_st_tensor *ts = NULL;
    const float *sample, *ehs;
    if (open_case(&m, "inpaint_t981/sample", &sample, &ts, &ehs)) return;
    const int H = (int)ts->shape[2], W = (int)ts->shape[3];
    const size_t n = (size_t)2 * 4 * H * W;
    float *o[4];
    for (int i = 0; i < 4; i++) o[i] = malloc(n * sizeof(float));
    double steps[2] = {981, 1};
    sdb_err err;
    sdb_err_clear(&err);
    sdb_unet_set_conv(m.u, SDB_CONV_WINOGRAD);
    CHECK_OK(sdb_unet_forward(m.u, sample, 2, H, W, steps, ehs, 77, o[0], &arena, &err), &err);
    CHECK(sdb_unet_filter_memory(m.u) == 0);
    sdb_unet_set_filter_memory(m.u, (size_t)1 << 30);
    CHECK_OK(sdb_unet_forward(m.u, sample, 2, H, W, steps, ehs, 77, o[1], &arena, &err), &err); /* made */
    const size_t all = sdb_unet_filter_memory(m.u);
    CHECK(all > 0);
    CHECK_OK(sdb_unet_forward(m.u, sample, 2, H, W, steps, ehs, 77, o[2], &arena, &err), &err); /* reused */
    CHECK(sdb_unet_filter_memory(m.u) == all);
    sdb_unet_set_filter_memory(m.u, all / 2); /* below what is kept: all freed, then refilled to half */
    CHECK(sdb_unet_filter_memory(m.u) == 0);
    CHECK_OK(sdb_unet_forward(m.u, sample, 2, H, W, steps, ehs, 77, o[3], &arena, &err), &err);
    CHECKF(sdb_unet_filter_memory(m.u) > 0 && sdb_unet_filter_memory(m.u) <= all / 2, "%zu bytes kept of a budget of %zu",
           sdb_unet_filter_memory(m.u), all / 2);
    for (int i = 1; i < 4; i++) CHECKF(memcmp(o[0], o[i], n * sizeof(float)) == 0, "run %d differs from filters made per call", i);
    sdb_unet_set_filter_memory(m.u, 0);
    CHECK(sdb_unet_filter_memory(m.u) == 0);
    for (int i = 0; i < 4; i++) free(o[i]);
    close_model(&m);
}

int main(void)
{
    sdb_err err;
    sdb_err_clear(&err);
    if (sdb_arena_init(&arena, (size_t)4 << 30, &err) != 0) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    if (sdb_t_data()) {
        if (sdb_st_open(&refs, sdb_t_path("refs/unet.safetensors"), &err) != 0) {
            fprintf(stderr, "%s\n", err.msg);
            return 1;
        }
    }
    RUN(test_cases);
    RUN(test_debug_intermediates);
    RUN(test_context_cache);
    RUN(test_single_file);
    RUN(test_fp16_weights);
    RUN(test_sd2_style_config);
    RUN(test_config_refusals);
    RUN(test_shared_prefix);
    RUN(test_kept_filters);
    RUN(test_sd15_layout);
    RUN(test_batch_split);
    if (refs) sdb_st_close(refs);
    sdb_arena_free(&arena);
    return sdb_t_done();
}
