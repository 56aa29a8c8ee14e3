/*
 * test_restore_slow.c — the pipeline-level sweeps of issue 17's restoration options (Release CI
 * only; test_restore.c has the fast checks): keep_unmasked on 16 random masks of odd sizes, from
 * JPEG and PNG files, with and without dilation / blur / colour match / a resize: every zero-mask
 * pixel bit-identical; every masked_content on the 9- and 4-channel tiny models at strength 1 and
 * 0.6 against its definition; the CLI flags and `sdbatch run` with options, a .jpg output and
 * `mask: alpha`.
 */
#include "test_restore_common.h"
#include "sdb/mask.h"

static void test_keep_unmasked(void)
{
    sdb_model *m = tiny(0);
    if (!m) return;
    sdb_err err;
    for (int t = 0; t < 16; t++) {
        int w = 33 + 2 * (int)(rnd() % 30), h = 25 + 2 * (int)(rnd() % 30);   /* odd sizes */
        int jpeg = t & 1, soft = t >= 8;
        sdb_image img = {0}, msk = {0}, out = {0};
        odd_input(w, h, jpeg, &img);
        random_mask(&msk, w, h);
        sdb_gen_params p;
        sdb_gen_params_default(&p);
        p.prompt = "a street";
        p.seed = 100 + (uint64_t)t;
        p.steps = 2;
        p.image = &img;
        p.mask = &msk;
        p.restore.keep_unmasked = 1;
        if (soft) { p.restore.mask_dilate = 1 + t % 3; p.restore.mask_blur = 1 + t % 4; }
        if (t % 4 == 3) p.restore.color_match = 1;
        if (t == 5 || t == 12) p.width = p.height = 64;   /* resized to work, resized back to composite */
        CHECK_OK(sdb_generate(m, &p, NULL, NULL, &out, NULL, &err), &err);
        if (!out.px) { sdb_image_free(&img); sdb_image_free(&msk); continue; }
        CHECK(out.w == w && out.h == h && out.c == 3);
        /* zero after dilation and blur: no mask pixel within dilate + the blur kernel's reach */
        int reach = p.restore.mask_dilate + (soft ? sdb_mask_blur_ksize(p.restore.mask_blur) / 2 : 0);
        int differ = 0, changed = 0, zeros = 0;
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                int any = 0;
                for (int yy = y - reach; yy <= y + reach && !any; yy++)
                    for (int xx = x - reach; xx <= x + reach && !any; xx++)
                        if (msk.px[refl(yy, h) * w + refl(xx, w)]) any = 1;
                size_t i = (size_t)y * w + x;
                if (!any) { zeros++; differ += memcmp(out.px + 3 * i, img.px + 3 * i, 3) != 0; }
                if (msk.px[i] && memcmp(out.px + 3 * i, img.px + 3 * i, 3)) changed++;
            }
        CHECKF(differ == 0 && zeros > 0, "case %d (%dx%d %s): %d of %d unmasked pixels changed", t, w, h, jpeg ? "jpeg" : "png", differ, zeros);
        CHECK(changed > 0);
        sdb_image_free(&img); sdb_image_free(&msk); sdb_image_free(&out);
    }
}

static void test_masked_content_all(void) { masked_content_cases(1, 1); }

/* The CLI end to end: the restoration flags and a .jpg output. */
static void test_cli(void)
{
    char args[4096], out[8192];
    const char *dir = sdb_t_tmpdir();
    snprintf(args, sizeof args, "generate --model %s --image %s --mask %s --prompt x --steps 2 --seed 3 "
             "--keep-unmasked --mask-dilate 2 --mask-blur 3 --color-match --masked-content fill "
             "--inpaint-area masked --only-masked-size 64 --output %s/cli.jpg --jpeg-quality 90 -q",
             sdb_t_path("models/tiny-sd-inpaint"), sdb_t_path("refs/pipeline/inputs/scene_192x128.png"),
             sdb_t_path("refs/pipeline/inputs/smallmask_192x128.png"), dir);
    int rc = sdb_t_sdbatch(args, out, sizeof out);
    CHECKF(rc == 0, "%s", out);
    char path[700];
    snprintf(path, sizeof path, "%s/cli.jpg", dir);
    sdb_image im = {0};
    sdb_err err;
    CHECK_OK(sdb_image_load(path, &im, 0, 0, &err), &err);
    CHECK(im.w == 192 && im.h == 128 && im.c == 3);
    sdb_image_free(&im);
    snprintf(args, sizeof args, "generate --model %s --image %s --mask alpha --prompt x --output %s/a.png",
             sdb_t_path("models/tiny-sd-inpaint"), sdb_t_path("refs/pipeline/inputs/scene_128x128.png"), dir);
    rc = sdb_t_sdbatch(args, out, sizeof out);
    CHECKF(rc != 0 && strstr(out, "alpha channel"), "%s", out);
    snprintf(args, sizeof args, "generate --model m --prompt x --output %s/a.tif", dir);
    CHECK(sdb_t_sdbatch(args, out, sizeof out) == 2 && strstr(out, ".png, .jpg or .jpeg"));

    /* `sdbatch run`: options from defaults, a .jpg output, an RGBA input through `mask: alpha` */
    sdb_err err2;
    sdb_image rgba = {0};
    CHECK_OK(sdb_image_load(sdb_t_path("refs/pipeline/inputs/scene_128x128.png"), &rgba, 3, 0, &err2), &err2);
    sdb_image a4 = {0};
    CHECK_OK(sdb_image_alloc(&a4, 128, 128, 4, &err2), &err2);
    for (int i = 0; i < 128 * 128 && rgba.px; i++) {
        memcpy(a4.px + 4 * i, rgba.px + 3 * i, 3);
        a4.px[4 * i + 3] = (i % 128 > 40 && i % 128 < 70 && i / 128 > 50 && i / 128 < 80) ? 0 : 255;
    }
    char ipath[700], man[4096], mpath[700];
    snprintf(ipath, sizeof ipath, "%s/rgba.png", dir);
    CHECK_OK(sdb_image_write(ipath, &a4, NULL, 0, &err2), &err2);
    snprintf(man, sizeof man, "version: 1\nmodel: %s\noutput_dir: %s/out\ndefaults:\n  prompt: x\n  steps: 2\n"
             "  keep_unmasked: true\n  mask_dilate: 2\n  mask_blur: 2\n  color_match: true\n"
             "jobs:\n  - id: j\n    image: %s\n    mask: %s\n    output: j.jpg\n    jpeg_quality: 70\n"
             "  - id: a\n    image: %s\n    mask: alpha\n",
             sdb_t_path("models/tiny-sd-inpaint"), dir, sdb_t_path("refs/pipeline/inputs/scene_128x128.png"),
             sdb_t_path("refs/pipeline/inputs/mask_128x128.png"), ipath);
    snprintf(mpath, sizeof mpath, "%s/m.yaml", dir);
    CHECK_OK(sdb_write_file_atomic(mpath, man, strlen(man), &err2), &err2);
    snprintf(args, sizeof args, "run %s", mpath);
    rc = sdb_t_sdbatch(args, out, sizeof out);
    CHECKF(rc == 0, "%s", out);
    sdb_image o = {0};
    snprintf(path, sizeof path, "%s/out/j.jpg", dir);
    CHECK_OK(sdb_image_load(path, &o, 0, 0, &err2), &err2);
    CHECK(o.w == 128 && o.c == 3);
    sdb_image_free(&o);
    snprintf(path, sizeof path, "%s/out/a.png", dir);
    CHECK_OK(sdb_image_load(path, &o, 0, 0, &err2), &err2);
    int same = 0, opaque = 0;
    for (int i = 0; i < 128 * 128 && o.px && o.c == 3; i++)
        if (i % 128 < 33 || i % 128 > 77 || i / 128 < 43 || i / 128 > 87) {   /* beyond dilate 2 + blur reach 6 */
            opaque++;
            same += !memcmp(o.px + 3 * i, a4.px + 4 * i, 3);
        }
    CHECKF(o.c == 3 && opaque > 0 && same == opaque, "mask: alpha through run: %d of %d opaque pixels kept", same, opaque);
    sdb_image_free(&o);
    /* run again: nothing to redo */
    rc = sdb_t_sdbatch(args, out, sizeof out);
    CHECKF(rc == 0 && !strstr(out, "done j"), "%s", out);
    sdb_image_free(&rgba);
    sdb_image_free(&a4);
}

int main(void)
{
    RUN(test_keep_unmasked);
    RUN(test_masked_content_all);
    RUN(test_cli);
    return sdb_t_done();
}
