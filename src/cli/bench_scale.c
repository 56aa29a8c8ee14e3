/*
 * bench_scale.c — the scaling parts of `sdbatch bench`: --balance LIST (the schedule's
 * load-balance bound from the shapes alone, balance.h) and --threads LIST (a timed sweep of the
 * U-Net step over thread counts). Kept apart from cmd_bench.c's single-count benchmark.
 */
#include "bench_scale.h"

#include "sdb/balance.h"
#include "sdb/bench.h"
#include "sdb/ops/winograd.h"
#include "sdb/threads.h"

#include <jansson.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int bench_parse_counts(const char *opt, const char *s, int *out, int max, int *n)
{
    char buf[512];
    snprintf(buf, sizeof buf, "%s", s);
    *n = 0;
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        long long v;
        if (*n == max) return cli_usage_error("bench", "%s takes at most %d thread counts", opt, max);
        if (cli_parse_int("bench", opt, tok, 1, 4096, &v)) return EXIT_USAGE;
        out[(*n)++] = (int)v;
    }
    if (!*n) return cli_usage_error("bench", "%s needs a comma list of thread counts, e.g. 16,32,64", opt);
    return 0;
}

int bench_balance(const char *model, const char *list, int size, int conv, int json)
{
    int threads[SDB_BALANCE_MAX_T], nt;
    int rc = bench_parse_counts("--balance", list, threads, SDB_BALANCE_MAX_T, &nt);
    if (rc) return rc;
    sdb_err err = {0};
    sdb_balance b;
    if (sdb_balance_unet(model, size, conv, threads, nt, &b, &err)) return cli_error("bench", &err);
    char key[16];
    if (json) {
        json_t *j = json_object(), *bal = json_object(), *kinds = json_object(), *ops = json_array();
        for (int t = 0; t < nt; t++) {
            snprintf(key, sizeof key, "%d", threads[t]);
            json_object_set_new(bal, key, json_real(b.step_bound[t]));
        }
        for (int k = 0; k < SDB_PAR_KINDS; k++) {
            if (b.kind_work[k] <= 0) continue;
            json_t *kb = json_object();
            for (int t = 0; t < nt; t++) {
                snprintf(key, sizeof key, "%d", threads[t]);
                json_object_set_new(kb, key, json_real(b.kind_bound[k][t]));
            }
            json_object_set_new(kinds, sdb_par_kind_name(k),
                                json_pack("{s:f, s:o}", "share", b.kind_work[k] / b.work, "balance", kb));
        }
        for (int r = 0; r < b.nrows; r++) {
            const sdb_balance_row *row = &b.rows[r];
            json_t *rb = json_object();
            for (int t = 0; t < nt; t++) {
                snprintf(key, sizeof key, "%d", threads[t]);
                json_object_set_new(rb, key, json_real(row->bound[t]));
            }
            json_array_append_new(ops, json_pack("{s:s, s:s, s:i, s:I, s:f, s:o}", "op", row->label, "kind",
                                                 sdb_par_kind_name(row->kind), "count", row->count, "units",
                                                 (json_int_t)row->units, "share", row->work / b.work, "balance", rb));
        }
        json_object_set_new(j, "size", json_integer(b.size));
        json_object_set_new(j, "latent", json_integer(b.latent));
        json_object_set_new(j, "batch", json_integer(b.batch));
        json_object_set_new(j, "config", json_string(b.config));
        json_object_set_new(j, "conv", json_string(sdb_conv_algo_name(b.conv)));
        json_object_set_new(j, "flop_per_byte", json_real(SDB_PAR_FLOP_PER_BYTE));
        json_object_set_new(j, "balance", bal);
        json_object_set_new(j, "kinds", kinds);
        json_object_set_new(j, "ops", ops);
        rc = json_dumpf(j, stdout, JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6)) == 0 ? 0 : 1;
        printf("\n");
        json_decref(j);
        sdb_balance_free(&b);
        return rc;
    }
    printf("sdbatch bench --balance: one U-Net step at batch 2, %dx%d (latents %dx%d), --conv %s, U-Net config: %s\n",
           b.size, b.size, b.latent, b.latent, sdb_conv_algo_name(b.conv), b.config);
    printf("load-balance bound = ideal time / makespan under each loop's schedule, units costing their\n"
           "FLOPs (memory passes: bytes x %.0f); computed from the shapes by the kernels' own partitions\n\n",
           SDB_PAR_FLOP_PER_BYTE);
    printf("  %-46s %5s %7s %6s", "op", "runs", "units", "share");
    for (int t = 0; t < nt; t++) printf(" %5dT", threads[t]);
    printf("\n");
    for (int r = 0; r < b.nrows; r++) {
        const sdb_balance_row *row = &b.rows[r];
        printf("  %-46s %5d %7ld %5.1f%%", row->label, row->count, row->units, 100 * row->work / b.work);
        for (int t = 0; t < nt; t++) printf(" %6.3f", row->bound[t]);
        printf("\n");
    }
    printf("\n  by kind:\n");
    for (int k = 0; k < SDB_PAR_KINDS; k++) {
        if (b.kind_work[k] <= 0) continue;
        printf("  %-46s %5s %7s %5.1f%%", sdb_par_kind_name(k), "", "", 100 * b.kind_work[k] / b.work);
        for (int t = 0; t < nt; t++) printf(" %6.3f", b.kind_bound[k][t]);
        printf("\n");
    }
    printf("\n  %-46s %5s %7s %6s", "whole step", "", "", "");
    for (int t = 0; t < nt; t++) printf(" %6.3f", b.step_bound[t]);
    printf("\n");
    sdb_balance_free(&b);
    return 0;
}

int bench_sweep(sdb_model *m, const sdb_bench_opts *opts, const char *list, int json, const sdb_log *log)
{
    int threads[64], nt;
    int rc = bench_parse_counts("--threads", list, threads, 64, &nt);
    if (rc) return rc;
    sdb_bench_opts o = *opts;
    if (o.stages == SDB_BENCH_ALL) o.stages = SDB_BENCH_UNET; /* the sweep times the step unless --only says */
    o.profile = 0;
    double step[64] = {0}, sgemm[64] = {0}, gflop = 0;
    for (int t = 0; t < nt; t++) {
        sdb_threads_set(threads[t]);
        sdb_err err = {0};
        sdb_bench_result r;
        if (sdb_bench_run(m, &o, &r, log, &err)) return cli_error("bench", &err);
        step[t] = r.unet_step_s;
        sgemm[t] = r.unet_sgemm_gflops > 0 ? r.unet_sgemm_gflops : r.sgemm_gflops;
        gflop = r.unet_gflop;
        if (!json)
            printf("%s", t ? "" : "threads   U-Net step s   GFLOP/s   its sgemm GFLOP/s   ratio   parallel efficiency\n");
        if (!json) {
            const double eff = step[t] > 0 ? step[0] * threads[0] / (step[t] * threads[t]) : 0;
            printf("%7d   %12.3f   %7.1f   %17.1f   %4.0f%%   %5.0f%%\n", threads[t], step[t],
                   step[t] > 0 ? gflop / step[t] : 0, sgemm[t],
                   step[t] > 0 && sgemm[t] > 0 ? 100 * gflop / step[t] / sgemm[t] : 0, 100 * eff);
            fflush(stdout);
        }
    }
    if (json) {
        json_t *j = json_object(), *rows = json_array();
        for (int t = 0; t < nt; t++) {
            const double eff = step[t] > 0 ? step[0] * threads[0] / (step[t] * threads[t]) : 0;
            json_array_append_new(rows, json_pack("{s:i, s:f, s:f, s:f, s:f, s:f}", "threads", threads[t],
                                                  "unet_step_s", step[t], "unet_gflops", step[t] > 0 ? gflop / step[t] : 0.0,
                                                  "sgemm_gflops", sgemm[t], "sgemm_ratio",
                                                  step[t] > 0 && sgemm[t] > 0 ? gflop / step[t] / sgemm[t] : 0.0,
                                                  "parallel_efficiency", eff));
        }
        json_object_set_new(j, "size", json_integer(o.size));
        json_object_set_new(j, "unet_gflop", json_real(gflop));
        json_object_set_new(j, "sweep", rows);
        rc = json_dumpf(j, stdout, JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(8)) == 0 ? 0 : 1;
        printf("\n");
        json_decref(j);
    }
    return rc;
}
