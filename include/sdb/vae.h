/*
 * vae.h — the SD 1.x VAE: diffusers' AutoencoderKL (DownEncoderBlock2D / UpDecoderBlock2D).
 *
 * Encoder: image [1, in_channels, H, W] in [-1, 1] -> posterior mean and std [1, latent, h, w]
 * (quant_conv applied; logvar clamped to [-30, 20]; std = exp(0.5 logvar)). The latent size is
 * what the stride-2 convolutions give (pad right/bottom by one, 3x3, stride 2, no padding):
 * h = floor(H / 2) per downsampler (8x smaller for multiples of 8; images need H, W >= 8).
 * Decoder: z [1, latent, h, w] (ALREADY divided by scaling_factor, as diffusers' pipelines pass it)
 * -> image [1, out_channels, h * 2^k, w * 2^k] (k = number of upsamplers, 3 in SD), raw (not clamped).
 *
 * Weights come through an sdb_weights by diffusers names ("encoder.conv_in.weight", ...): a
 * diffusers vae/ file (F32/F16/BF16) or the single-file LDM checkpoint wrapped with the prefix
 * "first_stage_model." and the LDM name map (the mid-block attention's q/k/v/out may be stored as
 * [C, C] linear or [C, C, 1, 1] conv weights; both are accepted).
 *
 * Memory: all activations live in the caller's arena (released before returning). Between layers
 * only the current activation is kept; a layer's temporaries sit above it and its output is moved
 * down when the layer finishes. Peak for SD 1.5 at 512x512: about 4 full-resolution 128-channel
 * activations (decoder; measured 535 MiB incl. conv scratch), 3 (encoder; 407 MiB). Results do
 * not depend on the thread count.
 */
#ifndef SDB_VAE_H
#define SDB_VAE_H

#include <stddef.h>
#include <stdint.h>
#include "sdb/arena.h"
#include "sdb/config.h"
#include "sdb/error.h"
#include "sdb/profile.h"
#include "sdb/weights.h"

#define SDB_VAE_MAX_BLOCKS 8

typedef struct sdb_vae sdb_vae;

/* The parts of vae/config.json the model uses. */
typedef struct sdb_vae_config {
    int in_channels, out_channels, latent_channels;
    int n_blocks;                           /* len(block_out_channels) */
    int block_out_channels[SDB_VAE_MAX_BLOCKS];
    int layers_per_block;
    int norm_num_groups;
    double scaling_factor;
    int use_quant_conv, use_post_quant_conv, mid_block_add_attention;
    int sample_size;                        /* pixels; the tiled VAE's tile size (diffusers' default 32) */
} sdb_vae_config;

/* Reads and validates vae/config.json (only DownEncoderBlock2D / UpDecoderBlock2D, act_fn silu,
 * channel counts divisible by the group count...); errors name the file and field. */
int sdb_vae_config_load(sdb_vae_config *cfg, const char *config_path, sdb_err *err);
/* The same from a parsed config (e.g. one inferred from a checkpoint's tensors, ldm_infer.h). */
int sdb_vae_config_parse(sdb_vae_config *cfg, const sdb_config *c, sdb_err *err);
/* SD 1.x's vae/config.json (runwayml/stable-diffusion-inpainting), for single-file checkpoints
 * without a config folder. */
void sdb_vae_config_sd15(sdb_vae_config *cfg);

/* Builds the model from a config and weights (the weights must outlive the model). */
int sdb_vae_create(sdb_vae **out, const sdb_vae_config *cfg, sdb_weights *w, sdb_err *err);
/* sdb_vae_config_load + sdb_vae_create. */
int sdb_vae_load(sdb_vae **out, const char *config_path, sdb_weights *w, sdb_err *err);
void sdb_vae_free(sdb_vae *v);

/* The weights file inside a diffusers vae/ folder: diffusion_pytorch_model.safetensors, else
 * diffusion_pytorch_model.fp16.safetensors (or the other way round with prefer_fp16). */
int sdb_vae_weights_path(const char *vae_dir, int prefer_fp16, char *out, size_t outsz, sdb_err *err);

const sdb_vae_config *sdb_vae_get_config(const sdb_vae *v);
float sdb_vae_scaling_factor(const sdb_vae *v);
/* Latent size of an H x W image (exactly as the encoder's convolutions compute it). */
void sdb_vae_latent_size(const sdb_vae *v, int H, int W, int *h, int *w);
/* Image size the decoder produces from an h x w latent. */
void sdb_vae_image_size(const sdb_vae *v, int h, int w, int *H, int *W);

/* image [1, in_channels, H, W] -> mean, std [1, latent_channels, h, w] (sdb_vae_latent_size).
 * logvar may be NULL; when given it receives the clamped log-variance. */
int sdb_vae_encode(sdb_vae *v, const float *image, int H, int W, float *mean, float *std,
                   float *logvar, sdb_arena *arena, sdb_err *err);
/* latent_dist.sample(): out[i] = mean[i] + std[i] * noise[i] (noise: the caller's randn draw of
 * the latent's shape). out may equal mean. Not scaled by scaling_factor. */
void sdb_vae_sample(const float *mean, const float *std, const float *noise, size_t n, float *out);
/* z [1, latent_channels, h, w] (already divided by scaling_factor) -> image (sdb_vae_image_size). */
int sdb_vae_decode(sdb_vae *v, const float *z, int h, int w, float *image, sdb_arena *arena,
                   sdb_err *err);

/* ---- tiling: bounded memory for big images, close to the untiled passes ---------------------
 * Square tiles of T = sdb_vae_tile_size() pixels (the config's sample_size: 512 for SD 1.x), i.e.
 * T/f latents (f = 2^(blocks-1)). The part at 1/8 resolution with the mid block (whose attention is
 * global) runs on the whole latent: decode: post_quant_conv, conv_in, mid block; encode: mid block,
 * conv_norm_out, conv_out, quant_conv. The rest (decode: the up blocks and conv_out; encode: conv_in
 * and the down blocks) runs one tile at a time, each tile with a margin of the receptive field of
 * those layers (sdb_vae_decode_margin / sdb_vae_encode_margin latents each side) of which only the
 * core is kept, so nothing is blended. Every tiled GroupNorm uses the whole image's statistics,
 * summed (double) over the tiles' cores: by default (exact) the tiles run once per tiled GroupNorm,
 * run k stopping at GroupNorm k with the exact statistics of those before it (k-th one's sums then
 * exact too), and once more for the output. Each tile's state where its run stopped (the
 * GroupNorm's input and the resnet's pending residual) is parked in an unlinked scratch file
 * (sdb_scratch: $TMPDIR or /tmp, or scratch_dir) and the next run resumes the tile there, so the
 * tiled layers run about once in all; memory stays one tile, and the disk needed is
 * sdb_vae_park_bytes() (the largest state of each tile, summed over the tiles: ~7 GiB for a
 * 2048x2048 SD 1.x decode). A scratch file that cannot be made or written fails (SDB_EIO) before
 * or while the tiles run, naming the folder. `recompute` gives the same floats by recomputing each
 * tile from its input in every run instead (about (number of GroupNorms) / 2 times one run: ~11x
 * the decoder's up path for SD 1.x, ~10x the encoder's down path; no disk).
 * With `passes` = P > 0 instead: P full runs, the first normalising each tile with its own
 * statistics, every later one with the previous run's (pass k has the first k GroupNorms exact;
 * with random weights this converges too slowly to be useful: README). Results equal the untiled
 * pass up to float rounding. Scratch: the whole-latent part (decode: ~5 latent-sized 512-channel
 * tensors in the mid block) plus one tile with its margins. An image whose sides are all <= T (a
 * latent whose sides are all <= T/f) is not tiled: these then equal sdb_vae_encode /
 * sdb_vae_decode. Tiled encode needs H and W multiples of f. */
int sdb_vae_tile_size(const sdb_vae *v);
/* Tests/tuning: the tile size in pixels (0 = sample_size); rounded down to a multiple of f. */
void sdb_vae_set_tile_size(sdb_vae *v, int pixels);
/* Whether an H x W image (pixels) is more than one tile, i.e. the tiled passes really tile it. */
int sdb_vae_tiles_image(const sdb_vae *v, int H, int W);
/* Tests/measurements: how the tiles run. */
typedef struct sdb_vae_tile_opts {
    int passes;       /* 0 = exact statistics (staged runs; the default); P > 0: P full passes */
    int margin;       /* latents each side of a tile's core; -1 = the receptive field (the default) */
    int local_mid;    /* decode: conv_in and the mid block per tile too (diffusers-like; measuring) */
    int oracle_stats; /* the first pass is one untiled statistics pass (measuring the margins) */
    int recompute;    /* exact statistics by recomputing each tile from its input in every run
                         (the old way: same result, ~11x the time, no scratch file); 0 = parking */
    const char *scratch_dir; /* the parked tiles' scratch file's folder; NULL = $TMPDIR, else /tmp */
} sdb_vae_tile_opts;
/* NULL = the defaults ({0, -1, 0, 0, 0, NULL}). */
void sdb_vae_set_tiling(sdb_vae *v, const sdb_vae_tile_opts *t);
int sdb_vae_decode_margin(const sdb_vae *v);
int sdb_vae_encode_margin(const sdb_vae *v);
int sdb_vae_encode_tiled(sdb_vae *v, const float *image, int H, int W, float *mean, float *std,
                         float *logvar, sdb_arena *arena, sdb_err *err);
int sdb_vae_decode_tiled(sdb_vae *v, const float *z, int h, int w, float *image, sdb_arena *arena,
                         sdb_err *err);

/* Bytes of the scratch file the last tiled encode/decode parked its tiles in (0: none). */
uint64_t sdb_vae_park_bytes(const sdb_vae *v);
/* Arena bytes the last encode/decode needed at most (above the arena's use at entry). */
size_t sdb_vae_peak_bytes(const sdb_vae *v);
/* Bytes of weights the model holds, as handed out by its sdb_weights (float32, or half matrices
 * in f16 mode). */
size_t sdb_vae_weight_bytes(const sdb_vae *v);

/* Debugging: called with each named intermediate (C x H x W floats, batch 1), e.g.
 * "encoder.down_blocks.0", "encoder.mid_block", "encoder", "quant_conv", "post_quant_conv",
 * "decoder.conv_in", "decoder.mid_block", "decoder.up_blocks.2" (diffusers module names). */
typedef void (*sdb_vae_debug_fn)(void *ud, const char *name, const float *x, int C, int H, int W);
void sdb_vae_set_debug(sdb_vae *v, sdb_vae_debug_fn fn, void *ud);
/* Attaches counters (convolution and attention time/FLOPs) that encode/decode add to; NULL = off. */
void sdb_vae_set_profile(sdb_vae *v, sdb_profile *p);
/* Which path runs the 3x3 stride-1 convolutions: SDB_CONV_AUTO (the default), _DIRECT or _WINOGRAD
 * (sdb/ops/winograd.h). The results agree within float rounding, not bit for bit. */
void sdb_vae_set_conv(sdb_vae *v, int algo);
/* Tuning/testing: the upsampled-input strip size of the decoder's upsamplers, in floats
 * (0 = the default, 4 Mi floats). Smaller = less scratch, more (cheaper) conv calls. */
void sdb_vae_set_strip_floats(sdb_vae *v, size_t floats);

#endif
