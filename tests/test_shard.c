/*
 * test_shard.c — the job -> shard assignment and the Slurm array mapping (shard.h):
 *   - `--shard I/N` / `auto` parsing, SDB_SHARDS, SLURM_CPUS_PER_TASK thread default;
 *   - arrays 0-15, 1-16 and 0-30:2 all map onto shards 0..15 of 16 (directly and through the env);
 *   - stability: appending jobs (to a real manifest, and to random cost lists) never moves a job;
 *   - balance: a mixed-size manifest (sizes from 96x128 to 768x512, 8..50 steps, img2img strengths,
 *     guidance on/off) splits within 10% of the mean cost per shard, for N = 2..8; the greedy's
 *     bound max-min <= c_max holds on random cost lists; an appended tail is spread within 2 c_max;
 *   - the cost: sizes come from PNG and JPEG headers exactly as the pipeline rounds them.
 */
#include "harness.h"
#include "sdb/fsutil.h"
#include "sdb/manifest.h"
#include "sdb/shard.h"
#include "sdb/threads.h"

#include <stdlib.h>
#include <string.h>

static void clear_env(void)
{
    unsetenv("SLURM_ARRAY_TASK_ID");
    unsetenv("SLURM_ARRAY_TASK_MIN");
    unsetenv("SLURM_ARRAY_TASK_MAX");
    unsetenv("SLURM_ARRAY_TASK_STEP");
    unsetenv("SLURM_ARRAY_TASK_COUNT");
    unsetenv("SDB_SHARDS");
    unsetenv("SLURM_CPUS_PER_TASK");
}

static void parse(void)
{
    clear_env();
    sdb_err err;
    int i, n;
    CHECK_OK(sdb_shard_parse("0/4", &i, &n, &err), &err);
    CHECK(i == 0 && n == 4);
    CHECK_OK(sdb_shard_parse("3/4", &i, &n, &err), &err);
    CHECK(i == 3 && n == 4);
    CHECK_OK(sdb_shard_parse("0/1", &i, &n, &err), &err);
    CHECK(i == 0 && n == 1);
    static const char *const bad[] = {"4/4", "-1/4", "1/0", "a/4", "1/b", "1", "/4", "1/", "", "1/4x", "auto5", NULL};
    for (int k = 0; bad[k]; k++) {
        sdb_err_clear(&err);
        CHECKF(sdb_shard_parse(bad[k], &i, &n, &err) != 0, "'%s' accepted", bad[k]);
        CHECKF(err.msg[0] != '\0', "'%s': no message", bad[k]);
    }
    /* auto outside Slurm: not sharded */
    CHECK_OK(sdb_shard_parse("auto", &i, &n, &err), &err);
    CHECK(n == 0);
}

static void set_array(long id, long min, long max, long step, long count)
{
    char b[32];
    snprintf(b, sizeof b, "%ld", id); setenv("SLURM_ARRAY_TASK_ID", b, 1);
    snprintf(b, sizeof b, "%ld", min); setenv("SLURM_ARRAY_TASK_MIN", b, 1);
    snprintf(b, sizeof b, "%ld", max); setenv("SLURM_ARRAY_TASK_MAX", b, 1);
    snprintf(b, sizeof b, "%ld", step); setenv("SLURM_ARRAY_TASK_STEP", b, 1);
    snprintf(b, sizeof b, "%ld", count); setenv("SLURM_ARRAY_TASK_COUNT", b, 1);
}

/* --array=MIN-MAX:STEP with 16 tasks: every task gets a distinct shard, all of 0..15. */
static void check_array(long min, long step)
{
    long count = 16, max = min + (count - 1) * step;
    int seen[16] = {0};
    sdb_err err;
    for (long id = min; id <= max; id += step) {
        int i = -1, n = -1;
        CHECK_OK(sdb_shard_from_array(id, min, max, step, count, &i, &n, &err), &err);
        CHECKF(n == 16 && i == (id - min) / step, "array %ld-%ld:%ld id %ld -> %d/%d", min, max, step, id, i, n);
        int ie = -1, ne = -1;
        set_array(id, min, max, step, count);
        CHECK_OK(sdb_shard_parse("auto", &ie, &ne, &err), &err);
        CHECKF(ie == i && ne == n, "env: id %ld -> %d/%d, direct %d/%d", id, ie, ne, i, n);
        if (i >= 0 && i < 16) seen[i]++;
    }
    for (int k = 0; k < 16; k++) CHECKF(seen[k] == 1, "array %ld-%ld:%ld: shard %d taken %d times", min, max, step, k, seen[k]);
    clear_env();
}

static void array_mapping(void)
{
    check_array(0, 1);    /* --array=0-15 */
    check_array(1, 1);    /* --array=1-16 */
    check_array(0, 2);    /* --array=0-30:2 */
    check_array(5, 3);    /* --array=5-50:3 */
    sdb_err err;
    int i, n;
    CHECK(sdb_shard_from_array(3, 0, 30, 2, 16, &i, &n, &err) != 0);    /* off the 0-30:2 grid */
    CHECK(sdb_shard_from_array(0, 1, 16, 1, 16, &i, &n, &err) != 0);    /* below MIN */
    CHECK(sdb_shard_from_array(32, 0, -1, 2, 16, &i, &n, &err) != 0);   /* beyond the count */
    /* --array=1,3 as Slurm 22.05 describes it (COUNT 2, MIN 1, MAX 3, STEP 1): refused for both
       tasks, with a pointer to SDB_SHARDS (task 1 alone would otherwise look like shard 0 of 2) */
    CHECK(sdb_shard_from_array(1, 1, 3, 1, 2, &i, &n, &err) != 0);
    CHECK(strstr(err.msg, "SDB_SHARDS") != NULL);
    CHECK(sdb_shard_from_array(3, 1, 3, 1, 2, &i, &n, &err) != 0);
    set_array(1, 1, 3, 1, 2);
    CHECK(sdb_shard_from_env(&i, &n, &err) != 0);
    clear_env();
    /* STEP unset (older Slurm): 1 */
    set_array(7, 1, 16, 1, 16);
    unsetenv("SLURM_ARRAY_TASK_STEP");
    CHECK_OK(sdb_shard_from_env(&i, &n, &err), &err);
    CHECK(i == 6 && n == 16);
    /* COUNT missing: an error, not a silent 1 */
    unsetenv("SLURM_ARRAY_TASK_COUNT");
    CHECK(sdb_shard_from_env(&i, &n, &err) != 0);
    /* resubmitting a subset: --array=1,3 with SDB_SHARDS=4 -> the task id is the shard */
    clear_env();
    set_array(3, 1, 3, 1, 2);
    setenv("SDB_SHARDS", "4", 1);
    CHECK_OK(sdb_shard_from_env(&i, &n, &err), &err);
    CHECK(i == 3 && n == 4);
    setenv("SLURM_ARRAY_TASK_ID", "4", 1);
    CHECK(sdb_shard_from_env(&i, &n, &err) != 0);
    setenv("SDB_SHARDS", "x", 1);
    CHECK(sdb_shard_from_env(&i, &n, &err) != 0);
    clear_env();
}

static void threads_default(void)
{
    clear_env();
    CHECK(sdb_shard_default_threads() == sdb_threads_available());
    setenv("SLURM_CPUS_PER_TASK", "3", 1);
    CHECK(sdb_shard_default_threads() == 3);
    setenv("SLURM_CPUS_PER_TASK", "junk", 1);
    CHECK(sdb_shard_default_threads() == sdb_threads_available());
    clear_env();
}

/* ---- manifests ------------------------------------------------------------------------------- */

static char dir[512];

/* A mixed-size manifest of n jobs (ids j0000..): explicit sizes, inputs' own sizes (PNG and
 * JPEG), txt2img, img2img strengths, steps 8..50, guidance on/off. Deterministic in n: the
 * first k jobs of mixed(n) are those of mixed(k). */
static char *mixed_text(int n)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    fprintf(f, "version: 1\nmodel: %s\noutput_dir: out\njobs:\n", sdb_t_path("models/tiny-sd-inpaint"));
    static const int sizes[][2] = {{0, 0}, {256, 256}, {512, 512}, {768, 512}, {0, 0}, {384, 256}, {0, 0}, {640, 448}};
    static const int steps[] = {20, 30, 8, 50, 25, 12, 40, 16, 35};
    const char *png = sdb_t_path("refs/pipeline/inputs/scene_192x128.png");
    char jpg[700], street[700];
    snprintf(jpg, sizeof jpg, "%s/tests/data/garden-96x128.jpg", SDB_SOURCE_DIR);
    snprintf(street, sizeof street, "%s/tests/data/street-136x96.png", SDB_SOURCE_DIR);
    uint32_t r = 12345;
    for (int k = 0; k < n; k++) {
        r = r * 1103515245u + 12345u;
        int kind = (int)((r >> 16) % 8);
        int st = steps[(r >> 8) % 9];
        fprintf(f, "  - id: j%04d\n    prompt: \"p%d\"\n    steps: %d\n", k, k, st);
        if (kind == 6) fprintf(f, "    guidance_scale: 1.0\n");
        if (sizes[kind][0]) fprintf(f, "    width: %d\n    height: %d\n", sizes[kind][0], sizes[kind][1]);
        else if (kind == 0) fprintf(f, "    image: %s\n", png);
        else if (kind == 4) fprintf(f, "    image: %s\n    strength: 0.5\n", jpg);
        else fprintf(f, "    image: %s\n", street);
        if (kind == 5) fprintf(f, "    image: %s\n    strength: 0.75\n", png);
    }
    fclose(f);
    return text;
}

static int load_text(sdb_manifest *m, const char *name, const char *text)
{
    if (!dir[0]) snprintf(dir, sizeof dir, "%s", sdb_t_tmpdir());
    char path[800];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    sdb_err err;
    int rc = sdb_manifest_parse(m, text, strlen(text), path, &err);
    if (rc) { sdb_manifest_print_diags(m, stderr); CHECKF(0, "manifest: %s", err.msg); }
    return rc;
}

static void costs(void)
{
    char i192[700], ijpg[700], i136[700];
    snprintf(i192, sizeof i192, "%s", sdb_t_path("refs/pipeline/inputs/scene_192x128.png"));
    snprintf(ijpg, sizeof ijpg, "%s/tests/data/garden-96x128.jpg", SDB_SOURCE_DIR);
    snprintf(i136, sizeof i136, "%s/tests/data/street-136x96.png", SDB_SOURCE_DIR);
    char *text = NULL;
    if (asprintf(&text,
        "version: 1\nmodel: %s\noutput_dir: out\njobs:\n"
        "  - {id: a, prompt: x, steps: 10, image: %s}\n"                        /* 192x128 png */
        "  - {id: b, prompt: x, steps: 10, image: %s}\n"                        /* 96x128 jpeg */
        "  - {id: c, prompt: x, steps: 10, image: %s}\n"                        /* 136x96 */
        "  - {id: d, prompt: x, steps: 10, width: 256, height: 64}\n"           /* txt2img, sized */
        "  - {id: e, prompt: x, steps: 10}\n"                                   /* txt2img, model's size */
        "  - {id: f, prompt: x, steps: 10, image: %s, strength: 0.55}\n"        /* 5 steps run */
        "  - {id: g, prompt: x, steps: 10, image: %s, guidance_scale: 1.0}\n"   /* no CFG */
        "  - {id: h, prompt: x, steps: 10, image: /nonexistent/x.png}\n",      /* unreadable: model size */
        sdb_t_path("models/tiny-sd-inpaint"), i192, ijpg, i136, i192, i192) < 0) { CHECK(0); return; }
    sdb_manifest m;
    if (load_text(&m, "costs.yaml", text) == 0) {
        int side = sdb_shard_model_side(m.model);
        CHECKF(side == 128, "tiny model side %d", side);
        int64_t want[] = {192LL * 128 * 10 * 2, 96LL * 128 * 10 * 2, 136LL * 96 * 10 * 2, 256LL * 64 * 10 * 2,
                          128LL * 128 * 10 * 2, 192LL * 128 * 5 * 2, 192LL * 128 * 10, 128LL * 128 * 10 * 2};
        for (int k = 0; k < m.n_jobs && k < 8; k++) {
            int64_t c = sdb_shard_job_cost(&m.jobs[k], side);
            CHECKF(c == want[k], "job %s: cost %lld, want %lld", m.jobs[k].id, (long long)c, (long long)want[k]);
        }
    }
    sdb_manifest_free(&m);
    free(text);
    CHECK(sdb_shard_model_side("/nonexistent") == 512);
}

static void stable_when_appended(void)
{
    /* a real manifest: 60 jobs, then the same with 37 appended, for several N */
    char *t1 = mixed_text(60), *t2 = mixed_text(97);
    sdb_manifest a, b;
    int ok1 = load_text(&a, "a.yaml", t1) == 0, ok2 = load_text(&b, "b.yaml", t2) == 0;
    if (ok1 && ok2) {
        CHECK(a.n_jobs == 60 && b.n_jobs == 97);
        for (int n = 1; n <= 16; n++) {
            int sa[60], sb[97];
            sdb_err err;
            CHECK_OK(sdb_shard_assign(&a, n, sa, NULL, &err), &err);
            CHECK_OK(sdb_shard_assign(&b, n, sb, NULL, &err), &err);
            int moved = 0;
            for (int k = 0; k < 60; k++) {
                CHECK(!strcmp(a.jobs[k].id, b.jobs[k].id));
                if (sa[k] != sb[k]) moved++;
                CHECK(sa[k] >= 0 && sa[k] < n);
            }
            CHECKF(moved == 0, "N=%d: %d job(s) moved when 37 were appended", n, moved);
            /* and it is deterministic */
            int sb2[97];
            CHECK_OK(sdb_shard_assign(&b, n, sb2, NULL, &err), &err);
            CHECK(!memcmp(sb, sb2, sizeof sb));
        }
    }
    sdb_manifest_free(&a);
    sdb_manifest_free(&b);
    free(t1);
    free(t2);

    /* random cost lists, appended one job at a time */
    uint64_t r = 99;
    for (int trial = 0; trial < 50; trial++) {
        int n = 1 + trial % 13, len = 200;
        int64_t c[200];
        int full[200], part[200];
        for (int k = 0; k < len; k++) { r = r * 6364136223846793005ULL + 1442695040888963407ULL; c[k] = 1 + (int64_t)((r >> 33) % 100000); }
        sdb_shard_assign_costs(c, len, n, full, NULL);
        for (int cut = 1; cut < len; cut += 17) {
            sdb_shard_assign_costs(c, cut, n, part, NULL);
            CHECKF(!memcmp(part, full, sizeof(int) * (size_t)cut), "trial %d: prefix %d moved", trial, cut);
        }
    }
}

static void balance(void)
{
    char *t = mixed_text(240);
    sdb_manifest m;
    if (load_text(&m, "mixed.yaml", t) == 0) {
        int64_t c[240], cmin = -1, cmax = 0, total = 0;
        int sh[240];
        sdb_err err;
        CHECK_OK(sdb_shard_assign(&m, 4, sh, c, &err), &err);
        for (int k = 0; k < m.n_jobs; k++) {
            total += c[k];
            if (c[k] > cmax) cmax = c[k];
            if (cmin < 0 || c[k] < cmin) cmin = c[k];
        }
        fprintf(stderr, "    240 jobs, costs %lld .. %lld (x%.0f), mean %.0f\n", (long long)cmin, (long long)cmax,
                (double)cmax / (double)cmin, (double)total / m.n_jobs);
        CHECKF(cmax >= 20 * cmin, "the manifest is not mixed enough to test anything");
        for (int n = 2; n <= 8; n++) {
            CHECK_OK(sdb_shard_assign(&m, n, sh, c, &err), &err);
            int64_t load[8] = {0}, rr[8] = {0};
            int cnt[8] = {0};
            for (int k = 0; k < m.n_jobs; k++) { load[sh[k]] += c[k]; cnt[sh[k]]++; rr[k % n] += c[k]; }
            double mean = (double)total / n, hi = 0, lo = 1e300, rhi = 0;
            for (int s = 0; s < n; s++) {
                if (load[s] > hi) hi = (double)load[s];
                if (load[s] < lo) lo = (double)load[s];
                if (rr[s] > rhi) rhi = (double)rr[s];
            }
            fprintf(stderr, "    N=%d: shard cost max %+.1f%% min %+.1f%% of the mean (round robin by count: max %+.1f%%); jobs per shard",
                    n, 100 * (hi / mean - 1), 100 * (lo / mean - 1), 100 * (rhi / mean - 1));
            for (int s = 0; s < n; s++) fprintf(stderr, " %d", cnt[s]);
            fprintf(stderr, "\n");
            CHECKF(hi <= 1.10 * mean && lo >= 0.90 * mean, "N=%d: shard costs %.0f..%.0f, mean %.0f", n, lo, hi, mean);
            CHECKF(hi - lo <= (double)cmax, "N=%d: spread %.0f > c_max %lld", n, hi - lo, (long long)cmax);
        }
    }
    sdb_manifest_free(&m);
    free(t);

    /* the bound on random lists, and an appended tail spread within 2 c_max */
    uint64_t r = 7;
    for (int trial = 0; trial < 200; trial++) {
        int n = 1 + trial % 16, len = 50 + trial * 3, cut = len / 3;
        int64_t c[700], cmax = 0, lf[16], lp[16];
        int sh[700];
        for (int k = 0; k < len; k++) {
            r = r * 6364136223846793005ULL + 1442695040888963407ULL;
            c[k] = 1 + (int64_t)((r >> 33) % (trial % 2 ? 1000 : 1000000));
            if (c[k] > cmax) cmax = c[k];
        }
        sdb_shard_assign_costs(c, len, n, sh, lf);
        sdb_shard_assign_costs(c, cut, n, sh, lp);
        int64_t hi = 0, lo = INT64_MAX, thi = INT64_MIN, tlo = INT64_MAX;
        for (int s = 0; s < n; s++) {
            if (lf[s] > hi) hi = lf[s];
            if (lf[s] < lo) lo = lf[s];
            int64_t tail = lf[s] - lp[s];
            if (tail > thi) thi = tail;
            if (tail < tlo) tlo = tail;
        }
        CHECKF(hi - lo <= cmax, "trial %d: spread %lld > c_max %lld", trial, (long long)(hi - lo), (long long)cmax);
        CHECKF(thi - tlo <= 2 * cmax, "trial %d: tail spread %lld > 2 c_max", trial, (long long)(thi - tlo));
    }
    /* equal costs: round robin */
    int64_t ones[10] = {5, 5, 5, 5, 5, 5, 5, 5, 5, 5};
    int sh[10];
    sdb_shard_assign_costs(ones, 10, 3, sh, NULL);
    for (int k = 0; k < 10; k++) CHECKF(sh[k] == k % 3, "equal costs: job %d -> %d", k, sh[k]);
    /* many shards (heap path), more shards than jobs */
    int64_t few[5] = {3, 1, 4, 1, 5};
    int s5[5];
    sdb_shard_assign_costs(few, 5, 1000, s5, NULL);
    for (int k = 0; k < 5; k++) CHECKF(s5[k] == k, "1000 shards: job %d -> %d", k, s5[k]);
}

int main(void)
{
    RUN(parse);
    RUN(array_mapping);
    RUN(threads_default);
    RUN(costs);
    RUN(stable_when_appended);
    RUN(balance);
    return sdb_t_done();
}
