/*
 * thin_gemm.c — the thin-product GEMM of thin_gemm.h: an AVX2/FMA 6 x 16 register block that
 * broadcasts A (the weights) from where they lie and reads B from 16-column panels. Owns the
 * kernel, the blocking and the panel packing; nothing else.
 *
 * Blocking: columns in chunks of NC (8 panels), K in blocks of KC; per (chunk, block) the panels
 * of B are packed once (KC x NC floats, ~192 KiB: L2), then for every 6 rows of A, the 6 x KC
 * block of A (9 KiB, L1 after the first panel) meets each panel in turn. Between blocks of K the
 * accumulators go through C and come back (stored and reloaded exactly), so each element of C is
 * still one multiply-add chain over k in order. Partial blocks (fewer than 6 rows or 16 columns)
 * run the same kernel into a 6 x 16 buffer: missing rows repeat row 0, missing columns are zeros
 * in the panel, and only the real part is copied out.
 */
#include "sdb/ops/thin_gemm.h"

#include <assert.h>
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#define MR 6
#define NR 16
#define KC 384
#define NC (8 * NR)

int sdb_thin_gemm_available(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

int sdb_thin_gemm_preferred(void)
{
    const char *off = getenv("SDB_THIN_GEMM");
    if (off && !strcmp(off, "0")) return 0;
    return sdb_thin_gemm_available() && !__builtin_cpu_supports("avx512f");
}

size_t sdb_thin_gemm_pack_floats(void) { return (size_t)KC * NC; }

/* c[i][0..15] (ldc) = (acc ? c : 0) + Σ_k a[i][k] · b[k][0..15], i < 6; b: a packed panel [K][16]. */
__attribute__((target("avx2,fma")))
static void kernel_6x16(int K, const float *const a[MR], const float *b, float *c, int ldc, int acc)
{
#define ROW_INIT(i)                                                                      \
    __m256 c##i##0 = acc ? _mm256_loadu_ps(c + (size_t)(i) * ldc) : _mm256_setzero_ps(), \
           c##i##1 = acc ? _mm256_loadu_ps(c + (size_t)(i) * ldc + 8) : _mm256_setzero_ps();
    ROW_INIT(0) ROW_INIT(1) ROW_INIT(2) ROW_INIT(3) ROW_INIT(4) ROW_INIT(5)
    const float *a0 = a[0], *a1 = a[1], *a2 = a[2], *a3 = a[3], *a4 = a[4], *a5 = a[5];
    for (int k = 0; k < K; k++) {
        const __m256 b0 = _mm256_loadu_ps(b + (size_t)k * NR), b1 = _mm256_loadu_ps(b + (size_t)k * NR + 8);
        __m256 w;
#define ROW_FMA(i)                                \
    w = _mm256_broadcast_ss(a##i + k);            \
    c##i##0 = _mm256_fmadd_ps(w, b0, c##i##0);    \
    c##i##1 = _mm256_fmadd_ps(w, b1, c##i##1);
        ROW_FMA(0) ROW_FMA(1) ROW_FMA(2) ROW_FMA(3) ROW_FMA(4) ROW_FMA(5)
    }
#define ROW_STORE(i)                                          \
    _mm256_storeu_ps(c + (size_t)(i) * ldc, c##i##0);         \
    _mm256_storeu_ps(c + (size_t)(i) * ldc + 8, c##i##1);
    ROW_STORE(0) ROW_STORE(1) ROW_STORE(2) ROW_STORE(3) ROW_STORE(4) ROW_STORE(5)
#undef ROW_INIT
#undef ROW_FMA
#undef ROW_STORE
}

/* Panels of B rows k0 .. k0+kk-1, columns n0 .. n0+nn-1: pack[p][k][16], zeros past nn. */
static void pack_panels(const float *B, int ldb, int k0, int kk, int n0, int nn, float *pack)
{
    for (int p = 0; p * NR < nn; p++) {
        const int c0 = n0 + p * NR, cols = nn - p * NR < NR ? nn - p * NR : NR;
        float *d = pack + (size_t)p * kk * NR;
        for (int k = 0; k < kk; k++) {
            const float *s = B + (size_t)(k0 + k) * ldb + c0;
            memcpy(d + (size_t)k * NR, s, sizeof(float) * cols);
            if (cols < NR) memset(d + (size_t)k * NR + cols, 0, sizeof(float) * (NR - cols));
        }
    }
}

/* C[:, n0 .. n0+nn) (+)= A · (the panels of those columns for rows k0 .. k0+kk): panel p's row k at
 * panels + p·pstride + k·16. */
static void run_block(int M, int nn, int kk, const float *A, int lda, int k0, const float *panels,
                      size_t pstride, int acc, float *C, int ldc)
{
    float tmp[MR * NR] = {0}; /* partial blocks: rows past M are computed here and dropped */
    for (int m0 = 0; m0 < M; m0 += MR) {
        const int rows = M - m0 < MR ? M - m0 : MR;
        const float *a[MR];
        for (int i = 0; i < MR; i++) a[i] = A + (size_t)(m0 + (i < rows ? i : 0)) * lda + k0;
        for (int p = 0; p * NR < nn; p++) {
            const int cols = nn - p * NR < NR ? nn - p * NR : NR;
            float *c = C + (size_t)m0 * ldc + p * NR;
            const float *panel = panels + (size_t)p * pstride;
            if (rows == MR && cols == NR) {
                kernel_6x16(kk, a, panel, c, ldc, acc);
                continue;
            }
            if (acc)
                for (int i = 0; i < rows; i++) memcpy(tmp + i * NR, c + (size_t)i * ldc, sizeof(float) * cols);
            kernel_6x16(kk, a, panel, tmp, NR, acc);
            for (int i = 0; i < rows; i++) memcpy(c + (size_t)i * ldc, tmp + i * NR, sizeof(float) * cols);
        }
    }
}

/* K = 0: C = 0 (beta 0) or as it is */
static void zero_k(int M, int N, float beta, float *C, int ldc)
{
    if (beta == 0.0f)
        for (int i = 0; i < M; i++) memset(C + (size_t)i * ldc, 0, sizeof(float) * N);
}

/* The blocking of both entry points: per chunk of NC columns and block of KC rows of B, the panels
 * are packed from B (pack given) or read from the caller's panels (pstride apart), then run. */
static int thin_run(int M, int N, int K, const float *A, int lda, const float *B, int ldb, float *pack,
                    const float *panels, size_t pstride, float beta, float *C, int ldc)
{
    assert(beta == 0.0f || beta == 1.0f);
    if (!sdb_thin_gemm_available()) return -1;
    if (M <= 0 || N <= 0) return 0;
    if (K <= 0) { zero_k(M, N, beta, C, ldc); return 0; }
    for (int n0 = 0; n0 < N; n0 += NC) {
        const int nn = N - n0 < NC ? N - n0 : NC;
        for (int k0 = 0; k0 < K; k0 += KC) {
            const int kk = K - k0 < KC ? K - k0 : KC, acc = beta != 0.0f || k0 > 0;
            if (pack) {
                pack_panels(B, ldb, k0, kk, n0, nn, pack);
                run_block(M, nn, kk, A, lda, k0, pack, (size_t)kk * NR, acc, C + n0, ldc);
            } else {
                run_block(M, nn, kk, A, lda, k0, panels + (size_t)(n0 / NR) * pstride + (size_t)k0 * NR, pstride,
                          acc, C + n0, ldc);
            }
        }
    }
    return 0;
}

int sdb_thin_gemm(int M, int N, int K, const float *A, int lda, const float *B, int ldb, float beta,
                  float *C, int ldc, float *pack)
{
    return thin_run(M, N, K, A, lda, B, ldb, pack, NULL, 0, beta, C, ldc);
}

void sdb_thin_gemm_make_panels(int N, int K, const float *B, int ldb, float *panels)
{
    for (int p = 0; p * NR < N; p++) pack_panels(B, ldb, 0, K, p * NR, N - p * NR < NR ? N - p * NR : NR,
                                                 panels + (size_t)p * K * NR);
}

/* One 8 x 8 block: d[k][j] (row stride NR) = s[j][k] (row stride lds), j, k < 8. */
__attribute__((target("avx2")))
static void transpose8(const float *s, size_t lds, float *d)
{
    __m256 r0 = _mm256_loadu_ps(s), r1 = _mm256_loadu_ps(s + lds), r2 = _mm256_loadu_ps(s + 2 * lds),
           r3 = _mm256_loadu_ps(s + 3 * lds), r4 = _mm256_loadu_ps(s + 4 * lds), r5 = _mm256_loadu_ps(s + 5 * lds),
           r6 = _mm256_loadu_ps(s + 6 * lds), r7 = _mm256_loadu_ps(s + 7 * lds);
    __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1), t2 = _mm256_unpacklo_ps(r2, r3),
           t3 = _mm256_unpackhi_ps(r2, r3), t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5),
           t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
    r0 = _mm256_shuffle_ps(t0, t2, 0x44);
    r1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    r2 = _mm256_shuffle_ps(t1, t3, 0x44);
    r3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    r4 = _mm256_shuffle_ps(t4, t6, 0x44);
    r5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    r6 = _mm256_shuffle_ps(t5, t7, 0x44);
    r7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    _mm256_storeu_ps(d + 0 * NR, _mm256_permute2f128_ps(r0, r4, 0x20));
    _mm256_storeu_ps(d + 1 * NR, _mm256_permute2f128_ps(r1, r5, 0x20));
    _mm256_storeu_ps(d + 2 * NR, _mm256_permute2f128_ps(r2, r6, 0x20));
    _mm256_storeu_ps(d + 3 * NR, _mm256_permute2f128_ps(r3, r7, 0x20));
    _mm256_storeu_ps(d + 4 * NR, _mm256_permute2f128_ps(r0, r4, 0x31));
    _mm256_storeu_ps(d + 5 * NR, _mm256_permute2f128_ps(r1, r5, 0x31));
    _mm256_storeu_ps(d + 6 * NR, _mm256_permute2f128_ps(r2, r6, 0x31));
    _mm256_storeu_ps(d + 7 * NR, _mm256_permute2f128_ps(r3, r7, 0x31));
}

void sdb_thin_gemm_make_panels_t(int N, int K, const float *Bt, int ldbt, float *panels)
{
    for (int p = 0; p * NR < N; p++) {
        const int rows = N - p * NR < NR ? N - p * NR : NR;
        const float *s = Bt + (size_t)p * NR * ldbt;
        float *d = panels + (size_t)p * K * NR;
        int k = 0;
        if (rows == NR && sdb_thin_gemm_available())
            for (; k + 8 <= K; k += 8) {
                transpose8(s + k, (size_t)ldbt, d + (size_t)k * NR);
                transpose8(s + (size_t)8 * ldbt + k, (size_t)ldbt, d + (size_t)k * NR + 8);
            }
        for (; k < K; k++)
            for (int j = 0; j < NR; j++) d[(size_t)k * NR + j] = j < rows ? s[(size_t)j * ldbt + k] : 0.0f;
    }
}

int sdb_thin_gemm_panels(int M, int N, int K, const float *A, int lda, const float *panels, size_t pstride,
                         float beta, float *C, int ldc)
{
    return thin_run(M, N, K, A, lda, NULL, 0, NULL, panels, pstride, beta, C, ldc);
}
