/*
 * to_single_file.c — `sdbatch-to-single-file`: writes the single-file checkpoint (CompVis/LDM
 * layout, the one AUTOMATIC1111 and ComfyUI load) of a diffusers SD 1.x folder, or a separate VAE
 * file, or a copy of a .safetensors file in another dtype. For tests, benchmarks and users who
 * want one file; the names come from the project's own mapping (src/model/ldm_names.c).
 *
 *   sdbatch-to-single-file SRC OUT.safetensors [--dtype keep|f32|f16|bf16|mixed]
 *                          [--vae-only [--vae-prefix P]]
 *
 * SRC a diffusers pipeline folder: U-Net under "model.diffusion_model.", VAE under
 *     "first_stage_model." (mid-block attention weights as [C, C, 1, 1] convolutions, as LDM
 *     stores them), text encoder under "cond_stage_model.transformer."; with --vae-only only the
 *     VAE, under --vae-prefix (default none: vae-ft-mse-840000-ema-pruned's layout).
 * SRC a .safetensors file: every tensor copied under its own name (a dtype conversion).
 * --dtype: keep (default), f32 (exact widening), f16 / bf16 (rounded to nearest even), mixed
 *     (floating tensors in turn F32, F16, BF16, as some exports come).
 *
 * The file can be #included with TO_SINGLE_FILE_NO_MAIN defined (tests do) to call ts_convert().
 * Owns: the converted copies of the tensors until the file is written (the source files are
 * mapped; kept tensors are written from the mapping).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sdb/config.h"
#include "sdb/error.h"
#include "sdb/fp16.h"
#include "sdb/fsutil.h"
#include "sdb/ldm_names.h"
#include "sdb/safetensors.h"

typedef enum { TS_KEEP, TS_F32, TS_F16, TS_BF16, TS_MIXED } ts_dtype;

typedef struct ts_opts {
    ts_dtype dtype;
    int vae_only;
    const char *vae_prefix; /* NULL = "" */
} ts_opts;

/* What is written: tensors (data in a source mapping or in `owned`). */
typedef struct ts_out {
    sdb_st_wtensor *t;
    char **names;
    void **owned;
    int n, cap;
    int n_float; /* floating tensors seen (for --dtype mixed) */
} ts_out;

static void ts_out_free(ts_out *o)
{
    for (int i = 0; i < o->n; i++) { free(o->names[i]); free(o->owned[i]); }
    free(o->t);
    free(o->names);
    free(o->owned);
    memset(o, 0, sizeof *o);
}

/* float32 -> bfloat16, round to nearest even (NaN stays a quiet NaN). */
static uint16_t ts_f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7F800000u) == 0x7F800000u && (u & 0x007FFFFFu)) return (uint16_t)((u >> 16) | 0x0040u);
    u += 0x7FFFu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static int is_float(sdb_dtype d) { return d == SDB_DT_F32 || d == SDB_DT_F16 || d == SDB_DT_BF16 || d == SDB_DT_F64; }

/* Adds t under `name` (shape possibly reshaped to shape/ndim), converted as o asks. */
static int ts_add(ts_out *out, const ts_opts *o, const sdb_st_tensor *t, const char *name, int ndim,
                  const int64_t *shape, sdb_err *err)
{
    if (out->n == out->cap) {
        int nc = out->cap ? 2 * out->cap : 256;
        sdb_st_wtensor *nt = realloc(out->t, (size_t)nc * sizeof *nt);
        if (nt) out->t = nt;
        char **nn = realloc(out->names, (size_t)nc * sizeof *nn);
        if (nn) out->names = nn;
        void **no = realloc(out->owned, (size_t)nc * sizeof *no);
        if (no) out->owned = no;
        if (!nt || !nn || !no) return sdb_fail(err, SDB_ENOMEM, "out of memory");
        out->cap = nc;
    }
    sdb_dtype want = t->dtype;
    if (is_float(t->dtype)) {
        static const sdb_dtype cycle[3] = {SDB_DT_F32, SDB_DT_F16, SDB_DT_BF16};
        switch (o->dtype) {
        case TS_KEEP: break;
        case TS_F32: want = SDB_DT_F32; break;
        case TS_F16: want = SDB_DT_F16; break;
        case TS_BF16: want = SDB_DT_BF16; break;
        case TS_MIXED: want = cycle[out->n_float % 3]; break;
        }
        out->n_float++;
    }
    sdb_st_wtensor *w = &out->t[out->n];
    memset(w, 0, sizeof *w);
    out->names[out->n] = strdup(name);
    out->owned[out->n] = NULL;
    if (!out->names[out->n]) return sdb_fail(err, SDB_ENOMEM, "out of memory");
    w->name = out->names[out->n];
    w->dtype = want;
    w->ndim = ndim;
    memcpy(w->shape, shape, (size_t)ndim * sizeof *shape);
    out->n++;
    if (want == t->dtype) { w->data = t->data; return 0; }
    const size_t n = (size_t)t->numel;
    float *f = malloc(n * sizeof(float) + 1);
    if (!f) return sdb_fail(err, SDB_ENOMEM, "out of memory converting '%s'", t->name);
    int rc = sdb_st_to_f32(t, f, err); /* exact for F16 / BF16; F64 rounds once */
    if (rc) { free(f); return rc; }
    if (want == SDB_DT_F32) { out->owned[out->n - 1] = f; w->data = f; return 0; }
    uint16_t *h = malloc(n * 2 + 1);
    if (!h) { free(f); return sdb_fail(err, SDB_ENOMEM, "out of memory converting '%s'", t->name); }
    if (want == SDB_DT_F16) sdb_f32_to_f16_array(f, h, n);
    else for (size_t i = 0; i < n; i++) h[i] = ts_f32_to_bf16(f[i]);
    free(f);
    out->owned[out->n - 1] = h;
    w->data = h;
    return 0;
}

/* One diffusers component file: every tensor under prefix + its LDM name. */
static int ts_component(ts_out *out, const ts_opts *o, const sdb_st *st, const char *component,
                        const sdb_config *cfg, const char *prefix, sdb_err *err)
{
    sdb_ldm_unet_layout ul;
    sdb_ldm_vae_layout vl = {0};
    int rc = 0;
    if (!strcmp(component, "unet")) {
        if ((rc = sdb_ldm_unet_layout_from_config(&ul, cfg, err))) return rc;
    } else if (!strcmp(component, "vae")) {
        long long boc[SDB_LDM_MAX_BLOCKS + 1];
        if ((rc = sdb_config_int_array(cfg, "block_out_channels", boc, SDB_LDM_MAX_BLOCKS + 1, &vl.n_blocks, err))) return rc;
    }
    for (int i = 0; i < st->n && !rc; i++) {
        const sdb_st_tensor *t = &st->tensors[i];
        char mapped[512], full[600];
        int ndim = t->ndim;
        int64_t shape[SDB_MAX_DIMS];
        memcpy(shape, t->shape, sizeof shape);
        int m = 0;
        if (!strcmp(component, "unet")) m = sdb_ldm_unet_name_ctx(&ul, t->name, mapped, sizeof mapped);
        else if (!strcmp(component, "vae")) {
            m = sdb_ldm_vae_name_ctx(&vl, t->name, mapped, sizeof mapped);
            if (!m && sdb_ldm_is_conv_linear(t->name) && ndim == 2) { shape[2] = shape[3] = 1; ndim = 4; }
        } else snprintf(mapped, sizeof mapped, "%s", t->name);
        if (m) return sdb_fail(err, SDB_EFORMAT, "%s: tensor '%s' has no LDM name (not an SD 1.x %s?)", st->path, t->name, component);
        snprintf(full, sizeof full, "%s%s", prefix, mapped);
        rc = ts_add(out, o, t, full, ndim, shape, err);
    }
    return rc;
}

/* Opens <dir>/<sub>/<base>.safetensors (or the .fp16 variant) and <dir>/<sub>/config.json. */
static int ts_open_component(const char *dir, const char *sub, const char *base, sdb_st **st, sdb_config *cfg, sdb_err *err)
{
    char p[4300];
    const char *variants[2] = {"", ".fp16"};
    *st = NULL;
    for (int k = 0; k < 2 && !*st; k++) {
        snprintf(p, sizeof p, "%s/%s%s%s%s.safetensors", dir, sub, sub[0] ? "/" : "", base, variants[k]);
        if (sdb_file_exists(p)) { int rc = sdb_st_open(st, p, err); if (rc) return rc; }
    }
    if (!*st) return sdb_fail(err, SDB_ENOTFOUND, "%s/%s: no %s.safetensors", dir, sub, base);
    snprintf(p, sizeof p, "%s/%s%sconfig.json", dir, sub, sub[0] ? "/" : "");
    int rc = sdb_config_load(cfg, p, err);
    if (rc) { sdb_st_close(*st); *st = NULL; }
    return rc;
}

static int ts_convert(const char *src, const char *dst, const ts_opts *o, sdb_err *err)
{
    ts_out out = {0};
    sdb_st *files[3] = {NULL, NULL, NULL};
    sdb_config cfgs[3];
    memset(cfgs, 0, sizeof cfgs);
    int rc = 0;
    if (!sdb_is_dir(src)) { /* a file: a dtype copy */
        if ((rc = sdb_st_open(&files[0], src, err))) return rc;
        for (int i = 0; i < files[0]->n && !rc; i++)
            rc = ts_add(&out, o, &files[0]->tensors[i], files[0]->tensors[i].name, files[0]->tensors[i].ndim,
                        files[0]->tensors[i].shape, err);
    } else if (o->vae_only) {
        char sub[4300];
        snprintf(sub, sizeof sub, "%s/vae", src);
        rc = ts_open_component(src, sdb_is_dir(sub) ? "vae" : "", "diffusion_pytorch_model",
                               &files[0], &cfgs[0], err);
        if (!rc) rc = ts_component(&out, o, files[0], "vae", &cfgs[0], o->vae_prefix ? o->vae_prefix : "", err);
    } else {
        static const char *const subs[3] = {"unet", "vae", "text_encoder"};
        static const char *const bases[3] = {"diffusion_pytorch_model", "diffusion_pytorch_model", "model"};
        static const char *const prefixes[3] = {SDB_LDM_UNET_PREFIX, SDB_LDM_VAE_PREFIX, SDB_LDM_TEXT_PREFIX};
        for (int c = 0; c < 3 && !rc; c++) {
            rc = ts_open_component(src, subs[c], bases[c], &files[c], &cfgs[c], err);
            if (!rc) rc = ts_component(&out, o, files[c], subs[c], &cfgs[c], prefixes[c], err);
        }
    }
    if (!rc) rc = sdb_st_write(dst, out.t, out.n, NULL, NULL, 0, err);
    ts_out_free(&out);
    for (int c = 0; c < 3; c++) {
        if (files[c]) sdb_st_close(files[c]);
        if (cfgs[c].root) sdb_config_free(&cfgs[c]);
    }
    return rc;
}

#ifndef TO_SINGLE_FILE_NO_MAIN
static void usage(FILE *f)
{
    fprintf(f,
        "usage: sdbatch-to-single-file SRC OUT.safetensors [--dtype keep|f32|f16|bf16|mixed]\n"
        "                              [--vae-only [--vae-prefix P]]\n"
        "\n"
        "SRC a diffusers SD 1.x folder: writes its single-file checkpoint (CompVis/LDM names, as\n"
        "AUTOMATIC1111 and ComfyUI load); with --vae-only just its VAE (names encoder.*/decoder.*/\n"
        "quant_conv.*, after --vae-prefix, e.g. first_stage_model.). SRC a .safetensors file: a copy.\n"
        "  --dtype keep   each tensor as it is (default)\n"
        "  --dtype f32    widened exactly;  f16, bf16: rounded to nearest even\n"
        "  --dtype mixed  floating tensors in turn F32, F16, BF16\n");
}

int main(int argc, char **argv)
{
    ts_opts o = {TS_KEEP, 0, NULL};
    const char *pos[2] = {NULL, NULL};
    int np = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); return 0; }
        if (!strcmp(a, "--vae-only")) { o.vae_only = 1; continue; }
        if (!strcmp(a, "--vae-prefix") && i + 1 < argc) { o.vae_prefix = argv[++i]; continue; }
        if (!strcmp(a, "--dtype") && i + 1 < argc) {
            const char *d = argv[++i];
            if (!strcmp(d, "keep")) o.dtype = TS_KEEP;
            else if (!strcmp(d, "f32")) o.dtype = TS_F32;
            else if (!strcmp(d, "f16")) o.dtype = TS_F16;
            else if (!strcmp(d, "bf16")) o.dtype = TS_BF16;
            else if (!strcmp(d, "mixed")) o.dtype = TS_MIXED;
            else { fprintf(stderr, "sdbatch-to-single-file: unknown --dtype '%s'\n", d); return 2; }
            continue;
        }
        if (a[0] == '-' || np == 2) { fprintf(stderr, "sdbatch-to-single-file: unexpected argument '%s'\n", a); usage(stderr); return 2; }
        pos[np++] = a;
    }
    if (np != 2) { usage(stderr); return 2; }
    sdb_err err = {0};
    if (ts_convert(pos[0], pos[1], &o, &err)) {
        fprintf(stderr, "sdbatch-to-single-file: error: %s\n", err.msg);
        return 1;
    }
    printf("wrote %s\n", pos[1]);
    return 0;
}
#endif
