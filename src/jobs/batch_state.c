/*
 * batch_state.c — a manifest's jobs merged over every state database of its folder (see
 * batch_state.h). Owns: the sdb_batch_state (paths, open stores, their rows, the per-job views).
 */
#include "sdb/batch_state.h"

#include "sdb/fsutil.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int rank(sdb_job_state s) { return s == SDB_JOB_DONE ? 3 : s == SDB_JOB_RUNNING ? 2 : s == SDB_JOB_FAILED ? 1 : 0; }

/* One note (see batch_state.h); `damaged` counts the file as damaged. Out of memory: dropped. */
static void note(sdb_batch_state *bs, int damaged, const char *fmt, ...)
{
    bs->damaged += damaged;
    char **grown = realloc(bs->notes, (size_t)(bs->n_notes + 1) * sizeof *grown);
    if (!grown) return;
    bs->notes = grown;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&bs->notes[bs->n_notes], fmt, ap) >= 0) bs->n_notes++;
    va_end(ap);
}

static int cmp_row_id(const void *a, const void *b)
{
    return strcmp(((const sdb_job_row *)a)->id, ((const sdb_job_row *)b)->id);
}

/* A damaged database whose table scan fails may still answer for single rows (the damage is in
 * some pages): each job of the manifest is asked for by id, what answers is kept (sorted by id,
 * as sdb_store_rows gives them). Nonzero when nothing could be read. */
static int read_rows_one_by_one(sdb_store *s, const sdb_manifest *m, sdb_job_row **rows, int *n)
{
    *rows = calloc((size_t)(m->n_jobs > 0 ? m->n_jobs : 1), sizeof **rows);
    *n = 0;
    if (!*rows) return -1;
    for (int i = 0; i < m->n_jobs; i++) {
        int found;
        sdb_err e;
        if (sdb_store_get(s, m->jobs[i].id, &(*rows)[*n], &found, &e) == 0 && found) (*n)++;
    }
    if (!*n) { free(*rows); *rows = NULL; return -1; }
    qsort(*rows, (size_t)*n, sizeof **rows, cmp_row_id);
    return 0;
}

int sdb_batch_state_read(sdb_batch_state *bs, const sdb_manifest *m, const char *state_path, sdb_err *err)
{
    memset(bs, 0, sizeof *bs);
    if (state_path) {
        bs->paths = malloc(sizeof *bs->paths);
        if (!bs->paths || !(bs->paths[0] = strdup(state_path))) return sdb_fail(err, SDB_ENOMEM, "out of memory");
        bs->np = 1;
    } else {
        char *db = sdb_store_default_path(m->output_dir, 0, 0);
        char *dir = db ? sdb_path_dirname(db) : NULL;
        sdb_err e2;
        sdb_err_clear(&e2);
        if (dir) sdb_store_list(dir, &bs->paths, &bs->np, &e2); /* no folder yet: nothing has run */
        free(db);
        free(dir);
    }
    size_t cap = (size_t)(bs->np > 0 ? bs->np : 1);
    bs->stores = calloc(cap, sizeof *bs->stores);
    bs->rows = calloc(cap, sizeof *bs->rows);
    bs->nrows = calloc(cap, sizeof *bs->nrows);
    bs->jobs = calloc((size_t)(m->n_jobs > 0 ? m->n_jobs : 1), sizeof *bs->jobs);
    if (!bs->stores || !bs->rows || !bs->nrows || !bs->jobs) return sdb_fail(err, SDB_ENOMEM, "out of memory");
    for (int i = 0; i < bs->np; i++) {
        sdb_store *s;
        sdb_err e;
        sdb_err_clear(&e);
        /* a damaged or unreadable file: noted, and the rest is still read */
        if (sdb_store_open(&s, bs->paths[i], SDB_STORE_READONLY, &e)) {
            if (state_path || e.code != SDB_ENOTFOUND) note(bs, 1, "error: %s", e.msg);
            continue;
        }
        if (sdb_store_check(s, &e)) note(bs, 1, "error: %s", e.msg);   /* damaged: read all the same */
        if (sdb_store_rows(s, &bs->rows[bs->ns], &bs->nrows[bs->ns], &e)) {
            note(bs, 1, "error: %s", e.msg);
            if (read_rows_one_by_one(s, m, &bs->rows[bs->ns], &bs->nrows[bs->ns])) { sdb_store_close(s); continue; }
            note(bs, 0, "%d job(s) could still be read from %s one by one", bs->nrows[bs->ns], bs->paths[i]);
        }
        if (sdb_store_degraded(s))
            note(bs, 1, "warning: %s: its -wal/-shm files cannot be used (a read-only folder, or a -wal from another "
                        "SQLite version): read without them, the latest changes may be missing", bs->paths[i]);
        bs->stores[bs->ns++] = s;
    }
    sdb_err_clear(err);
    sdb_worker me;
    sdb_worker_self(&me);
    double now = sdb_now_wall();
    bs->n_jobs = m->n_jobs;
    for (int i = 0; i < m->n_jobs; i++) {
        const sdb_job_spec *j = &m->jobs[i];
        sdb_job_view *x = &bs->jobs[i];
        x->state = SDB_JOB_PENDING;
        x->output = j->output;
        x->seconds = NAN;
        for (int s = 0; s < bs->ns; s++) {
            int lo = 0, hi = bs->nrows[s] - 1, at = -1; /* rows are sorted by id */
            while (lo <= hi) {
                int mid = (lo + hi) / 2, c = strcmp(bs->rows[s][mid].id, j->id);
                if (!c) { at = mid; break; }
                if (c < 0) lo = mid + 1; else hi = mid - 1;
            }
            if (at < 0) continue;
            const sdb_job_row *r = &bs->rows[s][at];
            if (strcmp(r->params_hash, j->params_hash)) continue; /* edited since: pending */
            sdb_job_state st = r->state;
            int stale = 0;
            if (st == SDB_JOB_RUNNING && !sdb_store_owner_alive(r, &me, now)) { st = SDB_JOB_PENDING; stale = 1; }
            if (rank(st) > rank(x->state) || (rank(st) == rank(x->state) && r->attempts > x->attempts)) {
                x->state = st;
                x->stale = stale;
                x->attempts = r->attempts;
                x->error = r->state == SDB_JOB_FAILED ? r->error : NULL;
                x->seconds = r->state == SDB_JOB_DONE || r->state == SDB_JOB_FAILED ? r->seconds : NAN;
                x->started = r->started_at;
                x->finished = r->finished_at;
                x->file = bs->paths[s];
                if (r->output) x->output = r->output;
            }
        }
        bs->counts[x->state]++;
    }
    return 0;
}

void sdb_batch_state_free(sdb_batch_state *bs)
{
    for (int s = 0; s < bs->ns; s++) { sdb_job_rows_free(bs->rows[s], bs->nrows[s]); sdb_store_close(bs->stores[s]); }
    free(bs->rows);
    free(bs->nrows);
    free(bs->stores);
    free(bs->jobs);
    for (int i = 0; i < bs->n_notes; i++) free(bs->notes[i]);
    free(bs->notes);
    sdb_store_list_free(bs->paths, bs->np);
    memset(bs, 0, sizeof *bs);
}
