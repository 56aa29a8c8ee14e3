/*
 * test_restore.c — issue 17's restoration options against independent truth, with real images
 * (the slower pipeline sweeps — keep_unmasked on 16 random masks, every masked_content on both
 * model kinds and strengths, the CLI and `sdbatch run` — are in test_restore_slow.c):
 * mask dilation = a brute-force max filter; mask blur = a 2-D Gaussian summed in double with
 * A1111's kernel size / sigma rule (within 1 level); LAB against published sRGB values and colour
 * match quantiles (within 1 level); each masked_content's start latents against their definition
 * on the 9-channel tiny model (traces; the DDPM add_noise recomputed from the scaled-linear
 * betas); fill from a uniform surround; JPEG output and its quality (the quantisation table
 * libjpeg scales); 16-bit PNG; RGBA alpha kept through a PNG file; `mask: alpha`.
 */
#include "test_restore_common.h"
#include "sdb/color.h"
#include "sdb/fsutil.h"
#include "sdb/image.h"
#include "sdb/mask.h"
#include "sdb/pipeline.h"

#include <math.h>
#include <png.h>
#include <jpeglib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- dilation, blur --------------------------------------------------------------------------- */

static void test_dilate_brute_force(void)
{
    sdb_err err;
    for (int t = 0; t < 12; t++) {
        int w = 9 + (int)(rnd() % 60), h = 7 + (int)(rnd() % 50), n = (int)(rnd() % 7);
        sdb_image m = {0}, d = {0};
        CHECK_OK(sdb_image_alloc(&m, w, h, 1, &err), &err);
        for (int i = 0; i < w * h; i++) m.px[i] = rnd() % 23 == 0 ? (uint8_t)(rnd() & 255) : 0;   /* soft values too */
        CHECK_OK(sdb_mask_dilate(&m, n, &d, &err), &err);
        int bad = 0;
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                int v = 0;
                for (int yy = y - n; yy <= y + n; yy++)
                    for (int xx = x - n; xx <= x + n; xx++)
                        if (yy >= 0 && yy < h && xx >= 0 && xx < w && m.px[yy * w + xx] > v) v = m.px[yy * w + xx];
                if (d.px[y * w + x] != v) bad++;
            }
        CHECKF(bad == 0, "%dx%d n=%d: %d pixels differ from the brute-force max filter", w, h, n, bad);
        sdb_image_free(&m);
        sdb_image_free(&d);
    }
}

static void test_blur_gaussian(void)
{
    /* A1111: kernel_size = 2 * int(2.5 * blur + 0.5) + 1 — by hand: 1 -> 7, 4 -> 21, 7 -> 37, 10 -> 51 */
    CHECK(sdb_mask_blur_ksize(1) == 7 && sdb_mask_blur_ksize(4) == 21 && sdb_mask_blur_ksize(7) == 37 &&
          sdb_mask_blur_ksize(10) == 51 && sdb_mask_blur_ksize(3) == 17);
    sdb_err err;
    const int ns[] = {1, 4, 7, 10};
    for (int t = 0; t < 4; t++) {
        int n = ns[t], w = 31 + (int)(rnd() % 40), h = 17 + (int)(rnd() % 30);
        sdb_image m = {0}, b = {0};
        random_mask(&m, w, h);
        CHECK_OK(sdb_mask_blur(&m, n, &b, &err), &err);
        /* the 2-D Gaussian sum, directly (not separably), sigma = n, ks x ks, reflect-101 borders */
        int ks = 2 * (int)(2.5 * n + 0.5) + 1, r = ks / 2;
        double norm = 0, *wt = malloc((size_t)ks * ks * sizeof *wt);
        for (int i = -r; i <= r; i++) norm += exp(-(double)i * i / (2.0 * n * n));
        for (int dy = -r; dy <= r; dy++)
            for (int dx = -r; dx <= r; dx++) wt[(dy + r) * ks + dx + r] = exp(-(double)(dx * dx + dy * dy) / (2.0 * n * n));
        int worst = 0;
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                double acc = 0;
                for (int dy = -r; dy <= r; dy++)
                    for (int dx = -r; dx <= r; dx++)
                        acc += wt[(dy + r) * ks + dx + r] * m.px[refl(y + dy, h) * w + refl(x + dx, w)];
                acc /= norm * norm;
                int e = (int)fabs(b.px[y * w + x] - acc + 0.0) + (fabs(b.px[y * w + x] - acc) > 1.0 ? 1 : 0);
                if (fabs(b.px[y * w + x] - acc) > 1.0) worst = e > worst ? e : worst;
            }
        free(wt);
        CHECKF(worst == 0, "blur %d on %dx%d: a pixel is more than 1/255 off the double Gaussian", n, w, h);
        /* and it is a blur: a hard edge now has intermediate values */
        int mid = 0;
        for (int i = 0; i < w * h; i++) mid += b.px[i] > 10 && b.px[i] < 245;
        CHECK(mid > 0);
        sdb_image_free(&m);
        sdb_image_free(&b);
    }
}

/* ---- colour ----------------------------------------------------------------------------------- */

static void test_lab_and_color_match(void)
{
    /* published sRGB -> CIELAB (D65) values, in OpenCV's 8-bit encoding (L * 255/100, a/b + 128) */
    static const struct { uint8_t rgb[3]; double L, a, b; } known[] = {
        {{255, 255, 255}, 100.0, 0.0, 0.0}, {{0, 0, 0}, 0.0, 0.0, 0.0}, {{255, 0, 0}, 53.24, 80.09, 67.20},
        {{0, 255, 0}, 87.73, -86.18, 83.18}, {{0, 0, 255}, 32.30, 79.19, -107.86}, {{128, 128, 128}, 53.59, 0.0, 0.0}};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
        uint8_t lab[3], back[3];
        sdb_rgb_to_lab8(known[i].rgb, lab);
        double want[3] = {known[i].L * 255.0 / 100.0, known[i].a + 128.0, known[i].b + 128.0};
        for (int c = 0; c < 3; c++) {
            double w = want[c] < 0 ? 0 : want[c] > 255 ? 255 : want[c];
            CHECKF(fabs(lab[c] - w) <= 1.0, "rgb %d,%d,%d: LAB[%d] = %d, published %.2f", known[i].rgb[0], known[i].rgb[1], known[i].rgb[2], c, lab[c], w);
        }
        if (known[i].b > -100) {   /* pure blue's b is outside 8-bit LAB: no round trip */
            sdb_lab8_to_rgb(lab, back);
            for (int c = 0; c < 3; c++) CHECK(abs(back[c] - known[i].rgb[c]) <= 8);   /* 8-bit LAB is coarse for saturated colours */
        }
    }
    /* histogram matching: a real photo and a colour-cast, darkened copy of another one */
    sdb_err err;
    sdb_image ref = {0}, src0 = {0}, src = {0}, out = {0}, full = {0};
    CHECK_OK(sdb_image_load(sdb_t_path("refs/pipeline/inputs/scene_128x128.png"), &ref, 3, 0, &err), &err);
    CHECK_OK(sdb_image_load(SDB_SOURCE_DIR "/tests/data/garden-96x128.jpg", &src0, 3, 0, &err), &err);
    if (!ref.px || !src0.px) return;
    CHECK_OK(sdb_image_copy(&src0, &src, &err), &err);
    for (size_t i = 0; i < (size_t)src.w * src.h; i++) {
        src.px[3 * i] = (uint8_t)(src.px[3 * i] * 0.6);
        src.px[3 * i + 2] = (uint8_t)(40 + src.px[3 * i + 2] * 0.8);
    }
    CHECK_OK(sdb_color_correct(&src, &ref, 1, &out, &err), &err);
    size_t nr = (size_t)ref.w * ref.h, ns = (size_t)out.w * out.h;
    uint8_t *rl = malloc(nr * 3);
    for (size_t i = 0; i < nr; i++) sdb_rgb_to_lab8(ref.px + 3 * i, rl + 3 * i);
    /* Each output level v holds the output's quantiles up to q = cum_out(v); there the reference's
     * q-quantile lies between its levels pv < vr bracketing q (np.interp interpolates between
     * them); v must be inside [pv, vr] within 1 level (8-bit truncation). */
    for (int c = 0; c < 3; c++) {
        size_t hr[256] = {0}, ho[256] = {0}, co = 0;
        for (size_t i = 0; i < nr; i++) hr[rl[3 * i + c]]++;
        for (size_t i = 0; i < ns; i++) ho[out.px[3 * i + c]]++;
        int worst = 0, levels = 0;
        for (int v = 0; v < 256; v++) {
            if (!ho[v]) continue;
            levels++;
            co += ho[v];
            double q = (double)co / (double)ns;
            size_t cr = 0;
            int vr = 0;
            while (vr < 255 && (double)(cr += hr[vr]) / (double)nr < q - 1e-12) vr++;
            int pv = vr - 1;
            while (pv > 0 && !hr[pv]) pv--;
            int d = v > vr + 1 ? v - vr - 1 : v < pv - 1 ? pv - 1 - v : 0;
            if (d > worst) worst = d;
        }
        CHECKF(worst == 0 && levels > 20, "LAB channel %d: an output quantile is %d levels outside the reference's", c, worst);
    }
    free(rl);
    /* the full correction keeps the output's own luminosity (0.3 R + 0.59 G + 0.11 B), moves hue */
    CHECK_OK(sdb_color_correct(&src, &ref, 0, &full, &err), &err);
    int lum_bad = 0;
    double shift = 0;
    for (size_t i = 0; i < ns; i++) {
        const uint8_t *a = src.px + 3 * i, *b = full.px + 3 * i;
        double la = 0.3 * a[0] + 0.59 * a[1] + 0.11 * a[2], lb = 0.3 * b[0] + 0.59 * b[1] + 0.11 * b[2];
        if (fabs(la - lb) > 1.0) lum_bad++;
        shift += abs(a[0] - b[0]) + abs(a[2] - b[2]);
    }
    CHECKF(lum_bad * 100 < (int)ns, "%d of %zu pixels changed luminosity", lum_bad, ns);
    CHECK(shift / ns > 5.0);
    sdb_image_free(&ref); sdb_image_free(&src0); sdb_image_free(&src); sdb_image_free(&out); sdb_image_free(&full);
}

/* ---- the pipeline (tiny model) ------------------------------------------------------------------ */

static void test_masked_content(void) { masked_content_cases(0, 0); }

static void test_fill(void)
{
    sdb_err err;
    /* fill: a uniform surround fills the hole with its colour; the rest of the image is untouched */
    sdb_image u = {0}, hole = {0}, f = {0};
    CHECK_OK(sdb_image_alloc(&u, 57, 41, 3, &err), &err);
    CHECK_OK(sdb_image_alloc(&hole, 57, 41, 1, &err), &err);
    for (int i = 0; i < 57 * 41; i++) {
        int x = i % 57, y = i / 57, in = x >= 20 && x < 35 && y >= 12 && y < 30;
        hole.px[i] = in ? 255 : 0;
        u.px[3 * i] = in ? (uint8_t)rnd() : 200;
        u.px[3 * i + 1] = in ? (uint8_t)rnd() : 40;
        u.px[3 * i + 2] = in ? (uint8_t)rnd() : 90;
    }
    CHECK_OK(sdb_mask_fill(&u, &hole, &f, &err), &err);
    int off = 0, moved = 0;
    for (int i = 0; i < 57 * 41 && f.px; i++) {
        if (hole.px[i]) off += abs(f.px[3 * i] - 200) > 1 || abs(f.px[3 * i + 1] - 40) > 1 || abs(f.px[3 * i + 2] - 90) > 1;
        else moved += memcmp(f.px + 3 * i, u.px + 3 * i, 3) != 0;
    }
    CHECKF(off == 0 && moved == 0, "fill: %d hole pixels not the surround's colour, %d outside pixels changed", off, moved);
    sdb_image_free(&u); sdb_image_free(&hole); sdb_image_free(&f);
}


/* ---- formats, alpha ----------------------------------------------------------------------------- */

/* The first luminance quantisation value of a JPEG file, and its COM text. */
static int jpeg_q0(const uint8_t *buf, size_t n, char *com, size_t comn)
{
    struct jpeg_decompress_struct ci;
    struct jpeg_error_mgr je;
    ci.err = jpeg_std_error(&je);
    jpeg_create_decompress(&ci);
    jpeg_mem_src(&ci, buf, (unsigned long)n);
    jpeg_save_markers(&ci, JPEG_COM, 0xFFFF);
    jpeg_read_header(&ci, TRUE);
    int q = ci.quant_tbl_ptrs[0] ? ci.quant_tbl_ptrs[0]->quantval[0] : -1;
    com[0] = 0;
    for (jpeg_saved_marker_ptr mk = ci.marker_list; mk; mk = mk->next)
        if (mk->marker == JPEG_COM) snprintf(com, comn, "%.*s", (int)mk->data_length, (const char *)mk->data);
    jpeg_destroy_decompress(&ci);
    return q;
}

static void test_jpeg_output(void)
{
    sdb_err err;
    sdb_image src = {0}, back = {0};
    CHECK_OK(sdb_image_load(SDB_SOURCE_DIR "/tests/data/street-136x96.png", &src, 3, 0, &err), &err);
    if (!src.px) return;
    const int qs[3] = {30, 80, 95};
    size_t sizes[3];
    double err2[3];
    for (int k = 0; k < 3; k++) {
        uint8_t *buf = NULL;
        size_t n = 0;
        CHECK_OK(sdb_image_encode_for_path("x/out.JPG", &src, "a prompt\nSteps: 2", qs[k], &buf, &n, &err), &err);
        char com[256];
        /* libjpeg's quality scaling of the standard luminance table's first entry (16) */
        int scale = qs[k] < 50 ? 5000 / qs[k] : 200 - 2 * qs[k], want = (16 * scale + 50) / 100;
        want = want < 1 ? 1 : want;
        CHECKF(jpeg_q0(buf, n, com, sizeof com) == want, "quality %d", qs[k]);
        CHECK(!strcmp(com, "a prompt\nSteps: 2"));
        CHECK_OK(sdb_image_load_memory(buf, n, "out.jpg", &back, 0, 0, &err), &err);
        CHECK(back.w == src.w && back.h == src.h && back.c == 3);
        double e = 0;
        for (size_t i = 0; i < (size_t)src.w * src.h * 3 && back.px; i++) e += (double)(back.px[i] - src.px[i]) * (back.px[i] - src.px[i]);
        err2[k] = e;
        sizes[k] = n;
        sdb_image_free(&back);
        free(buf);
    }
    CHECK(sizes[0] < sizes[1] && sizes[1] < sizes[2] && err2[0] > err2[1] && err2[1] > err2[2]);
    CHECK(sdb_image_format_of_path("a.jpeg") == SDB_FMT_JPEG && sdb_image_format_of_path("a.png") == SDB_FMT_PNG &&
          sdb_image_format_of_path("a.tif") < 0 && sdb_image_format_of_path("dir.jpg/a") < 0);
    sdb_image_free(&src);
}

/* A 16-bit PNG of color type ct whose samples are (v << 8) | noise: it scales to v exactly. */
static void write_png16(const char *path, int ct, int w, int h, const uint8_t *v8)
{
    int ch = ct == PNG_COLOR_TYPE_GRAY ? 1 : ct == PNG_COLOR_TYPE_GRAY_ALPHA ? 2 : ct == PNG_COLOR_TYPE_RGB ? 3 : 4;
    FILE *f = fopen(path, "wb");
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    if (!f || !png || !info || setjmp(png_jmpbuf(png))) { CHECK(0); if (f) fclose(f); return; }
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 16, ct, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    uint8_t *row = malloc((size_t)w * ch * 2);
    for (int y = 0; y < h; y++) {
        for (int i = 0; i < w * ch; i++) { row[2 * i] = v8[(size_t)y * w * ch + i]; row[2 * i + 1] = (uint8_t)rnd(); }
        png_write_row(png, row);
    }
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    free(row);
    fclose(f);
}

static void test_png16(void)
{
    sdb_err err;
    const int cts[4] = {PNG_COLOR_TYPE_GRAY, PNG_COLOR_TYPE_GRAY_ALPHA, PNG_COLOR_TYPE_RGB, PNG_COLOR_TYPE_RGB_ALPHA};
    for (int k = 0; k < 4; k++) {
        int ch = k == 0 ? 1 : k == 1 ? 2 : k == 2 ? 3 : 4, w = 23, h = 11;
        uint8_t v[23 * 11 * 4];
        for (int i = 0; i < w * h * ch; i++) v[i] = (uint8_t)rnd();
        char path[600];
        snprintf(path, sizeof path, "%s/p16-%d.png", sdb_t_tmpdir(), k);
        write_png16(path, cts[k], w, h, v);
        sdb_image im = {0};
        CHECK_OK(sdb_image_load_ex(path, &im, 0, 0, SDB_LOAD_EXACT16, &err), &err);
        if (!im.px) continue;
        int bad = 0;
        for (int i = 0; i < w * h; i++) {
            const uint8_t *s = v + (size_t)i * ch;
            uint8_t want[4] = {s[0], ch >= 3 ? s[1] : s[0], ch >= 3 ? s[2] : s[0], ch == 2 ? s[1] : ch == 4 ? s[3] : 255};
            for (int c = 0; c < im.c; c++) bad += im.px[(size_t)i * im.c + c] != want[c];
        }
        CHECKF(bad == 0 && im.c == (ch == 1 ? 1 : ch == 3 ? 3 : 4), "16-bit color type %d: %d samples wrong", cts[k], bad);
        sdb_image_free(&im);
        if (k == 0) {   /* Pillow-exact mode (sdb_image_load) keeps Pillow's clip: a gray 16-bit reads 255 */
            CHECK_OK(sdb_image_load(path, &im, 0, 0, &err), &err);
            int clipped = 0;
            for (int i = 0; i < w * h && im.px; i++) clipped += v[i] > 0 && im.px[i] == 255;
            CHECK(clipped > w * h / 2);
            sdb_image_free(&im);
        }
    }
}

static void test_alpha(void)
{
    sdb_model *m = tiny(0);
    if (!m) return;
    sdb_err err;
    sdb_image rgb = {0}, rgba = {0}, msk = {0}, out = {0}, back = {0};
    odd_input(45, 37, 0, &rgb);
    CHECK_OK(sdb_image_alloc(&rgba, 45, 37, 4, &err), &err);
    for (int i = 0; i < 45 * 37 && rgb.px; i++) {
        memcpy(rgba.px + 4 * i, rgb.px + 3 * i, 3);
        int x = i % 45, y = i / 45;
        rgba.px[4 * i + 3] = (x > 10 && x < 22 && y > 8 && y < 20) ? 0 : x % 7 == 0 ? 180 : 255;   /* a transparent hole */
    }
    /* RGBA in, a mask file: the output keeps the input's alpha exactly, through a PNG file */
    random_mask(&msk, 45, 37);
    sdb_gen_params p;
    sdb_gen_params_default(&p);
    p.prompt = "x";
    p.steps = 2;
    p.image = &rgba;
    p.mask = &msk;
    CHECK_OK(sdb_generate(m, &p, NULL, NULL, &out, NULL, &err), &err);
    CHECK(out.c == 4 && out.w == 45 && out.h == 37);
    char path[600];
    snprintf(path, sizeof path, "%s/alpha-out.png", sdb_t_tmpdir());
    if (out.px) CHECK_OK(sdb_image_write(path, &out, "p", 0, &err), &err);
    CHECK_OK(sdb_image_load(path, &back, 0, 0, &err), &err);
    int abad = 0;
    for (int i = 0; i < 45 * 37 && back.px && back.c == 4; i++) abad += back.px[4 * i + 3] != rgba.px[4 * i + 3];
    CHECKF(back.c == 4 && abad == 0, "%d alpha values changed", abad);
    sdb_image_free(&out); sdb_image_free(&back);
    /* mask: alpha — the transparent hole is repainted, every opaque pixel comes back identical */
    p.mask = NULL;
    p.restore.mask_from_alpha = 1;
    p.restore.keep_unmasked = 1;
    CHECK_OK(sdb_generate(m, &p, NULL, NULL, &out, NULL, &err), &err);
    CHECK(out.c == 3);
    int kept = 0, opaque = 0, hole_changed = 0;
    for (int i = 0; i < 45 * 37 && out.px; i++) {
        if (rgba.px[4 * i + 3] == 255) { opaque++; kept += !memcmp(out.px + 3 * i, rgb.px + 3 * i, 3); }
        if (rgba.px[4 * i + 3] == 0) hole_changed += memcmp(out.px + 3 * i, rgb.px + 3 * i, 3) != 0;
    }
    CHECK(opaque > 0 && kept == opaque && hole_changed > 0);
    sdb_image_free(&out);
    /* without an alpha channel it is an error that says so */
    p.image = &rgb;
    CHECK(sdb_generate(m, &p, NULL, NULL, &out, NULL, &err) == SDB_EINVAL && strstr(err.msg, "alpha"));
    sdb_image_free(&rgb); sdb_image_free(&rgba); sdb_image_free(&msk);
}

int main(void)
{
    RUN(test_dilate_brute_force);
    RUN(test_blur_gaussian);
    RUN(test_lab_and_color_match);
    RUN(test_jpeg_output);
    RUN(test_png16);
    RUN(test_masked_content);
    RUN(test_fill);
    RUN(test_alpha);
    return sdb_t_done();
}
