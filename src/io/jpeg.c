/*
 * jpeg.c — JPEG decoding with libjpeg-turbo, configured as Pillow configures it (see image.h).
 *
 * Pillow leaves the decompressor at its defaults (JDCT_ISLOW, fancy upsampling, no scaling), asks
 * for JCS_GRAYSCALE / JCS_RGB / JCS_CMYK by component count, and treats running out of data as an
 * error ("image file is truncated"); other libjpeg warnings (extraneous bytes, ...) are tolerated.
 * Errors longjmp back through a custom error manager; the state lives in a struct owned by the
 * caller of the setjmp function.
 */
#include "sdb/image.h"
#include "image_internal.h"

#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <jerror.h>

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jb;
    char msg[JMSG_LENGTH_MAX + 64];
} jerr_mgr;

static void on_jpeg_error(j_common_ptr ci)
{
    jerr_mgr *e = (jerr_mgr *)ci->err;
    char buf[JMSG_LENGTH_MAX];
    (*ci->err->format_message)(ci, buf);
    snprintf(e->msg, sizeof e->msg, "%s", buf);
    longjmp(e->jb, 1);
}

static void on_jpeg_message(j_common_ptr ci, int level)
{
    jerr_mgr *e = (jerr_mgr *)ci->err;
    if (level < 0) {
        if (ci->err->msg_code == JWRN_JPEG_EOF) {
            snprintf(e->msg, sizeof e->msg, "file is truncated (premature end of JPEG data)");
            longjmp(e->jb, 1);
        }
        ci->err->num_warnings++;
    }
}

static void on_jpeg_output(j_common_ptr ci) { (void)ci; }

typedef struct {
    struct jpeg_decompress_struct ci;
    jerr_mgr jerr;
    int created;
    const uint8_t *buf;
    size_t n;
    const char *name;
    long max_pixels;
    sdb_err *err;
    int rc;
    uint8_t *pix, *line;
    sdb_image img;
} jpeg_dec;

static int jpeg_decode_inner(jpeg_dec *d)
{
    if (setjmp(d->jerr.jb)) return -1;
    struct jpeg_decompress_struct *ci = &d->ci;
    jpeg_create_decompress(ci);
    d->created = 1;
    jpeg_mem_src(ci, d->buf, (unsigned long)d->n);
    jpeg_read_header(ci, TRUE);
    long long npx = (long long)ci->image_width * ci->image_height;
    if (npx > (long long)d->max_pixels)
        return d->rc = sdb_fail(d->err, SDB_EUNSUPPORTED, "%s: image is %ux%u = %lld pixels, more than the limit of %ld",
                                d->name, (unsigned)ci->image_width, (unsigned)ci->image_height, npx, d->max_pixels);
    int ncomp = ci->num_components, c;
    if (ncomp == 1) { ci->out_color_space = JCS_GRAYSCALE; c = 1; }
    else if (ncomp == 3) { ci->out_color_space = JCS_RGB; c = 3; }
    else if (ncomp == 4) { ci->out_color_space = JCS_CMYK; c = 3; }
    else
        return d->rc = sdb_fail(d->err, SDB_EUNSUPPORTED, "%s: JPEG with %d components is not supported", d->name, ncomp);
    jpeg_start_decompress(ci);
    int w = (int)ci->output_width, h = (int)ci->output_height, oc = ci->output_components;
    d->pix = malloc((size_t)w * h * c);
    d->line = malloc((size_t)w * oc);
    if (!d->pix || !d->line)
        return d->rc = sdb_fail(d->err, SDB_ENOMEM, "%s: out of memory for a %dx%d JPEG", d->name, w, h);
    while ((int)ci->output_scanline < h) {
        int y = (int)ci->output_scanline;
        JSAMPROW row = d->line;
        if (jpeg_read_scanlines(ci, &row, 1) != 1) {
            snprintf(d->jerr.msg, sizeof d->jerr.msg, "no data for line %d", y);
            return -1;
        }
        uint8_t *o = d->pix + (size_t)y * w * c;
        if (ncomp != 4) {
            memcpy(o, d->line, (size_t)w * c);
        } else {
            /* Pillow: rawmode "CMYK;I" inverts every component, then cmyk2rgb. */
            for (int x = 0; x < w; x++) {
                const uint8_t *s = d->line + 4 * x;
                int nk = s[3]; /* 255 - (255 - k_raw) */
                for (int j = 0; j < 3; j++) o[3 * x + j] = sdb_clip8(nk - sdb_muldiv255(255 - s[j], nk));
            }
        }
    }
    jpeg_finish_decompress(ci);
    d->img.w = w; d->img.h = h; d->img.c = c; d->img.px = d->pix;
    d->pix = NULL;
    return 0;
}

int sdb_jpeg_decode_raw(const uint8_t *buf, size_t n, const char *name, sdb_image *out,
                        long max_pixels, sdb_err *err)
{
    memset(out, 0, sizeof *out);
    jpeg_dec *d = calloc(1, sizeof *d);
    if (!d) return sdb_fail(err, SDB_ENOMEM, "%s: out of memory", name);
    d->buf = buf; d->n = n; d->name = name; d->max_pixels = max_pixels; d->err = err;
    d->ci.err = jpeg_std_error(&d->jerr.pub);
    d->jerr.pub.error_exit = on_jpeg_error;
    d->jerr.pub.emit_message = on_jpeg_message;
    d->jerr.pub.output_message = on_jpeg_output;
    int r = jpeg_decode_inner(d);
    if (d->created) jpeg_destroy_decompress(&d->ci);
    free(d->pix);
    free(d->line);
    if (r == -1) {
        sdb_image_free(&d->img);
        r = sdb_fail(err, SDB_EFORMAT, "%s: corrupt or truncated JPEG: %s", name, d->jerr.msg);
    } else if (r) {
        sdb_image_free(&d->img);
    } else {
        *out = d->img;
    }
    free(d);
    return r;
}

/* ---- encoding (the `.jpg` / `.jpeg` outputs) ---------------------------------------------------- */

typedef struct {
    struct jpeg_compress_struct ci;
    jerr_mgr jerr;
    int created;
    unsigned char *buf;
    unsigned long len;
} jpeg_enc;

static int jpeg_encode_inner(jpeg_enc *e, const sdb_image *im, int quality, const char *comment)
{
    if (setjmp(e->jerr.jb)) return -1;
    struct jpeg_compress_struct *ci = &e->ci;
    jpeg_create_compress(ci);
    e->created = 1;
    jpeg_mem_dest(ci, &e->buf, &e->len);
    ci->image_width = (JDIMENSION)im->w;
    ci->image_height = (JDIMENSION)im->h;
    int c = im->c == 1 ? 1 : 3;
    ci->input_components = c;
    ci->in_color_space = c == 1 ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_set_defaults(ci);   /* 4:2:0 for colour, as Pillow's default */
    jpeg_set_quality(ci, quality, TRUE);
    jpeg_start_compress(ci, TRUE);
    if (comment && comment[0])
        jpeg_write_marker(ci, JPEG_COM, (const JOCTET *)comment, (unsigned)strnlen(comment, 65533));
    unsigned char line_buf[3 * 8192];
    unsigned char *line = im->w <= 8192 ? line_buf : NULL;
    if (!line) line = malloc((size_t)im->w * 3);
    if (!line) { snprintf(e->jerr.msg, sizeof e->jerr.msg, "out of memory"); return -1; }
    while (ci->next_scanline < ci->image_height) {
        const uint8_t *s = im->px + (size_t)ci->next_scanline * im->w * im->c;
        for (int x = 0; x < im->w; x++)   /* RGBA: the colour only (JPEG has no alpha) */
            memcpy(line + (size_t)x * c, s + (size_t)x * im->c, (size_t)c);
        JSAMPROW row = line;
        jpeg_write_scanlines(ci, &row, 1);
    }
    if (line != line_buf) free(line);
    jpeg_finish_compress(ci);
    return 0;
}

int sdb_jpeg_encode(const sdb_image *im, int quality, const char *comment, uint8_t **out, size_t *out_len,
                    sdb_err *err)
{
    *out = NULL;
    *out_len = 0;
    if (!im || !im->px || im->w <= 0 || im->h <= 0 || (im->c != 1 && im->c != 3 && im->c != 4))
        return sdb_fail(err, SDB_EINVAL, "JPEG: bad image");
    if (quality < 1 || quality > 100) return sdb_fail(err, SDB_EINVAL, "jpeg_quality: must be 1..100, got %d", quality);
    if (im->w > 65500 || im->h > 65500) return sdb_fail(err, SDB_EUNSUPPORTED, "JPEG: %dx%d is larger than JPEG allows", im->w, im->h);
    jpeg_enc *e = calloc(1, sizeof *e);
    if (!e) return sdb_fail(err, SDB_ENOMEM, "JPEG: out of memory");
    e->ci.err = jpeg_std_error(&e->jerr.pub);
    e->jerr.pub.error_exit = on_jpeg_error;
    e->jerr.pub.output_message = on_jpeg_output;
    int r = jpeg_encode_inner(e, im, quality, comment);
    if (e->created) jpeg_destroy_compress(&e->ci);
    if (r) {
        free(e->buf);
        r = sdb_fail(err, SDB_EIO, "JPEG encoding failed: %s", e->jerr.msg);
    } else {
        *out = e->buf;
        *out_len = e->len;
    }
    free(e);
    return r;
}
