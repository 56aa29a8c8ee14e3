/*
 * ldm_names.c — diffusers -> CompVis/LDM single-file names for the U-Net and the VAE (see
 * ldm_names.h). Pure string rewriting: a name is split into a block prefix the layout decides
 * (e.g. "down_blocks.1.resnets.0" -> "input_blocks.4.0") and a tail rewritten per module kind.
 */
#include "sdb/ldm_names.h"
#include "sdb/vae.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int emit(char *out, size_t outsz, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int emit(char *out, size_t outsz, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, outsz, fmt, ap);
    va_end(ap);
    return (n < 0 || (size_t)n >= outsz) ? -1 : 0;
}

/* "<a>.<rest>" with a decimal a: parses it, *rest points after the dot. */
static int take_index(const char *s, int *v, const char **rest)
{
    char *end;
    if (*s < '0' || *s > '9') return -1;
    long x = strtol(s, &end, 10);
    if (*end != '.' || x < 0 || x > 1000) return -1;
    *v = (int)x;
    *rest = end + 1;
    return 0;
}

static int starts(const char *s, const char *p, const char **rest)
{
    size_t n = strlen(p);
    if (strncmp(s, p, n) != 0) return 0;
    *rest = s + n;
    return 1;
}

/* tail is "weight" or "bias" */
static int is_param(const char *tail) { return !strcmp(tail, "weight") || !strcmp(tail, "bias"); }

/* ---- U-Net --------------------------------------------------------------------------------- */

/* resnet internals: "norm1.weight" -> "in_layers.0.weight" ... */
static int unet_resnet_tail(const char *t, const char **ldm, const char **param)
{
    static const char *map[][2] = {{"norm1.", "in_layers.0"}, {"conv1.", "in_layers.2"},
                                   {"time_emb_proj.", "emb_layers.1"}, {"norm2.", "out_layers.0"},
                                   {"conv2.", "out_layers.3"}, {"conv_shortcut.", "skip_connection"}};
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
        const char *r;
        if (starts(t, map[i][0], &r) && is_param(r)) {
            *ldm = map[i][1];
            *param = r;
            return 0;
        }
    }
    return -1;
}

/* Transformer2DModel internals are named the same in both layouts; accept only known shapes. */
static int unet_attn_tail_ok(const char *t)
{
    const char *r;
    if ((starts(t, "norm.", &r) || starts(t, "proj_in.", &r) || starts(t, "proj_out.", &r)) && is_param(r))
        return 1;
    if (!starts(t, "transformer_blocks.", &r)) return 0;
    int k;
    const char *u;
    if (take_index(r, &k, &u)) return 0;
    static const char *ok[] = {"norm1.", "norm2.", "norm3.", "attn1.to_q.", "attn1.to_k.", "attn1.to_v.",
                               "attn1.to_out.0.", "attn2.to_q.", "attn2.to_k.", "attn2.to_v.",
                               "attn2.to_out.0.", "ff.net.0.proj.", "ff.net.2."};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        const char *p;
        if (starts(u, ok[i], &p) && is_param(p)) return 1;
    }
    return 0;
}

int sdb_ldm_unet_name_ctx(void *layout, const char *name, char *out, size_t outsz)
{
    const sdb_ldm_unet_layout *l = layout;
    const int L = l->layers_per_block, nb = l->n_blocks;
    const char *r, *u;
    int i, j;
    if (starts(name, "conv_in.", &r) && is_param(r)) return emit(out, outsz, "input_blocks.0.0.%s", r);
    if (starts(name, "time_embedding.linear_1.", &r) && is_param(r)) return emit(out, outsz, "time_embed.0.%s", r);
    if (starts(name, "time_embedding.linear_2.", &r) && is_param(r)) return emit(out, outsz, "time_embed.2.%s", r);
    if (starts(name, "conv_norm_out.", &r) && is_param(r)) return emit(out, outsz, "out.0.%s", r);
    if (starts(name, "conv_out.", &r) && is_param(r)) return emit(out, outsz, "out.2.%s", r);

    const char *ldm, *param;
    if (starts(name, "down_blocks.", &r)) {
        if (take_index(r, &i, &r) || i >= nb) return -1;
        if (starts(r, "resnets.", &u)) {
            if (take_index(u, &j, &u) || j >= L || unet_resnet_tail(u, &ldm, &param)) return -1;
            return emit(out, outsz, "input_blocks.%d.0.%s.%s", 1 + i * (L + 1) + j, ldm, param);
        }
        if (starts(r, "attentions.", &u)) {
            if (take_index(u, &j, &u) || j >= L || !unet_attn_tail_ok(u)) return -1;
            return emit(out, outsz, "input_blocks.%d.1.%s", 1 + i * (L + 1) + j, u);
        }
        if (starts(r, "downsamplers.0.conv.", &u) && is_param(u) && i < nb - 1)
            return emit(out, outsz, "input_blocks.%d.0.op.%s", 1 + i * (L + 1) + L, u);
        return -1;
    }
    if (starts(name, "mid_block.", &r)) {
        if (starts(r, "resnets.", &u)) {
            if (take_index(u, &j, &u) || j > 1 || unet_resnet_tail(u, &ldm, &param)) return -1;
            return emit(out, outsz, "middle_block.%d.%s.%s", 2 * j, ldm, param);
        }
        if (starts(r, "attentions.0.", &u) && unet_attn_tail_ok(u))
            return emit(out, outsz, "middle_block.1.%s", u);
        return -1;
    }
    if (starts(name, "up_blocks.", &r)) {
        if (take_index(r, &i, &r) || i >= nb) return -1;
        if (starts(r, "resnets.", &u)) {
            if (take_index(u, &j, &u) || j > L || unet_resnet_tail(u, &ldm, &param)) return -1;
            return emit(out, outsz, "output_blocks.%d.0.%s.%s", i * (L + 1) + j, ldm, param);
        }
        if (starts(r, "attentions.", &u)) {
            if (!l->up_has_attn[i] || take_index(u, &j, &u) || j > L || !unet_attn_tail_ok(u)) return -1;
            return emit(out, outsz, "output_blocks.%d.1.%s", i * (L + 1) + j, u);
        }
        if (starts(r, "upsamplers.0.conv.", &u) && is_param(u) && i < nb - 1)
            return emit(out, outsz, "output_blocks.%d.%d.conv.%s", i * (L + 1) + L, l->up_has_attn[i] ? 2 : 1, u);
        return -1;
    }
    return -1;
}

void sdb_ldm_unet_layout_sd(sdb_ldm_unet_layout *l)
{
    memset(l, 0, sizeof *l);
    l->n_blocks = 4;
    l->layers_per_block = 2;
    l->up_has_attn[1] = l->up_has_attn[2] = l->up_has_attn[3] = 1;
}

int sdb_ldm_unet_name(const char *name, char *out, size_t outsz)
{
    sdb_ldm_unet_layout l;
    sdb_ldm_unet_layout_sd(&l);
    return sdb_ldm_unet_name_ctx(&l, name, out, outsz);
}

int sdb_ldm_unet_layout_from_config(sdb_ldm_unet_layout *l, const sdb_config *c, sdb_err *err)
{
    memset(l, 0, sizeof *l);
    long long lpb, boc[SDB_LDM_MAX_BLOCKS + 1];
    const char *ut[SDB_LDM_MAX_BLOCKS + 1];
    int nb = 0, nu = 0, rc;
    if ((rc = sdb_config_int(c, "layers_per_block", 2, &lpb, err))) return rc;
    if ((rc = sdb_config_int_array(c, "block_out_channels", boc, SDB_LDM_MAX_BLOCKS + 1, &nb, err))) return rc;
    if ((rc = sdb_config_string_array(c, "up_block_types", ut, SDB_LDM_MAX_BLOCKS + 1, &nu, err))) return rc;
    if (nb < 1 || nb > SDB_LDM_MAX_BLOCKS)
        return sdb_fail(err, SDB_EUNSUPPORTED, "%s: field 'block_out_channels': 1 to %d blocks are supported", c->path, SDB_LDM_MAX_BLOCKS);
    if (nu != nb)
        return sdb_fail(err, SDB_EUNSUPPORTED, "%s: field 'up_block_types': length differs from block_out_channels", c->path);
    if (lpb < 1 || lpb > 16)
        return sdb_fail(err, SDB_EUNSUPPORTED, "%s: field 'layers_per_block': %lld is not supported", c->path, lpb);
    l->n_blocks = nb;
    l->layers_per_block = (int)lpb;
    for (int i = 0; i < nb; i++) l->up_has_attn[i] = strstr(ut[i], "CrossAttn") != NULL;
    return 0;
}

int sdb_ldm_unet_weights(sdb_weights *w, sdb_st *st, const sdb_config *unet_cfg, sdb_err *err)
{
    sdb_ldm_unet_layout *l = malloc(sizeof *l);
    if (!l) return sdb_fail(err, SDB_ENOMEM, "out of memory");
    int rc = sdb_ldm_unet_layout_from_config(l, unet_cfg, err);
    if (rc) { free(l); return rc; }
    sdb_weights_wrap(w, st, "unet", SDB_LDM_UNET_PREFIX, NULL);
    sdb_weights_set_map_ctx(w, sdb_ldm_unet_name_ctx, l, 1);
    return 0;
}

/* ---- VAE ----------------------------------------------------------------------------------- */

static int vae_resnet_tail(const char *t, char *buf, size_t n)
{
    const char *r;
    static const char *same[] = {"norm1.", "conv1.", "norm2.", "conv2."};
    for (size_t i = 0; i < sizeof same / sizeof same[0]; i++)
        if (starts(t, same[i], &r) && is_param(r)) return emit(buf, n, "%s", t);
    if (starts(t, "conv_shortcut.", &r) && is_param(r)) return emit(buf, n, "nin_shortcut.%s", r);
    return -1;
}

static int vae_attn_tail(const char *t, char *buf, size_t n)
{
    static const char *map[][2] = {{"group_norm.", "norm"}, {"to_q.", "q"}, {"to_k.", "k"},
                                   {"to_v.", "v"}, {"to_out.0.", "proj_out"}};
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
        const char *r;
        if (starts(t, map[i][0], &r) && is_param(r)) return emit(buf, n, "%s.%s", map[i][1], r);
    }
    return -1;
}

/* mid_block tail (after "mid_block.") -> "mid.block_1.conv1.weight" etc. */
static int vae_mid(const char *coder, const char *r, char *out, size_t outsz)
{
    const char *u;
    int j;
    char t[256];
    if (starts(r, "resnets.", &u)) {
        if (take_index(u, &j, &u) || j > 1 || vae_resnet_tail(u, t, sizeof t)) return -1;
        return emit(out, outsz, "%s.mid.block_%d.%s", coder, j + 1, t);
    }
    if (starts(r, "attentions.0.", &u)) {
        if (vae_attn_tail(u, t, sizeof t)) return -1;
        return emit(out, outsz, "%s.mid.attn_1.%s", coder, t);
    }
    return -1;
}

int sdb_ldm_vae_name_ctx(void *layout, const char *name, char *out, size_t outsz)
{
    const sdb_ldm_vae_layout *l = layout;
    const int nb = l->n_blocks;
    const char *r, *u;
    int i, j;
    char t[256];
    static const char *same[] = {"encoder.conv_in.", "encoder.conv_out.", "decoder.conv_in.",
                                 "decoder.conv_out.", "quant_conv.", "post_quant_conv."};
    for (size_t k = 0; k < sizeof same / sizeof same[0]; k++)
        if (starts(name, same[k], &r) && is_param(r)) return emit(out, outsz, "%s", name);
    if (starts(name, "encoder.conv_norm_out.", &r) && is_param(r)) return emit(out, outsz, "encoder.norm_out.%s", r);
    if (starts(name, "decoder.conv_norm_out.", &r) && is_param(r)) return emit(out, outsz, "decoder.norm_out.%s", r);
    if (starts(name, "encoder.mid_block.", &r)) return vae_mid("encoder", r, out, outsz);
    if (starts(name, "decoder.mid_block.", &r)) return vae_mid("decoder", r, out, outsz);
    if (starts(name, "encoder.down_blocks.", &r)) {
        if (take_index(r, &i, &r) || i >= nb) return -1;
        if (starts(r, "resnets.", &u)) {
            if (take_index(u, &j, &u) || vae_resnet_tail(u, t, sizeof t)) return -1;
            return emit(out, outsz, "encoder.down.%d.block.%d.%s", i, j, t);
        }
        if (starts(r, "downsamplers.0.conv.", &u) && is_param(u) && i < nb - 1)
            return emit(out, outsz, "encoder.down.%d.downsample.conv.%s", i, u);
        return -1;
    }
    if (starts(name, "decoder.up_blocks.", &r)) {
        if (take_index(r, &i, &r) || i >= nb) return -1;
        if (starts(r, "resnets.", &u)) {
            if (take_index(u, &j, &u) || vae_resnet_tail(u, t, sizeof t)) return -1;
            return emit(out, outsz, "decoder.up.%d.block.%d.%s", nb - 1 - i, j, t);
        }
        if (starts(r, "upsamplers.0.conv.", &u) && is_param(u) && i < nb - 1)
            return emit(out, outsz, "decoder.up.%d.upsample.conv.%s", nb - 1 - i, u);
        return -1;
    }
    return -1;
}

int sdb_ldm_vae_name(const char *name, char *out, size_t outsz)
{
    sdb_ldm_vae_layout l = {4};
    return sdb_ldm_vae_name_ctx(&l, name, out, outsz);
}

int sdb_ldm_is_conv_linear(const char *name)
{
    const char *r;
    if (!starts(name, "encoder.mid_block.attentions.", &r) && !starts(name, "decoder.mid_block.attentions.", &r))
        return 0;
    int j;
    if (take_index(r, &j, &r)) return 0;
    return !strcmp(r, "to_q.weight") || !strcmp(r, "to_k.weight") || !strcmp(r, "to_v.weight") ||
           !strcmp(r, "to_out.0.weight");
}

int sdb_ldm_vae_weights(sdb_weights *w, sdb_st *st, const struct sdb_vae_config *vcfg, sdb_err *err)
{
    return sdb_ldm_vae_weights_prefix(w, st, vcfg, SDB_LDM_VAE_PREFIX, err);
}

int sdb_ldm_vae_weights_prefix(sdb_weights *w, sdb_st *st, const struct sdb_vae_config *vcfg, const char *prefix,
                               sdb_err *err)
{
    if (vcfg->n_blocks < 1 || vcfg->n_blocks > SDB_LDM_MAX_BLOCKS)
        return sdb_fail(err, SDB_EUNSUPPORTED, "vae: %d blocks: the LDM layout supports 1 to %d", vcfg->n_blocks, SDB_LDM_MAX_BLOCKS);
    sdb_ldm_vae_layout *l = malloc(sizeof *l);
    if (!l) return sdb_fail(err, SDB_ENOMEM, "out of memory");
    l->n_blocks = vcfg->n_blocks;
    sdb_weights_wrap(w, st, "vae", prefix, NULL);
    sdb_weights_set_map_ctx(w, sdb_ldm_vae_name_ctx, l, 1);
    return 0;
}
