/*
 * restore_internal.h — the restoration steps pipeline.c calls (src/pipeline/restore.c; not public).
 */
#ifndef SDB_RESTORE_INTERNAL_H
#define SDB_RESTORE_INTERNAL_H

#include "sdb/pipeline.h"

/* The options' own checks (and their combinations with the diffusers parameters). */
int sdb_restore_check(const sdb_gen_params *p, sdb_err *err);
/* The padding of the crop around the mask (0: no crop). */
int sdb_restore_crop_padding(const sdb_gen_params *p);
/* In place: the mask from the alpha (mask_from_alpha), then grayscale at image's size, dilated, blurred. */
int sdb_restore_prepare_mask(const sdb_gen_params *p, const sdb_image *image, sdb_image *mask, sdb_err *err);
/* In place: latent_noise / latent_nothing in the latents whose mask_lat is 1. */
void sdb_restore_start_latents(sdb_masked_content mc, float *image_latents, const float *noise,
                               const float *mask_lat, int h, int w);
/* Colour match of *gen (working size; to color_ref), then the composite over image (RGB, the
 * input's size) by mask: pasted into crop when crop != NULL, else (keep_unmasked) at the input's
 * size. *out stays empty when there is nothing to composite (gen is then the result). */
int sdb_restore_finish(const sdb_gen_params *p, const sdb_image *image, const sdb_image *mask,
                       const sdb_image *color_ref, const int *crop, sdb_image *gen, sdb_image *out, sdb_err *err);
/* out (RGB) becomes RGBA with input's alpha (resized to out's size when they differ). */
int sdb_restore_alpha(const sdb_image *input, sdb_image *out, sdb_err *err);

#endif
