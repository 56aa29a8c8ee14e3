/*
 * test_restore_common.h — helpers shared by tests/test_restore.c and tests/test_restore_slow.c
 * (issue 17's restoration options): a deterministic RNG, random masks, the reflect-101 index,
 * the tiny models, odd-size real image files, tensor traces, the scaled-linear alpha_bar, and the
 * masked_content cases. Header-only (static functions): each test is one executable.
 */
#ifndef SDB_TEST_RESTORE_COMMON_H
#define SDB_TEST_RESTORE_COMMON_H

#include "harness.h"
#include "sdb/fsutil.h"
#include "sdb/image.h"
#include "sdb/mask.h"
#include "sdb/pipeline.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rs = 0x9E3779B97F4A7C15ULL;
static inline uint32_t rnd(void) { rs ^= rs << 13; rs ^= rs >> 7; rs ^= rs << 17; return (uint32_t)(rs >> 11); }

/* A random blobby mask: a few filled rectangles and discs of 255 on 0. */
static void random_mask(sdb_image *m, int w, int h)
{
    sdb_err err;
    CHECK_OK(sdb_image_alloc(m, w, h, 1, &err), &err);
    int n = 1 + (int)(rnd() % 4);
    for (int k = 0; k < n; k++) {
        int cx = (int)(rnd() % (unsigned)w), cy = (int)(rnd() % (unsigned)h), r = 2 + (int)(rnd() % 9);
        int disc = rnd() & 1;
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                int dx = x - cx, dy = y - cy;
                if (disc ? dx * dx + dy * dy <= r * r : (abs(dx) <= r && abs(dy) <= r / 2 + 1)) m->px[(size_t)y * w + x] = 255;
            }
    }
}

static int refl(int i, int n)
{
    if (n == 1) return 0;
    int period = 2 * n - 2;
    i = ((i % period) + period) % period;
    return i < n ? i : period - i;
}

static sdb_model *tiny(int legacy)
{
    static sdb_model *m[2];
    if (!m[legacy]) {
        sdb_err err;
        CHECK_OK(sdb_model_load(&m[legacy], sdb_t_path(legacy ? "models/tiny-sd" : "models/tiny-sd-inpaint"), NULL, NULL, &err), &err);
    }
    return m[legacy];
}

/* A real image file of w x h (cropped from a bundled photo), written as PNG or JPEG, read back. */
static void odd_input(int w, int h, int jpeg, sdb_image *img)
{
    sdb_err err;
    sdb_image src = {0}, c = {0};
    CHECK_OK(sdb_image_load(SDB_SOURCE_DIR "/tests/data/street-136x96.png", &src, 3, 0, &err), &err);
    CHECK_OK(sdb_image_alloc(&c, w, h, 3, &err), &err);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) memcpy(c.px + ((size_t)y * w + x) * 3, src.px + ((size_t)(y % src.h) * src.w + x % src.w) * 3, 3);
    char path[600];
    snprintf(path, sizeof path, "%s/in-%dx%d.%s", sdb_t_tmpdir(), w, h, jpeg ? "jpg" : "png");
    CHECK_OK(sdb_image_write(path, &c, NULL, 85, &err), &err);
    CHECK_OK(sdb_image_load_ex(path, img, 0, 0, SDB_LOAD_EXACT16, &err), &err);
    uint8_t magic[2] = {0, 0};
    FILE *f = fopen(path, "rb");
    if (f) { CHECK(fread(magic, 1, 2, f) == 2); fclose(f); }
    CHECK(jpeg ? magic[0] == 0xFF && magic[1] == 0xD8 : magic[0] == 0x89);
    sdb_image_free(&src);
    sdb_image_free(&c);
}

/* The traced tensors of one run. */
typedef struct { char name[64]; float *x; size_t n; } tr_t;
typedef struct { tr_t v[256]; int n; } trs_t;
static void on_trace(void *ud, const char *name, const float *x, size_t n)
{
    trs_t *s = ud;
    if (s->n >= 256 || strncmp(name, "steps/", 6) == 0) return;
    tr_t *t = &s->v[s->n++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->x = malloc(n * sizeof *x);
    memcpy(t->x, x, n * sizeof *x);
    t->n = n;
}
static const tr_t *tget(const trs_t *s, const char *name)
{
    for (int i = 0; i < s->n; i++) if (!strcmp(s->v[i].name, name)) return &s->v[i];
    CHECKF(0, "no trace %s", name);
    return NULL;
}
static void tfree(trs_t *s) { for (int i = 0; i < s->n; i++) free(s->v[i].x); s->n = 0; }

/* alphas_cumprod[t] of the scaled-linear schedule (beta 0.00085 .. 0.012, 1000 steps), in double */
static double alpha_bar(int t)
{
    double a = 1.0, s0 = sqrt(0.00085), s1 = sqrt(0.012);
    for (int i = 0; i <= t; i++) {
        double b = s0 + (s1 - s0) * i / 999.0;
        a *= 1.0 - b * b;
    }
    return a;
}

/* Each masked_content's start latents and initial latents against their definition (traces). */
static void masked_content_cases(int with_legacy, int with_partial_strength)
{
    sdb_err err;
    sdb_image img = {0}, msk = {0};
    CHECK_OK(sdb_image_load(sdb_t_path("refs/pipeline/inputs/scene_128x128.png"), &img, 0, 0, &err), &err);
    CHECK_OK(sdb_image_load(sdb_t_path("refs/pipeline/inputs/mask_128x128.png"), &msk, 0, 0, &err), &err);
    for (int legacy = 0; legacy < 1 + with_legacy; legacy++) {
        sdb_model *m = tiny(legacy);
        if (!m || !img.px) return;
        for (int mc = SDB_MC_ORIGINAL; mc <= SDB_MC_LATENT_NOTHING; mc++) {
            if (legacy && mc != SDB_MC_LATENT_NOTHING && mc != SDB_MC_ORIGINAL) continue;
            const double strengths[2] = {1.0, 0.6};
            for (int si = 0; si < 1 + with_partial_strength; si++) {
                sdb_gen_params p;
                sdb_gen_params_default(&p);
                p.prompt = "a room";
                p.seed = 7;
                p.steps = 3;
                p.strength = strengths[si];
                p.image = &img;
                p.mask = &msk;
                p.restore.masked_content = (sdb_masked_content)mc;
                trs_t s = {0};
                sdb_image out = {0};
                CHECK_OK(sdb_generate_ex(m, &p, NULL, NULL, on_trace, &s, &out, NULL, &err), &err);
                const tr_t *mean = tget(&s, "vae_encode/0/mean"), *std = tget(&s, "vae_encode/0/std");
                const tr_t *enoise = tget(&s, "vae_encode/0/noise"), *noise = tget(&s, "initial_noise");
                const tr_t *start = tget(&s, "masked_content_latents"), *lat = tget(&s, "initial_latents");
                const tr_t *ml = tget(&s, "mask_latents"), *ts = tget(&s, "timesteps");
                if (!mean || !std || !enoise || !noise || !start || !lat || !ml || !ts) { tfree(&s); sdb_image_free(&out); continue; }
                size_t n = mean->n, hw = ml->n;
                double ab = alpha_bar((int)ts->x[0]);
                int bad_start = 0, bad_lat = 0, masked = 0;
                for (size_t i = 0; i < n; i++) {
                    double x0 = (mean->x[i] + std->x[i] * enoise->x[i]) * 0.18215;   /* latent_dist.sample * sf */
                    int in = ml->x[i % hw] > 0.5f;
                    masked += in;
                    double want = !in || mc == SDB_MC_ORIGINAL || mc == SDB_MC_FILL ? x0 : mc == SDB_MC_LATENT_NOISE ? noise->x[i] : 0.0;
                    if (fabs(start->x[i] - want) > 1e-5 + 1e-5 * fabs(want)) bad_start++;
                    double noised = sqrt(ab) * start->x[i] + sqrt(1.0 - ab) * noise->x[i];   /* DDPM add_noise */
                    if (fabs(lat->x[i] - noised) > 1e-5 + 1e-5 * fabs(noised)) bad_lat++;
                }
                CHECKF(bad_start == 0 && masked > 0, "%s mc %d strength %g: %d start latents off their definition",
                       legacy ? "4ch" : "9ch", mc, p.strength, bad_start);
                CHECKF(bad_lat == 0, "mc %d: %d initial latents are not add_noise(start, noise, t=%g)", mc, bad_lat, ts->x[0]);
                CHECK(out.w == 128 && out.h == 128);
                if (mc == SDB_MC_FILL) {   /* what was encoded is the filled image (fill checked below) */
                    const tr_t *ii = tget(&s, "init_image");
                    sdb_image rgb = {0}, l = {0}, f = {0};
                    CHECK_OK(sdb_image_to_rgb(&img, &rgb, &err), &err);
                    CHECK_OK(msk.c == 1 ? sdb_image_copy(&msk, &l, &err) : sdb_image_to_l(&msk, &l, &err), &err);
                    CHECK_OK(sdb_mask_fill(&rgb, &l, &f, &err), &err);
                    int bad = 0, filled = 0;
                    for (int c = 0; ii && f.px && c < 3; c++)
                        for (int i = 0; i < 128 * 128; i++) {
                            float want = 2.0f * ((float)f.px[3 * i + c] / 255.0f) - 1.0f;
                            bad += ii->x[c * 128 * 128 + i] != want;
                            filled += l.px[i] && f.px[3 * i + c] != rgb.px[3 * i + c];
                        }
                    CHECK(bad == 0 && filled > 0);
                    sdb_image_free(&rgb); sdb_image_free(&l); sdb_image_free(&f);
                }
                tfree(&s);
                sdb_image_free(&out);
            }
        }
    }
    sdb_image_free(&img); sdb_image_free(&msk);
}

#endif
