/*
 * resize.c — Pillow's 8-bit resampling (Resample.c), crop/paste, and the image helpers of
 * diffusers' VaeImageProcessor (_resize_and_fill, _resize_and_crop, get_crop_region,
 * apply_overlay with Pillow's Paste.c / Convert.c / AlphaComposite.c integer arithmetic).
 * See resize.h. All functions allocate their output; inputs are never modified.
 */
#include "sdb/resize.h"
#include "image_internal.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define PRECISION_BITS (32 - 8 - 2)

/* ---------------------------------------------------------------------------------------------- */
/* filters (Resample.c)                                                                            */

static double box_filter(double x) { return (x > -0.5 && x <= 0.5) ? 1.0 : 0.0; }

static double bilinear_filter(double x)
{
    if (x < 0.0) x = -x;
    return x < 1.0 ? 1.0 - x : 0.0;
}

static double hamming_filter(double x)
{
    if (x < 0.0) x = -x;
    if (x == 0.0) return 1.0;
    if (x >= 1.0) return 0.0;
    x = x * M_PI;
    return sin(x) / x * (0.54f + 0.46f * cos(x));
}

static double bicubic_filter(double x)
{
    const double a = -0.5;
    if (x < 0.0) x = -x;
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

static double sinc_filter(double x)
{
    if (x == 0.0) return 1.0;
    x = x * M_PI;
    return sin(x) / x;
}

static double lanczos_filter(double x)
{
    if (-3.0 <= x && x < 3.0) return sinc_filter(x) * sinc_filter(x / 3);
    return 0.0;
}

typedef struct {
    double (*fn)(double);
    double support;
} filter_def;

static const filter_def FILTERS[] = {
    [SDB_FILTER_BOX] = {box_filter, 0.5},
    [SDB_FILTER_BILINEAR] = {bilinear_filter, 1.0},
    [SDB_FILTER_HAMMING] = {hamming_filter, 1.0},
    [SDB_FILTER_BICUBIC] = {bicubic_filter, 2.0},
    [SDB_FILTER_LANCZOS] = {lanczos_filter, 3.0},
};

/* Pillow's precompute_coeffs + normalize_coeffs_8bpc. Returns ksize (0 on allocation failure);
 * bounds[2*i] = first tap, bounds[2*i+1] = number of taps; kk = outSize*ksize fixed-point weights. */
static int precompute(int inSize, float in0, float in1, int outSize, const filter_def *f,
                      int **boundsp, int32_t **kkp)
{
    double scale, filterscale;
    filterscale = scale = (double)(in1 - in0) / outSize;
    if (filterscale < 1.0) filterscale = 1.0;
    double support = f->support * filterscale;
    int ksize = (int)ceil(support) * 2 + 1;
    double *k = malloc((size_t)ksize * sizeof(double));
    int32_t *kk = malloc((size_t)outSize * ksize * sizeof(int32_t));
    int *bounds = malloc((size_t)outSize * 2 * sizeof(int));
    if (!k || !kk || !bounds) { free(k); free(kk); free(bounds); return 0; }
    for (int xx = 0; xx < outSize; xx++) {
        double center = in0 + (xx + 0.5) * scale;
        double ww = 0.0, ss = 1.0 / filterscale;
        int xmin = (int)(center - support + 0.5);
        if (xmin < 0) xmin = 0;
        int xmax = (int)(center + support + 0.5);
        if (xmax > inSize) xmax = inSize;
        xmax -= xmin;
        int x;
        for (x = 0; x < xmax; x++) {
            double w = f->fn((x + xmin - center + 0.5) * ss);
            k[x] = w;
            ww += w;
        }
        for (x = 0; x < xmax; x++)
            if (ww != 0.0) k[x] /= ww;
        for (; x < ksize; x++) k[x] = 0;
        for (x = 0; x < ksize; x++) {
            double v = k[x] * (1 << PRECISION_BITS);
            kk[xx * ksize + x] = k[x] < 0 ? (int32_t)(-0.5 + v) : (int32_t)(0.5 + v);
        }
        bounds[xx * 2] = xmin;
        bounds[xx * 2 + 1] = xmax;
    }
    free(k);
    *boundsp = bounds;
    *kkp = kk;
    return ksize;
}

/* Pillow's clip8: arithmetic shift (its lookup index), then clamp. */
static inline uint8_t clip8(int32_t ss) { return sdb_clip8(ss >> PRECISION_BITS); }

/* Horizontal pass: out rows 0..oh-1 come from input rows offset..offset+oh-1. */
static void resample_h(const uint8_t *in, int iw, int c, uint8_t *out, int ow, int oh, int offset,
                       int ksize, const int *bounds, const int32_t *kk)
{
    for (int yy = 0; yy < oh; yy++) {
        const uint8_t *row = in + (size_t)(yy + offset) * iw * c;
        uint8_t *orow = out + (size_t)yy * ow * c;
        for (int xx = 0; xx < ow; xx++) {
            int xmin = bounds[xx * 2], xmax = bounds[xx * 2 + 1];
            const int32_t *k = kk + (size_t)xx * ksize;
            for (int ch = 0; ch < c; ch++) {
                int32_t ss = 1 << (PRECISION_BITS - 1);
                for (int x = 0; x < xmax; x++) ss += row[(size_t)(x + xmin) * c + ch] * k[x];
                orow[(size_t)xx * c + ch] = clip8(ss);
            }
        }
    }
}

static void resample_v(const uint8_t *in, int w, int c, uint8_t *out, int oh,
                       int ksize, const int *bounds, const int32_t *kk)
{
    size_t stride = (size_t)w * c;
    for (int yy = 0; yy < oh; yy++) {
        int ymin = bounds[yy * 2], ymax = bounds[yy * 2 + 1];
        const int32_t *k = kk + (size_t)yy * ksize;
        uint8_t *orow = out + (size_t)yy * stride;
        for (size_t i = 0; i < stride; i++) {
            int32_t ss = 1 << (PRECISION_BITS - 1);
            for (int y = 0; y < ymax; y++) ss += in[(size_t)(y + ymin) * stride + i] * k[y];
            orow[i] = clip8(ss);
        }
    }
}

/* Convert.c rgbA2rgba (premultiply) and rgba2rgbA (unpremultiply, truncating division). */
static void premultiply(uint8_t *px, size_t n)
{
    for (size_t i = 0; i < n; i++, px += 4) {
        int a = px[3];
        px[0] = (uint8_t)sdb_muldiv255(px[0], a);
        px[1] = (uint8_t)sdb_muldiv255(px[1], a);
        px[2] = (uint8_t)sdb_muldiv255(px[2], a);
    }
}

static void unpremultiply(uint8_t *px, size_t n)
{
    for (size_t i = 0; i < n; i++, px += 4) {
        unsigned a = px[3];
        if (a == 255 || a == 0) continue;
        px[0] = sdb_clip8((int)((255u * px[0]) / a));
        px[1] = sdb_clip8((int)((255u * px[1]) / a));
        px[2] = sdb_clip8((int)((255u * px[2]) / a));
    }
}

static int resize_channels(const sdb_image *in, int w, int h, const filter_def *f, const float box[4],
                           sdb_image *out, sdb_err *err)
{
    int c = in->c;
    int need_h = w != in->w || box[0] != 0.0f || box[2] != (float)w;
    int need_v = h != in->h || box[1] != 0.0f || box[3] != (float)h;

    int *bv = NULL, *bh = NULL;
    int32_t *kv = NULL, *kh = NULL;
    uint8_t *tmp = NULL;
    int ksv = precompute(in->h, box[1], box[3], h, f, &bv, &kv);
    if (!ksv) return sdb_fail(err, SDB_ENOMEM, "resize: out of memory");
    int ybox_first = bv[0];
    int ybox_last = bv[h * 2 - 2] + bv[h * 2 - 1];

    const uint8_t *src = in->px;
    int sw = in->w;
    int rc = 0;
    sdb_image res = {0};
    if (need_h) {
        int ksh = precompute(in->w, box[0], box[2], w, f, &bh, &kh);
        if (!ksh) { rc = sdb_fail(err, SDB_ENOMEM, "resize: out of memory"); goto done; }
        for (int i = 0; i < h; i++) bv[i * 2] -= ybox_first;
        int th = ybox_last - ybox_first;
        if (th <= 0) th = 1; /* degenerate; Pillow would allocate an empty image */
        tmp = calloc((size_t)w * th * c, 1);
        if (!tmp) { rc = sdb_fail(err, SDB_ENOMEM, "resize: out of memory"); goto done; }
        resample_h(in->px, in->w, c, tmp, w, ybox_last - ybox_first, ybox_first, ksh, bh, kh);
        src = tmp;
        sw = w;
    }
    if (need_v) {
        rc = sdb_image_alloc(&res, sw, h, c, err);
        if (rc) goto done;
        resample_v(src, sw, c, res.px, h, ksv, bv, kv);
    } else {
        /* horizontal only (or nothing): the (shifted) temp rows are the result */
        rc = sdb_image_alloc(&res, sw, h, c, err);
        if (rc) goto done;
        if (need_h) memcpy(res.px, tmp, (size_t)w * h * c); /* ybox_first == 0 when h == in->h and box is full */
        else memcpy(res.px, in->px, (size_t)w * h * c);
    }
    *out = res;
done:
    free(bv); free(kv); free(bh); free(kh); free(tmp);
    return rc;
}

int sdb_resize(const sdb_image *in, int w, int h, sdb_filter filter, const float *box,
               sdb_image *out, sdb_err *err)
{
    memset(out, 0, sizeof *out);
    if (!in || !in->px || in->w <= 0 || in->h <= 0 || (in->c != 1 && in->c != 3 && in->c != 4))
        return sdb_fail(err, SDB_EINVAL, "resize: input must be an 8-bit L, RGB or RGBA image");
    if (w <= 0 || h <= 0)
        return sdb_fail(err, SDB_EINVAL, "resize: target size %dx%d must be positive", w, h);
    if ((unsigned)filter > SDB_FILTER_LANCZOS)
        return sdb_fail(err, SDB_EINVAL, "resize: unknown filter %d", (int)filter);
    float b[4] = {0.0f, 0.0f, (float)in->w, (float)in->h};
    if (box) memcpy(b, box, sizeof b);
    if (b[0] < 0 || b[1] < 0)
        return sdb_fail(err, SDB_EINVAL, "resize: box offset can't be negative");
    if (b[2] > in->w || b[3] > in->h)
        return sdb_fail(err, SDB_EINVAL, "resize: box can't exceed original image size");
    if (b[2] - b[0] < 0 || b[3] - b[1] < 0)
        return sdb_fail(err, SDB_EINVAL, "resize: box can't be empty");
    if (w == in->w && h == in->h && b[0] == 0 && b[1] == 0 && b[2] == (float)in->w && b[3] == (float)in->h)
        return sdb_image_copy(in, out, err);
    const filter_def *f = &FILTERS[filter];
    if (in->c != 4) return resize_channels(in, w, h, f, b, out, err);
    /* Pillow: RGBA is resized as RGBa (premultiplied) and converted back. */
    sdb_image pm;
    int rc = sdb_image_copy(in, &pm, err);
    if (rc) return rc;
    premultiply(pm.px, (size_t)pm.w * pm.h);
    rc = resize_channels(&pm, w, h, f, b, out, err);
    sdb_image_free(&pm);
    if (rc) return rc;
    unpremultiply(out->px, (size_t)w * h);
    return 0;
}

int sdb_resize_lanczos(const sdb_image *in, int w, int h, sdb_image *out, sdb_err *err)
{
    return sdb_resize(in, w, h, SDB_FILTER_LANCZOS, NULL, out, err);
}

/* ---------------------------------------------------------------------------------------------- */
/* crop / paste                                                                                    */

/* Paste.c without mask: copies src at (dx, dy), clipped to dst; channels must match. */
static void paste(sdb_image *dst, const sdb_image *src, int dx, int dy)
{
    int xsize = src->w, ysize = src->h, sx = 0, sy = 0;
    if (dx < 0) { xsize += dx; sx = -dx; dx = 0; }
    if (dx + xsize > dst->w) xsize = dst->w - dx;
    if (dy < 0) { ysize += dy; sy = -dy; dy = 0; }
    if (dy + ysize > dst->h) ysize = dst->h - dy;
    if (xsize <= 0 || ysize <= 0) return;
    int c = dst->c;
    for (int y = 0; y < ysize; y++)
        memcpy(dst->px + ((size_t)(y + dy) * dst->w + dx) * c,
               src->px + ((size_t)(y + sy) * src->w + sx) * c, (size_t)xsize * c);
}

int sdb_image_crop(const sdb_image *in, const int box[4], sdb_image *out, sdb_err *err)
{
    memset(out, 0, sizeof *out);
    int w = box[2] - box[0], h = box[3] - box[1];
    if (w <= 0 || h <= 0)
        return sdb_fail(err, SDB_EINVAL, "crop: empty box (%d, %d, %d, %d)", box[0], box[1], box[2], box[3]);
    int rc = sdb_image_alloc(out, w, h, in->c, err);
    if (rc) return rc;
    paste(out, in, -box[0], -box[1]);
    return 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* diffusers VaeImageProcessor                                                                     */

int sdb_resize_and_fill(const sdb_image *in, int width, int height, sdb_image *out, sdb_err *err)
{
    memset(out, 0, sizeof *out);
    if (!in || !in->px || in->w <= 0 || in->h <= 0 || width <= 0 || height <= 0)
        return sdb_fail(err, SDB_EINVAL, "resize_and_fill: bad image or size %dx%d", width, height);
    double ratio = (double)width / height, src_ratio = (double)in->w / in->h;
    long src_w = ratio < src_ratio ? width : (long)in->w * height / in->h;
    long src_h = ratio >= src_ratio ? height : (long)in->h * width / in->w;
    if (src_w <= 0 || src_h <= 0)
        return sdb_fail(err, SDB_EINVAL, "resize_and_fill: %dx%d cannot be fitted into %dx%d (aspect ratio too extreme)",
                        in->w, in->h, width, height);
    sdb_image resized = {0}, res = {0}, band = {0};
    int rc = sdb_resize(in, (int)src_w, (int)src_h, SDB_FILTER_LANCZOS, NULL, &resized, err);
    if (rc) return rc;
    rc = sdb_image_alloc(&res, width, height, in->c, err);
    if (rc) goto fail;
    paste(&res, &resized, width / 2 - (int)src_w / 2, height / 2 - (int)src_h / 2);
    if (ratio < src_ratio) {
        int fill_height = height / 2 - (int)src_h / 2;
        if (fill_height > 0) {
            float top[4] = {0, 0, (float)width, 0};
            float bot[4] = {0, (float)resized.h, (float)width, (float)resized.h};
            if ((rc = sdb_resize(&resized, width, fill_height, SDB_FILTER_BICUBIC, top, &band, err))) goto fail;
            paste(&res, &band, 0, 0);
            sdb_image_free(&band);
            if ((rc = sdb_resize(&resized, width, fill_height, SDB_FILTER_BICUBIC, bot, &band, err))) goto fail;
            paste(&res, &band, 0, fill_height + (int)src_h);
            sdb_image_free(&band);
        }
    } else if (ratio > src_ratio) {
        int fill_width = width / 2 - (int)src_w / 2;
        if (fill_width > 0) {
            float left[4] = {0, 0, 0, (float)height};
            float right[4] = {(float)resized.w, 0, (float)resized.w, (float)height};
            if ((rc = sdb_resize(&resized, fill_width, height, SDB_FILTER_BICUBIC, left, &band, err))) goto fail;
            paste(&res, &band, 0, 0);
            sdb_image_free(&band);
            if ((rc = sdb_resize(&resized, fill_width, height, SDB_FILTER_BICUBIC, right, &band, err))) goto fail;
            paste(&res, &band, fill_width + (int)src_w, 0);
            sdb_image_free(&band);
        }
    }
    sdb_image_free(&resized);
    *out = res;
    return 0;
fail:
    sdb_image_free(&resized);
    sdb_image_free(&res);
    sdb_image_free(&band);
    return rc;
}

int sdb_resize_and_crop(const sdb_image *in, int width, int height, sdb_image *out, sdb_err *err)
{
    memset(out, 0, sizeof *out);
    if (!in || !in->px || in->w <= 0 || in->h <= 0 || width <= 0 || height <= 0)
        return sdb_fail(err, SDB_EINVAL, "resize_and_crop: bad image or size %dx%d", width, height);
    double ratio = (double)width / height, src_ratio = (double)in->w / in->h;
    long src_w = ratio > src_ratio ? width : (long)in->w * height / in->h;
    long src_h = ratio <= src_ratio ? height : (long)in->h * width / in->w;
    /* The intermediate covers the canvas: for a sliver (30816 x 1 onto 13 x 32, found by fuzz_image)
     * it is the sliver magnified, 986112 x 32 here, whose LANCZOS resize took 29 s. Diffusers would
     * do the same; such inputs are refused instead: the intermediate may be at most 16 times the
     * larger of the input and the canvas (a 4:3 photo onto a square: 1.3), and 64 Mpx. */
    double inter = (double)src_w * (double)src_h;
    double cap = 16.0 * fmax((double)width * height, (double)in->w * in->h);
    if (src_w <= 0 || src_h <= 0 || src_w > 1000000 || src_h > 1000000 || inter > cap ||
        inter > (double)SDB_IMAGE_DEFAULT_MAX_PIXELS)
        return sdb_fail(err, SDB_EINVAL, "resize_and_crop: %dx%d cannot be fitted onto %dx%d (aspect ratio too extreme: "
                        "it would be resized to %ldx%ld)", in->w, in->h, width, height, src_w, src_h);
    sdb_image resized = {0}, res = {0};
    int rc = sdb_resize(in, (int)src_w, (int)src_h, SDB_FILTER_LANCZOS, NULL, &resized, err);
    if (rc) return rc;
    rc = sdb_image_alloc(&res, width, height, in->c, err);
    if (rc) { sdb_image_free(&resized); return rc; }
    paste(&res, &resized, width / 2 - (int)src_w / 2, height / 2 - (int)src_h / 2);
    sdb_image_free(&resized);
    *out = res;
    return 0;
}

static inline long floordiv2(long a) { return a >= 0 ? a / 2 : -((-a + 1) / 2); }

int sdb_get_crop_region(const sdb_image *mask, int width, int height, int pad, int crop[4], sdb_err *err)
{
    if (!mask || !mask->px || mask->w <= 0 || mask->h <= 0 || width <= 0 || height <= 0)
        return sdb_fail(err, SDB_EINVAL, "get_crop_region: bad mask or size %dx%d", width, height);
    sdb_image l = {0};
    const sdb_image *m = mask;
    if (mask->c != 1) {
        int rc = sdb_image_to_l(mask, &l, err);
        if (rc) return rc;
        m = &l;
    }
    int w = m->w, h = m->h;
    int left = w, right = -1, top = h, bottom = -1; /* bounding box of non-zero pixels */
    for (int y = 0; y < h; y++) {
        const uint8_t *row = m->px + (size_t)y * w;
        for (int x = 0; x < w; x++) {
            if (!row[x]) continue;
            if (x < left) left = x;
            if (x > right) right = x;
            if (y < top) top = y;
            if (y > bottom) bottom = y;
        }
    }
    sdb_image_free(&l);
    if (right < 0)
        return sdb_fail(err, SDB_EINVAL, "get_crop_region: the mask is empty (all pixels zero)");
    long crop_left = left, crop_right = w - 1 - right, crop_top = top, crop_bottom = h - 1 - bottom;
    long x1 = crop_left - pad > 0 ? crop_left - pad : 0;
    long y1 = crop_top - pad > 0 ? crop_top - pad : 0;
    long x2 = w - crop_right + pad < w ? w - crop_right + pad : w;
    long y2 = h - crop_bottom + pad < h ? h - crop_bottom + pad : h;

    double ratio_crop_region = (double)(x2 - x1) / (double)(y2 - y1);
    double ratio_processing = (double)width / height;
    if (ratio_crop_region > ratio_processing) {
        double desired_height = (double)(x2 - x1) / ratio_processing;
        long diff_h = (long)(desired_height - (double)(y2 - y1));
        y1 -= floordiv2(diff_h);
        y2 += diff_h - floordiv2(diff_h);
        if (y2 >= h) { long d = y2 - h; y2 -= d; y1 -= d; }
        if (y1 < 0) { y2 -= y1; y1 -= y1; }
        if (y2 >= h) y2 = h;
    } else {
        double desired_width = (double)(y2 - y1) * ratio_processing;
        long diff_w = (long)(desired_width - (double)(x2 - x1));
        x1 -= floordiv2(diff_w);
        x2 += diff_w - floordiv2(diff_w);
        if (x2 >= w) { long d = x2 - w; x2 -= d; x1 -= d; }
        if (x1 < 0) { x2 -= x1; x1 -= x1; }
        if (x2 >= w) x2 = w;
    }
    crop[0] = (int)x1; crop[1] = (int)y1; crop[2] = (int)x2; crop[3] = (int)y2;
    return 0;
}

int sdb_apply_overlay(const sdb_image *mask, const sdb_image *init, const sdb_image *image,
                      const int *crop, sdb_image *out, sdb_err *err)
{
    memset(out, 0, sizeof *out);
    if (!mask || !init || !image || !mask->px || !init->px || !image->px)
        return sdb_fail(err, SDB_EINVAL, "apply_overlay: missing image");
    if (mask->w != init->w || mask->h != init->h)
        return sdb_fail(err, SDB_EINVAL, "apply_overlay: mask is %dx%d but the original image is %dx%d",
                        mask->w, mask->h, init->w, init->h);
    int W = init->w, H = init->h, rc;
    size_t n = (size_t)W * H;
    sdb_image ml = {0}, src = {0}, gen = {0}, dst = {0};

    /* mask.convert("L") */
    if (mask->c == 1) rc = sdb_image_copy(mask, &ml, err);
    else rc = sdb_image_to_l(mask, &ml, err);
    if (rc) goto done;

    /* init_image.convert("RGBA").convert("RGBa"), pasted into a zero RGBa canvas through
     * ImageOps.invert(mask): Paste.c BLEND with out = 0 is DIV255(in * m). Then .convert("RGBA"). */
    if ((rc = sdb_image_alloc(&src, W, H, 4, err))) goto done;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *p = init->px + i * init->c;
        int r, g, b, a;
        if (init->c == 1) { r = g = b = p[0]; a = 255; }
        else { r = p[0]; g = p[1]; b = p[2]; a = init->c == 4 ? p[3] : 255; }
        r = sdb_muldiv255(r, a); g = sdb_muldiv255(g, a); b = sdb_muldiv255(b, a); /* RGBA -> RGBa */
        int m = 255 - ml.px[i];
        uint8_t *q = src.px + 4 * i;
        q[0] = (uint8_t)sdb_muldiv255(r, m);
        q[1] = (uint8_t)sdb_muldiv255(g, m);
        q[2] = (uint8_t)sdb_muldiv255(b, m);
        q[3] = (uint8_t)sdb_muldiv255(a, m);
    }
    unpremultiply(src.px, n);

    /* The generated image on an RGB canvas of the original size (alpha 255 after convert("RGBA")). */
    if (crop) {
        int cw = crop[2] - crop[0], ch = crop[3] - crop[1];
        if (cw <= 0 || ch <= 0) { rc = sdb_fail(err, SDB_EINVAL, "apply_overlay: empty crop box"); goto done; }
        if ((rc = sdb_resize_and_crop(image, cw, ch, &gen, err))) goto done;
        if ((rc = sdb_image_alloc(&dst, W, H, gen.c, err))) goto done;
        paste(&dst, &gen, crop[0], crop[1]);
    } else {
        if (image->w != W || image->h != H) {
            rc = sdb_fail(err, SDB_EINVAL, "apply_overlay: image is %dx%d but the original is %dx%d",
                          image->w, image->h, W, H);
            goto done;
        }
        if ((rc = sdb_image_copy(image, &dst, err))) goto done;
    }

    /* image.alpha_composite(init_image_masked), then convert("RGB") (AlphaComposite.c, scalar path). */
    if ((rc = sdb_image_alloc(out, W, H, 3, err))) goto done;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *s = src.px + 4 * i;
        const uint8_t *d = dst.px + i * dst.c;
        int dr, dg, db, da;
        if (dst.c == 1) { dr = dg = db = d[0]; da = 255; }
        else { dr = d[0]; dg = d[1]; db = d[2]; da = dst.c == 4 ? d[3] : 255; }
        uint8_t *o = out->px + 3 * i;
        if (s[3] == 0) { o[0] = (uint8_t)dr; o[1] = (uint8_t)dg; o[2] = (uint8_t)db; continue; }
        uint32_t blend = (uint32_t)da * (255u - s[3]);
        uint32_t outa255 = (uint32_t)s[3] * 255u + blend;
        uint32_t coef1 = (uint32_t)s[3] * 255u * 255u * (1u << 7) / outa255;
        uint32_t coef2 = 255u * (1u << 7) - coef1;
        uint32_t t;
#define SHIFTFORDIV255(a) ((((a) >> 8) + (a)) >> 8)
        t = s[0] * coef1 + (uint32_t)dr * coef2 + (0x80u << 7); o[0] = (uint8_t)(SHIFTFORDIV255(t) >> 7);
        t = s[1] * coef1 + (uint32_t)dg * coef2 + (0x80u << 7); o[1] = (uint8_t)(SHIFTFORDIV255(t) >> 7);
        t = s[2] * coef1 + (uint32_t)db * coef2 + (0x80u << 7); o[2] = (uint8_t)(SHIFTFORDIV255(t) >> 7);
#undef SHIFTFORDIV255
    }
    rc = 0;
done:
    if (rc) sdb_image_free(out);
    sdb_image_free(&ml);
    sdb_image_free(&src);
    sdb_image_free(&gen);
    sdb_image_free(&dst);
    return rc;
}
