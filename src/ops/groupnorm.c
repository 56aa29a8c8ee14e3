/*
 * groupnorm.c — torch.nn.GroupNorm (+ optional SiLU) on NCHW activations (see groupnorm.h).
 *
 * Statistics per (n, group): mean and biased variance from sums accumulated in double, in a fixed
 * order (4 interleaved partial sums, combined as (a0 + a1) + (a2 + a3)), by one thread per
 * (n, group): the result never depends on the thread count. Two passes (mean first, then the
 * centred sum of squares) as torch's Welford is close to that in accuracy. Then per channel
 * y = x * scale + shift with scale = rstd * gamma, shift = beta - mean * scale, and SiLU.
 *
 * On CPUs with AVX2+FMA (chosen at run time) the 4 partial sums are the lanes of one double vector:
 * the same additions in the same order, so the statistics are bit-identical to the scalar code;
 * the normalisation is y = fma(x, scale, shift) and SiLU uses the vector exp of vexp.h (channel
 * tails through its bit-identical scalar twin).
 */
#include "sdb/ops/groupnorm.h"

#include "sdb/ops/par.h"
#include "vexp.h"

#include <immintrin.h>
#include <math.h>
#include <stddef.h>

static double sum4(const float *x, size_t n)
{
    double a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        a0 += x[i]; a1 += x[i + 1]; a2 += x[i + 2]; a3 += x[i + 3];
    }
    for (; i < n; i++) a0 += x[i];
    return (a0 + a1) + (a2 + a3);
}

static double sqdev4(const float *x, size_t n, double m)
{
    double a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        double d0 = x[i] - m, d1 = x[i + 1] - m, d2 = x[i + 2] - m, d3 = x[i + 3] - m;
        a0 += d0 * d0; a1 += d1 * d1; a2 += d2 * d2; a3 += d3 * d3;
    }
    for (; i < n; i++) { double d = x[i] - m; a0 += d * d; }
    return (a0 + a1) + (a2 + a3);
}

/* yi[i] = xi[i] * sc + sh (then SiLU) for i < n */
static void norm_row(const float *xi, float *yi, int n, float sc, float sh, int silu)
{
    if (silu) {
        for (int i = 0; i < n; i++) {
            float v = xi[i] * sc + sh;
            yi[i] = v / (1.0f + sdb_vexp1(-v));
        }
    } else {
        for (int i = 0; i < n; i++) yi[i] = xi[i] * sc + sh;
    }
}

/* sum4 with lane k of one vector as a_k: identical additions in identical order */
__attribute__((target("avx2,fma")))
static double sum4_avx2(const float *x, size_t n)
{
    __m256d a = _mm256_setzero_pd();
    size_t i = 0;
    for (; i + 4 <= n; i += 4) a = _mm256_add_pd(a, _mm256_cvtps_pd(_mm_loadu_ps(x + i)));
    double l[4];
    _mm256_storeu_pd(l, a);
    for (; i < n; i++) l[0] += x[i];
    return (l[0] + l[1]) + (l[2] + l[3]);
}

__attribute__((target("avx2,fma")))
static double sqdev4_avx2(const float *x, size_t n, double m)
{
    const __m256d mv = _mm256_set1_pd(m);
    __m256d a = _mm256_setzero_pd();
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        __m256d d = _mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(x + i)), mv);
        __m256d q = _mm256_mul_pd(d, d);
        __asm__("" : "+x"(q)); /* d * d rounded, then added, as the scalar code (no FMA contraction) */
        a = _mm256_add_pd(a, q);
    }
    double l[4];
    _mm256_storeu_pd(l, a);
    for (; i < n; i++) {
        double d = x[i] - m, q = d * d;
        __asm__("" : "+x"(q));
        l[0] += q;
    }
    return (l[0] + l[1]) + (l[2] + l[3]);
}

__attribute__((target("avx2,fma")))
static void norm_row_avx2(const float *xi, float *yi, int n, float sc, float sh, int silu)
{
    const __m256 s = _mm256_set1_ps(sc), h = _mm256_set1_ps(sh);
    const __m256 one = _mm256_set1_ps(1.0f), neg = _mm256_set1_ps(-0.0f);
    int i = 0;
    if (silu) {
        for (; i + 8 <= n; i += 8) {
            __m256 v = _mm256_fmadd_ps(_mm256_loadu_ps(xi + i), s, h);
            __m256 e = sdb_vexp8(_mm256_xor_ps(v, neg));
            _mm256_storeu_ps(yi + i, _mm256_div_ps(v, _mm256_add_ps(one, e)));
        }
        for (; i < n; i++) {
            float v = __builtin_fmaf(xi[i], sc, sh);
            yi[i] = v / (1.0f + sdb_vexp1_fma(-v));
        }
    } else {
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(yi + i, _mm256_fmadd_ps(_mm256_loadu_ps(xi + i), s, h));
        for (; i < n; i++) yi[i] = __builtin_fmaf(xi[i], sc, sh);
    }
}

static void stats(const float *x, size_t n, int avx2, double *mean, double *var)
{
    double m = (avx2 ? sum4_avx2(x, n) : sum4(x, n)) / (double)n;
    *mean = m;
    *var = (avx2 ? sqdev4_avx2(x, n, m) : sqdev4(x, n, m)) / (double)n;
}

void sdb_groupnorm_stats(const float *x, size_t n, double *mean, double *var)
{
    stats(x, n, sdb_vexp_have_avx2(), mean, var);
}

static int groupnorm_parallel(int N, int C, int HW) { return (size_t)N * C * HW > 32768; }

void sdb_groupnorm_plan(int N, int C, int HW, int groups, sdb_par_rec *rec)
{
    sdb_par_op_begin(rec, SDB_PAR_NORM, "groupnorm %d x %d, %d groups x%d", C, HW, groups, N);
    /* two passes for the statistics, one read and one write to normalise */
    sdb_par_loop_add(rec, SDB_PAR_DYNAMIC, (long)N * groups, NULL, 16.0 * (C / groups) * HW, 1,
                     groupnorm_parallel(N, C, HW));
}

void sdb_groupnorm(const float *x, int N, int C, int HW, int groups, const float *gamma,
                   const float *beta, float eps, int silu, float *y)
{
    const int cpg = C / groups;
    const size_t gsize = (size_t)cpg * HW;
    const int ng = N * groups;
    const int avx2 = sdb_vexp_have_avx2();

    /* one task per (n, group): statistics, then that group's channels */
#pragma omp parallel for schedule(dynamic, 1) if (groupnorm_parallel(N, C, HW))
    for (int t = 0; t < ng; t++) {
        int n = t / groups, g = t % groups;
        const float *xg = x + ((size_t)n * C + (size_t)g * cpg) * HW;
        float *yg = y + ((size_t)n * C + (size_t)g * cpg) * HW;
        double mean, var;
        stats(xg, gsize, avx2, &mean, &var);
        double rstd = 1.0 / sqrt(var + (double)eps);
        for (int cc = 0; cc < cpg; cc++) {
            int c = g * cpg + cc;
            double scd = rstd * (gamma ? gamma[c] : 1.0);
            const float sc = (float)scd;
            const float sh = (float)((beta ? beta[c] : 0.0) - mean * scd);
            const float *xi = xg + (size_t)cc * HW;
            float *yi = yg + (size_t)cc * HW;
            if (avx2) norm_row_avx2(xi, yi, HW, sc, sh, silu);
            else norm_row(xi, yi, HW, sc, sh, silu);
        }
    }
}
