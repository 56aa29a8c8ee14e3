/*
 * restore.c — the pipeline's restoration steps (issue 17; see sdb_restore_opts in pipeline.h):
 * preparing the mask (alpha, grayscale at the image's size, dilation, blur), the masked-content
 * start latents, and the finish (colour match, composite over the input at its own size, alpha).
 * The image operations themselves live in the io layer (sdb/mask.h, sdb/color.h); this file owns
 * only the order in which a generation applies them. pipeline.c calls these only when an option is
 * set, so the defaults stay diffusers' pipeline exactly.
 */
#include "pipeline_internal.h"
#include "restore_internal.h"

#include "sdb/color.h"
#include "sdb/mask.h"
#include "sdb/resize.h"

#include <assert.h>
#include <string.h>

static const char *const mc_names[] = {NULL, "original", "fill", "latent_noise", "latent_nothing"};
static const char *const area_names[] = {NULL, "whole", "masked"};

int sdb_masked_content_parse(const char *name)
{
    for (int i = 1; i < 5; i++) if (name && !strcmp(name, mc_names[i])) return i;
    return -1;
}
const char *sdb_masked_content_name(sdb_masked_content mc) { return mc >= 0 && mc < 5 ? mc_names[mc] : NULL; }
int sdb_inpaint_area_parse(const char *name)
{
    for (int i = 1; i < 3; i++) if (name && !strcmp(name, area_names[i])) return i;
    return -1;
}
const char *sdb_inpaint_area_name(sdb_inpaint_area a) { return a >= 0 && a < 3 ? area_names[a] : NULL; }

int sdb_restore_active(const sdb_restore_opts *r)
{
    return r->keep_unmasked || r->mask_blur || r->mask_dilate || r->masked_content || r->color_match ||
           r->inpaint_area || r->only_masked_size || r->mask_from_alpha;
}

int sdb_restore_check(const sdb_gen_params *p, sdb_err *err)
{
    const sdb_restore_opts *r = &p->restore;
    int has_mask = p->mask || r->mask_from_alpha;
    if (r->mask_blur < 0 || r->mask_blur > 256) return sdb_fail(err, SDB_EINVAL, "mask_blur: must be 0..256, got %d", r->mask_blur);
    if (r->mask_dilate < 0 || r->mask_dilate > 1024) return sdb_fail(err, SDB_EINVAL, "mask_dilate: must be 0..1024, got %d", r->mask_dilate);
    if (r->masked_content < 0 || r->masked_content > SDB_MC_LATENT_NOTHING) return sdb_fail(err, SDB_EINVAL, "masked_content: unknown value");
    if (r->inpaint_area < 0 || r->inpaint_area > SDB_AREA_MASKED) return sdb_fail(err, SDB_EINVAL, "inpaint_area: unknown value");
    if (r->mask_from_alpha && p->mask) return sdb_fail(err, SDB_EINVAL, "mask: alpha takes the mask from the image: give no mask image");
    if (r->mask_from_alpha && (!p->image || p->image->c != 4))
        return sdb_fail(err, SDB_EINVAL, "mask: alpha needs an image with an alpha channel (RGBA or gray+alpha PNG)");
    if (!has_mask && (r->keep_unmasked || r->mask_blur || r->mask_dilate || r->masked_content || r->inpaint_area == SDB_AREA_MASKED))
        return sdb_fail(err, SDB_EINVAL, "keep_unmasked, mask_blur, mask_dilate, masked_content and inpaint_area: masked need a mask");
    if (r->color_match && !p->image) return sdb_fail(err, SDB_EINVAL, "color_match: needs an image");
    if (r->inpaint_area == SDB_AREA_WHOLE && p->padding_mask_crop)
        return sdb_fail(err, SDB_EINVAL, "padding_mask_crop: the crop's padding; it needs inpaint_area: masked (not whole)");
    int masked = r->inpaint_area == SDB_AREA_MASKED || (r->inpaint_area == SDB_AREA_NONE && p->padding_mask_crop);
    if (r->only_masked_size && !masked) return sdb_fail(err, SDB_EINVAL, "only_masked_size: needs inpaint_area: masked");
    if (r->only_masked_size && (r->only_masked_size < 64 || r->only_masked_size > 4096 || r->only_masked_size % 8))
        return sdb_fail(err, SDB_EINVAL, "only_masked_size: must be a multiple of 8 in 64..4096, got %d", r->only_masked_size);
    if (r->only_masked_size && p->width) return sdb_fail(err, SDB_EINVAL, "only_masked_size and width/height: give one of them");
    return 0;
}

int sdb_restore_crop_padding(const sdb_gen_params *p)
{
    if (p->restore.inpaint_area == SDB_AREA_WHOLE) return 0;
    if (p->padding_mask_crop) return p->padding_mask_crop;
    return p->restore.inpaint_area == SDB_AREA_MASKED ? SDB_ONLY_MASKED_PADDING_DEFAULT : 0;
}

int sdb_restore_prepare_mask(const sdb_gen_params *p, const sdb_image *image, sdb_image *mask, sdb_err *err)
{
    const sdb_restore_opts *r = &p->restore;
    sdb_image t = {0};
    int rc = 0;
    if (r->mask_from_alpha) {
        sdb_image_free(mask);
        if ((rc = sdb_mask_from_alpha(p->image, mask, err))) return rc;
    }
    if (!r->mask_blur && !r->mask_dilate) return 0;
    /* grayscale, at the image's own size (the blur and dilation are in the image's pixels) */
    if (mask->c != 1) {
        if ((rc = sdb_image_to_l(mask, &t, err))) return rc;
        sdb_image_free(mask);
        *mask = t;
        memset(&t, 0, sizeof t);
    }
    if (mask->w != image->w || mask->h != image->h) {
        if ((rc = sdb_resize_lanczos(mask, image->w, image->h, &t, err))) return rc;
        sdb_image_free(mask);
        *mask = t;
        memset(&t, 0, sizeof t);
    }
    if (r->mask_dilate) {
        if ((rc = sdb_mask_dilate(mask, r->mask_dilate, &t, err))) return rc;
        sdb_image_free(mask);
        *mask = t;
        memset(&t, 0, sizeof t);
    }
    if (r->mask_blur) {
        if ((rc = sdb_mask_blur(mask, r->mask_blur, &t, err))) return rc;
        sdb_image_free(mask);
        *mask = t;
    }
    return 0;
}

void sdb_restore_start_latents(sdb_masked_content mc, float *image_latents, const float *noise,
                               const float *mask_lat, int h, int w)
{
    size_t hw = (size_t)h * w;
    if (mc != SDB_MC_LATENT_NOISE && mc != SDB_MC_LATENT_NOTHING) return;
    for (int c = 0; c < 4; c++)
        for (size_t j = 0; j < hw; j++) {
            if (mask_lat[j] < 0.5f) continue;
            image_latents[c * hw + j] = mc == SDB_MC_LATENT_NOISE ? noise[c * hw + j] : 0.0f;
        }
}

int sdb_restore_finish(const sdb_gen_params *p, const sdb_image *image, const sdb_image *mask,
                       const sdb_image *color_ref, const int *crop, sdb_image *gen, sdb_image *out, sdb_err *err)
{
    const sdb_restore_opts *r = &p->restore;
    sdb_image t = {0}, full = {0}, m = {0};
    int rc = 0;
    memset(out, 0, sizeof *out);
    if (r->color_match) {   /* before the composite, on the working-size image, as A1111 */
        if ((rc = sdb_color_correct(gen, color_ref, 0, &t, err))) goto done;
        sdb_image_free(gen);
        *gen = t;
        memset(&t, 0, sizeof t);
    }
    if (crop) {
        /* A1111's "only masked" paste-back: the output resized (cover + crop) to the crop box,
         * pasted over the input, then blended by the mask (which is zero outside the box) */
        int cw = crop[2] - crop[0], ch = crop[3] - crop[1];
        assert(cw > 0 && ch > 0);
        if ((rc = sdb_resize_and_crop(gen, cw, ch, &t, err))) goto done;
        if ((rc = sdb_image_copy(image, &full, err))) goto done;
        for (int y = 0; y < ch; y++)
            memcpy(full.px + ((size_t)(crop[1] + y) * full.w + crop[0]) * 3, t.px + (size_t)y * cw * 3, (size_t)cw * 3);
        if (mask->c != 1) { if ((rc = sdb_image_to_l(mask, &m, err))) goto done; }
        else if ((rc = sdb_image_copy(mask, &m, err))) goto done;
        rc = sdb_mask_composite(image, &full, &m, out, err);
    } else if (r->keep_unmasked) {
        /* the output at the input's own size (cropped back from the padding, or resized back) */
        if (!p->width) {   /* padded to multiples of 8: the top-left is the input's area */
            assert(gen->w >= image->w && gen->h >= image->h);
            if ((rc = sdb_image_alloc(&full, image->w, image->h, 3, err))) goto done;
            for (int y = 0; y < image->h; y++)
                memcpy(full.px + (size_t)y * image->w * 3, gen->px + (size_t)y * gen->w * 3, (size_t)image->w * 3);
        } else if ((rc = sdb_resize_lanczos(gen, image->w, image->h, &full, err))) goto done;
        if (mask->c != 1) { if ((rc = sdb_image_to_l(mask, &m, err))) goto done; }
        else if ((rc = sdb_image_copy(mask, &m, err))) goto done;
        if (m.w != image->w || m.h != image->h) {
            sdb_image rm = {0};
            if ((rc = sdb_resize_lanczos(&m, image->w, image->h, &rm, err))) goto done;
            sdb_image_free(&m);
            m = rm;
        }
        sdb_mask_double(&m);   /* A1111's whole-image overlay: clip(2 m) */
        rc = sdb_mask_composite(image, &full, &m, out, err);
    }
done:
    sdb_image_free(&t); sdb_image_free(&full); sdb_image_free(&m);
    if (rc) sdb_image_free(out);
    return rc;
}

int sdb_restore_alpha(const sdb_image *input, sdb_image *out, sdb_err *err)
{
    sdb_image a = {0}, t = {0};
    int rc;
    if (input->w != out->w || input->h != out->h) {
        if ((rc = sdb_resize_lanczos(input, out->w, out->h, &a, err))) return rc;
    } else if ((rc = sdb_image_copy(input, &a, err))) return rc;
    rc = sdb_image_with_alpha(out, &a, &t, err);
    sdb_image_free(&a);
    if (rc) return rc;
    sdb_image_free(out);
    *out = t;
    return 0;
}
