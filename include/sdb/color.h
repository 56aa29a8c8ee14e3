/*
 * color.h — AUTOMATIC1111's colour correction (the `color_match` option; see src/io/color.c):
 * the generated image's colours matched to a reference's, channel by channel in CIE LAB, then its
 * own luminosity put back.
 *
 * LAB here is OpenCV's 8-bit LAB (COLOR_RGB2LAB / COLOR_LAB2RGB on uint8): sRGB companding, D65
 * white, L scaled by 255/100, a and b offset by 128, each rounded to 8 bits.
 */
#ifndef SDB_COLOR_H
#define SDB_COLOR_H

#include <stdint.h>
#include "sdb/error.h"
#include "sdb/image.h"

/* One pixel each way. */
void sdb_rgb_to_lab8(const uint8_t rgb[3], uint8_t lab[3]);
void sdb_lab8_to_rgb(const uint8_t lab[3], uint8_t rgb[3]);

/* skimage.exposure.match_histograms of one 8-bit channel (stride `stride` bytes between values):
 * each value v of src becomes the reference value at v's quantile (np.interp of the cumulative
 * distributions), truncated to 8 bits as skimage's uint8 output is. In place. */
void sdb_match_histogram_u8(uint8_t *src, size_t n_src, size_t src_stride,
                            const uint8_t *ref, size_t n_ref, size_t ref_stride);

/* A1111's apply_color_correction: image (RGB) -> LAB, each LAB channel's histogram matched to
 * reference's (RGB, any size), back to RGB; then blended with the uncorrected image in
 * LUMINOSITY mode (W3C SetLum(corrected, Lum(image)), Lum = 0.3 R + 0.59 G + 0.11 B, with
 * ClipColor), rounded. lab_only: stop after the histogram matching (tests). */
int sdb_color_correct(const sdb_image *image, const sdb_image *reference, int lab_only,
                      sdb_image *out, sdb_err *err);

#endif
