/*
 * attention.c — multi-head attention, chunked over (head, query-row block) (see attention.h).
 *
 * Each task computes S = scale · Qblk·Khᵀ with one sgemm, softmax row by row in place (max
 * subtracted first, as torch does), then Oblk = P·Vh with a second sgemm straight into the output
 * columns of its head. Tasks run in an OpenMP loop; inside it OpenBLAS runs single-threaded, so
 * every task's arithmetic is the same for any thread count.
 */
#include "sdb/ops/attention.h"
#include "sdb/error.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stddef.h>

#define ATTN_BLOCK_ROWS 64

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

#pragma omp parallel for schedule(dynamic, 1)
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
            float sum = 0.0f;
            for (int j = 0; j < valid; j++) { row[j] = expf(row[j] - mx); sum += row[j]; }
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
