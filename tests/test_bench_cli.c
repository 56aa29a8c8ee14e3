/*
 * test_bench_cli.c — `sdbatch bench` on the tiny model, as a user runs it (a child process): the
 * --json object has the documented fields with sane values, --profile's breakdown names every op
 * kind, and bad options are usage errors. A smoke test of the command, not a timed test: the
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
    const char *keys[] = {"unet_step_s", "unet_gflops", "sgemm_gflops", "text_encode_s", "vae_encode_s",
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
    RUN(test_profile_and_only);
    RUN(test_usage_errors);
    return sdb_t_done();
}
