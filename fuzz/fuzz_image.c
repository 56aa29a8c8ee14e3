/*
 * fuzz_image.c — libFuzzer harness: PNG and JPEG decoding (sdb_image_load_memory, the format
 * picked by the magic bytes as for a file) in the file's own layout, then what the pipeline does
 * with a decoded input: conversion to RGB and L, diffusers' resize_and_fill / resize_and_crop
 * (Pillow's LANCZOS and BICUBIC), the mask's crop region and the overlay. The decode limit is
 * 16384 pixels (128 x 128) here; the limit itself, and images of every size, are tested in
 * test_limits.c and test_resize.c. A bigger image is refused from its header, before decoding,
 * as a larger one is by the product's limit, so one input costs well under a millisecond under
 * the sanitizers (at 1 megapixel, up to 100 ms: 57 inputs/s). Output sizes come from the decoded
 * size so every branch of the resize runs.
 */
#include "sdb/image.h"
#include "sdb/resize.h"

#include "fuzz_util.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_MAX_PIXELS (1L << 14)

static int one_input(const uint8_t *in, size_t size)
{
    sdb_image im, rgb, l, a, b;
    sdb_err err = {0};
    if (sdb_image_load_memory(in, size, "fuzz.img", &im, 0, FUZZ_MAX_PIXELS, &err) != 0) {
        FUZZ_CHECK(err.code != 0 && err.msg[0] && im.px == NULL);
        return 0;
    }
    FUZZ_CHECK(im.w > 0 && im.h > 0 && (long)im.w * im.h <= FUZZ_MAX_PIXELS);
    FUZZ_CHECK(im.c == 1 || im.c == 3 || im.c == 4);
    if (sdb_image_to_rgb(&im, &rgb, &err) == 0 && sdb_image_to_l(&im, &l, &err) == 0) {
        /* sizes from the image: up and down, both aspect ratios, never 0 */
        int w1 = 8 + (im.w * 7) % 57, h1 = 8 + (im.h * 5) % 61;
        if (sdb_resize_and_fill(&rgb, w1, h1, &a, &err) == 0) sdb_image_free(&a);
        if (sdb_resize_and_crop(&im, h1, w1, &a, &err) == 0) sdb_image_free(&a);
        const float box[4] = {0.5f, 0.25f, (float)im.w - 0.5f, (float)im.h};
        if (sdb_resize(&im, w1 + 3, h1, SDB_FILTER_BICUBIC, box, &a, &err) == 0) sdb_image_free(&a);
        int crop[4];
        if (sdb_get_crop_region(&l, 64, 48, im.w % 9, crop, &err) == 0) {
            FUZZ_CHECK(crop[0] >= 0 && crop[1] >= 0 && crop[2] <= im.w && crop[3] <= im.h);
            FUZZ_CHECK(crop[0] < crop[2] && crop[1] < crop[3]);
            if (sdb_resize_lanczos(&rgb, 16, 8, &a, &err) == 0) {
                if (sdb_apply_overlay(&l, &im, &a, crop, &b, &err) == 0) sdb_image_free(&b);
                sdb_image_free(&a);
            }
        }
    }
    sdb_image_free(&rgb);
    sdb_image_free(&l);
    sdb_image_free(&im);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_png_run(data, size, one_input); }
