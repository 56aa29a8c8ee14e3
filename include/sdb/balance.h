/*
 * balance.h — the load-balance bound of a U-Net step's parallel schedule at given thread counts,
 * from the shapes alone (`sdbatch bench --balance 16,32,64`).
 *
 * The U-Net is built from its config on recording weights (no weight file), and its forward runs
 * in plan mode (sdb_unet_plan): every parallel op records the work units its kernel would run,
 * from the same partition functions (ops/par.h). Each op's bound at T threads is ideal / makespan
 * under its actual schedule; the step's is the sum of ideal times over the sum of makespans (ops
 * weighted by their FLOPs, memory-bound passes by their bytes at SDB_PAR_FLOP_PER_BYTE).
 */
#ifndef SDB_BALANCE_H
#define SDB_BALANCE_H

#include "sdb/error.h"
#include "sdb/ops/par.h"

#define SDB_BALANCE_MAX_T 16

/* The ops of one label (same kind and shapes, so the same units), merged. */
typedef struct sdb_balance_row {
    char label[96];
    sdb_par_kind kind;
    int count;        /* how many times a step runs it */
    long units;       /* work units of one run (all its loops) */
    double work;      /* FLOP-equivalents of all runs */
    double bound[SDB_BALANCE_MAX_T];
} sdb_balance_row;

typedef struct sdb_balance {
    int size, latent, batch, nt;
    int conv;         /* the 3x3 convolutions' path planned (SDB_CONV_*, ops/winograd.h) */
    int threads[SDB_BALANCE_MAX_T];
    double step_bound[SDB_BALANCE_MAX_T];
    double kind_work[SDB_PAR_KINDS], kind_bound[SDB_PAR_KINDS][SDB_BALANCE_MAX_T];
    double work;      /* the step's FLOP-equivalents */
    sdb_balance_row *rows; /* in order of first appearance */
    int nrows;
    char config[4096]; /* the U-Net config used ("built-in SD 1.5 inpainting" when none given) */
} sdb_balance;

static inline const char *sdb_par_kind_name(int k)
{
    static const char *const names[SDB_PAR_KINDS] = {"gemm", "attention", "norm", "elementwise", "copy"};
    return k >= 0 && k < SDB_PAR_KINDS ? names[k] : "?";
}

/* The bound of one U-Net step at batch 2 for a size x size image (size a multiple of 8) at each of
 * the nt (<= SDB_BALANCE_MAX_T) thread counts, its 3x3 convolutions planned on path `conv`
 * (SDB_CONV_AUTO / _DIRECT / _WINOGRAD, ops/winograd.h). `model`: a diffusers folder (its unet/config.json), a
 * U-Net config.json, or NULL for the built-in SD 1.5 inpainting config. */
int sdb_balance_unet(const char *model, int size, int conv, const int *threads, int nt, sdb_balance *out,
                     sdb_err *err);
void sdb_balance_free(sdb_balance *b);

#endif
