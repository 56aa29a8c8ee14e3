/*
 * activation.c — element-wise activations (see activation.h). libm expf/erff: deterministic and
 * independent of the thread split. GEGLU (the U-Net's feed-forward, the bulk of the element-wise
 * work at 512x512) has a vectorised AVX2 path, chosen at run time: erf by Abramowitz & Stegun
 * 7.1.26 (absolute error < 2e-7, below float resolution of 1 + erf) with exp by a degree-6
 * polynomial; rows are split across threads whole, so results do not depend on the thread count.
 */
#include "sdb/ops/activation.h"

#include <immintrin.h>
#include <math.h>
#include <string.h>

#define PAR_IF(n) if ((n) > 65536)

void sdb_silu(float *x, size_t n)
{
#pragma omp parallel for schedule(static) PAR_IF(n)
    for (size_t i = 0; i < n; i++) x[i] = x[i] / (1.0f + expf(-x[i]));
}

static inline float gelu1(float v) { return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f)); }

void sdb_gelu(float *x, size_t n)
{
#pragma omp parallel for schedule(static) PAR_IF(n)
    for (size_t i = 0; i < n; i++) x[i] = gelu1(x[i]);
}

void sdb_quick_gelu(float *x, size_t n)
{
#pragma omp parallel for schedule(static) PAR_IF(n)
    for (size_t i = 0; i < n; i++) x[i] = x[i] / (1.0f + expf(-1.702f * x[i]));
}

/* o[i] = a[i] * gelu(b[i]) for i < n, 8 at a time (the tail with libm's erff). */
__attribute__((target("avx2,fma")))
static void geglu_row_avx2(const float *a, const float *b, float *o, int n)
{
    const __m256 rs2 = _mm256_set1_ps(0.70710678118654752f), half = _mm256_set1_ps(0.5f);
    const __m256 one = _mm256_set1_ps(1.0f), p = _mm256_set1_ps(0.3275911f);
    const __m256 a1 = _mm256_set1_ps(0.254829592f), a2 = _mm256_set1_ps(-0.284496736f);
    const __m256 a3 = _mm256_set1_ps(1.421413741f), a4 = _mm256_set1_ps(-1.453152027f);
    const __m256 a5 = _mm256_set1_ps(1.061405429f);
    const __m256 sign = _mm256_set1_ps(-0.0f), lo = _mm256_set1_ps(-87.0f);
    const __m256 log2e = _mm256_set1_ps(1.44269504088896341f);
    const __m256 c_hi = _mm256_set1_ps(-0.693359375f), c_lo = _mm256_set1_ps(2.12194440e-4f);
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(b + i);
        __m256 x = _mm256_mul_ps(v, rs2);
        __m256 ax = _mm256_andnot_ps(sign, x);
        __m256 t = _mm256_div_ps(one, _mm256_fmadd_ps(p, ax, one));
        __m256 poly = _mm256_fmadd_ps(a5, t, a4);
        poly = _mm256_fmadd_ps(poly, t, a3);
        poly = _mm256_fmadd_ps(poly, t, a2);
        poly = _mm256_fmadd_ps(poly, t, a1);
        poly = _mm256_mul_ps(poly, t);
        /* e = exp(-ax²) */
        __m256 z = _mm256_mul_ps(_mm256_sub_ps(_mm256_setzero_ps(), ax), ax);
        __m256 under = _mm256_cmp_ps(z, lo, _CMP_LT_OQ);
        z = _mm256_max_ps(z, lo);
        __m256 nn = _mm256_floor_ps(_mm256_fmadd_ps(z, log2e, half));
        __m256 r = _mm256_fmadd_ps(nn, c_hi, z);
        r = _mm256_fmadd_ps(nn, c_lo, r);
        __m256 e = _mm256_fmadd_ps(_mm256_set1_ps(1.9875691500e-4f), r, _mm256_set1_ps(1.3981999507e-3f));
        e = _mm256_fmadd_ps(e, r, _mm256_set1_ps(8.3334519073e-3f));
        e = _mm256_fmadd_ps(e, r, _mm256_set1_ps(4.1665795894e-2f));
        e = _mm256_fmadd_ps(e, r, _mm256_set1_ps(1.6666665459e-1f));
        e = _mm256_fmadd_ps(e, r, half);
        e = _mm256_fmadd_ps(e, _mm256_mul_ps(r, r), _mm256_add_ps(r, one));
        __m256i ex = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(nn), _mm256_set1_epi32(127)), 23);
        e = _mm256_andnot_ps(under, _mm256_mul_ps(e, _mm256_castsi256_ps(ex)));
        __m256 y = _mm256_fnmadd_ps(poly, e, one);                    /* erf(|x|) */
        y = _mm256_or_ps(y, _mm256_and_ps(sign, x));                  /* erf(x) */
        __m256 g = _mm256_mul_ps(_mm256_mul_ps(half, v), _mm256_add_ps(one, y));
        _mm256_storeu_ps(o + i, _mm256_mul_ps(_mm256_loadu_ps(a + i), g));
    }
    for (; i < n; i++) o[i] = a[i] * gelu1(b[i]);
}

void sdb_geglu(const float *h, int rows, int dim, float *out)
{
    __builtin_cpu_init();
    const int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#pragma omp parallel for schedule(static) PAR_IF((size_t)rows * dim)
    for (int r = 0; r < rows; r++) {
        const float *a = h + (size_t)r * 2 * dim, *b = a + dim;
        float *o = out + (size_t)r * dim;
        if (avx2) {
            geglu_row_avx2(a, b, o, dim);
            continue;
        }
        for (int i = 0; i < dim; i++) o[i] = a[i] * gelu1(b[i]);
    }
}

void sdb_add(float *y, const float *x, size_t n)
{
#pragma omp parallel for schedule(static) PAR_IF(n)
    for (size_t i = 0; i < n; i++) y[i] += x[i];
}

void sdb_scale(float *y, float s, size_t n)
{
#pragma omp parallel for schedule(static) PAR_IF(n)
    for (size_t i = 0; i < n; i++) y[i] *= s;
}
