/*
 * test_resize.c — Pillow's resize and diffusers' VaeImageProcessor helpers against the
 * padding_mask_crop pipeline reference (case i) and hand-checkable cases.
 */
#include "harness.h"
#include "sdb/image.h"
#include "sdb/resize.h"
#include "sdb/safetensors.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CASE_I "refs/pipeline/pipeline_i_inpaint_padding_mask_crop8.safetensors"

static const sdb_st_tensor *need(const sdb_st *st, const char *name)
{
    const sdb_st_tensor *t = sdb_st_find(st, name);
    CHECKF(t != NULL, "missing tensor %s", name);
    return t;
}

/* ---------------------------------------------------------------------------------------------- */
/* the pipeline reference                                                                          */

/* Loads case i's inputs (the 192x128 scene, RGB, and its mask, L) and opens its reference file;
 * returns 1 when all three are there (failures are recorded). The caller frees what it got. */
static int open_case_i(sdb_image *scene, sdb_image *mask, sdb_st **st)
{
    sdb_err err = {0};
    CHECK_OK(sdb_image_load(sdb_t_path("refs/pipeline/inputs/scene_192x128.png"), scene, 3, 0, &err), &err);
    CHECK_OK(sdb_image_load(sdb_t_path("refs/pipeline/inputs/smallmask_192x128.png"), mask, 1, 0, &err), &err);
    *st = NULL;
    CHECK_OK(sdb_st_open(st, sdb_t_path(CASE_I), &err), &err);
    return scene->px && mask->px && *st;
}

static void test_case_i_crop_region(void)
{
    sdb_err err = {0};
    sdb_image mask;
    CHECK_OK(sdb_image_load(sdb_t_path("refs/pipeline/inputs/smallmask_192x128.png"), &mask, 1, 0, &err), &err);
    if (!mask.px) return;
    int crop[4] = {0};
    CHECK_OK(sdb_get_crop_region(&mask, 128, 128, 8, crop, &err), &err);
    sdb_st *st = NULL;
    CHECK_OK(sdb_st_open(&st, sdb_t_path(CASE_I), &err), &err);
    if (st) {
        const sdb_st_tensor *t = need(st, "crops_coords");
        int64_t ref[4] = {0};
        if (t) CHECK_OK(sdb_st_to_i64(t, ref, &err), &err);
        fprintf(stderr, "crop region (%d, %d, %d, %d), reference (%lld, %lld, %lld, %lld)\n", crop[0], crop[1],
                crop[2], crop[3], (long long)ref[0], (long long)ref[1], (long long)ref[2], (long long)ref[3]);
        for (int i = 0; i < 4; i++) CHECK(crop[i] == ref[i]);
        sdb_st_close(st);
    }
    CHECK(crop[0] == 104 && crop[1] == 25 && crop[2] == 150 && crop[3] == 71); /* README table */
    sdb_image_free(&mask);
}

static void test_case_i_preprocess(void)
{
    sdb_err err = {0};
    sdb_image scene, mask;
    sdb_st *st;
    if (!open_case_i(&scene, &mask, &st)) goto out;
    int crop[4];
    CHECK_OK(sdb_get_crop_region(&mask, 128, 128, 8, crop, &err), &err);

    /* image: crop -> _resize_and_fill(128, 128) -> float32 /255 -> 2x-1 */
    sdb_image c_img, f_img, c_mask, f_mask;
    CHECK_OK(sdb_image_crop(&scene, crop, &c_img, &err), &err);
    CHECK_OK(sdb_resize_and_fill(&c_img, 128, 128, &f_img, &err), &err);
    CHECK_OK(sdb_image_crop(&mask, crop, &c_mask, &err), &err);
    CHECK_OK(sdb_resize_and_fill(&c_mask, 128, 128, &f_mask, &err), &err);
    const sdb_st_tensor *ti = need(st, "init_image"), *tm = need(st, "mask_condition");
    if (ti && f_img.px && ti->numel == 3 * 128 * 128) {
        float *ref = malloc(sizeof(float) * ti->numel);
        CHECK_OK(sdb_st_to_f32(ti, ref, &err), &err);
        size_t bad = 0;
        double maxd = 0;
        for (int ch = 0; ch < 3; ch++)
            for (int i = 0; i < 128 * 128; i++) {
                float x = (float)f_img.px[3 * i + ch] / 255.0f;
                float v = 2.0f * x - 1.0f;
                float r = ref[(size_t)ch * 128 * 128 + i];
                if (v != r) { bad++; if (fabs(v - r) > maxd) maxd = fabs(v - r); }
            }
        CHECKF(bad == 0, "init_image: %zu values differ (max %g = %.1f levels)", bad, maxd, maxd * 127.5);
        free(ref);
    }
    if (tm && f_mask.px && tm->numel == 128 * 128) {
        float *ref = malloc(sizeof(float) * tm->numel);
        CHECK_OK(sdb_st_to_f32(tm, ref, &err), &err);
        size_t bad = 0, ones = 0;
        for (int i = 0; i < 128 * 128; i++) {
            float x = (float)f_mask.px[i] / 255.0f;
            float v = x < 0.5f ? 0.0f : 1.0f;
            bad += v != ref[i];
            ones += v == 1.0f;
        }
        CHECKF(bad == 0, "mask_condition: %zu values differ", bad);
        fprintf(stderr, "mask_condition: %zu of %d pixels masked\n", ones, 128 * 128);
        free(ref);
    }
    sdb_image_free(&c_img); sdb_image_free(&f_img); sdb_image_free(&c_mask); sdb_image_free(&f_mask);
out:
    if (st) sdb_st_close(st);
    sdb_image_free(&scene);
    sdb_image_free(&mask);
}

static void test_case_i_overlay(void)
{
    sdb_err err = {0};
    sdb_image scene, mask;
    sdb_st *st;
    if (!open_case_i(&scene, &mask, &st)) goto out;
    const sdb_st_tensor *tc = need(st, "output_u8_crop"), *to = need(st, "output_u8"), *tcc = need(st, "crops_coords");
    if (!tc || !to || !tcc) goto out;
    CHECK(tc->nbytes == 128 * 128 * 3 && to->nbytes == 128 * 192 * 3);
    int64_t c64[4];
    CHECK_OK(sdb_st_to_i64(tcc, c64, &err), &err);
    int crop[4] = {(int)c64[0], (int)c64[1], (int)c64[2], (int)c64[3]};
    sdb_image gen = {128, 128, 3, (uint8_t *)tc->data}; /* borrowed, read-only */
    sdb_image outimg;
    CHECK_OK(sdb_apply_overlay(&mask, &scene, &gen, crop, &outimg, &err), &err);
    if (outimg.px) {
        CHECK(outimg.w == 192 && outimg.h == 128 && outimg.c == 3);
        size_t bad = 0;
        int maxd = 0;
        for (size_t i = 0; i < to->nbytes; i++) {
            int d = abs((int)outimg.px[i] - to->data[i]);
            bad += d != 0;
            if (d > maxd) maxd = d;
        }
        CHECKF(bad == 0, "apply_overlay: %zu values differ from output_u8 (max %d)", bad, maxd);
        /* and the reference PNG of that case */
        sdb_image png;
        CHECK_OK(sdb_image_load(sdb_t_path("refs/pipeline/pipeline_i_inpaint_padding_mask_crop8_output.png"), &png, 3, 0, &err), &err);
        CHECK(png.px && memcmp(png.px, outimg.px, to->nbytes) == 0);
        sdb_image_free(&png);
        sdb_image_free(&outimg);
    }
    /* diffusers 0.30.x squashed the original and the mask to 128x128 first (default LANCZOS
     * resize) and composited on that small canvas: reproducing output_u8_diffusers030 checks the
     * plain 192x128 -> 128x128 Lanczos resize of RGB and L images too. */
    const sdb_st_tensor *t030 = need(st, "output_u8_diffusers030");
    if (t030 && t030->nbytes == 128 * 128 * 3) {
        sdb_image s128, m128, o030;
        CHECK_OK(sdb_resize_lanczos(&scene, 128, 128, &s128, &err), &err);
        CHECK_OK(sdb_resize_lanczos(&mask, 128, 128, &m128, &err), &err);
        CHECK_OK(sdb_apply_overlay(&m128, &s128, &gen, crop, &o030, &err), &err);
        size_t bad = 0;
        for (size_t i = 0; o030.px && i < t030->nbytes; i++) bad += o030.px[i] != t030->data[i];
        CHECKF(o030.px && bad == 0, "diffusers 0.30 composite: %zu values differ", bad);
        sdb_image_free(&s128);
        sdb_image_free(&m128);
        sdb_image_free(&o030);
    }
out:
    if (st) sdb_st_close(st);
    sdb_image_free(&scene);
    sdb_image_free(&mask);
}

/* ---------------------------------------------------------------------------------------------- */
/* hand-checkable cases                                                                            */

static void fill_pattern(sdb_image *im)
{
    for (size_t i = 0; i < (size_t)im->w * im->h * im->c; i++) im->px[i] = (uint8_t)((i * 2654435761u) >> 24);
}

static void test_identity_and_constant(void)
{
    sdb_err err = {0};
    for (int c = 1; c <= 4; c++) {
        if (c == 2) continue;
        sdb_image im, out;
        CHECK_OK(sdb_image_alloc(&im, 23, 17, c, &err), &err);
        fill_pattern(&im);
        CHECK_OK(sdb_resize_lanczos(&im, 23, 17, &out, &err), &err);
        CHECK(out.px && out.c == c && memcmp(out.px, im.px, (size_t)23 * 17 * c) == 0);
        sdb_image_free(&out);
        /* constant image stays constant under every filter, up and down, and with boxes */
        const int sizes[][2] = {{7, 5}, {64, 40}, {23, 3}, {1, 1}, {100, 17}, {11, 90}};
        for (int v = 0; v < 256; v += 85)
            for (int f = SDB_FILTER_BOX; f <= SDB_FILTER_LANCZOS; f++)
                for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
                    memset(im.px, v, (size_t)23 * 17 * c);
                    if (c == 4) for (int i = 0; i < 23 * 17; i++) im.px[4 * i + 3] = 255;
                    CHECK_OK(sdb_resize(&im, sizes[s][0], sizes[s][1], (sdb_filter)f, NULL, &out, &err), &err);
                    size_t bad = 0;
                    for (size_t i = 0; out.px && i < (size_t)out.w * out.h * c; i++)
                        bad += out.px[i] != ((c == 4 && i % 4 == 3) ? 255 : v);
                    CHECKF(bad == 0, "constant %d, filter %d, c %d, %dx%d: %zu values changed", v, f, c,
                           sizes[s][0], sizes[s][1], bad);
                    sdb_image_free(&out);
                }
        sdb_image_free(&im);
    }
}

/* 2x down with BOX = rounded average of 2x2 blocks; BILINEAR at exactly 2x has support 2 with
 * weights (1, 3, 3, 1)/8 inside the image. */
static void test_two_x_down(void)
{
    sdb_err err = {0};
    sdb_image im, out;
    CHECK_OK(sdb_image_alloc(&im, 8, 6, 1, &err), &err);
    for (int y = 0; y < 6; y++)
        for (int x = 0; x < 8; x++) im.px[y * 8 + x] = (uint8_t)(x * 30 + y * 7 + ((x + y) & 1) * 5);
    CHECK_OK(sdb_resize(&im, 4, 3, SDB_FILTER_BOX, NULL, &out, &err), &err);
    for (int y = 0; out.px && y < 3; y++)
        for (int x = 0; x < 4; x++) {
            const uint8_t *p = im.px + (2 * y) * 8 + 2 * x;
            /* horizontal pass rounds first, then vertical: (a+b+1)>>1 per pass */
            int top = (p[0] + p[1] + 1) >> 1, bot = (p[8] + p[9] + 1) >> 1;
            int e = (top + bot + 1) >> 1;
            CHECKF(out.px[y * 4 + x] == e, "box 2x at (%d,%d): %d vs %d", x, y, out.px[y * 4 + x], e);
        }
    sdb_image_free(&out);
    /* constant columns: only the horizontal pass matters; lanczos on a two-valued column pattern */
    sdb_image row;
    CHECK_OK(sdb_image_alloc(&row, 16, 2, 1, &err), &err);
    for (int x = 0; x < 16; x++) row.px[x] = row.px[16 + x] = x < 8 ? 0 : 200;
    CHECK_OK(sdb_resize(&row, 8, 2, SDB_FILTER_BOX, NULL, &out, &err), &err);
    for (int x = 0; out.px && x < 8; x++) CHECK(out.px[x] == (x < 4 ? 0 : 200) && out.px[8 + x] == out.px[x]);
    sdb_image_free(&out);
    sdb_image_free(&row);
    sdb_image_free(&im);
}

/* Lanczos against the README section 7 description, computed independently in double. */
static void ref_coeffs(int in, int out, int i, int *first, int *count, int32_t k[64])
{
    double scale = (double)in / out, fs = scale < 1 ? 1 : scale, support = 3 * fs;
    double center = (i + 0.5) * scale;
    int lo = (int)(center - support + 0.5), hi = (int)(center + support + 0.5);
    if (lo < 0) lo = 0;
    if (hi > in) hi = in;
    double w[64], sum = 0;
    for (int j = lo; j < hi; j++) {
        double x = (j - center + 0.5) / fs, v;
        if (x == 0) v = 1;
        else if (x >= 3 || x < -3) v = 0;
        else v = (sin(M_PI * x) / (M_PI * x)) * (sin(M_PI * x / 3) / (M_PI * x / 3));
        w[j - lo] = v;
        sum += v;
    }
    for (int j = 0; j < hi - lo; j++) {
        double v = w[j] / sum * 4194304.0;
        k[j] = (int32_t)(v < 0 ? v - 0.5 : v + 0.5);
    }
    *first = lo;
    *count = hi - lo;
}

static uint8_t ref_clip(int64_t acc)
{
    int64_t v = acc >> 22;
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

static void test_lanczos_independent(void)
{
    sdb_err err = {0};
    const int cases[][4] = {{46, 46, 128, 128}, {192, 128, 128, 85}, {37, 23, 16, 50}, {128, 128, 46, 46}, {9, 7, 9, 20}};
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        int iw = cases[ci][0], ih = cases[ci][1], ow = cases[ci][2], oh = cases[ci][3];
        sdb_image im, out;
        CHECK_OK(sdb_image_alloc(&im, iw, ih, 3, &err), &err);
        fill_pattern(&im);
        CHECK_OK(sdb_resize_lanczos(&im, ow, oh, &out, &err), &err);
        /* horizontal pass (all rows), 8-bit, then vertical pass */
        uint8_t *tmp = malloc((size_t)ow * ih * 3);
        int first, count;
        int32_t k[64];
        int skip_h = ow == iw, skip_v = oh == ih;
        for (int x = 0; x < ow; x++) {
            ref_coeffs(iw, ow, x, &first, &count, k);
            for (int y = 0; y < ih; y++)
                for (int c = 0; c < 3; c++) {
                    int64_t acc = 1 << 21;
                    for (int j = 0; j < count; j++) acc += (int64_t)im.px[(y * iw + first + j) * 3 + c] * k[j];
                    tmp[(y * ow + x) * 3 + c] = skip_h ? im.px[(y * iw + x) * 3 + c] : ref_clip(acc);
                }
        }
        size_t bad = 0;
        for (int y = 0; y < oh; y++) {
            ref_coeffs(ih, oh, y, &first, &count, k);
            for (int x = 0; x < ow; x++)
                for (int c = 0; c < 3; c++) {
                    int64_t acc = 1 << 21;
                    for (int j = 0; j < count; j++) acc += (int64_t)tmp[((first + j) * ow + x) * 3 + c] * k[j];
                    uint8_t e = skip_v ? tmp[(y * ow + x) * 3 + c] : ref_clip(acc);
                    bad += out.px && out.px[(y * ow + x) * 3 + c] != e;
                }
        }
        CHECKF(bad == 0, "lanczos %dx%d -> %dx%d: %zu values differ from the independent version", iw, ih, ow, oh, bad);
        free(tmp);
        sdb_image_free(&out);
        sdb_image_free(&im);
    }
}

/* _resize_and_fill bands: Pillow's default BICUBIC resize of a zero-height box at an edge gives
 * 1.125 * edge - 0.125 * next (in 22-bit fixed point); an odd leftover row stays black. */
static void test_fill_bands(void)
{
    sdb_err err = {0};
    sdb_image im, out;
    CHECK_OK(sdb_image_alloc(&im, 10, 4, 1, &err), &err);
    fill_pattern(&im);
    CHECK_OK(sdb_resize_and_fill(&im, 8, 8, &out, &err), &err);
    sdb_image r;
    CHECK_OK(sdb_resize_lanczos(&im, 8, 3, &r, &err), &err); /* src_w = 8, src_h = 4 * 8 // 10 = 3 */
    if (out.px && r.px) {
        int32_t k0 = (int32_t)(1.125 * 4194304 + 0.5), k1 = (int32_t)(-0.125 * 4194304 - 0.5);
        for (int x = 0; x < 8; x++) {
            uint8_t top = ref_clip((1 << 21) + (int64_t)r.px[x] * k0 + (int64_t)r.px[8 + x] * k1);
            uint8_t bot = ref_clip((1 << 21) + (int64_t)r.px[16 + x] * k0 + (int64_t)r.px[8 + x] * k1);
            for (int y = 0; y < 3; y++) CHECKF(out.px[y * 8 + x] == top, "top band (%d,%d)", x, y);
            for (int y = 3; y < 6; y++) CHECK(out.px[y * 8 + x] == r.px[(y - 3) * 8 + x]);
            for (int y = 6; y < 8; y++) CHECKF(out.px[y * 8 + x] == bot, "bottom band (%d,%d)", x, y);
        }
    }
    sdb_image_free(&out);
    sdb_image_free(&r);
    /* tall source into a wide target: left/right bands; odd leftover column stays black */
    sdb_image tall;
    CHECK_OK(sdb_image_alloc(&tall, 4, 12, 3, &err), &err);
    fill_pattern(&tall);
    CHECK_OK(sdb_resize_and_fill(&tall, 9, 6, &out, &err), &err); /* src_w = 4*6//12 = 2, fill = 4 - 1 = 3 */
    CHECK_OK(sdb_resize_lanczos(&tall, 2, 6, &r, &err), &err);
    if (out.px && r.px) {
        for (int y = 0; y < 6; y++) {
            for (int x = 3; x < 5; x++)
                for (int c = 0; c < 3; c++) CHECK(out.px[(y * 9 + x) * 3 + c] == r.px[(y * 2 + x - 3) * 3 + c]);
            /* columns 5..7 are the right band, column 8 is never painted */
            for (int c = 0; c < 3; c++) CHECK(out.px[(y * 9 + 8) * 3 + c] == 0);
        }
    }
    sdb_image_free(&out);
    sdb_image_free(&r);
    sdb_image_free(&tall);
    /* same aspect ratio: just the Lanczos resize */
    CHECK_OK(sdb_resize_and_fill(&im, 20, 8, &out, &err), &err);
    CHECK_OK(sdb_resize_lanczos(&im, 20, 8, &r, &err), &err);
    CHECK(out.px && r.px && memcmp(out.px, r.px, 160) == 0);
    sdb_image_free(&out);
    sdb_image_free(&r);
    sdb_image_free(&im);
}

static void test_resize_and_crop(void)
{
    sdb_err err = {0};
    sdb_image im, out, r;
    CHECK_OK(sdb_image_alloc(&im, 30, 10, 3, &err), &err);
    fill_pattern(&im);
    /* 30x10 onto 12x12: cover by height -> 36x12, centered, columns 12..23 kept */
    CHECK_OK(sdb_resize_and_crop(&im, 12, 12, &out, &err), &err);
    CHECK_OK(sdb_resize_lanczos(&im, 36, 12, &r, &err), &err);
    for (int y = 0; out.px && r.px && y < 12; y++)
        CHECK(memcmp(out.px + y * 12 * 3, r.px + (y * 36 + 12) * 3, 12 * 3) == 0);
    sdb_image_free(&out);
    sdb_image_free(&r);
    sdb_image_free(&im);
}

static void test_crop_region_cases(void)
{
    sdb_err err = {0};
    sdb_image m;
    CHECK_OK(sdb_image_alloc(&m, 100, 60, 1, &err), &err);
    int crop[4];
    CHECK(sdb_get_crop_region(&m, 64, 64, 4, crop, &err) == SDB_EINVAL); /* empty mask */
    /* a 10x2 strip at (45..54, 30..31), pad 0, square target: grow height to 10 */
    for (int x = 45; x < 55; x++) m.px[30 * 100 + x] = m.px[31 * 100 + x] = 255;
    CHECK_OK(sdb_get_crop_region(&m, 64, 64, 0, crop, &err), &err);
    CHECK(crop[0] == 45 && crop[1] == 26 && crop[2] == 55 && crop[3] == 36);
    /* at the bottom edge: shifted up to stay inside */
    memset(m.px, 0, 6000);
    for (int x = 45; x < 55; x++) m.px[59 * 100 + x] = 1;
    CHECK_OK(sdb_get_crop_region(&m, 64, 64, 0, crop, &err), &err);
    CHECK(crop[0] == 45 && crop[1] == 50 && crop[2] == 55 && crop[3] == 60);
    /* a tall strip, wide target: width grows, clamped at the left edge */
    memset(m.px, 0, 6000);
    for (int y = 10; y < 50; y++) m.px[y * 100 + 1] = 9;
    CHECK_OK(sdb_get_crop_region(&m, 128, 64, 2, crop, &err), &err);
    /* bbox x 1..2 -> pad: x1 0, x2 4; y 8..52 (h 44) -> width 88: diff 84, x1 = -42 -> 0, x2 = 88 */
    CHECK(crop[0] == 0 && crop[1] == 8 && crop[2] == 88 && crop[3] == 52);
    /* region larger than the image in the needed direction: clamped to the full height */
    memset(m.px, 0, 6000);
    m.px[0] = m.px[99] = 1;
    CHECK_OK(sdb_get_crop_region(&m, 64, 64, 0, crop, &err), &err);
    CHECK(crop[0] == 0 && crop[2] == 100 && crop[3] == 60);
    /* an RGB mask is converted to L first */
    sdb_image rgb;
    CHECK_OK(sdb_image_to_rgb(&m, &rgb, &err), &err);
    int crop2[4];
    CHECK_OK(sdb_get_crop_region(&rgb, 64, 64, 0, crop2, &err), &err);
    CHECK(memcmp(crop, crop2, sizeof crop) == 0);
    sdb_image_free(&rgb);
    sdb_image_free(&m);
}

static void test_overlay_extremes(void)
{
    sdb_err err = {0};
    sdb_image init, gen, mask, out;
    CHECK_OK(sdb_image_alloc(&init, 20, 10, 3, &err), &err);
    CHECK_OK(sdb_image_alloc(&gen, 20, 10, 3, &err), &err);
    CHECK_OK(sdb_image_alloc(&mask, 20, 10, 1, &err), &err);
    fill_pattern(&init);
    for (int i = 0; i < 600; i++) gen.px[i] = (uint8_t)(255 - i % 256);
    /* mask 0 everywhere: the original comes back unchanged */
    CHECK_OK(sdb_apply_overlay(&mask, &init, &gen, NULL, &out, &err), &err);
    CHECK(out.px && memcmp(out.px, init.px, 600) == 0);
    sdb_image_free(&out);
    /* mask 255 everywhere: the generated image */
    memset(mask.px, 255, 200);
    CHECK_OK(sdb_apply_overlay(&mask, &init, &gen, NULL, &out, &err), &err);
    CHECK(out.px && memcmp(out.px, gen.px, 600) == 0);
    sdb_image_free(&out);
    /* with a crop box and full mask: black outside the box, the crop-resized image inside */
    int crop[4] = {5, 2, 15, 7};
    sdb_image small, r;
    CHECK_OK(sdb_image_alloc(&small, 8, 4, 3, &err), &err);
    fill_pattern(&small);
    CHECK_OK(sdb_apply_overlay(&mask, &init, &small, crop, &out, &err), &err);
    CHECK_OK(sdb_resize_and_crop(&small, 10, 5, &r, &err), &err);
    size_t bad = 0;
    for (int y = 0; out.px && r.px && y < 10; y++)
        for (int x = 0; x < 20; x++)
            for (int c = 0; c < 3; c++) {
                int inside = x >= 5 && x < 15 && y >= 2 && y < 7;
                int e = inside ? r.px[((y - 2) * 10 + x - 5) * 3 + c] : 0;
                bad += out.px[(y * 20 + x) * 3 + c] != e;
            }
    CHECK(bad == 0);
    sdb_image_free(&out);
    sdb_image_free(&r);
    sdb_image_free(&small);
    /* half mask (128): Pillow arithmetic by hand for one pixel */
    memset(mask.px, 128, 200);
    init.px[0] = 200; gen.px[0] = 10;
    CHECK_OK(sdb_apply_overlay(&mask, &init, &gen, NULL, &out, &err), &err);
    if (out.px) {
        int m = 127;                                   /* 255 - 128 */
        int t = 200 * m + 128, pre = ((t >> 8) + t) >> 8; /* premultiplied colour */
        int ua = ((m * 255 + 128) + ((m * 255 + 128) >> 8)) >> 8; /* alpha = DIV255(255 * m) = 127 */
        int col = 255 * pre / ua;                      /* unpremultiply */
        unsigned outa = ua * 255 + 255 * (255 - ua);
        unsigned c1 = (unsigned)ua * 255 * 255 * 128 / outa, c2 = 255 * 128 - c1;
        unsigned tt = col * c1 + 10 * c2 + (0x80 << 7);
        int e = (int)(((((tt >> 8) + tt) >> 8)) >> 7);
        CHECKF(out.px[0] == e, "half mask: %d vs %d", out.px[0], e);
    }
    sdb_image_free(&out);
    /* size mismatch is an error */
    sdb_image m2;
    CHECK_OK(sdb_image_alloc(&m2, 19, 10, 1, &err), &err);
    CHECK(sdb_apply_overlay(&m2, &init, &gen, NULL, &out, &err) == SDB_EINVAL);
    sdb_image_free(&m2);
    sdb_image_free(&init);
    sdb_image_free(&gen);
    sdb_image_free(&mask);
}

static void test_rgba_and_errors(void)
{
    sdb_err err = {0};
    sdb_image rgb, rgba, a, b;
    CHECK_OK(sdb_image_alloc(&rgb, 13, 9, 3, &err), &err);
    fill_pattern(&rgb);
    CHECK_OK(sdb_image_alloc(&rgba, 13, 9, 4, &err), &err);
    for (int i = 0; i < 13 * 9; i++) {
        memcpy(rgba.px + 4 * i, rgb.px + 3 * i, 3);
        rgba.px[4 * i + 3] = 255;
    }
    /* opaque RGBA resizes like RGB (premultiplying by 255 is the identity) */
    CHECK_OK(sdb_resize_lanczos(&rgb, 7, 20, &a, &err), &err);
    CHECK_OK(sdb_resize_lanczos(&rgba, 7, 20, &b, &err), &err);
    size_t bad = 0;
    for (int i = 0; a.px && b.px && i < 7 * 20; i++)
        bad += memcmp(a.px + 3 * i, b.px + 4 * i, 3) != 0 || b.px[4 * i + 3] != 255;
    CHECK(bad == 0);
    sdb_image_free(&a);
    sdb_image_free(&b);
    CHECK(sdb_resize_lanczos(&rgb, 0, 5, &a, &err) == SDB_EINVAL && a.px == NULL);
    float badbox[4] = {0, 0, 14, 9};
    CHECK(sdb_resize(&rgb, 5, 5, SDB_FILTER_LANCZOS, badbox, &a, &err) == SDB_EINVAL);
    float neg[4] = {-1, 0, 5, 9};
    CHECK(sdb_resize(&rgb, 5, 5, SDB_FILTER_LANCZOS, neg, &a, &err) == SDB_EINVAL);
    int empty[4] = {3, 3, 3, 5};
    CHECK(sdb_image_crop(&rgb, empty, &a, &err) == SDB_EINVAL);
    /* crop past the edge: zeros outside, like Pillow */
    int past[4] = {10, 7, 16, 10};
    CHECK_OK(sdb_image_crop(&rgb, past, &a, &err), &err);
    if (a.px) {
        CHECK(a.w == 6 && a.h == 3);
        CHECK(memcmp(a.px, rgb.px + (7 * 13 + 10) * 3, 9) == 0);
        CHECK(a.px[3 * 3] == 0 && a.px[(2 * 6 + 5) * 3] == 0);
    }
    sdb_image_free(&a);
    sdb_image_free(&rgb);
    sdb_image_free(&rgba);
}

int main(void)
{
    RUN(test_case_i_crop_region);
    RUN(test_case_i_preprocess);
    RUN(test_case_i_overlay);
    RUN(test_identity_and_constant);
    RUN(test_two_x_down);
    RUN(test_lanczos_independent);
    RUN(test_fill_bands);
    RUN(test_resize_and_crop);
    RUN(test_crop_region_cases);
    RUN(test_overlay_extremes);
    RUN(test_rgba_and_errors);
    return sdb_t_done();
}
