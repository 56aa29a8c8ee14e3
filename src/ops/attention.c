/*
 * attention.c — multi-head attention, chunked over (head, query-row block) (see attention.h).
 *
 * Each task computes S = scale · Qblk·Khᵀ with one sgemm, a softmax row by row in place (max
 * subtracted first, as torch does), then Oblk = P·Vh with a second sgemm straight into the output
 * columns of its head. Memory: one block of scores per thread (64 rows × the keys), never a whole
 * head's score matrix. Tasks run in an OpenMP loop; inside it OpenBLAS runs single-threaded, so every
 * task's arithmetic is the same for any thread count.
 *
 * Without causal masking, on AVX2+FMA CPUs and head dims that are multiples of 8 up to 160 (every
 * SD 1.x/2.x U-Net level), a packed path replaces the two sgemms by register-blocked kernels on K
 * and V packed once per call (see attention_packed below); it opens no parallel region for tiny
 * products (it calls no OpenBLAS, so running serially cannot change its results).
 *
 * The softmax's exponentials are the bulk of the non-GEMM work at 64×64 latents (4096 keys): they use
 * a vectorised exp (AVX2+FMA when the CPU has it, chosen at run time) whose scalar twin evaluates the
 * same polynomial, within 2 ulp of libm's expf.
 */
#include "sdb/ops/attention.h"
#include "sdb/error.h"

#include <cblas.h>
#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stddef.h>
#include <string.h>

#define ATTN_BLOCK_ROWS 64

/* exp(x) for x <= 0 (softmax arguments): x = n ln2 + r, |r| <= ln2/2, exp(r) by a degree-6
 * polynomial (Taylor/minimax, rel. error < 2e-7), times 2^n built in the exponent bits. */
#define EXP_LO (-87.0f)
static const float LN2_HI = 0.693359375f, LN2_LO = -2.12194440e-4f, LOG2E = 1.44269504088896341f;
static const float P0 = 1.9875691500e-4f, P1 = 1.3981999507e-3f, P2 = 8.3334519073e-3f,
                   P3 = 4.1665795894e-2f, P4 = 1.6666665459e-1f, P5 = 5.0000001201e-1f;

static inline float exp_scalar(float x)
{
    if (x < EXP_LO) return 0.0f;
    float n = floorf(x * LOG2E + 0.5f);
    float r = fmaf(n, -LN2_HI, x);
    r = fmaf(n, -LN2_LO, r);
    float p = fmaf(P0, r, P1);
    p = fmaf(p, r, P2);
    p = fmaf(p, r, P3);
    p = fmaf(p, r, P4);
    p = fmaf(p, r, P5);
    p = fmaf(p, r * r, r + 1.0f);
    int e = (int)n + 127;
    float s;
    unsigned u = (unsigned)e << 23;
    memcpy(&s, &u, 4);
    return p * s;
}

/* row[j] = exp(row[j] - mx) for j < n; returns the sum (8 lane partial sums, then fixed order). */
__attribute__((target("avx2,fma")))
static float exp_sum_avx2(float *row, int n, float mx)
{
    const __m256 vmx = _mm256_set1_ps(mx), lo = _mm256_set1_ps(EXP_LO), log2e = _mm256_set1_ps(LOG2E);
    const __m256 half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.0f);
    const __m256 c_hi = _mm256_set1_ps(-LN2_HI), c_lo = _mm256_set1_ps(-LN2_LO);
    __m256 acc = _mm256_setzero_ps();
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        __m256 x = _mm256_sub_ps(_mm256_loadu_ps(row + j), vmx);
        __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
        __m256 nn = _mm256_floor_ps(_mm256_fmadd_ps(x, log2e, half));
        __m256 r = _mm256_fmadd_ps(nn, c_hi, x);
        r = _mm256_fmadd_ps(nn, c_lo, r);
        __m256 p = _mm256_fmadd_ps(_mm256_set1_ps(P0), r, _mm256_set1_ps(P1));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(P2));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(P3));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(P4));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(P5));
        p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, one));
        __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(nn), _mm256_set1_epi32(127)), 23);
        __m256 v = _mm256_andnot_ps(under, _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
        _mm256_storeu_ps(row + j, v);
        acc = _mm256_add_ps(acc, v);
    }
    float lanes[8];
    _mm256_storeu_ps(lanes, acc);
    float sum = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
    for (; j < n; j++) { row[j] = exp_scalar(row[j] - mx); sum += row[j]; }
    return sum;
}

static float exp_sum_scalar(float *row, int n, float mx)
{
    float lanes[8] = {0};
    int j = 0;
    for (; j + 8 <= n; j += 8)
        for (int l = 0; l < 8; l++) { row[j + l] = exp_scalar(row[j + l] - mx); lanes[l] += row[j + l]; }
    float sum = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
    for (; j < n; j++) { row[j] = exp_scalar(row[j] - mx); sum += row[j]; }
    return sum;
}

/* ---- packed AVX2 path (non-causal, head_dim a multiple of 8, at most ATTN_PACK_MAX_HD) ----
 *
 * OpenBLAS is poorly shaped for attention's products: QKᵀ has an inner dimension of head_dim (40
 * in SD 1.x's first level) and P·V an output width of head_dim, and every call re-packs a whole
 * head's K or V and the block's P. Here each head's K is packed once per call into panels of 24
 * keys [panel][d][24] (zero-padded) and V into contiguous rows [key][head_dim]; two register-
 * blocked kernels then compute S = scale · Q Kᵀ (4 rows x 24 keys) and O = P V (2 rows x up to 40
 * output columns, over key chunks that stay in cache). Every output element is a fixed-order sum
 * (d = 0.. for scores, key j = 0.. for outputs), so results are the same for any thread count. */
#define ATTN_PANEL 24
#define ATTN_PACK_MAX_HD 160
#define ATTN_PV_CHUNK 256 /* keys per P·V pass (a 256 x 40 slice of V is 40 KiB) */

/* s[i][j0 .. j0+23] = scale * sum_d q[i][d] kp[d][0..23] for 4 rows / 1 row. The accumulators are
 * named variables (not arrays) so that they stay in registers at any optimisation level. */
__attribute__((target("avx2,fma")))
static void qk_4(const float *q, int ldq, const float *kp, int hd, float scale, float *s, int lds)
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
    const __m256 vs = _mm256_set1_ps(scale);
#define QK_ST(i, x0, x1, x2)                                                 \
    _mm256_storeu_ps(s + (size_t)(i) * lds, _mm256_mul_ps(vs, x0));          \
    _mm256_storeu_ps(s + (size_t)(i) * lds + 8, _mm256_mul_ps(vs, x1));      \
    _mm256_storeu_ps(s + (size_t)(i) * lds + 16, _mm256_mul_ps(vs, x2))
    QK_ST(0, c00, c01, c02);
    QK_ST(1, c10, c11, c12);
    QK_ST(2, c20, c21, c22);
    QK_ST(3, c30, c31, c32);
}

__attribute__((target("avx2,fma")))
static void qk_1(const float *q, const float *kp, int hd, float scale, float *s)
{
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c02 = c00;
    for (int d = 0; d < hd; d++) {
        const float *b = kp + (size_t)d * ATTN_PANEL;
        __m256 a = _mm256_broadcast_ss(q + d);
        c00 = _mm256_fmadd_ps(a, _mm256_loadu_ps(b), c00);
        c01 = _mm256_fmadd_ps(a, _mm256_loadu_ps(b + 8), c01);
        c02 = _mm256_fmadd_ps(a, _mm256_loadu_ps(b + 16), c02);
    }
    const __m256 vs = _mm256_set1_ps(scale);
    const int lds = 0;
    QK_ST(0, c00, c01, c02);
#undef QK_ST
}

/* o[i][0 .. 40) (+)= sum_{j<nk} p[i][j] vp[j][0 .. 40) for 2 rows / 1 row (`first`: from 0), and
 * the same for one 8-wide column group (head dims that are not a multiple of 40). */
__attribute__((target("avx2,fma")))
static void pv_2x40(const float *p, int ldp, const float *vp, int hd, int nk, float *o, int ldo, int first)
{
    __m256 z = _mm256_setzero_ps();
    __m256 a0 = first ? z : _mm256_loadu_ps(o), a1 = first ? z : _mm256_loadu_ps(o + 8);
    __m256 a2 = first ? z : _mm256_loadu_ps(o + 16), a3 = first ? z : _mm256_loadu_ps(o + 24);
    __m256 a4 = first ? z : _mm256_loadu_ps(o + 32);
    float *o1 = o + ldo;
    __m256 e0 = first ? z : _mm256_loadu_ps(o1), e1 = first ? z : _mm256_loadu_ps(o1 + 8);
    __m256 e2 = first ? z : _mm256_loadu_ps(o1 + 16), e3 = first ? z : _mm256_loadu_ps(o1 + 24);
    __m256 e4 = first ? z : _mm256_loadu_ps(o1 + 32);
    const float *p1 = p + ldp;
    for (int j = 0; j < nk; j++) {
        const float *b = vp + (size_t)j * hd;
        __m256 x = _mm256_broadcast_ss(p + j), y = _mm256_broadcast_ss(p1 + j), bv;
        bv = _mm256_loadu_ps(b);      a0 = _mm256_fmadd_ps(x, bv, a0); e0 = _mm256_fmadd_ps(y, bv, e0);
        bv = _mm256_loadu_ps(b + 8);  a1 = _mm256_fmadd_ps(x, bv, a1); e1 = _mm256_fmadd_ps(y, bv, e1);
        bv = _mm256_loadu_ps(b + 16); a2 = _mm256_fmadd_ps(x, bv, a2); e2 = _mm256_fmadd_ps(y, bv, e2);
        bv = _mm256_loadu_ps(b + 24); a3 = _mm256_fmadd_ps(x, bv, a3); e3 = _mm256_fmadd_ps(y, bv, e3);
        bv = _mm256_loadu_ps(b + 32); a4 = _mm256_fmadd_ps(x, bv, a4); e4 = _mm256_fmadd_ps(y, bv, e4);
    }
    _mm256_storeu_ps(o, a0); _mm256_storeu_ps(o + 8, a1); _mm256_storeu_ps(o + 16, a2);
    _mm256_storeu_ps(o + 24, a3); _mm256_storeu_ps(o + 32, a4);
    _mm256_storeu_ps(o1, e0); _mm256_storeu_ps(o1 + 8, e1); _mm256_storeu_ps(o1 + 16, e2);
    _mm256_storeu_ps(o1 + 24, e3); _mm256_storeu_ps(o1 + 32, e4);
}

__attribute__((target("avx2,fma")))
static void pv_1x40(const float *p, const float *vp, int hd, int nk, float *o, int first)
{
    __m256 z = _mm256_setzero_ps();
    __m256 a0 = first ? z : _mm256_loadu_ps(o), a1 = first ? z : _mm256_loadu_ps(o + 8);
    __m256 a2 = first ? z : _mm256_loadu_ps(o + 16), a3 = first ? z : _mm256_loadu_ps(o + 24);
    __m256 a4 = first ? z : _mm256_loadu_ps(o + 32);
    for (int j = 0; j < nk; j++) {
        const float *b = vp + (size_t)j * hd;
        __m256 x = _mm256_broadcast_ss(p + j);
        a0 = _mm256_fmadd_ps(x, _mm256_loadu_ps(b), a0);
        a1 = _mm256_fmadd_ps(x, _mm256_loadu_ps(b + 8), a1);
        a2 = _mm256_fmadd_ps(x, _mm256_loadu_ps(b + 16), a2);
        a3 = _mm256_fmadd_ps(x, _mm256_loadu_ps(b + 24), a3);
        a4 = _mm256_fmadd_ps(x, _mm256_loadu_ps(b + 32), a4);
    }
    _mm256_storeu_ps(o, a0); _mm256_storeu_ps(o + 8, a1); _mm256_storeu_ps(o + 16, a2);
    _mm256_storeu_ps(o + 24, a3); _mm256_storeu_ps(o + 32, a4);
}

__attribute__((target("avx2,fma")))
static void pv_1x8(const float *p, const float *vp, int hd, int nk, float *o, int first)
{
    __m256 a0 = first ? _mm256_setzero_ps() : _mm256_loadu_ps(o);
    for (int j = 0; j < nk; j++) a0 = _mm256_fmadd_ps(_mm256_broadcast_ss(p + j), _mm256_loadu_ps(vp + (size_t)j * hd), a0);
    _mm256_storeu_ps(o, a0);
}

/* max of row[0..n) (exact in any order: lane-wise maxima, then across lanes) */
__attribute__((target("avx2,fma")))
static float row_max_avx2(const float *row, int n)
{
    float mx = row[0];
    int j = 0;
    if (n >= 8) {
        __m256 m = _mm256_loadu_ps(row);
        for (j = 8; j + 8 <= n; j += 8) m = _mm256_max_ps(m, _mm256_loadu_ps(row + j));
        float lanes[8];
        _mm256_storeu_ps(lanes, m);
        for (int l = 0; l < 8; l++) mx = lanes[l] > mx ? lanes[l] : mx;
    }
    for (; j < n; j++) mx = row[j] > mx ? row[j] : mx;
    return mx;
}

/* One (head, row block) task of the packed path: scores, softmax, P·V. */
__attribute__((target("avx2,fma")))
static void packed_task(const float *qh, int ldq, int rows, const float *kp, const float *vp, int nk,
                        int hd, float scale, float *s, int lds, float *oh, int ldo)
{
    const int npanel = lds / ATTN_PANEL;
    for (int t = 0; t < npanel; t++) {
        const float *kt = kp + (size_t)t * hd * ATTN_PANEL;
        int i = 0;
        for (; i + 4 <= rows; i += 4)
            qk_4(qh + (size_t)i * ldq, ldq, kt, hd, scale, s + (size_t)i * lds + (size_t)t * ATTN_PANEL, lds);
        for (; i < rows; i++)
            qk_1(qh + (size_t)i * ldq, kt, hd, scale, s + (size_t)i * lds + (size_t)t * ATTN_PANEL);
    }
    for (int i = 0; i < rows; i++) {
        float *row = s + (size_t)i * lds;
        float inv = 1.0f / exp_sum_avx2(row, nk, row_max_avx2(row, nk));
        for (int j = 0; j < nk; j++) row[j] *= inv;
    }
    for (int j0 = 0; j0 < nk; j0 += ATTN_PV_CHUNK) {
        int nj = nk - j0 < ATTN_PV_CHUNK ? nk - j0 : ATTN_PV_CHUNK;
        for (int i = 0; i < rows; i += 2) {
            const float *p = s + (size_t)i * lds + j0;
            const float *vj = vp + (size_t)j0 * hd;
            float *o = oh + (size_t)i * ldo;
            int c = 0;
            for (; c + 40 <= hd; c += 40) {
                if (rows - i >= 2) pv_2x40(p, lds, vj + c, hd, nj, o + c, ldo, j0 == 0);
                else pv_1x40(p, vj + c, hd, nj, o + c, j0 == 0);
            }
            for (; c < hd; c += 8) { /* head_dim is a multiple of 8 */
                pv_1x8(p, vj + c, hd, nj, o + c, j0 == 0);
                if (rows - i >= 2) pv_1x8(p + lds, vj + c, hd, nj, o + ldo + c, j0 == 0);
            }
        }
    }
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
    float *sbuf = sdb_arena_floats(scratch, (size_t)nthreads * ATTN_BLOCK_ROWS * (size_t)lds);
    if (!kp || !vp || !sbuf) { sdb_arena_reset(scratch, mark); return SDB_ENOMEM; }
    const int nblocks = (nq + ATTN_BLOCK_ROWS - 1) / ATTN_BLOCK_ROWS, ntasks = heads * nblocks;
    const long work = (long)nq * nk * heads * hd;
#pragma omp parallel if (work > 262144)
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
            int r0 = blk * ATTN_BLOCK_ROWS;
            int rows = nq - r0 < ATTN_BLOCK_ROWS ? nq - r0 : ATTN_BLOCK_ROWS;
            float *s = sbuf + (size_t)omp_get_thread_num() * ATTN_BLOCK_ROWS * (size_t)lds;
            packed_task(q + (size_t)r0 * ldq + (size_t)h * hd, ldq, rows, kp + (size_t)h * npanel * hd * ATTN_PANEL,
                        vp + (size_t)h * nk * hd, nk, hd, scale, s, lds,
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
    __builtin_cpu_init();
    const int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (avx2 && !causal && head_dim % 8 == 0 && head_dim <= ATTN_PACK_MAX_HD)
        return attention_packed(q, ldq, k, ldk, v, ldv, out, ldo, nq, nk, heads, head_dim, scale, scratch);
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
        /* S = scale * Q Kᵀ */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, nk, head_dim, scale,
                    qh, ldq, kh, ldk, 0.0f, s, nk);
        for (int i = 0; i < rows; i++) {
            float *row = s + (size_t)i * nk;
            int valid = causal ? (r0 + i + 1 < nk ? r0 + i + 1 : nk) : nk;
            float mx = row[0];
            for (int j = 1; j < valid; j++) mx = row[j] > mx ? row[j] : mx;
            float sum = avx2 ? exp_sum_avx2(row, valid, mx) : exp_sum_scalar(row, valid, mx);
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
