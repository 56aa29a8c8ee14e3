/*
 * ldm_names.h — diffusers names -> single-file (CompVis/LDM) checkpoint names, U-Net and VAE.
 *
 * The inverse of diffusers' scripts/convert_diffusers_to_original_stable_diffusion.py (v0.30.3):
 *   U-Net, prefix "model.diffusion_model.": conv_in -> input_blocks.0.0, time_embedding.linear_1/2
 *   -> time_embed.0/2, down_blocks.i.resnets.j / attentions.j -> input_blocks.(1+i*(L+1)+j).0 / .1,
 *   down_blocks.i.downsamplers.0.conv -> input_blocks.(1+i*(L+1)+L).0.op, mid_block.resnets.0 /
 *   attentions.0 / resnets.1 -> middle_block.0 / 1 / 2, up_blocks.i.resnets.j / attentions.j ->
 *   output_blocks.(i*(L+1)+j).0 / .1, up_blocks.i.upsamplers.0.conv ->
 *   output_blocks.(i*(L+1)+L).(1 or 2 when the block has attentions).conv, conv_norm_out / conv_out
 *   -> out.0 / out.2; inside resnets norm1 / conv1 / time_emb_proj / norm2 / conv2 / conv_shortcut ->
 *   in_layers.0 / in_layers.2 / emb_layers.1 / out_layers.0 / out_layers.3 / skip_connection;
 *   attention (Transformer2DModel) names are the same in both layouts. (L = layers_per_block.)
 *   VAE, prefix "first_stage_model.": encoder.down_blocks.i.resnets.j -> encoder.down.i.block.j,
 *   downsamplers.0 -> downsample, decoder.up_blocks.i -> decoder.up.(N-1-i) (REVERSED, N = number
 *   of blocks), upsamplers.0 -> upsample, mid_block.resnets.j -> mid.block_(j+1),
 *   mid_block.attentions.0 -> mid.attn_1 with group_norm / to_q / to_k / to_v / to_out.0 -> norm /
 *   q / k / v / proj_out, conv_shortcut -> nin_shortcut, conv_norm_out -> norm_out; conv_in,
 *   conv_out, quant_conv, post_quant_conv unchanged.
 *
 * NOTE for the VAE loader: the LDM mid-block attention q/k/v/proj_out weights are 1x1 convs
 * [C, C, 1, 1] where diffusers has linears [C, C] (same data). sdb_ldm_is_conv_linear() tells
 * which diffusers names those are; vae.c's load_square() accepts both shapes.
 *
 * The map functions write the name WITHOUT the prefix (sdb_weights adds it) and return 0, or -1
 * for a name that has no LDM counterpart (or does not fit in outsz).
 */
#ifndef SDB_LDM_NAMES_H
#define SDB_LDM_NAMES_H

#include <stddef.h>
#include "sdb/config.h"
#include "sdb/error.h"
#include "sdb/safetensors.h"
#include "sdb/weights.h"

#define SDB_LDM_MAX_BLOCKS 8
#define SDB_LDM_UNET_PREFIX "model.diffusion_model."
#define SDB_LDM_VAE_PREFIX "first_stage_model."
#define SDB_LDM_TEXT_PREFIX "cond_stage_model.transformer."

/* What the U-Net name layout depends on (from unet/config.json). */
typedef struct sdb_ldm_unet_layout {
    int n_blocks;                          /* len(block_out_channels) */
    int layers_per_block;
    int up_has_attn[SDB_LDM_MAX_BLOCKS];   /* up_block_types[i] is CrossAttnUpBlock2D */
} sdb_ldm_unet_layout;

/* What the VAE name layout depends on. */
typedef struct sdb_ldm_vae_layout {
    int n_blocks;
} sdb_ldm_vae_layout;

int sdb_ldm_unet_layout_from_config(sdb_ldm_unet_layout *l, const sdb_config *unet_cfg, sdb_err *err);
/* SD 1.x/2.x: 4 blocks, 2 layers, up blocks 1..3 with attention. */
void sdb_ldm_unet_layout_sd(sdb_ldm_unet_layout *l);

/* sdb_name_map_ctx_fn maps (ctx = sdb_ldm_unet_layout* / sdb_ldm_vae_layout*). */
int sdb_ldm_unet_name_ctx(void *layout, const char *name, char *out, size_t outsz);
int sdb_ldm_vae_name_ctx(void *layout, const char *name, char *out, size_t outsz);
/* sdb_name_map_fn maps for the standard SD layouts (U-Net 4 blocks x 2 layers, VAE 4 blocks). */
int sdb_ldm_unet_name(const char *name, char *out, size_t outsz);
int sdb_ldm_vae_name(const char *name, char *out, size_t outsz);

/* 1 when the diffusers VAE tensor `name` is a [C, C] linear weight that LDM files store as a
 * [C, C, 1, 1] conv (mid-block attention to_q/to_k/to_v/to_out.0 weights). */
int sdb_ldm_is_conv_linear(const char *name);

/* Wraps the single-file checkpoint `st` (not owned) as the U-Net's / VAE's weights: prefix +
 * the map for this config's layout (the layout is owned by w). */
int sdb_ldm_unet_weights(sdb_weights *w, sdb_st *st, const sdb_config *unet_cfg, sdb_err *err);
struct sdb_vae_config;
int sdb_ldm_vae_weights(sdb_weights *w, sdb_st *st, const struct sdb_vae_config *vcfg, sdb_err *err);
/* The same with another prefix: "" for a separate VAE file (vae-ft-mse-840000-ema-pruned's layout). */
int sdb_ldm_vae_weights_prefix(sdb_weights *w, sdb_st *st, const struct sdb_vae_config *vcfg, const char *prefix,
                               sdb_err *err);

#endif
