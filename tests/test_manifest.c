/*
 * test_manifest.c — batch manifests: a good one resolves as documented (defaults, globs with
 * {stem}/{name}/{dir}, paths, seed "auto"); 25+ kinds of bad ones each report the right
 * `file:line:column: message`, and every problem of a file is reported, not just the first.
 */
#include "harness.h"
#include "sdb/pipeline.h"
#include "sdb/fsutil.h"
#include "sdb/manifest.h"
#include "sdb/pipeline.h"
#include "sdb/shard.h"

#include <stdlib.h>
#include <string.h>

static char dir[512];
static char scene[700], mask[700], scene192[700];

static void setup(void)
{
    if (dir[0]) return;
    snprintf(dir, sizeof dir, "%s", sdb_t_tmpdir());
    snprintf(scene, sizeof scene, "%s", sdb_t_path("refs/pipeline/inputs/scene_128x128.png"));
    snprintf(mask, sizeof mask, "%s", sdb_t_path("refs/pipeline/inputs/mask_128x128.png"));
    snprintf(scene192, sizeof scene192, "%s", sdb_t_path("refs/pipeline/inputs/scene_192x128.png"));
    char p[800];
    sdb_err err;
    snprintf(p, sizeof p, "%s/frames", dir);
    sdb_mkdirs(p, &err);
    snprintf(p, sizeof p, "%s/masks", dir);
    sdb_mkdirs(p, &err);
    char *img, *msk;
    size_t n1, n2;
    if (sdb_read_file(scene, &img, &n1, &err) || sdb_read_file(mask, &msk, &n2, &err)) { CHECK(0); return; }
    const char *names[3] = {"0002", "0001", "0010"};
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/frames/%s.png", dir, names[i]);
        sdb_write_file_atomic(p, img, n1, &err);
        snprintf(p, sizeof p, "%s/masks/%s.png", dir, names[i]);
        sdb_write_file_atomic(p, msk, n2, &err);
    }
    snprintf(p, sizeof p, "%s/frames/notes.txt", dir);   /* not matched by *.png */
    sdb_write_file_atomic(p, "x", 1, &err);
    snprintf(p, sizeof p, "%s/garbage.png", dir);
    sdb_write_file_atomic(p, "\x89PNG\r\n\x1a\nthis is not a png", 25, &err);
    free(img);
    free(msk);
}

static const char *write_manifest(const char *name, const char *text)
{
    static char path[800];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    sdb_err err;
    CHECK_OK(sdb_write_file_atomic(path, text, strlen(text), &err), &err);
    return path;
}

static int has_diag(const sdb_manifest *m, const char *want)
{
    for (int i = 0; i < m->n_diags; i++) if (strstr(m->diags[i].text, want)) return 1;
    return 0;
}

static void dump(const sdb_manifest *m)
{
    for (int i = 0; i < m->n_diags; i++) fprintf(stderr, "    | %s\n", m->diags[i].text);
}

static void test_good(void)
{
    setup();
    char text[4096];
    snprintf(text, sizeof text,
        "# a comment\n"
        "version: 1\n"
        "model: %s\n"
        "output_dir: out/restore\n"
        "defaults:\n"
        "  negative_prompt: \"blurry\"\n"
        "  steps: 4\n"
        "  guidance_scale: 7.5\n"
        "  scheduler: ddim\n"
        "  seed: 1234\n"
        "jobs:\n"
        "  - id: frame-0001\n"
        "    image: %s\n"
        "    mask: %s\n"
        "    prompt: \"clean film frame\"\n"
        "    seed: auto\n"
        "    output: special/one.png\n"
        "  - glob: frames/*.png\n"
        "    mask: masks/{stem}.png\n"
        "    id: f-{stem}\n"
        "    prompt: 'frame {name}'\n"
        "    steps: 3\n"
        "    width: 128\n"
        "    height: 128\n"
        "  - id: txt\n"
        "    prompt: a lighthouse\n"
        "    strength: 1\n"
        "    eta: 0.5\n",
        sdb_t_path("models/tiny-sd"), scene, mask);   /* 4-channel: the txt2img job is fine */
    const char *path = write_manifest("good.yaml", text);
    sdb_manifest m;
    sdb_err err;
    CHECK_OK(sdb_manifest_load(&m, path, &err), &err);
    CHECK_OK(sdb_manifest_check(&m, &err), &err);
    dump(&m);
    CHECK(m.n_errors == 0);
    CHECK(m.n_jobs == 5);
    if (m.n_jobs != 5) { sdb_manifest_free(&m); return; }
    const sdb_job_spec *j = &m.jobs[0];
    CHECK(!strcmp(j->id, "frame-0001"));
    CHECK(j->steps == 4 && j->guidance_scale == 7.5 && !strcmp(j->scheduler, "ddim"));
    CHECK(!strcmp(j->negative_prompt, "blurry"));
    CHECK(j->seed_auto && j->seed == sdb_seed_from_id("frame-0001"));
    CHECK(j->seed == sdb_seed_from_id("frame-0001") && j->seed < (1ULL << 63));
    char want[900];
    snprintf(want, sizeof want, "%s/out/restore/special/one.png", dir);
    CHECKF(!strcmp(j->output, want), "%s", j->output);
    CHECK(j->key_pos[SDB_JK_STEPS].line == 7);       /* from defaults */
    CHECK(j->key_pos[SDB_JK_SEED].line == 16);
    /* the glob: sorted, substituted, resolved against the manifest's folder */
    const char *order[3] = {"f-0001", "f-0002", "f-0010"};
    for (int i = 0; i < 3; i++) {
        const sdb_job_spec *g = &m.jobs[1 + i];
        CHECKF(!strcmp(g->id, order[i]), "%s", g->id);
        snprintf(want, sizeof want, "%s/masks/%s.png", dir, order[i] + 2);
        CHECKF(g->mask && !strcmp(g->mask, want), "%s", g->mask ? g->mask : "(null)");
        snprintf(want, sizeof want, "%s/frames/%s.png", dir, order[i] + 2);
        CHECK(g->image && !strcmp(g->image, want));
        snprintf(want, sizeof want, "%s/out/restore/%s.png", dir, order[i]);
        CHECK(!strcmp(g->output, want));
        CHECK(!strcmp(g->prompt, "frame {name}"));   /* prompts are not templates */
        CHECK(g->steps == 3 && g->seed == 1234 && !g->seed_auto && g->width == 128);
    }
    const sdb_job_spec *t = &m.jobs[4];
    CHECK(!t->image && !t->mask && t->eta == 0.5);
    /* params hashes: distinct per job, stable */
    CHECK(strlen(m.jobs[0].params_hash) == 64);
    CHECK(strcmp(m.jobs[1].params_hash, m.jobs[2].params_hash));
    char h0[65];
    memcpy(h0, m.jobs[0].params_hash, 65);
    sdb_manifest_free(&m);
    CHECK_OK(sdb_manifest_load(&m, path, &err), &err);
    CHECK_OK(sdb_manifest_hash_inputs(&m, &err), &err);
    CHECK(!strcmp(h0, m.jobs[0].params_hash));
    char id1[65], id2[65];
    sdb_job_identity(&m.jobs[0], "modelA", id1);
    sdb_job_identity(&m.jobs[0], "modelB", id2);
    CHECK(strcmp(id1, id2));   /* the model is part of the identity */
    sdb_manifest_free(&m);
}

typedef struct {
    const char *name;
    const char *body;    /* after the header unless it starts with '!' (then the whole file) */
    const char *want;    /* "line:col: substring" */
    int check;           /* needs sdb_manifest_check (file checks) */
} bad_case;

static void test_bad(void)
{
    setup();
    static const bad_case cases[] = {
        {"syntax", "!version: 1\njobs: [a, b\nmodel: x\n", ":3:6: YAML syntax error", 0},
        {"not-a-mapping", "!- just\n- a list\n", ":1:1: the manifest must be a mapping", 0},
        {"empty", "!# nothing here\n", ":1:1: the manifest is empty", 0},
        {"unknown-top-key", "!version: 1\nmodel: m\noutput_dir: o\nverbose: true\njobs:\n  - id: a\n    prompt: p\n", ":4:1: unknown top-level key 'verbose'", 0},
        {"version-2", "!version: 2\nmodel: m\noutput_dir: o\njobs:\n  - id: a\n    prompt: p\n", ":1:10: unsupported manifest version 2", 0},
        {"missing-jobs", "!version: 1\nmodel: m\noutput_dir: o\n", ":1:1: missing 'jobs'", 0},
        {"missing-model", "!version: 1\noutput_dir: o\njobs:\n  - id: a\n    prompt: p\n", ":1:1: missing 'model'", 0},
        {"jobs-not-list", "jobs:\n  id: a\n", ":5:3: 'jobs' must be a list, got a mapping", 0},
        {"jobs-empty", "jobs: []\n", ":4:7: 'jobs' is empty", 0},
        {"unknown-job-key", "jobs:\n  - id: a\n    prompt: p\n    promt: q\n", ":7:5: unknown key 'promt' in a job", 0},
        {"steps-type", "jobs:\n  - id: a\n    prompt: p\n    steps: many\n", ":7:12: 'steps' must be a whole number, got a string", 0},
        {"steps-quoted", "jobs:\n  - id: a\n    prompt: p\n    steps: \"30\"\n", ":7:12: 'steps' must be a whole number, got a string", 0},
        {"steps-float", "jobs:\n  - id: a\n    prompt: p\n    steps: 2.5\n", ":7:12: 'steps' must be a whole number, got 2.5", 0},
        {"steps-range", "jobs:\n  - id: a\n    prompt: p\n    steps: 0\n", ":7:12: 'steps' is out of range: 0", 0},
        {"guidance-range", "jobs:\n  - id: a\n    prompt: p\n    guidance_scale: -1\n", ":7:21: 'guidance_scale' is out of range", 0},
        {"strength-zero", "jobs:\n  - id: a\n    prompt: p\n    strength: 0\n", ":7:15: 'strength' is out of range: 0", 0},
        {"strength-big", "jobs:\n  - id: a\n    prompt: p\n    strength: 1.5\n", ":7:15: 'strength' is out of range", 0},
        {"eta-nan", "jobs:\n  - id: a\n    prompt: p\n    eta: .nan\n", ":7:10: 'eta' is out of range", 0},
        {"width-multiple", "jobs:\n  - id: a\n    prompt: p\n    width: 100\n", ":7:12: 'width' must be a multiple of 8, got 100", 0},
        {"height-type", "jobs:\n  - id: a\n    prompt: p\n    height: [1]\n", ":7:13: 'height' must be a whole number, got a list", 0},
        {"scheduler", "jobs:\n  - id: a\n    prompt: p\n    scheduler: karras9\n", ":7:16: unknown scheduler 'karras9'", 0},
        {"vae-tiling", "jobs:\n  - id: a\n    prompt: p\n    vae_tiling: maybe\n", ":7:17: 'vae_tiling' must be auto, on or off, got 'maybe'", 0},
        {"vae-tiling-bool", "defaults:\n  vae_tiling: true\njobs:\n  - id: a\n    prompt: p\n", ":5:15: 'vae_tiling' must be a string", 0},
        {"seed-bad", "jobs:\n  - id: a\n    prompt: p\n    seed: lucky\n", ":7:11: 'seed' must be a whole number or \"auto\"", 0},
        {"seed-negative", "jobs:\n  - id: a\n    prompt: p\n    seed: -5\n", ":7:11: 'seed' is out of range", 0},
        {"prompt-null", "jobs:\n  - id: a\n    prompt:\n", ":6:12: 'prompt' must be a string, got null", 0},
        {"no-prompt", "jobs:\n  - id: a\n    steps: 3\n", ":5:5: job 'a' has no 'prompt'", 0},
        {"no-id", "jobs:\n  - prompt: p\n", ":5:5: job has no 'id'", 0},
        {"bad-id", "jobs:\n  - id: a/b\n    prompt: p\n", ":5:9: invalid id 'a/b'", 0},
        {"duplicate-id", "jobs:\n  - id: a\n    prompt: p\n  - id: b\n    prompt: p\n  - id: a\n    prompt: q\n", ":9:9: duplicate job id 'a' (first at line 5)", 0},
        {"duplicate-key", "jobs:\n  - id: a\n    prompt: p\n    prompt: q\n", ":7:5: duplicate key 'prompt' (first at line 6)", 0},
        {"same-output", "jobs:\n  - id: a\n    prompt: p\n    output: x.png\n  - id: b\n    prompt: p\n    output: x.png\n", ":10:13: jobs 'a' and 'b' write the same output", 0},
        {"output-not-png", "jobs:\n  - id: a\n    prompt: p\n    output: a.tif\n", ":7:13: 'output' must name a .png, .jpg or .jpeg file", 0},
        {"mask-without-image", "jobs:\n  - id: a\n    prompt: p\n    mask: m.png\n", ":7:11: job 'a' has a mask but no image", 0},
        {"defaults-id", "defaults:\n  id: x\njobs:\n  - id: a\n    prompt: p\n", ":5:3: 'id' cannot have a default", 0},
        {"defaults-type", "defaults: 3\njobs:\n  - id: a\n    prompt: p\n", ":4:11: 'defaults' must be a mapping", 0},
        {"glob-nomatch", "jobs:\n  - glob: nothing/*.png\n    prompt: p\n", ":5:11: glob 'nothing/*.png' matches no files", 0},
        {"glob-placeholder", "jobs:\n  - glob: frames/*.png\n    mask: masks/{base}.png\n    prompt: p\n", ":6:11: 'mask': unknown placeholder", 0},
        {"glob-fixed-id", "jobs:\n  - glob: frames/*.png\n    id: same\n    prompt: p\n", ":6:9: the 'id' of a 'glob' entry must use {stem}", 0},
        {"glob-and-image", "jobs:\n  - glob: frames/*.png\n    image: x.png\n    prompt: p\n", ":6:12: a 'glob' entry takes its images from the glob", 0},
        {"placeholder-no-glob", "jobs:\n  - id: a-{stem}\n    prompt: p\n", ":5:9: 'id' uses a placeholder but the job has no 'glob'", 0},
        {"job-not-mapping", "jobs:\n  - just a string\n", ":5:5: each job must be a mapping, got a string", 0},
        {"two-documents", "jobs:\n  - id: a\n    prompt: p\n---\nmore: 1\n", ":8:1: a manifest holds one YAML document", 0},
        /* file checks */
        {"missing-image", "jobs:\n  - id: a\n    prompt: p\n    image: nothere.png\n", ":7:12: job 'a': image", 1},
        {"undecodable", "jobs:\n  - id: a\n    prompt: p\n    image: garbage.png\n", ":7:12: job 'a': image", 1},
        {"missing-mask-default", "defaults:\n  mask: masks/none.png\njobs:\n  - id: a\n    prompt: p\n    image: frames/0001.png\n", ":5:9: job 'a': mask", 1},
        {"missing-model", "!version: 1\nmodel: ../no/such/model\noutput_dir: o\njobs:\n  - id: a\n    prompt: p\n", ":2:8: model '", 1},
        /* the tiny file's configs are not SD 1.x's: they cannot be inferred, and it has no tokenizer beside it */
        {"single-file-not-inferable", "!version: 1\nmodel: %TINYFILE%\noutput_dir: o\njobs:\n  - id: a\n    prompt: p\n", "tensor 'cond_stage_model.transformer.text_model.embeddings.token_embedding.weight' has shape [49408, 32]", 1},
        {"single-file-no-tokenizer", "!version: 1\nmodel: %TINYFILE%\noutput_dir: o\njobs:\n  - id: a\n    prompt: p\n", ":2:8: model: ", 1},
        {"bare-model-name", "!version: 1\nmodel: no-such-model\noutput_dir: o\njobs:\n  - id: a\n    prompt: p\n", "/models/no-such-model.safetensors", 1},
        {"missing-vae", "defaults:\n  vae: no-such-vae\njobs:\n  - id: a\n    prompt: p\n    image: frames/0001.png\n    mask: masks/0001.png\n", ":5:8: job 'a': vae: ", 1},
        {"empty-vae", "jobs:\n  - id: a\n    prompt: p\n    vae: ''\n", ":7:10: 'vae' must not be empty", 0},
        {"model-config-not-diffusers", "!version: 1\nmodel: %TINYFILE%\nmodel_config: frames\noutput_dir: o\njobs:\n  - id: a\n    prompt: p\n", ":3:15: model_config:", 1},
        {"model-config-on-folder", "model_config: frames\njobs:\n  - id: a\n    prompt: p\n    image: frames/0001.png\n    mask: masks/0001.png\n", ":4:15: 'model_config' is for single-file checkpoints", 1},
        {"txt2img-on-inpainting", "jobs:\n  - id: a\n    prompt: p\n", ":5:5: job 'a': the model is an inpainting model", 1},
    };
    int n = (int)(sizeof cases / sizeof cases[0]);
    CHECK(n >= 15);
    char header[1024];
    snprintf(header, sizeof header, "version: 1\nmodel: %s\noutput_dir: out\n", sdb_t_path("models/tiny-sd-inpaint"));
    for (int i = 0; i < n; i++) {
        const bad_case *c = &cases[i];
        char text[4096], name[128];
        if (c->body[0] == '!') snprintf(text, sizeof text, "%s", c->body + 1);
        else snprintf(text, sizeof text, "%s%s", header, c->body);
        char *tf = strstr(text, "%TINYFILE%");   /* the shared single-file checkpoint (no configs beside it) */
        if (tf) {
            char rest[4096];
            snprintf(rest, sizeof rest, "%s", tf + 10);
            snprintf(tf, sizeof text - (size_t)(tf - text), "%s%s", sdb_t_path("models/tiny-sd-inpaint.safetensors"), rest);
        }
        snprintf(name, sizeof name, "bad-%s.yaml", c->name);
        const char *path = write_manifest(name, text);
        sdb_manifest m;
        sdb_err err;
        int rc = sdb_manifest_load(&m, path, &err);
        if (c->check && rc == 0) rc = sdb_manifest_check(&m, &err);
        char want[1200];
        snprintf(want, sizeof want, "%s%s", c->want[0] == ':' ? path : "", c->want);
        int ok = rc == SDB_EFORMAT && has_diag(&m, want);
        CHECKF(ok, "case %s: rc %d, wanted \"%s\"", c->name, rc, want);
        if (!ok) dump(&m);
        /* the error carries the first diagnostic */
        CHECK(rc != SDB_EFORMAT || strstr(err.msg, path));
        sdb_manifest_free(&m);
    }
}

static void test_single_file_model(void)
{
    setup();
    char text[2048];
    snprintf(text, sizeof text,
        "version: 1\nmodel: %s\nmodel_config: %s\noutput_dir: out\njobs:\n"
        "  - id: a\n    prompt: p\n    image: frames/0001.png\n    mask: masks/0001.png\n",
        sdb_t_path("models/tiny-sd-inpaint.safetensors"), sdb_t_path("models/tiny-sd-inpaint"));
    const char *path = write_manifest("single.yaml", text);
    sdb_manifest m;
    sdb_err err;
    CHECK_OK(sdb_manifest_load(&m, path, &err), &err);
    CHECK_OK(sdb_manifest_check(&m, &err), &err);
    if (m.n_diags) dump(&m);
    CHECK(m.model_config && strstr(m.model_config, "tiny-sd-inpaint") && !m.tokenizer);
    sdb_manifest_free(&m);
}

/* Single files without configs (inferred), bare model names in models/ beside the manifest, the
 * tokenizer found there, and separate VAEs in the jobs' identities. */
static void test_models_folder_and_vae(void)
{
    setup();
    char cmd[8192], out[512], text[4096];
    const char *tiny = sdb_t_path("models/tiny-sd-inpaint");
    /* proj/models/: the tiny folder by a bare name, a tokenizer, and two VAEs (folder, renamed copy) */
    snprintf(cmd, sizeof cmd, "mkdir -p %s/proj/models/vae2 && ln -s %s %s/proj/models/tiny && ln -s %s/tokenizer %s/proj/models/tokenizer && "
             "ln -s %s/vae %s/proj/models/vae1 && cp %s/vae/config.json %s/vae/diffusion_pytorch_model.safetensors %s/proj/models/vae2/ && "
             "printf x >> %s/proj/models/vae2/diffusion_pytorch_model.safetensors",
             dir, tiny, dir, tiny, dir, tiny, dir, tiny, tiny, dir, dir);
    CHECK(sdb_t_shell(cmd, out, sizeof out) == 0);
    snprintf(text, sizeof text,
        "version: 1\nmodel: tiny\noutput_dir: out\ndefaults:\n  image: %s\n  mask: %s\n  prompt: p\n  vae: vae1\njobs:\n"
        "  - id: a\n  - id: b\n    vae: vae2\n  - id: c\n    vae: vae1\n", scene, mask);
    char mpath[4200];
    snprintf(mpath, sizeof mpath, "%s/proj/m.yaml", dir);
    sdb_err err;
    CHECK_OK(sdb_write_file_atomic(mpath, text, strlen(text), &err), &err);
    sdb_manifest m;
    CHECK_OK(sdb_manifest_load(&m, mpath, &err), &err);
    CHECK_OK(sdb_manifest_check(&m, &err), &err);
    if (m.n_diags) dump(&m);
    char want[4200];
    snprintf(want, sizeof want, "%s/proj/models/tiny", dir);
    CHECK(m.model && !strcmp(m.model, want));
    CHECK(m.n_jobs == 3 && m.jobs[0].vae && strstr(m.jobs[0].vae, "/models/vae1") && strstr(m.jobs[1].vae, "/models/vae2"));
    /* the VAE's weights are part of each job's identity: another VAE (here one byte more in the
     * file), or none, gives another hash */
    char h[2][65];
    for (int i = 0; i < 2 && i < m.n_jobs; i++) snprintf(h[i], 65, "%s", m.jobs[i].params_hash);
    sdb_manifest_free(&m);
    snprintf(text, sizeof text,
        "version: 1\nmodel: tiny\noutput_dir: out\ndefaults:\n  image: %s\n  mask: %s\n  prompt: p\njobs:\n"
        "  - id: a\n  - id: b\n    vae: vae1\n", scene, mask);
    CHECK_OK(sdb_write_file_atomic(mpath, text, strlen(text), &err), &err);
    CHECK_OK(sdb_manifest_load(&m, mpath, &err), &err);
    CHECK_OK(sdb_manifest_check(&m, &err), &err);
    CHECK(m.n_jobs == 2 && !m.jobs[0].vae);
    if (m.n_jobs == 2) {
        CHECK(strcmp(m.jobs[0].params_hash, h[0]) != 0); /* a: without vs with vae1 */
        CHECK(strcmp(m.jobs[1].params_hash, h[1]) != 0); /* b: vae1 vs vae2 */
    }
    sdb_manifest_free(&m);
    /* a single file, its configs inferred, its tokenizer found in models/tokenizer beside the manifest:
     * the full-size zero-filled layout is too big to write here, so the tiny file shows the tokenizer
     * search and an inference error naming the tensor, together */
    snprintf(text, sizeof text, "version: 1\nmodel: %s\noutput_dir: out\njobs:\n  - id: a\n    prompt: p\n",
             sdb_t_path("models/tiny-sd-inpaint.safetensors"));
    CHECK_OK(sdb_write_file_atomic(mpath, text, strlen(text), &err), &err);
    CHECK_OK(sdb_manifest_load(&m, mpath, &err), &err);
    snprintf(want, sizeof want, "%s/proj/models/tokenizer", dir);
    CHECKF(m.tokenizer && !strcmp(m.tokenizer, want), "tokenizer %s", m.tokenizer ? m.tokenizer : "(none)");
    CHECK(sdb_manifest_check(&m, &err) == SDB_EFORMAT && m.n_errors == 1 &&
          has_diag(&m, "tensor 'cond_stage_model.transformer.text_model.embeddings.token_embedding.weight'"));
    sdb_manifest_free(&m);
}

static void test_every_problem(void)
{
    setup();
    char text[2048];
    snprintf(text, sizeof text,
        "version: 1\nmodel: %s\noutput_dir: out\njobs:\n"
        "  - id: a\n    prompt: p\n    steps: 0\n"          /* 7 */
        "  - id: b\n    prompt: p\n    width: 12\n"         /* 10 */
        "  - id: c\n    prompt: p\n    colour: red\n"       /* 13 */
        "  - id: d\n    prompt: p\n    image: frames/0001.png\n    mask: %s\n",
        sdb_t_path("models/tiny-sd-inpaint"), sdb_t_path("refs/pipeline/inputs/smallmask_192x128.png"));
    const char *path = write_manifest("many.yaml", text);
    sdb_manifest m;
    sdb_err err;
    CHECK(sdb_manifest_load(&m, path, &err) == SDB_EFORMAT);
    CHECK(m.n_errors == 3);
    CHECK(strstr(err.msg, "and 2 more errors"));
    char w[900];
    snprintf(w, sizeof w, "%s:7:12:", path); CHECK(has_diag(&m, w));
    snprintf(w, sizeof w, "%s:10:12:", path); CHECK(has_diag(&m, w));
    snprintf(w, sizeof w, "%s:13:5:", path); CHECK(has_diag(&m, w));
    sdb_manifest_free(&m);
    snprintf(text, sizeof text,
        "version: 1\nmodel: %s\noutput_dir: out\njobs:\n"
        "  - id: d\n    prompt: p\n    image: frames/0001.png\n    mask: %s\n",
        sdb_t_path("models/tiny-sd-inpaint"), sdb_t_path("refs/pipeline/inputs/smallmask_192x128.png"));
    path = write_manifest("warn.yaml", text);
    CHECK_OK(sdb_manifest_load(&m, path, &err), &err);
    CHECK_OK(sdb_manifest_check(&m, &err), &err);
    CHECK(m.n_warnings == 1 && m.n_errors == 0);
    snprintf(w, sizeof w, "%s:8:11: warning: job 'd': mask is 192x128 but the image is 128x128", path);
    CHECK(has_diag(&m, w));
    if (!has_diag(&m, w)) dump(&m);
    sdb_manifest_free(&m);
}

static void test_seed_auto(void)
{
    /* first 8 bytes of SHA-256("frame-0001"), top bit cleared: stable across versions */
    char hex[65];
    sdb_sha256_hex("frame-0001", 10, hex);
    unsigned long long v;
    char first[17];
    memcpy(first, hex, 16);
    first[16] = '\0';
    v = strtoull(first, NULL, 16) & 0x7fffffffffffffffULL;
    CHECK(sdb_seed_from_id("frame-0001") == v);
    CHECK(sdb_seed_from_id("a") != sdb_seed_from_id("b"));
}

/* vae_tiling: defaults and a job's own value; the job identity changes only when it is not auto
 * (so every job written before the key existed keeps its identity). */
static void test_vae_tiling_key(void)
{
    setup();
    static const char *const tiling[3] = {"", "    vae_tiling: auto\n", "    vae_tiling: \"on\"\n"};
    char hashes[3][65];
    for (int k = 0; k < 3; k++) {
        char text[2048];
        snprintf(text, sizeof text, "version: 1\nmodel: %s\noutput_dir: out\ndefaults:\n  vae_tiling: off\n"
                 "jobs:\n  - id: a\n    prompt: p\n    image: %s\n%s  - id: b\n    prompt: p\n",
                 sdb_t_path("models/tiny-sd-inpaint"), scene, k ? tiling[k] : "    vae_tiling: auto\n");
        if (k == 0) { /* no key at all */
            snprintf(text, sizeof text, "version: 1\nmodel: %s\noutput_dir: out\njobs:\n  - id: a\n    prompt: p\n"
                     "    image: %s\n  - id: b\n    prompt: p\n", sdb_t_path("models/tiny-sd-inpaint"), scene);
        }
        sdb_manifest m;
        sdb_err err;
        CHECK_OK(sdb_manifest_load(&m, write_manifest("tiling.yaml", text), &err), &err);
        if (m.n_errors) { dump(&m); sdb_manifest_free(&m); continue; }
        CHECK_OK(sdb_manifest_hash_inputs(&m, &err), &err);
        int a = sdb_manifest_find(&m, "a"), b = sdb_manifest_find(&m, "b");
        CHECK(m.jobs[a].vae_tiling == (k == 2 ? SDB_VAE_TILING_ON : SDB_VAE_TILING_AUTO));
        CHECK(m.jobs[b].vae_tiling == (k == 0 ? SDB_VAE_TILING_AUTO : SDB_VAE_TILING_OFF));
        memcpy(hashes[k], m.jobs[a].params_hash, 65);
        sdb_manifest_free(&m);
    }
    CHECK(strcmp(hashes[0], hashes[1]) == 0);
    CHECK(strcmp(hashes[0], hashes[2]) != 0);
}

/* The shipped examples parse; demo.yaml's inputs are in the tree. (Their models are not checked:
 * models/demo-tiny is generated, restore.yaml's model and frames are the user's.) */
static void test_shipped_examples(void)
{
    sdb_manifest m;
    sdb_err err;
    CHECK_OK(sdb_manifest_load(&m, SDB_SOURCE_DIR "/jobs/demo.yaml", &err), &err);
    CHECK(m.n_jobs >= 5);
    CHECK(sdb_manifest_find(&m, "garden-96x128") >= 0);
    if (m.n_errors) dump(&m);
    sdb_manifest_free(&m);
    /* restore.yaml: only its glob lacks files here */
    sdb_manifest_load(&m, SDB_SOURCE_DIR "/jobs/restore.yaml", &err);
    CHECK(m.n_errors == 1 && has_diag(&m, "matches no files"));
    if (m.n_errors != 1) dump(&m);
    sdb_manifest_free(&m);
}


/* ---- issue 17: the restoration options ------------------------------------------------------- */

/* The parameters string of sdbatch-params-v1 as documented before the options existed, hashed here
 * independently: a job without options must keep exactly this identity. */
static void v1_hash(const sdb_job_spec *j, const char *img_sha, const char *mask_sha, char out[65])
{
    char s[8192];
    int n = snprintf(s, sizeof s, "sdbatch-params-v1\nid=%s\nprompt=%zu:%s\nnegative_prompt=%zu:%s\nseed=%llu\nsteps=%d\n"
                     "guidance_scale=%.17g\nstrength=%.17g\neta=%.17g\nscheduler=%s\nwidth=%d\nheight=%d\n"
                     "padding_mask_crop=%d\noutput=%s\nimage=%s\nmask=%s\n",
                     j->id, strlen(j->prompt), j->prompt, strlen(j->negative_prompt), j->negative_prompt,
                     (unsigned long long)j->seed, j->steps, j->guidance_scale, j->strength, j->eta,
                     j->scheduler ? j->scheduler : "", j->width, j->height, j->padding_mask_crop, j->output,
                     img_sha, mask_sha);
    sdb_sha256_hex(s, (size_t)n, out);
}

static void file_sha(const char *path, char out[65])
{
    char *b;
    size_t n;
    sdb_err err;
    out[0] = 0;
    if (sdb_read_file(path, &b, &n, &err)) { CHECK(0); return; }
    sdb_sha256_hex(b, n, out);
    free(b);
}

static void test_restore_options(void)
{
    setup();
    char text[4096];
    snprintf(text, sizeof text,
             "version: 1\nmodel: %s\noutput_dir: out\n"
             "defaults:\n  prompt: p\n  image: %s\n  mask: %s\n  keep_unmasked: true\n  mask_blur: 4\n  mask_dilate: 3\n"
             "  color_match: true\n  masked_content: fill\n"
             "jobs:\n"
             "  - id: plain\n    keep_unmasked: false\n    mask_blur: 0\n    mask_dilate: 0\n    color_match: false\n    masked_content: original\n"
             "  - id: crop\n    inpaint_area: masked\n    only_masked_size: 256\n    masked_content: latent_noise\n    output: crop.jpg\n    jpeg_quality: 90\n"
             "  - id: nothing\n    masked_content: latent_nothing\n    inpaint_area: whole\n"
             "  - id: old\n    prompt: q\n    image: %s\n    mask: %s\n    keep_unmasked: false\n    mask_blur: 0\n    mask_dilate: 0\n    color_match: false\n",
             sdb_t_path("models/tiny-sd-inpaint"), scene, mask, scene, mask);
    const char *path = write_manifest("restore-good.yaml", text);
    sdb_manifest m;
    sdb_err err;
    int rc = sdb_manifest_load(&m, path, &err);
    CHECKF(rc == 0, "%s", err.msg);
    if (rc) { dump(&m); sdb_manifest_free(&m); return; }
    CHECK(m.n_jobs == 4);
    const sdb_job_spec *a = &m.jobs[0], *b = &m.jobs[1], *c = &m.jobs[2], *o = &m.jobs[3];
    CHECK(!a->keep_unmasked && !a->mask_blur && !a->mask_dilate && !a->color_match && a->masked_content == SDB_MC_ORIGINAL);
    CHECK(b->keep_unmasked == 1 && b->mask_blur == 4 && b->mask_dilate == 3 && b->color_match == 1);
    CHECK(b->inpaint_area == SDB_AREA_MASKED && b->only_masked_size == 256 && b->masked_content == SDB_MC_LATENT_NOISE);
    CHECK(b->jpeg_quality == 90 && strstr(b->output, "/out/crop.jpg"));
    CHECK(c->masked_content == SDB_MC_LATENT_NOTHING && c->inpaint_area == SDB_AREA_WHOLE);
    CHECK(o->masked_content == SDB_MC_FILL);   /* from defaults */
    CHECK(b->key_pos[SDB_JK_MASK_BLUR].line == 9 && b->key_pos[SDB_JK_ONLY_MASKED_SIZE].line == 22);
    /* the shard cost counts the crop's working size (256^2), not the image's (128^2): x 50 steps x 2 (CFG) */
    CHECK(sdb_shard_job_cost(b, 512) == 256LL * 256 * 50 * 2 && sdb_shard_job_cost(a, 512) == 128LL * 128 * 50 * 2);
    CHECK_OK(sdb_manifest_hash_inputs(&m, &err), &err);
    /* a job whose options are all off except a default masked_content differs from the v1 string;
       turn that off and the identity is the documented v1 one, byte for byte */
    char simg[65], smask[65], want[65];
    file_sha(scene, simg);
    file_sha(mask, smask);
    v1_hash(o, simg, smask, want);
    CHECK(strcmp(o->params_hash, want) != 0);   /* masked_content: fill (from defaults) counts */
    sdb_manifest_free(&m);

    snprintf(text, sizeof text, "version: 1\nmodel: %s\noutput_dir: out\n"
             "jobs:\n  - id: old\n    prompt: q\n    image: %s\n    mask: %s\n    keep_unmasked: false\n    mask_blur: 0\n"
             "  - id: new\n    prompt: q\n    image: %s\n    mask: %s\n    keep_unmasked: true\n"
             "  - id: alpha\n    prompt: q\n    image: %s\n    mask: alpha\n",
             sdb_t_path("models/tiny-sd-inpaint"), scene, mask, scene, mask, scene);
    path = write_manifest("restore-ids.yaml", text);
    CHECK(sdb_manifest_load(&m, path, &err) == 0);
    CHECK_OK(sdb_manifest_hash_inputs(&m, &err), &err);
    if (m.n_jobs == 3) {
        v1_hash(&m.jobs[0], simg, smask, want);
        CHECKF(!strcmp(m.jobs[0].params_hash, want), "options at their defaults changed the identity");
        v1_hash(&m.jobs[1], simg, smask, want);
        CHECK(strcmp(m.jobs[1].params_hash, want) != 0);
        CHECK(m.jobs[2].mask_alpha == 1 && m.jobs[2].mask == NULL);
    }
    /* the check: scene_128x128.png has no alpha channel */
    CHECK(sdb_manifest_check(&m, &err) == SDB_EFORMAT);
    char at[1200];
    snprintf(at, sizeof at, "%s:19:11: job 'alpha': 'mask: alpha' but image", path);
    CHECKF(has_diag(&m, at), "wanted %s", at);
    sdb_manifest_free(&m);

    static const struct { const char *name, *body, *want; } bad[] = {
        {"keep-type", "jobs:\n  - id: a\n    prompt: p\n    keep_unmasked: 1\n", ":7:20: 'keep_unmasked' must be true or false, got an integer"},
        {"blur-range", "jobs:\n  - id: a\n    prompt: p\n    mask_blur: -2\n", ":7:16: 'mask_blur' is out of range: -2"},
        {"dilate-float", "jobs:\n  - id: a\n    prompt: p\n    mask_dilate: 1.5\n", ":7:18: 'mask_dilate' must be a whole number, got 1.5"},
        {"content", "defaults:\n  masked_content: noise\njobs:\n  - id: a\n    prompt: p\n", ":5:19: unknown masked_content 'noise'"},
        {"area", "jobs:\n  - id: a\n    prompt: p\n    inpaint_area: crop\n", ":7:19: unknown inpaint_area 'crop'"},
        {"oms-multiple", "jobs:\n  - id: a\n    prompt: p\n    only_masked_size: 300\n", ":7:23: 'only_masked_size' must be a multiple of 8"},
        {"quality", "jobs:\n  - id: a\n    prompt: p\n    jpeg_quality: 0\n", ":7:19: 'jpeg_quality' is out of range: 0"},
        {"keep-no-mask", "jobs:\n  - id: a\n    prompt: p\n    keep_unmasked: true\n", ":7:20: 'keep_unmasked' needs a mask"},
        {"alpha-no-image", "jobs:\n  - id: a\n    prompt: p\n    mask: alpha\n", ":7:11: job 'a': 'mask: alpha' needs an image"},
        {"oms-whole", "jobs:\n  - id: a\n    prompt: p\n    image: i.png\n    mask: m.png\n    only_masked_size: 512\n",
         ":9:23: 'only_masked_size' is the working size of the crop"},
        {"whole-crop", "jobs:\n  - id: a\n    prompt: p\n    image: i.png\n    mask: m.png\n    inpaint_area: whole\n    padding_mask_crop: 8\n",
         ":10:24: 'padding_mask_crop' crops around the mask: it contradicts 'inpaint_area: whole' (line 9)"},
        {"oms-width", "jobs:\n  - id: a\n    prompt: p\n    image: i.png\n    mask: m.png\n    inpaint_area: masked\n    only_masked_size: 512\n    width: 512\n",
         ":10:23: 'only_masked_size' and 'width'/'height' both set the working size"},
    };
    char header[1024];
    snprintf(header, sizeof header, "version: 1\nmodel: %s\noutput_dir: out\n", sdb_t_path("models/tiny-sd-inpaint"));
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char name[128];
        snprintf(text, sizeof text, "%s%s", header, bad[i].body);
        snprintf(name, sizeof name, "restore-bad-%s.yaml", bad[i].name);
        path = write_manifest(name, text);
        rc = sdb_manifest_load(&m, path, &err);
        char w[1200];
        snprintf(w, sizeof w, "%s%s", path, bad[i].want);
        int ok = rc == SDB_EFORMAT && has_diag(&m, w);
        CHECKF(ok, "case %s: rc %d, wanted \"%s\"", bad[i].name, rc, w);
        if (!ok) dump(&m);
        sdb_manifest_free(&m);
    }
}

int main(void)
{
    RUN(test_shipped_examples);
    RUN(test_vae_tiling_key);
    RUN(test_good);
    RUN(test_bad);
    RUN(test_single_file_model);
    RUN(test_models_folder_and_vae);
    RUN(test_every_problem);
    RUN(test_seed_auto);
    RUN(test_restore_options);
    return sdb_t_done();
}
