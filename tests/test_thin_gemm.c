/*
 * test_thin_gemm.c — the thin-product GEMM (sdb_thin_gemm) against two references written here:
 * bit for bit against a scalar chain of fmaf() over k in order (what thin_gemm.h promises every
 * element is), and within the rounding bound of that chain (K·u·Σ|a·b|, u = 2^-24) against a
 * double-precision product. Shapes cover whole and partial 6 x 16 blocks, several K blocks and
 * column chunks, leading dimensions wider than the matrices (the padding must stay untouched),
 * beta 0 and 1, K = 0; B made into panels once (sdb_thin_gemm_panels, from B or from Bᵀ) gives the same bits; a product cut into calls along M, N and K (beta = 1 continuing the chain)
 * gives the same bits as one call. On a CPU without AVX2 and FMA the kernel must refuse (-1) and
 * leave C alone, and only that is checked (the output says so).
 */
#include "harness.h"
#include "sdb/ops/thin_gemm.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng = 0x7f4a7c159e3779b9ULL;
#define GUARD 12345.0f

typedef struct mats {
    int M, N, K, lda, ldb, ldc;
    float *A, *B, *C0; /* C0: C's values before the call (beta = 1), guards in the padding */
} mats;

static mats make(int M, int N, int K, int pad)
{
    mats m = {M, N, K, K + pad, N + pad, N + pad + 3, NULL, NULL, NULL};
    m.A = sdb_t_rand_floats(&rng, (size_t)M * m.lda, 1.0f);
    m.B = sdb_t_rand_floats(&rng, (size_t)(K > 0 ? K : 1) * m.ldb, 1.0f);
    m.C0 = sdb_t_rand_floats(&rng, (size_t)M * m.ldc, 4.0f);
    for (int i = 0; i < M; i++)
        for (int j = N; j < m.ldc; j++) m.C0[(size_t)i * m.ldc + j] = GUARD;
    return m;
}

static void drop(mats *m) { free(m->A); free(m->B); free(m->C0); }

/* the promised arithmetic: c = start; c = fmaf(a_k, b_k, c) for k = 0 .. K-1 */
static float chain(const mats *m, int i, int j, float start)
{
    float c = start;
    for (int k = 0; k < m->K; k++) c = fmaf(m->A[(size_t)i * m->lda + k], m->B[(size_t)k * m->ldb + j], c);
    return c;
}

static size_t guards_broken(const mats *m, const float *C)
{
    size_t bad = 0;
    for (int i = 0; i < m->M; i++)
        for (int j = m->N; j < m->ldc; j++) bad += C[(size_t)i * m->ldc + j] != GUARD;
    return bad;
}

static void check_case(int M, int N, int K, int pad, float beta)
{
    mats m = make(M, N, K, pad);
    float *C = malloc(sizeof(float) * (size_t)M * m.ldc);
    float *pack = malloc(sizeof(float) * sdb_thin_gemm_pack_floats());
    memcpy(C, m.C0, sizeof(float) * (size_t)M * m.ldc);
    CHECK(sdb_thin_gemm(M, N, K, m.A, m.lda, m.B, m.ldb, beta, C, m.ldc, pack) == 0);
    size_t not_chain = 0, over_bound = 0;
    double worst = 0.0;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            const float start = beta != 0.0f ? m.C0[(size_t)i * m.ldc + j] : 0.0f, got = C[(size_t)i * m.ldc + j];
            not_chain += memcmp(&got, &(float){chain(&m, i, j, start)}, sizeof got) != 0;
            double exact = start, mag = fabs(start);
            for (int k = 0; k < K; k++) {
                const double p = (double)m.A[(size_t)i * m.lda + k] * m.B[(size_t)k * m.ldb + j];
                exact += p;
                mag += fabs(p);
            }
            const double err = fabs(got - exact), bound = (K + 1) * ldexp(mag, -24) + 1e-30;
            over_bound += err > bound;
            if (mag > 0 && err / mag > worst) worst = err / mag;
        }
    CHECKF(!not_chain, "%dx%dx%d pad %d beta %g: %zu elements differ from the fmaf chain", M, N, K, pad,
           beta, not_chain);
    CHECKF(!over_bound, "%dx%dx%d beta %g: %zu elements past (K+1)u·Σ|ab|", M, N, K, beta, over_bound);
    CHECKF(!guards_broken(&m, C), "%dx%dx%d: padding of C written", M, N, K);
    /* B made into panels once: the same bits */
    const size_t np = sdb_thin_gemm_panels_floats(N, K);
    float *panels = malloc(sizeof(float) * (np ? np : 1)), *C2 = malloc(sizeof(float) * (size_t)M * m.ldc);
    memcpy(C2, m.C0, sizeof(float) * (size_t)M * m.ldc);
    sdb_thin_gemm_make_panels(N, K, m.B, m.ldb, panels);
    CHECK(sdb_thin_gemm_panels(M, N, K, m.A, m.lda, panels, (size_t)K * SDB_THIN_GEMM_PANEL, beta, C2, m.ldc) == 0);
    CHECKF(memcmp(C, C2, sizeof(float) * (size_t)M * m.ldc) == 0, "%dx%dx%d beta %g: from panels differs", M, N, K, beta);
    /* the same from panels in two K parts (rows 0 .. K/3, then the rest with beta 1) */
    memcpy(C2, m.C0, sizeof(float) * (size_t)M * m.ldc);
    const int K1 = K / 3;
    CHECK(sdb_thin_gemm_panels(M, N, K1, m.A, m.lda, panels, (size_t)K * SDB_THIN_GEMM_PANEL, beta, C2, m.ldc) == 0);
    CHECK(sdb_thin_gemm_panels(M, N, K - K1, m.A + K1, m.lda, panels + (size_t)K1 * SDB_THIN_GEMM_PANEL,
                               (size_t)K * SDB_THIN_GEMM_PANEL, 1.0f, C2, m.ldc) == 0);
    CHECKF(memcmp(C, C2, sizeof(float) * (size_t)M * m.ldc) == 0, "%dx%dx%d beta %g: from panels in two K parts differs", M, N, K, beta);
    /* and from Bᵀ (a linear layer's weights as stored): the same panels */
    float *Bt = malloc(sizeof(float) * (size_t)(N ? N : 1) * (K + 3)), *panels_t = malloc(sizeof(float) * (np ? np : 1));
    for (int j = 0; j < N; j++)
        for (int k = 0; k < K; k++) Bt[(size_t)j * (K + 3) + k] = m.B[(size_t)k * m.ldb + j];
    sdb_thin_gemm_make_panels_t(N, K, Bt, K + 3, panels_t);
    CHECKF(memcmp(panels, panels_t, sizeof(float) * np) == 0, "%dx%d: panels from Bᵀ differ", N, K);
    free(Bt); free(panels_t);
    free(panels); free(C2);
    printf("  %4d x %4d x %5d pad %d beta %g: error / Σ|ab| at most %.2e (bound (K+1)u = %.2e)\n", M, N,
           K, pad, beta, worst, (K + 1) * ldexp(1.0, -24));
    free(C);
    free(pack);
    drop(&m);
}

static void test_against_references(void)
{
    static const int cases[][4] = {
        {1, 1, 1, 0},     {5, 7, 3, 1},     {6, 16, 384, 0}, {7, 17, 385, 5},  {12, 32, 720, 0},
        {13, 130, 1000, 2}, {320, 32, 720, 0}, {61, 128, 769, 0}, {6, 129, 40, 1}, {2, 300, 9, 0},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        check_case(cases[c][0], cases[c][1], cases[c][2], cases[c][3], 0.0f);
        check_case(cases[c][0], cases[c][1], cases[c][2], cases[c][3], 1.0f);
    }
    /* K = 0: C = 0 (beta 0) or unchanged (beta 1) */
    mats m = make(7, 19, 0, 1);
    float *C = malloc(sizeof(float) * (size_t)m.M * m.ldc), *pack = malloc(sizeof(float) * sdb_thin_gemm_pack_floats());
    memcpy(C, m.C0, sizeof(float) * (size_t)m.M * m.ldc);
    CHECK(sdb_thin_gemm(m.M, m.N, 0, m.A, m.lda, m.B, m.ldb, 1.0f, C, m.ldc, pack) == 0);
    CHECK(memcmp(C, m.C0, sizeof(float) * (size_t)m.M * m.ldc) == 0);
    CHECK(sdb_thin_gemm(m.M, m.N, 0, m.A, m.lda, m.B, m.ldb, 0.0f, C, m.ldc, pack) == 0);
    size_t nonzero = 0;
    for (int i = 0; i < m.M; i++)
        for (int j = 0; j < m.N; j++) nonzero += C[(size_t)i * m.ldc + j] != 0.0f;
    CHECK(nonzero == 0);
    CHECK(!guards_broken(&m, C));
    free(C); free(pack); drop(&m);
}

/* One call against the same product cut into 3 x 3 x 2 calls: rows at 5 and 11, columns at 23 and
 * 40, K at 397 (the second K part continues the chain from C with beta = 1). */
static void test_cuts(void)
{
    const int M = 17, N = 57, K = 900;
    mats m = make(M, N, K, 0);
    float *whole = calloc((size_t)M * m.ldc, sizeof(float)), *cut = calloc((size_t)M * m.ldc, sizeof(float));
    float *pack = malloc(sizeof(float) * sdb_thin_gemm_pack_floats());
    CHECK(sdb_thin_gemm(M, N, K, m.A, m.lda, m.B, m.ldb, 0.0f, whole, m.ldc, pack) == 0);
    const int rc[] = {0, 5, 11, M}, cc[] = {0, 23, 40, N}, kc[] = {0, 397, K};
    for (int a = 0; a < 3; a++)
        for (int b = 0; b < 3; b++)
            for (int s = 0; s < 2; s++) {
                const int m0 = rc[a], n0 = cc[b], k0 = kc[s];
                CHECK(sdb_thin_gemm(rc[a + 1] - m0, cc[b + 1] - n0, kc[s + 1] - k0, m.A + (size_t)m0 * m.lda + k0,
                                    m.lda, m.B + (size_t)k0 * m.ldb + n0, m.ldb, s ? 1.0f : 0.0f,
                                    cut + (size_t)m0 * m.ldc + n0, m.ldc, pack) == 0);
            }
    CHECK(memcmp(whole, cut, sizeof(float) * (size_t)M * m.ldc) == 0);
    free(whole); free(cut); free(pack); drop(&m);
}

static void test_refuses_without_avx2(void)
{
    float A[4] = {1, 2, 3, 4}, B[4] = {1, 0, 0, 1}, C[4] = {9, 9, 9, 9}, pack[1];
    CHECK(!sdb_thin_gemm_preferred());
    CHECK(sdb_thin_gemm(2, 2, 2, A, 2, B, 2, 0.0f, C, 2, pack) == -1);
    CHECK(C[0] == 9 && C[1] == 9 && C[2] == 9 && C[3] == 9);
}

int main(void)
{
    if (sdb_thin_gemm_available()) {
        printf("AVX2+FMA: the kernel runs here (%s by the convolutions on this CPU)\n",
               sdb_thin_gemm_preferred() ? "used" : "not used: AVX-512, OpenBLAS instead");
        RUN(test_against_references);
        RUN(test_cuts);
    } else {
        printf("no AVX2+FMA here: only the refusal is checked (the kernel's other checks did not run)\n");
        RUN(test_refuses_without_avx2);
    }
    return sdb_t_done();
}
