/*
 * test_bench_cli.c — `sdbatch bench` on the tiny model, as a user runs it (a child process): the
 * --json object has the documented fields with sane values, --profile's breakdown names every op
 * kind, --balance gives the schedule's bound (>= 0.9 at 16/32/64 threads for SD 1.5, the same from
 * the built-in config as from the published config file), --threads LIST sweeps, --job runs whole
 * `sdbatch generate` children (20 steps of DPM++ 2M Karras by default) and times them, and bad
 * options are usage errors. A smoke test of the command, not a timed test: the
 * figures themselves are not checked (the machine is shared).
 */
#include "harness.h"

#include <stdlib.h>
#include <string.h>

static char out[1 << 16];

/* Runs `sdbatch bench --model <the tiny model> OPTIONS` into out; returns the exit code. */
static int bench_tiny(const char *options)
{
    char args[4096];
    snprintf(args, sizeof args, "bench --model '%s' %s", sdb_t_path("models/tiny-sd-inpaint"), options);
    return sdb_t_sdbatch(args, out, sizeof out);
}

static double field(const char *json, const char *key)
{
    char pat[128];
    snprintf(pat, sizeof pat, "\"%s\": ", key);
    const char *at = strstr(json, pat);
    return at ? atof(at + strlen(pat)) : -1.0;
}

static void test_json_fields(void)
{
    int rc = bench_tiny("--size 64 --reps 1 --steps 1 --gemm 512 --json");
    CHECKF(rc == 0, "exit %d: %s", rc, out);
    CHECKF(out[0] == '{' && strstr(out, "}\n"), "%s", out);
    const char *keys[] = {"unet_step_s", "unet_step_cpu_s", "unet_gflops", "sgemm_gflops", "text_encode_s", "vae_encode_s",
                          "vae_decode_s", "peak_rss_mib", "run_s"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        CHECKF(field(out, keys[i]) > 0, "%s: %s", keys[i], out);
    CHECK(field(out, "threads") == 1);
    CHECK(field(out, "size") == 64);
    CHECK(field(out, "latent") == 8);
}

static void test_profile_and_only(void)
{
    int rc = bench_tiny("--size 64 --reps 1 --gemm 512 --only unet --profile");
    CHECKF(rc == 0, "exit %d: %s", rc, out);
    const char *kinds[] = {"convolution", "linear", "attention", "norm", "elementwise", "copies"};
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) CHECKF(strstr(out, kinds[i]) != NULL, "%s", kinds[i]);
    CHECK(strstr(out, "U-Net step (batch 2)") != NULL);
    CHECK(strstr(out, "VAE decode  ") == NULL); /* not timed */
    /* in JSON a stage that was not timed is null, not a 0 that would read as measured */
    rc = bench_tiny("--size 64 --reps 1 --gemm 512 --only unet --json");
    CHECKF(rc == 0, "exit %d: %s", rc, out);
    CHECKF(field(out, "unet_step_s") > 0, "%s", out);
    const char *untimed[] = {"text_encode_s", "vae_encode_s", "vae_decode_s", "vae_decode_sgemm_ratio", "run_s"};
    for (size_t i = 0; i < sizeof untimed / sizeof untimed[0]; i++) {
        char pat[64];
        snprintf(pat, sizeof pat, "\"%s\": null", untimed[i]);
        CHECKF(strstr(out, pat) != NULL, "%s: %s", untimed[i], out);
    }
}

/* the "balance" object of --balance --json, as text: {"16": ..., ...} */
static void balance_of(const char *json, char *dst, size_t n)
{
    const char *at = strstr(json, "\"balance\": {");
    const char *end = at ? strchr(at, '}') : NULL;
    snprintf(dst, n, "%.*s", at && end ? (int)(end - at + 1) : 0, at ? at : "");
}

/* every bound of a "balance" object at 16, 32 and 64 threads within [0.9, 1] */
static void check_target(const char *balance, const char *what)
{
    const char *counts[] = {"16", "32", "64"};
    for (int i = 0; i < 3; i++) {
        char pat[16];
        snprintf(pat, sizeof pat, "\"%s\": ", counts[i]);
        const char *v = strstr(balance, pat);
        const double b = v ? atof(v + strlen(pat)) : -1;
        CHECKF(b >= 0.9 && b <= 1.0, "%s: bound at %s threads: %g (%s)", what, counts[i], b, balance);
    }
}

static void test_balance_and_sweep(void)
{
    /* the built-in SD 1.5 config: the step's bound at 16, 32 and 64 threads reaches the target */
    int rc = sdb_t_sdbatch("bench --balance 16,32,64 --json", out, sizeof out);
    CHECKF(rc == 0, "exit %d: %s", rc, out);
    char builtin[256], real[256];
    balance_of(out, builtin, sizeof builtin);
    check_target(builtin, "--conv auto");
    CHECK(strstr(out, "\"ops\": [") && strstr(out, "conv 3x3/1 320->320 64x64 x2"));
    /* the direct (im2col + GEMM) path planned instead of auto's Winograd: the target too */
    rc = sdb_t_sdbatch("bench --balance 16,32,64 --conv direct --json", out, sizeof out);
    CHECKF(rc == 0 && strstr(out, "\"conv\": \"direct\"") && !strstr(out, "winograd\""), "exit %d: %s", rc, out);
    char direct[256];
    balance_of(out, direct, sizeof direct);
    check_target(direct, "--conv direct");
    /* the published config file gives the same figures as the built-in copy of it */
    char args[4096];
    snprintf(args, sizeof args, "bench --balance 16,32,64 --json --model '%s'", sdb_t_path("models/sd15-inpaint-layout"));
    rc = sdb_t_sdbatch(args, out, sizeof out);
    CHECKF(rc == 0, "exit %d: %s", rc, out);
    balance_of(out, real, sizeof real);
    CHECKF(real[0] && !strcmp(real, builtin), "%s vs built-in %s", real, builtin);
    /* one thread: every schedule is perfectly balanced */
    rc = bench_tiny("--balance 1 --size 64 --json");
    CHECKF(rc == 0 && strstr(out, "\"balance\": {\"1\": 1.0"), "exit %d: %s", rc, out);
    CHECK(sdb_t_sdbatch("bench --balance 0", out, sizeof out) == 2);
    CHECK(sdb_t_sdbatch("bench --balance 16,x", out, sizeof out) == 2);
    /* the sweep: one row per count, the first one's efficiency 1 */
    rc = bench_tiny("--size 64 --reps 1 --gemm 512 --threads 1,2 --json");
    CHECKF(rc == 0, "exit %d: %s", rc, out);
    const char *r1 = strstr(out, "{\"threads\": 1,"), *r2 = strstr(out, "{\"threads\": 2,");
    CHECKF(r1 && r2 && r1 < r2, "%s", out);
    CHECKF(field(out, "unet_step_s") > 0 && field(out, "parallel_efficiency") == 1.0, "%s", out);
}

/* --conv: the header names it, the profile gives Winograd's share (every 3x3 stride-1 conv of the
 * tiny U-Net with --conv winograd, none with direct), JSON carries it, a bad name is a usage error. */
static void test_conv_option(void)
{
    int rc = bench_tiny("--size 64 --reps 1 --gemm 512 --only unet --profile --conv winograd");
    CHECKF(rc == 0, "exit %d: %s", rc, out);
    CHECKF(strstr(out, "--conv winograd") != NULL, "%s", out);
    const char *w = strstr(out, "    winograd ");
    long calls = 0;
    if (w) sscanf(w, " winograd %*f s %*f%% %ld calls", &calls);
    CHECKF(w && calls > 0, "%s", out);
    rc = bench_tiny("--size 64 --reps 1 --gemm 512 --only unet --profile --conv direct");
    CHECKF(rc == 0, "exit %d: %s", rc, out);
    w = strstr(out, "    winograd ");
    calls = -1;
    if (w) sscanf(w, " winograd %*f s %*f%% %ld calls", &calls);
    CHECKF(w && calls == 0, "%s", out);
    rc = bench_tiny("--size 64 --reps 1 --gemm 512 --only unet --json --conv winograd");
    CHECKF(rc == 0 && strstr(out, "\"conv\": \"winograd\"") != NULL, "%s", out);
    /* --keep-filters: the U-Net keeps them (within the budget), JSON says how much */
    rc = bench_tiny("--size 64 --reps 1 --gemm 512 --only unet --json --conv winograd --keep-filters 64");
    CHECKF(rc == 0 && field(out, "kept_filters_mib") > 0 && field(out, "kept_filters_mib") <= 64, "%s", out);
    rc = bench_tiny("--size 64 --reps 1 --gemm 512 --only unet --json --conv winograd");
    CHECKF(rc == 0 && field(out, "kept_filters_mib") == 0, "%s", out);
    CHECK(sdb_t_sdbatch("generate --keep-filters lots", out, sizeof out) == 2);
    CHECK(bench_tiny("--conv fast") == 2);
    CHECKF(strstr(out, "--conv takes auto, direct or winograd, got 'fast'") != NULL, "%s", out);
    CHECK(sdb_t_sdbatch("generate --conv fast", out, sizeof out) == 2);
    CHECKF(strstr(out, "--conv takes auto, direct or winograd") != NULL, "%s", out);
}

/* --job: `sdbatch generate` runs as a child (its own "wrote" line names the size and the steps),
 * each run's time covers the child's own generation time, images/hour is 3600 / the median, a
 * failing child fails the bench with the child's error, and stage options are refused. */
static void test_job(void)
{
    int rc = bench_tiny("--job --size 64 --gemm 256 --json");
    CHECKF(rc == 0, "exit %d: %s", rc, out);
    const char *j = strstr(out, "{\"mode\": \"job\"");
    CHECKF(j != NULL, "%s", out);
    if (!j) return;
    CHECK(field(j, "size") == 64 && field(j, "steps") == 20 && field(j, "reps") == 1);
    CHECKF(strstr(j, "\"scheduler\": \"dpmpp_2m_karras\"") != NULL, "%s", j);
    const double s = field(j, "job_s"), iph = field(j, "images_per_hour");
    CHECKF(s > 0 && iph > 0 && iph * s > 3599.99 && iph * s < 3600.01, "%s", j);
    CHECKF(field(j, "peak_rss_mib") > 1 && field(j, "sgemm_gflops") > 0, "%s", j);
    /* the child's own report: "wrote PATH (64x64, seed 1, 20 steps, X s)", X within the timed run */
    const char *w = strstr(out, "(64x64, seed 1, 20 steps, ");
    double child_s = -1;
    if (w) sscanf(w, "(64x64, seed 1, 20 steps, %lf s)", &child_s);
    CHECKF(w && child_s >= 0 && child_s <= s + 0.05, "%g vs %g: %s", child_s, s, out);
    /* two runs of 2 steps of another sampler, in text: the median of both */
    rc = bench_tiny("--job --size 64 --gemm 256 --steps 2 --reps 2 --scheduler ddim");
    CHECKF(rc == 0 && strstr(out, "64x64 inpainting, 2 steps of ddim") && strstr(out, "median of 2") &&
           strstr(out, "images/hour") && strstr(out, "peak RSS of `sdbatch generate`"), "exit %d: %s", rc, out);
    CHECKF(strstr(out, "(64x64, seed 1, 2 steps, ") != NULL, "%s", out);
    /* a child that fails fails the bench, with its own error */
    rc = sdb_t_sdbatch("bench --job --model /nonexistent-sdb-model --size 64 --gemm 256", out, sizeof out);
    CHECKF(rc == 1 && strstr(out, "does not exist") && strstr(out, "bench --job"), "exit %d: %s", rc, out);
    CHECK(bench_tiny("--job --scheduler fast") == 2);
    CHECKF(strstr(out, "unknown scheduler 'fast'") != NULL, "%s", out);
    CHECK(bench_tiny("--job --profile") == 2);
    CHECK(bench_tiny("--scheduler ddim") == 2);
}

static void test_usage_errors(void)
{
    CHECK(sdb_t_sdbatch("bench", out, sizeof out) == 2);
    CHECK(strstr(out, "--model is required") != NULL);
    CHECK(bench_tiny("--size 100") == 2);
    CHECK(bench_tiny("--only unet,colour") == 2);
    CHECK(sdb_t_sdbatch("bench --help", out, sizeof out) == 0);
}

int main(void)
{
    RUN(test_json_fields);
    RUN(test_conv_option);
    RUN(test_profile_and_only);
    RUN(test_balance_and_sweep);
    RUN(test_job);
    RUN(test_usage_errors);
    return sdb_t_done();
}
