/*
 * attention.c — multi-head attention, chunked over (head, query-row block) (see attention.h).
 *
 * Softmax is taken in base 2: scores are made as S = (scale · log2 e) · Q·Kᵀ and exponentiated as
 * 2^(S - max), which is exp(scale · Q·Kᵀ - max) up to float rounding and saves a multiply and a
 * range-reduction step per score (the max is subtracted first, as torch does).
 *
 * Without causal masking, on AVX2+FMA CPUs and head dims that are multiples of 8 up to 160 (every
 * SD 1.x/2.x U-Net level), the packed path (attention_packed below) packs each head's K and V once
 * per call and runs register-blocked kernels: per task of ATTN_PACKED_ROWS query rows, the scores
 * (with each row's running max tracked as they are made), one pass of 2^(S - max) with the row sums,
 * P·V, and a final division of each output row by its sum. It calls no OpenBLAS and opens no
 * parallel region for tiny products (running serially cannot change its results).
 *
 * Otherwise (CLIP's causal self-attention, the VAE's single 512-wide head, CPUs without AVX2) each
 * task computes S with one sgemm, normalises P row by row in place, then O = P·V with a second sgemm
 * straight into its head's output columns.
 *
 * Memory: one block of scores per thread (24 or 64 rows × the keys), never a whole head's score
 * matrix. Tasks run in an OpenMP loop; inside it OpenBLAS runs single-threaded, and every task's
 * arithmetic is fixed by the shapes, so results are the same for any thread count.
 */
#include "sdb/ops/attention.h"
#include "sdb/error.h"
#include "sdb/ops/par.h"

#include <cblas.h>
#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define ATTN_BLOCK_ROWS 64  /* query rows per task of the sgemm path */
#define ATTN_PACKED_ROWS 24 /* query rows per task of the packed path: its scores stay in L2 */
#define ATTN_MIN_TASKS 512  /* fewer rows per task (down to 8) until a call has this many tasks */
static const float LOG2E = 1.44269504088896341f;

/* ---- packed AVX2 path (non-causal, head_dim a multiple of 8, at most ATTN_PACK_MAX_HD) ----
 *
 * OpenBLAS is poorly shaped for attention's products: QKᵀ has an inner dimension of head_dim (40
 * in SD 1.x's first level) and P·V an output width of head_dim, and every call re-packs a whole
 * head's K or V and the block's P. Here each head's K is packed once per call into panels of 24
 * keys [panel][d][24] (zero-padded) and V into contiguous rows [key][head_dim]; register-blocked
 * kernels then compute S (4 rows x 24 keys) and O = P V (6 rows x 16 output columns, over key
 * chunks of V that stay in L1). Every output element is a fixed-order sum (d = 0.. for scores,
 * key j = 0.. for outputs), so results are the same for any thread count. */
#define ATTN_PANEL 24
#define ATTN_PACK_MAX_HD 160
#define ATTN_PV_CHUNK 128 /* keys per P·V pass (a 128 x 40 slice of V is 20 KiB, in L1) */

/* s[i][j0 .. j0+23] = scale2 * sum_d q[i][d] kp[d][0..23] for 4 rows / 1 row, and the running
 * row maxima mx[i][0..8) (lane-wise) updated with the panel's first `valid` keys. The accumulators
 * are named variables (not arrays) so that they stay in registers at any optimisation level. */
__attribute__((target("avx2,fma")))
static inline void qk_store(float *s, float *mx, __m256 vs, __m256 x0, __m256 x1, __m256 x2, int valid)
{
    x0 = _mm256_mul_ps(vs, x0); x1 = _mm256_mul_ps(vs, x1); x2 = _mm256_mul_ps(vs, x2);
    _mm256_storeu_ps(s, x0); _mm256_storeu_ps(s + 8, x1); _mm256_storeu_ps(s + 16, x2);
    __m256 m = _mm256_loadu_ps(mx);
    if (valid == ATTN_PANEL) {
        m = _mm256_max_ps(m, _mm256_max_ps(x0, _mm256_max_ps(x1, x2)));
        _mm256_storeu_ps(mx, m);
    } else { /* the last panel: keys past nk are padding, not scores */
        for (int j = 0; j < valid; j++) mx[j % 8] = s[j] > mx[j % 8] ? s[j] : mx[j % 8];
    }
}

__attribute__((target("avx2,fma")))
static void qk_4(const float *q, int ldq, const float *kp, int hd, float scale2, float *s, int lds,
                 float *mx, int valid)
{
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c02 = c00, c10 = c00, c11 = c00, c12 = c00;
    __m256 c20 = c00, c21 = c00, c22 = c00, c30 = c00, c31 = c00, c32 = c00;
    const float *q0 = q, *q1 = q + ldq, *q2 = q + 2 * (size_t)ldq, *q3 = q + 3 * (size_t)ldq;
    for (int d = 0; d < hd; d++) {
        const float *b = kp + (size_t)d * ATTN_PANEL;
        __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8), b2 = _mm256_loadu_ps(b + 16), a;
        a = _mm256_broadcast_ss(q0 + d);
        c00 = _mm256_fmadd_ps(a, b0, c00); c01 = _mm256_fmadd_ps(a, b1, c01); c02 = _mm256_fmadd_ps(a, b2, c02);
        a = _mm256_broadcast_ss(q1 + d);
        c10 = _mm256_fmadd_ps(a, b0, c10); c11 = _mm256_fmadd_ps(a, b1, c11); c12 = _mm256_fmadd_ps(a, b2, c12);
        a = _mm256_broadcast_ss(q2 + d);
        c20 = _mm256_fmadd_ps(a, b0, c20); c21 = _mm256_fmadd_ps(a, b1, c21); c22 = _mm256_fmadd_ps(a, b2, c22);
        a = _mm256_broadcast_ss(q3 + d);
        c30 = _mm256_fmadd_ps(a, b0, c30); c31 = _mm256_fmadd_ps(a, b1, c31); c32 = _mm256_fmadd_ps(a, b2, c32);
    }
    const __m256 vs = _mm256_set1_ps(scale2);
    qk_store(s, mx, vs, c00, c01, c02, valid);
    qk_store(s + lds, mx + 8, vs, c10, c11, c12, valid);
    qk_store(s + 2 * (size_t)lds, mx + 16, vs, c20, c21, c22, valid);
    qk_store(s + 3 * (size_t)lds, mx + 24, vs, c30, c31, c32, valid);
}

__attribute__((target("avx2,fma")))
static void qk_1(const float *q, const float *kp, int hd, float scale2, float *s, float *mx, int valid)
{
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c02 = c00;
    for (int d = 0; d < hd; d++) {
        const float *b = kp + (size_t)d * ATTN_PANEL;
        __m256 a = _mm256_broadcast_ss(q + d);
        c00 = _mm256_fmadd_ps(a, _mm256_loadu_ps(b), c00);
        c01 = _mm256_fmadd_ps(a, _mm256_loadu_ps(b + 8), c01);
        c02 = _mm256_fmadd_ps(a, _mm256_loadu_ps(b + 16), c02);
    }
    qk_store(s, mx, _mm256_set1_ps(scale2), c00, c01, c02, valid);
}

/* row[j] = 2^(row[j] - m) for j < n (arguments in log2 units, <= 0), returning the sum (8 lane
 * partial sums, then a fixed order). t = n + f with n = round(t), |f| <= 1/2; 2^f by a degree-6
 * polynomial (Chebyshev fit, relative error < 2e-8), 2^n added into the exponent bits. t is
 * clamped at -125 so that the result stays a normal float: terms that small (< 3e-38 of the
 * row's largest, which is 1) are far below float resolution of the sum and of P·V. */
static const float E2_0 = 1.0f, E2_1 = 6.9314718246e-01f, E2_2 = 2.4022650719e-01f,
                   E2_3 = 5.5503271520e-02f, E2_4 = 9.6180252731e-03f, E2_5 = 1.3400432654e-03f,
                   E2_6 = 1.5469729260e-04f;
#define E2_LO (-125.0f)

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

__attribute__((target("avx2,fma")))
static float exp2_sum_avx2(float *row, int n, float m)
{
    const __m256 vm = _mm256_set1_ps(m), lo = _mm256_set1_ps(E2_LO);
    __m256 acc = _mm256_setzero_ps();
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        __m256 t = _mm256_max_ps(_mm256_sub_ps(_mm256_loadu_ps(row + j), vm), lo);
        __m256 nn = _mm256_round_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        __m256 f = _mm256_sub_ps(t, nn);
        __m256 p = _mm256_fmadd_ps(_mm256_set1_ps(E2_6), f, _mm256_set1_ps(E2_5));
        p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(E2_4));
        p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(E2_3));
        p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(E2_2));
        p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(E2_1));
        p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(E2_0));
        __m256i e = _mm256_slli_epi32(_mm256_cvtps_epi32(nn), 23);
        __m256 v = _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p), e));
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

/* o[i][0 .. 16) (+)= sum_{j<nk} p[i][j] vp[j][0 .. 16) for 6 rows / 1 row (`first`: from 0), and
 * the same 8 columns wide (head dims that are not a multiple of 16). Six rows share each load of V,
 * so a V slice streams from cache once per six rows. */
#define PV_ACC(x, o) __m256 x = first ? _mm256_setzero_ps() : _mm256_loadu_ps(o)
__attribute__((target("avx2,fma")))
static void pv_6x16(const float *p, int ldp, const float *vp, int hd, int nk, float *o, int ldo, int first)
{
    float *o1 = o + ldo, *o2 = o + 2 * (size_t)ldo, *o3 = o + 3 * (size_t)ldo, *o4 = o + 4 * (size_t)ldo,
          *o5 = o + 5 * (size_t)ldo;
    PV_ACC(a0, o); PV_ACC(a1, o + 8); PV_ACC(b0, o1); PV_ACC(b1, o1 + 8); PV_ACC(c0, o2); PV_ACC(c1, o2 + 8);
    PV_ACC(d0, o3); PV_ACC(d1, o3 + 8); PV_ACC(e0, o4); PV_ACC(e1, o4 + 8); PV_ACC(f0, o5); PV_ACC(f1, o5 + 8);
    const float *p1 = p + ldp, *p2 = p + 2 * (size_t)ldp, *p3 = p + 3 * (size_t)ldp, *p4 = p + 4 * (size_t)ldp,
                *p5 = p + 5 * (size_t)ldp;
    for (int j = 0; j < nk; j++) {
        const float *b = vp + (size_t)j * hd;
        __m256 v0 = _mm256_loadu_ps(b), v1 = _mm256_loadu_ps(b + 8), x;
        x = _mm256_broadcast_ss(p + j);  a0 = _mm256_fmadd_ps(x, v0, a0); a1 = _mm256_fmadd_ps(x, v1, a1);
        x = _mm256_broadcast_ss(p1 + j); b0 = _mm256_fmadd_ps(x, v0, b0); b1 = _mm256_fmadd_ps(x, v1, b1);
        x = _mm256_broadcast_ss(p2 + j); c0 = _mm256_fmadd_ps(x, v0, c0); c1 = _mm256_fmadd_ps(x, v1, c1);
        x = _mm256_broadcast_ss(p3 + j); d0 = _mm256_fmadd_ps(x, v0, d0); d1 = _mm256_fmadd_ps(x, v1, d1);
        x = _mm256_broadcast_ss(p4 + j); e0 = _mm256_fmadd_ps(x, v0, e0); e1 = _mm256_fmadd_ps(x, v1, e1);
        x = _mm256_broadcast_ss(p5 + j); f0 = _mm256_fmadd_ps(x, v0, f0); f1 = _mm256_fmadd_ps(x, v1, f1);
    }
    _mm256_storeu_ps(o, a0); _mm256_storeu_ps(o + 8, a1); _mm256_storeu_ps(o1, b0); _mm256_storeu_ps(o1 + 8, b1);
    _mm256_storeu_ps(o2, c0); _mm256_storeu_ps(o2 + 8, c1); _mm256_storeu_ps(o3, d0); _mm256_storeu_ps(o3 + 8, d1);
    _mm256_storeu_ps(o4, e0); _mm256_storeu_ps(o4 + 8, e1); _mm256_storeu_ps(o5, f0); _mm256_storeu_ps(o5 + 8, f1);
}

__attribute__((target("avx2,fma")))
static void pv_6x8(const float *p, int ldp, const float *vp, int hd, int nk, float *o, int ldo, int first)
{
    float *o1 = o + ldo, *o2 = o + 2 * (size_t)ldo, *o3 = o + 3 * (size_t)ldo, *o4 = o + 4 * (size_t)ldo,
          *o5 = o + 5 * (size_t)ldo;
    PV_ACC(a0, o); PV_ACC(b0, o1); PV_ACC(c0, o2); PV_ACC(d0, o3); PV_ACC(e0, o4); PV_ACC(f0, o5);
    const float *p1 = p + ldp, *p2 = p + 2 * (size_t)ldp, *p3 = p + 3 * (size_t)ldp, *p4 = p + 4 * (size_t)ldp,
                *p5 = p + 5 * (size_t)ldp;
    for (int j = 0; j < nk; j++) {
        __m256 v0 = _mm256_loadu_ps(vp + (size_t)j * hd);
        a0 = _mm256_fmadd_ps(_mm256_broadcast_ss(p + j), v0, a0);
        b0 = _mm256_fmadd_ps(_mm256_broadcast_ss(p1 + j), v0, b0);
        c0 = _mm256_fmadd_ps(_mm256_broadcast_ss(p2 + j), v0, c0);
        d0 = _mm256_fmadd_ps(_mm256_broadcast_ss(p3 + j), v0, d0);
        e0 = _mm256_fmadd_ps(_mm256_broadcast_ss(p4 + j), v0, e0);
        f0 = _mm256_fmadd_ps(_mm256_broadcast_ss(p5 + j), v0, f0);
    }
    _mm256_storeu_ps(o, a0); _mm256_storeu_ps(o1, b0); _mm256_storeu_ps(o2, c0);
    _mm256_storeu_ps(o3, d0); _mm256_storeu_ps(o4, e0); _mm256_storeu_ps(o5, f0);
}

__attribute__((target("avx2,fma")))
static void pv_1x16(const float *p, const float *vp, int hd, int nk, float *o, int first)
{
    PV_ACC(a0, o); PV_ACC(a1, o + 8);
    for (int j = 0; j < nk; j++) {
        const float *b = vp + (size_t)j * hd;
        __m256 x = _mm256_broadcast_ss(p + j);
        a0 = _mm256_fmadd_ps(x, _mm256_loadu_ps(b), a0);
        a1 = _mm256_fmadd_ps(x, _mm256_loadu_ps(b + 8), a1);
    }
    _mm256_storeu_ps(o, a0); _mm256_storeu_ps(o + 8, a1);
}

__attribute__((target("avx2,fma")))
static void pv_1x8(const float *p, const float *vp, int hd, int nk, float *o, int first)
{
    PV_ACC(a0, o);
    for (int j = 0; j < nk; j++) a0 = _mm256_fmadd_ps(_mm256_broadcast_ss(p + j), _mm256_loadu_ps(vp + (size_t)j * hd), a0);
    _mm256_storeu_ps(o, a0);
}
#undef PV_ACC

/* One (head, row block) task of the packed path. Scores are kept in log2 units (scale·log2 e folded
 * into Q·Kᵀ) with each row's maximum tracked as they are made; P = 2^(S - max) unnormalised;
 * O = P·V; then each output row is divided by its sum: softmax(S)·V up to float rounding, with one
 * pass over the scores besides the two products. */
__attribute__((target("avx2,fma")))
static void packed_task(const float *qh, int ldq, int rows, const float *kp, const float *vp, int nk,
                        int hd, float scale2, float *s, int lds, float *oh, int ldo)
{
    float mx[ATTN_PACKED_ROWS * 8], inv[ATTN_PACKED_ROWS];
    for (int i = 0; i < rows * 8; i++) mx[i] = -INFINITY;
    const int npanel = lds / ATTN_PANEL;
    for (int t = 0; t < npanel; t++) {
        const float *kt = kp + (size_t)t * hd * ATTN_PANEL;
        const int valid = nk - t * ATTN_PANEL < ATTN_PANEL ? nk - t * ATTN_PANEL : ATTN_PANEL;
        float *st = s + (size_t)t * ATTN_PANEL;
        int i = 0;
        for (; i + 4 <= rows; i += 4)
            qk_4(qh + (size_t)i * ldq, ldq, kt, hd, scale2, st + (size_t)i * lds, lds, mx + 8 * i, valid);
        for (; i < rows; i++)
            qk_1(qh + (size_t)i * ldq, kt, hd, scale2, st + (size_t)i * lds, mx + 8 * i, valid);
    }
    for (int i = 0; i < rows; i++) {
        const float *l = mx + 8 * i;
        float m = ((l[0] > l[1] ? l[0] : l[1]) > (l[2] > l[3] ? l[2] : l[3]))
                      ? (l[0] > l[1] ? l[0] : l[1]) : (l[2] > l[3] ? l[2] : l[3]);
        for (int k = 4; k < 8; k++) m = l[k] > m ? l[k] : m;
        inv[i] = 1.0f / exp2_sum_avx2(s + (size_t)i * lds, nk, m);
    }
    for (int j0 = 0; j0 < nk; j0 += ATTN_PV_CHUNK) {
        const int nj = nk - j0 < ATTN_PV_CHUNK ? nk - j0 : ATTN_PV_CHUNK, first = j0 == 0;
        const float *vj = vp + (size_t)j0 * hd;
        int i = 0;
        for (; i + 6 <= rows; i += 6) {
            const float *p = s + (size_t)i * lds + j0;
            float *o = oh + (size_t)i * ldo;
            int c = 0;
            for (; c + 16 <= hd; c += 16) pv_6x16(p, lds, vj + c, hd, nj, o + c, ldo, first);
            if (c < hd) pv_6x8(p, lds, vj + c, hd, nj, o + c, ldo, first); /* hd is a multiple of 8 */
        }
        for (; i < rows; i++) {
            const float *p = s + (size_t)i * lds + j0;
            float *o = oh + (size_t)i * ldo;
            int c = 0;
            for (; c + 16 <= hd; c += 16) pv_1x16(p, vj + c, hd, nj, o + c, first);
            if (c < hd) pv_1x8(p, vj + c, hd, nj, o + c, first);
        }
    }
    for (int i = 0; i < rows; i++) {
        float *o = oh + (size_t)i * ldo;
        const __m256 vi = _mm256_set1_ps(inv[i]);
        for (int c = 0; c < hd; c += 8) _mm256_storeu_ps(o + c, _mm256_mul_ps(vi, _mm256_loadu_ps(o + c)));
    }
}

/* Query rows per task of the packed path: ATTN_PACKED_ROWS, or fewer (a multiple of 4, at least
 * 8) while a call would have fewer than ATTN_MIN_TASKS tasks (small latents: 16x16 has 256 query
 * rows). A row's arithmetic does not depend on the rows it is grouped with. */
static int packed_rows(int nq, int heads)
{
    int r = ATTN_PACKED_ROWS;
    while (r > 8 && (long)heads * ((nq + r - 1) / r) < ATTN_MIN_TASKS) r -= 4;
    return r;
}

static int packed_parallel(int nq, int nk, int heads, int hd) { return (long)nq * nk * heads * hd > 262144; }

static int use_packed(int causal, int head_dim)
{
    __builtin_cpu_init();
    const int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    return avx2 && !causal && head_dim % 8 == 0 && head_dim <= ATTN_PACK_MAX_HD;
}

static int attention_packed(const float *q, int ldq, const float *k, int ldk, const float *v, int ldv,
                            float *out, int ldo, int nq, int nk, int heads, int hd, float scale,
                            sdb_arena *scratch)
{
    const int nthreads = omp_get_max_threads();
    const int npanel = (nk + ATTN_PANEL - 1) / ATTN_PANEL, lds = npanel * ATTN_PANEL;
    size_t mark = sdb_arena_mark(scratch);
    float *kp = sdb_arena_floats(scratch, (size_t)heads * lds * hd);
    float *vp = sdb_arena_floats(scratch, (size_t)heads * nk * hd);
    float *sbuf = sdb_arena_floats(scratch, (size_t)nthreads * ATTN_PACKED_ROWS * (size_t)lds);
    if (!kp || !vp || !sbuf) { sdb_arena_reset(scratch, mark); return SDB_ENOMEM; }
    const int R = packed_rows(nq, heads);
    const int nblocks = (nq + R - 1) / R, ntasks = heads * nblocks;
#pragma omp parallel if (packed_parallel(nq, nk, heads, hd))
    {
        /* pack: kp[h][panel][d][24] (keys past nk are 0), vp[h][j][d] */
#pragma omp for schedule(static)
        for (int hp = 0; hp < heads * npanel; hp++) {
            int h = hp / npanel, t = hp % npanel;
            float *dst = kp + ((size_t)h * npanel + t) * hd * ATTN_PANEL;
            for (int jj = 0; jj < ATTN_PANEL; jj++) {
                int j = t * ATTN_PANEL + jj;
                const float *src = k + (size_t)j * ldk + (size_t)h * hd;
                for (int d = 0; d < hd; d++) dst[(size_t)d * ATTN_PANEL + jj] = j < nk ? src[d] : 0.0f;
            }
        }
#pragma omp for schedule(static)
        for (int hj = 0; hj < heads * nk; hj++) {
            int h = hj / nk, j = hj % nk;
            memcpy(vp + ((size_t)h * nk + j) * hd, v + (size_t)j * ldv + (size_t)h * hd, sizeof(float) * hd);
        }
#pragma omp for schedule(dynamic, 1)
        for (int task = 0; task < ntasks; task++) {
            int h = task / nblocks, blk = task % nblocks;
            int r0 = blk * R;
            int rows = nq - r0 < R ? nq - r0 : R;
            float *s = sbuf + (size_t)omp_get_thread_num() * ATTN_PACKED_ROWS * (size_t)lds;
            packed_task(q + (size_t)r0 * ldq + (size_t)h * hd, ldq, rows, kp + (size_t)h * npanel * hd * ATTN_PANEL,
                        vp + (size_t)h * nk * hd, nk, hd, scale * LOG2E, s, lds,
                        out + (size_t)r0 * ldo + (size_t)h * hd, ldo);
        }
    }
    sdb_arena_reset(scratch, mark);
    return 0;
}

int sdb_attention(const float *q, int ldq, const float *k, int ldk, const float *v, int ldv,
                  float *out, int ldo, int nq, int nk, int heads, int head_dim, float scale,
                  int causal, sdb_arena *scratch)
{
    if (use_packed(causal, head_dim))
        return attention_packed(q, ldq, k, ldk, v, ldv, out, ldo, nq, nk, heads, head_dim, scale, scratch);
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
    const int packed = use_packed(causal, head_dim);
    const int R = packed ? packed_rows(nq, heads) : ATTN_BLOCK_ROWS;
    const int nblocks = (nq + R - 1) / R, ntasks = heads * nblocks;
    const int par = packed ? packed_parallel(nq, nk, heads, head_dim) : 1;
    if (packed) {
        const int npanel = (nk + ATTN_PANEL - 1) / ATTN_PANEL;
        sdb_par_loop_add(rec, SDB_PAR_STATIC, (long)heads * npanel, NULL, 8.0 * ATTN_PANEL * head_dim, 1, par);
        sdb_par_loop_add(rec, SDB_PAR_STATIC, (long)heads * nk, NULL, 8.0 * head_dim, 1, par);
    }
    double *cost = malloc((size_t)ntasks * sizeof *cost);
    if (!cost) { rec->failed = 1; return; }
    for (int t = 0; t < ntasks; t++) {
        const int blk = t % nblocks, rows = nq - blk * R < R ? nq - blk * R : R;
        cost[t] = 4.0 * rows * (double)nk * head_dim; /* the two products */
    }
    sdb_par_loop_add(rec, SDB_PAR_DYNAMIC, ntasks, cost, 0, 0, par);
    free(cost);
}
