/*
 * unet.h — diffusers UNet2DConditionModel of the SD 1.x / 2.x family (float32, CPU).
 *
 * Supported config (unet/config.json): in_channels (4 or 9, any), out_channels, block_out_channels,
 * layers_per_block, down_block_types CrossAttnDownBlock2D / DownBlock2D, up_block_types UpBlock2D /
 * CrossAttnUpBlock2D, mid_block_type UNetMidBlock2DCrossAttn, attention_head_dim (int or per-block
 * list; as in diffusers it is the NUMBER of heads while num_attention_heads is null),
 * cross_attention_dim, norm_num_groups, norm_eps, use_linear_projection, flip_sin_to_cos,
 * freq_shift, act_fn silu, upcast_attention (no-op in fp32), transformer_layers_per_block 1,
 * sample_size. Anything outside that family is refused naming the config field.
 *
 * Weights by diffusers names through an sdb_weights (the diffusers folder's safetensors, or the
 * single-file LDM checkpoint via sdb_weights_wrap + the ldm_names.h mapping); in the weights' f16
 * mode the matrices stay half and each layer widens its own into the arena as it runs. Activations
 * are NCHW; every temporary comes from the caller's arena (mark at entry, reset at exit).
 */
#ifndef SDB_UNET_H
#define SDB_UNET_H

#include <stddef.h>
#include "sdb/arena.h"
#include "sdb/config.h"
#include "sdb/error.h"
#include "sdb/ops/par.h"
#include "sdb/profile.h"
#include "sdb/weights.h"

typedef struct sdb_unet sdb_unet;

/* Reads the config and fetches every weight (checking shapes). The weights must outlive the model. */
int sdb_unet_load(sdb_unet **out, const char *config_path, sdb_weights *w, sdb_err *err);
int sdb_unet_load_config(sdb_unet **out, const sdb_config *cfg, sdb_weights *w, sdb_err *err);
void sdb_unet_free(sdb_unet *u);

int sdb_unet_in_channels(const sdb_unet *u);
int sdb_unet_out_channels(const sdb_unet *u);
int sdb_unet_sample_size(const sdb_unet *u);
int sdb_unet_cross_attention_dim(const sdb_unet *u);

/*
 * out [B, out_channels, h, w] = unet(sample [B, in_channels, h, w], timesteps [B] (int or float
 * values), context [B, ctx_len, cross_attention_dim]). B = 2 runs classifier-free guidance's two
 * rows in one pass. h, w >= 1 (odd sizes follow diffusers' upsample_size logic). out must not alias
 * sample. Thread-count independent results.
 * The cross-attention keys and values of the context are kept in u after a forward and reused by
 * the next ones while the context is the same (same B, ctx_len and bytes: a job's text embeddings
 * over its steps); so one sdb_unet runs one forward at a time.
 */
int sdb_unet_forward(sdb_unet *u, const float *sample, int B, int h, int w, const double *timesteps,
                     const float *context, int ctx_len, float *out, sdb_arena *arena, sdb_err *err);

/* The forward's structure without its arithmetic: every parallel op it would run for these sizes
 * records its work units into `rec` (par.h; `sdbatch bench --balance`). Touches no weight or
 * activation data (only reserves arena address space), so a model loaded from recording weights
 * (sdb_weights_init_recorder) will do. */
int sdb_unet_plan(sdb_unet *u, int B, int h, int w, int ctx_len, sdb_par_rec *rec, sdb_arena *arena,
                  sdb_err *err);

/* Arena bytes used above the entry mark at the peak of the last forward. */
size_t sdb_unet_last_peak(const sdb_unet *u);

/* Optional hook called with intermediate tensors during forward (tests, debugging): names as in
 * refs/README.md section 4: "time_proj" [B, C0] and "time_embedding" [B, 4*C0] (C = the width,
 * H = W = 1), "conv_in", "down_blocks.i", "mid_block", "up_blocks.i", "conv_norm_out" [B, C, H, W]. */
typedef void (*sdb_unet_debug_fn)(void *ctx, const char *name, const float *data, int B, int C,
                                  int H, int W);
void sdb_unet_set_debug(sdb_unet *u, sdb_unet_debug_fn fn, void *ctx);
/* Attaches per-op-kind counters that every following forward adds to (NULL detaches; the caller
 * owns the profile and keeps it alive while attached). */
void sdb_unet_set_profile(sdb_unet *u, sdb_profile *p);
/* Which path runs the 3x3 stride-1 convolutions: SDB_CONV_AUTO (the default), _DIRECT or _WINOGRAD
 * (sdb/ops/winograd.h). The results agree within float rounding, not bit for bit. */
void sdb_unet_set_conv(sdb_unet *u, int algo);
/* Memory (bytes) the U-Net may keep weights in, in the form its kernels use (default 0: each is
 * made per call): a conv's transformed Winograd filter (4x its 3x3 weights in float for
 * F(4x4, 3x3), 16/9x for F(2x2, 3x3)) is made the first time a forward runs the conv by Winograd,
 * and a linear layer's weights as the thin-product kernel's panels (as large as the weights, where
 * the CPU runs that kernel) the first time it runs, and kept while the total stays within the
 * budget, saving that work in every later step. Results are identical with or without. A budget
 * below the memory in use frees everything kept. sdb_unet_filter_memory: the bytes kept now. */
void sdb_unet_set_filter_memory(sdb_unet *u, size_t bytes);
size_t sdb_unet_filter_memory(const sdb_unet *u);

#endif
