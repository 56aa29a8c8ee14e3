/*
 * image_internal.h — private to src/io/{image,png,jpeg}.c: the format decoders. Each decodes
 * into the "keep" layout documented for want_channels = 0 in sdb/image.h, checks max_pixels
 * before allocating pixels, and names `name` in every error. Also two Pillow integer helpers
 * shared with resize.c.
 */
#ifndef SDB_IMAGE_INTERNAL_H
#define SDB_IMAGE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include "sdb/error.h"
#include "sdb/image.h"

int sdb_png_decode_raw(const uint8_t *buf, size_t n, const char *name, sdb_image *out,
                       long max_pixels, int flags, sdb_err *err);
int sdb_jpeg_decode_raw(const uint8_t *buf, size_t n, const char *name, sdb_image *out,
                        long max_pixels, sdb_err *err);

/* Pillow's MULDIV255 (a * b / 255, rounded) and an 8-bit clamp. */
static inline int sdb_muldiv255(int a, int b)
{
    int t = a * b + 128;
    return ((t >> 8) + t) >> 8;
}

static inline uint8_t sdb_clip8(int v) { return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v); }

#endif
