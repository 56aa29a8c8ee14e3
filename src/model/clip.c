/*
 * clip.c — transformers' CLIPTextModel forward (see clip.h). Owns: the model struct, and for
 * sdb_clip_load_dir the sdb_weights (file mapping + widened F16 copies).
 *
 * Arithmetic follows transformers' order where it is cheap to: the residual adds are
 * x + (y + bias) (projection into a temporary, then sdb_add), as torch computes
 * `residual + hidden_states`. Linears use sdb_gemm_linear (a fixed block grid of single-threaded
 * sgemms), so results are bit-identical for any thread count; attention is sdb_attention (scale
 * applied to q·k, masked scores get exactly zero weight, which is what adding float32-min gives).
 * The linear weights and the embedding tables are sdb_wmat (half in the weights' f16 mode, widened
 * exactly: by the GEMM per call, by emb_row per looked-up row).
 */
#include "sdb/clip.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sdb/config.h"
#include "sdb/fp16.h"
#include "sdb/fsutil.h"
#include "sdb/ops/activation.h"
#include "sdb/ops/attention.h"
#include "sdb/ops/conv.h"
#include "sdb/ops/norm.h"

typedef struct { sdb_wmat w; const float *b; } clip_lin;

typedef struct {
    const float *ln1_w, *ln1_b, *ln2_w, *ln2_b;
    clip_lin q, k, v, o, fc1, fc2;
} clip_layer;

struct sdb_clip {
    sdb_clip_config cfg;
    sdb_weights *w;        /* borrowed, or own_w */
    sdb_weights own_w;
    int owns_w;
    sdb_wmat tok_emb, pos_emb; /* [vocab, H], [positions, H] */
    const float *lnf_w, *lnf_b;
    clip_layer *layers;
};

int sdb_clip_config_load(sdb_clip_config *cfg, const char *config_path, sdb_err *err)
{
    memset(cfg, 0, sizeof *cfg);
    sdb_config c;
    int rc = sdb_config_load(&c, config_path, err);
    if (rc) return rc;
    rc = sdb_clip_config_parse(cfg, &c, err);
    sdb_config_free(&c);
    return rc;
}

int sdb_clip_config_parse(sdb_clip_config *cfg, const sdb_config *cp, sdb_err *err)
{
    memset(cfg, 0, sizeof *cfg);
    const sdb_config c = *cp;
    const char *config_path = c.path;
    int rc = 0;
    /* defaults: transformers' CLIPTextConfig */
    if (!rc) rc = sdb_config_int_range(&c, "vocab_size", 49408, 1, 100000000, &cfg->vocab_size, err);
    if (!rc) rc = sdb_config_int_range(&c, "hidden_size", 512, 1, 65536, &cfg->hidden_size, err);
    if (!rc) rc = sdb_config_int_range(&c, "intermediate_size", 2048, 1, 1 << 20, &cfg->intermediate_size, err);
    if (!rc) rc = sdb_config_int_range(&c, "num_hidden_layers", 12, 1, 1000, &cfg->num_hidden_layers, err);
    if (!rc) rc = sdb_config_int_range(&c, "num_attention_heads", 8, 1, 65536, &cfg->num_attention_heads, err);
    if (!rc) rc = sdb_config_int_range(&c, "max_position_embeddings", 77, 1, 1 << 16, &cfg->max_position_embeddings, err);
    double eps = 1e-5;
    if (!rc) rc = sdb_config_double(&c, "layer_norm_eps", 1e-5, &eps, err);
    if (!rc && !(eps > 0 && eps < 1)) rc = sdb_fail(err, SDB_EFORMAT, "%s: 'layer_norm_eps' is %g, expected a small positive number", config_path, eps);
    cfg->layer_norm_eps = (float)eps;
    const char *act = NULL;
    if (!rc) rc = sdb_config_string(&c, "hidden_act", "quick_gelu", &act, err);
    if (!rc) {
        if (!strcmp(act, "quick_gelu")) cfg->hidden_act = SDB_CLIP_ACT_QUICK_GELU;
        else if (!strcmp(act, "gelu")) cfg->hidden_act = SDB_CLIP_ACT_GELU;
        else rc = sdb_fail(err, SDB_EUNSUPPORTED, "%s: hidden_act '%s' is not supported (quick_gelu or gelu)", config_path, act);
    }
    if (!rc && cfg->hidden_size % cfg->num_attention_heads)
        rc = sdb_fail(err, SDB_EFORMAT, "%s: hidden_size %d is not a multiple of num_attention_heads %d",
                      config_path, cfg->hidden_size, cfg->num_attention_heads);
    return rc;
}

/* "text_model.encoder.layers.<l>.<what>": a vector of n values, or a linear layer (out x in) */
static int get_vec(sdb_weights *w, const float **out, int64_t n, int l, const char *what, sdb_err *err)
{
    const int64_t shape[1] = {n};
    return sdb_weights_getf(w, out, err, 1, shape, "text_model.encoder.layers.%d.%s", l, what);
}
static int get_lin(sdb_weights *w, clip_lin *lin, int out, int in, int l, const char *what, sdb_err *err)
{
    char name[256];
    snprintf(name, sizeof name, "text_model.encoder.layers.%d.%s", l, what);
    return sdb_weights_linear(w, &lin->w, &lin->b, out, in, name, err);
}

static int load_weights(sdb_clip *m, sdb_err *err)
{
    const sdb_clip_config *c = &m->cfg;
    sdb_weights *w = m->w;
    const int H = c->hidden_size, I = c->intermediate_size;
    const int64_t s_tok[2] = {c->vocab_size, H}, s_pos[2] = {c->max_position_embeddings, H}, s_h[1] = {H};
    int rc = sdb_weights_get_mat(w, "text_model.embeddings.token_embedding.weight", 2, s_tok, &m->tok_emb, err);
    if (!rc) rc = sdb_weights_get_mat(w, "text_model.embeddings.position_embedding.weight", 2, s_pos, &m->pos_emb, err);
    if (!rc) rc = sdb_weights_get(w, "text_model.final_layer_norm.weight", 1, s_h, &m->lnf_w, err);
    if (!rc) rc = sdb_weights_get(w, "text_model.final_layer_norm.bias", 1, s_h, &m->lnf_b, err);
    for (int l = 0; l < c->num_hidden_layers && !rc; l++) {
        clip_layer *y = &m->layers[l];
        if (!rc) rc = get_vec(w, &y->ln1_w, H, l, "layer_norm1.weight", err);
        if (!rc) rc = get_vec(w, &y->ln1_b, H, l, "layer_norm1.bias", err);
        if (!rc) rc = get_lin(w, &y->q, H, H, l, "self_attn.q_proj", err);
        if (!rc) rc = get_lin(w, &y->k, H, H, l, "self_attn.k_proj", err);
        if (!rc) rc = get_lin(w, &y->v, H, H, l, "self_attn.v_proj", err);
        if (!rc) rc = get_lin(w, &y->o, H, H, l, "self_attn.out_proj", err);
        if (!rc) rc = get_vec(w, &y->ln2_w, H, l, "layer_norm2.weight", err);
        if (!rc) rc = get_vec(w, &y->ln2_b, H, l, "layer_norm2.bias", err);
        if (!rc) rc = get_lin(w, &y->fc1, I, H, l, "mlp.fc1", err);
        if (!rc) rc = get_lin(w, &y->fc2, H, I, l, "mlp.fc2", err);
    }
    return rc;
}

/* dst[0..H) (+)= row r of an embedding table (half rows widened, exactly) */
static void emb_row(const sdb_wmat *e, size_t r, int H, int add, float *dst)
{
    for (int j = 0; j < H; j++) {
        size_t i = r * (size_t)H + (size_t)j;
        float v = e->f32 ? e->f32[i] : sdb_f16_to_f32(e->f16[i]);
        dst[j] = add ? dst[j] + v : v;
    }
}

/* cfg_path or, when it is NULL, cfg */
static int clip_build(sdb_clip *m, const char *config_path, const sdb_config *cfg, sdb_err *err)
{
    int rc = config_path ? sdb_clip_config_load(&m->cfg, config_path, err) : sdb_clip_config_parse(&m->cfg, cfg, err);
    if (rc) return rc;
    m->layers = calloc((size_t)m->cfg.num_hidden_layers, sizeof *m->layers);
    if (!m->layers) return sdb_fail(err, SDB_ENOMEM, "out of memory");
    return load_weights(m, err);
}

static int clip_load(sdb_clip **out, const char *config_path, const sdb_config *cfg, sdb_weights *w, sdb_err *err)
{
    *out = NULL;
    sdb_clip *m = calloc(1, sizeof *m);
    if (!m) return sdb_fail(err, SDB_ENOMEM, "out of memory");
    m->w = w;
    int rc = clip_build(m, config_path, cfg, err);
    if (rc) { sdb_clip_free(m); return rc; }
    *out = m;
    return 0;
}

int sdb_clip_load(sdb_clip **out, const char *config_path, sdb_weights *w, sdb_err *err)
{
    return clip_load(out, config_path, NULL, w, err);
}

int sdb_clip_load_config(sdb_clip **out, const sdb_config *cfg, sdb_weights *w, sdb_err *err)
{
    return clip_load(out, NULL, cfg, w, err);
}

int sdb_clip_load_dir(sdb_clip **out, const char *dir, sdb_err *err)
{
    *out = NULL;
    char *cfg = sdb_path_join(dir, "config.json");
    char *p32 = sdb_path_join(dir, "model.safetensors");
    char *p16 = sdb_path_join(dir, "model.fp16.safetensors");
    sdb_clip *m = calloc(1, sizeof *m);
    int rc = (!cfg || !p32 || !p16 || !m) ? sdb_fail(err, SDB_ENOMEM, "out of memory") : 0;
    if (!rc && !sdb_is_dir(dir)) rc = sdb_fail(err, SDB_ENOTFOUND, "%s: text encoder folder not found", dir);
    if (!rc && !sdb_file_exists(cfg)) rc = sdb_fail(err, SDB_ENOTFOUND, "%s: missing (the text encoder's config)", cfg);
    const char *wpath = !rc && sdb_file_exists(p32) ? p32 : !rc && sdb_file_exists(p16) ? p16 : NULL;
    if (!rc && !wpath)
        rc = sdb_fail(err, SDB_ENOTFOUND, "%s: no text encoder weights (model.safetensors or model.fp16.safetensors)", dir);
    if (!rc) rc = sdb_weights_open(&m->own_w, wpath, "text_encoder", err);
    if (!rc) {
        m->owns_w = 1;
        m->w = &m->own_w;
        rc = clip_build(m, cfg, NULL, err);
    }
    free(cfg);
    free(p32);
    free(p16);
    if (rc) { sdb_clip_free(m); return rc; }
    *out = m;
    return 0;
}

/* Old single-file layout: the transformers names without their "text_model." part. */
static int strip_text_model(const char *name, char *out, size_t outsz)
{
    const char *p = strncmp(name, "text_model.", 11) == 0 ? name + 11 : name;
    if (strlen(p) >= outsz) return -1;
    strcpy(out, p);
    return 0;
}

int sdb_clip_wrap_single_file(sdb_weights *w, sdb_st *st, sdb_err *err)
{
    static const char *prefix = "cond_stage_model.transformer.";
    sdb_weights_wrap(w, st, "text_encoder", prefix, NULL);
    if (sdb_weights_find(w, "text_model.embeddings.token_embedding.weight")) return 0;
    sdb_weights_wrap(w, st, "text_encoder", prefix, strip_text_model);
    if (sdb_weights_find(w, "text_model.embeddings.token_embedding.weight")) return 0;
    return sdb_fail(err, SDB_ENOTFOUND,
                    "%s: no text encoder in this checkpoint (looked for '%stext_model.embeddings.token_embedding.weight' "
                    "and '%sembeddings.token_embedding.weight')", st->path, prefix, prefix);
}

void sdb_clip_free(sdb_clip *m)
{
    if (!m) return;
    if (m->owns_w) sdb_weights_free(&m->own_w);
    free(m->layers);
    free(m);
}

const sdb_clip_config *sdb_clip_get_config(const sdb_clip *m) { return &m->cfg; }
size_t sdb_clip_weight_bytes(const sdb_clip *m) { return m->w ? m->w->bytes : 0; }

int sdb_clip_encode(sdb_clip *m, const int32_t *ids, int B, float *out, sdb_arena *scratch, sdb_err *err)
{
    return sdb_clip_encode_ex(m, ids, B, m->cfg.max_position_embeddings, out, NULL, scratch, err);
}

/* y [M, out] = x [M, in] · Wᵀ + b */
static int linear(clip_lin l, const float *x, int M, int in, int out, float *y, sdb_arena *scratch, sdb_err *err)
{
    int rc = sdb_gemm_linear(x, M, in, l.w, l.b, out, y, 0, scratch);
    return rc ? sdb_fail(err, rc, "text encoder: scratch memory exhausted (a %dx%d weight)", out, in) : 0;
}

int sdb_clip_encode_ex(sdb_clip *m, const int32_t *ids, int B, int S, float *out, float *hidden,
                       sdb_arena *scratch, sdb_err *err)
{
    const sdb_clip_config *c = &m->cfg;
    if (B < 1 || S < 1 || S > c->max_position_embeddings)
        return sdb_fail(err, SDB_EINVAL, "text encoder: batch %d x %d tokens: need B >= 1 and 1 <= tokens <= %d",
                        B, S, c->max_position_embeddings);
    for (long i = 0; i < (long)B * S; i++)
        if (ids[i] < 0 || ids[i] >= c->vocab_size)
            return sdb_fail(err, SDB_EINVAL, "text encoder: token id %d (row %ld, position %ld) is outside the vocabulary (0..%d)",
                            ids[i], i / S, i % S, c->vocab_size - 1);
    const int H = c->hidden_size, I = c->intermediate_size, heads = c->num_attention_heads, hd = H / heads;
    const int M = B * S;
    const size_t MH = (size_t)M * H;
    const float scale = (float)pow((double)hd, -0.5); /* self.scale = head_dim**-0.5 */
    size_t mark = sdb_arena_mark(scratch);
    float *x = sdb_arena_floats(scratch, MH), *h = sdb_arena_floats(scratch, MH);
    float *q = sdb_arena_floats(scratch, MH), *k = sdb_arena_floats(scratch, MH);
    float *v = sdb_arena_floats(scratch, MH), *a = sdb_arena_floats(scratch, MH);
    float *f = sdb_arena_floats(scratch, (size_t)M * I);
    if (!x || !h || !q || !k || !v || !a || !f) {
        sdb_arena_reset(scratch, mark);
        return sdb_fail(err, SDB_ENOMEM, "text encoder: scratch memory exhausted (%zu floats for batch %d)",
                        5 * MH + (size_t)M * I, B);
    }

    /* embeddings: token + position */
    for (int r = 0; r < M; r++) {
        float *xr = x + (size_t)r * H;
        emb_row(&m->tok_emb, (size_t)ids[r], H, 0, xr);
        emb_row(&m->pos_emb, (size_t)(r % S), H, 1, xr);
    }
    if (hidden) memcpy(hidden, x, MH * sizeof(float));

    int rc = 0;
    for (int l = 0; l < c->num_hidden_layers && !rc; l++) {
        const clip_layer *y = &m->layers[l];
        /* self-attention block */
        sdb_layernorm(x, M, H, y->ln1_w, y->ln1_b, c->layer_norm_eps, h);
        rc = linear(y->q, h, M, H, H, q, scratch, err);
        if (!rc) rc = linear(y->k, h, M, H, H, k, scratch, err);
        if (!rc) rc = linear(y->v, h, M, H, H, v, scratch, err);
        for (int b = 0; b < B && !rc; b++) {
            size_t o = (size_t)b * S * H;
            if (sdb_attention(q + o, H, k + o, H, v + o, H, a + o, H, S, S, heads, hd, scale, 1, scratch))
                rc = sdb_fail(err, SDB_ENOMEM, "text encoder: scratch memory exhausted in attention");
        }
        if (!rc) rc = linear(y->o, a, M, H, H, h, scratch, err);
        if (rc) break;
        sdb_add(x, h, MH);
        /* MLP block */
        sdb_layernorm(x, M, H, y->ln2_w, y->ln2_b, c->layer_norm_eps, h);
        if ((rc = linear(y->fc1, h, M, H, I, f, scratch, err))) break;
        if (c->hidden_act == SDB_CLIP_ACT_QUICK_GELU) sdb_quick_gelu(f, (size_t)M * I);
        else sdb_gelu(f, (size_t)M * I);
        if ((rc = linear(y->fc2, f, M, I, H, h, scratch, err))) break;
        sdb_add(x, h, MH);
        if (hidden) memcpy(hidden + (size_t)(l + 1) * MH, x, MH * sizeof(float));
    }
    if (!rc && out) sdb_layernorm(x, M, H, m->lnf_w, m->lnf_b, c->layer_norm_eps, out);
    sdb_arena_reset(scratch, mark);
    return rc;
}
