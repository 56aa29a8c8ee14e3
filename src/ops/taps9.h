/*
 * taps9.h — ops-internal: eight consecutive 3x3 filters of a weight tensor ([.., 9] taps each, as
 * torch stores a conv's weights) turned into nine 8-lane vectors, g[k][f] = tap k of filter f, for
 * the Winograd filter transforms (winograd.c, winograd2.c), which work on one filter per lane.
 *
 * The 72 taps are contiguous: nine plain loads (f16 weights widened exactly with F16C), then the
 * stride-9 transposition as two stride-3 ones, each done with blends and one lane permutation per
 * output vector (no gathers: on the AVX2 EPYC the gathers kept the F(2x2) transform waiting for half
 * its time). Reads exactly the 72 taps, so the last filters of a tensor are safe.
 *
 *   sdb_taps9_f32(w, g)        w: 72 floats
 *   sdb_taps9_f16(w, g)        w: 72 halves (call only where the CPU has F16C)
 *   sdb_taps9_conv(c, co, ci, g)  the filters (co, ci .. ci + 7) of a conv, either type
 *   sdb_taps9_usable(c)        whether this CPU may run sdb_taps9_conv on c's weights
 *   sdb_prefetch_next_filters  the weights a blocked filter transform reads next
 */
#ifndef SDB_OPS_TAPS9_H
#define SDB_OPS_TAPS9_H

#include "sdb/fp16.h"
#include "sdb/ops/conv.h"
#include "vexp.h"

#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>

/* x[j][m] = e[3m + j] for the 24 elements e of (a, b, c) (8 each), j < 3. Lane l of the blend for
 * component j takes the source vector holding an element ≡ j (mod 3) at lane l; the permutation
 * then puts those elements in order. */
__attribute__((target("avx2"))) static inline void sdb_deinterleave3(__m256 a, __m256 b, __m256 c, __m256 x[3])
{
    /* component 0: lanes 0 3 6 from a, 1 4 7 from b, 2 5 from c: [e0 e9 e18 e3 e12 e21 e6 e15] */
    const __m256 t0 = _mm256_blend_ps(_mm256_blend_ps(a, b, 0x92), c, 0x24);
    /* component 1: lanes 1 4 7 from a, 2 5 from b, 0 3 6 from c: [e16 e1 e10 e19 e4 e13 e22 e7] */
    const __m256 t1 = _mm256_blend_ps(_mm256_blend_ps(a, b, 0x24), c, 0x49);
    /* component 2: lanes 2 5 from a, 0 3 6 from b, 1 4 7 from c: [e8 e17 e2 e11 e20 e5 e14 e23] */
    const __m256 t2 = _mm256_blend_ps(_mm256_blend_ps(a, b, 0x49), c, 0x92);
    x[0] = _mm256_permutevar8x32_ps(t0, _mm256_setr_epi32(0, 3, 6, 1, 4, 7, 2, 5));
    x[1] = _mm256_permutevar8x32_ps(t1, _mm256_setr_epi32(1, 4, 7, 2, 5, 0, 3, 6));
    x[2] = _mm256_permutevar8x32_ps(t2, _mm256_setr_epi32(2, 5, 0, 3, 6, 1, 4, 7));
}

/* g[3i + j][f] = v[9f + 3i + j] for the 72 floats in v[0..8]: first r[j][m] = v[3m + j] (m < 24,
 * three vectors per j), then g[3i + j][f] = r[j][3f + i]. */
__attribute__((target("avx2"))) static inline void sdb_taps9_transpose(const __m256 v[9], __m256 g[9])
{
    __m256 r[3][3], x[3]; /* r[j][q]: r[j][8q .. 8q+7] */
    for (int q = 0; q < 3; q++) {
        sdb_deinterleave3(v[3 * q], v[3 * q + 1], v[3 * q + 2], x);
        for (int j = 0; j < 3; j++) r[j][q] = x[j];
    }
    for (int j = 0; j < 3; j++) {
        sdb_deinterleave3(r[j][0], r[j][1], r[j][2], x);
        for (int i = 0; i < 3; i++) g[3 * i + j] = x[i];
    }
}

__attribute__((target("avx2"))) static inline void sdb_taps9_f32(const float *w, __m256 g[9])
{
    __m256 v[9];
    for (int m = 0; m < 9; m++) v[m] = _mm256_loadu_ps(w + 8 * m);
    sdb_taps9_transpose(v, g);
}

__attribute__((target("avx2,f16c"))) static inline void sdb_taps9_f16(const uint16_t *w, __m256 g[9])
{
    __m256 v[9];
    for (int m = 0; m < 9; m++) v[m] = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + 8 * m)));
    sdb_taps9_transpose(v, g);
}

/* The taps of the filters (co, ci .. ci + 7) of c ([cout][cin][9] taps), f32 or f16. */
__attribute__((target("avx2,f16c"))) static inline void sdb_taps9_conv(const sdb_conv2d *c, int co, int ci, __m256 g[9])
{
    const size_t o = ((size_t)co * c->cin + ci) * 9;
    if (c->w.f32) sdb_taps9_f32(c->w.f32 + o, g);
    else sdb_taps9_f16(c->w.f16 + o, g);
}

/* 1 when this CPU may run sdb_taps9_conv (and the AVX2 transforms around it) on c's weights. */
static inline int sdb_taps9_usable(const sdb_conv2d *c)
{
    return sdb_vexp_have_avx2() && (c->w.f32 || sdb_fp16_has_f16c());
}

/* Asks for the cache lines of [p, p + bytes) (a prefetch never faults). */
static inline void sdb_prefetch_bytes(const void *p, size_t bytes)
{
    for (size_t b = 0; b < bytes; b += 64) _mm_prefetch((const char *)p + b, _MM_HINT_T0);
}

/* The weights of the filters (co, ci0 .. ci0 + n - 1) of c, asked for. */
static inline void sdb_prefetch_filters(const sdb_conv2d *c, int co, int ci0, int n)
{
    const size_t o = ((size_t)co * c->cin + ci0) * 9;
    if (c->w.f32) sdb_prefetch_bytes(c->w.f32 + o, (size_t)n * 9 * sizeof(float));
    else sdb_prefetch_bytes(c->w.f16 + o, (size_t)n * 9 * sizeof(uint16_t));
}

/* For a filter transform made per call in blocks (output channels co0 .. co1 - 1, chunks of kc input
 * channels from ci0, channel by channel): the weights it reads after channel co's, asked for while
 * co's are transformed (they come from memory once per call): the next channel's in this chunk,
 * after the block's last channel the next chunk's first. kc: this chunk's size (every chunk but the
 * last is full). */
static inline void sdb_prefetch_next_filters(const sdb_conv2d *c, int co, int co0, int co1, int ci0, int kc)
{
    if (co + 1 < co1) sdb_prefetch_filters(c, co + 1, ci0, kc);
    else if (ci0 + kc < c->cin) sdb_prefetch_filters(c, co0, ci0 + kc, c->cin - ci0 - kc < kc ? c->cin - ci0 - kc : kc);
}

#endif
