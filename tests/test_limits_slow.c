/*
 * test_limits_slow.c — the manifest's job limit (SDB_MANIFEST_MAX_JOBS = 1,000,000): a manifest of
 * exactly that many jobs loads (in seconds: ids and outputs are checked for duplicates through
 * hash sets, not by comparing every pair), one more job is refused with a diagnostic at that job,
 * and a duplicate id among a million is still found. Slow (about 30 MB of YAML, parsed 3 times), so
 * only the Release build runs it.
 */
#include "harness.h"
#include "sdb/manifest.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* "version..jobs:" then n jobs "- {id: jN, prompt: p}"; job `dup` (when >= 0) reuses job 0's id. */
static char *jobs_text(int n, int dup, size_t *len)
{
    size_t cap = 64 + (size_t)n * 32, o = 0;
    char *t = malloc(cap);
    if (!t) return NULL;
    o += (size_t)snprintf(t, cap, "version: 1\nmodel: m\noutput_dir: out\njobs:\n");
    for (int i = 0; i < n; i++)
        o += (size_t)snprintf(t + o, cap - o, "- {id: j%d, prompt: p}\n", i == dup ? 0 : i);
    *len = o;
    return t;
}

static void test_job_limit(void)
{
    size_t len;
    sdb_manifest m;
    sdb_err err = {0};
    char *t = jobs_text(SDB_MANIFEST_MAX_JOBS, -1, &len);
    CHECK(t != NULL);
    if (!t) return;
    double t0 = now();
    CHECK_OK(sdb_manifest_parse(&m, t, len, "/x/million.yaml", &err), &err);
    double dt = now() - t0;
    fprintf(stderr, "  %d jobs (%zu bytes) parsed in %.2f s\n", m.n_jobs, len, dt);
    CHECK(m.n_jobs == SDB_MANIFEST_MAX_JOBS);
    CHECK(m.n_jobs == SDB_MANIFEST_MAX_JOBS && !strcmp(m.jobs[999999].id, "j999999") &&
          !strcmp(m.jobs[999999].output, "/x/out/j999999.png"));
    CHECK(dt < 60);
    sdb_manifest_free(&m);
    free(t);

    t = jobs_text(SDB_MANIFEST_MAX_JOBS + 1, -1, &len);
    if (!t) return;
    CHECK(sdb_manifest_parse(&m, t, len, "/x/million.yaml", &err) == SDB_EFORMAT);
    fprintf(stderr, "  %s\n", err.msg);
    /* the job past the limit is on line 4 + 1,000,001 */
    CHECK(m.n_errors == 1 && strstr(err.msg, "/x/million.yaml:1000005:") &&
          strstr(err.msg, "more than 1000000 jobs (the limit of one manifest)"));
    CHECK(m.n_jobs == SDB_MANIFEST_MAX_JOBS);
    sdb_manifest_free(&m);
    free(t);

    t = jobs_text(SDB_MANIFEST_MAX_JOBS, 777777, &len);
    if (!t) return;
    CHECK(sdb_manifest_parse(&m, t, len, "/x/million.yaml", &err) == SDB_EFORMAT);
    fprintf(stderr, "  %s\n", err.msg);
    CHECK(m.n_errors == 1 && strstr(err.msg, "/x/million.yaml:777782:") &&
          strstr(err.msg, "duplicate job id 'j0' (first at line 5)"));
    sdb_manifest_free(&m);
    free(t);
}

int main(void)
{
    RUN(test_job_limit);
    return sdb_t_done();
}
