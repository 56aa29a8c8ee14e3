/*
 * ldm_infer.h — the component configs of a single-file SD 1.x checkpoint (CompVis/LDM layout),
 * inferred from its tensor names and shapes, as diffusers' from_single_file does for SD 1.x.
 *
 * What the shapes say is read from them: the U-Net's in_channels (conv_in: 9 inpainting, 4 plain),
 * out_channels, block widths, number of levels and layers per level, which levels have attention,
 * the cross-attention width; the VAE's widths, levels, layers and latent channels; the text
 * encoder's width, layers, MLP size, vocabulary and positions. What no shape says comes from SD
 * 1.x's standard configuration (the values of runwayml/stable-diffusion-inpainting's config files):
 * 8 attention heads, 32 norm groups, the CLIP head size 64, quick_gelu, sample sizes, the VAE
 * scaling factor 0.18215, and the scheduler (PNDM, scaled_linear 0.00085..0.012, 1000 steps,
 * steps_offset 1, skip_prk_steps). Each config is a diffusers/transformers config.json object with
 * every key the real files have, so that it can be compared with them key by key.
 *
 * Only the tensors named here are looked at: anything else in the file (model_ema.*, logit scales,
 * position_ids, DDPM buffers, optimizer leftovers) is ignored. A missing tensor, or a shape that fits
 * no SD 1.x model (SD 2.x, SDXL and other families included), is an error naming the file, the
 * tensor and its shape.
 */
#ifndef SDB_LDM_INFER_H
#define SDB_LDM_INFER_H

#include "sdb/config.h"
#include "sdb/error.h"
#include "sdb/safetensors.h"

typedef struct sdb_ldm_configs {
    sdb_config unet, vae, text_encoder, scheduler;
} sdb_ldm_configs;

/* All four configs of the checkpoint `st` (prefixes model.diffusion_model., first_stage_model.,
 * cond_stage_model.transformer.). Free with sdb_ldm_configs_free (also after an error). */
int sdb_ldm_infer_configs(const sdb_st *st, sdb_ldm_configs *out, sdb_err *err);
void sdb_ldm_configs_free(sdb_ldm_configs *c);

/* The VAE's config alone, its tensors named `prefix` + the LDM names ("first_stage_model." in a
 * checkpoint, "" in a separate VAE file). */
int sdb_ldm_infer_vae_config(const sdb_st *st, const char *prefix, sdb_config *out, sdb_err *err);

/* The prefix of a separate VAE file's tensors: "first_stage_model." or "" (the
 * encoder.* / decoder.* / quant_conv layout); -1 with an error when the file holds no LDM VAE
 * (a diffusers-layout file is told to be given as its folder). */
int sdb_ldm_vae_file_prefix(const sdb_st *st, const char **prefix, sdb_err *err);

#endif
