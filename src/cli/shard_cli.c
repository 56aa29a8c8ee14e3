/*
 * shard_cli.c — `sdbatch run --shard` set-up and `sdbatch status --shards` (see shard_cli.h; the
 * assignment scheme is documented in sdb/shard.h).
 */
#include "shard_cli.h"
#include "cli.h"
#include "sdb/fsutil.h"
#include "sdb/shard.h"
#include "sdb/threads.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int cli_shard_setup(const sdb_manifest *m, const char *arg, sdb_run_opts *o, unsigned char **mask)
{
    *mask = NULL;
    sdb_err err;
    sdb_err_clear(&err);
    int idx = 0, n = 0;
    const char *a = arg ? arg : "auto";
    if (sdb_shard_parse(a, &idx, &n, &err)) return cli_usage_error("run", "%s", err.msg);
    /* threads: --threads, else SLURM_CPUS_PER_TASK, else OMP_NUM_THREADS (OpenMP reads it), else
       the affinity mask; applied here (the pool is process-wide) */
    if (!o->threads && (getenv("SLURM_CPUS_PER_TASK") || !getenv("OMP_NUM_THREADS"))) o->threads = sdb_shard_default_threads();
    if (o->threads > 0) sdb_threads_set(o->threads);
    if (n <= 0) return EXIT_OK;   /* not sharded */
    int *of = malloc(sizeof *of * (size_t)(m->n_jobs ? m->n_jobs : 1));
    int64_t *cost = malloc(sizeof *cost * (size_t)(m->n_jobs ? m->n_jobs : 1));
    unsigned char *mk = calloc((size_t)(m->n_jobs ? m->n_jobs : 1), 1);
    if (!of || !cost || !mk || sdb_shard_assign(m, n, of, cost, &err)) {
        free(of); free(cost); free(mk);
        fprintf(stderr, "sdbatch run: error: %s\n", err.msg[0] ? err.msg : "out of memory");
        return EXIT_FAILURE_RUN;
    }
    int mine = 0;
    double c_all = 0, c_mine = 0;
    for (int i = 0; i < m->n_jobs; i++) {
        c_all += (double)cost[i];
        if (of[i] == idx) { mk[i] = 1; mine++; c_mine += (double)cost[i]; }
    }
    o->shard = idx;
    o->n_shards = n;
    o->job_mask = mk;
    *mask = mk;
    const char *tid = getenv("SLURM_ARRAY_TASK_ID"), *rs = getenv("SLURM_RESTART_COUNT");
    fprintf(stderr, "sdbatch run: shard %d/%d: %d of %d job(s), %.1f%% of the expected cost; %d thread(s)",
            idx, n, mine, m->n_jobs, c_all > 0 ? 100.0 * c_mine / c_all : 0.0, sdb_threads_get());
    if (!arg && tid) fprintf(stderr, " (Slurm array task %s%s%s)", tid, rs ? ", restart " : "", rs ? rs : "");
    fputc('\n', stderr);
    free(of);
    free(cost);
    return EXIT_OK;
}

/* ---- status --shards ------------------------------------------------------------------------- */

/* One state database as `status` read it: its path and its rows (sorted by id). */
typedef struct cli_shard_db { const char *path; const sdb_job_row *rows; int n; } cli_shard_db;

static int shard_of_path(const char *path, int *i, int *n)
{
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    char tail[8];
    return sscanf(b, "state.%d-of-%d.d%1[b]", i, n, tail) == 3 && *n > 0 && *i >= 0 && *i < *n;
}

typedef struct {
    int jobs, done, failed, running, pending;
    double cost, cost_done;
    int db;            /* index into dbs, -1 = no state file */
    int live;          /* its own file has a row running under a live owner */
    double last;       /* latest updated_at in its file */
    const char *verdict;
    int straggler;
} shard_row;

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void fmt_ago(double s, char *buf, size_t n)
{
    if (!isfinite(s) || s < 0) { snprintf(buf, n, "-"); return; }
    long v = (long)(s + 0.5);
    if (v >= 86400) snprintf(buf, n, "%ldd%02ldh ago", v / 86400, (v % 86400) / 3600);
    else if (v >= 3600) snprintf(buf, n, "%ldh%02ldm ago", v / 3600, (v % 3600) / 60);
    else if (v >= 60) snprintf(buf, n, "%ldm%02lds ago", v / 60, v % 60);
    else snprintf(buf, n, "%lds ago", v);
}

/* One shard set (N shards). */
static void one_set(const sdb_manifest *m, const char *manifest_arg, const sdb_job_state *js, const cli_shard_db *dbs,
                    int n_dbs, int N, json_t *jarr, json_t *junf, FILE *f)
{
    int *of = malloc(sizeof *of * (size_t)(m->n_jobs ? m->n_jobs : 1));
    int64_t *cost = malloc(sizeof *cost * (size_t)(m->n_jobs ? m->n_jobs : 1));
    shard_row *sr = calloc((size_t)N, sizeof *sr);
    double *fr = malloc(sizeof *fr * (size_t)N);
    sdb_err err;
    if (!of || !cost || !sr || !fr || sdb_shard_assign(m, N, of, cost, &err)) goto out;
    sdb_worker me;
    sdb_worker_self(&me);
    double now = sdb_now_wall();
    for (int s = 0; s < N; s++) sr[s].db = -1;
    for (int d = 0; d < n_dbs; d++) {
        int i, n;
        if (!shard_of_path(dbs[d].path, &i, &n) || n != N) continue;
        sr[i].db = d;
        for (int k = 0; k < dbs[d].n; k++) {
            const sdb_job_row *r = &dbs[d].rows[k];
            if (r->updated_at > sr[i].last) sr[i].last = r->updated_at;
            if (r->state == SDB_JOB_RUNNING && sdb_store_owner_alive(r, &me, now)) sr[i].live = 1;
        }
    }
    for (int j = 0; j < m->n_jobs; j++) {
        shard_row *x = &sr[of[j]];
        x->jobs++;
        x->cost += (double)cost[j];
        switch (js[j]) {
        case SDB_JOB_DONE: x->done++; x->cost_done += (double)cost[j]; break;
        case SDB_JOB_FAILED: x->failed++; break;
        case SDB_JOB_RUNNING: x->running++; break;
        default: x->pending++; break;
        }
    }
    int n_complete = 0;
    for (int s = 0; s < N; s++) {
        shard_row *x = &sr[s];
        fr[s] = x->cost > 0 ? x->cost_done / x->cost : 1.0;
        if (x->done == x->jobs) { x->verdict = "complete"; n_complete++; }
        else if (!x->pending && !x->running) x->verdict = "failed";
        else if (x->live) x->verdict = "running";
        else if (x->db >= 0) x->verdict = "stopped";
        else x->verdict = "not started";
    }
    qsort(fr, (size_t)N, sizeof *fr, cmp_double);
    double median = N % 2 ? fr[N / 2] : (fr[N / 2 - 1] + fr[N / 2]) / 2;
    /* a straggler: unfinished while the median shard is finished, or 25 points of its expected
       cost behind the median */
    for (int s = 0; s < N; s++) {
        shard_row *x = &sr[s];
        double frac = x->cost > 0 ? x->cost_done / x->cost : 1.0;
        int unfinished = x->pending || x->running;
        x->straggler = unfinished && N > 1 && (median >= 1.0 || frac + 0.25 < median);
    }
    /* the shards to resubmit: unfinished and not running (stopped / not started), and failed ones */
    char *list = NULL;
    size_t ll = 0;
    FILE *lf = open_memstream(&list, &ll);
    int n_unf = 0;
    for (int s = 0; s < N; s++) {
        const char *v = sr[s].verdict;
        if (!strcmp(v, "stopped") || !strcmp(v, "not started") || !strcmp(v, "failed")) {
            if (lf) fprintf(lf, "%s%d", n_unf ? "," : "", s);
            n_unf++;
            if (junf) json_array_append_new(junf, json_pack("{s:i,s:i,s:s}", "shard", s, "of", N, "state", v));
        }
    }
    if (lf) fclose(lf);

    if (jarr) {
        for (int s = 0; s < N; s++) {
            shard_row *x = &sr[s];
            json_t *o = json_object();
            json_object_set_new(o, "shard", json_integer(s));
            json_object_set_new(o, "of", json_integer(N));
            json_object_set_new(o, "state", json_string(x->verdict));
            json_object_set_new(o, "jobs", json_integer(x->jobs));
            json_object_set_new(o, "done", json_integer(x->done));
            json_object_set_new(o, "failed", json_integer(x->failed));
            json_object_set_new(o, "running", json_integer(x->running));
            json_object_set_new(o, "pending", json_integer(x->pending));
            json_object_set_new(o, "percent_done", json_real(x->jobs ? 100.0 * x->done / x->jobs : 100.0));
            json_object_set_new(o, "cost_share", json_real(0));
            json_object_set_new(o, "straggler", json_boolean(x->straggler));
            json_object_set_new(o, "state_file", x->db >= 0 ? json_string(dbs[x->db].path) : json_null());
            json_object_set_new(o, "last_update", x->last > 0 ? json_real(x->last) : json_null());
            json_array_append_new(jarr, o);
        }
        /* each shard's share of the set's expected cost */
        double tot = 0;
        for (int s = 0; s < N; s++) tot += sr[s].cost;
        size_t base = json_array_size(jarr) - (size_t)N;
        for (int s = 0; s < N; s++)
            json_object_set_new(json_array_get(jarr, base + (size_t)s), "cost_share", json_real(tot > 0 ? sr[s].cost / tot : 0));
    } else {
        fprintf(f, "  shards: %d of %d complete (state.<I>-of-%d.db)\n", n_complete, N, N);
        fprintf(f, "    %-9s %5s %5s %6s %7s %7s  %-12s %s\n", "shard", "jobs", "done", "failed", "running", "pending", "state", "last update");
        for (int s = 0; s < N; s++) {
            shard_row *x = &sr[s];
            char nm[32], ago[32];
            snprintf(nm, sizeof nm, "%d/%d", s, N);
            fmt_ago(x->last > 0 ? now - x->last : NAN, ago, sizeof ago);
            fprintf(f, "    %-9s %5d %5d %6d %7d %7d  %-12s %s%s\n", nm, x->jobs, x->done, x->failed, x->running, x->pending,
                    x->verdict, ago, x->straggler ? "  STRAGGLER" : "");
        }
        int ns = 0;
        for (int s = 0; s < N; s++) ns += sr[s].straggler;
        if (ns) {
            fprintf(f, "  stragglers:");
            for (int s = 0; s < N; s++)
                if (sr[s].straggler) fprintf(f, " %d/%d (%.0f%% of its cost done)", s, N, sr[s].cost > 0 ? 100.0 * sr[s].cost_done / sr[s].cost : 100.0);
            fprintf(f, "; the median shard has %.0f%%\n", 100.0 * median);
        }
        if (n_unf && list) {
            fprintf(f, "  not running and unfinished: %s (stopped = its task ended or waits to be requeued; "
                       "failed = only failed jobs left, see --jobs)\n", list);
            fprintf(f, "  resubmit them: sbatch --array=%s --export=ALL,SDB_SHARDS=%d tools/slurm/sdbatch-array.sbatch %s\n",
                    list, N, manifest_arg);
        }
    }
    free(list);
out:
    free(of);
    free(cost);
    free(sr);
    free(fr);
}

void cli_status_shards(const sdb_manifest *m, const char *manifest_arg, const sdb_job_state *job_state,
                       sdb_store *const *stores, sdb_job_row *const *rows, const int *nrows, int ns_, int force_n,
                       json_t *json, FILE *f)
{
    cli_shard_db *dbs = malloc(sizeof *dbs * (size_t)(ns_ ? ns_ : 1));
    if (!dbs) return;
    int n_dbs = ns_;
    for (int s = 0; s < ns_; s++) { dbs[s].path = sdb_store_path(stores[s]); dbs[s].rows = rows[s]; dbs[s].n = nrows[s]; }
    /* the shard sets: every N among the file names, most recently written first */
    int ns = 0, sets[64];
    double latest[64];
    for (int d = 0; d < n_dbs; d++) {
        int i, n;
        if (!shard_of_path(dbs[d].path, &i, &n)) continue;
        double last = 0;
        for (int k = 0; k < dbs[d].n; k++) if (dbs[d].rows[k].updated_at > last) last = dbs[d].rows[k].updated_at;
        int at = -1;
        for (int s = 0; s < ns; s++) if (sets[s] == n) at = s;
        if (at < 0 && ns < 64) { at = ns++; sets[at] = n; latest[at] = 0; }
        if (at >= 0 && last > latest[at]) latest[at] = last;
    }
    if (force_n > 0) {
        int have = 0;
        for (int s = 0; s < ns; s++) if (sets[s] == force_n) have = 1;
        if (!have && ns < 64) { sets[ns] = force_n; latest[ns] = 1e300; ns++; }
    }
    for (int a = 0; a < ns; a++)
        for (int b = a + 1; b < ns; b++)
            if (latest[b] > latest[a]) {
                double t = latest[a]; latest[a] = latest[b]; latest[b] = t;
                int u = sets[a]; sets[a] = sets[b]; sets[b] = u;
            }
    json_t *jarr = NULL, *junf = NULL;
    if (json) {
        jarr = json_array();
        junf = json_array();
    } else if (!ns) {
        fprintf(f, "  shards: none (no state.<I>-of-<N>.db yet; `status --shards=N` shows how N shards would split it)\n");
    }
    for (int s = 0; s < ns; s++) {
        if (!json && ns > 1)
            fprintf(f, "  %s shard set: %d shards\n", s == 0 ? "latest" : "older", sets[s]);
        one_set(m, manifest_arg, job_state, dbs, n_dbs, sets[s], jarr, junf, f);
    }
    if (json) {
        json_object_set_new(json, "shards", jarr);
        json_object_set_new(json, "shards_to_resubmit", junf);
    }
    free(dbs);
}
