/*
 * resize.h — Pillow's resampling and the image helpers of diffusers' VaeImageProcessor, bit-exact.
 *
 * sdb_resize reproduces PIL.Image.resize(size, filter, box) for 8-bit images (Resample.c):
 * separable, per output index center = in0 + (i + 0.5) * scale, support = filter_support *
 * max(scale, 1), taps int(center - support + 0.5) .. int(center + support + 0.5) clamped to the
 * image, weights filter((j - center + 0.5) / max(scale, 1)) normalised in double, rounded to 22-bit
 * fixed point (away from zero); accumulate from 2^21, >> 22, clip to 0..255. The horizontal pass
 * runs first (stored as 8-bit), then the vertical one; a pass whose size and box are the identity
 * is skipped; with nothing to do the result is a copy. No reducing_gap (diffusers passes none).
 * RGBA inputs go through Pillow's premultiplied path (RGBA -> RGBa, resize, RGBa -> RGBA).
 *
 * The diffusers functions are pure image functions; which ones run in which order is the
 * pipeline's business. They keep the input's channel count (diffusers pastes into an RGB canvas;
 * for an L input converting that canvas back to L gives exactly these L values).
 */
#ifndef SDB_RESIZE_H
#define SDB_RESIZE_H

#include "sdb/error.h"
#include "sdb/image.h"

typedef enum {
    SDB_FILTER_BOX,      /* Image.BOX */
    SDB_FILTER_BILINEAR, /* Image.BILINEAR */
    SDB_FILTER_HAMMING,  /* Image.HAMMING */
    SDB_FILTER_BICUBIC,  /* Image.BICUBIC (a = -0.5): Pillow's default for resize() */
    SDB_FILTER_LANCZOS   /* Image.LANCZOS (a = 3): diffusers' "lanczos" */
} sdb_filter;

/* PIL.Image.resize((w, h), filter, box): box = {x0, y0, x1, y1} in source pixels (floats, as
 * Pillow; NULL = the whole image). Box rules as Pillow: 0 <= x0 <= x1 <= in->w (same for y);
 * an empty box (x0 == x1) is allowed and samples around that edge. */
int sdb_resize(const sdb_image *in, int w, int h, sdb_filter filter, const float *box,
               sdb_image *out, sdb_err *err);
/* image.resize((w, h), resample=Image.LANCZOS) */
int sdb_resize_lanczos(const sdb_image *in, int w, int h, sdb_image *out, sdb_err *err);

/* PIL crop((x0, y0, x1, y1)): pixels outside the image are 0. */
int sdb_image_crop(const sdb_image *in, const int box[4], sdb_image *out, sdb_err *err);

/* VaeImageProcessor._resize_and_fill (diffusers 0.30.3): resize keeping the aspect ratio so the
 * image covers w or h exactly (LANCZOS), center it on a black w x h canvas, then fill the two
 * uncovered bands with the edge rows/columns stretched by Pillow's default BICUBIC resize of a
 * zero-height/width box (not a plain copy: 1.125 * edge - 0.125 * next). An odd leftover line
 * stays black, as in diffusers. */
int sdb_resize_and_fill(const sdb_image *in, int w, int h, sdb_image *out, sdb_err *err);
/* VaeImageProcessor._resize_and_crop: resize keeping the aspect ratio so the image covers the
 * w x h canvas (LANCZOS), centered, the overflow cropped. */
int sdb_resize_and_crop(const sdb_image *in, int w, int h, sdb_image *out, sdb_err *err);

/* VaeImageProcessor.get_crop_region(mask, width, height, pad): bounding box of the non-zero
 * pixels of the mask (converted to L if it is RGB/RGBA), grown by pad, then grown to the aspect
 * ratio width/height and clamped into the mask. crop = {x1, y1, x2, y2} (x2, y2 exclusive).
 * An all-zero mask is an error (diffusers divides by zero). */
int sdb_get_crop_region(const sdb_image *mask, int width, int height, int pad, int crop[4], sdb_err *err);

/* VaeImageProcessor.apply_overlay (diffusers >= 0.32): with crop (may be NULL = no crop), `image`
 * is resized with _resize_and_crop to the crop box size and pasted at (x1, y1) on a black canvas
 * of init's size; then `init` premultiplied ("RGBa") with alpha = 255 - mask (paste through the
 * inverted mask) is alpha-composited over it with Pillow's integer arithmetic. mask: L (RGB/RGBA
 * converted to L), same size as init. init: L/RGB/RGBA. image: L/RGB (same size as init when
 * crop is NULL). out: RGB, init's size. */
int sdb_apply_overlay(const sdb_image *mask, const sdb_image *init, const sdb_image *image,
                      const int *crop, sdb_image *out, sdb_err *err);

#endif
