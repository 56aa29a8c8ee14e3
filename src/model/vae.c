/*
 * vae.c — diffusers' AutoencoderKL (SD 1.x VAE) forward passes (see vae.h).
 * Owns: the sdb_vae (layer descriptions pointing into the caller's sdb_weights).
 *
 * Structure, as diffusers 0.30.3 builds it (autoencoder_kl.py, vae.py, unet_2d_blocks.py,
 * resnet.py, attention_processor.py):
 *   Encoder: conv_in -> DownEncoderBlock2D x n (ResnetBlock2D x layers_per_block, Downsample2D
 *   except the last: F.pad (0,1,0,1) + conv3x3 stride 2 pad 0) -> UNetMidBlock2D (resnet,
 *   attention, resnet) -> GroupNorm + SiLU -> conv_out (2 x latent) -> quant_conv.
 *   Decoder: post_quant_conv -> conv_in -> mid block -> UpDecoderBlock2D x n (layers_per_block+1
 *   resnets, Upsample2D = nearest x2 + conv3x3 except the last) -> GroupNorm + SiLU -> conv_out.
 *   ResnetBlock2D (no time embedding): GN -> SiLU -> conv3x3 -> GN -> SiLU -> conv3x3, plus the
 *   input (through a 1x1 conv_shortcut when the channel count changes). All GroupNorms eps 1e-6.
 *   Mid-block attention: GroupNorm -> q/k/v Linear over channels (bias) -> one head, scale
 *   C^-0.5 -> out Linear -> + input (the Linears run as 1x1 convs on the [C, HW] layout).
 *
 * Memory discipline: the current activation always sits at the top of the arena; a layer
 * allocates its temporaries above it, and its result is moved down onto the activation's start
 * (memmove; cheap next to the convolutions) before the temporaries are released. Nearest-x2
 * upsampling + conv runs in horizontal strips so the 4x-size upsampled tensor never exists whole.
 *
 * Tiling (sdb_vae_encode_tiled / sdb_vae_decode_tiled): the 1/8-resolution part with the mid
 * block runs on the whole latent, the rest in tiles with margins of the receptive field, one tile
 * at a time, every GroupNorm with the whole image's statistics gathered run by run, the tiles
 * parked in a scratch file between runs (see the tiling section).
 */
#include "sdb/vae.h"

#include "sdb/config.h"
#include "sdb/fsutil.h"
#include "sdb/ops/activation.h"
#include "sdb/ops/attention.h"
#include "sdb/ops/conv.h"
#include "sdb/ops/winograd.h"
#include "sdb/ops/groupnorm.h"
#include "sdb/ops/resample.h"
#include "sdb/profile.h"

#include <assert.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define VAE_GN_EPS 1e-6f
/* Upsample+conv strips: at most about this many floats of upsampled input per strip. */
#define VAE_STRIP_FLOATS ((size_t)4 << 20)

typedef struct { const float *gamma, *beta; int C; } vae_gn;

typedef struct {
    int cin, cout;
    vae_gn norm1, norm2;
    sdb_conv2d conv1, conv2;
    int has_shortcut;
    sdb_conv2d shortcut;
} vae_resnet;

typedef struct {
    int C;
    vae_gn norm;
    sdb_wmat wq, wk, wv, wo;            /* [C, C] row-major (out, in) */
    const float *bq, *bk, *bv, *bo;     /* [C] */
} vae_attn;

typedef struct {
    vae_resnet r0, r1;
    int has_attn;
    vae_attn attn;
} vae_mid;

typedef struct {
    int n_resnets;
    vae_resnet *resnets;
    int has_sample;     /* downsampler (encoder) or upsampler (decoder) */
    sdb_conv2d sample;
} vae_block;

struct sdb_vae {
    sdb_vae_config cfg;
    sdb_weights *w;
    /* encoder */
    sdb_conv2d enc_conv_in;
    vae_block enc_blocks[SDB_VAE_MAX_BLOCKS];
    vae_mid enc_mid;
    vae_gn enc_norm_out;
    sdb_conv2d enc_conv_out;
    int has_quant;
    sdb_conv2d quant_conv;
    /* decoder */
    int has_post_quant;
    sdb_conv2d post_quant_conv;
    sdb_conv2d dec_conv_in;
    vae_mid dec_mid;
    vae_block dec_blocks[SDB_VAE_MAX_BLOCKS];
    vae_gn dec_norm_out;
    sdb_conv2d dec_conv_out;

    size_t peak;
    uint64_t park_bytes; /* the scratch file of the last tiled pass (0: none) */
    size_t strip_floats;
    int tile_px;        /* sdb_vae_set_tile_size; 0 = cfg.sample_size */
    sdb_vae_tile_opts tiling; /* sdb_vae_set_tiling */
    sdb_vae_debug_fn debug;
    void *debug_ud;
    sdb_profile *prof;  /* sdb_vae_set_profile: convolution and attention counters, NULL = off */
    int conv_algo;      /* SDB_CONV_* (sdb_vae_set_conv), default SDB_CONV_AUTO */
};

/* ------------------------------------------------------------------------------------------ */
/* config */

void sdb_vae_config_sd15(sdb_vae_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->in_channels = 3;
    cfg->out_channels = 3;
    cfg->latent_channels = 4;
    cfg->n_blocks = 4;
    cfg->block_out_channels[0] = 128;
    cfg->block_out_channels[1] = 256;
    cfg->block_out_channels[2] = 512;
    cfg->block_out_channels[3] = 512;
    cfg->layers_per_block = 2;
    cfg->norm_num_groups = 32;
    cfg->scaling_factor = 0.18215;
    cfg->use_quant_conv = 1;
    cfg->use_post_quant_conv = 1;
    cfg->mid_block_add_attention = 1;
    cfg->sample_size = 512;
}

int sdb_vae_config_load(sdb_vae_config *cfg, const char *config_path, sdb_err *err)
{
    sdb_config c;
    memset(cfg, 0, sizeof *cfg);
    int rc = sdb_config_load(&c, config_path, err);
    if (rc) return rc;
    rc = sdb_vae_config_parse(cfg, &c, err);
    sdb_config_free(&c);
    return rc;
}

int sdb_vae_config_parse(sdb_vae_config *cfg, const sdb_config *cp, sdb_err *err)
{
    const sdb_config c = *cp;
    memset(cfg, 0, sizeof *cfg);
    int rc = 0;
    const char *s;
    const char *types[SDB_VAE_MAX_BLOCKS + 1];
    long long boc[SDB_VAE_MAX_BLOCKS + 1];
    int n = 0, nt = 0;

    if ((rc = sdb_config_string(&c, "_class_name", "AutoencoderKL", &s, err))) goto out;
    if (strcmp(s, "AutoencoderKL") != 0) {
        rc = sdb_fail(err, SDB_EUNSUPPORTED, "%s: _class_name '%s' is not supported (only AutoencoderKL)", c.path, s);
        goto out;
    }
    if ((rc = sdb_config_int_range(&c, "in_channels", 3, 1, 64, &cfg->in_channels, err))) goto out;
    if ((rc = sdb_config_int_range(&c, "out_channels", 3, 1, 64, &cfg->out_channels, err))) goto out;
    if ((rc = sdb_config_int_range(&c, "latent_channels", 4, 1, 256, &cfg->latent_channels, err))) goto out;
    if ((rc = sdb_config_int_range(&c, "layers_per_block", 1, 1, 16, &cfg->layers_per_block, err))) goto out;
    if ((rc = sdb_config_int_range(&c, "norm_num_groups", 32, 1, 1024, &cfg->norm_num_groups, err))) goto out;
    if ((rc = sdb_config_double(&c, "scaling_factor", 0.18215, &cfg->scaling_factor, err))) goto out;
    /* sample_size: only the tiled VAE's tile size (diffusers' tile_sample_min_size); a list
     * (some newer configs) takes its first entry, as diffusers does */
    if (sdb_config_has(&c, "sample_size")) {
        long long ss[2];
        int nss = 0;
        if (sdb_config_int_array(&c, "sample_size", ss, 2, &nss, NULL) == 0 && nss >= 1) cfg->sample_size = (int)ss[0];
        else if ((rc = sdb_config_int_range(&c, "sample_size", 32, 8, 65536, &cfg->sample_size, err))) goto out;
    } else cfg->sample_size = 32; /* diffusers' default */
    if (cfg->sample_size < 8 || cfg->sample_size > 65536) {
        rc = sdb_fail(err, SDB_EINVAL, "%s: field 'sample_size': %d is out of range (8..65536)", c.path, cfg->sample_size);
        goto out;
    }
    if (!(cfg->scaling_factor > 0) || !isfinite(cfg->scaling_factor)) {
        rc = sdb_fail(err, SDB_EINVAL, "%s: field 'scaling_factor': %g must be positive", c.path, cfg->scaling_factor);
        goto out;
    }
    if ((rc = sdb_config_bool(&c, "use_quant_conv", 1, &cfg->use_quant_conv, err))) goto out;
    if ((rc = sdb_config_bool(&c, "use_post_quant_conv", 1, &cfg->use_post_quant_conv, err))) goto out;
    if ((rc = sdb_config_bool(&c, "mid_block_add_attention", 1, &cfg->mid_block_add_attention, err))) goto out;
    if ((rc = sdb_config_string(&c, "act_fn", "silu", &s, err))) goto out;
    if (strcmp(s, "silu") != 0 && strcmp(s, "swish") != 0) {
        rc = sdb_fail(err, SDB_EUNSUPPORTED, "%s: field 'act_fn': '%s' is not supported (only silu)", c.path, s);
        goto out;
    }
    if (sdb_config_has(&c, "shift_factor")) {
        double sf;
        if ((rc = sdb_config_double(&c, "shift_factor", 0, &sf, err))) goto out;
        if (sf != 0) {
            rc = sdb_fail(err, SDB_EUNSUPPORTED, "%s: field 'shift_factor': %g is not supported (SD 1.x VAEs have none)", c.path, sf);
            goto out;
        }
    }

    if (sdb_config_has(&c, "block_out_channels")) {
        if ((rc = sdb_config_int_array(&c, "block_out_channels", boc, SDB_VAE_MAX_BLOCKS + 1, &n, err))) goto out;
    } else {
        boc[0] = 64; n = 1; /* diffusers' default */
    }
    if (n < 1 || n > SDB_VAE_MAX_BLOCKS) {
        rc = sdb_fail(err, SDB_EUNSUPPORTED, "%s: field 'block_out_channels': %d entries (1..%d supported)", c.path, n, SDB_VAE_MAX_BLOCKS);
        goto out;
    }
    cfg->n_blocks = n;
    for (int i = 0; i < n; i++) {
        if (boc[i] < 1 || boc[i] > 65536 || boc[i] % cfg->norm_num_groups != 0) {
            rc = sdb_fail(err, SDB_EINVAL, "%s: field 'block_out_channels': entry %d (%lld) must be a positive multiple of norm_num_groups (%d)",
                          c.path, i, boc[i], cfg->norm_num_groups);
            goto out;
        }
        cfg->block_out_channels[i] = (int)boc[i];
    }
    static const char *const keys[2] = {"down_block_types", "up_block_types"};
    static const char *const want[2] = {"DownEncoderBlock2D", "UpDecoderBlock2D"};
    for (int k = 0; k < 2; k++) {
        if (!sdb_config_has(&c, keys[k])) {
            nt = n; /* diffusers' default: one block of the right type */
            if (n != 1) {
                rc = sdb_fail(err, SDB_EINVAL, "%s: field '%s' is missing", c.path, keys[k]);
                goto out;
            }
            continue;
        }
        if ((rc = sdb_config_string_array(&c, keys[k], types, SDB_VAE_MAX_BLOCKS + 1, &nt, err))) goto out;
        if (nt != n) {
            rc = sdb_fail(err, SDB_EINVAL, "%s: field '%s' has %d entries but block_out_channels has %d", c.path, keys[k], nt, n);
            goto out;
        }
        for (int i = 0; i < nt; i++)
            if (strcmp(types[i], want[k]) != 0) {
                rc = sdb_fail(err, SDB_EUNSUPPORTED, "%s: field '%s': entry %d is '%s'; only %s is supported",
                              c.path, keys[k], i, types[i], want[k]);
                goto out;
            }
    }
out:
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* weights */

static int load_conv(sdb_vae *v, sdb_conv2d *c, int cin, int cout, int k, sdb_err *err,
                     const char *fmt, ...) __attribute__((format(printf, 7, 8)));
static int load_conv(sdb_vae *v, sdb_conv2d *c, int cin, int cout, int k, sdb_err *err,
                     const char *fmt, ...)
{
    char base[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(base, sizeof base, fmt, ap);
    va_end(ap);
    return sdb_weights_conv2d(v->w, c, cin, cout, k, 1, k / 2, base, err);
}

static int load_gn(sdb_vae *v, vae_gn *g, int C, sdb_err *err, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int load_gn(sdb_vae *v, vae_gn *g, int C, sdb_err *err, const char *fmt, ...)
{
    char base[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(base, sizeof base, fmt, ap);
    va_end(ap);
    if (C % v->cfg.norm_num_groups != 0)
        return sdb_fail(err, SDB_EINVAL, "vae: %s: %d channels are not divisible into %d groups", base, C, v->cfg.norm_num_groups);
    g->C = C;
    int64_t s[1] = {C};
    int rc = sdb_weights_getf(v->w, &g->gamma, err, 1, s, "%s.weight", base);
    if (!rc) rc = sdb_weights_getf(v->w, &g->beta, err, 1, s, "%s.bias", base);
    return rc;
}

static int load_resnet(sdb_vae *v, vae_resnet *r, int cin, int cout, const char *base, sdb_err *err)
{
    memset(r, 0, sizeof *r);
    r->cin = cin;
    r->cout = cout;
    int rc;
    if ((rc = load_gn(v, &r->norm1, cin, err, "%s.norm1", base))) return rc;
    if ((rc = load_conv(v, &r->conv1, cin, cout, 3, err, "%s.conv1", base))) return rc;
    if ((rc = load_gn(v, &r->norm2, cout, err, "%s.norm2", base))) return rc;
    if ((rc = load_conv(v, &r->conv2, cout, cout, 3, err, "%s.conv2", base))) return rc;
    if (cin != cout) {
        r->has_shortcut = 1;
        if ((rc = load_conv(v, &r->shortcut, cin, cout, 1, err, "%s.conv_shortcut", base))) return rc;
    }
    return 0;
}

/* A [C, C] linear weight that LDM checkpoints store as a [C, C, 1, 1] 1x1 conv. */
static int load_square(sdb_vae *v, sdb_wmat *wt, const float **b, int C, const char *name,
                       sdb_err *err)
{
    char nm[300];
    snprintf(nm, sizeof nm, "%s.weight", name);
    const sdb_st_tensor *t = sdb_weights_find(v->w, nm);
    int64_t s4[4] = {C, C, 1, 1}, bs[1] = {C};
    int rc = sdb_weights_get_mat(v->w, nm, (t && t->ndim == 4) ? 4 : 2, s4, wt, err);
    if (!rc) rc = sdb_weights_getf(v->w, b, err, 1, bs, "%s.bias", name);
    return rc;
}

static int load_mid(sdb_vae *v, vae_mid *m, int C, const char *base, sdb_err *err)
{
    char nm[256];
    int rc;
    memset(m, 0, sizeof *m);
    snprintf(nm, sizeof nm, "%s.resnets.0", base);
    if ((rc = load_resnet(v, &m->r0, C, C, nm, err))) return rc;
    snprintf(nm, sizeof nm, "%s.resnets.1", base);
    if ((rc = load_resnet(v, &m->r1, C, C, nm, err))) return rc;
    m->has_attn = v->cfg.mid_block_add_attention;
    if (!m->has_attn) return 0;
    vae_attn *a = &m->attn;
    a->C = C;
    if ((rc = load_gn(v, &a->norm, C, err, "%s.attentions.0.group_norm", base))) return rc;
    snprintf(nm, sizeof nm, "%s.attentions.0.to_q", base);
    if ((rc = load_square(v, &a->wq, &a->bq, C, nm, err))) return rc;
    snprintf(nm, sizeof nm, "%s.attentions.0.to_k", base);
    if ((rc = load_square(v, &a->wk, &a->bk, C, nm, err))) return rc;
    snprintf(nm, sizeof nm, "%s.attentions.0.to_v", base);
    if ((rc = load_square(v, &a->wv, &a->bv, C, nm, err))) return rc;
    snprintf(nm, sizeof nm, "%s.attentions.0.to_out.0", base);
    return load_square(v, &a->wo, &a->bo, C, nm, err);
}

static void free_blocks(sdb_vae *v)
{
    for (int i = 0; i < SDB_VAE_MAX_BLOCKS; i++) {
        free(v->enc_blocks[i].resnets);
        free(v->dec_blocks[i].resnets);
    }
}

void sdb_vae_free(sdb_vae *v)
{
    if (!v) return;
    free_blocks(v);
    free(v);
}

int sdb_vae_create(sdb_vae **out, const sdb_vae_config *cfg, sdb_weights *w, sdb_err *err)
{
    *out = NULL;
    if (cfg->n_blocks < 1 || cfg->n_blocks > SDB_VAE_MAX_BLOCKS || cfg->layers_per_block < 1 ||
        cfg->norm_num_groups < 1)
        return sdb_fail(err, SDB_EINVAL, "vae: invalid configuration");
    sdb_vae *v = calloc(1, sizeof *v);
    if (!v) return sdb_fail(err, SDB_ENOMEM, "vae: out of memory");
    v->cfg = *cfg;
    v->w = w;
    v->tiling.margin = -1;
    const int nb = cfg->n_blocks, L = cfg->latent_channels, lpb = cfg->layers_per_block;
    const int *boc = cfg->block_out_channels;
    char nm[256];
    int rc;

    /* encoder */
    if ((rc = load_conv(v, &v->enc_conv_in, cfg->in_channels, boc[0], 3, err, "encoder.conv_in"))) goto fail;
    int ch = boc[0];
    for (int i = 0; i < nb; i++) {
        vae_block *b = &v->enc_blocks[i];
        int cin = ch, cout = boc[i];
        b->n_resnets = lpb;
        b->resnets = calloc((size_t)lpb, sizeof *b->resnets);
        if (!b->resnets) { rc = sdb_fail(err, SDB_ENOMEM, "vae: out of memory"); goto fail; }
        for (int j = 0; j < lpb; j++) {
            snprintf(nm, sizeof nm, "encoder.down_blocks.%d.resnets.%d", i, j);
            if ((rc = load_resnet(v, &b->resnets[j], j == 0 ? cin : cout, cout, nm, err))) goto fail;
        }
        if (i < nb - 1) {
            b->has_sample = 1;
            if ((rc = load_conv(v, &b->sample, cout, cout, 3, err, "encoder.down_blocks.%d.downsamplers.0.conv", i))) goto fail;
            b->sample.stride = 2;
            b->sample.pad_t = b->sample.pad_l = 0;
            b->sample.pad_b = b->sample.pad_r = 1;
        }
        ch = cout;
    }
    if ((rc = load_mid(v, &v->enc_mid, boc[nb - 1], "encoder.mid_block", err))) goto fail;
    if ((rc = load_gn(v, &v->enc_norm_out, boc[nb - 1], err, "encoder.conv_norm_out"))) goto fail;
    if ((rc = load_conv(v, &v->enc_conv_out, boc[nb - 1], 2 * L, 3, err, "encoder.conv_out"))) goto fail;
    v->has_quant = cfg->use_quant_conv;
    if (v->has_quant && (rc = load_conv(v, &v->quant_conv, 2 * L, 2 * L, 1, err, "quant_conv"))) goto fail;

    /* decoder */
    v->has_post_quant = cfg->use_post_quant_conv;
    if (v->has_post_quant && (rc = load_conv(v, &v->post_quant_conv, L, L, 1, err, "post_quant_conv"))) goto fail;
    if ((rc = load_conv(v, &v->dec_conv_in, L, boc[nb - 1], 3, err, "decoder.conv_in"))) goto fail;
    if ((rc = load_mid(v, &v->dec_mid, boc[nb - 1], "decoder.mid_block", err))) goto fail;
    ch = boc[nb - 1];
    for (int i = 0; i < nb; i++) {
        vae_block *b = &v->dec_blocks[i];
        int cin = ch, cout = boc[nb - 1 - i];
        b->n_resnets = lpb + 1;
        b->resnets = calloc((size_t)lpb + 1, sizeof *b->resnets);
        if (!b->resnets) { rc = sdb_fail(err, SDB_ENOMEM, "vae: out of memory"); goto fail; }
        for (int j = 0; j < lpb + 1; j++) {
            snprintf(nm, sizeof nm, "decoder.up_blocks.%d.resnets.%d", i, j);
            if ((rc = load_resnet(v, &b->resnets[j], j == 0 ? cin : cout, cout, nm, err))) goto fail;
        }
        if (i < nb - 1) {
            b->has_sample = 1;
            if ((rc = load_conv(v, &b->sample, cout, cout, 3, err, "decoder.up_blocks.%d.upsamplers.0.conv", i))) goto fail;
        }
        ch = cout;
    }
    if ((rc = load_gn(v, &v->dec_norm_out, boc[0], err, "decoder.conv_norm_out"))) goto fail;
    if ((rc = load_conv(v, &v->dec_conv_out, boc[0], cfg->out_channels, 3, err, "decoder.conv_out"))) goto fail;
    *out = v;
    return 0;
fail:
    sdb_err_prefix(err, "loading the VAE");
    sdb_vae_free(v);
    return rc;
}

int sdb_vae_load(sdb_vae **out, const char *config_path, sdb_weights *w, sdb_err *err)
{
    sdb_vae_config cfg;
    *out = NULL;
    int rc = sdb_vae_config_load(&cfg, config_path, err);
    if (rc) return rc;
    return sdb_vae_create(out, &cfg, w, err);
}

int sdb_vae_weights_path(const char *vae_dir, int prefer_fp16, char *out, size_t outsz, sdb_err *err)
{
    static const char *const names[2] = {"diffusion_pytorch_model.safetensors",
                                         "diffusion_pytorch_model.fp16.safetensors"};
    for (int k = 0; k < 2; k++) {
        const char *nm = names[prefer_fp16 ? 1 - k : k];
        int n = snprintf(out, outsz, "%s/%s", vae_dir, nm);
        if (n < 0 || (size_t)n >= outsz) return sdb_fail(err, SDB_EINVAL, "vae: path too long: %s", vae_dir);
        if (sdb_file_exists(out)) return 0;
    }
    out[0] = '\0';
    return sdb_fail(err, SDB_ENOTFOUND, "%s: no VAE weights (looked for %s and %s; .bin files are not supported, convert them to safetensors)",
                    vae_dir, names[0], names[1]);
}

const sdb_vae_config *sdb_vae_get_config(const sdb_vae *v) { return &v->cfg; }
float sdb_vae_scaling_factor(const sdb_vae *v) { return (float)v->cfg.scaling_factor; }
size_t sdb_vae_peak_bytes(const sdb_vae *v) { return v->peak; }
size_t sdb_vae_weight_bytes(const sdb_vae *v) { return v->w ? v->w->bytes : 0; }

void sdb_vae_set_profile(sdb_vae *v, sdb_profile *p) { v->prof = p; }
void sdb_vae_set_conv(sdb_vae *v, int algo) { v->conv_algo = algo; }

void sdb_vae_set_debug(sdb_vae *v, sdb_vae_debug_fn fn, void *ud)
{
    v->debug = fn;
    v->debug_ud = ud;
}

void sdb_vae_set_strip_floats(sdb_vae *v, size_t floats) { v->strip_floats = floats; }

/* Size after one encoder downsampler (pad right/bottom 1, k3, stride 2, pad 0); 0 = too small. */
static int down_size(int n) { return n >= 2 ? (n + 1 - 3) / 2 + 1 : 0; }

void sdb_vae_latent_size(const sdb_vae *v, int H, int W, int *h, int *w)
{
    for (int i = 0; i < v->cfg.n_blocks - 1; i++) {
        H = down_size(H);
        W = down_size(W);
    }
    *h = H;
    *w = W;
}

void sdb_vae_image_size(const sdb_vae *v, int h, int w, int *H, int *W)
{
    for (int i = 0; i < v->cfg.n_blocks - 1; i++) {
        h *= 2;
        w *= 2;
    }
    *H = h;
    *W = w;
}

void sdb_vae_sample(const float *mean, const float *std, const float *noise, size_t n, float *out)
{
    for (size_t i = 0; i < n; i++) out[i] = mean[i] + std[i] * noise[i];
}

/* ------------------------------------------------------------------------------------------ */
/* forward building blocks. Each takes the current activation x at the top of the arena (its
 * arena offset is `xmark`) and leaves its result at the same place, the arena used up to its end. */

/* GroupNorm statistics shared by the tiles of a tiled pass (see the tiling section below). */
typedef struct {
    int max_gn, groups;
    double *acc;            /* [max_gn][groups][2]: sums of x and x^2 over the tiles' cores, this pass */
    double *cnt;            /* [max_gn]: values per group summed into acc */
    double *mean, *rstd;    /* [max_gn][groups]: the whole image's, from the previous pass */
    int have_stats;         /* 0: each tile normalises with its own statistics */
    int idx;                /* the next GroupNorm of the current tile */
    int stop_at;            /* >= 0: the tile stops once this GroupNorm's sums are taken */
    int stopped;            /* set when it did (the layers then return at once) */
    int in_h, in_w;         /* the current tile's input size (its own resolution) */
    int cy0, cy1, cx0, cx1; /* its core within it, in input units */
    /* parking (exact statistics without recomputing): the state of each tile at the GroupNorm
     * where its run stopped is written to a scratch file, and the next run resumes from it */
    sdb_scratch *park;      /* NULL: no parking (each run starts the tiles from their input) */
    int resume;             /* >= 0: the current tile resumes at this GroupNorm from its parked state */
    uint64_t park_off;      /* the current tile's slot in the file (bytes) */
    size_t park_floats;     /* its size (floats) */
} tile_stats;

typedef struct {
    sdb_vae *v;
    sdb_arena *a;
    sdb_err *err;
    tile_stats *ts;         /* set while a tile of a tiled pass runs; NULL = plain GroupNorm */
} vae_ctx;

static int oom(vae_ctx *c, const char *what)
{
    return sdb_fail(c->err, SDB_ENOMEM, "vae: scratch memory exhausted (%s; %zu bytes in use of %zu reserved)",
                    what, c->a->used, c->a->reserved);
}

/* Moves n floats from src down to the arena offset xmark and makes them the arena's top. */
static float *settle(vae_ctx *c, size_t xmark, const float *src, size_t n)
{
    sdb_arena_reset(c->a, xmark);
    float *dst = sdb_arena_floats(c->a, n); /* == base + xmark (offsets stay 64-byte aligned) */
    if (dst != src) memmove(dst, src, n * sizeof(float));
    return dst;
}

static float *alloc_f(vae_ctx *c, size_t n) { return sdb_arena_floats(c->a, n); }

static int conv(vae_ctx *c, const sdb_conv2d *cv, const float *x, int H, int W, float *y,
                const float *res)
{
    double t = sdb_prof_begin(c->v->prof);
    int rc = sdb_conv2d_forward_algo(cv, c->v->conv_algo, x, 1, H, W, y, res, NULL, c->a);
    if (rc) return oom(c, "convolution");
    if (c->v->prof) {
        int Ho, Wo;
        sdb_conv2d_out_size(cv, H, W, &Ho, &Wo);
        sdb_prof_end(c->v->prof, sdb_conv_uses_winograd(cv, c->v->conv_algo, 1, H, W) ? SDB_PROF_WINOGRAD : SDB_PROF_CONV,
                     t, 2.0 * cv->cout * (double)cv->cin * cv->k * cv->k * Ho * Wo);
    }
    return 0;
}

static void debug(vae_ctx *c, const char *name, const float *x, int C, int H, int W)
{
    if (c->v->debug && !c->ts) c->v->debug(c->v->debug_ud, name, x, C, H, W); /* not per tile */
}

/* The core of the current tile at a resolution H x W (the tile's input scaled by up- or
 * downsampling by powers of two). */
static void tile_core(const tile_stats *s, int H, int W, int *y0, int *y1, int *x0, int *x1)
{
    if (H >= s->in_h) {
        int k = H / s->in_h;
        assert(H == s->in_h * k && W == s->in_w * k);
        *y0 = s->cy0 * k; *y1 = s->cy1 * k; *x0 = s->cx0 * k; *x1 = s->cx1 * k;
    } else {
        int k = s->in_h / H;
        assert(s->in_h == H * k && s->in_w == W * k && s->cy0 % k == 0 && s->cx0 % k == 0);
        *y0 = s->cy0 / k; *y1 = s->cy1 / k; *x0 = s->cx0 / k; *x1 = s->cx1 / k;
    }
}

/* GroupNorm (+ SiLU) x [C, H, W] -> y (may equal x). Outside a tiled pass: sdb_groupnorm. Inside
 * one: the sums over the tile's core are added to the pass's accumulators (in double, a fixed
 * order: the same on any thread count), and the tile is normalised with the whole image's
 * statistics of the previous pass when there are some, else with its own. */
static void gn(vae_ctx *c, const vae_gn *n, const float *x, int C, int H, int W, int silu, float *y)
{
    const int G = c->v->cfg.norm_num_groups;
    const size_t hw = (size_t)H * W;
    tile_stats *s = c->ts;
    if (!s) {
        sdb_groupnorm(x, 1, C, (int)hw, G, n->gamma, n->beta, VAE_GN_EPS, silu, y);
        return;
    }
    assert(s->idx < s->max_gn && G == s->groups);
    const int k = s->idx++, cpg = C / G;
    int y0, y1, x0, x1;
    tile_core(s, H, W, &y0, &y1, &x0, &x1);
    double *acc = s->acc + (size_t)k * G * 2;
    /* resuming here, the sums were taken by the run that parked the tile (those statistics are
     * the ones applied now) */
    for (int g = 0; g < G && k != s->resume; g++) {
        double s1 = 0, s2 = 0;
        for (int ch = g * cpg; ch < (g + 1) * cpg; ch++)
            for (int yy = y0; yy < y1; yy++) {
                const float *r = x + ((size_t)ch * H + yy) * W;
                for (int xx = x0; xx < x1; xx++) {
                    double v = r[xx];
                    s1 += v;
                    s2 += v * v;
                }
            }
        acc[2 * g] += s1;
        acc[2 * g + 1] += s2;
    }
    if (k != s->resume) s->cnt[k] += (double)cpg * (y1 - y0) * (x1 - x0);
    if (k == s->stop_at) {
        s->stopped = 1;
        return;
    }
    if (!s->have_stats) {
        sdb_groupnorm(x, 1, C, (int)hw, G, n->gamma, n->beta, VAE_GN_EPS, silu, y);
        return;
    }
    const double *mean = s->mean + (size_t)k * G, *rstd = s->rstd + (size_t)k * G;
    for (int ch = 0; ch < C; ch++) {
        const int g = ch / cpg;
        const double gm = n->gamma ? n->gamma[ch] : 1.0, bt = n->beta ? n->beta[ch] : 0.0;
        const float sc = (float)(rstd[g] * gm), sh = (float)(bt - mean[g] * (rstd[g] * gm));
        const float *xi = x + (size_t)ch * hw;
        float *yo = y + (size_t)ch * hw;
        for (size_t i = 0; i < hw; i++) yo[i] = xi[i] * sc + sh;
        if (silu) sdb_silu(yo, hw);
    }
}

/* Whether the current tile stopped at its last needed GroupNorm (its layers then return at once;
 * the caller parks the tile's state or throws it away). */
static int stopped(const vae_ctx *c) { return c->ts && c->ts->stopped; }

/* Resuming a parked tile: whether the next n GroupNorms (and the layers before and between them)
 * come before the one it resumes at, i.e. were run by earlier runs: such layers are skipped (only
 * the activation's shape follows them). n = 0: a layer without GroupNorm before the next one. */
static int skipping(const vae_ctx *c, int n) { return c->ts && c->ts->resume >= c->ts->idx + n; }
/* Whether the next GroupNorm is the one the tile resumes at (its input is read back first). */
static int resuming_here(const vae_ctx *c) { return c->ts && c->ts->resume == c->ts->idx; }
/* Whether the next GroupNorm is where this run stops (what is only needed after it is not computed). */
static int stopping_here(const vae_ctx *c) { return c->ts && c->ts->stop_at == c->ts->idx; }

/* The activation at xmark takes n floats without being computed (a skipped layer's output). */
static int reshape(vae_ctx *c, float **xp, size_t xmark, size_t n)
{
    sdb_arena_reset(c->a, xmark);
    if (!(*xp = alloc_f(c, n))) return oom(c, "tile");
    return 0;
}

/* Writes the stopped tile's state (a: na floats, then b: nb floats) to its slot of the scratch
 * file; nothing without parking. */
static int park(vae_ctx *c, const float *a, size_t na, const float *b, size_t nb)
{
    tile_stats *s = c->ts;
    if (!s->park) return 0;
    assert(s->stopped && na + nb <= s->park_floats);
    int rc = sdb_scratch_write(s->park, a, na * sizeof(float), s->park_off, c->err);
    if (!rc && nb) rc = sdb_scratch_write(s->park, b, nb * sizeof(float), s->park_off + na * sizeof(float), c->err);
    return rc;
}

/* Reads back what park() wrote, the run after. */
static int unpark(vae_ctx *c, float *a, size_t na, float *b, size_t nb)
{
    tile_stats *s = c->ts;
    assert(s->park && na + nb <= s->park_floats);
    int rc = sdb_scratch_read(s->park, a, na * sizeof(float), s->park_off, c->err);
    if (!rc && nb) rc = sdb_scratch_read(s->park, b, nb * sizeof(float), s->park_off + na * sizeof(float), c->err);
    return rc;
}

/* The state a tiled run parks at each GroupNorm (see resnet_fwd): norm1: the input x (cin); norm2:
 * conv1's output and the residual, x or the shortcut's output (2 cout). In floats per pixel. */
static size_t resnet_park_per_px(const vae_resnet *r)
{
    return (size_t)(r->cin > 2 * r->cout ? r->cin : 2 * r->cout);
}

/* ResnetBlock2D without time embedding. x [cin, H, W] at xmark -> [cout, H, W] at xmark. */
static int resnet_fwd(vae_ctx *c, const vae_resnet *r, float **xp, size_t xmark, int H, int W)
{
    size_t hw = (size_t)H * W;
    int rc;
    if (skipping(c, 2)) {
        c->ts->idx += 2;
        return reshape(c, xp, xmark, (size_t)r->cout * hw);
    }
    float *x = *xp;
    if (!r->has_shortcut) {
        /* x, t1 = silu(gn1(x)), t2 = conv1(t1); t2 = silu(gn2(t2)); t1 = conv2(t2) + x */
        float *t1 = alloc_f(c, (size_t)r->cin * hw);
        float *t2 = alloc_f(c, (size_t)r->cout * hw);
        if (!t1 || !t2) return oom(c, "resnet");
        if (skipping(c, 1)) c->ts->idx++;
        else {
            if (resuming_here(c) && (rc = unpark(c, x, (size_t)r->cin * hw, NULL, 0))) return rc;
            gn(c, &r->norm1, x, r->cin, H, W, 1, t1);
            if (stopped(c)) return park(c, x, (size_t)r->cin * hw, NULL, 0);
            if ((rc = conv(c, &r->conv1, t1, H, W, t2, NULL))) return rc;
        }
        if (resuming_here(c) && (rc = unpark(c, t2, (size_t)r->cout * hw, x, (size_t)r->cin * hw))) return rc;
        gn(c, &r->norm2, t2, r->cout, H, W, 1, t2);
        if (stopped(c)) return park(c, t2, (size_t)r->cout * hw, x, (size_t)r->cin * hw);
        if ((rc = conv(c, &r->conv2, t2, H, W, t1, x))) return rc;
        *xp = settle(c, xmark, t1, (size_t)r->cout * hw);
        return 0;
    }
    /* s = shortcut(x) first, so x can be normalised in place: x, s, t2 live at the peak. */
    float *s = alloc_f(c, (size_t)r->cout * hw);
    float *t2 = alloc_f(c, (size_t)r->cout * hw);
    if (!s || !t2) return oom(c, "resnet");
    if (skipping(c, 1)) c->ts->idx++;
    else {
        if (resuming_here(c) && (rc = unpark(c, x, (size_t)r->cin * hw, NULL, 0))) return rc;
        if (!stopping_here(c) && (rc = conv(c, &r->shortcut, x, H, W, s, NULL))) return rc;
        gn(c, &r->norm1, x, r->cin, H, W, 1, x);
        if (stopped(c)) return park(c, x, (size_t)r->cin * hw, NULL, 0);
        if ((rc = conv(c, &r->conv1, x, H, W, t2, NULL))) return rc;
    }
    if (resuming_here(c) && (rc = unpark(c, t2, (size_t)r->cout * hw, s, (size_t)r->cout * hw))) return rc;
    gn(c, &r->norm2, t2, r->cout, H, W, 1, t2);
    if (stopped(c)) return park(c, t2, (size_t)r->cout * hw, s, (size_t)r->cout * hw);
    if (r->cout <= r->cin) {
        /* x is dead: the result goes straight into its place */
        if ((rc = conv(c, &r->conv2, t2, H, W, x, s))) return rc;
        sdb_arena_reset(c->a, xmark);
        *xp = sdb_arena_floats(c->a, (size_t)r->cout * hw);
        return 0;
    }
    float *o = alloc_f(c, (size_t)r->cout * hw);
    if (!o) return oom(c, "resnet");
    if ((rc = conv(c, &r->conv2, t2, H, W, o, s))) return rc;
    *xp = settle(c, xmark, o, (size_t)r->cout * hw);
    return 0;
}

/* The mid-block attention (one head over C channels) with the residual: x += attn(gn(x)).
 * The q/k/v/out projections run as 1x1 convolutions on the [C, HW] activation: the conv kernel
 * is bit-identical for any thread count, a plain threaded sgemm (sdb_linear) is not. */
static int attn_fwd(vae_ctx *c, const vae_attn *at, float *x, int H, int W)
{
    size_t mark = sdb_arena_mark(c->a);
    int C = at->C, n = H * W, rc;
    size_t sz = (size_t)C * n;
    float *xn = alloc_f(c, sz), *t = alloc_f(c, sz);
    float *q = alloc_f(c, sz), *k = alloc_f(c, sz), *vv = alloc_f(c, sz);
    if (!xn || !t || !q || !k || !vv) return oom(c, "attention");
    sdb_conv2d pq = {C, C, 1, 1, 0, 0, 0, 0, at->wq, at->bq, NULL, 0};
    sdb_conv2d pk = pq, pv = pq, po = pq;
    pk.w = at->wk; pk.b = at->bk;
    pv.w = at->wv; pv.b = at->bv;
    po.w = at->wo; po.b = at->bo;
    sdb_groupnorm(x, 1, C, n, c->v->cfg.norm_num_groups, at->norm.gamma, at->norm.beta, VAE_GN_EPS, 0, xn);
    /* projections in [C, HW], then to token rows [HW, C] */
    if ((rc = conv(c, &pq, xn, H, W, t, NULL))) return rc;
    sdb_transpose(t, C, n, q);
    if ((rc = conv(c, &pk, xn, H, W, t, NULL))) return rc;
    sdb_transpose(t, C, n, k);
    if ((rc = conv(c, &pv, xn, H, W, t, NULL))) return rc;
    sdb_transpose(t, C, n, vv);
    float scale = (float)(1.0 / sqrt((double)C));
    double t_att = sdb_prof_begin(c->v->prof);
    if (sdb_attention(q, C, k, C, vv, C, xn, C, n, n, 1, C, scale, 0, c->a)) return oom(c, "attention");
    sdb_prof_end(c->v->prof, SDB_PROF_ATTENTION, t_att, 4.0 * n * (double)n * C);
    sdb_transpose(xn, n, C, t); /* [HW, C] -> [C, HW] */
    if ((rc = conv(c, &po, t, H, W, q, x))) return rc; /* out projection + residual */
    memcpy(x, q, sz * sizeof(float));
    sdb_arena_reset(c->a, mark);
    return 0;
}

static int mid_fwd(vae_ctx *c, const vae_mid *m, float **xp, size_t xmark, int H, int W)
{
    int rc;
    if ((rc = resnet_fwd(c, &m->r0, xp, xmark, H, W))) return rc;
    if (m->has_attn && (rc = attn_fwd(c, &m->attn, *xp, H, W))) return rc;
    return resnet_fwd(c, &m->r1, xp, xmark, H, W);
}

/* Plain conv of the activation at xmark, the result replacing it. */
static int conv_settle(vae_ctx *c, const sdb_conv2d *cv, float **xp, size_t xmark, int *H, int *W)
{
    int Ho, Wo, rc;
    sdb_conv2d_out_size(cv, *H, *W, &Ho, &Wo);
    size_t n = (size_t)cv->cout * Ho * Wo;
    if (skipping(c, 0)) { /* a resumed tile's layer run by an earlier run */
        *H = Ho;
        *W = Wo;
        return reshape(c, xp, xmark, n);
    }
    float *y = alloc_f(c, n);
    if (!y) return oom(c, "convolution output");
    if ((rc = conv(c, cv, *xp, *H, *W, y, NULL))) return rc;
    *xp = settle(c, xmark, y, n);
    *H = Ho;
    *W = Wo;
    return 0;
}

/* Upsample2D: nearest x2 then conv3x3 (pad 1). The upsampled input is built strip by strip
 * (output rows r0..r0+R-1 need upsampled rows r0-1..r0+R), each strip convolved with the
 * image-border padding only where the strip touches the border. */
static int upsample_fwd(vae_ctx *c, const sdb_conv2d *cv, float **xp, size_t xmark, int *Hp, int *Wp)
{
    const int H = *Hp, W = *Wp, H2 = 2 * H, W2 = 2 * W, Cin = cv->cin, Cout = cv->cout;
    const float *x = *xp;
    size_t out_n = (size_t)Cout * H2 * W2;
    if (skipping(c, 0)) { /* a resumed tile's layer run by an earlier run */
        *Hp = H2;
        *Wp = W2;
        return reshape(c, xp, xmark, out_n);
    }
    float *out = alloc_f(c, out_n);
    if (!out) return oom(c, "upsample output");
    int rc;
    size_t row_floats = (size_t)Cin * W2;
    size_t budget = c->v->strip_floats ? c->v->strip_floats : VAE_STRIP_FLOATS;
    size_t rmax = budget / row_floats;
    int R = rmax > (size_t)H2 + 2 ? H2 : (int)rmax - 2;
    if (R < 2) R = 2;
    if (R >= H2) {
        float *up = alloc_f(c, (size_t)Cin * H2 * W2);
        if (!up) return oom(c, "upsample");
        sdb_upsample_nearest(x, 1, Cin, H, W, up, H2, W2);
        if ((rc = conv(c, cv, up, H2, W2, out, NULL))) return rc;
    } else {
        float *strip = alloc_f(c, (size_t)Cin * (R + 2) * W2);
        float *so = alloc_f(c, (size_t)Cout * R * W2);
        if (!strip || !so) return oom(c, "upsample strips");
        for (int r0 = 0; r0 < H2; r0 += R) {
            int rows = H2 - r0 < R ? H2 - r0 : R;
            int first = r0 - 1 < 0 ? 0 : r0 - 1;
            int last = r0 + rows > H2 - 1 ? H2 - 1 : r0 + rows; /* inclusive */
            int sr = last - first + 1;
            for (int ch = 0; ch < Cin; ch++) {
                for (int i = 0; i < sr; i++) {
                    const float *src = x + ((size_t)ch * H + (first + i) / 2) * W;
                    float *dst = strip + ((size_t)ch * sr + i) * W2;
                    for (int j = 0; j < W; j++) dst[2 * j] = dst[2 * j + 1] = src[j];
                }
            }
            sdb_conv2d sc = *cv;
            sc.pad_t = (r0 == 0) ? 1 : 0;
            sc.pad_b = (r0 + rows == H2) ? 1 : 0;
            sc.pad_l = sc.pad_r = 1;
            if ((rc = conv(c, &sc, strip, sr, W2, so, NULL))) return rc;
            for (int ch = 0; ch < Cout; ch++)
                memcpy(out + ((size_t)ch * H2 + r0) * W2, so + (size_t)ch * rows * W2,
                       (size_t)rows * W2 * sizeof(float));
        }
    }
    *xp = settle(c, xmark, out, out_n);
    *Hp = H2;
    *Wp = W2;
    return 0;
}

/* Wraps a forward: measures the arena's peak above its use at entry and restores it. */
typedef struct { size_t entry, old_peak; } peak_guard;

static void peak_begin(sdb_arena *a, peak_guard *g)
{
    g->entry = a->used;
    g->old_peak = a->peak;
    a->peak = a->used;
}

static void peak_end(sdb_vae *v, sdb_arena *a, const peak_guard *g)
{
    v->peak = a->peak - g->entry;
    if (g->old_peak > a->peak) a->peak = g->old_peak;
    sdb_arena_reset(a, g->entry);
}

/* DiagonalGaussianDistribution of n latent values: x = [mean, logvar] -> mean, std (logvar clamped
 * to [-30, 20]; also written to logvar when given). */
static void posterior(const float *x, size_t n, float *mean, float *std, float *logvar)
{
    memcpy(mean, x, n * sizeof(float));
    for (size_t i = 0; i < n; i++) {
        float lv = x[n + i];
        lv = lv < -30.0f ? -30.0f : (lv > 20.0f ? 20.0f : lv);
        if (logvar) logvar[i] = lv;
        std[i] = expf(0.5f * lv);
    }
}

/* conv_in and the down blocks: image [in_channels, H, W] -> x [C, h, w] at xmark (the arena's top
 * on entry); *Hp, *Wp become h, w. */
static int enc_down(vae_ctx *c, const float *image, int *Hp, int *Wp, float **xp, size_t xmark)
{
    sdb_vae *v = c->v;
    const sdb_vae_config *cfg = &v->cfg;
    int H = *Hp, W = *Wp, rc;
    char nm[64];
    float *x = alloc_f(c, (size_t)v->enc_conv_in.cout * H * W);
    if (!x) return oom(c, "encoder");
    if (!skipping(c, 0) && (rc = conv(c, &v->enc_conv_in, image, H, W, x, NULL))) return rc;
    for (int i = 0; i < cfg->n_blocks; i++) {
        const vae_block *b = &v->enc_blocks[i];
        for (int j = 0; j < b->n_resnets; j++)
            if ((rc = resnet_fwd(c, &b->resnets[j], &x, xmark, H, W)) || stopped(c)) return rc;
        if (b->has_sample && (rc = conv_settle(c, &b->sample, &x, xmark, &H, &W))) return rc;
        snprintf(nm, sizeof nm, "encoder.down_blocks.%d", i);
        debug(c, nm, x, cfg->block_out_channels[i], H, W);
    }
    *xp = x;
    *Hp = H;
    *Wp = W;
    return 0;
}

/* The mid block, conv_norm_out + SiLU, conv_out and quant_conv: x [C, h, w] at xmark -> quant_conv's
 * output (mean, then the unclamped log-variance) [2 latent, h, w] at xmark. */
static int enc_tail(vae_ctx *c, float **xp, size_t xmark, int h, int w)
{
    sdb_vae *v = c->v;
    const sdb_vae_config *cfg = &v->cfg;
    int C = cfg->block_out_channels[cfg->n_blocks - 1], H = h, W = w, rc;
    if ((rc = mid_fwd(c, &v->enc_mid, xp, xmark, H, W))) return rc;
    debug(c, "encoder.mid_block", *xp, C, H, W);
    gn(c, &v->enc_norm_out, *xp, C, H, W, 1, *xp);
    if ((rc = conv_settle(c, &v->enc_conv_out, xp, xmark, &H, &W))) return rc;
    C = v->enc_conv_out.cout;
    debug(c, "encoder", *xp, C, H, W);
    if (v->has_quant) {
        if ((rc = conv_settle(c, &v->quant_conv, xp, xmark, &H, &W))) return rc;
        debug(c, "quant_conv", *xp, C, H, W);
    }
    return 0;
}

int sdb_vae_encode(sdb_vae *v, const float *image, int H, int W, float *mean, float *std,
                   float *logvar, sdb_arena *arena, sdb_err *err)
{
    const int H0 = H, W0 = W;
    int h, w;
    sdb_vae_latent_size(v, H, W, &h, &w);
    if (H < 1 || W < 1 || h < 1 || w < 1)
        return sdb_fail(err, SDB_EINVAL, "vae encode: image %dx%d is too small", H, W);
    vae_ctx c = {v, arena, err, NULL};
    peak_guard pg;
    peak_begin(arena, &pg);
    /* keep the activation's offset 64-byte aligned so settle() lands exactly on it */
    sdb_arena_alloc(arena, 0);
    size_t xmark = sdb_arena_mark(arena);
    float *x = NULL;
    int rc = enc_down(&c, image, &H, &W, &x, xmark);
    if (!rc && (H != h || W != w))
        rc = sdb_fail(err, SDB_EINVAL, "internal: encoder output %dx%d, expected %dx%d", H, W, h, w);
    if (!rc) rc = enc_tail(&c, &x, xmark, h, w);
    if (!rc) posterior(x, (size_t)v->cfg.latent_channels * h * w, mean, std, logvar);
    peak_end(v, arena, &pg);
    if (rc) sdb_err_prefix(err, "VAE encode (%dx%d)", H0, W0);
    return rc;
}

/* post_quant_conv, conv_in and the mid block: z [latent, h, w] -> x [C, h, w] at xmark (the
 * arena's top on entry). */
static int dec_front(vae_ctx *c, const float *z, int h, int w, float **xp, size_t xmark)
{
    sdb_vae *v = c->v;
    const int L = v->cfg.latent_channels, C = v->dec_conv_in.cout;
    int H = h, W = w, rc;
    float *x = alloc_f(c, (size_t)L * h * w);
    if (!x) return oom(c, "decoder");
    memcpy(x, z, (size_t)L * h * w * sizeof(float));
    if (v->has_post_quant) {
        if ((rc = conv_settle(c, &v->post_quant_conv, &x, xmark, &H, &W))) return rc;
        debug(c, "post_quant_conv", x, L, H, W);
    }
    if ((rc = conv_settle(c, &v->dec_conv_in, &x, xmark, &H, &W))) return rc;
    debug(c, "decoder.conv_in", x, C, H, W);
    if ((rc = mid_fwd(c, &v->dec_mid, &x, xmark, H, W))) return rc;
    debug(c, "decoder.mid_block", x, C, H, W);
    *xp = x;
    return 0;
}

/* The up blocks, conv_norm_out + SiLU and conv_out: x [C, h, w] at xmark -> image [out, H, W]
 * (not computed when image is NULL: a statistics-only pass). */
static int dec_back(vae_ctx *c, float **xp, size_t xmark, int h, int w, float *image)
{
    sdb_vae *v = c->v;
    const sdb_vae_config *cfg = &v->cfg;
    int H = h, W = w, C = v->dec_conv_in.cout, rc;
    char nm[64];
    for (int i = 0; i < cfg->n_blocks; i++) {
        const vae_block *b = &v->dec_blocks[i];
        for (int j = 0; j < b->n_resnets; j++)
            if ((rc = resnet_fwd(c, &b->resnets[j], xp, xmark, H, W)) || stopped(c)) return rc;
        C = b->resnets[b->n_resnets - 1].cout;
        if (b->has_sample && (rc = upsample_fwd(c, &b->sample, xp, xmark, &H, &W))) return rc;
        snprintf(nm, sizeof nm, "decoder.up_blocks.%d", i);
        debug(c, nm, *xp, C, H, W);
    }
    const size_t n = (size_t)C * H * W;
    if (resuming_here(c) && (rc = unpark(c, *xp, n, NULL, 0))) return rc;
    gn(c, &v->dec_norm_out, *xp, C, H, W, 1, *xp);
    if (stopped(c)) return park(c, *xp, n, NULL, 0);
    return image ? conv(c, &v->dec_conv_out, *xp, H, W, image, NULL) : 0;
}

int sdb_vae_decode(sdb_vae *v, const float *z, int h, int w, float *image, sdb_arena *arena,
                   sdb_err *err)
{
    if (h < 1 || w < 1) return sdb_fail(err, SDB_EINVAL, "vae decode: latent %dx%d is empty", h, w);
    vae_ctx c = {v, arena, err, NULL};
    peak_guard pg;
    peak_begin(arena, &pg);
    sdb_arena_alloc(arena, 0);
    size_t xmark = sdb_arena_mark(arena);
    float *x = NULL;
    int rc = dec_front(&c, z, h, w, &x, xmark);
    if (!rc) rc = dec_back(&c, &x, xmark, h, w, image);
    peak_end(v, arena, &pg);
    if (rc) sdb_err_prefix(err, "VAE decode (latent %dx%d)", h, w);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* tiling (see vae.h). Measured on the full-size random SD 1.5 VAE (512x512, 256-pixel tiles),
 * diffusers' tiling (each tile alone, blended over 1/4 tile) is 177/255 off the untiled decode;
 * its three causes and what is done about each:
 *  - the mid block's attention is global over the latent: conv_in and the mid block (decode) /
 *    the mid block, conv_norm_out, conv_out and quant_conv (encode) run on the whole latent, at
 *    1/8 resolution (a 2048x2048 image: 256x256 latents, 128 MiB per 512-channel tensor);
 *  - a tile's border sees zero padding where the image goes on: each tile is computed with a
 *    margin of the receptive field of the tiled layers (every 3x3 convolution widens it by one
 *    pixel at its resolution) and only its core kept, so the cores are exact and need no blend;
 *  - every GroupNorm's statistics are the whole image's: each tile adds the sums over its core
 *    to the run's accumulators (double). Exact (the default): run k stops every tile at GroupNorm
 *    k, once the statistics of those before it are exact, so its sums are exact too; the tile's
 *    state there (the GroupNorm's input and the residual still pending in its resnet) is parked
 *    in a scratch file and run k + 1 resumes it (layers before that GroupNorm are skipped, only
 *    the activation's shape follows them): the same floats as recomputing the tile from its input
 *    (`recompute`), in about one run's time. With `passes`: pass 1 normalises each tile with its
 *    own statistics, every later pass with the whole image's from the pass before (pass k has the
 *    first k GroupNorms exact; README: Big images). Only one tile's activations exist at a time. */

/* The VAE's scale factor f = 2^(blocks - 1). */
static int vae_factor(const sdb_vae *v)
{
    int f = 1;
    for (int i = 0; i < v->cfg.n_blocks - 1; i++) f *= 2;
    return f;
}

int sdb_vae_tile_size(const sdb_vae *v)
{
    const int f = vae_factor(v);
    int t = v->tile_px ? v->tile_px : v->cfg.sample_size;
    t = t / f * f;
    return t < f ? f : t;
}

void sdb_vae_set_tile_size(sdb_vae *v, int pixels) { v->tile_px = pixels > 0 ? pixels : 0; }

void sdb_vae_set_tiling(sdb_vae *v, const sdb_vae_tile_opts *t)
{
    if (t) v->tiling = *t;
    else {
        memset(&v->tiling, 0, sizeof v->tiling);
        v->tiling.margin = -1;
    }
}

int sdb_vae_tiles_image(const sdb_vae *v, int H, int W)
{
    int t = sdb_vae_tile_size(v);
    return H > t || W > t;
}

static int n_groupnorms(const vae_block *b, int n_blocks)
{
    int n = 0;
    for (int i = 0; i < n_blocks; i++) n += 2 * b[i].n_resnets;
    return n;
}

/* The largest state a parked tile holds (resnet_park_per_px at each resolution), in floats per
 * latent of the tile, over n blocks whose first runs at `area` pixels per latent, each sampler
 * multiplying it by 4 (decode's upsamplers) or dividing it by 4 (encode's downsamplers). */
static size_t blocks_park_per_latent(const vae_block *blocks, int n, size_t area, int up)
{
    size_t mx = 0;
    for (int i = 0; i < n; i++) {
        for (int j = 0; j < blocks[i].n_resnets; j++) {
            size_t q = resnet_park_per_px(&blocks[i].resnets[j]) * area;
            if (q > mx) mx = q;
        }
        if (blocks[i].has_sample) area = up ? area * 4 : area / 4;
    }
    return mx;
}

/* decode: the up blocks, then conv_norm_out's input at full resolution */
static size_t decode_park_per_latent(const sdb_vae *v)
{
    const size_t f = (size_t)vae_factor(v);
    size_t mx = blocks_park_per_latent(v->dec_blocks, v->cfg.n_blocks, 1, 1);
    size_t q = (size_t)v->cfg.block_out_channels[0] * f * f;
    return q > mx ? q : mx;
}

/* encode: the down blocks, from full resolution */
static size_t encode_park_per_latent(const sdb_vae *v)
{
    const size_t f = (size_t)vae_factor(v);
    return blocks_park_per_latent(v->enc_blocks, v->cfg.n_blocks, f * f, 0);
}

uint64_t sdb_vae_park_bytes(const sdb_vae *v) { return v->park_bytes; }

/* Latents of margin that cover the receptive field of the tiled decoder layers (the up blocks,
 * conv_out): the band of wrong values next to a tile's cut edge, grown by each 3x3 convolution
 * by one pixel and doubled by each upsampler. */
int sdb_vae_decode_margin(const sdb_vae *v)
{
    int e = 0;
    for (int i = 0; i < v->cfg.n_blocks; i++) {
        e += 2 * v->dec_blocks[i].n_resnets;
        if (v->dec_blocks[i].has_sample) e = 2 * e + 1;
    }
    e += 1; /* conv_out */
    const int f = vae_factor(v);
    return (e + f - 1) / f;
}

/* The same for the tiled encoder layers (conv_in, the down blocks), in latents (x f pixels): a
 * downsampler (pad right/bottom, 3x3, stride 2) maps a band of e to at most (e + 1) / 2 + 1. */
int sdb_vae_encode_margin(const sdb_vae *v)
{
    int e = 1; /* conv_in */
    for (int i = 0; i < v->cfg.n_blocks; i++) {
        e += 2 * v->enc_blocks[i].n_resnets;
        if (v->enc_blocks[i].has_sample) e = (e + 1) / 2 + 1;
    }
    return e;
}

static int stats_init(vae_ctx *c, tile_stats *s, int max_gn)
{
    memset(s, 0, sizeof *s);
    s->max_gn = max_gn;
    s->resume = -1;
    s->groups = c->v->cfg.norm_num_groups;
    size_t n = (size_t)max_gn * s->groups;
    s->acc = (double *)sdb_arena_alloc(c->a, 2 * n * sizeof(double));
    s->cnt = (double *)sdb_arena_alloc(c->a, (size_t)max_gn * sizeof(double));
    s->mean = (double *)sdb_arena_alloc(c->a, n * sizeof(double));
    s->rstd = (double *)sdb_arena_alloc(c->a, n * sizeof(double));
    if (!s->acc || !s->cnt || !s->mean || !s->rstd) return oom(c, "tile statistics");
    return 0;
}

static void stats_begin_pass(tile_stats *s)
{
    memset(s->acc, 0, (size_t)s->max_gn * s->groups * 2 * sizeof(double));
    memset(s->cnt, 0, (size_t)s->max_gn * sizeof(double));
}

/* The whole image's mean and 1 / sqrt(biased variance + eps) per GroupNorm and group. */
static void stats_end_pass(tile_stats *s)
{
    for (int k = 0; k < s->max_gn; k++)
        for (int g = 0; g < s->groups && s->cnt[k] > 0; g++) {
            size_t i = (size_t)k * s->groups + g;
            double m = s->acc[2 * i] / s->cnt[k], var = s->acc[2 * i + 1] / s->cnt[k] - m * m;
            if (var < 0) var = 0;
            s->mean[i] = m;
            s->rstd[i] = 1.0 / sqrt(var + (double)VAE_GN_EPS);
        }
    s->have_stats = 1;
}

/* src [C, SH, SW] rows sy.., columns sx.. (hh x ww) -> dst [C, DH, DW] at (dy, dx). */
static void copy_rect(const float *src, int SH, int SW, int sy, int sx, float *dst, int DH, int DW, int dy,
                      int dx, int C, int hh, int ww)
{
    assert(sy + hh <= SH && sx + ww <= SW && dy + hh <= DH && dx + ww <= DW);
    for (int c = 0; c < C; c++)
        for (int y = 0; y < hh; y++)
            memcpy(dst + ((size_t)c * DH + dy + y) * DW + dx, src + ((size_t)c * SH + sy + y) * SW + sx,
                   (size_t)ww * sizeof(float));
}

/* A tile over an h x w latent grid: core [cy0, cy1) x [cx0, cx1) (tiles of tl latents, row r,
 * column k) and its extent, the core plus m latents each side within the grid. `whole`: the tile
 * is the whole grid (the oracle statistics pass). */
typedef struct { int cy0, cy1, cx0, cx1, ey0, ey1, ex0, ex1; } tile_rect;

static tile_rect tile_at(int h, int w, int tl, int m, int r, int k, int whole)
{
    tile_rect t;
    if (whole) {
        t.cy0 = t.ey0 = 0; t.cy1 = t.ey1 = h;
        t.cx0 = t.ex0 = 0; t.cx1 = t.ex1 = w;
        return t;
    }
    t.cy0 = r * tl; t.cy1 = t.cy0 + tl < h ? t.cy0 + tl : h;
    t.cx0 = k * tl; t.cx1 = t.cx0 + tl < w ? t.cx0 + tl : w;
    t.ey0 = t.cy0 - m > 0 ? t.cy0 - m : 0; t.ey1 = t.cy1 + m < h ? t.cy1 + m : h;
    t.ex0 = t.cx0 - m > 0 ? t.cx0 - m : 0; t.ex1 = t.cx1 + m < w ? t.cx1 + m : w;
    return t;
}

/* Points the statistics at a tile whose input is s times the latent grid (s = f for the encoder's
 * pixels, 1 for the decoder's latents). */
static void stats_tile(tile_stats *st, const tile_rect *t, int s)
{
    st->idx = 0;
    st->stopped = 0;
    st->in_h = (t->ey1 - t->ey0) * s;
    st->in_w = (t->ex1 - t->ex0) * s;
    st->cy0 = (t->cy0 - t->ey0) * s; st->cy1 = (t->cy1 - t->ey0) * s;
    st->cx0 = (t->cx0 - t->ex0) * s; st->cx1 = (t->cx1 - t->ex0) * s;
}

/* The runs over the tiles: exact statistics (passes 0): one run per GroupNorm, run k stopping at
 * GroupNorm k with the exact statistics of those before it, then the run that computes the output;
 * else `passes` full runs. */
static int tile_runs(const sdb_vae *v, int n_gn) { return v->tiling.passes > 0 ? v->tiling.passes : n_gn + 1; }

/* One tile of a run: computes it (its GroupNorms through c->ts) and, on the last run, keeps its
 * core. The arena is reset after it. */
typedef int (*tile_fn)(vae_ctx *c, const tile_rect *t, int last, void *ud);

/* The runs over an h x w latent grid in tiles of tl latents with margins m (see tile_runs). With
 * exact statistics and parking (the default), run k parks each tile's state at GroupNorm k in the
 * tile's slot of a scratch file (park_per_latent floats per latent of the tile's extent: the
 * largest state over the GroupNorms) and run k + 1 resumes it there, so the tiled layers run about
 * once in all instead of once per GroupNorm; the floats are the same as recomputing them. A tile
 * reads its slot before it writes it again, so one slot per tile is enough. */
static int run_tiles(vae_ctx *c, tile_stats *st, int n_gn, int h, int w, int tl, int m, size_t park_per_latent,
                     tile_fn fn, void *ud)
{
    const sdb_vae_tile_opts *opt = &c->v->tiling;
    const int runs = tile_runs(c->v, n_gn), staged = opt->passes <= 0, parked = staged && !opt->recompute;
    const int nr = (h + tl - 1) / tl, nc = (w + tl - 1) / tl;
    sdb_scratch file = {.fd = -1};
    uint64_t total = 0;
    int rc = 0;
    c->v->park_bytes = 0;
    if (parked) {
        for (int r = 0; r < nr; r++)
            for (int k = 0; k < nc; k++) {
                const tile_rect t = tile_at(h, w, tl, m, r, k, 0);
                total += (uint64_t)park_per_latent * (t.ey1 - t.ey0) * (t.ex1 - t.ex0) * sizeof(float);
            }
        if ((rc = sdb_scratch_open(&file, opt->scratch_dir, c->err)) || (rc = sdb_scratch_reserve(&file, total, c->err))) {
            sdb_scratch_close(&file);
            return sdb_err_prefix(c->err, "parking the tiles (%.0f MiB)", (double)total / 1048576.0);
        }
        c->v->park_bytes = total;
        st->park = &file;
    }
    for (int p = 0; !rc && p < runs; p++) {
        const int last = p == runs - 1, whole = !staged && opt->oracle_stats && p == 0 && !last;
        stats_begin_pass(st);
        st->stop_at = staged && !last ? p : -1;
        uint64_t off = 0;
        for (int r = 0; !rc && r < (whole ? 1 : nr); r++)
            for (int k = 0; !rc && k < (whole ? 1 : nc); k++) {
                const tile_rect t = tile_at(h, w, tl, m, r, k, whole);
                const size_t tmark = sdb_arena_mark(c->a);
                st->park_off = off;
                st->park_floats = park_per_latent * (size_t)(t.ey1 - t.ey0) * (t.ex1 - t.ex0);
                off += st->park_floats * sizeof(float);
                st->resume = parked ? p - 1 : -1;
                rc = fn(c, &t, last, ud);
                assert(rc || st->idx == (st->stop_at >= 0 ? st->stop_at + 1 : n_gn));
                sdb_arena_reset(c->a, tmark);
            }
        if (!rc && !last) stats_end_pass(st);
    }
    st->park = NULL;
    st->resume = -1;
    sdb_scratch_close(&file);
    return rc;
}

typedef struct {
    tile_stats *st;
    const float *z, *mid;   /* the latent; the mid block's output (NULL with local_mid) */
    int h, w, f;
    float *image;
} dec_job;

static int decode_tile(vae_ctx *c, const tile_rect *t, int last, void *ud)
{
    const dec_job *j = ud;
    const int eh = t->ey1 - t->ey0, ew = t->ex1 - t->ex0, f = j->f;
    const int L = c->v->cfg.latent_channels, Cm = c->v->dec_conv_in.cout, Co = c->v->cfg.out_channels;
    float *ot = last ? alloc_f(c, (size_t)Co * eh * f * ew * f) : NULL;
    float *zt = j->mid ? NULL : alloc_f(c, (size_t)L * eh * ew);
    if ((last && !ot) || (!j->mid && !zt)) return oom(c, "tile");
    sdb_arena_alloc(c->a, 0);
    const size_t xm = sdb_arena_mark(c->a);
    float *x = NULL;
    int rc = 0;
    if (j->st->resume >= 0) { /* a parked tile: its input was used by earlier runs */
        if (!(x = alloc_f(c, (size_t)Cm * eh * ew))) return oom(c, "tile");
    } else if (!j->mid) { /* local_mid: conv_in and the mid block on the tile too */
        copy_rect(j->z, j->h, j->w, t->ey0, t->ex0, zt, eh, ew, 0, 0, L, eh, ew);
        if ((rc = dec_front(c, zt, eh, ew, &x, xm))) return rc;
    } else {
        if (!(x = alloc_f(c, (size_t)Cm * eh * ew))) return oom(c, "tile");
        copy_rect(j->mid, j->h, j->w, t->ey0, t->ex0, x, eh, ew, 0, 0, Cm, eh, ew);
    }
    stats_tile(j->st, t, 1);
    c->ts = j->st;
    rc = dec_back(c, &x, xm, eh, ew, ot);
    c->ts = NULL;
    if (!rc && last)
        copy_rect(ot, eh * f, ew * f, (t->cy0 - t->ey0) * f, (t->cx0 - t->ex0) * f, j->image, j->h * f, j->w * f,
                  t->cy0 * f, t->cx0 * f, Co, (t->cy1 - t->cy0) * f, (t->cx1 - t->cx0) * f);
    return rc;
}

int sdb_vae_decode_tiled(sdb_vae *v, const float *z, int h, int w, float *image, sdb_arena *arena,
                         sdb_err *err)
{
    const int f = vae_factor(v), tl = sdb_vae_tile_size(v) / f;
    if (h < 1 || w < 1 || (h <= tl && w <= tl)) return sdb_vae_decode(v, z, h, w, image, arena, err);
    const sdb_vae_tile_opts *opt = &v->tiling;
    const int m = opt->margin >= 0 ? opt->margin : sdb_vae_decode_margin(v);
    const int n_gn = n_groupnorms(v->dec_blocks, v->cfg.n_blocks) + 1; /* + conv_norm_out */
    vae_ctx c = {v, arena, err, NULL};
    peak_guard pg;
    peak_begin(arena, &pg);
    tile_stats st;
    float *mid = NULL;
    int rc = stats_init(&c, &st, n_gn);
    if (!rc && !opt->local_mid) { /* conv_in and the mid block on the whole latent */
        sdb_arena_alloc(arena, 0);
        rc = dec_front(&c, z, h, w, &mid, sdb_arena_mark(arena));
    }
    dec_job j = {&st, z, mid, h, w, f, image};
    if (!rc) rc = run_tiles(&c, &st, n_gn, h, w, tl, m, decode_park_per_latent(v), decode_tile, &j);
    peak_end(v, arena, &pg);
    if (rc) sdb_err_prefix(err, "tiled VAE decode (latent %dx%d)", h, w);
    return rc;
}

typedef struct {
    tile_stats *st;
    const float *image;
    int H, W, f;
    float *mid;             /* the down blocks' output [C, H / f, W / f] */
} enc_job;

static int encode_tile(vae_ctx *c, const tile_rect *t, int last, void *ud)
{
    const enc_job *j = ud;
    const int f = j->f, Ci = c->v->cfg.in_channels, Cm = c->v->cfg.block_out_channels[c->v->cfg.n_blocks - 1];
    int th = (t->ey1 - t->ey0) * f, tw = (t->ex1 - t->ex0) * f;
    float *it = alloc_f(c, (size_t)Ci * th * tw);
    if (!it) return oom(c, "tile");
    if (j->st->resume < 0) /* a parked tile's conv_in ran in an earlier run */
        copy_rect(j->image, j->H, j->W, t->ey0 * f, t->ex0 * f, it, th, tw, 0, 0, Ci, th, tw);
    sdb_arena_alloc(c->a, 0);
    float *x = NULL;
    stats_tile(j->st, t, f);
    c->ts = j->st;
    int rc = enc_down(c, it, &th, &tw, &x, sdb_arena_mark(c->a));
    c->ts = NULL;
    assert(rc || j->st->stopped || (th == t->ey1 - t->ey0 && tw == t->ex1 - t->ex0));
    if (!rc && last)
        copy_rect(x, th, tw, t->cy0 - t->ey0, t->cx0 - t->ex0, j->mid, j->H / f, j->W / f, t->cy0, t->cx0, Cm,
                  t->cy1 - t->cy0, t->cx1 - t->cx0);
    return rc;
}

int sdb_vae_encode_tiled(sdb_vae *v, const float *image, int H, int W, float *mean, float *std,
                         float *logvar, sdb_arena *arena, sdb_err *err)
{
    const int ts = sdb_vae_tile_size(v), f = vae_factor(v);
    if (H <= ts && W <= ts) return sdb_vae_encode(v, image, H, W, mean, std, logvar, arena, err);
    if (H % f || W % f)
        return sdb_fail(err, SDB_EINVAL, "tiled VAE encode: image %dx%d is not a multiple of %d", W, H, f);
    const int m = v->tiling.margin >= 0 ? v->tiling.margin : sdb_vae_encode_margin(v);
    const int h = H / f, w = W / f, Cm = v->cfg.block_out_channels[v->cfg.n_blocks - 1];
    const int n_gn = n_groupnorms(v->enc_blocks, v->cfg.n_blocks);
    vae_ctx c = {v, arena, err, NULL};
    peak_guard pg;
    peak_begin(arena, &pg);
    tile_stats st;
    int rc = stats_init(&c, &st, n_gn);
    /* the down blocks' output of the whole image, assembled from the tiles' cores */
    sdb_arena_alloc(arena, 0);
    const size_t xmark = sdb_arena_mark(arena);
    float *mid = rc ? NULL : alloc_f(&c, (size_t)Cm * h * w);
    if (!rc && !mid) rc = oom(&c, "encoder");
    enc_job j = {&st, image, H, W, f, mid};
    if (!rc) rc = run_tiles(&c, &st, n_gn, h, w, ts / f, m, encode_park_per_latent(v), encode_tile, &j);
    if (!rc) rc = enc_tail(&c, &mid, xmark, h, w);
    if (!rc) posterior(mid, (size_t)v->cfg.latent_channels * h * w, mean, std, logvar);
    peak_end(v, arena, &pg);
    if (rc) sdb_err_prefix(err, "tiled VAE encode (%dx%d)", W, H);
    return rc;
}
