/*
 * par.h — how the parallel ops cut their work, and the load-balance bound that cut gives.
 *
 * Every parallel loop of the ops takes its work units from a function here (the GEMM tile grid,
 * the static split of an OpenMP loop), and each op has a `_plan` twin that records the same units
 * with their costs into an sdb_par_rec instead of computing (`sdbatch bench --balance`). So the
 * bound is computed from the very partition the kernels run, never from a copy of it.
 *
 * The bound of one parallel loop at T threads is ideal / makespan: ideal = (sum of unit costs) / T,
 * makespan = the busiest thread's sum under the loop's schedule (libgomp's schedule(static): each
 * thread one contiguous run of floor(n/T) or ceil(n/T) units; schedule(dynamic, 1): units handed
 * out in order, each to the thread that frees up first). A loop that runs serially (its `if` clause
 * false) is one unit. Costs are FLOPs for products, bytes moved for memory-bound passes; the step's
 * bound adds them up with SDB_PAR_FLOP_PER_BYTE flops per byte (a 16-64 core node sustains roughly
 * 1-3 TFLOP/s of sgemm against 100-300 GB/s of memory bandwidth).
 *
 * Grids depend on the shapes only, never on the thread count: every unit's arithmetic is fixed, so
 * results are bit-identical for any thread count and any schedule.
 */
#ifndef SDB_OPS_PAR_H
#define SDB_OPS_PAR_H

#include <stddef.h>

typedef enum { SDB_PAR_STATIC, SDB_PAR_DYNAMIC } sdb_par_sched;

/* The kinds an op's work is reported as. */
typedef enum { SDB_PAR_GEMM, SDB_PAR_ATTENTION, SDB_PAR_NORM, SDB_PAR_ELEMENTWISE, SDB_PAR_COPY,
               SDB_PAR_KINDS } sdb_par_kind;

#define SDB_PAR_FLOP_PER_BYTE 8.0

/* ---- the GEMM tile grid ----
 * C[M,N] += A[M,K] B[K,N] cut into units: tiles of mb x nb (edge tiles smaller) times ks slices of
 * K (kb each, the last shorter); unit t = (s * ncc + jc) * nmc + im (M fastest, then N, then the
 * K slice). With ks > 1 each slice's product goes to its own partial sum and the slices are added
 * in slice order afterwards, so every element's arithmetic is fixed by the shapes. Chosen from
 * (M, N, K) only: for linear layers, of the grids whose bound is at least 0.93 at each of 2..64 threads,
 * the one with the least packing per FLOP (OpenBLAS packs both operand blocks of every call; an
 * operand small enough to stay in cache costs less to repack), see par.c. */
typedef struct sdb_gemm_grid {
    int M, N, K, mb, nb, nmc, ncc, ks, kb;
} sdb_gemm_grid;

/* The grid of an M x N x K product with at most nb_max columns per tile (0 = no limit); K is cut
 * only with allow_split (the caller has scratch for the partial sums: ks * M * N floats). */
sdb_gemm_grid sdb_gemm_grid_of(int M, int N, int K, int nb_max, int allow_split);
static inline int sdb_gemm_grid_tiles(const sdb_gemm_grid *g) { return g->nmc * g->ncc * g->ks; }
/* Rows m0 .. m0+mm-1, columns n0 .. n0+nn-1 and K slice k0 .. k0+kk-1 of unit t. */
void sdb_gemm_grid_tile(const sdb_gemm_grid *g, int t, int *m0, int *mm, int *n0, int *nn, int *k0, int *kk);

/* libgomp's schedule(static) without a chunk: iterations [lo, hi) of thread tid of T over n. */
void sdb_par_static_range(long n, int T, int tid, long *lo, long *hi);

/* Makespan of n units (cost[i], or `ucost` each when cost is NULL) on T threads under `s`. */
double sdb_par_makespan(sdb_par_sched s, long n, const double *cost, double ucost, int T);

/* ---- the recorder ---- */
typedef struct sdb_par_loop {
    sdb_par_sched sched;
    long n;           /* units */
    double *cost;     /* per unit (owned), or NULL: every unit costs ucost */
    double ucost;
    int bytes;        /* costs are bytes (else FLOPs) */
} sdb_par_loop;

typedef struct sdb_par_op {
    char label[96];   /* what and which shape, e.g. "conv 3x3 320->320 64x64 x2" */
    sdb_par_kind kind;
    int first, nloops; /* its loops in sdb_par_rec.loops */
} sdb_par_op;

typedef struct sdb_par_rec {
    sdb_par_op *ops;
    int nops, cap_ops;
    sdb_par_loop *loops;
    int nloops, cap_loops;
    int failed;       /* an allocation failed: the record is incomplete */
} sdb_par_rec;

void sdb_par_rec_init(sdb_par_rec *r);
void sdb_par_rec_free(sdb_par_rec *r);
/* Starts an op: the loops recorded next belong to it. */
void sdb_par_op_begin(sdb_par_rec *r, sdb_par_kind kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* One parallel loop of the current op (a barrier ends it). `cost` (n entries) is copied; NULL
 * means n units of `ucost` each. With `parallel` 0 the loop runs on one thread (its `if` clause). */
void sdb_par_loop_add(sdb_par_rec *r, sdb_par_sched s, long n, const double *cost, double ucost,
                      int bytes, int parallel);
/* An op's (or a loop's) work in FLOP-equivalents and its makespan at T threads. */
double sdb_par_loop_work(const sdb_par_loop *l);
double sdb_par_loop_span(const sdb_par_loop *l, int T);
/* Whole record: sum of ideal times / sum of makespans at T threads (1 when empty). */
double sdb_par_rec_bound(const sdb_par_rec *r, int T);

#endif
