/*
 * repair.c — rebuilding a batch's state database from the outputs on disk (see repair.h).
 * Owns the read-only handles of the folder's state files while it works and the moving aside of
 * damaged ones; the rows are written through store.h.
 */
#include "sdb/repair.h"
#include "sdb/fsutil.h"
#include "sdb/image.h"
#include "sdb/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* One state file of the folder, opened read-only (s NULL when it could not be). */
typedef struct {
    char *path;
    sdb_store *s;
    int damaged;
    char problem[SDB_ERR_MSG_MAX];
} source;

/* (a): a readable database records this identity with an output that exists with its hash. */
static int done_in_db(source *src, int n, const char *id, const char *identity, char *why, size_t why_n,
                      char **output, char sha[65])
{
    for (int k = 0; k < n; k++) {
        if (!src[k].s) continue;
        sdb_job_row r;
        int found;
        sdb_err e;
        if (sdb_store_get(src[k].s, id, &r, &found, &e) || !found) continue;
        int ok = 0;
        char hex[65];
        if (!strcmp(r.identity, identity) && r.output && r.output_sha256 && sdb_file_exists(r.output) &&
            sdb_sha256_file(r.output, hex, &e) == 0 && !strcmp(hex, r.output_sha256)) {
            ok = 1;
            snprintf(why, why_n, "its output has the SHA-256 recorded in %s", src[k].path);
            *output = strdup(r.output);
            memcpy(sha, hex, 65);
        }
        sdb_job_row_free(&r);
        if (ok) return 1;
    }
    return 0;
}

/* (b): the output PNG carries this job's identity. */
static int done_in_png(const sdb_job_spec *j, const char *model_id, char *why, size_t why_n, char sha[65])
{
    char identity[65];
    sdb_job_output_identity(j, model_id, identity);
    if (!sdb_file_exists(j->output)) { snprintf(why, why_n, "no output %s", j->output); return 0; }
    char **keys = NULL, **vals = NULL;
    int n = 0;
    sdb_err e;
    if (sdb_png_read_text(j->output, &keys, &vals, &n, &e)) {
        snprintf(why, why_n, "output %s is not a readable PNG: %s", j->output, e.msg);
        return 0;
    }
    int ok = 0, tagged = 0;
    for (int i = 0; i < n; i++) {
        if (strcmp(keys[i], SDB_PNG_JOB_KEY)) continue;
        tagged = 1;
        const char *at = strstr(vals[i], "identity=");
        if (at && !strncmp(at + 9, identity, 64) && (at[9 + 64] == '\0' || at[9 + 64] == ' ')) ok = 1;
    }
    sdb_png_text_free(keys, vals, n);
    if (ok && sdb_sha256_file(j->output, sha, &e)) ok = 0;
    if (ok) snprintf(why, why_n, "its output PNG carries this job's identity");
    else if (tagged) snprintf(why, why_n, "output %s was made for another version of the job (identity differs)", j->output);
    else snprintf(why, why_n, "output %s carries no job identity and no readable database records it", j->output);
    return ok;
}

/* Moves path (and its SQLite companions) aside; *moved malloc'd, NULL when it could not. */
static void move_aside(const char *path, char **moved)
{
    *moved = NULL;
    char *to = NULL;
    if (asprintf(&to, "%s.damaged-%lld", path, (long long)time(NULL)) < 0) return;
    if (rename(path, to) != 0) { free(to); return; }
    static const char *const sfx[] = {"-wal", "-shm", "-journal"};
    for (int i = 0; i < 3; i++) {
        char *a = NULL, *b = NULL;
        if (asprintf(&a, "%s%s", path, sfx[i]) >= 0 && asprintf(&b, "%s%s", to, sfx[i]) >= 0) rename(a, b);
        free(a);
        free(b);
    }
    *moved = to;
}

static void sources_close(source *src, int n)
{
    for (int k = 0; k < n; k++) { sdb_store_close(src[k].s); free(src[k].path); }
    free(src);
}

int sdb_repair_manifest(const sdb_manifest *m, const sdb_executor *ex, const sdb_repair_opts *o,
                        sdb_repair_result *res, const sdb_log *log, sdb_err *err)
{
    memset(res, 0, sizeof *res);
    char *state_path = o->state_path ? strdup(o->state_path) : sdb_store_default_path(m->output_dir, 0, 0);
    if (!state_path) return sdb_fail(err, SDB_ENOMEM, "out of memory");
    char *dir = sdb_path_dirname(state_path);
    char **paths = NULL;
    int np = 0, rc = 0;
    if (dir) sdb_store_list(dir, &paths, &np, err);
    free(dir);
    source *src = calloc((size_t)np + 1, sizeof *src);
    int ns = 0, target = -1;
    void *model = NULL;
    sdb_store *st = NULL;
    sdb_store_job *sj = NULL;
    char (*ident)[65] = NULL;
    if (!src) { rc = sdb_fail(err, SDB_ENOMEM, "out of memory"); goto out; }
    for (int k = 0; k <= np; k++) {
        const char *p = k < np ? paths[k] : state_path;
        if (k == np && target >= 0) break;   /* the state file was among the folder's */
        source *x = &src[ns];
        x->path = strdup(p);
        if (!x->path) { rc = sdb_fail(err, SDB_ENOMEM, "out of memory"); goto out; }
        sdb_err e;
        sdb_err_clear(&e);
        int orc = sdb_store_open(&x->s, p, SDB_STORE_READONLY, &e);
        if (!orc) orc = sdb_store_check(x->s, &e);
        if (orc && e.code == SDB_ENOTFOUND) { free(x->path); x->path = NULL; continue; }
        if (orc && strstr(e.msg, "locked")) {
            rc = sdb_fail(err, SDB_ESTATE, "%s; stop the runs that use it before repairing", e.msg);
            ns++;
            goto out;
        }
        if (orc) { x->damaged = 1; snprintf(x->problem, sizeof x->problem, "%s", e.msg); res->damaged++; }
        if (!strcmp(p, state_path)) target = ns;
        ns++;
    }

    /* the identities need the model's id */
    const char *model_id = NULL;
    if ((rc = ex->load(ex->ud, m->model, m->model_config, m->tokenizer, o->threads, o->weights_f16, &model, &model_id, log, err))) {
        sdb_err_prefix(err, "model %s", m->model);
        goto out;
    }
    sj = calloc((size_t)m->n_jobs + 1, sizeof *sj);
    ident = calloc((size_t)m->n_jobs + 1, sizeof *ident);
    if (!sj || !ident) { rc = sdb_fail(err, SDB_ENOMEM, "out of memory"); goto out; }
    for (int i = 0; i < m->n_jobs; i++) {
        sdb_job_identity(&m->jobs[i], model_id, ident[i]);
        sj[i] = (sdb_store_job){m->jobs[i].id, ident[i], m->jobs[i].params_hash, model_id, m->jobs[i].output};
    }

    /* the evidence, read before anything moves */
    char **out_path = calloc((size_t)m->n_jobs + 1, sizeof *out_path);
    char (*sha)[65] = calloc((size_t)m->n_jobs + 1, sizeof *sha);
    char (*why)[768] = calloc((size_t)m->n_jobs + 1, sizeof *why);
    int *how = calloc((size_t)m->n_jobs + 1, sizeof *how);   /* 0 not done, 1 database, 2 PNG */
    if (!out_path || !sha || !why || !how) {
        free(out_path); free(sha); free(why); free(how);
        rc = sdb_fail(err, SDB_ENOMEM, "out of memory");
        goto out;
    }
    for (int i = 0; i < m->n_jobs; i++) {
        const sdb_job_spec *j = &m->jobs[i];
        if (done_in_db(src, ns, j->id, ident[i], why[i], sizeof why[i], &out_path[i], sha[i])) how[i] = 1;
        else if (!j->bad_output && done_in_png(j, model_id, why[i], sizeof why[i], sha[i])) how[i] = 2;
    }

    /* damaged files aside; the state database (re)made */
    for (int k = 0; k < ns; k++) {
        if (!src[k].damaged) continue;
        sdb_store_close(src[k].s);
        src[k].s = NULL;
        char *moved;
        move_aside(src[k].path, &moved);
        if (o->on_file) o->on_file(o->ud, src[k].path, src[k].problem, moved);
        if (k == target && !moved)
            rc = sdb_fail(err, SDB_EIO, "%s is damaged (%s) and cannot be moved aside", src[k].path, src[k].problem);
        free(moved);
        if (rc) break;
    }
    if (!rc) {
        res->rebuilt = target < 0 || src[target].damaged;
        if (target >= 0) { sdb_store_close(src[target].s); src[target].s = NULL; }
        rc = sdb_store_open(&st, state_path, SDB_STORE_RW, err);
    }
    sdb_worker me;
    sdb_worker_self(&me);
    if (!rc) rc = sdb_store_sync(st, sj, m->n_jobs, &me, NULL, err);
    if (!rc) rc = sdb_store_set_meta(st, "manifest", m->path, err);
    res->total = m->n_jobs;
    for (int i = 0; i < m->n_jobs && !rc; i++) {
        const sdb_job_spec *j = &m->jobs[i];
        if (!how[i]) {
            res->pending++;
            if (o->on_job) o->on_job(o->ud, j->id, 0, why[i]);
            continue;
        }
        if (how[i] == 1) res->done_db++; else res->done_png++;
        sdb_job_row r;
        int found;
        int already = 0;
        if (sdb_store_get(st, j->id, &r, &found, err) == 0 && found) {
            already = r.state == SDB_JOB_DONE && r.output_sha256 && !strcmp(r.output_sha256, sha[i]);
            sdb_job_row_free(&r);
        }
        if (already) res->already++;
        else rc = sdb_store_mark_repaired(st, j->id, ident[i], out_path[i] ? out_path[i] : j->output, sha[i], why[i], err);
        if (!rc && o->on_job) o->on_job(o->ud, j->id, 1, why[i]);
    }
    for (int i = 0; i < m->n_jobs; i++) free(out_path[i]);
    free(out_path); free(sha); free(why); free(how);
out:
    if (model) ex->unload(ex->ud, model);
    sdb_store_close(st);
    if (src) sources_close(src, ns);
    sdb_store_list_free(paths, np);
    free(sj);
    free(ident);
    free(state_path);
    return rc;
}
