/*
 * vexp.h — ops-internal: the one exp(x) on floats that the element-wise ops share (SiLU, QuickGELU,
 * GEGLU's erf, GroupNorm+SiLU). attention.c keeps its own base-2 exponential.
 *
 * Three forms of one algorithm, all static inline:
 *   sdb_vexp8(v)      8 lanes, AVX2+FMA (call only when sdb_vexp_have_avx2());
 *   sdb_vexp1_fma(x)  the scalar twin for the tails of AVX2 loops: the same operations with the same
 *                     fused multiply-adds, so it is bit-identical to a lane of sdb_vexp8;
 *   sdb_vexp1(x)      the same polynomial with separate multiplies and adds, for CPUs without
 *                     AVX2/FMA (within the same error bound, not bit-identical to the others).
 *
 * Algorithm (Cody & Waite reduction, Cephes' expf polynomial): x is clamped to [-104, 89];
 * t = x·log2 e + 1.5·2²³ + 254 rounds to an integer (ties to even) whose low bits hold k = n + 254,
 * n = round(x·log2 e); r = x − n·ln2 in two parts (|r| ≤ ln2/2); exp(r) = 1 + (r + r²·P(r)) with P
 * of degree 5; the result is scaled by 2ⁿ as 2^(⌊k/2⌋−127) · 2^(k−⌊k/2⌋−127), two normal powers of
 * two made by shifting k into the exponent field (the high bits of t fall off the top), so there
 * is one rounding even for n = 128 or subnormal results.
 * Hence: within 1.5 ulp of exp (1.004 ulp measured for the AVX2 and FMA forms, 0.98 for the
 * portable one, over every 61st float: tests/test_ops_elementwise.c); x > ln(FLT_MAX) gives +inf
 * and x < −103.97 gives +0, as expf; subnormal results are within one subnormal step; NaN gives
 * NaN; ±inf give +inf and +0.
 */
#ifndef SDB_OPS_VEXP_H
#define SDB_OPS_VEXP_H

#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#define SDB_VEXP_LO (-104.0f)               /* exp(-104) < 2^-150: rounds to 0 */
#define SDB_VEXP_HI 89.0f                   /* exp(89) > FLT_MAX: overflows to +inf */
#define SDB_VEXP_LOG2E 1.44269504088896341f
#define SDB_VEXP_SHIFT 12583166.0f          /* 1.5 * 2^23 + 254: t = x·log2e + SHIFT is an integer, n + 254 in its low bits */
#define SDB_VEXP_LN2_HI 0.693359375f        /* ln 2 = LN2_HI + LN2_LO, LN2_HI with 9 significant bits */
#define SDB_VEXP_LN2_LO (-2.12194440e-4f)
#define SDB_VEXP_P0 1.9875691500e-4f        /* exp(r) ≈ 1 + r + r²·(((((P0 r + P1) r + P2) r + P3) r + P4) r + P5) */
#define SDB_VEXP_P1 1.3981999507e-3f
#define SDB_VEXP_P2 8.3334519073e-3f
#define SDB_VEXP_P3 4.1665795894e-2f
#define SDB_VEXP_P4 1.6666665459e-1f
#define SDB_VEXP_P5 5.0000001201e-1f

/* 1 when this CPU has AVX2 and FMA (sdb_vexp8 may be called). */
static inline int sdb_vexp_have_avx2(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

__attribute__((target("avx2,fma")))
static inline __m256 sdb_vexp8(__m256 x)
{
    /* max/min with the constant first: a NaN x is kept (the second operand is returned) */
    x = _mm256_max_ps(_mm256_set1_ps(SDB_VEXP_LO), x);
    x = _mm256_min_ps(_mm256_set1_ps(SDB_VEXP_HI), x);
    const __m256 shift = _mm256_set1_ps(SDB_VEXP_SHIFT);
    __m256 t = _mm256_fmadd_ps(x, _mm256_set1_ps(SDB_VEXP_LOG2E), shift);
    __m256 nf = _mm256_sub_ps(t, shift);
    __m256 r = _mm256_fnmadd_ps(nf, _mm256_set1_ps(SDB_VEXP_LN2_HI), x);
    r = _mm256_fnmadd_ps(nf, _mm256_set1_ps(SDB_VEXP_LN2_LO), r);
    __m256 p = _mm256_fmadd_ps(_mm256_set1_ps(SDB_VEXP_P0), r, _mm256_set1_ps(SDB_VEXP_P1));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(SDB_VEXP_P2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(SDB_VEXP_P3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(SDB_VEXP_P4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(SDB_VEXP_P5));
    __m256 e = _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0f));
    __m256i k = _mm256_castps_si256(t);
    __m256i k1 = _mm256_slli_epi32(_mm256_srli_epi32(k, 1), 23);
    __m256i k2 = _mm256_sub_epi32(_mm256_slli_epi32(k, 23), k1);
    return _mm256_mul_ps(_mm256_mul_ps(e, _mm256_castsi256_ps(k1)), _mm256_castsi256_ps(k2));
}

static inline float sdb_vexp_asfloat_(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static inline uint32_t sdb_vexp_asuint_(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

/* The scalar body, with MADD(a, b, c) = a·b + c fused or not. Comparisons written so NaN passes. */
#define SDB_VEXP1_BODY(x, MADD) do { \
    if (x < SDB_VEXP_LO) x = SDB_VEXP_LO; \
    if (x > SDB_VEXP_HI) x = SDB_VEXP_HI; \
    float t_ = MADD(x, SDB_VEXP_LOG2E, SDB_VEXP_SHIFT), nf_ = t_ - SDB_VEXP_SHIFT; \
    uint32_t k_ = sdb_vexp_asuint_(t_), k1_ = (k_ >> 1) << 23, k2_ = (k_ << 23) - k1_; \
    float r_ = MADD(-nf_, SDB_VEXP_LN2_HI, x); \
    r_ = MADD(-nf_, SDB_VEXP_LN2_LO, r_); \
    float p_ = MADD(SDB_VEXP_P0, r_, SDB_VEXP_P1); \
    p_ = MADD(p_, r_, SDB_VEXP_P2); \
    p_ = MADD(p_, r_, SDB_VEXP_P3); \
    p_ = MADD(p_, r_, SDB_VEXP_P4); \
    p_ = MADD(p_, r_, SDB_VEXP_P5); \
    float e_ = MADD(p_, r_ * r_, r_) + 1.0f; \
    x = e_ * sdb_vexp_asfloat_(k1_) * sdb_vexp_asfloat_(k2_); \
} while (0)

#define SDB_VEXP_FMA_(a, b, c) __builtin_fmaf((a), (b), (c))
#define SDB_VEXP_MADD_(a, b, c) sdb_vexp_madd_((a), (b), (c))

/* a·b + c rounded twice; the empty asm keeps the compiler from contracting it into an FMA. */
static inline float sdb_vexp_madd_(float a, float b, float c)
{
    float m = a * b;
    __asm__("" : "+x"(m));
    return m + c;
}

__attribute__((target("avx2,fma")))
static inline float sdb_vexp1_fma(float x)
{
    SDB_VEXP1_BODY(x, SDB_VEXP_FMA_);
    return x;
}

static inline float sdb_vexp1(float x)
{
    SDB_VEXP1_BODY(x, SDB_VEXP_MADD_);
    return x;
}

#endif
