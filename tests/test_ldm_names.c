/*
 * test_ldm_names.c — the diffusers -> LDM name maps (ldm_names.h):
 *  - every U-Net / VAE tensor of the real SD 1.5 inpainting model (sd15-inpaint-layout/tensors.json)
 *    maps to a name of tensors-ldm.json with the same element count, and the map is a bijection
 *    onto tensors-ldm.json's model.diffusion_model.* / first_stage_model.* entries;
 *  - the same for the tiny model's actual files (diffusers folder -> tiny-sd-inpaint.safetensors);
 *  - the U-Net loaded from the single file gives output identical to the diffusers folder;
 *  - conv-shaped linears, non-standard layouts (layers_per_block 1, 3 blocks), junk names.
 */
#include "harness.h"
#include "sdb/arena.h"
#include "sdb/config.h"
#include "sdb/ldm_names.h"
#include "sdb/safetensors.h"
#include "sdb/unet.h"
#include "sdb/weights.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

typedef int (*mapfn)(void *ctx, const char *name, char *out, size_t outsz);

/* a name -> numel set */
typedef struct {
    int n;
    char **names;
    long long *numel;
    int *hit;
} nset;

static void nset_add(nset *s, const char *name, long long numel)
{
    s->names = realloc(s->names, sizeof(char *) * (s->n + 1));
    s->numel = realloc(s->numel, sizeof(long long) * (s->n + 1));
    s->hit = realloc(s->hit, sizeof(int) * (s->n + 1));
    s->names[s->n] = strdup(name);
    s->numel[s->n] = numel;
    s->hit[s->n] = 0;
    s->n++;
}
static int nset_find(const nset *s, const char *name)
{
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->names[i], name)) return i;
    return -1;
}
static void nset_free(nset *s)
{
    for (int i = 0; i < s->n; i++) free(s->names[i]);
    free(s->names);
    free(s->numel);
    free(s->hit);
    memset(s, 0, sizeof *s);
}

static long long json_numel(json_t *shape)
{
    long long n = 1;
    size_t i;
    json_t *d;
    json_array_foreach(shape, i, d) n *= json_integer_value(d);
    return n;
}

/* maps every name of src through fn (+ prefix); checks presence in dst with the same numel and
 * that every dst entry with the prefix is hit exactly once */
static void check_bijection(const char *what, const nset *src, nset *dst, const char *prefix, mapfn fn, void *ctx)
{
    int bad = 0, dup = 0;
    size_t pl = strlen(prefix);
    for (int i = 0; i < src->n; i++) {
        char out[512];
        memcpy(out, prefix, pl);
        if (fn(ctx, src->names[i], out + pl, sizeof out - pl) != 0) {
            if (bad++ < 5) fprintf(stderr, "  %s: %s has no LDM name\n", what, src->names[i]);
            continue;
        }
        int j = nset_find(dst, out);
        if (j < 0 || dst->numel[j] != src->numel[i]) {
            if (bad++ < 5) fprintf(stderr, "  %s: %s -> %s %s\n", what, src->names[i], out,
                                   j < 0 ? "not in the LDM list" : "has another element count");
            continue;
        }
        if (dst->hit[j]++ && dup++ < 5) fprintf(stderr, "  %s: %s hit twice\n", what, out);
    }
    int missed = 0;
    for (int j = 0; j < dst->n; j++)
        if (!strncmp(dst->names[j], prefix, pl) && !dst->hit[j] && missed++ < 5)
            fprintf(stderr, "  %s: LDM tensor %s is not the image of any diffusers name\n", what, dst->names[j]);
    CHECKF(bad == 0, "%s: %d names unmapped or mismatched", what, bad);
    CHECKF(dup == 0, "%s: %d LDM names hit twice", what, dup);
    CHECKF(missed == 0, "%s: %d LDM names not covered", what, missed);
    fprintf(stderr, "  %s: %d names mapped\n", what, src->n);
}

static void reset_hits(nset *s) { memset(s->hit, 0, sizeof(int) * s->n); }

static void test_sd15_lists(void)
{
    if (!sdb_t_data()) return;
    sdb_err err;
    sdb_err_clear(&err);
    json_error_t je;
    json_t *dj = json_load_file(sdb_t_path("models/sd15-inpaint-layout/tensors.json"), 0, &je);
    json_t *lj = json_load_file(sdb_t_path("models/sd15-inpaint-layout/tensors-ldm.json"), 0, &je);
    CHECK(dj && lj);
    if (!dj || !lj) return;
    nset ldm = {0};
    const char *k;
    json_t *v;
    json_object_foreach(json_object_get(lj, "tensors"), k, v) nset_add(&ldm, k, json_numel(v));

    sdb_config ucfg;
    CHECK_OK(sdb_config_load(&ucfg, sdb_t_path("models/sd15-inpaint-layout/unet/config.json"), &err), &err);
    sdb_ldm_unet_layout ul;
    CHECK_OK(sdb_ldm_unet_layout_from_config(&ul, &ucfg, &err), &err);
    sdb_config_free(&ucfg);
    nset un = {0}, vn = {0};
    json_t *comps = json_object_get(dj, "components");
    json_object_foreach(json_object_get(comps, "unet"), k, v) nset_add(&un, k, json_numel(v));
    json_object_foreach(json_object_get(comps, "vae"), k, v) nset_add(&vn, k, json_numel(v));
    CHECK(un.n == 686 && vn.n == 248);
    check_bijection("sd15 unet", &un, &ldm, SDB_LDM_UNET_PREFIX, sdb_ldm_unet_name_ctx, &ul);
    reset_hits(&ldm);
    sdb_ldm_vae_layout vl = {4};
    check_bijection("sd15 vae", &vn, &ldm, SDB_LDM_VAE_PREFIX, sdb_ldm_vae_name_ctx, &vl);
    /* the context-free standard-layout maps agree */
    int diff = 0;
    for (int i = 0; i < un.n; i++) {
        char a[512], b[512];
        int ra = sdb_ldm_unet_name(un.names[i], a, sizeof a), rb = sdb_ldm_unet_name_ctx(&ul, un.names[i], b, sizeof b);
        diff += ra != rb || (ra == 0 && strcmp(a, b));
    }
    for (int i = 0; i < vn.n; i++) {
        char a[512], b[512];
        int ra = sdb_ldm_vae_name(vn.names[i], a, sizeof a), rb = sdb_ldm_vae_name_ctx(&vl, vn.names[i], b, sizeof b);
        diff += ra != rb || (ra == 0 && strcmp(a, b));
    }
    CHECK(diff == 0);
    /* conv-shaped linears: exactly the 8 VAE mid-block attention projections, [C,C] vs [C,C,1,1] */
    int nconv = 0;
    for (int i = 0; i < vn.n; i++) {
        if (!sdb_ldm_is_conv_linear(vn.names[i])) continue;
        nconv++;
        char out[512] = SDB_LDM_VAE_PREFIX;
        sdb_ldm_vae_name(vn.names[i], out + strlen(out), sizeof out - strlen(out));
        json_t *ds = json_object_get(json_object_get(comps, "vae"), vn.names[i]);
        json_t *ls = json_object_get(json_object_get(lj, "tensors"), out);
        CHECKF(json_array_size(ds) == 2 && json_array_size(ls) == 4, "%s", vn.names[i]);
    }
    CHECK(nconv == 8);
    nset_free(&un);
    nset_free(&vn);
    nset_free(&ldm);
    json_decref(dj);
    json_decref(lj);
}

static void add_file_names(nset *s, const char *path, const char *prefix)
{
    sdb_err err;
    sdb_err_clear(&err);
    sdb_st *st = NULL;
    CHECK_OK(sdb_st_open(&st, path, &err), &err);
    if (!st) return;
    size_t pl = strlen(prefix);
    for (int i = 0; i < st->n; i++)
        if (!strncmp(st->tensors[i].name, prefix, pl)) nset_add(s, st->tensors[i].name, st->tensors[i].numel);
    sdb_st_close(st);
}

static void test_tiny_files(void)
{
    if (!sdb_t_data()) return;
    sdb_err err;
    sdb_err_clear(&err);
    nset ldm = {0}, un = {0}, vn = {0};
    add_file_names(&ldm, sdb_t_path("models/tiny-sd-inpaint.safetensors"), "");
    add_file_names(&un, sdb_t_path("models/tiny-sd-inpaint/unet/diffusion_pytorch_model.safetensors"), "");
    add_file_names(&vn, sdb_t_path("models/tiny-sd-inpaint/vae/diffusion_pytorch_model.safetensors"), "");
    CHECK(ldm.n == 980 && un.n > 0 && vn.n > 0);
    sdb_config ucfg;
    CHECK_OK(sdb_config_load(&ucfg, sdb_t_path("models/tiny-sd-inpaint/unet/config.json"), &err), &err);
    sdb_ldm_unet_layout ul;
    CHECK_OK(sdb_ldm_unet_layout_from_config(&ul, &ucfg, &err), &err);
    sdb_config_free(&ucfg);
    check_bijection("tiny unet", &un, &ldm, SDB_LDM_UNET_PREFIX, sdb_ldm_unet_name_ctx, &ul);
    sdb_ldm_vae_layout vl = {4};
    check_bijection("tiny vae", &vn, &ldm, SDB_LDM_VAE_PREFIX, sdb_ldm_vae_name_ctx, &vl);
    nset_free(&ldm);
    nset_free(&un);
    nset_free(&vn);
}

/* layouts other than SD's: the indices follow layers_per_block and the block types */
static void test_other_layouts(void)
{
    sdb_ldm_unet_layout l;
    memset(&l, 0, sizeof l);
    l.n_blocks = 3;
    l.layers_per_block = 1;
    l.up_has_attn[0] = 0;
    l.up_has_attn[1] = l.up_has_attn[2] = 1;
    static const char *cases[][2] = {
        {"down_blocks.0.resnets.0.conv1.weight", "input_blocks.1.0.in_layers.2.weight"},
        {"down_blocks.0.downsamplers.0.conv.bias", "input_blocks.2.0.op.bias"},
        {"down_blocks.1.attentions.0.proj_in.weight", "input_blocks.3.1.proj_in.weight"},
        {"down_blocks.2.resnets.0.conv_shortcut.weight", "input_blocks.5.0.skip_connection.weight"},
        {"up_blocks.0.resnets.1.time_emb_proj.weight", "output_blocks.1.0.emb_layers.1.weight"},
        {"up_blocks.0.upsamplers.0.conv.weight", "output_blocks.1.1.conv.weight"},
        {"up_blocks.1.upsamplers.0.conv.weight", "output_blocks.3.2.conv.weight"},
        {"up_blocks.2.attentions.1.transformer_blocks.0.ff.net.2.bias", "output_blocks.5.1.transformer_blocks.0.ff.net.2.bias"},
        {"mid_block.resnets.1.norm2.weight", "middle_block.2.out_layers.0.weight"},
        {"mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight", "middle_block.1.transformer_blocks.0.attn2.to_k.weight"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[256];
        int rc = sdb_ldm_unet_name_ctx(&l, cases[i][0], out, sizeof out);
        CHECKF(rc == 0 && !strcmp(out, cases[i][1]), "%s -> %s (want %s)", cases[i][0], rc ? "(none)" : out, cases[i][1]);
    }
    static const char *junk[] = {"down_blocks.2.downsamplers.0.conv.weight" /* last block: none */,
        "up_blocks.0.attentions.0.norm.weight" /* UpBlock2D */, "down_blocks.0.resnets.1.conv1.weight",
        "up_blocks.3.resnets.0.conv1.weight", "foo.weight", "conv_in.weight.x", "down_blocks.x.resnets.0.conv1.weight",
        "mid_block.resnets.2.conv1.weight", "down_blocks.0.resnets.0.conv9.weight", ""};
    for (size_t i = 0; i < sizeof junk / sizeof junk[0]; i++) {
        char out[256];
        CHECKF(sdb_ldm_unet_name_ctx(&l, junk[i], out, sizeof out) == -1, "'%s' should have no LDM name", junk[i]);
    }
    /* VAE with 3 blocks: decoder up blocks reversed over 3 */
    sdb_ldm_vae_layout v3 = {3};
    char out[256];
    CHECK(sdb_ldm_vae_name_ctx(&v3, "decoder.up_blocks.0.resnets.2.conv_shortcut.bias", out, sizeof out) == 0 &&
          !strcmp(out, "decoder.up.2.block.2.nin_shortcut.bias"));
    CHECK(sdb_ldm_vae_name_ctx(&v3, "decoder.up_blocks.1.upsamplers.0.conv.weight", out, sizeof out) == 0 &&
          !strcmp(out, "decoder.up.1.upsample.conv.weight"));
    CHECK(sdb_ldm_vae_name_ctx(&v3, "decoder.up_blocks.2.upsamplers.0.conv.weight", out, sizeof out) == -1);
    CHECK(sdb_ldm_vae_name_ctx(&v3, "encoder.mid_block.attentions.0.to_out.0.bias", out, sizeof out) == 0 &&
          !strcmp(out, "encoder.mid.attn_1.proj_out.bias"));
    /* too small an output buffer is an error, not a truncated name */
    CHECK(sdb_ldm_unet_name_ctx(&l, "mid_block.resnets.1.norm2.weight", out, 10) == -1);
}

/* the U-Net from the single file == from the diffusers folder, bit for bit */
static void test_unet_single_file(void)
{
    if (!sdb_t_data()) return;
    sdb_err err;
    sdb_err_clear(&err);
    sdb_arena arena;
    CHECK_OK(sdb_arena_init(&arena, (size_t)1 << 30, &err), &err);
    sdb_weights wf, ws;
    sdb_st *st = NULL, *refs = NULL;
    CHECK_OK(sdb_weights_open(&wf, sdb_t_path("models/tiny-sd-inpaint/unet/diffusion_pytorch_model.safetensors"), "unet", &err), &err);
    CHECK_OK(sdb_st_open(&st, sdb_t_path("models/tiny-sd-inpaint.safetensors"), &err), &err);
    CHECK_OK(sdb_st_open(&refs, sdb_t_path("refs/unet.safetensors"), &err), &err);
    if (!st || !refs) return;
    sdb_config cfg;
    CHECK_OK(sdb_config_load(&cfg, sdb_t_path("models/tiny-sd-inpaint/unet/config.json"), &err), &err);
    CHECK_OK(sdb_ldm_unet_weights(&ws, st, &cfg, &err), &err);
    sdb_unet *a = NULL, *b = NULL;
    CHECK_OK(sdb_unet_load_config(&a, &cfg, &wf, &err), &err);
    CHECK_OK(sdb_unet_load_config(&b, &cfg, &ws, &err), &err);
    if (a && b) {
        const sdb_st_tensor *s = sdb_st_find(refs, "inpaint_tvec_981_1/sample");
        const sdb_st_tensor *e = sdb_st_find(refs, "encoder_hidden_states");
        double ts[2] = {981, 1};
        size_t n = 2 * 4 * 16 * 16;
        float *oa = malloc(n * sizeof(float)), *ob = malloc(n * sizeof(float));
        CHECK_OK(sdb_unet_forward(a, (const float *)(const void *)s->data, 2, 16, 16, ts,
                                  (const float *)(const void *)e->data, 77, oa, &arena, &err), &err);
        CHECK_OK(sdb_unet_forward(b, (const float *)(const void *)s->data, 2, 16, 16, ts,
                                  (const float *)(const void *)e->data, 77, ob, &arena, &err), &err);
        CHECK(memcmp(oa, ob, n * sizeof(float)) == 0);
        const float *ref = (const float *)(const void *)sdb_st_find(refs, "inpaint_tvec_981_1/out")->data;
        CHECK(sdb_t_close(ob, ref, n, 1e-4, 1e-4, "single-file unet"));
        free(oa);
        free(ob);
    }
    sdb_unet_free(a);
    sdb_unet_free(b);
    sdb_config_free(&cfg);
    sdb_weights_free(&wf);
    sdb_weights_free(&ws);
    sdb_st_close(st);
    sdb_st_close(refs);
    sdb_arena_free(&arena);
}

int main(void)
{
    RUN(test_sd15_lists);
    RUN(test_tiny_files);
    RUN(test_other_layouts);
    RUN(test_unet_single_file);
    return sdb_t_done();
}
