/*
 * pipeline_internal.h — the sdb_model struct shared by model.c and pipeline.c (not public).
 */
#ifndef SDB_PIPELINE_INTERNAL_H
#define SDB_PIPELINE_INTERNAL_H

#include "sdb/pipeline.h"
#include "sdb/arena.h"
#include "sdb/clip.h"
#include "sdb/config.h"
#include "sdb/sched.h"
#include "sdb/tokenizer.h"
#include "sdb/unet.h"
#include "sdb/vae.h"
#include "sdb/weights.h"

#include <openssl/evp.h>

struct sdb_model {
    char path[4096];
    sdb_tokenizer *tok;
    sdb_clip *clip;
    sdb_unet *unet;
    sdb_vae *vae;            /* the VAE in use: own_vae, or ext_vae when one is set */
    sdb_vae *own_vae;        /* the model's own (weights w_vae) */
    sdb_weights w_text, w_unet, w_vae;
    sdb_vae *ext_vae;        /* a separate VAE (sdb_model_opts.vae_path, sdb_model_set_vae) */
    sdb_weights w_ext_vae;   /* its weights */
    sdb_st *ext_vae_st;      /* its single file (NULL for a diffusers folder) */
    char ext_vae_path[4096];       /* as given */
    char ext_vae_hash_file[4096];  /* the file the A1111 VAE hash is taken of */
    char vae_short_hash[16];
    sdb_st *single;          /* the single-file checkpoint, when loaded from one */
    sdb_config sched_cfg;    /* scheduler/scheduler_config.json */
    const char *default_sched;
    int unet_channels;
    int weights_f16;         /* sdb_model_opts.weights_f16 */
    int conv;                /* sdb_model_opts.conv (SDB_CONV_*) */
    size_t keep_filters;     /* sdb_model_opts.keep_filters (bytes) */
    char unet_file[4096];    /* the file the A1111 short hash is taken of */
    char id[65], short_hash[16];
    sdb_arena arena;         /* scratch for every generation, reused */
};

#endif
