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
