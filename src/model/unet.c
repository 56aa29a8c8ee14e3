/*
 * unet.c — diffusers UNet2DConditionModel (SD 1.x / 2.x family) forward in float32 (see unet.h).
 *
 * Mirrors diffusers 0.30.3: unet_2d_condition.py (time_proj / time_embedding / conv_in, down path
 * collecting skip states, mid block, up path popping them, conv_norm_out + SiLU + conv_out),
 * unet_2d_blocks.py (CrossAttnDownBlock2D, DownBlock2D, UNetMidBlock2DCrossAttn, UpBlock2D,
 * CrossAttnUpBlock2D), resnet.py (ResnetBlock2D, Downsample2D, Upsample2D), transformer_2d.py +
 * attention.py (Transformer2DModel, BasicTransformerBlock with GEGLU feed-forward).
 *
 * Memory: three "work" buffers sized for the largest activation of the up path, plus the skip
 * states (persistent until the end of the forward, allocated as the down path produces them);
 * every layer's own temporaries are taken above them and released (mark/reset) when it returns.
 * Transformer activations are token-major [B*HW, C]; the feed-forward runs in row chunks so its
 * 8C-wide hidden stays bounded. Every GEMM goes through sdb_gemm / sdb_conv2d (fixed block grids),
 * attention through sdb_attention: results do not depend on the thread count. Weight matrices are
 * sdb_wmat (float32, or half when the weights are in f16 mode: see weights.h), which the ops widen
 * exactly as each layer runs; biases and norm parameters are float32.
 */
#include "sdb/unet.h"
#include "sdb/ops/activation.h"
#include "sdb/ops/attention.h"
#include "sdb/ops/conv.h"
#include "sdb/ops/winograd.h"
#include "sdb/ops/groupnorm.h"
#include "sdb/ops/norm.h"
#include "sdb/ops/resample.h"
#include "sdb/profile.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_BLOCKS 8
#define MAX_LAYERS 8   /* resnets per block (layers_per_block + 1 in the up path) */
#define MAX_TBLOCKS 4  /* transformer blocks per Transformer2DModel */
#define FF_ROWS 1024   /* feed-forward row chunk */

typedef struct { sdb_wmat w; const float *b; } lin_t;
typedef struct { const float *g, *b; } norm_t;

typedef struct {
    int cin, cout;
    norm_t n1, n2;
    sdb_conv2d c1, c2;
    lin_t temb;
    int has_sc;
    sdb_conv2d sc;
} resnet_t;

typedef struct {
    norm_t n1, n2, n3;
    sdb_wmat q1, k1, v1;
    lin_t o1;
    sdb_wmat q2, k2, v2;
    lin_t o2;
    lin_t ff1, ff2;
} tblock_t;

typedef struct {
    int C, heads, head_dim, nblk;
    norm_t norm;
    lin_t proj_in, proj_out;
    tblock_t blk[MAX_TBLOCKS];
} xformer_t;

typedef struct {
    int has_attn, nlayers, has_sampler;
    int cout;
    resnet_t res[MAX_LAYERS];
    xformer_t att[MAX_LAYERS];
    sdb_conv2d sampler; /* downsamplers.0.conv (stride 2) or upsamplers.0.conv */
} block_t;

struct sdb_unet {
    int in_ch, out_ch, nblocks, lpb, groups, ctx_dim, sample_size, tdim, c0;
    int flip_sin_to_cos;
    double freq_shift;
    float eps;
    int boc[MAX_BLOCKS];
    sdb_conv2d conv_in, conv_out;
    norm_t norm_out;
    lin_t t1, t2;
    block_t down[MAX_BLOCKS], up[MAX_BLOCKS];
    resnet_t mid_res[2];
    xformer_t mid_att;
    size_t last_peak;
    sdb_unet_debug_fn dbg;
    void *dbg_ctx;
    sdb_profile *prof;      /* per-op-kind counters (sdb_unet_set_profile), NULL = off */
    int conv_algo;          /* SDB_CONV_* (sdb_unet_set_conv), default SDB_CONV_AUTO */
    /* Cross-attention keys and values of the last context (the text embeddings, constant over a
     * job's steps): every transformer block's k, v [B, L, C] in forward order, then the context
     * they were computed from; valid after a complete forward, reused while the context's bytes,
     * B and L stay the same. */
    float *kv;
    size_t kv_cap;          /* floats allocated */
    int kv_B, kv_L, kv_valid;
    /* Kept Winograd filters (sdb_unet_set_filter_memory): each conv's U is made the first time a
     * forward runs the conv by Winograd, while the total stays within keep_budget bytes; the
     * convs holding one, to free them. */
    size_t keep_budget, keep_used;
    sdb_conv2d *kept[4 * MAX_BLOCKS * (2 * MAX_LAYERS + 1) + 8];
    int nkept;
    /* ... and, in the same budget, linear layers' weights as the thin-product kernel's panels
     * (sdb_linear_make_panels): found by their weights' address */
    struct { const void *w; float *panels; } klin[1024];
    int nklin;
};

/* ------------------------------------------------------------------------------------------ */
/* config                                                                                       */

static int cfg_fail(const sdb_config *c, sdb_err *err, const char *key, const char *what)
{
    return sdb_fail(err, SDB_EUNSUPPORTED, "%s: field '%s': %s (sdbatch supports the SD 1.x/2.x "
                    "UNet2DConditionModel family)", c->path ? c->path : "unet config", key, what);
}

/* key must be absent/null, or equal to a "neutral" value */
static int cfg_require_null(const sdb_config *c, const char *key, sdb_err *err)
{
    if (!sdb_config_has(c, key)) return 0;
    return cfg_fail(c, err, key, "must be null");
}
static int cfg_require_false(const sdb_config *c, const char *key, sdb_err *err)
{
    json_t *v = json_object_get(c->root, key);
    if (!v || json_is_null(v) || json_is_false(v)) return 0;
    if (json_is_array(v)) {
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e) if (!json_is_false(e)) return cfg_fail(c, err, key, "must be false");
        return 0;
    }
    return cfg_fail(c, err, key, "must be false");
}
static int cfg_require_str(const sdb_config *c, const char *key, const char *want, sdb_err *err)
{
    const char *s;
    int rc = sdb_config_string(c, key, want, &s, err);
    if (rc) return rc;
    if (strcmp(s, want) != 0) {
        char msg[256];
        snprintf(msg, sizeof msg, "'%s' is not supported (only '%s')", s, want);
        return cfg_fail(c, err, key, msg);
    }
    return 0;
}
static int cfg_require_num(const sdb_config *c, const char *key, double want, sdb_err *err)
{
    double d;
    int rc = sdb_config_double(c, key, want, &d, err);
    if (rc) return rc;
    if (d != want) {
        char msg[128];
        snprintf(msg, sizeof msg, "%g is not supported (only %g)", d, want);
        return cfg_fail(c, err, key, msg);
    }
    return 0;
}
/* int, or a list with one int per block (diffusers expands an int to every block) */
static int cfg_int_or_list(const sdb_config *c, const char *key, int n, int def, int *vals, sdb_err *err)
{
    json_t *v = json_object_get(c->root, key);
    if (!v || json_is_null(v)) {
        for (int i = 0; i < n; i++) vals[i] = def;
        return 0;
    }
    if (json_is_integer(v)) {
        for (int i = 0; i < n; i++) vals[i] = (int)json_integer_value(v);
        return 0;
    }
    if (json_is_array(v)) {
        if ((int)json_array_size(v) != n) return cfg_fail(c, err, key, "list length differs from the number of blocks");
        for (int i = 0; i < n; i++) {
            json_t *e = json_array_get(v, i);
            if (!json_is_integer(e)) return cfg_fail(c, err, key, "list entries must be integers");
            vals[i] = (int)json_integer_value(e);
        }
        return 0;
    }
    return cfg_fail(c, err, key, "must be an integer or a list of integers");
}

/* ------------------------------------------------------------------------------------------ */
/* weights                                                                                      */

typedef struct {
    sdb_weights *w;
    sdb_err *err;
} ld_t;

/* "<pfx>.<nm>" or just "<nm>" at the top level */
static const char *join(char *buf, size_t n, const char *pfx, const char *nm)
{
    if (pfx[0]) snprintf(buf, n, "%s.%s", pfx, nm);
    else snprintf(buf, n, "%s", nm);
    return buf;
}

#define TRY(x) do { int rc_ = (x); if (rc_) return rc_; } while (0)

/* "<pfx>.<nm>.weight" / ".bias" of C values each (norms) */
static int load_norm(ld_t *L, norm_t *n, int C, const char *pfx, const char *nm)
{
    char name[300];
    const int64_t s[1] = {C};
    join(name, sizeof name, pfx, nm);
    TRY(sdb_weights_getf(L->w, &n->g, L->err, 1, s, "%s.weight", name));
    return sdb_weights_getf(L->w, &n->b, L->err, 1, s, "%s.bias", name);
}
static int load_lin(ld_t *L, lin_t *l, int out, int in, int bias, const char *pfx, const char *nm)
{
    char name[300];
    l->b = NULL;
    return sdb_weights_linear(L->w, &l->w, bias ? &l->b : NULL, out, in, join(name, sizeof name, pfx, nm), L->err);
}
/* a bias-free projection (attention q, k, v) */
static int load_mat(ld_t *L, sdb_wmat *m, int out, int in, const char *pfx, const char *nm)
{
    char name[300];
    return sdb_weights_linear(L->w, m, NULL, out, in, join(name, sizeof name, pfx, nm), L->err);
}
/* proj_in / proj_out: a linear layer, or (use_linear_projection false) a 1x1 conv [C, C, 1, 1]
 * holding the same matrix */
static int load_proj(ld_t *L, lin_t *l, int C, int linear_proj, const char *pfx, const char *nm)
{
    if (linear_proj) return load_lin(L, l, C, C, 1, pfx, nm);
    const int64_t ws[4] = {C, C, 1, 1}, bs[1] = {C};
    char name[300];
    snprintf(name, sizeof name, "%s.%s.weight", pfx, nm);
    TRY(sdb_weights_get_mat(L->w, name, 4, ws, &l->w, L->err));
    return sdb_weights_getf(L->w, &l->b, L->err, 1, bs, "%s.%s.bias", pfx, nm);
}
static int load_conv(ld_t *L, sdb_conv2d *c, int cin, int cout, int k, int stride, int pad,
                     const char *pfx, const char *nm)
{
    char name[300];
    return sdb_weights_conv2d(L->w, c, cin, cout, k, stride, pad, join(name, sizeof name, pfx, nm), L->err);
}

static int load_resnet(ld_t *L, resnet_t *r, int cin, int cout, int tdim, const char *pfx)
{
    r->cin = cin; r->cout = cout;
    TRY(load_norm(L, &r->n1, cin, pfx, "norm1"));
    TRY(load_conv(L, &r->c1, cin, cout, 3, 1, 1, pfx, "conv1"));
    TRY(load_lin(L, &r->temb, cout, tdim, 1, pfx, "time_emb_proj"));
    TRY(load_norm(L, &r->n2, cout, pfx, "norm2"));
    TRY(load_conv(L, &r->c2, cout, cout, 3, 1, 1, pfx, "conv2"));
    r->has_sc = cin != cout;
    if (r->has_sc) TRY(load_conv(L, &r->sc, cin, cout, 1, 1, 0, pfx, "conv_shortcut"));
    return 0;
}

static int load_xformer(ld_t *L, xformer_t *x, int C, int heads, int nblk, int ctx_dim, int linear_proj,
                        const char *pfx)
{
    if (heads <= 0 || C % heads != 0)
        return sdb_fail(L->err, SDB_EUNSUPPORTED, "%s: %d channels cannot be split into %d attention heads "
                        "(config field 'attention_head_dim')", pfx, C, heads);
    x->C = C; x->heads = heads; x->head_dim = C / heads; x->nblk = nblk;
    TRY(load_norm(L, &x->norm, C, pfx, "norm"));
    TRY(load_proj(L, &x->proj_in, C, linear_proj, pfx, "proj_in"));
    for (int k = 0; k < nblk; k++) {
        char bp[256];
        snprintf(bp, sizeof bp, "%s.transformer_blocks.%d", pfx, k);
        tblock_t *b = &x->blk[k];
        TRY(load_norm(L, &b->n1, C, bp, "norm1"));
        TRY(load_mat(L, &b->q1, C, C, bp, "attn1.to_q"));
        TRY(load_mat(L, &b->k1, C, C, bp, "attn1.to_k"));
        TRY(load_mat(L, &b->v1, C, C, bp, "attn1.to_v"));
        TRY(load_lin(L, &b->o1, C, C, 1, bp, "attn1.to_out.0"));
        TRY(load_norm(L, &b->n2, C, bp, "norm2"));
        TRY(load_mat(L, &b->q2, C, C, bp, "attn2.to_q"));
        TRY(load_mat(L, &b->k2, C, ctx_dim, bp, "attn2.to_k"));
        TRY(load_mat(L, &b->v2, C, ctx_dim, bp, "attn2.to_v"));
        TRY(load_lin(L, &b->o2, C, C, 1, bp, "attn2.to_out.0"));
        TRY(load_norm(L, &b->n3, C, bp, "norm3"));
        TRY(load_lin(L, &b->ff1, 8 * C, C, 1, bp, "ff.net.0.proj"));
        TRY(load_lin(L, &b->ff2, C, 4 * C, 1, bp, "ff.net.2"));
    }
    TRY(load_proj(L, &x->proj_out, C, linear_proj, pfx, "proj_out"));
    return 0;
}

int sdb_unet_load_config(sdb_unet **out, const sdb_config *c, sdb_weights *w, sdb_err *err)
{
    *out = NULL;
    long long v;
    double d;
    const char *s;

    /* --- the family checks --- */
    if (sdb_config_has(c, "_class_name")) TRY(cfg_require_str(c, "_class_name", "UNet2DConditionModel", err));
    TRY(cfg_require_str(c, "act_fn", "silu", err));
    TRY(cfg_require_str(c, "time_embedding_type", "positional", err));
    TRY(cfg_require_str(c, "resnet_time_scale_shift", "default", err));
    {
        json_t *mb = json_object_get(c->root, "mid_block_type");
        if (mb && json_is_null(mb)) return cfg_fail(c, err, "mid_block_type", "null (no mid block) is not supported");
    }
    TRY(cfg_require_str(c, "mid_block_type", "UNetMidBlock2DCrossAttn", err));
    TRY(cfg_require_str(c, "attention_type", "default", err));
    static const char *must_null[] = {"addition_embed_type", "class_embed_type", "num_class_embeds",
        "encoder_hid_dim", "encoder_hid_dim_type", "time_cond_proj_dim", "time_embedding_dim",
        "time_embedding_act_fn", "timestep_post_act", "projection_class_embeddings_input_dim",
        "addition_time_embed_dim", "cross_attention_norm", "num_attention_heads",
        "reverse_transformer_layers_per_block"};
    for (size_t i = 0; i < sizeof must_null / sizeof must_null[0]; i++) TRY(cfg_require_null(c, must_null[i], err));
    static const char *must_false[] = {"center_input_sample", "only_cross_attention", "dual_cross_attention",
        "resnet_skip_time_act", "class_embeddings_concat", "mid_block_only_cross_attention"};
    for (size_t i = 0; i < sizeof must_false / sizeof must_false[0]; i++) TRY(cfg_require_false(c, must_false[i], err));
    TRY(cfg_require_num(c, "conv_in_kernel", 3, err));
    TRY(cfg_require_num(c, "conv_out_kernel", 3, err));
    TRY(cfg_require_num(c, "resnet_out_scale_factor", 1.0, err));
    TRY(cfg_require_num(c, "mid_block_scale_factor", 1.0, err));

    sdb_unet *u = calloc(1, sizeof *u);
    if (!u) return sdb_fail(err, SDB_ENOMEM, "out of memory");
    int rc = 0;
#define CK(x) do { rc = (x); if (rc) goto fail; } while (0)
    CK(sdb_config_int(c, "in_channels", 4, &v, err)); u->in_ch = (int)v;
    CK(sdb_config_int(c, "out_channels", 4, &v, err)); u->out_ch = (int)v;
    CK(sdb_config_int(c, "layers_per_block", 2, &v, err)); u->lpb = (int)v;
    CK(sdb_config_int(c, "norm_num_groups", 32, &v, err)); u->groups = (int)v;
    CK(sdb_config_double(c, "norm_eps", 1e-5, &d, err)); u->eps = (float)d;
    CK(sdb_config_int(c, "sample_size", 64, &v, err)); u->sample_size = (int)v;
    CK(sdb_config_bool(c, "flip_sin_to_cos", 1, &u->flip_sin_to_cos, err));
    CK(sdb_config_double(c, "freq_shift", 0, &u->freq_shift, err));
    int linear_proj = 0, pad = 1;
    CK(sdb_config_bool(c, "use_linear_projection", 0, &linear_proj, err));
    CK(sdb_config_int(c, "downsample_padding", 1, &v, err)); pad = (int)v;
    if (sdb_config_has(c, "cross_attention_dim") && !json_is_integer(json_object_get(c->root, "cross_attention_dim"))) {
        rc = cfg_fail(c, err, "cross_attention_dim", "must be one integer");
        goto fail;
    }
    CK(sdb_config_int(c, "cross_attention_dim", 1280, &v, err)); u->ctx_dim = (int)v;
    (void)s;

    long long boc[MAX_BLOCKS + 1];
    int nb = 0;
    CK(sdb_config_int_array(c, "block_out_channels", boc, MAX_BLOCKS + 1, &nb, err));
    if (nb < 1 || nb > MAX_BLOCKS) { rc = cfg_fail(c, err, "block_out_channels", "1 to 8 blocks are supported"); goto fail; }
    u->nblocks = nb;
    for (int i = 0; i < nb; i++) u->boc[i] = (int)boc[i];
    if (u->lpb < 1 || u->lpb + 1 > MAX_LAYERS) { rc = cfg_fail(c, err, "layers_per_block", "must be 1..7"); goto fail; }
    if (u->in_ch < 1 || u->out_ch < 1) { rc = cfg_fail(c, err, "in_channels", "must be positive"); goto fail; }
    for (int i = 0; i < nb; i++)
        if (u->boc[i] <= 0 || u->boc[i] % u->groups) { rc = cfg_fail(c, err, "block_out_channels", "each must be a positive multiple of norm_num_groups"); goto fail; }

    const char *dtypes[MAX_BLOCKS + 1], *utypes[MAX_BLOCKS + 1];
    int nd = 0, nu = 0;
    CK(sdb_config_string_array(c, "down_block_types", dtypes, MAX_BLOCKS + 1, &nd, err));
    CK(sdb_config_string_array(c, "up_block_types", utypes, MAX_BLOCKS + 1, &nu, err));
    if (nd != nb) { rc = cfg_fail(c, err, "down_block_types", "length differs from block_out_channels"); goto fail; }
    if (nu != nb) { rc = cfg_fail(c, err, "up_block_types", "length differs from block_out_channels"); goto fail; }
    for (int i = 0; i < nb; i++) {
        if (!strcmp(dtypes[i], "CrossAttnDownBlock2D")) u->down[i].has_attn = 1;
        else if (!strcmp(dtypes[i], "DownBlock2D")) u->down[i].has_attn = 0;
        else {
            char m[160];
            snprintf(m, sizeof m, "block type '%s' is not supported", dtypes[i]);
            rc = cfg_fail(c, err, "down_block_types", m);
            goto fail;
        }
        if (!strcmp(utypes[i], "CrossAttnUpBlock2D")) u->up[i].has_attn = 1;
        else if (!strcmp(utypes[i], "UpBlock2D")) u->up[i].has_attn = 0;
        else {
            char m[160];
            snprintf(m, sizeof m, "block type '%s' is not supported", utypes[i]);
            rc = cfg_fail(c, err, "up_block_types", m);
            goto fail;
        }
    }
    int heads[MAX_BLOCKS], tlayers[MAX_BLOCKS];
    CK(cfg_int_or_list(c, "attention_head_dim", nb, 8, heads, err));
    CK(cfg_int_or_list(c, "transformer_layers_per_block", nb, 1, tlayers, err));
    for (int i = 0; i < nb; i++)
        if (tlayers[i] < 1 || tlayers[i] > MAX_TBLOCKS) { rc = cfg_fail(c, err, "transformer_layers_per_block", "must be 1..4"); goto fail; }

    u->c0 = u->boc[0];
    u->tdim = 4 * u->c0;
    if (u->c0 % 2) { rc = cfg_fail(c, err, "block_out_channels", "the first width must be even"); goto fail; }

    /* --- weights --- */
    ld_t L = {w, err};
    char p[256];
    CK(load_conv(&L, &u->conv_in, u->in_ch, u->c0, 3, 1, 1, "", "conv_in") );
    CK(load_lin(&L, &u->t1, u->tdim, u->c0, 1, "time_embedding", "linear_1"));
    CK(load_lin(&L, &u->t2, u->tdim, u->tdim, 1, "time_embedding", "linear_2"));
    int out_c = u->c0;
    for (int i = 0; i < nb; i++) {
        block_t *b = &u->down[i];
        int in_c = out_c;
        out_c = u->boc[i];
        b->cout = out_c;
        b->nlayers = u->lpb;
        for (int j = 0; j < u->lpb; j++) {
            snprintf(p, sizeof p, "down_blocks.%d.resnets.%d", i, j);
            CK(load_resnet(&L, &b->res[j], j == 0 ? in_c : out_c, out_c, u->tdim, p));
            if (b->has_attn) {
                snprintf(p, sizeof p, "down_blocks.%d.attentions.%d", i, j);
                CK(load_xformer(&L, &b->att[j], out_c, heads[i], tlayers[i], u->ctx_dim, linear_proj, p));
            }
        }
        b->has_sampler = i < nb - 1;
        if (b->has_sampler) {
            snprintf(p, sizeof p, "down_blocks.%d.downsamplers.0", i);
            CK(load_conv(&L, &b->sampler, out_c, out_c, 3, 2, pad, p, "conv"));
        }
    }
    int top = u->boc[nb - 1];
    CK(load_resnet(&L, &u->mid_res[0], top, top, u->tdim, "mid_block.resnets.0"));
    CK(load_xformer(&L, &u->mid_att, top, heads[nb - 1], tlayers[nb - 1], u->ctx_dim, linear_proj, "mid_block.attentions.0"));
    CK(load_resnet(&L, &u->mid_res[1], top, top, u->tdim, "mid_block.resnets.1"));
    int prev_out = u->boc[nb - 1];
    out_c = u->boc[nb - 1];
    for (int i = 0; i < nb; i++) {
        block_t *b = &u->up[i];
        int ri = nb - 1 - i;
        prev_out = out_c;
        out_c = u->boc[ri];
        int in_c = u->boc[ri - 1 >= 0 ? ri - 1 : 0];
        b->cout = out_c;
        b->nlayers = u->lpb + 1;
        for (int j = 0; j < b->nlayers; j++) {
            int skip_c = j == b->nlayers - 1 ? in_c : out_c;
            int rin = j == 0 ? prev_out : out_c;
            snprintf(p, sizeof p, "up_blocks.%d.resnets.%d", i, j);
            CK(load_resnet(&L, &b->res[j], rin + skip_c, out_c, u->tdim, p));
            if (b->has_attn) {
                snprintf(p, sizeof p, "up_blocks.%d.attentions.%d", i, j);
                /* diffusers: reversed num_attention_heads (and transformer layers) */
                CK(load_xformer(&L, &b->att[j], out_c, heads[ri], tlayers[ri], u->ctx_dim, linear_proj, p));
            }
        }
        b->has_sampler = i < nb - 1;
        if (b->has_sampler) {
            snprintf(p, sizeof p, "up_blocks.%d.upsamplers.0", i);
            CK(load_conv(&L, &b->sampler, out_c, out_c, 3, 1, 1, p, "conv"));
        }
    }
    CK(load_norm(&L, &u->norm_out, u->c0, "", "conv_norm_out"));
    CK(load_conv(&L, &u->conv_out, u->c0, u->out_ch, 3, 1, 1, "", "conv_out"));
#undef CK
    *out = u;
    return 0;
fail:
    free(u);
    return rc;
}

int sdb_unet_load(sdb_unet **out, const char *config_path, sdb_weights *w, sdb_err *err)
{
    sdb_config c;
    *out = NULL;
    int rc = sdb_config_load(&c, config_path, err);
    if (rc) return rc;
    rc = sdb_unet_load_config(out, &c, w, err);
    sdb_config_free(&c);
    return rc;
}

static void drop_filters(sdb_unet *u)
{
    for (int i = 0; i < u->nkept; i++) {
        free((float *)u->kept[i]->U);
        u->kept[i]->U = NULL;
        u->kept[i]->U_tile = 0;
    }
    u->nkept = 0;
    for (int i = 0; i < u->nklin; i++) free(u->klin[i].panels);
    u->nklin = 0;
    u->keep_used = 0;
}

void sdb_unet_free(sdb_unet *u)
{
    if (u) {
        drop_filters(u);
        free(u->kv);
    }
    free(u);
}

void sdb_unet_set_filter_memory(sdb_unet *u, size_t bytes)
{
    if (bytes < u->keep_used) drop_filters(u);
    u->keep_budget = bytes;
}
size_t sdb_unet_filter_memory(const sdb_unet *u) { return u->keep_used; }
int sdb_unet_in_channels(const sdb_unet *u) { return u->in_ch; }
int sdb_unet_out_channels(const sdb_unet *u) { return u->out_ch; }
int sdb_unet_sample_size(const sdb_unet *u) { return u->sample_size; }
int sdb_unet_cross_attention_dim(const sdb_unet *u) { return u->ctx_dim; }
size_t sdb_unet_last_peak(const sdb_unet *u) { return u->last_peak; }
void sdb_unet_set_debug(sdb_unet *u, sdb_unet_debug_fn fn, void *ctx) { u->dbg = fn; u->dbg_ctx = ctx; }
void sdb_unet_set_profile(sdb_unet *u, sdb_profile *p) { u->prof = p; }
void sdb_unet_set_conv(sdb_unet *u, int algo) { u->conv_algo = algo; }

/* ------------------------------------------------------------------------------------------ */
/* forward                                                                                      */

typedef struct {
    sdb_unet *u;
    sdb_arena *a;
    int B;                /* images the next op runs on: 1 while `same`, else `batch` */
    int batch;            /* images of this forward */
    int same;             /* every image's input is the same: the ops before the first
                           * cross-attention run on image 0 only (see sdb_unet_forward) */
    const float *st;      /* silu(temb) [B, tdim] */
    const float *ctx;     /* [B, L, ctx_dim] */
    int L;
    sdb_profile *prof;    /* NULL = no timing */
    sdb_par_rec *plan;    /* set: record every op's work units instead of computing (sdb_unet_plan) */
    float *kv;            /* the cross-attention k/v cache (sdb_unet.kv), NULL = compute in the arena */
    int kv_fill;          /* compute into the cache (else read it) */
    size_t kv_off;        /* the next transformer block's place in it */
} fw_t;

#define ALLOC(ptr, count) do { (ptr) = sdb_arena_floats(F->a, (size_t)(count)); if (!(ptr)) return SDB_ENOMEM; } while (0)

/* Images each computed one stands for in the FLOP counts: all of them while `same`. */
static int reps(const fw_t *F) { return F->same ? F->batch : 1; }

static void debug(fw_t *F, const char *name, const float *x, int C, int H, int W)
{
    if (F->u->dbg && !F->plan) F->u->dbg(F->u->dbg_ctx, name, x, F->batch, C, H, W);
}

/* c's transformed filter made and kept, when c runs by Winograd here and the budget allows (a
 * filter that cannot be kept is made per call, as without a budget: the same results). The U-Net
 * owns its convs; only this fills their U. */
static void keep_filter(sdb_unet *u, const sdb_conv2d *c, int N, int H, int W)
{
    const int path = sdb_conv_path(c, u->conv_algo, N, H, W);
    const size_t bytes = sdb_conv_path_filter_floats(c, path) * sizeof(float);
    if (c->U || !bytes || u->keep_used + bytes > u->keep_budget || u->nkept == (int)(sizeof u->kept / sizeof u->kept[0]))
        return;
    float *U = malloc(bytes);
    if (!U) return;
    sdb_conv_path_filter(c, path, U);
    sdb_conv2d *mc = (sdb_conv2d *)c;
    mc->U = U;
    mc->U_tile = path;
    u->kept[u->nkept++] = mc;
    u->keep_used += bytes;
}

/* The ops as the forward calls them, each timed and its FLOPs counted by kind when a profile is
 * attached (sdb_profile: one NULL test otherwise); in plan mode (F->plan) each records its work
 * units instead (the ops' _plan twins) and touches no data. */
static int conv_fw_bias(fw_t *F, const sdb_conv2d *c, const float *x, int N, int H, int W, float *y,
                        const float *res, const float *bias_n)
{
    if (F->plan) { sdb_conv2d_plan_algo(c, F->u->conv_algo, N, H, W, F->plan); return 0; }
    if (F->u->keep_budget) keep_filter(F->u, c, N, H, W);
    double t = sdb_prof_begin(F->prof);
    int rc = sdb_conv2d_forward_algo(c, F->u->conv_algo, x, N, H, W, y, res, bias_n, F->a);
    if (F->prof) {
        int Ho, Wo;
        sdb_conv2d_out_size(c, H, W, &Ho, &Wo);
        sdb_prof_end(F->prof, sdb_conv_uses_winograd(c, F->u->conv_algo, N, H, W) ? SDB_PROF_WINOGRAD : SDB_PROF_CONV,
                     t, 2.0 * N * reps(F) * c->cout * (double)c->cin * c->k * c->k * Ho * Wo);
    }
    return rc;
}
static int conv_fw(fw_t *F, const sdb_conv2d *c, const float *x, int N, int H, int W, float *y,
                   const float *res)
{
    return conv_fw_bias(F, c, x, N, H, W, y, res, NULL);
}
/* w's kept panels: found, or made now when the budget allows; NULL = made per tile (the same
 * results) */
static const float *kept_panels(sdb_unet *u, sdb_wmat w, int N, int K)
{
    const void *key = w.f32 ? (const void *)w.f32 : (const void *)w.f16;
    for (int i = 0; i < u->nklin; i++)
        if (u->klin[i].w == key) return u->klin[i].panels;
    const size_t bytes = sdb_linear_panels_floats(N, K) * sizeof(float);
    if (!u->keep_budget || !bytes || u->keep_used + bytes > u->keep_budget ||
        u->nklin == (int)(sizeof u->klin / sizeof u->klin[0]))
        return NULL;
    float *p = malloc(bytes);
    if (!p) return NULL;
    if (sdb_linear_make_panels(w, N, K, p)) { free(p); return NULL; }
    u->klin[u->nklin].w = key;
    u->klin[u->nklin++].panels = p;
    u->keep_used += bytes;
    return p;
}

static int linear_fw(fw_t *F, const float *x, int M, int K, sdb_wmat w, const float *b, int N,
                     float *y, int acc)
{
    if (F->plan) { sdb_gemm_linear_plan(M, K, N, F->plan); return 0; }
    const float *kp = F->u->keep_budget ? kept_panels(F->u, w, N, K) : NULL;
    double t = sdb_prof_begin(F->prof);
    int rc = sdb_gemm_linear_kept(x, M, K, w, kp, b, N, y, acc, F->a);
    sdb_prof_end(F->prof, SDB_PROF_LINEAR, t, 2.0 * M * reps(F) * (double)N * K);
    return rc;
}
/* n bias-free projections of x as one product: y [M, n N] (sdb_gemm_linear_cat) */
static int linear_cat_fw(fw_t *F, const float *x, int M, int K, const sdb_wmat *w, int n, int N, float *y)
{
    if (F->plan) { sdb_gemm_linear_plan(M, K, n * N, F->plan); return 0; }
    const float *kp[8] = {NULL};
    for (int i = 0; i < n && i < 8 && F->u->keep_budget; i++) kp[i] = kept_panels(F->u, w[i], N, K);
    double t = sdb_prof_begin(F->prof);
    int rc = sdb_gemm_linear_cat_kept(x, M, K, w, kp, n, N, y, F->a);
    sdb_prof_end(F->prof, SDB_PROF_LINEAR, t, 2.0 * M * reps(F) * (double)n * N * K);
    return rc;
}
/* q rows with leading dimension ldq, k and v rows with ldkv, o rows with ldo */
static int attention_fw(fw_t *F, const float *q, int ldq, const float *k, const float *v, int ldkv, float *o,
                        int ldo, int nq, int nk, int heads, int hd, float scale)
{
    if (F->plan) { sdb_attention_plan(nq, nk, heads, hd, 0, F->plan); return 0; }
    double t = sdb_prof_begin(F->prof);
    int rc = sdb_attention(q, ldq, k, ldkv, v, ldkv, o, ldo, nq, nk, heads, hd, scale, 0, F->a);
    sdb_prof_end(F->prof, SDB_PROF_ATTENTION, t, 4.0 * nq * reps(F) * (double)nk * heads * hd);
    return rc;
}
static void groupnorm_fw(fw_t *F, const float *x, int C, int HW, const norm_t *n, float eps, int silu,
                         float *y)
{
    if (F->plan) { sdb_groupnorm_plan(F->B, C, HW, F->u->groups, F->plan); return; }
    double t = sdb_prof_begin(F->prof);
    sdb_groupnorm(x, F->B, C, HW, F->u->groups, n->g, n->b, eps, silu, y);
    sdb_prof_end(F->prof, SDB_PROF_NORM, t, 0);
}
static void layernorm_fw(fw_t *F, const float *x, int rows, int C, const norm_t *n, float *y)
{
    if (F->plan) { sdb_layernorm_plan(rows, C, F->plan); return; }
    double t = sdb_prof_begin(F->prof);
    sdb_layernorm(x, rows, C, n->g, n->b, 1e-5f, y);
    sdb_prof_end(F->prof, SDB_PROF_NORM, t, 0);
}
#define PROF_BEGIN() double prof_t_ = sdb_prof_begin(F->prof)
#define PROF_END(kind) sdb_prof_end(F->prof, (kind), prof_t_, 0)
/* [B, rows, cols] -> [B, cols, rows] */
static void transpose_fw(fw_t *F, const float *x, int rows, int cols, float *y)
{
    for (int n = 0; n < F->B; n++) {
        if (F->plan) { sdb_transpose_plan(rows, cols, F->plan); continue; }
        PROF_BEGIN();
        sdb_transpose(x + (size_t)n * rows * cols, rows, cols, y + (size_t)n * rows * cols);
        PROF_END(SDB_PROF_COPY);
    }
}
static void add_fw(fw_t *F, float *y, const float *x, size_t n)
{
    if (F->plan) { sdb_add_plan(n, F->plan); return; }
    PROF_BEGIN();
    sdb_add(y, x, n);
    PROF_END(SDB_PROF_ELEMENTWISE);
}
static void silu_fw(fw_t *F, float *x, size_t n)
{
    if (F->plan) { sdb_silu_plan(n, F->plan); return; }
    PROF_BEGIN();
    sdb_silu(x, n);
    PROF_END(SDB_PROF_ELEMENTWISE);
}
static void geglu_fw(fw_t *F, const float *h, int rows, int dim, float *out)
{
    if (F->plan) { sdb_geglu_plan(rows, dim, F->plan); return; }
    PROF_BEGIN();
    sdb_geglu(h, rows, dim, out);
    PROF_END(SDB_PROF_ELEMENTWISE);
}
static void upsample_fw(fw_t *F, const float *x, int C, int H, int W, float *y, int Ho, int Wo)
{
    if (F->plan) { sdb_upsample_nearest_plan(F->B, C, Ho, Wo, F->plan); return; }
    PROF_BEGIN();
    sdb_upsample_nearest(x, F->B, C, H, W, y, Ho, Wo);
    PROF_END(SDB_PROF_COPY);
}
static void concat_fw(fw_t *F, const float *a, int Ca, const float *b, int Cb, int HW, float *y)
{
    if (F->plan) { sdb_concat_channels_plan(Ca, Cb, F->B, HW, F->plan); return; }
    PROF_BEGIN();
    sdb_concat_channels(a, Ca, b, Cb, F->B, HW, y);
    PROF_END(SDB_PROF_COPY);
}

/* The end of a shared part (F->same): image 0 of x [batch, per] copied to the other images. */
static void replicate_fw(fw_t *F, float *x, size_t per)
{
    if (F->plan) return; /* copies: nothing to balance */
    PROF_BEGIN();
    for (int n = 1; n < F->batch; n++) memcpy(x + (size_t)n * per, x, sizeof(float) * per);
    PROF_END(SDB_PROF_COPY);
}

/* y [B, cout, H, W] = resnet(x [B, cin, H, W]); y must not alias x. */
static int resnet_fw(fw_t *F, const resnet_t *r, const float *x, int H, int W, float *y)
{
    const int B = F->B, HW = H * W;
    size_t mark = sdb_arena_mark(F->a);
    float *g, *tp, *h, *bias;
    ALLOC(g, (size_t)B * r->cin * HW);
    ALLOC(tp, (size_t)B * r->cout);
    ALLOC(h, (size_t)B * r->cout * HW);
    ALLOC(bias, (size_t)B * r->cout);
    groupnorm_fw(F, x, r->cin, HW, &r->n1, F->u->eps, 1, g);
    TRY(linear_fw(F, F->st, B, F->u->tdim, r->temb.w, r->temb.b, r->cout, tp, 0));
    /* conv1's bias carries each image's time embedding: one call for the batch with a bias per
     * image */
    if (!F->plan)
        for (int n = 0; n < B; n++)
            for (int co = 0; co < r->cout; co++)
                bias[(size_t)n * r->cout + co] = r->c1.b[co] + tp[(size_t)n * r->cout + co];
    TRY(conv_fw_bias(F, &r->c1, g, B, H, W, h, NULL, bias));
    groupnorm_fw(F, h, r->cout, HW, &r->n2, F->u->eps, 1, h);
    const float *res = x;
    if (r->has_sc) {
        float *s;
        ALLOC(s, (size_t)B * r->cout * HW);
        int rc = conv_fw(F, &r->sc, x, B, H, W, s, NULL);
        if (rc) return rc;
        res = s;
    }
    int rc = conv_fw(F, &r->c2, h, B, H, W, y, res);
    sdb_arena_reset(F->a, mark);
    return rc;
}

/* y [B, C, H, W] = Transformer2DModel(x); y must not alias x. With F->same (x's images the same)
 * everything before the first cross-attention runs on image 0, whose state is then copied to the
 * others: the end of the shared part. */
static int xformer_fw(fw_t *F, const xformer_t *X, const float *x, int H, int W, float *y)
{
    const int B = F->B, HW = H * W, C = X->C, M = B * HW, L = F->L;
    const int Bs = F->same ? 1 : B; /* the images the shared part runs on */
    const float scale = (float)(1.0 / sqrt((double)X->head_dim));
    size_t mark = sdb_arena_mark(F->a);
    float *g, *t, *nb, *qkv, *ao, *kc = NULL, *vc = NULL, *hid, *gg;
    ALLOC(t, (size_t)M * C);
    {
        size_t m2 = sdb_arena_mark(F->a);
        float *tin;
        ALLOC(g, (size_t)M * C);
        ALLOC(tin, (size_t)M * C);
        F->B = Bs;
        groupnorm_fw(F, x, C, HW, &X->norm, 1e-6f, 0, g);
        transpose_fw(F, g, C, HW, tin);
        F->B = B;
        TRY(linear_fw(F, tin, Bs * HW, C, X->proj_in.w, X->proj_in.b, C, t, 0));
        sdb_arena_reset(F->a, m2);
    }
    ALLOC(nb, (size_t)M * C);
    ALLOC(qkv, (size_t)M * 3 * C); /* self-attention's q | k | v per row; cross-attention's q in the first C */
    ALLOC(ao, (size_t)M * C);
    if (!F->kv) {
        ALLOC(kc, (size_t)B * L * C);
        ALLOC(vc, (size_t)B * L * C);
    }
    int rows = M < FF_ROWS ? M : FF_ROWS;
    ALLOC(hid, (size_t)rows * 8 * C);
    ALLOC(gg, (size_t)rows * 4 * C);
    for (int bi = 0; bi < X->nblk; bi++) {
        const tblock_t *b = &X->blk[bi];
        const int Bb = F->same ? 1 : B, Mb = Bb * HW; /* until the shared part ends, below */
        /* self-attention */
        layernorm_fw(F, t, Mb, C, &b->n1, nb);
        const sdb_wmat wqkv[3] = {b->q1, b->k1, b->v1};
        TRY(linear_cat_fw(F, nb, Mb, C, wqkv, 3, C, qkv));
        for (int n = 0; n < Bb; n++) {
            const float *x3 = qkv + (size_t)n * HW * 3 * C;
            int rc = attention_fw(F, x3, 3 * C, x3 + C, x3 + 2 * C, 3 * C, ao + (size_t)n * HW * C, C, HW, HW,
                                  X->heads, X->head_dim, scale);
            if (rc) return rc;
        }
        TRY(linear_fw(F, ao, Mb, C, b->o1.w, b->o1.b, C, t, 1));
        if (F->same) { /* the images part here: the text states differ */
            replicate_fw(F, t, (size_t)HW * C);
            F->same = 0;
        }
        /* cross-attention on the text states */
        layernorm_fw(F, t, M, C, &b->n2, nb);
        float *q = qkv; /* [M, C] */
        TRY(linear_fw(F, nb, M, C, b->q2, NULL, C, q, 0));
        if (F->kv) { /* once per context: the cache */
            kc = F->kv + F->kv_off;
            vc = kc + (size_t)B * L * C;
            F->kv_off += 2 * (size_t)B * L * C;
        }
        if (!F->kv || F->kv_fill) {
            TRY(linear_fw(F, F->ctx, B * L, F->u->ctx_dim, b->k2, NULL, C, kc, 0));
            TRY(linear_fw(F, F->ctx, B * L, F->u->ctx_dim, b->v2, NULL, C, vc, 0));
        }
        for (int n = 0; n < B; n++) {
            size_t o = (size_t)n * HW * C, oc = (size_t)n * L * C;
            int rc = attention_fw(F, q + o, C, kc + oc, vc + oc, C, ao + o, C, HW, L, X->heads, X->head_dim, scale);
            if (rc) return rc;
        }
        TRY(linear_fw(F, ao, M, C, b->o2.w, b->o2.b, C, t, 1));
        /* GEGLU feed-forward, in row chunks */
        layernorm_fw(F, t, M, C, &b->n3, nb);
        for (int r0 = 0; r0 < M; r0 += rows) {
            int rr = M - r0 < rows ? M - r0 : rows;
            TRY(linear_fw(F, nb + (size_t)r0 * C, rr, C, b->ff1.w, b->ff1.b, 8 * C, hid, 0));
            geglu_fw(F, hid, rr, 4 * C, gg);
            TRY(linear_fw(F, gg, rr, 4 * C, b->ff2.w, b->ff2.b, C, t + (size_t)r0 * C, 1));
        }
    }
    /* proj_out, back to NCHW, + residual */
    TRY(linear_fw(F, t, M, C, X->proj_out.w, X->proj_out.b, C, nb, 0));
    transpose_fw(F, nb, HW, C, y);
    add_fw(F, y, x, (size_t)B * C * HW);
    sdb_arena_reset(F->a, mark);
    return 0;
}

/* sinusoidal timestep embedding as diffusers' get_timestep_embedding (float32 arithmetic) */
static void time_proj(const sdb_unet *u, const double *ts, int B, float *out)
{
    const int half = u->c0 / 2;
    const float neg_log = (float)(-log(10000.0));
    const float denom = (float)((double)half - u->freq_shift);
    for (int n = 0; n < B; n++) {
        float t = (float)ts[n];
        float *o = out + (size_t)n * u->c0;
        for (int i = 0; i < half; i++) {
            float e = (neg_log * (float)i) / denom;
            float arg = t * expf(e);
            float sn = sinf(arg), cs = cosf(arg);
            if (u->flip_sin_to_cos) { o[i] = cs; o[half + i] = sn; }
            else { o[i] = sn; o[half + i] = cs; }
        }
    }
}

typedef struct { float *p; int C, H, W; } skip_t;

static float *other_buf(float *bufs[3], const float *a, const float *b)
{
    for (int i = 0; i < 3; i++)
        if (bufs[i] != a && bufs[i] != b) return bufs[i];
    return NULL;
}

static int forward_impl(fw_t *F, const float *sample, int H0, int W0, const double *ts, float *out)
{
    sdb_unet *u = F->u;
    const int B = F->batch, nb = u->nblocks, same = F->same;
    F->same = 0; /* the time embedding runs on every image; the shared part starts at conv_in */
    int Hs[MAX_BLOCKS], Ws[MAX_BLOCKS];
    Hs[0] = H0; Ws[0] = W0;
    for (int i = 1; i < nb; i++) {
        sdb_conv2d_out_size(&u->down[i - 1].sampler, Hs[i - 1], Ws[i - 1], &Hs[i], &Ws[i]);
        if (Hs[i] < 1 || Ws[i] < 1) return SDB_EINVAL;
    }
    /* work buffer size: the largest activation of the mid block and up path (incl. concat) and of
     * the down path's resnet outputs that feed an attention */
    size_t maxel = 0;
#define UPD(x) do { size_t x_ = (size_t)(x); if (x_ > maxel) maxel = x_; } while (0)
    for (int i = 0; i < nb; i++) UPD((size_t)u->boc[i] * Hs[i] * Ws[i]);
    for (int i = 0; i < nb; i++) {
        const block_t *b = &u->up[i];
        int lv = nb - 1 - i;
        for (int j = 0; j < b->nlayers; j++) UPD((size_t)b->res[j].cin * Hs[lv] * Ws[lv]);
        if (b->has_sampler) UPD((size_t)b->cout * Hs[lv - 1] * Ws[lv - 1]);
    }
    UPD((size_t)u->c0 * H0 * W0);
#undef UPD
    maxel *= B;

    float *bufs[3];
    for (int i = 0; i < 3; i++) ALLOC(bufs[i], maxel);

    /* time embedding */
    float *tproj, *temb, *st;
    ALLOC(tproj, (size_t)B * u->c0);
    ALLOC(temb, (size_t)B * u->tdim);
    ALLOC(st, (size_t)B * u->tdim);
    time_proj(u, ts, B, tproj);
    debug(F, "time_proj", tproj, u->c0, 1, 1);
    {
        float *h1;
        size_t m = sdb_arena_mark(F->a);
        ALLOC(h1, (size_t)B * u->tdim);
        TRY(linear_fw(F, tproj, B, u->c0, u->t1.w, u->t1.b, u->tdim, h1, 0));
        silu_fw(F, h1, (size_t)B * u->tdim);
        TRY(linear_fw(F, h1, B, u->tdim, u->t2.w, u->t2.b, u->tdim, temb, 0));
        sdb_arena_reset(F->a, m);
    }
    debug(F, "time_embedding", temb, u->tdim, 1, 1);
    if (!F->plan) memcpy(st, temb, sizeof(float) * B * u->tdim);
    silu_fw(F, st, (size_t)B * u->tdim);
    F->st = st;

    skip_t skips[MAX_BLOCKS * (MAX_LAYERS + 1) + 1];
    int nskip = 0;
    int rc;

    /* the shared part (F->same): image 0 only, each state kept for later copied to the others */
    if (same) {
        F->same = 1;
        F->B = 1;
    }

    /* conv_in */
    float *h;
    ALLOC(h, (size_t)B * u->c0 * H0 * W0);
    if ((rc = conv_fw(F, &u->conv_in, sample, F->B, H0, W0, h, NULL))) return rc;
    if (F->same) replicate_fw(F, h, (size_t)u->c0 * H0 * W0);
    debug(F, "conv_in", h, u->c0, H0, W0);
    skips[nskip++] = (skip_t){h, u->c0, H0, W0};
    int C = u->c0, H = H0, W = W0;

    /* down path: each layer's output is a skip state (persistent) */
    for (int i = 0; i < nb; i++) {
        const block_t *b = &u->down[i];
        for (int j = 0; j < b->nlayers; j++) {
            const resnet_t *r = &b->res[j];
            float *dst;
            ALLOC(dst, (size_t)B * r->cout * H * W);
            if (b->has_attn) {
                if ((rc = resnet_fw(F, r, h, H, W, bufs[0]))) return rc;
                if (F->same) { /* the transformer ends the shared part */
                    replicate_fw(F, bufs[0], (size_t)r->cout * H * W);
                    F->B = B;
                }
                if ((rc = xformer_fw(F, &b->att[j], bufs[0], H, W, dst))) return rc;
            } else {
                if ((rc = resnet_fw(F, r, h, H, W, dst))) return rc;
                if (F->same) replicate_fw(F, dst, (size_t)r->cout * H * W);
            }
            h = dst;
            C = r->cout;
            skips[nskip++] = (skip_t){h, C, H, W};
        }
        if (b->has_sampler) {
            int Ho = Hs[i + 1], Wo = Ws[i + 1];
            float *dst;
            ALLOC(dst, (size_t)B * C * Ho * Wo);
            if ((rc = conv_fw(F, &b->sampler, h, F->B, H, W, dst, NULL))) return rc;
            if (F->same) replicate_fw(F, dst, (size_t)C * Ho * Wo);
            h = dst; H = Ho; W = Wo;
            skips[nskip++] = (skip_t){h, C, H, W};
        }
        char nm[32];
        snprintf(nm, sizeof nm, "down_blocks.%d", i);
        debug(F, nm, h, C, H, W);
    }

    /* mid block (a down path without cross-attention ends the shared part here: its states are
     * all copied) */
    F->B = B;
    F->same = 0;
    if ((rc = resnet_fw(F, &u->mid_res[0], h, H, W, bufs[0]))) return rc;
    if ((rc = xformer_fw(F, &u->mid_att, bufs[0], H, W, bufs[1]))) return rc;
    if ((rc = resnet_fw(F, &u->mid_res[1], bufs[1], H, W, bufs[2]))) return rc;
    h = bufs[2];
    debug(F, "mid_block", h, C, H, W);

    /* up path */
    for (int i = 0; i < nb; i++) {
        const block_t *b = &u->up[i];
        for (int j = 0; j < b->nlayers; j++) {
            skip_t s = skips[--nskip];
            if (s.H != H || s.W != W) return SDB_EINVAL;
            float *cat = other_buf(bufs, h, NULL);
            concat_fw(F, h, C, s.p, s.C, H * W, cat);
            float *ro = other_buf(bufs, cat, NULL);
            if ((rc = resnet_fw(F, &b->res[j], cat, H, W, ro))) return rc;
            h = ro;
            C = b->res[j].cout;
            if (b->has_attn) {
                float *ao = other_buf(bufs, h, NULL);
                if ((rc = xformer_fw(F, &b->att[j], h, H, W, ao))) return rc;
                h = ao;
            }
        }
        if (b->has_sampler) {
            /* to the size of the next skip (= 2x unless the input size was odd somewhere) */
            int Ho = skips[nskip - 1].H, Wo = skips[nskip - 1].W;
            float *upb = other_buf(bufs, h, NULL);
            upsample_fw(F, h, C, H, W, upb, Ho, Wo);
            float *dst = other_buf(bufs, upb, h);
            H = Ho; W = Wo;
            if ((rc = conv_fw(F, &b->sampler, upb, B, H, W, dst, NULL))) return rc;
            h = dst;
        }
        char nm[32];
        snprintf(nm, sizeof nm, "up_blocks.%d", i);
        debug(F, nm, h, C, H, W);
    }

    /* out */
    float *g = other_buf(bufs, h, NULL);
    groupnorm_fw(F, h, C, H * W, &u->norm_out, u->eps, 0, g);
    debug(F, "conv_norm_out", g, C, H, W);
    silu_fw(F, g, (size_t)B * C * H * W);
    return conv_fw(F, &u->conv_out, g, B, H, W, out, NULL);
}

/* Sum of C over the transformer blocks of every cross-attention: the k/v cache holds 2 B L of it. */
static size_t xformer_channels(const sdb_unet *u)
{
    size_t s = (size_t)u->mid_att.C * u->mid_att.nblk;
    for (int i = 0; i < u->nblocks; i++) {
        const block_t *bd = &u->down[i], *bu = &u->up[i];
        for (int j = 0; bd->has_attn && j < bd->nlayers; j++) s += (size_t)bd->att[j].C * bd->att[j].nblk;
        for (int j = 0; bu->has_attn && j < bu->nlayers; j++) s += (size_t)bu->att[j].C * bu->att[j].nblk;
    }
    return s;
}

/* Points F at the k/v cache: to read when it holds this context, else to fill (the cache grown
 * when needed; without memory the forward computes k/v in the arena as before). */
static void kv_prepare(sdb_unet *u, fw_t *F, const float *context, int B, int L)
{
    const size_t nkv = 2 * (size_t)B * L * xformer_channels(u), nctx = (size_t)B * L * u->ctx_dim;
    if (u->kv_valid && u->kv_B == B && u->kv_L == L &&
        !memcmp(u->kv + nkv, context, nctx * sizeof(float))) {
        F->kv = u->kv;
        F->kv_fill = 0;
        return;
    }
    u->kv_valid = 0;
    if (nkv + nctx > u->kv_cap) {
        free(u->kv);
        u->kv = malloc((nkv + nctx) * sizeof(float));
        u->kv_cap = u->kv ? nkv + nctx : 0;
        if (!u->kv) return;
    }
    memcpy(u->kv + nkv, context, nctx * sizeof(float));
    u->kv_B = B;
    u->kv_L = L;
    F->kv = u->kv;
    F->kv_fill = 1;
}

/* 1 when the batch's images are one image repeated: the same sample and timestep (classifier-free
 * guidance runs cat([latents] * 2) at one t). Then everything before the first cross-attention,
 * the first op that sees the per-image text states, is the same for every image: it runs once,
 * at batch 1, and its states are copied (about 2.5% of a SD 1.x step's FLOPs, among them the
 * largest self-attention). Batch 1 products may differ from batch 2 ones in the last bits (other
 * GEMM tiles), as any batch size does; the images stay within the parity bounds. */
static int same_images(const sdb_unet *u, const float *sample, int B, int h, int w, const double *ts)
{
    const size_t per = (size_t)u->in_ch * h * w;
    for (int n = 1; n < B; n++)
        if (ts[n] != ts[0] || memcmp(sample + n * per, sample, sizeof(float) * per)) return 0;
    return B > 1;
}

int sdb_unet_forward(sdb_unet *u, const float *sample, int B, int h, int w, const double *timesteps,
                     const float *context, int ctx_len, float *out, sdb_arena *arena, sdb_err *err)
{
    if (B < 1 || h < 1 || w < 1 || ctx_len < 1)
        return sdb_fail(err, SDB_EINVAL, "unet: bad input size (batch %d, %dx%d, %d context tokens)", B, h, w, ctx_len);
    size_t mark = sdb_arena_mark(arena);
    size_t old_peak = arena->peak;
    arena->peak = mark;
    fw_t F = {.u = u, .a = arena, .B = B, .batch = B, .same = same_images(u, sample, B, h, w, timesteps),
              .ctx = context, .L = ctx_len, .prof = u->prof};
    kv_prepare(u, &F, context, B, ctx_len);
    int rc = forward_impl(&F, sample, h, w, timesteps, out);
    if (F.kv && F.kv_fill) u->kv_valid = rc == 0;
    u->last_peak = arena->peak - mark;
    if (old_peak > arena->peak) arena->peak = old_peak;
    sdb_arena_reset(arena, mark);
    if (rc == SDB_ENOMEM)
        return sdb_fail(err, rc, "unet: scratch memory exhausted (batch %d, %dx%d latents)", B, h, w);
    if (rc)
        return sdb_fail(err, rc, "unet: forward failed for batch %d, %dx%d latents (%s)", B, h, w, sdb_err_name(rc));
    return 0;
}

int sdb_unet_plan(sdb_unet *u, int B, int h, int w, int ctx_len, sdb_par_rec *rec, sdb_arena *arena,
                  sdb_err *err)
{
    if (B < 1 || h < 1 || w < 1 || ctx_len < 1 || B > 64)
        return sdb_fail(err, SDB_EINVAL, "unet: bad plan size (batch %d, %dx%d, %d context tokens)", B, h, w, ctx_len);
    size_t mark = sdb_arena_mark(arena);
    double ts[64] = {0};
    /* as a guidance step runs: the images the same (the shared part on one) */
    fw_t F = {.u = u, .a = arena, .B = B, .batch = B, .same = B > 1, .L = ctx_len, .plan = rec};
    int rc = forward_impl(&F, NULL, h, w, ts, NULL);
    sdb_arena_reset(arena, mark);
    if (rc == SDB_ENOMEM) return sdb_fail(err, rc, "unet: plan: scratch address space exhausted");
    if (rc) return sdb_fail(err, rc, "unet: plan failed for batch %d, %dx%d latents (%s)", B, h, w, sdb_err_name(rc));
    if (rec->failed) return sdb_fail(err, SDB_ENOMEM, "unet: plan: out of memory");
    return 0;
}
