/*
 * rng.c — torch-compatible CPU random numbers (see include/sdb/rng.h).
 *
 * MT19937 is the reference algorithm (Matsumoto & Nishimura, init_genrand seeding). The normal
 * kernel follows torch 1.13's CPU path: normal_fill (AVX2) for numel >= 16, and
 * at::normal_distribution<double> per element below that. The AVX2 kernel's log and sincos are
 * the Cephes single-precision polynomials (as in avx_mathfun.h), evaluated here one lane at a time
 * with the multiply-adds that GCC fused in torch's build written as explicit fmaf() calls.
 */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#endif

#include "sdb/rng.h"

#include <math.h>
#include <string.h>

#define MT_M 397
#define MT_MATRIX_A 0x9908b0dfu
#define MT_UPPER 0x80000000u
#define MT_LOWER 0x7fffffffu

void sdb_rng_seed(sdb_rng *g, uint64_t seed)
{
    g->seed = seed;
    g->mt[0] = (uint32_t)(seed & 0xffffffffu);
    for (int i = 1; i < SDB_MT_N; i++)
        g->mt[i] = 1812433253u * (g->mt[i - 1] ^ (g->mt[i - 1] >> 30)) + (uint32_t)i;
    g->mti = SDB_MT_N;
    g->has_next_normal = 0;
    g->next_normal = 0.0;
}

static void mt_twist(sdb_rng *g)
{
    uint32_t *mt = g->mt;
    for (int i = 0; i < SDB_MT_N; i++) {
        uint32_t y = (mt[i] & MT_UPPER) | (mt[(i + 1) % SDB_MT_N] & MT_LOWER);
        uint32_t v = y >> 1;
        if (y & 1u) v ^= MT_MATRIX_A;
        mt[i] = mt[(i + MT_M) % SDB_MT_N] ^ v;
    }
    g->mti = 0;
}

uint32_t sdb_rng_u32(sdb_rng *g)
{
    if (g->mti >= SDB_MT_N) mt_twist(g);
    uint32_t y = g->mt[g->mti++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    return y;
}

static uint64_t rng_u64(sdb_rng *g)
{
    uint64_t hi = sdb_rng_u32(g);
    uint64_t lo = sdb_rng_u32(g);
    return (hi << 32) | lo;
}

static inline float uniform_f32(sdb_rng *g)
{
    return (float)(sdb_rng_u32(g) & 0xffffffu) * (1.0f / 16777216.0f);
}

static inline double uniform_f64(sdb_rng *g)
{
    return (double)(rng_u64(g) & ((1ull << 53) - 1)) * (1.0 / 9007199254740992.0);
}

void sdb_rng_rand(sdb_rng *g, float *out, size_t n)
{
    for (size_t i = 0; i < n; i++) out[i] = uniform_f32(g);
}

/* ---- Cephes single-precision log and sincos, one AVX lane ---------------------------------- */

static inline uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

/* log of x in (0, 1] (the kernel never sees x <= 0: u1 = 1 - uniform >= 2^-24). */
static float cephes_logf(float x)
{
    const float min_norm = u2f(0x00800000u);
    if (!(x > min_norm)) x = min_norm;                 /* _mm256_max_ps(x, min_norm) */
    int32_t imm0 = (int32_t)(f2u(x) >> 23);
    x = u2f((f2u(x) & ~0x7f800000u) | f2u(0.5f));      /* mantissa in [0.5, 1) */
    imm0 -= 0x7f;
    float e = (float)imm0;
    e = e + 1.0f;
    /* if x < SQRTHF: e -= 1, x = x + x - 1 else x = x - 1 */
    const float sqrthf = 0.707106781186547524f;
    float tmp = x < sqrthf ? x : 0.0f;
    float one_m = x < sqrthf ? 1.0f : 0.0f;
    x = x - 1.0f;
    e = e - one_m;
    x = x + tmp;

    float z = x * x;
    float y = 7.0376836292E-2f;
    y = fmaf(y, x, -1.1514610310E-1f);
    y = fmaf(y, x, 1.1676998740E-1f);
    y = fmaf(y, x, -1.2420140846E-1f);
    y = fmaf(y, x, 1.4249322787E-1f);
    y = fmaf(y, x, -1.6668057665E-1f);
    y = fmaf(y, x, 2.0000714765E-1f);
    y = fmaf(y, x, -2.4999993993E-1f);
    y = fmaf(y, x, 3.3333331174E-1f);
    y = y * x;
    /* y = y*z + e*q1 ; y = y - z*0.5 ; x = x + y ; x = x + e*q2 */
    float eq1 = e * -2.12194440e-4f;
    y = fmaf(y, z, eq1);
    y = fmaf(z, -0.5f, y);
    x = x + y;
    x = fmaf(e, 0.693359375f, x);
    return x;
}

static void cephes_sincosf(float xin, float *s, float *c)
{
    uint32_t sign_sin = f2u(xin) & 0x80000000u;
    float x = u2f(f2u(xin) & 0x7fffffffu);
    float y = x * 1.27323954473516f;                    /* 4/pi */
    int32_t j = (int32_t)y;                             /* cvttps: truncation */
    j = (j + 1) & ~1;
    y = (float)j;
    uint32_t swap_sin = (uint32_t)(j & 4) << 29;
    int poly_sin = (j & 2) == 0;                        /* 1: sine uses the sine polynomial */
    uint32_t sign_cos = (uint32_t)(~(j - 2) & 4) << 29;
    sign_sin ^= swap_sin;

    /* extended precision modular arithmetic: x = ((x - y*DP1) - y*DP2) - y*DP3 */
    x = fmaf(y, -0.78515625f, x);
    x = fmaf(y, -2.4187564849853515625e-4f, x);
    x = fmaf(y, -3.77489497744594108e-8f, x);

    float z = x * x;
    float yc = fmaf(2.443315711809948E-005f, z, -1.388731625493765E-003f);
    yc = fmaf(yc, z, 4.166664568298827E-002f);
    yc = yc * z;
    float hz = z * 0.5f;
    yc = fmaf(yc, z, -hz);
    yc = yc + 1.0f;

    float ys = fmaf(-1.9515295891E-4f, z, 8.3321608736E-3f);
    ys = fmaf(ys, z, -1.6666654611E-1f);
    ys = ys * z;
    ys = fmaf(ys, x, x);

    float sv = poly_sin ? ys : yc;
    float cv = poly_sin ? yc : ys;
    *s = u2f(f2u(sv) ^ sign_sin);
    *c = u2f(f2u(cv) ^ sign_cos);
}

/* torch's normal_fill_16_AVX2 with mean 0, std 1 (fmadd(n, 1, 0) is the identity). */
static void normal_fill_16(float *data)
{
    const float two_pi = (float)(2.0 * 3.14159265358979323846);
    for (int j = 0; j < 8; j++) {
        float u1 = 1.0f - data[j];
        float u2 = data[j + 8];
        float radius = sqrtf(-2.0f * cephes_logf(u1));
        float theta = two_pi * u2;
        float s, c;
        cephes_sincosf(theta, &s, &c);
        data[j] = radius * c + 0.0f;      /* + mean: turns -0 into +0 like the fmadd */
        data[j + 8] = radius * s + 0.0f;
    }
}

void sdb_rng_randn(sdb_rng *g, float *out, size_t n)
{
    if (n >= 16) {
        for (size_t i = 0; i < n; i++) out[i] = uniform_f32(g);
        for (size_t b = 0; b + 16 <= n; b += 16) normal_fill_16(out + b);
        if (n % 16 != 0) {
            float *tail = out + n - 16;
            for (int i = 0; i < 16; i++) tail[i] = uniform_f32(g);
            normal_fill_16(tail);
        }
        return;
    }
    for (size_t i = 0; i < n; i++) {
        if (g->has_next_normal) {
            g->has_next_normal = 0;
            out[i] = (float)g->next_normal;
            continue;
        }
        double u1 = uniform_f64(g);
        double u2 = uniform_f64(g);
        double r = sqrt(-2.0 * log(1.0 - u2));
        double theta = 2.0 * M_PI * u1;
        g->next_normal = r * sin(theta);
        g->has_next_normal = 1;
        out[i] = (float)(r * cos(theta));
    }
}
