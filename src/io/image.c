/*
 * image.c — sdb_image basics, Pillow-compatible pixel conversions and format dispatch
 * (see image.h). PNG lives in png.c, JPEG in jpeg.c; both decode into the "keep" layout and
 * this file applies the requested conversion.
 */
#include "sdb/image.h"
#include "image_internal.h"
#include "sdb/fsutil.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

int sdb_image_alloc(sdb_image *im, int w, int h, int c, sdb_err *err)
{
    memset(im, 0, sizeof *im);
    if (w <= 0 || h <= 0 || (c != 1 && c != 3 && c != 4))
        return sdb_fail(err, SDB_EINVAL, "invalid image size %dx%dx%d", w, h, c);
    size_t n = (size_t)w * (size_t)h * (size_t)c;
    if (n / (size_t)c / (size_t)h != (size_t)w)
        return sdb_fail(err, SDB_EINVAL, "image size %dx%dx%d overflows", w, h, c);
    im->px = calloc(n, 1);
    if (!im->px) return sdb_fail(err, SDB_ENOMEM, "out of memory for a %dx%d image", w, h);
    im->w = w; im->h = h; im->c = c;
    return 0;
}

void sdb_image_free(sdb_image *im)
{
    if (!im) return;
    free(im->px);
    memset(im, 0, sizeof *im);
}

int sdb_image_copy(const sdb_image *in, sdb_image *out, sdb_err *err)
{
    sdb_image t;
    int rc = sdb_image_alloc(&t, in->w, in->h, in->c, err);
    if (rc) { memset(out, 0, sizeof *out); return rc; }
    memcpy(t.px, in->px, (size_t)in->w * in->h * in->c);
    *out = t;
    return 0;
}

int sdb_image_to_rgb(const sdb_image *in, sdb_image *out, sdb_err *err)
{
    sdb_image t;
    int rc = sdb_image_alloc(&t, in->w, in->h, 3, err);
    if (rc) { memset(out, 0, sizeof *out); return rc; }
    size_t n = (size_t)in->w * in->h;
    const uint8_t *s = in->px;
    uint8_t *d = t.px;
    switch (in->c) {
    case 1:
        for (size_t i = 0; i < n; i++) d[3 * i] = d[3 * i + 1] = d[3 * i + 2] = s[i];
        break;
    case 3:
        memcpy(d, s, n * 3);
        break;
    case 4: /* Pillow rgba2rgb: alpha dropped, no compositing */
        for (size_t i = 0; i < n; i++) {
            d[3 * i] = s[4 * i]; d[3 * i + 1] = s[4 * i + 1]; d[3 * i + 2] = s[4 * i + 2];
        }
        break;
    default:
        sdb_image_free(&t);
        memset(out, 0, sizeof *out);
        return sdb_fail(err, SDB_EINVAL, "to_rgb: unsupported channel count %d", in->c);
    }
    *out = t;
    return 0;
}

int sdb_image_to_l(const sdb_image *in, sdb_image *out, sdb_err *err)
{
    if (in->c != 1 && in->c != 3 && in->c != 4) {
        memset(out, 0, sizeof *out);
        return sdb_fail(err, SDB_EINVAL, "to_l: unsupported channel count %d", in->c);
    }
    sdb_image t;
    int rc = sdb_image_alloc(&t, in->w, in->h, 1, err);
    if (rc) { memset(out, 0, sizeof *out); return rc; }
    size_t n = (size_t)in->w * in->h;
    const uint8_t *s = in->px;
    if (in->c == 1) memcpy(t.px, s, n);
    else
        for (size_t i = 0; i < n; i++, s += in->c) t.px[i] = sdb_rgb_to_l(s[0], s[1], s[2]);
    *out = t;
    return 0;
}

static const uint8_t PNG_MAGIC[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

static int load_memory(const void *buf, size_t n, const char *name, sdb_image *out,
                       int want_channels, long max_pixels, int flags, sdb_err *err)
{
    memset(out, 0, sizeof *out);
    if (!name) name = "<memory>";
    if (want_channels != 0 && want_channels != 1 && want_channels != 3)
        return sdb_fail(err, SDB_EINVAL, "%s: want_channels must be 0, 1 or 3 (got %d)", name, want_channels);
    if (max_pixels <= 0) max_pixels = SDB_IMAGE_DEFAULT_MAX_PIXELS;
    const uint8_t *b = buf;
    sdb_image raw;
    int rc;
    if (n >= 8 && memcmp(b, PNG_MAGIC, 8) == 0)
        rc = sdb_png_decode_raw(b, n, name, &raw, max_pixels, flags, err);
    else if (n >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF)
        rc = sdb_jpeg_decode_raw(b, n, name, &raw, max_pixels, err);
    else if (n == 0)
        return sdb_fail(err, SDB_EFORMAT, "%s: empty file, not an image", name);
    else
        return sdb_fail(err, SDB_EFORMAT, "%s: not a PNG or JPEG file (unrecognised magic bytes)", name);
    if (rc) return rc;
    if (want_channels == 0 || want_channels == raw.c) { *out = raw; return 0; }
    if (want_channels == 1) rc = sdb_image_to_l(&raw, out, err);
    else rc = sdb_image_to_rgb(&raw, out, err);
    sdb_image_free(&raw);
    if (rc) sdb_err_prefix(err, "%s", name);
    return rc;
}

int sdb_image_load_memory(const void *buf, size_t n, const char *name, sdb_image *out,
                          int want_channels, long max_pixels, sdb_err *err)
{
    return load_memory(buf, n, name, out, want_channels, max_pixels, 0, err);
}

int sdb_image_load_ex(const char *path, sdb_image *out, int want_channels, long max_pixels, int flags, sdb_err *err)
{
    memset(out, 0, sizeof *out);
    char *data = NULL;
    size_t len = 0;
    int rc = sdb_read_file(path, &data, &len, err);
    if (rc) return rc;
    rc = load_memory(data, len, path, out, want_channels, max_pixels, flags, err);
    free(data);
    return rc;
}

int sdb_image_load(const char *path, sdb_image *out, int want_channels, long max_pixels, sdb_err *err)
{
    return sdb_image_load_ex(path, out, want_channels, max_pixels, 0, err);
}

/* ---- output formats (issue 17: the output's extension names its format) ------------------------ */

int sdb_image_format_of_path(const char *path)
{
    const char *dot = path ? strrchr(path, '.') : NULL;
    if (!dot || strchr(dot, '/')) return -1;
    if (!strcasecmp(dot, ".png")) return SDB_FMT_PNG;
    if (!strcasecmp(dot, ".jpg") || !strcasecmp(dot, ".jpeg")) return SDB_FMT_JPEG;
    return -1;
}

int sdb_image_encode_for_path(const char *path, const sdb_image *im, const char *parameters, int jpeg_quality,
                              uint8_t **out, size_t *out_len, sdb_err *err)
{
    *out = NULL;
    *out_len = 0;
    int fmt = sdb_image_format_of_path(path);
    if (fmt == SDB_FMT_JPEG)
        return sdb_jpeg_encode(im, jpeg_quality > 0 ? jpeg_quality : SDB_JPEG_QUALITY_DEFAULT, parameters, out, out_len, err);
    if (fmt != SDB_FMT_PNG)
        return sdb_fail(err, SDB_EINVAL, "%s: the output must end in .png, .jpg or .jpeg", path ? path : "?");
    const char *keys[1] = {"parameters"}, *vals[1] = {parameters ? parameters : ""};
    return sdb_png_encode(im, keys, vals, parameters ? 1 : 0, out, out_len, err);
}

int sdb_image_write(const char *path, const sdb_image *im, const char *parameters, int jpeg_quality, sdb_err *err)
{
    uint8_t *buf = NULL;
    size_t n = 0;
    int rc = sdb_image_encode_for_path(path, im, parameters, jpeg_quality, &buf, &n, err);
    if (rc) return sdb_err_prefix(err, "%s", path);
    rc = sdb_write_file_atomic(path, buf, n, err);
    free(buf);
    return rc;
}
