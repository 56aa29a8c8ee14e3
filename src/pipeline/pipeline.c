/*
 * pipeline.c — one generation, as diffusers 0.30.3 runs it:
 *   StableDiffusionInpaintPipeline.__call__  (image + mask; 9-channel U-Net, or the legacy
 *                                             4-channel U-Net that re-blends the known region),
 *   StableDiffusionImg2ImgPipeline.__call__  (image, no mask),
 *   StableDiffusionPipeline.__call__         (no image).
 * The random draws happen in diffusers' order from one torch-compatible generator seeded with the
 * job's seed, so the same seed gives the same picture.
 *
 * Sizes (where sdbatch differs from diffusers, on purpose): with width/height given, the inputs are
 * resized to them exactly as diffusers does. Without them, diffusers would squash every input to
 * the U-Net's sample_size x 8 (512x512); sdbatch instead keeps the input's own size: a side that is
 * not a multiple of 8 is padded by repeating its edge pixels up to the next multiple, and the result
 * is cropped back, so the output always has the input's exact size.
 *
 * Owns nothing across calls: all buffers come from the model's arena (mark at entry, reset at exit).
 */
#include "pipeline_internal.h"
#include "restore_internal.h"

#include "sdb/a1111.h"
#include "sdb/fsutil.h"
#include "sdb/mask.h"
#include "sdb/resize.h"
#include "sdb/rng.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sdb_gen_params_default(sdb_gen_params *p)
{
    memset(p, 0, sizeof *p);
    p->steps = 50;
    p->guidance_scale = 7.5;
    p->strength = 1.0;
}

typedef struct {
    sdb_gen_trace_fn fn;
    void *ud;
} tracer;

static void trace(const tracer *t, const char *name, const float *x, size_t n)
{
    if (t && t->fn) t->fn(t->ud, name, x, n);
}

/* Edge-replicating pad of an 8-bit image to w x h (>= its size). */
static int pad_edges(const sdb_image *in, int w, int h, sdb_image *out, sdb_err *err)
{
    int rc = sdb_image_alloc(out, w, h, in->c, err);
    if (rc) return rc;
    for (int y = 0; y < h; y++) {
        int sy = y < in->h ? y : in->h - 1;
        for (int x = 0; x < w; x++) {
            int sx = x < in->w ? x : in->w - 1;
            memcpy(out->px + ((size_t)y * w + x) * in->c, in->px + ((size_t)sy * in->w + sx) * in->c, (size_t)in->c);
        }
    }
    return 0;
}

/* The top-left w x h of an image. */
static int crop_to(const sdb_image *in, int w, int h, sdb_image *out, sdb_err *err)
{
    int rc = sdb_image_alloc(out, w, h, in->c, err);
    if (rc) return rc;
    for (int y = 0; y < h; y++)
        memcpy(out->px + (size_t)y * w * in->c, in->px + (size_t)y * in->w * in->c, (size_t)w * in->c);
    return 0;
}

/* VaeImageProcessor.resize(mode "default"/"fill") to w x h; a copy when the size is already right. */
static int resize_to(const sdb_image *in, int w, int h, int fill, sdb_image *out, sdb_err *err)
{
    if (in->w == w && in->h == h) return sdb_image_copy(in, out, err);
    return fill ? sdb_resize_and_fill(in, w, h, out, err) : sdb_resize_lanczos(in, w, h, out, err);
}

/* pil_to_numpy / 255, then normalize 2x - 1: RGB 8-bit -> [1, 3, H, W] float32 in [-1, 1]. */
static void image_to_tensor(const sdb_image *im, float *t)
{
    size_t hw = (size_t)im->w * im->h;
    for (size_t i = 0; i < hw; i++)
        for (int c = 0; c < 3; c++) {
            float v = (float)im->px[i * 3 + c] / 255.0f;
            t[c * hw + i] = 2.0f * v - 1.0f;
        }
}

/* Mask processor: L 8-bit -> /255 -> binarised (< 0.5 -> 0, else 1) [1, 1, H, W]. */
static void mask_to_tensor(const sdb_image *m, float *t)
{
    size_t hw = (size_t)m->w * m->h;
    for (size_t i = 0; i < hw; i++) t[i] = ((float)m->px[i] / 255.0f) < 0.5f ? 0.0f : 1.0f;
}

/* F.interpolate(mask, size=(H/8, W/8)), nearest: pixel (8i, 8j) */
static void latent_mask(const float *mask_cond, int W, int h, int w, float *mask_lat)
{
    for (int i = 0; i < h; i++)
        for (int j = 0; j < w; j++) mask_lat[i * w + j] = mask_cond[(size_t)(i * 8) * W + j * 8];
}

/* image_processor.postprocess(output_type="pil"): clamp(x/2 + 0.5, 0, 1), *255, round half to even. */
static int tensor_to_image(const float *t, int W, int H, sdb_image *out, sdb_err *err)
{
    int rc = sdb_image_alloc(out, W, H, 3, err);
    if (rc) return rc;
    size_t hw = (size_t)W * H;
    for (int c = 0; c < 3; c++)
        for (size_t i = 0; i < hw; i++) {
            float v = t[c * hw + i];
            if (isnan(v)) return sdb_fail(err, SDB_ENUMERIC, "the decoded image contains NaN");
            v = v / 2.0f + 0.5f;
            v = v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v;
            out->px[i * 3 + c] = (uint8_t)nearbyintf(v * 255.0f);
        }
    return 0;
}

/* Tokenises and encodes one prompt into out[77 * hidden]. */
static int encode_text(sdb_model *m, const char *text, float *out, const tracer *tr, const char *ids_name,
                       const sdb_log *log, sdb_err *err)
{
    int L = sdb_tokenizer_max_length(m->tok);
    int32_t ids[1024];
    if (L > 1024) return sdb_fail(err, SDB_EUNSUPPORTED, "tokenizer max length %d too large", L);
    int rc = sdb_tokenizer_encode(m->tok, text, -1, ids, NULL, log, err);
    if (rc) return rc;
    if (tr && tr->fn) {
        float f[1024];
        for (int i = 0; i < L; i++) f[i] = (float)ids[i];
        trace(tr, ids_name, f, (size_t)L);
    }
    return sdb_clip_encode(m->clip, ids, 1, out, &m->arena, err);
}

/* Latent pixels above which the U-Net runs the guidance batch one image at a time (128x128
 * latents = a 1024x1024 image). */
#define SDB_UNET_SPLIT_LATENTS ((size_t)128 * 128)

/* ---- tiled VAE mode (issue 17) ---- */
int sdb_vae_tiling_parse(const char *name)
{
    if (!name) return -1;
    if (!strcmp(name, "auto")) return SDB_VAE_TILING_AUTO;
    if (!strcmp(name, "on")) return SDB_VAE_TILING_ON;
    if (!strcmp(name, "off")) return SDB_VAE_TILING_OFF;
    return -1;
}

const char *sdb_vae_tiling_name(int mode)
{
    return mode == SDB_VAE_TILING_ON ? "on" : mode == SDB_VAE_TILING_OFF ? "off" : "auto";
}

int sdb_model_vae_tiled(const sdb_model *m, int mode, int W, int H)
{
    if (mode == SDB_VAE_TILING_OFF) return 0;
    if (!sdb_vae_tiles_image(m->vae, H, W)) return 0;
    if (mode == SDB_VAE_TILING_ON) return 1;
    double t2 = 2.0 * sdb_vae_tile_size(m->vae);
    return (double)W * H > t2 * t2;
}

/* latent_dist.sample(generator) * scaling_factor of an image tensor [1, 3, H, W]. */
static int encode_image_latents(sdb_model *m, const float *img, int H, int W, float *lat, size_t nlat,
                                sdb_rng *rng, const tracer *tr, const char *what, int tiled, sdb_err *err)
{
    size_t mark = sdb_arena_mark(&m->arena);
    float *mean = sdb_arena_floats(&m->arena, nlat), *std = sdb_arena_floats(&m->arena, nlat);
    float *noise = sdb_arena_floats(&m->arena, nlat);
    if (!mean || !std || !noise) return sdb_fail(err, SDB_ENOMEM, "out of scratch memory");
    int rc = tiled ? sdb_vae_encode_tiled(m->vae, img, H, W, mean, std, NULL, &m->arena, err)
                   : sdb_vae_encode(m->vae, img, H, W, mean, std, NULL, &m->arena, err);
    if (rc) return rc;
    char name[64];
    snprintf(name, sizeof name, "%s/mean", what);
    trace(tr, name, mean, nlat);
    snprintf(name, sizeof name, "%s/std", what);
    trace(tr, name, std, nlat);
    sdb_rng_randn(rng, noise, nlat);
    snprintf(name, sizeof name, "%s/noise", what);
    trace(tr, name, noise, nlat);
    sdb_vae_sample(mean, std, noise, nlat, lat);
    float sf = sdb_vae_scaling_factor(m->vae);
    for (size_t i = 0; i < nlat; i++) lat[i] = sf * lat[i];
    sdb_arena_reset(&m->arena, mark);
    return 0;
}

static int check_params(const sdb_model *m, const sdb_gen_params *p, sdb_err *err)
{
    if (!p->prompt) return sdb_fail(err, SDB_EINVAL, "prompt: required");
    if (p->steps <= 0) return sdb_fail(err, SDB_EINVAL, "steps: must be a positive number, got %d", p->steps);
    if (p->steps > 10000) return sdb_fail(err, SDB_EINVAL, "steps: %d is more than 10000", p->steps);
    if (!(p->strength > 0.0 && p->strength <= 1.0)) return sdb_fail(err, SDB_EINVAL, "strength: must be in (0, 1], got %g", p->strength);
    if (!isfinite(p->guidance_scale)) return sdb_fail(err, SDB_EINVAL, "guidance_scale: must be a finite number");
    if (p->width < 0 || p->height < 0 || p->width % 8 || p->height % 8)
        return sdb_fail(err, SDB_EINVAL, "width/height: must be positive multiples of 8, got %dx%d", p->width, p->height);
    if ((p->width == 0) != (p->height == 0)) return sdb_fail(err, SDB_EINVAL, "width and height: give both or neither");
    if (p->padding_mask_crop < 0) return sdb_fail(err, SDB_EINVAL, "padding_mask_crop: must be >= 0");
    if (p->mask && !p->image) return sdb_fail(err, SDB_EINVAL, "mask: given without an image");
    if (p->padding_mask_crop && !p->mask && !p->restore.mask_from_alpha) return sdb_fail(err, SDB_EINVAL, "padding_mask_crop: needs a mask");
    if (p->vae_tiling < SDB_VAE_TILING_AUTO || p->vae_tiling > SDB_VAE_TILING_OFF)
        return sdb_fail(err, SDB_EINVAL, "vae_tiling: unknown mode %d", p->vae_tiling);
    if (p->eta < 0 || p->eta > 1) return sdb_fail(err, SDB_EINVAL, "eta: must be in [0, 1], got %g", p->eta);
    if (!p->image && m->unet_channels == 9)
        return sdb_fail(err, SDB_EINVAL, "this is an inpainting model (9-channel U-Net): it needs an image and a mask");
    if (p->image && !p->mask && !p->restore.mask_from_alpha && m->unet_channels == 9)
        return sdb_fail(err, SDB_EINVAL, "this is an inpainting model (9-channel U-Net): img2img needs a mask too");
    return sdb_restore_check(p, err);
}

int sdb_generate_ex(sdb_model *m, const sdb_gen_params *p, sdb_step_fn on_step, void *ud,
                    sdb_gen_trace_fn trace_fn, void *trace_ud, sdb_image *out,
                    const sdb_log *log, sdb_err *err)
{
    memset(out, 0, sizeof *out);
    int rc = check_params(m, p, err);
    if (rc) return rc;
    tracer trs = {trace_fn, trace_ud}, *tr = &trs;
    const int inpaint = p->mask != NULL || p->restore.mask_from_alpha, img2img = p->image && !inpaint;
    const int restore = sdb_restore_active(&p->restore);     /* issue 17's options: see restore.c */
    const sdb_masked_content mc = p->restore.masked_content;
    const int crop_pad = sdb_restore_crop_padding(p);        /* = padding_mask_crop without options */
    const int legacy = inpaint && m->unet_channels == 4;
    const int cfg = p->guidance_scale > 1.0;
    const int B = cfg ? 2 : 1;
    size_t arena_mark = sdb_arena_mark(&m->arena);
    sdb_sched *sched = NULL;
    sdb_image image = {0}, mask = {0}, tmp = {0}, gen = {0}, work_img = {0}, work_mask = {0}, orig_mask = {0};
    int crop[4] = {0, 0, 0, 0}, use_crop = 0;

    /* 0. sizes: explicit (diffusers), or the input's own, padded to multiples of 8 */
    int W = p->width, H = p->height, outW, outH;
    if (!W) {
        if (p->image && !crop_pad) { W = (p->image->w + 7) / 8 * 8; H = (p->image->h + 7) / 8 * 8; }
        else if (p->restore.only_masked_size) { W = H = p->restore.only_masked_size; }
        else { W = H = sdb_unet_sample_size(m->unet) * 8; }
    }
    outW = W; outH = H;
    const int h = H / 8, w = W / 8;
    const size_t nlat = (size_t)4 * h * w, npix = (size_t)W * H;
    const int tiled = sdb_model_vae_tiled(m, p->vae_tiling, W, H);
    /* big images (issue 17): the classifier-free guidance batch runs one image at a time above
     * SDB_UNET_SPLIT_LATENTS latent pixels; below, exactly as before */
    const int split_cfg = (size_t)h * w > SDB_UNET_SPLIT_LATENTS;

    /* 1. inputs as 8-bit images at the working size */
    if (p->image) {
        if ((rc = sdb_image_to_rgb(p->image, &image, err))) goto done;
        if (p->mask) {
            /* the mask is resized in its own mode (L or RGB) before going grayscale, as Pillow does */
            if (p->mask->c == 4 || p->mask->c == 2) { if ((rc = sdb_image_to_rgb(p->mask, &orig_mask, err))) goto done; }
            else if ((rc = sdb_image_copy(p->mask, &orig_mask, err))) goto done;
            if (orig_mask.w != image.w || orig_mask.h != image.h) {
                sdb_logf(log, SDB_LOG_WARN, "mask is %dx%d but the image is %dx%d: resizing the mask (Lanczos), as diffusers does",
                         orig_mask.w, orig_mask.h, image.w, image.h);
                if (!p->width) {
                    sdb_image r = {0};
                    if ((rc = sdb_resize_lanczos(&orig_mask, image.w, image.h, &r, err))) goto done;
                    sdb_image_free(&orig_mask);
                    orig_mask = r;
                }
            }
        }
        /* mask_from_alpha, mask_dilate, mask_blur: the mask the model and the composite use */
        if (restore && inpaint && (rc = sdb_restore_prepare_mask(p, &image, &orig_mask, err))) goto done;
        if (crop_pad) {
            /* crop around the mask (grown by the margin, to the working aspect), then resize-and-fill */
            if ((rc = sdb_get_crop_region(&orig_mask, W, H, crop_pad, crop, err))) goto done;
            use_crop = 1;
            if ((rc = sdb_image_crop(&image, crop, &tmp, err))) goto done;
            if ((rc = resize_to(&tmp, W, H, 1, &work_img, err))) goto done;
            sdb_image_free(&tmp);
            if ((rc = sdb_image_crop(&orig_mask, crop, &tmp, err))) goto done;
            if ((rc = resize_to(&tmp, W, H, 1, &work_mask, err))) goto done;
            sdb_image_free(&tmp);
            trace(tr, "crops_coords", (const float[]){(float)crop[0], (float)crop[1], (float)crop[2], (float)crop[3]}, 4);
        } else if (p->width) {
            if ((rc = resize_to(&image, W, H, 0, &work_img, err))) goto done;
            if (inpaint && (rc = resize_to(&orig_mask, W, H, 0, &work_mask, err))) goto done;
        } else {
            outW = image.w; outH = image.h;
            if ((rc = pad_edges(&image, W, H, &work_img, err))) goto done;
            if (inpaint && (rc = pad_edges(&orig_mask, W, H, &work_mask, err))) goto done;
        }
        if (inpaint && work_mask.c != 1) {
            if ((rc = sdb_image_to_l(&work_mask, &tmp, err))) goto done;
            sdb_image_free(&work_mask);
            work_mask = tmp;
            memset(&tmp, 0, sizeof tmp);
        }
        if (mc == SDB_MC_FILL) {   /* A1111's masked content "fill", before anything is encoded */
            if ((rc = sdb_mask_fill(&work_img, &work_mask, &tmp, err))) goto done;
            sdb_image_free(&work_img);
            work_img = tmp;
            memset(&tmp, 0, sizeof tmp);
        }
    }

    /* scratch tensors */
    const int ctx_len = sdb_tokenizer_max_length(m->tok);
    const int hidden = sdb_clip_get_config(m->clip)->hidden_size;
    const int cin = m->unet_channels;
    float *ctx = sdb_arena_floats(&m->arena, (size_t)B * ctx_len * hidden);
    float *latents = sdb_arena_floats(&m->arena, nlat), *noise = sdb_arena_floats(&m->arena, nlat);
    float *image_latents = sdb_arena_floats(&m->arena, nlat);
    float *init_image = sdb_arena_floats(&m->arena, 3 * npix), *mask_cond = sdb_arena_floats(&m->arena, npix);
    float *mask_lat = sdb_arena_floats(&m->arena, (size_t)h * w);
    float *masked_lat = sdb_arena_floats(&m->arena, nlat);
    float *unet_in = sdb_arena_floats(&m->arena, (size_t)B * cin * h * w);
    float *unet_out = sdb_arena_floats(&m->arena, (size_t)B * 4 * h * w);
    float *guided = sdb_arena_floats(&m->arena, nlat);
    if (!ctx || !latents || !noise || !image_latents || !init_image || !mask_cond || !mask_lat ||
        !masked_lat || !unet_in || !unet_out || !guided) { rc = sdb_fail(err, SDB_ENOMEM, "out of scratch memory"); goto done; }
    size_t loop_mark = sdb_arena_mark(&m->arena);

    /* 2. encode_prompt: [uncond, cond] with classifier-free guidance, else cond alone */
    if (cfg) {
        if ((rc = encode_text(m, p->negative_prompt ? p->negative_prompt : "", ctx, tr, "uncond_input_ids", log, err))) goto done;
        if ((rc = encode_text(m, p->prompt, ctx + (size_t)ctx_len * hidden, tr, "prompt_input_ids", log, err))) goto done;
    } else if ((rc = encode_text(m, p->prompt, ctx, tr, "prompt_input_ids", log, err))) goto done;
    trace(tr, "prompt_embeds", ctx, (size_t)B * ctx_len * hidden);

    /* 3. scheduler.set_timesteps, then get_timesteps(strength) */
    if ((rc = sdb_sched_create(&sched, p->scheduler && p->scheduler[0] ? p->scheduler : NULL, &m->sched_cfg, err))) goto done;
    if (p->eta != 0.0 && (rc = sdb_sched_set_eta(sched, p->eta, err))) goto done;
    if ((rc = sdb_sched_set_timesteps(sched, p->steps, err))) goto done;
    int first = 0, remaining = sdb_sched_num_timesteps(sched);
    if ((p->image) && (rc = sdb_sched_strength(sched, p->strength, &first, &remaining, err))) goto done;
    const double *ts = sdb_sched_timesteps(sched);
    const int nts = sdb_sched_num_timesteps(sched);
    {
        float tsf[10001];
        for (int i = first; i < nts && i - first < 10001; i++) tsf[i - first] = (float)ts[i];
        trace(tr, "timesteps", tsf, (size_t)(nts - first));
    }

    sdb_rng rng;
    sdb_rng_seed(&rng, p->seed);
    const int strength_max = p->strength == 1.0;

    /* 4. preprocess the image (VaeImageProcessor.preprocess) */
    if (p->image) {
        image_to_tensor(&work_img, init_image);
        trace(tr, "init_image", init_image, 3 * npix);
    }

    /* 5. prepare_latents (draw order: image sample, then noise — as diffusers) */
    if (img2img) {
        if ((rc = encode_image_latents(m, init_image, H, W, image_latents, nlat, &rng, tr, "vae_encode/0", tiled, err))) goto done;
        sdb_rng_randn(&rng, noise, nlat);
        if ((rc = sdb_sched_add_noise(sched, image_latents, noise, latents, nlat, first, err))) goto done;
    } else if (inpaint) {
        if (legacy || !strength_max || mc) {
            if ((rc = encode_image_latents(m, init_image, H, W, image_latents, nlat, &rng, tr, "vae_encode/0", tiled, err))) goto done;
        }
        sdb_rng_randn(&rng, noise, nlat);
        if (mc) {
            /* masked_content: the image's latents (changed where the mask is), always noised to the
             * first timestep, as A1111's img2img start */
            mask_to_tensor(&work_mask, mask_cond);
            latent_mask(mask_cond, W, h, w, mask_lat);
            sdb_restore_start_latents(mc, image_latents, noise, mask_lat, h, w);
            trace(tr, "masked_content_latents", image_latents, nlat);
            if ((rc = sdb_sched_add_noise(sched, image_latents, noise, latents, nlat, first, err))) goto done;
        } else if (strength_max) {
            float s = sdb_sched_init_noise_sigma(sched);
            for (size_t i = 0; i < nlat; i++) latents[i] = noise[i] * s;
        } else if ((rc = sdb_sched_add_noise(sched, image_latents, noise, latents, nlat, first, err))) goto done;
    } else {
        sdb_rng_randn(&rng, noise, nlat);
        float s = sdb_sched_init_noise_sigma(sched);
        for (size_t i = 0; i < nlat; i++) latents[i] = noise[i] * s;
    }
    trace(tr, "initial_noise", noise, nlat);
    trace(tr, "initial_latents", latents, nlat);

    /* 6. mask, masked image and their latents (prepare_mask_latents) */
    if (inpaint) {
        mask_to_tensor(&work_mask, mask_cond);
        trace(tr, "mask_condition", mask_cond, npix);
        float *masked_image = sdb_arena_floats(&m->arena, 3 * npix);
        if (!masked_image) { rc = sdb_fail(err, SDB_ENOMEM, "out of scratch memory"); goto done; }
        for (int c = 0; c < 3; c++)
            for (size_t i = 0; i < npix; i++) masked_image[c * npix + i] = init_image[c * npix + i] * (mask_cond[i] < 0.5f ? 1.0f : 0.0f);
        trace(tr, "masked_image", masked_image, 3 * npix);
        latent_mask(mask_cond, W, h, w, mask_lat);
        trace(tr, "mask_latents", mask_lat, (size_t)h * w);
        rc = encode_image_latents(m, masked_image, H, W, masked_lat, nlat, &rng, tr, legacy || !strength_max || mc ? "vae_encode/1" : "vae_encode/0", tiled, err);
        sdb_arena_reset(&m->arena, loop_mark);
        if (rc) goto done;
        trace(tr, "masked_image_latents", masked_lat, nlat);
    }

    /* 7. the denoising loop */
    const float g = (float)p->guidance_scale;
    for (int i = first, k = 0; i < nts; i++, k++) {
        double tb[2] = {ts[i], ts[i]};
        /* latent_model_input = scale_model_input(cat([latents] * B), t), then + mask + masked latents */
        for (int b = 0; b < B; b++) {
            float *dst = unet_in + (size_t)b * cin * h * w;
            sdb_sched_scale_model_input(sched, latents, dst, nlat, i);
            if (cin == 9) {
                memcpy(dst + nlat, mask_lat, (size_t)h * w * sizeof(float));
                memcpy(dst + nlat + (size_t)h * w, masked_lat, nlat * sizeof(float));
            }
        }
        if (k < 2 || i == nts - 1) {
            char nm[64];
            snprintf(nm, sizeof nm, "step%d/unet_input", k);
            trace(tr, nm, unet_in, (size_t)B * cin * h * w);
        }
        if (B == 2 && split_cfg) {
            /* big latents: the unconditional and conditional halves one after the other, so the
             * U-Net's activations are held for one image at a time (half the scratch) */
            const size_t in1 = (size_t)cin * h * w, ctx1 = (size_t)ctx_len * hidden;
            for (int b = 0; b < 2 && !rc; b++)
                rc = sdb_unet_forward(m->unet, unet_in + b * in1, 1, h, w, tb, ctx + b * ctx1, ctx_len,
                                      unet_out + b * nlat, &m->arena, err);
        } else rc = sdb_unet_forward(m->unet, unet_in, B, h, w, tb, ctx, ctx_len, unet_out, &m->arena, err);
        if (rc) goto done;
        if (k < 2 || i == nts - 1) {
            char nm[64];
            snprintf(nm, sizeof nm, "step%d/unet_output", k);
            trace(tr, nm, unet_out, (size_t)B * 4 * h * w);
        }
        /* classifier-free guidance: uncond + g * (cond - uncond) */
        if (cfg) {
            const float *u = unet_out, *c = unet_out + nlat;
            for (size_t j = 0; j < nlat; j++) guided[j] = u[j] + g * (c[j] - u[j]);
        } else memcpy(guided, unet_out, nlat * sizeof(float));
        trace(tr, "steps/noise_pred", guided, nlat);
        if ((rc = sdb_sched_step(sched, guided, i, latents, latents, nlat, &rng, err))) goto done;
        trace(tr, "steps/prev_sample", latents, nlat);
        if (legacy) {
            /* re-blend the known region: (1 - mask) * add_noise(image_latents, noise, t_next) + mask * latents */
            float *proper = guided; /* free now */
            if (i < nts - 1) { if ((rc = sdb_sched_add_noise(sched, image_latents, noise, proper, nlat, i + 1, err))) goto done; }
            else memcpy(proper, image_latents, nlat * sizeof(float));
            for (int c = 0; c < 4; c++)
                for (size_t j = 0; j < (size_t)h * w; j++) {
                    float mk = mask_lat[j];
                    latents[c * h * w + j] = (1.0f - mk) * proper[c * h * w + j] + mk * latents[c * h * w + j];
                }
            trace(tr, "steps/latents_after", latents, nlat);
        }
        if (on_step && on_step(ud, k + 1, remaining)) {
            rc = sdb_fail(err, SDB_EINTERRUPTED, "interrupted at step %d of %d", k + 1, remaining);
            goto done;
        }
    }
    trace(tr, "final_latents", latents, nlat);

    /* 8. vae.decode(latents / scaling_factor), postprocess to 8-bit */
    {
        float *z = guided, *dec = sdb_arena_floats(&m->arena, 3 * npix);
        if (!dec) { rc = sdb_fail(err, SDB_ENOMEM, "out of scratch memory"); goto done; }
        float sf = sdb_vae_scaling_factor(m->vae);
        for (size_t j = 0; j < nlat; j++) z[j] = latents[j] / sf;
        trace(tr, "vae_decode_input", z, nlat);
        rc = tiled ? sdb_vae_decode_tiled(m->vae, z, h, w, dec, &m->arena, err)
                   : sdb_vae_decode(m->vae, z, h, w, dec, &m->arena, err);
        if (rc) goto done;
        trace(tr, "vae_decode_output", dec, 3 * npix);
        if ((rc = tensor_to_image(dec, W, H, &gen, err))) goto done;
    }

    /* 9. back to the caller's geometry */
    if (restore) {
        /* colour match, then the composite over the input (crop pasted back, or keep_unmasked) */
        if ((rc = sdb_restore_finish(p, &image, &orig_mask, &work_img, use_crop ? crop : NULL, &gen, out, err))) goto done;
        if (!out->px) {
            if (outW != W || outH != H) { if ((rc = crop_to(&gen, outW, outH, out, err))) goto done; }
            else { *out = gen; memset(&gen, 0, sizeof gen); }
        }
    } else if (use_crop) {
        if ((rc = sdb_apply_overlay(&orig_mask, &image, &gen, crop, out, err))) goto done;
    } else if (outW != W || outH != H) {
        if ((rc = crop_to(&gen, outW, outH, out, err))) goto done;
    } else {
        *out = gen;
        memset(&gen, 0, sizeof gen);
    }

    /* an RGBA input keeps its alpha (unless the alpha was the mask) */
    if (p->image && p->image->c == 4 && !p->restore.mask_from_alpha && (rc = sdb_restore_alpha(p->image, out, err))) goto done;

done:
    sdb_logf(log, SDB_LOG_DEBUG, "scratch high-water mark %.1f MiB (working size %dx%d)", (double)m->arena.peak / (1 << 20), W, H);
    if (sched) sdb_sched_free(sched);
    sdb_image_free(&image); sdb_image_free(&mask); sdb_image_free(&tmp); sdb_image_free(&gen);
    sdb_image_free(&work_img); sdb_image_free(&work_mask); sdb_image_free(&orig_mask);
    sdb_arena_reset(&m->arena, arena_mark);
    if (rc) sdb_image_free(out);
    return rc;
}

int sdb_generate(sdb_model *m, const sdb_gen_params *p, sdb_step_fn on_step, void *ud,
                 sdb_image *out, const sdb_log *log, sdb_err *err)
{
    return sdb_generate_ex(m, p, on_step, ud, NULL, NULL, out, log, err);
}

char *sdb_gen_params_a1111(sdb_model *m, const sdb_gen_params *p, int width, int height)
{
    const char *sampler = "PNDM";
    sdb_sched *s = NULL;
    if (sdb_sched_create(&s, p->scheduler && p->scheduler[0] ? p->scheduler : NULL, &m->sched_cfg, NULL) == 0) {
        sampler = sdb_sched_a1111_name(s);
    }
    char extra[512] = "";
    int eo = 0;
    if (p->image && p->strength != 1.0) eo += snprintf(extra + eo, sizeof extra - (size_t)eo, ", Denoising strength: %g", p->strength);
    /* issue 17's options, with A1111's infotext names where it has them */
    const sdb_restore_opts *r = &p->restore;
    if (r->mask_blur) eo += snprintf(extra + eo, sizeof extra - (size_t)eo, ", Mask blur: %d", r->mask_blur);
    if (r->mask_dilate) eo += snprintf(extra + eo, sizeof extra - (size_t)eo, ", Mask dilate: %d", r->mask_dilate);
    if (r->masked_content) {
        static const char *const a1111_mc[] = {"", "original", "fill", "latent noise", "latent nothing"};
        eo += snprintf(extra + eo, sizeof extra - (size_t)eo, ", Masked content: %s", a1111_mc[r->masked_content]);
    }
    if (r->inpaint_area == SDB_AREA_MASKED)
        eo += snprintf(extra + eo, sizeof extra - (size_t)eo, ", Inpaint area: Only masked, Masked area padding: %d",
                       p->padding_mask_crop ? p->padding_mask_crop : SDB_ONLY_MASKED_PADDING_DEFAULT);
    if (r->only_masked_size) eo += snprintf(extra + eo, sizeof extra - (size_t)eo, ", Only masked size: %d", r->only_masked_size);
    if (r->color_match) eo += snprintf(extra + eo, sizeof extra - (size_t)eo, ", Color correction: True");
    if (r->keep_unmasked) eo += snprintf(extra + eo, sizeof extra - (size_t)eo, ", Keep unmasked: True");
    if (r->mask_from_alpha) eo += snprintf(extra + eo, sizeof extra - (size_t)eo, ", Mask: alpha");
    size_t n = strlen(p->prompt) + (p->negative_prompt ? strlen(p->negative_prompt) : 0) + 1536;
    char *txt = malloc(n);
    if (txt) {
        int o = snprintf(txt, n, "%s\n", p->prompt);
        if (p->negative_prompt && p->negative_prompt[0]) o += snprintf(txt + o, n - (size_t)o, "Negative prompt: %s\n", p->negative_prompt);
        o += snprintf(txt + o, n - (size_t)o, "Steps: %d, Sampler: %s, CFG scale: %g, Seed: %llu, Size: %dx%d, Model hash: %s",
                      p->steps, sampler, p->guidance_scale, (unsigned long long)p->seed, width, height,
                      sdb_model_short_hash(m));
        const char *vh = sdb_model_vae_short_hash(m);
        if (vh) { /* A1111: "VAE hash: <sha256[:10]>, VAE: <file name>" */
            const char *vp = sdb_model_vae_path(m), *slash = strrchr(vp, '/');
            char name[256];
            snprintf(name, sizeof name, "%s", slash && slash[1] ? slash + 1 : vp);
            for (char *c = name; *c; c++) if (*c == ',' || *c == '\n') *c = '_'; /* keep the list parseable */
            o += snprintf(txt + o, n - (size_t)o, ", VAE hash: %s, VAE: %s", vh, name);
        }
        snprintf(txt + o, n - (size_t)o, "%s", extra);
    }
    if (s) sdb_sched_free(s);
    /* sdbatch's own keys (issue 17: what `generate --from` needs beyond A1111's) */
    char v[64];
    if (txt && p->eta != 0.0) { snprintf(v, sizeof v, "%.17g", p->eta); txt = sdb_a1111_append(txt, "Eta DDIM", v); }
    if (txt && p->padding_mask_crop) { snprintf(v, sizeof v, "%d", p->padding_mask_crop); txt = sdb_a1111_append(txt, "Padding mask crop", v); }
    if (txt && p->width) { snprintf(v, sizeof v, "%dx%d", p->width, p->height); txt = sdb_a1111_append(txt, "Working size", v); }
    if (txt && p->vae_tiling != SDB_VAE_TILING_AUTO) txt = sdb_a1111_append(txt, "VAE tiling", sdb_vae_tiling_name(p->vae_tiling));
    return txt;
}

/* ---- memory a generation needs (see pipeline.h) ------------------------------------------------ */

void sdb_gen_memory_estimate(const sdb_model *m, const sdb_gen_params *p, int input_w, int input_h,
                             double *weights_mib, double *scratch_mib, int *W, int *H)
{
    int w = p->width, h = p->height;
    if (!w) {   /* as sdb_generate sizes it */
        if (input_w > 0 && !p->padding_mask_crop) { w = (input_w + 7) / 8 * 8; h = (input_h + 7) / 8 * 8; }
        else w = h = sdb_unet_sample_size(m->unet) * 8;
    }
    const sdb_vae_config *vc = sdb_vae_get_config(m->vae);
    double c1 = vc->n_blocks > 1 ? vc->block_out_channels[1] : vc->block_out_channels[0];
    double floats_per_pixel = 2.0 * c1 + 512.0;
    *W = w;
    *H = h;
    *weights_mib = (double)(m->w_unet.bytes + m->w_vae.bytes + m->w_text.bytes) / (1 << 20) +
                   (double)m->keep_filters / (1 << 20);
    *scratch_mib = floats_per_pixel * 4.0 * w * h / (1 << 20) + SDB_GEN_FIXED_MIB;
}

/* A whole number (the entire value) in [lo, hi]. */
static int a1111_int(const sdb_a1111_params *a, const char *key, long long lo, long long hi, long long *out, int *found, sdb_err *err)
{
    const char *v = sdb_a1111_get(a, key);
    *found = v != NULL;
    if (!v) return 0;
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (end == v || *end || errno || x < lo || x > hi)
        return sdb_fail(err, SDB_EFORMAT, "parameters: '%s: %s' is not a whole number in %lld..%lld", key, v, lo, hi);
    *out = x;
    return 0;
}

static int a1111_num(const sdb_a1111_params *a, const char *key, double *out, int *found, sdb_err *err)
{
    const char *v = sdb_a1111_get(a, key);
    *found = v != NULL;
    if (!v) return 0;
    char *end;
    double x = strtod(v, &end);
    if (end == v || *end || !isfinite(x)) return sdb_fail(err, SDB_EFORMAT, "parameters: '%s: %s' is not a number", key, v);
    *out = x;
    return 0;
}

int sdb_gen_params_from_a1111(sdb_model *m, const sdb_a1111_params *a, sdb_gen_params *p, sdb_err *err)
{
    long long iv = 0;
    double dv = 0;
    int f, rc;
    p->prompt = a->prompt;
    p->negative_prompt = a->negative_prompt;
    if ((rc = a1111_int(a, "Seed", 0, INT64_MAX, &iv, &f, err))) return rc;
    if (f) p->seed = (uint64_t)iv;
    if ((rc = a1111_int(a, "Steps", 1, 10000, &iv, &f, err))) return rc;
    if (f) p->steps = (int)iv;
    if ((rc = a1111_num(a, "CFG scale", &dv, &f, err))) return rc;
    if (f) p->guidance_scale = dv;
    if ((rc = a1111_num(a, "Denoising strength", &dv, &f, err))) return rc;
    if (f) p->strength = dv;
    if ((rc = a1111_num(a, "Eta DDIM", &dv, &f, err))) return rc;
    if (f) p->eta = dv;
    if ((rc = a1111_int(a, "Padding mask crop", 0, 100000, &iv, &f, err))) return rc;
    if (f) p->padding_mask_crop = (int)iv;
    const char *v;
    int w, h;
    if ((v = sdb_a1111_get(a, "Working size")) || (!p->image && (v = sdb_a1111_get(a, "Size")))) {
        if (sdb_a1111_size(v, &w, &h)) return sdb_fail(err, SDB_EFORMAT, "parameters: size '%s' is not WIDTHxHEIGHT", v);
        p->width = w;
        p->height = h;
    }
    /* issue 17's restoration options, as sdb_gen_params_a1111 writes them (A1111's names) */
    sdb_restore_opts *r = &p->restore;
    if ((rc = a1111_int(a, "Mask blur", 0, 256, &iv, &f, err))) return rc;
    if (f) r->mask_blur = (int)iv;
    if ((rc = a1111_int(a, "Mask dilate", 0, 1024, &iv, &f, err))) return rc;
    if (f) r->mask_dilate = (int)iv;
    if ((rc = a1111_int(a, "Only masked size", 0, 8192, &iv, &f, err))) return rc;
    if (f) r->only_masked_size = (int)iv;
    if ((v = sdb_a1111_get(a, "Masked content"))) { /* "latent noise" -> latent_noise */
        char name[32];
        snprintf(name, sizeof name, "%s", v);
        for (char *q = name; *q; q++) if (*q == ' ') *q = '_';
        int mc = sdb_masked_content_parse(name);
        if (mc < 0) return sdb_fail(err, SDB_EFORMAT, "parameters: 'Masked content: %s' is not original, fill, latent noise or latent nothing", v);
        r->masked_content = (sdb_masked_content)mc;
    }
    if ((v = sdb_a1111_get(a, "Inpaint area"))) {
        if (!strcmp(v, "Only masked")) r->inpaint_area = SDB_AREA_MASKED;
        else if (!strcmp(v, "Whole picture")) r->inpaint_area = SDB_AREA_WHOLE;
        else return sdb_fail(err, SDB_EFORMAT, "parameters: 'Inpaint area: %s' is not Only masked or Whole picture", v);
        /* the crop's padding, unless sdbatch's own key gave it */
        if ((rc = a1111_int(a, "Masked area padding", 0, 100000, &iv, &f, err))) return rc;
        if (f && r->inpaint_area == SDB_AREA_MASKED && !sdb_a1111_get(a, "Padding mask crop") &&
            iv != SDB_ONLY_MASKED_PADDING_DEFAULT)
            p->padding_mask_crop = (int)iv;
    }
    static const char *const flags[3] = {"Color correction", "Keep unmasked", "Mask"};
    int *const flag_of[3] = {&r->color_match, &r->keep_unmasked, &r->mask_from_alpha};
    static const char *const flag_on[3] = {"True", "True", "alpha"};
    for (int i = 0; i < 3; i++)
        if ((v = sdb_a1111_get(a, flags[i]))) {
            if (strcmp(v, flag_on[i]) && strcmp(v, "False"))
                return sdb_fail(err, SDB_EFORMAT, "parameters: '%s: %s' is not %s", flags[i], v, flag_on[i]);
            *flag_of[i] = !strcmp(v, flag_on[i]);
        }
    if ((v = sdb_a1111_get(a, "VAE tiling"))) {
        if ((p->vae_tiling = sdb_vae_tiling_parse(v)) < 0)
            return sdb_fail(err, SDB_EFORMAT, "parameters: 'VAE tiling: %s' is not auto, on or off", v);
    }
    if (!p->scheduler && (v = sdb_a1111_get(a, "Sampler"))) {
        const char *name = sdb_sched_name_from_a1111(v);
        if (!name) return sdb_fail(err, SDB_EUNSUPPORTED, "parameters: sampler '%s' is not one sdbatch has (give --scheduler)", v);
        /* the model's own scheduler when it is that one (its config, e.g. Karras sigmas, kept) */
        sdb_sched *s = NULL;
        p->scheduler = name;
        if (sdb_sched_create(&s, NULL, &m->sched_cfg, NULL) == 0) {
            if (!strcmp(sdb_sched_a1111_name(s), v)) p->scheduler = NULL;
            sdb_sched_free(s);
        }
    }
    return 0;
}
