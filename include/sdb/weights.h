/*
 * weights.h — a model component's weights, looked up by their diffusers/transformers names.
 *
 * One sdb_weights wraps one open safetensors file (a diffusers component file, or the single-file
 * LDM checkpoint shared by three components) plus how to translate a diffusers name into the
 * file's name: a prefix and an optional mapping function (the LDM layouts: see ldm_names.h).
 *
 * Vectors (biases, norm scales: sdb_weights_get) come out as float32: F32 data 4-byte aligned in
 * the mapping is used in place (weights are loaded once, by the page cache); F16/BF16/F64 are
 * widened into buffers the sdb_weights owns. Matrices (every weight of 2 or more dimensions: the
 * GEMM weights the ops take as sdb_wmat, and embedding tables: sdb_weights_get_mat) come out the
 * same way in the default float32 mode; in f16 mode (keep_f16) they stay IEEE half — an F16
 * tensor of the file is used in place, any other is rounded to nearest even into an owned buffer
 * (and counted in `rounded`, since the model then computes with other numbers than the file's).
 * Whenever a tensor is copied out of the mapping, the file pages it lay on are released
 * (sdb_st_release), so a file's data is never resident twice.
 */
#ifndef SDB_WEIGHTS_H
#define SDB_WEIGHTS_H

#include <stddef.h>
#include <stdint.h>
#include "sdb/error.h"
#include "sdb/ops/conv.h"
#include "sdb/safetensors.h"

/* Maps a diffusers name to the file's name (without prefix) into out. Returns 0, or -1 when the
 * name has no counterpart in that layout. */
typedef int (*sdb_name_map_fn)(const char *name, char *out, size_t outsz);
/* The same with a context (layouts that depend on the model config, see ldm_names.h). */
typedef int (*sdb_name_map_ctx_fn)(void *ctx, const char *name, char *out, size_t outsz);

typedef struct sdb_weights {
    sdb_st *st;             /* the file */
    int owns_st;            /* close st with the weights */
    char prefix[64];        /* prepended to the mapped name, e.g. "model.diffusion_model." */
    sdb_name_map_fn map;    /* NULL = identity */
    sdb_name_map_ctx_fn map_ctx_fn; /* when set, used instead of `map` */
    void *map_ctx;          /* its context */
    int owns_map_ctx;       /* free(map_ctx) with the weights */
    const char *component;  /* "unet", "vae", "text_encoder": for messages */
    void **owned;           /* widened / rounded copies */
    int n_owned, cap_owned;
    int keep_f16;           /* f16 mode: matrices as IEEE half (set before the first get) */
    int rounded;            /* f16 mode: matrices rounded to half from another dtype */
    size_t bytes;           /* bytes handed out, as held (the model's weight memory) */
    /* Recording mode (no file): every get() succeeds with a zero-filled buffer and appends the
     * requested name and shape here. Model generators use it to enumerate a config's tensors by
     * running the real loader; loaders must therefore request fully specified shapes. */
    int recording;
    int n_rec, cap_rec;
    char **rec_names;
    int *rec_ndim;
    int64_t (*rec_shapes)[SDB_MAX_DIMS];
} sdb_weights;

/* Opens `path` as the weights of `component` in the diffusers layout. */
int sdb_weights_open(sdb_weights *w, const char *path, const char *component, sdb_err *err);
/* Wraps an already open file (not owned) with a prefix and mapping (single-file checkpoints). */
void sdb_weights_wrap(sdb_weights *w, sdb_st *st, const char *component, const char *prefix,
                      sdb_name_map_fn map);
void sdb_weights_free(sdb_weights *w);
/* Installs a context-taking name map (after sdb_weights_open/wrap). With `owns`, the weights
 * free(ctx) when freed. */
void sdb_weights_set_map_ctx(sdb_weights *w, sdb_name_map_ctx_fn fn, void *ctx, int owns);
/* Starts a recording sdb_weights (see `recording`). */
void sdb_weights_init_recorder(sdb_weights *w, const char *component);

/* The file tensor for a diffusers name, or NULL. */
const sdb_st_tensor *sdb_weights_find(const sdb_weights *w, const char *name);
/* float32 data of `name`, checking its shape against the expected one (ndim dims; a -1 entry
 * matches any size). Errors name the component, the tensor and (when mapped) its file name. */
int sdb_weights_get(sdb_weights *w, const char *name, int ndim, const int64_t *shape,
                    const float **out, sdb_err *err);
/* printf-style name convenience: sdb_weights_getf(w, &p, err, ndim, shape, "down_blocks.%d.x", i) */
int sdb_weights_getf(sdb_weights *w, const float **out, sdb_err *err, int ndim,
                     const int64_t *shape, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
/* The matrix `name` (see the top: float32, or half in f16 mode), shape-checked as sdb_weights_get. */
int sdb_weights_get_mat(sdb_weights *w, const char *name, int ndim, const int64_t *shape,
                        sdb_wmat *out, sdb_err *err);

/* Layers as the models load them: "<name>.weight" (the matrix) and "<name>.bias" (float32).
 * A convolution [cout, cin, k, k] with a bias, `pad` on every side. */
int sdb_weights_conv2d(sdb_weights *w, sdb_conv2d *c, int cin, int cout, int k, int stride, int pad,
                       const char *name, sdb_err *err);
/* A linear layer [out, in]; its bias [out] when `bias` is not NULL. */
int sdb_weights_linear(sdb_weights *w, sdb_wmat *W, const float **bias, int out, int in,
                       const char *name, sdb_err *err);

#endif
