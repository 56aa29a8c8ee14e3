/*
 * test_attention.c — sdb_attention against a double-precision softmax(scale·QKᵀ)·V computed here,
 * on both of its paths (the blocked AVX2 kernels and the sgemm one: causal masking, head dims over
 * 160 or not a multiple of 8), with shapes that exercise every edge: key counts that are not a
 * multiple of the 4-key kernel or of the 64-key block (a short last block), one block of all keys
 * (at most 128) and many, query counts that leave partial 24-row groups and tasks of fewer groups,
 * strided (ld > width) operands, scores large enough that most exponentials underflow and that
 * the running max of a row grows from block to block (the output and sum are rescaled), keys
 * arranged so that it grows in every block, and one key. Also: 1 and 2
 * threads give bit-identical outputs, and scratch is released.
 */
#include "harness.h"
#include "sdb/arena.h"
#include "sdb/ops/attention.h"
#include "sdb/threads.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static unsigned lcg(unsigned *s) { *s = *s * 1664525u + 1013904223u; return *s >> 8; }
static float uni(unsigned *s) { return (float)lcg(s) / 16777216.0f - 0.5f; }

/* out = softmax(scale q kᵀ + causal mask) v per head, in double; returns max |scale q·k| */
static double reference(const float *q, int ldq, const float *k, int ldk, const float *v, int ldv, float *out,
                      int ldo, int nq, int nk, int heads, int hd, double scale, int causal)
{
    double *p = malloc(sizeof(double) * nk), smax = 0;
    for (int h = 0; h < heads; h++)
        for (int i = 0; i < nq; i++) {
            int valid = causal ? (i + 1 < nk ? i + 1 : nk) : nk;
            double mx = -INFINITY, sum = 0;
            for (int j = 0; j < valid; j++) {
                double d = 0;
                for (int c = 0; c < hd; c++) d += (double)q[(size_t)i * ldq + h * hd + c] * k[(size_t)j * ldk + h * hd + c];
                p[j] = scale * d;
                if (fabs(p[j]) > smax) smax = fabs(p[j]);
                if (p[j] > mx) mx = p[j];
            }
            for (int j = 0; j < valid; j++) { p[j] = exp(p[j] - mx); sum += p[j]; }
            for (int c = 0; c < hd; c++) {
                double o = 0;
                for (int j = 0; j < valid; j++) o += p[j] * v[(size_t)j * ldv + h * hd + c];
                out[(size_t)i * ldo + h * hd + c] = (float)(o / sum);
            }
        }
    free(p);
    return smax;
}

/* ramp: k[j][c] = (1 + j/nk) · amp/2 · sign(q[0][c]), so that row 0's scores grow strictly with j
 * and its running max rises in every key block (the other rows see a ramp of random sign) */
typedef struct { int nq, nk, heads, hd, causal, pad; float amp; int ramp; } shape_t;

static void check_shape(const shape_t *sh, sdb_arena *a)
{
    const int C = sh->heads * sh->hd, ld = C + sh->pad; /* pad > 0: strided rows */
    float *q = calloc((size_t)sh->nq * ld, sizeof(float)), *k = calloc((size_t)sh->nk * ld, sizeof(float));
    float *v = calloc((size_t)sh->nk * ld, sizeof(float));
    float *ref = calloc((size_t)sh->nq * ld, sizeof(float));
    float *o1 = calloc((size_t)sh->nq * ld, sizeof(float)), *o2 = calloc((size_t)sh->nq * ld, sizeof(float));
    unsigned s = 777u + (unsigned)(sh->nq * 31 + sh->nk * 7 + sh->hd);
    for (size_t i = 0; i < (size_t)sh->nq * ld; i++) q[i] = sh->amp * uni(&s);
    for (size_t i = 0; i < (size_t)sh->nk * ld; i++) k[i] = sh->amp * uni(&s);
    for (size_t i = 0; i < (size_t)sh->nk * ld; i++) v[i] = uni(&s);
    if (sh->ramp)
        for (int j = 0; j < sh->nk; j++)
            for (int c = 0; c < C; c++)
                k[(size_t)j * ld + c] = (1.0f + (float)j / sh->nk) * 0.5f * sh->amp * (q[c] < 0 ? -1.0f : 1.0f);
    const float scale = 1.0f / sqrtf((float)sh->hd);
    double smax = reference(q, ld, k, ld, v, ld, ref, ld, sh->nq, sh->nk, sh->heads, sh->hd, scale, sh->causal);

    size_t mark = sdb_arena_mark(a);
    sdb_threads_set(1);
    CHECK(sdb_attention(q, ld, k, ld, v, ld, o1, ld, sh->nq, sh->nk, sh->heads, sh->hd, scale, sh->causal, a) == 0);
    CHECK(sdb_arena_mark(a) == mark);
    sdb_threads_set(2);
    CHECK(sdb_attention(q, ld, k, ld, v, ld, o2, ld, sh->nq, sh->nk, sh->heads, sh->hd, scale, sh->causal, a) == 0);

    char what[128];
    snprintf(what, sizeof what, "attention %dx%d, %d heads of %d%s%s", sh->nq, sh->nk, sh->heads, sh->hd,
             sh->causal ? ", causal" : "", sh->pad ? ", strided" : "");
    /* Outputs are convex combinations of v (|v| <= 0.5): float rounding of a few thousand terms, plus
     * that of the scores themselves (each off by ~|s|·2^-24, which moves its weight relatively by as much) */
    CHECK(sdb_t_close(o1, ref, (size_t)sh->nq * ld, 2e-6 + 2.0 * smax * 0x1p-24, 1e-5, what));
    CHECKF(memcmp(o1, o2, sizeof(float) * (size_t)sh->nq * ld) == 0, "%s: 1 and 2 threads differ", what);
    for (int i = 0; i < sh->nq; i++) /* the padding columns are not written */
        for (int c = C; c < ld; c++) CHECK(o1[(size_t)i * ld + c] == 0.0f);
    free(q); free(k); free(v); free(ref); free(o1); free(o2);
}

static void test_blocked_shapes(void)
{
    sdb_arena a;
    sdb_err err;
    CHECK_OK(sdb_arena_init(&a, 0, &err), &err);
    const shape_t shapes[] = {
        {1024, 1024, 8, 40, 0, 0, 2.0f, 0},  /* SD 1.x level 1 (fewer tokens): 16 key blocks */
        {256, 256, 8, 80, 0, 0, 2.0f, 0},    /* level 2 */
        {64, 64, 8, 160, 0, 0, 2.0f, 0},     /* level 3: one key block, tasks of one row group */
        {500, 77, 8, 40, 0, 0, 2.0f, 0},     /* cross-attention: one block of 77 keys = 19 x 4 + 1 */
        {37, 25, 3, 24, 0, 8, 1.0f, 0},      /* a partial row group, 25 = 6 x 4 + 1 keys, strided */
        {7, 1, 2, 8, 0, 0, 1.0f, 0},         /* one key, rows below one 24-row group */
        {61, 100, 2, 40, 0, 0, 30.0f, 0},    /* large scores: most exponentials underflow */
        {150, 300, 2, 40, 0, 0, 30.0f, 0},   /* and over 5 key blocks (the last of 44 keys) */
        {30, 203, 2, 16, 0, 8, 4.0f, 1},     /* row 0's max rises in every block; 203 = 3 x 64 + 11 */
        {340, 129, 4, 8, 0, 0, 2.0f, 0},     /* 129 = 2 x 64 + 1 keys; 340 = 14 x 24 + 4 rows */
    };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) check_shape(&shapes[i], &a);
    sdb_arena_free(&a);
}

static void test_sgemm_path_shapes(void)
{
    sdb_arena a;
    sdb_err err;
    CHECK_OK(sdb_arena_init(&a, 0, &err), &err);
    const shape_t shapes[] = {
        {77, 77, 12, 64, 1, 0, 2.0f, 0},     /* CLIP's causal self-attention */
        {300, 300, 1, 512, 0, 0, 0.3f, 0},   /* the VAE mid-block: one 512-wide head */
        {70, 50, 2, 12, 0, 4, 1.0f, 0},      /* head dim not a multiple of 8, strided */
        {90, 90, 2, 16, 1, 0, 30.0f, 0},     /* causal with large scores */
    };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) check_shape(&shapes[i], &a);
    sdb_arena_free(&a);
}

int main(void)
{
    RUN(test_blocked_shapes);
    RUN(test_sgemm_path_shapes);
    return sdb_t_done();
}
