/*
 * model.c — loading a Stable Diffusion 1.x model once for many generations: a diffusers pipeline
 * folder (model_index.json, unet/ vae/ text_encoder/ tokenizer/ scheduler/; F32 or F16 weights,
 * plain or `.fp16` variant file names) or a single-file LDM checkpoint (.safetensors, the
 * AUTOMATIC1111/ComfyUI layout) whose configs are inferred from its tensors (ldm_infer.h) or given
 * as a diffusers folder, with a tokenizer found beside it or in models/ (model_find.h); and a
 * separate VAE (a single file or a diffusers vae/ folder) used instead of the model's own.
 *
 * Owns: the sdb_model and everything in it — tokenizer, text encoder, U-Net, VAEs (its own and a
 * separate one), their weight files (mmap'd once; with weights_f16 the matrices stay half, see
 * weights.h), the scheduler config, the ids and A1111 hashes, and the scratch arena reused by
 * every generation.
 */
#include "pipeline_internal.h"

#include "sdb/fsutil.h"
#include "sdb/ldm_infer.h"
#include "sdb/ldm_names.h"
#include "sdb/model_find.h"
#include "sdb/ops/winograd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void compute_id(sdb_model *m);

/* Picks <dir>/<base>.safetensors, else the fp16 variant <dir>/<base>.fp16.safetensors. */
static int find_weights(const char *dir, const char *base, char *out, size_t n, sdb_err *err)
{
    const char *variants[] = {"%s/%s.safetensors", "%s/%s.fp16.safetensors"};
    for (int i = 0; i < 2; i++) {
        snprintf(out, n, variants[i], dir, base);
        if (sdb_file_exists(out)) return 0;
    }
    char bin[4096];
    snprintf(bin, sizeof bin, "%s/%s.bin", dir, base);
    if (sdb_file_exists(bin))
        return sdb_fail(err, SDB_EUNSUPPORTED, "%s: only a PyTorch pickle (.bin) is present; sdbatch reads safetensors "
                        "(convert it, e.g. with diffusers' save_pretrained(safe_serialization=True))", bin);
    return sdb_fail(err, SDB_ENOTFOUND, "%s: no weights: expected %s.safetensors or %s.fp16.safetensors", dir, base, base);
}

static int require_dir(const char *root, const char *sub, char *out, size_t n, sdb_err *err)
{
    snprintf(out, n, "%s/%s", root, sub);
    if (!sdb_is_dir(out))
        return sdb_fail(err, SDB_ENOTFOUND, "%s: model part '%s/' is missing (a diffusers pipeline folder has "
                        "unet/ vae/ text_encoder/ tokenizer/ scheduler/)", root, sub);
    return 0;
}

/* Opens a component's weights file in the model's weight mode. */
static int open_weights(sdb_model *m, sdb_weights *w, const char *path, const char *component, sdb_err *err)
{
    int rc = sdb_weights_open(w, path, component, err);
    w->keep_f16 = m->weights_f16;
    return rc;
}

static int load_folder(sdb_model *m, const char *root, sdb_err *err)
{
    char dir[4096], cfg[4200], wpath[4200];
    int rc;
    snprintf(cfg, sizeof cfg, "%s/model_index.json", root);
    if (!sdb_file_exists(cfg))
        return sdb_fail(err, SDB_ENOTFOUND, "%s: not a diffusers pipeline folder (no model_index.json)", root);
    sdb_config idx;
    if ((rc = sdb_config_load(&idx, cfg, err))) return rc;
    const char *cls = NULL;
    rc = sdb_config_string(&idx, "_class_name", "", &cls, err);
    if (!rc && cls && cls[0] && !strstr(cls, "StableDiffusion"))
        rc = sdb_fail(err, SDB_EUNSUPPORTED, "%s: pipeline class '%s' is not a Stable Diffusion 1.x/2.x pipeline", cfg, cls);
    sdb_config_free(&idx);
    if (rc) return rc;

    /* tokenizer */
    if ((rc = require_dir(root, "tokenizer", dir, sizeof dir, err))) return rc;
    if ((rc = sdb_tokenizer_load(&m->tok, dir, err))) return rc;
    /* text encoder */
    if ((rc = require_dir(root, "text_encoder", dir, sizeof dir, err))) return rc;
    if ((rc = find_weights(dir, "model", wpath, sizeof wpath, err))) return rc;
    if ((rc = open_weights(m, &m->w_text, wpath, "text_encoder", err))) return rc;
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    if ((rc = sdb_clip_load(&m->clip, cfg, &m->w_text, err))) return rc;
    /* U-Net */
    if ((rc = require_dir(root, "unet", dir, sizeof dir, err))) return rc;
    if ((rc = find_weights(dir, "diffusion_pytorch_model", wpath, sizeof wpath, err))) return rc;
    if ((rc = open_weights(m, &m->w_unet, wpath, "unet", err))) return rc;
    snprintf(m->unet_file, sizeof m->unet_file, "%s", wpath);
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    if ((rc = sdb_unet_load(&m->unet, cfg, &m->w_unet, err))) return rc;
    /* VAE */
    if ((rc = require_dir(root, "vae", dir, sizeof dir, err))) return rc;
    if ((rc = find_weights(dir, "diffusion_pytorch_model", wpath, sizeof wpath, err))) return rc;
    if ((rc = open_weights(m, &m->w_vae, wpath, "vae", err))) return rc;
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    if ((rc = sdb_vae_load(&m->own_vae, cfg, &m->w_vae, err))) return rc;
    /* scheduler config */
    if ((rc = require_dir(root, "scheduler", dir, sizeof dir, err))) return rc;
    snprintf(cfg, sizeof cfg, "%s/scheduler_config.json", dir);
    if ((rc = sdb_config_load(&m->sched_cfg, cfg, err))) return rc;
    return 0;
}

/* The components of a single file, configured from cfg (given or inferred). */
static int load_single_components(sdb_model *m, const sdb_ldm_configs *cfg, sdb_err *err)
{
    int rc;
    if ((rc = sdb_clip_wrap_single_file(&m->w_text, m->single, err))) return rc;
    m->w_text.keep_f16 = m->weights_f16;
    if ((rc = sdb_clip_load_config(&m->clip, &cfg->text_encoder, &m->w_text, err))) return rc;
    if ((rc = sdb_ldm_unet_weights(&m->w_unet, m->single, &cfg->unet, err))) return rc;
    m->w_unet.keep_f16 = m->weights_f16;
    if ((rc = sdb_unet_load_config(&m->unet, &cfg->unet, &m->w_unet, err))) return rc;
    sdb_vae_config vcfg;
    if ((rc = sdb_vae_config_parse(&vcfg, &cfg->vae, err))) return rc;
    if ((rc = sdb_ldm_vae_weights(&m->w_vae, m->single, &vcfg, err))) return rc;
    m->w_vae.keep_f16 = m->weights_f16;
    if ((rc = sdb_vae_create(&m->own_vae, &vcfg, &m->w_vae, err))) return rc;
    /* the scheduler config is kept */
    m->sched_cfg = cfg->scheduler;
    return 0;
}

/* The configs of a diffusers folder (--config DIR), as sdb_ldm_configs. */
static int load_config_dir(sdb_ldm_configs *c, const char *dir, sdb_err *err)
{
    static const char *const files[4] = {"unet/config.json", "vae/config.json", "text_encoder/config.json",
                                         "scheduler/scheduler_config.json"};
    sdb_config *slots[4] = {&c->unet, &c->vae, &c->text_encoder, &c->scheduler};
    memset(c, 0, sizeof *c);
    for (int i = 0; i < 4; i++) {
        char path[4200];
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        if (!sdb_file_exists(path))
            return sdb_fail(err, SDB_ENOTFOUND, "%s: missing: the configs given (--config, model_config:) must be a "
                            "diffusers folder with unet/ vae/ text_encoder/ scheduler/ configs", path);
        int rc = sdb_config_load(slots[i], path, err);
        if (rc) return rc;
    }
    return 0;
}

static int load_single_file(sdb_model *m, const char *path, const sdb_model_opts *opts, sdb_err *err)
{
    int rc;
    char *tokdir = NULL;
    char cfgtok[4200] = "";
    if (opts && opts->config_dir) snprintf(cfgtok, sizeof cfgtok, "%s/tokenizer", opts->config_dir);
    if (opts && opts->tokenizer_dir) tokdir = strdup(opts->tokenizer_dir);
    else if (cfgtok[0] && sdb_is_dir(cfgtok)) tokdir = strdup(cfgtok); /* the configs' folder has one */
    else if ((rc = sdb_tokenizer_find(path, opts ? opts->base_dir : NULL, opts ? opts->models_path : NULL,
                                      opts ? opts->tokenizer_env : NULL, &tokdir, err)))
        return rc;
    if (!tokdir) return sdb_fail(err, SDB_ENOMEM, "out of memory");
    rc = sdb_tokenizer_load(&m->tok, tokdir, err);
    free(tokdir);
    if (rc) return rc;
    if ((rc = sdb_st_open(&m->single, path, err))) return rc;
    snprintf(m->unet_file, sizeof m->unet_file, "%s", path);

    sdb_ldm_configs cfg;
    if (opts && opts->config_dir) rc = load_config_dir(&cfg, opts->config_dir, err);
    else rc = sdb_ldm_infer_configs(m->single, &cfg, err);
    if (!rc) {
        rc = load_single_components(m, &cfg, err);
        if (m->sched_cfg.root) memset(&cfg.scheduler, 0, sizeof cfg.scheduler); /* moved into the model */
    }
    sdb_ldm_configs_free(&cfg);
    return rc;
}

/* A diffusers VAE folder's weights file and config (dir/ itself, or dir/vae/). */
static int vae_folder_files(const char *dir, char *cfg, size_t ncfg, char *wpath, size_t nw, sdb_err *err)
{
    char sub[4200];
    snprintf(sub, sizeof sub, "%s/vae", dir);
    const char *root = sdb_is_dir(sub) ? sub : dir;
    snprintf(cfg, ncfg, "%s/config.json", root);
    if (!sdb_file_exists(cfg))
        return sdb_fail(err, SDB_ENOTFOUND, "%s: not a VAE folder: no config.json (a diffusers vae/ folder, or a "
                        "single-file VAE .safetensors)", dir);
    return find_weights(root, "diffusion_pytorch_model", wpath, nw, err);
}

static void drop_ext_vae(sdb_model *m)
{
    if (m->ext_vae) sdb_vae_free(m->ext_vae);
    sdb_weights_free(&m->w_ext_vae);
    if (m->ext_vae_st) sdb_st_close(m->ext_vae_st);
    m->ext_vae = NULL;
    m->ext_vae_st = NULL;
    m->ext_vae_path[0] = m->ext_vae_hash_file[0] = m->vae_short_hash[0] = 0;
    m->vae = m->own_vae;
}

/* Loads `path` (a single-file VAE or a diffusers VAE folder) as the VAE in use. */
static int load_ext_vae(sdb_model *m, const char *path, sdb_err *err)
{
    drop_ext_vae(m);
    int rc;
    if (sdb_is_dir(path)) {
        char cfg[4300], wpath[4300];
        if ((rc = vae_folder_files(path, cfg, sizeof cfg, wpath, sizeof wpath, err))) return rc;
        if ((rc = open_weights(m, &m->w_ext_vae, wpath, "vae", err))) return rc;
        if ((rc = sdb_vae_load(&m->ext_vae, cfg, &m->w_ext_vae, err))) return rc;
        snprintf(m->ext_vae_hash_file, sizeof m->ext_vae_hash_file, "%s", wpath);
    } else {
        if ((rc = sdb_st_open(&m->ext_vae_st, path, err))) return rc;
        const char *prefix;
        if ((rc = sdb_ldm_vae_file_prefix(m->ext_vae_st, &prefix, err))) return rc;
        sdb_config c;
        if ((rc = sdb_ldm_infer_vae_config(m->ext_vae_st, prefix, &c, err))) { if (c.root) sdb_config_free(&c); return rc; }
        sdb_vae_config vcfg;
        rc = sdb_vae_config_parse(&vcfg, &c, err);
        sdb_config_free(&c);
        if (rc) return rc;
        if ((rc = sdb_ldm_vae_weights_prefix(&m->w_ext_vae, m->ext_vae_st, &vcfg, prefix, err))) return rc;
        m->w_ext_vae.keep_f16 = m->weights_f16;
        if ((rc = sdb_vae_create(&m->ext_vae, &vcfg, &m->w_ext_vae, err))) return rc;
        snprintf(m->ext_vae_hash_file, sizeof m->ext_vae_hash_file, "%s", path);
    }
    snprintf(m->ext_vae_path, sizeof m->ext_vae_path, "%s", path);
    m->vae = m->ext_vae;
    return 0;
}

int sdb_model_set_vae(sdb_model *m, const char *path, const sdb_log *log, sdb_err *err)
{
    if (!path || !path[0]) {
        if (m->ext_vae) drop_ext_vae(m);
        return 0;
    }
    if (m->ext_vae && !strcmp(m->ext_vae_path, path)) return 0;
    double t0 = sdb_now_mono();
    int rc = load_ext_vae(m, path, err);
    if (rc) {
        drop_ext_vae(m);
        sdb_err_prefix(err, "loading VAE %s", path);
        return rc;
    }
    sdb_logf(log, SDB_LOG_INFO, "VAE %s loaded in %.2f s", path, sdb_now_mono() - t0);
    return 0;
}

int sdb_weights_mode_parse(const char *name)
{
    return !strcmp(name, "f32") ? 0 : !strcmp(name, "f16") ? 1 : -1;
}

int sdb_model_load(sdb_model **out, const char *path, const sdb_model_opts *opts,
                   const sdb_log *log, sdb_err *err)
{
    *out = NULL;
    sdb_model *m = calloc(1, sizeof *m);
    if (!m) return sdb_fail(err, SDB_ENOMEM, "out of memory");
    snprintf(m->path, sizeof m->path, "%s", path);
    m->weights_f16 = opts && opts->weights_f16;
    int rc;
    double t0 = sdb_now_mono();
    struct stat sb;
    if (stat(path, &sb) != 0) {
        rc = sdb_fail_errno(err, SDB_ENOTFOUND, "%s: model not found", path);
    } else if (S_ISDIR(sb.st_mode)) {
        rc = load_folder(m, path, err);
    } else {
        size_t l = strlen(path);
        if (l > 5 && (!strcmp(path + l - 5, ".ckpt") || !strcmp(path + l - 3, ".pt")))
            rc = sdb_fail(err, SDB_EUNSUPPORTED, "%s: pickled .ckpt checkpoints are not read (they can run code); "
                          "convert it to .safetensors", path);
        else
            rc = load_single_file(m, path, opts, err);
    }
    if (!rc) m->vae = m->own_vae;
    if (!rc && opts && opts->vae_path) {
        rc = load_ext_vae(m, opts->vae_path, err);
        if (rc) sdb_err_prefix(err, "VAE %s", opts->vae_path);
    }
    if (!rc) rc = sdb_arena_init(&m->arena, 0, err);
    if (rc) {
        sdb_err_prefix(err, "loading model %s", path);
        sdb_model_free(m);
        return rc;
    }
    m->unet_channels = sdb_unet_in_channels(m->unet);
    m->conv = opts ? opts->conv : SDB_CONV_AUTO;
    sdb_unet_set_conv(m->unet, m->conv);
    sdb_vae_set_conv(m->vae, m->conv);
    m->keep_filters = opts ? opts->keep_filters : 0;
    sdb_unet_set_filter_memory(m->unet, m->keep_filters);
    if (sdb_sched_default_name(&m->sched_cfg, &m->default_sched, err) != 0) {
        sdb_logf(log, SDB_LOG_WARN, "%s; the scheduler must be chosen explicitly", err->msg);
        m->default_sched = NULL;
        sdb_err_clear(err);
    }
    compute_id(m); /* now: a VAE set later for some jobs (sdb_model_set_vae) does not change it */
    const int rounded = m->w_unet.rounded + m->w_vae.rounded + m->w_text.rounded + m->w_ext_vae.rounded;
    char mode[96] = "";
    if (m->weights_f16 && rounded) snprintf(mode, sizeof mode, ", matrices F16: %d tensors rounded to half", rounded);
    else if (m->weights_f16) snprintf(mode, sizeof mode, ", matrices F16 as in the files");
    sdb_logf(log, SDB_LOG_INFO, "model %s loaded in %.2f s (%s U-Net, %d channels; weights %.1f MiB%s)", path,
             sdb_now_mono() - t0, m->unet_channels == 9 ? "inpainting" : "standard", m->unet_channels,
             (double)(m->w_unet.bytes + m->w_vae.bytes + m->w_text.bytes) / (1 << 20), mode);
    *out = m;
    return 0;
}

void sdb_model_free(sdb_model *m)
{
    if (!m) return;
    if (m->unet) sdb_unet_free(m->unet);
    drop_ext_vae(m);
    if (m->own_vae) sdb_vae_free(m->own_vae);
    if (m->clip) sdb_clip_free(m->clip);
    if (m->tok) sdb_tokenizer_free(m->tok);
    sdb_weights_free(&m->w_unet);
    sdb_weights_free(&m->w_vae);
    sdb_weights_free(&m->w_text);
    if (m->single) sdb_st_close(m->single);
    if (m->sched_cfg.root) sdb_config_free(&m->sched_cfg);
    if (m->arena.base) sdb_arena_free(&m->arena);
    free(m);
}

/* Hash over what identifies the weights without reading gigabytes: every safetensors header (names,
 * shapes, offsets), file sizes, and 64 KiB samples spread through each data section. */
static void hash_weights_file(EVP_MD_CTX *ctx, const sdb_st *st)
{
    if (!st) return;
    EVP_DigestUpdate(ctx, st->map, st->data_start);
    size_t data = st->map_size - st->data_start;
    EVP_DigestUpdate(ctx, &data, sizeof data);
    const size_t chunk = 65536, samples = 64;
    for (size_t i = 0; i < samples && data; i++) {
        size_t off = st->data_start + (data > chunk ? (data - chunk) / (samples - 1) * i : 0);
        size_t len = data < chunk ? data : chunk;
        EVP_DigestUpdate(ctx, st->map + off, len);
    }
}

/* The id of the weights as loaded (see sdb_model_id). */
static void compute_id(sdb_model *m)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
    if (m->single) hash_weights_file(ctx, m->single);
    else {
        hash_weights_file(ctx, m->w_unet.st);
        hash_weights_file(ctx, m->w_vae.st);
        hash_weights_file(ctx, m->w_text.st);
    }
    char *cfgtext = json_dumps(m->sched_cfg.root, JSON_SORT_KEYS | JSON_COMPACT);
    if (cfgtext) { EVP_DigestUpdate(ctx, cfgtext, strlen(cfgtext)); free(cfgtext); }
    /* weights rounded to half compute with other numbers than the files hold (F16 files used
     * as they are give the same results in either mode: same identity) */
    if (m->w_unet.rounded + m->w_vae.rounded + m->w_text.rounded + m->w_ext_vae.rounded > 0) {
        static const char tag[] = "weights rounded to f16";
        EVP_DigestUpdate(ctx, tag, sizeof tag - 1);
    }
    /* a separate VAE decodes instead of the model's own (older ids, without one, are unchanged) */
    if (m->ext_vae) {
        static const char tag[] = "separate vae";
        EVP_DigestUpdate(ctx, tag, sizeof tag - 1);
        hash_weights_file(ctx, m->w_ext_vae.st);
    }
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned dl = 0;
    EVP_DigestFinal_ex(ctx, d, &dl);
    EVP_MD_CTX_free(ctx);
    for (unsigned i = 0; i < dl && i < 32; i++) snprintf(m->id + 2 * i, 3, "%02x", d[i]);
}

const char *sdb_model_id(sdb_model *m)
{
    if (!m->id[0]) compute_id(m);
    return m->id;
}

int sdb_vae_source_id(const char *path, char hex[65], sdb_err *err)
{
    char cfg[4300], wpath[4300];
    const char *file = path;
    int rc;
    if (sdb_is_dir(path)) {
        if ((rc = vae_folder_files(path, cfg, sizeof cfg, wpath, sizeof wpath, err))) return rc;
        file = wpath;
    }
    sdb_st *st = NULL;
    if ((rc = sdb_st_open(&st, file, err))) return rc;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
    hash_weights_file(ctx, st);
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned dl = 0;
    EVP_DigestFinal_ex(ctx, d, &dl);
    EVP_MD_CTX_free(ctx);
    sdb_st_close(st);
    for (unsigned i = 0; i < dl && i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", d[i]);
    return 0;
}

/* AUTOMATIC1111's short hash of a file (modules/hashes.py): the first 10 hex digits of the SHA-256
 * of the whole file, into out (once: computed when out is still empty). */
static const char *a1111_hash(const char *file, char out[16])
{
    if (out[0]) return out;
    char hex[65];
    sdb_err e = {0};
    snprintf(out, 16, "%.10s", sdb_sha256_file(file, hex, &e) == 0 ? hex : "unknown");
    return out;
}

const char *sdb_model_short_hash(sdb_model *m) { return a1111_hash(m->unet_file, m->short_hash); }

const char *sdb_model_vae_short_hash(sdb_model *m)
{
    return m->ext_vae ? a1111_hash(m->ext_vae_hash_file, m->vae_short_hash) : NULL;
}

const char *sdb_model_vae_path(const sdb_model *m) { return m->ext_vae ? m->ext_vae_path : NULL; }

int sdb_model_unet_channels(const sdb_model *m) { return m->unet_channels; }
const char *sdb_model_default_scheduler(const sdb_model *m) { return m->default_sched; }
