/*
 * test_modelgen.c — the random-model generator (tools/make_random_model.c, included here) and
 * the bundled demo inputs (tests/data/).
 *
 * Checks: configs equal the team's tiny models' / the real SD 1.5 inpainting's values; the
 * generated BPE tokenizer is well-formed, has CLIP's exact id layout and loads in sdb_tokenizer;
 * a tiny model's files have exactly the tensor names and shapes of shared/models/tiny-sd-inpaint
 * (and tiny-sd for --txt2img); the full-size loaders' recorded requests equal
 * sd15-inpaint-layout/tensors.json (no weights written); F16 / fp16-variant output; determinism;
 * initial values and activations of the random model; the demo PNG/JPEG inputs.
 */
#define MODELGEN_NO_MAIN
#include "../tools/make_random_model.c"

#include <png.h>
#include <jpeglib.h>
#include <setjmp.h>
#include <sys/stat.h>
#include <sys/wait.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "harness.h"
#include "sdb/arena.h"
#include "sdb/tokenizer.h"

/* ---- helpers ---------------------------------------------------------------------------- */

static json_t *load_json(const char *path)
{
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    CHECKF(j != NULL, "%s: %s (line %d)", path, je.text, je.line);
    return j;
}

/* Compares our config file with a reference one; `ignore` keys (NULL-terminated) are skipped. */
static void check_json_same(const char *ours, const char *ref, const char *const *ignore)
{
    json_t *a = load_json(ours), *b = load_json(ref);
    if (!a || !b) { json_decref(a); json_decref(b); return; }
    for (int i = 0; ignore && ignore[i]; i++) { json_object_del(a, ignore[i]); json_object_del(b, ignore[i]); }
    const char *k;
    json_t *v;
    json_object_foreach(b, k, v) {
        json_t *o = json_object_get(a, k);
        if (!o) { CHECKF(0, "%s: key '%s' missing (present in %s)", ours, k, ref); continue; }
        /* 1e-05 vs 1.0000000000000001e-05 and 1 vs 1.0 are the same value for every reader */
        if (json_is_number(o) && json_is_number(v)) {
            CHECKF(json_number_value(o) == json_number_value(v), "%s: '%s' = %g, expected %g", ours, k,
                   json_number_value(o), json_number_value(v));
        } else {
            CHECKF(json_equal(o, v), "%s: key '%s' differs from %s", ours, k, ref);
        }
    }
    json_object_foreach(a, k, v) CHECKF(json_object_get(b, k) != NULL, "%s: extra key '%s'", ours, k);
    json_decref(a);
    json_decref(b);
}

/* Names and shapes of two safetensors files must be equal. */
static void check_same_layout(const char *ours, const char *ref, sdb_dtype want_dt)
{
    sdb_err err;
    sdb_st *a = NULL, *b = NULL;
    CHECK_OK(sdb_st_open(&a, ours, &err), &err);
    CHECK_OK(sdb_st_open(&b, ref, &err), &err);
    if (a && b) {
        CHECKF(a->n == b->n, "%s: %d tensors, reference %d", ours, a->n, b->n);
        int bad = 0;
        for (int i = 0; i < b->n && bad < 10; i++) {
            const sdb_st_tensor *r = &b->tensors[i], *t = sdb_st_find(a, r->name);
            if (!t) { CHECKF(0, "%s: missing '%s'", ours, r->name); bad++; continue; }
            int same = t->ndim == r->ndim;
            for (int d = 0; same && d < t->ndim; d++) same = t->shape[d] == r->shape[d];
            if (!same) {
                char s1[128], s2[128];
                sdb_shape_str(t->shape, t->ndim, s1, sizeof s1);
                sdb_shape_str(r->shape, r->ndim, s2, sizeof s2);
                CHECKF(0, "%s: '%s' has shape %s, reference %s", ours, r->name, s1, s2);
                bad++;
            }
        }
        for (int i = 0; i < a->n; i++) {
            CHECKF(a->tensors[i].dtype == want_dt, "%s: '%s' is %s", ours, a->tensors[i].name,
                   sdb_dtype_name(a->tensors[i].dtype));
            if (a->tensors[i].dtype != want_dt) break;
        }
        const char *fmt = sdb_st_meta(a, "format");
        CHECKF(fmt && !strcmp(fmt, "pt"), "%s: __metadata__ format is %s", ours, fmt ? fmt : "(none)");
    }
    if (a) sdb_st_close(a);
    if (b) sdb_st_close(b);
}

static char *pjoin(const char *a, const char *b)
{
    char *p = sdb_path_join(a, b);
    return p;
}

/* ---- configs ----------------------------------------------------------------------------- */

static void test_configs(void)
{
    sdb_err err;
    const char *tiny = sdb_t_path("models/tiny-sd-inpaint"), *tiny4 = sdb_t_path("models/tiny-sd");
    const char *full = sdb_t_path("models/sd15-inpaint-layout");
    const char *files[] = {"model_index.json", "scheduler/scheduler_config.json", "unet/config.json",
                           "vae/config.json", "text_encoder/config.json"};
    struct { int full, inpaint; const char *ref; } cases[] = {{0, 1, tiny}, {0, 0, tiny4}, {1, 1, full}};
    for (int c = 0; c < 3; c++) {
        mg_opts o;
        mg_opts_default(&o);
        o.full = cases[c].full;
        o.inpaint = cases[c].inpaint;
        const char *dir = sdb_t_tmpdir();
        CHECK_OK(write_configs(dir, &o, &err), &err);
        for (int f = 0; f < 5; f++) {
            char *ours = pjoin(dir, files[f]), *ref = pjoin(cases[c].ref, files[f]);
            /* the real model_index names a safety checker and feature extractor; ours has neither,
             * like the tiny models' */
            const char *ign_full_index[] = {"feature_extractor", "safety_checker", "requires_safety_checker", NULL};
            check_json_same(ours, ref, (o.full && f == 0) ? ign_full_index : NULL);
            /* and byte for byte as diffusers / transformers write them */
            if (!(o.full && f == 0)) {
                char *x = NULL, *y = NULL;
                size_t nx = 0, ny = 0;
                CHECK_OK(sdb_read_file(ours, &x, &nx, &err), &err);
                CHECK_OK(sdb_read_file(ref, &y, &ny, &err), &err);
                CHECKF(x && y && nx == ny && !memcmp(x, y, nx), "%s is not byte-identical to %s", ours, ref);
                free(x);
                free(y);
            }
            free(ours);
            free(ref);
        }
    }
}

/* ---- tokenizer --------------------------------------------------------------------------- */

static void test_tokenizer_structure(void)
{
    sdb_err err;
    mg_tok t;
    CHECK_OK(build_tokenizer(&t, MG_VOCAB_SIZE, &err), &err);
    CHECK(t.n == MG_VOCAB_SIZE);
    CHECK(t.n_merges == MG_VOCAB_SIZE - 2 - 512); /* 48894: what transformers' CLIPTokenizer reads */
    CHECK(!strcmp(t.tokens[49406], "<|startoftext|>"));
    CHECK(!strcmp(t.tokens[49407], "<|endoftext|>"));
    CHECK(!strcmp(t.tokens[0], "!"));
    CHECK(!strcmp(t.tokens[256], "!</w>"));
    CHECK(!strcmp(t.tokens[255], "\xc5\x83"));  /* U+0143, the last byte symbol */
    CHECK(!strcmp(t.tokens[511], "\xc5\x83</w>"));
    /* every merge joins two earlier tokens into the token of its own id; "</w>" only at the end */
    int bad = 0;
    for (int k = 0; k < t.n_merges && bad < 5; k++) {
        char l[256], r[256];
        const char *sp = strchr(t.merges[k], ' ');
        if (!sp) { CHECKF(0, "merge %d has no space", k); bad++; continue; }
        snprintf(l, sizeof l, "%.*s", (int)(sp - t.merges[k]), t.merges[k]);
        snprintf(r, sizeof r, "%s", sp + 1);
        int il = tok_find(&t, l), ir = tok_find(&t, r);
        char j[512];
        snprintf(j, sizeof j, "%s%s", l, r);
        int ok = il >= 0 && ir >= 0 && il < 512 + k && ir < 512 + k && !strcmp(t.tokens[512 + k], j) &&
                 !strstr(l, "</w>");
        const char *w = strstr(r, "</w>");
        ok = ok && (!w || w[4] == '\0');
        if (!ok) { CHECKF(0, "merge %d '%s' is malformed", k, t.merges[k]); bad++; }
    }
    /* all tokens distinct */
    for (int i = 0; i < t.n; i++)
        if (tok_find(&t, t.tokens[i]) != i) { CHECKF(0, "token %d '%s' is not unique", i, t.tokens[i]); break; }
    mg_tok_free(&t);
}

static void test_tokenizer_loads(void)
{
    sdb_err err;
    const char *dir = sdb_t_tmpdir();
    CHECK_OK(write_tokenizer_dir(dir, &err), &err);
    char *tdir = pjoin(dir, "tokenizer");
    char *mp = pjoin(tdir, "merges.txt");
    char *text = NULL;
    size_t len = 0;
    CHECK_OK(sdb_read_file(mp, &text, &len, &err), &err);
    CHECK(text && !strncmp(text, "#version: 0.2\n", 14));
    free(text);
    free(mp);
    sdb_tokenizer *tk = NULL;
    CHECK_OK(sdb_tokenizer_load(&tk, tdir, &err), &err);
    free(tdir);
    if (!tk) return;
    CHECK(sdb_tokenizer_bos(tk) == 49406);
    CHECK(sdb_tokenizer_eos(tk) == 49407);
    CHECK(sdb_tokenizer_pad(tk) == 49407);
    CHECK(sdb_tokenizer_vocab_size(tk) == 49408);
    CHECK(sdb_tokenizer_max_length(tk) == 77);
    const char *texts[] = {
        "a photo of a cat", "A beautiful landscape, highly detailed, trending on artstation!!",
        "", "   ", "zxqv wyrm 12345 3.14159", "café naïve façade — 日本語のテキスト 🙂🙃 Ωmega",
        "it's the dog's toy; they'll see", "\xff\xfe invalid utf8 \xc3", "repair the torn photograph, remove the scratch",
        "supercalifragilisticexpialidocious antidisestablishmentarianism",
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        int32_t *ids = NULL;
        int n = -1;
        CHECK_OK(sdb_tokenizer_tokenize(tk, texts[i], -1, &ids, &n, &err), &err);
        for (int k = 0; k < n; k++) CHECKF(ids[k] >= 0 && ids[k] < 49406, "'%s': id %d", texts[i], ids[k]);
        free(ids);
        int32_t in[77];
        int nu = 0;
        CHECK_OK(sdb_tokenizer_encode(tk, texts[i], -1, in, &nu, NULL, &err), &err);
        CHECK(in[0] == 49406);
        CHECK(nu >= 2 && nu - 1 < 77 ? in[nu - 1] == 49407 : 1);
    }
    /* common words are single tokens; ASCII text decodes back to itself */
    int32_t *ids = NULL;
    int n = 0;
    CHECK_OK(sdb_tokenizer_tokenize(tk, "a photo of a cat", -1, &ids, &n, &err), &err);
    CHECK(n == 5);
    char *dec = sdb_tokenizer_decode(tk, ids, n);
    CHECKF(dec && !strcmp(dec, "a photo of a cat"), "decoded '%s'", dec ? dec : "(null)");
    free(dec);
    free(ids);
    CHECK_OK(sdb_tokenizer_tokenize(tk, "zebra quokka wombats", -1, &ids, &n, &err), &err);
    dec = sdb_tokenizer_decode(tk, ids, n);
    CHECKF(dec && !strcmp(dec, "zebra quokka wombats"), "decoded '%s'", dec ? dec : "(null)");
    free(dec);
    free(ids);
    sdb_tokenizer_free(tk);
}

/* ---- full size: the loaders' requests vs the real model's tensor list --------------------- */

static void test_full_layout_recorded(void)
{
    sdb_err err;
    mg_opts o;
    mg_opts_default(&o);
    o.full = 1;
    const char *dir = sdb_t_tmpdir();
    CHECK_OK(write_configs(dir, &o, &err), &err);
    json_t *ref = load_json(sdb_t_path("models/sd15-inpaint-layout/tensors.json"));
    if (!ref) return;
    json_t *comps = json_object_get(ref, "components"), *nparams = json_object_get(ref, "num_params");
    for (int c = 0; c < 3; c++) {
        const char *comp = MG_COMPONENTS[c];
        mg_list l;
        int rc = component_tensors(dir, comp, &l, &err);
        CHECK_OK(rc, &err);
        if (rc) continue;
        json_t *want = json_object_get(comps, comp);
        CHECKF(json_object_size(want) == (size_t)l.n, "%s: recorded %d tensors, the real model has %zu",
               comp, l.n, json_object_size(want));
        int bad = 0;
        for (int i = 0; i < l.n && bad < 10; i++) {
            json_t *shape = json_object_get(want, l.t[i].name);
            if (!shape) { CHECKF(0, "%s: '%s' is not in the real model", comp, l.t[i].name); bad++; continue; }
            int same = (int)json_array_size(shape) == l.t[i].ndim;
            for (int d = 0; same && d < l.t[i].ndim; d++)
                same = json_integer_value(json_array_get(shape, (size_t)d)) == l.t[i].shape[d];
            if (!same) { CHECKF(0, "%s: '%s' shape differs from the real model", comp, l.t[i].name); bad++; }
        }
        CHECKF(json_integer_value(json_object_get(nparams, comp)) == l.params, "%s: %" PRId64
               " parameters, the real model %" PRId64, comp, l.params,
               (int64_t)json_integer_value(json_object_get(nparams, comp)));
        fprintf(stderr, "  full %-12s %d tensors, %" PRId64 " parameters: as the real model\n", comp, l.n, l.params);
        mg_list_free(&l);
    }
    json_decref(ref);
}

/* ---- tiny: the written files vs the team's tiny models ------------------------------------ */

static const char *make_tiny(int inpaint, int f16, int variant, uint64_t seed)
{
    sdb_err err;
    mg_opts o;
    mg_opts_default(&o);
    o.inpaint = inpaint;
    o.f16 = f16;
    o.fp16_variant = variant;
    o.seed = seed;
    const char *dir = sdb_t_tmpdir();
    int rc = make_random_model(dir, &o, NULL, NULL, &err);
    CHECK_OK(rc, &err);
    return rc ? NULL : dir;
}

static void test_tiny_matches_reference(void)
{
    for (int inpaint = 1; inpaint >= 0; inpaint--) {
        const char *dir = make_tiny(inpaint, 0, 0, 7);
        if (!dir) return;
        const char *ref = sdb_t_path(inpaint ? "models/tiny-sd-inpaint" : "models/tiny-sd");
        const char *rel[3] = {"unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors",
                              "text_encoder/model.safetensors"};
        for (int c = 0; c < 3; c++) {
            char *a = pjoin(dir, rel[c]), *b = pjoin(ref, rel[c]);
            check_same_layout(a, b, SDB_DT_F32);
            free(a);
            free(b);
        }
    }
}

static void test_f16_and_determinism(void)
{
    sdb_err err;
    const char *d32 = make_tiny(1, 0, 0, 11), *d16 = make_tiny(1, 1, 1, 11), *d32b = make_tiny(1, 0, 0, 11);
    const char *d32c = make_tiny(1, 0, 0, 12);
    if (!d32 || !d16 || !d32b || !d32c) return;
    const char *rel32[3] = {"unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors",
                            "text_encoder/model.safetensors"};
    const char *rel16[3] = {"unet/diffusion_pytorch_model.fp16.safetensors",
                            "vae/diffusion_pytorch_model.fp16.safetensors", "text_encoder/model.fp16.safetensors"};
    for (int c = 0; c < 3; c++) {
        char *a = pjoin(d32, rel32[c]), *b = pjoin(d16, rel16[c]), *a2 = pjoin(d32b, rel32[c]), *a3 = pjoin(d32c, rel32[c]);
        char *nf = pjoin(d16, rel32[c]);
        CHECKF(!sdb_file_exists(nf), "%s: the fp16 variant wrote the plain name too", nf);
        char h1[65], h2[65], h3[65];
        CHECK_OK(sdb_sha256_file(a, h1, &err), &err);
        CHECK_OK(sdb_sha256_file(a2, h2, &err), &err);
        CHECK_OK(sdb_sha256_file(a3, h3, &err), &err);
        CHECKF(!strcmp(h1, h2), "%s: same seed, different bytes", rel32[c]);
        CHECKF(strcmp(h1, h3) != 0, "%s: different seeds, same bytes", rel32[c]);
        check_same_layout(b, a, SDB_DT_F16);
        /* the F16 file holds the F32 values rounded to half */
        sdb_st *s32 = NULL, *s16 = NULL;
        CHECK_OK(sdb_st_open(&s32, a, &err), &err);
        CHECK_OK(sdb_st_open(&s16, b, &err), &err);
        if (s32 && s16) {
            for (int i = 0; i < s32->n; i += 7) {
                const sdb_st_tensor *t = &s32->tensors[i], *h = sdb_st_find(s16, t->name);
                if (!h) continue;
                const float *x = (const float *)(const void *)t->data;
                const uint16_t *y = (const uint16_t *)(const void *)h->data;
                int64_t diff = 0;
                for (int64_t k = 0; k < t->numel; k++) diff += sdb_f32_to_f16(x[k]) != y[k];
                CHECKF(diff == 0, "%s: %" PRId64 " values differ from the F32 file", t->name, diff);
            }
        }
        if (s32) sdb_st_close(s32);
        if (s16) sdb_st_close(s16);
        free(a); free(b); free(a2); free(a3); free(nf);
    }
}

/* Initial values follow the documented scheme. */
static void test_values(void)
{
    sdb_err err;
    const char *dir = make_tiny(1, 0, 0, 3);
    if (!dir) return;
    char *p = pjoin(dir, "vae/diffusion_pytorch_model.safetensors");
    sdb_st *st = NULL;
    CHECK_OK(sdb_st_open(&st, p, &err), &err);
    free(p);
    if (!st) return;
    for (int i = 0; i < st->n; i++) {
        const sdb_st_tensor *t = &st->tensors[i];
        const float *x = (const float *)(const void *)t->data;
        double s = 0, s2 = 0;
        for (int64_t k = 0; k < t->numel; k++) { s += x[k]; s2 += (double)x[k] * x[k]; }
        double mean = s / (double)t->numel, sd = sqrt(fmax(0.0, s2 / (double)t->numel - mean * mean));
        if (t->numel < 256 || strstr(t->name, "quant_conv") || strstr(t->name, "conv_out")) continue;
        if (t->ndim == 1 && ends_with(t->name, ".weight")) {
            CHECKF(fabs(mean - 1.0) < 0.1 && fabs(sd - 0.2) < 0.06, "%s: mean %.3f sd %.3f", t->name, mean, sd);
        } else if (t->ndim >= 2) {
            int64_t fan_in = t->numel / t->shape[0];
            double want = 1.0 / sqrt((double)fan_in);
            CHECKF(fabs(mean) < 0.1 * want + 0.01 && fabs(sd / want - 1.0) < 0.1, "%s: mean %.4f sd %.4f, want sd %.4f",
                   t->name, mean, sd, want);
        }
    }
    const sdb_st_tensor *qb = sdb_st_find(st, "quant_conv.bias");
    CHECK(qb && qb->numel == 8);
    if (qb) {
        const float *b = (const float *)(const void *)qb->data;
        for (int k = 4; k < 8; k++) CHECKF(b[k] < -3.0f && b[k] > -5.0f, "logvar bias %d = %g", k, b[k]);
    }
    sdb_st_close(st);
}

/* The random model runs and its activations stay O(1); the VAE's images are mostly in [-1, 1]. */
static void test_activations(void)
{
    sdb_err err;
    const char *dir = make_tiny(1, 0, 0, 5);
    if (!dir) return;
    sdb_arena arena;
    CHECK_OK(sdb_arena_init(&arena, (size_t)1 << 30, &err), &err);
    mg_rng r;
    mg_rng_seed(&r, 99);
    {
        char *cfg = pjoin(dir, "vae/config.json"), *wp = pjoin(dir, "vae/diffusion_pytorch_model.safetensors");
        sdb_weights w;
        sdb_vae *v = NULL;
        CHECK_OK(sdb_weights_open(&w, wp, "vae", &err), &err);
        CHECK_OK(sdb_vae_load(&v, cfg, &w, &err), &err);
        if (v) {
            /* decode latents shaped like scaled SD latents (std ~1 after / scaling_factor... as
             * the pipeline passes z / 0.18215 with z ~ N(0, 1)) */
            int h = 16, wd = 16, H, W;
            sdb_vae_image_size(v, h, wd, &H, &W);
            float *z = malloc(sizeof(float) * 4 * h * wd), *img = malloc(sizeof(float) * 3 * H * W);
            mg_randn(&r, z, (size_t)4 * h * wd);
            for (int i = 0; i < 4 * h * wd; i++) z[i] /= 0.18215f;
            CHECK_OK(sdb_vae_decode(v, z, h, wd, img, &arena, &err), &err);
            int inside = 0;
            for (int i = 0; i < 3 * H * W; i++) inside += fabsf(img[i]) <= 1.0f;
            double frac = (double)inside / (3.0 * H * W);
            fprintf(stderr, "  tiny VAE decode: %.1f%% of pixels inside [-1, 1]\n", 100 * frac);
            CHECKF(frac > 0.9, "only %.1f%% of decoded values in [-1, 1]", 100 * frac);
            /* encode an image: posterior std in the documented range */
            float *mean = malloc(sizeof(float) * 4 * h * wd), *sd = malloc(sizeof(float) * 4 * h * wd);
            for (int i = 0; i < 3 * H * W; i++) img[i] = fmaxf(-1.0f, fminf(1.0f, img[i]));
            CHECK_OK(sdb_vae_encode(v, img, H, W, mean, sd, NULL, &arena, &err), &err);
            double ms = 0, ss = 0;
            for (int i = 0; i < 4 * h * wd; i++) { ms += (double)mean[i] * mean[i]; ss += sd[i]; }
            ms = sqrt(ms / (4.0 * h * wd));
            ss /= 4.0 * h * wd;
            fprintf(stderr, "  tiny VAE encode: latent rms %.3f (x 0.18215 = %.3f), posterior std %.3f\n", ms,
                    ms * 0.18215, ss);
            CHECKF(ss > 0.02 && ss < 0.6, "posterior std %.3f", ss);
            free(mean); free(sd); free(z); free(img);
            sdb_vae_free(v);
        }
        sdb_weights_free(&w);
        free(cfg); free(wp);
    }
    {
        char *tdir = pjoin(dir, "text_encoder");
        sdb_clip *clip = NULL;
        CHECK_OK(sdb_clip_load_dir(&clip, tdir, &err), &err);
        float *emb = malloc(sizeof(float) * 77 * 32);
        if (clip) {
            int32_t ids[77];
            ids[0] = 49406;
            for (int i = 1; i < 77; i++) ids[i] = i < 6 ? 1000 + 37 * i : 49407;
            CHECK_OK(sdb_clip_encode(clip, ids, 1, emb, &arena, &err), &err);
            double s2 = 0;
            for (int i = 0; i < 77 * 32; i++) s2 += (double)emb[i] * emb[i];
            double rms = sqrt(s2 / (77.0 * 32));
            fprintf(stderr, "  tiny CLIP: embedding rms %.3f\n", rms);
            CHECKF(rms > 0.3 && rms < 3.0 && isfinite(rms), "embedding rms %.3f", rms);
            sdb_clip_free(clip);
        }
        free(tdir);
        char *cfg = pjoin(dir, "unet/config.json"), *wp = pjoin(dir, "unet/diffusion_pytorch_model.safetensors");
        sdb_weights w;
        sdb_unet *u = NULL;
        CHECK_OK(sdb_weights_open(&w, wp, "unet", &err), &err);
        CHECK_OK(sdb_unet_load(&u, cfg, &w, &err), &err);
        if (u && clip) {
            int h = 16, wd = 16;
            float *x = malloc(sizeof(float) * 9 * h * wd), *out = malloc(sizeof(float) * 4 * h * wd);
            mg_randn(&r, x, (size_t)9 * h * wd);
            double t = 500;
            CHECK_OK(sdb_unet_forward(u, x, 1, h, wd, &t, emb, 77, out, &arena, &err), &err);
            double s2 = 0;
            for (int i = 0; i < 4 * h * wd; i++) s2 += (double)out[i] * out[i];
            double rms = sqrt(s2 / (4.0 * h * wd));
            fprintf(stderr, "  tiny U-Net: output rms %.3f\n", rms);
            CHECKF(rms > 0.1 && rms < 5.0 && isfinite(rms), "U-Net output rms %.3f", rms);
            free(x); free(out);
        }
        if (u) sdb_unet_free(u);
        sdb_weights_free(&w);
        free(cfg); free(wp); free(emb);
    }
    sdb_arena_free(&arena);
}

/* Same bytes with 1 and 2 threads (values are generated in fixed chunks with their own seeds). */
static void test_thread_independent(void)
{
#ifdef _OPENMP
    sdb_err err;
    int nt = omp_get_max_threads();
    omp_set_num_threads(1);
    const char *d1 = make_tiny(1, 0, 0, 21);
    omp_set_num_threads(2);
    const char *d2 = make_tiny(1, 0, 0, 21);
    omp_set_num_threads(nt);
    if (!d1 || !d2) return;
    const char *rel[3] = {"unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors",
                          "text_encoder/model.safetensors"};
    for (int c = 0; c < 3; c++) {
        char *a = pjoin(d1, rel[c]), *b = pjoin(d2, rel[c]);
        char h1[65], h2[65];
        CHECK_OK(sdb_sha256_file(a, h1, &err), &err);
        CHECK_OK(sdb_sha256_file(b, h2, &err), &err);
        CHECKF(!strcmp(h1, h2), "%s differs between 1 and 2 threads", rel[c]);
        free(a);
        free(b);
    }
#endif
}

/* The command-line tool: exit codes, and the same files as the library path for the same seed. */
static int run_tool(const char *args)
{
    char *bindir = sdb_path_dirname(sdb_t_binary());
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "'%s/sdbatch-make-random-model' %s >/dev/null 2>&1", bindir, args);
    free(bindir);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_cli(void)
{
    sdb_err err;
    CHECK(run_tool("--help") == 0);
    CHECK(run_tool("") == 2);
    CHECK(run_tool("/tmp/x --size huge") == 2);
    CHECK(run_tool("/tmp/x --dtype f64") == 2);
    CHECK(run_tool("/tmp/x --seed -3") == 2);
    CHECK(run_tool("/tmp/x --bogus") == 2);
    const char *dir = sdb_t_tmpdir();
    char args[1024];
    snprintf(args, sizeof args, "'%s' --size tiny --dtype f16 --txt2img --seed 21", dir);
    CHECKF(run_tool(args) == 0, "sdbatch-make-random-model %s failed (is the tool built?)", args);
    const char *lib = make_tiny(0, 1, 0, 21);
    if (!lib) return;
    char *a = pjoin(dir, "unet/diffusion_pytorch_model.safetensors"), *b = pjoin(lib, "unet/diffusion_pytorch_model.safetensors");
    char h1[65] = "", h2[65] = "";
    CHECK_OK(sdb_sha256_file(a, h1, &err), &err);
    CHECK_OK(sdb_sha256_file(b, h2, &err), &err);
    CHECKF(h1[0] && !strcmp(h1, h2), "the tool and the library wrote different U-Nets for the same options");
    char *rd = pjoin(dir, "README.md");
    CHECK(sdb_file_exists(rd));
    free(rd);
    free(a);
    free(b);
}

/* tools/fetch-model.sh cannot download here; check it parses, documents itself and rejects
 * unknown options, and that its checksum table is well-formed. */
static void test_fetch_script(void)
{
    char cmd[2048];
    const char *sh = SDB_SOURCE_DIR "/tools/fetch-model.sh";
    snprintf(cmd, sizeof cmd, "bash -n '%s'", sh);
    CHECK(system(cmd) == 0);
    snprintf(cmd, sizeof cmd, "bash '%s' --help | grep -q HF_TOKEN", sh);
    CHECK(system(cmd) == 0);
    snprintf(cmd, sizeof cmd, "bash '%s' --frobnicate >/dev/null 2>&1", sh);
    int st = system(cmd);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 2);
    char *text = NULL;
    size_t n = 0;
    sdb_err err;
    CHECK_OK(sdb_read_file(sh, &text, &n, &err), &err);
    if (!text) return;
    const char *need[] = {"unet/diffusion_pytorch_model.fp16.safetensors\t", "vae/diffusion_pytorch_model.fp16.safetensors\t",
                          "text_encoder/model.fp16.safetensors\t", "tokenizer/vocab.json\t", "tokenizer/merges.txt\t"};
    for (size_t i = 0; i < sizeof need / sizeof need[0]; i++) {
        const char *p = strstr(text, need[i]);
        CHECKF(p != NULL, "fetch-model.sh lists no checksum for %s", need[i]);
        if (!p) continue;
        p += strlen(need[i]);
        int hex = 0;
        while ((p[hex] >= '0' && p[hex] <= '9') || (p[hex] >= 'a' && p[hex] <= 'f')) hex++;
        CHECKF(hex == 64 && (p[hex] == '\n' || p[hex] == '"'), "fetch-model.sh: bad sha256 for %s", need[i]);
    }
    free(text);
}

/* ---- demo inputs ------------------------------------------------------------------------- */

/* Reads a PNG as 8-bit; returns width/height/channels (colour type) or 0 on failure. */
static unsigned char *read_png(const char *path, int *w, int *h, int *ch)
{
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_file(&img, path)) return NULL;
    *ch = (img.format & PNG_FORMAT_FLAG_COLOR) ? 3 : 1;
    img.format = *ch == 3 ? PNG_FORMAT_RGB : PNG_FORMAT_GRAY;
    unsigned char *buf = malloc(PNG_IMAGE_SIZE(img));
    if (!buf || !png_image_finish_read(&img, NULL, buf, 0, NULL)) { free(buf); png_image_free(&img); return NULL; }
    *w = (int)img.width;
    *h = (int)img.height;
    return buf;
}

struct jerr { struct jpeg_error_mgr pub; jmp_buf jb; };
static void jerr_exit(j_common_ptr c) { longjmp(((struct jerr *)(void *)c->err)->jb, 1); }

static int jpeg_size(const char *path, int *w, int *h)
{
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    struct jpeg_decompress_struct ci;
    struct jerr je;
    ci.err = jpeg_std_error(&je.pub);
    je.pub.error_exit = jerr_exit;
    if (setjmp(je.jb)) { jpeg_destroy_decompress(&ci); fclose(f); return -1; }
    jpeg_create_decompress(&ci);
    jpeg_stdio_src(&ci, f);
    jpeg_read_header(&ci, TRUE);
    jpeg_start_decompress(&ci);
    *w = (int)ci.output_width;
    *h = (int)ci.output_height;
    JSAMPARRAY row = (*ci.mem->alloc_sarray)((j_common_ptr)&ci, JPOOL_IMAGE, ci.output_width * ci.output_components, 1);
    while (ci.output_scanline < ci.output_height) jpeg_read_scanlines(&ci, row, 1);
    jpeg_finish_decompress(&ci);
    jpeg_destroy_decompress(&ci);
    fclose(f);
    return 0;
}

static void test_demo_inputs(void)
{
    struct { const char *img, *mask; int w, h; } d[] = {
        {"demo.png", "demo-mask.png", 128, 128},
        {"street-136x96.png", "street-136x96-mask.png", 136, 96},
        {"garden-96x128.jpg", "garden-96x128-mask.png", 96, 128},
    };
    for (size_t i = 0; i < sizeof d / sizeof d[0]; i++) {
        char ip[1024], mp[1024];
        snprintf(ip, sizeof ip, "%s/tests/data/%s", SDB_SOURCE_DIR, d[i].img);
        snprintf(mp, sizeof mp, "%s/tests/data/%s", SDB_SOURCE_DIR, d[i].mask);
        int w = 0, h = 0, ch = 0;
        if (strstr(d[i].img, ".jpg")) {
            CHECKF(jpeg_size(ip, &w, &h) == 0, "%s: not a readable JPEG", ip);
        } else {
            unsigned char *px = read_png(ip, &w, &h, &ch);
            CHECKF(px && ch == 3, "%s: not a readable RGB PNG", ip);
            if (px) {
                /* a picture, not a flat field: several distinct colours */
                int distinct = 0;
                for (int k = 3; k < w * h * 3 && distinct < 20; k += 3 * 37)
                    distinct += memcmp(px + k, px, 3) != 0;
                CHECKF(distinct >= 10, "%s looks flat", ip);
            }
            free(px);
        }
        CHECKF(w == d[i].w && h == d[i].h, "%s: %dx%d, expected %dx%d", ip, w, h, d[i].w, d[i].h);
        int mw = 0, mh = 0, mc = 0;
        unsigned char *m = read_png(mp, &mw, &mh, &mc);
        CHECKF(m && mc == 1 && mw == d[i].w && mh == d[i].h, "%s: not a %dx%d grayscale PNG", mp, d[i].w, d[i].h);
        if (m) {
            int white = 0, other = 0;
            for (int k = 0; k < mw * mh; k++) { white += m[k] == 255; other += m[k] != 0 && m[k] != 255; }
            double frac = (double)white / (mw * mh);
            CHECKF(other == 0 && frac > 0.03 && frac < 0.6, "%s: %.1f%% white, %d grey pixels", mp, 100 * frac, other);
        }
        free(m);
        struct stat sb;
        CHECKF(stat(ip, &sb) == 0 && sb.st_size < 32 * 1024, "%s: %lld bytes (keep demo inputs small)", ip,
               (long long)sb.st_size);
    }
}

int main(void)
{
    RUN(test_configs);
    RUN(test_tokenizer_structure);
    RUN(test_tokenizer_loads);
    RUN(test_full_layout_recorded);
    RUN(test_tiny_matches_reference);
    RUN(test_f16_and_determinism);
    RUN(test_values);
    RUN(test_activations);
    RUN(test_thread_independent);
    RUN(test_cli);
    RUN(test_fetch_script);
    RUN(test_demo_inputs);
    return sdb_t_done();
}
