/*
 * cmd_bench.c — `sdbatch bench`: how fast this machine runs a model (see include/sdb/bench.h).
 */
#include "cli.h"
#include "bench_job.h"
#include "bench_scale.h"

#include "sdb/bench.h"
#include "sdb/cpu.h"
#include "sdb/ops/winograd.h"
#include "sdb/pipeline.h"
#include "sdb/sched.h"
#include "sdb/threads.h"

#include <jansson.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void help(void)
{
    printf("usage: sdbatch bench --model PATH [--size 512] [--threads N|LIST] [--steps N] [--reps N]\n"
           "                     [--weights f32|f16] [--conv auto|direct|winograd] [--json] [--profile]\n"
           "       sdbatch bench --job --model PATH [--size 512] [--steps 20] [--scheduler dpmpp_2m_karras]\n"
           "                     [--reps 1] [--threads N] [--weights f32|f16] [--conv ...] [--json]\n"
           "       sdbatch bench --balance LIST [--model PATH] [--size 512] [--json]\n\n"
           "Times, as medians of --reps runs (default 3) after a warm-up: text encoding (prompt and\n"
           "negative prompt), one U-Net step at batch 2 (guidance), VAE encode and decode of a\n"
           "SIZE x SIZE image, and one whole inpainting run of --steps steps (default 4; 0 skips it).\n"
           "Prints the counted FLOPs and effective GFLOP/s of each, OpenBLAS's sgemm rate on a 4096^2\n"
           "product in the same run (and every rate as a fraction of it), the peak RSS (VmHWM) and\n"
           "the expected images/hour at this size.\n\n"
           "  --model PATH   diffusers folder or single-file checkpoint (a random full-size one:\n"
           "                 sdbatch-make-random-model DIR --size full); a bare name is looked\n"
           "                 up in models/ and $SDB_MODELS\n"
           "  --vae PATH     a separate VAE (single file or diffusers vae/ folder)\n"
           "  --size N       image side in pixels, a multiple of 8 (default 512)\n"
           "  --threads N    threads (default: OMP_NUM_THREADS when set, else every available CPU)\n"
           "  --threads LIST a sweep, e.g. 1,2,4,8,16: the U-Net step (or the --only stages) at each\n"
           "                 count, with its sgemm, the ratio and the parallel efficiency against the\n"
           "                 first count\n"
           "  --balance LIST no timing: the load-balance bound (ideal time / makespan) of every parallel\n"
           "                 op of a U-Net step at batch 2 and of the whole step at each thread count,\n"
           "                 from the shapes alone (--model: a diffusers folder or a unet config.json;\n"
           "                 default the built-in SD 1.5 inpainting config; no weights are read; --conv\n"
           "                 picks the 3x3 convolutions' path planned)\n"
           "  --job          no stage timings: one whole inpainting job as a user runs it, `sdbatch\n"
           "                 generate` in a child process (this binary) on a SIZE x SIZE picture with\n"
           "                 its lower half masked, timed from the process start to the PNG written\n"
           "                 (model loading included; median of --reps, default 1): images/hour and\n"
           "                 the child's peak RSS\n"
           "  --scheduler NAME  (--job) the sampler: %s (default dpmpp_2m_karras)\n"
           "  --steps N      steps of the timed whole run, and of the images/hour figure (default 4;\n"
           "                 --job: 20)\n"
           "  --reps N       timed repetitions per figure (default 3)\n"
           "  --gemm N       side of the reference sgemm product (default 4096)\n"
           "  --only LIST    time only these stages (comma list of text,unet,encode,decode,run)\n"
           "  --weights f16  keep the weight matrices as IEEE half in memory (half the weights' RAM;\n"
           "                 F16 model files give the same images); default f32\n"
           "  --keep-filters MIB  the U-Net keeps its weights as its kernels use them (Winograd filters,\n"
           "                 linear panels) in up to MIB MiB\n"
           "                 (generate's option; bench prints what it kept)\n"
           "  --conv NAME    the 3x3 convolutions' path: auto (default: Winograd where it is faster for\n"
           "                 the layer's shape), direct (im2col + GEMM) or winograd (all of them)\n"
           "  --profile      break a U-Net step (and the VAE decode) down by op kind (also SDB_PROFILE=1)\n"
           "  --json         one JSON object on stdout instead of the table\n", sdb_sched_names());
}

/* "  BLAS: OpenBLAS 0.3.21, core Haswell (CPU: AVX2)": the kernel set every figure below ran on */
static void print_blas_line(void)
{
    char blas[64];
    sdb_blas_version(blas, sizeof blas);
    sdb_cpu_features cpu;
    sdb_cpu_detect(&cpu);
    printf("  BLAS: %s, core %s (CPU: %s)\n", blas, sdb_blas_core(), sdb_cpu_level_name(&cpu));
}

static double ratio(double gflop, double s, double peak) { return s > 0 && peak > 0 ? gflop / s / peak : 0; }

/* <stage>_gflop, _gflops, _sgemm_gflops and _sgemm_ratio of a timed stage (null when it was not timed) */
static void stage_json(json_t *j, const char *stage, double gflop, double s, double sgemm, double peak)
{
    char key[64];
    const int timed = s > 0;
#define PUT(suffix, v) (snprintf(key, sizeof key, "%s%s", stage, suffix), \
                        json_object_set_new(j, key, timed ? json_real(v) : json_null()))
    PUT("_gflop", gflop);
    PUT("_gflops", timed ? gflop / s : 0);
    PUT("_sgemm_gflops", sgemm);
    PUT("_sgemm_ratio", ratio(gflop, s, peak));
#undef PUT
}

int cmd_bench(int argc, char **argv)
{
    const char *model = NULL, *vae = NULL, *balance = NULL, *sweep = NULL, *scheduler = NULL;
    long long threads = 0, v;
    int json = 0, job = 0, steps_given = 0, reps_given = 0, only_given = 0;
    sdb_model_opts mo = {0};
    sdb_bench_opts o;
    sdb_bench_opts_default(&o);
    const char *pe = getenv("SDB_PROFILE");
    if (pe && *pe && strcmp(pe, "0")) o.profile = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has = i + 1 < argc;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { help(); return 0; }
        else if (!strcmp(a, "--json")) json = 1;
        else if (!strcmp(a, "--profile")) o.profile = 1;
        else if (!strcmp(a, "--job")) job = 1;
        else if (!strcmp(a, "--scheduler") && has) scheduler = argv[++i];
        else if (!strcmp(a, "--model") && has) model = argv[++i];
        else if (!strcmp(a, "--vae") && has) vae = argv[++i];
        else if (!strcmp(a, "--conv") && has) {
            if (cli_parse_conv("bench", argv[++i], &mo.conv)) return EXIT_USAGE;
        } else if (!strcmp(a, "--weights") && has) {
            if (cli_parse_weights("bench", argv[++i], &mo.weights_f16)) return EXIT_USAGE;
        } else if (!strcmp(a, "--keep-filters") && has) {
            if (cli_parse_keep_filters("bench", argv[++i], &mo.keep_filters)) return EXIT_USAGE;
        }
        else if (!strcmp(a, "--only") && has) {
            char buf[256];
            snprintf(buf, sizeof buf, "%s", argv[++i]);
            o.stages = 0;
            only_given = 1;
            for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
                if (!strcmp(tok, "text")) o.stages |= SDB_BENCH_TEXT;
                else if (!strcmp(tok, "unet")) o.stages |= SDB_BENCH_UNET;
                else if (!strcmp(tok, "encode")) o.stages |= SDB_BENCH_ENCODE;
                else if (!strcmp(tok, "decode")) o.stages |= SDB_BENCH_DECODE;
                else if (!strcmp(tok, "run")) o.stages |= SDB_BENCH_RUN;
                else return cli_usage_error("bench", "--only takes text,unet,encode,decode,run; got '%s'", tok);
            }
        }
        else if (!strcmp(a, "--size") && has) {
            if (cli_parse_int("bench", a, argv[++i], 64, 4096, &v)) return EXIT_USAGE;
            o.size = (int)v;
        } else if (!strcmp(a, "--balance") && has) {
            balance = argv[++i];
        } else if (!strcmp(a, "--threads") && has && strchr(argv[i + 1], ',')) {
            sweep = argv[++i];
        } else if (!strcmp(a, "--threads") && has) {
            if (cli_parse_int("bench", a, argv[++i], 1, 1024, &threads)) return EXIT_USAGE;
        } else if (!strcmp(a, "--steps") && has) {
            if (cli_parse_int("bench", a, argv[++i], 0, 1000, &v)) return EXIT_USAGE;
            o.steps = (int)v;
            steps_given = 1;
        } else if (!strcmp(a, "--gemm") && has) {
            if (cli_parse_int("bench", a, argv[++i], 64, 16384, &v)) return EXIT_USAGE;
            o.gemm_n = (int)v;
        } else if (!strcmp(a, "--reps") && has) {
            if (cli_parse_int("bench", a, argv[++i], 1, 64, &v)) return EXIT_USAGE;
            o.reps = (int)v;
            reps_given = 1;
        } else return cli_usage_error("bench", "unknown or incomplete option '%s'", a);
    }
    if (o.size % 8) return cli_usage_error("bench", "--size must be a multiple of 8");
    if (balance) return bench_balance(model, balance, o.size, mo.conv, json);
    if (!model) return cli_usage_error("bench", "--model is required");
    if (scheduler && !job) return cli_usage_error("bench", "--scheduler goes with --job");
    if (job && (o.profile || only_given || sweep))
        return cli_usage_error("bench", "--job times a whole job: --profile, --only and --threads LIST do not go with it");
    if (!threads && !getenv("OMP_NUM_THREADS")) threads = sdb_threads_available();
    if (threads) sdb_threads_set((int)threads);
    if (job) {
        if (!steps_given) o.steps = 20;
        if (o.steps < 1) return cli_usage_error("bench", "--job needs --steps >= 1");
        bench_job_opts jo = {.model = model, .vae = vae, .scheduler = scheduler ? scheduler : "dpmpp_2m_karras",
                             .size = o.size, .steps = o.steps, .reps = reps_given ? o.reps : 1,
                             .gemm_n = o.gemm_n, .weights_f16 = mo.weights_f16, .conv = mo.conv,
                             .keep_filters_mib = (long long)(mo.keep_filters >> 20), .json = json};
        return bench_job(&jo);
    }

    sdb_log log = cli_logger();
    if (json && log.level > SDB_LOG_WARN) log.level = SDB_LOG_WARN; /* stdout is the object */
    sdb_err err = {0};
    sdb_model *m = NULL;
    char *model_path = NULL, *vae_path = NULL;
    int lrc = cli_model_opts(model, vae, &mo, &model_path, &vae_path, &err);
    if (!lrc) lrc = sdb_model_load(&m, model_path, &mo, &log, &err);
    free(model_path);
    free(vae_path);
    if (lrc) return cli_error("bench", &err);
    if (sweep) {
        int src = bench_sweep(m, &o, sweep, json, &log);
        sdb_model_free(m);
        return src;
    }
    sdb_bench_result r;
    int rc = sdb_bench_run(m, &o, &r, &log, &err);
    sdb_model_free(m);
    if (rc) return cli_error("bench", &err);

    const double pk = r.sgemm_gflops;
    /* each stage's ratio is to the sgemm rate sampled between its own repetitions, when there is one */
    const double pk_unet = r.unet_sgemm_gflops > 0 ? r.unet_sgemm_gflops : pk;
    const double pk_enc = r.vae_encode_sgemm_gflops > 0 ? r.vae_encode_sgemm_gflops : pk;
    const double pk_dec = r.vae_decode_sgemm_gflops > 0 ? r.vae_decode_sgemm_gflops : pk;
    /* images/hour at this size: text encoding, VAE encode (masked image) and decode, steps U-Net
     * steps — from the whole run when there was one, else from the stage medians */
    double per_image = r.run_s > 0 ? r.run_s : r.text_encode_s + r.vae_encode_s + r.vae_decode_s + o.steps * r.unet_step_s;
    double fixed = per_image - o.steps * r.unet_step_s;
    if (fixed < 0) fixed = 0;
    double iph = per_image > 0 ? 3600.0 / per_image : 0;
    if (json) {
        /* a stage that was not timed (--only) has null figures, never a 0 that reads as measured */
#define NUM(v, timed) ((timed) ? json_real(v) : json_null())
        const int tx = r.text_encode_s > 0, un = r.unet_step_s > 0, en = r.vae_encode_s > 0,
                  de = r.vae_decode_s > 0, run = r.run_s > 0;
        json_t *j = json_object();
        json_object_set_new(j, "size", json_integer(r.size));
        json_object_set_new(j, "latent", json_integer(r.latent));
        json_object_set_new(j, "threads", json_integer(r.threads));
        json_object_set_new(j, "reps", json_integer(r.reps));
        json_object_set_new(j, "steps", json_integer(r.steps));
        json_object_set_new(j, "weights", json_string(r.weights_f16 ? "f16" : "f32"));
        json_object_set_new(j, "blas_core", json_string(sdb_blas_core()));
        json_object_set_new(j, "conv", json_string(sdb_conv_algo_name(r.conv)));
        json_object_set_new(j, "kept_filters_mib", json_real(r.kept_filters_mib));
        json_object_set_new(j, "sgemm_gflops", json_real(pk));
        json_object_set_new(j, "sgemm_samples", json_integer(r.sgemm_samples));
        json_object_set_new(j, "text_encode_s", NUM(r.text_encode_s, tx));
        json_object_set_new(j, "text_encode_gflop", json_real(r.text_gflop));
        json_object_set_new(j, "unet_step_s", NUM(r.unet_step_s, un));
        json_object_set_new(j, "unet_step_min_s", NUM(r.unet_step_min_s, un));
        json_object_set_new(j, "unet_step_max_s", NUM(r.unet_step_max_s, un));
        json_object_set_new(j, "unet_step_cpu_s", NUM(r.unet_step_cpu_s, un));
        stage_json(j, "unet", r.unet_gflop, r.unet_step_s, r.unet_sgemm_gflops, pk_unet);
        json_object_set_new(j, "vae_encode_s", NUM(r.vae_encode_s, en));
        stage_json(j, "vae_encode", r.vae_encode_gflop, r.vae_encode_s, r.vae_encode_sgemm_gflops, pk_enc);
        json_object_set_new(j, "vae_decode_s", NUM(r.vae_decode_s, de));
        stage_json(j, "vae_decode", r.vae_decode_gflop, r.vae_decode_s, r.vae_decode_sgemm_gflops, pk_dec);
        json_object_set_new(j, "run_s", NUM(r.run_s, run));
        json_object_set_new(j, "images_per_hour", NUM(iph, per_image > 0));
        json_object_set_new(j, "peak_rss_mib", json_real(r.peak_rss_mib));
        json_object_set_new(j, "weights_mib", json_real(r.weights_mib));
#undef NUM
        if (r.have_prof) {
            json_t *prof = json_object();
            for (int k = 0; k < SDB_PROF_KINDS; k++)
                json_object_set_new(prof, sdb_prof_kind_name(k),
                                    json_pack("{s:f, s:f, s:I}", "s", r.unet_prof.seconds[k], "gflop",
                                              r.unet_prof.flops[k] / 1e9, "calls", (json_int_t)r.unet_prof.calls[k]));
            json_object_set_new(j, "profile", prof);
        }
        int dump_rc = json_dumpf(j, stdout, JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(8)) == 0 ? 0 : 1;
        printf("\n");
        json_decref(j);
        return dump_rc;
    }
    printf("sdbatch bench: %dx%d (latents %dx%d), %d threads, %s weights, --conv %s, medians of %d after a warm-up\n",
           r.size, r.size, r.latent, r.latent, r.threads, r.weights_f16 ? "f16" : "f32",
           sdb_conv_algo_name(r.conv), r.reps);
    print_blas_line();
    printf("  OpenBLAS sgemm %4d^2            %8.1f GFLOP/s (= 100%%; median of %d samples taken between the stages'\n"
           "                                   repetitions; each stage's ratio uses its own samples)\n", o.gemm_n, pk, r.sgemm_samples);
    printf("  %-28s %9s %9s %10s %7s %10s\n", "stage", "median s", "GFLOP", "GFLOP/s", "sgemm", "its sgemm");
#define ROW(name, s, g, p) if ((s) > 0) printf("  %-28s %9.3f %9.1f %10.1f %6.0f%% %10.1f\n", name, s, g, (s) > 0 ? (g) / (s) : 0, 100 * ratio(g, s, p), p)
    ROW("text encoding (2 prompts)", r.text_encode_s, r.text_gflop, pk);
    ROW("U-Net step (batch 2)", r.unet_step_s, r.unet_gflop, pk_unet);
    ROW("VAE encode", r.vae_encode_s, r.vae_encode_gflop, pk_enc);
    ROW("VAE decode", r.vae_decode_s, r.vae_decode_gflop, pk_dec);
#undef ROW
    if (r.unet_step_s > 0) printf("  U-Net step min / max             %8.3f / %.3f s; CPU time %.3f s (median)\n",
                                  r.unet_step_min_s, r.unet_step_max_s, r.unet_step_cpu_s);
    if (r.kept_filters_mib > 0) printf("  kept weights (--keep-filters: Winograd filters, linear panels) %.1f MiB\n", r.kept_filters_mib);
    if (r.run_s > 0) printf("  whole inpainting run, %d steps   %8.2f s\n", r.steps, r.run_s);
    printf("  peak RSS (VmHWM%s) %8.0f MiB (weights %.0f MiB %s, %+.0f MiB)\n",
           r.peak_rss_run ? " of the whole run" : ", whole process", r.peak_rss_mib, r.weights_mib,
           r.weights_f16 ? "f16" : "f32", r.peak_rss_mib - r.weights_mib);
    printf("  images/hour at %dx%d: %.1f at %d steps", r.size, r.size, iph, o.steps);
    int more[3] = {20, 30, 50};
    for (int i = 0; i < 3; i++)
        if (more[i] != o.steps && r.unet_step_s > 0)
            printf(", %.1f at %d", 3600.0 / (fixed + more[i] * r.unet_step_s), more[i]);
    printf(" (this machine, %d threads)\n", r.threads);
    if (r.have_prof && r.unet_step_s > 0) {
        double tot = 0;
        for (int k = 0; k < SDB_PROF_KINDS; k++) tot += r.unet_prof.seconds[k];
        printf("  U-Net step by op kind (mean of %d profiled steps; %.3f s in ops of a %.3f s step):\n",
               r.reps, tot, r.unet_step_s);
        for (int k = 0; k < SDB_PROF_KINDS; k++) {
            double s = r.unet_prof.seconds[k], g = r.unet_prof.flops[k] / 1e9;
            printf("    %-12s %8.3f s %5.1f%%  %6ld calls", sdb_prof_kind_name(k), s,
                   tot > 0 ? 100 * s / tot : 0, r.unet_prof.calls[k]);
            if (g > 0) printf("  %8.1f GFLOP  %7.1f GFLOP/s  %4.0f%% of sgemm", g, s > 0 ? g / s : 0, 100 * ratio(g, s, pk_unet));
            printf("\n");
        }
    }
    if (r.vae_decode_s > 0 && (r.vae_decode_prof.calls[SDB_PROF_CONV] || r.vae_decode_prof.calls[SDB_PROF_WINOGRAD])) {
        const sdb_profile *vp = &r.vae_decode_prof;
        double rest = r.vae_decode_s;
        printf("  VAE decode by op kind (mean of %d profiled decodes):\n", r.reps);
        for (int k = 0; k < SDB_PROF_KINDS; k++) {
            if (!vp->calls[k]) continue;
            double s = vp->seconds[k], g = vp->flops[k] / 1e9;
            rest -= s;
            printf("    %-12s %8.3f s %5.1f%%  %6ld calls  %8.1f GFLOP  %7.1f GFLOP/s  %4.0f%% of sgemm\n",
                   sdb_prof_kind_name(k), s, 100 * s / r.vae_decode_s, vp->calls[k], g, s > 0 ? g / s : 0,
                   100 * ratio(g, s, pk_dec));
        }
        printf("    %-12s %8.3f s %5.1f%%  (norms, activations, copies)\n", "other", rest, 100 * rest / r.vae_decode_s);
    }
    return 0;
}
