/*
 * color.c — AUTOMATIC1111's colour correction (see sdb/color.h): OpenCV's 8-bit RGB <-> LAB,
 * skimage's histogram matching and the LUMINOSITY blend of the blendmodes package, re-implemented
 * from their definitions. Owns nothing beyond each call's output.
 */
#include "sdb/color.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static double srgb_to_linear(double v) { return v > 0.04045 ? pow((v + 0.055) / 1.055, 2.4) : v / 12.92; }
static double linear_to_srgb(double v) { return v > 0.0031308 ? 1.055 * pow(v, 1.0 / 2.4) - 0.055 : 12.92 * v; }
static uint8_t sat8(double v) { v = nearbyint(v); return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v); }

/* OpenCV's constants (color_lab.cpp): sRGB -> XYZ (D65), the white point, the LAB thresholds */
#define WX 0.950456
#define WZ 1.088754
#define T0 0.008856
static double lab_f(double t) { return t > T0 ? cbrt(t) : 7.787 * t + 16.0 / 116.0; }

void sdb_rgb_to_lab8(const uint8_t rgb[3], uint8_t lab[3])
{
    double r = srgb_to_linear(rgb[0] / 255.0), g = srgb_to_linear(rgb[1] / 255.0), b = srgb_to_linear(rgb[2] / 255.0);
    double X = (0.412453 * r + 0.357580 * g + 0.180423 * b) / WX;
    double Y = 0.212671 * r + 0.715160 * g + 0.072169 * b;
    double Z = (0.019334 * r + 0.119193 * g + 0.950227 * b) / WZ;
    double fy = lab_f(Y);
    double L = Y > T0 ? 116.0 * fy - 16.0 : 903.3 * Y;
    lab[0] = sat8(L * 255.0 / 100.0);
    lab[1] = sat8(500.0 * (lab_f(X) - fy) + 128.0);
    lab[2] = sat8(200.0 * (fy - lab_f(Z)) + 128.0);
}

void sdb_lab8_to_rgb(const uint8_t lab[3], uint8_t rgb[3])
{
    double L = lab[0] * 100.0 / 255.0, a = lab[1] - 128.0, b = lab[2] - 128.0;
    double Y, fy;
    if (L <= 903.3 * T0) { Y = L / 903.3; fy = 7.787 * Y + 16.0 / 116.0; }
    else { fy = (L + 16.0) / 116.0; Y = fy * fy * fy; }
    double fx = fy + a / 500.0, fz = fy - b / 200.0, ft = cbrt(T0);
    double X = fx > ft ? fx * fx * fx : (fx - 16.0 / 116.0) / 7.787;
    double Z = fz > ft ? fz * fz * fz : (fz - 16.0 / 116.0) / 7.787;
    X *= WX;
    Z *= WZ;
    double c[3] = {3.240479 * X - 1.53715 * Y - 0.498535 * Z,
                   -0.969256 * X + 1.875991 * Y + 0.041556 * Z,
                   0.055648 * X - 0.204043 * Y + 1.057311 * Z};
    for (int k = 0; k < 3; k++) {
        double v = c[k] < 0 ? 0 : c[k] > 1 ? 1 : c[k];
        rgb[k] = sat8(linear_to_srgb(v) * 255.0);
    }
}

void sdb_match_histogram_u8(uint8_t *src, size_t n_src, size_t src_stride,
                            const uint8_t *ref, size_t n_ref, size_t ref_stride)
{
    if (!n_src || !n_ref) return;
    size_t hs[256] = {0}, hr[256] = {0};
    for (size_t i = 0; i < n_src; i++) hs[src[i * src_stride]]++;
    for (size_t i = 0; i < n_ref; i++) hr[ref[i * ref_stride]]++;
    /* the reference's distinct values and cumulative quantiles (np.unique + cumsum / size) */
    double rq[256], rv[256];
    int nr = 0;
    size_t cum = 0;
    for (int v = 0; v < 256; v++)
        if (hr[v]) { cum += hr[v]; rq[nr] = (double)cum / (double)n_ref; rv[nr] = v; nr++; }
    uint8_t map[256];
    cum = 0;
    for (int v = 0; v < 256; v++) {
        if (!hs[v]) { map[v] = 0; continue; }
        cum += hs[v];
        double q = (double)cum / (double)n_src, val;
        /* np.interp(q, rq, rv): clamp outside, linear between */
        if (q <= rq[0]) val = rv[0];
        else if (q >= rq[nr - 1]) val = rv[nr - 1];
        else {
            int j = 1;
            while (rq[j] < q) j++;
            val = rv[j - 1] + (rv[j] - rv[j - 1]) * (q - rq[j - 1]) / (rq[j] - rq[j - 1]);
        }
        map[v] = (uint8_t)(val < 0 ? 0 : val > 255 ? 255 : (int)val);   /* float -> uint8: truncation */
    }
    for (size_t i = 0; i < n_src; i++) src[i * src_stride] = map[src[i * src_stride]];
}

/* W3C compositing's non-separable helpers, on [0, 1] RGB */
static double lum(const double c[3]) { return 0.3 * c[0] + 0.59 * c[1] + 0.11 * c[2]; }
static void set_lum(double c[3], double l)
{
    double d = l - lum(c);
    for (int k = 0; k < 3; k++) c[k] += d;
    double L = lum(c), n = fmin(c[0], fmin(c[1], c[2])), x = fmax(c[0], fmax(c[1], c[2]));
    if (n < 0) for (int k = 0; k < 3; k++) c[k] = L + (c[k] - L) * L / (L - n);
    if (x > 1) for (int k = 0; k < 3; k++) c[k] = L + (c[k] - L) * (1 - L) / (x - L);
}

int sdb_color_correct(const sdb_image *image, const sdb_image *reference, int lab_only,
                      sdb_image *out, sdb_err *err)
{
    memset(out, 0, sizeof *out);
    if (!image || image->c != 3 || !reference || reference->c != 3)
        return sdb_fail(err, SDB_EINVAL, "color_match: RGB images are needed");
    size_t n = (size_t)image->w * image->h, nr = (size_t)reference->w * reference->h;
    uint8_t *ref_lab = malloc(nr * 3);
    int rc = sdb_image_alloc(out, image->w, image->h, 3, err);
    if (rc || !ref_lab) {
        free(ref_lab);
        sdb_image_free(out);
        return rc ? rc : sdb_fail(err, SDB_ENOMEM, "color_match: out of memory");
    }
    for (size_t i = 0; i < nr; i++) sdb_rgb_to_lab8(reference->px + 3 * i, ref_lab + 3 * i);
    for (size_t i = 0; i < n; i++) sdb_rgb_to_lab8(image->px + 3 * i, out->px + 3 * i);
    for (int c = 0; c < 3; c++) sdb_match_histogram_u8(out->px + c, n, 3, ref_lab + c, nr, 3);
    free(ref_lab);
    if (lab_only) return 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t rgb[3];
        sdb_lab8_to_rgb(out->px + 3 * i, rgb);
        double cb[3] = {rgb[0] / 255.0, rgb[1] / 255.0, rgb[2] / 255.0};
        double cs[3] = {image->px[3 * i] / 255.0, image->px[3 * i + 1] / 255.0, image->px[3 * i + 2] / 255.0};
        set_lum(cb, lum(cs));   /* LUMINOSITY: the corrected colour, the original's luminosity */
        for (int k = 0; k < 3; k++) out->px[3 * i + k] = sat8(cb[k] * 255.0);
    }
    return 0;
}
