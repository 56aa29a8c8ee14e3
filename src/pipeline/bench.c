/*
 * bench.c — `sdbatch bench`: medians of each stage of an inpainting generation on a loaded model,
 * with the counted FLOPs, effective GFLOP/s and the same run's OpenBLAS sgemm rate (see bench.h).
 *
 * Stages: text encoding (tokenise + encode the prompt and the negative prompt, as the pipeline
 * does), one U-Net step at batch 2 (classifier-free guidance), VAE encode and decode of a
 * size x size image, and a whole inpainting run of opts.steps steps (sdb_generate on a synthetic
 * image and mask). Inputs are random but fixed (the speed does not depend on the values).
 */
#include "pipeline_internal.h"

#include "sdb/bench.h"
#include "sdb/threads.h"

#include <cblas.h>
#include <sys/resource.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sdb_bench_opts_default(sdb_bench_opts *o)
{
    memset(o, 0, sizeof *o);
    o->size = 512;
    o->steps = 4;
    o->reps = 3;
    o->gemm_n = 4096;
    o->stages = SDB_BENCH_ALL;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}
double sdb_bench_median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void fill(float *x, size_t n, unsigned long long seed, float amp)
{
    unsigned long long s = seed * 2654435761ULL + 88172645463325252ULL;
    for (size_t i = 0; i < n; i++) {
        s ^= s << 13; s ^= s >> 7; s ^= s << 17;
        x[i] = amp * (float)((double)(s >> 11) * (2.0 / 9007199254740992.0) - 1.0);
    }
}

double sdb_bench_peak_rss_mib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    double kb = 0;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmHWM:", 6)) kb = atof(line + 6);
    if (f) fclose(f);
    return kb / 1024.0;
}

/* Its own threading: a rate, not a result. */
double sdb_bench_sgemm_gflops(int n, int reps)
{
    float *A = malloc(sizeof(float) * n * n), *B = malloc(sizeof(float) * n * n), *C = malloc(sizeof(float) * n * n);
    if (!A || !B || !C) { free(A); free(B); free(C); return 0; }
    fill(A, (size_t)n * n, 1, 1.0f);
    fill(B, (size_t)n * n, 2, 1.0f);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, A, n, B, n, 0, C, n);
    double t[16];
    if (reps > 16) reps = 16;
    for (int r = 0; r < reps; r++) {
        double t0 = sdb_prof_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, A, n, B, n, 0, C, n);
        t[r] = sdb_prof_now() - t0;
    }
    free(A); free(B); free(C);
    return 2.0 * n * n * (double)n / sdb_bench_median(t, reps) / 1e9;
}

/* CLIP text encoder FLOPs for B sequences of S tokens (GEMMs and attention products). */
static double clip_flops(const sdb_clip_config *c, int B, int S)
{
    double d = c->hidden_size, f = c->intermediate_size, T = (double)B * S;
    double per_layer = 2.0 * T * (4 * d * d + 2 * d * f) + 4.0 * B * (double)S * S * d;
    return per_layer * c->num_hidden_layers;
}

/* CPU seconds (user + system, all threads) this process has used so far */
static double cpu_now(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6;
}

#define TIMED(times, rep, stmt) do { double t0_ = sdb_prof_now(); stmt; (times)[rep] = sdb_prof_now() - t0_; } while (0)

/* The machine is shared: the sgemm rate is sampled again after every timed repetition of the big
 * stages, so that the reported peak (the median of all samples) covers the same minutes. */
typedef struct { double v[256]; int n; } samples;
static void sample_sgemm(samples *sm, int n)
{
    if (sm->n < 256) sm->v[sm->n++] = sdb_bench_sgemm_gflops(n, 1);
}
static double sample_median(const samples *sm, int from)
{
    double tmp[256];
    int k = 0;
    for (int i = from; i < sm->n; i++) tmp[k++] = sm->v[i];
    return k ? sdb_bench_median(tmp, k) : 0;
}

/* Resets VmHWM to the current RSS (Linux: "5" into /proc/self/clear_refs); 0 on success. */
static int reset_peak_rss(void)
{
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (!f) return -1;
    int ok = fputs("5", f) >= 0;
    return fclose(f) == 0 && ok ? 0 : -1;
}

int sdb_bench_run(sdb_model *m, const sdb_bench_opts *o, sdb_bench_result *r, const sdb_log *log,
                  sdb_err *err)
{
    memset(r, 0, sizeof *r);
    const int S = o->size, reps = o->reps < 1 ? 1 : (o->reps > 64 ? 64 : o->reps);
    if (S < 64 || S % 8) return sdb_fail(err, SDB_EINVAL, "bench: size %d must be a multiple of 8, >= 64", S);
    int lh, lw;
    sdb_vae_latent_size(m->vae, S, S, &lh, &lw);
    r->size = S;
    r->latent = lh;
    r->threads = sdb_threads_get();
    r->steps = o->steps;
    r->reps = reps;
    r->weights_mib = (m->w_text.bytes + m->w_unet.bytes + m->w_vae.bytes) / 1048576.0;
    r->weights_f16 = m->weights_f16;
    r->conv = m->conv;
    double t[64];
    int rc = 0;

    sdb_logf(log, SDB_LOG_INFO, "bench: OpenBLAS sgemm %d^2 (%d threads)", o->gemm_n, r->threads);
    samples sm = {{0}, 0};
    sm.v[sm.n++] = sdb_bench_sgemm_gflops(o->gemm_n, 3);

    /* text encoding: prompt and negative prompt, batch 1 each, as the pipeline runs them */
    const sdb_clip_config *cc = sdb_clip_get_config(m->clip);
    const int L = sdb_tokenizer_max_length(m->tok), hid = cc->hidden_size;
    int32_t ids[2][1024];
    if (L > 1024) return sdb_fail(err, SDB_EUNSUPPORTED, "bench: tokenizer max length %d too large", L);
    float *ctx = malloc(sizeof(float) * 2 * L * hid);
    if (!ctx) return sdb_fail(err, SDB_ENOMEM, "bench: out of memory");
    const char *prompts[2] = {"a photograph of an astronaut riding a horse on the moon, detailed, 8k", ""};
    sdb_logf(log, SDB_LOG_INFO, "bench: text encoding");
    const int text_reps = o->stages & SDB_BENCH_TEXT ? reps : 0; /* the U-Net needs the states */
    for (int rep = -1; rep < text_reps; rep++) {
        double t0 = sdb_prof_now();
        for (int i = 0; i < 2 && !rc; i++) {
            rc = sdb_tokenizer_encode(m->tok, prompts[i], -1, ids[i], NULL, log, err);
            if (!rc) rc = sdb_clip_encode(m->clip, ids[i], 1, ctx + (size_t)i * L * hid, &m->arena, err);
        }
        if (rc) goto out;
        if (rep >= 0) t[rep] = sdb_prof_now() - t0;
    }
    if (text_reps) r->text_encode_s = sdb_bench_median(t, reps);
    r->text_gflop = 2 * clip_flops(cc, 1, L) / 1e9;

    /* one U-Net step with guidance: batch 2 (negative, positive) */
    if (o->stages & SDB_BENCH_UNET) {
        const int cin = sdb_unet_in_channels(m->unet), cout = sdb_unet_out_channels(m->unet);
        size_t nin = (size_t)2 * cin * lh * lw, nout = (size_t)2 * cout * lh * lw;
        float *x = malloc(sizeof(float) * nin), *y = malloc(sizeof(float) * nout);
        if (!x || !y) { free(x); free(y); rc = sdb_fail(err, SDB_ENOMEM, "bench: out of memory"); goto out; }
        fill(x, nin / 2, 3, 1.0f); /* as guidance runs it: cat([latents] * 2) at one t */
        memcpy(x + nin / 2, x, sizeof(float) * (nin / 2));
        double ts[2] = {981, 981};
        sdb_profile count = {0};
        sdb_logf(log, SDB_LOG_INFO, "bench: U-Net step, batch 2, %dx%d latents", lh, lw);
        sdb_unet_set_profile(m->unet, &count); /* the warm-up counts the FLOPs */
        rc = sdb_unet_forward(m->unet, x, 2, lh, lw, ts, ctx, L, y, &m->arena, err);
        r->unet_gflop = sdb_prof_total_flops(&count) / 1e9;
        sdb_unet_set_profile(m->unet, o->profile ? &r->unet_prof : NULL);
        int s0 = sm.n;
        double cpu[64];
        for (int rep = 0; rep < reps && !rc; rep++) {
            const double c0 = cpu_now();
            TIMED(t, rep, rc = sdb_unet_forward(m->unet, x, 2, lh, lw, ts, ctx, L, y, &m->arena, err));
            cpu[rep] = cpu_now() - c0;
            sample_sgemm(&sm, o->gemm_n);
        }
        if (!rc) r->unet_step_cpu_s = sdb_bench_median(cpu, reps);
        r->kept_filters_mib = sdb_unet_filter_memory(m->unet) / 1048576.0;
        r->unet_sgemm_gflops = sample_median(&sm, s0);
        sdb_unet_set_profile(m->unet, NULL);
        free(x); free(y);
        if (rc) goto out;
        if (o->profile) {
            r->have_prof = 1;
            sdb_prof_div(&r->unet_prof, reps);
        }
        double mn = t[0], mx = t[0];
        for (int i = 1; i < reps; i++) { mn = t[i] < mn ? t[i] : mn; mx = t[i] > mx ? t[i] : mx; }
        r->unet_step_min_s = mn;
        r->unet_step_max_s = mx;
        r->unet_step_s = sdb_bench_median(t, reps);
    }

    /* VAE encode and decode of one size x size image */
    if (o->stages & (SDB_BENCH_ENCODE | SDB_BENCH_DECODE)) {
        const sdb_vae_config *vc = sdb_vae_get_config(m->vae);
        int H, W;
        sdb_vae_image_size(m->vae, lh, lw, &H, &W);
        size_t nimg = (size_t)vc->in_channels * S * S, nlat = (size_t)vc->latent_channels * lh * lw;
        size_t nout = (size_t)vc->out_channels * H * W;
        float *img = malloc(sizeof(float) * (nimg > nout ? nimg : nout));
        float *mean = malloc(sizeof(float) * nlat), *sd = malloc(sizeof(float) * nlat);
        if (!img || !mean || !sd) { free(img); free(mean); free(sd); rc = sdb_fail(err, SDB_ENOMEM, "bench: out of memory"); goto out; }
        fill(img, nimg, 4, 1.0f);
        sdb_profile count = {0};
        sdb_logf(log, SDB_LOG_INFO, "bench: VAE encode %dx%d", S, S);
        const int enc_reps = o->stages & SDB_BENCH_ENCODE ? reps : 0, dec_reps = o->stages & SDB_BENCH_DECODE ? reps : 0;
        sdb_vae_set_profile(m->vae, &count);
        rc = sdb_vae_encode(m->vae, img, S, S, mean, sd, NULL, &m->arena, err);
        sdb_vae_set_profile(m->vae, NULL);
        r->vae_encode_gflop = sdb_prof_total_flops(&count) / 1e9;
        int s0 = sm.n;
        for (int rep = 0; rep < enc_reps && !rc; rep++) {
            TIMED(t, rep, rc = sdb_vae_encode(m->vae, img, S, S, mean, sd, NULL, &m->arena, err));
            sample_sgemm(&sm, o->gemm_n);
        }
        r->vae_encode_sgemm_gflops = sample_median(&sm, s0);
        if (!rc && enc_reps) r->vae_encode_s = sdb_bench_median(t, reps);
        fill(mean, nlat, 5, 1.0f);
        memset(&count, 0, sizeof count);
        if (!rc) sdb_logf(log, SDB_LOG_INFO, "bench: VAE decode %dx%d latents", lh, lw);
        sdb_vae_set_profile(m->vae, &count);
        if (!rc) rc = sdb_vae_decode(m->vae, mean, lh, lw, img, &m->arena, err);
        sdb_vae_set_profile(m->vae, NULL);
        r->vae_decode_gflop = sdb_prof_total_flops(&count) / 1e9;
        sdb_vae_set_profile(m->vae, o->profile ? &r->vae_decode_prof : NULL);
        s0 = sm.n;
        for (int rep = 0; rep < dec_reps && !rc; rep++) {
            TIMED(t, rep, rc = sdb_vae_decode(m->vae, mean, lh, lw, img, &m->arena, err));
            sample_sgemm(&sm, o->gemm_n);
        }
        r->vae_decode_sgemm_gflops = sample_median(&sm, s0);
        sdb_vae_set_profile(m->vae, NULL);
        sdb_prof_div(&r->vae_decode_prof, dec_reps);
        if (!rc && dec_reps) r->vae_decode_s = sdb_bench_median(t, reps);
        free(img); free(mean); free(sd);
        if (rc) goto out;
    }

    /* a whole inpainting run (a synthetic picture, the lower half masked) */
    if (o->steps > 0 && (o->stages & SDB_BENCH_RUN)) {
        sdb_image im = {0}, mk = {0}, res = {0};
        if ((rc = sdb_image_alloc(&im, S, S, 3, err))) goto out;
        if ((rc = sdb_image_alloc(&mk, S, S, 1, err))) { sdb_image_free(&im); goto out; }
        for (int yy = 0; yy < S; yy++)
            for (int xx = 0; xx < S; xx++) {
                for (int c = 0; c < 3; c++) im.px[((size_t)yy * S + xx) * 3 + c] = (uint8_t)((xx * 3 + yy * (c + 1)) & 255);
                mk.px[(size_t)yy * S + xx] = yy >= S / 2 ? 255 : 0;
            }
        sdb_gen_params p;
        sdb_gen_params_default(&p);
        p.prompt = prompts[0];
        p.seed = 1;
        p.steps = o->steps;
        p.image = &im;
        p.mask = &mk;
        sdb_logf(log, SDB_LOG_INFO, "bench: whole inpainting run, %d steps", o->steps);
        r->peak_rss_run = reset_peak_rss() == 0; /* VmHWM then measures the run alone */
        double t0 = sdb_prof_now();
        rc = sdb_generate(m, &p, NULL, NULL, &res, log, err);
        r->run_s = sdb_prof_now() - t0;
        sdb_image_free(&res);
        sdb_image_free(&im);
        sdb_image_free(&mk);
        if (rc) goto out;
    }
    r->peak_rss_mib = sdb_bench_peak_rss_mib();
out:
    r->sgemm_gflops = sample_median(&sm, 0);
    r->sgemm_samples = sm.n;
    free(ctx);
    return rc;
}
