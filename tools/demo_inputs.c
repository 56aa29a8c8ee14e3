/*
 * demo_inputs.c — `sdbatch-demo-inputs OUT_DIR`: draws the small demo pictures and masks that
 * are committed in tests/data/ (the README's demo, the batch-runner demo manifest, tests).
 * Everything is drawn by code here: simple shapes with anti-aliased edges and smooth gradients,
 * no noise, so the PNGs stay a few KB. Masks are 8-bit grayscale PNGs, white (255) where the
 * picture is to be inpainted, black elsewhere.
 *
 *   demo.png / demo-mask.png                    128x128  sky, sun, hills, a house; mask over the house
 *   street-136x96.png / street-136x96-mask.png  136x96   non-square (landscape): houses along a
 *                                                        road; mask: a diagonal scratch
 *   garden-96x128.jpg / garden-96x128-mask.png  96x128   portrait JPEG: a garden path and flowers;
 *                                                        mask: a blob over the flower bed
 *
 * Re-running it reproduces the files byte for byte (fixed drawing, fixed libpng/libjpeg settings
 * on the same library versions).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <png.h>

#include "sdb/fsutil.h"

typedef struct { int w, h; float *px; } canvas; /* RGB, 0..1 */

static canvas canvas_new(int w, int h)
{
    canvas c = {w, h, calloc((size_t)w * h * 3, sizeof(float))};
    if (!c.px) { fprintf(stderr, "out of memory\n"); exit(1); }
    return c;
}

static float clampf(float x, float lo, float hi) { return x < lo ? lo : x > hi ? hi : x; }

/* Blends colour (r, g, b) into pixel (x, y) with coverage a. */
static void blend(canvas *c, int x, int y, float a, float r, float g, float b)
{
    if (x < 0 || y < 0 || x >= c->w || y >= c->h || a <= 0) return;
    float *p = c->px + ((size_t)y * c->w + x) * 3;
    a = clampf(a, 0, 1);
    p[0] += a * (r - p[0]);
    p[1] += a * (g - p[1]);
    p[2] += a * (b - p[2]);
}

/* Signed-distance shapes: coverage = clamp(0.5 - d) gives a one-pixel anti-aliased edge. */
typedef float (*sdf_fn)(float x, float y, const float *prm);

static void fill(canvas *c, sdf_fn f, const float *prm, float r, float g, float b)
{
    for (int y = 0; y < c->h; y++)
        for (int x = 0; x < c->w; x++) {
            float d = f(x + 0.5f, y + 0.5f, prm);
            if (d < 0.5f) blend(c, x, y, clampf(0.5f - d, 0, 1), r, g, b);
        }
}

static float sd_circle(float x, float y, const float *p) /* cx, cy, radius */
{
    return hypotf(x - p[0], y - p[1]) - p[2];
}

static float sd_box(float x, float y, const float *p) /* x0, y0, x1, y1 */
{
    float dx = fmaxf(p[0] - x, x - p[2]), dy = fmaxf(p[1] - y, y - p[3]);
    return fmaxf(dx, dy);
}

static float sd_ellipse(float x, float y, const float *p) /* cx, cy, rx, ry (approximate) */
{
    float u = (x - p[0]) / p[2], v = (y - p[1]) / p[3], k = sqrtf(u * u + v * v);
    return (k - 1.0f) * fminf(p[2], p[3]);
}

/* Triangle (x0,y0,x1,y1,x2,y2): max of the three edge distances (exact enough for AA). */
static float sd_tri(float x, float y, const float *p)
{
    float d = -1e9f;
    float sx = 0, sy = 0;
    for (int i = 0; i < 3; i++) { sx += p[2 * i]; sy += p[2 * i + 1]; }
    sx /= 3; sy /= 3;
    for (int i = 0; i < 3; i++) {
        float ax = p[2 * i], ay = p[2 * i + 1], bx = p[2 * ((i + 1) % 3)], by = p[2 * ((i + 1) % 3) + 1];
        float nx = by - ay, ny = ax - bx, len = hypotf(nx, ny);
        nx /= len; ny /= len;
        if (nx * (sx - ax) + ny * (sy - ay) > 0) { nx = -nx; ny = -ny; } /* outward */
        d = fmaxf(d, nx * (x - ax) + ny * (y - ay));
    }
    return d;
}

/* A thick line segment (x0, y0, x1, y1, half-width). */
static float sd_segment(float x, float y, const float *p)
{
    float vx = p[2] - p[0], vy = p[3] - p[1], wx = x - p[0], wy = y - p[1];
    float t = clampf((wx * vx + wy * vy) / (vx * vx + vy * vy), 0, 1);
    return hypotf(wx - t * vx, wy - t * vy) - p[4];
}

static void vgradient(canvas *c, int y0, int y1, const float top[3], const float bot[3])
{
    for (int y = y0; y < y1 && y < c->h; y++) {
        float t = (y1 - 1 > y0) ? (float)(y - y0) / (float)(y1 - 1 - y0) : 0;
        for (int x = 0; x < c->w; x++)
            for (int k = 0; k < 3; k++) c->px[((size_t)y * c->w + x) * 3 + k] = top[k] + t * (bot[k] - top[k]);
    }
}

/* Rolling ground: pixels below y = base + amp*sin(freq*x + phase) get a vertical gradient. */
static void hill(canvas *c, float base, float amp, float freq, float phase, const float top[3], const float bot[3])
{
    for (int x = 0; x < c->w; x++) {
        float edge = base + amp * sinf(freq * (x + 0.5f) + phase);
        for (int y = 0; y < c->h; y++) {
            float a = clampf((y + 0.5f) - edge + 0.5f, 0, 1);
            if (a <= 0) continue;
            float t = clampf(((y + 0.5f) - edge) / (c->h - edge + 1), 0, 1);
            blend(c, x, y, a, top[0] + t * (bot[0] - top[0]), top[1] + t * (bot[1] - top[1]),
                  top[2] + t * (bot[2] - top[2]));
        }
    }
}

/* ---- writers ----------------------------------------------------------------------------- */

static unsigned char *to_rgb8(const canvas *c)
{
    unsigned char *b = malloc((size_t)c->w * c->h * 3);
    if (!b) { fprintf(stderr, "out of memory\n"); exit(1); }
    for (size_t i = 0; i < (size_t)c->w * c->h * 3; i++) b[i] = (unsigned char)lrintf(clampf(c->px[i], 0, 1) * 255.0f);
    return b;
}

static int write_png(const char *dir, const char *name, const unsigned char *px, int w, int h, int gray)
{
    char *path = sdb_path_join(dir, name);
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    img.width = (png_uint_32)w;
    img.height = (png_uint_32)h;
    img.format = gray ? PNG_FORMAT_GRAY : PNG_FORMAT_RGB;
    int ok = png_image_write_to_file(&img, path, 0, px, 0, NULL);
    if (!ok) fprintf(stderr, "sdbatch-demo-inputs: cannot write %s: %s\n", path, img.message);
    else fprintf(stderr, "  %s (%dx%d %s)\n", path, w, h, gray ? "mask" : "RGB");
    free(path);
    return ok ? 0 : -1;
}

static int write_jpeg(const char *dir, const char *name, const unsigned char *px, int w, int h, int quality)
{
    char *path = sdb_path_join(dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) { fprintf(stderr, "sdbatch-demo-inputs: cannot write %s\n", path); free(path); return -1; }
    struct jpeg_compress_struct ci;
    struct jpeg_error_mgr jerr;
    ci.err = jpeg_std_error(&jerr);
    jpeg_create_compress(&ci);
    jpeg_stdio_dest(&ci, f);
    ci.image_width = (JDIMENSION)w;
    ci.image_height = (JDIMENSION)h;
    ci.input_components = 3;
    ci.in_color_space = JCS_RGB;
    jpeg_set_defaults(&ci);
    jpeg_set_quality(&ci, quality, TRUE);
    jpeg_start_compress(&ci, TRUE);
    while (ci.next_scanline < ci.image_height) {
        JSAMPROW row = (JSAMPROW)(px + (size_t)ci.next_scanline * w * 3);
        jpeg_write_scanlines(&ci, &row, 1);
    }
    jpeg_finish_compress(&ci);
    jpeg_destroy_compress(&ci);
    int rc = fclose(f) ? -1 : 0;
    fprintf(stderr, "  %s (%dx%d JPEG q%d)\n", path, w, h, quality);
    free(path);
    return rc;
}

/* A mask canvas: draw shapes in white on black, then threshold at 0.5 (hard 0/255 edges, as the
 * pipeline binarises masks anyway). */
static int write_mask(const char *dir, const char *name, const canvas *m)
{
    unsigned char *b = malloc((size_t)m->w * m->h);
    if (!b) return -1;
    for (size_t i = 0; i < (size_t)m->w * m->h; i++) b[i] = m->px[i * 3] >= 0.5f ? 255 : 0;
    int rc = write_png(dir, name, b, m->w, m->h, 1);
    free(b);
    return rc;
}

/* Writes a scene's picture (PNG, or JPEG at `jpeg_quality` when it is > 0) and then, if that
 * worked, its mask; frees both canvases. */
static int save_scene(const char *dir, canvas *c, const char *name, int jpeg_quality, canvas *m, const char *mask_name)
{
    unsigned char *px = to_rgb8(c);
    int rc = jpeg_quality > 0 ? write_jpeg(dir, name, px, c->w, c->h, jpeg_quality)
                              : write_png(dir, name, px, c->w, c->h, 0);
    free(px);
    if (!rc) rc = write_mask(dir, mask_name, m);
    free(c->px);
    free(m->px);
    return rc;
}

/* ---- the scenes -------------------------------------------------------------------------- */

static void house(canvas *c, float x0, float y0, float w, float h, const float wall[3], const float roof[3])
{
    float body[4] = {x0, y0, x0 + w, y0 + h};
    fill(c, sd_box, body, wall[0], wall[1], wall[2]);
    float r[6] = {x0 - 0.12f * w, y0 + 0.5f, x0 + 1.12f * w, y0 + 0.5f, x0 + 0.5f * w, y0 - 0.55f * h};
    fill(c, sd_tri, r, roof[0], roof[1], roof[2]);
    float door[4] = {x0 + 0.40f * w, y0 + 0.45f * h, x0 + 0.60f * w, y0 + h};
    fill(c, sd_box, door, 0.36f, 0.22f, 0.12f);
    float win1[4] = {x0 + 0.10f * w, y0 + 0.22f * h, x0 + 0.30f * w, y0 + 0.48f * h};
    float win2[4] = {x0 + 0.70f * w, y0 + 0.22f * h, x0 + 0.90f * w, y0 + 0.48f * h};
    fill(c, sd_box, win1, 0.55f, 0.75f, 0.92f);
    fill(c, sd_box, win2, 0.55f, 0.75f, 0.92f);
}

static void tree(canvas *c, float x, float ground, float size)
{
    float trunk[4] = {x - 0.12f * size, ground - 0.9f * size, x + 0.12f * size, ground};
    fill(c, sd_box, trunk, 0.40f, 0.26f, 0.13f);
    float crown[3] = {x, ground - 1.15f * size, 0.6f * size};
    fill(c, sd_circle, crown, 0.16f, 0.45f, 0.18f);
    float crown2[3] = {x - 0.25f * size, ground - 1.35f * size, 0.38f * size};
    fill(c, sd_circle, crown2, 0.20f, 0.52f, 0.21f);
}

static int scene_demo(const char *dir)
{
    canvas c = canvas_new(128, 128);
    const float sky_top[3] = {0.28f, 0.50f, 0.86f}, sky_bot[3] = {0.78f, 0.88f, 0.97f};
    vgradient(&c, 0, 128, sky_top, sky_bot);
    float sun_glow[3] = {100, 26, 17}, sun[3] = {100, 26, 11};
    fill(&c, sd_circle, sun_glow, 1.0f, 0.93f, 0.62f);
    fill(&c, sd_circle, sun, 1.0f, 0.85f, 0.25f);
    float cloud[][3] = {{30, 24, 8}, {39, 21, 10}, {48, 25, 7}};
    for (int i = 0; i < 3; i++) fill(&c, sd_circle, cloud[i], 0.97f, 0.97f, 0.98f);
    const float far_top[3] = {0.45f, 0.66f, 0.40f}, far_bot[3] = {0.36f, 0.55f, 0.30f};
    hill(&c, 84, 5, 0.045f, 0.8f, far_top, far_bot);
    const float near_top[3] = {0.38f, 0.70f, 0.27f}, near_bot[3] = {0.22f, 0.48f, 0.16f};
    hill(&c, 96, 3, 0.07f, 2.0f, near_top, near_bot);
    const float wall[3] = {0.93f, 0.86f, 0.70f}, roof[3] = {0.70f, 0.20f, 0.16f};
    house(&c, 44, 72, 40, 28, wall, roof);
    tree(&c, 20, 100, 16);
    tree(&c, 106, 102, 12);
    float path[5] = {64, 100, 58, 128, 4};
    fill(&c, sd_segment, path, 0.78f, 0.70f, 0.52f);

    canvas m = canvas_new(128, 128);
    float blob[4] = {64, 84, 28, 24};
    fill(&m, sd_ellipse, blob, 1, 1, 1);
    return save_scene(dir, &c, "demo.png", 0, &m, "demo-mask.png");
}

static int scene_street(const char *dir)
{
    canvas c = canvas_new(136, 96);
    const float sky_top[3] = {0.55f, 0.68f, 0.88f}, sky_bot[3] = {0.93f, 0.86f, 0.78f};
    vgradient(&c, 0, 96, sky_top, sky_bot);
    /* a row of houses */
    const float walls[4][3] = {{0.85f, 0.62f, 0.45f}, {0.72f, 0.78f, 0.82f}, {0.93f, 0.87f, 0.62f}, {0.62f, 0.45f, 0.40f}};
    for (int i = 0; i < 4; i++) {
        float x0 = 4 + 33.0f * i, top = 30 + 6 * (i % 2);
        float b[4] = {x0, top, x0 + 29, 62};
        fill(&c, sd_box, b, walls[i][0], walls[i][1], walls[i][2]);
        float roof[4] = {x0 - 1, top - 4, x0 + 30, top};
        fill(&c, sd_box, roof, 0.30f, 0.27f, 0.28f);
        for (int r = 0; r < 2; r++)
            for (int k = 0; k < 3; k++) {
                float wdw[4] = {x0 + 3 + 9.0f * k, top + 4 + 11.0f * r, x0 + 8 + 9.0f * k, top + 11 + 11.0f * r};
                fill(&c, sd_box, wdw, 0.30f, 0.40f, 0.52f);
            }
    }
    /* pavement and road with perspective */
    float pave[4] = {0, 62, 136, 68};
    fill(&c, sd_box, pave, 0.68f, 0.66f, 0.62f);
    const float road_top[3] = {0.40f, 0.40f, 0.42f}, road_bot[3] = {0.24f, 0.24f, 0.26f};
    vgradient(&c, 68, 96, road_top, road_bot);
    for (int i = 0; i < 5; i++) {
        float x = 6 + 28.0f * i;
        float dash[5] = {x, 81, x + 12, 81, 0.9f};
        fill(&c, sd_segment, dash, 0.95f, 0.92f, 0.70f);
    }

    /* a diagonal scratch across the picture, as on a damaged print */
    canvas m = canvas_new(136, 96);
    float s1[5] = {18, 10, 104, 74, 3.5f}, s2[5] = {104, 74, 122, 86, 2.5f};
    fill(&m, sd_segment, s1, 1, 1, 1);
    fill(&m, sd_segment, s2, 1, 1, 1);
    return save_scene(dir, &c, "street-136x96.png", 0, &m, "street-136x96-mask.png");
}

static int scene_garden(const char *dir)
{
    canvas c = canvas_new(96, 128);
    const float sky_top[3] = {0.40f, 0.62f, 0.90f}, sky_bot[3] = {0.82f, 0.90f, 0.96f};
    vgradient(&c, 0, 128, sky_top, sky_bot);
    float hedge[4] = {0, 40, 96, 62};
    fill(&c, sd_box, hedge, 0.17f, 0.40f, 0.19f);
    for (int i = 0; i < 7; i++) {
        float bump[3] = {7 + 14.0f * i, 41, 8};
        fill(&c, sd_circle, bump, 0.19f, 0.44f, 0.20f);
    }
    const float lawn_top[3] = {0.42f, 0.70f, 0.30f}, lawn_bot[3] = {0.26f, 0.55f, 0.20f};
    vgradient(&c, 62, 128, lawn_top, lawn_bot);
    float path[6] = {44, 62, 52, 62, 80, 128};
    fill(&c, sd_tri, path, 0.80f, 0.72f, 0.55f);
    float path2[6] = {44, 62, 80, 128, 16, 128};
    fill(&c, sd_tri, path2, 0.80f, 0.72f, 0.55f);
    /* flower bed: a few rows of coloured flowers on a fixed grid */
    const float cols[4][3] = {{0.90f, 0.20f, 0.30f}, {0.98f, 0.85f, 0.20f}, {0.65f, 0.35f, 0.80f}, {0.98f, 0.98f, 0.95f}};
    for (int r = 0; r < 4; r++)
        for (int k = 0; k < 3; k++) {
            float fl[3] = {6 + 8.0f * k + 3.0f * (r % 2), 74 + 9.0f * r, 2.4f};
            const float *col = cols[(r + k) % 4];
            fill(&c, sd_circle, fl, col[0], col[1], col[2]);
        }
    float bench[4] = {64, 78, 90, 82};
    fill(&c, sd_box, bench, 0.48f, 0.32f, 0.18f);

    canvas m = canvas_new(96, 128);
    float blob[4] = {18, 88, 16, 20};
    fill(&m, sd_ellipse, blob, 1, 1, 1);
    return save_scene(dir, &c, "garden-96x128.jpg", 90, &m, "garden-96x128-mask.png");
}

int main(int argc, char **argv)
{
    if (argc != 2 || argv[1][0] == '-') {
        fprintf(argc == 2 && !strcmp(argv[1], "--help") ? stdout : stderr,
                "usage: sdbatch-demo-inputs OUT_DIR\n\n"
                "Draws the demo pictures and masks of tests/data/ (demo.png, street-136x96.png,\n"
                "garden-96x128.jpg and their *-mask.png) into OUT_DIR.\n");
        return argc == 2 && !strcmp(argv[1], "--help") ? 0 : 2;
    }
    sdb_err err;
    if (sdb_mkdirs(argv[1], &err)) { fprintf(stderr, "sdbatch-demo-inputs: %s\n", err.msg); return 1; }
    int rc = scene_demo(argv[1]);
    if (!rc) rc = scene_street(argv[1]);
    if (!rc) rc = scene_garden(argv[1]);
    return rc ? 1 : 0;
}
