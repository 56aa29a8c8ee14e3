/*
 * attention.c — multi-head attention, chunked over (head, query-row block) (see attention.h).
 *
 * Softmax is taken in base 2: scores are made as S = (scale · log2 e) · Q·Kᵀ and exponentiated as
 * 2^(S - max), which is exp(scale · Q·Kᵀ - max) up to float rounding and saves a multiply and a
 * range-reduction step per score (the max is subtracted first, as torch does).
 *
 * Without causal masking, on AVX2+FMA CPUs and head dims that are multiples of 8 up to 160 (every
 * SD 1.x/2.x U-Net level), the blocked path (attention_blocked below) packs each head's K and V
 * contiguously once per call, then per task (a head, up to 96 query rows) walks the keys in blocks
 * in flash attention's order: the block's scores with register-blocked kernels, a running max and
 * sum per row with the output rescaled when the max grows, P·V added into the output; one division
 * per output row at the end. Scores never leave L1. It calls no OpenBLAS and opens no parallel
 * region for tiny products (running serially cannot change its results).
 *
 * Otherwise (CLIP's causal self-attention, the VAE's single 512-wide head, CPUs without AVX2) each
 * task computes S with one sgemm, normalises P row by row in place, then O = P·V with a second sgemm
 * straight into its head's output columns.
 *
 * Memory: the packed K and V, and per thread a task's state (a few KiB per row group) or, on the
 * sgemm path, one block of scores (64 rows × the keys): never a whole head's score matrix. Tasks
 * run in an OpenMP loop; inside it OpenBLAS runs single-threaded, and every task's arithmetic is
 * fixed by the shapes, so results are the same for any thread count.
 */
#include "sdb/ops/attention.h"
#include "sdb/error.h"
#include "sdb/ops/par.h"

#include <assert.h>
#include <cblas.h>
#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define ATTN_BLOCK_ROWS 64  /* query rows per task of the sgemm path */
static const float LOG2E = 1.44269504088896341f;

/* ---- blocked AVX2 path (non-causal, head_dim a multiple of 8, at most ATTN_MAX_HD) ----
 *
 * OpenBLAS is poorly shaped for attention's products: QKᵀ has an inner dimension of head_dim (40
 * in SD 1.x's first level) and P·V an output width of head_dim, and every call re-packs a whole
 * head's K or V and the block's P. Here query rows run in vector lanes: a row group of 24 rows is
 * 3 vectors, so every per-row quantity (the running max, the sum, the rescale factor) is a lane of
 * a vector and needs no horizontal operation. A task (head, up to ATTN_GROUPS row groups) walks the
 * keys in blocks of ATTN_KBLOCK (flash attention's order: the block's K and V rows stay in L1 while
 * each row group uses them, and the scores never leave L1):
 *   Sᵀ[key][row] = Kblock · (scale·log2 e · Q)ᵀ   (qk_24x4: 24 rows x 4 keys, K broadcast)
 *   m' = max(m, block max), a = 2^(m - m'), P = 2^(Sᵀ - m'), l = a·l + Σ P
 *   Oᵀ[col][row] = a·Oᵀ + Vblockᵀ · P            (pv_24x4: 24 rows x 4 columns, V broadcast)
 * and at the end O = Oᵀ / l, transposed into the output. K and V are packed per head ([key][d],
 * contiguous) once per call; Q is packed once per task, transposed. Key blocks start at multiples
 * of the block size (a function of nk only) and every sum runs in a fixed order (d = 0.. for
 * scores, keys in order within a block, blocks in order), and a row's lane never mixes with
 * another's, so each output element's arithmetic is fixed by the shapes: the same for any thread
 * count and any grouping of rows into tasks.
 *
 * Against the former path (per 24 query rows a 24 x nk score block, 393 KB at 4096 keys, with the
 * head's K and V streaming past it), on a 2-core Zen 3 at 4096 x 4096 keys, 8 heads of 40: 3.1x
 * fewer misses of a 512 KB L2 (cachegrind), 1.04-1.05x faster at 1 and 2 threads; 1.2-1.4x at
 * 1024 queries and on the smaller levels. */
#define ATTN_LANES 24       /* query rows per row group: 3 vectors */
#ifndef ATTN_GROUPS             /* (the tuning knobs can be set from the compiler's command line) */
#define ATTN_GROUPS 4       /* row groups per task (fewer for small calls, see task_groups) */
#endif
#ifndef ATTN_KBLOCK
#define ATTN_KBLOCK 64      /* keys per block */
#endif
#ifndef ATTN_KBLOCK_MAX
#define ATTN_KBLOCK_MAX 128 /* calls with at most this many keys take them in one block */
#endif
#define ATTN_MAX_HD 160
#define ATTN_MIN_TASKS 512 /* fewer row groups per task (down to 1) until a call has this many tasks */

/* The base-2 exponential of 8 arguments <= 0 (in log2 units): t = n + f with n = round(t),
 * |f| <= 1/2; 2^f by a degree-6 polynomial (Chebyshev fit, relative error < 2e-8), 2^n added into
 * the exponent bits. t is clamped at -125 so that the result stays a normal float: terms that small
 * (< 3e-38 of the row's largest, which is 1) are far below float resolution of the sum and of P·V. */
static const float E2_0 = 1.0f, E2_1 = 6.9314718246e-01f, E2_2 = 2.4022650719e-01f,
                   E2_3 = 5.5503271520e-02f, E2_4 = 9.6180252731e-03f, E2_5 = 1.3400432654e-03f,
                   E2_6 = 1.5469729260e-04f;
#define E2_LO (-125.0f)
#define E2_SHIFT 12582912.0f /* 1.5 * 2^23: t + SHIFT rounds t to an integer, which its low bits hold */

__attribute__((target("avx2,fma")))
static inline __m256 exp2_8(__m256 t)
{
    t = _mm256_max_ps(t, _mm256_set1_ps(E2_LO));
    const __m256 shift = _mm256_set1_ps(E2_SHIFT);
    __m256 y = _mm256_add_ps(t, shift); /* round(t) in the low mantissa bits, ties to even */
    __m256 f = _mm256_sub_ps(t, _mm256_sub_ps(y, shift));
    __m256 p = _mm256_fmadd_ps(_mm256_set1_ps(E2_6), f, _mm256_set1_ps(E2_5));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(E2_4));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(E2_3));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(E2_2));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(E2_1));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(E2_0));
    __m256i e = _mm256_slli_epi32(_mm256_castps_si256(y), 23); /* the mantissa's top bit and the exponent fall off */
    return _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p), e));
}

static inline float exp2_scalar(float t)
{
    t = t < E2_LO ? E2_LO : t;
    float n = nearbyintf(t), f = t - n;
    float p = fmaf(E2_6, f, E2_5);
    p = fmaf(p, f, E2_4);
    p = fmaf(p, f, E2_3);
    p = fmaf(p, f, E2_2);
    p = fmaf(p, f, E2_1);
    p = fmaf(p, f, E2_0);
    uint32_t u;
    memcpy(&u, &p, 4);
    u += (uint32_t)((int32_t)n * (1 << 23));
    memcpy(&p, &u, 4);
    return p;
}

/* row[j] = 2^(row[j] - m) for j < n, returning the sum (8 lane partial sums, then a fixed order) */
__attribute__((target("avx2,fma")))
static float exp2_sum_avx2(float *row, int n, float m)
{
    const __m256 vm = _mm256_set1_ps(m);
    __m256 acc = _mm256_setzero_ps();
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        __m256 v = exp2_8(_mm256_sub_ps(_mm256_loadu_ps(row + j), vm));
        _mm256_storeu_ps(row + j, v);
        acc = _mm256_add_ps(acc, v);
    }
    float lanes[8];
    _mm256_storeu_ps(lanes, acc);
    float sum = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
    for (; j < n; j++) { row[j] = exp2_scalar(row[j] - m); sum += row[j]; }
    return sum;
}

static float exp2_sum_scalar(float *row, int n, float m)
{
    float lanes[8] = {0};
    int j = 0;
    for (; j + 8 <= n; j += 8)
        for (int l = 0; l < 8; l++) { row[j + l] = exp2_scalar(row[j + l] - m); lanes[l] += row[j + l]; }
    float sum = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
    for (; j < n; j++) { row[j] = exp2_scalar(row[j] - m); sum += row[j]; }
    return sum;
}

/* st[j][0 .. 24) = sum_d qt[d][0 .. 24) k_j[d] for the 4 keys at k (rows ldk apart) / the 1 key,
 * and the block maxima bm[0 .. 24) raised to them. The accumulators are named variables (not
 * arrays) so that they stay in registers at any optimisation level: 12 + 3 rows of Qᵀ + 1 = 16. */
/* The 24 x 4 tile both products share, in 12 accumulators c<x><r> (x: the tile's 4 columns, r: its
 * 3 vectors of 8 rows): c<x><r> += v<r> · *b<x> (one rank-1 update), and the tile stored as [x][24]. */
#define TILE_FMA(v0_, v1_, v2_, b0, b1, b2, b3) do {                                                  \
        const __m256 v0 = (v0_), v1 = (v1_), v2 = (v2_);                                              \
        __m256 a = _mm256_broadcast_ss(b0);                                                           \
        c00 = _mm256_fmadd_ps(v0, a, c00); c01 = _mm256_fmadd_ps(v1, a, c01); c02 = _mm256_fmadd_ps(v2, a, c02); \
        a = _mm256_broadcast_ss(b1);                                                                  \
        c10 = _mm256_fmadd_ps(v0, a, c10); c11 = _mm256_fmadd_ps(v1, a, c11); c12 = _mm256_fmadd_ps(v2, a, c12); \
        a = _mm256_broadcast_ss(b2);                                                                  \
        c20 = _mm256_fmadd_ps(v0, a, c20); c21 = _mm256_fmadd_ps(v1, a, c21); c22 = _mm256_fmadd_ps(v2, a, c22); \
        a = _mm256_broadcast_ss(b3);                                                                  \
        c30 = _mm256_fmadd_ps(v0, a, c30); c31 = _mm256_fmadd_ps(v1, a, c31); c32 = _mm256_fmadd_ps(v2, a, c32); \
    } while (0)
#define TILE_STORE(dst) do {                                                                          \
        float *o = (dst);                                                                             \
        _mm256_storeu_ps(o, c00); _mm256_storeu_ps(o + 8, c01); _mm256_storeu_ps(o + 16, c02); o += ATTN_LANES; \
        _mm256_storeu_ps(o, c10); _mm256_storeu_ps(o + 8, c11); _mm256_storeu_ps(o + 16, c12); o += ATTN_LANES; \
        _mm256_storeu_ps(o, c20); _mm256_storeu_ps(o + 8, c21); _mm256_storeu_ps(o + 16, c22); o += ATTN_LANES; \
        _mm256_storeu_ps(o, c30); _mm256_storeu_ps(o + 8, c31); _mm256_storeu_ps(o + 16, c32);        \
    } while (0)

__attribute__((target("avx2,fma")))
static inline void qk_max(float *bm, __m256 x0, __m256 x1, __m256 x2)
{
    _mm256_storeu_ps(bm, _mm256_max_ps(_mm256_loadu_ps(bm), x0));
    _mm256_storeu_ps(bm + 8, _mm256_max_ps(_mm256_loadu_ps(bm + 8), x1));
    _mm256_storeu_ps(bm + 16, _mm256_max_ps(_mm256_loadu_ps(bm + 16), x2));
}

__attribute__((target("avx2,fma")))
static void qk_24x4(const float *qt, const float *k, int ldk, int hd, float *st, float *bm)
{
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c02 = c00, c10 = c00, c11 = c00, c12 = c00;
    __m256 c20 = c00, c21 = c00, c22 = c00, c30 = c00, c31 = c00, c32 = c00;
    const float *k0 = k, *k1 = k + ldk, *k2 = k + 2 * (size_t)ldk, *k3 = k + 3 * (size_t)ldk;
    for (int d = 0; d < hd; d++) {
        const float *b = qt + (size_t)d * ATTN_LANES;
        TILE_FMA(_mm256_loadu_ps(b), _mm256_loadu_ps(b + 8), _mm256_loadu_ps(b + 16), k0 + d, k1 + d, k2 + d, k3 + d);
    }
    TILE_STORE(st);
    qk_max(bm, _mm256_max_ps(_mm256_max_ps(c00, c10), _mm256_max_ps(c20, c30)),
           _mm256_max_ps(_mm256_max_ps(c01, c11), _mm256_max_ps(c21, c31)),
           _mm256_max_ps(_mm256_max_ps(c02, c12), _mm256_max_ps(c22, c32)));
}

__attribute__((target("avx2,fma")))
static void qk_24x1(const float *qt, const float *k, int hd, float *st, float *bm)
{
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c02 = c00;
    for (int d = 0; d < hd; d++) {
        const float *b = qt + (size_t)d * ATTN_LANES;
        __m256 a = _mm256_broadcast_ss(k + d);
        c00 = _mm256_fmadd_ps(_mm256_loadu_ps(b), a, c00);
        c01 = _mm256_fmadd_ps(_mm256_loadu_ps(b + 8), a, c01);
        c02 = _mm256_fmadd_ps(_mm256_loadu_ps(b + 16), a, c02);
    }
    _mm256_storeu_ps(st, c00); _mm256_storeu_ps(st + 8, c01); _mm256_storeu_ps(st + 16, c02);
    qk_max(bm, c00, c01, c02);
}

/* ot[c][0 .. 24) = alpha[0 .. 24) ot[c][..] (0 when `first`) + sum_{j<nb} v_j[c] pt[j][0 .. 24) for
 * the 4 columns c = 0..3 of v (rows ldv apart) and of ot: 12 accumulators + 3 rows of P + 1 = 16. */
__attribute__((target("avx2,fma")))
static void pv_24x4(const float *pt, const float *v, int ldv, int nb, float *ot, const float *alpha, int first)
{
    __m256 c00, c01, c02, c10, c11, c12, c20, c21, c22, c30, c31, c32;
    if (first) {
        c00 = _mm256_setzero_ps(); c01 = c00; c02 = c00; c10 = c00; c11 = c00; c12 = c00;
        c20 = c00; c21 = c00; c22 = c00; c30 = c00; c31 = c00; c32 = c00;
    } else {
        const __m256 a0 = _mm256_loadu_ps(alpha), a1 = _mm256_loadu_ps(alpha + 8), a2 = _mm256_loadu_ps(alpha + 16);
#define PV_LOAD(x, c, a, off) x = _mm256_mul_ps(a, _mm256_loadu_ps(ot + (c) * ATTN_LANES + (off)))
        PV_LOAD(c00, 0, a0, 0); PV_LOAD(c01, 0, a1, 8); PV_LOAD(c02, 0, a2, 16);
        PV_LOAD(c10, 1, a0, 0); PV_LOAD(c11, 1, a1, 8); PV_LOAD(c12, 1, a2, 16);
        PV_LOAD(c20, 2, a0, 0); PV_LOAD(c21, 2, a1, 8); PV_LOAD(c22, 2, a2, 16);
        PV_LOAD(c30, 3, a0, 0); PV_LOAD(c31, 3, a1, 8); PV_LOAD(c32, 3, a2, 16);
#undef PV_LOAD
    }
    for (int j = 0; j < nb; j++) {
        const float *p = pt + (size_t)j * ATTN_LANES, *b = v + (size_t)j * ldv;
        TILE_FMA(_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8), _mm256_loadu_ps(p + 16), b, b + 1, b + 2, b + 3);
    }
    TILE_STORE(ot);
}
#undef TILE_FMA
#undef TILE_STORE

/* x[i][j] <- x[j][i] for an 8x8 block of floats in 8 vectors */
__attribute__((target("avx2,fma")))
static inline void transpose8(__m256 *x)
{
    __m256 t[8], u[8];
    for (int i = 0; i < 8; i += 2) { t[i] = _mm256_unpacklo_ps(x[i], x[i + 1]); t[i + 1] = _mm256_unpackhi_ps(x[i], x[i + 1]); }
    for (int i = 0; i < 8; i += 4) {
        u[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);     u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
        u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44); u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    for (int i = 0; i < 4; i++) {
        x[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
        x[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
    }
}

/* A row group's state across key blocks: Qᵀ (scaled), Oᵀ, the running max m and sum l per row. */
typedef struct {
    float *qt, *ot; /* [hd][24] each */
    float *m, *l;   /* [24] each */
} row_group;

/* One key block (keys j0 .. j0+nb-1) for one row group; st: [nb][24] scratch (nb <= ATTN_KBLOCK_MAX). */
__attribute__((target("avx2,fma")))
static void group_block(row_group *g, const float *kh, int ldk, const float *vh, int ldv, int j0, int nb, int hd,
                        float *st)
{
    float bm[ATTN_LANES], alpha[ATTN_LANES];
    for (int i = 0; i < ATTN_LANES; i++) bm[i] = -INFINITY;
    const float *kj = kh + (size_t)j0 * ldk;
    int j = 0;
    for (; j + 4 <= nb; j += 4) qk_24x4(g->qt, kj + (size_t)j * ldk, ldk, hd, st + (size_t)j * ATTN_LANES, bm);
    for (; j < nb; j++) qk_24x1(g->qt, kj + (size_t)j * ldk, hd, st + (size_t)j * ATTN_LANES, bm);
    const int first = j0 == 0;
    __m256 m[3], s[3] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int r = 0; r < 3; r++) {
        __m256 b = _mm256_loadu_ps(bm + 8 * r);
        if (first) { m[r] = b; _mm256_storeu_ps(alpha + 8 * r, _mm256_setzero_ps()); /* unused */ }
        else {
            __m256 old = _mm256_loadu_ps(g->m + 8 * r);
            m[r] = _mm256_max_ps(old, b);
            _mm256_storeu_ps(alpha + 8 * r, exp2_8(_mm256_sub_ps(old, m[r])));
        }
        _mm256_storeu_ps(g->m + 8 * r, m[r]);
    }
    for (j = 0; j < nb; j++) {
        float *p = st + (size_t)j * ATTN_LANES;
        __m256 p0 = exp2_8(_mm256_sub_ps(_mm256_loadu_ps(p), m[0]));
        __m256 p1 = exp2_8(_mm256_sub_ps(_mm256_loadu_ps(p + 8), m[1]));
        __m256 p2 = exp2_8(_mm256_sub_ps(_mm256_loadu_ps(p + 16), m[2]));
        _mm256_storeu_ps(p, p0); _mm256_storeu_ps(p + 8, p1); _mm256_storeu_ps(p + 16, p2);
        s[0] = _mm256_add_ps(s[0], p0); s[1] = _mm256_add_ps(s[1], p1); s[2] = _mm256_add_ps(s[2], p2);
    }
    for (int r = 0; r < 3; r++) {
        __m256 l = first ? s[r] : _mm256_fmadd_ps(_mm256_loadu_ps(alpha + 8 * r), _mm256_loadu_ps(g->l + 8 * r), s[r]);
        _mm256_storeu_ps(g->l + 8 * r, l);
    }
    const float *vj = vh + (size_t)j0 * ldv;
    for (int c = 0; c < hd; c += 4) pv_24x4(st, vj + c, ldv, nb, g->ot + (size_t)c * ATTN_LANES, alpha, first);
}

/* Keys per block: all of them when they are few (cross-attention's 77 text tokens), else ATTN_KBLOCK. */
static int key_block(int nk) { return nk <= ATTN_KBLOCK_MAX ? nk : ATTN_KBLOCK; }

/* One task: `rows` query rows (at most ATTN_GROUPS * 24) of one head against all nk keys. ws holds
 * ATTN_GROUPS row groups' state then the block's scores (task_floats). */
__attribute__((target("avx2,fma")))
static void blocked_task(const float *qh, int ldq, int rows, const float *kh, int ldk, const float *vh, int ldv,
                         int nk, int hd, float scale2, float *oh, int ldo, float *ws)
{
    row_group g[ATTN_GROUPS];
    const int ng = (rows + ATTN_LANES - 1) / ATTN_LANES;
    assert(ng <= ATTN_GROUPS);
    for (int r = 0; r < ng; r++) {
        g[r].qt = ws; ws += (size_t)hd * ATTN_LANES;
        g[r].ot = ws; ws += (size_t)hd * ATTN_LANES;
        g[r].m = ws; ws += ATTN_LANES;
        g[r].l = ws; ws += ATTN_LANES;
        /* Qᵀ, scale·log2 e folded in; rows past `rows` are 0. 8 whole rows at a time by 8x8 transposes. */
        const __m256 vs = _mm256_set1_ps(scale2);
        for (int i0 = 0; i0 < ATTN_LANES; i0 += 8) {
            const int row0 = r * ATTN_LANES + i0;
            float *dst = g[r].qt + i0;
            if (row0 + 8 <= rows) {
                for (int d0 = 0; d0 < hd; d0 += 8) {
                    __m256 x[8];
                    for (int i = 0; i < 8; i++) x[i] = _mm256_loadu_ps(qh + (size_t)(row0 + i) * ldq + d0);
                    transpose8(x);
                    for (int d = 0; d < 8; d++) _mm256_storeu_ps(dst + (size_t)(d0 + d) * ATTN_LANES, _mm256_mul_ps(vs, x[d]));
                }
                continue;
            }
            for (int i = 0; i < 8; i++) {
                const int row = row0 + i;
                if (row < rows)
                    for (int d = 0; d < hd; d++) dst[(size_t)d * ATTN_LANES + i] = scale2 * qh[(size_t)row * ldq + d];
                else
                    for (int d = 0; d < hd; d++) dst[(size_t)d * ATTN_LANES + i] = 0.0f;
            }
        }
    }
    float *st = ws;
    const int kb = key_block(nk);
    for (int j0 = 0; j0 < nk; j0 += kb) {
        const int nb = nk - j0 < kb ? nk - j0 : kb;
        for (int r = 0; r < ng; r++) group_block(&g[r], kh, ldk, vh, ldv, j0, nb, hd, st);
    }
    for (int r = 0; r < ng; r++) /* O = Oᵀ / l: 8 whole rows at a time by 8x8 transposes */
        for (int i0 = 0; i0 < ATTN_LANES; i0 += 8) {
            const int row0 = r * ATTN_LANES + i0;
            const float *ot = g[r].ot + i0;
            if (row0 >= rows) break;
            if (row0 + 8 <= rows) {
                const __m256 inv = _mm256_div_ps(_mm256_set1_ps(1.0f), _mm256_loadu_ps(g[r].l + i0));
                for (int c0 = 0; c0 < hd; c0 += 8) {
                    __m256 x[8];
                    for (int c = 0; c < 8; c++) x[c] = _mm256_mul_ps(_mm256_loadu_ps(ot + (size_t)(c0 + c) * ATTN_LANES), inv);
                    transpose8(x);
                    for (int i = 0; i < 8; i++) _mm256_storeu_ps(oh + (size_t)(row0 + i) * ldo + c0, x[i]);
                }
                continue;
            }
            for (int i = 0; i < 8 && row0 + i < rows; i++) {
                const float inv = 1.0f / g[r].l[i0 + i];
                float *o = oh + (size_t)(row0 + i) * ldo;
                for (int c = 0; c < hd; c++) o[c] = ot[(size_t)c * ATTN_LANES + i] * inv;
            }
        }
}

static size_t task_floats(int hd) { return (size_t)ATTN_GROUPS * (2 * (size_t)hd + 2) * ATTN_LANES + (size_t)ATTN_KBLOCK_MAX * ATTN_LANES; }

/* Row groups per task of the blocked path: ATTN_GROUPS, or fewer (at least 1) while a call would
 * have fewer than ATTN_MIN_TASKS tasks (small latents: 16x16 has 256 query rows). A row's
 * arithmetic does not depend on the rows it is grouped with. */
static int task_groups(int nq, int heads)
{
    int g = ATTN_GROUPS;
    while (g > 1 && (long)heads * ((nq + g * ATTN_LANES - 1) / (g * ATTN_LANES)) < ATTN_MIN_TASKS) g--;
    return g;
}

static int blocked_parallel(int nq, int nk, int heads, int hd) { return (long)nq * nk * heads * hd > 262144; }

static int use_blocked(int causal, int head_dim)
{
    __builtin_cpu_init();
    const int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    return avx2 && !causal && head_dim % 8 == 0 && head_dim <= ATTN_MAX_HD;
}

static int attention_blocked(const float *q, int ldq, const float *k, int ldk, const float *v, int ldv,
                             float *out, int ldo, int nq, int nk, int heads, int hd, float scale,
                             sdb_arena *scratch)
{
    const int nthreads = omp_get_max_threads();
    const size_t per = task_floats(hd);
    size_t mark = sdb_arena_mark(scratch);
    float *ws = sdb_arena_floats(scratch, (size_t)nthreads * per);
    if (!ws) { sdb_arena_reset(scratch, mark); return SDB_ENOMEM; }
    const int R = task_groups(nq, heads) * ATTN_LANES;
    const int nblocks = (nq + R - 1) / R, ntasks = heads * nblocks;
    float *kp = sdb_arena_floats(scratch, (size_t)heads * nk * hd), *vp = sdb_arena_floats(scratch, (size_t)heads * nk * hd);
    if (!kp || !vp) { sdb_arena_reset(scratch, mark); return SDB_ENOMEM; }
#pragma omp parallel if (blocked_parallel(nq, nk, heads, hd))
    {
        /* each head's K and V rows contiguous, kp[h][j][d] and vp[h][j][d]: a task then reads both as
         * two sequential streams (6% faster than reading them in place, hd of every ldk floats) */
#pragma omp for schedule(static)
        for (int hj = 0; hj < heads * nk; hj++) {
            const int h = hj / nk, j = hj % nk;
            memcpy(kp + ((size_t)h * nk + j) * hd, k + (size_t)j * ldk + (size_t)h * hd, sizeof(float) * hd);
            memcpy(vp + ((size_t)h * nk + j) * hd, v + (size_t)j * ldv + (size_t)h * hd, sizeof(float) * hd);
        }
#pragma omp for schedule(dynamic, 1)
        for (int task = 0; task < ntasks; task++) {
            const int h = task / nblocks, r0 = (task % nblocks) * R;
            const int rows = nq - r0 < R ? nq - r0 : R;
            blocked_task(q + (size_t)r0 * ldq + (size_t)h * hd, ldq, rows, kp + (size_t)h * nk * hd, hd,
                         vp + (size_t)h * nk * hd, hd, nk, hd, scale * LOG2E, out + (size_t)r0 * ldo + (size_t)h * hd,
                         ldo, ws + (size_t)omp_get_thread_num() * per);
        }
    }
    sdb_arena_reset(scratch, mark);
    return 0;
}

int sdb_attention(const float *q, int ldq, const float *k, int ldk, const float *v, int ldv,
                  float *out, int ldo, int nq, int nk, int heads, int head_dim, float scale,
                  int causal, sdb_arena *scratch)
{
    if (use_blocked(causal, head_dim))
        return attention_blocked(q, ldq, k, ldk, v, ldv, out, ldo, nq, nk, heads, head_dim, scale, scratch);
    const int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    int nthreads = omp_get_max_threads();
    size_t mark = sdb_arena_mark(scratch);
    float *sbuf = sdb_arena_floats(scratch, (size_t)nthreads * ATTN_BLOCK_ROWS * (size_t)nk);
    if (!sbuf) return SDB_ENOMEM;
    int nblocks = (nq + ATTN_BLOCK_ROWS - 1) / ATTN_BLOCK_ROWS;
    int ntasks = heads * nblocks;

#pragma omp parallel for schedule(dynamic, 1) /* always a real team: inside it OpenBLAS runs single-threaded */
    for (int task = 0; task < ntasks; task++) {
        int h = task / nblocks, blk = task % nblocks;
        int r0 = blk * ATTN_BLOCK_ROWS;
        int rows = nq - r0 < ATTN_BLOCK_ROWS ? nq - r0 : ATTN_BLOCK_ROWS;
        float *s = sbuf + (size_t)omp_get_thread_num() * ATTN_BLOCK_ROWS * (size_t)nk;
        const float *qh = q + (size_t)r0 * ldq + (size_t)h * head_dim;
        const float *kh = k + (size_t)h * head_dim;
        const float *vh = v + (size_t)h * head_dim;
        /* S = scale * Q Kᵀ, in log2 units */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, nk, head_dim, scale * LOG2E,
                    qh, ldq, kh, ldk, 0.0f, s, nk);
        for (int i = 0; i < rows; i++) {
            float *row = s + (size_t)i * nk;
            int valid = causal ? (r0 + i + 1 < nk ? r0 + i + 1 : nk) : nk;
            float mx = row[0];
            for (int j = 1; j < valid; j++) mx = row[j] > mx ? row[j] : mx;
            float sum = avx2 ? exp2_sum_avx2(row, valid, mx) : exp2_sum_scalar(row, valid, mx);
            float inv = 1.0f / sum;
            for (int j = 0; j < valid; j++) row[j] *= inv;
            for (int j = valid; j < nk; j++) row[j] = 0.0f;
        }
        /* O = P V */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, head_dim, nk, 1.0f,
                    s, nk, vh, ldv, 0.0f, out + (size_t)r0 * ldo + (size_t)h * head_dim, ldo);
    }
    sdb_arena_reset(scratch, mark);
    return 0;
}

void sdb_attention_plan(int nq, int nk, int heads, int head_dim, int causal, sdb_par_rec *rec)
{
    sdb_par_op_begin(rec, SDB_PAR_ATTENTION, "attention %d x %d keys, %d heads of %d%s", nq, nk, heads,
                     head_dim, causal ? ", causal" : "");
    const int blocked = use_blocked(causal, head_dim);
    const int R = blocked ? task_groups(nq, heads) * ATTN_LANES : ATTN_BLOCK_ROWS;
    const int nblocks = (nq + R - 1) / R, ntasks = heads * nblocks;
    const int par = blocked ? blocked_parallel(nq, nk, heads, head_dim) : 1;
    if (blocked) /* packing K and V: read and write both */
        sdb_par_loop_add(rec, SDB_PAR_STATIC, (long)heads * nk, NULL, 16.0 * head_dim, 1, par);
    double *cost = malloc((size_t)ntasks * sizeof *cost);
    if (!cost) { rec->failed = 1; return; }
    for (int t = 0; t < ntasks; t++) {
        const int blk = t % nblocks;
        int rows = nq - blk * R < R ? nq - blk * R : R;
        if (blocked) rows = (rows + ATTN_LANES - 1) / ATTN_LANES * ATTN_LANES; /* whole row groups */
        cost[t] = 4.0 * rows * (double)nk * head_dim; /* the two products */
    }
    sdb_par_loop_add(rec, SDB_PAR_DYNAMIC, ntasks, cost, 0, 0, par);
    free(cost);
}
