/*
 * test_image.c — PNG/JPEG decoding against Pillow's rules and the reference files, PNG writing
 * with text chunks, atomic-write failure behaviour, corrupt input, the pixel limit.
 */
#include "harness.h"
#include "sdb/fsutil.h"
#include "sdb/image.h"
#include "sdb/safetensors.h"

#include <dirent.h>
#include <errno.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jpeglib.h>
#include <png.h>

/* Pillow's L24 formula, written out independently of the library's inline helper. */
static int ref_l(int r, int g, int b) { return (int)(((long)r * 19595 + (long)g * 38470 + (long)b * 7471 + 0x8000) >> 16); }

static int ends_with(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

static int count_dir_entries(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}

/* ---------------------------------------------------------------------------------------------- */

static void check_against_u8(const char *png_path, const char *st_path, const char *tensor)
{
    sdb_err err = {0};
    sdb_image im;
    CHECK_OK(sdb_image_load(png_path, &im, 3, 0, &err), &err);
    if (!im.px) return;
    sdb_st *st = NULL;
    CHECK_OK(sdb_st_open(&st, st_path, &err), &err);
    if (!st) { sdb_image_free(&im); return; }
    const sdb_st_tensor *t = sdb_st_find(st, tensor);
    CHECKF(t != NULL, "%s: no tensor %s", st_path, tensor);
    if (t) {
        CHECKF(t->dtype == SDB_DT_U8 && t->ndim == 3 && t->shape[0] == im.h && t->shape[1] == im.w && t->shape[2] == 3,
               "%s: %s shape does not match %dx%d", st_path, tensor, im.w, im.h);
        if (t->dtype == SDB_DT_U8 && t->nbytes == (size_t)im.w * im.h * 3) {
            size_t diff = 0;
            for (size_t i = 0; i < t->nbytes; i++) diff += t->data[i] != im.px[i];
            CHECKF(diff == 0, "%s differs from %s/%s in %zu values", png_path, st_path, tensor, diff);
        }
    }
    sdb_st_close(st);
    sdb_image_free(&im);
}

static void test_reference_files_decode(void)
{
    const char *dirs[] = {"refs/pipeline", "refs/pipeline/inputs"};
    int n_images = 0, n_compared = 0;
    for (int di = 0; di < 2; di++) {
        const char *dir = sdb_t_path(dirs[di]);
        DIR *d = opendir(dir);
        CHECKF(d != NULL, "cannot open %s", dir);
        if (!d) continue;
        struct dirent *e;
        while ((e = readdir(d))) {
            if (!ends_with(e->d_name, ".png") && !ends_with(e->d_name, ".jpg")) continue;
            char path[4800];
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            sdb_err err = {0};
            for (int want = 0; want <= 3; want += (want == 0 ? 1 : 2)) {
                sdb_image im;
                CHECK_OK(sdb_image_load(path, &im, want, 0, &err), &err);
                CHECKF(im.px && im.w > 0 && im.h > 0 && (want == 0 || im.c == want), "%s want %d", path, want);
                sdb_image_free(&im);
            }
            n_images++;
            /* pipeline_X_output.png <-> pipeline_X.safetensors:output_u8 (and the diffusers030 variant) */
            const char *suf = NULL, *tensor = NULL;
            if (ends_with(e->d_name, "_output.png")) { suf = "_output.png"; tensor = "output_u8"; }
            else if (ends_with(e->d_name, "_output_diffusers030.png")) { suf = "_output_diffusers030.png"; tensor = "output_u8_diffusers030"; }
            if (suf) {
                char st_path[4800];
                int base = (int)(strlen(e->d_name) - strlen(suf));
                snprintf(st_path, sizeof st_path, "%s/%.*s.safetensors", dir, base, e->d_name);
                check_against_u8(path, st_path, tensor);
                n_compared++;
            }
        }
        closedir(d);
    }
    fprintf(stderr, "decoded %d reference images, %d compared with output_u8\n", n_images, n_compared);
    CHECK(n_images >= 24);
    CHECK(n_compared >= 16);
}

static void test_jpeg_matches_pillow(void)
{
    sdb_err err = {0};
    sdb_image im;
    CHECK_OK(sdb_image_load(sdb_t_path("refs/pipeline/inputs/scene_136x96.jpg"), &im, 3, 0, &err), &err);
    if (!im.px) return;
    CHECK(im.w == 136 && im.h == 96 && im.c == 3);
    sdb_st *st = NULL;
    CHECK_OK(sdb_st_open(&st, sdb_t_path("refs/pipeline/pipeline_g_inpaint_nonsquare_136x96_jpeg.safetensors"), &err), &err);
    if (st) {
        const sdb_st_tensor *t = sdb_st_find(st, "input_image_u8");
        CHECK(t && t->dtype == SDB_DT_U8 && t->nbytes == 96 * 136 * 3);
        if (t && t->nbytes == 96 * 136 * 3) {
            size_t diff = 0;
            int maxd = 0;
            for (size_t i = 0; i < t->nbytes; i++) {
                int dd = abs((int)t->data[i] - im.px[i]);
                diff += dd != 0;
                if (dd > maxd) maxd = dd;
            }
            CHECKF(diff == 0, "JPEG decode differs from Pillow's in %zu values (max %d)", diff, maxd);
        }
        sdb_st_close(st);
    }
    /* Also the same pixels through the memory API and want=0 (3 components -> RGB). */
    char *buf = NULL;
    size_t n = 0;
    CHECK_OK(sdb_read_file(sdb_t_path("refs/pipeline/inputs/scene_136x96.jpg"), &buf, &n, &err), &err);
    sdb_image im2;
    CHECK_OK(sdb_image_load_memory(buf, n, "scene.jpg", &im2, 0, 0, &err), &err);
    CHECK(im2.c == 3 && im2.px && memcmp(im2.px, im.px, (size_t)136 * 96 * 3) == 0);
    sdb_image_free(&im2);
    free(buf);
    sdb_image_free(&im);
}

/* ALL 256^3 RGB inputs: to_l equals the formula, to_rgb of RGBA drops alpha, L -> RGB replicates. */
static void test_conversions_exhaustive(void)
{
    sdb_err err = {0};
    sdb_image rgba;
    CHECK_OK(sdb_image_alloc(&rgba, 4096, 4096, 4, &err), &err);
    if (!rgba.px) return;
    for (size_t i = 0; i < (size_t)1 << 24; i++) {
        rgba.px[4 * i] = (uint8_t)(i >> 16);
        rgba.px[4 * i + 1] = (uint8_t)(i >> 8);
        rgba.px[4 * i + 2] = (uint8_t)i;
        rgba.px[4 * i + 3] = (uint8_t)(i * 2654435761u >> 24); /* arbitrary alpha */
    }
    sdb_image rgb, l, l2, back;
    CHECK_OK(sdb_image_to_rgb(&rgba, &rgb, &err), &err);
    CHECK_OK(sdb_image_to_l(&rgba, &l, &err), &err);
    if (rgb.px && l.px) {
        CHECK_OK(sdb_image_to_l(&rgb, &l2, &err), &err);
        size_t bad_rgb = 0, bad_l = 0, bad_l2 = 0, bad_inline = 0;
        for (size_t i = 0; i < (size_t)1 << 24; i++) {
            int r = (int)(i >> 16), g = (int)(i >> 8) & 255, b = (int)i & 255;
            bad_rgb += rgb.px[3 * i] != r || rgb.px[3 * i + 1] != g || rgb.px[3 * i + 2] != b;
            int ref = ref_l(r, g, b);
            bad_l += l.px[i] != ref;
            bad_l2 += l2.px && l2.px[i] != ref;
            bad_inline += sdb_rgb_to_l((uint8_t)r, (uint8_t)g, (uint8_t)b) != ref;
        }
        CHECKF(bad_rgb == 0, "%zu RGBA->RGB mismatches", bad_rgb);
        CHECKF(bad_l == 0, "%zu RGBA->L mismatches", bad_l);
        CHECKF(bad_l2 == 0, "%zu RGB->L mismatches", bad_l2);
        CHECKF(bad_inline == 0, "%zu sdb_rgb_to_l mismatches", bad_inline);
        /* spot checks of the formula itself */
        CHECK(ref_l(255, 255, 255) == 255 && ref_l(0, 0, 0) == 0 && ref_l(255, 0, 0) == 76 &&
              ref_l(0, 255, 0) == 150 && ref_l(0, 0, 255) == 29);
        CHECK_OK(sdb_image_to_rgb(&l, &back, &err), &err);
        size_t bad_rep = 0;
        for (size_t i = 0; back.px && i < (size_t)1 << 24; i++)
            bad_rep += back.px[3 * i] != l.px[i] || back.px[3 * i + 1] != l.px[i] || back.px[3 * i + 2] != l.px[i];
        CHECK(bad_rep == 0);
        sdb_image_free(&back);
        sdb_image_free(&l2);
    }
    sdb_image_free(&rgb);
    sdb_image_free(&l);
    sdb_image_free(&rgba);
}

/* ---------------------------------------------------------------------------------------------- */
/* PNGs of every kind, written with libpng directly                                                */

typedef struct {
    int ct, bd, interlace;
    int npal, ntrns;
} png_kind;

/* Sample value (0..2^bd-1) of channel ch at (x, y): a deterministic pattern that hits 0 and max. */
static unsigned sample(int x, int y, int ch, int bd)
{
    unsigned maxv = (1u << bd) - 1;
    unsigned v = (unsigned)(x * 7 + y * 13 + ch * 101) * 2654435761u;
    if (x == 0 && y == 0) return 0;
    if (x == 1 && y == 0) return maxv;
    if (bd == 16 && (x + y) % 5 == 0) return (v >> 24) & 0xFF; /* values < 256: clip path of gray16 */
    return (v >> 8) & maxv;
}

static int write_test_png(const char *path, const png_kind *k, int w, int h)
{
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    if (setjmp(png_jmpbuf(png))) { png_destroy_write_struct(&png, &info); fclose(f); return -1; }
    png_init_io(png, f);
    png_set_check_for_invalid_index(png, 0); /* allow indices past the palette (tested on purpose) */
    png_set_IHDR(png, info, w, h, k->bd, k->ct, k->interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (k->ct == PNG_COLOR_TYPE_PALETTE) {
        png_color pal[256];
        for (int i = 0; i < k->npal; i++) {
            pal[i].red = (png_byte)(i * 37 + 5); pal[i].green = (png_byte)(255 - i * 11); pal[i].blue = (png_byte)(i * i);
        }
        png_set_PLTE(png, info, pal, k->npal);
        if (k->ntrns) {
            png_byte tr[256];
            for (int i = 0; i < k->ntrns; i++) tr[i] = (png_byte)(i * 50);
            png_set_tRNS(png, info, tr, k->ntrns, NULL);
        }
    } else if (k->ntrns && (k->ct == PNG_COLOR_TYPE_GRAY || k->ct == PNG_COLOR_TYPE_RGB)) {
        png_color_16 tc = {0, 1, 1, 1, 1};
        png_set_tRNS(png, info, NULL, 0, &tc);
    }
    png_write_info(png, info);
    int chans = k->ct == PNG_COLOR_TYPE_GRAY ? 1 : k->ct == PNG_COLOR_TYPE_GRAY_ALPHA ? 2 :
                k->ct == PNG_COLOR_TYPE_RGB ? 3 : k->ct == PNG_COLOR_TYPE_RGB_ALPHA ? 4 : 1;
    size_t rowbytes = ((size_t)w * chans * k->bd + 7) / 8;
    png_bytep *rows = calloc(h, sizeof *rows);
    for (int y = 0; y < h; y++) {
        rows[y] = calloc(rowbytes, 1);
        for (int x = 0; x < w; x++)
            for (int ch = 0; ch < chans; ch++) {
                unsigned v = k->ct == PNG_COLOR_TYPE_PALETTE ? sample(x, y, 0, k->bd) % (unsigned)(k->npal + 2)
                                                             : sample(x, y, ch, k->bd);
                if (k->ct == PNG_COLOR_TYPE_PALETTE && v > (1u << k->bd) - 1) v = (1u << k->bd) - 1;
                size_t bit = ((size_t)x * chans + ch) * k->bd;
                if (k->bd == 16) { rows[y][bit / 8] = (png_byte)(v >> 8); rows[y][bit / 8 + 1] = (png_byte)v; }
                else if (k->bd == 8) rows[y][bit / 8] = (png_byte)v;
                else rows[y][bit / 8] |= (png_byte)(v << (8 - k->bd - bit % 8));
            }
    }
    int passes = png_set_interlace_handling(png);
    for (int p = 0; p < passes; p++)
        for (int y = 0; y < h; y++) png_write_row(png, rows[y]);
    if (k->interlace) {
        /* text after the image data: a zTXt (compressed) and an iTXt, read back by sdb_png_read_text */
        png_text t[2];
        memset(t, 0, sizeof t);
        t[0].compression = PNG_TEXT_COMPRESSION_zTXt;
        t[0].key = (char *)"late";
        t[0].text = (char *)"after IDAT \xe9";
        t[1].compression = PNG_ITXT_COMPRESSION_zTXt;
        t[1].key = (char *)"late utf8";
        t[1].text = (char *)"\xe2\x9c\x93 compressed";
        t[1].lang = (char *)"";
        t[1].lang_key = (char *)"";
        png_set_text(png, info, t, 2);
        png_write_end(png, info);
    } else {
        png_write_end(png, NULL);
    }
    png_destroy_write_struct(&png, &info);
    for (int y = 0; y < h; y++) free(rows[y]);
    free(rows);
    return fclose(f) ? -1 : 0;
}

/* What Pillow gives for convert("RGB") of pixel (x, y) of that PNG. */
static void expected_rgb(const png_kind *k, int x, int y, uint8_t out[3], uint8_t *alpha)
{
    *alpha = 255;
    int bd = k->bd;
    switch (k->ct) {
    case PNG_COLOR_TYPE_GRAY: {
        unsigned v = sample(x, y, 0, bd), g;
        if (bd == 16) g = v > 255 ? 255 : v;                   /* I;16 -> RGB clips */
        else g = v * (255 / ((1u << bd) - 1));                 /* 1 -> 0/255, L;2, L;4 */
        out[0] = out[1] = out[2] = (uint8_t)g;
        break;
    }
    case PNG_COLOR_TYPE_GRAY_ALPHA: {
        unsigned g = sample(x, y, 0, bd), a = sample(x, y, 1, bd);
        if (bd == 16) { g >>= 8; a >>= 8; }
        out[0] = out[1] = out[2] = (uint8_t)g;
        *alpha = (uint8_t)a;
        break;
    }
    case PNG_COLOR_TYPE_RGB:
    case PNG_COLOR_TYPE_RGB_ALPHA:
        for (int ch = 0; ch < 3; ch++) out[ch] = (uint8_t)(bd == 16 ? sample(x, y, ch, bd) >> 8 : sample(x, y, ch, bd));
        if (k->ct == PNG_COLOR_TYPE_RGB_ALPHA) *alpha = (uint8_t)(bd == 16 ? sample(x, y, 3, bd) >> 8 : sample(x, y, 3, bd));
        break;
    case PNG_COLOR_TYPE_PALETTE: {
        unsigned i = sample(x, y, 0, bd) % (unsigned)(k->npal + 2);
        if (i > (1u << bd) - 1) i = (1u << bd) - 1;
        if ((int)i < k->npal) {
            out[0] = (uint8_t)(i * 37 + 5); out[1] = (uint8_t)(255 - i * 11); out[2] = (uint8_t)(i * i);
        } else {
            out[0] = out[1] = out[2] = 0; /* past the palette: black */
        }
        if ((int)i < k->ntrns) *alpha = (uint8_t)(i * 50);
        break;
    }
    }
}

static void test_png_kinds(void)
{
    const png_kind kinds[] = {
        {PNG_COLOR_TYPE_GRAY, 1, 0, 0, 0},  {PNG_COLOR_TYPE_GRAY, 2, 0, 0, 0},
        {PNG_COLOR_TYPE_GRAY, 4, 0, 0, 0},  {PNG_COLOR_TYPE_GRAY, 8, 0, 0, 0},
        {PNG_COLOR_TYPE_GRAY, 16, 0, 0, 0}, {PNG_COLOR_TYPE_GRAY, 8, 0, 0, 1},
        {PNG_COLOR_TYPE_GRAY, 4, 1, 0, 0},  {PNG_COLOR_TYPE_GRAY, 16, 1, 0, 0},
        {PNG_COLOR_TYPE_GRAY_ALPHA, 8, 0, 0, 0}, {PNG_COLOR_TYPE_GRAY_ALPHA, 16, 0, 0, 0},
        {PNG_COLOR_TYPE_RGB, 8, 0, 0, 0},   {PNG_COLOR_TYPE_RGB, 16, 0, 0, 0},
        {PNG_COLOR_TYPE_RGB, 8, 1, 0, 1},
        {PNG_COLOR_TYPE_RGB_ALPHA, 8, 0, 0, 0}, {PNG_COLOR_TYPE_RGB_ALPHA, 16, 1, 0, 0},
        {PNG_COLOR_TYPE_PALETTE, 1, 0, 2, 0},  {PNG_COLOR_TYPE_PALETTE, 2, 0, 3, 2},
        {PNG_COLOR_TYPE_PALETTE, 4, 0, 12, 5}, {PNG_COLOR_TYPE_PALETTE, 8, 0, 200, 0},
        {PNG_COLOR_TYPE_PALETTE, 8, 1, 256, 256},
    };
    const char *dir = sdb_t_tmpdir();
    int w = 37, h = 23;
    for (size_t ki = 0; ki < sizeof kinds / sizeof kinds[0]; ki++) {
        const png_kind *k = &kinds[ki];
        char path[4200];
        snprintf(path, sizeof path, "%s/kind%zu_ct%d_bd%d%s.png", dir, ki, k->ct, k->bd, k->interlace ? "_i" : "");
        CHECKF(write_test_png(path, k, w, h) == 0, "cannot write %s", path);
        sdb_err err = {0};
        sdb_image rgb, l, keep;
        CHECK_OK(sdb_image_load(path, &rgb, 3, 0, &err), &err);
        CHECK_OK(sdb_image_load(path, &l, 1, 0, &err), &err);
        CHECK_OK(sdb_image_load(path, &keep, 0, 0, &err), &err);
        if (!rgb.px || !l.px || !keep.px) { sdb_image_free(&rgb); sdb_image_free(&l); sdb_image_free(&keep); continue; }
        int has_alpha = k->ct == PNG_COLOR_TYPE_GRAY_ALPHA || k->ct == PNG_COLOR_TYPE_RGB_ALPHA ||
                        (k->ct == PNG_COLOR_TYPE_PALETTE && k->ntrns > 0);
        int keep_c = k->ct == PNG_COLOR_TYPE_GRAY ? 1 : has_alpha ? 4 : 3;
        CHECKF(rgb.w == w && rgb.h == h && rgb.c == 3 && l.c == 1 && keep.c == keep_c,
               "%s: got %dx%d c=%d/%d keep %d (want %d)", path, rgb.w, rgb.h, rgb.c, l.c, keep.c, keep_c);
        size_t bad = 0, bad_l = 0, bad_keep = 0;
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                uint8_t e[3] = {0, 0, 0}, a = 255;
                expected_rgb(k, x, y, e, &a);
                const uint8_t *p = rgb.px + ((size_t)y * w + x) * 3;
                bad += p[0] != e[0] || p[1] != e[1] || p[2] != e[2];
                bad_l += l.px[(size_t)y * w + x] != ref_l(e[0], e[1], e[2]);
                const uint8_t *q = keep.px + ((size_t)y * w + x) * keep.c;
                if (keep.c == 1) bad_keep += q[0] != e[0];
                else bad_keep += q[0] != e[0] || q[1] != e[1] || q[2] != e[2] || (keep.c == 4 && q[3] != a);
            }
        CHECKF(bad == 0, "%s: %zu RGB pixels differ from Pillow's rules", path, bad);
        CHECKF(bad_l == 0, "%s: %zu L pixels differ", path, bad_l);
        CHECKF(bad_keep == 0, "%s: %zu keep-layout pixels differ", path, bad_keep);
        if (k->interlace) {
            char **tk = NULL, **tv = NULL;
            int tn = 0;
            CHECK_OK(sdb_png_read_text(path, &tk, &tv, &tn, &err), &err);
            CHECKF(tn == 2 && !strcmp(tk[0], "late") && !strcmp(tv[0], "after IDAT \xc3\xa9") &&
                   !strcmp(tk[1], "late utf8") && !strcmp(tv[1], "\xe2\x9c\x93 compressed"),
                   "%s: text after IDAT not read back (%d entries)", path, tn);
            sdb_png_text_free(tk, tv, tn);
        }
        sdb_image_free(&rgb);
        sdb_image_free(&l);
        sdb_image_free(&keep);
    }
}

/* ---------------------------------------------------------------------------------------------- */
/* JPEG kinds, written with libjpeg directly                                                       */

static int write_test_jpeg(const char *path, int w, int h, int comps, int progressive)
{
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    struct jpeg_compress_struct ci;
    struct jpeg_error_mgr jerr;
    ci.err = jpeg_std_error(&jerr);
    jpeg_create_compress(&ci);
    jpeg_stdio_dest(&ci, f);
    ci.image_width = w; ci.image_height = h; ci.input_components = comps;
    ci.in_color_space = comps == 1 ? JCS_GRAYSCALE : comps == 3 ? JCS_RGB : JCS_CMYK;
    jpeg_set_defaults(&ci);
    jpeg_set_quality(&ci, 90, TRUE);
    if (progressive) jpeg_simple_progression(&ci);
    jpeg_start_compress(&ci, TRUE);
    uint8_t *row = malloc((size_t)w * comps);
    while (ci.next_scanline < ci.image_height) {
        int y = (int)ci.next_scanline;
        for (int x = 0; x < w; x++)
            for (int c = 0; c < comps; c++)
                row[x * comps + c] = comps == 4 ? (uint8_t)(c == 3 ? 40 : 60 + 50 * c) /* flat CMYK */
                                                : (uint8_t)(x * 2 + y * 2 + c * 40);
        JSAMPROW r = row;
        jpeg_write_scanlines(&ci, &r, 1);
    }
    jpeg_finish_compress(&ci);
    jpeg_destroy_compress(&ci);
    free(row);
    return fclose(f) ? -1 : 0;
}

static void test_jpeg_kinds(void)
{
    const char *dir = sdb_t_tmpdir();
    char base[4200], prog[4200], gray[4200], cmyk[4200];
    snprintf(base, sizeof base, "%s/base.jpg", dir);
    snprintf(prog, sizeof prog, "%s/prog.jpeg", dir);
    snprintf(gray, sizeof gray, "%s/gray.png", dir); /* wrong extension on purpose: magic bytes decide */
    snprintf(cmyk, sizeof cmyk, "%s/cmyk.jpg", dir);
    CHECK(write_test_jpeg(base, 50, 30, 3, 0) == 0);
    CHECK(write_test_jpeg(prog, 50, 30, 3, 1) == 0);
    CHECK(write_test_jpeg(gray, 50, 30, 1, 0) == 0);
    CHECK(write_test_jpeg(cmyk, 24, 16, 4, 0) == 0);
    sdb_err err = {0};
    sdb_image b, p, g, gl, c;
    CHECK_OK(sdb_image_load(base, &b, 3, 0, &err), &err);
    CHECK_OK(sdb_image_load(prog, &p, 3, 0, &err), &err);
    CHECK_OK(sdb_image_load(gray, &g, 0, 0, &err), &err);
    CHECK_OK(sdb_image_load(gray, &gl, 3, 0, &err), &err);
    CHECK_OK(sdb_image_load(cmyk, &c, 3, 0, &err), &err);
    if (b.px && p.px) {
        /* same quantised coefficients -> a progressive file decodes to the very same pixels */
        CHECK(b.w == 50 && b.h == 30 && memcmp(b.px, p.px, 50 * 30 * 3) == 0);
        int maxd = 0;
        for (int y = 0; y < 30; y++)
            for (int x = 0; x < 50; x++)
                for (int ch = 0; ch < 3; ch++) {
                    int d = abs(b.px[(y * 50 + x) * 3 + ch] - (x * 2 + y * 2 + ch * 40));
                    if (d > maxd) maxd = d;
                }
        CHECKF(maxd <= 12, "baseline JPEG far from its source (max %d)", maxd);
    }
    if (g.px && gl.px) {
        CHECK(g.c == 1 && gl.c == 3);
        size_t bad = 0;
        for (int i = 0; i < 50 * 30; i++) bad += gl.px[3 * i] != g.px[i] || gl.px[3 * i + 2] != g.px[i];
        CHECK(bad == 0);
    }
    if (c.px) {
        /* flat CMYK raw (60, 110, 160, 40): Pillow inverts (CMYK;I) then cmyk2rgb:
         * nk = 255 - (255 - 40) = 40; out = nk - MULDIV255(255 - raw, nk). */
        int raw[3] = {60, 110, 160}, nk = 40;
        int maxd = 0;
        for (int i = 0; i < 24 * 16; i++)
            for (int ch = 0; ch < 3; ch++) {
                int t = (255 - raw[ch]) * nk + 128;
                int e = nk - (((t >> 8) + t) >> 8);
                int d = abs(c.px[3 * i + ch] - e);
                if (d > maxd) maxd = d;
            }
        CHECKF(maxd <= 2, "CMYK JPEG conversion off by %d", maxd);
    }
    sdb_image_free(&b); sdb_image_free(&p); sdb_image_free(&g); sdb_image_free(&gl); sdb_image_free(&c);
}

/* ---------------------------------------------------------------------------------------------- */
/* writing                                                                                         */

static int find_chunk(const uint8_t *buf, size_t n, const char *type, const char *key)
{
    size_t off = 8;
    while (off + 12 <= n) {
        uint32_t len = (uint32_t)buf[off] << 24 | buf[off + 1] << 16 | buf[off + 2] << 8 | buf[off + 3];
        if (memcmp(buf + off + 4, type, 4) == 0 && len >= strlen(key) &&
            memcmp(buf + off + 8, key, strlen(key)) == 0 && buf[off + 8 + strlen(key)] == 0)
            return 1;
        off += 12 + (size_t)len;
    }
    return 0;
}

static void test_png_write_roundtrip(void)
{
    const char *dir = sdb_t_tmpdir();
    const char *keys[] = {"parameters", "Comment", "unicode", "empty", "multi"};
    const char *vals[] = {
        "a cat, Steps: 20, Sampler: Euler a, CFG scale: 7.5, Seed: 42",
        "caf\xc3\xa9 na\xc3\xafve \xc2\xb1\xc2\xbd",               /* Latin-1 representable -> tEXt */
        "\xe7\x8c\xab with a hat \xf0\x9f\x8e\xa9 \xe2\x80\x94 ok", /* needs UTF-8 -> iTXt */
        "",
        "line1\nline2\ttab",
    };
    for (int c = 1; c <= 4; c++) {
        if (c == 2) continue;
        sdb_err err = {0};
        sdb_image im;
        CHECK_OK(sdb_image_alloc(&im, 41, 17, c, &err), &err);
        for (size_t i = 0; i < (size_t)41 * 17 * c; i++) im.px[i] = (uint8_t)(i * 31 + i / 7);
        char path[4200], path2[4200];
        snprintf(path, sizeof path, "%s/out%d.png", dir, c);
        snprintf(path2, sizeof path2, "%s/out%d_again.png", dir, c);
        CHECK_OK(sdb_png_write(path, &im, keys, vals, 5, &err), &err);
        CHECK_OK(sdb_png_write(path2, &im, keys, vals, 5, &err), &err);
        sdb_image back;
        CHECK_OK(sdb_image_load(path, &back, 0, 0, &err), &err);
        CHECK(back.px && back.w == 41 && back.h == 17 && back.c == c &&
              memcmp(back.px, im.px, (size_t)41 * 17 * c) == 0);
        sdb_image_free(&back);
        char **k = NULL, **v = NULL;
        int n = 0;
        CHECK_OK(sdb_png_read_text(path, &k, &v, &n, &err), &err);
        CHECK(n == 5);
        for (int i = 0; i < n && i < 5; i++)
            CHECKF(strcmp(k[i], keys[i]) == 0 && strcmp(v[i], vals[i]) == 0, "text %d: %s=%s", i, k[i], v[i]);
        sdb_png_text_free(k, v, n);
        /* byte-identical files, and the chunk types Pillow's add_text would choose */
        char *b1 = NULL, *b2 = NULL;
        size_t n1 = 0, n2 = 0;
        CHECK_OK(sdb_read_file(path, &b1, &n1, &err), &err);
        CHECK_OK(sdb_read_file(path2, &b2, &n2, &err), &err);
        CHECK(b1 && b2 && n1 == n2 && memcmp(b1, b2, n1) == 0);
        if (b1) {
            CHECK(find_chunk((uint8_t *)b1, n1, "tEXt", "parameters"));
            CHECK(find_chunk((uint8_t *)b1, n1, "tEXt", "Comment"));
            CHECK(find_chunk((uint8_t *)b1, n1, "iTXt", "unicode"));
            CHECK(!find_chunk((uint8_t *)b1, n1, "tIME", ""));
            CHECK(strstr(b1 + 8, "tIME") == NULL);
            /* the Latin-1 value is stored as Latin-1 bytes */
            const char lat[] = "caf\xe9 na\xefve \xb1\xbd";
            CHECK(memmem(b1, n1, lat, sizeof lat - 1) != NULL);
        }
        free(b1);
        free(b2);
        sdb_image_free(&im);
    }
    /* no text at all */
    sdb_err err = {0};
    sdb_image im;
    CHECK_OK(sdb_image_alloc(&im, 3, 2, 3, &err), &err);
    char path[4200];
    snprintf(path, sizeof path, "%s/notext.png", dir);
    CHECK_OK(sdb_png_write(path, &im, NULL, NULL, 0, &err), &err);
    char **k = NULL, **v = NULL;
    int n = -1;
    CHECK_OK(sdb_png_read_text(path, &k, &v, &n, &err), &err);
    CHECK(n == 0);
    sdb_png_text_free(k, v, n);
    /* invalid keys / values */
    const char *bad_keys[] = {"", " lead", "dou  ble", "\xe7\x8c\xab", "ok"};
    for (int i = 0; i < 4; i++) {
        const char *vv[] = {"x"};
        CHECK(sdb_png_write(path, &im, &bad_keys[i], vv, 1, &err) == SDB_EINVAL);
    }
    const char *bad_val[] = {"\xff\xfe not utf8"};
    CHECK(sdb_png_write(path, &im, &bad_keys[4], bad_val, 1, &err) == SDB_EINVAL);
    sdb_image_free(&im);
}

static void test_png_write_failure_leaves_nothing(void)
{
    const char *dir = sdb_t_tmpdir();
    sdb_err err = {0};
    sdb_image im;
    CHECK_OK(sdb_image_alloc(&im, 8, 8, 3, &err), &err);
    char path[4200];
    snprintf(path, sizeof path, "%s/missing/sub/out.png", dir);
    CHECK(sdb_png_write(path, &im, NULL, NULL, 0, &err) != 0);
    CHECK(strstr(err.msg, "missing") != NULL);
    CHECK(!sdb_file_exists(path));
    CHECK(count_dir_entries(dir) == 0);

    /* read-only folder (root ignores permissions, so only checked when they apply) */
    char ro[4200];
    snprintf(ro, sizeof ro, "%s/ro", dir);
    CHECK(mkdir(ro, 0555) == 0);
    snprintf(path, sizeof path, "%s/out.png", ro);
    int rc = sdb_png_write(path, &im, NULL, NULL, 0, &err);
    if (geteuid() != 0) {
        CHECK(rc != 0);
        CHECK(!sdb_file_exists(path));
    }
    if (rc != 0) CHECK(count_dir_entries(ro) == 0);
    chmod(ro, 0755);

    /* an invalid image or text is refused before anything is created */
    snprintf(path, sizeof path, "%s/bad.png", dir);
    const char *k[] = {"bad  key"}, *v[] = {"x"};
    CHECK(sdb_png_write(path, &im, k, v, 1, &err) == SDB_EINVAL);
    sdb_image bogus = {8, 8, 2, im.px};
    CHECK(sdb_png_write(path, &bogus, NULL, NULL, 0, &err) == SDB_EINVAL);
    CHECK(!sdb_file_exists(path));
    /* the destination is a folder: rename fails, the temp file is removed */
    char asdir[4200];
    snprintf(asdir, sizeof asdir, "%s/isdir.png", dir);
    CHECK(mkdir(asdir, 0755) == 0);
    CHECK(sdb_png_write(asdir, &im, NULL, NULL, 0, &err) != 0);
    CHECK(sdb_is_dir(asdir));
    DIR *d = opendir(dir);
    struct dirent *e;
    int tmp_left = 0;
    while (d && (e = readdir(d))) tmp_left += strstr(e->d_name, ".tmp") != NULL;
    if (d) closedir(d);
    CHECK(tmp_left == 0);

    /* a write that fails midway (file size limit: works for root too): no file, no temp file */
    sdb_image big;
    CHECK_OK(sdb_image_alloc(&big, 300, 300, 3, &err), &err);
    for (size_t i = 0; big.px && i < (size_t)300 * 300 * 3; i++) big.px[i] = (uint8_t)(i * 2654435761u >> 24);
    char sub[4200];
    snprintf(sub, sizeof sub, "%s/fsize", dir);
    CHECK(mkdir(sub, 0755) == 0);
    snprintf(path, sizeof path, "%s/big.png", sub);
    struct rlimit old, lim;
    getrlimit(RLIMIT_FSIZE, &old);
    lim = old;
    lim.rlim_cur = 4096;
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    CHECK(setrlimit(RLIMIT_FSIZE, &lim) == 0);
    rc = sdb_png_write(path, &big, NULL, NULL, 0, &err);
    setrlimit(RLIMIT_FSIZE, &old);
    signal(SIGXFSZ, prev);
    CHECK(rc != 0);
    fprintf(stderr, "  (file size limit) -> %s\n", err.msg);
    CHECK(!sdb_file_exists(path));
    CHECK(count_dir_entries(sub) == 0);
    CHECK_OK(sdb_png_write(path, &big, NULL, NULL, 0, &err), &err); /* and it works without the limit */
    CHECK(count_dir_entries(sub) == 1);
    sdb_image_free(&big);
    sdb_image_free(&im);
}

/* ---------------------------------------------------------------------------------------------- */
/* corrupt input, limits                                                                           */

static int write_bytes(const char *path, const void *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(b, 1, n, f);
    return (fclose(f) || w != n) ? -1 : 0;
}

static void expect_load_error(const char *path, const char *what)
{
    sdb_err err = {0};
    sdb_image im;
    int rc = sdb_image_load(path, &im, 3, 0, &err);
    CHECKF(rc != 0, "%s: loading %s succeeded", what, path);
    CHECKF(im.px == NULL, "%s: pixels left after failure", what);
    const char *base = strrchr(path, '/');
    CHECKF(strstr(err.msg, base ? base + 1 : path) != NULL, "%s: error does not name the file: %s", what, err.msg);
    fprintf(stderr, "  (%s) -> %s\n", what, err.msg);
}

static void test_corrupt_files(void)
{
    const char *dir = sdb_t_tmpdir();
    char *png = NULL, *jpg = NULL;
    size_t npng = 0, njpg = 0;
    sdb_err err = {0};
    CHECK_OK(sdb_read_file(sdb_t_path("refs/pipeline/inputs/scene_128x128.png"), &png, &npng, &err), &err);
    CHECK_OK(sdb_read_file(sdb_t_path("refs/pipeline/inputs/scene_136x96.jpg"), &jpg, &njpg, &err), &err);
    if (!png || !jpg) { free(png); free(jpg); return; }
    char p[4200];
    /* truncated PNG at many lengths (inside signature, IHDR, IDAT) */
    size_t cuts[] = {4, 8, 20, 33, 60, npng / 3, npng / 2, npng - 40};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        snprintf(p, sizeof p, "%s/trunc%zu.png", dir, i);
        write_bytes(p, png, cuts[i]);
        expect_load_error(p, "truncated PNG");
    }
    /* a flipped byte inside IDAT: CRC error of a critical chunk */
    snprintf(p, sizeof p, "%s/crc.png", dir);
    png[npng / 2] ^= 0x55;
    write_bytes(p, png, npng);
    expect_load_error(p, "corrupt PNG");
    png[npng / 2] ^= 0x55;
    /* broken IHDR (zero width, CRC recomputed would be needed: any change is an error) */
    snprintf(p, sizeof p, "%s/ihdr.png", dir);
    png[16] = png[17] = png[18] = png[19] = 0;
    write_bytes(p, png, npng);
    expect_load_error(p, "bad IHDR");
    /* truncated JPEG */
    size_t jcuts[] = {3, 10, 200, njpg / 2, njpg - 10};
    for (size_t i = 0; i < sizeof jcuts / sizeof jcuts[0]; i++) {
        snprintf(p, sizeof p, "%s/trunc%zu.jpg", dir, i);
        write_bytes(p, jpg, jcuts[i]);
        expect_load_error(p, "truncated JPEG");
    }
    /* garbage JPEG body */
    snprintf(p, sizeof p, "%s/garbage.jpg", dir);
    for (size_t i = 4; i < njpg; i++) jpg[i] = (char)(i * 97);
    write_bytes(p, jpg, njpg);
    expect_load_error(p, "garbage JPEG");
    /* not an image, empty, missing */
    snprintf(p, sizeof p, "%s/text.png", dir);
    write_bytes(p, "hello, world", 12);
    expect_load_error(p, "not an image");
    snprintf(p, sizeof p, "%s/empty.png", dir);
    write_bytes(p, "", 0);
    expect_load_error(p, "empty file");
    snprintf(p, sizeof p, "%s/does-not-exist.png", dir);
    expect_load_error(p, "missing file");
    /* want_channels must be 0, 1 or 3 */
    sdb_image im;
    CHECK(sdb_image_load(sdb_t_path("refs/pipeline/inputs/scene_128x128.png"), &im, 2, 0, &err) == SDB_EINVAL);
    free(png);
    free(jpg);
}

static void test_pixel_limit(void)
{
    sdb_err err = {0};
    sdb_image im;
    const char *png = sdb_t_path("refs/pipeline/inputs/scene_192x128.png");
    const char *jpg = sdb_t_path("refs/pipeline/inputs/scene_136x96.jpg");
    CHECK(sdb_image_load(png, &im, 3, 192 * 128 - 1, &err) == SDB_EUNSUPPORTED);
    CHECK(strstr(err.msg, "scene_192x128.png") && strstr(err.msg, "limit"));
    CHECK(im.px == NULL);
    CHECK_OK(sdb_image_load(png, &im, 3, 192 * 128, &err), &err);
    sdb_image_free(&im);
    CHECK(sdb_image_load(jpg, &im, 3, 136 * 96 - 1, &err) == SDB_EUNSUPPORTED);
    CHECK_OK(sdb_image_load(jpg, &im, 3, 136 * 96, &err), &err);
    sdb_image_free(&im);
    /* a 20000 x 20000 PNG header: refused by the default limit before any allocation */
    const char *dir = sdb_t_tmpdir();
    char p[4200];
    snprintf(p, sizeof p, "%s/huge.png", dir);
    png_kind k = {PNG_COLOR_TYPE_GRAY, 1, 0, 0, 0};
    CHECK(write_test_png(p, &k, 9000, 8000) == 0);
    CHECK(sdb_image_load(p, &im, 1, 0, &err) == SDB_EUNSUPPORTED);
    CHECK(strstr(err.msg, "huge.png") != NULL);
    CHECK_OK(sdb_image_load(p, &im, 1, 9000L * 8000, &err), &err);
    sdb_image_free(&im);
}

int main(void)
{
    RUN(test_reference_files_decode);
    RUN(test_jpeg_matches_pillow);
    RUN(test_conversions_exhaustive);
    RUN(test_png_kinds);
    RUN(test_jpeg_kinds);
    RUN(test_png_write_roundtrip);
    RUN(test_png_write_failure_leaves_nothing);
    RUN(test_corrupt_files);
    RUN(test_pixel_limit);
    return sdb_t_done();
}
