/*
 * png.c — PNG decoding (Pillow's mode mapping), deterministic PNG writing with tEXt/iTXt, and
 * reading text chunks back (see image.h).
 *
 * libpng reports errors by longjmp: each entry point keeps all its state in a struct it owns and
 * calls a small *_inner function that does the setjmp, so no automatic variable of a setjmp
 * function changes between setjmp and longjmp; the caller releases everything on both paths. No libpng transformations
 * except interlace handling are requested: rows arrive packed exactly as stored and the sample
 * unpacking (bit depths 1/2/4/16, palette lookup) is done here, the way Pillow's unpackers do it.
 */
#include "sdb/image.h"
#include "image_internal.h"
#include "sdb/fsutil.h"

#include <png.h>
#include <utf8proc.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char msg[512];
} png_errctx;

static void on_png_error(png_structp png, png_const_charp msg)
{
    png_errctx *c = png_get_error_ptr(png);
    if (c) snprintf(c->msg, sizeof c->msg, "%s", msg ? msg : "unknown libpng error");
    png_longjmp(png, 1);
}

static void on_png_warning(png_structp png, png_const_charp msg)
{
    (void)png; (void)msg; /* ancillary problems (bad iCCP, CRC of ancillary chunks...) are ignored, as Pillow does */
}

typedef struct {
    const uint8_t *p;
    size_t n, off;
} mem_reader;

static void mem_read(png_structp png, png_bytep out, png_size_t len)
{
    mem_reader *r = png_get_io_ptr(png);
    if (len > r->n - r->off) png_error(png, "file is truncated");
    memcpy(out, r->p + r->off, len);
    r->off += len;
}

/* libpng allocates an ancillary chunk (tEXt, iCCP, ...) at the size its header claims, and clears
 * it, before reading its data; the cap it offers (png_set_chunk_malloc_max) is only a benign error,
 * i.e. a warning, for a reader. So 200 bytes claiming a 2 GB tEXt chunk made it allocate and clear
 * 2 GB before finding the file short (found by fuzz_png_text). chunks_fit() walks the chunk
 * headers of the buffer first, up to the first IDAT (all libpng reads before the pixels) or up to
 * IEND (for the text reader, which reads to the end): a chunk that claims more bytes than the file
 * has left is refused as the truncation libpng would report after the allocation. Returns 0 or -1
 * with the reason in why. */
static int chunks_fit(const uint8_t *p, size_t n, int until_idat, char *why, size_t why_len)
{
    size_t off = 8;
    while (off + 8 <= n) {
        uint32_t len = (uint32_t)p[off] << 24 | (uint32_t)p[off + 1] << 16 | (uint32_t)p[off + 2] << 8 | p[off + 3];
        char type[5];
        for (int i = 0; i < 4; i++) {
            uint8_t c = p[off + 4 + i];
            type[i] = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ? (char)c : '?';
        }
        type[4] = '\0';
        if (!strcmp(type, "IEND") || (until_idat && !strcmp(type, "IDAT"))) return 0;
        if (len > n - off - 8 || n - off - 8 - len < 4) {
            snprintf(why, why_len, "chunk '%s' at byte %zu claims %u bytes, more than the file holds (file is truncated)",
                     type, off, (unsigned)len);
            return -1;
        }
        off += 12 + (size_t)len;
    }
    return 0;
}

/* A cap on what libpng allocates for one chunk once decompressed (zTXt / iTXt / iCCP bombs): the
 * larger of the file size and 8 MiB (a chunk over it is skipped, as a damaged ancillary chunk). */
static void cap_chunk_alloc(png_structp png, size_t file_len)
{
    size_t cap = file_len > ((size_t)8 << 20) ? file_len : ((size_t)8 << 20);
    png_set_chunk_malloc_max(png, (png_alloc_size_t)cap);
}

/* ---------------------------------------------------------------------------------------------- */
/* decoding                                                                                        */

/* State of one decode; lives in the caller of the setjmp function so nothing in it is an
 * automatic variable of the function that calls setjmp. */
typedef struct {
    png_structp png;
    png_infop info;
    png_errctx ectx;
    mem_reader src;
    const char *name;
    long max_pixels;
    int flags;         /* SDB_LOAD_* */
    sdb_err *err;
    int rc;            /* set for non-libpng failures (too large, out of memory) */
    uint8_t *raw;
    png_bytep *rows;
    uint8_t *pix;
    sdb_image img;
} png_dec;

static void unpack_rows(png_dec *d, png_uint_32 w, png_uint_32 h, int bd, int ct, int c, uint8_t pal[256][4])
{
    for (png_uint_32 y = 0; y < h; y++) {
        const uint8_t *s = d->rows[y];
        uint8_t *o = d->pix + (size_t)y * w * c;
        switch (ct) {
        case PNG_COLOR_TYPE_GRAY:
            if (bd == 16 && (d->flags & SDB_LOAD_EXACT16)) {
                for (png_uint_32 x = 0; x < w; x++) o[x] = s[2 * x]; /* high byte, as RGB;16B */
            } else if (bd == 16) {
                for (png_uint_32 x = 0; x < w; x++) /* Pillow I;16 / I -> L/RGB clips at 255 */
                    o[x] = s[2 * x] ? 255 : s[2 * x + 1];
            } else if (bd == 8) {
                memcpy(o, s, w);
            } else { /* Pillow "1" (0/255), "L;2" (x 0x55), "L;4" (x 0x11) */
                int per = 8 / bd, mask = (1 << bd) - 1, scale = 255 / mask;
                for (png_uint_32 x = 0; x < w; x++) {
                    int v = (s[x / per] >> (8 - bd * (int)(x % per + 1))) & mask;
                    o[x] = (uint8_t)(v * scale);
                }
            }
            break;
        case PNG_COLOR_TYPE_RGB: /* RGB;16B: high bytes */
            if (bd == 16) for (png_uint_32 i = 0; i < w * 3; i++) o[i] = s[2 * i];
            else memcpy(o, s, (size_t)w * 3);
            break;
        case PNG_COLOR_TYPE_RGB_ALPHA: /* RGBA;16B: high bytes */
            if (bd == 16) for (png_uint_32 i = 0; i < w * 4; i++) o[i] = s[2 * i];
            else memcpy(o, s, (size_t)w * 4);
            break;
        case PNG_COLOR_TYPE_GRAY_ALPHA: { /* LA (8-bit) and LA;16B -> RGBA (high bytes) */
            int step = bd == 16 ? 2 : 1;
            for (png_uint_32 x = 0; x < w; x++) {
                uint8_t l = s[2 * step * x], a = s[2 * step * x + step];
                o[4 * x] = o[4 * x + 1] = o[4 * x + 2] = l;
                o[4 * x + 3] = a;
            }
            break;
        }
        case PNG_COLOR_TYPE_PALETTE: {
            int per = 8 / bd, mask = (1 << bd) - 1;
            for (png_uint_32 x = 0; x < w; x++) {
                int idx = bd == 8 ? s[x] : (s[x / per] >> (8 - bd * (int)(x % per + 1))) & mask;
                memcpy(o + (size_t)c * x, pal[idx], (size_t)c);
            }
            break;
        }
        }
    }
}

/* Returns 0 on success, -1 after a libpng error (message in d->ectx), or d->rc (< 0). */
static int png_decode_inner(png_dec *d)
{
    if (setjmp(png_jmpbuf(d->png))) return -1;
    png_structp png = d->png;
    png_infop info = d->info;
    png_set_read_fn(png, &d->src, mem_read);
    png_read_info(png, info);

    png_uint_32 w, h;
    int bd, ct, il;
    png_get_IHDR(png, info, &w, &h, &bd, &ct, &il, NULL, NULL);
    if ((long long)w * (long long)h > (long long)d->max_pixels)
        return d->rc = sdb_fail(d->err, SDB_EUNSUPPORTED, "%s: image is %ux%u = %lld pixels, more than the limit of %ld",
                                d->name, (unsigned)w, (unsigned)h, (long long)w * h, d->max_pixels);
    /* Palette (entries past PLTE are black, as current Pillow zero-fills) and its tRNS alphas. */
    uint8_t pal[256][4];
    memset(pal, 0, sizeof pal);
    for (int i = 0; i < 256; i++) pal[i][3] = 255;
    int has_trns = 0;
    if (ct == PNG_COLOR_TYPE_PALETTE) {
        png_colorp plte = NULL;
        int nplte = 0;
        if (!png_get_PLTE(png, info, &plte, &nplte)) png_error(png, "palette image without PLTE chunk");
        for (int i = 0; i < nplte && i < 256; i++) {
            pal[i][0] = plte[i].red; pal[i][1] = plte[i].green; pal[i][2] = plte[i].blue;
        }
        png_bytep ta = NULL;
        int nt = 0;
        png_color_16p tc = NULL;
        if (png_get_tRNS(png, info, &ta, &nt, &tc) && ta && nt > 0) {
            has_trns = 1;
            for (int i = 0; i < nt && i < 256; i++) pal[i][3] = ta[i];
        }
    }
    int c;
    switch (ct) {
    case PNG_COLOR_TYPE_GRAY: c = 1; break;
    case PNG_COLOR_TYPE_RGB: c = 3; break;
    case PNG_COLOR_TYPE_PALETTE: c = has_trns ? 4 : 3; break;
    case PNG_COLOR_TYPE_GRAY_ALPHA: c = 4; break;
    case PNG_COLOR_TYPE_RGB_ALPHA: c = 4; break;
    default: png_error(png, "unknown color type"); return -1;
    }

    (void)png_set_interlace_handling(png);
    png_read_update_info(png, info);
    size_t rowbytes = png_get_rowbytes(png, info);
    d->raw = malloc(rowbytes * (size_t)h);
    d->rows = malloc(sizeof(png_bytep) * (size_t)h);
    d->pix = malloc((size_t)w * h * c);
    if (!d->raw || !d->rows || !d->pix)
        return d->rc = sdb_fail(d->err, SDB_ENOMEM, "%s: out of memory for a %ux%u PNG", d->name, (unsigned)w, (unsigned)h);
    for (png_uint_32 y = 0; y < h; y++) d->rows[y] = d->raw + rowbytes * y;
    png_read_image(png, d->rows);
    /* png_read_end is not needed for the pixels; like Pillow, a missing IEND is tolerated. */
    unpack_rows(d, w, h, bd, ct, c, pal);
    d->img.w = (int)w; d->img.h = (int)h; d->img.c = c; d->img.px = d->pix;
    d->pix = NULL;
    return 0;
}

int sdb_png_decode_raw(const uint8_t *buf, size_t n, const char *name, sdb_image *out,
                       long max_pixels, int flags, sdb_err *err)
{
    memset(out, 0, sizeof *out);
    char why[160];
    if (chunks_fit(buf, n, 1, why, sizeof why))
        return sdb_fail(err, SDB_EFORMAT, "%s: corrupt or truncated PNG: %s", name, why);
    png_dec d;
    memset(&d, 0, sizeof d);
    d.src.p = buf; d.src.n = n;
    d.name = name; d.max_pixels = max_pixels; d.flags = flags; d.err = err;
    d.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &d.ectx, on_png_error, on_png_warning);
    if (d.png) { cap_chunk_alloc(d.png, n); d.info = png_create_info_struct(d.png); }
    if (!d.png || !d.info) {
        png_destroy_read_struct(&d.png, &d.info, NULL);
        return sdb_fail(err, SDB_ENOMEM, "%s: cannot create PNG reader", name);
    }
    int r = png_decode_inner(&d);
    png_destroy_read_struct(&d.png, &d.info, NULL);
    free(d.raw);
    free(d.rows);
    free(d.pix);
    if (r == -1) {
        sdb_image_free(&d.img);
        return sdb_fail(err, SDB_EFORMAT, "%s: corrupt or truncated PNG: %s", name, d.ectx.msg);
    }
    if (r) { sdb_image_free(&d.img); return r; }
    *out = d.img;
    return 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* text helpers                                                                                    */

/* UTF-8 -> Latin-1 (malloc'd). Returns 1 on success, 0 if some code point is > 255, -1 if the
 * input is not valid UTF-8. */
static int utf8_to_latin1(const char *in, char **out)
{
    const utf8proc_uint8_t *s = (const utf8proc_uint8_t *)in;
    size_t n = strlen(in);
    char *o = malloc(n + 1), *p = o;
    if (!o) return -2;
    int ok = 1;
    while (*s) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t l = utf8proc_iterate(s, -1, &cp);
        if (l <= 0 || cp < 0) { free(o); return -1; }
        if (cp > 255) ok = 0;
        *p++ = (char)(unsigned char)cp;
        s += l;
    }
    *p = '\0';
    if (!ok) { free(o); return 0; }
    *out = o;
    return 1;
}

static char *latin1_to_utf8(const char *in, size_t n)
{
    char *o = malloc(2 * n + 1), *p = o;
    if (!o) return NULL;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c < 0x80) *p++ = (char)c;
        else { *p++ = (char)(0xC0 | (c >> 6)); *p++ = (char)(0x80 | (c & 0x3F)); }
    }
    *p = '\0';
    return o;
}

/* PNG keyword rules: 1-79 Latin-1 bytes, printable (32-126, 161-255), no leading/trailing or
 * double spaces. */
static int keyword_ok(const char *k)
{
    size_t n = strlen(k);
    if (n < 1 || n > 79) return 0;
    if (k[0] == ' ' || k[n - 1] == ' ') return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)k[i];
        if (!((c >= 32 && c <= 126) || c >= 161)) return 0;
        if (c == ' ' && i + 1 < n && k[i + 1] == ' ') return 0;
    }
    return 1;
}

/* ---------------------------------------------------------------------------------------------- */
/* writing                                                                                         */

typedef struct {
    uint8_t *p;
    size_t n, cap;
} mem_writer;

static void mem_write(png_structp png, png_bytep data, png_size_t len)
{
    mem_writer *w = png_get_io_ptr(png);
    if (len > w->cap - w->n) {
        size_t cap = w->cap ? w->cap : 65536;
        while (cap - w->n < len) {
            if (cap > SIZE_MAX / 2) png_error(png, "PNG too large");
            cap *= 2;
        }
        uint8_t *np = realloc(w->p, cap);
        if (!np) png_error(png, "out of memory");
        w->p = np;
        w->cap = cap;
    }
    memcpy(w->p + w->n, data, len);
    w->n += len;
}

static void mem_flush(png_structp png) { (void)png; }

typedef struct {
    png_structp png;
    png_infop info;
    png_errctx ectx;
    mem_writer mw;
    png_bytep *rows;
    const sdb_image *im;
    png_text *texts;
    int n_text;
} png_enc;

static int png_encode_inner(png_enc *e)
{
    if (setjmp(png_jmpbuf(e->png))) return -1;
    png_structp png = e->png;
    const sdb_image *im = e->im;
    png_set_write_fn(png, &e->mw, mem_write, mem_flush);
    png_set_compression_level(png, 6);
    int ct = im->c == 1 ? PNG_COLOR_TYPE_GRAY : im->c == 3 ? PNG_COLOR_TYPE_RGB : PNG_COLOR_TYPE_RGB_ALPHA;
    png_set_IHDR(png, e->info, (png_uint_32)im->w, (png_uint_32)im->h, 8, ct, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (e->n_text > 0) png_set_text(png, e->info, e->texts, e->n_text);
    png_write_info(png, e->info);
    e->rows = malloc(sizeof(png_bytep) * (size_t)im->h);
    if (!e->rows) png_error(png, "out of memory");
    for (int y = 0; y < im->h; y++) e->rows[y] = im->px + (size_t)y * im->w * im->c;
    png_write_image(png, e->rows);
    png_write_end(png, NULL);
    return 0;
}

int sdb_png_encode(const sdb_image *im, const char *const *keys, const char *const *vals, int n_text,
                   uint8_t **out, size_t *out_len, sdb_err *err)
{
    *out = NULL;
    if (out_len) *out_len = 0;
    if (!im || !im->px || im->w <= 0 || im->h <= 0 || (im->c != 1 && im->c != 3 && im->c != 4))
        return sdb_fail(err, SDB_EINVAL, "png: can only write 8-bit L, RGB or RGBA images");
    if (n_text < 0 || (n_text > 0 && (!keys || !vals)))
        return sdb_fail(err, SDB_EINVAL, "png: bad text arguments");

    /* Prepare the text chunks first (plain C, no longjmp). */
    png_text *texts = NULL;
    char **owned = NULL; /* 2 per entry: key, text (Latin-1 copies or NULL) */
    int rc = 0;
    if (n_text > 0) {
        texts = calloc((size_t)n_text, sizeof(png_text));
        owned = calloc((size_t)n_text * 2, sizeof(char *));
        if (!texts || !owned) { rc = sdb_fail(err, SDB_ENOMEM, "png: out of memory"); goto prep_fail; }
    }
    for (int i = 0; i < n_text; i++) {
        if (!keys[i] || !vals[i]) { rc = sdb_fail(err, SDB_EINVAL, "png: text %d has a NULL key or value", i); goto prep_fail; }
        char *k1 = NULL;
        int r = utf8_to_latin1(keys[i], &k1);
        if (r == -2) { rc = sdb_fail(err, SDB_ENOMEM, "png: out of memory"); goto prep_fail; }
        if (r != 1 || !keyword_ok(k1)) {
            free(k1);
            rc = sdb_fail(err, SDB_EINVAL, "png: text key \"%s\" is not a valid PNG keyword "
                          "(1-79 printable Latin-1 characters, no leading/trailing/double spaces)", keys[i]);
            goto prep_fail;
        }
        owned[2 * i] = k1;
        texts[i].key = k1;
        char *v1 = NULL;
        r = utf8_to_latin1(vals[i], &v1);
        if (r == -2) { rc = sdb_fail(err, SDB_ENOMEM, "png: out of memory"); goto prep_fail; }
        if (r == -1) { rc = sdb_fail(err, SDB_EINVAL, "png: value of text \"%s\" is not valid UTF-8", keys[i]); goto prep_fail; }
        if (r == 1) {
            owned[2 * i + 1] = v1;
            texts[i].compression = PNG_TEXT_COMPRESSION_NONE;
            texts[i].text = v1;
            texts[i].text_length = strlen(v1);
        } else {
            texts[i].compression = PNG_ITXT_COMPRESSION_NONE;
            texts[i].text = (char *)vals[i];
            texts[i].itxt_length = strlen(vals[i]);
            texts[i].lang = (char *)"";
            texts[i].lang_key = (char *)"";
        }
    }

    {
        png_enc e;
        memset(&e, 0, sizeof e);
        e.im = im; e.texts = texts; e.n_text = n_text;
        e.png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &e.ectx, on_png_error, on_png_warning);
        if (e.png) e.info = png_create_info_struct(e.png);
        if (!e.png || !e.info) {
            png_destroy_write_struct(&e.png, &e.info);
            rc = sdb_fail(err, SDB_ENOMEM, "png: cannot create writer");
            goto prep_fail;
        }
        int r = png_encode_inner(&e);
        png_destroy_write_struct(&e.png, &e.info);
        free(e.rows);
        if (r) {
            free(e.mw.p);
            rc = sdb_fail(err, SDB_EIO, "png: encoding failed: %s", e.ectx.msg);
            goto prep_fail;
        }
        *out = e.mw.p;
        if (out_len) *out_len = e.mw.n;
    }

prep_fail:
    if (owned) for (int i = 0; i < 2 * n_text; i++) free(owned[i]);
    free(owned);
    free(texts);
    return rc;
}

int sdb_png_write(const char *path, const sdb_image *im, const char *const *keys,
                  const char *const *vals, int n_text, sdb_err *err)
{
    uint8_t *buf = NULL;
    size_t n = 0;
    int rc = sdb_png_encode(im, keys, vals, n_text, &buf, &n, err);
    if (rc) return sdb_err_prefix(err, "%s", path);
    rc = sdb_write_file_atomic(path, buf, n, err);
    free(buf);
    return rc;
}

/* ---------------------------------------------------------------------------------------------- */
/* reading text                                                                                    */

void sdb_png_text_free(char **keys, char **vals, int n)
{
    for (int i = 0; i < n; i++) {
        if (keys) free(keys[i]);
        if (vals) free(vals[i]);
    }
    free(keys);
    free(vals);
}

typedef struct {
    png_structp png;
    png_infop info;
    png_errctx ectx;
    mem_reader src;
    uint8_t *row;
    char **k, **v;
    int cnt;
} png_txt;

static int png_text_inner(png_txt *t)
{
    if (setjmp(png_jmpbuf(t->png))) return -1;
    png_structp png = t->png;
    png_infop info = t->info;
    png_set_read_fn(png, &t->src, mem_read);
    png_read_info(png, info);
    int passes = png_set_interlace_handling(png);
    png_read_update_info(png, info);
    png_uint_32 h = png_get_image_height(png, info);
    t->row = malloc(png_get_rowbytes(png, info));
    if (!t->row) png_error(png, "out of memory");
    for (int p = 0; p < passes; p++)
        for (png_uint_32 y = 0; y < h; y++) png_read_row(png, t->row, NULL);
    png_read_end(png, info);

    png_textp tx = NULL;
    int nt = png_get_text(png, info, &tx, NULL);
    if (nt <= 0) return 0;
    t->k = calloc((size_t)nt, sizeof(char *));
    t->v = calloc((size_t)nt, sizeof(char *));
    if (!t->k || !t->v) png_error(png, "out of memory");
    for (int i = 0; i < nt; i++) {
        int itxt = tx[i].compression == PNG_ITXT_COMPRESSION_NONE || tx[i].compression == PNG_ITXT_COMPRESSION_zTXt;
        t->cnt = i + 1;
        t->k[i] = latin1_to_utf8(tx[i].key, strlen(tx[i].key));
        if (itxt) {
            size_t l = tx[i].itxt_length;
            t->v[i] = malloc(l + 1);
            if (t->v[i]) { if (l) memcpy(t->v[i], tx[i].text, l); t->v[i][l] = '\0'; }
        } else {
            t->v[i] = latin1_to_utf8(tx[i].text ? tx[i].text : "", tx[i].text_length);
        }
        if (!t->k[i] || !t->v[i]) png_error(png, "out of memory");
    }
    return 0;
}

int sdb_png_read_text_memory(const void *buf, size_t len, const char *name, char ***keys,
                             char ***vals, int *n, sdb_err *err)
{
    *keys = NULL; *vals = NULL; *n = 0;
    if (!name) name = "<memory>";
    if (len < 8 || memcmp(buf, "\x89PNG\r\n\x1a\n", 8) != 0)
        return sdb_fail(err, SDB_EFORMAT, "%s: not a PNG file", name);
    char why[160];
    if (chunks_fit(buf, len, 0, why, sizeof why))
        return sdb_fail(err, SDB_EFORMAT, "%s: corrupt or truncated PNG: %s", name, why);
    png_txt t;
    memset(&t, 0, sizeof t);
    t.src.p = buf; t.src.n = len;
    t.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &t.ectx, on_png_error, on_png_warning);
    if (t.png) { cap_chunk_alloc(t.png, len); t.info = png_create_info_struct(t.png); }
    if (!t.png || !t.info) {
        png_destroy_read_struct(&t.png, &t.info, NULL);
        return sdb_fail(err, SDB_ENOMEM, "%s: cannot create PNG reader", name);
    }
    int r = png_text_inner(&t);
    png_destroy_read_struct(&t.png, &t.info, NULL);
    free(t.row);
    if (r) {
        sdb_png_text_free(t.k, t.v, t.cnt);
        return sdb_fail(err, SDB_EFORMAT, "%s: corrupt or truncated PNG: %s", name, t.ectx.msg);
    }
    *keys = t.k; *vals = t.v; *n = t.cnt;
    return 0;
}

int sdb_png_read_text(const char *path, char ***keys, char ***vals, int *n, sdb_err *err)
{
    *keys = NULL; *vals = NULL; *n = 0;
    char *data = NULL;
    size_t len = 0;
    int rc = sdb_read_file(path, &data, &len, err);
    if (rc) return rc;
    rc = sdb_png_read_text_memory(data, len, path, keys, vals, n, err);
    free(data);
    return rc;
}

/* ---- a text chunk added to an encoded PNG ------------------------------------------------------ */

/* CRC-32 of PNG chunks (ISO 3309, reflected polynomial 0xEDB88320), bit by bit: used on a few
 * hundred bytes per image. */
static uint32_t chunk_crc(const uint8_t *p, size_t n)
{
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
    }
    return c ^ 0xffffffffu;
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}

int sdb_png_add_text(uint8_t **png, size_t *len, const char *key, const char *val, sdb_err *err)
{
    static const uint8_t iend[12] = {0, 0, 0, 0, 'I', 'E', 'N', 'D', 0xae, 0x42, 0x60, 0x82};
    if (*len < 8 + 12 || memcmp(*png + *len - 12, iend, 12))
        return sdb_fail(err, SDB_EFORMAT, "adding a text chunk: not a PNG ending in IEND");
    if (!keyword_ok(key)) return sdb_fail(err, SDB_EINVAL, "adding a text chunk: bad keyword '%s'", key);
    size_t kl = strlen(key), vl = strlen(val), data = kl + 1 + vl;
    if (data > 0x7fffffff) return sdb_fail(err, SDB_EINVAL, "adding a text chunk: too long");
    uint8_t *np = realloc(*png, *len + 12 + data);
    if (!np) return sdb_fail(err, SDB_ENOMEM, "out of memory");
    uint8_t *c = np + *len - 12;            /* where IEND was */
    put_be32(c, (uint32_t)data);
    memcpy(c + 4, "tEXt", 4);
    memcpy(c + 8, key, kl + 1);
    memcpy(c + 8 + kl + 1, val, vl);
    put_be32(c + 8 + data, chunk_crc(c + 4, 4 + data));
    memcpy(c + 12 + data, iend, 12);
    *png = np;
    *len += 12 + data;
    return 0;
}
