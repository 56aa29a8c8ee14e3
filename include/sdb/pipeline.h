/*
 * pipeline.h — Stable Diffusion 1.x generation as diffusers' pipelines run it:
 * StableDiffusionInpaintPipeline (9-channel U-Net, or the legacy 4-channel blend), img2img and
 * txt2img. A model is loaded once (sdb_model_load) and then used for many images (sdb_generate).
 *
 * The pipeline knows nothing of batches, manifests or job state: it turns one set of parameters
 * into one image, reporting each denoising step to a callback that may cancel it.
 */
#ifndef SDB_PIPELINE_H
#define SDB_PIPELINE_H

#include <stdint.h>
#include "sdb/error.h"
#include "sdb/image.h"
#include "sdb/log.h"

typedef struct sdb_model sdb_model;

typedef struct sdb_model_opts {
    const char *tokenizer_dir; /* single-file checkpoints: the tokenizer folder (NULL = looked for:
                                  see sdb_tokenizer_find in model_find.h) */
    const char *config_dir;    /* single-file checkpoints: a diffusers folder with the configs
                                  (NULL = inferred from the tensors, SD 1.x: see ldm_infer.h) */
    const char *vae_path;      /* a separate VAE instead of the model's own: a single-file VAE
                                  (LDM names, with or without "first_stage_model.") or a diffusers
                                  vae/ folder; part of sdb_model_id (NULL = the model's own) */
    const char *base_dir;      /* the tokenizer search's models/ folder is base_dir/models (NULL = .) */
    const char *models_path;   /* $SDB_MODELS (colon-separated models folders), or NULL */
    const char *tokenizer_env; /* $SDB_TOKENIZER, or NULL */
    int threads;               /* 0 = leave as is */
    int weights_f16;           /* keep the weight matrices as IEEE half in memory (see weights.h):
                                  F16 files are then used in place (same results, about half the
                                  memory); other dtypes are rounded to half (other results, and so
                                  another sdb_model_id) */
    int conv;                  /* which path runs the 3x3 convolutions: SDB_CONV_AUTO (0, Winograd
                                  where it is faster for the layer's shape), SDB_CONV_DIRECT or
                                  SDB_CONV_WINOGRAD (sdb/ops/winograd.h); results agree within
                                  float rounding */
    size_t keep_filters;       /* bytes the U-Net may keep weights in, in the form its kernels
                                  use (transformed Winograd filters, linear panels;
                                  sdb_unet_set_filter_memory; 0 = made per call): faster steps
                                  for memory, the same results */
} sdb_model_opts;

/* The weights_f16 value of a weight mode's name ("f32" 0, "f16" 1; the CLI's --weights), or -1. */
int sdb_weights_mode_parse(const char *name);

/* Loads a diffusers pipeline folder or a single-file .safetensors checkpoint. */
int sdb_model_load(sdb_model **out, const char *path, const sdb_model_opts *opts,
                   const sdb_log *log, sdb_err *err);
void sdb_model_free(sdb_model *m);
/* Identity of the weights: SHA-256 (hex) over the configs and the weight files' headers and sizes
 * (and, when weights_f16 rounded any tensor, that fact: the numbers computed with differ);
 * and the AUTOMATIC1111-style short hash (first 10 hex digits of the weights file's SHA-256, or of
 * the U-Net file for folders) — computed lazily. */
const char *sdb_model_id(sdb_model *m);
const char *sdb_model_short_hash(sdb_model *m);
/* With a separate VAE in use: A1111's "VAE hash" (first 10 hex digits of the SHA-256 of the VAE
 * file, or of a VAE folder's weights file) and the path given; NULL without one. */
const char *sdb_model_vae_short_hash(sdb_model *m);
const char *sdb_model_vae_path(const sdb_model *m);
/* Makes `path` (as sdb_model_opts.vae_path) the VAE in use from now on; NULL = the model's own.
 * Loads it unless it is already the one in use; sdb_model_id stays the id of the model as loaded
 * (a caller that switches VAEs accounts for them itself, e.g. with sdb_vae_source_id). */
int sdb_model_set_vae(sdb_model *m, const char *path, const sdb_log *log, sdb_err *err);
/* An id of a separate VAE's weights without loading it (SHA-256 hex over its file's header and
 * samples, as sdb_model_id hashes weight files). */
int sdb_vae_source_id(const char *path, char hex[65], sdb_err *err);
/* 9 for inpainting U-Nets, 4 otherwise. */
int sdb_model_unet_channels(const sdb_model *m);
const char *sdb_model_default_scheduler(const sdb_model *m);

/* ---- restoration options (issue 17): all zero = diffusers' behaviour, exactly --------------- */
/* masked_content: what the masked area starts from (AUTOMATIC1111's "Masked content"). NONE is
 * diffusers' rule (pure noise at strength 1, the noised image below); the others always start from
 * the image's latents noised to the first timestep (A1111's img2img start, so strength < 1 keeps
 * some of them), after: ORIGINAL nothing, FILL the masked pixels painted from their surroundings
 * (sdb_mask_fill) before encoding, LATENT_NOISE the masked latents replaced by the job's initial
 * noise (A1111 draws them from a generator seeded alike: the same numbers), LATENT_NOTHING the
 * masked latents set to 0. "Masked latents" are those whose mask_latents value is 1. */
typedef enum { SDB_MC_NONE = 0, SDB_MC_ORIGINAL, SDB_MC_FILL, SDB_MC_LATENT_NOISE, SDB_MC_LATENT_NOTHING } sdb_masked_content;
/* inpaint_area: WHOLE the whole image (diffusers' default); MASKED a crop around the mask, grown by
 * padding_mask_crop (32 when 0), worked on at only_masked_size (or width x height, or the model's
 * native size) and pasted back: A1111's "Only masked". NONE: whole, or masked when
 * padding_mask_crop is set (diffusers). */
typedef enum { SDB_AREA_NONE = 0, SDB_AREA_WHOLE, SDB_AREA_MASKED } sdb_inpaint_area;
#define SDB_ONLY_MASKED_PADDING_DEFAULT 32
typedef struct sdb_restore_opts {
    int keep_unmasked;     /* composite the output over the input by the (dilated, blurred) mask at the
                              input's size: zero-mask pixels come back bit-identical; in the whole-image
                              mode the blend weight is min(2 m, 255), as A1111's overlay */
    int mask_blur;         /* A1111's mask blur (sdb_mask_blur), 0 = off */
    int mask_dilate;       /* grow the mask by N pixels first (sdb_mask_dilate), 0 = off */
    sdb_masked_content masked_content;
    int color_match;       /* A1111's colour correction to the working input (sdb_color_correct) */
    sdb_inpaint_area inpaint_area;
    int only_masked_size;  /* working size (N x N) of the MASKED crop; 0 = width x height or native */
    int mask_from_alpha;   /* `mask: alpha`: the mask is 255 - the image's alpha; the output has no alpha */
} sdb_restore_opts;
/* Names as in manifests: "original" "fill" "latent_noise" "latent_nothing" / "whole" "masked";
 * parse returns -1 for an unknown name; name(NONE) is NULL. */
int sdb_masked_content_parse(const char *name);
const char *sdb_masked_content_name(sdb_masked_content mc);
int sdb_inpaint_area_parse(const char *name);
const char *sdb_inpaint_area_name(sdb_inpaint_area a);
/* Whether any option is set (the pipeline then takes the restoration paths). */
int sdb_restore_active(const sdb_restore_opts *r);

typedef struct sdb_gen_params {
    const char *prompt;          /* required */
    const char *negative_prompt; /* NULL = "" */
    uint64_t seed;
    int steps;                   /* > 0; default 50 */
    double guidance_scale;       /* default 7.5; <= 1 disables classifier-free guidance */
    double strength;             /* (0, 1]; default 1.0 */
    const char *scheduler;       /* NULL = the model's own */
    double eta;                  /* DDIM only */
    int width, height;           /* 0 = the input's own size (see README: differs from diffusers) */
    int padding_mask_crop;       /* 0 = off */
    const sdb_image *image;      /* NULL: txt2img */
    const sdb_image *mask;       /* NULL with an image: img2img */
    sdb_restore_opts restore;    /* issue 17's options; zero = diffusers */
    int vae_tiling;              /* sdb_vae_tiling: SDB_VAE_TILING_AUTO (0) by default */
} sdb_gen_params;

/* Tiled VAE encode/decode (vae.h): AUTO tiles when the working image has more pixels than
 * (2 x the VAE's tile size)^2 (above 1024x1024 for SD 1.x), so smaller images are exactly as
 * diffusers computes them; ON tiles whenever a side exceeds one tile (diffusers' enable_tiling);
 * OFF never tiles. */
typedef enum { SDB_VAE_TILING_AUTO = 0, SDB_VAE_TILING_ON = 1, SDB_VAE_TILING_OFF = 2 } sdb_vae_tiling;
/* "auto", "on", "off" -> the mode, or -1. */
int sdb_vae_tiling_parse(const char *name);
const char *sdb_vae_tiling_name(int mode);
/* Whether generation at a working size of W x H pixels runs the VAE tiled in this mode. */
int sdb_model_vae_tiled(const sdb_model *m, int mode, int W, int H);

void sdb_gen_params_default(sdb_gen_params *p);

/* Called after each denoising step (step = 1..total); a nonzero return cancels generation at
 * that step boundary (sdb_generate then returns SDB_EINTERRUPTED). */
typedef int (*sdb_step_fn)(void *ud, int step, int total);

/* Runs the pipeline; *out receives an 8-bit RGB image (free with sdb_image_free), RGBA with the
 * input's alpha when the image has an alpha channel (4 channels) and mask_from_alpha is off. */
int sdb_generate(sdb_model *m, const sdb_gen_params *p, sdb_step_fn on_step, void *ud,
                 sdb_image *out, const sdb_log *log, sdb_err *err);

/* Same, with a hook that receives the intermediates by name (tests, debugging): prompt_embeds,
 * init_image, initial_noise, initial_latents, mask_condition, masked_image, mask_latents,
 * masked_image_latents, vae_encode/<i>/{mean,std,noise}, step<k>/unet_input, step<k>/unet_output
 * (k = 0, 1 and the last), steps/noise_pred and steps/prev_sample (every step), final_latents,
 * vae_decode_input, vae_decode_output — the names of the reference files; with a masked_content,
 * also masked_content_latents (the start latents before noising). */
typedef void (*sdb_gen_trace_fn)(void *ud, const char *name, const float *data, size_t n);
int sdb_generate_ex(sdb_model *m, const sdb_gen_params *p, sdb_step_fn on_step, void *ud,
                    sdb_gen_trace_fn trace, void *trace_ud, sdb_image *out,
                    const sdb_log *log, sdb_err *err);

/* AUTOMATIC1111's "parameters" text for these parameters (malloc'd). Besides A1111's keys it
 * carries sdbatch's own where they are not the default: "Eta DDIM", "Padding mask crop",
 * "Working size" (explicit width/height), "VAE tiling" — enough for sdb_gen_params_from_a1111 to
 * reproduce the image from the same inputs and model. */
char *sdb_gen_params_a1111(sdb_model *m, const sdb_gen_params *p, int width, int height);

/* ---- memory a generation needs (--max-memory) ----
 * The working size sdb_generate uses for these parameters (input_w/h: the input image's size,
 * 0 without one) and an upper estimate of what the process holds at the generation's peak: the
 * weights (the bytes of the weight tensors as held: F32, or F16 with --weights f16; plus the
 * --keep-filters budget, sdb_model_opts.keep_filters) plus
 *   scratch = (2 C1 + 512) floats per pixel x W x H + SDB_GEN_FIXED_MIB,
 * C1 = the VAE's second block_out_channels (256 for SD 1.x): the VAE decoder's full-resolution
 * blocks dominate the scratch; the fixed part covers the text encoder, attention blocks and the
 * libraries' own buffers. Measured (README): SD 1.5 at 256x256, peak RSS 4106 MiB against an
 * estimate of 4387; the tiny model at 256x256, 132 MiB against 249. Sizes in MiB. */
#define SDB_GEN_FIXED_MIB 64.0
void sdb_gen_memory_estimate(const sdb_model *m, const sdb_gen_params *p, int input_w, int input_h,
                             double *weights_mib, double *scratch_mib, int *W, int *H);
struct sdb_a1111_params;
/* The parameters an A1111 text describes (sdbatch's or A1111's own; see a1111.h): the prompt,
 * negative prompt, Seed, Steps, CFG scale, Sampler (NULL = the model's own when it is that one),
 * Denoising strength, sdbatch's keys above and the restoration options as sdb_gen_params_a1111
 * writes them ("Mask blur", "Mask dilate", "Masked content", "Inpaint area" with "Masked area
 * padding", "Only masked size", "Color correction", "Keep unmasked", "Mask: alpha"; absent keys
 * leave p->restore as it was); without "Working size", "Size" sets width/height
 * only when p->image is NULL (txt2img). Keys it does not know are ignored. Strings point into a.
 * A scheduler the caller set beforehand in p is kept (the Sampler key is then not looked at).
 * Fails naming the key when a value is malformed or the sampler is one sdbatch does not have. */
int sdb_gen_params_from_a1111(sdb_model *m, const struct sdb_a1111_params *a, sdb_gen_params *p, sdb_err *err);

#endif
