/*
 * scheduler.c — the common part of the schedulers: names, config resolution (diffusers'
 * from_config), the train-time betas/alphas_cumprod, set_timesteps (timesteps and sigmas),
 * strength, scale_model_input and add_noise. The step functions are in step.c.
 *
 * Numerics follow diffusers 0.30.3 + torch 1.13 (CPU): torch.linspace's float32 kernel (as the
 * AVX2 build evaluates it), cumprod accumulated in double, numpy float64 for np.linspace /
 * np.arange / np.interp / Karras sigmas, then the cast to float32 where diffusers casts.
 */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#endif

#include "sched_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const k_names[SDB_SCHED_COUNT] = {
    "pndm", "ddim", "euler", "euler_a", "dpmpp_2m", "dpmpp_2m_karras", "lms"};
static const char *const k_classes[SDB_SCHED_COUNT] = {
    "PNDMScheduler", "DDIMScheduler", "EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler",
    "DPMSolverMultistepScheduler", "DPMSolverMultistepScheduler", "LMSDiscreteScheduler"};

const char *sdb_sched_names(void) { return "pndm, ddim, euler, euler_a, dpmpp_2m, dpmpp_2m_karras, lms"; }

int sdb_sched_kind_from_name(const char *name, sdb_sched_kind *kind, sdb_err *err)
{
    for (int k = 0; k < SDB_SCHED_COUNT; k++)
        if (name && strcmp(name, k_names[k]) == 0) { *kind = (sdb_sched_kind)k; return 0; }
    return sdb_fail(err, SDB_EINVAL, "unknown scheduler '%s' (supported: %s)", name ? name : "(null)",
                    sdb_sched_names());
}

static const char *cfg_name(const sdb_config *cfg)
{
    return cfg && cfg->path ? cfg->path : "scheduler config";
}

int sdb_sched_default_name(const sdb_config *cfg, const char **name, sdb_err *err)
{
    const char *cls = NULL;
    if (!cfg) return sdb_fail(err, SDB_EINVAL, "no scheduler config and no scheduler name given");
    if (sdb_config_string(cfg, "_class_name", NULL, &cls, err)) return err ? err->code : SDB_EFORMAT;
    if (!cls)
        return sdb_fail(err, SDB_EFORMAT, "%s: no '_class_name'; pick a scheduler by name (%s)",
                        cfg_name(cfg), sdb_sched_names());
    if (strcmp(cls, "DPMSolverMultistepScheduler") == 0) {
        const char *alg = NULL, *st = NULL;
        long long order = 2;
        int karras = 0;
        if (sdb_config_string(cfg, "algorithm_type", "dpmsolver++", &alg, err) ||
            sdb_config_string(cfg, "solver_type", "midpoint", &st, err) ||
            sdb_config_int(cfg, "solver_order", 2, &order, err) ||
            sdb_config_bool(cfg, "use_karras_sigmas", 0, &karras, err))
            return err ? err->code : SDB_EFORMAT;
        if (strcmp(alg, "dpmsolver++") != 0 || strcmp(st, "midpoint") != 0 || order != 2)
            return sdb_fail(err, SDB_EUNSUPPORTED,
                            "%s: DPMSolverMultistepScheduler with algorithm_type '%s', solver_type '%s', "
                            "solver_order %lld is not supported (supported: dpmsolver++, midpoint, order 2 = "
                            "dpmpp_2m / dpmpp_2m_karras); pick a scheduler by name (%s)",
                            cfg_name(cfg), alg, st, order, sdb_sched_names());
        *name = karras ? "dpmpp_2m_karras" : "dpmpp_2m";
        return 0;
    }
    for (int k = 0; k < SDB_SCHED_COUNT; k++)
        if (strcmp(cls, k_classes[k]) == 0) { *name = k_names[k]; return 0; }
    return sdb_fail(err, SDB_EUNSUPPORTED,
                    "%s: scheduler class '%s' is not supported (supported classes: PNDMScheduler, "
                    "DDIMScheduler, EulerDiscreteScheduler, EulerAncestralDiscreteScheduler, "
                    "DPMSolverMultistepScheduler, LMSDiscreteScheduler); pick one by name (%s)",
                    cfg_name(cfg), cls, sdb_sched_names());
}

/* ---- config getters tolerant of cfg == NULL ------------------------------------------------ */

static int get_int(const sdb_config *c, const char *k, long long def, long long *o, sdb_err *e)
{ if (!c) { *o = def; return 0; } return sdb_config_int(c, k, def, o, e); }
static int get_dbl(const sdb_config *c, const char *k, double def, double *o, sdb_err *e)
{ if (!c) { *o = def; return 0; } return sdb_config_double(c, k, def, o, e); }
static int get_bool(const sdb_config *c, const char *k, int def, int *o, sdb_err *e)
{ if (!c) { *o = def; return 0; } return sdb_config_bool(c, k, def, o, e); }
static int get_str(const sdb_config *c, const char *k, const char *def, const char **o, sdb_err *e)
{ if (!c) { *o = def; return 0; } return sdb_config_string(c, k, def, o, e); }

#define TRY(x) do { int rc_ = (x); if (rc_) return rc_; } while (0)

static int refuse(sdb_err *err, const sdb_config *cfg, const char *cls, const char *key, const char *val,
                  const char *supported)
{
    return sdb_fail(err, SDB_EUNSUPPORTED, "%s: %s %s = %s is not supported (supported: %s)",
                    cfg_name(cfg), cls, key, val, supported);
}

static int parse_config(sdb_sched *s, const sdb_config *cfg, sdb_err *err)
{
    const sdb_sched_kind k = s->kind;
    const char *cls = k_classes[k];
    const int is_dpm = k == SDB_SCHED_DPMPP_2M || k == SDB_SCHED_DPMPP_2M_KARRAS;
    long long nt;
    TRY(get_int(cfg, "num_train_timesteps", 1000, &nt, err));
    if (nt < 2 || nt > 100000) return refuse(err, cfg, cls, "num_train_timesteps", "out of range", "2..100000");
    s->num_train = (int)nt;
    TRY(get_dbl(cfg, "beta_start", 0.0001, &s->beta_start, err));
    TRY(get_dbl(cfg, "beta_end", 0.02, &s->beta_end, err));
    const char *bs;
    TRY(get_str(cfg, "beta_schedule", "linear", &bs, err));
    if (strcmp(bs, "linear") == 0) s->beta_schedule = BETAS_LINEAR;
    else if (strcmp(bs, "scaled_linear") == 0) s->beta_schedule = BETAS_SCALED_LINEAR;
    else if (strcmp(bs, "squaredcos_cap_v2") == 0) s->beta_schedule = BETAS_SQUAREDCOS;
    else return refuse(err, cfg, cls, "beta_schedule", bs, "linear, scaled_linear, squaredcos_cap_v2");
    if (cfg && sdb_config_has(cfg, "trained_betas"))
        return refuse(err, cfg, cls, "trained_betas", "(an array)", "null");

    const char *pt;
    TRY(get_str(cfg, "prediction_type", "epsilon", &pt, err));
    if (strcmp(pt, "epsilon") == 0) s->prediction = PRED_EPSILON;
    else if (strcmp(pt, "v_prediction") == 0) s->prediction = PRED_V;
    else return refuse(err, cfg, cls, "prediction_type", pt, "epsilon, v_prediction");

    const char *sp;
    int leading_default = k == SDB_SCHED_PNDM || k == SDB_SCHED_DDIM;
    TRY(get_str(cfg, "timestep_spacing", leading_default ? "leading" : "linspace", &sp, err));
    if (strcmp(sp, "leading") == 0) s->spacing = SPACING_LEADING;
    else if (strcmp(sp, "trailing") == 0) s->spacing = SPACING_TRAILING;
    else if (strcmp(sp, "linspace") == 0) s->spacing = SPACING_LINSPACE;
    else return refuse(err, cfg, cls, "timestep_spacing", sp, "leading, trailing, linspace");
    TRY(get_int(cfg, "steps_offset", 0, &s->steps_offset, err));

    if (k == SDB_SCHED_PNDM || k == SDB_SCHED_DDIM)
        TRY(get_bool(cfg, "set_alpha_to_one", k == SDB_SCHED_DDIM, &s->set_alpha_to_one, err));
    if (k == SDB_SCHED_PNDM) TRY(get_bool(cfg, "skip_prk_steps", 0, &s->skip_prk, err));
    if (k == SDB_SCHED_DDIM) {
        int thr;
        TRY(get_bool(cfg, "clip_sample", 1, &s->clip_sample, err));
        TRY(get_dbl(cfg, "clip_sample_range", 1.0, &s->clip_range, err));
        TRY(get_bool(cfg, "thresholding", 0, &thr, err));
        if (thr) return refuse(err, cfg, cls, "thresholding", "true", "false");
    }
    if (k != SDB_SCHED_PNDM && k != SDB_SCHED_LMS) {
        int rz;
        TRY(get_bool(cfg, "rescale_betas_zero_snr", 0, &rz, err));
        if (rz) return refuse(err, cfg, cls, "rescale_betas_zero_snr", "true", "false");
    }
    if (k == SDB_SCHED_EULER || k == SDB_SCHED_LMS) TRY(get_bool(cfg, "use_karras_sigmas", 0, &s->use_karras, err));
    if (k == SDB_SCHED_DPMPP_2M_KARRAS) s->use_karras = 1;
    s->cfg_sigma_min = s->cfg_sigma_max = NAN;
    if (k == SDB_SCHED_EULER) {
        const char *it, *tt;
        TRY(get_str(cfg, "interpolation_type", "linear", &it, err));
        if (strcmp(it, "linear") != 0) return refuse(err, cfg, cls, "interpolation_type", it, "linear");
        TRY(get_str(cfg, "timestep_type", "discrete", &tt, err));
        if (strcmp(tt, "discrete") != 0) return refuse(err, cfg, cls, "timestep_type", tt, "discrete");
        if (cfg && sdb_config_has(cfg, "sigma_min")) TRY(get_dbl(cfg, "sigma_min", NAN, &s->cfg_sigma_min, err));
        if (cfg && sdb_config_has(cfg, "sigma_max")) TRY(get_dbl(cfg, "sigma_max", NAN, &s->cfg_sigma_max, err));
    }
    if (k == SDB_SCHED_EULER || is_dpm) {
        const char *fs;
        TRY(get_str(cfg, "final_sigmas_type", "zero", &fs, err));
        if (strcmp(fs, "zero") == 0) s->final_sigma_min = 0;
        else if (strcmp(fs, "sigma_min") == 0) s->final_sigma_min = 1;
        else return refuse(err, cfg, cls, "final_sigmas_type", fs, "zero, sigma_min");
    }
    if (is_dpm) {
        int thr, lu;
        TRY(get_bool(cfg, "lower_order_final", 1, &s->lower_order_final, err));
        TRY(get_bool(cfg, "euler_at_final", 0, &s->euler_at_final, err));
        TRY(get_bool(cfg, "thresholding", 0, &thr, err));
        if (thr) return refuse(err, cfg, cls, "thresholding", "true", "false");
        TRY(get_bool(cfg, "use_lu_lambdas", 0, &lu, err));
        if (lu) return refuse(err, cfg, cls, "use_lu_lambdas", "true", "false");
        if (cfg && sdb_config_has(cfg, "variance_type")) {
            const char *vt;
            TRY(get_str(cfg, "variance_type", NULL, &vt, err));
            return refuse(err, cfg, cls, "variance_type", vt, "null");
        }
        TRY(get_dbl(cfg, "lambda_min_clipped", -INFINITY, &s->lambda_min_clipped, err));
        /* algorithm_type / solver_order / solver_type: the name fixes them (dpmsolver++, 2, midpoint) */
    }
    return 0;
}

/* ---- train-time tables --------------------------------------------------------------------- */

/* torch.linspace(start, end, steps, dtype=float32) as torch 1.13's AVX2 CPU kernel computes it:
 * blocks of 2x8 lanes, each 8-lane vector based at fma(step, idx, start) (or from the end for the
 * second half) plus k*step, the < 16 leftover elements one by one. */
static void torch_linspace_f32(double start_d, double end_d, int steps, float *out)
{
    const float start = (float)start_d, end = (float)end_d;
    if (steps == 1) { out[0] = start; return; }
    const float step = (end - start) / (float)(steps - 1);
    const int halfway = steps / 2;
    int idx = 0;
    for (; idx + 16 <= steps;) {
        for (int v = 0; v < 2; v++) {
            float base = idx < halfway ? fmaf(step, (float)idx, start)
                                       : fmaf(-step, (float)(steps - idx - 1), end);
            for (int k = 0; k < 8; k++) out[idx + k] = base + (float)k * step;
            idx += 8;
        }
    }
    for (; idx < steps; idx++)
        out[idx] = idx < halfway ? fmaf(step, (float)idx, start) : fmaf(-step, (float)(steps - idx - 1), end);
}

static double alpha_bar_cos(double t)
{
    double c = cos((t + 0.008) / 1.008 * M_PI / 2);
    return c * c;
}

static int build_tables(sdb_sched *s, sdb_err *err)
{
    const int N = s->num_train;
    s->betas = malloc((size_t)N * sizeof(float));
    s->alphas_cumprod = malloc((size_t)N * sizeof(float));
    if (!s->betas || !s->alphas_cumprod) return sdb_fail(err, SDB_ENOMEM, "scheduler: out of memory");
    if (s->beta_schedule == BETAS_LINEAR) {
        torch_linspace_f32(s->beta_start, s->beta_end, N, s->betas);
    } else if (s->beta_schedule == BETAS_SCALED_LINEAR) {
        torch_linspace_f32(sqrt(s->beta_start), sqrt(s->beta_end), N, s->betas);
        for (int i = 0; i < N; i++) s->betas[i] = s->betas[i] * s->betas[i];
    } else {
        for (int i = 0; i < N; i++) {
            double t1 = (double)i / N, t2 = (double)(i + 1) / N;
            double b = 1 - alpha_bar_cos(t2) / alpha_bar_cos(t1);
            s->betas[i] = (float)(b < 0.999 ? b : 0.999);
        }
    }
    /* torch.cumprod(1 - betas): float32 alphas, accumulated in double (acc_type) */
    double acc = 1.0;
    for (int i = 0; i < N; i++) {
        float a = 1.0f - s->betas[i];
        acc *= a;
        s->alphas_cumprod[i] = (float)acc;
    }
    s->final_alpha_cumprod = s->set_alpha_to_one ? 1.0f : s->alphas_cumprod[0];
    return 0;
}

/* ---- create / free ------------------------------------------------------------------------- */

int sdb_sched_create(sdb_sched **out, const char *name, const sdb_config *cfg, sdb_err *err)
{
    *out = NULL;
    if (!name || !name[0]) TRY(sdb_sched_default_name(cfg, &name, err));
    sdb_sched_kind kind = SDB_SCHED_PNDM;
    TRY(sdb_sched_kind_from_name(name, &kind, err));
    sdb_sched *s = calloc(1, sizeof *s);
    if (!s) return sdb_fail(err, SDB_ENOMEM, "scheduler: out of memory");
    s->kind = kind;
    s->last_index = -1;
    int rc = parse_config(s, cfg, err);
    if (!rc) rc = build_tables(s, err);
    if (rc) { sdb_sched_free(s); return rc; }
    s->init_noise_sigma = 1.0f;
    *out = s;
    return 0;
}

static void free_state(sdb_sched *s)
{
    for (int i = 0; i < 4; i++) { free(s->ets[i]); s->ets[i] = NULL; free(s->derivs[i]); s->derivs[i] = NULL; }
    for (int i = 0; i < 2; i++) { free(s->model_outputs[i]); s->model_outputs[i] = NULL; }
    free(s->cur_sample); free(s->cur_model_output); free(s->tmp); free(s->tmp2);
    s->cur_sample = s->cur_model_output = s->tmp = s->tmp2 = NULL;
    s->n = 0;
    s->last_index = -1;
    s->counter = 0;
    s->n_ets = 0;
    s->has_cur_sample = 0;
    s->lower_order_nums = 0;
    s->n_derivs = 0;
}

void sdb_sched_free(sdb_sched *s)
{
    if (!s) return;
    free_state(s);
    free(s->betas);
    free(s->alphas_cumprod);
    free(s->timesteps);
    free(s->sigmas);
    free(s);
}

sdb_sched_kind sdb_sched_get_kind(const sdb_sched *s) { return s->kind; }
const char *sdb_sched_name(const sdb_sched *s) { return k_names[s->kind]; }

const char *sdb_sched_a1111_name(const sdb_sched *s)
{
    switch (s->kind) {
    case SDB_SCHED_PNDM: return "PNDM";
    case SDB_SCHED_DDIM: return "DDIM";
    case SDB_SCHED_EULER: return s->use_karras ? "Euler Karras" : "Euler";
    case SDB_SCHED_EULER_A: return "Euler a";
    case SDB_SCHED_DPMPP_2M: return "DPM++ 2M";
    case SDB_SCHED_DPMPP_2M_KARRAS: return "DPM++ 2M Karras";
    case SDB_SCHED_LMS: return s->use_karras ? "LMS Karras" : "LMS";
    default: return "?";
    }
}

const char *sdb_sched_name_from_a1111(const char *a)
{
    static const char *const map[][2] = {
        {"PNDM", "pndm"}, {"PLMS", "pndm"}, {"DDIM", "ddim"}, {"Euler", "euler"}, {"Euler Karras", "euler"},
        {"Euler a", "euler_a"}, {"DPM++ 2M", "dpmpp_2m"}, {"DPM++ 2M Karras", "dpmpp_2m_karras"},
        {"LMS", "lms"}, {"LMS Karras", "lms"}};
    if (!a) return NULL;
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (!strcmp(a, map[i][0])) return map[i][1];
    return NULL;
}

int sdb_sched_set_eta(sdb_sched *s, double eta, sdb_err *err)
{
    if (!(eta >= 0.0) || eta > 1e6) return sdb_fail(err, SDB_EINVAL, "eta must be >= 0 (got %g)", eta);
    if (eta != 0.0 && s->kind != SDB_SCHED_DDIM)
        return sdb_fail(err, SDB_EINVAL, "eta is a DDIM option; scheduler '%s' has none", k_names[s->kind]);
    s->eta = eta;
    return 0;
}

int sdb_sched_num_timesteps(const sdb_sched *s) { return s->nt; }
const double *sdb_sched_timesteps(const sdb_sched *s) { return s->timesteps; }
int sdb_sched_timestep_is_int(const sdb_sched *s)
{
    return !(s->kind == SDB_SCHED_EULER || s->kind == SDB_SCHED_EULER_A || s->kind == SDB_SCHED_LMS);
}
const float *sdb_sched_sigmas(const sdb_sched *s, int *n)
{
    if (n) *n = s->sigmas ? s->nt + 1 : 0;
    return s->sigmas;
}
float sdb_sched_init_noise_sigma(const sdb_sched *s) { return s->init_noise_sigma; }
int sdb_sched_order(const sdb_sched *s) { (void)s; return 1; }
const float *sdb_sched_alphas_cumprod(const sdb_sched *s, int *n)
{
    if (n) *n = s->num_train;
    return s->alphas_cumprod;
}

/* ---- numpy helpers (float64) --------------------------------------------------------------- */

/* np.linspace(start, stop, num) (endpoint=True) */
static void np_linspace(double start, double stop, int num, double *out)
{
    int div = num - 1;
    double delta = stop - start;
    if (div > 0) {
        double step = delta / div;
        for (int i = 0; i < num; i++) out[i] = step == 0 ? (double)i / div * delta + start : (double)i * step + start;
        out[num - 1] = stop;
    } else {
        for (int i = 0; i < num; i++) out[i] = (double)i * delta + start;
    }
}

/* np.arange(start, stop, step) for a float step: length ceil((stop-start)/step); numpy's fill
 * uses start + i*delta with delta = (start + step) - start. Returns the count (<= max). */
static int np_arange(double start, double stop, double step, double *out, int max)
{
    double len = ceil((stop - start) / step);
    int n = len > 0 ? (int)len : 0;
    if (n > max) n = max;
    if (n == 0) return 0;
    out[0] = start;
    if (n > 1) {
        double second = start + step;
        double delta = second - start;
        out[1] = second;
        for (int i = 2; i < n; i++) out[i] = start + (double)i * delta;
    }
    return n;
}

static double np_round(double x) { return nearbyint(x); } /* half to even (default rounding mode) */

/* np.interp(x, arange(len), fp) with fp given as float32 values. */
static double np_interp_idx(double x, const float *fp, int len)
{
    if (isnan(x)) return x;
    if (x <= 0) return fp[0];
    if (x >= len - 1) return fp[len - 1];
    int j = (int)floor(x);
    if (j > len - 2) j = len - 2;
    if ((double)j == x) return fp[j];
    double slope = ((double)fp[j + 1] - (double)fp[j]) / 1.0;
    double r = slope * (x - (double)j) + (double)fp[j];
    if (isnan(r)) r = slope * (x - (double)(j + 1)) + (double)fp[j + 1];
    return r;
}

/* ((1 - acp) / acp) ** 0.5 in float32 (torch) */
static float *full_sigmas(const sdb_sched *s)
{
    float *sg = malloc((size_t)s->num_train * sizeof(float));
    if (!sg) return NULL;
    for (int i = 0; i < s->num_train; i++) {
        float a = s->alphas_cumprod[i];
        sg[i] = sqrtf((1.0f - a) / a);
    }
    return sg;
}

/* _convert_to_karras: (max^(1/7) + ramp (min^(1/7) - max^(1/7)))^7, float64 */
static void karras(double sigma_min, double sigma_max, int n, double *out)
{
    const double rho = 7.0;
    double *ramp = malloc((size_t)n * sizeof(double));
    np_linspace(0.0, 1.0, n, ramp);
    double min_inv = pow(sigma_min, 1.0 / rho), max_inv = pow(sigma_max, 1.0 / rho);
    for (int i = 0; i < n; i++) out[i] = pow(max_inv + ramp[i] * (min_inv - max_inv), rho);
    free(ramp);
}

/* _sigma_to_t(sigma, log_sigmas): log_sigmas float32 (np.log of the float32 sigmas). */
static double sigma_to_t(double sigma, const float *log_sigmas, int len)
{
    double log_sigma = log(sigma > 1e-10 ? sigma : 1e-10);
    int low = 0;
    int found = 0;
    for (int i = 0; i < len; i++)
        if (log_sigma - (double)log_sigmas[i] >= 0) { low = i; found = 1; }
    if (!found) low = 0;
    if (low > len - 2) low = len - 2;
    int high = low + 1;
    double lo = log_sigmas[low], hi = log_sigmas[high];
    double w = (lo - log_sigma) / (lo - hi);
    if (w < 0) w = 0;
    if (w > 1) w = 1;
    return (1 - w) * low + w * high;
}

/* ---- set_timesteps ------------------------------------------------------------------------- */

static int ts_alloc(sdb_sched *s, int nt, int with_sigmas, sdb_err *err)
{
    free(s->timesteps); free(s->sigmas);
    s->timesteps = calloc((size_t)nt + 1, sizeof(double));
    s->sigmas = with_sigmas ? calloc((size_t)nt + 2, sizeof(float)) : NULL;
    s->nt = nt;
    if (!s->timesteps || (with_sigmas && !s->sigmas)) return sdb_fail(err, SDB_ENOMEM, "scheduler: out of memory");
    return 0;
}

/* Integer timesteps (ascending "_timesteps") of PNDM, and the descending ones of DDIM. */
static int int_timesteps(const sdb_sched *s, int n, double *asc)
{
    const int T = s->num_train;
    if (s->spacing == SPACING_LINSPACE) {
        np_linspace(0, T - 1, n, asc);
        for (int i = 0; i < n; i++) asc[i] = np_round(asc[i]);
    } else if (s->spacing == SPACING_LEADING) {
        long long ratio = T / n;
        for (int i = 0; i < n; i++) asc[i] = (double)((long long)i * ratio + s->steps_offset);
    } else {
        double *tmp = malloc((size_t)(T + 2) * sizeof(double));
        int m = np_arange(T, 0, -((double)T / n), tmp, T + 2);
        /* descending values -> ascending */
        for (int i = 0; i < m && i < n; i++) asc[i] = np_round(tmp[m - 1 - i]) - 1;
        free(tmp);
        if (m != n) return -1;
    }
    return 0;
}

static int set_pndm(sdb_sched *s, int n, sdb_err *err)
{
    if (!s->skip_prk && n < 4)
        return sdb_fail(err, SDB_EINVAL, "pndm without skip_prk_steps needs at least 4 steps (got %d)", n);
    double *t = malloc((size_t)n * sizeof(double));
    if (!t) return sdb_fail(err, SDB_ENOMEM, "scheduler: out of memory");
    if (int_timesteps(s, n, t)) { free(t); return sdb_fail(err, SDB_EINVAL, "pndm: cannot make %d trailing timesteps", n); }
    if (s->skip_prk) {
        /* plms = concat(t[:-1], t[-2:-1], t[-1:])[::-1] */
        int m = 0;
        double *pl = malloc((size_t)(n + 1) * sizeof(double));
        for (int i = 0; i < n - 1; i++) pl[m++] = t[i];
        if (n >= 2) pl[m++] = t[n - 2];
        pl[m++] = t[n - 1];
        TRY(ts_alloc(s, m, 0, err));
        for (int i = 0; i < m; i++) s->timesteps[i] = pl[m - 1 - i];
        s->n_prk = 0;
        free(pl);
    } else {
        /* prk = (repeat(t[-4:], 2) + tile([0, T//n//2], 4))[:-1].repeat(2)[1:-1][::-1];
         * plms = t[:-3][::-1] */
        int k = n < 4 ? n : 4;
        double half = (double)(s->num_train / n / 2);
        double a[8], b[16], prk[16];
        int na = 0, nb = 0, np_ = 0;
        for (int i = n - k; i < n; i++) { a[na++] = t[i]; a[na++] = t[i] + half; }
        for (int i = 0; i < na - 1; i++) { b[nb++] = a[i]; b[nb++] = a[i]; }
        for (int i = 1; i < nb - 1; i++) prk[np_++] = b[i];
        int nplms = n > 3 ? n - 3 : 0;
        TRY(ts_alloc(s, np_ + nplms, 0, err));
        for (int i = 0; i < np_; i++) s->timesteps[i] = prk[np_ - 1 - i];
        for (int i = 0; i < nplms; i++) s->timesteps[np_ + i] = t[nplms - 1 - i];
        s->n_prk = np_;
    }
    free(t);
    s->init_noise_sigma = 1.0f;
    return 0;
}

static int set_ddim(sdb_sched *s, int n, sdb_err *err)
{
    const int T = s->num_train;
    TRY(ts_alloc(s, n, 0, err));
    if (s->spacing == SPACING_TRAILING) {
        double *tmp = malloc((size_t)(T + 2) * sizeof(double));
        int m = np_arange(T, 0, -((double)T / n), tmp, T + 2);
        for (int i = 0; i < n; i++) s->timesteps[i] = i < m ? np_round(tmp[i]) - 1 : 0;
        free(tmp);
        if (m != n) return sdb_fail(err, SDB_EINVAL, "ddim: cannot make %d trailing timesteps", n);
    } else {
        double *asc = malloc((size_t)n * sizeof(double));
        int_timesteps(s, n, asc);
        for (int i = 0; i < n; i++) s->timesteps[i] = asc[n - 1 - i];
        free(asc);
    }
    s->init_noise_sigma = 1.0f;
    return 0;
}

/* float32 timesteps of Euler / Euler ancestral / LMS, descending */
static int float_timesteps(const sdb_sched *s, int n, double *ts)
{
    const int T = s->num_train;
    if (s->spacing == SPACING_LINSPACE) {
        double *l = malloc((size_t)n * sizeof(double));
        np_linspace(0, T - 1, n, l);
        for (int i = 0; i < n; i++) ts[i] = (float)l[n - 1 - i];
        free(l);
    } else if (s->spacing == SPACING_LEADING) {
        long long ratio = T / n;
        for (int i = 0; i < n; i++) {
            float v = (float)((long long)(n - 1 - i) * ratio);
            ts[i] = v + (float)s->steps_offset;
        }
    } else {
        double *tmp = malloc((size_t)(T + 2) * sizeof(double));
        int m = np_arange(T, 0, -((double)T / n), tmp, T + 2);
        for (int i = 0; i < n; i++) ts[i] = i < m ? (float)np_round(tmp[i]) - 1.0f : 0;
        free(tmp);
        if (m != n) return -1;
    }
    return 0;
}

static int set_sigma_kind(sdb_sched *s, int n, sdb_err *err)
{
    const int T = s->num_train;
    TRY(ts_alloc(s, n, 1, err));
    float *full = full_sigmas(s);
    double *sg = malloc((size_t)(n + 1) * sizeof(double));
    float *logs = malloc((size_t)T * sizeof(float));
    if (!full || !sg || !logs) { free(full); free(sg); free(logs); return sdb_fail(err, SDB_ENOMEM, "scheduler: out of memory"); }
    for (int i = 0; i < T; i++) logs[i] = logf(full[i]);
    int rc = 0;
    const int is_dpm = s->kind == SDB_SCHED_DPMPP_2M || s->kind == SDB_SCHED_DPMPP_2M_KARRAS;

    if (!is_dpm) {
        if (float_timesteps(s, n, s->timesteps)) { rc = sdb_fail(err, SDB_EINVAL, "cannot make %d trailing timesteps", n); goto done; }
        for (int i = 0; i < n; i++) sg[i] = np_interp_idx(s->timesteps[i], full, T);
        if (s->use_karras) {
            double smin = sg[n - 1], smax = sg[0];
            if (s->kind == SDB_SCHED_EULER) {
                if (!isnan(s->cfg_sigma_min)) smin = s->cfg_sigma_min;
                if (!isnan(s->cfg_sigma_max)) smax = s->cfg_sigma_max;
            }
            /* _convert_to_karras takes sigma_min/max via .item() of the float64 interp result */
            karras(smin, smax, n, sg);
            for (int i = 0; i < n; i++) s->timesteps[i] = (float)sigma_to_t(sg[i], logs, T);
        }
        double last = 0.0;
        if (s->kind == SDB_SCHED_EULER && s->final_sigma_min) last = full[0];
        for (int i = 0; i < n; i++) s->sigmas[i] = (float)sg[i];
        s->sigmas[n] = (float)last;
        float mx = 0;
        for (int i = 0; i <= n; i++) if (s->sigmas[i] > mx) mx = s->sigmas[i];
        s->init_noise_sigma = s->spacing == SPACING_LEADING ? sqrtf(mx * mx + 1.0f) : mx;
    } else {
        /* clipped_idx = searchsorted(flip(lambda_t), lambda_min_clipped); last = T - clipped_idx */
        int clipped = 0;
        if (!isinf(s->lambda_min_clipped) || s->lambda_min_clipped > 0) {
            for (int i = 0; i < T; i++) {
                float a = s->alphas_cumprod[T - 1 - i];
                float lam = sdb_sched_torch_logf(sqrtf(a)) - sdb_sched_torch_logf(sqrtf(1.0f - a));
                if (!((double)lam < s->lambda_min_clipped)) break;
                clipped++;
            }
        }
        int last = T - clipped;
        if (s->spacing == SPACING_LINSPACE) {
            double *l = malloc((size_t)(n + 1) * sizeof(double));
            np_linspace(0, last - 1, n + 1, l);
            for (int i = 0; i < n; i++) s->timesteps[i] = np_round(l[n - i]);
            free(l);
        } else if (s->spacing == SPACING_LEADING) {
            long long ratio = last / (n + 1);
            for (int i = 0; i < n; i++) s->timesteps[i] = (double)((long long)(n - i) * ratio + s->steps_offset);
        } else {
            double *tmp = malloc((size_t)(T + 2) * sizeof(double));
            int m = np_arange(last, 0, -((double)T / n), tmp, T + 2);
            for (int i = 0; i < n; i++) s->timesteps[i] = i < m ? np_round(tmp[i]) - 1 : 0;
            free(tmp);
            if (m != n) { rc = sdb_fail(err, SDB_EINVAL, "cannot make %d trailing timesteps", n); goto done; }
        }
        if (s->use_karras) {
            karras((double)full[0], (double)full[T - 1], n, sg);
            for (int i = 0; i < n; i++) s->timesteps[i] = np_round(sigma_to_t(sg[i], logs, T));
        } else {
            for (int i = 0; i < n; i++) sg[i] = np_interp_idx(s->timesteps[i], full, T);
        }
        for (int i = 0; i < n; i++) s->sigmas[i] = (float)sg[i];
        s->sigmas[n] = s->final_sigma_min ? full[0] : 0.0f;
        s->init_noise_sigma = 1.0f;
    }
done:
    free(full); free(sg); free(logs);
    return rc;
}

int sdb_sched_set_timesteps(sdb_sched *s, int n, sdb_err *err)
{
    if (n < 1 || n > s->num_train)
        return sdb_fail(err, SDB_EINVAL, "%s: number of inference steps must be 1..%d (got %d)",
                        k_names[s->kind], s->num_train, n);
    free_state(s);
    s->n_inference = n;
    s->begin_index = 0;
    int rc;
    switch (s->kind) {
    case SDB_SCHED_PNDM: rc = set_pndm(s, n, err); break;
    case SDB_SCHED_DDIM: rc = set_ddim(s, n, err); break;
    default: rc = set_sigma_kind(s, n, err); break;
    }
    if (rc) { s->n_inference = 0; s->nt = 0; }
    return rc;
}

/* ---- strength, scale_model_input, add_noise ------------------------------------------------ */

int sdb_sched_strength(sdb_sched *s, double strength, int *first, int *remaining, sdb_err *err)
{
    if (!s->n_inference) return sdb_fail(err, SDB_ESTATE, "%s: set_timesteps was not called", k_names[s->kind]);
    if (!(strength >= 0.0 && strength <= 1.0))
        return sdb_fail(err, SDB_EINVAL, "strength must be in [0, 1] (got %g)", strength);
    const int N = s->n_inference;
    double prod = (double)N * strength;
    int init = (int)prod;
    if (init > N) init = N;
    int t_start = N - init;
    if (t_start < 0) t_start = 0;
    if (N - t_start < 1)
        return sdb_fail(err, SDB_EINVAL,
                        "strength %g with %d steps leaves no denoising step (int(%d*%g) = 0); raise strength or steps",
                        strength, N, N, strength);
    *first = t_start * sdb_sched_order(s);
    *remaining = N - t_start;
    s->begin_index = *first;
    return 0;
}

void sdb_sched_scale_model_input(const sdb_sched *s, const float *sample, float *out, size_t n, int index)
{
    if (!s->sigmas || s->kind == SDB_SCHED_DPMPP_2M || s->kind == SDB_SCHED_DPMPP_2M_KARRAS ||
        index < 0 || index >= s->nt) {
        if (out != sample) memmove(out, sample, n * sizeof(float));
        return;
    }
    const float sigma = s->sigmas[index];
    const float d = sqrtf(sigma * sigma + 1.0f);
    for (size_t i = 0; i < n; i++) out[i] = sample[i] / d;
}

int sdb_sched_add_noise(const sdb_sched *s, const float *original, const float *noise, float *out, size_t n,
                        int index, sdb_err *err)
{
    if (!s->n_inference) return sdb_fail(err, SDB_ESTATE, "%s: set_timesteps was not called", k_names[s->kind]);
    if (s->kind == SDB_SCHED_PNDM || s->kind == SDB_SCHED_DDIM) {
        if (index < 0 || index >= s->nt)
            return sdb_fail(err, SDB_EINVAL, "add_noise: step index %d outside 0..%d", index, s->nt - 1);
        long long t = (long long)s->timesteps[index];
        if (t < 0 || t >= s->num_train) return sdb_fail(err, SDB_EINVAL, "add_noise: timestep %lld out of range", t);
        const float a = s->alphas_cumprod[t];
        const float sa = sqrtf(a), sb = sqrtf(1.0f - a);
        for (size_t i = 0; i < n; i++) out[i] = sa * original[i] + sb * noise[i];
        return 0;
    }
    if (index < 0 || index > s->nt)
        return sdb_fail(err, SDB_EINVAL, "add_noise: step index %d outside 0..%d", index, s->nt);
    const float sigma = s->sigmas[index];
    if (s->kind == SDB_SCHED_DPMPP_2M || s->kind == SDB_SCHED_DPMPP_2M_KARRAS) {
        const float alpha_t = 1.0f / sqrtf(sigma * sigma + 1.0f);
        const float sigma_t = sigma * alpha_t;
        for (size_t i = 0; i < n; i++) out[i] = alpha_t * original[i] + sigma_t * noise[i];
        return 0;
    }
    for (size_t i = 0; i < n; i++) out[i] = original[i] + noise[i] * sigma;
    return 0;
}
