/*
 * mask.h — the restoration options' pure image operations on masks and their composites
 * (AUTOMATIC1111's semantics where it has them; see src/io/mask.c):
 *   dilation (a square max filter), A1111's "Mask blur" (a Gaussian, its kernel size and sigma
 *   from N), A1111's masked-content "fill" (the masked area painted with the colours around it),
 *   the mask-weighted composite of a generated image over the original, and alpha <-> mask.
 *
 * Masks are 8-bit L images (c = 1): 0 = keep, 255 = repaint. Images are 8-bit RGB unless said.
 * None of these allocate anything but their output, and all are independent of the thread count.
 */
#ifndef SDB_MASK_H
#define SDB_MASK_H

#include "sdb/error.h"
#include "sdb/image.h"

/* Grows the mask by n pixels: out(x, y) = max of the mask over the (2n+1) x (2n+1) square centred
 * on (x, y), clipped to the image (scipy's maximum_filter / cv2.dilate with a square kernel).
 * n = 0 copies. */
int sdb_mask_dilate(const sdb_image *mask, int n, sdb_image *out, sdb_err *err);

/* A1111's mask blur: kernel size 2 * int(2.5 * n + 0.5) + 1 and sigma n, run along x and then y
 * (cv2.GaussianBlur's weights exp(-d^2 / (2 sigma^2)), normalised; borders BORDER_REFLECT_101), in
 * double precision, rounded to 8 bits once at the end. n = 0 copies. */
int sdb_mask_blur_ksize(int n);
int sdb_mask_blur(const sdb_image *mask, int n, sdb_image *out, sdb_err *err);

/* A1111's masking.fill (masked_content: fill): the image with alpha 255 - mask is blurred at
 * radii 256, 64, 16 (twice), 4 (4 times), 2 (twice) and 0, each blur alpha-composited over the
 * previous result, so the masked area takes the colours around it. The blurs are Pillow's
 * GaussianBlur (three box blurs of the radius Pillow derives, edges extended), computed in
 * premultiplied floating point. Pixels whose mask is 0 come out unchanged. image: RGB; mask: L of
 * the same size. */
int sdb_mask_fill(const sdb_image *image, const sdb_image *mask, sdb_image *out, sdb_err *err);

/* out = orig where mask is 0 (bit-identical), gen where it is 255, and
 * (orig * (255 - m) + gen * m + 127) / 255 in between. orig and gen: same size and channel
 * count; mask: L of that size. */
int sdb_mask_composite(const sdb_image *orig, const sdb_image *gen, const sdb_image *mask,
                       sdb_image *out, sdb_err *err);

/* The mask that `mask: alpha` means: 255 - alpha of an RGBA image (transparent = repaint). */
int sdb_mask_from_alpha(const sdb_image *rgba, sdb_image *out, sdb_err *err);

/* min(2 * m, 255) of every mask value: A1111's overlay mask when the whole image is inpainted. */
void sdb_mask_double(sdb_image *mask);

/* An RGBA image from an RGB one and the alpha channel of `alpha_src` (RGBA, same size). */
int sdb_image_with_alpha(const sdb_image *rgb, const sdb_image *alpha_src, sdb_image *out, sdb_err *err);

#endif
