/*
 * ldm_infer.c — component configs of a single-file SD 1.x checkpoint inferred from its tensors
 * (see ldm_infer.h).
 *
 * Owns: the SD 1.x template configs (the keys and values of the real model's config files) and
 * the reading of structure out of LDM tensor names and shapes. Each config starts as its template
 * and gets what the shapes say; the model loaders then check every tensor against it.
 */
#include "sdb/ldm_infer.h"
#include "sdb/ldm_names.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* SD 1.x's standard configuration (runwayml/stable-diffusion-inpainting, diffusers 0.30). */
static const char UNET_TEMPLATE[] =
    "{\"_class_name\": \"UNet2DConditionModel\", \"act_fn\": \"silu\", \"addition_embed_type\": null,"
    " \"addition_embed_type_num_heads\": 64, \"addition_time_embed_dim\": null, \"attention_head_dim\": 8,"
    " \"attention_type\": \"default\", \"block_out_channels\": [320, 640, 1280, 1280],"
    " \"center_input_sample\": false, \"class_embed_type\": null, \"class_embeddings_concat\": false,"
    " \"conv_in_kernel\": 3, \"conv_out_kernel\": 3, \"cross_attention_dim\": 768, \"cross_attention_norm\": null,"
    " \"down_block_types\": [], \"downsample_padding\": 1, \"dropout\": 0.0, \"dual_cross_attention\": false,"
    " \"encoder_hid_dim\": null, \"encoder_hid_dim_type\": null, \"flip_sin_to_cos\": true, \"freq_shift\": 0,"
    " \"in_channels\": 9, \"layers_per_block\": 2, \"mid_block_only_cross_attention\": null,"
    " \"mid_block_scale_factor\": 1, \"mid_block_type\": \"UNetMidBlock2DCrossAttn\", \"norm_eps\": 1e-05,"
    " \"norm_num_groups\": 32, \"num_attention_heads\": null, \"num_class_embeds\": null,"
    " \"only_cross_attention\": false, \"out_channels\": 4, \"projection_class_embeddings_input_dim\": null,"
    " \"resnet_out_scale_factor\": 1.0, \"resnet_skip_time_act\": false, \"resnet_time_scale_shift\": \"default\","
    " \"reverse_transformer_layers_per_block\": null, \"sample_size\": 64, \"time_cond_proj_dim\": null,"
    " \"time_embedding_act_fn\": null, \"time_embedding_dim\": null, \"time_embedding_type\": \"positional\","
    " \"timestep_post_act\": null, \"transformer_layers_per_block\": 1, \"up_block_types\": [],"
    " \"upcast_attention\": false, \"use_linear_projection\": false}";
static const char VAE_TEMPLATE[] =
    "{\"_class_name\": \"AutoencoderKL\", \"act_fn\": \"silu\", \"block_out_channels\": [128, 256, 512, 512],"
    " \"down_block_types\": [], \"force_upcast\": true, \"in_channels\": 3, \"latent_channels\": 4,"
    " \"latents_mean\": null, \"latents_std\": null, \"layers_per_block\": 2, \"mid_block_add_attention\": true,"
    " \"norm_num_groups\": 32, \"out_channels\": 3, \"sample_size\": 512, \"scaling_factor\": 0.18215,"
    " \"shift_factor\": null, \"up_block_types\": [], \"use_post_quant_conv\": true, \"use_quant_conv\": true}";
static const char TEXT_TEMPLATE[] =
    "{\"architectures\": [\"CLIPTextModel\"], \"attention_dropout\": 0.0, \"bos_token_id\": 0, \"dropout\": 0.0,"
    " \"eos_token_id\": 2, \"hidden_act\": \"quick_gelu\", \"hidden_size\": 768, \"initializer_factor\": 1.0,"
    " \"initializer_range\": 0.02, \"intermediate_size\": 3072, \"layer_norm_eps\": 1e-05,"
    " \"max_position_embeddings\": 77, \"model_type\": \"clip_text_model\", \"num_attention_heads\": 12,"
    " \"num_hidden_layers\": 12, \"pad_token_id\": 1, \"projection_dim\": 768, \"vocab_size\": 49408}";
static const char SCHED_TEMPLATE[] =
    "{\"_class_name\": \"PNDMScheduler\", \"beta_end\": 0.012, \"beta_schedule\": \"scaled_linear\","
    " \"beta_start\": 0.00085, \"clip_sample\": false, \"num_train_timesteps\": 1000, \"set_alpha_to_one\": false,"
    " \"skip_prk_steps\": true, \"steps_offset\": 1, \"trained_betas\": null}";

enum { SD1_GROUPS = 32, SD1_HEADS = 8, CLIP_HEAD_DIM = 64, SD2_CONTEXT = 1024 };

typedef struct {
    const sdb_st *st;
    const char *prefix;
    sdb_err *err;
} reader;

static const sdb_st_tensor *vfind(const reader *r, char *name, size_t n, const char *fmt, va_list ap)
{
    int l = snprintf(name, n, "%s", r->prefix);
    vsnprintf(name + l, n - (size_t)l, fmt, ap);
    return sdb_st_find(r->st, name);
}

/* The tensor prefix + fmt, or NULL. */
static const sdb_st_tensor *find(const reader *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static const sdb_st_tensor *find(const reader *r, const char *fmt, ...)
{
    char name[512];
    va_list ap;
    va_start(ap, fmt);
    const sdb_st_tensor *t = vfind(r, name, sizeof name, fmt, ap);
    va_end(ap);
    return t;
}

/* The tensor prefix + fmt of ndim dimensions; an error naming it when it is missing or has another rank. */
static int need(const reader *r, const sdb_st_tensor **out, int ndim, const char *what, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int need(const reader *r, const sdb_st_tensor **out, int ndim, const char *what, const char *fmt, ...)
{
    char name[512];
    va_list ap;
    va_start(ap, fmt);
    const sdb_st_tensor *t = vfind(r, name, sizeof name, fmt, ap);
    va_end(ap);
    if (!t)
        return sdb_fail(r->err, SDB_EFORMAT, "%s: no tensor '%s' (%s): not an SD 1.x checkpoint in the LDM layout; "
                        "give the configs with --config DIR (model_config: in a manifest)", r->st->path, name, what);
    if (t->ndim != ndim) {
        char sh[128];
        sdb_shape_str(t->shape, t->ndim, sh, sizeof sh);
        return sdb_fail(r->err, SDB_EFORMAT, "%s: tensor '%s' (%s) has shape %s: %d dimensions, expected %d",
                        r->st->path, name, what, sh, t->ndim, ndim);
    }
    *out = t;
    return 0;
}

/* An error about tensor t: "FILE: tensor 'NAME' has shape [..]: WHY; ..." */
static int bad(const reader *r, const sdb_st_tensor *t, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int bad(const reader *r, const sdb_st_tensor *t, const char *fmt, ...)
{
    char why[512], sh[128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    sdb_shape_str(t->shape, t->ndim, sh, sizeof sh);
    return sdb_fail(r->err, SDB_EUNSUPPORTED, "%s: tensor '%s' has shape %s: %s; this fits no SD 1.x model whose "
                    "configs can be inferred (give them with --config DIR, model_config: in a manifest)",
                    r->st->path, t->name, sh, why);
}

/* The largest <i> of the tensors "<prefix><group>.<i>.…", or -1. */
static int max_index(const reader *r, const char *group)
{
    char head[256];
    snprintf(head, sizeof head, "%s%s.", r->prefix, group);
    size_t hl = strlen(head);
    int best = -1;
    for (int i = 0; i < r->st->n; i++) {
        const char *nm = r->st->tensors[i].name;
        if (strncmp(nm, head, hl) != 0) continue;
        char *end;
        long v = strtol(nm + hl, &end, 10);
        if (end != nm + hl && *end == '.' && v >= 0 && v < 1000 && v > best) best = (int)v;
    }
    return best;
}

static json_t *int_array(const int *v, int n)
{
    json_t *a = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(a, json_integer(v[i]));
    return a;
}

static json_t *str_array(const char *const *v, int n)
{
    json_t *a = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(a, json_string(v[i]));
    return a;
}

static int start_config(sdb_config *c, const char *tmpl, const sdb_st *st, const char *what, sdb_err *err)
{
    char name[4200];
    snprintf(name, sizeof name, "%s (%s config inferred from its tensors)", st->path, what);
    return sdb_config_parse(c, tmpl, name, err);
}

static int infer_unet(const sdb_st *st, sdb_config *out, int *context_dim, const sdb_st_tensor **context_t, sdb_err *err)
{
    reader r = {st, SDB_LDM_UNET_PREFIX, err};
    const sdb_st_tensor *t;
    int rc;
    if (!sdb_st_find(st, SDB_LDM_UNET_PREFIX "input_blocks.0.0.weight") &&
        (sdb_st_find(st, "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight") ||
         sdb_st_find(st, "conditioner.embedders.1.model.token_embedding.weight")))
        return sdb_fail(err, SDB_EUNSUPPORTED, "%s: an SDXL checkpoint (tensors 'conditioner.embedders.*'); sdbatch runs SD 1.x",
                        st->path);
    if ((rc = need(&r, &t, 4, "the U-Net's conv_in", "input_blocks.0.0.weight"))) return rc;
    const int in_ch = (int)t->shape[1];
    if (in_ch != 4 && in_ch != 9)
        return bad(&r, t, "the U-Net takes %d input channels (SD 1.x: 9 inpainting, 4 plain)", in_ch);
    if ((rc = need(&r, &t, 4, "the U-Net's conv_out", "out.2.weight"))) return rc;
    const int out_ch = (int)t->shape[0];
    if (out_ch != 4) return bad(&r, t, "the U-Net gives %d channels (SD 1.x: 4)", out_ch);

    /* levels and layers: level i's resnets are input_blocks 1+i(L+1)+j, its downsampler 1+i(L+1)+L */
    const int max_in = max_index(&r, "input_blocks");
    int L = -1;
    for (int k = 1; k <= max_in && L < 0; k++)
        if (find(&r, "input_blocks.%d.0.op.weight", k)) L = k - 1;
    if (L < 0) L = max_in; /* a single level */
    const int N = L >= 1 && (max_in + 1) % (L + 1) == 0 ? (max_in + 1) / (L + 1) : -1;
    if (L < 1 || N < 1 || N > SDB_LDM_MAX_BLOCKS) {
        if ((rc = need(&r, &t, 4, "the last input block", "input_blocks.%d.0.in_layers.2.weight", max_in))) return rc;
        return bad(&r, t, "the input blocks (0..%d) do not form levels of resnets and downsamplers", max_in);
    }
    int widths[SDB_LDM_MAX_BLOCKS], attn_down[SDB_LDM_MAX_BLOCKS], attn_up[SDB_LDM_MAX_BLOCKS];
    int ctx = -1;
    for (int i = 0; i < N; i++) {
        const int k = 1 + i * (L + 1);
        if ((rc = need(&r, &t, 4, "a resnet's conv2", "input_blocks.%d.0.out_layers.3.weight", k))) return rc;
        widths[i] = (int)t->shape[0];
        if (widths[i] % SD1_GROUPS)
            return bad(&r, t, "width %d is not a multiple of SD 1.x's %d norm groups", widths[i], SD1_GROUPS);
        const sdb_st_tensor *pin = find(&r, "input_blocks.%d.1.proj_in.weight", k);
        attn_down[i] = pin != NULL;
        if (!pin) continue;
        if (pin->ndim != 4)
            return bad(&r, pin, "a linear proj_in (SD 2.x's layout; SD 1.x has 1x1 convolutions)");
        if (widths[i] % SD1_HEADS) return bad(&r, pin, "width %d does not split into SD 1.x's %d heads", widths[i], SD1_HEADS);
        if (find(&r, "input_blocks.%d.1.transformer_blocks.1.norm1.weight", k))
            return bad(&r, pin, "more than one transformer layer per block (SD 1.x has one)");
        if ((rc = need(&r, &t, 2, "a cross-attention key", "input_blocks.%d.1.transformer_blocks.0.attn2.to_k.weight", k)))
            return rc;
        if (ctx < 0) { ctx = (int)t->shape[1]; *context_t = t; }
        if (t->shape[1] == SD2_CONTEXT)
            return bad(&r, t, "cross-attention over %d-wide text embeddings (SD 2.x; SD 1.x: 768)", SD2_CONTEXT);
    }
    if (ctx < 0) {
        if ((rc = need(&r, &t, 4, "the mid-block attention", "middle_block.1.proj_in.weight"))) return rc;
        return bad(&r, t, "no down block has attention (SD 1.x: all but the last)");
    }
    if ((rc = need(&r, &t, 4, "the mid-block attention", "middle_block.1.proj_in.weight"))) return rc;
    const int max_out = max_index(&r, "output_blocks");
    if (max_out != N * (L + 1) - 1) {
        if ((rc = need(&r, &t, 4, "the last output block", "output_blocks.%d.0.in_layers.2.weight", max_out))) return rc;
        return bad(&r, t, "output blocks 0..%d do not mirror %d levels of %d layers", max_out, N, L);
    }
    for (int i = 0; i < N; i++) attn_up[i] = find(&r, "output_blocks.%d.1.proj_in.weight", i * (L + 1)) != NULL;

    if ((rc = start_config(out, UNET_TEMPLATE, st, "U-Net", err))) return rc;
    const char *down[SDB_LDM_MAX_BLOCKS], *up[SDB_LDM_MAX_BLOCKS];
    for (int i = 0; i < N; i++) {
        down[i] = attn_down[i] ? "CrossAttnDownBlock2D" : "DownBlock2D";
        up[i] = attn_up[i] ? "CrossAttnUpBlock2D" : "UpBlock2D";
    }
    json_t *o = out->root;
    json_object_set_new(o, "in_channels", json_integer(in_ch));
    json_object_set_new(o, "out_channels", json_integer(out_ch));
    json_object_set_new(o, "block_out_channels", int_array(widths, N));
    json_object_set_new(o, "layers_per_block", json_integer(L));
    json_object_set_new(o, "cross_attention_dim", json_integer(ctx));
    json_object_set_new(o, "down_block_types", str_array(down, N));
    json_object_set_new(o, "up_block_types", str_array(up, N));
    *context_dim = ctx;
    return 0;
}

static int infer_vae(const sdb_st *st, const char *prefix, sdb_config *out, sdb_err *err)
{
    reader r = {st, prefix, err};
    const sdb_st_tensor *t;
    int rc;
    if ((rc = need(&r, &t, 4, "the VAE encoder's conv_in", "encoder.conv_in.weight"))) return rc;
    const int in_ch = (int)t->shape[1];
    if (in_ch != 3) return bad(&r, t, "the VAE encodes %d channels (SD 1.x: 3, RGB)", in_ch);
    int N = 0, L = 0;
    while (N <= SDB_LDM_MAX_BLOCKS && find(&r, "encoder.down.%d.block.0.conv1.weight", N)) N++;
    while (L <= 16 && find(&r, "encoder.down.0.block.%d.conv1.weight", L)) L++;
    if (N < 1 || N > SDB_LDM_MAX_BLOCKS || L < 1 || L > 16)
        return bad(&r, t, "its encoder has %d levels of %d resnets (encoder.down.<i>.block.<j>)", N, L);
    int widths[SDB_LDM_MAX_BLOCKS];
    for (int i = 0; i < N; i++) {
        if ((rc = need(&r, &t, 4, "a VAE resnet's conv2", "encoder.down.%d.block.0.conv2.weight", i))) return rc;
        widths[i] = (int)t->shape[0];
        if (widths[i] % SD1_GROUPS)
            return bad(&r, t, "width %d is not a multiple of SD 1.x's %d norm groups", widths[i], SD1_GROUPS);
    }
    if ((rc = need(&r, &t, 4, "the VAE encoder's conv_out", "encoder.conv_out.weight"))) return rc;
    if (t->shape[0] % 2) return bad(&r, t, "an odd number of moments (mean and log-variance: 2 x latent channels)");
    const int z = (int)(t->shape[0] / 2);
    if ((rc = need(&r, &t, 4, "the VAE decoder's conv_out", "decoder.conv_out.weight"))) return rc;
    const int out_ch = (int)t->shape[0];
    if (out_ch != 3) return bad(&r, t, "the VAE decodes to %d channels (SD 1.x: 3, RGB)", out_ch);
    if ((rc = need(&r, &t, 4, "the VAE decoder's conv_in", "decoder.conv_in.weight"))) return rc;
    if (t->shape[1] != z) return bad(&r, t, "the decoder takes %lld latent channels, the encoder gives %d", (long long)t->shape[1], z);

    if ((rc = start_config(out, VAE_TEMPLATE, st, "VAE", err))) return rc;
    const char *down[SDB_LDM_MAX_BLOCKS], *up[SDB_LDM_MAX_BLOCKS];
    for (int i = 0; i < N; i++) { down[i] = "DownEncoderBlock2D"; up[i] = "UpDecoderBlock2D"; }
    json_t *o = out->root;
    json_object_set_new(o, "in_channels", json_integer(in_ch));
    json_object_set_new(o, "out_channels", json_integer(out_ch));
    json_object_set_new(o, "latent_channels", json_integer(z));
    json_object_set_new(o, "block_out_channels", int_array(widths, N));
    json_object_set_new(o, "layers_per_block", json_integer(L));
    json_object_set_new(o, "down_block_types", str_array(down, N));
    json_object_set_new(o, "up_block_types", str_array(up, N));
    json_object_set_new(o, "use_quant_conv", json_boolean(find(&r, "quant_conv.weight") != NULL));
    json_object_set_new(o, "use_post_quant_conv", json_boolean(find(&r, "post_quant_conv.weight") != NULL));
    json_object_set_new(o, "mid_block_add_attention", json_boolean(find(&r, "encoder.mid.attn_1.q.weight") != NULL));
    return 0;
}

static int infer_text(const sdb_st *st, sdb_config *out, int *hidden, sdb_err *err)
{
    if (sdb_st_find(st, "cond_stage_model.model.token_embedding.weight"))
        return sdb_fail(err, SDB_EUNSUPPORTED, "%s: tensor 'cond_stage_model.model.token_embedding.weight': an OpenCLIP text "
                        "encoder (SD 2.x); SD 1.x's is CLIP ViT-L/14 (give the configs with --config DIR)", st->path);
    reader r = {st, SDB_LDM_TEXT_PREFIX "text_model.", err};
    if (!find(&r, "embeddings.token_embedding.weight")) r.prefix = SDB_LDM_TEXT_PREFIX; /* the older layout */
    const sdb_st_tensor *t;
    int rc;
    if ((rc = need(&r, &t, 2, "the text encoder's token embedding", "embeddings.token_embedding.weight"))) return rc;
    const int vocab = (int)t->shape[0], H = (int)t->shape[1];
    if (H % CLIP_HEAD_DIM)
        return bad(&r, t, "the text encoder is %d wide, not a multiple of CLIP's head size %d (SD 1.x: 768)", H, CLIP_HEAD_DIM);
    if ((rc = need(&r, &t, 2, "the text encoder's position embedding", "embeddings.position_embedding.weight"))) return rc;
    const int positions = (int)t->shape[0];
    int layers = 0;
    while (layers < 1000 && find(&r, "encoder.layers.%d.layer_norm1.weight", layers)) layers++;
    if ((rc = need(&r, &t, 2, "the first text encoder layer's MLP", "encoder.layers.0.mlp.fc1.weight"))) return rc;
    const int inter = (int)t->shape[0];

    if ((rc = start_config(out, TEXT_TEMPLATE, st, "text encoder", err))) return rc;
    json_t *o = out->root;
    json_object_set_new(o, "hidden_size", json_integer(H));
    json_object_set_new(o, "projection_dim", json_integer(H));
    json_object_set_new(o, "intermediate_size", json_integer(inter));
    json_object_set_new(o, "num_hidden_layers", json_integer(layers));
    json_object_set_new(o, "num_attention_heads", json_integer(H / CLIP_HEAD_DIM));
    json_object_set_new(o, "vocab_size", json_integer(vocab));
    json_object_set_new(o, "max_position_embeddings", json_integer(positions));
    *hidden = H;
    return 0;
}

int sdb_ldm_infer_configs(const sdb_st *st, sdb_ldm_configs *out, sdb_err *err)
{
    memset(out, 0, sizeof *out);
    int ctx = 0, hidden = 0;
    const sdb_st_tensor *ctx_t = NULL;
    int rc = infer_unet(st, &out->unet, &ctx, &ctx_t, err);
    if (!rc) rc = infer_text(st, &out->text_encoder, &hidden, err);
    if (!rc && ctx != hidden) {
        assert(ctx_t);
        reader r = {st, "", err};
        rc = bad(&r, ctx_t, "the U-Net attends to %d-wide text embeddings but the text encoder is %d wide", ctx, hidden);
    }
    if (!rc) rc = infer_vae(st, SDB_LDM_VAE_PREFIX, &out->vae, err);
    if (!rc) rc = start_config(&out->scheduler, SCHED_TEMPLATE, st, "scheduler", err);
    return rc;
}

void sdb_ldm_configs_free(sdb_ldm_configs *c)
{
    if (c->unet.root) sdb_config_free(&c->unet);
    if (c->vae.root) sdb_config_free(&c->vae);
    if (c->text_encoder.root) sdb_config_free(&c->text_encoder);
    if (c->scheduler.root) sdb_config_free(&c->scheduler);
}

int sdb_ldm_infer_vae_config(const sdb_st *st, const char *prefix, sdb_config *out, sdb_err *err)
{
    memset(out, 0, sizeof *out);
    return infer_vae(st, prefix, out, err);
}

int sdb_ldm_vae_file_prefix(const sdb_st *st, const char **prefix, sdb_err *err)
{
    *prefix = NULL;
    if (sdb_st_find(st, SDB_LDM_VAE_PREFIX "encoder.conv_in.weight")) { *prefix = SDB_LDM_VAE_PREFIX; return 0; }
    if (sdb_st_find(st, "encoder.down.0.block.0.conv1.weight")) { *prefix = ""; return 0; }
    if (sdb_st_find(st, "encoder.down_blocks.0.resnets.0.conv1.weight"))
        return sdb_fail(err, SDB_EUNSUPPORTED, "%s: a VAE in the diffusers layout (tensor 'encoder.down_blocks.0.resnets.0.conv1.weight'): "
                        "give its folder (config.json beside it) instead of the file", st->path);
    return sdb_fail(err, SDB_EFORMAT, "%s: not a VAE: no tensor 'encoder.down.0.block.0.conv1.weight' (the layout of "
                    "vae-ft-mse-840000-ema-pruned) nor 'first_stage_model.encoder.conv_in.weight'", st->path);
}
