/*
 * bench_scale.h — `sdbatch bench --balance LIST` and `--threads LIST` (bench_scale.c).
 */
#ifndef SDB_CLI_BENCH_SCALE_H
#define SDB_CLI_BENCH_SCALE_H

#include "cli.h"
#include "sdb/bench.h"
#include "sdb/log.h"
#include "sdb/pipeline.h"

/* A comma list of thread counts (1..4096, at most max) into out; 0 or EXIT_USAGE. */
int bench_parse_counts(const char *opt, const char *s, int *out, int max, int *n);
/* Prints the load-balance bound of a U-Net step (model: a diffusers folder, a config.json, or NULL
 * for the built-in SD 1.5 config; conv: the 3x3 convolutions' path, SDB_CONV_*). Returns an exit
 * code. */
int bench_balance(const char *model, const char *list, int size, int conv, int json);
/* Times the U-Net step (or the --only stages) at each thread count of the list. */
int bench_sweep(sdb_model *m, const sdb_bench_opts *opts, const char *list, int json, const sdb_log *log);

#endif
