/*
 * attention.c — multi-head attention, chunked over (head, query-row block) (see attention.h).
 *
 * Each task computes S = scale · Qblk·Khᵀ with one sgemm, a softmax row by row in place (max
 * subtracted first, as torch does), then Oblk = P·Vh with a second sgemm straight into the output
 * columns of its head. Memory: one block of scores per thread (64 rows × the keys), never a whole
 * head's score matrix. Tasks run in an OpenMP loop; inside it OpenBLAS runs single-threaded, so every
 * task's arithmetic is the same for any thread count.
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

int sdb_attention(const float *q, int ldq, const float *k, int ldk, const float *v, int ldv,
                  float *out, int ldo, int nq, int nk, int heads, int head_dim, float scale,
                  int causal, sdb_arena *scratch)
{
    int nthreads = omp_get_max_threads();
    size_t mark = sdb_arena_mark(scratch);
    float *sbuf = sdb_arena_floats(scratch, (size_t)nthreads * ATTN_BLOCK_ROWS * (size_t)nk);
    if (!sbuf) return SDB_ENOMEM;
    int nblocks = (nq + ATTN_BLOCK_ROWS - 1) / ATTN_BLOCK_ROWS;
    int ntasks = heads * nblocks;
    __builtin_cpu_init();
    const int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");

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
