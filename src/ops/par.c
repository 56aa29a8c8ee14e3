/*
 * par.c — the GEMM tile grid, the static split of OpenMP loops, makespans under a schedule and the
 * recorder of the ops' plans (see par.h). Owns the grid policy: which tile shape a product gets.
 */
#include "sdb/ops/par.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- grid ----
 * For a plain product (nb_max 0: linear layers, sdb_gemm) balance is a constraint, efficiency the
 * objective: a candidate (mb, nb, ks) qualifies when its load-balance bound (the dynamic schedule
 * with the busiest thread running ceil(units / T) full units) is at least GRID_BOUND_MIN at every
 * T of 2 .. 64, and the most efficient qualifying one wins (on a tie, fewer units). For a
 * convolution (nb_max set; its tiles' shape also sets the im2col scratch, which the VAE's strips
 * keep small), or when no candidate qualifies (small products), the score efficiency x balance
 * (the product of the six bounds, compared to the sixth power of the efficiency) is maximised.
 * Efficiency: OpenBLAS packs a tile's mb x kb block of A and kb x nb block of B on every call, so
 * a grid runs at about 1 / (1 + cA/nb + cB/mb + cK/kb) of the rate of a product packed once (cK/kb:
 * a call's fixed cost, the C tile's passes, over a K slice of kb). A K split (ks parts, each a
 * fixed slice of K, summed in a fixed order afterwards) adds no packing, only the partial sums'
 * pass: a further 1 / (1 + cS ks / K) for ks > 1.
 * Convolutions: cA = cB = 25 (operands streamed from memory), cK = 64, cS = 8, slices of at least
 * GRID_KP_MIN (refit on an AVX2 EPYC, conv 640->640 at 32x32, batch 2, one thread).
 * Plain products: cA = 35, cB = 35, or 25 when B (a linear layer's weights) is at most
 * GRID_HOT_BYTES and is repacked from cache, cK = 96, cS = 16, slices down to GRID_KP_MIN_PLAIN.
 * Refit on a 2-core AVX2 EPYC (Zen 3) by timing every qualifying grid of at most 256 units and
 * tiles of at least 32 x 32 for 24 of the U-Net's linear shapes at 256² and 512² (1-thread CPU
 * time, medians of 3, interleaved) and keeping the constants whose picks gave the least summed
 * step time. Re-timed against the old picks (one process, 1-thread CPU time, 3 runs of 11
 * interleaved reps): the earlier cB = 5 for cached weights picked 32 x 160 tiles on
 * 512 x 640 x 640, 11% slower than the 64 x 80 now (repacking cached weights is not that cheap);
 * the 154-row cross-attention k/v products, which no grid qualified for with slices of 512 or
 * more, now keep 64 threads busy; the other changed picks (128-row tiles with 4 slices of 320 for
 * K = 1280, 128 x 240 on 2048 x 960 x 320, ...) came out within 2% of the old ones either way.
 * Even each shape's best timed grid (best of ~100 noisy timings: an upper bound) would make a
 * step's linears only 3-4.5% faster than the old picks did: what separates a grid from OpenBLAS's
 * own product (5-27% per shape at one thread, 15% over a step) is the repacking itself, which every grid of the
 * >= 60 units that 64 threads need pays (a 64 x 160 x 320 tile repeated on the same operands
 * runs at 80 GFLOP/s, the grid of such tiles over 2048 x 320 x 320 at 60-70, the whole product
 * at 84). */
#define GRID_ALIGN 16
#define GRID_MAX_PARTS 128
#define GRID_MAX_UNITS 1024   /* no candidate with more units */
#define GRID_KP_MIN 512       /* a convolution's K per part at least this (OpenBLAS runs K in blocks of ~256-384) */
#define GRID_KP_MIN_PLAIN 128 /* a plain product's (measured: see above) */
#define GRID_KS_MAX 16
#define GRID_KS_BYTES ((size_t)64 << 20) /* partial sums of a split product at most this */
#define GRID_HOT_BYTES ((size_t)2 << 20) /* an operand this small is repacked from cache */
#define GRID_BOUND_MIN 0.93
static const int GRID_THREADS[] = {2, 4, 8, 16, 32, 64};
#define GRID_NT ((int)(sizeof GRID_THREADS / sizeof GRID_THREADS[0]))

static int part_side(int dim, int parts)
{
    int c = (dim + parts - 1) / parts;
    c = (c + GRID_ALIGN - 1) / GRID_ALIGN * GRID_ALIGN;
    return c < dim ? c : dim;
}

static double grid_eff(int N, int K, int mb, int nb, int ks, int nb_max)
{
    const double kb = (double)((K + ks - 1) / ks);
    if (nb_max > 0) { /* a convolution: B is the im2col panel, never kept whole (see above) */
        double eff = 1.0 / (1.0 + 25.0 / nb + 25.0 / mb + (kb > 0 ? 64.0 / kb : 0.0));
        if (ks > 1) eff /= 1.0 + 8.0 * ks / K;
        return eff;
    }
    const double cB = (size_t)K * N * sizeof(float) <= GRID_HOT_BYTES ? 25.0 : 35.0;
    double eff = 1.0 / (1.0 + 35.0 / nb + cB / mb + (kb > 0 ? 96.0 / kb : 0.0));
    if (ks > 1) eff /= 1.0 + 16.0 * ks / K;
    return eff;
}

/* The bound at each T of GRID_THREADS: their minimum, and their product. */
static void grid_bounds(int M, int N, int mb, int nb, int ks, double *min, double *prod)
{
    const long nmc = (M + mb - 1) / mb, ncc = (N + nb - 1) / nb, n = nmc * ncc * ks;
    const double total = (double)M * N, tile = (double)mb * nb;
    *min = 1.0;
    *prod = 1.0;
    for (int i = 0; i < GRID_NT; i++) {
        const int T = GRID_THREADS[i];
        double b = total * ks / ((double)T * (double)((n + T - 1) / T) * tile);
        b = b > 1.0 ? 1.0 : b;
        *min = b < *min ? b : *min;
        *prod *= b;
    }
}

sdb_gemm_grid sdb_gemm_grid_of(int M, int N, int K, int nb_max, int allow_split)
{
    assert(M > 0 && N > 0 && K >= 0);
    sdb_gemm_grid g = {M, N, K, M, N, 1, 1, 1, K};
    double best_eff = -1.0, best_score = -1.0; /* the best qualifying candidate; the best score */
    long best_units = 0;
    int fb_mb = M, fb_nb = N, fb_ks = 1, found = 0;
    int ks_max = 1;
    const int kp_min = nb_max > 0 ? GRID_KP_MIN : GRID_KP_MIN_PLAIN;
    if (allow_split)
        while (ks_max < GRID_KS_MAX && K / (ks_max + 1) >= kp_min &&
               (size_t)(ks_max + 1) * M * N * sizeof(float) <= GRID_KS_BYTES)
            ks_max++;
    for (int ks = 1; ks <= ks_max; ks++) {
        int last_mb = -1;
        for (int pm = 1; pm <= GRID_MAX_PARTS; pm++) {
            const int mb = part_side(M, pm);
            if (mb == last_mb) continue;
            last_mb = mb;
            int last_nb = -1;
            for (int pn = 1; pn <= GRID_MAX_PARTS; pn++) {
                const int nb = part_side(N, pn);
                if (nb == last_nb) continue;
                last_nb = nb;
                if ((long)pm * pn * ks > GRID_MAX_UNITS) break;
                if (nb_max > 0 && nb > nb_max) continue;
                const double e = grid_eff(N, K, mb, nb, ks, nb_max);
                double bmin, bprod;
                grid_bounds(M, N, mb, nb, ks, &bmin, &bprod);
                const long units = (long)((M + mb - 1) / mb) * ((N + nb - 1) / nb) * ks;
                if (nb_max <= 0 && bmin >= GRID_BOUND_MIN && (e > best_eff || (e == best_eff && units < best_units))) {
                    best_eff = e;
                    best_units = units;
                    g.mb = mb; g.nb = nb; g.ks = ks;
                }
                double e6 = e * e * e;
                e6 *= e6;
                if (e6 * bprod > best_score) {
                    best_score = e6 * bprod;
                    fb_mb = mb; fb_nb = nb; fb_ks = ks;
                }
                found = 1;
                if (nb <= GRID_ALIGN) break;
            }
            if (mb <= GRID_ALIGN) break;
        }
    }
    if (!found) { /* nb_max below every candidate: the narrowest */
        g.nb = nb_max < N ? nb_max : N;
        g.mb = M;
        g.ks = 1;
    } else if (best_eff < 0) { /* a convolution, or no candidate keeps every count busy: the best score */
        g.mb = fb_mb; g.nb = fb_nb; g.ks = fb_ks;
    }
    g.nmc = (M + g.mb - 1) / g.mb;
    g.ncc = (N + g.nb - 1) / g.nb;
    g.kb = (K + g.ks - 1) / g.ks;
    return g;
}

void sdb_gemm_grid_tile(const sdb_gemm_grid *g, int t, int *m0, int *mm, int *n0, int *nn, int *k0, int *kk)
{
    assert(t >= 0 && t < sdb_gemm_grid_tiles(g));
    const int per = g->nmc * g->ncc, s = t / per, r = t % per;
    const int jc = r / g->nmc, im = r % g->nmc;
    *n0 = jc * g->nb;
    *nn = g->N - *n0 < g->nb ? g->N - *n0 : g->nb;
    *m0 = im * g->mb;
    *mm = g->M - *m0 < g->mb ? g->M - *m0 : g->mb;
    *k0 = s * g->kb;
    *kk = g->K - *k0 < g->kb ? g->K - *k0 : g->kb;
}

/* ---- schedules ---- */
void sdb_par_static_range(long n, int T, int tid, long *lo, long *hi)
{
    assert(T >= 1 && tid >= 0 && tid < T);
    const long q = n / T, r = n % T;
    if (tid < r) { *lo = tid * (q + 1); *hi = *lo + q + 1; }
    else { *lo = tid * q + r; *hi = *lo + q; }
}

static double unit(const double *cost, double ucost, long i) { return cost ? cost[i] : ucost; }

double sdb_par_makespan(sdb_par_sched s, long n, const double *cost, double ucost, int T)
{
    if (n <= 0) return 0.0;
    if (T < 1) T = 1;
    if (!cost) return (double)((n + T - 1) / T) * ucost; /* equal units: either schedule */
    double span = 0.0;
    if (s == SDB_PAR_STATIC) {
        for (int t = 0; t < T; t++) {
            long lo, hi;
            sdb_par_static_range(n, T, t, &lo, &hi);
            double sum = 0.0;
            for (long i = lo; i < hi; i++) sum += cost[i];
            if (sum > span) span = sum;
        }
        return span;
    }
    /* dynamic, chunk 1: each unit in order to the thread that is free first (a binary min-heap
     * of the threads' finishing times) */
    double *heap = calloc((size_t)T, sizeof *heap);
    if (!heap) { /* no memory: the serial time, an upper bound */
        for (long i = 0; i < n; i++) span += cost[i];
        return span;
    }
    for (long i = 0; i < n; i++) {
        heap[0] += unit(cost, ucost, i);
        int k = 0; /* sift down */
        for (;;) {
            int l = 2 * k + 1, r = l + 1, m = k;
            if (l < T && heap[l] < heap[m]) m = l;
            if (r < T && heap[r] < heap[m]) m = r;
            if (m == k) break;
            double tmp = heap[k]; heap[k] = heap[m]; heap[m] = tmp;
            k = m;
        }
    }
    for (int t = 0; t < T; t++) span = heap[t] > span ? heap[t] : span;
    free(heap);
    return span;
}

/* ---- recorder ---- */
void sdb_par_rec_init(sdb_par_rec *r) { memset(r, 0, sizeof *r); }

void sdb_par_rec_free(sdb_par_rec *r)
{
    for (int i = 0; i < r->nloops; i++) free(r->loops[i].cost);
    free(r->loops);
    free(r->ops);
    memset(r, 0, sizeof *r);
}

/* Room for one more element in an array of cap (doubling from 256); -1 when out of memory. */
static int grow(void **arr, int *cap, int n, size_t elem)
{
    if (n < *cap) return 0;
    const int nc = *cap ? 2 * *cap : 256;
    void *p = realloc(*arr, (size_t)nc * elem);
    if (!p) return -1;
    *arr = p;
    *cap = nc;
    return 0;
}

void sdb_par_op_begin(sdb_par_rec *r, sdb_par_kind kind, const char *fmt, ...)
{
    if (grow((void **)&r->ops, &r->cap_ops, r->nops, sizeof *r->ops)) { r->failed = 1; return; }
    sdb_par_op *op = &r->ops[r->nops++];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(op->label, sizeof op->label, fmt, ap);
    va_end(ap);
    op->kind = kind;
    op->first = r->nloops;
    op->nloops = 0;
}

void sdb_par_loop_add(sdb_par_rec *r, sdb_par_sched s, long n, const double *cost, double ucost,
                      int bytes, int parallel)
{
    if (n <= 0) return;
    if (!r->nops) { r->failed = 1; return; }
    if (grow((void **)&r->loops, &r->cap_loops, r->nloops, sizeof *r->loops)) { r->failed = 1; return; }
    sdb_par_loop l = {s, n, NULL, ucost, bytes};
    if (!parallel) { /* one thread runs it all: one unit */
        double sum = 0.0;
        for (long i = 0; i < n; i++) sum += unit(cost, ucost, i);
        l.n = 1;
        l.ucost = sum;
    } else if (cost) {
        l.cost = malloc((size_t)n * sizeof *cost);
        if (!l.cost) { r->failed = 1; return; }
        memcpy(l.cost, cost, (size_t)n * sizeof *cost);
    }
    r->loops[r->nloops++] = l;
    r->ops[r->nops - 1].nloops++;
}

static double scale_of(const sdb_par_loop *l) { return l->bytes ? SDB_PAR_FLOP_PER_BYTE : 1.0; }

double sdb_par_loop_work(const sdb_par_loop *l)
{
    double sum = 0.0;
    for (long i = 0; i < l->n; i++) sum += unit(l->cost, l->ucost, i);
    return sum * scale_of(l);
}

double sdb_par_loop_span(const sdb_par_loop *l, int T)
{
    return sdb_par_makespan(l->sched, l->n, l->cost, l->ucost, T) * scale_of(l);
}

double sdb_par_rec_bound(const sdb_par_rec *r, int T)
{
    double ideal = 0.0, span = 0.0;
    for (int i = 0; i < r->nloops; i++) {
        ideal += sdb_par_loop_work(&r->loops[i]) / T;
        span += sdb_par_loop_span(&r->loops[i], T);
    }
    return span > 0 ? ideal / span : 1.0;
}
