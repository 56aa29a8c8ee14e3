/*
 * bench_vae_tiling.c — `sdbatch-bench-vae-tiling`: the two measurements behind the tiled VAE.
 *
 *   sdbatch-bench-vae-tiling decode MODEL_DIR [--size N] [--tile T] [--passes P] [--margin M]
 *                            [--local-mid 0|1] [--oracle 0|1] [--encode 0|1] [--tiled-only 0|1|2]
 *                            [--sweep 0|1] [--recompute 0|1] [--scratch-dir DIR]
 *       Encodes a smooth synthetic N x N picture with the model's VAE (untiled) to get a realistic
 *       latent, decodes it untiled and tiled (tiles of T pixels, default N/2 so an N-pixel image is
 *       really cut into 2 x 2 tiles; the tiling options of sdb_vae_tile_opts) and prints how far the
 *       two 8-bit results are apart (max and 99.9th percentile levels, share of pixels that differ)
 *       and both decodes' scratch peaks. --encode 1: the tiled encode too (its latent decoded
 *       untiled against the untiled encode's). --tiled-only 1: only a tiled encode and decode (big
 *       images), with their times, scratch peaks and the process's peak RSS; 2: the decode only
 *       (of a synthetic latent). --sweep 1: first the decode under each tiling variant (the mid
 *       block per tile or on the whole latent, own or exact statistics, margins), one line each:
 *       what each cause of the tiles' error weighs. --recompute 1: the exact statistics by recomputing
 *       each tile in every run (the old way) instead of parking the tiles in a scratch file (in DIR,
 *       default $TMPDIR or /tmp); the scratch file's size is printed.
 *
 *   sdbatch-bench-vae-tiling inpaint MODEL_DIR --size N --region R [--crop P] [--steps S]
 *                            [--guidance G] [--sdbatch PATH] [--keep DIR]
 *       Draws an N x N picture and a mask with an R x R square in its middle, runs `sdbatch
 *       generate` on them as a child process (--padding-mask-crop P when P > 0: inpainting only the
 *       masked area) and prints the child's peak RSS (wait4's ru_maxrss) next to the size of the
 *       model's weight files, i.e. how much memory the run needed beyond the weights. --guidance G:
 *       the child's --guidance-scale (default: sdbatch's 7.5; <= 1: no guidance, one U-Net batch).
 *
 * Owns nothing beyond one run; no state.
 */
#include "sdb/arena.h"
#include "sdb/fsutil.h"
#include "sdb/image.h"
#include "sdb/vae.h"
#include "sdb/weights.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static int die(const char *msg) { fprintf(stderr, "sdbatch-bench-vae-tiling: %s\n", msg); return 2; }

/* A smooth picture with some edges: value of channel c at (x, y) in [-1, 1]. */
static float picture(int c, int x, int y, int n)
{
    float u = (float)x / n, v = (float)y / n;
    float base = 0.6f * sinf(6.0f * u + 1.3f * c) * cosf(4.0f * v - 0.5f * c);
    float disc = ((u - 0.6f) * (u - 0.6f) + (v - 0.4f) * (v - 0.4f)) < 0.04f ? 0.5f : 0.0f;
    float stripe = ((x / 32 + y / 48) & 1) ? 0.15f : -0.15f;
    float t = base + disc + stripe;
    return t > 1 ? 1 : t < -1 ? -1 : t;
}

static uint8_t to_u8(float v)
{
    v = v / 2.0f + 0.5f;
    v = v < 0 ? 0 : v > 1 ? 1 : v;
    return (uint8_t)nearbyintf(v * 255.0f);
}

static int cmp_int(const void *a, const void *b) { return *(const int *)a - *(const int *)b; }

/* Levels (0..255) after to_u8 of two float images: max, 99.9th percentile, median, share differing. */
static void compare(const char *what, const float *a, const float *b, size_t n, int *lv, int *max_out)
{
    size_t differ = 0;
    double maxf = 0;
    for (size_t i = 0; i < n; i++) {
        lv[i] = abs((int)to_u8(a[i]) - (int)to_u8(b[i]));
        differ += lv[i] != 0;
        double df = fabs((double)a[i] - b[i]) / 2.0; /* in [0, 1] image units */
        if (df > maxf) maxf = df;
    }
    qsort(lv, n, sizeof(int), cmp_int);
    printf("  %s: 8-bit max %d/255, 99.9th percentile %d/255, median %d; %.2f%% of values differ; float max %.3f/255\n",
           what, lv[n - 1], lv[(size_t)(n * 0.999)], lv[n / 2], 100.0 * differ / n, maxf * 255);
    *max_out = lv[n - 1];
}

static double rss_mib(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024.0;
}

static int fail_err(const sdb_err *err) { fprintf(stderr, "%s\n", err->msg); return 1; }

static int bench_decode(const char *model, int N, int tile, const sdb_vae_tile_opts *opt, int encode, int tiled_only, int sweep)
{
    char cfg[4200], wp[4200], dir[4200];
    snprintf(dir, sizeof dir, "%s/vae", model);
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    sdb_err err = {0};
    sdb_weights w;
    sdb_vae *v = NULL;
    sdb_arena a;
    if (sdb_vae_weights_path(dir, 0, wp, sizeof wp, &err) || sdb_weights_open(&w, wp, "vae", &err) ||
        sdb_vae_load(&v, cfg, &w, &err) || sdb_arena_init(&a, 0, &err))
        return fail_err(&err);
    sdb_vae_set_tile_size(v, tile);
    sdb_vae_set_tiling(v, opt);
    int h, wd;
    sdb_vae_latent_size(v, N, N, &h, &wd);
    size_t ni = (size_t)3 * N * N, nl = (size_t)4 * h * wd;
    float *img = malloc(ni * sizeof(float)), *m = malloc(nl * sizeof(float)), *s = malloc(nl * sizeof(float));
    float *d0 = malloc(ni * sizeof(float));
    if (!img || !m || !s || !d0) return die("out of memory");
    for (int c = 0; c < 3; c++)
        for (int y = 0; y < N; y++)
            for (int x = 0; x < N; x++) img[((size_t)c * N + y) * N + x] = picture(c, x, y, N);
    printf("VAE %dx%d (latent %dx%d), tiles of %d px (%s), margin %d/%d latents (decode/encode), passes %d (0 = exact statistics)%s%s\n", N, N,
           h, wd, sdb_vae_tile_size(v), sdb_vae_tiles_image(v, N, N) ? "tiled" : "NOT tiled: one tile",
           opt->margin >= 0 ? opt->margin : sdb_vae_decode_margin(v), opt->margin >= 0 ? opt->margin : sdb_vae_encode_margin(v),
           opt->passes, opt->local_mid ? ", mid block per tile" : "",
           opt->oracle_stats ? ", statistics from an untiled pass" : "");
    if (tiled_only) {
        /* big images: only the tiled passes (the untiled ones would need ~4 full-resolution activations) */
        double t0 = sdb_now_mono(), pk_e = 0;
        size_t pe = 0;
        if (tiled_only == 2) /* decode only: a smooth latent of an encoder's magnitude */
            for (int c = 0; c < 4; c++)
                for (int y = 0; y < h; y++)
                    for (int x = 0; x < wd; x++) m[((size_t)c * h + y) * wd + x] = 4.0f * picture(c, x, y, h);
        else if (sdb_vae_encode_tiled(v, img, N, N, m, s, NULL, &a, &err)) return fail_err(&err);
        else {
            pe = sdb_vae_peak_bytes(v);
            pk_e = (double)sdb_vae_park_bytes(v);
        }
        double t1 = sdb_now_mono();
        if (sdb_vae_decode_tiled(v, m, h, wd, d0, &a, &err)) return fail_err(&err);
        size_t pd = sdb_vae_peak_bytes(v);
        double t2 = sdb_now_mono();
        printf("  time: tiled encode %.1f s, tiled decode %.1f s\n", t1 - t0, t2 - t1);
        printf("  scratch peak: tiled encode %.0f MiB, tiled decode %.0f MiB; parked tiles on disk: encode %.0f MiB, decode %.0f MiB\n",
               pe / 1048576.0, pd / 1048576.0, pk_e / 1048576.0, sdb_vae_park_bytes(v) / 1048576.0);
        printf("  peak RSS of this process %.0f MiB = VAE weights %.0f MiB + image buffers %.0f MiB + %.0f MiB\n", rss_mib(),
               sdb_vae_weight_bytes(v) / 1048576.0, (2.0 * ni + 2.0 * nl) * 4 / 1048576.0,
               rss_mib() - sdb_vae_weight_bytes(v) / 1048576.0 - (2.0 * ni + 2.0 * nl) * 4 / 1048576.0);
        free(img); free(m); free(s); free(d0);
        sdb_vae_free(v);
        sdb_weights_free(&w);
        sdb_arena_free(&a);
        return 0;
    }
    float *d1 = malloc(ni * sizeof(float));
    int *lv = malloc(ni * sizeof(int));
    if (!d1 || !lv) return die("out of memory");
    double t0 = sdb_now_mono();
    if (sdb_vae_encode(v, img, N, N, m, s, NULL, &a, &err)) return fail_err(&err);
    double t1 = sdb_now_mono();
    if (sdb_vae_decode(v, m, h, wd, d0, &a, &err)) return fail_err(&err);
    size_t p0 = sdb_vae_peak_bytes(v);
    double t2 = sdb_now_mono();
    if (sweep) {
        /* what each cause of the error weighs: the decode under each tiling variant */
        static const struct { const char *what; sdb_vae_tile_opts t; } var[] = {
            {"whole-latent mid block, untiled statistics, margins (none of a, b, c)", {2, -1, 0, 1, 0, NULL}},
            {"whole-latent mid block, own statistics, margins (b)", {1, -1, 0, 0, 0, NULL}},
            {"mid block per tile, own statistics, margins (a + b)", {1, -1, 1, 0, 0, NULL}},
            {"whole-latent mid block, untiled statistics, margin 2 latents (c)", {2, 2, 0, 1, 0, NULL}},
        };
        for (size_t k = 0; k < sizeof var / sizeof var[0]; k++) {
            sdb_vae_set_tiling(v, &var[k].t);
            double ts = sdb_now_mono();
            if (sdb_vae_decode_tiled(v, m, h, wd, d1, &a, &err)) return fail_err(&err);
            int mx;
            char what[200];
            snprintf(what, sizeof what, "%s [%.0f s, scratch %.0f MiB]", var[k].what, sdb_now_mono() - ts,
                     sdb_vae_peak_bytes(v) / 1048576.0);
            compare(what, d0, d1, ni, lv, &mx);
        }
        sdb_vae_set_tiling(v, opt);
    }
    if (sdb_vae_decode_tiled(v, m, h, wd, d1, &a, &err)) return fail_err(&err);
    size_t p1 = sdb_vae_peak_bytes(v);
    double t3 = sdb_now_mono();
    int maxd = 0, maxe = 0;
    compare("decode, tiled vs untiled", d0, d1, ni, lv, &maxd);
    printf("  time: encode %.1f s, decode untiled %.1f s, tiled %.1f s\n", t1 - t0, t2 - t1, t3 - t2);
    printf("  scratch peak: untiled %.0f MiB, tiled %.0f MiB; parked tiles on disk %.0f MiB\n", p0 / 1048576.0,
           p1 / 1048576.0, sdb_vae_park_bytes(v) / 1048576.0);
    if (encode) {
        /* the tiled encode's latent, decoded untiled, against the untiled encode's (d0) */
        float *m1 = malloc(nl * sizeof(float));
        if (!m1) return die("out of memory");
        double t4 = sdb_now_mono();
        if (sdb_vae_encode_tiled(v, img, N, N, m1, s, NULL, &a, &err)) return fail_err(&err);
        size_t p2 = sdb_vae_peak_bytes(v);
        double t5 = sdb_now_mono(), ml = 0, sl = 0;
        for (size_t i = 0; i < nl; i++) {
            double d = fabs((double)m1[i] - m[i]);
            if (d > ml) ml = d;
            sl += (double)m[i] * m[i];
        }
        printf("  encode, tiled vs untiled: latent mean max difference %.3g (latent rms %.3g); %.1f s, scratch %.0f MiB\n", ml,
               sqrt(sl / nl), t5 - t4, p2 / 1048576.0);
        if (sdb_vae_decode(v, m1, h, wd, d1, &a, &err)) return fail_err(&err);
        compare("tiled encode's latent decoded vs the untiled one's", d0, d1, ni, lv, &maxe);
        free(m1);
    }
    int ok = maxd <= 2 && maxe <= 2;
    printf("  within 2/255: %s\n", ok ? "yes" : "NO");
    free(img); free(m); free(s); free(d0); free(d1); free(lv);
    sdb_vae_free(v);
    sdb_weights_free(&w);
    sdb_arena_free(&a);
    return ok ? 0 : 1;
}

/* Sum of the sizes of the *.safetensors files one level under the model folder. */
static double weight_bytes(const char *model)
{
    double sum = 0;
    static const char *const comps[] = {"unet", "vae", "text_encoder"};
    for (int k = 0; k < 3; k++) {
        char d[4200];
        snprintf(d, sizeof d, "%s/%s", model, comps[k]);
        DIR *dp = opendir(d);
        if (!dp) continue;
        struct dirent *e;
        char best[4200] = "";
        while ((e = readdir(dp)))
            if (strstr(e->d_name, ".safetensors") && (!best[0] || !strstr(e->d_name, "fp16")))
                snprintf(best, sizeof best, "%s/%s", d, e->d_name);
        closedir(dp);
        struct stat st;
        if (best[0] && stat(best, &st) == 0) sum += (double)st.st_size;
    }
    return sum;
}

static int bench_inpaint(const char *model, int N, int R, int crop, int steps, const char *guidance, const char *sdbatch,
                         const char *keep)
{
    char dir[4096];
    if (keep) snprintf(dir, sizeof dir, "%s", keep);
    else {
        snprintf(dir, sizeof dir, "%s/sdb-bench-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
        if (!mkdtemp(dir)) return die("cannot make a temporary folder");
    }
    sdb_err err = {0};
    sdb_image im = {0}, mk = {0};
    if (sdb_image_alloc(&im, N, N, 3, &err) || sdb_image_alloc(&mk, N, N, 1, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
    for (int y = 0; y < N; y++)
        for (int x = 0; x < N; x++) {
            for (int c = 0; c < 3; c++) im.px[((size_t)y * N + x) * 3 + c] = to_u8(picture(c, x, y, N));
            int in = abs(2 * x - N) < R && abs(2 * y - N) < R;
            mk.px[(size_t)y * N + x] = in ? 255 : 0;
        }
    char ip[4200], mp[4200], op[4200];
    snprintf(ip, sizeof ip, "%s/image-%d.png", dir, N);
    snprintf(mp, sizeof mp, "%s/mask-%d.png", dir, N);
    snprintf(op, sizeof op, "%s/out-%d.png", dir, N);
    if (sdb_png_write(ip, &im, NULL, NULL, 0, &err) || sdb_png_write(mp, &mk, NULL, NULL, 0, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    sdb_image_free(&im);
    sdb_image_free(&mk);
    char steps_s[32], crop_s[32];
    snprintf(steps_s, sizeof steps_s, "%d", steps);
    snprintf(crop_s, sizeof crop_s, "%d", crop);
    double t0 = sdb_now_mono();
    pid_t pid = fork();
    if (pid < 0) return die("fork failed");
    if (pid == 0) {
        const char *argv[32];
        int k = 0;
        argv[k++] = sdbatch; argv[k++] = "generate"; argv[k++] = "--model"; argv[k++] = model;
        argv[k++] = "--image"; argv[k++] = ip; argv[k++] = "--mask"; argv[k++] = mp;
        argv[k++] = "--prompt"; argv[k++] = "a restored photograph"; argv[k++] = "--seed"; argv[k++] = "1";
        argv[k++] = "--steps"; argv[k++] = steps_s; argv[k++] = "--output"; argv[k++] = op; argv[k++] = "-q";
        if (crop > 0) { argv[k++] = "--padding-mask-crop"; argv[k++] = crop_s; }
        if (guidance) { argv[k++] = "--guidance-scale"; argv[k++] = guidance; }
        argv[k] = NULL;
        execv(sdbatch, (char *const *)argv);
        _exit(127);
    }
    int status;
    struct rusage ru;
    if (wait4(pid, &status, 0, &ru) < 0) return die("wait4 failed");
    double secs = sdb_now_mono() - t0;
    double wb = weight_bytes(model), rss = (double)ru.ru_maxrss * 1024.0;
    printf("inpaint %dx%d, masked %dx%d, %s, %d step(s), guidance %s: exit %d, %.0f s\n", N, N, R, R,
           crop > 0 ? "only the masked area (padding_mask_crop)" : "whole image at its own size", steps, guidance ? guidance : "7.5",
           WIFEXITED(status) ? WEXITSTATUS(status) : -1, secs);
    printf("  peak RSS %.0f MiB = weights %.0f MiB + %.0f MiB (%.2f GiB)\n", rss / 1048576.0, wb / 1048576.0,
           (rss - wb) / 1048576.0, (rss - wb) / 1073741824.0);
    if (!keep) { unlink(ip); unlink(mp); unlink(op); rmdir(dir); }
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc < 3 || (strcmp(argv[1], "decode") && strcmp(argv[1], "inpaint"))) {
        fprintf(stderr, "usage: sdbatch-bench-vae-tiling decode MODEL_DIR [--size N] [--tile T] [--passes P] [--margin M]\n"
                        "           [--local-mid 0|1] [--oracle 0|1] [--encode 0|1] [--tiled-only 0|1|2] [--sweep 0|1]\n"
                        "           [--recompute 0|1] [--scratch-dir DIR]\n"
                        "       sdbatch-bench-vae-tiling inpaint MODEL_DIR --size N --region R [--crop P] [--steps S] [--guidance G]\n"
                        "           [--sdbatch PATH] [--keep DIR]\n");
        return 2;
    }
    int N = 512, tile = 0, R = 512, crop = 0, steps = 1, encode = 0, tiled_only = 0, sweep = 0;
    sdb_vae_tile_opts opt = {0, -1, 0, 0, 0, NULL};
    const char *keep = NULL, *guidance = NULL;
    char sdbatch[4200];
    snprintf(sdbatch, sizeof sdbatch, "%s", argv[0]);
    char *slash = strrchr(sdbatch, '/');
    if (slash) strcpy(slash + 1, "sdbatch"); else strcpy(sdbatch, "sdbatch");
    for (int i = 3; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--size")) N = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--tile")) tile = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--region")) R = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--crop")) crop = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--steps")) steps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--sdbatch")) snprintf(sdbatch, sizeof sdbatch, "%s", argv[i + 1]);
        else if (!strcmp(argv[i], "--keep")) keep = argv[i + 1];
        else if (!strcmp(argv[i], "--guidance")) guidance = argv[i + 1];
        else if (!strcmp(argv[i], "--passes")) opt.passes = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--margin")) opt.margin = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--local-mid")) opt.local_mid = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--oracle")) opt.oracle_stats = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--recompute")) opt.recompute = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--scratch-dir")) opt.scratch_dir = argv[i + 1];
        else if (!strcmp(argv[i], "--encode")) encode = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--tiled-only")) tiled_only = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--sweep")) sweep = atoi(argv[i + 1]);
        else return die("unknown option");
    }
    if (N < 8 || N % 8) return die("--size must be a positive multiple of 8");
    if (!strcmp(argv[1], "decode")) return bench_decode(argv[2], N, tile ? tile : N / 2, &opt, encode, tiled_only, sweep);
    return bench_inpaint(argv[2], N, R, crop, steps, guidance, sdbatch, keep);
}
