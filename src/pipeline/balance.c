/*
 * balance.c — a U-Net step's load-balance bound from its shapes (see balance.h): builds the U-Net
 * on recording weights, records its forward's plan, and folds the ops into rows and totals. Owns
 * the built-in SD 1.5 inpainting U-Net config (the numbers of the published unet/config.json).
 */
#include "sdb/balance.h"
#include "sdb/arena.h"
#include "sdb/config.h"
#include "sdb/fsutil.h"
#include "sdb/unet.h"
#include "sdb/weights.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char SD15_INPAINT_UNET[] =
    "{\"act_fn\": \"silu\", \"attention_head_dim\": 8, \"block_out_channels\": [320, 640, 1280, 1280],"
    " \"cross_attention_dim\": 768, \"down_block_types\": [\"CrossAttnDownBlock2D\", \"CrossAttnDownBlock2D\","
    " \"CrossAttnDownBlock2D\", \"DownBlock2D\"], \"flip_sin_to_cos\": true, \"freq_shift\": 0,"
    " \"in_channels\": 9, \"layers_per_block\": 2, \"mid_block_type\": \"UNetMidBlock2DCrossAttn\","
    " \"norm_eps\": 1e-05, \"norm_num_groups\": 32, \"out_channels\": 4, \"sample_size\": 64,"
    " \"up_block_types\": [\"UpBlock2D\", \"CrossAttnUpBlock2D\", \"CrossAttnUpBlock2D\", \"CrossAttnUpBlock2D\"],"
    " \"use_linear_projection\": false}";

static int load_config(const char *model, sdb_config *cfg, char *used, size_t usedsz, sdb_err *err)
{
    if (!model) {
        snprintf(used, usedsz, "built-in SD 1.5 inpainting");
        return sdb_config_parse(cfg, SD15_INPAINT_UNET, "built-in SD 1.5 inpainting unet config", err);
    }
    if (sdb_is_dir(model)) {
        char *p = sdb_path_join(model, "unet/config.json");
        if (!p) return sdb_fail(err, SDB_ENOMEM, "out of memory");
        snprintf(used, usedsz, "%s", p);
        int rc = sdb_config_load(cfg, p, err);
        free(p);
        return rc;
    }
    snprintf(used, usedsz, "%s", model);
    return sdb_config_load(cfg, model, err);
}

/* Folds the recorded ops into rows (by label) and totals. */
static int fold(const sdb_par_rec *rec, sdb_balance *b)
{
    double ideal[SDB_BALANCE_MAX_T] = {0}, span[SDB_BALANCE_MAX_T] = {0};
    double kspan[SDB_PAR_KINDS][SDB_BALANCE_MAX_T] = {{0}};
    /* per row: ideal and span sums, kept in bound[] as spans and turned into bounds at the end */
    double *rspan = calloc((size_t)rec->nops * SDB_BALANCE_MAX_T, sizeof *rspan);
    b->rows = calloc((size_t)rec->nops, sizeof *b->rows);
    if (!rspan || !b->rows) { free(rspan); return SDB_ENOMEM; }
    for (int i = 0; i < rec->nops; i++) {
        const sdb_par_op *op = &rec->ops[i];
        int r = 0;
        while (r < b->nrows && strcmp(b->rows[r].label, op->label)) r++;
        sdb_balance_row *row = &b->rows[r];
        if (r == b->nrows) {
            b->nrows++;
            snprintf(row->label, sizeof row->label, "%s", op->label);
            row->kind = op->kind;
            for (int l = 0; l < op->nloops; l++) row->units += rec->loops[op->first + l].n;
        }
        row->count++;
        for (int l = 0; l < op->nloops; l++) {
            const sdb_par_loop *lp = &rec->loops[op->first + l];
            const double w = sdb_par_loop_work(lp);
            row->work += w;
            b->work += w;
            b->kind_work[op->kind] += w;
            for (int t = 0; t < b->nt; t++) {
                const double s = sdb_par_loop_span(lp, b->threads[t]);
                rspan[(size_t)r * SDB_BALANCE_MAX_T + t] += s;
                span[t] += s;
                kspan[op->kind][t] += s;
                ideal[t] += w / b->threads[t];
            }
        }
    }
    for (int t = 0; t < b->nt; t++) {
        const int T = b->threads[t];
        b->step_bound[t] = span[t] > 0 ? ideal[t] / span[t] : 1.0;
        for (int k = 0; k < SDB_PAR_KINDS; k++)
            b->kind_bound[k][t] = kspan[k][t] > 0 ? b->kind_work[k] / T / kspan[k][t] : 1.0;
        for (int r = 0; r < b->nrows; r++) {
            const double s = rspan[(size_t)r * SDB_BALANCE_MAX_T + t];
            b->rows[r].bound[t] = s > 0 ? b->rows[r].work / T / s : 1.0;
        }
    }
    free(rspan);
    return 0;
}

int sdb_balance_unet(const char *model, int size, int conv, const int *threads, int nt, sdb_balance *out,
                     sdb_err *err)
{
    memset(out, 0, sizeof *out);
    if (size < 8 || size % 8) return sdb_fail(err, SDB_EINVAL, "balance: size %d is not a positive multiple of 8", size);
    if (nt < 1 || nt > SDB_BALANCE_MAX_T)
        return sdb_fail(err, SDB_EINVAL, "balance: 1 to %d thread counts, got %d", SDB_BALANCE_MAX_T, nt);
    for (int t = 0; t < nt; t++) {
        if (threads[t] < 1 || threads[t] > 4096)
            return sdb_fail(err, SDB_EINVAL, "balance: thread count %d out of range 1..4096", threads[t]);
        out->threads[t] = threads[t];
    }
    out->nt = nt;
    out->size = size;
    out->latent = size / 8;
    out->batch = 2;
    out->conv = conv;
    sdb_config cfg;
    int rc = load_config(model, &cfg, out->config, sizeof out->config, err);
    if (rc) return rc;
    sdb_weights w;
    sdb_weights_init_recorder(&w, "unet");
    sdb_unet *u = NULL;
    rc = sdb_unet_load_config(&u, &cfg, &w, err);
    sdb_config_free(&cfg);
    sdb_arena arena = {0};
    sdb_par_rec rec;
    sdb_par_rec_init(&rec);
    if (!rc) sdb_unet_set_conv(u, conv);
    if (!rc) rc = sdb_arena_init(&arena, 0, err);
    if (!rc) rc = sdb_unet_plan(u, out->batch, out->latent, out->latent, 77, &rec, &arena, err);
    if (!rc && fold(&rec, out)) rc = sdb_fail(err, SDB_ENOMEM, "out of memory");
    sdb_par_rec_free(&rec);
    if (arena.base) sdb_arena_free(&arena);
    sdb_unet_free(u);
    sdb_weights_free(&w);
    if (rc) sdb_balance_free(out);
    return rc;
}

void sdb_balance_free(sdb_balance *b)
{
    free(b->rows);
    b->rows = NULL;
    b->nrows = 0;
}
