/*
 * test_provenance.c — where an image came from: the AUTOMATIC1111 `parameters` text parsed as
 * A1111's own parser reads it (hand-written texts with A1111's quoting, unknown keys, missing
 * negative prompts, multi-line prompts; expected values worked out by hand from A1111's rule),
 * `sdbatch info` on real PNG files (text and --json), and `sdbatch generate --from`: an image
 * re-made from its own PNG with the same inputs and model has byte-identical pixels, options
 * given on the command line win, an A1111-written file drives a txt2img run, and bad files fail
 * clearly; the restoration options (mask blur/dilate, masked content, colour match, keep
 * unmasked, inpaint area) are read back too.
 */
#include "harness.h"
#include "sdb/a1111.h"
#include "sdb/image.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

static char out[1 << 16];

static void test_parse_a1111(void)
{
    sdb_err err = {0};
    sdb_a1111_params a;
    /* A1111 1.x output: quoted values with commas and colons, keys with spaces, '-', '/' */
    const char *t1 =
        "masterpiece, a (red:1.2) fox\n"
        "in the snow\n"
        "Negative prompt: lowres, bad anatomy\n"
        "worst quality\n"
        "Steps: 28, Sampler: DPM++ 2M Karras, CFG scale: 6.5, Seed: 3141592653, Size: 512x768, "
        "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Lora hashes: \"fox: a1b2c3, snow: d4e5\", "
        "TI hashes: \"bad-hands-5: 0123\", Hires upscaler: Latent, ADetailer model/x-1: face_yolov8n.pt, "
        "Note: \"say \\\"hi\\\", caf\\u00e9\\n2\", Version: v1.6.0";
    CHECK_OK(sdb_a1111_parse(t1, &a, &err), &err);
    CHECK(!strcmp(a.prompt, "masterpiece, a (red:1.2) fox\nin the snow"));
    CHECK(!strcmp(a.negative_prompt, "lowres, bad anatomy\nworst quality") && a.has_negative);
    CHECKF(a.n == 13, "%d pairs", a.n);
    static const char *const want[][2] = {
        {"Steps", "28"}, {"Sampler", "DPM++ 2M Karras"}, {"CFG scale", "6.5"}, {"Seed", "3141592653"},
        {"Size", "512x768"}, {"Model hash", "6ce0161689"}, {"Model", "v1-5-pruned-emaonly"},
        {"Lora hashes", "fox: a1b2c3, snow: d4e5"}, {"TI hashes", "bad-hands-5: 0123"},
        {"Hires upscaler", "Latent"}, {"ADetailer model/x-1", "face_yolov8n.pt"},
        {"Note", "say \"hi\", caf\xc3\xa9\n2"}, {"Version", "v1.6.0"}};
    for (int i = 0; i < 13 && i < a.n; i++)
        CHECKF(!strcmp(a.kv[i].key, want[i][0]) && !strcmp(a.kv[i].value, want[i][1]), "pair %d: '%s' = '%s'",
               i, a.kv[i].key, a.kv[i].value);
    int w, h;
    CHECK(sdb_a1111_size(sdb_a1111_get(&a, "Size"), &w, &h) == 0 && w == 512 && h == 768);
    CHECK(sdb_a1111_get(&a, "Sampler") && !sdb_a1111_get(&a, "sampler"));
    sdb_a1111_free(&a);

    /* no negative prompt; a value that is not valid JSON keeps its quotes; junk between pairs is skipped */
    CHECK_OK(sdb_a1111_parse("a cat\nSteps: 20, Sampler: Euler a, (weird) Seed: 5, Bad: \"\\q\", Size: 64x64\n", &a, &err), &err);
    CHECK(!strcmp(a.prompt, "a cat") && !strcmp(a.negative_prompt, "") && !a.has_negative);
    CHECK(a.n == 5);
    CHECK(!strcmp(sdb_a1111_get(&a, "Seed"), "5"));
    CHECK(!strcmp(sdb_a1111_get(&a, "Bad"), "\"\\q\""));
    sdb_a1111_free(&a);

    /* a last line with fewer than 3 pairs is prompt, not parameters */
    CHECK_OK(sdb_a1111_parse("  portrait: oil\nstyle: baroque, light: soft  \n", &a, &err), &err);
    CHECK(a.n == 0 && !strcmp(a.prompt, "portrait: oil\nstyle: baroque, light: soft"));
    sdb_a1111_free(&a);
    /* only a parameters line; an empty text */
    CHECK_OK(sdb_a1111_parse("Steps: 1, Seed: 2, Size: 8x8", &a, &err), &err);
    CHECK(a.n == 3 && !strcmp(a.prompt, ""));
    sdb_a1111_free(&a);
    CHECK_OK(sdb_a1111_parse("", &a, &err), &err);
    CHECK(a.n == 0 && !strcmp(a.prompt, "") && !strcmp(a.negative_prompt, ""));
    sdb_a1111_free(&a);
    /* an empty negative prompt line */
    CHECK_OK(sdb_a1111_parse("x\nNegative prompt:\nSteps: 1, Seed: 2, CFG scale: 3", &a, &err), &err);
    CHECK(a.has_negative && !strcmp(a.negative_prompt, "") && !strcmp(a.prompt, "x"));
    sdb_a1111_free(&a);
    CHECK(sdb_a1111_size("512x", &w, &h) != 0 && sdb_a1111_size("x512", &w, &h) != 0 &&
          sdb_a1111_size("0x8", &w, &h) != 0 && sdb_a1111_size("8x8 ", &w, &h) != 0);

    /* writing: values with a comma, colon or newline are JSON-quoted, and read back the same */
    char *s = strdup("p\nSteps: 1");
    s = sdb_a1111_append(s, "Seed", "9");
    s = sdb_a1111_append(s, "Odd", "a, b: \"c\"\nd\\e");
    CHECK(s && !strcmp(s, "p\nSteps: 1, Seed: 9, Odd: \"a, b: \\\"c\\\"\\nd\\\\e\""));
    CHECK_OK(sdb_a1111_parse(s, &a, &err), &err);
    CHECK(a.n == 3 && !strcmp(sdb_a1111_get(&a, "Odd"), "a, b: \"c\"\nd\\e"));
    sdb_a1111_free(&a);
    free(s);
}

/* The pixels of two PNG files are identical (and the images the same size). */
static int same_pixels(const char *a, const char *b)
{
    sdb_err err = {0};
    sdb_image x = {0}, y = {0};
    int ok = sdb_image_load(a, &x, 0, 0, &err) == 0 && sdb_image_load(b, &y, 0, 0, &err) == 0 &&
             x.w == y.w && x.h == y.h && x.c == y.c && !memcmp(x.px, y.px, (size_t)x.w * x.h * x.c);
    sdb_image_free(&x);
    sdb_image_free(&y);
    return ok;
}

static char *parameters_of(const char *png)
{
    char **k = NULL, **v = NULL;
    int n = 0;
    sdb_err err = {0};
    char *p = NULL;
    if (sdb_png_read_text(png, &k, &v, &n, &err) == 0)
        for (int i = 0; i < n; i++) if (!strcmp(k[i], "parameters")) p = strdup(v[i]);
    sdb_png_text_free(k, v, n);
    return p;
}

static void test_info_and_from(void)
{
    const char *dir = sdb_t_tmpdir();
    const char *model = sdb_t_path("models/tiny-sd-inpaint");
    char img[1024], msk[1024], a[1024], b[1024], c[1024], d[1024], args[8192];
    snprintf(img, sizeof img, "%s", sdb_t_path("refs/pipeline/inputs/scene_192x128.png"));
    snprintf(msk, sizeof msk, "%s", sdb_t_path("refs/pipeline/inputs/smallmask_192x128.png"));
    snprintf(a, sizeof a, "%s/a.png", dir);
    snprintf(b, sizeof b, "%s/b.png", dir);
    snprintf(c, sizeof c, "%s/c.png", dir);
    snprintf(d, sizeof d, "%s/d.png", dir);
    /* 1. an image made with non-default settings: ddim + eta, strength, a crop, a working size,
     *    tiling forced on, prompts with commas, quotes and colons */
    snprintf(args, sizeof args,
             "generate --model '%s' --image '%s' --mask '%s' --prompt 'a barn, \"red\": at noon' "
             "--negative-prompt 'fog, rain' --seed 1234 --steps 3 --scheduler ddim --eta 0.25 --strength 0.7 "
             "--guidance-scale 5.5 --padding-mask-crop 8 --width 136 --height 136 --vae-tiling on --output '%s'",
             model, img, msk, a);
    int rc = sdb_t_sdbatch(args, out, sizeof out);
    CHECKF(rc == 0, "exit %d: %s", rc, out);
    /* info, text: the chunk as stored */
    char *chunk = parameters_of(a);
    CHECK(chunk != NULL);
    snprintf(args, sizeof args, "info '%s'", a);
    rc = sdb_t_sdbatch(args, out, sizeof out);
    CHECKF(rc == 0 && chunk && !strncmp(out, chunk, strlen(chunk)), "exit %d: %s", rc, out);
    CHECK(strstr(out, "Eta DDIM: 0.25") && strstr(out, "Padding mask crop: 8") &&
          strstr(out, "Working size: 136x136") && strstr(out, "VAE tiling: on") && strstr(out, "Sampler: DDIM"));
    free(chunk);
    /* info --json */
    snprintf(args, sizeof args, "info --json '%s'", a);
    rc = sdb_t_sdbatch(args, out, sizeof out);
    json_error_t je;
    json_t *j = json_loads(out, 0, &je);
    CHECKF(rc == 0 && j, "exit %d: %s", rc, out);
    if (j) {
        CHECK(!strcmp(json_string_value(json_object_get(j, "prompt")), "a barn, \"red\": at noon"));
        CHECK(!strcmp(json_string_value(json_object_get(j, "negative_prompt")), "fog, rain"));
        CHECK(json_integer_value(json_object_get(j, "seed")) == 1234);
        CHECK(json_integer_value(json_object_get(j, "steps")) == 3);
        CHECK(json_real_value(json_object_get(j, "cfg_scale")) == 5.5);
        CHECK(json_real_value(json_object_get(j, "denoising_strength")) == 0.7);
        CHECK(!strcmp(json_string_value(json_object_get(j, "sampler")), "DDIM"));
        CHECK(json_integer_value(json_object_get(j, "width")) == 192); /* Size = the output's size */
        json_t *kv = json_object_get(j, "parameters");
        CHECK(kv && !strcmp(json_string_value(json_object_get(kv, "Padding mask crop")), "8"));
        json_decref(j);
    }
    /* 2. --from with the same inputs: the same pixels */
    snprintf(args, sizeof args, "generate --from '%s' --model '%s' --image '%s' --mask '%s' --output '%s'", a, model, img, msk, b);
    rc = sdb_t_sdbatch(args, out, sizeof out);
    CHECKF(rc == 0, "exit %d: %s", rc, out);
    CHECK(same_pixels(a, b));
    char *pa = parameters_of(a), *pb = parameters_of(b);
    CHECK(pa && pb && !strcmp(pa, pb));
    free(pa);
    free(pb);
    /* 3. an option given wins; the rest still comes from the file */
    snprintf(args, sizeof args, "generate --from '%s' --model '%s' --image '%s' --mask '%s' --seed 99 --output '%s'", a, model, img, msk, c);
    rc = sdb_t_sdbatch(args, out, sizeof out);
    CHECKF(rc == 0, "exit %d: %s", rc, out);
    CHECK(!same_pixels(a, c));
    char *pc = parameters_of(c);
    CHECK(pc && strstr(pc, "Seed: 99,") && strstr(pc, "Eta DDIM: 0.25") && strstr(pc, "Negative prompt: fog, rain\n"));
    free(pc);
    /* ... and re-running that one with the original seed gives the original image again */
    snprintf(args, sizeof args, "generate --from '%s' --model '%s' --image '%s' --mask '%s' --seed 1234 --output '%s'", c, model, img, msk, d);
    CHECK(sdb_t_sdbatch(args, out, sizeof out) == 0 && same_pixels(a, d));

    /* 4. no parameters chunk; not a PNG; unknown sampler */
    snprintf(args, sizeof args, "info '%s'", img);
    rc = sdb_t_sdbatch(args, out, sizeof out);
    CHECKF(rc == 1 && strstr(out, "no 'parameters' text chunk"), "exit %d: %s", rc, out);
    snprintf(args, sizeof args, "info '%s'", sdb_t_path("refs/pipeline/inputs/scene_136x96.jpg"));
    rc = sdb_t_sdbatch(args, out, sizeof out);
    CHECKF(rc == 1 && strstr(out, "scene_136x96.jpg"), "exit %d: %s", rc, out);
    sdb_err err = {0};
    sdb_image im = {0};
    CHECK_OK(sdb_image_alloc(&im, 8, 8, 3, &err), &err);
    memset(im.px, 128, 8 * 8 * 3);
    const char *key[1] = {"parameters"};
    const char *bad[1] = {"x\nSteps: 2, Sampler: DPM++ SDE Karras, Seed: 1, Size: 64x64"};
    snprintf(c, sizeof c, "%s/a1111-bad.png", dir);
    CHECK_OK(sdb_png_write(c, &im, key, bad, 1, &err), &err);
    snprintf(args, sizeof args, "generate --from '%s' --model '%s' --output '%s/never.png'", c, sdb_t_path("models/tiny-sd"), dir);
    rc = sdb_t_sdbatch(args, out, sizeof out);
    CHECKF(rc != 0 && strstr(out, "DPM++ SDE Karras") && strstr(out, "--scheduler"), "exit %d: %s", rc, out);
    /* ... but --scheduler rescues it */
    snprintf(args, sizeof args, "generate --from '%s' --model '%s' --scheduler euler --output '%s/ok.png'", c, sdb_t_path("models/tiny-sd"), dir);
    rc = sdb_t_sdbatch(args, out, sizeof out);
    CHECKF(rc == 0, "exit %d: %s", rc, out);

    /* 5. a file as A1111 writes it drives a txt2img run: its Size, prompt, negative prompt, seed */
    const char *a1111[1] = {"a lighthouse, \"storm\"\nNegative prompt: people\n"
                            "Steps: 2, Sampler: Euler a, CFG scale: 4, Seed: 42, Size: 72x56, Model hash: 0000000000, "
                            "Model: other, Lora hashes: \"x: 1, y: 2\", Version: v1.6.0"};
    snprintf(c, sizeof c, "%s/a1111.png", dir);
    CHECK_OK(sdb_png_write(c, &im, key, a1111, 1, &err), &err);
    sdb_image_free(&im);
    snprintf(args, sizeof args, "generate --from '%s' --model '%s' --output '%s/t.png'", c, sdb_t_path("models/tiny-sd"), dir);
    rc = sdb_t_sdbatch(args, out, sizeof out);
    CHECKF(rc == 0, "exit %d: %s", rc, out);
    snprintf(d, sizeof d, "%s/t.png", dir);
    CHECK_OK(sdb_image_load(d, &im, 0, 0, &err), &err);
    CHECK(im.w == 72 && im.h == 56);
    sdb_image_free(&im);
    char *pt = parameters_of(d);
    CHECK(pt && !strncmp(pt, "a lighthouse, \"storm\"\nNegative prompt: people\nSteps: 2, Sampler: Euler a, CFG scale: 4, Seed: 42, Size: 72x56", 95));
    free(pt);
    /* the same run spelled out by hand gives the same pixels */
    snprintf(args, sizeof args, "generate --model '%s' --prompt 'a lighthouse, \"storm\"' --negative-prompt people --steps 2 "
             "--scheduler euler_a --guidance-scale 4 --seed 42 --width 72 --height 56 --output '%s/t2.png'", sdb_t_path("models/tiny-sd"), dir);
    CHECK(sdb_t_sdbatch(args, out, sizeof out) == 0);
    snprintf(c, sizeof c, "%s/t2.png", dir);
    CHECK(same_pixels(c, d));
}

/* generate --from reads the restoration options back (issue 17): an image made with them is re-made
 * pixel for pixel; an option given wins over the file's; A1111's spelling of them drives the same
 * run as the options spelled out by hand; a malformed value names its key. */
static void test_from_restore(void)
{
    const char *dir = sdb_t_tmpdir();
    const char *model = sdb_t_path("models/tiny-sd-inpaint");
    char img[1024], msk[1024], r0[1024], r1[1024], r2[1024], r3[1024], r4[1024], args[8192];
    snprintf(img, sizeof img, "%s", sdb_t_path("refs/pipeline/inputs/scene_192x128.png"));
    snprintf(msk, sizeof msk, "%s", sdb_t_path("refs/pipeline/inputs/smallmask_192x128.png"));
    snprintf(r0, sizeof r0, "%s/r0.png", dir);
    snprintf(r1, sizeof r1, "%s/r1.png", dir);
    snprintf(r2, sizeof r2, "%s/r2.png", dir);
    snprintf(r3, sizeof r3, "%s/r3.png", dir);
    snprintf(r4, sizeof r4, "%s/r4.png", dir);
    const char *base = "generate --model '%s' --image '%s' --mask '%s' --prompt 'a wall' --seed 5 --steps 2 %s --output '%s'";
    snprintf(args, sizeof args, base, model, img, msk, "", r0);
    CHECK(sdb_t_sdbatch(args, out, sizeof out) == 0);
    snprintf(args, sizeof args, base, model, img, msk,
             "--keep-unmasked --mask-blur 3 --mask-dilate 2 --masked-content fill --color-match", r1);
    int rc = sdb_t_sdbatch(args, out, sizeof out);
    CHECKF(rc == 0, "exit %d: %s", rc, out);
    CHECK(!same_pixels(r0, r1)); /* the options change the image, so reading them back matters */
    char *p1 = parameters_of(r1);
    CHECK(p1 && strstr(p1, "Mask blur: 3") && strstr(p1, "Mask dilate: 2") && strstr(p1, "Masked content: fill") &&
          strstr(p1, "Color correction: True") && strstr(p1, "Keep unmasked: True"));
    /* --from alone: the same pixels and parameters */
    snprintf(args, sizeof args, "generate --from '%s' --model '%s' --image '%s' --mask '%s' --output '%s'", r1, model, img, msk, r2);
    rc = sdb_t_sdbatch(args, out, sizeof out);
    CHECKF(rc == 0, "exit %d: %s", rc, out);
    CHECK(same_pixels(r1, r2));
    char *p2 = parameters_of(r2);
    CHECK(p1 && p2 && !strcmp(p1, p2));
    free(p2);
    /* an option given wins, the others still come from the file: as the run spelled out */
    snprintf(args, sizeof args, "generate --from '%s' --model '%s' --image '%s' --mask '%s' --mask-blur 0 --masked-content original --output '%s'",
             r1, model, img, msk, r2);
    CHECK(sdb_t_sdbatch(args, out, sizeof out) == 0);
    snprintf(args, sizeof args, base, model, img, msk, "--keep-unmasked --mask-dilate 2 --masked-content original --color-match", r3);
    CHECK(sdb_t_sdbatch(args, out, sizeof out) == 0);
    CHECK(same_pixels(r2, r3) && !same_pixels(r1, r2));
    p2 = parameters_of(r2);
    CHECK(p2 && !strstr(p2, "Mask blur") && strstr(p2, "Masked content: original") && strstr(p2, "Keep unmasked: True"));
    free(p2);
    free(p1);
    /* A1111's own spelling (only masked with its padding, latent noise, mask blur) */
    sdb_err err = {0};
    sdb_image im = {0};
    CHECK_OK(sdb_image_alloc(&im, 8, 8, 3, &err), &err);
    memset(im.px, 128, 8 * 8 * 3);
    const char *key[1] = {"parameters"};
    const char *a1111[1] = {"a wall\nSteps: 2, Sampler: PNDM, CFG scale: 7.5, Seed: 5, Size: 192x128, Model hash: 0000000000, "
                            "Mask blur: 4, Masked content: latent noise, Inpaint area: Only masked, Masked area padding: 16"};
    snprintf(r3, sizeof r3, "%s/a1111-restore.png", dir);
    CHECK_OK(sdb_png_write(r3, &im, key, a1111, 1, &err), &err);
    snprintf(args, sizeof args, "generate --from '%s' --model '%s' --image '%s' --mask '%s' --output '%s'", r3, model, img, msk, r2);
    rc = sdb_t_sdbatch(args, out, sizeof out);
    CHECKF(rc == 0, "exit %d: %s", rc, out);
    snprintf(args, sizeof args, base, model, img, msk,
             "--mask-blur 4 --masked-content latent_noise --inpaint-area masked --padding-mask-crop 16", r4);
    rc = sdb_t_sdbatch(args, out, sizeof out);
    CHECKF(rc == 0, "exit %d: %s", rc, out);
    CHECK(same_pixels(r2, r4));
    const char *bad[1] = {"a wall\nSteps: 2, Sampler: PNDM, Seed: 5, Size: 192x128, Masked content: sideways"};
    CHECK_OK(sdb_png_write(r3, &im, key, bad, 1, &err), &err);
    sdb_image_free(&im);
    snprintf(args, sizeof args, "generate --from '%s' --model '%s' --image '%s' --mask '%s' --output '%s'", r3, model, img, msk, r2);
    rc = sdb_t_sdbatch(args, out, sizeof out);
    CHECKF(rc != 0 && strstr(out, "Masked content: sideways"), "exit %d: %s", rc, out);
}

/* `restore`: the tests that run `generate` (test_provenance_restore_slow, Release only: with
 * --vae-tiling on and the restoration options they take minutes under the sanitizers). */
int main(int argc, char **argv)
{
    if (!sdb_t_data()) return 1;
    if (argc > 1 && !strcmp(argv[1], "restore")) {
        RUN(test_info_and_from);
        RUN(test_from_restore);
    } else {
        RUN(test_parse_a1111);
    }
    return sdb_t_done();
}
