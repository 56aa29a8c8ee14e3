/*
 * cmd_status.c — `sdbatch status MANIFEST`: where a batch stands, from every state database of
 * its output folder (state.db and the shards' state.<I>-of-<N>.db) read together, read-only.
 * --json follows schemas/status.schema.json.
 */
#include "cli.h"
#include "sdb/batch_state.h"
#include "sdb/daemon.h"
#include "sdb/fsutil.h"
#include "sdb/manifest.h"
#include "sdb/store.h"
#include "shard_cli.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
    fprintf(f,
        "usage: sdbatch status MANIFEST [--state PATH] [--jobs] [--shards[=N]] [--json]\n"
        "       sdbatch status --spool DIR [--json]\n\n"
        "Shows how far a batch is: jobs per state, percent done, throughput, ETA and the last\n"
        "failures with their reasons. Reads every state database in <output_dir>/.sdbatch/ (the\n"
        "plain state.db and the shards' state.<I>-of-<N>.db) together; a job done in any counts as\n"
        "done. A job whose parameters or inputs changed since its row was written counts as pending.\n\n"
        "  --state PATH   read this database only\n"
        "  --jobs         one line per job\n"
        "  --shards       per shard (of every state.<I>-of-<N>.db set): jobs, done, failed, running,\n"
        "                 pending, its task's state (complete, running, stopped, failed, not started),\n"
        "                 stragglers, and the sbatch line that resubmits the unfinished shards;\n"
        "                 --shards=N also shows how N shards would split the manifest\n"
        "  --json         machine-readable (schemas/status.schema.json)\n"
        "  --spool DIR    instead of a manifest: every manifest of a daemon's spool with its\n"
        "                 progress (--json: schemas/spool-status.schema.json)\n\n"
        "Exit status: 0, 2 bad manifest or usage, 1 unreadable state.\n");
}

int cmd_status(int argc, char **argv)
{
    const char *path = NULL, *state = NULL, *spool = NULL;
    int jobs_flag = 0, json = 0, shards_n = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); return EXIT_OK; }
        else if (!strcmp(a, "--state") && i + 1 < argc) state = argv[++i];
        else if (!strcmp(a, "--spool") && i + 1 < argc) spool = argv[++i];
        else if (!strcmp(a, "--jobs")) jobs_flag = 1;
        else if (!strcmp(a, "--json")) json = 1;
        else if (!strcmp(a, "--shards")) shards_n = 0;
        else if (!strncmp(a, "--shards=", 9)) {
            long long v;
            if (cli_parse_int("status", "--shards", a + 9, 1, 100000, &v)) return EXIT_USAGE;
            shards_n = (int)v;
        }
        else if (a[0] == '-' && a[1]) return cli_usage_error("status", "unknown option '%s'", a);
        else if (!path) path = a;
        else return cli_usage_error("status", "unexpected argument '%s'", a);
    }
    if (spool) {   /* a daemon's spool: src/jobs/daemon.c */
        if (path || state || jobs_flag || shards_n >= 0)
            return cli_usage_error("status", "--spool lists a spool: give no MANIFEST, --state, --jobs or --shards");
        sdb_err serr;
        sdb_err_clear(&serr);
        if (sdb_spool_status(spool, stdout, json, &serr)) return cli_error("status", &serr);
        return EXIT_OK;
    }
    if (!path) return cli_usage_error("status", "missing MANIFEST");
    sdb_manifest m;
    sdb_err err;
    sdb_err_clear(&err);
    int rc = sdb_manifest_load(&m, path, &err);
    if (rc) {
        if (m.n_diags) sdb_manifest_print_diags(&m, stderr);
        else fprintf(stderr, "sdbatch status: error: %s\n", err.msg);
        sdb_manifest_free(&m);
        return EXIT_USAGE;
    }
    sdb_manifest_hash_inputs(&m, &err);

    /* the databases, every job's state over all of them */
    sdb_batch_state bs;
    int code = EXIT_OK;
    if (sdb_batch_state_read(&bs, &m, state, &err)) {
        fprintf(stderr, "sdbatch status: error: %s\n", err.msg);
        code = EXIT_FAILURE_RUN;
        goto out;
    }
    for (int i = 0; i < bs.n_notes; i++) fprintf(stderr, "sdbatch status: %s\n", bs.notes[i]);
    if (bs.damaged) code = EXIT_FAILURE_RUN;
    sdb_store **stores = bs.stores;
    sdb_job_row **rows = bs.rows;
    int *nrows = bs.nrows, ns = bs.ns;
    const sdb_job_view *mj = bs.jobs;
    const int *counts = bs.counts;
    double first_start = 0, last_finish = 0, sum_secs = 0;
    int n_timed = 0;
    for (int i = 0; i < m.n_jobs; i++) {
        const sdb_job_view *x = &mj[i];
        if (x->state == SDB_JOB_DONE) {
            if (x->started > 0 && (!first_start || x->started < first_start)) first_start = x->started;
            if (x->finished > last_finish) last_finish = x->finished;
            if (isfinite(x->seconds)) { sum_secs += x->seconds; n_timed++; }
        }
    }
    sdb_job_state *js = calloc((size_t)(m.n_jobs > 0 ? m.n_jobs : 1), sizeof *js);   /* for --shards */
    for (int i = 0; i < m.n_jobs && js; i++) js[i] = mj[i].state;
    int total = m.n_jobs;
    double pct = total ? 100.0 * counts[SDB_JOB_DONE] / total : 100.0;
    double rate = NAN;   /* images per minute, over the wall-clock span of the finished jobs */
    if (counts[SDB_JOB_DONE] > 0 && last_finish > first_start) rate = counts[SDB_JOB_DONE] / ((last_finish - first_start) / 60.0);
    int remaining = counts[SDB_JOB_PENDING] + counts[SDB_JOB_RUNNING];
    double eta = isfinite(rate) && rate > 0 ? remaining / rate * 60.0 : NAN;

    if (json) {
        json_t *o = json_object();
        json_object_set_new(o, "manifest", json_string(m.path));
        json_object_set_new(o, "total", json_integer(total));
        json_object_set_new(o, "pending", json_integer(counts[SDB_JOB_PENDING]));
        json_object_set_new(o, "running", json_integer(counts[SDB_JOB_RUNNING]));
        json_object_set_new(o, "done", json_integer(counts[SDB_JOB_DONE]));
        json_object_set_new(o, "failed", json_integer(counts[SDB_JOB_FAILED]));
        json_object_set_new(o, "percent_done", json_real(pct));
        json_object_set_new(o, "images_per_minute", isfinite(rate) ? json_real(rate) : json_null());
        json_object_set_new(o, "eta_seconds", isfinite(eta) ? json_real(eta) : json_null());
        json_t *files = json_array();
        for (int s = 0; s < ns; s++) json_array_append_new(files, json_string(sdb_store_path(stores[s])));
        json_object_set_new(o, "state_files", files);
        json_t *arr = json_array();
        for (int i = 0; i < m.n_jobs; i++) {
            json_t *jo = json_object();
            json_object_set_new(jo, "id", json_string(m.jobs[i].id));
            json_object_set_new(jo, "state", json_string(sdb_job_state_name(mj[i].state)));
            json_object_set_new(jo, "attempts", json_integer(mj[i].attempts));
            json_object_set_new(jo, "output", json_string(mj[i].output ? mj[i].output : ""));
            json_object_set_new(jo, "seconds", isfinite(mj[i].seconds) ? json_real(mj[i].seconds) : json_null());
            json_object_set_new(jo, "error", mj[i].error ? json_string(mj[i].error) : json_null());
            json_array_append_new(arr, jo);
        }
        json_object_set_new(o, "jobs", arr);
        if (shards_n >= 0 && js) cli_status_shards(&m, path, js, stores, rows, nrows, ns, shards_n, o, NULL);
        char *s = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        if (s) { puts(s); free(s); }
        json_decref(o);
    } else {
        char eta_s[32] = "?";
        if (isfinite(eta)) {
            long e = (long)(eta + 0.5);
            if (e >= 3600) snprintf(eta_s, sizeof eta_s, "%ldh%02ldm", e / 3600, (e % 3600) / 60);
            else if (e >= 60) snprintf(eta_s, sizeof eta_s, "%ldm%02lds", e / 60, e % 60);
            else snprintf(eta_s, sizeof eta_s, "%lds", e);
        }
        printf("%s: %d job(s), %.1f%% done\n", m.path, total, pct);
        printf("  done %d, running %d, pending %d, failed %d\n", counts[SDB_JOB_DONE], counts[SDB_JOB_RUNNING],
               counts[SDB_JOB_PENDING], counts[SDB_JOB_FAILED]);
        if (isfinite(rate)) printf("  throughput %.2f images/min (%.1f s/job)%s%s\n", rate, n_timed ? sum_secs / n_timed : 0.0,
                                   remaining ? ", ETA " : "", remaining ? eta_s : "");
        if (!ns && !bs.damaged) printf("  no state database yet (nothing has run)\n");
        if (bs.damaged) {
            int on_disk = 0;
            for (int i = 0; i < m.n_jobs; i++) if (mj[i].state != SDB_JOB_DONE && sdb_file_exists(m.jobs[i].output)) on_disk++;
            printf("  %d state file(s) could not be read, or not fully (see above)", bs.damaged);
            if (on_disk) printf("; %d job(s) not known as done have an output on disk", on_disk);
            printf(": 'sdbatch repair %s' rebuilds the state from the outputs\n", path);
        }
        else {
            printf("  state:");
            for (int s = 0; s < ns; s++) printf(" %s", sdb_store_path(stores[s]));
            printf("\n");
        }
        /* the last failures */
        int shown = 0;
        for (int pass = 0; pass < 1; pass++) {
            int *idx = malloc(sizeof(int) * (size_t)(m.n_jobs > 0 ? m.n_jobs : 1));
            int n = 0;
            for (int i = 0; i < m.n_jobs; i++) if (mj[i].state == SDB_JOB_FAILED) idx[n++] = i;
            for (int a = 0; a < n; a++)   /* most recent first; few failures, selection sort is fine */
                for (int b = a + 1; b < n; b++)
                    if (mj[idx[b]].finished > mj[idx[a]].finished) { int t = idx[a]; idx[a] = idx[b]; idx[b] = t; }
            if (n) printf("  last failures:\n");
            for (int a = 0; a < n && shown < 5; a++, shown++)
                printf("    %s (attempt %d): %s\n", m.jobs[idx[a]].id, mj[idx[a]].attempts, mj[idx[a]].error ? mj[idx[a]].error : "?");
            if (n > 5) printf("    ... and %d more (--jobs)\n", n - 5);
            free(idx);
        }
        if (shards_n >= 0 && js) cli_status_shards(&m, path, js, stores, rows, nrows, ns, shards_n, NULL, stdout);
        if (jobs_flag)
            for (int i = 0; i < m.n_jobs; i++) {
                printf("%-8s %-24s attempts %d", sdb_job_state_name(mj[i].state), m.jobs[i].id, mj[i].attempts);
                if (isfinite(mj[i].seconds)) printf("  %.1f s", mj[i].seconds);
                if (mj[i].state == SDB_JOB_DONE) printf("  %s", mj[i].output);
                if (mj[i].stale) printf("  (its process died: will be redone)");
                if (mj[i].error) printf("  %s", mj[i].error);
                printf("\n");
            }
    }
    free(js);
out:
    sdb_batch_state_free(&bs);
    sdb_manifest_free(&m);
    return code;
}
