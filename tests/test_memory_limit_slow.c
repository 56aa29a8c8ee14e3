/*
 * test_memory_limit_slow.c — `run --max-memory` (issue 15): a job whose estimated peak (weights +
 * scratch for its working size, the formula of pipeline.h computed here on its own from the
 * model's files and config) is above the limit fails before it starts, with the estimate, and the
 * batch goes on; without --max-memory a job no machine here could hold (8192x8192) is refused the
 * same way; and the estimate bounds the peak RSS measured (wait4) for a real run of the tiny
 * model, without overshooting it wildly; and inside a real memory cgroup with a limit (made here
 * under the test's own cgroup, v1 or v2, when the machine lets it: root, a memory controller), a
 * job the machine could hold but the cgroup could not is refused the same way, naming the cgroup,
 * instead of meeting the cgroup's OOM killer (MemAvailable does not see the limit).
 */
#include "test_run_common.h"
#include "cgroup_util.h"

#include <jansson.h>
#include <sys/resource.h>

/* The weights as the model holds them: every tensor's bytes (the files less their headers). */
static double weights_mib(void)
{
    static const char *const files[] = {"unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors",
                                        "text_encoder/model.safetensors"};
    double total = 0;
    for (int i = 0; i < 3; i++) {
        char p[800];
        snprintf(p, sizeof p, "models/tiny-sd-inpaint/%s", files[i]);
        FILE *f = fopen(sdb_t_path(p), "rb");
        CHECKF(f != NULL, "%s", p);
        if (!f) continue;
        unsigned char h8[8];
        CHECK(fread(h8, 1, 8, f) == 8);
        unsigned long long hl = 0;
        for (int k = 7; k >= 0; k--) hl = hl << 8 | h8[k];
        fseek(f, 0, SEEK_END);
        total += (double)((unsigned long long)ftell(f) - 8 - hl);
        fclose(f);
    }
    return total / (1 << 20);
}

/* pipeline.h: scratch = (2 C1 + 512) floats per pixel + 64 MiB, C1 = the VAE's block_out_channels[1]. */
static double scratch_mib(int w, int h)
{
    json_error_t je;
    json_t *cfg = json_load_file(sdb_t_path("models/tiny-sd-inpaint/vae/config.json"), 0, &je);
    CHECKF(cfg != NULL, "%s", je.text);
    double c1 = json_number_value(json_array_get(json_object_get(cfg, "block_out_channels"), 1));
    json_decref(cfg);
    return (2 * c1 + 512) * 4.0 * w * h / (1 << 20) + 64;
}

static void write_manifest(rt_batch *b, const char *jobs)
{
    memset(b, 0, sizeof *b);
    snprintf(b->dir, sizeof b->dir, "%s", sdb_t_tmpdir());
    snprintf(b->manifest, sizeof b->manifest, "%s/m.yaml", b->dir);
    snprintf(b->db, sizeof b->db, "%s/out/.sdbatch/state.db", b->dir);
    char text[4096];
    snprintf(text, sizeof text, "version: 1\nmodel: %s\noutput_dir: out\ndefaults:\n  steps: 1\n  image: %s\n  mask: %s\n"
             "  prompt: a pond\njobs:\n%s", sdb_t_path("models/tiny-sd-inpaint"),
             sdb_t_path("refs/pipeline/inputs/scene_128x128.png"), sdb_t_path("refs/pipeline/inputs/mask_128x128.png"), jobs);
    sdb_err err;
    CHECK_OK(sdb_write_file_atomic(b->manifest, text, strlen(text), &err), &err);
}

static void refused_above_the_limit(void)
{
    rt_batch b;
    write_manifest(&b, "  - id: small\n    width: 64\n    height: 64\n  - id: big\n    width: 512\n    height: 512\n");
    double w = weights_mib(), small = w + scratch_mib(64, 64), big = w + scratch_mib(512, 512);
    CHECKF(small < big - 20, "small %.0f, big %.0f MiB", small, big);
    char limit[32];
    snprintf(limit, sizeof limit, "%.0f", (small + big) / 2);
    const char *args[] = {"run", "m.yaml", "--max-memory", limit, NULL};
    int code = rt_exit_code(rt_run(&b, NULL, args));
    char *o = rt_slurp(&b, "last.out");
    CHECKF(code == 3, "exit %d:\n%s", code, o);
    char want[300];
    snprintf(want, sizeof want, "failed big (0.0 s): needs about %.0f MiB (weights %.0f + scratch %.0f for 512x512), more than "
             "--max-memory %s MiB: not started", big, w, scratch_mib(512, 512), limit);
    CHECKF(strstr(o, want) != NULL, "no \"%s\" in:\n%s", want, o);
    CHECKF(strstr(o, "done small") != NULL, "%s", o);
    free(o);
    CHECK(rt_sql(b.db, "SELECT count(*) FROM jobs WHERE id='big' AND state='failed' AND error LIKE 'needs about %%'") == 1);
    CHECK(rt_sql(b.db, "SELECT count(*) FROM jobs WHERE id='small' AND state='done'") == 1);
    snprintf(want, sizeof want, "%s/out/big.png", b.dir);
    CHECK(!sdb_file_exists(want));
}

static void default_limit_is_the_machine(void)
{
    rt_batch b;
    write_manifest(&b, "  - id: huge\n    width: 8192\n    height: 8192\n  - id: fine\n    width: 64\n    height: 64\n");
    const char *args[] = {"run", "m.yaml", NULL};
    int code = rt_exit_code(rt_run(&b, NULL, args));
    char *o = rt_slurp(&b, "last.out");
    CHECKF(code == 3 && strstr(o, "failed huge (0.0 s): needs about ") &&
           strstr(o, "more than this machine can give it now") && strstr(o, "done fine"), "exit %d:\n%s", code, o);
    free(o);
}

/* The estimate against a real run's peak RSS (VmHWM of the child, from wait4). */
static void estimate_bounds_the_measured_peak(void)
{
    rt_batch b;
    write_manifest(&b, "  - id: one\n    width: 256\n    height: 256\n");
    const char *args[] = {"run", "m.yaml", NULL};
    pid_t pid = rt_spawn(&b, NULL, args, NULL);
    int st = 0;
    struct rusage ru;
    memset(&ru, 0, sizeof ru);
    CHECK(wait4(pid, &st, 0, &ru) == pid);
    CHECKF(rt_exit_code(st) == 0, "exit %d", rt_exit_code(st));
    double peak = ru.ru_maxrss / 1024.0, est = weights_mib() + scratch_mib(256, 256);
    fprintf(stderr, "    tiny model, 256x256: peak RSS %.1f MiB, estimate %.1f MiB (weights %.1f + scratch %.1f)\n", peak,
            est, weights_mib(), scratch_mib(256, 256));
    CHECKF(peak <= est && est <= 3 * peak, "peak RSS %.1f MiB, estimate %.1f MiB", peak, est);
}

/* A child memory cgroup of this process's own with a limit of `mib` (cgroup_util.h): v1
 * memory.limit_in_bytes or v2 memory.max. Its folder in dir; 0, or -1 when this machine cannot. */
static int make_cgroup(double mib, char *dir, size_t n)
{
    char val[64];
    snprintf(val, sizeof val, "%lld\n", (long long)(mib * 1048576.0));
    const char *v1_file = "memory.limit_in_bytes", *v1_val = val;
    return cg_make_child("memory", "memory", &v1_file, &v1_val, 1, "memory.max", val, dir, n);
}

static void refused_inside_a_cgroup(void)
{
    char cg[700];
    const double limit = 1024;
    if (make_cgroup(limit, cg, sizeof cg)) {
        fprintf(stderr, "    no memory cgroup can be made here (not root, or no memory controller): skipped\n");
        return;
    }
    rt_batch b;
    write_manifest(&b, "  - id: small\n    width: 64\n    height: 64\n  - id: big\n    width: 2048\n    height: 2048\n");
    const double big = weights_mib() + scratch_mib(2048, 2048);
    CHECKF(big > 3 * limit, "big needs %.0f MiB", big);
    char out[800];
    snprintf(out, sizeof out, "%s/last.out", b.dir);
    /* into the cgroup, then `sdbatch run m.yaml` (no --max-memory: the default limit) */
    char *const argv[] = {(char *)sdb_t_binary(), "run", "m.yaml", NULL};
    pid_t pid = cg_spawn(cg, b.dir, out, "1", argv);
    /* refused, it ends in a second; not refused, it thrashes at the limit or is OOM-killed: give it
     * 120 s, then kill it (the cgroup must be empty to be removed) */
    int st = 0, waited = 0;
    while (waitpid(pid, &st, WNOHANG) == 0 && waited < 1200) { usleep(100000); waited++; }
    if (waited >= 1200) { kill(pid, SIGKILL); st = rt_wait(pid); }
    const int code = rt_exit_code(st);
    char *o = rt_slurp(&b, "last.out");
    CHECKF(waited < 1200, "still running in the cgroup after 120 s:\n%s", o);
    CHECKF(code == 3, "exit %d (137: the cgroup's OOM killer):\n%s", code, o);
    CHECKF(strstr(o, "failed big (0.0 s): needs about ") && strstr(o, "more than its memory cgroup lets it have now") &&
           strstr(o, cg) && strstr(o, "not started"), "%s", o);
    CHECKF(strstr(o, "done small") != NULL, "%s", o);
    fprintf(stderr, "    in %s (limit %.0f MiB): %s", cg, limit, strstr(o, "failed big") ? strstr(o, "failed big") : o);
    free(o);
    CHECK(rt_sql(b.db, "SELECT count(*) FROM jobs WHERE id='big' AND state='failed' AND error LIKE '%%memory cgroup%%'") == 1);
    CHECKF(rmdir(cg) == 0, "rmdir %s", cg);
}

int main(void)
{
    RUN(refused_above_the_limit);
    RUN(default_limit_is_the_machine);
    RUN(estimate_bounds_the_measured_peak);
    RUN(refused_inside_a_cgroup);
    return sdb_t_done();
}
