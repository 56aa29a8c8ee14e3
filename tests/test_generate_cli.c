/*
 * test_generate_cli.c — `sdbatch generate` end to end, as a user runs it: a real child process,
 * real files. The reference inpainting run (refs/pipeline case a) through the CLI reproduces
 * diffusers' 8-bit image; the PNG carries AUTOMATIC1111's `parameters` chunk; a mask of another
 * size is resized with a warning; bad input fails with a clear message and writes nothing; an
 * --output that is a symlink, or in a missing folder, is refused before any work.
 */
#include "harness.h"
#include "sdb/image.h"
#include "sdb/safetensors.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static int run(const char *args, char *out, size_t n) { return sdb_t_sdbatch(args, out, n); }

static char out[1 << 16];

static void test_reference_run_through_the_cli(void)
{
    const char *dir = sdb_t_tmpdir();
    char png[1024], args[8192];
    snprintf(png, sizeof png, "%s/a.png", dir);
    snprintf(args, sizeof args,
             "generate --model '%s' --image '%s' --mask '%s' --prompt 'cat with a hat' --seed 42 --steps 20 "
             "--width 128 --height 128 --output '%s'",
             sdb_t_path("models/tiny-sd-inpaint"), sdb_t_path("refs/pipeline/inputs/scene_128x128.png"),
             sdb_t_path("refs/pipeline/inputs/mask_128x128.png"), png);
    int rc = run(args, out, sizeof out);
    CHECKF(rc == 0, "exit %d: %s", rc, out);
    CHECK(strstr(out, "wrote ") != NULL);
    sdb_err err = {0};
    sdb_image im = {0};
    CHECK_OK(sdb_image_load(png, &im, 0, 0, &err), &err);
    sdb_st *ref = NULL;
    CHECK_OK(sdb_st_open(&ref, sdb_t_path("refs/pipeline/pipeline_a_inpaint_pndm.safetensors"), &err), &err);
    if (im.px && ref) {
        const sdb_st_tensor *t = sdb_st_find(ref, "output_u8");
        CHECK(t && t->numel == (int64_t)im.w * im.h * im.c);
        size_t same = 0, n = (size_t)t->numel;
        int maxd = 0;
        for (size_t i = 0; i < n; i++) {
            int d = abs((int)im.px[i] - (int)t->data[i]);
            same += d == 0;
            if (d > maxd) maxd = d;
        }
        fprintf(stderr, "  CLI output vs diffusers: %.4f%% identical, max diff %d\n", 100.0 * same / n, maxd);
        CHECK((double)same / n >= 0.99 && maxd <= 2);
    }
    /* the parameters chunk, in AUTOMATIC1111's layout */
    char **keys = NULL, **vals = NULL;
    int nt = 0;
    CHECK_OK(sdb_png_read_text(png, &keys, &vals, &nt, &err), &err);
    int found = 0;
    for (int i = 0; i < nt; i++)
        if (!strcmp(keys[i], "parameters")) {
            found = 1;
            fprintf(stderr, "  parameters: %s\n", vals[i]);
            CHECK(strncmp(vals[i], "cat with a hat\n", 15) == 0);
            CHECK(strstr(vals[i], "Steps: 20, Sampler: PNDM, CFG scale: 7.5, Seed: 42, Size: 128x128, Model hash: ") != NULL);
        }
    CHECK(found);
    sdb_png_text_free(keys, vals, nt);
    sdb_image_free(&im);
    sdb_st_close(ref);
}

static void test_mask_of_another_size_and_own_size_default(void)
{
    const char *dir = sdb_t_tmpdir();
    char png[1024], mask[1024], args[8192];
    snprintf(png, sizeof png, "%s/b.png", dir);
    snprintf(mask, sizeof mask, "%s/mask64.png", dir);
    /* a 64x64 mask for a 136x96 JPEG: resized with a warning; the output keeps the image's size */
    sdb_err err = {0};
    sdb_image m = {0};
    CHECK_OK(sdb_image_alloc(&m, 64, 64, 1, &err), &err);
    for (int i = 0; i < 64 * 64; i++) m.px[i] = (i % 64) > 20 && (i / 64) > 20 ? 255 : 0;
    CHECK_OK(sdb_png_write(mask, &m, NULL, NULL, 0, &err), &err);
    sdb_image_free(&m);
    snprintf(args, sizeof args,
             "generate --model '%s' --image '%s' --mask '%s' --prompt 'a cabin' --seed 5 --steps 3 --scheduler euler_a "
             "--negative-prompt 'blurry' --output '%s'",
             sdb_t_path("models/tiny-sd-inpaint"), sdb_t_path("refs/pipeline/inputs/scene_136x96.jpg"), mask, png);
    int rc = run(args, out, sizeof out);
    CHECKF(rc == 0, "exit %d: %s", rc, out);
    CHECKF(strstr(out, "resizing the mask") != NULL, "no warning about the mask size: %s", out);
    sdb_image im = {0};
    CHECK_OK(sdb_image_load(png, &im, 0, 0, &err), &err);
    CHECK(im.w == 136 && im.h == 96);
    sdb_image_free(&im);
    char **keys = NULL, **vals = NULL;
    int nt = 0;
    CHECK_OK(sdb_png_read_text(png, &keys, &vals, &nt, &err), &err);
    CHECK(nt == 1 && strstr(vals[0], "\nNegative prompt: blurry\n") && strstr(vals[0], "Sampler: Euler a"));
    sdb_png_text_free(keys, vals, nt);
}

/* --vae-tiling: auto below the threshold is exactly off (the default path); on really tiles a
 * 192x128 image on the tiny model (its VAE's tiles are 128 pixels): within 2/255 of off, a few
 * values differing by rounding; a bad mode is a usage error. */
static void test_vae_tiling_flag(void)
{
    const char *dir = sdb_t_tmpdir();
    char png[3][1024], args[8192];
    static const char *const mode[3] = {"off", "auto", "on"};
    for (int k = 0; k < 3; k++) {
        snprintf(png[k], sizeof png[k], "%s/t-%s.png", dir, mode[k]);
        snprintf(args, sizeof args,
                 "generate --model '%s' --image '%s' --mask '%s' --prompt 'a barn' --seed 8 --steps 2 --vae-tiling %s --output '%s'",
                 sdb_t_path("models/tiny-sd-inpaint"), sdb_t_path("refs/pipeline/inputs/scene_192x128.png"),
                 sdb_t_path("refs/pipeline/inputs/smallmask_192x128.png"), mode[k], png[k]);
        int rc = run(args, out, sizeof out);
        CHECKF(rc == 0, "%s: exit %d: %s", mode[k], rc, out);
    }
    sdb_err err = {0};
    sdb_image im[3] = {{0}};
    for (int k = 0; k < 3; k++) CHECK_OK(sdb_image_load(png[k], &im[k], 3, 0, &err), &err);
    if (im[0].px && im[1].px && im[2].px) {
        size_t n = (size_t)192 * 128 * 3, d01 = 0, d02 = 0;
        int m02 = 0;
        for (size_t i = 0; i < n; i++) {
            d01 += im[0].px[i] != im[1].px[i];
            d02 += im[0].px[i] != im[2].px[i];
            int d = abs((int)im[0].px[i] - (int)im[2].px[i]);
            if (d > m02) m02 = d;
        }
        fprintf(stderr, "  vae tiling: auto vs off %zu values differ, on vs off %zu (max %d/255)\n", d01, d02, m02);
        /* on: the tiled passes (equal to the untiled ones up to float rounding: a few values one
         * level apart) */
        CHECK(d01 == 0 && d02 > 0 && d02 < n / 100 && m02 <= 2);
    }
    for (int k = 0; k < 3; k++) sdb_image_free(&im[k]);
    char **keys = NULL, **vals = NULL;
    int nt = 0;
    CHECK_OK(sdb_png_read_text(png[2], &keys, &vals, &nt, &err), &err);
    CHECK(nt == 1 && strstr(vals[0], ", VAE tiling: on"));
    sdb_png_text_free(keys, vals, nt);
    snprintf(args, sizeof args, "generate --model m --prompt x --vae-tiling sometimes --output '%s/x.png'", dir);
    CHECK(run(args, out, sizeof out) == 2 && strstr(out, "--vae-tiling must be auto, on or off"));
}

static void test_bad_input(void)
{
    const char *dir = sdb_t_tmpdir();
    char png[1024], args[8192];
    snprintf(png, sizeof png, "%s/never.png", dir);
    const char *model = sdb_t_path("models/tiny-sd-inpaint");
    const char *img = sdb_t_path("refs/pipeline/inputs/scene_128x128.png");
    const char *msk = sdb_t_path("refs/pipeline/inputs/mask_128x128.png");
    struct { const char *extra; int code; const char *needle; } cases[] = {
        {"--steps 0", 2, "--steps"},
        {"--strength 1.5", 2, "--strength"},
        {"--strength 0", 2, "--strength"},
        {"--scheduler heun", 2, "dpmpp_2m_karras"},
        {"--width 100 --height 128", 2, "multiples of 8"},
        {"--width 128", 2, "--height"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(args, sizeof args, "generate --model '%s' --image '%s' --mask '%s' --prompt x %s --output '%s'",
                 model, img, msk, cases[i].extra, png);
        int rc = run(args, out, sizeof out);
        CHECKF(rc == cases[i].code && strstr(out, cases[i].needle), "%s: exit %d: %s", cases[i].extra, rc, out);
    }
    /* unreadable image, missing model parts, a folder that is no model */
    snprintf(args, sizeof args, "generate --model '%s' --image '%s' --mask '%s' --prompt x --output '%s'", model, msk + 0, "/nonexistent/mask.png", png);
    CHECK(run(args, out, sizeof out) != 0 && strstr(out, "/nonexistent/mask.png"));
    char bad[1024];
    snprintf(bad, sizeof bad, "%s/garbage.png", dir);
    FILE *f = fopen(bad, "wb");
    fputs("this is not an image", f);
    fclose(f);
    snprintf(args, sizeof args, "generate --model '%s' --image '%s' --mask '%s' --prompt x --output '%s'", model, bad, msk, png);
    CHECK(run(args, out, sizeof out) != 0 && strstr(out, "garbage.png"));
    snprintf(args, sizeof args, "generate --model '%s' --image '%s' --mask '%s' --prompt x --output '%s'", dir, img, msk, png);
    CHECK(run(args, out, sizeof out) != 0 && strstr(out, "model_index.json"));
    CHECK(access(png, F_OK) != 0); /* nothing was written by any failure */
    /* --output naming a symlink: refused before any work (its target is not touched, the link
     * stays); a missing folder: refused before any work, naming it */
    char target[1100], link[1100];
    snprintf(target, sizeof target, "%s/elsewhere.png", dir);
    snprintf(link, sizeof link, "%s/link.png", dir);
    CHECK(symlink(target, link) == 0);
    snprintf(args, sizeof args, "generate --model '%s' --image '%s' --mask '%s' --prompt x --steps 1 --output '%s'", model, img, msk, link);
    int lrc = run(args, out, sizeof out);
    CHECKF(lrc == 2 && strstr(out, "link.png is a symlink (to ") && strstr(out, "elsewhere.png"), "exit %d: %s", lrc, out);
    struct stat lsb;
    CHECK(lstat(link, &lsb) == 0 && S_ISLNK(lsb.st_mode) && access(target, F_OK) != 0);
    snprintf(args, sizeof args, "generate --model '%s' --image '%s' --mask '%s' --prompt x --steps 1 --output '%s/no-such-folder/x.png'",
             model, img, msk, dir);
    lrc = run(args, out, sizeof out);
    CHECKF(lrc == 1 && strstr(out, "cannot open its folder") && strstr(out, "no-such-folder"), "exit %d: %s", lrc, out);
    CHECK(run("generate --help", out, sizeof out) == 0 && strstr(out, "--padding-mask-crop"));
}

/* A diffusers folder with F16 weights under the `.fp16.safetensors` variant names (made by the
 * project's random-model generator) loads and generates. */
static void test_fp16_variant_folder(void)
{
    const char *dir = sdb_t_tmpdir();
    char cmd[4096], model[1024], png[1024], args[8192];
    snprintf(model, sizeof model, "%s/m16", dir);
    snprintf(png, sizeof png, "%s/f16.png", dir);
    char gen[1024];
    snprintf(gen, sizeof gen, "%s", sdb_t_binary());
    char *slash = strrchr(gen, '/');
    if (slash) snprintf(slash + 1, sizeof gen - (size_t)(slash + 1 - gen), "sdbatch-make-random-model");
    snprintf(cmd, sizeof cmd, "'%s' '%s' --size tiny --dtype f16 --fp16-variant > /dev/null 2>&1", gen, model);
    CHECK(system(cmd) == 0);
    snprintf(cmd, sizeof cmd, "%s/unet/diffusion_pytorch_model.fp16.safetensors", model);
    CHECK(access(cmd, F_OK) == 0);
    snprintf(args, sizeof args, "generate --model '%s' --image '%s' --mask '%s' --prompt 'a cat' --seed 1 --steps 2 --output '%s'",
             model, sdb_t_path("refs/pipeline/inputs/scene_128x128.png"), sdb_t_path("refs/pipeline/inputs/mask_128x128.png"), png);
    int rc = run(args, out, sizeof out);
    CHECKF(rc == 0, "exit %d: %s", rc, out);
    CHECK(access(png, F_OK) == 0);
}

int main(void)
{
    RUN(test_fp16_variant_folder);
    RUN(test_reference_run_through_the_cli);
    RUN(test_mask_of_another_size_and_own_size_default);
    RUN(test_bad_input);
    RUN(test_vae_tiling_flag);
    return sdb_t_done();
}
