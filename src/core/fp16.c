/*
 * fp16.c — half/bfloat16 <-> float32 conversions (see fp16.h). Owns no state; the F16C choice is
 * made per call from the CPU's feature bits.
 */
#include "sdb/fp16.h"

#include <immintrin.h>
#include <math.h>
#include <string.h>

static inline float bits_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static inline uint32_t f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

float sdb_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1Fu;
    uint32_t man = h & 0x3FFu;
    if (exp == 0) {
        if (man == 0) return bits_f32(sign);
        /* subnormal: value = man * 2^-24, exact in float32 */
        float v = (float)man * 5.9604644775390625e-8f;
        return sign ? -v : v;
    }
    if (exp == 31) return bits_f32(sign | 0x7F800000u | (man << 13) | (man ? 0x400000u : 0));
    return bits_f32(sign | ((exp + 112) << 23) | (man << 13));
}

float sdb_bf16_to_f32(uint16_t b) { return bits_f32((uint32_t)b << 16); }

uint16_t sdb_f32_to_f16(float f)
{
    uint32_t u = f32_bits(f);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t a = u & 0x7FFFFFFFu;
    if (a >= 0x7F800000u) return (uint16_t)(sign | 0x7C00u | (a > 0x7F800000u ? 0x200u : 0));
    if (a >= 0x477FF000u) return (uint16_t)(sign | 0x7C00u); /* rounds to >= 65520: inf */
    if (a < 0x38800000u) { /* below the smallest normal half: subnormal or zero */
        float v = bits_f32(a) * 16777216.0f; /* scale by 2^24: the subnormal's integer, exact */
        uint32_t m = (uint32_t)__builtin_nearbyintf(v); /* ties to even under the default mode */
        return (uint16_t)(sign | m);
    }
    uint32_t mant_odd = (a >> 13) & 1u;
    a += 0xFFFu + mant_odd; /* round to nearest even at bit 13 */
    return (uint16_t)(sign | (((a >> 23) - 112) << 10) | ((a >> 13) & 0x3FFu));
}

uint16_t sdb_f64_to_f16(double d)
{
    /* Round to float32 by "round to odd" (truncate, then set the last bit when inexact): with 13
     * more bits than half has, the final round-to-nearest-even then gives the correctly rounded
     * half of d itself. */
    float f = (float)d;
    if ((double)f != d && isfinite(f)) {
        if (fabs((double)f) > fabs(d)) f = nextafterf(f, 0.0f); /* truncated toward zero */
        f = bits_f32(f32_bits(f) | 1u);
    }
    return sdb_f32_to_f16(f);
}

int sdb_fp16_has_f16c(void)
{
    __builtin_cpu_init();
#if defined(__clang__) && __clang_major__ < 16
    /* clang before 16 does not know "f16c" here: CPUID leaf 1, ECX bit 29 (with AVX usable) */
    unsigned a, b, c, d;
    __asm__("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(1), "c"(0));
    return ((c >> 29) & 1u) && __builtin_cpu_supports("avx");
#else
    return __builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx");
#endif
}

__attribute__((target("avx,f16c")))
static void f16_to_f32_f16c(const uint16_t *src, float *dst, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm_loadu_si128((const __m128i *)(src + i));
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
    }
    for (; i < n; i++) dst[i] = sdb_f16_to_f32(src[i]);
}

void sdb_f16_to_f32_array(const uint16_t *src, float *dst, size_t n)
{
    if (n >= 8 && sdb_fp16_has_f16c()) {
        f16_to_f32_f16c(src, dst, n);
        return;
    }
    for (size_t i = 0; i < n; i++) dst[i] = sdb_f16_to_f32(src[i]);
}

void sdb_bf16_to_f32_array(const uint16_t *src, float *dst, size_t n)
{
    for (size_t i = 0; i < n; i++) dst[i] = sdb_bf16_to_f32(src[i]);
}

__attribute__((target("avx,f16c")))
static void f32_to_f16_f16c(const float *src, uint16_t *dst, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 x = _mm256_loadu_ps(src + i);
        if (_mm256_movemask_ps(_mm256_cmp_ps(x, x, _CMP_UNORD_Q))) {
            /* a NaN: F16C keeps its payload, the scalar code gives one quiet NaN */
            for (size_t j = i; j < i + 8; j++) dst[j] = sdb_f32_to_f16(src[j]);
            continue;
        }
        _mm_storeu_si128((__m128i *)(dst + i), _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
    for (; i < n; i++) dst[i] = sdb_f32_to_f16(src[i]);
}

void sdb_f32_to_f16_array(const float *src, uint16_t *dst, size_t n)
{
    if (n >= 8 && sdb_fp16_has_f16c()) {
        f32_to_f16_f16c(src, dst, n);
        return;
    }
    for (size_t i = 0; i < n; i++) dst[i] = sdb_f32_to_f16(src[i]);
}
