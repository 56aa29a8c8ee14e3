/*
 * test_sheet.c — `sdbatch sheet` and the drawing under it. The 5x7 font against glyphs drawn out
 * here by hand, text placement, the mask outline against a brute-force reading of its definition,
 * line wrapping on hand-worked cases; then a real batch (tiny model: two jobs done, one failing on
 * an undecodable input) run by the real binary: the sheet's pages have the documented layout, the
 * output boxes hold exactly the Lanczos-scaled outputs, the input boxes the scaled inputs with the
 * mask's outline in red, the failed row its error in red, paging writes -001/-002 files, and the
 * HTML page escapes the prompts and points at files that exist.
 */
#include "harness.h"
#include "sdb/draw.h"
#include "sdb/fsutil.h"
#include "sdb/image.h"
#include "sdb/resize.h"
#include "sdb/sheet.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char out[1 << 16];

static void test_font(void)
{
    static const char *const A[7] = {".###.", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"};
    static const char *const one[7] = {"..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."};
    static const char *const g[7] = {".....", ".####", "#...#", "#...#", ".####", "....#", ".###."};
    static const char *const q[7] = {".###.", "#...#", "....#", "...#.", "..#..", ".....", "..#.."};
    const char *const *want[4] = {A, one, g, q};
    const unsigned char ch[4] = {'A', '1', 'g', 0x80};  /* a non-ASCII byte draws as '?' */
    for (int k = 0; k < 4; k++) {
        const uint8_t *gl = sdb_font_glyph(ch[k]);
        for (int r = 0; r < 7; r++)
            for (int c = 0; c < 5; c++)
                CHECKF(((gl[r] >> (4 - c)) & 1) == (want[k][r][c] == '#'), "glyph %d row %d col %d", k, r, c);
    }
    /* every printable glyph but the space has ink, and no two are the same */
    for (int a = 33; a < 127; a++) {
        const uint8_t *ga = sdb_font_glyph((unsigned char)a);
        int ink = 0;
        for (int r = 0; r < 7; r++) ink |= ga[r];
        CHECKF(ink && !(ink & ~0x1f), "glyph %c", a);
        for (int b = a + 1; b < 127; b++) CHECKF(memcmp(ga, sdb_font_glyph((unsigned char)b), 7) != 0, "%c == %c", a, b);
    }
    /* drawn at scale 2: "1A" at (3, 4) */
    sdb_image im = {0};
    sdb_err err = {0};
    CHECK_OK(sdb_image_alloc(&im, 40, 24, 3, &err), &err);
    memset(im.px, 0, 40 * 24 * 3);
    const uint8_t ink[3] = {10, 200, 30};
    CHECK(sdb_draw_text(&im, 3, 4, "1A", ink, 2) == 2 * 2 * SDB_FONT_ADVANCE);
    CHECK(sdb_text_chars("a\xc3\xa9z") == 3);
    int bad = 0;
    for (int y = 0; y < 24; y++)
        for (int x = 0; x < 40; x++) {
            int on = 0, gx = x - 3, gy = y - 4;
            if (gy >= 0 && gy < 14 && gx >= 0) {
                int cell = gx / 12, cx = (gx % 12) / 2, cy = gy / 2;
                if (cell < 2 && cx < 5) on = (cell ? A : one)[cy][cx] == '#';
            }
            const uint8_t *p = im.px + ((size_t)y * 40 + x) * 3;
            bad += on ? memcmp(p, ink, 3) != 0 : (p[0] | p[1] | p[2]) != 0;
        }
    CHECKF(bad == 0, "%d pixels wrong", bad);
    sdb_image_free(&im);
}

static void test_outline(void)
{
    sdb_err err = {0};
    sdb_image mask = {0}, im = {0};
    const int w = 37, h = 29;
    CHECK_OK(sdb_image_alloc(&mask, w, h, 1, &err), &err);
    CHECK_OK(sdb_image_alloc(&im, w + 4, h + 4, 3, &err), &err);
    unsigned s = 12345;
    for (int i = 0; i < w * h; i++) {
        int x = i % w, y = i / w;
        s = s * 1103515245u + 12345u;
        int blob = (x - 15) * (x - 15) + (y - 12) * (y - 12) < 90 || (x > 28 && y > 20);
        mask.px[i] = blob ? (uint8_t)(128 + (s >> 25)) : (uint8_t)(s >> 25); /* >= 128 inside */
    }
    memset(im.px, 0, (size_t)(w + 4) * (h + 4) * 3);
    const uint8_t red[3] = {255, 0, 0};
    for (int grow = 0; grow <= 2; grow++) {
        memset(im.px, 0, (size_t)(w + 4) * (h + 4) * 3);
        sdb_draw_mask_outline(&im, &mask, 2, 2, red, grow);
        int bad = 0, painted = 0;
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                /* brute force: inside, and some edge pixel (inside with a 4-neighbour outside or off
                 * the mask) within grow in x and y */
#define INSIDE(a, b) ((a) >= 0 && (b) >= 0 && (a) < w && (b) < h && mask.px[(b) * w + (a)] >= 128)
                int want = 0;
                if (INSIDE(x, y))
                    for (int b = y - grow; b <= y + grow; b++)
                        for (int a = x - grow; a <= x + grow; a++)
                            if (INSIDE(a, b) && (!INSIDE(a - 1, b) || !INSIDE(a + 1, b) || !INSIDE(a, b - 1) || !INSIDE(a, b + 1)))
                                want = 1;
#undef INSIDE
                int got = im.px[((size_t)(y + 2) * (w + 4) + x + 2) * 3] == 255;
                bad += got != want;
                painted += got;
            }
        CHECKF(bad == 0 && painted > 20, "grow %d: %d wrong, %d painted", grow, bad, painted);
    }
    sdb_image_free(&mask);
    sdb_image_free(&im);
}

static void test_wrap(void)
{
    char *l[8];
    int n = sdb_wrap_text("the quick brown fox jumps", 10, l, 8);
    CHECK(n == 3 && !strcmp(l[0], "the quick") && !strcmp(l[1], "brown fox") && !strcmp(l[2], "jumps"));
    for (int i = 0; i < n; i++) free(l[i]);
    n = sdb_wrap_text("abcdefghijklmnop qr\nst", 6, l, 8);
    CHECK(n == 5 && !strcmp(l[0], "abcdef") && !strcmp(l[1], "ghijkl") && !strcmp(l[2], "mnop") && !strcmp(l[3], "qr") && !strcmp(l[4], "st"));
    for (int i = 0; i < n; i++) free(l[i]);
    n = sdb_wrap_text("one two three four five six", 9, l, 2);
    CHECK(n == 2 && !strcmp(l[0], "one two") && !strcmp(l[1], "three...") );
    for (int i = 0; i < n; i++) free(l[i]);
}

/* The Lanczos fit of an image file into a t x t box (the truth the sheet must show). */
static int fitted(const char *path, int channels, int t, sdb_image *o)
{
    sdb_err err = {0};
    sdb_image im = {0};
    if (sdb_image_load(path, &im, channels, 0, &err)) return -1;
    int w = t, h = t;
    if (im.w >= im.h) h = (int)((double)t * im.h / im.w + 0.5); else w = (int)((double)t * im.w / im.h + 0.5);
    int rc = sdb_resize_lanczos(&im, w, h, o, &err);
    sdb_image_free(&im);
    return rc;
}

static const uint8_t *px(const sdb_image *im, int x, int y) { return im->px + ((size_t)y * im->w + x) * 3; }

static void test_sheet_of_a_run(void)
{
    const char *dir = sdb_t_tmpdir();
    char path[1024], text[4096], args[4096];
    sdb_err err = {0};
    /* inputs: two real pictures and masks, one file that is no image */
    const char *files[4][2] = {{"refs/pipeline/inputs/scene_192x128.png", "barn.png"}, {"refs/pipeline/inputs/smallmask_192x128.png", "barn-mask.png"},
                               {"refs/pipeline/inputs/scene_136x96.jpg", "street.jpg"}, {"refs/pipeline/inputs/mask_136x96.png", "street-mask.png"}};
    for (int i = 0; i < 4; i++) {
        char *buf;
        size_t n;
        snprintf(path, sizeof path, "%s/%s", dir, files[i][1]);
        CHECK_OK(sdb_read_file(sdb_t_path(files[i][0]), &buf, &n, &err), &err);
        CHECK_OK(sdb_write_file_atomic(path, buf, n, &err), &err);
        free(buf);
    }
    snprintf(path, sizeof path, "%s/broken.png", dir);
    CHECK_OK(sdb_write_file_atomic(path, "not a png", 9, &err), &err);
    snprintf(text, sizeof text,
             "version: 1\nmodel: %s\noutput_dir: out\ndefaults:\n  steps: 2\njobs:\n"
             "  - id: barn\n    image: barn.png\n    mask: barn-mask.png\n    prompt: \"a red barn <old> & weathered\"\n    seed: 3\n"
             "  - id: street\n    image: street.jpg\n    mask: street-mask.png\n    prompt: a street\n"
             "  - id: broken\n    image: broken.png\n    mask: street-mask.png\n    prompt: never\n",
             sdb_t_path("models/tiny-sd-inpaint"));
    char manifest[1024];
    snprintf(manifest, sizeof manifest, "%s/m.yaml", dir);
    CHECK_OK(sdb_write_file_atomic(manifest, text, strlen(text), &err), &err);
    snprintf(args, sizeof args, "run '%s'", manifest);
    int rc = sdb_t_sdbatch(args, out, sizeof out);
    CHECKF(rc == 3, "run: exit %d: %s", rc, out);   /* one job failed */

    snprintf(args, sizeof args, "sheet '%s' -o '%s/sheet.png' --thumb 96", manifest, dir);
    rc = sdb_t_sdbatch(args, out, sizeof out);
    CHECKF(rc == 0 && strstr(out, "sheet.png"), "sheet: exit %d: %s", rc, out);
    sdb_image sh = {0};
    snprintf(path, sizeof path, "%s/sheet.png", dir);
    CHECK_OK(sdb_image_load(path, &sh, 3, 0, &err), &err);
    const int t = 96, P = SDB_SHEET_PAD;
    const int W = P + 2 * (t + P) + SDB_SHEET_CAPTION_CHARS * SDB_FONT_ADVANCE + P, H = SDB_SHEET_HEADER + 3 * (t + P);
    CHECKF(sh.w == W && sh.h == H, "sheet %dx%d, layout says %dx%d", sh.w, sh.h, W, H);
    if (sh.w != W || sh.h != H) { sdb_image_free(&sh); return; }
    const char *outs[2] = {"out/barn.png", "out/street.png"}, *ins[2] = {"barn.png", "street.jpg"},
               *masks[2] = {"barn-mask.png", "street-mask.png"};
    for (int r = 0; r < 2; r++) {
        const int y0 = SDB_SHEET_HEADER + r * (t + P);
        /* the output box: exactly the scaled output, centred */
        sdb_image o = {0}, in = {0}, mk = {0};
        snprintf(path, sizeof path, "%s/%s", dir, outs[r]);
        CHECK(fitted(path, 3, t, &o) == 0);
        int ox = P + t + P + (t - o.w) / 2, oy = y0 + (t - o.h) / 2, bad = 0;
        for (int y = 0; y < o.h; y++)
            for (int x = 0; x < o.w; x++) bad += memcmp(px(&sh, ox + x, oy + y), o.px + ((size_t)y * o.w + x) * 3, 3) != 0;
        CHECKF(bad == 0, "row %d: %d output pixels differ", r, bad);
        /* the input box: the scaled input, except the mask's outline (painted red) */
        snprintf(path, sizeof path, "%s/%s", dir, ins[r]);
        CHECK(fitted(path, 3, t, &in) == 0);
        snprintf(path, sizeof path, "%s/%s", dir, masks[r]);
        CHECK(fitted(path, 1, t, &mk) == 0 && mk.w == in.w && mk.h == in.h);
        int ix = P + (t - in.w) / 2, iy = y0 + (t - in.h) / 2, red = 0, wrong = 0;
        for (int y = 0; y < in.h; y++)
            for (int x = 0; x < in.w; x++) {
#define M(a, b) ((a) >= 0 && (b) >= 0 && (a) < mk.w && (b) < mk.h && mk.px[(size_t)(b) * mk.w + (a)] >= 128)
                int edge = 0;
                for (int b = y - 1; b <= y + 1; b++)
                    for (int a = x - 1; a <= x + 1; a++)
                        if (M(a, b) && (!M(a - 1, b) || !M(a + 1, b) || !M(a, b - 1) || !M(a, b + 1))) edge = 1;
                edge &= M(x, y);
#undef M
                const uint8_t *p = px(&sh, ix + x, iy + y);
                if (edge) { red++; wrong += !(p[0] == 255 && p[1] == 32 && p[2] == 32); }
                else wrong += memcmp(p, in.px + ((size_t)y * in.w + x) * 3, 3) != 0;
            }
        CHECKF(wrong == 0 && red > 10, "row %d: %d input pixels wrong, %d outline pixels", r, wrong, red);
        sdb_image_free(&o); sdb_image_free(&in); sdb_image_free(&mk);
    }
    /* the failed row: no picture in the output box, the error in red in the caption */
    {
        const int y0 = SDB_SHEET_HEADER + 2 * (t + P), xc = P + 2 * (t + P);
        int reds = 0, ink = 0;
        for (int y = y0; y < y0 + t; y++)
            for (int x = xc; x < W - P; x++) {
                const uint8_t *p = px(&sh, x, y);
                reds += p[0] == 255 && p[1] == 64 && p[2] == 64;
                ink += p[0] > 100;
            }
        CHECKF(reds > 200 && ink > reds, "failed row: %d red caption pixels", reds);
        const uint8_t *c = px(&sh, P + t + P + 2, y0 + 2);
        CHECK(c[0] == 52 && c[1] == 52 && c[2] == 58);
    }
    sdb_image_free(&sh);

    /* paging: 2 rows a page -> sheet-001.png (2 rows) and sheet-002.png (1 row) */
    snprintf(args, sizeof args, "sheet '%s' -o '%s/pages.png' --thumb 64 --per-page 2", manifest, dir);
    rc = sdb_t_sdbatch(args, out, sizeof out);
    CHECKF(rc == 0, "exit %d: %s", rc, out);
    for (int pg = 1; pg <= 2; pg++) {
        snprintf(path, sizeof path, "%s/pages-%03d.png", dir, pg);
        sdb_image im = {0};
        CHECK_OK(sdb_image_load(path, &im, 3, 0, &err), &err);
        CHECK(im.h == SDB_SHEET_HEADER + (pg == 1 ? 2 : 1) * (64 + P));
        sdb_image_free(&im);
    }
    snprintf(path, sizeof path, "%s/pages.png", dir);
    CHECK(access(path, F_OK) != 0);

    /* HTML */
    snprintf(args, sizeof args, "sheet '%s' --html -o '%s/sheet.html'", manifest, dir);
    rc = sdb_t_sdbatch(args, out, sizeof out);
    CHECKF(rc == 0, "exit %d: %s", rc, out);
    char *html = NULL;
    size_t hn = 0;
    snprintf(path, sizeof path, "%s/sheet.html", dir);
    CHECK_OK(sdb_read_file(path, &html, &hn, &err), &err);
    if (html) {
        CHECK(strstr(html, "a red barn &lt;old&gt; &amp; weathered"));
        CHECK(strstr(html, "cannot be decoded"));
        CHECK(strstr(html, "src=\"out/barn.png\"") && strstr(html, "src=\"barn-mask.png\"") && strstr(html, "src=\"street.jpg\""));
        CHECK(strstr(html, "class=\"failed\""));
        free(html);
    }
    /* a bad manifest: exit 2 */
    snprintf(args, sizeof args, "sheet '%s/nope.yaml'", dir);
    CHECK(sdb_t_sdbatch(args, out, sizeof out) == 2);
}

int main(void)
{
    if (!sdb_t_data()) return 1;
    RUN(test_font);
    RUN(test_outline);
    RUN(test_wrap);
    RUN(test_sheet_of_a_run);
    return sdb_t_done();
}
