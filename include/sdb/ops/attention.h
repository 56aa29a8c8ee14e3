/*
 * attention.h — scaled dot-product multi-head attention with bounded memory.
 */
#ifndef SDB_OPS_ATTENTION_H
#define SDB_OPS_ATTENTION_H

#include "sdb/arena.h"
#include "sdb/ops/par.h"

/*
 * For each head h (columns h*head_dim .. (h+1)*head_dim-1 of q, k, v and out):
 *   out[i] = sum_j softmax_j(scale * q[i]·k[j] + mask(i, j)) v[j]
 * q is [nq, ldq], k [nk, ldk], v [nk, ldv], out [nq, ldo], all row-major floats. With `causal`,
 * key j > i is masked (CLIP's causal self-attention). Work is split into (head, block of query
 * rows) tasks: scratch holds one block's scores per thread, never every head's full score matrix.
 * Results do not depend on the thread count. Returns 0, or SDB_ENOMEM when scratch is exhausted.
 */
int sdb_attention(const float *q, int ldq, const float *k, int ldk, const float *v, int ldv,
                  float *out, int ldo, int nq, int nk, int heads, int head_dim, float scale,
                  int causal, sdb_arena *scratch);
/* Its work units (par.h), recorded without computing. */
void sdb_attention_plan(int nq, int nk, int heads, int head_dim, int causal, sdb_par_rec *rec);

#endif
