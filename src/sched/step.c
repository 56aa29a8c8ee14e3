/*
 * step.c — the step functions of the schedulers (diffusers 0.30.3 order of operations, float32
 * elementwise arithmetic as torch does it; scalar factors are 0-dim float32 tensors there too).
 */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#endif

#include "sched_internal.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static int ensure_buffers(sdb_sched *s, size_t n, sdb_err *err)
{
    if (s->n == n) return 0;
    if (s->n != 0)
        return sdb_fail(err, SDB_EINVAL, "%s: sample size changed from %zu to %zu between steps",
                        sdb_sched_name(s), s->n, n);
    int k = s->kind;
    int need_ets = k == SDB_SCHED_PNDM;
    int need_mo = k == SDB_SCHED_DPMPP_2M || k == SDB_SCHED_DPMPP_2M_KARRAS;
    int need_d = k == SDB_SCHED_LMS;
    size_t b = n * sizeof(float);
    int fail = 0;
    for (int i = 0; i < 4; i++) {
        if (need_ets && !(s->ets[i] = malloc(b))) fail = 1;
        if (need_d && !(s->derivs[i] = malloc(b))) fail = 1;
    }
    if (need_ets && (!(s->cur_sample = malloc(b)) || !(s->cur_model_output = calloc(n, sizeof(float))))) fail = 1;
    if (need_mo) for (int i = 0; i < 2; i++) if (!(s->model_outputs[i] = malloc(b))) fail = 1;
    if (!(s->tmp = malloc(b)) || !(s->tmp2 = malloc(b))) fail = 1;
    s->n = n;
    if (fail) return sdb_fail(err, SDB_ENOMEM, "%s: out of memory for %zu-element state", sdb_sched_name(s), n);
    return 0;
}

/* ---- PNDM ---------------------------------------------------------------------------------- */

static float acp_at(const sdb_sched *s, long long t)
{
    return t >= 0 ? s->alphas_cumprod[t] : s->final_alpha_cumprod;
}

/* _get_prev_sample (formula (9) of the PNDM paper) */
static void pndm_prev_sample(const sdb_sched *s, const float *sample, long long t, long long tp,
                             const float *mo_in, float *prev, size_t n)
{
    const float a = acp_at(s, t), ap = acp_at(s, tp);
    const float b = 1.0f - a, bp = 1.0f - ap;
    const float *mo = mo_in;
    if (s->prediction == PRED_V) {
        const float sa = sqrtf(a), sb = sqrtf(b);
        float *v = s->tmp2;
        for (size_t i = 0; i < n; i++) v[i] = sa * mo_in[i] + sb * sample[i];
        mo = v;
    }
    const float sample_coeff = sqrtf(ap / a);
    const float denom = a * sqrtf(bp) + sqrtf(a * b * ap);
    const float diff = ap - a;
    for (size_t i = 0; i < n; i++) prev[i] = sample_coeff * sample[i] - (diff * mo[i]) / denom;
}

static void ets_push(sdb_sched *s, const float *mo, size_t n)
{
    float *last = s->ets[3];
    memmove(&s->ets[1], &s->ets[0], 3 * sizeof(float *));
    s->ets[0] = last;
    memcpy(s->ets[0], mo, n * sizeof(float));
    s->n_ets++;
}

static int step_pndm(sdb_sched *s, const float *mo, int index, const float *sample, float *prev, size_t n,
                     sdb_err *err)
{
    const int N = s->n_inference;
    long long t = (long long)s->timesteps[index];
    float *m = s->tmp;
    if (s->counter < s->n_prk && !s->skip_prk) {
        /* step_prk */
        long long diff_to_prev = s->counter % 2 ? 0 : s->num_train / N / 2;
        long long tp = t - diff_to_prev;
        t = (long long)s->timesteps[s->counter / 4 * 4];
        int c4 = s->counter % 4;
        const float f6 = (float)(1.0 / 6), f3 = (float)(1.0 / 3);
        if (c4 == 0) {
            for (size_t i = 0; i < n; i++) s->cur_model_output[i] = s->cur_model_output[i] + f6 * mo[i];
            ets_push(s, mo, n);
            memcpy(s->cur_sample, sample, n * sizeof(float));
            s->has_cur_sample = 1;
            memcpy(m, mo, n * sizeof(float));
        } else if (c4 == 1 || c4 == 2) {
            for (size_t i = 0; i < n; i++) s->cur_model_output[i] = s->cur_model_output[i] + f3 * mo[i];
            memcpy(m, mo, n * sizeof(float));
        } else {
            for (size_t i = 0; i < n; i++) m[i] = s->cur_model_output[i] + f6 * mo[i];
            memset(s->cur_model_output, 0, n * sizeof(float));
        }
        const float *cur = s->has_cur_sample ? s->cur_sample : sample;
        pndm_prev_sample(s, cur, t, tp, m, prev, n);
        s->counter++;
        return 0;
    }
    /* step_plms */
    if (!s->skip_prk && s->n_ets < 3)
        return sdb_fail(err, SDB_ESTATE, "pndm: PLMS steps need at least 3 PRK model outputs first");
    long long tp = t - s->num_train / N;
    if (s->counter != 1) {
        ets_push(s, mo, n);
    } else {
        tp = t;
        t = t + s->num_train / N;
    }
    const float *smp = sample;
    if (s->n_ets == 1 && s->counter == 0) {
        memcpy(m, mo, n * sizeof(float));
        memcpy(s->cur_sample, sample, n * sizeof(float));
        s->has_cur_sample = 1;
    } else if (s->n_ets == 1 && s->counter == 1) {
        const float *e1 = s->ets[0];
        for (size_t i = 0; i < n; i++) m[i] = (mo[i] + e1[i]) / 2.0f;
        s->has_cur_sample = 0; /* sample = cur_sample; cur_sample = None */
        smp = s->cur_sample;
    } else if (s->n_ets == 2) {
        const float *e1 = s->ets[0], *e2 = s->ets[1];
        for (size_t i = 0; i < n; i++) m[i] = (3.0f * e1[i] - e2[i]) / 2.0f;
    } else if (s->n_ets == 3) {
        const float *e1 = s->ets[0], *e2 = s->ets[1], *e3 = s->ets[2];
        for (size_t i = 0; i < n; i++) m[i] = ((23.0f * e1[i] - 16.0f * e2[i]) + 5.0f * e3[i]) / 12.0f;
    } else {
        const float *e1 = s->ets[0], *e2 = s->ets[1], *e3 = s->ets[2], *e4 = s->ets[3];
        const float c = (float)(1.0 / 24);
        for (size_t i = 0; i < n; i++)
            m[i] = c * (((55.0f * e1[i] - 59.0f * e2[i]) + 37.0f * e3[i]) - 9.0f * e4[i]);
    }
    pndm_prev_sample(s, smp, t, tp, m, prev, n);
    s->counter++;
    return 0;
}

/* ---- DDIM ---------------------------------------------------------------------------------- */

static int step_ddim(sdb_sched *s, const float *mo, int index, const float *sample, float *prev, size_t n,
                     sdb_rng *rng, sdb_err *err)
{
    long long t = (long long)s->timesteps[index];
    long long tp = t - s->num_train / s->n_inference;
    const float a = s->alphas_cumprod[t];
    const float ap = acp_at(s, tp);
    const float b = 1.0f - a;
    const float sa = sqrtf(a), sb = sqrtf(b);
    float *x0 = s->tmp, *eps = s->tmp2;
    if (s->prediction == PRED_EPSILON) {
        for (size_t i = 0; i < n; i++) { x0[i] = (sample[i] - sb * mo[i]) / sa; eps[i] = mo[i]; }
    } else {
        for (size_t i = 0; i < n; i++) {
            x0[i] = sa * sample[i] - sb * mo[i];
            eps[i] = sa * mo[i] + sb * sample[i];
        }
    }
    if (s->clip_sample) {
        const float r = (float)s->clip_range;
        for (size_t i = 0; i < n; i++) x0[i] = x0[i] < -r ? -r : (x0[i] > r ? r : x0[i]);
    }
    /* _get_variance */
    const float bp = 1.0f - ap;
    const float variance = (bp / b) * (1.0f - a / ap);
    const float std_dev_t = (float)s->eta * sqrtf(variance);
    const float dir_coeff = sqrtf((1.0f - ap) - std_dev_t * std_dev_t);
    const float sap = sqrtf(ap);
    for (size_t i = 0; i < n; i++) prev[i] = sap * x0[i] + dir_coeff * eps[i];
    if (s->eta > 0) {
        if (!rng) return sdb_fail(err, SDB_EINVAL, "ddim with eta > 0 needs a random generator");
        float *noise = s->tmp2;
        sdb_rng_randn(rng, noise, n);
        for (size_t i = 0; i < n; i++) prev[i] = prev[i] + std_dev_t * noise[i];
    }
    return 0;
}

/* ---- Euler, Euler ancestral ---------------------------------------------------------------- */

/* pred_original_sample for v-prediction: mo * (-sigma / (sigma^2+1)^0.5) + sample / (sigma^2+1) */
static void v_to_x0(float sigma, const float *mo, const float *sample, float *x0, size_t n)
{
    const float s2p1 = sigma * sigma + 1.0f;
    const float c = -sigma / sqrtf(s2p1);
    for (size_t i = 0; i < n; i++) x0[i] = mo[i] * c + sample[i] / s2p1;
}

static int step_euler(sdb_sched *s, const float *mo, int index, const float *sample, float *prev, size_t n,
                      sdb_rng *rng, sdb_err *err)
{
    const float sigma = s->sigmas[index];
    /* the unused churn noise: randn(model_output.shape, generator) is drawn at every step */
    if (rng) sdb_rng_randn(rng, s->tmp2, n);
    const float sigma_hat = sigma * (0.0f + 1.0f); /* gamma = 0 (s_churn = 0) */
    float *x0 = s->tmp;
    if (s->prediction == PRED_EPSILON) for (size_t i = 0; i < n; i++) x0[i] = sample[i] - sigma_hat * mo[i];
    else v_to_x0(sigma, mo, sample, x0, n);
    const float dt = s->sigmas[index + 1] - sigma_hat;
    for (size_t i = 0; i < n; i++) {
        float d = (sample[i] - x0[i]) / sigma_hat;
        prev[i] = sample[i] + d * dt;
    }
    (void)err;
    return 0;
}

static int step_euler_a(sdb_sched *s, const float *mo, int index, const float *sample, float *prev, size_t n,
                        sdb_rng *rng, sdb_err *err)
{
    if (!rng) return sdb_fail(err, SDB_EINVAL, "euler_a needs a random generator");
    const float sigma = s->sigmas[index];
    float *x0 = s->tmp;
    if (s->prediction == PRED_EPSILON) for (size_t i = 0; i < n; i++) x0[i] = sample[i] - sigma * mo[i];
    else v_to_x0(sigma, mo, sample, x0, n);
    const float sf = s->sigmas[index], st = s->sigmas[index + 1];
    const float sigma_up = sqrtf(((st * st) * (sf * sf - st * st)) / (sf * sf));
    const float sigma_down = sqrtf(st * st - sigma_up * sigma_up);
    const float dt = sigma_down - sigma;
    for (size_t i = 0; i < n; i++) {
        float d = (sample[i] - x0[i]) / sigma;
        prev[i] = sample[i] + d * dt;
    }
    float *noise = s->tmp2;
    sdb_rng_randn(rng, noise, n);
    for (size_t i = 0; i < n; i++) prev[i] = prev[i] + noise[i] * sigma_up;
    return 0;
}

/* ---- LMS ----------------------------------------------------------------------------------- */

/* get_lms_coefficient: scipy.integrate.quad of the Lagrange basis polynomial
 *     prod_{k != cur} (tau - s[t-k]) / (s[t-cur] - s[t-k])   over [s[t], s[t+1]],
 * whose factors diffusers evaluates as float32 torch scalars ((float)tau - s, then / and *).
 * For this polynomial (degree <= 3) QUADPACK's qags accepts its first 21-point Gauss-Kronrod
 * estimate, which is what is computed here, with the integrand rounded the same way. */
static double lms_basis(const sdb_sched *s, int order, int t, int cur, double tau)
{
    double prod = 1.0;
    int first = 1;
    float p = 1.0f;
    for (int k = 0; k < order; k++) {
        if (k == cur) continue;
        float num = (float)tau - s->sigmas[t - k];
        float den = s->sigmas[t - cur] - s->sigmas[t - k];
        float q = num / den;
        p = first ? q : p * q;
        first = 0;
    }
    if (!first) prod = p;
    return prod;
}

static double lms_coefficient(const sdb_sched *s, int order, int t, int cur)
{
    /* QUADPACK dqk21 nodes (xgk) and weights (wgk, wg): Kronrod nodes at odd 1-based positions */
    static const double xgk[11] = {
        0.995657163025808080735527280689003, 0.973906528517171720077964012084452,
        0.930157491355708226001207180059508, 0.865063366688984510732096688423493,
        0.780817726586416897063717578345042, 0.679409568299024406234327365114874,
        0.562757134668604683339000099272694, 0.433395394129247190799265943165784,
        0.294392862701460198131126603103866, 0.148874338981631210884826001129720, 0.0};
    static const double wgk[11] = {
        0.011694638867371874278064396062192, 0.032558162307964727478818972459390,
        0.054755896574351996031381300244580, 0.075039674810919952767043140916190,
        0.093125454583697605535065465083366, 0.109387158802297641899210590325805,
        0.123491976262065851077208272890900, 0.134709217311473325928054001771707,
        0.142775938577060080797094273138717, 0.147739104901338491374841515972068,
        0.149445554002916905664936468389821};
    const double a = s->sigmas[t], b = s->sigmas[t + 1];
    const double centr = 0.5 * (a + b), hlgth = 0.5 * (b - a);
    double resk = wgk[10] * lms_basis(s, order, t, cur, centr);
    for (int j = 1; j <= 5; j++) {          /* Gauss nodes: 1-based 2, 4, ..., 10 */
        int jtw = 2 * j - 1;
        double absc = hlgth * xgk[jtw];
        double fsum = lms_basis(s, order, t, cur, centr - absc) + lms_basis(s, order, t, cur, centr + absc);
        resk = resk + wgk[jtw] * fsum;
    }
    for (int j = 1; j <= 5; j++) {          /* Kronrod-only nodes: 1-based 1, 3, ..., 9 */
        int jtwm1 = 2 * j - 2;
        double absc = hlgth * xgk[jtwm1];
        double fsum = lms_basis(s, order, t, cur, centr - absc) + lms_basis(s, order, t, cur, centr + absc);
        resk = resk + wgk[jtwm1] * fsum;
    }
    return resk * hlgth;
}

static int step_lms(sdb_sched *s, const float *mo, int index, const float *sample, float *prev, size_t n,
                    sdb_err *err)
{
    const float sigma = s->sigmas[index];
    float *x0 = s->tmp;
    if (s->prediction == PRED_EPSILON) for (size_t i = 0; i < n; i++) x0[i] = sample[i] - sigma * mo[i];
    else v_to_x0(sigma, mo, sample, x0, n);
    /* derivatives.append(d); keep the last 4 (derivs[0] newest) */
    float *d = s->derivs[3];
    memmove(&s->derivs[1], &s->derivs[0], 3 * sizeof(float *));
    s->derivs[0] = d;
    for (size_t i = 0; i < n; i++) d[i] = (sample[i] - x0[i]) / sigma;
    if (s->n_derivs < 4) s->n_derivs++;
    int order = index + 1 < 4 ? index + 1 : 4;
    int terms = order < s->n_derivs ? order : s->n_derivs; /* zip(coeffs, reversed(derivatives)) */
    float c[4];
    for (int k = 0; k < terms; k++) c[k] = (float)lms_coefficient(s, order, index, k);
    float *acc = s->tmp2;
    for (size_t i = 0; i < n; i++) {
        float sum = c[0] * s->derivs[0][i];
        for (int k = 1; k < terms; k++) sum = sum + c[k] * s->derivs[k][i];
        acc[i] = sum;
    }
    for (size_t i = 0; i < n; i++) prev[i] = sample[i] + acc[i];
    (void)err;
    return 0;
}

/* ---- torch.log / torch.exp of a float32 tensor ---------------------------------------------
 * torch 1.13's CPU kernels (no MKL) run every element, even of a 0-dim tensor, through SLEEF's
 * vectorised Sleef_logf8_u10 / Sleef_expf8_u10 (AVX2 build: FMA). One lane of each, written from
 * SLEEF's published algorithms (double-float arithmetic with fused multiply-adds), so DPM-Solver's
 * lambdas and exp(-h) come out as torch computes them rather than as libm's logf/expf. */

typedef struct { float x, y; } df32;

static df32 df_add2_ff(float x, float y)
{
    float s = x + y, v = s - x;
    df32 r = {s, (x - (s - v)) + (y - v)};
    return r;
}

static df32 df_add_dd(df32 x, df32 y) /* |x| >= |y| */
{
    float s = x.x + y.x;
    df32 r = {s, (((x.x - s) + y.x) + x.y) + y.y};
    return r;
}

static df32 df_add_df(df32 x, float y) /* |x| >= |y| */
{
    float s = x.x + y;
    df32 r = {s, ((x.x - s) + y) + x.y};
    return r;
}

static df32 df_mul_df(df32 x, float y)
{
    float s = x.x * y;
    df32 r = {s, fmaf(x.y, y, fmaf(x.x, y, -s))};
    return r;
}

static df32 df_div(df32 n, df32 d)
{
    float t = 1.0f / d.x;
    float s = n.x * t;
    float u = fmaf(t, n.x, -s);
    float v = fmaf(-d.y, t, fmaf(-d.x, t, 1.0f));
    df32 r = {s, fmaf(s, v, fmaf(n.y, t, u))};
    return r;
}

float sdb_sched_torch_logf(float d)
{
    if (isnan(d) || d < 0) return NAN;
    if (d == 0) return -INFINITY;
    if (isinf(d)) return INFINITY;
    int small = d < 1.17549435e-38f; /* FLT_MIN */
    if (small) d = d * (18446744073709551616.0f);
    uint32_t bits;
    float dq = d * (1.0f / 0.75f);
    memcpy(&bits, &dq, 4);
    int e = (int)((bits >> 23) & 0xff) - 0x7f;
    uint32_t mb;
    memcpy(&mb, &d, 4);
    mb = (uint32_t)((int32_t)mb + (int32_t)((uint32_t)(-e) << 23));
    float m;
    memcpy(&m, &mb, 4);
    if (small) e -= 64;
    df32 c = {0.69314718246459960938f, -1.904654323148236017e-09f};
    df32 s = df_mul_df(c, (float)e);
    df32 x = df_div(df_add2_ff(-1.0f, m), df_add2_ff(1.0f, m));
    float x2 = x.x * x.x;
    float t = 0.3027294874e+0f;
    t = fmaf(t, x2, 0.3996108174e+0f);
    t = fmaf(t, x2, 0.6666694880e+0f);
    df32 x2s = {x.x * 2.0f, x.y * 2.0f};
    s = df_add_dd(s, x2s);
    s = df_add_df(s, (x2 * x.x) * t);
    return s.x + s.y;
}

static float pow2i(int q)
{
    uint32_t b = (uint32_t)(q + 0x7f) << 23;
    float f;
    memcpy(&f, &b, 4);
    return f;
}

static float torch_expf(float d)
{
    if (isnan(d)) return d;
    if (d < -104.0f) return 0.0f;
    if (d > 100.0f) return INFINITY;
    int q = (int)nearbyintf(d * 1.442695040888963407359924681001892137426645954152985934135449406931f);
    float s = fmaf((float)q, -0.693145751953125f, d);
    s = fmaf((float)q, -1.428606765330187045e-06f, s);
    float u = 0.000198527617612853646278381f;
    u = fmaf(u, s, 0.00139304355252534151077271f);
    u = fmaf(u, s, 0.00833336077630519866943359f);
    u = fmaf(u, s, 0.0416664853692054748535156f);
    u = fmaf(u, s, 0.166666671633720397949219f);
    u = fmaf(u, s, 0.5f);
    u = 1.0f + fmaf(s * s, u, s);
    int h = q >> 1;
    return (u * pow2i(h)) * pow2i(q - h);
}

/* ---- DPM-Solver++ (2M) --------------------------------------------------------------------- */

static void alpha_sigma(float sigma, float *alpha_t, float *sigma_t)
{
    *alpha_t = 1.0f / sqrtf(sigma * sigma + 1.0f);
    *sigma_t = sigma * *alpha_t;
}

static int step_dpm(sdb_sched *s, const float *mo, int index, const float *sample, float *prev, size_t n,
                    sdb_err *err)
{
    const int nt = s->nt;
    const int lower_order_final = index == nt - 1 &&
        (s->euler_at_final || (s->lower_order_final && nt < 15) || !s->final_sigma_min);
    /* convert_model_output -> x0_pred, pushed into model_outputs */
    float a0, s0;
    alpha_sigma(s->sigmas[index], &a0, &s0);
    float *m_new = s->model_outputs[0]; /* the oldest buffer becomes the newest */
    s->model_outputs[0] = s->model_outputs[1];
    s->model_outputs[1] = m_new;
    if (s->prediction == PRED_EPSILON) for (size_t i = 0; i < n; i++) m_new[i] = (sample[i] - s0 * mo[i]) / a0;
    else for (size_t i = 0; i < n; i++) m_new[i] = a0 * sample[i] - s0 * mo[i];

    float at, st, as0, ss0;
    alpha_sigma(s->sigmas[index + 1], &at, &st);
    alpha_sigma(s->sigmas[index], &as0, &ss0);
    const float lambda_t = sdb_sched_torch_logf(at) - sdb_sched_torch_logf(st);
    const float lambda_s0 = sdb_sched_torch_logf(as0) - sdb_sched_torch_logf(ss0);
    const float h = lambda_t - lambda_s0;
    const float r_sig = st / ss0;
    const float c0 = at * (torch_expf(-h) - 1.0f);
    const float *m0 = s->model_outputs[1];
    if (s->lower_order_nums < 1 || lower_order_final) {
        for (size_t i = 0; i < n; i++) prev[i] = r_sig * sample[i] - c0 * m0[i];
    } else {
        float as1, ss1;
        alpha_sigma(s->sigmas[index - 1], &as1, &ss1);
        const float lambda_s1 = sdb_sched_torch_logf(as1) - sdb_sched_torch_logf(ss1);
        const float h0 = lambda_s0 - lambda_s1;
        const float r0 = h0 / h;
        const float inv_r0 = 1.0f / r0;
        const float c1 = 0.5f * c0;
        const float *m1 = s->model_outputs[0];
        for (size_t i = 0; i < n; i++) {
            float d1 = inv_r0 * (m0[i] - m1[i]);
            prev[i] = (r_sig * sample[i] - c0 * m0[i]) - c1 * d1;
        }
    }
    if (s->lower_order_nums < 2) s->lower_order_nums++;
    (void)err;
    return 0;
}

int sdb_sched_step_impl(sdb_sched *s, const float *mo, int index, const float *sample, float *prev, size_t n,
                        sdb_rng *rng, sdb_err *err)
{
    if (!s->n_inference) return sdb_fail(err, SDB_ESTATE, "%s: set_timesteps was not called", sdb_sched_name(s));
    if (index < 0 || index >= s->nt)
        return sdb_fail(err, SDB_EINVAL, "%s: step index %d outside 0..%d", sdb_sched_name(s), index, s->nt - 1);
    if (s->last_index >= 0 && index != s->last_index + 1)
        return sdb_fail(err, SDB_ESTATE, "%s: steps must be taken in order (index %d after %d)",
                        sdb_sched_name(s), index, s->last_index);
    int rc = ensure_buffers(s, n, err);
    if (rc) return rc;
    switch (s->kind) {
    case SDB_SCHED_PNDM: rc = step_pndm(s, mo, index, sample, prev, n, err); break;
    case SDB_SCHED_DDIM: rc = step_ddim(s, mo, index, sample, prev, n, rng, err); break;
    case SDB_SCHED_EULER: rc = step_euler(s, mo, index, sample, prev, n, rng, err); break;
    case SDB_SCHED_EULER_A: rc = step_euler_a(s, mo, index, sample, prev, n, rng, err); break;
    case SDB_SCHED_LMS: rc = step_lms(s, mo, index, sample, prev, n, err); break;
    default: rc = step_dpm(s, mo, index, sample, prev, n, err); break;
    }
    if (!rc) s->last_index = index;
    return rc;
}

int sdb_sched_step(sdb_sched *s, const float *model_output, int index, const float *sample, float *prev,
                   size_t n, sdb_rng *rng, sdb_err *err)
{
    return sdb_sched_step_impl(s, model_output, index, sample, prev, n, rng, err);
}
