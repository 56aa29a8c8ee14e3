/*
 * test_vae_tiling_slow.c — the tiled VAE on the full-size SD 1.5 VAE (random weights, the model of
 * /work/sdmodels/sd15-random or $SDB_FULL_MODEL): a smooth 512x512 picture encoded and decoded
 * untiled, then decoded and encoded tiled with forced 256-pixel tiles (2 x 2 tiles, the default
 * margins and passes); the tiled decode, and the tiled encode's latent decoded untiled, must be
 * within 2/255 (8-bit levels) of the untiled results everywhere. Without the model it prints SKIP
 * and exits 77 (CTest's SKIP_RETURN_CODE). Slow (the full-size VAE, untiled and tiled, encode and
 * decode: minutes; before the tiles were parked between runs, ~11 runs of them took ~10 minutes on
 * 2 idle cores): Release only.
 */
#include "harness.h"
#include "sdb/arena.h"
#include "sdb/fsutil.h"
#include "sdb/vae.h"
#include "sdb/weights.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char model[4096];

/* The pipeline's float -> 8-bit conversion: (x / 2 + 0.5) clamped to [0, 1], times 255, rounded. */
static int level(float v)
{
    v = v / 2.0f + 0.5f;
    v = v < 0 ? 0 : v > 1 ? 1 : v;
    return (int)nearbyintf(v * 255.0f);
}

/* The largest 8-bit difference between two images, and the float one in 1/255 units. */
static int max_levels(const float *a, const float *b, size_t n, double *fmax)
{
    int m = 0;
    *fmax = 0;
    for (size_t i = 0; i < n; i++) {
        int d = abs(level(a[i]) - level(b[i]));
        if (d > m) m = d;
        double f = fabs((double)a[i] - b[i]) / 2.0 * 255.0;
        if (f > *fmax) *fmax = f;
    }
    return m;
}

static void test_full_size_tiles(void)
{
    char cfg[4200], dir[4200], wp[4200];
    snprintf(dir, sizeof dir, "%s/vae", model);
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    sdb_err err;
    sdb_weights w;
    sdb_vae *v = NULL;
    sdb_arena a;
    CHECK_OK(sdb_vae_weights_path(dir, 0, wp, sizeof wp, &err), &err);
    CHECK_OK(sdb_weights_open(&w, wp, "vae", &err), &err);
    CHECK_OK(sdb_vae_load(&v, cfg, &w, &err), &err);
    CHECK_OK(sdb_arena_init(&a, (size_t)6 << 30, &err), &err);
    if (!v) return;
    const int N = 512, h = 64;
    size_t ni = (size_t)3 * N * N, nl = (size_t)4 * h * h;
    float *img = malloc(ni * sizeof(float)), *m = malloc(nl * sizeof(float)), *s = malloc(nl * sizeof(float));
    float *m1 = malloc(nl * sizeof(float)), *d0 = malloc(ni * sizeof(float)), *d1 = malloc(ni * sizeof(float));
    /* a smooth picture with a disc and stripes (hard edges) */
    for (int c = 0; c < 3; c++)
        for (int y = 0; y < N; y++)
            for (int x = 0; x < N; x++) {
                float u = (float)x / N, q = (float)y / N;
                float t = 0.6f * sinf(6.0f * u + 1.3f * c) * cosf(4.0f * q - 0.5f * c);
                t += ((u - 0.6f) * (u - 0.6f) + (q - 0.4f) * (q - 0.4f)) < 0.04f ? 0.5f : 0.0f;
                t += ((x / 32 + y / 48) & 1) ? 0.15f : -0.15f;
                img[((size_t)c * N + y) * N + x] = t > 1 ? 1 : t < -1 ? -1 : t;
            }
    sdb_vae_set_tile_size(v, 256);
    CHECK(sdb_vae_tile_size(v) == 256 && sdb_vae_tiles_image(v, N, N));
    CHECK(sdb_vae_decode_margin(v) == 13 && sdb_vae_encode_margin(v) == 10);
    double t0 = sdb_now_mono();
    CHECK_OK(sdb_vae_encode(v, img, N, N, m, s, NULL, &a, &err), &err);
    CHECK_OK(sdb_vae_decode(v, m, h, h, d0, &a, &err), &err);
    double t1 = sdb_now_mono();
    CHECK_OK(sdb_vae_decode_tiled(v, m, h, h, d1, &a, &err), &err);
    double t2 = sdb_now_mono(), fd, fe;
    int ld = max_levels(d0, d1, ni, &fd);
    fprintf(stderr, "  decode, tiled vs untiled: max %d/255 (float %.3f/255); untiled encode+decode %.0f s, tiled decode %.0f s\n",
            ld, fd, t1 - t0, t2 - t1);
    CHECKF(ld <= 2, "tiled decode %d/255 off the untiled one", ld);
    /* the tiled encode, its latent decoded untiled */
    CHECK_OK(sdb_vae_encode_tiled(v, img, N, N, m1, s, NULL, &a, &err), &err);
    double lm = 0;
    for (size_t i = 0; i < nl; i++) lm = fmax(lm, fabs((double)m1[i] - m[i]));
    CHECK_OK(sdb_vae_decode(v, m1, h, h, d1, &a, &err), &err);
    int le = max_levels(d0, d1, ni, &fe);
    fprintf(stderr, "  encode, tiled vs untiled: latent max difference %.3g; decoded: max %d/255 (float %.3f/255); %.0f s\n",
            lm, le, fe, sdb_now_mono() - t2);
    CHECKF(le <= 2, "tiled encode's decode %d/255 off the untiled one", le);
    CHECK(a.used == 0);
    free(img); free(m); free(s); free(m1); free(d0); free(d1);
    sdb_arena_free(&a);
    sdb_vae_free(v);
    sdb_weights_free(&w);
}

int main(void)
{
    const char *env = getenv("SDB_FULL_MODEL");
    snprintf(model, sizeof model, "%s", env && *env ? env : "/work/sdmodels/sd15-random");
    char probe[4200];
    snprintf(probe, sizeof probe, "%s/vae/config.json", model);
    if (!sdb_file_exists(probe)) {
        printf("SKIP: no full-size model at %s (set SDB_FULL_MODEL)\n", model);
        return 77;
    }
    RUN(test_full_size_tiles);
    return sdb_t_done();
}
