/*
 * activation.c — element-wise activations (see activation.h). Every result depends on its own
 * element only, never on the thread split. SiLU and QuickGELU use the exp of vexp.h: 8 lanes with
 * AVX2+FMA (chosen at run time; the tail through its bit-identical scalar twin), else its portable
 * scalar form. GELU uses libm's erff. GEGLU (the U-Net's feed-forward, the bulk of the element-wise
 * work at 512x512) has a vectorised AVX2 path: erf by Abramowitz & Stegun 7.1.26 (absolute error
 * < 1.5e-7 in exact arithmetic; evaluated in float, up to 6e-7 on 1 + erf near 0, about 5 ulp of 1)
 * with vexp.h's exp; rows are split across threads whole.
 */
#include "sdb/ops/activation.h"

#include "sdb/ops/par.h"
#include "vexp.h"

#include <immintrin.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define PAR_MIN 65536
#define PAR_IF(n) if ((n) > PAR_MIN)
#define CHUNK 4096 /* elements per parallel task in sdb_silu / sdb_quick_gelu */

/* x[i] = x[i] / (1 + exp(k * x[i])) for i < n: SiLU with k = -1, QuickGELU with k = -1.702 */
__attribute__((target("avx2,fma")))
static void sigmul_avx2(float *x, size_t n, float k)
{
    const __m256 kv = _mm256_set1_ps(k), one = _mm256_set1_ps(1.0f);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        __m256 e = sdb_vexp8(_mm256_mul_ps(v, kv));
        _mm256_storeu_ps(x + i, _mm256_div_ps(v, _mm256_add_ps(one, e)));
    }
    for (; i < n; i++) x[i] = x[i] / (1.0f + sdb_vexp1_fma(k * x[i]));
}

static void sigmul(float *x, size_t n, float k)
{
    for (size_t i = 0; i < n; i++) x[i] = x[i] / (1.0f + sdb_vexp1(k * x[i]));
}

static void sigmul_all(float *x, size_t n, float k)
{
    const int avx2 = sdb_vexp_have_avx2();
    const size_t chunks = (n + CHUNK - 1) / CHUNK;
#pragma omp parallel for schedule(static) PAR_IF(n)
    for (size_t c = 0; c < chunks; c++) {
        size_t len = c + 1 < chunks ? CHUNK : n - c * CHUNK;
        if (avx2) sigmul_avx2(x + c * CHUNK, len, k);
        else sigmul(x + c * CHUNK, len, k);
    }
}

void sdb_silu(float *x, size_t n) { sigmul_all(x, n, -1.0f); }

static inline float gelu1(float v) { return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f)); }

void sdb_gelu(float *x, size_t n)
{
#pragma omp parallel for schedule(static) PAR_IF(n)
    for (size_t i = 0; i < n; i++) x[i] = gelu1(x[i]);
}

void sdb_quick_gelu(float *x, size_t n) { sigmul_all(x, n, -1.702f); }

/* o[i] = a[i] * gelu(b[i]) for i < n, 8 at a time (the tail with libm's erff). */
__attribute__((target("avx2,fma")))
static void geglu_row_avx2(const float *a, const float *b, float *o, int n)
{
    const __m256 rs2 = _mm256_set1_ps(0.70710678118654752f), half = _mm256_set1_ps(0.5f);
    const __m256 one = _mm256_set1_ps(1.0f), p = _mm256_set1_ps(0.3275911f);
    const __m256 a1 = _mm256_set1_ps(0.254829592f), a2 = _mm256_set1_ps(-0.284496736f);
    const __m256 a3 = _mm256_set1_ps(1.421413741f), a4 = _mm256_set1_ps(-1.453152027f);
    const __m256 a5 = _mm256_set1_ps(1.061405429f);
    const __m256 sign = _mm256_set1_ps(-0.0f);
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
        __m256 e = sdb_vexp8(_mm256_mul_ps(_mm256_xor_ps(ax, sign), ax));   /* exp(-ax²) */
        __m256 y = _mm256_fnmadd_ps(poly, e, one);                    /* erf(|x|) */
        y = _mm256_or_ps(y, _mm256_and_ps(sign, x));                  /* erf(x) */
        __m256 g = _mm256_mul_ps(_mm256_mul_ps(half, v), _mm256_add_ps(one, y));
        _mm256_storeu_ps(o + i, _mm256_mul_ps(_mm256_loadu_ps(a + i), g));
    }
    for (; i < n; i++) o[i] = a[i] * gelu1(b[i]);
}

void sdb_geglu(const float *h, int rows, int dim, float *out)
{
    const int avx2 = sdb_vexp_have_avx2();
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

/* Plans (par.h): the same loops, units and `if` clauses as above; costs in bytes moved. */
void sdb_silu_plan(size_t n, sdb_par_rec *rec)
{
    sdb_par_op_begin(rec, SDB_PAR_ELEMENTWISE, "silu %zu", n);
    const size_t chunks = (n + CHUNK - 1) / CHUNK;
    double *cost = malloc(chunks * sizeof *cost);
    if (!cost) { rec->failed = 1; return; }
    for (size_t c = 0; c < chunks; c++) cost[c] = 8.0 * (c + 1 < chunks ? CHUNK : n - c * CHUNK);
    sdb_par_loop_add(rec, SDB_PAR_STATIC, (long)chunks, cost, 0, 1, n > PAR_MIN);
    free(cost);
}

void sdb_geglu_plan(int rows, int dim, sdb_par_rec *rec)
{
    sdb_par_op_begin(rec, SDB_PAR_ELEMENTWISE, "geglu %d x %d", rows, dim);
    sdb_par_loop_add(rec, SDB_PAR_STATIC, rows, NULL, 12.0 * dim, 1, (size_t)rows * dim > PAR_MIN);
}

void sdb_add_plan(size_t n, sdb_par_rec *rec)
{
    sdb_par_op_begin(rec, SDB_PAR_ELEMENTWISE, "add %zu", n);
    sdb_par_loop_add(rec, SDB_PAR_STATIC, (long)n, NULL, 12.0, 1, n > PAR_MIN);
}

void sdb_scale(float *y, float s, size_t n)
{
#pragma omp parallel for schedule(static) PAR_IF(n)
    for (size_t i = 0; i < n; i++) y[i] *= s;
}
