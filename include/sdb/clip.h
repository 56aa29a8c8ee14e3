/*
 * clip.h — the CLIP text encoder of SD 1.x: transformers' CLIPTextModel, returning
 * last_hidden_state (the prompt embeddings the UNet cross-attends to).
 *
 * Architecture (pre-LN transformer): x = token_embedding[ids] + position_embedding[0..S);
 * per layer: x += out_proj(causal_attention(q_proj, k_proj, v_proj of layer_norm1(x)));
 * x += fc2(act(fc1(layer_norm2(x)))); result = final_layer_norm(x). No attention mask is used
 * (SD 1.x): every position attends to itself and all earlier positions, padding included.
 *
 * Weights are read through an sdb_weights by the transformers names "text_model.embeddings...",
 * "text_model.encoder.layers.N...", "text_model.final_layer_norm..." (a diffusers
 * text_encoder/model.safetensors, F32 or F16, or a single-file checkpoint wrapped with the prefix
 * "cond_stage_model.transformer."); in the weights' f16 mode the matrices and embedding tables stay
 * half (weights.h). Results do not depend on the thread count.
 */
#ifndef SDB_CLIP_H
#define SDB_CLIP_H

#include <stdint.h>
#include "sdb/arena.h"
#include "sdb/config.h"
#include "sdb/error.h"
#include "sdb/weights.h"

typedef enum { SDB_CLIP_ACT_QUICK_GELU, SDB_CLIP_ACT_GELU } sdb_clip_act;

typedef struct sdb_clip_config {
    int vocab_size;              /* 49408 */
    int hidden_size;             /* 768 for SD 1.x */
    int intermediate_size;       /* 3072 */
    int num_hidden_layers;       /* 12 */
    int num_attention_heads;     /* 12 */
    int max_position_embeddings; /* 77: the sequence length sdb_clip_encode expects */
    sdb_clip_act hidden_act;     /* "quick_gelu" (SD 1.x) or "gelu" (exact erf) */
    float layer_norm_eps;        /* 1e-5 */
} sdb_clip_config;

typedef struct sdb_clip sdb_clip;

/* Reads a transformers CLIPTextConfig (text_encoder/config.json; missing keys take
 * transformers' defaults). */
int sdb_clip_config_load(sdb_clip_config *cfg, const char *config_path, sdb_err *err);
/* The same from a parsed config (e.g. one inferred from a checkpoint's tensors, ldm_infer.h). */
int sdb_clip_config_parse(sdb_clip_config *cfg, const sdb_config *c, sdb_err *err);

/* Builds the model from its config file and weights. `w` is borrowed: it must stay open until
 * sdb_clip_free (F32 weights are used in place in its mapping). Every tensor is checked by name
 * and shape here, so a forward cannot fail on a missing weight. */
int sdb_clip_load(sdb_clip **out, const char *config_path, sdb_weights *w, sdb_err *err);
/* The same with a parsed config. */
int sdb_clip_load_config(sdb_clip **out, const sdb_config *cfg, sdb_weights *w, sdb_err *err);
/* Same from a diffusers text_encoder/ folder: config.json and model.safetensors (or, when that
 * is absent, the fp16 variant model.fp16.safetensors); the model owns the open file. */
int sdb_clip_load_dir(sdb_clip **out, const char *text_encoder_dir, sdb_err *err);
void sdb_clip_free(sdb_clip *m);

/* Wraps a single-file (LDM / A1111) checkpoint's text encoder as weights for sdb_clip_load:
 * names "cond_stage_model.transformer.text_model.*" (what diffusers' conversion writes and current
 * checkpoints carry), or the old layout without "text_model." ("cond_stage_model.transformer.
 * embeddings...", older transformers). `st` stays owned by the caller. Fails (naming the file)
 * when it holds neither. */
int sdb_clip_wrap_single_file(sdb_weights *w, sdb_st *st, sdb_err *err);

const sdb_clip_config *sdb_clip_get_config(const sdb_clip *m);
/* Bytes of weights as held (widened F16 copies included; half matrices in f16 mode). */
size_t sdb_clip_weight_bytes(const sdb_clip *m);

/* last_hidden_state for a batch: ids [B, S] with S = max_position_embeddings (77) -> out
 * [B, S, hidden_size]. The rows are independent (SD encodes [uncond, cond] in one call). Scratch
 * comes from `scratch` and is released before returning. Ids outside the vocabulary are an
 * SDB_EINVAL error. */
int sdb_clip_encode(sdb_clip *m, const int32_t *ids, int B, float *out, sdb_arena *scratch,
                    sdb_err *err);
/* Same with any sequence length 1 <= S <= max_position_embeddings, and optionally the hidden
 * states (transformers' output_hidden_states) into hidden [(num_hidden_layers + 1), B, S, hidden]:
 * [0] = embeddings, [i] = output of encoder layer i (before final_layer_norm). hidden may be
 * NULL; out may be NULL when only hidden is wanted. */
int sdb_clip_encode_ex(sdb_clip *m, const int32_t *ids, int B, int S, float *out, float *hidden,
                       sdb_arena *scratch, sdb_err *err);

#endif
