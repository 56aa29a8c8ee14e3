/*
 * mask.c — mask dilation and blur, A1111's masked-content fill, the mask-weighted composite and
 * alpha masks (see sdb/mask.h). Owns nothing: every function writes a new image (or edits one in
 * place, said so) and frees its own scratch.
 *
 * References (their semantics, re-implemented): AUTOMATIC1111 modules/processing.py (mask blur:
 * kernel 2 * int(2.5 n + 0.5) + 1, sigma n, x then y), modules/masking.py (fill); Pillow's
 * BoxBlur.c (GaussianBlur as three box blurs with a fractional radius).
 */
#include "sdb/mask.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static int check_mask(const sdb_image *m, const char *what, sdb_err *err)
{
    if (!m || !m->px || m->c != 1 || m->w <= 0 || m->h <= 0)
        return sdb_fail(err, SDB_EINVAL, "%s: the mask must be an 8-bit grayscale image", what);
    return 0;
}

/* ---- dilation -------------------------------------------------------------------------------- */

/* Running max of a line of n values over [i - r, i + r] (clipped), stride s, into out (stride s). */
static void max_line(const uint8_t *in, uint8_t *out, int n, int s, int r)
{
    for (int i = 0; i < n; i++) {
        int a = i - r < 0 ? 0 : i - r, b = i + r >= n ? n - 1 : i + r;
        uint8_t v = 0;
        for (int j = a; j <= b && v != 255; j++) if (in[(size_t)j * s] > v) v = in[(size_t)j * s];
        out[(size_t)i * s] = v;
    }
}

int sdb_mask_dilate(const sdb_image *mask, int n, sdb_image *out, sdb_err *err)
{
    memset(out, 0, sizeof *out);
    int rc = check_mask(mask, "mask_dilate", err);
    if (rc) return rc;
    if (n < 0) return sdb_fail(err, SDB_EINVAL, "mask_dilate: must be >= 0, got %d", n);
    if (n == 0) return sdb_image_copy(mask, out, err);
    sdb_image tmp = {0};
    if ((rc = sdb_image_alloc(&tmp, mask->w, mask->h, 1, err))) return rc;
    if ((rc = sdb_image_alloc(out, mask->w, mask->h, 1, err))) { sdb_image_free(&tmp); return rc; }
    /* the square max is separable: rows, then columns */
    for (int y = 0; y < mask->h; y++)
        max_line(mask->px + (size_t)y * mask->w, tmp.px + (size_t)y * mask->w, mask->w, 1, n);
    for (int x = 0; x < mask->w; x++) max_line(tmp.px + x, out->px + x, mask->h, mask->w, n);
    sdb_image_free(&tmp);
    return 0;
}

/* ---- Gaussian blur (A1111's mask blur) ---------------------------------------------------------- */

int sdb_mask_blur_ksize(int n) { return 2 * (int)(2.5 * n + 0.5) + 1; }

/* cv2's BORDER_REFLECT_101: ... 2 1 | 0 1 2 ... n-1 | n-2 ... */
static int reflect101(int i, int n)
{
    if (n == 1) return 0;
    while (i < 0 || i >= n) {
        if (i < 0) i = -i;
        if (i >= n) i = 2 * n - 2 - i;
    }
    return i;
}

/* One 1-D pass of the normalised kernel k[0..ks) over lines of length n (stride s). */
static void gauss_line(const double *in, double *out, int n, int s, const double *k, int ks)
{
    int r = ks / 2;
    for (int i = 0; i < n; i++) {
        double acc = 0.0;
        for (int j = 0; j < ks; j++) acc += k[j] * in[(size_t)reflect101(i + j - r, n) * s];
        out[(size_t)i * s] = acc;
    }
}

int sdb_mask_blur(const sdb_image *mask, int n, sdb_image *out, sdb_err *err)
{
    memset(out, 0, sizeof *out);
    int rc = check_mask(mask, "mask_blur", err);
    if (rc) return rc;
    if (n < 0) return sdb_fail(err, SDB_EINVAL, "mask_blur: must be >= 0, got %d", n);
    if (n == 0) return sdb_image_copy(mask, out, err);
    int W = mask->w, H = mask->h, ks = sdb_mask_blur_ksize(n);
    size_t np = (size_t)W * H;
    double *k = malloc((size_t)ks * sizeof *k);
    double *a = malloc(np * sizeof *a), *b = malloc(np * sizeof *b);
    if (!k || !a || !b) { free(k); free(a); free(b); return sdb_fail(err, SDB_ENOMEM, "mask_blur: out of memory"); }
    double sum = 0.0, s2 = 2.0 * n * n;
    for (int i = 0; i < ks; i++) {
        double d = i - (ks - 1) / 2.0;
        k[i] = exp(-d * d / s2);
        sum += k[i];
    }
    for (int i = 0; i < ks; i++) k[i] /= sum;
    for (size_t i = 0; i < np; i++) a[i] = mask->px[i];
    for (int y = 0; y < H; y++) gauss_line(a + (size_t)y * W, b + (size_t)y * W, W, 1, k, ks);
    for (int x = 0; x < W; x++) gauss_line(b + x, a + x, H, W, k, ks);
    if ((rc = sdb_image_alloc(out, W, H, 1, err)) == 0)
        for (size_t i = 0; i < np; i++) {
            double v = nearbyint(a[i]);
            out->px[i] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
        }
    free(k); free(a); free(b);
    return rc;
}

/* ---- fill (A1111's masking.fill) -------------------------------------------------------------- */

/* Pillow's _gaussian_blur_radius: the fractional box radius whose `passes` box blurs have the
 * variance of a Gaussian of the given radius (sigma). */
static double box_radius(double radius, int passes)
{
    double sigma2 = radius * radius / passes;
    double L = sqrt(12.0 * sigma2 + 1.0);
    double l = floor((L - 1.0) / 2.0);
    double a = (2 * l + 1) * (l * (l + 1) - 3 * sigma2);
    a /= 6 * (sigma2 - (l + 1) * (l + 1));
    return l + a;
}

/* One box blur of fractional radius r along lines of n values (stride s, 4 interleaved channels),
 * edges extended: out[i] = (sum in[i-l..i+l] + a * (in[i-l-1] + in[i+l+1])) / (2r + 1). */
static void box_line(const float *in, float *out, int n, int s, double r, double *pre)
{
    int l = (int)r;
    double a = r - l, norm = 1.0 / (2.0 * r + 1.0);
    for (int c = 0; c < 4; c++) {
        /* prefix sums over the edge-extended line, indices -l-1 .. n+l */
        int lo = -l - 1, len = n + 2 * l + 2;
        pre[0] = 0.0;
        for (int t = 0; t < len; t++) {
            int i = t + lo;
            int ci = i < 0 ? 0 : i >= n ? n - 1 : i;
            pre[t + 1] = pre[t] + in[(size_t)ci * s * 4 + c];
        }
        for (int i = 0; i < n; i++) {
            /* window [i-l, i+l] -> extended positions t = i-l-lo .. i+l-lo */
            int t0 = i - l - lo, t1 = i + l - lo;
            double v = pre[t1 + 1] - pre[t0];
            int el = i - l - 1 < 0 ? 0 : i - l - 1, er = i + l + 1 >= n ? n - 1 : i + l + 1;
            v += a * (in[(size_t)el * s * 4 + c] + in[(size_t)er * s * 4 + c]);
            out[(size_t)i * s * 4 + c] = (float)(v * norm);
        }
    }
}

/* Pillow's GaussianBlur(radius) of a premultiplied RGBA float image, in place (3 passes per axis). */
static int gaussian_blur_rgba(float *img, int W, int H, double radius, sdb_err *err)
{
    if (radius <= 0) return 0;
    double r = box_radius(radius, 3);
    int l = (int)r, maxn = W > H ? W : H;
    float *tmp = malloc((size_t)W * H * 4 * sizeof *tmp);
    double *pre = malloc(((size_t)maxn + 2 * (size_t)l + 3) * sizeof *pre);
    if (!tmp || !pre) { free(tmp); free(pre); return sdb_fail(err, SDB_ENOMEM, "fill: out of memory"); }
    for (int pass = 0; pass < 3; pass++) {
        for (int y = 0; y < H; y++) box_line(img + (size_t)y * W * 4, tmp + (size_t)y * W * 4, W, 1, r, pre);
        memcpy(img, tmp, (size_t)W * H * 4 * sizeof *img);
    }
    for (int pass = 0; pass < 3; pass++) {
        for (int x = 0; x < W; x++) box_line(img + (size_t)x * 4, tmp + (size_t)x * 4, H, W, r, pre);
        memcpy(img, tmp, (size_t)W * H * 4 * sizeof *img);
    }
    free(tmp); free(pre);
    return 0;
}

int sdb_mask_fill(const sdb_image *image, const sdb_image *mask, sdb_image *out, sdb_err *err)
{
    memset(out, 0, sizeof *out);
    int rc = check_mask(mask, "fill", err);
    if (rc) return rc;
    if (!image || !image->px || image->c != 3 || image->w != mask->w || image->h != mask->h)
        return sdb_fail(err, SDB_EINVAL, "fill: the image must be RGB and the mask's size");
    int W = image->w, H = image->h;
    size_t np = (size_t)W * H;
    static const struct { double radius; int repeats; } steps[] = {{256, 1}, {64, 1}, {16, 2}, {4, 4}, {2, 2}, {0, 1}};
    float *src = malloc(np * 4 * sizeof *src), *blur = malloc(np * 4 * sizeof *blur);
    float *acc = calloc(np * 4, sizeof *acc);   /* the result, premultiplied; starts transparent */
    if (!src || !blur || !acc) { rc = sdb_fail(err, SDB_ENOMEM, "fill: out of memory"); goto done; }
    /* the image premultiplied by alpha = 255 - mask ("RGBa" pasted through the inverted mask) */
    for (size_t i = 0; i < np; i++) {
        float a = (float)(255 - mask->px[i]) / 255.0f;
        for (int c = 0; c < 3; c++) src[4 * i + c] = image->px[3 * i + c] / 255.0f * a;
        src[4 * i + 3] = a;
    }
    for (size_t s = 0; s < sizeof steps / sizeof steps[0]; s++) {
        memcpy(blur, src, np * 4 * sizeof *blur);
        if ((rc = gaussian_blur_rgba(blur, W, H, steps[s].radius, err))) goto done;
        for (int rep = 0; rep < steps[s].repeats; rep++)
            for (size_t i = 0; i < np; i++) {   /* premultiplied "over" = alpha_composite */
                float ia = 1.0f - blur[4 * i + 3];
                for (int c = 0; c < 4; c++) acc[4 * i + c] = blur[4 * i + c] + acc[4 * i + c] * ia;
            }
    }
    if ((rc = sdb_image_alloc(out, W, H, 3, err))) goto done;
    for (size_t i = 0; i < np; i++) {
        float a = acc[4 * i + 3];
        if (mask->px[i] == 0) {   /* alpha 1 in the last (radius 0) layer: the pixel itself */
            memcpy(out->px + 3 * i, image->px + 3 * i, 3);
            continue;
        }
        for (int c = 0; c < 3; c++) {
            float v = a > 0.0f ? acc[4 * i + c] / a * 255.0f : 0.0f;
            out->px[3 * i + c] = (uint8_t)(v <= 0.0f ? 0 : v >= 255.0f ? 255 : (int)lrintf(v));
        }
    }
done:
    free(src); free(blur); free(acc);
    if (rc) sdb_image_free(out);
    return rc;
}

/* ---- composite, alpha ------------------------------------------------------------------------ */

int sdb_mask_composite(const sdb_image *orig, const sdb_image *gen, const sdb_image *mask,
                       sdb_image *out, sdb_err *err)
{
    memset(out, 0, sizeof *out);
    int rc = check_mask(mask, "composite", err);
    if (rc) return rc;
    if (!orig || !gen || orig->w != gen->w || orig->h != gen->h || orig->c != gen->c ||
        mask->w != orig->w || mask->h != orig->h)
        return sdb_fail(err, SDB_EINVAL, "composite: the original, generated image and mask differ in size");
    if ((rc = sdb_image_alloc(out, orig->w, orig->h, orig->c, err))) return rc;
    size_t np = (size_t)orig->w * orig->h;
    int c = orig->c;
    for (size_t i = 0; i < np; i++) {
        int m = mask->px[i];
        const uint8_t *o = orig->px + i * c, *g = gen->px + i * c;
        uint8_t *d = out->px + i * c;
        if (m == 0) memcpy(d, o, (size_t)c);
        else if (m == 255) memcpy(d, g, (size_t)c);
        else for (int k = 0; k < c; k++) d[k] = (uint8_t)((o[k] * (255 - m) + g[k] * m + 127) / 255);
    }
    return 0;
}

int sdb_mask_from_alpha(const sdb_image *rgba, sdb_image *out, sdb_err *err)
{
    memset(out, 0, sizeof *out);
    if (!rgba || rgba->c != 4)
        return sdb_fail(err, SDB_EINVAL, "mask: alpha needs an image with an alpha channel (RGBA or gray+alpha PNG)");
    int rc = sdb_image_alloc(out, rgba->w, rgba->h, 1, err);
    if (rc) return rc;
    size_t np = (size_t)rgba->w * rgba->h;
    for (size_t i = 0; i < np; i++) out->px[i] = (uint8_t)(255 - rgba->px[4 * i + 3]);
    return 0;
}

void sdb_mask_double(sdb_image *mask)
{
    assert(mask->c == 1);
    size_t np = (size_t)mask->w * mask->h;
    for (size_t i = 0; i < np; i++) mask->px[i] = (uint8_t)(mask->px[i] >= 128 ? 255 : 2 * mask->px[i]);
}

int sdb_image_with_alpha(const sdb_image *rgb, const sdb_image *alpha_src, sdb_image *out, sdb_err *err)
{
    memset(out, 0, sizeof *out);
    if (!rgb || rgb->c != 3 || !alpha_src || alpha_src->c != 4 || rgb->w != alpha_src->w || rgb->h != alpha_src->h)
        return sdb_fail(err, SDB_EINVAL, "alpha: an RGB image and an RGBA one of the same size are needed");
    int rc = sdb_image_alloc(out, rgb->w, rgb->h, 4, err);
    if (rc) return rc;
    size_t np = (size_t)rgb->w * rgb->h;
    for (size_t i = 0; i < np; i++) {
        memcpy(out->px + 4 * i, rgb->px + 3 * i, 3);
        out->px[4 * i + 3] = alpha_src->px[4 * i + 3];
    }
    return 0;
}
